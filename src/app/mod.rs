//! Wiring: binds the listeners, starts the HTTP side, the WebRTC host, the call-log writer
//! and the recording writer, and runs the one signalling task. That task owns the gateway
//! core (`gateway::Gateway`) outright: it hands it SIP, agents' and operators' requests,
//! media events and the time, and carries out what it asks (SIP to send, media tasks to
//! start and steer, notices, call-log writes, name lookups). No call policy lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::controller::{CallId, ConnId, ConnKind, Notice};
use crate::gateway::{Gateway, Input, Output, Persist, Seeds};
use crate::media::recording::{RecordingFormat, RecordingWriter};
use crate::media::stats::MediaCounters;
use crate::sip::message::{Message, MAX_MESSAGE_SIZE};
use crate::sip::transaction::{Transmit, Transport};
use crate::store::StoreOp;
use crate::webrtc::{PeerCodec, WebrtcCounters, WebrtcEvent, WebrtcHost, WebrtcInput};

mod handle;
mod listeners;
mod media;
mod sip_stream;

pub use crate::gateway::{AgentCall, AgentError, AgentView, LiveCall, WallClock};
pub use handle::{AdminRequest, AgentInput, AgentOutbound, AppHandle, AGENT_OUTBOUND_CAPACITY};
use sip_stream::{StreamInput, Streams};

/// Inbound SIP from TCP connections to the signalling task. When full, connection readers
/// wait (TCP back-pressure), which is the right thing for a stream.
const TCP_INPUT_CAPACITY: usize = 1024;
/// Media events (announcement finished, DTMF): media tasks `try_send` and never wait.
const MEDIA_EVENT_CAPACITY: usize = 4096;
/// Operator requests from the HTTP API.
const ADMIN_CAPACITY: usize = 64;
/// Agent connections' requests to the signalling task; a full queue makes the WebSocket task
/// wait (back-pressure on that one agent).
const AGENT_INPUT_CAPACITY: usize = 1024;
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

/// 32 bytes from the operating system's generator.
fn os_random() -> [u8; 32] {
    use rand::RngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    seed
}

/// The error for a listener that could not bind, naming it and its address.
fn bind_failed(what: &'static str, addr: SocketAddr) -> impl FnOnce(std::io::Error) -> AppError {
    move |source| AppError::Bind { what, addr, source }
}

/// The signalling task's state: the core, and the world it is wired to.
struct Shell {
    gateway: Gateway,
    /// Maps the core's monotonic time to the wall clock, as the API does.
    clock: WallClock,
    udp: Arc<UdpSocket>,
    streams: Streams,
    media: media::Media,
    /// Open agent connections: where their notices go, and their browsers' codecs.
    outbound: HashMap<ConnId, mpsc::Sender<AgentOutbound>>,
    codecs: HashMap<ConnId, Arc<PeerCodec>>,
    webrtc: mpsc::Sender<WebrtcInput>,
    store: mpsc::Sender<StoreOp>,
    /// This turn's call-log changes (`write_store` sends them).
    store_queue: Vec<StoreOp>,
    /// Operators' dials waiting for their outcome.
    dials: HashMap<CallId, oneshot::Sender<Result<CallId, String>>>,
    names: Arc<crate::names::Names>,
    named: mpsc::Sender<(CallId, crate::controller::Prospect)>,
    gateway_counters: Arc<crate::metrics::GatewayCounters>,
    /// In a cluster, where this node's agents are claimed and released (`claims.rs`).
    claims: Option<mpsc::Sender<crate::cluster::ClaimOp>>,
}

