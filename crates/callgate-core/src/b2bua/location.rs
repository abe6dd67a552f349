//! Agents' locations at a cluster's registrar (Kamailio's `registrar` module): while an agent
//! is signed in on this node, each of its DIDs is registered through the registrar trunk with
//! this node's SIP address as Contact, so the registrar's `lookup("location")` hands calls for
//! the DID to this node. Registrations are refreshed before they lapse and removed (Expires: 0)
//! when the agent leaves or the gateway stops; a node that dies simply lets them expire.

use super::*;

/// One DID's registration at the registrar.
#[derive(Debug)]
pub(super) struct Location {
    did: String,
    trunk: usize,
    state: Registration,
    /// One Call-ID for the registration's whole life, CSeq growing (RFC 3261 §10.2).
    call_id: String,
    cseq: u32,
    /// Being removed: the next answer ends it.
    leaving: bool,
    /// The REGISTER in flight: an answer to an older one (a refresh overtaken by the removal,
    /// or meant for a slot since reused) changes nothing.
    pending: Option<ClientTxId>,
}

impl B2bua {
    /// Keep `did` registered at the trunk named `registrar` with this node as its Contact.
    /// `false` when there is no such trunk or it has no outbound proxy to register with.
    pub fn register_location(&mut self, now: Instant, registrar: &str, did: &str) -> bool {
        let Some(trunk) = self
            .trunks
            .iter()
            .position(|t| t.config.name == registrar && t.proxy.is_some())
        else {
            return false;
        };
        if let Some(index) = self.location_index(did) {
            if let Some(location) = self.locations[index].as_mut() {
                location.leaving = false;
                if matches!(location.state, Registration::Off) {
                    location.state = Registration::Due(now);
                }
            }
            self.send_location(now, index, None);
            return true;
        }
        let call_id = format!(
            "loc-{}@{}",
            self.layer.ids().token(),
            self.settings.contact_host
        );
        let cseq = (self.unix_secs % 1_000_000_000) as u32;
        let location = Location {
            did: did.to_string(),
            trunk,
            state: Registration::Due(now),
            call_id,
            cseq,
            leaving: false,
            pending: None,
        };
        let index = match self.locations.iter().position(Option::is_none) {
            Some(free) => {
                self.locations[free] = Some(location);
                free
            }
            None => {
                self.locations.push(Some(location));
                self.locations.len() - 1
            }
        };
        self.send_location(now, index, None);
        true
    }

    /// Stop registering `did`: one REGISTER with Expires: 0, then it is forgotten.
    pub fn unregister_location(&mut self, now: Instant, did: &str) {
        let Some(index) = self.location_index(did) else {
            return;
        };
        if let Some(location) = self.locations[index].as_mut() {
            location.leaving = true;
        }
        self.send_location(now, index, None);
    }

    /// The DIDs registered (or being registered) from this node, and whether the registrar
    /// has confirmed each.
    pub fn locations(&self) -> Vec<(String, bool)> {
        self.locations
            .iter()
            .flatten()
            .filter(|l| !l.leaving)
            .map(|l| {
                (
                    l.did.clone(),
                    matches!(l.state, Registration::Registered { .. }),
                )
            })
            .collect()
    }

    fn location_index(&self, did: &str) -> Option<usize> {
        self.locations
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.did == did))
    }

    /// When a location next needs a REGISTER.
    pub(super) fn location_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        self.locations
            .iter()
            .flatten()
            .filter_map(|l| match l.state {
                Registration::Due(at) => Some(at),
                Registration::Registered { refresh_at } => Some(refresh_at),
                _ => None,
            })
    }

    /// Send what is due.
    pub(super) fn refresh_locations(&mut self, now: Instant) {
        for index in 0..self.locations.len() {
            let due = self.locations[index]
                .as_ref()
                .is_some_and(|l| match l.state {
                    Registration::Due(at) => at <= now,
                    Registration::Registered { refresh_at } => refresh_at <= now,
                    _ => false,
                });
            if due {
                self.send_location(now, index, None);
            }
        }
    }

    fn location_request(&mut self, index: usize) -> Option<(Request, SocketAddr, Transport)> {
        let location = self.locations[index].as_mut()?;
        let trunk = &self.trunks[location.trunk];
        let proxy = trunk.proxy.clone()?;
        let expires = if location.leaving {
            0
        } else {
            trunk.config.register_expires
        };
        location.cseq = location.cseq.wrapping_add(1);
        let (did, call_id, cseq) = (
            location.did.clone(),
            location.call_id.clone(),
            location.cseq,
        );
        Some(self.register_to(proxy, &did, call_id, cseq, expires))
    }

    fn send_location(
        &mut self,
        now: Instant,
        index: usize,
        answer_to: Option<(&Request, &Response)>,
    ) {
        let auth_tries = match self.locations[index].as_ref().map(|l| &l.state) {
            Some(Registration::Pending { auth_tries }) if answer_to.is_some() => auth_tries + 1,
            _ => 0,
        };
        let Some((mut request, destination, transport)) = self.location_request(index) else {
            return;
        };
        if let Some((previous, challenge)) = answer_to {
            let Some(trunk) = self.locations[index].as_ref().map(|l| l.trunk) else {
                return;
            };
            match self.retry_with_trunk_credentials(trunk, previous, challenge) {
                Some(retry) => request = retry,
                None => return,
            }
        }
        let tx = self
            .layer
            .send_request(now, request, destination, transport);
        if let Some(location) = self.locations[index].as_mut() {
            location.state = Registration::Pending { auth_tries };
            location.pending = Some(tx);
        }
        self.by_client_tx.insert(tx, ClientPurpose::Location(index));
    }

    pub(super) fn on_location_response(
        &mut self,
        now: Instant,
        tx: ClientTxId,
        index: usize,
        response: Response,
    ) {
        if response.status < 200 {
            return;
        }
        let Some(location) = self.locations[index]
            .as_ref()
            .filter(|l| l.pending == Some(tx))
        else {
            return;
        };
        if location.leaving {
            tracing::info!(did = %location.did, status = response.status, "location removed");
            self.locations[index] = None;
            return;
        }
        let did = location.did.clone();
        let trunk = location.trunk;
        if (200..300).contains(&response.status) {
            let (granted, refresh) = super::trunk::granted_expires(
                &response,
                self.trunks[trunk].config.register_expires,
            );
            tracing::info!(%did, expires = granted, "location registered");
            if let Some(location) = self.locations[index].as_mut() {
                location.state = Registration::Registered {
                    refresh_at: now + Duration::from_secs(refresh),
                };
            }
            return;
        }
        let tries = match self.locations[index].as_ref().map(|l| &l.state) {
            Some(Registration::Pending { auth_tries }) => *auth_tries,
            _ => 0,
        };
        if (response.status == 401 || response.status == 407) && tries < 2 {
            if let Some((previous, _, _)) = self.location_request(index) {
                self.send_location(now, index, Some((&previous, &response)));
                return;
            }
        }
        tracing::warn!(%did, status = response.status, "location registration failed; retrying in 30 s");
        if let Some(location) = self.locations[index].as_mut() {
            location.state = Registration::Due(now + Duration::from_secs(30));
        }
    }

    /// The registrar did not answer: try again soon, or forget a location being removed.
    pub(super) fn on_location_timeout(&mut self, now: Instant, tx: ClientTxId, index: usize) {
        let Some(location) = self.locations[index]
            .as_mut()
            .filter(|l| l.pending == Some(tx))
        else {
            return;
        };
        if location.leaving {
            self.locations[index] = None;
        } else {
            location.state = Registration::Due(now + Duration::from_secs(30));
        }
    }
}
