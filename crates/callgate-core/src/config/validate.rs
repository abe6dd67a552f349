//! `Config::validate`: every rule a loaded configuration must pass, each failure naming its
//! key, so the gateway refuses to start rather than misbehave.

use super::*;

impl Config {
    pub(super) fn check_ice_servers(&self) -> Result<(), ConfigError> {
        for (i, server) in self.webrtc.ice_servers.iter().enumerate() {
            let key = |field: &str| format!("webrtc.ice_server[{i}].{field}");
            if server.urls.is_empty() {
                return Err(invalid(key("urls"), "name at least one URL"));
            }
            let mut turn = false;
            for (j, url) in server.urls.iter().enumerate() {
                let scheme = url.split(':').next().unwrap_or("");
                match scheme {
                    "stun" | "stuns" => {}
                    "turn" | "turns" => turn = true,
                    _ => {
                        return Err(invalid(
                            format!("webrtc.ice_server[{i}].urls[{j}]"),
                            format!("{url:?} is not a stun:, turn: or turns: URL"),
                        ))
                    }
                }
                if url.len() <= scheme.len() + 1 || url.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        format!("webrtc.ice_server[{i}].urls[{j}]"),
                        format!("{url:?} names no host"),
                    ));
                }
            }
            let fixed = server.username.is_some() || server.credential.is_some();
            if server.shared_secret.is_some() && fixed {
                return Err(invalid(
                    key("shared_secret"),
                    "either shared_secret or username and credential, not both",
                ));
            }
            if server.username.is_some() != server.credential.is_some() {
                return Err(invalid(
                    key("credential"),
                    "username and credential go together",
                ));
            }
            if turn && server.shared_secret.is_none() && !fixed {
                return Err(invalid(
                    key("shared_secret"),
                    "a TURN server needs shared_secret (or username and credential)",
                ));
            }
            if server.shared_secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err(invalid(
                    key("shared_secret"),
                    "must be at least 16 characters",
                ));
            }
            if !(60..=7 * 86_400).contains(&server.credential_ttl_seconds) {
                return Err(invalid(
                    key("credential_ttl_seconds"),
                    "must be 60..=604800",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn check_names_and_webhooks(&self) -> Result<(), ConfigError> {
        if let Some(cc) = &self.contacts.country_code {
            if cc.is_empty()
                || cc.len() > 3
                || !cc.bytes().all(|b| b.is_ascii_digit())
                || cc.starts_with('0')
            {
                return Err(invalid(
                    "contacts.country_code",
                    "must be a country calling code: 1 to 3 digits, not starting with 0",
                ));
            }
        }
        if let Some(http) = &self.http.public_url {
            crate::url::parse(http)
                .map_err(|e| invalid("http.public_url", format!("bad URL: {e}")))?;
        }
        if let Some(lookup) = &self.lookup {
            crate::url::parse(&lookup.url)
                .map_err(|e| invalid("lookup.url", format!("bad URL: {e}")))?;
            if !(10..=5000).contains(&lookup.timeout_ms) {
                return Err(invalid("lookup.timeout_ms", "must be 10..=5000"));
            }
        }
        let mut urls = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhook[{i}].{field}");
            crate::url::parse(&hook.url)
                .map_err(|e| invalid(key("url"), format!("bad URL: {e}")))?;
            if !urls.insert(hook.url.as_str()) {
                return Err(invalid(key("url"), "each receiver's URL once"));
            }
            if hook.events.is_empty() {
                return Err(invalid(key("events"), "name at least one event, or \"*\""));
            }
            for (j, event) in hook.events.iter().enumerate() {
                if event != "*" && !crate::config::WEBHOOK_EVENTS.contains(&event.as_str()) {
                    return Err(invalid(
                        format!("webhook[{i}].events[{j}]"),
                        format!(
                            "unknown event {event:?} ({}, or *)",
                            crate::config::WEBHOOK_EVENTS.join(", ")
                        ),
                    ));
                }
            }
            if hook.secret.chars().count() < 16 {
                return Err(invalid(key("secret"), "must be at least 16 characters"));
            }
            if !(100..=60_000).contains(&hook.timeout_ms) {
                return Err(invalid(key("timeout_ms"), "must be 100..=60000"));
            }
            if !(1..=3600).contains(&hook.max_backoff_seconds) {
                return Err(invalid(key("max_backoff_seconds"), "must be 1..=3600"));
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(cluster) = &self.cluster {
            if cluster.node.is_empty()
                || !cluster
                    .node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid("cluster.node", "letters, digits, - and _ only"));
            }
            let registrar = self
                .trunks
                .iter()
                .find(|t| t.name == cluster.registrar)
                .ok_or_else(|| invalid("cluster.registrar", "names no trunk"))?;
            if registrar.outbound_proxy.is_none() {
                return Err(invalid(
                    "cluster.registrar",
                    "its trunk needs an outbound_proxy to register with",
                ));
            }
            let reached = self
                .http
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/'));
            if !reached.is_some_and(is_web_origin) {
                return Err(invalid(
                    "http.public_url",
                    "a cluster's node needs where browsers reach it: an http:// or https:// origin (scheme, host, port; no path)",
                ));
            }
            if cluster.lease < 3 {
                return Err(invalid("cluster.lease", "at least 3 seconds"));
            }
            if self.store.backend != StoreBackend::Postgres {
                return Err(invalid(
                    "store.backend",
                    "a cluster's nodes share one call log: \"postgres\"",
                ));
            }
        }
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Postgres, None) => {
                return Err(invalid("store.url", "backend \"postgres\" needs its URL"))
            }
            (StoreBackend::Sqlite, Some(_)) => {
                return Err(invalid(
                    "store.url",
                    "is for backend \"postgres\"; SQLite's file is store.database",
                ))
            }
            _ => {}
        }
        if self.rtp.port_min == 0 || self.rtp.port_min > self.rtp.port_max {
            return Err(invalid(
                "rtp.port_min",
                "must be non-zero and not above rtp.port_max",
            ));
        }
        if u32::from(self.rtp.port_max) - u32::from(self.rtp.port_min) < 3 {
            return Err(invalid(
                "rtp.port_max",
                "the range must hold at least two RTP/RTCP port pairs",
            ));
        }
        if self.rtp.codecs.is_empty() {
            return Err(invalid("rtp.codecs", "must name at least one codec"));
        }
        for (i, codec) in self.rtp.codecs.iter().enumerate() {
            parse_codec(codec).ok_or_else(|| {
                invalid(
                    format!("rtp.codecs[{i}]"),
                    format!("unknown codec {codec:?} (PCMU, PCMA, opus)"),
                )
            })?;
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return Err(invalid(
                "http.tls_key",
                "tls_cert and tls_key must be given together",
            ));
        }
        check_record_mode("recording.mode".into(), Some(&self.recording.mode))?;
        if self.sip.tls_listen.is_some()
            && (self.sip.tls_cert.is_none() || self.sip.tls_key.is_none())
        {
            return Err(invalid(
                "sip.tls_cert",
                "sip.tls_listen needs sip.tls_cert and sip.tls_key",
            ));
        }
        self.check_names_and_webhooks()?;
        self.check_ice_servers()?;
        if !crate::media::tones::RINGBACK_COUNTRIES.contains(&self.media.ringback_country.as_str())
        {
            return Err(invalid(
                "media.ringback_country",
                format!(
                    "must be one of {}",
                    crate::media::tones::RINGBACK_COUNTRIES.join(", ")
                ),
            ));
        }
        if self.media.waiting_audio.as_deref() == Some("") {
            return Err(invalid("media.waiting_audio", "a WAV path or \"ringback\""));
        }
        if !(1..=600).contains(&self.transfer.ring_seconds) {
            return Err(invalid("transfer.ring_seconds", "must be 1..=600"));
        }
        self.security.validate()?;
        match self.recording.channels.as_str() {
            "stereo" | "mono" => {}
            _ => return Err(invalid("recording.channels", "must be stereo or mono")),
        }
        if ![8000, 16000, 48000].contains(&self.recording.sample_rate) {
            return Err(invalid(
                "recording.sample_rate",
                "must be 8000, 16000 or 48000",
            ));
        }
        if !is_sha256_hex(&self.admin_token_sha256) {
            return Err(invalid("admin_token_sha256", "must be 64 hex digits"));
        }
        let mut users = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            if route.user.is_empty() {
                return Err(invalid(format!("route[{i}].user"), "must not be empty"));
            }
            if route.action == RouteKind::Announce && route.file.is_none() {
                return Err(invalid(
                    format!("route[{i}].file"),
                    "an announce route needs a file",
                ));
            }
            if !users.insert(route.user.as_str()) {
                return Err(invalid(
                    format!("route[{i}].user"),
                    format!("{:?} is routed twice", route.user),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, trunk) in self.trunks.iter().enumerate() {
            let key = |field: &str| format!("trunk[{i}].{field}");
            check_record_mode(key("recording"), trunk.recording.as_deref())?;
            if trunk.name.is_empty() || !names.insert(trunk.name.as_str()) {
                return Err(invalid(key("name"), "must be non-empty and unique"));
            }
            for (j, source) in trunk.inbound_from.iter().enumerate() {
                if Cidr::parse(source).is_none() {
                    return Err(invalid(
                        format!("trunk[{i}].inbound_from[{j}]"),
                        format!("{source:?} is not an IP address or CIDR"),
                    ));
                }
            }
            if trunk.inbound_username.is_some() != trunk.inbound_password.is_some() {
                return Err(invalid(
                    key("inbound_password"),
                    "inbound_username and inbound_password go together",
                ));
            }
            if let Some(proxy) = &trunk.outbound_proxy {
                let uri = Uri::parse(proxy)
                    .map_err(|e| invalid(key("outbound_proxy"), format!("not a SIP URI: {e}")))?;
                if let Some(Some(t)) = uri.param("transport") {
                    if !["udp", "tcp", "tls"]
                        .iter()
                        .any(|k| t.eq_ignore_ascii_case(k))
                    {
                        return Err(invalid(
                            key("outbound_proxy"),
                            "transport must be udp, tcp or tls",
                        ));
                    }
                }
            } else if trunk.register {
                return Err(invalid(key("register"), "needs outbound_proxy"));
            }
            // From the URI alone: a proxy given by name is not looked up yet when this runs.
            let plain_proxy = trunk
                .outbound_proxy
                .as_deref()
                .and_then(|p| Uri::parse(p).ok())
                .is_some_and(|uri| {
                    crate::sip::transaction::Transport::of_uri(&uri)
                        != crate::sip::transaction::Transport::Tls
                });
            if trunk.srtp == SrtpMode::Required && plain_proxy && !trunk.srtp_over_plain_sip {
                return Err(invalid(
                    key("srtp"),
                    "required SRTP sends its keys in the SDP: reach outbound_proxy over \
                     transport=tls, or set srtp_over_plain_sip",
                ));
            }
            if trunk.username.is_some() != trunk.password.is_some() {
                return Err(invalid(
                    key("password"),
                    "username and password go together",
                ));
            }
            if let Some(codecs) = &trunk.codecs {
                for (j, codec) in codecs.iter().enumerate() {
                    parse_codec(codec).ok_or_else(|| {
                        invalid(
                            format!("trunk[{i}].codecs[{j}]"),
                            format!("unknown codec {codec:?}"),
                        )
                    })?;
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agent[{i}].{field}");
            if agent.id.is_empty() || !ids.insert(agent.id.as_str()) {
                return Err(invalid(key("id"), "must be non-empty and unique"));
            }
            if !is_sha256_hex(&agent.token_sha256) {
                return Err(invalid(key("token_sha256"), "must be 64 hex digits"));
            }
            if agent.max_calls == 0 || agent.max_calls > 1000 {
                return Err(invalid(key("max_calls"), "must be 1..=1000"));
            }
            check_record_mode(key("recording"), agent.recording.as_deref())?;
            for (j, did) in agent.dids.iter().enumerate() {
                if users.contains(did.as_str()) {
                    return Err(invalid(
                        format!("agent[{i}].dids[{j}]"),
                        format!("{did:?} is also a route"),
                    ));
                }
            }
        }
        self.refuse_demo_secrets_off_loopback()
    }

    /// The shipped demo secrets are public; a listener reachable from elsewhere must not
    /// accept them.
    pub(super) fn refuse_demo_secrets_off_loopback(&self) -> Result<(), ConfigError> {
        let exposed = [
            ("sip.listen", self.sip.listen.ip()),
            ("http.listen", self.http.listen.ip()),
            ("webrtc.listen", self.webrtc.listen.ip()),
            ("rtp.bind", self.rtp.bind),
        ]
        .into_iter()
        .find(|(_, ip)| !ip.is_loopback());
        let Some((listener, _)) = exposed else {
            return Ok(());
        };
        let demo_hashes: Vec<String> = DEMO_SECRETS.iter().map(|s| sha256_hex(s)).collect();
        let is_demo_hash = |h: &str| demo_hashes.iter().any(|d| d.eq_ignore_ascii_case(h));
        let mut culprit = None;
        if is_demo_hash(&self.admin_token_sha256) {
            culprit = Some("admin_token_sha256".to_string());
        }
        for (i, agent) in self.agents.iter().enumerate() {
            if culprit.is_none() && is_demo_hash(&agent.token_sha256) {
                culprit = Some(format!("agent[{i}].token_sha256"));
            }
        }
        for (i, trunk) in self.trunks.iter().enumerate() {
            for (field, value) in [
                ("password", &trunk.password),
                ("inbound_password", &trunk.inbound_password),
            ] {
                if culprit.is_none() && value.as_deref().is_some_and(|v| DEMO_SECRETS.contains(&v))
                {
                    culprit = Some(format!("trunk[{i}].{field}"));
                }
            }
        }
        match culprit {
            Some(key) => Err(invalid(
                key,
                format!("still has its demo value while {listener} is not on loopback"),
            )),
            None => Ok(()),
        }
    }
}

/// `http://host[:port]` or `https://host[:port]`: no user, path, query or fragment.
fn is_web_origin(url: &str) -> bool {
    let Some(authority) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}
