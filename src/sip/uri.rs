//! SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), and any other absolute URI kept
//! opaque so a request naming one can be answered 416. Pure parsing and printing.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other absoluteURI scheme, kept opaque.
    Other(String),
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
    pub params: Vec<(String, Option<String>)>,
    pub headers: Vec<(String, String)>,
    /// For `Scheme::Other`: everything after "scheme:".
    pub opaque: Option<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UriError {
    #[error("no scheme")]
    NoScheme,
    #[error("bad scheme")]
    BadScheme,
    #[error("no host")]
    NoHost,
    #[error("bad host")]
    BadHost,
    #[error("bad port")]
    BadPort,
    #[error("bad user part")]
    BadUser,
    #[error("bad parameter")]
    BadParameter,
    #[error("bad character in URI")]
    BadCharacter,
}

/// RFC 3261 `unreserved` plus what user/param/header parts also allow unescaped.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.!~*'()".contains(c)
}

fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
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

fn valid_part(s: &str, extra: &str) -> bool {
    valid_escapes(s) && s.chars().all(|c| is_unreserved(c) || c == '%' || extra.contains(c))
}

pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_params(s: &str) -> Result<Vec<(String, Option<String>)>, UriError> {
    let mut params = Vec::new();
    for part in s.split(';') {
        if part.is_empty() {
            return Err(UriError::BadParameter);
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (part, None),
        };
        if name.is_empty() || !valid_part(name, "[]/:&+$") {
            return Err(UriError::BadParameter);
        }
        if let Some(v) = value {
            if !valid_part(v, "[]/:&+$") {
                return Err(UriError::BadParameter);
            }
        }
        params.push((name.to_string(), value.map(str::to_string)));
    }
    Ok(params)
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !h.starts_with('-')
        && !h.starts_with('.')
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

    pub fn parse(s: &str) -> Result<Uri, UriError> {
        let s = s.trim();
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>' || c == '"') {
            return Err(UriError::BadCharacter);
        }
        let (scheme, rest) = s.split_once(':').ok_or(UriError::NoScheme)?;
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(UriError::BadScheme);
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "sip" => Scheme::Sip,
            "sips" => Scheme::Sips,
            "tel" => Scheme::Tel,
            other => Scheme::Other(other.to_string()),
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => Self::parse_sip(scheme, rest),
            Scheme::Tel => {
                let (number, params) = match rest.split_once(';') {
                    Some((n, p)) => (n, parse_params(p)?),
                    None => (rest, Vec::new()),
                };
                if number.is_empty() || !valid_part(number, "+-.()") {
                    return Err(UriError::BadUser);
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
            Scheme::Other(_) => {
                if rest.is_empty() {
                    return Err(UriError::BadCharacter);
                }
                Ok(Uri {
                    scheme,
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

    fn parse_sip(scheme: Scheme, rest: &str) -> Result<Uri, UriError> {
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => {
                let mut headers = Vec::new();
                for pair in h.split('&') {
                    let (n, v) = pair.split_once('=').ok_or(UriError::BadParameter)?;
                    if n.is_empty() || !valid_part(n, "[]/?:+$") || !valid_part(v, "[]/?:+$") {
                        return Err(UriError::BadParameter);
                    }
                    headers.push((n.to_string(), v.to_string()));
                }
                (r, headers)
            }
            None => (rest, Vec::new()),
        };
        // '@' cannot appear unescaped in the user part, so the first one ends it; the user
        // part may hold ';' (RFC 4475 "semiuri").
        let (userinfo, hostpart) = match rest.find('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (u, p) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                if u.is_empty() || !valid_part(u, "&=+$,;?/") {
                    return Err(UriError::BadUser);
                }
                if let Some(p) = p {
                    if !valid_part(p, "&=+$,") {
                        return Err(UriError::BadUser);
                    }
                }
                (Some(u.to_string()), p.map(str::to_string))
            }
            None => (None, None),
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, parse_params(p)?),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or(UriError::BadHost)?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UriError::BadHost);
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(UriError::BadPort)?),
            };
            (addr.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(UriError::NoHost);
        }
        if !host.contains(':') && !valid_hostname(&host) {
            return Err(UriError::BadHost);
        }
        let port = match port {
            Some(p) => {
                let n: u16 = p.parse().map_err(|_| UriError::BadPort)?;
                if n == 0 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(UriError::BadPort);
                }
                Some(n)
            }
            None => None,
        };
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

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Scheme::Sip => f.write_str("sip:")?,
            Scheme::Sips => f.write_str("sips:")?,
            Scheme::Tel => {
                write!(f, "tel:{}", self.user.as_deref().unwrap_or(""))?;
                for (n, v) in &self.params {
                    match v {
                        Some(v) => write!(f, ";{n}={v}")?,
                        None => write!(f, ";{n}")?,
                    }
                }
                return Ok(());
            }
            Scheme::Other(s) => return write!(f, "{s}:{}", self.opaque.as_deref().unwrap_or("")),
        }
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
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

    #[test]
    fn parses_and_prints_sip_uris() {
        for text in [
            "sip:alice@atlanta.com",
            "sip:alice:secret@atlanta.com;transport=tcp",
            "sips:+1-212-555-1212:1234@gateway.com;user=phone",
            "sip:alice@192.0.2.4:5061",
            "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
            "sip:alice;day=tuesday@atlanta.com",
            "sip:[2001:db8::10]:5070;lr",
            "sip:127.0.0.1",
        ] {
            let uri = Uri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(uri.to_string(), text);
        }
        let uri = Uri::parse("sip:user;par=u%40example.net@example.com").expect("semiuri");
        assert_eq!(uri.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(uri.host, "example.com");
        let v6 = Uri::parse("sip:[2001:db8::10]:5070").expect("v6");
        assert_eq!((v6.host.as_str(), v6.port), ("2001:db8::10", Some(5070)));
        assert_eq!(Uri::parse("sip:%61lice@a.com").expect("esc").user_unescaped().as_deref(), Some("alice"));
        assert_eq!(Uri::parse("sip:a@b;Transport=TCP").expect("p").param("transport"), Some(Some("TCP")));
    }

    #[test]
    fn tel_and_other_schemes() {
        let tel = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").expect("tel");
        assert_eq!(tel.scheme, Scheme::Tel);
        assert_eq!(tel.user.as_deref(), Some("+1-201-555-0123"));
        assert_eq!(tel.to_string(), "tel:+1-201-555-0123;phone-context=example.com");
        let other = Uri::parse("http://example.com/x").expect("absolute URI");
        assert_eq!(other.scheme, Scheme::Other("http".into()));
        assert_eq!(other.to_string(), "http://example.com/x");
    }

    #[test]
    fn rejects_malformed_uris() {
        for bad in [
            "",
            "alice@atlanta.com",
            "sip:",
            "sip:alice@",
            "sip:alice@host:99999",
            "sip:alice@host:0",
            "sip:alice@host:abc",
            "sip:al ice@host",
            "<sip:alice@host>",
            "sip:alice@[::1",
            "sip:alice@[zz::1]",
            "sip:alice@ho_st",
            "sip:alice%2@host",
            "sip:alice@host;;lr",
            "1sip:alice@host",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
