//! SIP message parsing and printing (RFC 3261 §7, §18.3, §20, §25; RFC 4475 torture rules).
//! Pure: bytes in, typed messages out, and back. Never panics on input, tells "incomplete"
//! (a TCP stream needs more bytes) from "invalid", and for invalid requests that framed well
//! keeps what it parsed so the caller can answer with the precise problem.

use std::fmt;

use super::uri::{Uri, UriError};

/// Framed messages larger than this are refused (a UDP datagram cannot be larger anyway).
pub const MAX_MESSAGE_SIZE: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }

    /// Method names are case-sensitive (§7.1); anything not a token is not a method.
    pub fn from_token(s: &str) -> Option<Method> {
        if s.is_empty() || !s.chars().all(is_token_char) {
            return None;
        }
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other => Method::Extension(other.to_string()),
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Header names in their canonical spelling; compact forms (§7.3.3) map to their full names.
const CANONICAL: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("u", "Allow-Events"),
    ("r", "Refer-To"),
    ("b", "Referred-By"),
    ("x", "Session-Expires"),
    ("call-id", "Call-ID"),
    ("cseq", "CSeq"),
    ("www-authenticate", "WWW-Authenticate"),
    ("rseq", "RSeq"),
    ("rack", "RAck"),
    ("mime-version", "MIME-Version"),
];

/// Headers whose comma-separated values are separate entries (§7.3.1).
const LIST_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Proxy-Require",
    "Unsupported",
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
];

pub fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if let Some((_, full)) = CANONICAL.iter().find(|(k, _)| *k == lower) {
        return (*full).to_string();
    }
    // Title-Case each dash-separated word: "content-type" -> "Content-Type".
    lower
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    fn matches(header: &Header, name: &str) -> bool {
        header.name.eq_ignore_ascii_case(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0
            .iter()
            .find(|h| Self::matches(h, &name))
            .map(|h| h.value.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |h| Self::matches(h, &name))
            .map(|h| h.value.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name),
                value: value.into(),
            },
        );
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        let value = value.into();
        match self.0.iter().position(|h| Self::matches(h, &name)) {
            Some(first) => {
                self.0[first].value = value;
                let mut index = 0;
                self.0.retain(|h| {
                    let keep = index <= first || !Self::matches(h, &name);
                    index += 1;
                    keep
                });
            }
            None => self.0.push(Header { name, value }),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !Self::matches(h, &name));
    }

    pub fn remove_first(&mut self, name: &str) -> Option<String> {
        let name = canonical_name(name);
        let index = self.0.iter().position(|h| Self::matches(h, &name))?;
        Some(self.0.remove(index).value)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.get("Call-ID").map(str::trim).filter(|c| !c.is_empty())
    }

    pub fn cseq(&self) -> Option<CSeq> {
        parse_cseq(self.get("CSeq")?).ok()
    }

    pub fn from(&self) -> Option<NameAddr> {
        NameAddr::parse(self.get("From")?).ok()
    }

    pub fn to(&self) -> Option<NameAddr> {
        NameAddr::parse(self.get("To")?).ok()
    }

    pub fn contact(&self) -> Option<NameAddr> {
        let value = self.get("Contact")?;
        if value.trim() == "*" {
            return None;
        }
        NameAddr::parse(value).ok()
    }

    pub fn vias(&self) -> Vec<Via> {
        self.all("Via").filter_map(|v| Via::parse(v).ok()).collect()
    }

    pub fn top_via(&self) -> Option<Via> {
        Via::parse(self.get("Via")?).ok()
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.get("Max-Forwards")?.trim().parse().ok()
    }

    pub fn record_routes(&self) -> Vec<NameAddr> {
        self.all("Record-Route").filter_map(|v| NameAddr::parse(v).ok()).collect()
    }

    pub fn routes(&self) -> Vec<NameAddr> {
        self.all("Route").filter_map(|v| NameAddr::parse(v).ok()).collect()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type").map(str::trim)
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("Content-Length")?.trim().parse().ok()
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// `name=value` parameters after a `;`, respecting quoted values.
fn parse_header_params(s: &str) -> Result<Vec<(String, Option<String>)>, ()> {
    let mut params = Vec::new();
    for part in split_outside_quotes(s, ';') {
        let part = part.trim();
        if part.is_empty() {
            return Err(());
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
            None => (part, None),
        };
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(());
        }
        if let Some(v) = &value {
            if v.is_empty() {
                return Err(());
            }
            if v.starts_with('"') && (v.len() < 2 || !v.ends_with('"')) {
                return Err(());
            }
        }
        params.push((name.to_string(), value));
    }
    Ok(params)
}

