//! SIP message parsing and printing (RFC 3261 §7, §18.3, §20, §25; RFC 4475 and RFC 5118
//! torture rules). Pure: bytes in, typed messages out, and back; no I/O. Never panics on input,
//! tells "incomplete" (a TCP stream needs more bytes) from "invalid", and for an invalid request
//! that framed well keeps what it parsed so the caller can answer with the precise problem.

use std::fmt;

use super::uri::{parse_hostport, write_host, Uri, UriError};

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

/// RFC 3261 §25.1 `token` characters.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
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

    /// Method names are case-sensitive (§7.1): "invite" is an extension method, not INVITE.
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

/// Compact forms (RFC 3261 §7.3.3, RFC 3515, RFC 3892, RFC 4028, RFC 3841, RFC 4474, RFC 6665).
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("n", "Identity-Info"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

/// Header names we print in their registered spelling; any other name is kept as written.
const KNOWN: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers whose comma-separated values are separate entries (§7.3.1). Others, such as
/// WWW-Authenticate or Date, have commas inside a single value.
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

/// The registered spelling of a header name, compact forms expanded; unknown names as written.
pub fn canonical_name(name: &str) -> String {
    if name.len() == 1 {
        if let Some((_, full)) = COMPACT.iter().find(|(c, _)| c.eq_ignore_ascii_case(name)) {
            return (*full).to_string();
        }
    }
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        Some(known) => (*known).to_string(),
        None => name.to_string(),
    }
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

    fn position(&self, canonical: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(canonical))
    }

    /// First value of `name` (any case, compact form accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = canonical_name(name);
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = canonical_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.as_str())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_name(name),
            value: value.into(),
        });
    }

    /// Inserts before every other header (a proxy prepending its Via, §16.6 step 8).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(
            0,
            Header {
                name: canonical_name(name),
                value: value.into(),
            },
        );
    }

    /// Replaces every `name` header by one with `value`, where the first one was.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let name = canonical_name(name);
        let value = value.into();
        match self.position(&name) {
            Some(first) => {
                let mut index = 0;
                self.0.retain(|h| {
                    let keep = index == first || !h.name.eq_ignore_ascii_case(&name);
                    index += 1;
                    keep
                });
                if let Some(h) = self.0.get_mut(first) {
                    h.value = value;
                }
            }
            None => self.0.push(Header { name, value }),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let name = canonical_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(&name));
    }

    pub fn remove_first(&mut self, name: &str) -> Option<String> {
        let index = self.position(&canonical_name(name))?;
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

    /// First Contact; `None` for the REGISTER wildcard "*" as for an absent or broken one.
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
        parse_digits(self.get("Max-Forwards")?.trim())
    }

    pub fn record_routes(&self) -> Vec<NameAddr> {
        self.all("Record-Route")
            .filter_map(|v| NameAddr::parse(v).ok())
            .collect()
    }

    pub fn routes(&self) -> Vec<NameAddr> {
        self.all("Route")
            .filter_map(|v| NameAddr::parse(v).ok())
            .collect()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.get("Content-Type").map(str::trim)
    }

    pub fn content_length(&self) -> Option<usize> {
        parse_digits(self.get("Content-Length")?.trim())
    }

    /// Whether `token` is among the comma-separated values of every `name` header, ignoring case
    /// (option tags, methods in Allow).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// `1*DIGIT` into an integer; `None` for anything else, including overflow.
fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `"quoted string"` at the start of `s`: its unescaped contents and what follows it.
fn take_quoted(s: &str) -> Option<(String, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, inner.get(i + 1..).unwrap_or(""))),
            c => out.push(c),
        }
    }
    None
}

/// Splits on `sep` outside quoted strings (with backslash escapes) and `<...>`.
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
            '"' if !in_angle => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            c if c == sep && !in_quotes && !in_angle => {
                parts.push(s.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or(""));
    parts
}

