//! The SIP transaction layer (RFC 3261 §17, with RFC 6026's Accepted states): matching
//! requests and responses to transactions, retransmissions over UDP, timers A–M as data, and
//! stateless answers to unparsable requests. Sans-IO: the shell feeds datagrams/messages and
//! the time, and drains `Transmit`s, `TransactionEvent`s and the next deadline. It never owns
//! a socket, reads the clock or draws randomness of its own (ids come from a generator the
//! shell seeds from the operating system), and knows nothing of dialogs, calls or SDP.
//!
//! It is also the first line against strangers: every packet passes the `FloodGuard`, a
//! response counts only from where its request went, live transactions are capped, and a
//! source that is neither a trunk nor authenticated gets no 100 Trying and no retransmitted
//! final response (one answer per request, so a spoofed Via cannot make us amplify).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::guard::{DropReason, FloodGuard, GuardSettings};
use super::message::{Headers, Message, Method, ParseError, Request, Response, Via};

/// Which transport a message came over or must leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS (RFC 3261 §26.2.1): a TCP connection with TLS, framed as TCP is.
    Tls,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The transport a URI asks for: its `transport` parameter, TLS for `sips:` (RFC 3261
    /// §19.1), else UDP.
    pub fn of_uri(uri: &super::uri::Uri) -> Transport {
        match uri.param("transport") {
            Some(Some(t)) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
            Some(Some(t)) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
            _ if uri.scheme == super::uri::Scheme::Sips => Transport::Tls,
            _ => Transport::Udp,
        }
    }

    /// The port a URI without one means over this transport (RFC 3263 §4.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }

    /// The `transport` URI parameter this transport is named by in a Contact (none for UDP).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }
}

/// Timer C: more than three minutes (§16.6).
const TIMER_C: Duration = Duration::from_secs(181);

/// Bytes the shell must send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub transport: Transport,
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(pub u64);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(pub u64);

/// What the transaction user (the b2bua) is told.
#[derive(Debug, Clone)]
pub enum TransactionEvent {
    /// A new request formed a server transaction; answer it with `respond`.
    Request {
        tx: ServerTxId,
        request: Request,
        source: SocketAddr,
        transport: Transport,
    },
    /// CANCEL matched a pending INVITE; the CANCEL got its 200 already, the INVITE still
    /// needs its 487 from the transaction user.
    Cancelled { invite: ServerTxId },
    /// ACK for a 2xx we sent (it travels outside the INVITE transaction).
    Ack {
        request: Request,
        source: SocketAddr,
    },
    /// A response to a request we sent (provisional or final). 2xx retransmissions for an
    /// INVITE that was already answered are absorbed here and re-ACKed.
    Response { tx: ClientTxId, response: Response },
    /// Timer B or F fired: treat as 408.
    Timeout { tx: ClientTxId },
    /// The connection the request was to go over could not be made or broke before a final
    /// response: treat as 503 (RFC 3261 §8.1.3.1).
    TransportError { tx: ClientTxId },
    /// A 2xx to an INVITE was never acknowledged (64*T1): the dialog must be torn down.
    AckTimeout { tx: ServerTxId },
}

/// RFC 3261 timers, by their RFC names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// INVITE request retransmit (client, UDP).
    A,
    /// INVITE transaction timeout (client), while Calling.
    B,
    /// §16.6's proxy timer, used by the INVITE client once Proceeding: a call that rings
    /// longer than this is given up (408 to the transaction user).
    C,
    /// Wait for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, UDP).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, UDP).
    G,
    /// Wait for ACK receipt (server INVITE, Completed).
    H,
    /// Wait for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait for non-INVITE request retransmits (server).
    J,
    /// Wait for response retransmits (client non-INVITE).
    K,
    /// RFC 6026: server INVITE Accepted lifetime (absorbs INVITE retransmissions).
    L,
    /// RFC 6026: client INVITE Accepted lifetime (absorbs 2xx retransmissions).
    M,
    /// §13.3.1.4: the UAS retransmits its 2xx until the ACK arrives.
    Retransmit2xx,
}