/// Splits on `sep` outside quoted strings and angle brackets.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            c if c == sep && !in_quotes && !in_angle => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_cseq(value: &str) -> Result<CSeq, Problem> {
    let mut parts = value.split_whitespace();
    let seq = parts.next().ok_or(Problem::MalformedCSeq)?;
    let method = parts.next().ok_or(Problem::MalformedCSeq)?;
    if parts.next().is_some() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::MalformedCSeq);
    }
    // RFC 3261 §8.1.1.5: the sequence number is below 2**31.
    let seq: u32 = seq.parse().map_err(|_| Problem::MalformedCSeq)?;
    if seq >= 1 << 31 {
        return Err(Problem::MalformedCSeq);
    }
    let method = Method::from_token(method).ok_or(Problem::MalformedCSeq)?;
    Ok(CSeq { seq, method })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("unterminated quoted display name")]
    Unterminated,
    #[error("missing '>'")]
    Unclosed,
    #[error("bad URI: {0}")]
    Uri(#[from] UriError),
    #[error("bad parameters")]
    Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, AddressError> {
        let s = s.trim();
        let (display, rest) = if let Some(quoted) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => out.push(c),
                }
            }
            let end = end.ok_or(AddressError::Unterminated)?;
            let rest = quoted[end + 1..].trim_start();
            if !rest.starts_with('<') {
                return Err(AddressError::Unclosed);
            }
            (Some(out), rest)
        } else if let Some(lt) = s.find('<') {
            let name = s[..lt].trim();
            if name.contains('"') || name.contains('>') {
                return Err(AddressError::Unterminated);
            }
            ((!name.is_empty()).then(|| name.to_string()), &s[lt..])
        } else {
            // addr-spec: parameters after the URI belong to the header (§20.10).
            let (uri, params) = match s.split_once(';') {
                Some((u, p)) => (u, parse_header_params(p).map_err(|_| AddressError::Params)?),
                None => (s, Vec::new()),
            };
            return Ok(NameAddr {
                display: None,
                uri: Uri::parse(uri)?,
                params,
            });
        };
        let inner = rest.strip_prefix('<').ok_or(AddressError::Unclosed)?;
        let (uri, after) = inner.split_once('>').ok_or(AddressError::Unclosed)?;
        let after = after.trim();
        let params = if after.is_empty() {
            Vec::new()
        } else {
            let p = after.strip_prefix(';').ok_or(AddressError::Params)?;
            parse_header_params(p).map_err(|_| AddressError::Params)?
        };
        Ok(NameAddr {
            display,
            uri: Uri::parse(uri)?,
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        match self.params.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(p) => p.1 = value.map(str::to_string),
            None => self.params.push((name.to_string(), value.map(str::to_string))),
        }
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>", self.uri)?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, Problem> {
        let s = s.trim();
        // sent-protocol: "SIP / 2.0 / UDP" with optional LWS around the slashes.
        let mut rest = s;
        let mut protocol = Vec::new();
        for _ in 0..3 {
            rest = rest.trim_start();
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            protocol.push(&rest[..end]);
            rest = rest[end..].trim_start();
            if protocol.len() < 3 {
                rest = rest.strip_prefix('/').ok_or(Problem::MalformedVia)?;
            }
        }
        if !protocol[0].eq_ignore_ascii_case("SIP")
            || protocol[1] != "2.0"
            || protocol[2].is_empty()
            || !protocol[2].chars().all(is_token_char)
        {
            return Err(Problem::MalformedVia);
        }
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => (h.trim(), parse_header_params(p).map_err(|_| Problem::MalformedVia)?),
            None => (rest.trim(), Vec::new()),
        };
        // A Via may end with a comment (RFC 3261 §25.1 allows comments in Via).
        let sent_by = sent_by.split('(').next().unwrap_or("").trim();
        let probe = Uri::parse(&format!("sip:{sent_by}")).map_err(|_| Problem::MalformedVia)?;
        if probe.user.is_some() || !probe.params.is_empty() {
            return Err(Problem::MalformedVia);
        }
        Ok(Via {
            transport: protocol[2].to_ascii_uppercase(),
            host: probe.host,
            port: probe.port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        match self.params.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(p) => p.1 = value.map(str::to_string),
            None => self.params.push((name.to_string(), value.map(str::to_string))),
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} ", self.transport)?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("incomplete message")]
    Incomplete,
    #[error("{problem}")]
    Invalid {
        problem: Problem,
        request: Option<Box<Request>>,
    },
}

