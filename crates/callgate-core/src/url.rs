//! http:// and https:// URLs as the configuration names them (webhooks, the CRM lookup,
//! the public address): split and checked, never fetched here.

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, `/` at least.
    pub path: String,
}

/// Split an `http://` or `https://` URL (no user info).
pub fn parse(url: &str) -> Result<Target, &'static str> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err("must start with http:// or https://");
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("needs a host and no user info");
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| "bad port")?,
            None if after.is_empty() => default_port,
            None => return Err("bad host"),
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, p)) => (host.to_string(), p.parse().map_err(|_| "bad port")?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err("needs a host");
    }
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}
