//! Wiring: binds the listeners, runs the one signalling task that owns the b2bua and the
//! controller outright, spawns a media task per call, and carries commands between them over
//! bounded channels. No call logic lives here, only moving data between the world and cores.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::b2bua::{B2bua, B2buaSettings, EndCause, LegEvent};
use crate::config::{Cidr, Config};
use crate::conn::{ConnectionCaps, LimitedTcp, Timeouts};
use crate::controller::{
    AgentId, AgentRequest, Call, Command, ConnId, Controller, Event, MediaPlan, Notice,
    RequestError, TransferTarget,
};
use crate::media::bridge::{AgentLink, JoinedLeg};
use crate::media::call::{
    CallMedia, MediaCommand, MediaEvent, MediaSockets, Source, COMMAND_CAPACITY,
};
use crate::media::monitor::{MonitorChange, MonitorMode};
use crate::media::ports::PortPool;
use crate::media::recording::{RecordWant, RecordingFormat, RecordingWriter};
use crate::media::stats::MediaCounters;
use crate::sdp::LocalMedia;
use crate::sip::message::{Message, ParseError, MAX_MESSAGE_SIZE};
use crate::sip::transaction::{
    LocalAddress, TimerValues, TransactionLayer, TransactionLimits, Transmit, Transport,
};
use crate::store::{CallRecord, StoreOp};
use crate::webrtc::{
    PeerCodec, Route, WebrtcCounters, WebrtcEvent, WebrtcHost, WebrtcInput, AGENT_AUDIO_CAPACITY,
};

/// Inbound SIP from TCP connections to the signalling task. When full, connection readers
/// wait (TCP back-pressure), which is the right thing for a stream.
const TCP_INPUT_CAPACITY: usize = 1024;
/// Per-connection outgoing queue; when full the message is dropped and logged (the peer is
/// not reading; SIP retransmission or the transaction timeout takes over).
const TCP_WRITE_CAPACITY: usize = 256;
/// Media events (announcement finished, DTMF): media tasks `try_send` and never wait.
const MEDIA_EVENT_CAPACITY: usize = 4096;
/// Operator requests from the HTTP API.
const ADMIN_CAPACITY: usize = 64;
/// Agent connections' requests to the signalling task; a full queue makes the WebSocket task
/// wait (back-pressure on that one agent).
const AGENT_INPUT_CAPACITY: usize = 1024;
/// Notices queued toward one agent's WebSocket; when full the agent is too slow to follow its
/// calls and the connection is closed (it gets a fresh snapshot when it reconnects).
pub const AGENT_OUTBOUND_CAPACITY: usize = 256;
/// Peer connection events toward the signalling task.
const WEBRTC_EVENT_CAPACITY: usize = 256;
/// SIP datagrams read in one turn of the signalling loop before its other inputs are served.
const SIP_UDP_BATCH: usize = 64;
/// How long a clean shutdown waits for BYEs to be answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load {path}: {reason}")]
    Asset { path: PathBuf, reason: String },
}

enum TcpInput {
    /// A connection is up (accepted, or ours): TCP, or TCP with TLS.
    Connected(SocketAddr, mpsc::Sender<Vec<u8>>, Transport),
    // Boxed: a parsed message is large and most inputs are small.
    Message(SocketAddr, Box<Message>),
    Invalid(SocketAddr, Box<ParseError>),
    Closed(SocketAddr),
}

/// Operator requests, answered on a oneshot.
pub enum AdminRequest {
    Dial {
        to: String,
        plan: MediaPlan,
        reply: oneshot::Sender<Result<String, String>>,
    },
    Hangup {
        call: String,
        reply: oneshot::Sender<bool>,
    },
    Calls {
        reply: oneshot::Sender<Vec<LiveCall>>,
    },
    /// Every agent with its connection and calls right now.
    Agents {
        reply: oneshot::Sender<Vec<AgentView>>,
    },
    Dtmf {
        call: String,
        digits: String,
        reply: oneshot::Sender<bool>,
    },
}

/// An agent as `GET /v1/agents` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub name: String,
    pub role: crate::config::Role,
    pub connected: bool,
    pub active_call: Option<String>,
    pub held_calls: Vec<String>,
    pub waiting_calls: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveCall {
    pub call_id: String,
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    pub status: &'static str,
    /// Digits the far end sent.
    pub dtmf: String,
}

/// From an agent's WebSocket to the signalling task.
#[derive(Debug)]
pub enum AgentInput {
    /// Authenticated; the reply is the agent's snapshot. A connection already open for this
    /// agent is closed (4409) and this one inherits its calls.
    Connect {
        agent: AgentId,
        conn: ConnId,
        codec: Arc<PeerCodec>,
        outbound: mpsc::Sender<AgentOutbound>,
        reply: oneshot::Sender<Vec<Call>>,
    },
    Disconnect {
        agent: AgentId,
        conn: ConnId,
    },
    Request {
        agent: AgentId,
        request: AgentCall,
        reply: oneshot::Sender<Result<String, AgentError>>,
    },
    Snapshot {
        agent: AgentId,
        reply: oneshot::Sender<Vec<Call>>,
    },
    /// The prospect's call log was saved: its prompt is closed.
    LogSaved {
        agent: AgentId,
        prospect: String,
    },
}

/// An agent's call request before the signalling task gives a new call its id.
#[derive(Debug, Clone)]
pub enum AgentCall {
    Answer {
        call: String,
    },
    Decline {
        call: String,
    },
    Hangup {
        call: String,
    },
    Dial {
        to: String,
        /// Who is called, from `call.dial` or the directory.
        prospect: crate::controller::Prospect,
    },
    Dtmf {
        call: String,
        digits: String,
    },
    Accept {
        call: String,
        hold_active: bool,
    },
    Hold {
        call: String,
    },
    Resume {
        call: String,
    },
    Record {
        call: String,
        action: crate::controller::RecordAction,
    },
    /// `mode` `None`: stop.
    Monitor {
        call: String,
        mode: Option<MonitorMode>,
    },
    /// `to` (`agent:<id>` or a number) for a blind transfer, `attended` for an attended one.
    Transfer {
        call: String,
        to: Option<String>,
        attended: Option<String>,
    },
}

/// An agent request's failure, with the agent protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    pub code: &'static str,
    pub message: String,
}

impl From<RequestError> for AgentError {
    fn from(e: RequestError) -> AgentError {
        AgentError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// From the signalling task to one agent's WebSocket.
#[derive(Debug, Clone)]
pub enum AgentOutbound {
    Notice(Notice),
    /// Close the WebSocket with this code.
    Close(u16),
}

/// Maps the monotonic clock of the cores to wall-clock time for the wire.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    pub fn at(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - self.instant.duration_since(t),
        }
    }
}

/// What the HTTP shell needs to reach the running gateway.
#[derive(Clone)]
pub struct AppHandle {
    pub admin: mpsc::Sender<AdminRequest>,
    pub agents: mpsc::Sender<AgentInput>,
    pub webrtc: mpsc::Sender<WebrtcInput>,
    pub config: Arc<Config>,
    pub counters: Arc<MediaCounters>,
    pub webrtc_counters: Arc<WebrtcCounters>,
    pub clock: WallClock,
    pub next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// The call log's writer (log edits go through it like every other write).
    /// Weak, so that at shutdown the writer finishes once the signalling task lets go of it
    /// (the HTTP server, which holds this, runs until the process exits).
    pub store: mpsc::WeakSender<StoreOp>,
    pub gateway_counters: Arc<crate::metrics::GatewayCounters>,
    /// The contacts directory and the CRM lookup.
    pub names: Arc<crate::names::Names>,
}

/// One agent's open WebSocket as the signalling task knows it.
struct AgentConnection {
    agent: AgentId,
    codec: Arc<PeerCodec>,
    outbound: mpsc::Sender<AgentOutbound>,
}

struct MediaHandle {
    commands: mpsc::Sender<MediaCommand>,
    port: u16,
    /// The trunk side's codec, as the other leg of a joined pair encodes for it.
    codec: Arc<PeerCodec>,
}