/// What is wrong with a message; the text is the reason phrase of our error response.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    #[error("Empty Message")]
    Empty,
    #[error("Bad Start Line")]
    BadStartLine,
    #[error("Bad Method")]
    BadMethod,
    #[error("Unsupported SIP Version")]
    UnsupportedVersion,
    #[error("Bad Status Code")]
    BadStatusCode,
    #[error("Malformed Request-URI")]
    MalformedRequestUri,
    #[error("Malformed Header Line")]
    MalformedHeaderLine,
    #[error("Missing {0}")]
    MissingHeader(&'static str),
    #[error("Malformed CSeq")]
    MalformedCSeq,
    #[error("CSeq Method Mismatch")]
    CSeqMethodMismatch,
    #[error("Malformed Via")]
    MalformedVia,
    #[error("Malformed {0}")]
    MalformedAddress(&'static str),
    #[error("Malformed Max-Forwards")]
    MalformedMaxForwards,
    #[error("Bad Content-Length")]
    BadContentLength,
    #[error("Conflicting Content-Length")]
    ConflictingContentLength,
    #[error("Body Shorter Than Content-Length")]
    BodyTooShort,
    #[error("Missing Content-Length On Stream")]
    MissingContentLength,
    #[error("Message Too Large")]
    TooLarge,
    #[error("Invalid Bytes In Headers")]
    InvalidBytes,
}

impl Problem {
    pub fn status(&self) -> u16 {
        match self {
            Problem::UnsupportedVersion => 505,
            Problem::TooLarge => 513,
            _ => 400,
        }
    }
}

fn invalid(problem: Problem) -> ParseError {
    ParseError::Invalid {
        problem,
        request: None,
    }
}

/// Where the header block ends: (end of headers, start of body).
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn skip_leading_crlf(buf: &[u8]) -> usize {
    buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count()
}

impl Message {
    pub fn parse_datagram(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(invalid(Problem::TooLarge));
        }
        let skip = skip_leading_crlf(buf);
        let buf = &buf[skip..];
        if buf.is_empty() {
            return Err(invalid(Problem::Empty));
        }
        let (head_end, body_start) = header_end(buf).unwrap_or((buf.len(), buf.len()));
        let (start, headers) = parse_head(&buf[..head_end])?;
        let available = &buf[body_start.min(buf.len())..];
        let body = match content_length(&headers) {
            Ok(Some(n)) if n > available.len() => Err(Problem::BodyTooShort),
            Ok(Some(n)) => Ok(available[..n].to_vec()),
            Ok(None) => Ok(available.to_vec()),
            Err(p) => Err(p),
        };
        build(start, headers, body)
    }

    pub fn parse_stream(buf: &[u8]) -> Result<(Message, usize), ParseError> {
        let skip = skip_leading_crlf(buf);
        let rest = &buf[skip..];
        let Some((head_end, body_start)) = header_end(rest) else {
            if rest.len() > MAX_MESSAGE_SIZE {
                return Err(invalid(Problem::TooLarge));
            }
            return Err(ParseError::Incomplete);
        };
        let (start, headers) = parse_head(&rest[..head_end])?;
        let length = match content_length(&headers) {
            Ok(Some(n)) => n,
            Ok(None) => return build(start, headers, Err(Problem::MissingContentLength)).map(|m| (m, 0)),
            Err(p) => return build(start, headers, Err(p)).map(|m| (m, 0)),
        };
        if body_start.saturating_add(length) > MAX_MESSAGE_SIZE {
            return build(start, headers, Err(Problem::TooLarge)).map(|m| (m, 0));
        }
        let end = body_start + length;
        if rest.len() < end {
            return Err(ParseError::Incomplete);
        }
        let message = build(start, headers, Ok(rest[body_start..end].to_vec()))?;
        Ok((message, skip + end))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

enum StartLine {
    Request(Method, Result<Uri, Problem>),
    Response(u16, String),
}

fn parse_head(head: &[u8]) -> Result<(StartLine, Headers), ParseError> {
    if head.contains(&0) {
        return Err(invalid(Problem::InvalidBytes));
    }
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.starts_with([' ', '\t']) && !lines.is_empty() {
            // Folding (§7.3.1): a continuation line joins the previous with one space.
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim_start());
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let mut iter = lines.into_iter();
    let first = iter.next().unwrap_or_default();
    let start = parse_start_line(&first)?;
    let mut headers = Headers::new();
    for line in iter {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(with_request(&start, &headers, Problem::MalformedHeaderLine));
        };
        let name = name.trim_end();
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(with_request(&start, &headers, Problem::MalformedHeaderLine));
        }
        let canonical = canonical_name(name);
        let value = value.trim();
        if LIST_HEADERS.contains(&canonical.as_str()) {
            for part in split_outside_quotes(value, ',') {
                let part = part.trim();
                if !part.is_empty() {
                    headers.push(&canonical, part);
                }
            }
        } else {
            headers.push(&canonical, value);
        }
    }
    Ok((start, headers))
}

