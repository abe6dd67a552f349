//! Header fields: names (compact and registered forms), the ordered header list, and the
//! parameter syntax shared by Via, To, From and Contact (RFC 3261 §7.3, §20, §25).

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Compact forms (RFC 3261 §7.3.3, RFC 3515, RFC 3892, RFC 4028, RFC 3841, RFC 4474, RFC 6665).
pub(super) const COMPACT: &[(&str, &str)] = &[
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
pub(super) const KNOWN: &[&str] = &[
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
pub(super) const LIST_HEADERS: &[&str] = &[
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
pub(super) fn parse_digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `"quoted string"` at the start of `s`: its unescaped contents and what follows it.
pub(super) fn take_quoted(s: &str) -> Option<(String, &str)> {
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
pub(super) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
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
pub(super) fn parse_header_params(s: &str) -> Option<Vec<(String, Option<String>)>> {
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

pub(super) fn find_param<'a>(
    params: &'a [(String, Option<String>)],
    name: &str,
) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

pub(super) fn set_param(
    params: &mut Vec<(String, Option<String>)>,
    name: &str,
    value: Option<&str>,
) {
    match params
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(p) => p.1 = value.map(str::to_string),
        None => params.push((name.to_string(), value.map(str::to_string))),
    }
}

pub(super) fn write_params(
    f: &mut fmt::Formatter<'_>,
    params: &[(String, Option<String>)],
) -> fmt::Result {
    for (n, v) in params {
        match v {
            Some(v) => write!(f, ";{n}={v}")?,
            None => write!(f, ";{n}")?,
        }
    }
    Ok(())
}

/// `CSeq = 1*DIGIT LWS Method`, the number below 2**31 (§8.1.1.5).
pub(super) fn parse_cseq(value: &str) -> Result<CSeq, Problem> {
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
