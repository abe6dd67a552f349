//! Calls from trunks: who may send them (source or digest), the INVITE's checks, and our
//! answers (ringing, early media, 200, rejections, CANCEL).

use super::*;
use crate::controller::RejectReason;

/// Why presented credentials were refused (logged, never told the peer: every wrong
/// credential gets the same 401).
#[derive(Debug, Clone, Copy)]
enum AuthFailure {
    UnknownUser,
    WrongPassword,
    WrongRealm,
    WrongUri,
    WrongAlgorithm,
    Replayed,
    ForgedNonce,
}

impl AuthFailure {
    /// Someone tried a user or password they do not have (what bans are for).
    fn is_a_guess(self) -> bool {
        !matches!(self, AuthFailure::WrongUri | AuthFailure::Replayed)
    }

    fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown user",
            AuthFailure::WrongPassword => "wrong password",
            AuthFailure::WrongRealm => "wrong realm",
            AuthFailure::WrongUri => "uri is not the Request-URI",
            AuthFailure::WrongAlgorithm => "algorithm not offered",
            AuthFailure::Replayed => "nonce count replayed",
            AuthFailure::ForgedNonce => "nonce not ours",
        }
    }
}

impl B2bua {
    /// Which trunk may send this request: by source address first, then by digest
    /// credentials. `Err` carries the response already decided: 403 when no trunk takes
    /// credentials, else 401 with fresh challenges. Every wrong credential gets the same 401
    /// (no oracle between a wrong user and a wrong password), counts toward the source's ban
    /// and is logged in one line fail2ban can match.
    pub(super) fn authorize_inbound(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: &Request,
        source: SocketAddr,
    ) -> Result<usize, Response> {
        if let Some(index) = self
            .trunks
            .iter()
            .position(|t| t.sources.iter().any(|c| c.contains(source.ip())))
        {
            return Ok(index);
        }
        let with_credentials: Vec<usize> = self
            .trunks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.config.inbound_username.is_some())
            .map(|(i, _)| i)
            .collect();
        if with_credentials.is_empty() {
            return Err(response_to(request, 403, Some("Source Not Allowed")));
        }
        let realm = self.settings.contact_host.clone();
        let mut stale = false;
        if let Some(header) = request.headers.get("Authorization") {
            let verdict = match Authorization::parse(header) {
                Ok(auth) => self.check_credentials(&auth, request, &realm, &with_credentials),
                Err(_) => Err(Some(AuthFailure::ForgedNonce)),
            };
            match verdict {
                Ok(index) => {
                    self.layer.guard_mut().authenticated(now, source.ip());
                    self.layer.trust(tx);
                    return Ok(index);
                }
                Err(None) => stale = true,
                Err(Some(failure)) if !failure.is_a_guess() => {
                    // A replay, or a proxy that rewrote the Request-URI: refused, but nothing
                    // was guessed, so it counts toward no ban (and fail2ban ignores the line).
                    tracing::info!(
                        "SIP auth refused from {}: {} ({})",
                        source.ip(),
                        failure.as_str(),
                        request.method
                    );
                }
                Err(Some(failure)) => {
                    let user = Authorization::parse(header)
                        .map(|a| a.username)
                        .unwrap_or_default();
                    // One line per failure, always this shape: the fail2ban filter in the
                    // README matches "SIP auth failure from <HOST>".
                    tracing::warn!(
                        "SIP auth failure from {}: {} (user {:?}, {})",
                        source.ip(),
                        failure.as_str(),
                        user,
                        request.method
                    );
                    if let Some(banned) = self.layer.guard_mut().auth_failed(now, source.ip()) {
                        tracing::warn!(
                            "SIP source {} banned for {} s after repeated auth failures",
                            banned.source,
                            banned.until.saturating_duration_since(now).as_secs()
                        );
                    }
                }
            }
        }
        let mut response = response_to(request, 401, None);
        for index in 0..self.settings.digest_algorithms.len() {
            let algorithm = self.settings.digest_algorithms[index];
            // Every challenge its own nonce, so nonce-counts never collide between clients.
            let salt = self.layer.ids().next_u64();
            let challenge = Challenge {
                realm: realm.clone(),
                nonce: self.nonces.issue(self.unix_secs, salt, &realm),
                opaque: None,
                algorithm,
                qop: vec!["auth".into()],
                stale,
                domain: None,
            };
            response
                .headers
                .push("WWW-Authenticate", challenge.to_string());
        }
        Err(response)
    }

    /// The trunk these credentials prove, `Err(None)` for a stale nonce (challenge again,
    /// not a failure), `Err(Some(why))` for anything wrong.
    fn check_credentials(
        &mut self,
        auth: &Authorization,
        request: &Request,
        realm: &str,
        candidates: &[usize],
    ) -> Result<usize, Option<AuthFailure>> {
        match self
            .nonces
            .check(&auth.nonce, realm, self.unix_secs, NONCE_MAX_AGE_SECS)
        {
            NonceState::Fresh => {}
            NonceState::Stale => return Err(None),
            NonceState::Invalid => return Err(Some(AuthFailure::ForgedNonce)),
        }
        if auth.realm != realm {
            return Err(Some(AuthFailure::WrongRealm));
        }
        if !self.settings.digest_algorithms.contains(&auth.algorithm) {
            return Err(Some(AuthFailure::WrongAlgorithm));
        }
        // RFC 3261 §22.4 and RFC 7616 §3.4.6: the digest is bound to this Request-URI.
        let same_uri =
            Uri::parse(&auth.uri).is_ok_and(|u| u.to_string() == request.uri.to_string());
        if !same_uri {
            return Err(Some(AuthFailure::WrongUri));
        }
        let index = candidates
            .iter()
            .copied()
            .find(|&i| {
                self.trunks[i].config.inbound_username.as_deref() == Some(auth.username.as_str())
            })
            .ok_or(Some(AuthFailure::UnknownUser))?;
        let password = self.trunks[index]
            .config
            .inbound_password
            .as_deref()
            .unwrap_or("");
        if !digest::verify(auth, request.method.as_str(), password, &request.body) {
            return Err(Some(AuthFailure::WrongPassword));
        }
        // A nonce-count must grow with every use of a nonce (RFC 7616 §3.4): a replay repeats
        // one. Without qop there is no count, and the nonce serves once.
        let count = match auth.nc.as_deref() {
            Some(nc) => u32::from_str_radix(nc, 16).unwrap_or(0),
            None => 1,
        };
        let issued = u64::from_str_radix(auth.nonce.get(..16).unwrap_or("0"), 16).unwrap_or(0);
        if self
            .nonce_counts
            .get(&auth.nonce)
            .is_some_and(|(_, last)| count <= *last)
            || count == 0
        {
            return Err(Some(AuthFailure::Replayed));
        }
        if self.nonce_counts.len() >= NONCE_COUNTS_MAX {
            let now = self.unix_secs;
            self.nonce_counts
                .retain(|_, (at, _)| now.saturating_sub(*at) <= NONCE_MAX_AGE_SECS);
        }
        if self.nonce_counts.len() < NONCE_COUNTS_MAX {
            self.nonce_counts
                .insert(auth.nonce.clone(), (issued, count));
        } else {
            // Every slot holds a live nonce: refuse rather than forget a count.
            return Err(Some(AuthFailure::Replayed));
        }
        Ok(index)
    }

    pub(super) fn on_invite(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        if request.headers.max_forwards() == Some(0) {
            self.reply(now, tx, &request, 483, None);
            return;
        }
        let unsupported: Vec<String> = request
            .headers
            .all("Require")
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if !unsupported.is_empty() {
            // We support no extension a caller can require (100rel included): §8.2.2.3.
            let mut response = response_to(&request, 420, None);
            response.headers.push("Unsupported", unsupported.join(", "));
            let tag = self.layer.ids().token();
            set_to_tag(&mut response, &tag);
            self.layer.respond(now, tx, response);
            return;
        }
        if !matches!(request.uri.scheme, Scheme::Sip | Scheme::Sips | Scheme::Tel) {
            self.reply(now, tx, &request, 416, None);
            return;
        }
        let trunk = match self.authorize_inbound(now, tx, &request, source) {
            Ok(trunk) => trunk,
            Err(mut response) => {
                if response.status == 403 {
                    tracing::warn!(%source, from = request.headers.get("From").unwrap_or(""), "INVITE refused: not from a configured trunk");
                }
                let tag = self.layer.ids().token();
                set_to_tag(&mut response, &tag);
                self.layer.respond(now, tx, response);
                return;
            }
        };
        let content_type = request.headers.content_type().unwrap_or("");
        if request.body.is_empty() {
            // Delayed offer is not supported: ask for an offer in the INVITE.
            self.reply(now, tx, &request, 488, Some("SDP Offer Required"));
            return;
        }
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/sdp")
        {
            let mut response = response_to(&request, 415, None);
            response.headers.push("Accept", "application/sdp");
            let tag = self.layer.ids().token();
            set_to_tag(&mut response, &tag);
            self.layer.respond(now, tx, response);
            return;
        }
        let offer = match std::str::from_utf8(&request.body)
            .ok()
            .and_then(|s| SessionDescription::parse(s).ok())
        {
            Some(offer) => offer,
            None => {
                self.reply(now, tx, &request, 400, Some("Malformed SDP"));
                return;
            }
        };
        let crypto = self.local_crypto(trunk, transport);
        if self.trunks[trunk].config.srtp == SrtpMode::Required && crypto.is_none() {
            tracing::warn!(trunk = %self.trunks[trunk].config.name, transport = transport.as_str(), "INVITE refused: the trunk requires SRTP, and its keys may not go over plain SIP");
            self.reply(now, tx, &request, 488, None);
            return;
        }
        let codecs = self.trunk_codecs(trunk);
        let probe = LocalMedia {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 9,
            session_id: 1,
            session_version: 1,
            username: "callgate".into(),
            crypto,
        };
        if let Err(e) = sdp::answer(&offer, &codecs, &probe, Direction::SendRecv) {
            tracing::info!(error = %e, "INVITE refused: no acceptable media");
            self.reply(now, tx, &request, 488, None);
            return;
        }
        let id = format!(
            "c_{:010x}{}",
            self.unix_secs,
            &self.layer.ids().token()[..10]
        );
        let from = request.headers.from();
        let from_number = from
            .as_ref()
            .map(|f| e164_or_user(&f.uri))
            .unwrap_or_default();
        let from_name = from.and_then(|f| f.display).filter(|d| !d.is_empty());
        let to_user = e164_or_user(&request.uri);
        let index = self.insert_leg(Leg {
            id: id.clone().into(),
            state: LegState::Offered {
                tx,
                offer: Box::new(offer),
            },
            dialog: None,
            local: None,
            local_sdp: None,
            audio: None,
            trunk,
            outbound: None,
            codecs,
            invite: Some(request),
            source,
            transport,
            held_by_us: false,
        });
        self.by_server_tx.insert(tx, index);
        tracing::info!(call = %id, trunk = %self.trunks[trunk].config.name, from = %from_number, to = %to_user, "inbound call");
        self.events.push_back(LegEvent::Incoming {
            leg: id.into(),
            trunk: self.trunks[trunk].config.name.clone(),
            from_number,
            from_name,
            to_user,
        });
    }

    /// Our SRTP on a leg of `trunk` over `transport` (see `LocalCrypto`), with a fresh key:
    /// `None` where the trunk has SRTP off, or where the keys would cross plain SIP and the
    /// trunk does not allow that.
    pub(super) fn local_crypto(&self, trunk: usize, transport: Transport) -> Option<LocalCrypto> {
        let config = &self.trunks.get(trunk)?.config;
        let required = match config.srtp {
            SrtpMode::Off => return None,
            SrtpMode::Optional => false,
            SrtpMode::Required => true,
        };
        let private = transport == Transport::Tls || config.srtp_over_plain_sip;
        private.then(|| LocalCrypto {
            required,
            key: MasterKey::random(),
        })
    }

    pub(super) fn trunk_codecs(&self, trunk: usize) -> Vec<Codec> {
        self.trunks
            .get(trunk)
            .and_then(|t| t.config.codecs.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|n| crate::config::parse_codec(n))
                    .collect()
            })
            .unwrap_or_else(|| self.settings.codecs.clone())
    }

    /// Ring an inbound leg (180).
    pub fn ring(&mut self, now: Instant, id: &str) {
        let Some(index) = self.leg_index(id) else {
            return;
        };
        let Some(leg) = self.legs[index].as_mut() else {
            return;
        };
        let LegState::Offered { tx, .. } = leg.state else {
            return;
        };
        let Some(request) = leg.invite.clone() else {
            return;
        };
        let tag = self.local_tag_for(index);
        let mut response = response_to(&request, 180, None);
        set_to_tag(&mut response, &tag);
        response
            .headers
            .push("Contact", self.contact(leg_transport(&self.legs[index])));
        self.layer.respond(now, tx, response);
    }

    fn local_tag_for(&mut self, index: usize) -> String {
        if let Some(Some(leg)) = self.legs.get(index) {
            if let Some(d) = &leg.dialog {
                return d.local_tag.clone();
            }
        }
        let tag = self.layer.ids().token();
        if let Some(Some(leg)) = self.legs.get_mut(index) {
            if let Some(request) = leg.invite.clone() {
                let transport = leg.transport;
                let contact = self.contact(transport);
                let Some(Some(leg)) = self.legs.get_mut(index) else {
                    return tag;
                };
                leg.dialog = Dialog::as_uas(&request, &tag, contact, leg.source, leg.transport);
            }
        }
        tag
    }

    /// Early media for an inbound leg that waits (183 Session Progress with our answer, media
    /// at `local`), when its trunk takes early media (`early_media`, the default): returns
    /// what offer/answer agreed, or `None` when the trunk wants none (ring it instead).
    pub fn early_media(
        &mut self,
        now: Instant,
        id: &str,
        local: LocalMedia,
    ) -> Result<Option<AudioSession>, DialError> {
        let index = self.leg_index(id).ok_or(DialError::UnknownLeg)?;
        let trunk = self.legs[index].as_ref().map(|l| l.trunk);
        let wanted = trunk
            .and_then(|t| self.trunks.get(t))
            .is_none_or(|t| t.config.early_media);
        if !wanted {
            return Ok(None);
        }
        // The 200 that answers the call later carries this same session (no PRACK, no
        // UPDATE: RFC 3261 §13.2.1 keeps the first answer).
        self.respond_with_session(now, index, 183, local).map(Some)
    }

    /// Answer an inbound leg with our media at `local`; returns what offer/answer agreed.
    /// A leg in early media keeps the session its 183 gave (and `local` is not used).
    pub fn answer(
        &mut self,
        now: Instant,
        id: &str,
        local: LocalMedia,
    ) -> Result<AudioSession, DialError> {
        let index = self.leg_index(id).ok_or(DialError::UnknownLeg)?;
        self.respond_with_session(now, index, 200, local)
    }

    /// Respond to an offered leg with our session: 183 (early media) or 200 (answered). The
    /// session is the one a 183 gave already, or a new answer for `local`.
    fn respond_with_session(
        &mut self,
        now: Instant,
        index: usize,
        status: u16,
        local: LocalMedia,
    ) -> Result<AudioSession, DialError> {
        let tag = self.local_tag_for(index);
        let transport = leg_transport(&self.legs[index]);
        let contact = self.contact(transport);
        let trunk = self.legs[index].as_ref().map_or(usize::MAX, |l| l.trunk);
        let local = LocalMedia {
            crypto: self.local_crypto(trunk, transport),
            ..local
        };
        let leg = self.legs[index].as_mut().ok_or(DialError::UnknownLeg)?;
        let LegState::Offered { tx, offer } = &leg.state else {
            return Err(DialError::InvalidState);
        };
        let tx = *tx;
        let (answer, audio, local) = match (&leg.local_sdp, &leg.audio, &leg.local) {
            (Some(early), Some(audio), Some(early_local)) => {
                (early.clone(), audio.clone(), early_local.clone())
            }
            _ => {
                let (answer, audio) = sdp::answer(offer, &leg.codecs, &local, Direction::SendRecv)?;
                (answer, audio, local)
            }
        };
        let Some(request) = leg.invite.clone() else {
            return Err(DialError::InvalidState);
        };
        let answered = status == 200;
        let reason = (!answered).then_some("Session Progress");
        let mut response = response_to(&request, status, reason);
        set_to_tag(&mut response, &tag);
        response.headers.push("Contact", contact);
        if answered {
            response.headers.push("Allow", ALLOW);
        }
        response.headers.push("Content-Type", "application/sdp");
        response.body = answer.to_string().into_bytes();
        leg.local = Some(local);
        leg.local_sdp = Some(answer);
        leg.audio = Some(audio.clone());
        if answered {
            leg.state = LegState::Accepted;
            if let Some(d) = &leg.dialog {
                self.by_dialog
                    .insert((d.call_id.clone(), d.local_tag.clone()), index);
            }
        }
        self.layer.respond(now, tx, response);
        Ok(audio)
    }

    /// Refuse an inbound leg that is not answered yet.
    pub fn reject(&mut self, now: Instant, id: &str, status: u16) {
        let Some(index) = self.leg_index(id) else {
            return;
        };
        let Some(leg) = self.legs[index].as_ref() else {
            return;
        };
        if let (LegState::Offered { tx, .. }, Some(request)) = (&leg.state, leg.invite.clone()) {
            let tx = *tx;
            let tag = self.local_tag_for(index);
            let mut response = response_to(&request, status, None);
            set_to_tag(&mut response, &tag);
            self.layer.respond(now, tx, response);
            self.end_leg(index, EndCause::Local);
        }
    }

    pub(super) fn on_cancelled(&mut self, now: Instant, invite: ServerTxId) {
        let Some(&index) = self.by_server_tx.get(&invite) else {
            return;
        };
        let Some(leg) = self.legs[index].as_ref() else {
            return;
        };
        if let (LegState::Offered { tx, .. }, Some(request)) = (&leg.state, leg.invite.clone()) {
            let tx = *tx;
            let tag = self.local_tag_for(index);
            let mut response = response_to(&request, 487, None);
            set_to_tag(&mut response, &tag);
            self.layer.respond(now, tx, response);
            self.end_leg(index, EndCause::Cancelled);
        }
    }
}

/// The SIP status that tells a caller why the controller turned the call away.
pub fn reject_status(reason: RejectReason) -> u16 {
    match reason {
        RejectReason::UnknownNumber => 404,
        RejectReason::Unavailable => 480,
        RejectReason::Busy => 486,
    }
}