/// `*( SEMI generic-param )` after the leading ';' has been removed. Values are a token, a host
/// (possibly a bracketed IPv6 reference) or a quoted string; LWS around '=' is allowed.
fn parse_header_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
    let mut params = Vec::new();
    for part in split_outside_quotes(s, ';') {
        let part = part.trim();
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (part, None),
        };
        if name.is_empty() || !name.chars().all(is_token_char) {
            return None;
        }
        if let Some(v) = value {
            let ok = if v.starts_with('"') {
                take_quoted(v).is_some_and(|(_, rest)| rest.is_empty())
            } else {
                !v.is_empty() && v.chars().all(|c| is_token_char(c) || "[]:".contains(c))
            };
            if !ok {
                return None;
            }
        }
        params.push((name.to_string(), value.map(str::to_string)));
    }
    Some(params)
}

fn find_param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

fn set_param(params: &mut Vec<(String, Option<String>)>, name: &str, value: Option<&str>) {
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(p) => p.1 = value.map(str::to_string),
        None => params.push((name.to_string(), value.map(str::to_string))),
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[(String, Option<String>)]) -> fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// `CSeq = 1*DIGIT LWS Method`, the number below 2**31 (§8.1.1.5).
fn parse_cseq(value: &str) -> Result<CSeq, Problem> {
    let mut parts = value.split_whitespace();
    let (Some(seq), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Problem::MalformedCSeq);
    };
    let seq: u32 = parse_digits(seq).ok_or(Problem::MalformedCSeq)?;
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
    #[error("empty address")]
    Empty,
    #[error("unterminated quoted display name")]
    UnterminatedQuote,
    #[error("display name is neither tokens nor a quoted string")]
    BadDisplayName,
    #[error("missing '<' after the display name")]
    MissingLeftAngle,
    #[error("missing '>'")]
    MissingRightAngle,
    #[error("a URI with ',', ';' or '?' must be enclosed in <>")]
    NeedsAngleBrackets,
    #[error("bad URI: {0}")]
    Uri(#[from] UriError),
    #[error("bad header parameters")]
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

    /// `(name-addr / addr-spec) *(SEMI param)` as in From, To, Contact, Route (§20.10, §25.1).
    pub fn parse(s: &str) -> Result<NameAddr, AddressError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        let (display, rest) = if s.starts_with('"') {
            let (display, after) = take_quoted(s).ok_or(AddressError::UnterminatedQuote)?;
            let after = after.trim_start();
            if !after.starts_with('<') {
                return Err(AddressError::MissingLeftAngle);
            }
            (Some(display), after)
        } else if let Some(lt) = s.find('<') {
            let name = s.get(..lt).unwrap_or("").trim();
            // display-name = *(token LWS): a ',' or '"' here is an error (RFC 4475 "baddn").
            // Non-ASCII letters are let through: some UAs send unquoted UTF-8 names, and they
            // cannot be mistaken for delimiters.
            if !name
                .split_whitespace()
                .all(|word| word.chars().all(|c| is_token_char(c) || !c.is_ascii()))
            {
                return Err(AddressError::BadDisplayName);
            }
            let display = (!name.is_empty()).then(|| name.to_string());
            (display, s.get(lt..).unwrap_or(""))
        } else {
            // addr-spec: parameters after the URI belong to the header, not the URI (§20.10),
            // so a URI carrying its own ';', '?' or ',' had to be written inside <>.
            let (uri, params) = match s.split_once(';') {
                Some((u, p)) => (
                    u.trim_end(),
                    parse_header_params(p).ok_or(AddressError::Params)?,
                ),
                None => (s, Vec::new()),
            };
            if uri.contains(['?', ',']) {
                return Err(AddressError::NeedsAngleBrackets);
            }
            return Ok(NameAddr {
                display: None,
                uri: Uri::parse(uri)?,
                params,
            });
        };
        let inner = rest
            .strip_prefix('<')
            .ok_or(AddressError::MissingLeftAngle)?;
        // No LWS inside the brackets (RFC 4475 "badaspec"): Uri::parse refuses it.
        let (uri, after) = inner
            .split_once('>')
            .ok_or(AddressError::MissingRightAngle)?;
        let after = after.trim_start();
        let params = if after.is_empty() {
            Vec::new()
        } else {
            let p = after.strip_prefix(';').ok_or(AddressError::Params)?;
            parse_header_params(p).ok_or(AddressError::Params)?
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
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = &self.display {
            f.write_str("\"")?;
            for c in display.chars() {
                match c {
                    // quoted-pair cannot carry CR or LF; anything else that qdtext cannot
                    // hold is escaped.
                    '\r' | '\n' => f.write_str(" ")?,
                    '"' | '\\' => write!(f, "\\{c}")?,
                    c if c.is_ascii_control() && c != '\t' => write!(f, "\\{c}")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased: UDP, TCP, TLS, SCTP, WS, WSS, ...
    pub transport: String,
    /// IPv6 without brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Vec<(String, Option<String>)>,
}

impl Via {
    /// One via-parm: `SIP / 2.0 / transport LWS sent-by *(SEMI via-params)`, LWS allowed around
    /// the slashes (RFC 4475 "wsinv").
    pub fn parse(s: &str) -> Result<Via, Problem> {
        let mut rest = s.trim();
        let mut protocol: [&str; 3] = [""; 3];
        for (i, slot) in protocol.iter_mut().enumerate() {
            rest = rest.trim_start();
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            *slot = rest.get(..end).unwrap_or("");
            rest = rest.get(end..).unwrap_or("").trim_start();
            if i < 2 {
                rest = rest.strip_prefix('/').ok_or(Problem::MalformedVia)?;
            }
        }
        let [name, version, transport] = protocol;
        if !name.eq_ignore_ascii_case("SIP")
            || version != "2.0"
            || transport.is_empty()
            || !transport.chars().all(is_token_char)
        {
            return Err(Problem::MalformedVia);
        }
        let (sent_by, params) = match rest.split_once(';') {
            Some((h, p)) => (h, parse_header_params(p).ok_or(Problem::MalformedVia)?),
            None => (rest, Vec::new()),
        };
        // A Via may end with a comment (RFC 3261 §25.1 allows comments in Via).
        let sent_by = sent_by.split('(').next().unwrap_or("").trim();
        let (host, port) = parse_hostport(sent_by).map_err(|_| Problem::MalformedVia)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    pub fn received(&self) -> Option<&str> {
        self.param("received").flatten()
    }

    /// `Some(None)` for a bare `;rport` (RFC 3581 request), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(|p| p.parse().ok()))
    }

    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }

    pub fn set_param(&mut self, name: &str, value: Option<&str>) {
        set_param(&mut self.params, name, value);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} ", self.transport)?;
        write_host(f, &self.host, self.port)?;
        write_params(f, &self.params)
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
    /// `request` is the request as parsed when its start line and header block framed, so the
    /// caller can answer `problem.status()`; `None` for responses and unframeable input.
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
    /// NUL, control or non-ASCII bytes where the grammar has none; names where.
    #[error("Invalid Bytes In {0}")]
    InvalidBytes(&'static str),
    #[error("Malformed Header Line")]
    MalformedHeaderLine,
    #[error("Missing {0}")]
    MissingHeader(&'static str),
    /// A header that must appear once appears more often (RFC 4475 "multi01").
    #[error("Multiple {0}")]
    MultipleHeader(&'static str),
    #[error("Malformed Call-ID")]
    MalformedCallId,
    #[error("Malformed CSeq")]
    MalformedCSeq,
    #[error("CSeq Method Mismatch")]
    CSeqMethodMismatch,
    #[error("Malformed Via")]
    MalformedVia,
    /// From, To, Contact, Route or Record-Route that is not a name-addr / addr-spec.
    #[error("Malformed {0}")]
    MalformedAddress(&'static str),
    #[error("Malformed Max-Forwards")]
    MalformedMaxForwards,
    #[error("Bad Content-Length")]
    BadContentLength,
    #[error("Multiple Content-Length")]
    MultipleContentLength,
    #[error("Body Shorter Than Content-Length")]
    BodyTooShort,
    #[error("Missing Content-Length")]
    MissingContentLength,
    #[error("Message Too Large")]
    TooLarge,
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

/// Where the header block ends: (end of headers, start of body). Bare LF is accepted as well as
/// CRLF, so the empty line is "\n\n" or "\n\r\n".
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
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
fn skip_leading_crlf(buf: &[u8]) -> usize {
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

enum StartLine {
    Request {
        method: Method,
        uri: Result<Uri, Problem>,
        /// What is wrong with the Request-Line itself (version, spacing), found before the
        /// headers are read but reported with them so the request can still be answered.
        line: Result<(), Problem>,
    },
    Response(u16, String),
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// SIP-Version is "SIP/2.0", case-insensitively; another well-formed version is a 505.
fn check_version(v: &str) -> Result<(), Problem> {
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

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
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
fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
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
fn stray_nul(value: &[u8]) -> bool {
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

fn parse_header_line(line: &[u8]) -> Result<(String, String), Problem> {
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

fn parse_head(head: &[u8]) -> Result<(StartLine, Headers), ParseError> {
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
fn placeholder_uri() -> Uri {
    Uri::sip(None, "invalid", None)
}

fn with_request(start: StartLine, headers: Headers, problem: Problem) -> ParseError {
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

fn build_failure(start: StartLine, headers: Headers, problem: Problem) -> ParseError {
    match start {
        StartLine::Request {
            line: Err(line), ..
        } => with_request(start, headers, line),
        _ => with_request(start, headers, problem),
    }
}

/// The Content-Length of the message, if any: digits only, and several must agree (RFC 4475
/// "ncl", "mcl01"). Saturates rather than overflows, so a huge value is merely "too large".
fn content_length(headers: &Headers) -> Result<Option<usize>, Problem> {
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

fn build(
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
fn validate_common(headers: &Headers) -> Result<(), Problem> {
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

fn validate_request(method: &Method, headers: &Headers) -> Result<(), Problem> {
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

/// CR and LF inside a field would end it early and let the rest pose as another header.
fn push_field(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

fn write_headers(headers: &Headers, body: &[u8], out: &mut Vec<u8>) {
    let mut wrote_length = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            if !wrote_length {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                wrote_length = true;
            }
            continue;
        }
        push_field(out, &h.name);
        out.extend_from_slice(b": ");
        push_field(out, &h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        push_field(&mut out, &format!("{} {} SIP/2.0", self.method, self.uri));
        out.extend_from_slice(b"\r\n");
        write_headers(&self.headers, &self.body, &mut out);
        out
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        push_field(
            &mut out,
            &format!("SIP/2.0 {} {}", self.status, self.reason),
        );
        out.extend_from_slice(b"\r\n");
        write_headers(&self.headers, &self.body, &mut out);
        out
    }

    /// Default reason phrases (RFC 3261 §21 and extensions).
    pub fn reason_for(status: u16) -> &'static str {
        match status {
            100 => "Trying",
            180 => "Ringing",
            181 => "Call Is Being Forwarded",
            182 => "Queued",
            183 => "Session Progress",
            199 => "Early Dialog Terminated",
            200 => "OK",
            202 => "Accepted",
            204 => "No Notification",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            305 => "Use Proxy",
            380 => "Alternative Service",
            400 => "Bad Request",
            401 => "Unauthorized",
            402 => "Payment Required",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            410 => "Gone",
            412 => "Conditional Request Failed",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Long",
            415 => "Unsupported Media Type",
            416 => "Unsupported URI Scheme",
            420 => "Bad Extension",
            421 => "Extension Required",
            422 => "Session Interval Too Small",
            423 => "Interval Too Brief",
            480 => "Temporarily Unavailable",
            481 => "Call/Transaction Does Not Exist",
            482 => "Loop Detected",
            483 => "Too Many Hops",
            484 => "Address Incomplete",
            485 => "Ambiguous",
            486 => "Busy Here",
            487 => "Request Terminated",
            488 => "Not Acceptable Here",
            489 => "Bad Event",
            491 => "Request Pending",
            493 => "Undecipherable",
            500 => "Server Internal Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Server Time-out",
            505 => "Version Not Supported",
            513 => "Message Too Large",
            580 => "Precondition Failure",
            600 => "Busy Everywhere",
            603 => "Decline",
            604 => "Does Not Exist Anywhere",
            606 => "Not Acceptable",
            _ => match status / 100 {
                1 => "Session Progress",
                2 => "OK",
                3 => "Redirected",
                4 => "Request Failure",
                5 => "Server Failure",
                _ => "Global Failure",
            },
        }
    }
}

#[cfg(test)]
mod tests;
