//! name-addr (To, From, Contact, Refer-To) and Via, parsed and printed (RFC 3261 §20, §25).

use super::*;

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
