//! Client transactions (RFC 3261 §17.1): sending requests, CANCEL and ACK, matching
//! responses, transport errors, and timers A–F, K and M.

use super::*;

impl TransactionLayer {
    /// Start a client transaction: a Via with a fresh branch goes on top.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Request,
        destination: SocketAddr,
        transport: Transport,
    ) -> ClientTxId {
        let branch = self.ids.branch();
        let via = format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            transport.as_str(),
            self.local.host,
            self.local.port_for(transport),
            branch
        );
        request.headers.push_front("Via", via);
        if request.headers.get("Max-Forwards").is_none() {
            request.headers.push("Max-Forwards", "70");
        }
        if request.headers.get("User-Agent").is_none() {
            request.headers.push("User-Agent", self.user_agent.clone());
        }
        self.start_client(now, request, branch, destination, transport)
    }

    pub(super) fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        branch: String,
        destination: SocketAddr,
        transport: Transport,
    ) -> ClientTxId {
        let t1 = self.timers.t1;
        let id = ClientTxId(self.allocate());
        let invite = request.method == Method::Invite;
        let bytes = Message::Request(request.clone()).to_bytes();
        let mut timers = Vec::new();
        if !transport.is_reliable() {
            timers.push((if invite { Timer::A } else { Timer::E }, now + t1));
        }
        timers.push((if invite { Timer::B } else { Timer::F }, now + t1 * 64));
        let state = if invite {
            ClientState::Calling { interval: t1 }
        } else {
            ClientState::Trying { interval: t1 }
        };
        self.client_index
            .insert((branch.clone(), request.method.clone()), id);
        for (_, at) in &timers {
            self.wakeups.push(Reverse((*at, Wake::Client(id))));
        }
        self.clients.insert(
            id,
            ClientTransaction {
                branch,
                request,
                bytes: bytes.clone(),
                transport,
                destination,
                state,
                timers,
                cancel_pending: false,
                ack: None,
            },
        );
        self.send(transport, destination, bytes);
        id
    }

    /// CANCEL a pending INVITE (§9.1). Before any provisional response it is deferred.
    pub fn cancel(&mut self, now: Instant, invite: ClientTxId) {
        let Some(tx) = self.clients.get_mut(&invite) else {
            return;
        };
        match tx.state {
            ClientState::Calling { .. } => tx.cancel_pending = true,
            ClientState::InviteProceeding => self.send_cancel(now, invite),
            _ => {}
        }
    }

    pub(super) fn send_cancel(&mut self, now: Instant, invite: ClientTxId) {
        let Some(tx) = self.clients.get(&invite) else {
            return;
        };
        let original = &tx.request;
        let mut headers = Headers::new();
        if let Some(via) = original.headers.get("Via") {
            headers.push("Via", via);
        }
        for name in ["Route", "From", "To", "Call-ID", "Max-Forwards"] {
            for value in original.headers.all(name) {
                headers.push(name, value);
            }
        }
        let seq = original.headers.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push("CSeq", format!("{seq} CANCEL"));
        let cancel = Request {
            method: Method::Cancel,
            uri: original.uri.clone(),
            headers,
            body: Vec::new(),
        };
        let (branch, destination, transport) = (tx.branch.clone(), tx.destination, tx.transport);
        self.start_client(now, cancel, branch, destination, transport);
    }

    /// Send the ACK for a 2xx (a transaction of its own, §13.2.2.4) and keep it for
    /// retransmitted 2xx responses.
    pub fn send_ack(
        &mut self,
        now: Instant,
        mut ack: Request,
        destination: SocketAddr,
        transport: Transport,
    ) {
        let branch = self.ids.branch();
        let via = format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            transport.as_str(),
            self.local.host,
            self.local.port_for(transport),
            branch
        );
        ack.headers.push_front("Via", via);
        if ack.headers.get("Max-Forwards").is_none() {
            ack.headers.push("Max-Forwards", "70");
        }
        let key = match (ack.headers.call_id(), ack.headers.cseq()) {
            (Some(c), Some(s)) => Some((c.to_string(), s.seq)),
            _ => None,
        };
        let bytes = Message::Request(ack).to_bytes();
        if let Some(key) = key {
            let until = now + self.timers.t1 * 64;
            self.wakeups.push(Reverse((until, Wake::Ack(key.clone()))));
            self.sent_acks.insert(
                key,
                SentAck {
                    bytes: bytes.clone(),
                    transport,
                    destination,
                    until: now + self.timers.t1 * 64,
                },
            );
        }
        self.send(transport, destination, bytes);
    }

    /// Send a request outside any transaction (nothing retransmits it).
    pub fn send_stateless(
        &mut self,
        request: Request,
        destination: SocketAddr,
        transport: Transport,
    ) {
        let bytes = Message::Request(request).to_bytes();
        self.send(transport, destination, bytes);
    }

    /// A response counts only when it comes from where its request went: the same address
    /// and port over the same transport (for TCP, the same connection's peer). Anything else
    /// is someone guessing or replaying a branch, and is dropped and counted.
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        response: Response,
    ) {
        let Some(via) = response.headers.top_via() else {
            return;
        };
        let Some(cseq) = response.headers.cseq() else {
            return;
        };
        let branch = via.branch().unwrap_or("").to_string();
        let Some(&id) = self.client_index.get(&(branch, cseq.method.clone())) else {
            // A 2xx retransmission after the INVITE transaction ended: ACK it again.
            if (200..300).contains(&response.status) && cseq.method == Method::Invite {
                if let Some(call_id) = response.headers.call_id() {
                    if let Some(ack) = self.sent_acks.get(&(call_id.to_string(), cseq.seq)) {
                        if ack.destination != source || ack.transport != transport {
                            self.guard.count(DropReason::ForeignResponse);
                            return;
                        }
                        let (t, d, b) = (ack.transport, ack.destination, ack.bytes.clone());
                        self.send(t, d, b);
                    }
                }
            }
            return;
        };
        let from_its_peer = self
            .clients
            .get(&id)
            .is_some_and(|tx| tx.destination == source && tx.transport == transport);
        if !from_its_peer {
            tracing::debug!(%source, status = response.status, "response from a stranger dropped");
            self.guard.count(DropReason::ForeignResponse);
            return;
        }
        self.client_response(now, id, response);
    }

    pub(super) fn client_response(&mut self, now: Instant, id: ClientTxId, response: Response) {
        let t2 = self.timers.t2;
        let t4 = self.timers.t4;
        let t1 = self.timers.t1;
        let Some(tx) = self.clients.get_mut(&id) else {
            return;
        };
        let status = response.status;
        let reliable = tx.transport.is_reliable();
        let mut deliver = true;
        let mut send_cancel = false;
        let mut remove = false;
        match tx.state {
            ClientState::Calling { .. } | ClientState::InviteProceeding => {
                tx.timers.retain(|(t, _)| *t != Timer::A);
                if status < 200 {
                    if matches!(tx.state, ClientState::Calling { .. }) {
                        if tx.cancel_pending {
                            send_cancel = true;
                            tx.cancel_pending = false;
                        }
                        // Timer B only bounds Calling (§17.1.1.2): a ringing callee may take
                        // longer than 32 s. Timer C bounds the ringing instead.
                        tx.timers.retain(|(t, _)| *t != Timer::B);
                        tx.timers.push((Timer::C, now + TIMER_C));
                        self.wakeups
                            .push(Reverse((now + TIMER_C, Wake::Client(id))));
                    }
                    tx.state = ClientState::InviteProceeding;
                } else if status < 300 {
                    tx.state = ClientState::InviteAccepted;
                    tx.timers.clear();
                    tx.timers.push((Timer::M, now + t1 * 64));
                    self.wakeups
                        .push(Reverse((now + t1 * 64, Wake::Client(id))));
                } else {
                    let ack = ack_for_failure(&tx.request, &response);
                    tx.ack = Some(ack.clone());
                    tx.state = ClientState::InviteCompleted;
                    tx.timers.clear();
                    let wait = if reliable {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(32)
                    };
                    tx.timers.push((Timer::D, now + wait));
                    self.wakeups.push(Reverse((now + wait, Wake::Client(id))));
                    let (t, d) = (tx.transport, tx.destination);
                    self.transmits.push_back(Transmit {
                        transport: t,
                        destination: d,
                        bytes: ack,
                    });
                }
            }
            ClientState::InviteCompleted => {
                // Retransmitted final response: ACK again, tell no one.
                deliver = false;
                if let Some(ack) = tx.ack.clone() {
                    let (t, d) = (tx.transport, tx.destination);
                    self.transmits.push_back(Transmit {
                        transport: t,
                        destination: d,
                        bytes: ack,
                    });
                }
            }
            ClientState::InviteAccepted => {
                // 2xx retransmission or a 2xx from another fork: the TU ACKs (it sees it).
                deliver = (200..300).contains(&status);
                if deliver {
                    if let Some(call_id) = response.headers.call_id() {
                        if let Some(ack) = self.sent_acks.get(&(
                            call_id.to_string(),
                            response.headers.cseq().map(|c| c.seq).unwrap_or(0),
                        )) {
                            let (t, d, b) = (ack.transport, ack.destination, ack.bytes.clone());
                            self.transmits.push_back(Transmit {
                                transport: t,
                                destination: d,
                                bytes: b,
                            });
                            deliver = false;
                        }
                    }
                }
            }
            ClientState::Trying { .. } | ClientState::Proceeding { .. } => {
                if status < 200 {
                    tx.state = ClientState::Proceeding { interval: t2 };
                } else {
                    tx.state = ClientState::Completed;
                    tx.timers.clear();
                    if reliable {
                        remove = true;
                    } else {
                        tx.timers.push((Timer::K, now + t4));
                        self.wakeups.push(Reverse((now + t4, Wake::Client(id))));
                    }
                }
            }
            ClientState::Completed => deliver = false,
        }
        if deliver {
            self.events
                .push_back(TransactionEvent::Response { tx: id, response });
        }
        if send_cancel {
            self.send_cancel(now, id);
        }
        if remove {
            self.remove_client(id);
        }
    }

    pub(super) fn remove_client(&mut self, id: ClientTxId) {
        if let Some(tx) = self.clients.remove(&id) {
            self.client_index.remove(&(tx.branch, tx.request.method));
        }
    }

    /// The request a client transaction sent (with its Via).
    /// The stream transport to `destination` failed (connect refused, TLS certificate
    /// rejected, connection lost): every client transaction waiting for a final response over
    /// it ends now with `TransportError`, rather than at Timer B or F 32 s later.
    pub fn handle_transport_error(&mut self, destination: SocketAddr, transport: Transport) {
        let failed: Vec<ClientTxId> = self
            .clients
            .iter()
            .filter(|(_, tx)| {
                tx.destination == destination
                    && tx.transport == transport
                    && matches!(
                        tx.state,
                        ClientState::Calling { .. }
                            | ClientState::Trying { .. }
                            | ClientState::Proceeding { .. }
                    )
            })
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.events
                .push_back(TransactionEvent::TransportError { tx: id });
            self.remove_client(id);
        }
    }

    pub fn client_request(&self, id: ClientTxId) -> Option<&Request> {
        self.clients.get(&id).map(|t| &t.request)
    }

    pub(super) fn fire_client(&mut self, now: Instant, id: ClientTxId, timer: Timer) {
        let t2 = self.timers.t2;
        let Some(tx) = self.clients.get_mut(&id) else {
            return;
        };
        tx.timers.retain(|(t, _)| *t != timer);
        match timer {
            Timer::A | Timer::E => {
                let interval = match &mut tx.state {
                    ClientState::Calling { interval } => {
                        *interval *= 2;
                        *interval
                    }
                    ClientState::Trying { interval } => {
                        *interval = (*interval * 2).min(t2);
                        *interval
                    }
                    ClientState::Proceeding { interval } => *interval,
                    _ => return,
                };
                tx.timers.push((timer, now + interval));
                self.wakeups
                    .push(Reverse((now + interval, Wake::Client(id))));
                let (t, d, b) = (tx.transport, tx.destination, tx.bytes.clone());
                self.send(t, d, b);
            }
            Timer::B | Timer::C | Timer::F => {
                self.events.push_back(TransactionEvent::Timeout { tx: id });
                self.remove_client(id);
            }
            Timer::D | Timer::K | Timer::M => self.remove_client(id),
            _ => {}
        }
    }
}