struct Signalling {
    b2bua: B2bua,
    controller: Controller,
    udp: Arc<UdpSocket>,
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// The connections among `tcp_writers` that are TLS.
    tls_connections: std::collections::HashSet<SocketAddr>,
    /// How to reach each TLS trunk's proxy: the name its certificate must carry and the
    /// CAs trusted for it.
    tls_trunks: HashMap<SocketAddr, TlsPeer>,
    tcp_input: mpsc::Sender<TcpInput>,
    media: HashMap<String, MediaHandle>,
    /// Sockets bound for a dialled call, waiting for its answer.
    pending_sockets: HashMap<String, MediaSockets>,
    ports: PortPool,
    config: Arc<Config>,
    media_events: mpsc::Sender<MediaEvent>,
    counters: Arc<MediaCounters>,
    audio_files: HashMap<PathBuf, Arc<Vec<i16>>>,
    pending_admin: HashMap<String, oneshot::Sender<Result<String, String>>>,
    webrtc: mpsc::Sender<WebrtcInput>,
    connections: HashMap<ConnId, AgentConnection>,
    store: mpsc::Sender<StoreOp>,
    /// What the call log last heard of each live call: its status, queue time and recording.
    stored: HashMap<String, StoredAs>,
    /// Commands ran since the call log was last brought up to date.
    store_stale: bool,
    clock: WallClock,
    gateway_counters: Arc<crate::metrics::GatewayCounters>,
    recordings: RecordingWriter,
    /// What waiting callers hear as early media (`media.waiting_audio`), loaded at start.
    waiting_audio: Option<Arc<Vec<i16>>>,
    names: Arc<crate::names::Names>,
    /// Inbound calls waiting for their caller's name (directory, CRM lookup) before the
    /// controller hears of them; each waits at most the lookup's timeout.
    naming: HashMap<String, Event>,
    named: mpsc::Sender<(String, crate::controller::Prospect)>,
}

/// Inbound calls at most waiting for their names at once; past it, calls go on at once
/// with the name they came with (a flood of INVITEs never becomes a flood of lookups).
const NAMING_CAPACITY: usize = 1024;

type StoredAs = (
    crate::controller::Status,
    Option<Instant>,
    crate::media::recording::RecordingState,
);

/// A new call id: time-ordered, unique enough for one gateway.
fn new_call_id() -> String {
    format!(
        "c_{:010x}{:010x}",
        unix_secs(),
        rand::random::<u64>() & 0xff_ffff_ffff
    )
}

