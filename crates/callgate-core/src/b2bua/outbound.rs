//! Calls to trunks: the dial plan, the INVITE to each trunk in turn with its own offer, the
//! answers and digest challenges, and failover.

use super::*;

impl B2bua {
    /// The trunks whose dial plan allows `target`, in configured order; an error when none
    /// does or the target is neither an E.164 number nor a SIP URI.
    /// The configured name of trunk `index` (as `trunks_for` numbers them).
    pub fn trunk_name(&self, index: usize) -> Option<&str> {
        self.trunks.get(index).map(|t| t.config.name.as_str())
    }

    pub fn trunks_for(&self, target: &str) -> Result<Vec<usize>, DialError> {
        let trunks: Vec<usize> = self
            .trunks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.proxy.is_some()
                    && t.config
                        .dial_plan
                        .iter()
                        .any(|p| dial_plan_matches(p, target))
            })
            .map(|(i, _)| i)
            .collect();
        if trunks.is_empty() {
            return Err(DialError::DialPlanDenied(target.to_string()));
        }
        if !(target.starts_with('+')
            && target.len() > 1
            && target[1..].bytes().all(|b| b.is_ascii_digit()))
            && Uri::parse(target).is_err()
        {
            return Err(DialError::BadTarget(target.to_string()));
        }
        Ok(trunks)
    }

    /// Place an outbound call: the first trunk whose dial plan allows `target`, failing over
    /// to the next on 5xx or timeout.
    /// `via` names the one trunk to use, past the dial plan (a transfer to an agent on another
    /// node of the cluster goes through the registrar, to the agent's own DID).
    pub fn dial(
        &mut self,
        now: Instant,
        id: &str,
        target: &str,
        from_number: &str,
        local: LocalMedia,
        via: Option<&str>,
    ) -> Result<(), DialError> {
        let trunks = match via {
            Some(name) => {
                let trunk = self
                    .trunks
                    .iter()
                    .position(|t| t.config.name == name && t.proxy.is_some())
                    .ok_or_else(|| DialError::DialPlanDenied(target.to_string()))?;
                vec![trunk]
            }
            None => self.trunks_for(target)?,
        };
        // Healthy trunks first, configured order within each group.
        let mut ordered = trunks.clone();
        ordered.sort_by_key(|&i| !self.trunks[i].up);
        let codecs = self.trunk_codecs(ordered[0]);
        let offer = sdp::offer(&codecs, &local, Direction::SendRecv);
        let index = self.insert_leg(Leg {
            id: id.into(),
            state: LegState::Terminating,
            dialog: None,
            local: Some(local),
            local_sdp: Some(offer.clone()),
            audio: None,
            trunk: ordered[0],
            outbound: Some(OutboundAttempt {
                target: target.to_string(),
                trunks: ordered,
                next_trunk: 0,
                from_number: from_number.to_string(),
                offer,
                auth_tries: 0,
            }),
            codecs,
            invite: None,
            source: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::Udp,
            held_by_us: false,
        });
        if !self.try_next_trunk(now, index) {
            self.end_leg(index, EndCause::Failed(503));
        }
        Ok(())
    }

    /// Send the INVITE to the next trunk of the attempt; false when none is left.
    pub(super) fn try_next_trunk(&mut self, now: Instant, index: usize) -> bool {
        let Some(leg) = self.legs[index].as_mut() else {
            return false;
        };
        let Some(attempt) = leg.outbound.as_mut() else {
            return false;
        };
        let Some(&trunk) = attempt.trunks.get(attempt.next_trunk) else {
            return false;
        };
        attempt.next_trunk += 1;
        attempt.auth_tries = 0;
        let Some((proxy, destination, transport)) = self.trunks[trunk].proxy.clone() else {
            return false;
        };
        // Each trunk gets an offer of its own: SRTP keys only where that trunk takes them.
        let crypto = self.local_crypto(trunk, transport);
        let Some(leg) = self.legs[index].as_mut() else {
            return false;
        };
        let Some(local) = leg.local.as_mut() else {
            return false;
        };
        local.crypto = crypto;
        let offer = sdp::offer(&leg.codecs, local, Direction::SendRecv);
        leg.local_sdp = Some(offer.clone());
        let Some(attempt) = leg.outbound.as_mut() else {
            return false;
        };
        attempt.offer = offer;
        let request_uri = if attempt.target.starts_with('+') {
            let mut uri = Uri::sip(Some(&attempt.target), &proxy.host, proxy.port);
            uri.params.push(("user".into(), Some("phone".into())));
            uri
        } else {
            match Uri::parse(&attempt.target) {
                Ok(uri) => uri,
                Err(_) => return false,
            }
        };
        let call_id = format!(
            "{}@{}",
            self.layer.ids().token(),
            self.settings.contact_host
        );
        let tag = self.layer.ids().token();
        let from_user = if attempt.from_number.is_empty() {
            "callgate"
        } else {
            attempt.from_number.as_str()
        };
        let mut headers = Headers::new();
        headers.push(
            "From",
            format!(
                "<sip:{}@{}>;tag={}",
                from_user, self.settings.contact_host, tag
            ),
        );
        headers.push("To", format!("<{request_uri}>"));
        headers.push("Call-ID", call_id);
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", {
            format!(
                "<sip:callgate@{}:{}{}>",
                self.settings.contact_host,
                self.settings.contact_port(transport),
                transport.uri_param()
            )
        });
        headers.push("Allow", ALLOW);
        headers.push("Content-Type", "application/sdp");
        let request = Request {
            method: Method::Invite,
            uri: request_uri,
            headers,
            body: attempt.offer.to_string().into_bytes(),
        };
        leg.trunk = trunk;
        leg.transport = transport;
        leg.source = destination;
        tracing::info!(call = %leg.id, trunk = %self.trunks[trunk].config.name, target = %attempt.target, "outbound INVITE");
        let tx = self
            .layer
            .send_request(now, request, destination, transport);
        if let Some(sent) = self.layer.client_request(tx).cloned() {
            leg.invite = Some(sent);
        }
        leg.state = LegState::Calling { tx };
        self.by_client_tx.insert(tx, ClientPurpose::Invite(index));
        true
    }

    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        tx: ClientTxId,
        index: usize,
        response: Response,
    ) {
        let status = response.status;
        let contact = self.contact(leg_transport(&self.legs[index]));
        let Some(leg) = self.legs[index].as_mut() else {
            return;
        };
        if status < 200 {
            if status > 100 && matches!(leg.state, LegState::Calling { .. }) {
                let id = leg.id.clone();
                self.events.push_back(LegEvent::Ringing { leg: id });
            }
            return;
        }
        if (200..300).contains(&status) {
            let Some(invite) = leg.invite.clone() else {
                return;
            };
            let Some(mut dialog) =
                Dialog::as_uac(&invite, &response, contact, leg.source, leg.transport)
            else {
                return;
            };
            let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
            let ack = dialog.ack(seq);
            let (destination, transport) = (dialog.destination(), dialog.transport);
            self.layer.send_ack(now, ack, destination, transport);
            let cancelled = matches!(leg.state, LegState::Cancelling);
            let answer = std::str::from_utf8(&response.body)
                .ok()
                .and_then(|s| SessionDescription::parse(s).ok());
            let audio = match (&leg.local_sdp, answer) {
                (Some(offer), Some(answer)) => sdp::accept_answer(offer, &answer).ok(),
                _ => None,
            };
            dialog.local_seq = dialog.local_seq.max(seq);
            self.by_dialog
                .insert((dialog.call_id.clone(), dialog.local_tag.clone()), index);
            leg.dialog = Some(dialog);
            leg.state = LegState::Confirmed;
            match (cancelled, audio) {
                (false, Some(audio)) => {
                    leg.audio = Some(audio.clone());
                    let id = leg.id.clone();
                    tracing::info!(call = %id, codec = ?audio.codec, "outbound call answered");
                    self.events.push_back(LegEvent::Answered { leg: id, audio });
                }
                (cancelled, audio) => {
                    // Answered after we gave up, or with an answer we cannot use: BYE it.
                    if audio.is_none() {
                        tracing::warn!(call = %leg.id, "2xx without a usable SDP answer");
                    }
                    self.hangup_index(now, index);
                    if !cancelled {
                        self.by_client_tx
                            .retain(|_, p| !matches!(p, ClientPurpose::Bye(i) if *i == index));
                        self.end_leg(index, EndCause::Failed(488));
                    }
                }
            }
            return;
        }
        if matches!(leg.state, LegState::Cancelling) {
            self.end_leg(index, EndCause::Cancelled);
            return;
        }
        if (status == 401 || status == 407) && self.retry_with_credentials(now, index, &response) {
            return;
        }
        let _ = tx;
        let failover = status >= 500 || status == 408;
        if failover && self.try_next_trunk(now, index) {
            tracing::info!(status, "trunk failed the call; failing over");
            return;
        }
        self.end_leg(index, EndCause::Failed(status));
    }

    /// Answer a 401/407 challenge with the trunk's credentials (once per challenge).
    fn retry_with_credentials(&mut self, now: Instant, index: usize, response: &Response) -> bool {
        let Some(leg) = self.legs[index].as_mut() else {
            return false;
        };
        let trunk = &self.trunks[leg.trunk];
        let (Some(username), Some(password)) =
            (trunk.config.username.clone(), trunk.config.password.clone())
        else {
            return false;
        };
        let Some(attempt) = leg.outbound.as_mut() else {
            return false;
        };
        if attempt.auth_tries >= 2 {
            return false;
        }
        attempt.auth_tries += 1;
        let (Some(invite), Some((_, destination, transport))) =
            (leg.invite.clone(), trunk.proxy.clone())
        else {
            return false;
        };
        let cnonce = self.layer.ids().token();
        let Some(request) = authorized_retry(&invite, response, &username, &password, &cnonce)
        else {
            return false;
        };
        let tx = self
            .layer
            .send_request(now, request, destination, transport);
        if let Some(sent) = self.layer.client_request(tx).cloned() {
            leg.invite = Some(sent);
        }
        leg.state = LegState::Calling { tx };
        self.by_client_tx.insert(tx, ClientPurpose::Invite(index));
        true
    }
}