fn with_request(start: &StartLine, headers: &Headers, problem: Problem) -> ParseError {
    let request = match start {
        StartLine::Request(method, Ok(uri)) => Some(Box::new(Request {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            body: Vec::new(),
        })),
        _ => None,
    };
    ParseError::Invalid { problem, request }
}

fn parse_version(v: &str) -> Result<(), Problem> {
    if v.eq_ignore_ascii_case("SIP/2.0") {
        return Ok(());
    }
    let looks_like_version = v.len() > 4
        && v[..4].eq_ignore_ascii_case("SIP/")
        && v[4..].chars().all(|c| c.is_ascii_digit() || c == '.');
    Err(if looks_like_version {
        Problem::UnsupportedVersion
    } else {
        Problem::BadStartLine
    })
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line.len() > 4 && line[..4].eq_ignore_ascii_case("SIP/") && line.is_char_boundary(4) {
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        parse_version(version).map_err(invalid)?;
        let code = parts.next().unwrap_or("");
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(Problem::BadStatusCode));
        }
        let status: u16 = code.parse().map_err(|_| invalid(Problem::BadStatusCode))?;
        if !(100..=699).contains(&status) {
            return Err(invalid(Problem::BadStatusCode));
        }
        return Ok(StartLine::Response(status, parts.next().unwrap_or("").to_string()));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces (§7.1).
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(Problem::BadStartLine));
    }
    let method = Method::from_token(parts[0]).ok_or_else(|| invalid(Problem::BadMethod))?;
    parse_version(parts[2]).map_err(invalid)?;
    let uri = Uri::parse(parts[1]).map_err(|_| Problem::MalformedRequestUri);
    Ok(StartLine::Request(method, uri))
}

fn content_length(headers: &Headers) -> Result<Option<usize>, Problem> {
    let mut found: Option<usize> = None;
    for value in headers.all("Content-Length") {
        let v = value.trim();
        if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Problem::BadContentLength);
        }
        let n: usize = v.parse().map_err(|_| Problem::BadContentLength)?;
        match found {
            Some(previous) if previous != n => return Err(Problem::ConflictingContentLength),
            _ => found = Some(n),
        }
    }
    Ok(found)
}