/// 32 bytes from the operating system's generator: the seeds of everything an attacker must
/// not guess (SIP identifiers, digest nonces).
fn os_random() -> [u8; 32] {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Put the SIP TCP and HTTP listeners under their connection caps and deadlines, after
/// raising the open-file limit; caps that the limit cannot hold next to a full RTP range are
/// lowered (and said so), so a call never fails for want of a descriptor.
fn limit_listeners(
    config: &Config,
    tcp: TcpListener,
    http: TcpListener,
    sip_tls: Option<TcpListener>,
    counters: &Arc<crate::metrics::GatewayCounters>,
) -> (LimitedTcp, LimitedTcp, Option<LimitedTcp>) {
    let security = &config.security;
    let nofile = crate::conn::raise_nofile_limit().unwrap_or(1024);
    // Two descriptors a call for RTP/RTCP, and room for the database, logs and recordings.
    let rtp = u64::from(config.rtp.port_max - config.rtp.port_min) + 1;
    let budget = nofile.saturating_sub(rtp + 256).max(64) as usize;
    let (mut sip_cap, mut http_cap) = (
        security.max_sip_tcp_connections,
        security.max_http_connections,
    );
    if sip_cap + http_cap > budget {
        sip_cap = (budget / 2).max(16);
        http_cap = (budget - budget / 2).max(16);
        tracing::warn!(
            nofile,
            sip_cap,
            http_cap,
            "open-file limit too low for the configured connection caps; caps lowered"
        );
    }
    let timeouts = Timeouts {
        header: Duration::from_secs(security.header_timeout),
        idle: Some(Duration::from_secs(security.idle_timeout)),
    };
    // Trunks' networks and their proxies: never capped, never idled out.
    let trunks: Vec<Cidr> = config
        .trunks
        .iter()
        .flat_map(|t| {
            let proxy = t.proxy().map(|(_, addr, _)| Cidr::host(addr.ip()));
            t.inbound_from
                .iter()
                .filter_map(|s| Cidr::parse(s))
                .chain(proxy)
        })
        .collect();
    let sip_caps = ConnectionCaps::new(
        sip_cap,
        security.max_sip_tcp_per_source,
        trunks,
        Arc::clone(&counters.sip_tcp_connections),
        Arc::clone(&counters.connections_refused),
    );
    let http_caps = ConnectionCaps::new(
        http_cap,
        security.max_http_per_source,
        Vec::new(),
        Arc::clone(&counters.http_connections),
        Arc::clone(&counters.connections_refused),
    );
    // SIP over TLS shares the SIP TCP caps: one budget of SIP connections.
    let sip_tls = sip_tls.map(|l| LimitedTcp::new(l, Arc::clone(&sip_caps), timeouts, "SIP TLS"));
    (
        LimitedTcp::new(tcp, sip_caps, timeouts, "SIP TCP"),
        LimitedTcp::new(http, http_caps, timeouts, "HTTP"),
        sip_tls,
    )
}

/// ICE-TCP connections from browsers: an agent needs one (a few while it reconnects), so the
/// caps are per source as for HTTP; a connection idle past the idle timeout is closed, and
/// one that no peer recognises sooner (`webrtc::tcp::UNRECOGNISED_TIMEOUT`).
fn ice_tcp_listener(
    config: &Config,
    listener: TcpListener,
    counters: &Arc<crate::metrics::GatewayCounters>,
) -> LimitedTcp {
    let security = &config.security;
    let caps = ConnectionCaps::new(
        security.max_http_connections,
        security.max_http_per_source,
        Vec::new(),
        Arc::clone(&counters.ice_tcp_connections),
        Arc::clone(&counters.connections_refused),
    );
    let timeouts = Timeouts {
        header: Duration::from_secs(security.header_timeout),
        idle: Some(Duration::from_secs(security.idle_timeout)),
    };
    LimitedTcp::new(listener, caps, timeouts, "WebRTC TCP")
}

/// The error for a listener that could not bind, naming it and its address.
fn bind_failed(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> AppError {
    move |source| AppError::Bind { what, addr, source }
}

/// Start every listener and run until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // First, so that a SIGTERM during start-up stops the gateway cleanly rather than killing it.
    let mut terminate = signal_stream()?;
    let config = Arc::new(config);
    let sip_addr = config.sip.listen;
    let udp = UdpSocket::bind(sip_addr)
        .await
        .map_err(bind_failed("SIP UDP", sip_addr))?;
    let tcp = TcpListener::bind(sip_addr)
        .await
        .map_err(bind_failed("SIP TCP", sip_addr))?;
    let http = TcpListener::bind(config.http.listen)
        .await
        .map_err(bind_failed("HTTP", config.http.listen))?;
    let gateway_counters = Arc::new(crate::metrics::GatewayCounters::default());
    let sip_tls = match config.sip.tls_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(bind_failed("SIP TLS", addr))?,
        ),
        None => None,
    };
    let (tcp, http, sip_tls) = limit_listeners(&config, tcp, http, sip_tls, &gateway_counters);
    let webrtc_socket = UdpSocket::bind(config.webrtc.listen)
        .await
        .map_err(bind_failed("WebRTC UDP", config.webrtc.listen))?;
    let webrtc_counters = Arc::new(WebrtcCounters::default());
    let (webrtc_events_tx, mut webrtc_events) = mpsc::channel(WEBRTC_EVENT_CAPACITY);
    let (webrtc_tx, webrtc_rx) = mpsc::channel(crate::webrtc::INPUT_CAPACITY);
    let mut host = WebrtcHost::new(
        webrtc_socket,
        config.webrtc.public_ip,
        webrtc_events_tx,
        Arc::clone(&webrtc_counters),
    )?
    .with_downlink(config.webrtc.downlink_options());
    if let Some(addr) = config.webrtc.tcp_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(bind_failed("WebRTC TCP", addr))?;
        host = host.with_tcp(ice_tcp_listener(&config, listener, &gateway_counters))?;
    }
    tokio::spawn(host.run(webrtc_rx));
    let (agents_tx, mut agents_rx) = mpsc::channel(AGENT_INPUT_CAPACITY);
    // The call log: opened (and migrated) before anything listens, so a bad path stops the
    // start naming `store.database`; calls left live by a crash are closed as failed.
    let database = config.store.database.clone();
    let hooks = Arc::new(crate::webhooks::hooks(
        &config.webhooks,
        config.public_url(),
    ));
    let orphans = {
        let conn = crate::store::open(&database)?;
        // Their writer died with the last run: bring each header up to its data.
        for path in crate::store::orphan_recordings(&conn)? {
            match crate::media::recorder::repair(&path) {
                Ok(true) => tracing::warn!(path = %path.display(), "recording header repaired"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "recording could not be repaired"),
            }
        }
        crate::store::end_orphans(&conn, &hooks, crate::store::millis(SystemTime::now()))?
    };
    if orphans > 0 {
        tracing::warn!(
            calls = orphans,
            "calls left live by the last run marked ended (failed)"
        );
    }
    let recordings = RecordingWriter::start(RecordingFormat {
        directory: config.recording.directory.clone(),
        stereo: config.recording.stereo(),
        sample_rate: config.recording.sample_rate,
    })?;
    let (store_tx, store_rx) = mpsc::channel(crate::store::WRITE_CAPACITY);
    if !config.webhooks.is_empty() {
        tokio::spawn(crate::webhooks::run(
            database.clone(),
            config.webhooks.clone(),
            Arc::clone(&hooks.wake),
        ));
    }
    let names = Arc::new(crate::names::Names::new(
        database.clone(),
        config.contacts.country_code.clone(),
        config.lookup.clone(),
    ));
    let (named_tx, mut named_rx) = mpsc::channel(NAMING_CAPACITY);
    let writer = tokio::spawn(crate::store::run_writer(database, hooks, store_rx));
    let clock = WallClock::now();
    let udp = Arc::new(udp);
    let (tcp_tx, mut tcp_rx) = mpsc::channel(TCP_INPUT_CAPACITY);
    let (media_tx, mut media_rx) = mpsc::channel(MEDIA_EVENT_CAPACITY);
    let (admin_tx, mut admin_rx) = mpsc::channel(ADMIN_CAPACITY);
    let counters = Arc::new(MediaCounters::default());

    tokio::spawn(accept_sip_tcp(tcp, tcp_tx.clone()));
    if let (Some(listener), Some(cert), Some(key)) =
        (sip_tls, &config.sip.tls_cert, &config.sip.tls_key)
    {
        let tls = crate::api::tls::server_config_for("sip", cert, key, None)?;
        let listener = crate::api::tls::TlsListener::new(listener, tls)?;
        tokio::spawn(accept_sip_tls(listener, tcp_tx.clone()));
    }
    let tls_trunks = tls_trunks(&config)?;
    let handle = AppHandle {
        admin: admin_tx,
        agents: agents_tx,
        webrtc: webrtc_tx.clone(),
        config: Arc::clone(&config),
        counters: Arc::clone(&counters),
        webrtc_counters,
        clock,
        next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        store: store_tx.downgrade(),
        gateway_counters: Arc::clone(&gateway_counters),
        names: Arc::clone(&names),
    };
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(crate::api::tls::server_config(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("dialer page at {scheme}://{}/", config.http.listen);
    tokio::spawn(async move {
        if let Err(e) = crate::api::serve(http, handle, tls).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let now = Instant::now();
    let host = config
        .sip
        .public_host
        .clone()
        .unwrap_or_else(|| sip_addr.ip().to_string());
    let layer = TransactionLayer::new(
        LocalAddress {
            host: host.clone(),
            port: sip_addr.port(),
            tls_port: config.sip.tls_listen.map(|a| a.port()),
        },
        TimerValues::default(),
        os_random(),
        config.sip.user_agent.clone(),
    );
    let settings = B2buaSettings {
        contact_host: host,
        contact_port: sip_addr.port(),
        tls_port: config.sip.tls_listen.map(|a| a.port()),
        codecs: config.codec_preference(),
        nonce_secret: os_random(),
        guard: config.security.guard(),
        digest_algorithms: config.security.digest_algorithms(),
        limits: TransactionLimits {
            max_server: config.security.max_transactions,
            max_per_source: config.security.max_transactions_per_source,
        },
    };
    let mut b2bua = B2bua::new(layer, settings, &config.trunks, now);
    b2bua.set_unix_time(unix_secs());
    let mut controller = Controller::new(&config.routes, &config.agents);
    controller.set_recording_policy(config.recording_policy());
    controller.set_transfer_ring(Duration::from_secs(config.transfer.ring_seconds));
    controller.set_ring_timeout(Duration::from_secs(config.security.ring_timeout));
    let mut sig = Signalling {
        b2bua,
        controller,
        udp: Arc::clone(&udp),
        tcp_writers: HashMap::new(),
        tls_connections: std::collections::HashSet::new(),
        tls_trunks,
        tcp_input: tcp_tx,
        media: HashMap::new(),
        pending_sockets: HashMap::new(),
        ports: PortPool::new(config.rtp.port_min, config.rtp.port_max),
        config: Arc::clone(&config),
        media_events: media_tx,
        counters,
        audio_files: HashMap::new(),
        pending_admin: HashMap::new(),
        webrtc: webrtc_tx,
        connections: HashMap::new(),
        store: store_tx,
        stored: HashMap::new(),
        store_stale: false,
        clock,
        gateway_counters,
        recordings: recordings.clone(),
        waiting_audio: None,
        names,
        naming: HashMap::new(),
        named: named_tx,
    };
    sig.preload_audio()?;
    tracing::info!(sip = %sip_addr, http = %config.http.listen, "callgate listening");

    let mut udp_buf = vec![0u8; MAX_MESSAGE_SIZE + 1];
    if let Err(e) = crate::overload::prepare_socket(&udp) {
        tracing::warn!(error = %e, "no SIP receive timestamps: overload control is off");
    }
    let mut load = crate::overload::LoadGauge::default();
    let mut shutting_down: Option<Instant> = None;
    loop {
        let deadline = sig
            .b2bua
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let sleep = tokio::time::sleep_until(deadline.into());
        // The controller's clock runs only when something waits on it (a ring timeout).
        let controller_due = sig.controller.poll_timeout();
        let controller_sleep = tokio::time::sleep_until(
            controller_due
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .into(),
        );
        tokio::select! {
            ready = udp.readable() => match ready {
                Ok(()) => {
                    sig.b2bua.set_unix_time(unix_secs());
                    // Everything queued, up to a batch, then the other inputs get a turn.
                    for queued in 1..=SIP_UDP_BATCH {
                        match crate::overload::try_recv_timed(&udp, &mut udp_buf) {
                            Ok(got) => {
                                let (n, source) = (got.len, got.source);
                                if let Some(waited) = got.waited {
                                    let admission = load.observe(
                                        Instant::now(),
                                        waited,
                                        queued,
                                        got.dropped,
                                        sig.b2bua.admitted_calls(),
                                    );
                                    sig.b2bua.set_admission(admission.rate, admission.shed_all);
                                }
                                sig.gateway_counters.sip_in(&udp_buf[..n]);
                                sig.b2bua.handle_datagram(Instant::now(), source, &udp_buf[..n]);
                                sig.drain().await;
                                // Reads that bypass tokio's own recv spend no cooperative
                                // budget: spend it here, so that a burst of SIP yields the
                                // worker to the media tasks as a recv per datagram would.
                                tokio::task::consume_budget().await;
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "SIP UDP receive error");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "SIP UDP readiness error"),
            },
            Some(input) = tcp_rx.recv() => sig.on_tcp(input),
            Some(event) = media_rx.recv() => sig.on_media_event(event),
            Some(request) = admin_rx.recv() => sig.on_admin(request),
            Some(input) = agents_rx.recv() => sig.on_agent(input),
            Some((call, prospect)) = named_rx.recv() => sig.on_named(call, prospect),
            Some(event) = webrtc_events.recv() => match event {
                WebrtcEvent::Connected { peer } => tracing::debug!(peer, "agent media up"),
                WebrtcEvent::Disconnected { peer } => tracing::debug!(peer, "agent media down"),
            },
            _ = sleep => sig.b2bua.handle_timeout(Instant::now()),
            _ = controller_sleep, if controller_due.is_some() => {
                let commands = sig.controller.handle(Event::Tick, Instant::now());
                sig.execute(commands);
            }
            _ = terminate.recv(), if shutting_down.is_none() => {
                tracing::info!(calls = sig.b2bua.live_legs(), "shutting down: ending live calls");
                shutting_down = Some(Instant::now());
                let commands = sig.controller.handle(Event::Shutdown, Instant::now());
                sig.execute(commands);
                for leg in sig.b2bua.leg_ids() {
                    sig.b2bua.hangup(Instant::now(), &leg);
                }
            }
        }
        sig.drain().await;
        sig.sync_store();
        sig.gateway_counters
            .set_sip_dropped(sig.b2bua.guard_drops());
        sig.gateway_counters
            .calls_shed
            .store(sig.b2bua.shed_calls(), std::sync::atomic::Ordering::Relaxed);
        let (servers, clients) = sig.b2bua.live_transactions();
        sig.gateway_counters
            .server_transactions
            .store(servers as u64, std::sync::atomic::Ordering::Relaxed);
        sig.gateway_counters
            .client_transactions
            .store(clients as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(started) = shutting_down {
            if sig.b2bua.live_legs() == 0 || started.elapsed() > SHUTDOWN_GRACE {
                break;
            }
        }
    }
    for (_, media) in sig.media.drain() {
        let _ = media.commands.try_send(MediaCommand::Stop);
    }
    // Every ended call reaches the call log before the process goes.
    sig.sync_store();
    drop(sig);
    if tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .is_err()
    {
        tracing::error!("call log writer did not finish in 5 s");
    }
    // Let media tasks send their RTCP BYE and hand over their last recorded audio.
    tokio::time::sleep(Duration::from_millis(50)).await;
    recordings.shutdown(Duration::from_secs(5));
    tracing::info!("callgate stopped");
    Ok(())
}

#[cfg(unix)]
fn signal_stream() -> anyhow::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = mpsc::channel(1);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

impl Signalling {
    fn preload_audio(&mut self) -> Result<(), AppError> {
        let files: Vec<PathBuf> = self
            .config
            .routes
            .iter()
            .filter_map(|r| match r.route_action() {
                crate::config::RouteAction::Announce { file } => Some(file),
                crate::config::RouteAction::Echo => None,
            })
            .collect();
        // Hold audio must be there before anyone is put on hold.
        let files = files
            .into_iter()
            .chain(std::iter::once(self.config.media.hold_audio.clone()));
        for file in files {
            let samples = crate::media::wav::load_8k_mono(&file).map_err(|e| AppError::Asset {
                path: file.clone(),
                reason: e.to_string(),
            })?;
            self.audio_files.insert(file, Arc::new(samples));
        }
        self.waiting_audio = match self.config.media.waiting_audio.as_deref() {
            None => None,
            Some("ringback") => Some(Arc::new(crate::media::tones::ringback(
                &self.config.media.ringback_country,
            ))),
            Some(path) => {
                let file = PathBuf::from(path);
                let samples =
                    crate::media::wav::load_8k_mono(&file).map_err(|e| AppError::Asset {
                        path: file.clone(),
                        reason: e.to_string(),
                    })?;
                Some(Arc::new(samples))
            }
        };
        Ok(())
    }

    fn audio(&mut self, path: &Path) -> Option<Arc<Vec<i16>>> {
        if let Some(samples) = self.audio_files.get(path) {
            return Some(Arc::clone(samples));
        }
        match crate::media::wav::load_8k_mono(path) {
            Ok(samples) => {
                let samples = Arc::new(samples);
                self.audio_files
                    .insert(path.to_path_buf(), Arc::clone(&samples));
                Some(samples)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load audio");
                None
            }
        }
    }

    /// Move everything the cores want done out to the world.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.b2bua.poll_transmit() {
                progressed = true;
                self.transmit(transmit).await;
            }
            while let Some(event) = self.b2bua.poll_event() {
                progressed = true;
                self.on_leg_event(event);
            }
            if !progressed {
                break;
            }
        }
    }

    async fn transmit(&mut self, transmit: Transmit) {
        self.gateway_counters.sip_out(&transmit.bytes);
        tracing::trace!(to = %transmit.destination, bytes = transmit.bytes.len(), "SIP out");
        match transmit.transport {
            Transport::Udp => {
                if let Err(e) = self
                    .udp
                    .send_to(&transmit.bytes, transmit.destination)
                    .await
                {
                    tracing::debug!(to = %transmit.destination, error = %e, "SIP UDP send failed");
                }
            }
            Transport::Tcp | Transport::Tls => {
                let writer = match self.tcp_writers.get(&transmit.destination) {
                    Some(w) if !w.is_closed() => w.clone(),
                    _ => {
                        let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
                        self.tcp_writers.insert(transmit.destination, tx.clone());
                        if transmit.transport == Transport::Tls {
                            // A trunk's proxy as configured; anything else (a peer whose
                            // connection dropped) by its address and the system's CAs.
                            let peer = self
                                .tls_trunks
                                .get(&transmit.destination)
                                .cloned()
                                .unwrap_or_else(|| TlsPeer::by_address(transmit.destination));
                            self.tls_connections.insert(transmit.destination);
                            tokio::spawn(connect_sip_tls(
                                transmit.destination,
                                peer,
                                rx,
                                self.tcp_input.clone(),
                            ));
                        } else {
                            tokio::spawn(connect_sip_tcp(
                                transmit.destination,
                                rx,
                                self.tcp_input.clone(),
                            ));
                        }
                        tx
                    }
                };
                if writer.try_send(transmit.bytes).is_err() {
                    tracing::warn!(to = %transmit.destination, "SIP TCP queue full; message dropped");
                }
            }
        }
    }

    /// Which stream transport a connection to `peer` is.
    fn stream_transport(&self, peer: SocketAddr) -> Transport {
        if self.tls_connections.contains(&peer) {
            Transport::Tls
        } else {
            Transport::Tcp
        }
    }

    fn on_tcp(&mut self, input: TcpInput) {
        let now = Instant::now();
        match input {
            TcpInput::Connected(peer, writer, transport) => {
                self.tcp_writers.insert(peer, writer);
                if transport == Transport::Tls {
                    self.tls_connections.insert(peer);
                } else {
                    self.tls_connections.remove(&peer);
                }
            }
            TcpInput::Message(peer, message) => {
                self.gateway_counters.sip_in_label(match &*message {
                    Message::Request(r) => {
                        crate::metrics::method_label(r.method.as_str()).to_string()
                    }
                    Message::Response(r) => r.status.to_string(),
                });
                self.b2bua.set_unix_time(unix_secs());
                let transport = self.stream_transport(peer);
                self.b2bua.handle_message(now, peer, transport, *message);
            }
            TcpInput::Invalid(peer, error) => {
                let transport = self.stream_transport(peer);
                self.b2bua.handle_parse_error(now, peer, transport, *error);
            }
            TcpInput::Closed(peer) => {
                // What still waited for an answer over it fails now (and an INVITE tries
                // its next trunk) instead of at Timer B.
                let transport = self.stream_transport(peer);
                self.b2bua.handle_transport_error(now, peer, transport);
                self.tcp_writers.remove(&peer);
                self.tls_connections.remove(&peer);
            }
        }
    }

    fn on_leg_event(&mut self, event: LegEvent) {
        let now = Instant::now();
        let event = match event {
            LegEvent::Incoming {
                leg,
                from_number,
                from_name,
                to_user,
                trunk,
            } => {
                let event = Event::Incoming {
                    call: leg.clone(),
                    from: from_number.clone(),
                    from_name,
                    prospect: Default::default(),
                    to_user,
                    trunk: Some(trunk),
                };
                if !self.names.in_use() {
                    event
                } else if self.naming.len() >= NAMING_CAPACITY {
                    tracing::warn!(call = %leg, "too many calls waiting for names; this one goes on without");
                    event
                } else {
                    // The controller hears of the call once its name is known.
                    self.naming.insert(leg.clone(), event);
                    let names = Arc::clone(&self.names);
                    let named = self.named.clone();
                    tokio::spawn(async move {
                        let prospect = names.inbound(&from_number).await;
                        let _ = named.send((leg, prospect)).await;
                    });
                    return;
                }
            }
            LegEvent::Answered { leg, audio } => {
                if let Some(sockets) = self.pending_sockets.remove(&leg) {
                    self.start_media(&leg, sockets, audio, Source::Silence, false);
                }
                if let Some(reply) = self.pending_admin.remove(&leg) {
                    let _ = reply.send(Ok(leg.clone()));
                }
                Event::Answered { call: leg }
            }
            LegEvent::MediaChanged { leg, audio } => {
                if let Some(media) = self.media.get(&leg) {
                    media.codec.set(Some(audio.codec));
                    let _ = media.commands.try_send(MediaCommand::Update(audio));
                }
                return;
            }
            LegEvent::Dtmf { leg, digit } => Event::Dtmf { call: leg, digit },
            LegEvent::Ringing { leg } => {
                tracing::debug!(call = %leg, "ringing");
                return;
            }
            LegEvent::Ended { leg, cause } => {
                // Gone (cancelled) before its name came: the controller never knew it.
                if self.naming.remove(&leg).is_some() {
                    return;
                }
                if let Some(sockets) = self.pending_sockets.remove(&leg) {
                    self.ports.release(sockets.port);
                }
                if let Some(reply) = self.pending_admin.remove(&leg) {
                    let status = match cause {
                        EndCause::Failed(s) => s,
                        _ => 487,
                    };
                    let _ = reply.send(Err(format!("call failed with SIP {status}")));
                }
                Event::LegEnded {
                    call: leg,
                    remote: matches!(cause, EndCause::RemoteBye | EndCause::Cancelled),
                    failed: matches!(cause, EndCause::Failed(_) | EndCause::Timeout),
                }
            }
            LegEvent::TrunkHealth { trunk, up } => {
                tracing::info!(%trunk, up, "trunk health");
                return;
            }
        };
        let commands = self.controller.handle(event, now);
        self.execute(commands);
    }

    /// An inbound call's name is known (or its lookup gave up): the controller hears of it.
    fn on_named(&mut self, call: String, prospect: crate::controller::Prospect) {
        let Some(mut event) = self.naming.remove(&call) else {
            return;
        };
        if let Event::Incoming { prospect: p, .. } = &mut event {
            *p = prospect;
        }
        let commands = self.controller.handle(event, Instant::now());
        self.execute(commands);
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        let event = match event {
            MediaEvent::Finished { call } => Event::MediaFinished { call },
            MediaEvent::RtpTimeout { call } => {
                tracing::warn!(%call, "no RTP from the peer; ending the call");
                Event::Hangup { call }
            }
            MediaEvent::Dtmf { call, digit } => Event::Dtmf { call, digit },
            MediaEvent::Recording { call, update } => {
                let ms = crate::store::millis;
                let op = StoreOp::Recording {
                    call_id: call.clone(),
                    path: update.path.map(|p| p.display().to_string()),
                    segment: update.segment.map(|s| crate::store::RecordingSegment {
                        index: s.index,
                        started_at: ms(s.started_at),
                        ended_at: s.ended_at.map(ms),
                        offset_ms: s.offset_ms as i64,
                        duration_ms: s.duration_ms.map(|d| d as i64),
                    }),
                };
                if self.store.try_send(op).is_err() {
                    tracing::error!(%call, "call log queue full; recording change not recorded");
                }
                self.store_stale = true;
                Event::Recording {
                    call,
                    state: update.state,
                }
            }
        };
        let commands = self.controller.handle(event, Instant::now());
        self.execute(commands);
    }

    fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::Dial { to, plan, reply } => {
                let call = new_call_id();
                self.pending_admin.insert(call.clone(), reply);
                let commands = self
                    .controller
                    .handle(Event::Dial { call, to, plan }, Instant::now());
                self.execute(commands);
            }
            AdminRequest::Hangup { call, reply } => {
                let known = self.controller.call(&call).is_some();
                let commands = self
                    .controller
                    .handle(Event::Hangup { call }, Instant::now());
                self.execute(commands);
                let _ = reply.send(known);
            }
            AdminRequest::Agents { reply } => {
                let agents = self
                    .config
                    .agents
                    .iter()
                    .map(|a| {
                        let queue = self.controller.queue(&a.id);
                        let of = |status: crate::controller::Status| {
                            queue
                                .iter()
                                .filter(|c| c.status == status)
                                .map(|c| c.id.clone())
                                .collect()
                        };
                        AgentView {
                            agent_id: a.id.clone(),
                            name: a.name.clone(),
                            role: a.role,
                            connected: self.controller.is_connected(&a.id),
                            active_call: self.controller.active_call(&a.id).map(|c| c.id.clone()),
                            held_calls: of(crate::controller::Status::OnHold),
                            waiting_calls: of(crate::controller::Status::Waiting),
                        }
                    })
                    .collect();
                let _ = reply.send(agents);
            }
            AdminRequest::Calls { reply } => {
                let calls = self
                    .controller
                    .calls()
                    .map(|c| LiveCall {
                        call_id: c.id.clone(),
                        direction: c.direction.as_str(),
                        from: c.from.clone(),
                        to: c.to.clone(),
                        status: c.status.as_str(),
                        dtmf: c.dtmf.clone(),
                    })
                    .collect();
                let _ = reply.send(calls);
            }
            AdminRequest::Dtmf {
                call,
                digits,
                reply,
            } => {
                let sent = self
                    .media
                    .get(&call)
                    .is_some_and(|m| m.commands.try_send(MediaCommand::SendDtmf(digits)).is_ok());
                let _ = reply.send(sent);
            }
        }
    }

    fn bind_media(&mut self) -> Option<MediaSockets> {
        let ip = self.config.rtp.bind;
        let candidates: Vec<u16> = self.ports.candidates().take(32).collect();
        for port in candidates {
            let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, port));
            let rtcp = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1));
            if let (Ok(rtp), Ok(rtcp)) = (rtp, rtcp) {
                if rtp.set_nonblocking(true).is_err() || rtcp.set_nonblocking(true).is_err() {
                    continue;
                }
                if let (Ok(rtp), Ok(rtcp)) = (UdpSocket::from_std(rtp), UdpSocket::from_std(rtcp)) {
                    self.ports.take(port);
                    return Some(MediaSockets { rtp, rtcp, port });
                }
            }
        }
        tracing::error!(in_use = self.ports.in_use(), "no free RTP port pair");
        None
    }

    fn local_media(&self, port: u16) -> LocalMedia {
        LocalMedia {
            address: self.config.rtp.public_ip.unwrap_or(self.config.rtp.bind),
            port,
            session_id: unix_secs(),
            session_version: 1,
            username: "callgate".into(),
            // Set per leg by the b2bua, which knows the trunk and the transport.
            crypto: None,
        }
    }

    fn source_for(&mut self, plan: &MediaPlan) -> Source {
        match plan {
            MediaPlan::Echo => Source::Echo,
            // The bridge replaces the source once the agent's (or the other leg's) media is
            // attached.
            MediaPlan::Agent(_) | MediaPlan::Join(_) => Source::Silence,
            MediaPlan::Announce(path) => match self.audio(path) {
                Some(samples) => Source::Play(samples),
                None => Source::Silence,
            },
        }
    }

    /// 183 with SDP and the waiting audio toward a caller who waits for a busy agent. False
    /// when there is none to play, the trunk takes no early media, or it could not start
    /// (the caller then gets a 180).
    fn start_early_media(&mut self, now: Instant, call: &str) -> bool {
        let Some(samples) = self.waiting_audio.clone() else {
            return false;
        };
        if self.media.contains_key(call) {
            return false;
        }
        let Some(sockets) = self.bind_media() else {
            return false;
        };
        let local = self.local_media(sockets.port);
        match self.b2bua.early_media(now, call, local) {
            Ok(Some(audio)) => {
                self.start_media(call, sockets, audio, Source::Loop(samples), true);
                true
            }
            Ok(None) => {
                self.ports.release(sockets.port);
                false
            }
            Err(e) => {
                tracing::warn!(%call, error = %e, "no early media");
                self.ports.release(sockets.port);
                false
            }
        }
    }

    /// The call's media task, playing `source`; `early` while it is early media (before any
    /// answer).
    fn start_media(
        &mut self,
        call: &str,
        sockets: MediaSockets,
        audio: crate::sdp::AudioSession,
        source: Source,
        early: bool,
    ) {
        let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
        let port = sockets.port;
        let codec = Arc::new(PeerCodec::of(audio.codec));
        let media = CallMedia::new(
            call.to_string(),
            sockets,
            audio,
            source,
            self.media_events.clone(),
            Arc::clone(&self.counters),
        )
        .with_recording_writer(self.recordings.clone())
        .with_signalling_peer(self.b2bua.signalling_peer(call));
        let media = if early { media.in_early_media() } else { media };
        tokio::spawn(media.run(rx));
        self.media.insert(
            call.to_string(),
            MediaHandle {
                commands: tx,
                port,
                codec,
            },
        );
    }

    /// Tell the call log about every call whose status changed and every call that ended.
    fn sync_store(&mut self) {
        if !std::mem::take(&mut self.store_stale) {
            return;
        }
        let now = Instant::now();
        let mut changed = Vec::new();
        for c in self.controller.calls() {
            let seen = (c.status, c.queued_at, c.recording);
            if self.stored.get(&c.id) != Some(&seen) {
                changed.push(c.clone());
            }
        }
        for c in changed {
            self.stored
                .insert(c.id.clone(), (c.status, c.queued_at, c.recording));
            self.record(&c, now);
        }
        for c in self.controller.take_ended() {
            self.stored.remove(&c.id);
            self.record(&c, c.ended_at.unwrap_or(now));
        }
    }

    fn record(&self, c: &Call, at: Instant) {
        let ms = |t: Instant| crate::store::millis(self.clock.at(t));
        let record = CallRecord {
            id: c.id.clone(),
            direction: c.direction.as_str().into(),
            from_number: c.from.clone(),
            from_name: c.from_name.clone(),
            to_number: c.to.clone(),
            prospect: c.prospect().to_string(),
            // A call that left every agent (joined to a number) stays with the last one.
            agent_id: c.agent.clone().or_else(|| c.handled_by.clone()),
            status: c.status.as_str().into(),
            created_at: ms(c.created_at),
            answered_at: c.answered_at.map(ms),
            queued_at: c.queued_at.map(ms),
            ended_at: c.ended_at.map(ms),
            end_reason: c.end_reason.map(|r| r.as_str().to_string()),
            recording: c.recording.as_str().into(),
            recording_path: None,
            prospect_name: c.prospect_name.clone(),
            prospect_id: c.prospect_id.clone(),
        };
        let op = StoreOp::Call {
            call: Box::new(record),
            at: ms(at),
        };
        if self.store.try_send(op).is_err() {
            tracing::error!(call = %c.id, "call log queue full; change not recorded");
        }
    }

    fn connection_of(&self, agent: &str) -> Option<ConnId> {
        self.connections
            .iter()
            .find(|(_, c)| c.agent == agent)
            .map(|(id, _)| *id)
    }

    /// Run two calls' media into each other: each takes the other's place of a browser, so
    /// packets pass through when the codecs match and are transcoded when not. Recordings of
    /// either call continue.
    fn join(&mut self, a: &str, b: &str) {
        let (Some(ma), Some(mb)) = (self.media.get(a), self.media.get(b)) else {
            tracing::warn!(%a, %b, "join without media");
            return;
        };
        let (into_a, from_b) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let (into_b, from_a) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let link = |codec: &Arc<PeerCodec>, from_agent, toward| AgentLink {
            peer: 0,
            codec: Arc::clone(codec),
            webrtc: self.webrtc.clone(),
            from_agent,
            joined: Some(JoinedLeg::new(toward)),
        };
        let links = [
            (ma, link(&mb.codec, from_b, into_b), a),
            (mb, link(&ma.codec, from_a, into_a), b),
        ];
        for (media, link, call) in links {
            self.attach(media, call, link);
        }
        tracing::info!(%a, %b, "calls joined");
    }

    /// Hand a call's media its link (to a browser or the other leg). The recording learns
    /// what is wanted of it first, so it may start with the bridge.
    fn attach(&self, media: &MediaHandle, call: &str, link: AgentLink) {
        let want = self
            .controller
            .call(call)
            .map_or(RecordWant::Off, |c| c.record_want);
        let _ = media.commands.try_send(MediaCommand::Record(want));
        if media.commands.try_send(MediaCommand::Bridge(link)).is_err() {
            tracing::warn!(%call, "media task not taking commands; bridge lost");
        }
    }

    /// A new link from an agent's peer connection to a call's media: the link for the media
    /// task, and the sender the WebRTC task routes the agent's microphone into.
    fn agent_link(
        &self,
        agent: &str,
    ) -> Option<(ConnId, AgentLink, mpsc::Sender<crate::webrtc::AgentPacket>)> {
        let conn = self.connection_of(agent)?;
        let codec = Arc::clone(&self.connections.get(&conn)?.codec);
        let (to_call, from_agent) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let link = AgentLink {
            peer: conn,
            codec,
            webrtc: self.webrtc.clone(),
            from_agent,
            joined: None,
        };
        Some((conn, link, to_call))
    }

    /// Join a supervisor's peer connection to a call's media: the call mixes what they hear
    /// and takes their microphone (used in whisper and barge).
    fn monitor_start(&mut self, call: &str, supervisor: &str, mode: MonitorMode) {
        let Some((conn, link, to_call)) = self.agent_link(supervisor) else {
            return;
        };
        let Some(media) = self.media.get(call) else {
            tracing::warn!(%call, "monitor without media");
            return;
        };
        let start = MediaCommand::Monitor(MonitorChange::Start(link, mode));
        if media.commands.try_send(start).is_err() {
            tracing::warn!(%call, "media task not taking commands; monitor lost");
            return;
        }
        tracing::info!(%call, %supervisor, mode = mode.as_str(), "supervisor joined the call");
        let _ = self.webrtc.try_send(WebrtcInput::Route {
            peer: conn,
            route: Some(Route {
                call: call.to_string(),
                to_call,
            }),
        });
    }

    /// Connect a call's media and the agent's peer connection, both ways.
    fn bridge(&mut self, call: &str, agent: &str) {
        let Some((conn, link, to_call)) = self.agent_link(agent) else {
            return;
        };
        let Some(media) = self.media.get(call) else {
            tracing::warn!(%call, "bridge without media");
            return;
        };
        self.attach(media, call, link);
        let route = Route {
            call: call.to_string(),
            to_call,
        };
        if self
            .webrtc
            .try_send(WebrtcInput::Route {
                peer: conn,
                route: Some(route),
            })
            .is_err()
        {
            tracing::warn!(%call, "WebRTC task queue full; route lost");
        }
    }

    fn notify(&mut self, agent: &str, notice: Notice) {
        let Some(conn) = self.connection_of(agent) else {
            return;
        };
        let full = self
            .connections
            .get(&conn)
            .is_some_and(|c| c.outbound.try_send(AgentOutbound::Notice(notice)).is_err());
        if full {
            tracing::warn!(%agent, "agent not reading its notices; closing its connection");
            if let Some(c) = self.connections.get(&conn) {
                let _ = c.outbound.try_send(AgentOutbound::Close(1008));
            }
        }
    }

    fn on_agent(&mut self, input: AgentInput) {
        let now = Instant::now();
        match input {
            AgentInput::Connect {
                agent,
                conn,
                codec,
                outbound,
                reply,
            } => {
                tracing::info!(%agent, conn, "agent connected");
                let commands = self.controller.handle(
                    Event::AgentConnected {
                        agent: agent.clone(),
                        conn,
                    },
                    now,
                );
                self.execute(commands);
                self.connections.insert(
                    conn,
                    AgentConnection {
                        agent: agent.clone(),
                        codec,
                        outbound,
                    },
                );
                // Calls inherited from a replaced connection keep their media on this one, and
                // so does a call the supervisor was monitoring.
                if let Some(active) = self.controller.active_call(&agent).map(|c| c.id.clone()) {
                    self.bridge(&active, &agent);
                }
                if let Some((call, mode)) = self.controller.monitoring(&agent) {
                    self.monitor_start(&call, &agent, mode);
                }
                let _ = reply.send(self.controller.snapshot(&agent));
            }
            AgentInput::Disconnect { agent, conn } => {
                tracing::info!(%agent, conn, "agent disconnected");
                let _ = self.webrtc.try_send(WebrtcInput::Close { peer: conn });
                let current = self.connections.remove(&conn).is_some();
                if current {
                    let commands = self
                        .controller
                        .handle(Event::AgentDisconnected { agent, conn }, now);
                    self.execute(commands);
                }
            }
            AgentInput::LogSaved { agent, prospect } => {
                self.controller.close_prompt(&agent, &prospect);
            }
            AgentInput::Snapshot { agent, reply } => {
                let _ = reply.send(self.controller.snapshot(&agent));
            }
            AgentInput::Request {
                agent,
                request,
                reply,
            } => {
                let result = self.agent_request(&agent, request, now);
                let _ = reply.send(result);
            }
        }
    }

    fn agent_request(
        &mut self,
        agent: &str,
        request: AgentCall,
        now: Instant,
    ) -> Result<String, AgentError> {
        let request = match request {
            AgentCall::Answer { call } => AgentRequest::Answer { call },
            AgentCall::Decline { call } => AgentRequest::Decline { call },
            AgentCall::Hangup { call } => AgentRequest::Hangup { call },
            AgentCall::Dtmf { call, digits } => AgentRequest::Dtmf { call, digits },
            AgentCall::Accept { call, hold_active } => AgentRequest::Accept { call, hold_active },
            AgentCall::Hold { call } => AgentRequest::Hold { call },
            AgentCall::Resume { call } => AgentRequest::Resume { call },
            AgentCall::Record { call, action } => AgentRequest::Record { call, action },
            AgentCall::Monitor { call, mode } => AgentRequest::Monitor { call, mode },
            AgentCall::Transfer { call, to, attended } => {
                let target = match (to, attended) {
                    (_, Some(consult)) => TransferTarget::Attended(consult),
                    (Some(to), None) => match to.strip_prefix("agent:") {
                        Some(id) => TransferTarget::Agent(id.to_string()),
                        None => {
                            // Through a trunk, as a dial: the dial plan decides.
                            if let Err(e) = self.b2bua.trunks_for(&to) {
                                let code = match e {
                                    crate::b2bua::DialError::DialPlanDenied(_) => {
                                        "dial_plan_denied"
                                    }
                                    _ => "bad_request",
                                };
                                return Err(AgentError {
                                    code,
                                    message: format!("to: {e}"),
                                });
                            }
                            TransferTarget::Number {
                                to,
                                leg: new_call_id(),
                            }
                        }
                    },
                    (None, None) => {
                        return Err(AgentError {
                            code: "bad_request",
                            message: "to: required".into(),
                        })
                    }
                };
                AgentRequest::Transfer { call, target }
            }
            AgentCall::Dial { to, prospect } => {
                let to = to.trim().to_string();
                if let Err(e) = self.b2bua.trunks_for(&to) {
                    let code = match e {
                        crate::b2bua::DialError::DialPlanDenied(_) => "dial_plan_denied",
                        _ => "bad_request",
                    };
                    return Err(AgentError {
                        code,
                        message: e.to_string(),
                    });
                }
                // The trunk that will carry it first decides its recording mode.
                let trunk = self
                    .b2bua
                    .trunks_for(&to)
                    .ok()
                    .and_then(|t| t.first().copied())
                    .and_then(|i| self.b2bua.trunk_name(i))
                    .map(str::to_string);
                AgentRequest::Dial {
                    call: new_call_id(),
                    to,
                    trunk,
                    prospect,
                }
            }
        };
        let (result, commands) = self.controller.request(agent, request, now);
        if let Ok(call) = &result {
            if let Some(did) = self
                .config
                .agents
                .iter()
                .find(|a| a.id == agent)
                .and_then(|a| a.dids.first())
            {
                if self
                    .controller
                    .call(call)
                    .is_some_and(|c| c.from.is_empty())
                {
                    self.controller.set_caller(call, did);
                }
            }
        }
        self.execute(commands);
        result.map_err(AgentError::from)
    }

    /// A dial that never left: the operator who asked hears why, and the call ends as failed.
    fn dial_failed(&mut self, call: String, reason: String, now: Instant) {
        if let Some(reply) = self.pending_admin.remove(&call) {
            let _ = reply.send(Err(reason));
        }
        let commands = self.controller.handle(
            Event::LegEnded {
                call,
                remote: false,
                failed: true,
            },
            now,
        );
        self.execute(commands);
    }

    fn execute(&mut self, commands: Vec<Command>) {
        // Every change of a call's status comes with commands: only then can the call log
        // have something new to hear.
        self.store_stale |= !commands.is_empty();
        let now = Instant::now();
        for command in commands {
            match command {
                Command::Answer { call, plan } => {
                    // In early media already: the 200 carries the 183's session, and the
                    // running media task goes on from the waiting audio to the call.
                    if let Some(port) = self.media.get(&call).map(|m| m.port) {
                        let local = self.local_media(port);
                        match self.b2bua.answer(now, &call, local) {
                            Ok(_) => {
                                let source = self.source_for(&plan);
                                if let Some(media) = self.media.get(&call) {
                                    let _ = media.commands.try_send(MediaCommand::Answered);
                                    let _ = media.commands.try_send(MediaCommand::Source(source));
                                }
                            }
                            Err(e) => {
                                tracing::warn!(%call, error = %e, "cannot answer");
                                self.b2bua.reject(now, &call, 488);
                            }
                        }
                        continue;
                    }
                    let Some(sockets) = self.bind_media() else {
                        self.b2bua.reject(now, &call, 503);
                        continue;
                    };
                    let local = self.local_media(sockets.port);
                    match self.b2bua.answer(now, &call, local) {
                        Ok(audio) => {
                            let source = self.source_for(&plan);
                            self.start_media(&call, sockets, audio, source, false);
                        }
                        Err(e) => {
                            tracing::warn!(%call, error = %e, "cannot answer");
                            self.ports.release(sockets.port);
                            self.b2bua.reject(now, &call, 488);
                        }
                    }
                }
                Command::Reject { call, reason } => {
                    self.b2bua
                        .reject(now, &call, crate::b2bua::reject_status(reason))
                }
                Command::Dial { call, to } => {
                    let Some(sockets) = self.bind_media() else {
                        self.dial_failed(call, "no free RTP port".into(), now);
                        continue;
                    };
                    let local = self.local_media(sockets.port);
                    let port = sockets.port;
                    self.pending_sockets.insert(call.clone(), sockets);
                    let from = self
                        .controller
                        .call(&call)
                        .map(|c| c.from.clone())
                        .unwrap_or_default();
                    if let Err(e) = self.b2bua.dial(now, &call, &to, &from, local) {
                        self.pending_sockets.remove(&call);
                        self.ports.release(port);
                        self.dial_failed(call, e.to_string(), now);
                    }
                }
                Command::StartMedia { call, plan } => {
                    let source = self.source_for(&plan);
                    if let Some(media) = self.media.get(&call) {
                        let _ = media.commands.try_send(MediaCommand::Source(source));
                    }
                }
                Command::Hangup { call } => self.b2bua.hangup(now, &call),
                Command::Ring { call, waiting } => {
                    // A waiting caller hears the waiting audio as early media, when the
                    // operator chose one and the trunk takes it; otherwise a 180.
                    if !(waiting && self.start_early_media(now, &call)) {
                        self.b2bua.ring(now, &call);
                    }
                }
                Command::Bridge { call, agent } => self.bridge(&call, &agent),
                Command::Unbridge { call, agent } => {
                    if let Some(media) = self.media.get(&call) {
                        let _ = media.commands.try_send(MediaCommand::Unbridge);
                    }
                    if let Some(conn) = self.connection_of(&agent) {
                        let _ = self.webrtc.try_send(WebrtcInput::Route {
                            peer: conn,
                            route: None,
                        });
                    }
                }
                Command::Join { a, b } => self.join(&a, &b),
                Command::MonitorStart {
                    call,
                    supervisor,
                    mode,
                } => self.monitor_start(&call, &supervisor, mode),
                Command::MonitorMode { call, mode } => {
                    if let Some(media) = self.media.get(&call) {
                        let _ = media
                            .commands
                            .try_send(MediaCommand::Monitor(MonitorChange::Mode(mode)));
                    }
                }
                Command::MonitorStop { call, supervisor } => {
                    if let Some(media) = self.media.get(&call) {
                        let _ = media
                            .commands
                            .try_send(MediaCommand::Monitor(MonitorChange::Stop));
                    }
                    if let Some(conn) = self.connection_of(&supervisor) {
                        let _ = self.webrtc.try_send(WebrtcInput::Route {
                            peer: conn,
                            route: None,
                        });
                    }
                }
                Command::Record { call, want } => {
                    if let Some(media) = self.media.get(&call) {
                        let _ = media.commands.try_send(MediaCommand::Record(want));
                    }
                }
                Command::SendDtmf { call, digits } => {
                    if let Some(media) = self.media.get(&call) {
                        let _ = media.commands.try_send(MediaCommand::SendDtmf(digits));
                    }
                }
                Command::Notify { agent, notice } => self.notify(&agent, notice),
                Command::CloseConnection { conn, reason, .. } => {
                    if let Some(c) = self.connections.remove(&conn) {
                        let code = crate::api::agent::close_code(reason);
                        let _ = c.outbound.try_send(AgentOutbound::Close(code));
                    }
                }
                Command::Park { call } => {
                    let hold = self.config.media.hold_audio.clone();
                    let source = match self.audio(&hold) {
                        Some(samples) => Source::Loop(samples),
                        None => Source::Silence,
                    };
                    if let Some(media) = self.media.get(&call) {
                        let _ = media.commands.try_send(MediaCommand::Source(source));
                    }
                }
                Command::StopMedia { call } => {
                    if let Some(media) = self.media.remove(&call) {
                        let _ = media.commands.try_send(MediaCommand::Stop);
                        self.ports.release(media.port);
                    }
                }
            }
        }
    }
}

