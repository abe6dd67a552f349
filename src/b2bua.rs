//! The back-to-back user agent core: turns SIP transactions and dialogs into call-leg events
//! for the controller, and the controller's decisions into SIP. It owns the SIP-level rules
//! (who may send calls, Max-Forwards, extensions, SDP offer/answer, in-dialog requests, trunk
//! registration, keepalives and failover) but never decides what a call is for: routing and
//! call policy live in `controller`. Sans-IO like the transaction layer it drives.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{dial_plan_matches, Cidr, SrtpMode, TrunkConfig};
use crate::sdes::MasterKey;
use crate::sdp::{
    self, AudioSession, Codec, Direction, LocalCrypto, LocalMedia, SessionDescription,
};
use crate::sip::dialog::{uri_socket_addr, Dialog};
use crate::sip::digest::{self, Authorization, Challenge, NonceIssuer, NonceState};
use crate::sip::guard::{DropReason, GuardSettings};
use crate::sip::message::{Headers, Message, Method, NameAddr, ParseError, Request, Response};
use crate::sip::transaction::{
    response_to, set_to_tag, ClientTxId, ServerTxId, TransactionEvent, TransactionLayer,
    TransactionLimits, Transmit, Transport,
};
use crate::sip::uri::{Scheme, Uri};

/// Methods we answer; anything else gets 405 with this list (§8.2.1).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// How long a dialled call may ring or wait before we give up on the trunk.
const NONCE_MAX_AGE_SECS: u64 = 300;
/// Nonces whose highest nonce-count we remember (only nonces that authenticated someone get
/// an entry, so strangers cannot fill it; past this, entries older than a nonce's life go).
const NONCE_COUNTS_MAX: usize = 100_000;
/// Unanswered OPTIONS in a row that mark a trunk down.
const KEEPALIVE_FAILURES_DOWN: u32 = 3;

pub type LegId = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// The peer sent BYE.
    RemoteBye,
    /// The caller cancelled before answer.
    Cancelled,
    /// An outbound attempt failed on every trunk; the last status.
    Failed(u16),
    /// Our 2xx was never acknowledged, or our BYE went unanswered.
    Timeout,
    /// We ended it (BYE answered, or rejection sent).
    Local,
}