fn build(start: StartLine, headers: Headers, body: Result<Vec<u8>, Problem>) -> Result<Message, ParseError> {
    match start {
        StartLine::Request(method, uri) => {
            let uri_ok = uri.clone();
            let fail = |problem: Problem, body: Vec<u8>| {
                let request = uri_ok.clone().ok().map(|uri| {
                    Box::new(Request {
                        method: method.clone(),
                        uri,
                        headers: headers.clone(),
                        body,
                    })
                });
                ParseError::Invalid { problem, request }
            };
            let body = match body {
                Ok(b) => b,
                Err(p) => return Err(fail(p, Vec::new())),
            };
            if let Err(p) = validate_common(&headers) {
                return Err(fail(p, body));
            }
            let cseq = parse_cseq(headers.get("CSeq").unwrap_or("")).map_err(|p| fail(p, body.clone()))?;
            if cseq.method != method {
                return Err(fail(Problem::CSeqMethodMismatch, body));
            }
            if let Some(mf) = headers.get("Max-Forwards") {
                let mf = mf.trim();
                if mf.is_empty() || !mf.bytes().all(|b| b.is_ascii_digit()) || mf.parse::<u32>().map_or(true, |v| v > 255) {
                    return Err(fail(Problem::MalformedMaxForwards, body));
                }
            }
            for contact in headers.all("Contact") {
                if contact.trim() != "*" && NameAddr::parse(contact).is_err() {
                    return Err(fail(Problem::MalformedAddress("Contact"), body));
                }
            }
            let uri = match uri {
                Ok(uri) => uri,
                Err(p) => {
                    // No URI to rebuild a request with; answerable only through our
                    // headers, so keep them with a placeholder target.
                    return Err(ParseError::Invalid {
                        problem: p,
                        request: Some(Box::new(Request {
                            method,
                            uri: Uri::sip(None, "invalid", None),
                            headers,
                            body,
                        })),
                    });
                }
            };
            Ok(Message::Request(Request {
                method,
                uri,
                headers,
                body,
            }))
        }
        StartLine::Response(status, reason) => {
            let body = body.map_err(invalid)?;
            validate_common(&headers).map_err(invalid)?;
            parse_cseq(headers.get("CSeq").unwrap_or("")).map_err(invalid)?;
            Ok(Message::Response(Response {
                status,
                reason,
                headers,
                body,
            }))
        }
    }
}

fn validate_common(headers: &Headers) -> Result<(), Problem> {
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if headers.get(name).map_or(true, |v| v.trim().is_empty()) {
            return Err(Problem::MissingHeader(match name {
                "Via" => "Via",
                "From" => "From",
                "To" => "To",
                "Call-ID" => "Call-ID",
                _ => "CSeq",
            }));
        }
    }
    for via in headers.all("Via") {
        Via::parse(via)?;
    }
    NameAddr::parse(headers.get("From").unwrap_or("")).map_err(|_| Problem::MalformedAddress("From"))?;
    NameAddr::parse(headers.get("To").unwrap_or("")).map_err(|_| Problem::MalformedAddress("To"))?;
    if headers.all("From").count() > 1 {
        return Err(Problem::MalformedAddress("From"));
    }
    if headers.all("To").count() > 1 {
        return Err(Problem::MalformedAddress("To"));
    }
    if headers.all("Call-ID").count() > 1 {
        return Err(Problem::MissingHeader("Call-ID"));
    }
    content_length(headers)?;
    Ok(())
}