async fn accept_sip_tcp(listener: LimitedTcp, input: mpsc::Sender<TcpInput>) {
    loop {
        let (stream, peer) = listener.accept_limited().await;
        let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
        if input
            .send(TcpInput::Connected(peer, tx, Transport::Tcp))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(run_sip_tcp(stream, peer, rx, input.clone()));
    }
}

/// SIP over TLS from trunks: connections capped like SIP TCP's, each handed on once its
/// handshake is done (a slow handshake never holds up the next).
async fn accept_sip_tls(mut listener: crate::api::tls::TlsListener, input: mpsc::Sender<TcpInput>) {
    use axum::serve::Listener;
    loop {
        let (stream, peer) = listener.accept().await;
        tracing::debug!(%peer, "SIP TLS connection");
        let (tx, rx) = mpsc::channel(TCP_WRITE_CAPACITY);
        if input
            .send(TcpInput::Connected(peer, tx, Transport::Tls))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(run_sip_tcp(stream, peer, rx, input.clone()));
    }
}

/// A TLS peer we connect to: the name its certificate must carry, and the CAs trusted.
#[derive(Clone)]
struct TlsPeer {
    name: tokio_rustls::rustls::pki_types::ServerName<'static>,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl TlsPeer {
    fn by_address(addr: SocketAddr) -> TlsPeer {
        TlsPeer {
            name: tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            config: crate::tls_client::system(),
        }
    }
}