/// What the controller hears from the SIP side.
#[derive(Debug, Clone)]
pub enum LegEvent {
    Incoming {
        leg: LegId,
        trunk: String,
        from_number: String,
        from_name: Option<String>,
        to_user: String,
    },
    Ringing {
        leg: LegId,
    },
    Answered {
        leg: LegId,
        audio: AudioSession,
    },
    /// re-INVITE/UPDATE changed the media (address, codec, or the peer put us on hold).
    MediaChanged {
        leg: LegId,
        audio: AudioSession,
    },
    Dtmf {
        leg: LegId,
        digit: char,
    },
    Ended {
        leg: LegId,
        cause: EndCause,
    },
    TrunkHealth {
        trunk: String,
        up: bool,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DialError {
    #[error("no trunk's dial plan allows {0}")]
    DialPlanDenied(String),
    #[error("{0} is neither an E.164 number nor a SIP URI")]
    BadTarget(String),
    #[error("no such call leg")]
    UnknownLeg,
    #[error("call leg is not in a state that allows this")]
    InvalidState,
    #[error("SDP: {0}")]
    Sdp(#[from] sdp::SdpError),
}

#[derive(Debug)]
enum LegState {
    /// Inbound INVITE received, not answered.
    Offered {
        tx: ServerTxId,
        offer: Box<SessionDescription>,
    },
    /// We sent 2xx and wait for the ACK.
    Accepted,
    /// Outbound INVITE sent.
    Calling {
        tx: ClientTxId,
    },
    /// Outbound, CANCEL requested.
    Cancelling,
    Confirmed,
    /// BYE sent.
    Terminating,
}

#[derive(Debug)]
struct OutboundAttempt {
    target: String,
    trunks: Vec<usize>,
    next_trunk: usize,
    from_number: String,
    offer: SessionDescription,
    auth_tries: u32,
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    state: LegState,
    dialog: Option<Dialog>,
    local: Option<LocalMedia>,
    local_sdp: Option<SessionDescription>,
    audio: Option<AudioSession>,
    trunk: usize,
    outbound: Option<OutboundAttempt>,
    codecs: Vec<Codec>,
    /// The INVITE we sent (outbound) or its server transaction's request (inbound).
    invite: Option<Request>,
    source: SocketAddr,
    transport: Transport,
    /// A re-INVITE/UPDATE we are answering waits on nothing: answered at once.
    held_by_us: bool,
}

#[derive(Debug, Clone, Copy)]
enum ClientPurpose {
    Invite(usize),
    Bye(usize),
    Keepalive(usize),
    Register(usize),
}

#[derive(Debug)]
struct TrunkState {
    config: TrunkConfig,
    sources: Vec<Cidr>,
    proxy: Option<(Uri, SocketAddr, Transport)>,
    up: bool,
    keepalive_failures: u32,
    next_keepalive: Option<Instant>,
    registration: Registration,
}

#[derive(Debug)]
enum Registration {
    Off,
    Due(Instant),
    Pending { auth_tries: u32 },
    Registered { refresh_at: Instant },
}

/// Addresses the b2bua writes into Contact and SDP.
#[derive(Debug, Clone)]
pub struct B2buaSettings {
    pub contact_host: String,
    pub contact_port: u16,
    /// The SIP over TLS listener's port, when there is one (Contacts for TLS legs name it).
    pub tls_port: Option<u16>,
    pub codecs: Vec<Codec>,
    pub nonce_secret: [u8; 32],
    /// The SIP guard's limits; the trunks' addresses are added to its trusted sources.
    pub guard: GuardSettings,
    pub limits: TransactionLimits,
    /// Offered in 401 challenges, most preferred first; no other is accepted.
    pub digest_algorithms: Vec<digest::Algorithm>,
}

impl B2buaSettings {
    /// Our port for a transport: TLS has a listener of its own.
    fn contact_port(&self, transport: Transport) -> u16 {
        match (transport, self.tls_port) {
            (Transport::Tls, Some(port)) => port,
            _ => self.contact_port,
        }
    }
}

pub struct B2bua {
    layer: TransactionLayer,
    settings: B2buaSettings,
    trunks: Vec<TrunkState>,
    legs: Vec<Option<Leg>>,
    by_id: HashMap<LegId, usize>,
    by_server_tx: HashMap<ServerTxId, usize>,
    by_client_tx: HashMap<ClientTxId, ClientPurpose>,
    /// (Call-ID, our tag) → leg, for in-dialog requests.
    by_dialog: HashMap<(String, String), usize>,
    events: VecDeque<LegEvent>,
    nonces: NonceIssuer,
    /// Nonce → (its issue time, the highest nonce-count accepted with it): a replayed
    /// Authorization repeats a count and is refused.
    nonce_counts: HashMap<String, (u64, u32)>,
    unix_secs: u64,
}

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

fn e164_or_user(uri: &Uri) -> String {
    uri.user_unescaped().unwrap_or_default()
}

impl B2bua {
    pub fn new(
        mut layer: TransactionLayer,
        settings: B2buaSettings,
        trunks: &[TrunkConfig],
        now: Instant,
    ) -> B2bua {
        let trunks: Vec<TrunkState> = trunks
            .iter()
            .map(|config| {
                let proxy = config.proxy();
                let keepalive = (config.options_interval > 0 && proxy.is_some())
                    .then(|| now + Duration::from_secs(1));
                TrunkState {
                    sources: config
                        .inbound_from
                        .iter()
                        .filter_map(|s| Cidr::parse(s))
                        .collect(),
                    registration: if config.register && proxy.is_some() {
                        Registration::Due(now)
                    } else {
                        Registration::Off
                    },
                    proxy,
                    up: true,
                    keepalive_failures: 0,
                    next_keepalive: keepalive,
                    config: config.clone(),
                }
            })
            .collect();
        let nonces = NonceIssuer::new(settings.nonce_secret);
        // A trunk's networks and its proxy's address are trusted by the guard: no rate limit,
        // and 100 Trying and retransmissions as RFC 3261 has them.
        let mut guard = settings.guard.clone();
        for trunk in trunks.iter() {
            let trunk: &TrunkState = trunk;
            guard.trusted.extend(trunk.sources.iter().copied());
            if let Some((_, addr, _)) = &trunk.proxy {
                guard.trusted.push(Cidr::host(addr.ip()));
            }
        }
        layer.protect(guard, settings.limits);
        B2bua {
            layer,
            settings,
            trunks,
            legs: Vec::new(),
            by_id: HashMap::new(),
            by_server_tx: HashMap::new(),
            by_client_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            events: VecDeque::new(),
            nonces,
            nonce_counts: HashMap::new(),
            unix_secs: 0,
        }
    }

    /// Wall-clock seconds for digest nonces; the shell keeps it current.
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_secs = secs;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.layer.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let trunk_deadlines = self.trunks.iter().flat_map(|t| {
            let reg = match t.registration {
                Registration::Due(at) => Some(at),
                Registration::Registered { refresh_at } => Some(refresh_at),
                _ => None,
            };
            [t.next_keepalive, reg]
        });
        trunk_deadlines
            .flatten()
            .chain(self.layer.poll_timeout())
            .min()
    }

    pub fn set_admission(&mut self, rate: Option<f64>, shed_all: bool) {
        self.layer.set_admission(rate, shed_all);
    }

    /// Live (server, client) transactions.
    pub fn live_transactions(&self) -> (usize, usize) {
        self.layer.live_transactions()
    }

    pub fn admitted_calls(&self) -> u64 {
        self.layer.admitted_calls()
    }

    pub fn shed_calls(&self) -> u64 {
        self.layer.shed_calls()
    }

    /// The host a leg's SIP comes from (the caller's, or the trunk proxy's for calls out).
    pub fn signalling_peer(&self, id: &str) -> Option<IpAddr> {
        let leg = self.legs.get(self.leg_index(id)?)?.as_ref()?;
        Some(
            leg.dialog
                .as_ref()
                .map(|d| d.peer)
                .unwrap_or(leg.source)
                .ip(),
        )
    }

    /// What the SIP guard dropped so far, by reason.
    pub fn guard_drops(&self) -> crate::sip::guard::DropCounts {
        self.layer.guard().drops()
    }

    pub fn live_legs(&self) -> usize {
        self.by_id.len()
    }

    pub fn leg_ids(&self) -> Vec<LegId> {
        self.by_id.keys().cloned().collect()
    }

    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        self.layer.handle_datagram(now, source, bytes);
        self.drain_layer(now);
    }

    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        message: Message,
    ) {
        self.layer.handle_message(now, source, transport, message);
        self.drain_layer(now);
    }