fn write_headers(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
        write_headers(&self.headers, &self.body, &mut out);
        out
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.status, self.reason).into_bytes();
        write_headers(&self.headers, &self.body, &mut out);
        out
    }

    pub fn reason_for(status: u16) -> &'static str {
        match status {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            483 => "Too Many Hops",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            491 => "Request Pending",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            600 => "Busy Everywhere",
            603 => "Decline",
            _ => "Unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nTo: Bob <sip:bob@biloxi.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@pc33.atlanta.com>\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\r\n";

    #[test]
    fn parses_a_basic_invite() {
        let Message::Request(r) = Message::parse_datagram(INVITE.as_bytes()).expect("valid") else {
            panic!("request expected");
        };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri.host, "biloxi.com");
        assert_eq!(r.body, b"v=0\r");
        assert_eq!(r.headers.cseq(), Some(CSeq { seq: 314159, method: Method::Invite }));
        assert_eq!(r.headers.from().and_then(|f| f.tag().map(str::to_string)).as_deref(), Some("1928301774"));
        assert_eq!(r.headers.to().and_then(|t| t.display), Some("Bob".to_string()));
        assert_eq!(r.headers.top_via().and_then(|v| v.branch().map(str::to_string)).as_deref(), Some("z9hG4bK776asdhds"));
        let again = Message::parse_datagram(&Message::Request(r.clone()).to_bytes()).expect("round trip");
        assert_eq!(again, Message::Request(r));
    }

    #[test]
    fn compact_forms_folding_and_lists() {
        let text = "OPTIONS sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP a.b;branch=z9hG4bK1, SIP/2.0/TCP [::1]:5070;branch=z9hG4bK2\r\nf: \"A, B\" <sip:a@b>;tag=1\r\nt: sip:x@y\r\ni: abc\r\nCSeq: 1\r\n OPTIONS\r\nm: \"x,y\" <sip:c@d>, <sip:e@f>\r\nl: 0\r\n\r\n";
        let Message::Request(r) = Message::parse_datagram(text.as_bytes()).expect("valid") else {
            panic!("request expected");
        };
        assert_eq!(r.headers.vias().len(), 2);
        assert_eq!(r.headers.vias()[1].host, "::1");
        assert_eq!(r.headers.vias()[1].port, Some(5070));
        assert_eq!(r.headers.all("Contact").count(), 2);
        assert_eq!(r.headers.from().and_then(|f| f.display).as_deref(), Some("A, B"));
        assert_eq!(r.headers.call_id(), Some("abc"));
        assert_eq!(r.headers.get("i"), Some("abc"));
        assert_eq!(r.headers.cseq().map(|c| c.seq), Some(1));
    }

    #[test]
    fn stream_framing() {
        let bytes = INVITE.as_bytes();
        for cut in 0..bytes.len() - 1 {
            assert_eq!(Message::parse_stream(&bytes[..cut]).err(), Some(ParseError::Incomplete), "prefix {cut}");
        }
        let mut two = b"\r\n\r\n".to_vec();
        two.extend_from_slice(bytes);
        two.extend_from_slice(bytes);
        let (_, used) = Message::parse_stream(&two).expect("first");
        // The sample's body line ends one byte past its Content-Length.
        assert_eq!(used, 4 + bytes.len() - 1);
        let (_, used2) = Message::parse_stream(&two[used..]).expect("second");
        assert_eq!(used2, bytes.len());
        let no_length = INVITE.replace("Content-Length: 4\r\n", "");
        assert!(matches!(
            Message::parse_stream(no_length.as_bytes()),
            Err(ParseError::Invalid { problem: Problem::MissingContentLength, request: Some(_) })
        ));
    }

    #[test]
    fn precise_problems() {
        let cases = [
            (INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 ACK"), Problem::CSeqMethodMismatch),
            (INVITE.replace("CSeq: 314159", "CSeq: 99999999999"), Problem::MalformedCSeq),
            (INVITE.replace("Max-Forwards: 70", "Max-Forwards: abc"), Problem::MalformedMaxForwards),
            (INVITE.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", ""), Problem::MissingHeader("Call-ID")),
            (INVITE.replace("Content-Length: 4", "Content-Length: 400"), Problem::BodyTooShort),
            (INVITE.replace("Content-Length: 4", "Content-Length: -4"), Problem::BadContentLength),
            (INVITE.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia"), Problem::UnsupportedVersion),
            (INVITE.replace("To: Bob <", "To: \"Bob <"), Problem::MalformedAddress("To")),
            (INVITE.replace("INVITE sip:bob@biloxi.com", "INVITE  sip:bob@biloxi.com"), Problem::BadStartLine),
            (INVITE.replace("sip:bob@biloxi.com SIP", "<sip:bob@biloxi.com> SIP"), Problem::MalformedRequestUri),
            (INVITE.replace("Max-Forwards: 70", "Max-Forwards 70"), Problem::MalformedHeaderLine),
        ];
        for (text, expected) in cases {
            match Message::parse_datagram(text.as_bytes()) {
                Err(ParseError::Invalid { problem, .. }) => assert_eq!(problem, expected, "{text}"),
                other => panic!("{expected:?} expected, got {other:?}"),
            }
        }
        assert_eq!(Problem::UnsupportedVersion.status(), 505);
        assert!(matches!(Message::parse_datagram(&vec![b'a'; 70_000]), Err(ParseError::Invalid { problem: Problem::TooLarge, .. })));
        assert!(Message::parse_datagram(b"").is_err());
        assert!(Message::parse_datagram(b"\x00\x01\x02").is_err());
    }

    #[test]
    fn header_editing() {
        let mut h = Headers::new();
        h.push("via", "a");
        h.push("Via", "b");
        h.push_front("v", "c");
        assert_eq!(h.all("Via").collect::<Vec<_>>(), vec!["c", "a", "b"]);
        h.set("VIA", "d");
        assert_eq!(h.all("Via").collect::<Vec<_>>(), vec!["d"]);
        h.push("Require", "100rel, timer");
        assert!(h.has_token("require", "TIMER"));
        assert_eq!(h.remove_first("via").as_deref(), Some("d"));
        assert!(h.get("Via").is_none());
    }
}