/// The trunks whose outbound proxy is reached over TLS, by address: the proxy's host is the
/// name to verify, and `tls_ca` (when set) the one CA trusted for it.
fn tls_trunks(config: &Config) -> Result<HashMap<SocketAddr, TlsPeer>, AppError> {
    let mut peers = HashMap::new();
    let mut seen = HashMap::new();
    for (i, trunk) in config.trunks.iter().enumerate() {
        let Some((uri, addr, Transport::Tls)) = trunk.proxy() else {
            continue;
        };
        let host = uri
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host).map_err(|e| {
            AppError::Asset {
                path: format!("trunk[{i}].outbound_proxy").into(),
                reason: format!("not a TLS server name: {e}"),
            }
        })?;
        let config = match &trunk.tls_ca {
            Some(ca) => crate::tls_client::pinned(ca).map_err(|reason| AppError::Asset {
                path: ca.clone(),
                reason,
            })?,
            None => crate::tls_client::system(),
        };
        // Connections are per address: two trunks there must trust the same CA.
        if let Some((seen_name, seen_ca)) = seen.get(&addr) {
            if *seen_name != name || *seen_ca != trunk.tls_ca {
                return Err(AppError::Asset {
                    path: format!("trunk[{i}].outbound_proxy").into(),
                    reason: format!(
                        "{addr} is another TLS trunk's proxy with another name or tls_ca"
                    ),
                });
            }
        }
        seen.insert(addr, (name.clone(), trunk.tls_ca.clone()));
        peers.insert(addr, TlsPeer { name, config });
    }
    Ok(peers)
}

