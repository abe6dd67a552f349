//! SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118 for IPv6 references), and
//! any other absolute URI kept opaque so a request naming one can be answered 416.
//! Pure parsing and printing: no I/O, no name resolution, never panics on input.

use std::fmt;
use std::net::Ipv6Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absoluteURI scheme (lower-cased), kept opaque.
    Other(String),
}

impl Scheme {
    pub fn as_str(&self) -> &str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
            Scheme::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub scheme: Scheme,
    /// As written (still %-escaped); for tel: the number.
    pub user: Option<String>,
    pub password: Option<String>,
    /// IPv6 without brackets; empty for tel: and other schemes.
    pub host: String,
    pub port: Option<u16>,
    /// Names kept as written; looked up case-insensitively.
    pub params: Vec<(String, Option<String>)>,
    pub headers: Vec<(String, String)>,
    /// For `Scheme::Other`: everything after "scheme:".
    pub opaque: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UriError {
    #[error("empty URI")]
    Empty,
    #[error("no scheme")]
    NoScheme,
    #[error("bad scheme")]
    BadScheme,
    #[error("whitespace or control character in URI")]
    Whitespace,
    #[error("character not allowed in URI")]
    BadCharacter,
    #[error("bad %-escape")]
    BadEscape,
    #[error("bad user part")]
    BadUser,
    #[error("bad password")]
    BadPassword,
    #[error("no host")]
    NoHost,
    #[error("bad host")]
    BadHost,
    #[error("unterminated IPv6 reference")]
    UnterminatedIpv6,
    #[error("bad IPv6 address")]
    BadIpv6,
    #[error("bad port")]
    BadPort,
    #[error("bad URI parameter")]
    BadParameter,
    #[error("bad URI header")]
    BadHeader,
    #[error("bad telephone number")]
    BadNumber,
    #[error("empty opaque part")]
    EmptyOpaque,
}

/// RFC 3261 `unreserved`.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)
}

/// Every `%` starts a well-formed `%HEX HEX`.
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

/// `unreserved / escaped / extra`, the shape of every sip-URI component but the host.
fn valid_part(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| is_unreserved(c) || c == '%' || extra.contains(c))
}

fn check_part(s: &str, extra: &str, err: UriError) -> Result<(), UriError> {
    if !valid_part(s, extra) {
        return Err(err);
    }
    if !valid_escapes(s) {
        return Err(UriError::BadEscape);
    }
    Ok(())
}

const USER_UNRESERVED: &str = "&=+$,;?/";
const PASSWORD_EXTRA: &str = "&=+$,";
const PARAM_UNRESERVED: &str = "[]/:&+$";
const HNV_UNRESERVED: &str = "[]/?:+$";

