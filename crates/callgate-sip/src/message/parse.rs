//! Framing and parsing: start lines, header lines, Content-Length, and the checks every
//! request must pass, each failure a `Problem` the caller can answer with (RFC 3261 §7, §18.3;
//! RFC 4475 torture rules).

use super::*;

/// Where the header block ends: (end of headers, start of body). Bare LF is accepted as well as
/// CRLF, so the empty line is "\n\n" or "\n\r\n".
pub(super) fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = buf.get(from..)?.iter().position(|b| *b == b'\n') {
        let i = from + offset;
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => return Some((i, i + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((i, i + 3)),
            _ => from = i + 1,
        }
    }
    None
}

/// CRLFs before a start line are ignored (§7.5); on streams they are keepalives (RFC 5626).
pub(super) fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

impl Message {
    /// A whole UDP datagram. Without Content-Length the body is the rest; with one larger than
    /// what is there the message is invalid, and bytes past it are ignored (§18.3).
    pub fn parse_datagram(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(invalid(Problem::TooLarge));
        }
        let rest = buf.get(skip_leading_crlf(buf)..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(invalid(Problem::Empty));
        }
        let (head_end, body_start) = header_end(rest).unwrap_or((rest.len(), rest.len()));
        let (start, headers) = parse_head(rest.get(..head_end).unwrap_or(rest))?;
        let available = rest.get(body_start..).unwrap_or(&[]);
        let body = match content_length(&headers) {
            Ok(Some(n)) => available
                .get(..n)
                .map(<[u8]>::to_vec)
                .ok_or(Problem::BodyTooShort),
            Ok(None) => Ok(available.to_vec()),
            Err(p) => Err(p),
        };
        build(start, headers, body)
    }

    /// A TCP stream buffer: the first message and the bytes it used, leading CRLF keepalives
    /// included. Content-Length is mandatory on streams (§18.3).
    pub fn parse_stream(buf: &[u8]) -> Result<(Message, usize), ParseError> {
        let skip = skip_leading_crlf(buf);
        let rest = buf.get(skip..).unwrap_or(&[]);
        let Some((head_end, body_start)) = header_end(rest) else {
            if rest.len() > MAX_MESSAGE_SIZE {
                return Err(invalid(Problem::TooLarge));
            }
            // A start line that can never become valid need not wait for the rest.
            if let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                parse_start_line(strip_cr(rest.get(..nl).unwrap_or(&[])))?;
            }
            return Err(ParseError::Incomplete);
        };
        if body_start > MAX_MESSAGE_SIZE {
            return Err(invalid(Problem::TooLarge));
        }
        let (start, headers) = parse_head(rest.get(..head_end).unwrap_or(rest))?;
        let length = match content_length(&headers) {
            Ok(Some(n)) => n,
            Ok(None) => return Err(build_failure(start, headers, Problem::MissingContentLength)),
            Err(p) => return Err(build_failure(start, headers, p)),
        };
        let end = body_start.saturating_add(length);
        if end > MAX_MESSAGE_SIZE {
            return Err(build_failure(start, headers, Problem::TooLarge));
        }
        let Some(body) = rest.get(body_start..end) else {
            return Err(ParseError::Incomplete);
        };
        let message = build(start, headers, Ok(body.to_vec()))?;
        Ok((message, skip + end))
    }

    /// Always writes a correct Content-Length, replacing any.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

pub(super) enum StartLine {
    Request {
        method: Method,
        uri: Result<Uri, Problem>,
        /// What is wrong with the Request-Line itself (version, spacing), found before the
        /// headers are read but reported with them so the request can still be answered.
        line: Result<(), Problem>,
    },
    Response(u16, String),
}

pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(super) fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// SIP-Version is "SIP/2.0", case-insensitively; another well-formed version is a 505.
pub(super) fn check_version(v: &str) -> Result<(), Problem> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let numbers = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| v.get(4..))
        .and_then(|n| n.split_once('.'));
    match numbers {
        Some((major, minor))
            if parse_digits::<u64>(major).is_some() && parse_digits::<u64>(minor).is_some() =>
        {
            Err(Problem::UnsupportedVersion)
        }
        _ => Err(Problem::BadStartLine),
    }
}

