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

/// Build a response to `request` as §8.2.6 says: Via, From, To, Call-ID and CSeq copied; and
/// on a response that may establish a dialog (1xx above 100 and 2xx to INVITE), every
/// Record-Route as §12.1.1 says, so that the caller's requests in the dialog take the path the
/// proxies asked for (Kamailio in front of a cluster).
pub fn response_to(request: &Request, status: u16, reason: Option<&str>) -> Response {
    let mut headers = Headers::new();
    for via in request.headers.all("Via") {
        headers.push("Via", via);
    }
    if request.method.as_str() == "INVITE" && (101..300).contains(&status) {
        for route in request.headers.all("Record-Route") {
            headers.push("Record-Route", route);
        }
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

mod client;
mod server;
#[cfg(test)]
mod tests;
