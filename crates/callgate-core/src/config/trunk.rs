//! Where a trunk's outbound proxy is: its address as written or as the shell looked it up. The
//! cores never do DNS; the shell resolves names once, when the configuration is loaded.

use super::*;

impl Config {
    /// Give each trunk whose outbound proxy is a name the address `resolve` finds for it (the
    /// shell's DNS, once at start); a name that does not resolve is a configuration error.
    pub fn resolve_trunks(
        &mut self,
        resolve: impl Fn(&str, u16) -> Option<IpAddr>,
    ) -> Result<(), ConfigError> {
        for (i, trunk) in self.trunks.iter_mut().enumerate() {
            if let Some((host, port)) = trunk.proxy_name() {
                let ip = resolve(&host, port).ok_or_else(|| {
                    invalid(
                        format!("trunk[{i}].outbound_proxy"),
                        "host does not resolve",
                    )
                })?;
                trunk.proxy_ip = Some(ip);
            }
        }
        Ok(())
    }
}

impl TrunkConfig {
    /// The outbound proxy: its URI, its address (an IP as written, `localhost` as loopback, a
    /// name as the shell looked it up at start; without a port, 5060, or 5061 over TLS) and
    /// the transport it asks for. The cores never do DNS.
    pub fn proxy(&self) -> Option<(Uri, SocketAddr, crate::sip::transaction::Transport)> {
        let uri = Uri::parse(self.outbound_proxy.as_deref()?).ok()?;
        let transport = crate::sip::transaction::Transport::of_uri(&uri);
        let port = uri.port.unwrap_or(transport.default_port());
        let ip = literal_host(&uri.host).or(self.proxy_ip)?;
        Some((uri, SocketAddr::new(ip, port), transport))
    }

    /// The outbound proxy's host and port when the host is a name to look up.
    pub fn proxy_name(&self) -> Option<(String, u16)> {
        let uri = Uri::parse(self.outbound_proxy.as_deref()?).ok()?;
        let port = uri
            .port
            .unwrap_or(crate::sip::transaction::Transport::of_uri(&uri).default_port());
        literal_host(&uri.host)
            .is_none()
            .then_some((uri.host, port))
    }
}

/// A host that needs no lookup: an IP address (IPv6 with or without brackets) or `localhost`.
fn literal_host(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::from([127, 0, 0, 1]));
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}
