//! Each trunk's health and registration: OPTIONS keepalives and REGISTER refreshes.

use super::*;

impl B2bua {
    pub(super) fn trunk_alive(&mut self, index: usize, alive: bool) {
        let trunk = &mut self.trunks[index];
        let was_up = trunk.up;
        if alive {
            trunk.keepalive_failures = 0;
            trunk.up = true;
        } else {
            trunk.keepalive_failures += 1;
            if trunk.keepalive_failures >= KEEPALIVE_FAILURES_DOWN {
                trunk.up = false;
            }
        }
        if was_up != trunk.up {
            tracing::warn!(trunk = %trunk.config.name, up = trunk.up, "trunk health changed");
            self.events.push_back(LegEvent::TrunkHealth {
                trunk: trunk.config.name.clone(),
                up: trunk.up,
            });
        }
    }

    pub(super) fn send_keepalive(&mut self, now: Instant, index: usize) {
        let interval = Duration::from_secs(self.trunks[index].config.options_interval.max(1));
        self.trunks[index].next_keepalive = Some(now + interval);
        let Some((proxy, destination, transport)) = self.trunks[index].proxy.clone() else {
            return;
        };
        let mut headers = Headers::new();
        let tag = self.layer.ids().token();
        headers.push(
            "From",
            format!("<sip:callgate@{}>;tag={}", self.settings.contact_host, tag),
        );
        headers.push("To", format!("<{proxy}>"));
        headers.push(
            "Call-ID",
            format!(
                "{}@{}",
                self.layer.ids().token(),
                self.settings.contact_host
            ),
        );
        headers.push("CSeq", "1 OPTIONS");
        headers.push("Accept", "application/sdp");
        let request = Request {
            method: Method::Options,
            uri: proxy,
            headers,
            body: Vec::new(),
        };
        let tx = self
            .layer
            .send_request(now, request, destination, transport);
        self.by_client_tx
            .insert(tx, ClientPurpose::Keepalive(index));
    }

    fn register_request(&mut self, index: usize) -> Option<(Request, SocketAddr, Transport)> {
        let trunk = &self.trunks[index];
        let proxy = trunk.proxy.clone()?;
        let user = trunk
            .config
            .username
            .clone()
            .unwrap_or_else(|| "callgate".into());
        let expires = trunk.config.register_expires;
        let call_id = format!(
            "reg-{}-{}@{}",
            trunk.config.name, index, self.settings.contact_host
        );
        // CSeq must grow within one registration Call-ID (RFC 3261 §10.2).
        let seq =
            (self.unix_secs % 1_000_000_000) as u32 + self.layer.ids().next_u64() as u32 % 1000;
        Some(self.register_to(proxy, &user, call_id, seq, expires))
    }

    /// `previous` again with an Authorization for `challenge`, in the trunk's credentials
    /// (none without them).
    pub(super) fn retry_with_trunk_credentials(
        &mut self,
        trunk: usize,
        previous: &Request,
        challenge: &Response,
    ) -> Option<Request> {
        let config = &self.trunks[trunk].config;
        let (username, password) = (config.username.clone()?, config.password.clone()?);
        let cnonce = self.layer.ids().token();
        let mut previous = previous.clone();
        previous.headers.remove("Via");
        authorized_retry(&previous, challenge, &username, &password, &cnonce)
    }

    /// A REGISTER of `user` at `proxy`'s host with this node as Contact.
    pub(super) fn register_to(
        &mut self,
        (proxy, destination, transport): (Uri, SocketAddr, Transport),
        user: &str,
        call_id: String,
        cseq: u32,
        expires: u32,
    ) -> (Request, SocketAddr, Transport) {
        let mut registrar = proxy.clone();
        registrar.user = None;
        registrar.params.clear();
        let aor = format!("<sip:{}@{}>", user, proxy.host);
        let mut headers = Headers::new();
        let tag = self.layer.ids().token();
        headers.push("From", format!("{aor};tag={tag}"));
        headers.push("To", aor);
        headers.push("Call-ID", call_id);
        headers.push("CSeq", format!("{cseq} REGISTER"));
        headers.push(
            "Contact",
            format!(
                "<sip:{}@{}:{}{}>",
                user,
                self.settings.contact_host,
                self.settings.contact_port(transport),
                transport.uri_param()
            ),
        );
        headers.push("Expires", expires.to_string());
        (
            Request {
                method: Method::Register,
                uri: registrar,
                headers,
                body: Vec::new(),
            },
            destination,
            transport,
        )
    }

    pub(super) fn send_register(
        &mut self,
        now: Instant,
        index: usize,
        answer_to: Option<(&Request, &Response)>,
    ) {
        let auth_tries = match self.trunks[index].registration {
            Registration::Pending { auth_tries } if answer_to.is_some() => auth_tries + 1,
            _ => 0,
        };
        let Some((mut request, destination, transport)) = self.register_request(index) else {
            return;
        };
        if let Some((previous, challenge)) = answer_to {
            match self.retry_with_trunk_credentials(index, previous, challenge) {
                Some(retry) => request = retry,
                None => return,
            }
        }
        self.trunks[index].registration = Registration::Pending { auth_tries };
        let tx = self
            .layer
            .send_request(now, request, destination, transport);
        self.by_client_tx.insert(tx, ClientPurpose::Register(index));
    }

    pub(super) fn on_register_response(&mut self, now: Instant, index: usize, response: Response) {
        if response.status < 200 {
            return;
        }
        let name = self.trunks[index].config.name.clone();
        if (200..300).contains(&response.status) {
            let (granted, refresh) =
                granted_expires(&response, self.trunks[index].config.register_expires);
            tracing::info!(trunk = %name, expires = granted, "registered");
            self.trunks[index].registration = Registration::Registered {
                refresh_at: now + Duration::from_secs(refresh),
            };
            return;
        }
        let tries = match self.trunks[index].registration {
            Registration::Pending { auth_tries } => auth_tries,
            _ => 0,
        };
        if (response.status == 401 || response.status == 407) && tries < 2 {
            let tx_request = self.register_request(index).map(|r| r.0);
            if let Some(previous) = tx_request {
                self.send_register(now, index, Some((&previous, &response)));
                return;
            }
        }
        tracing::warn!(trunk = %name, status = response.status, "registration failed; retrying in 60 s");
        self.trunks[index].registration = Registration::Due(now + Duration::from_secs(60));
    }

    /// Whether the trunk named is marked up (for health reporting).
    pub fn trunk_up(&self, name: &str) -> Option<bool> {
        self.trunks
            .iter()
            .find(|t| t.config.name == name)
            .map(|t| t.up)
    }
}

/// What a registrar's 2xx granted (the Contact's `expires`, else the Expires header, else what
/// was asked), and when to refresh: well before expiry (RFC 3261 §10.2.4), at least a little
/// ahead.
pub(super) fn granted_expires(response: &Response, asked: u32) -> (u64, u64) {
    let granted = response
        .headers
        .contact()
        .and_then(|c| {
            c.param("expires")
                .flatten()
                .and_then(|e| e.parse::<u64>().ok())
        })
        .or_else(|| {
            response
                .headers
                .get("Expires")
                .and_then(|e| e.trim().parse().ok())
        })
        .unwrap_or(u64::from(asked));
    (granted, (granted * 8 / 10).max(5))
}
