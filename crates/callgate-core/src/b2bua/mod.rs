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

mod in_dialog;
mod inbound;
mod location;
mod outbound;
mod trunk;

pub use inbound::reject_status;

/// Methods we answer; anything else gets 405 with this list (§8.2.1).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// How long a nonce we issued in a 401 stays good, in seconds.
const NONCE_MAX_AGE_SECS: u64 = 300;
/// Nonces whose highest nonce-count we remember (only nonces that authenticated someone get
/// an entry, so strangers cannot fill it; past this, entries older than a nonce's life go).
const NONCE_COUNTS_MAX: usize = 100_000;
/// Unanswered OPTIONS in a row that mark a trunk down.
const KEEPALIVE_FAILURES_DOWN: u32 = 3;

pub use crate::ids::LegId;

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
    /// A DID's registration at the cluster's registrar (index into `locations`).
    Location(usize),
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
    /// Signed-in agents' DIDs registered at the cluster's registrar.
    locations: Vec<Option<location::Location>>,
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
            locations: Vec::new(),
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
            .chain(self.location_deadlines())
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
        self.refresh_locations(now);
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
            ClientPurpose::Location(index) => self.on_location_response(now, tx, index, response),
        }
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
            ClientPurpose::Location(index) => self.on_location_timeout(now, tx, index),
        }
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

#[allow(dead_code)]
fn name_addr_number(name: &NameAddr) -> String {
    e164_or_user(&name.uri)
}

fn e164_or_user(uri: &Uri) -> String {
    uri.user_unescaped().unwrap_or_default()
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