    pub fn handle_parse_error(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        error: ParseError,
    ) {
        self.layer.handle_parse_error(source, transport, error);
        self.drain_layer(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.layer.handle_timeout(now);
        for index in 0..self.trunks.len() {
            if self.trunks[index]
                .next_keepalive
                .is_some_and(|at| at <= now)
            {
                self.send_keepalive(now, index);
            }
            let due = match self.trunks[index].registration {
                Registration::Due(at) => at <= now,
                Registration::Registered { refresh_at } => refresh_at <= now,
                _ => false,
            };
            if due {
                self.send_register(now, index, None);
            }
        }
        self.drain_layer(now);
    }

    fn drain_layer(&mut self, now: Instant) {
        while let Some(event) = self.layer.poll_event() {
            match event {
                TransactionEvent::Request {
                    tx,
                    request,
                    source,
                    transport,
                } => self.on_request(now, tx, request, source, transport),
                TransactionEvent::Cancelled { invite } => self.on_cancelled(now, invite),
                TransactionEvent::Ack { request, source } => self.on_ack(now, request, source),
                TransactionEvent::Response { tx, response } => self.on_response(now, tx, response),
                TransactionEvent::Timeout { tx } => self.on_client_failure(now, tx, 408),
                TransactionEvent::TransportError { tx } => self.on_client_failure(now, tx, 503),
                TransactionEvent::AckTimeout { tx } => {
                    if let Some(index) = self.by_server_tx.remove(&tx) {
                        self.hangup_index(now, index);
                        self.end_leg(index, EndCause::Timeout);
                    }
                }
            }
        }
    }

    fn contact(&self, transport: Transport) -> String {
        format!(
            "<sip:callgate@{}:{}{}>",
            self.settings.contact_host,
            self.settings.contact_port(transport),
            transport.uri_param()
        )
    }

    fn reply(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: &Request,
        status: u16,
        reason: Option<&str>,
    ) {
        let mut response = response_to(request, status, reason);
        if status > 100 && request.headers.to().is_some_and(|t| t.tag().is_none()) {
            let tag = self.layer.ids().token();
            set_to_tag(&mut response, &tag);
        }
        if status == 405 || (request.method == Method::Options && status == 200) {
            response.headers.push("Allow", ALLOW);
        }
        self.layer.respond(now, tx, response);
    }

    fn on_request(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        let span = tracing::debug_span!("sip", call_id = request.headers.call_id().unwrap_or(""), method = %request.method);
        let _enter = span.enter();
        let in_dialog = request.headers.to().is_some_and(|t| t.tag().is_some());
        if in_dialog {
            self.on_in_dialog_request(now, tx, request, source);
            return;
        }
        match request.method {
            Method::Invite => self.on_invite(now, tx, request, source, transport),
            Method::Options => {
                let mut response = response_to(&request, 200, None);
                let tag = self.layer.ids().token();
                set_to_tag(&mut response, &tag);
                response.headers.push("Allow", ALLOW);
                response.headers.push("Accept", "application/sdp");
                response.headers.push("Supported", "");
                self.layer.respond(now, tx, response);
            }
            Method::Bye | Method::Update | Method::Info | Method::Prack => {
                self.reply(now, tx, &request, 481, None);
            }
            Method::Register => {
                // Not a registrar. A stranger is challenged exactly as for a call, whatever
                // the user, so a REGISTER sweep (svwar) learns nothing and a password guesser
                // (svcrack) meets the same failure count and ban as an INVITE would.
                match self.authorize_inbound(now, tx, &request, source) {
                    Ok(_) => self.reply(now, tx, &request, 405, None),
                    Err(mut response) => {
                        let tag = self.layer.ids().token();
                        set_to_tag(&mut response, &tag);
                        self.layer.respond(now, tx, response);
                    }
                }
            }
            _ => self.reply(now, tx, &request, 405, None),
        }
    }

    /// Which trunk may send this request: by source address first, then by digest
    /// credentials. `Err` carries the response already decided: 403 when no trunk takes
    /// credentials, else 401 with fresh challenges. Every wrong credential gets the same 401
    /// (no oracle between a wrong user and a wrong password), counts toward the source's ban
    /// and is logged in one line fail2ban can match.
    fn authorize_inbound(
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

    fn on_invite(
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
            id: id.clone(),
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
            leg: id,
            trunk: self.trunks[trunk].config.name.clone(),
            from_number,
            from_name,
            to_user,
        });
    }