#[derive(Debug, Clone, Copy)]
pub struct TimerValues {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Branches, tags and Call-IDs. They travel to anyone who sends us a request, and an
/// off-path attacker who could predict the next ones could answer or end calls, so they come
/// from a cryptographic generator (ChaCha) that the shell seeds with 32 bytes from the
/// operating system; tests seed it with constants and stay reproducible.
#[derive(Debug, Clone)]
pub struct IdSource {
    rng: StdRng,
}

impl IdSource {
    pub fn new(seed: [u8; 32]) -> Self {
        IdSource {
            rng: StdRng::from_seed(seed),
        }
    }
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
    pub fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token())
    }
}

/// The transport address this layer writes into Via headers.
#[derive(Debug, Clone)]
pub struct LocalAddress {
    pub host: String,
    pub port: u16,
    /// The SIP over TLS listener's port, when there is one: a Via sent over TLS names it, so
    /// a response that cannot use the connection comes back where TLS is spoken
    /// (RFC 3261 §18.2.2).
    pub tls_port: Option<u16>,
}

impl LocalAddress {
    /// The port a Via names for `transport`.
    pub fn port_for(&self, transport: Transport) -> u16 {
        match (transport, self.tls_port) {
            (Transport::Tls, Some(port)) => port,
            _ => self.port,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    /// ACK folds into INVITE; CANCEL keeps its own transaction.
    method: Method,
}

#[derive(Debug)]
enum ServerState {
    InviteProceeding,
    InviteCompleted { interval: Duration },
    InviteConfirmed,
    InviteAccepted { interval: Duration },
    Trying,
    Proceeding,
    Completed,
}

#[derive(Debug)]
struct ServerTransaction {
    key: ServerKey,
    request: Request,
    transport: Transport,
    /// Where the request came from: a CANCEL or ACK for it must come from the same host.
    source: SocketAddr,
    /// A trunk's or an authenticated source's: 100 Trying and retransmitted responses.
    /// Anyone else gets one response per request and leaves no state behind it.
    trusted: bool,
    response_destination: SocketAddr,
    state: ServerState,
    last_response: Option<Vec<u8>>,
    timers: Vec<(Timer, Instant)>,
    /// (Call-ID, CSeq) under which an accepted INVITE waits for its ACK.
    accepted_key: Option<(String, u32)>,
}

#[derive(Debug)]
enum ClientState {
    Calling { interval: Duration },
    InviteProceeding,
    InviteCompleted,
    InviteAccepted,
    Trying { interval: Duration },
    Proceeding { interval: Duration },
    Completed,
}

#[derive(Debug)]
struct ClientTransaction {
    branch: String,
    request: Request,
    bytes: Vec<u8>,
    transport: Transport,
    destination: SocketAddr,
    state: ClientState,
    timers: Vec<(Timer, Instant)>,
    /// CANCEL asked for before any provisional response: §9.1 says wait for one.
    cancel_pending: bool,
    ack: Option<Vec<u8>>,
}

/// An ACK we sent for a 2xx, kept so a retransmitted 2xx gets the same ACK again.
#[derive(Debug)]
struct SentAck {
    bytes: Vec<u8>,
    transport: Transport,
    destination: SocketAddr,
    until: Instant,
}

/// Caps on live state.
#[derive(Debug, Clone, Copy)]
pub struct TransactionLimits {
    /// Server transactions at most; new requests past it are dropped (trunks' INVITEs get a
    /// stateless 503 first).
    pub max_server: usize,
    /// Server transactions one untrusted source may hold at once.
    pub max_per_source: usize,
}

impl Default for TransactionLimits {
    fn default() -> Self {
        TransactionLimits {
            max_server: 100_000,
            max_per_source: 32,
        }
    }
}

/// Something with a deadline: the heap holds these, and a stale one (its transaction gone or
/// its timer cancelled) wakes the layer for nothing, which is cheaper than finding it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Server(ServerTxId),
    Client(ClientTxId),
    Ack((String, u32)),
}

pub struct TransactionLayer {
    local: LocalAddress,
    timers: TimerValues,
    ids: IdSource,
    next_id: u64,
    guard: FloodGuard,
    limits: TransactionLimits,
    /// Overload control, set by the shell from how long SIP waits in its socket: new INVITEs
    /// past `call_rate` (a token bucket), or all of them while `shed_all`, get a stateless 503.
    call_rate: Option<f64>,
    call_tokens: f64,
    call_tokens_at: Option<Instant>,
    shed_all: bool,
    shed_calls: u64,
    admitted_calls: u64,
    /// Live server transactions per untrusted source host.
    per_source: HashMap<IpAddr, usize>,
    wakeups: BinaryHeap<Reverse<(Instant, Wake)>>,
    servers: HashMap<ServerTxId, ServerTransaction>,
    server_index: HashMap<ServerKey, ServerTxId>,
    /// (Call-ID, CSeq number) of INVITEs answered 2xx, for matching their ACKs.
    accepted: HashMap<(String, u32), ServerTxId>,
    clients: HashMap<ClientTxId, ClientTransaction>,
    client_index: HashMap<(String, Method), ClientTxId>,
    sent_acks: HashMap<(String, u32), SentAck>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TransactionEvent>,
    user_agent: String,
}

/// Build a response to `request` as §8.2.6 says: Via, From, To, Call-ID and CSeq copied.
pub fn response_to(request: &Request, status: u16, reason: Option<&str>) -> Response {
    let mut headers = Headers::new();
    for via in request.headers.all("Via") {
        headers.push("Via", via);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(value) = request.headers.get(name) {
            headers.push(name, value);
        }
    }
    Response {
        status,
        reason: reason
            .map(str::to_string)
            .unwrap_or_else(|| Response::reason_for(status).to_string()),
        headers,
        body: Vec::new(),
    }
}

/// Adds our tag to the To header of a response unless it has one.
pub fn set_to_tag(response: &mut Response, tag: &str) {
    if let Some(mut to) = response.headers.to() {
        if to.tag().is_none() {
            to.set_param("tag", Some(tag));
            response.headers.set("To", to.to_string());
        }
    }
}

impl TransactionLayer {
    pub fn new(
        local: LocalAddress,
        timers: TimerValues,
        seed: [u8; 32],
        user_agent: String,
    ) -> Self {
        TransactionLayer {
            local,
            timers,
            ids: IdSource::new(seed),
            next_id: 1,
            guard: FloodGuard::new(GuardSettings::default()),
            limits: TransactionLimits::default(),
            call_rate: None,
            call_tokens: 0.0,
            call_tokens_at: None,
            shed_all: false,
            shed_calls: 0,
            admitted_calls: 0,
            per_source: HashMap::new(),
            wakeups: BinaryHeap::new(),
            servers: HashMap::new(),
            server_index: HashMap::new(),
            accepted: HashMap::new(),
            clients: HashMap::new(),
            client_index: HashMap::new(),
            sent_acks: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            user_agent,
        }
    }

