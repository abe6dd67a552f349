//! Requests inside an established dialog: ACK, BYE, re-INVITE/UPDATE offers, INFO digits,
//! and hanging up from our side.

use super::*;

impl B2bua {
    /// End a leg from our side, whatever its state: BYE, CANCEL or a final rejection.
    pub fn hangup(&mut self, now: Instant, id: &str) {
        if let Some(index) = self.leg_index(id) {
            self.hangup_index(now, index);
        }
    }

    pub(super) fn hangup_index(&mut self, now: Instant, index: usize) {
        let Some(leg) = self.legs.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        match &leg.state {
            LegState::Offered { .. } => {
                let id = leg.id.clone();
                self.reject(now, &id, 480);
            }
            LegState::Calling { tx } => {
                let tx = *tx;
                leg.state = LegState::Cancelling;
                self.layer.cancel(now, tx);
            }
            LegState::Accepted | LegState::Confirmed => {
                let Some(dialog) = leg.dialog.as_mut() else {
                    return;
                };
                let bye = dialog.request(Method::Bye);
                let (destination, transport) = (dialog.destination(), dialog.transport);
                leg.state = LegState::Terminating;
                let tx = self.layer.send_request(now, bye, destination, transport);
                self.by_client_tx.insert(tx, ClientPurpose::Bye(index));
            }
            LegState::Cancelling | LegState::Terminating => {}
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, request: Request, source: SocketAddr) {
        let (Some(call_id), Some(to)) = (request.headers.call_id(), request.headers.to()) else {
            return;
        };
        let key = (call_id.to_string(), to.tag().unwrap_or("").to_string());
        let Some(&index) = self.by_dialog.get(&key) else {
            return;
        };
        if !self.leg_accepts_from(index, source) {
            self.layer.guard_mut().count(DropReason::ForeignInDialog);
            return;
        }
        if let Some(cseq) = request.headers.cseq() {
            self.layer.ack_received(now, call_id, cseq.seq);
        }
        if let Some(leg) = self.legs[index].as_mut() {
            if matches!(leg.state, LegState::Accepted) {
                leg.state = LegState::Confirmed;
            }
        }
    }

    /// May `source` send requests in leg `index`'s dialog? Only its trunk may: the trunk's
    /// networks, its proxy, and the host the dialog was made with. Whoever else knows the
    /// Call-ID and tags (a capture, a guess) is not the peer.
    fn leg_accepts_from(&self, index: usize, source: SocketAddr) -> bool {
        let Some(leg) = self.legs.get(index).and_then(Option::as_ref) else {
            return false;
        };
        let ip = source.ip();
        let host = Cidr::host(ip);
        let same = |other: IpAddr| host.contains(other);
        let trunk = &self.trunks[leg.trunk];
        trunk.sources.iter().any(|c| c.contains(ip))
            || trunk
                .proxy
                .as_ref()
                .is_some_and(|(_, addr, _)| same(addr.ip()))
            || same(leg.source.ip())
            || leg.dialog.as_ref().is_some_and(|d| {
                // The peer's own Contact (its remote target) came from the trunk too.
                same(d.peer.ip()) || uri_socket_addr(&d.remote_target).is_some_and(|a| same(a.ip()))
            })
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: Request,
        source: SocketAddr,
    ) {
        let key = (
            request.headers.call_id().unwrap_or("").to_string(),
            request
                .headers
                .to()
                .and_then(|t| t.tag().map(str::to_string))
                .unwrap_or_default(),
        );
        let Some(&index) = self.by_dialog.get(&key) else {
            let status = if request.method == Method::Options {
                200
            } else {
                481
            };
            self.reply(now, tx, &request, status, None);
            return;
        };
        if !self.leg_accepts_from(index, source) {
            // A forged BYE or re-INVITE: no answer, no effect, counted.
            tracing::info!(%source, method = %request.method, "in-dialog request from outside the dialog's trunk dropped");
            self.layer.guard_mut().count(DropReason::ForeignInDialog);
            self.layer.discard(tx);
            return;
        }
        let Some(leg) = self.legs[index].as_mut() else {
            self.reply(now, tx, &request, 481, None);
            return;
        };
        if let Some(dialog) = leg.dialog.as_mut() {
            if let Err(status) = dialog.accept_remote_cseq(&request) {
                self.reply(now, tx, &request, status, None);
                return;
            }
        }
        match request.method {
            Method::Bye => {
                self.reply(now, tx, &request, 200, None);
                self.end_leg(index, EndCause::RemoteBye);
            }
            Method::Invite | Method::Update => self.on_reoffer(now, tx, index, request),
            Method::Info => {
                let digit = dtmf_relay_digit(&request);
                self.reply(now, tx, &request, 200, None);
                if let (Some(digit), Some(leg)) = (digit, self.legs[index].as_ref()) {
                    self.events.push_back(LegEvent::Dtmf {
                        leg: leg.id.clone(),
                        digit,
                    });
                }
            }
            Method::Options => self.reply(now, tx, &request, 200, None),
            _ => self.reply(now, tx, &request, 405, None),
        }
    }

    /// re-INVITE or UPDATE carrying a new offer: far-end hold, or address/codec change.
    fn on_reoffer(&mut self, now: Instant, tx: ServerTxId, index: usize, request: Request) {
        let contact = self.contact(leg_transport(&self.legs[index]));
        let Some(leg) = self.legs[index].as_mut() else {
            return;
        };
        if matches!(leg.state, LegState::Terminating) {
            self.reply(now, tx, &request, 481, None);
            return;
        }
        let (Some(current), Some(local)) = (leg.audio.clone(), leg.local.as_mut()) else {
            self.reply(now, tx, &request, 491, None);
            return;
        };
        // §12.2.2: an accepted re-INVITE or UPDATE is a target refresh; nothing else moves
        // the remote target, and never a packet's source address.
        let refresh = |dialog: &mut Option<Dialog>, request: &Request| {
            if let (Some(dialog), Some(contact)) = (dialog.as_mut(), request.headers.contact()) {
                dialog.remote_target = contact.uri;
            }
        };
        if request.body.is_empty() {
            // Offerless re-INVITE (session refresh): answer with our current SDP.
            refresh(&mut leg.dialog, &request);
            let mut response = response_to(&request, 200, None);
            response.headers.push("Contact", contact);
            if request.method == Method::Invite {
                if let Some(sdp) = &leg.local_sdp {
                    response.headers.push("Content-Type", "application/sdp");
                    response.body = sdp.to_string().into_bytes();
                }
            }
            self.layer.respond(now, tx, response);
            return;
        }
        let Some(offer) = std::str::from_utf8(&request.body)
            .ok()
            .and_then(|s| SessionDescription::parse(s).ok())
        else {
            self.reply(now, tx, &request, 400, Some("Malformed SDP"));
            return;
        };
        let want = if leg.held_by_us {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        match sdp::reanswer(&offer, &current, &leg.codecs, local, want) {
            Ok((answer, audio)) => {
                refresh(&mut leg.dialog, &request);
                let mut response = response_to(&request, 200, None);
                response.headers.push("Contact", contact);
                response.headers.push("Content-Type", "application/sdp");
                response.body = answer.to_string().into_bytes();
                local.session_version = answer.origin.session_version;
                leg.local_sdp = Some(answer);
                leg.audio = Some(audio.clone());
                let id = leg.id.clone();
                self.layer.respond(now, tx, response);
                tracing::debug!(call = %id, direction = audio.remote_direction.as_str(), "media changed by peer");
                self.events
                    .push_back(LegEvent::MediaChanged { leg: id, audio });
            }
            Err(e) => {
                tracing::info!(error = %e, "re-offer refused");
                self.reply(now, tx, &request, 488, None);
            }
        }
    }
}

/// `application/dtmf-relay` INFO bodies (`Signal=5`), as many trunks send DTMF.
fn dtmf_relay_digit(request: &Request) -> Option<char> {
    let ct = request.headers.content_type()?.to_ascii_lowercase();
    if !ct.starts_with("application/dtmf-relay") && !ct.starts_with("application/dtmf") {
        return None;
    }
    let body = std::str::from_utf8(&request.body).ok()?;
    let signal = body
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })
        .unwrap_or(body.trim());
    let c = signal.chars().next()?;
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
}
