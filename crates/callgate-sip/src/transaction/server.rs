//! Server transactions (RFC 3261 §17.2, RFC 6026): matching a request to its transaction,
//! absorbing retransmissions, CANCEL, sending responses reliably, and their timers G–J and L.

use super::*;

impl TransactionLayer {
    pub(super) fn server_key(request: &Request) -> Option<ServerKey> {
        let via = request.headers.top_via()?;
        let method = match &request.method {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let sent_by = format!("{}:{}", via.host, via.port.unwrap_or(5060));
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            // RFC 2543 peers: fall back to the request's identifying fields (§17.2.3).
            _ => {
                let cseq = request.headers.cseq()?;
                format!(
                    "2543:{}:{}:{}:{}",
                    request.headers.call_id()?,
                    request.headers.from()?.tag().unwrap_or(""),
                    cseq.seq,
                    request.uri
                )
            }
        };
        Some(ServerKey {
            branch,
            sent_by,
            method,
        })
    }

    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        mut request: Request,
    ) {
        let destination = self.stamp_received(&mut request, source, transport);
        let Some(key) = Self::server_key(&request) else {
            return;
        };
        if let Some(&id) = self.server_index.get(&key) {
            // Only its own source may retransmit into (or ACK) a transaction.
            if self
                .servers
                .get(&id)
                .is_some_and(|tx| tx.source.ip() != source.ip())
            {
                self.guard.count(DropReason::ForeignInDialog);
                return;
            }
            self.retransmitted_request(now, id, &request);
            return;
        }
        let trusted = self.guard.is_trusted(now, source.ip());
        if !trusted
            && self
                .guard
                .admit_user_agent(request.headers.get("User-Agent"))
                .is_err()
        {
            return;
        }
        let out_of_dialog = request.headers.to().is_some_and(|t| t.tag().is_none());
        let limited = self.shed_all || self.call_rate.is_some();
        if !trusted && limited && out_of_dialog && request.method != Method::Ack {
            // Behind: nothing a stranger asks outside a dialog (OPTIONS, REGISTER, calls) is
            // worth an answer before the trunks' traffic is served; a flood of them is the
            // first work to go, so strangers cannot get trunks' calls shed.
            self.guard.count(DropReason::Overload);
            return;
        }
        let new_call = request.method == Method::Invite && out_of_dialog;
        if new_call && !self.admit_call(now) {
            // Stateless and cheap: no transaction, no retransmission, no call. The peer
            // tries again later or elsewhere, and the calls already admitted keep their time.
            let mut response = response_to(&request, 503, Some("Overloaded"));
            let tag = self.ids.token();
            set_to_tag(&mut response, &tag);
            response.headers.push("Retry-After", "5");
            response.headers.push("Server", self.user_agent.clone());
            let bytes = Message::Response(response).to_bytes();
            self.send(transport, destination, bytes);
            self.shed_calls += 1;
            return;
        }
        match request.method {
            Method::Ack => {
                // ACK outside a non-2xx INVITE transaction: it acknowledges a 2xx. The
                // transaction user decides whether it came from the dialog's peer, and says
                // so with `ack_received`.
                self.events
                    .push_back(TransactionEvent::Ack { request, source });
            }
            Method::Cancel => {
                self.handle_cancel(now, source, destination, transport, request, key, trusted)
            }
            _ => {
                if !self.room_for(source.ip(), trusted) {
                    return;
                }
                if new_call {
                    self.admitted_calls += 1;
                }
                let id = ServerTxId(self.allocate());
                let invite = request.method == Method::Invite;
                let mut tx = ServerTransaction {
                    key: key.clone(),
                    request: request.clone(),
                    transport,
                    source,
                    trusted,
                    response_destination: destination,
                    state: if invite {
                        ServerState::InviteProceeding
                    } else {
                        ServerState::Trying
                    },
                    last_response: None,
                    timers: Vec::new(),
                    accepted_key: None,
                };
                if invite && trusted {
                    // §17.2.1: answer 100 Trying at once so the client stops retransmitting.
                    // Not toward strangers: their one answer comes at once anyway.
                    let mut trying = response_to(&request, 100, None);
                    trying.headers.push("Server", self.user_agent.clone());
                    let bytes = Message::Response(trying).to_bytes();
                    tx.last_response = Some(bytes.clone());
                    self.send(transport, destination, bytes);
                }
                self.insert_server(id, tx);
                self.events.push_back(TransactionEvent::Request {
                    tx: id,
                    request,
                    source,
                    transport,
                });
            }
        }
    }

    pub(super) fn retransmitted_request(
        &mut self,
        now: Instant,
        id: ServerTxId,
        request: &Request,
    ) {
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        let is_ack = request.method == Method::Ack;
        match (&tx.state, is_ack) {
            (ServerState::InviteCompleted { .. }, true) => {
                tx.state = ServerState::InviteConfirmed;
                tx.timers.retain(|(t, _)| !matches!(t, Timer::G | Timer::H));
                let wait = if tx.transport.is_reliable() {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                tx.timers.push((Timer::I, now + wait));
                self.wakeups.push(Reverse((now + wait, Wake::Server(id))));
            }
            (_, true) => {}
            (ServerState::InviteConfirmed, false) => {}
            (_, false) => {
                // A retransmitted request gets the latest response again (§17.2.1, §17.2.2).
                if let Some(bytes) = tx.last_response.clone() {
                    let (transport, destination) = (tx.transport, tx.response_destination);
                    self.send(transport, destination, bytes);
                }
            }
        }
    }

    /// Room for one more server transaction from `ip`? Counts the drop when not.
    pub(super) fn room_for(&mut self, ip: IpAddr, trusted: bool) -> bool {
        let full = self.servers.len() >= self.limits.max_server
            || (!trusted
                && self.per_source.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_source);
        if full {
            self.guard.count(DropReason::TransactionLimit);
        }
        !full
    }

    pub(super) fn insert_server(&mut self, id: ServerTxId, tx: ServerTransaction) {
        if !tx.trusted {
            *self.per_source.entry(tx.source.ip()).or_default() += 1;
        }
        self.server_index.insert(tx.key.clone(), id);
        self.servers.insert(id, tx);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_cancel(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        transport: Transport,
        cancel: Request,
        key: ServerKey,
        trusted: bool,
    ) {
        let invite_key = ServerKey {
            method: Method::Invite,
            ..key.clone()
        };
        let target = self.server_index.get(&invite_key).copied();
        // A CANCEL ends a call only when it comes from the host that sent the INVITE.
        if let Some(tx) = target.and_then(|id| self.servers.get(&id)) {
            if tx.source.ip() != source.ip() {
                self.guard.count(DropReason::ForeignInDialog);
                return;
            }
        }
        if !self.room_for(source.ip(), trusted) {
            return;
        }
        let status = match target.and_then(|id| self.servers.get(&id).map(|t| (id, t))) {
            Some((id, tx)) if matches!(tx.state, ServerState::InviteProceeding) => {
                self.events
                    .push_back(TransactionEvent::Cancelled { invite: id });
                200
            }
            Some(_) => 200, // already answered: the CANCEL has no effect (§9.2)
            None => 481,
        };
        let id = ServerTxId(self.allocate());
        let tx = ServerTransaction {
            key,
            request: cancel.clone(),
            transport,
            source,
            trusted,
            response_destination: destination,
            state: ServerState::Trying,
            last_response: None,
            timers: Vec::new(),
            accepted_key: None,
        };
        self.insert_server(id, tx);
        let response = response_to(&cancel, status, None);
        self.respond(now, id, response);
    }

    /// Send a response within a server transaction.
    pub fn respond(&mut self, now: Instant, id: ServerTxId, mut response: Response) {
        let t1 = self.timers.t1;
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        if response.headers.get("Server").is_none() {
            response.headers.push("Server", self.user_agent.clone());
        }
        let status = response.status;
        let reliable = tx.transport.is_reliable();
        let trusted = tx.trusted;
        let bytes = Message::Response(response).to_bytes();
        let mut terminate = false;
        let mut arm: Vec<(Timer, Instant)> = Vec::new();
        match tx.state {
            ServerState::InviteProceeding => {
                if status >= 300 {
                    tx.state = ServerState::InviteCompleted { interval: t1 };
                    if !trusted {
                        // One answer per request toward strangers, and nothing kept: a
                        // retransmitted INVITE is a new request and gets one answer again.
                        terminate = true;
                    } else {
                        if !reliable {
                            arm.push((Timer::G, now + t1));
                        }
                        arm.push((Timer::H, now + t1 * 64));
                    }
                } else if status >= 200 {
                    tx.state = ServerState::InviteAccepted { interval: t1 };
                    arm.push((Timer::L, now + t1 * 64));
                    // The 2xx is retransmitted until the ACK comes, over TCP too: the ACK
                    // is end to end (§13.3.1.4); only its retransmission is skipped on TCP.
                    if !reliable {
                        arm.push((Timer::Retransmit2xx, now + t1));
                    }
                    arm.push((Timer::H, now + t1 * 64));
                    if let (Some(call_id), Some(cseq)) =
                        (tx.request.headers.call_id(), tx.request.headers.cseq())
                    {
                        let key = (call_id.to_string(), cseq.seq);
                        tx.accepted_key = Some(key.clone());
                        self.accepted.insert(key, id);
                    }
                }
            }
            ServerState::Trying | ServerState::Proceeding => {
                if status >= 200 {
                    tx.state = ServerState::Completed;
                    if reliable || !trusted {
                        terminate = true;
                    } else {
                        arm.push((Timer::J, now + t1 * 64));
                    }
                } else {
                    tx.state = ServerState::Proceeding;
                }
            }
            ServerState::InviteAccepted { .. } if (200..300).contains(&status) => {}
            _ => {
                tracing::debug!(
                    status,
                    "response after the transaction's final response dropped"
                );
                return;
            }
        }
        tx.last_response = Some(bytes.clone());
        if status >= 200 {
            // Answered: what is left to do needs the key and the response, not the request.
            // A busy trunk keeps tens of thousands of these alive for 32 s (Timer J).
            tx.request.headers = Headers::new();
            tx.request.body = Vec::new();
        }
        let (transport, destination) = (tx.transport, tx.response_destination);
        self.send(transport, destination, bytes);
        for (timer, at) in arm {
            self.arm_server(id, timer, at);
        }
        if terminate {
            self.remove_server(id);
        }
    }

    /// The ACK for the 2xx of INVITE (`call_id`, `cseq`) came from the dialog's peer: stop
    /// retransmitting the 2xx. The client has it and sends the INVITE no more, so the
    /// Accepted state need not last all of Timer L's 32 s either.
    pub fn ack_received(&mut self, now: Instant, call_id: &str, cseq: u32) {
        let Some(id) = self.accepted.remove(&(call_id.to_string(), cseq)) else {
            return;
        };
        let t4 = self.timers.t4;
        if let Some(tx) = self.servers.get_mut(&id) {
            tx.timers
                .retain(|(t, _)| !matches!(t, Timer::Retransmit2xx | Timer::H | Timer::L));
            tx.timers.push((Timer::L, now + t4));
            self.wakeups.push(Reverse((now + t4, Wake::Server(id))));
        }
    }

    /// Forget a server transaction without answering it (a request dropped by policy after
    /// it formed one, such as an in-dialog request from outside the dialog).
    pub fn discard(&mut self, id: ServerTxId) {
        self.remove_server(id);
    }

    /// The request of a server transaction (for building responses later).
    pub fn server_request(&self, id: ServerTxId) -> Option<&Request> {
        self.servers.get(&id).map(|t| &t.request)
    }

    pub(super) fn remove_server(&mut self, id: ServerTxId) {
        if let Some(tx) = self.servers.remove(&id) {
            self.server_index.remove(&tx.key);
            if !tx.trusted {
                let ip = tx.source.ip();
                if let Some(n) = self.per_source.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_source.remove(&ip);
                    }
                }
            }
            if let Some(key) = tx.accepted_key {
                if self.accepted.get(&key) == Some(&id) {
                    self.accepted.remove(&key);
                }
            }
        }
    }

    pub(super) fn fire_server(&mut self, now: Instant, id: ServerTxId, timer: Timer) {
        let t2 = self.timers.t2;
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        tx.timers.retain(|(t, _)| *t != timer);
        match timer {
            Timer::G | Timer::Retransmit2xx => {
                let interval = match &mut tx.state {
                    ServerState::InviteCompleted { interval }
                    | ServerState::InviteAccepted { interval } => {
                        *interval = (*interval * 2).min(t2);
                        *interval
                    }
                    _ => return,
                };
                tx.timers.push((timer, now + interval));
                self.wakeups
                    .push(Reverse((now + interval, Wake::Server(id))));
                if let Some(bytes) = tx.last_response.clone() {
                    let (t, d) = (tx.transport, tx.response_destination);
                    self.send(t, d, bytes);
                }
            }
            Timer::H => {
                // An ACK would have cancelled Timer H: for a 2xx that means the dialog
                // never got confirmed.
                if matches!(tx.state, ServerState::InviteAccepted { .. }) {
                    self.events
                        .push_back(TransactionEvent::AckTimeout { tx: id });
                }
                self.remove_server(id);
            }
            Timer::I | Timer::J => self.remove_server(id),
            Timer::L if !tx.timers.iter().any(|(t, _)| *t == Timer::H) => {
                self.remove_server(id);
            }
            _ => {}
        }
    }
}