async fn connect_sip_tls(
    peer: SocketAddr,
    tls: TlsPeer,
    outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<TcpInput>,
) {
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        let stream = TcpStream::connect(peer).await?;
        let _ = stream.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls.config)
            .connect(tls.name, stream)
            .await
    })
    .await;
    match connected {
        Ok(Ok(stream)) => run_sip_tcp(stream, peer, outgoing, input).await,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "SIP TLS connect failed");
            let _ = input.send(TcpInput::Closed(peer)).await;
        }
        Err(_) => {
            tracing::warn!(%peer, "SIP TLS connect timed out");
            let _ = input.send(TcpInput::Closed(peer)).await;
        }
    }
}

async fn connect_sip_tcp(
    peer: SocketAddr,
    outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<TcpInput>,
) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await {
        Ok(Ok(stream)) => run_sip_tcp(stream, peer, outgoing, input).await,
        _ => {
            tracing::warn!(%peer, "SIP TCP connect failed");
            let _ = input.send(TcpInput::Closed(peer)).await;
        }
    }
}

/// One SIP TCP connection: frames messages by Content-Length (RFC 3261 §18.3) and writes
/// what the signalling task queues.
async fn run_sip_tcp<S>(
    stream: S,
    peer: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    input: mpsc::Sender<TcpInput>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // RFC 5626 §3.5.1: a double-CRLF "ping" between messages is answered with a CRLF "pong".
    let (pong_tx, mut pongs) = mpsc::channel::<()>(4);
    let write_task = tokio::spawn(async move {
        loop {
            let bytes: Vec<u8> = tokio::select! {
                queued = outgoing.recv() => match queued {
                    Some(bytes) => bytes,
                    None => break,
                },
                Some(()) = pongs.recv() => b"\r\n".to_vec(),
            };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buffer: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    'read: loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        loop {
            // Keepalive CRLFs between messages are dropped here so that a peer sending only
            // keepalives never grows the buffer.
            let blank = buffer
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let ping = buffer[..blank].windows(4).any(|w| w == b"\r\n\r\n");
            if blank == buffer.len() && !ping && blank < 4 {
                // Half a ping may be in flight; it is at most three bytes.
                break;
            }
            if ping {
                let _ = pong_tx.try_send(());
            }
            buffer.drain(..blank);
            if buffer.is_empty() {
                break;
            }
            match Message::parse_stream(&buffer) {
                Ok((message, used)) => {
                    buffer.drain(..used.min(buffer.len()));
                    if input
                        .send(TcpInput::Message(peer, Box::new(message)))
                        .await
                        .is_err()
                    {
                        break 'read;
                    }
                }
                Err(ParseError::Incomplete) => {
                    if buffer.len() > MAX_MESSAGE_SIZE {
                        tracing::info!(%peer, "oversize SIP message on TCP; closing");
                        break 'read;
                    }
                    break;
                }
                Err(error) => {
                    // The stream cannot be re-framed after a bad message: answer and close.
                    let _ = input.send(TcpInput::Invalid(peer, Box::new(error))).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break 'read;
                }
            }
        }
    }
    let _ = input.send(TcpInput::Closed(peer)).await;
    write_task.abort();
}