/// Decodes `%XX` escapes; bytes that are not UTF-8 after decoding become U+FFFD.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = (b.get(i + 1).copied(), b.get(i + 2).copied());
            if let (Some(h), Some(l)) = hex {
                if let (Some(h), Some(l)) = (hex_value(h), hex_value(l)) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, UriError> {
    let mut params = Vec::new();
    for part in s.split(';') {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        if name.is_empty() || value == Some("") {
            return Err(UriError::BadParameter);
        }
        check_part(name, PARAM_UNRESERVED, UriError::BadParameter)?;
        if let Some(v) = value {
            check_part(v, PARAM_UNRESERVED, UriError::BadParameter)?;
        }
        params.push((name.to_string(), value.map(str::to_string)));
    }
    Ok(params)
}

fn parse_headers(s: &str) -> Result<Vec<(String, String)>, UriError> {
    let mut headers = Vec::new();
    for pair in s.split('&') {
        let (name, value) = pair.split_once('=').ok_or(UriError::BadHeader)?;
        if name.is_empty() {
            return Err(UriError::BadHeader);
        }
        check_part(name, HNV_UNRESERVED, UriError::BadHeader)?;
        check_part(value, HNV_UNRESERVED, UriError::BadHeader)?;
        headers.push((name.to_string(), value.to_string()));
    }
    Ok(headers)
}

/// hostname / IPv4address (RFC 3261 §25.1), leniently: labels of alphanumerics and '-'.
fn valid_hostname(h: &str) -> bool {
    let h = h.strip_suffix('.').unwrap_or(h);
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// RFC 5118 §4.10: RFC 3261's ABNF admits "2001:db8:::192.0.2.1", and an implementation must
/// tolerate both that and the correct two-colon form.
fn valid_ipv6(addr: &str) -> bool {
    if addr.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    match addr.find(":::") {
        Some(i) if addr.matches(":::").count() == 1 && !addr.contains("::::") => {
            let fixed = format!(
                "{}{}",
                addr.get(..i).unwrap_or(""),
                addr.get(i + 1..).unwrap_or("")
            );
            let ends_in_ipv4 = addr
                .rsplit(':')
                .next()
                .is_some_and(|last| last.contains('.'));
            ends_in_ipv4 && fixed.parse::<Ipv6Addr>().is_ok()
        }
        _ => false,
    }
}

/// `host [":" port]` where host may be an IPv6 reference in brackets; shared with Via sent-by.
pub(crate) fn parse_hostport(hostport: &str) -> Result<(String, Option<u16>), UriError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or(UriError::UnterminatedIpv6)?;
        if !valid_ipv6(addr) {
            return Err(UriError::BadIpv6);
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UriError::BadPort)?),
        };
        (addr, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::NoHost);
    }
    if !hostport.starts_with('[') && !valid_hostname(host) {
        return Err(UriError::BadHost);
    }
    let port = match port {
        Some(p) => Some(parse_port(p)?),
        None => None,
    };
    Ok((host.to_string(), port))
}

fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UriError::BadPort),
        Ok(n) => Ok(n),
    }
}

impl Uri {
    pub fn sip(user: Option<&str>, host: &str, port: Option<u16>) -> Uri {
        Uri {
            scheme: Scheme::Sip,
            user: user.map(str::to_string),
            password: None,
            host: host.to_string(),
            port,
            params: Vec::new(),
            headers: Vec::new(),
            opaque: None,
        }
    }

    /// Parses exactly one URI: surrounding whitespace is the caller's to strip, because where
    /// SIP allows a URI (Request-Line, inside `<>`) LWS around it is itself an error.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UriError::Whitespace);
        }
        let (scheme, rest) = s.split_once(':').ok_or(UriError::NoScheme)?;
        if scheme.is_empty() {
            return Err(UriError::NoScheme);
        }
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(UriError::BadScheme);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "sip" => Self::parse_sip(Scheme::Sip, rest),
            "sips" => Self::parse_sip(Scheme::Sips, rest),
            "tel" => Self::parse_tel(rest),
            other => {
                if rest.is_empty() {
                    return Err(UriError::EmptyOpaque);
                }
                // '<', '>' and '"' delimit URIs in header fields, so no absoluteURI holds them.
                if rest.contains(['<', '>', '"']) {
                    return Err(UriError::BadCharacter);
                }
                Ok(Uri {
                    scheme: Scheme::Other(other.to_string()),
                    user: None,
                    password: None,
                    host: String::new(),
                    port: None,
                    params: Vec::new(),
                    headers: Vec::new(),
                    opaque: Some(rest.to_string()),
                })
            }
        }
    }

    fn parse_tel(rest: &str) -> Result<Uri, UriError> {
        let (number, params) = match rest.split_once(';') {
            Some((n, p)) => (n, parse_params(p)?),
            None => (rest, Vec::new()),
        };
        if number.is_empty()
            || !number
                .chars()
                .all(|c| c.is_ascii_hexdigit() || "+-.()*#%".contains(c))
        {
            return Err(UriError::BadNumber);
        }
        if !valid_escapes(number) {
            return Err(UriError::BadEscape);
        }
        Ok(Uri {
            scheme: Scheme::Tel,
            user: Some(number.to_string()),
            password: None,
            host: String::new(),
            port: None,
            params,
            headers: Vec::new(),
            opaque: None,
        })
    }

    fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, UriError> {
        // '@' is allowed unescaped nowhere but as the end of userinfo, while the user part may
        // hold ';' and '?' (RFC 4475 "semiuri", "intmeth"): so split there before anything else.
        let (userinfo, hostpart) = match rest.find('@') {
            Some(i) => (rest.get(..i), rest.get(i + 1..).unwrap_or("")),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (u, p) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                if u.is_empty() {
                    return Err(UriError::BadUser);
                }
                check_part(u, USER_UNRESERVED, UriError::BadUser)?;
                if let Some(p) = p {
                    check_part(p, PASSWORD_EXTRA, UriError::BadPassword)?;
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
            None => (None, None),
        };
        let (hostpart, headers) = match hostpart.split_once('?') {
            Some((h, q)) => (h, parse_headers(q)?),
            None => (hostpart, Vec::new()),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, parse_params(p)?),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = parse_hostport(hostport)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
            opaque: None,
        })
    }

    /// Parameter by name, case-insensitively: `Some(None)` for a flag such as `;lr`.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
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