    pub fn ids(&mut self) -> &mut IdSource {
        &mut self.ids
    }

    /// Replace the guard's settings and the caps (at start, from config).
    pub fn protect(&mut self, guard: GuardSettings, limits: TransactionLimits) {
        self.guard = FloodGuard::new(guard);
        self.limits = limits;
    }

    /// Overload control: new calls a second at most (`None`: no limit), and whether to shed
    /// every new call now. A shed INVITE is answered 503 at once and forgotten.
    pub fn set_admission(&mut self, rate: Option<f64>, shed_all: bool) {
        if rate.is_some() && self.call_rate.is_none() {
            // One call may pass at once: a trunk's lone call that arrives as a limit starts
            // (brought on by others' load) is not refused for want of an accrual time.
            self.call_tokens = 1.0;
            self.call_tokens_at = None;
        }
        self.call_rate = rate;
        self.shed_all = shed_all;
    }

    /// New calls refused with 503 for overload since start.
    pub fn shed_calls(&self) -> u64 {
        self.shed_calls
    }

    /// New calls let through to the transaction user since start.
    pub fn admitted_calls(&self) -> u64 {
        self.admitted_calls
    }

    /// May one more new call in now? Tokens accrue at the admitted rate, a tenth of a second's
    /// worth at most, so a limit never lets a burst through.
    fn admit_call(&mut self, now: Instant) -> bool {
        if self.shed_all {
            return false;
        }
        let Some(rate) = self.call_rate else {
            return true;
        };
        let since = self
            .call_tokens_at
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .unwrap_or(0.0);
        self.call_tokens_at = Some(now);
        self.call_tokens = (self.call_tokens + since * rate).min((rate / 10.0).max(1.0));
        if self.call_tokens >= 1.0 {
            self.call_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn guard(&self) -> &FloodGuard {
        &self.guard
    }

    pub fn guard_mut(&mut self) -> &mut FloodGuard {
        &mut self.guard
    }

    /// The request of server transaction `id` came from a source that has now proved itself
    /// (digest): it gets 100 Trying and retransmissions like a trunk from here on.
    pub fn trust(&mut self, id: ServerTxId) {
        let Some(tx) = self.servers.get_mut(&id) else {
            return;
        };
        if tx.trusted {
            return;
        }
        tx.trusted = true;
        let ip = tx.source.ip();
        let untracked = self.per_source.get_mut(&ip).map(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        if untracked == Some(true) {
            self.per_source.remove(&ip);
        }
        if matches!(tx.state, ServerState::InviteProceeding) && tx.last_response.is_none() {
            let mut trying = response_to(&tx.request, 100, None);
            trying.headers.push("Server", self.user_agent.clone());
            let bytes = Message::Response(trying).to_bytes();
            tx.last_response = Some(bytes.clone());
            let (transport, destination) = (tx.transport, tx.response_destination);
            self.send(transport, destination, bytes);
        }
    }

    pub fn local(&self) -> &LocalAddress {
        &self.local
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wakeups.peek().map(|Reverse((at, _))| *at)
    }

    fn arm_server(&mut self, id: ServerTxId, timer: Timer, at: Instant) {
        if let Some(tx) = self.servers.get_mut(&id) {
            tx.timers.push((timer, at));
            self.wakeups.push(Reverse((at, Wake::Server(id))));
        }
    }

    pub fn live_transactions(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    fn allocate(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn send(&mut self, transport: Transport, destination: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit {
            transport,
            destination,
            bytes,
        });
    }

    /// A UDP datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        if bytes
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            return; // RFC 5626 keepalive or padding
        }
        // Before parsing: a flooding or banned source costs one lookup.
        if self.guard.admit_packet(now, source.ip()).is_err() {
            return;
        }
        match Message::parse_datagram(bytes) {
            Ok(message) => self.handle_message(now, source, Transport::Udp, message),
            Err(error) => self.handle_parse_error(source, Transport::Udp, error),
        }
    }

    /// An unparsable message: answer a request we can address, drop the rest (§16.3, §18.1.2).
    pub fn handle_parse_error(
        &mut self,
        source: SocketAddr,
        transport: Transport,
        error: ParseError,
    ) {
        let ParseError::Invalid { problem, request } = error else {
            return;
        };
        let Some(mut request) = request.map(|r| *r) else {
            tracing::debug!(%source, %problem, "dropping unparsable SIP message");
            return;
        };
        if request.method == Method::Ack {
            return; // never answer an ACK
        }
        let answerable = ["Via", "From", "To", "Call-ID", "CSeq"]
            .iter()
            .all(|h| request.headers.get(h).is_some())
            && request.headers.top_via().is_some();
        if !answerable {
            tracing::debug!(%source, %problem, "dropping unanswerable SIP request");
            return;
        }
        let destination = self.stamp_received(&mut request, source, transport);
        tracing::info!(%source, %problem, method = %request.method, "malformed SIP request");
        let mut response = response_to(&request, problem.status(), Some(&problem.to_string()));
        response.headers.push("Server", self.user_agent.clone());
        let bytes = Message::Response(response).to_bytes();
        self.send(transport, destination, bytes);
    }

    /// A framed message (from UDP or a TCP stream).
    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        message: Message,
    ) {
        if transport.is_reliable() && self.guard.admit_packet(now, source.ip()).is_err() {
            return;
        }
        match message {
            Message::Request(request) => self.handle_request(now, source, transport, request),
            Message::Response(response) => self.handle_response(now, source, transport, response),
        }
    }

    /// RFC 3261 §18.2.1 and RFC 3581: note where the request really came from, and work
    /// out where its responses must go.
    fn stamp_received(
        &self,
        request: &mut Request,
        source: SocketAddr,
        transport: Transport,
    ) -> SocketAddr {
        let Some(mut via) = request.headers.top_via() else {
            return source;
        };
        let source_ip = source.ip().to_string();
        if via.host != source_ip {
            via.set_param("received", Some(&source_ip));
        }
        let wants_rport = via.rport().is_some();
        if wants_rport {
            via.set_param("rport", Some(&source.port().to_string()));
            if via.received().is_none() {
                via.set_param("received", Some(&source_ip));
            }
        }
        let destination = if transport.is_reliable() || wants_rport {
            source
        } else {
            SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
        };
        request.headers.remove_first("Via");
        request.headers.push_front("Via", via.to_string());
        destination
    }

    fn server_key(request: &Request) -> Option<ServerKey> {
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

    fn handle_request(
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

    fn retransmitted_request(&mut self, now: Instant, id: ServerTxId, request: &Request) {
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
    fn room_for(&mut self, ip: IpAddr, trusted: bool) -> bool {
        let full = self.servers.len() >= self.limits.max_server
            || (!trusted
                && self.per_source.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_source);
        if full {
            self.guard.count(DropReason::TransactionLimit);
        }
        !full
    }

    fn insert_server(&mut self, id: ServerTxId, tx: ServerTransaction) {
        if !tx.trusted {
            *self.per_source.entry(tx.source.ip()).or_default() += 1;
        }
        self.server_index.insert(tx.key.clone(), id);
        self.servers.insert(id, tx);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_cancel(
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

    fn remove_server(&mut self, id: ServerTxId) {
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

    fn start_client(
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

    fn send_cancel(&mut self, now: Instant, invite: ClientTxId) {
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
    fn handle_response(
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

    fn client_response(&mut self, now: Instant, id: ClientTxId, response: Response) {
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

    fn remove_client(&mut self, id: ClientTxId) {
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

    /// Run every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Only what is due is looked at: the heap's head, never every transaction.
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, wake))) = self.wakeups.pop() else {
                break;
            };
            match wake {
                Wake::Server(id) => {
                    let due = self
                        .servers
                        .get(&id)
                        .map(|tx| due_timers(&tx.timers, now))
                        .unwrap_or_default();
                    for timer in due {
                        self.fire_server(now, id, timer);
                    }
                }
                Wake::Client(id) => {
                    let due = self
                        .clients
                        .get(&id)
                        .map(|tx| due_timers(&tx.timers, now))
                        .unwrap_or_default();
                    for timer in due {
                        self.fire_client(now, id, timer);
                    }
                }
                Wake::Ack(key) => {
                    if self.sent_acks.get(&key).is_some_and(|a| a.until <= now) {
                        self.sent_acks.remove(&key);
                    }
                }
            }
        }
    }

    fn fire_server(&mut self, now: Instant, id: ServerTxId, timer: Timer) {
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

    fn fire_client(&mut self, now: Instant, id: ClientTxId, timer: Timer) {
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

/// The timers of a transaction that are due at `now`, in the order they were armed.
fn due_timers(timers: &[(Timer, Instant)], now: Instant) -> Vec<Timer> {
    timers
        .iter()
        .filter(|(_, at)| *at <= now)
        .map(|(t, _)| *t)
        .collect()
}

/// §17.1.1.3: the ACK for a non-2xx final response, inside the INVITE transaction.
fn ack_for_failure(invite: &Request, response: &Response) -> Vec<u8> {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.get("Via") {
        headers.push("Via", via);
    }
    for value in invite.headers.all("Route") {
        headers.push("Route", value);
    }
    for name in ["From", "Call-ID"] {
        if let Some(value) = invite.headers.get(name) {
            headers.push(name, value);
        }
    }
    if let Some(to) = response.headers.get("To") {
        headers.push("To", to);
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push("CSeq", format!("{seq} ACK"));
    headers.push("Max-Forwards", "70");
    Message::Request(Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    })
    .to_bytes()
}

/// Sent-by of a Via, for logs.
pub fn via_sent_by(via: &Via) -> String {
    format!("{}:{}", via.host, via.port.unwrap_or(5060))
}

#[cfg(test)]
mod tests;