/// The configuration file, checked, with the names of its trunks' proxies looked up: the one
/// DNS the gateway does, here at start, so the cores never do any.
pub fn load_config(path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
    let mut config = Config::load(path)?;
    config.resolve_trunks(|host, port| {
        use std::net::ToSocketAddrs;
        (host, port).to_socket_addrs().ok()?.next().map(|a| a.ip())
    })?;
    // The store's URL is read by its client: a bad one is a configuration error too.
    if let Err(crate::store::StoreError::Url { reason }) =
        crate::store::Location::from_config(&config.store)
    {
        return Err(crate::config::ConfigError::Invalid {
            key: "store.url".into(),
            problem: reason,
        });
    }
    Ok(config)
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
    let (tcp, http, sip_tls) =
        listeners::limit_listeners(&config, tcp, http, sip_tls, &gateway_counters);
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
        host = host.with_tcp(listeners::ice_tcp_listener(
            &config,
            listener,
            &gateway_counters,
        ))?;
    }
    tokio::spawn(host.run(webrtc_rx));
    let (agents_tx, mut agents_rx) = mpsc::channel(AGENT_INPUT_CAPACITY);
    // The call log: opened (and migrated) before anything listens, so a bad path or an
    // unreachable PostgreSQL stops the start naming its key; this node's calls left live by a
    // crash are closed as failed. Both clients block: off the async workers.
    let location = crate::store::Location::from_config(&config.store)?;
    let hooks = Arc::new(crate::webhooks::hooks(
        &config.webhooks,
        config.public_url(),
        config.cluster.as_ref().map(|c| c.node.clone()),
    ));
    let readers = Arc::new(crate::store::Readers::new(location.clone()));
    let (orphans, names) = {
        let (location, hooks, readers) =
            (location.clone(), Arc::clone(&hooks), Arc::clone(&readers));
        let (country_code, lookup) = (config.contacts.country_code.clone(), config.lookup.clone());
        tokio::task::spawn_blocking(move || {
            let mut db = location.open()?;
            // Their writer died with the last run: bring each header up to its data.
            for path in crate::store::orphan_recordings(&mut db, &hooks.node)? {
                match crate::media::recorder::repair(&path) {
                    Ok(true) => {
                        tracing::warn!(path = %path.display(), "recording header repaired")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "recording could not be repaired"),
                }
            }
            let now = crate::store::millis(SystemTime::now());
            let orphans = crate::store::end_orphans(&mut db, &hooks, now)?;
            let names = crate::names::Names::new(readers, country_code, lookup);
            Ok::<_, crate::store::StoreError>((orphans, Arc::new(names)))
        })
        .await??
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
            location.clone(),
            config.webhooks.clone(),
            Arc::clone(&hooks),
        ));
    }
    let (named_tx, mut named_rx) = mpsc::channel(crate::gateway::NAMING_CAPACITY);
    // In a cluster each signed-in agent is claimed in the shared store; an agent another node
    // claims arrives on `claims_lost`. Without one, nothing ever arrives there.
    // A cluster's node is reached at its public URL (an origin, checked with the config).
    let nodes = config.cluster.as_ref().map(|cluster| {
        crate::cluster::Nodes::new(crate::cluster::NodeInfo {
            node: cluster.node.clone(),
            url: config.public_url(),
        })
    });
    let (claims, mut claims_lost, _no_claims) = match (&config.cluster, &nodes) {
        (Some(cluster), Some(nodes)) => {
            let (claims, lost) = crate::cluster::start(
                location.clone(),
                crate::cluster::Membership {
                    node: cluster.node.clone(),
                    url: config.public_url(),
                    lease: Duration::from_secs(cluster.lease),
                    hooks: Arc::clone(&hooks),
                    nodes: nodes.clone(),
                },
            );
            (Some(claims), lost, None)
        }
        _ => {
            let (keep, lost) = mpsc::channel(1);
            (None, lost, Some(keep))
        }
    };
    let writer = tokio::spawn(crate::store::run_writer(location, hooks, store_rx));
    let clock = WallClock::pinned(Instant::now(), SystemTime::now());
    let udp = Arc::new(udp);
    let (tcp_tx, mut tcp_rx) = mpsc::channel(TCP_INPUT_CAPACITY);
    let (media_tx, mut media_rx) = mpsc::channel(MEDIA_EVENT_CAPACITY);
    let (admin_tx, mut admin_rx) = mpsc::channel(ADMIN_CAPACITY);
    let counters = Arc::new(MediaCounters::default());

    tokio::spawn(sip_stream::accept_sip_tcp(tcp, tcp_tx.clone()));
    if let (Some(listener), Some(cert), Some(key)) =
        (sip_tls, &config.sip.tls_cert, &config.sip.tls_key)
    {
        let tls = crate::api::tls::server_config_for("sip", cert, key, None)?;
        let listener = crate::api::tls::TlsListener::new(listener, tls)?;
        tokio::spawn(sip_stream::accept_sip_tls(listener, tcp_tx.clone()));
    }
    let streams = Streams::new(&config, tcp_tx)?;
    let (media, ports) = media::Media::new(
        &config,
        media_tx,
        Arc::clone(&counters),
        recordings.clone(),
        webrtc_tx.clone(),
    )?;
    let handle = AppHandle {
        admin: admin_tx,
        agents: agents_tx,
        webrtc: webrtc_tx.clone(),
        config: Arc::clone(&config),
        counters,
        webrtc_counters,
        clock,
        next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        store: store_tx.downgrade(),
        gateway_counters: Arc::clone(&gateway_counters),
        names: Arc::clone(&names),
        call_log: readers,
        nodes,
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

    let seeds = Seeds {
        sip: os_random(),
        nonce: os_random(),
        call_ids: os_random(),
    };
    let now = Instant::now();
    let gateway = Gateway::new(
        Arc::clone(&config),
        seeds,
        Box::new(ports),
        now,
        clock.at(now),
    );
    let mut shell = Shell {
        gateway,
        clock,
        udp: Arc::clone(&udp),
        streams,
        media,
        outbound: HashMap::new(),
        codecs: HashMap::new(),
        webrtc: webrtc_tx,
        store: store_tx,
        store_queue: Vec::new(),
        dials: HashMap::new(),
        names,
        named: named_tx,
        gateway_counters,
        claims,
    };
    tracing::info!(sip = %sip_addr, http = %config.http.listen, "callgate listening");

    let mut udp_buf = vec![0u8; MAX_MESSAGE_SIZE + 1];
    if let Err(e) = crate::overload::prepare_socket(&udp) {
        tracing::warn!(error = %e, "no SIP receive timestamps: overload control is off");
    }
    let mut load = crate::overload::LoadGauge::default();
    let mut shutting_down: Option<Instant> = None;
    loop {
        let deadline = shell
            .gateway
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::select! {
            ready = udp.readable() => match ready {
                Ok(()) => {
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
                                        shell.gateway.b2bua().admitted_calls(),
                                    );
                                    shell.gateway.set_admission(admission.rate, admission.shed_all);
                                }
                                shell.gateway_counters.sip_in(&udp_buf[..n]);
                                shell.input(Input::Datagram { source, bytes: &udp_buf[..n] });
                                shell.flush().await;
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
            Some(input) = tcp_rx.recv() => shell.on_stream(input),
            Some(event) = media_rx.recv() => shell.input(Input::Media(event)),
            Some(request) = admin_rx.recv() => shell.on_admin(request).await,
            Some(input) = agents_rx.recv() => shell.on_agent(input).await,
            Some((call, prospect)) = named_rx.recv() => shell.input(Input::Named { call, prospect }),
            Some(agent) = claims_lost.recv() => {
                shell.input(Input::AgentClaimedElsewhere { agent: agent.into() });
            }
            Some(event) = webrtc_events.recv() => match event {
                WebrtcEvent::Connected { peer } => tracing::debug!(peer, "agent media up"),
                WebrtcEvent::Disconnected { peer } => tracing::debug!(peer, "agent media down"),
            },
            _ = sleep => shell.input(Input::Timeout),
            _ = terminate.recv(), if shutting_down.is_none() => {
                tracing::info!(calls = shell.gateway.live_legs(), "shutting down: ending live calls");
                shutting_down = Some(Instant::now());
                shell.input(Input::Shutdown);
            }
        }
        shell.flush().await;
        shell.write_store();
        shell.count();
        if let Some(started) = shutting_down {
            if shell.gateway.live_legs() == 0 || started.elapsed() > SHUTDOWN_GRACE {
                break;
            }
        }
    }
    // Every ended call has reached the call log's queue (flushed above) before the writer
    // is let go of.
    shell.media.stop_all();
    drop(shell);
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

impl Shell {
    /// Hand the core an input with the time; its output waits for `flush`.
    fn input(&mut self, input: Input<'_>) {
        let now = Instant::now();
        self.gateway.handle(now, self.clock.at(now), input);
    }

    /// Carry out everything the core asked for.
    async fn flush(&mut self) {
        while let Some(output) = self.gateway.poll_output() {
            match output {
                Output::Transmit(transmit) => self.transmit(transmit).await,
                Output::Media { call, op } => self.media.apply(call, op, &self.codecs),
                Output::Unroute { conn } => self.media.unroute(conn),
                Output::Notify { conn, notice } => self.notify(conn, notice),
                Output::Close { conn, reason } => {
                    self.codecs.remove(&conn);
                    if let Some(outbound) = self.outbound.remove(&conn) {
                        let code = crate::api::agent::close_code(reason);
                        let _ = outbound.try_send(AgentOutbound::Close(code));
                    }
                }
                Output::Persist(change) => self.persist(change),
                Output::Dialled { call, result } => {
                    if let Some(reply) = self.dials.remove(&call) {
                        let _ = reply.send(result);
                    }
                }
                Output::LookupName { call, number } => self.look_up(call, number),
            }
        }
    }

    /// The caller's name from the directory or the CRM, in a task of its own; at once when
    /// there is nowhere to look (the directory is empty and no lookup configured).
    fn look_up(&mut self, call: CallId, number: String) {
        if !self.names.in_use() {
            self.input(Input::Named {
                call,
                prospect: Default::default(),
            });
            return;
        }
        let names = Arc::clone(&self.names);
        let named = self.named.clone();
        tokio::spawn(async move {
            let prospect = names.inbound(&number).await;
            let _ = named.send((call, prospect)).await;
        });
    }

    /// Call-log changes wait for the end of the loop's turn: the writer then takes them in
    /// one transaction, as it took the old per-turn sync, instead of waking for each.
    fn persist(&mut self, change: Persist) {
        let op = match change {
            Persist::Call { record, at } => StoreOp::Call { call: record, at },
            Persist::Recording {
                call,
                path,
                segment,
            } => StoreOp::Recording {
                call_id: call.into(),
                path,
                segment,
            },
        };
        self.store_queue.push(op);
    }

    /// Hand the turn's call-log changes to the writer.
    fn write_store(&mut self) {
        for op in self.store_queue.drain(..) {
            if self.store.try_send(op).is_err() {
                tracing::error!("call log queue full; change not recorded");
            }
        }
    }

    fn notify(&mut self, conn: ConnId, notice: Notice) {
        let Some(outbound) = self.outbound.get(&conn) else {
            return;
        };
        if outbound.try_send(AgentOutbound::Notice(notice)).is_err() {
            tracing::warn!(
                conn,
                "agent not reading its notices; closing its connection"
            );
            let _ = outbound.try_send(AgentOutbound::Close(1008));
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
            Transport::Tcp | Transport::Tls => self.streams.send(transmit),
        }
    }

    fn on_stream(&mut self, input: StreamInput) {
        match input {
            StreamInput::Connected(peer, writer, transport) => {
                self.streams.connected(peer, writer, transport)
            }
            StreamInput::Message(peer, message) => {
                self.gateway_counters.sip_in_label(match &*message {
                    Message::Request(r) => {
                        crate::metrics::method_label(r.method.as_str()).to_string()
                    }
                    Message::Response(r) => r.status.to_string(),
                });
                let transport = self.streams.transport(peer);
                self.input(Input::Stream {
                    peer,
                    transport,
                    message,
                });
            }
            StreamInput::Invalid(peer, error) => {
                let transport = self.streams.transport(peer);
                self.input(Input::StreamInvalid {
                    peer,
                    transport,
                    error,
                });
            }
            StreamInput::Closed(peer) => {
                let transport = self.streams.transport(peer);
                self.input(Input::StreamClosed { peer, transport });
                self.streams.closed(peer);
            }
        }
    }

    async fn on_admin(&mut self, request: AdminRequest) {
        let now = Instant::now();
        let wall = self.clock.at(now);
        match request {
            AdminRequest::Dial { to, plan, reply } => {
                let call = self.gateway.dial(now, wall, to, plan);
                self.dials.insert(call, reply);
            }
            AdminRequest::Hangup { call, reply } => {
                let known = self.gateway.hangup(now, wall, &call.clone());
                let _ = reply.send(known);
            }
            AdminRequest::Agents { reply } => {
                let _ = reply.send(self.gateway.agents());
            }
            AdminRequest::Calls { reply } => {
                let _ = reply.send(self.gateway.calls());
            }
            AdminRequest::Dtmf {
                call,
                digits,
                reply,
            } => {
                let _ = reply.send(self.gateway.send_dtmf(&call.clone(), digits));
            }
        }
        self.flush().await;
    }

    async fn on_agent(&mut self, input: AgentInput) {
        match input {
            AgentInput::Connect {
                agent,
                conn,
                kind,
                codec,
                outbound,
                reply,
            } => {
                self.outbound.insert(conn, outbound);
                self.codecs.insert(conn, codec);
                self.input(Input::AgentConnected {
                    agent: agent.clone(),
                    conn,
                    kind,
                });
                if !self.gateway.is_connected(conn) {
                    self.outbound.remove(&conn);
                    self.codecs.remove(&conn);
                    let _ = reply.send(None);
                    return;
                }
                // A monitoring connection claims nothing: the supervisor is signed in on
                // another node.
                if let Some(claims) = self.claims.as_ref().filter(|_| kind == ConnKind::Calls) {
                    if claims
                        .try_send(crate::cluster::ClaimOp::Claim(agent.to_string()))
                        .is_err()
                    {
                        tracing::warn!(%agent, "agent claim queue full; the next refresh makes it");
                    }
                }
                // What the connection it replaces is told comes first.
                self.flush().await;
                let _ = reply.send(Some(self.gateway.snapshot(&agent)));
            }
            AgentInput::Disconnect { agent, conn } => {
                tracing::info!(%agent, conn, "agent disconnected");
                let _ = self.webrtc.try_send(WebrtcInput::Close { peer: conn });
                self.outbound.remove(&conn);
                self.codecs.remove(&conn);
                self.input(Input::AgentDisconnected {
                    agent: agent.clone(),
                    conn,
                });
                if let Some(claims) = &self.claims {
                    if !self.gateway.is_signed_in(&agent) {
                        // Full queue: the claim lapses with its lease instead.
                        let _ =
                            claims.try_send(crate::cluster::ClaimOp::Release(agent.to_string()));
                    }
                }
            }
            AgentInput::LogSaved { agent, prospect } => {
                self.input(Input::LogSaved { agent, prospect });
            }
            AgentInput::Snapshot { agent, reply } => {
                let _ = reply.send(self.gateway.snapshot(&agent));
            }
            AgentInput::Request {
                agent,
                request,
                reply,
            } => {
                let now = Instant::now();
                let result = self
                    .gateway
                    .request(now, self.clock.at(now), &agent, request);
                self.flush().await;
                let _ = reply.send(result);
            }
        }
    }

    /// The gateway's gauges for /metrics.
    fn count(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let b2bua = self.gateway.b2bua();
        let counters = &self.gateway_counters;
        counters.set_sip_dropped(b2bua.guard_drops());
        counters.calls_shed.store(b2bua.shed_calls(), Relaxed);
        let (servers, clients) = b2bua.live_transactions();
        counters.server_transactions.store(servers as u64, Relaxed);
        counters.client_transactions.store(clients as u64, Relaxed);
    }
}