/// Brackets an IPv6 host so its colons are not read as a port separator.
pub(crate) fn write_host(f: &mut fmt::Formatter<'_>, host: &str, port: Option<u16>) -> fmt::Result {
    if host.contains(':') {
        write!(f, "[{host}]")?;
    } else {
        f.write_str(host)?;
    }
    if let Some(port) = port {
        write!(f, ":{port}")?;
    }
    Ok(())
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::Sip | Scheme::Sips => {}
            Scheme::Tel => {
                write!(f, "tel:{}", self.user.as_deref().unwrap_or(""))?;
                return write_params(f, &self.params);
            }
            Scheme::Other(s) => return write!(f, "{s}:{}", self.opaque.as_deref().unwrap_or("")),
        }
        write!(f, "{}:", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write_host(f, &self.host, self.port)?;
        write_params(f, &self.params)?;
        for (i, (n, v)) in self.headers.iter().enumerate() {
            write!(f, "{}{n}={v}", if i == 0 { '?' } else { '&' })?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Uri {
        Uri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn sip_uris_round_trip() {
        for text in [
            "sip:alice@atlanta.com",
            "sip:alice:secret@atlanta.com;transport=tcp",
            "sips:+1-212-555-1212:1234@gateway.com;user=phone",
            "sip:alice@192.0.2.4:5061",
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            "sip:alice;day=tuesday@atlanta.com",
            "sip:[2001:db8::10]:5070;lr",
            "sip:127.0.0.1",
            "sip:user@example.com?Route=%3Csip:example.com%3E",
            "sip:ag%65nt7@edge.example.org;%74x;r%6fle=s%61les%25%32%30",
        ] {
            assert_eq!(parse(text).to_string(), text);
            assert_eq!(parse(&parse(text).to_string()), parse(text));
        }
    }

    #[test]
    fn user_part_may_hold_semicolons_and_question_marks() {
        let uri = parse("sip:user;par=u%40example.net@example.com");
        assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(uri.host, "example.com");
        assert!(uri.params.is_empty());
        let crazy =
            "sip:desk~7(north)&ops'+q$/odd?,/;;*:&pin=4,key!*s$cr~t_(it's.fine)@example.com";
        let uri = parse(crazy);
        assert_eq!(uri.user.as_deref(), Some("desk~7(north)&ops'+q$/odd?,/;;*"));
        assert_eq!(
            uri.password.as_deref(),
            Some("&pin=4,key!*s$cr~t_(it's.fine)")
        );
        assert_eq!(uri.to_string(), crazy);
    }

    #[test]
    fn ipv6_references() {
        let v6 = parse("sip:[2001:db8::10]:5070");
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::10", Some(5070)));
        // RFC 5118 §4.3: the last group belongs to the address, not a port.
        let ambiguous = parse("sip:[2001:db8::10:5070]");
        assert_eq!(
            (ambiguous.host.as_str(), ambiguous.port),
            ("2001:db8::10:5070", None)
        );
        assert_eq!(ambiguous.to_string(), "sip:[2001:db8::10:5070]");
        let mapped = parse("sip:ted@[::ffff:192.0.2.2]");
        assert_eq!(mapped.host, "::ffff:192.0.2.2");
        // RFC 5118 §4.10: tolerate RFC 3261's three-colon ABNF bug, keep it as written.
        assert_eq!(
            parse("sip:user@[2001:db8:::192.0.2.1]").host,
            "2001:db8:::192.0.2.1"
        );
        assert_eq!(Uri::parse("sip:2001:db8::10"), Err(UriError::BadPort));
        assert_eq!(
            Uri::parse("sip:[2001:db8::10"),
            Err(UriError::UnterminatedIpv6)
        );
        assert_eq!(Uri::parse("sip:[2001:db8:::10]"), Err(UriError::BadIpv6));
    }

    #[test]
    fn helpers() {
        assert_eq!(
            parse("sip:%61lice@a.com").user_unescaped().as_deref(),
            Some("alice")
        );
        assert_eq!(
            parse("sip:nul%00byte@a.com").user_unescaped().as_deref(),
            Some("nul\0byte")
        );
        assert_eq!(
            parse("sip:a@b;Transport=TCP").param("transport"),
            Some(Some("TCP"))
        );
        assert_eq!(parse("sip:a@b;lr").param("LR"), Some(None));
        assert_eq!(parse("sip:a@b").param("lr"), None);
        assert_eq!(parse("SIP:a@b").scheme, Scheme::Sip);
        let built = Uri::sip(Some("bob"), "2001:db8::1", Some(5060));
        assert_eq!(built.to_string(), "sip:bob@[2001:db8::1]:5060");
        assert_eq!("sip:bob@[2001:db8::1]:5060".parse::<Uri>(), Ok(built));
    }

    #[test]
    fn tel_and_other_schemes() {
        let tel = parse("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(tel.scheme, Scheme::Tel);
        assert_eq!(tel.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(
            tel.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        let other = parse("http://example.com/x");
        assert_eq!(other.scheme, Scheme::Other("http".into()));
        assert_eq!(other.to_string(), "http://example.com/x");
        let odd = parse("callgateProbe:opaque-Part-42");
        assert_eq!(odd.scheme, Scheme::Other("callgateprobe".into()));
        assert_eq!(parse(&odd.to_string()), odd);
    }

    #[test]
    fn rejects_malformed_uris() {
        for (bad, why) in [
            ("", UriError::Empty),
            ("alice@atlanta.com", UriError::NoScheme),
            (":alice", UriError::NoScheme),
            ("1sip:alice@host", UriError::BadScheme),
            ("sip:", UriError::NoHost),
            ("sip:alice@", UriError::NoHost),
            ("sip:alice@host:99999", UriError::BadPort),
            ("sip:alice@host:0", UriError::BadPort),
            ("sip:alice@host:", UriError::BadPort),
            ("sip:alice@host:abc", UriError::BadPort),
            ("sip:al ice@host", UriError::Whitespace),
            (" sip:alice@host", UriError::Whitespace),
            ("sip:alice@host\0", UriError::Whitespace),
            ("sip:alice@[zz::1]", UriError::BadIpv6),
            ("sip:alice@ho_st", UriError::BadHost),
            ("sip:alice@-host", UriError::BadHost),
            ("sip:alice%2@host", UriError::BadEscape),
            ("sip:al<ice@host", UriError::BadUser),
            ("sip:alice:pa@ss@host", UriError::BadHost),
            ("sip:alice@host;;lr", UriError::BadParameter),
            ("sip:alice@host;lr=", UriError::BadParameter),
            ("sip:alice@host?x", UriError::BadHeader),
            ("sip:alice@host?=y", UriError::BadHeader),
            ("tel:", UriError::BadNumber),
            ("tel:+1 555", UriError::Whitespace),
            ("http:", UriError::EmptyOpaque),
            ("http:<x>", UriError::BadCharacter),
        ] {
            assert_eq!(Uri::parse(bad), Err(why), "{bad:?}");
        }
    }
}