    /// Our SRTP on a leg of `trunk` over `transport` (see `LocalCrypto`), with a fresh key:
    /// `None` where the trunk has SRTP off, or where the keys would cross plain SIP and the
    /// trunk does not allow that.
    fn local_crypto(&self, trunk: usize, transport: Transport) -> Option<LocalCrypto> {
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

    fn trunk_codecs(&self, trunk: usize) -> Vec<Codec> {
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

    fn insert_leg(&mut self, leg: Leg) -> usize {
        let index = match self.legs.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.legs.push(None);
                self.legs.len() - 1
            }
        };
        self.by_id.insert(leg.id.clone(), index);
        self.legs[index] = Some(leg);
        index
    }

    fn leg_index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn end_leg(&mut self, index: usize, cause: EndCause) {
        let Some(leg) = self.legs.get_mut(index).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&leg.id);
        if let Some(d) = &leg.dialog {
            self.by_dialog
                .remove(&(d.call_id.clone(), d.local_tag.clone()));
        }
        self.by_server_tx.retain(|_, i| *i != index);
        self.by_client_tx.retain(
            |_, p| !matches!(p, ClientPurpose::Invite(i) | ClientPurpose::Bye(i) if *i == index),
        );
        tracing::info!(call = %leg.id, ?cause, "call leg ended");
        self.events
            .push_back(LegEvent::Ended { leg: leg.id, cause });
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