pub(super) fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return parse_status_line(line);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF: printable ASCII only.
    if !line.iter().all(|b| (0x21..0x7f).contains(b) || *b == b' ') {
        return Err(invalid(Problem::InvalidBytes("Start Line")));
    }
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
    let (Some(method), Some(version)) = (words.first(), words.last()) else {
        return Err(invalid(Problem::BadStartLine));
    };
    if words.len() < 3 {
        return Err(invalid(Problem::BadStartLine));
    }
    let method = Method::from_token(method).ok_or_else(|| invalid(Problem::BadMethod))?;
    let version = check_version(version);
    if version == Err(Problem::BadStartLine) {
        return Err(invalid(Problem::BadStartLine));
    }
    // Exactly single spaces: doubled, leading or trailing SP is malformed (RFC 4475 "lwsstart",
    // "trws"), but the line still says which request it is, so it can be answered 400.
    let spacing = if text.split(' ').count() == words.len() {
        Ok(())
    } else {
        Err(Problem::BadStartLine)
    };
    // More than three words means LWS inside the URI (RFC 4475 "lwsruri").
    let uri = match words.as_slice() {
        [_, uri, _] => match Uri::parse(uri) {
            // Headers are not allowed in a Request-URI (§19.1.1 table; RFC 4475 "escruri").
            Ok(uri) if !uri.headers.is_empty() => Err(Problem::MalformedRequestUri),
            Ok(uri) => Ok(uri),
            Err(_) => Err(Problem::MalformedRequestUri),
        },
        _ => Err(Problem::MalformedRequestUri),
    };
    Ok(StartLine::Request {
        method,
        uri,
        line: version.and(spacing),
    })
}

/// Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; the reason may be UTF-8 and empty.
pub(super) fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let version = parts.next().unwrap_or(&[]);
    let code = parts.next().unwrap_or(&[]);
    let reason = parts.next().unwrap_or(&[]);
    let version =
        std::str::from_utf8(version).map_err(|_| invalid(Problem::InvalidBytes("Start Line")))?;
    check_version(version).map_err(invalid)?;
    let status = std::str::from_utf8(code)
        .ok()
        .filter(|c| c.len() == 3)
        .and_then(parse_digits::<u16>)
        .filter(|s| (100..=699).contains(s))
        .ok_or_else(|| invalid(Problem::BadStatusCode))?;
    if reason.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Err(invalid(Problem::InvalidBytes("Start Line")));
    }
    Ok(StartLine::Response(
        status,
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

/// NUL is legal in a header value only as a quoted-pair inside a quoted string (RFC 4475
/// "intmeth"); anywhere else it is an attack on C-string handling downstream.
pub(super) fn stray_nul(value: &[u8]) -> bool {
    let mut in_quotes = false;
    let mut escaped = false;
    for &b in value {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            0 => return true,
            _ => {}
        }
    }
    false
}

pub(super) fn parse_header_line(line: &[u8]) -> Result<(String, String), Problem> {
    let colon = line
        .iter()
        .position(|b| *b == b':')
        .ok_or(Problem::MalformedHeaderLine)?;
    let name = trim_lws(line.get(..colon).unwrap_or(&[]));
    if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
        return Err(Problem::MalformedHeaderLine);
    }
    // A CR not followed by LF ends nothing; it is kept as the whitespace it stands for.
    let value: Vec<u8> = line
        .get(colon + 1..)
        .unwrap_or(&[])
        .iter()
        .map(|b| if *b == b'\r' { b' ' } else { *b })
        .collect();
    let value = trim_lws(&value);
    if stray_nul(value) {
        return Err(Problem::InvalidBytes("Header Field"));
    }
    Ok((
        canonical_name(&String::from_utf8_lossy(name)),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

pub(super) fn parse_head(head: &[u8]) -> Result<(StartLine, Headers), ParseError> {
    let mut lines = head.split(|b| *b == b'\n').map(strip_cr);
    let start = parse_start_line(lines.next().unwrap_or(&[]))?;
    let mut unfolded: Vec<Vec<u8>> = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            // Folding (§7.3.1): the continuation joins the previous line with one space.
            let Some(previous) = unfolded.last_mut() else {
                return Err(with_request(
                    start,
                    Headers::new(),
                    Problem::MalformedHeaderLine,
                ));
            };
            previous.push(b' ');
            previous.extend_from_slice(trim_lws(line));
        } else {
            unfolded.push(line.to_vec());
        }
    }
    let mut headers = Headers::new();
    for line in unfolded {
        let (name, value) = match parse_header_line(&line) {
            Ok(header) => header,
            Err(problem) => return Err(with_request(start, headers, problem)),
        };
        if LIST_HEADERS.contains(&name.as_str()) {
            for part in split_outside_quotes(&value, ',') {
                let part = part.trim();
                if !part.is_empty() {
                    headers.push(&name, part);
                }
            }
        } else {
            headers.push(&name, value);
        }
    }
    Ok((start, headers))
}

/// A Request-URI we could not parse still lets the request be answered: its responses never
/// carry the Request-URI, so a placeholder stands in for it.
pub(super) fn placeholder_uri() -> Uri {
    Uri::sip(None, "invalid", None)
}

pub(super) fn with_request(start: StartLine, headers: Headers, problem: Problem) -> ParseError {
    match start {
        StartLine::Request { method, uri, .. } => ParseError::Invalid {
            problem,
            request: Some(Box::new(Request {
                method,
                uri: uri.unwrap_or_else(|_| placeholder_uri()),
                headers,
                body: Vec::new(),
            })),
        },
        StartLine::Response(..) => invalid(problem),
    }
}

pub(super) fn build_failure(start: StartLine, headers: Headers, problem: Problem) -> ParseError {
    match start {
        StartLine::Request {
            line: Err(line), ..
        } => with_request(start, headers, line),
        _ => with_request(start, headers, problem),
    }
}

/// The Content-Length of the message, if any: digits only, and several must agree (RFC 4475
/// "ncl", "mcl01"). Saturates rather than overflows, so a huge value is merely "too large".
pub(super) fn content_length(headers: &Headers) -> Result<Option<usize>, Problem> {
    let mut found: Option<usize> = None;
    for value in headers.all("Content-Length") {
        let v = value.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::BadContentLength);
        }
        let n = v.bytes().fold(0usize, |n, b| {
            n.saturating_mul(10).saturating_add(usize::from(b - b'0'))
        });
        match found {
            Some(previous) if previous != n => return Err(Problem::MultipleContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

pub(super) fn build(
    start: StartLine,
    headers: Headers,
    body: Result<Vec<u8>, Problem>,
) -> Result<Message, ParseError> {
    match start {
        StartLine::Request { method, uri, line } => {
            let problem = line
                .err()
                .or(body.as_ref().err().copied())
                .or(uri.as_ref().err().copied())
                .or_else(|| validate_request(&method, &headers).err());
            let request = Request {
                method,
                uri: uri.unwrap_or_else(|_| placeholder_uri()),
                headers,
                body: body.unwrap_or_default(),
            };
            match problem {
                Some(problem) => Err(ParseError::Invalid {
                    problem,
                    request: Some(Box::new(request)),
                }),
                None => Ok(Message::Request(request)),
            }
        }
        StartLine::Response(status, reason) => {
            let body = body.map_err(invalid)?;
            validate_common(&headers).map_err(invalid)?;
            Ok(Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }))
        }
    }
}

/// Headers every request and response carries exactly once, parsed (§8.1.1).
pub(super) fn validate_common(headers: &Headers) -> Result<(), Problem> {
    for name in ["To", "From", "Call-ID", "CSeq", "Via"] {
        if headers.get(name).is_none() {
            return Err(Problem::MissingHeader(name));
        }
    }
    for name in ["To", "From", "Call-ID", "CSeq", "Max-Forwards"] {
        if headers.all(name).count() > 1 {
            return Err(Problem::MultipleHeader(name));
        }
    }
    let call_id = headers.get("Call-ID").unwrap_or("");
    if call_id.is_empty() || call_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::MalformedCallId);
    }
    parse_cseq(headers.get("CSeq").unwrap_or(""))?;
    for via in headers.all("Via") {
        Via::parse(via)?;
    }
    for name in ["From", "To"] {
        NameAddr::parse(headers.get(name).unwrap_or(""))
            .map_err(|_| Problem::MalformedAddress(name))?;
    }
    Ok(())
}

pub(super) fn validate_request(method: &Method, headers: &Headers) -> Result<(), Problem> {
    validate_common(headers)?;
    let cseq = parse_cseq(headers.get("CSeq").unwrap_or(""))?;
    if cseq.method != *method {
        return Err(Problem::CSeqMethodMismatch);
    }
    if let Some(mf) = headers.get("Max-Forwards") {
        // §20.22 gives the range 0-255.
        if parse_digits::<u32>(mf.trim()).is_none_or(|v| v > 255) {
            return Err(Problem::MalformedMaxForwards);
        }
    }
    for contact in headers.all("Contact") {
        if contact.trim() != "*" && NameAddr::parse(contact).is_err() {
            return Err(Problem::MalformedAddress("Contact"));
        }
    }
    for name in ["Route", "Record-Route"] {
        if headers.all(name).any(|r| NameAddr::parse(r).is_err()) {
            return Err(Problem::MalformedAddress(name));
        }
    }
    Ok(())
}
