//! SDP text: parsing (lenient where peers are, strict where the structure would be
//! ambiguous) and printing.

use std::fmt;
use std::str::FromStr;

use super::model::*;

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let bad = SdpError::BadOrigin { line };
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let [username, id, version, _nettype, _addrtype, address] = tokens.as_slice() else {
        return Err(bad);
    };
    Ok(Origin {
        username: username.to_string(),
        session_id: id.parse().map_err(|_| bad.clone())?,
        session_version: version.parse().map_err(|_| bad)?,
        address: address.to_string(),
    })
}

fn parse_connection(value: &str, line: usize) -> Result<String, SdpError> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    match tokens.as_slice() {
        [nettype, addrtype, address]
            if nettype.eq_ignore_ascii_case("IN")
                && (addrtype.eq_ignore_ascii_case("IP4")
                    || addrtype.eq_ignore_ascii_case("IP6")) =>
        {
            Ok(address.to_string())
        }
        _ => Err(SdpError::BadConnection { line }),
    }
}

fn parse_media(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let bad = SdpError::BadMediaLine { line };
    let mut tokens = value.split_whitespace();
    let (Some(media), Some(port), Some(protocol)) = (tokens.next(), tokens.next(), tokens.next())
    else {
        return Err(bad);
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (
            p.parse().map_err(|_| bad.clone())?,
            Some(n.parse().map_err(|_| bad.clone())?),
        ),
        None => (port.parse().map_err(|_| bad.clone())?, None),
    };
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        protocol: protocol.to_string(),
        formats: tokens.map(str::to_string).collect(),
        connection: None,
        bandwidth: Vec::new(),
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Option<(String, Option<String>)> {
    let (name, value) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (value, None),
    };
    let name = name.trim();
    (!name.is_empty()).then(|| (name.to_string(), value))
}

impl SessionDescription {
    /// Parses an SDP body. Accepts CRLF or bare LF and ignores blank lines
    /// and line types callgate has no use for; rejects anything that would
    /// make the structure ambiguous (missing v=/o=/m=, malformed o=/c=/m=,
    /// session-level lines after the first m=).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut version_seen = false;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut bandwidth = Vec::new();
        let mut times = Vec::new();
        let mut attributes = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();

        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            if content.trim().is_empty() {
                continue;
            }
            let bytes = content.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
                return Err(SdpError::BadLine {
                    line,
                    reason: "expected <type>=<value>",
                });
            }
            let kind = bytes[0];
            // Byte 0 is ASCII and byte 1 is '=', so 2 is a char boundary.
            let value = &content[2..];

            if !version_seen {
                if kind != b'v' {
                    return Err(SdpError::MissingVersion);
                }
                if value.trim() != "0" {
                    return Err(SdpError::BadVersion { line });
                }
                version_seen = true;
                continue;
            }

            let dup = |reason| Err(SdpError::BadLine { line, reason });
            match (kind, media.last_mut()) {
                (b'v', _) => return dup("duplicate v= line"),
                (b'm', _) => media.push(parse_media(value, line)?),
                (b'c', Some(m)) => {
                    let address = parse_connection(value, line)?;
                    // Further c= lines only add multicast layers we don't use.
                    m.connection.get_or_insert(address);
                }
                (b'b', Some(m)) => m.bandwidth.push(value.trim().to_string()),
                (b'a', Some(m)) => m.attributes.extend(parse_attribute(value)),
                (b'o' | b's' | b't' | b'r' | b'z' | b'u' | b'e' | b'p', Some(_)) => {
                    return dup("session-level line after m=")
                }
                (b'o', None) => {
                    if origin.is_some() {
                        return dup("duplicate o= line");
                    }
                    origin = Some(parse_origin(value, line)?);
                }
                (b's', None) => {
                    if session_name.is_some() {
                        return dup("duplicate s= line");
                    }
                    session_name = Some(value.to_string());
                }
                (b'c', None) => {
                    if connection.is_some() {
                        return dup("duplicate session-level c= line");
                    }
                    connection = Some(parse_connection(value, line)?);
                }
                (b'b', None) => bandwidth.push(value.trim().to_string()),
                (b't', None) => times.push(value.trim().to_string()),
                (b'a', None) => attributes.extend(parse_attribute(value)),
                _ => {}
            }
        }

        if !version_seen {
            return Err(SdpError::MissingVersion);
        }
        let origin = origin.ok_or(SdpError::MissingOrigin)?;
        if media.is_empty() {
            return Err(SdpError::MissingMedia);
        }
        Ok(SessionDescription {
            origin,
            // s= is mandatory but some UAs omit it; nothing depends on it.
            session_name: session_name.unwrap_or_else(|| "-".to_string()),
            connection,
            bandwidth,
            times,
            attributes,
            media,
        })
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

fn write_attributes(
    f: &mut fmt::Formatter<'_>,
    attributes: &[(String, Option<String>)],
) -> fmt::Result {
    for (name, value) in attributes {
        match value {
            Some(v) => write!(f, "a={name}:{v}\r\n")?,
            None => write!(f, "a={name}\r\n")?,
        }
    }
    Ok(())
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            addrtype(&o.address),
            o.address
        )?;
        // RFC 4566 requires s= to be non-empty.
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {c}\r\n", addrtype(c))?;
        }
        for b in &self.bandwidth {
            write!(f, "b={b}\r\n")?;
        }
        if self.times.is_empty() {
            write!(f, "t=0 0\r\n")?;
        }
        for t in &self.times {
            write!(f, "t={t}\r\n")?;
        }
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {}", m.protocol)?;
            for fmt_ in &m.formats {
                write!(f, " {fmt_}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {c}\r\n", addrtype(c))?;
            }
            for b in &m.bandwidth {
                write!(f, "b={b}\r\n")?;
            }
            write_attributes(f, &m.attributes)?;
        }
        Ok(())
    }
}