    /// The stream transport to `destination` failed: what was waiting on it fails now.
    pub fn handle_transport_error(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        transport: Transport,
    ) {
        self.layer.handle_transport_error(destination, transport);
        self.drain_layer(now);
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

    /// End a leg from our side, whatever its state: BYE, CANCEL or a final rejection.
    pub fn hangup(&mut self, now: Instant, id: &str) {
        if let Some(index) = self.leg_index(id) {
            self.hangup_index(now, index);
        }
    }

    fn hangup_index(&mut self, now: Instant, index: usize) {
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

    fn on_cancelled(&mut self, now: Instant, invite: ServerTxId) {
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

    fn on_ack(&mut self, now: Instant, request: Request, source: SocketAddr) {
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

    fn on_in_dialog_request(
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
    pub fn dial(
        &mut self,
        now: Instant,
        id: &str,
        target: &str,
        from_number: &str,
        local: LocalMedia,
    ) -> Result<(), DialError> {
        let trunks = self.trunks_for(target)?;
        // Healthy trunks first, configured order within each group.
        let mut ordered = trunks.clone();
        ordered.sort_by_key(|&i| !self.trunks[i].up);
        let codecs = self.trunk_codecs(ordered[0]);
        let offer = sdp::offer(&codecs, &local, Direction::SendRecv);
        let index = self.insert_leg(Leg {
            id: id.to_string(),
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
    fn try_next_trunk(&mut self, now: Instant, index: usize) -> bool {
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

    fn on_response(&mut self, now: Instant, tx: ClientTxId, response: Response) {
        let Some(&purpose) = self.by_client_tx.get(&tx) else {
            return;
        };
        if response.status >= 200 {
            self.by_client_tx.remove(&tx);
        }
        match purpose {
            ClientPurpose::Invite(index) => self.on_invite_response(now, tx, index, response),
            ClientPurpose::Bye(index) => {
                if response.status >= 200 {
                    self.end_leg(index, EndCause::Local);
                }
            }
            ClientPurpose::Keepalive(trunk) => {
                if response.status >= 200 {
                    // Any final answer proves the trunk alive (many answer OPTIONS 404/405).
                    self.trunk_alive(trunk, response.status != 503);
                }
            }
            ClientPurpose::Register(trunk) => self.on_register_response(now, trunk, response),
        }
    }

    fn on_invite_response(
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

    /// A request of ours got no final response: it timed out (408) or its transport failed
    /// (503). An INVITE goes on to the next trunk, if one is left.
    fn on_client_failure(&mut self, now: Instant, tx: ClientTxId, status: u16) {
        let Some(purpose) = self.by_client_tx.remove(&tx) else {
            return;
        };
        match purpose {
            ClientPurpose::Invite(index) => {
                let cancelling = self.legs[index]
                    .as_ref()
                    .is_some_and(|l| matches!(l.state, LegState::Cancelling));
                if cancelling || !self.try_next_trunk(now, index) {
                    self.end_leg(
                        index,
                        if cancelling {
                            EndCause::Cancelled
                        } else {
                            EndCause::Failed(status)
                        },
                    );
                }
            }
            ClientPurpose::Bye(index) => self.end_leg(index, EndCause::Timeout),
            ClientPurpose::Keepalive(trunk) => self.trunk_alive(trunk, false),
            ClientPurpose::Register(trunk) => {
                self.trunks[trunk].registration = Registration::Due(now + Duration::from_secs(30));
            }
        }
    }

    fn trunk_alive(&mut self, index: usize, alive: bool) {
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

    fn send_keepalive(&mut self, now: Instant, index: usize) {
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
        let (proxy, destination, transport) = trunk.proxy.clone()?;
        let user = trunk
            .config
            .username
            .clone()
            .unwrap_or_else(|| "callgate".into());
        let expires = trunk.config.register_expires;
        let mut registrar = proxy.clone();
        registrar.user = None;
        registrar.params.clear();
        let aor = format!("<sip:{}@{}>", user, proxy.host);
        let call_id = format!(
            "reg-{}-{}@{}",
            trunk.config.name, index, self.settings.contact_host
        );
        let mut headers = Headers::new();
        let tag = self.layer.ids().token();
        headers.push("From", format!("{aor};tag={tag}"));
        headers.push("To", aor);
        headers.push("Call-ID", call_id);
        // CSeq must grow within one registration Call-ID (RFC 3261 §10.2).
        let seq =
            (self.unix_secs % 1_000_000_000) as u32 + self.layer.ids().next_u64() as u32 % 1000;
        headers.push("CSeq", format!("{seq} REGISTER"));
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
        Some((
            Request {
                method: Method::Register,
                uri: registrar,
                headers,
                body: Vec::new(),
            },
            destination,
            transport,
        ))
    }

    fn send_register(
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
            let trunk = &self.trunks[index].config;
            let (Some(username), Some(password)) = (trunk.username.clone(), trunk.password.clone())
            else {
                return;
            };
            let cnonce = self.layer.ids().token();
            let mut previous = previous.clone();
            previous.headers.remove("Via");
            match authorized_retry(&previous, challenge, &username, &password, &cnonce) {
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

    fn on_register_response(&mut self, now: Instant, index: usize, response: Response) {
        if response.status < 200 {
            return;
        }
        let name = self.trunks[index].config.name.clone();
        if (200..300).contains(&response.status) {
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
                .unwrap_or(u64::from(self.trunks[index].config.register_expires));
            // Refresh well before expiry (RFC 3261 §10.2.4), at least a little ahead.
            let refresh = (granted * 8 / 10).max(5);
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

    /// Send an RFC 2833/4733-independent DTMF fallback is not needed: media does RFC 4733.
    pub fn audio(&self, id: &str) -> Option<&AudioSession> {
        self.leg_index(id)
            .and_then(|i| self.legs[i].as_ref())
            .and_then(|l| l.audio.as_ref())
    }
}

fn leg_transport(leg: &Option<Leg>) -> Transport {
    leg.as_ref().map(|l| l.transport).unwrap_or(Transport::Udp)
}

/// The same request again with credentials for the challenge in `response` and the next CSeq.
fn authorized_retry(
    previous: &Request,
    response: &Response,
    username: &str,
    password: &str,
    cnonce: &str,
) -> Option<Request> {
    let (header, challenge_value) = if response.status == 407 {
        (
            "Proxy-Authorization",
            response
                .headers
                .all("Proxy-Authenticate")
                .collect::<Vec<_>>(),
        )
    } else {
        (
            "Authorization",
            response.headers.all("WWW-Authenticate").collect::<Vec<_>>(),
        )
    };
    // Prefer the strongest algorithm offered (RFC 7616 §3.7 / RFC 8760).
    let mut challenges: Vec<Challenge> = challenge_value
        .iter()
        .filter_map(|v| Challenge::parse(v).ok())
        .collect();
    challenges.sort_by_key(|c| match c.algorithm {
        digest::Algorithm::Sha256 | digest::Algorithm::Sha256Sess => 0,
        _ => 1,
    });
    let challenge = challenges.first()?;
    let mut request = previous.clone();
    request.headers.remove("Via");
    request.headers.remove("Authorization");
    request.headers.remove("Proxy-Authorization");
    let seq = request.headers.cseq()?.seq.wrapping_add(1);
    request
        .headers
        .set("CSeq", format!("{} {}", seq, request.method));
    let auth = digest::respond(
        challenge,
        request.method.as_str(),
        &request.uri.to_string(),
        username,
        password,
        cnonce,
        1,
        &request.body,
    );
    request.headers.push(header, auth.to_string());
    Some(request)
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

#[allow(dead_code)]
fn name_addr_number(name: &NameAddr) -> String {
    e164_or_user(&name.uri)
}
