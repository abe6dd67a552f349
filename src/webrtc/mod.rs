//! The agents' peer connections: one task over str0m owns one UDP socket that carries every
//! agent's ICE, DTLS-SRTP and RTP. It answers browser offers (ICE-lite, host candidate on the
//! configured address), writes the frames calls send toward each agent with one continuous
//! RTP stream per peer connection whatever call they come from, and hands each agent's
//! microphone packets to the one call that agent's audio is routed to. With
//! `webrtc.tcp_listen` it also offers a passive ICE-TCP candidate (`tcp`), for browsers whose
//! network blocks UDP. It knows peers and call ids as opaque routes, never queues or call
//! policy.

pub mod downlink;
mod mmsg;
pub mod peer;
pub mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::sdp::Codec;
use downlink::{Downlink, DownlinkMode, SimulatedLoss};
use mmsg::{RecvBatch, SendQueue, BATCH_DATAGRAMS};

/// One agent connection's peer connection.
pub type PeerId = u64;

/// Capacity of the task's input channel. Audio frames from every bridged call pass through
/// it (50 a second each); when it is full a frame is dropped and counted, never waited for.
pub const INPUT_CAPACITY: usize = 8192;
/// Capacity of a call's channel of agent packets; a call that stops reading loses packets.
pub const AGENT_AUDIO_CAPACITY: usize = 64;
/// A peer that has not finished ICE and DTLS this long after its offer is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Inputs and datagrams taken per wake-up before the touched peers are drained.
const BATCH: usize = 256;
/// How often each peer's RTCP statistics (the loss its browser reports) are looked at.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// Largest datagram read from the socket.
const DATAGRAM_MAX: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum WebrtcError {
    #[error("offer SDP: {0}")]
    BadOffer(String),
    #[error("the offer has no audio the gateway can use (Opus, PCMU or PCMA)")]
    NoAudio,
    #[error("candidate: {0}")]
    BadCandidate(String),
    #[error("no peer connection for this agent yet")]
    NoPeer,
    #[error("peer connection: {0}")]
    Rtc(String),
    #[error("the WebRTC task has stopped")]
    Stopped,
}

/// What the calls that encode for an agent's browser need to know of it, shared so they can
/// follow it without a round trip: the codec to send it (chosen from what it negotiated and,
/// with the adaptive downlink, from the loss it reports; either may change mid-call) and the
/// packet loss it reports in its RTCP receiver reports.
#[derive(Debug, Default)]
pub struct PeerCodec {
    codec: AtomicU8,
    loss_percent: AtomicU8,
    /// The codecs it negotiated (bit per `code`), and whether it may hear its source's codec
    /// untouched when it negotiated it (an adaptive downlink on a clean path).
    negotiated: AtomicU8,
    pass_source: std::sync::atomic::AtomicBool,
}

impl PeerCodec {
    pub fn get(&self) -> Option<Codec> {
        match self.codec.load(Ordering::Relaxed) {
            1 => Some(Codec::Pcmu),
            2 => Some(Codec::Pcma),
            3 => Some(Codec::Opus),
            _ => None,
        }
    }

    /// A codec fixed from the start (the far leg of a transfer, whose trunk codec it is).
    pub fn of(codec: Codec) -> PeerCodec {
        let c = PeerCodec::default();
        c.set(Some(codec));
        c
    }

    /// What a call whose audio is in `source` sends it: `source` itself on an adaptive
    /// downlink's clean path when it negotiated it (passed through), otherwise `get()`.
    pub fn toward(&self, source: Codec) -> Option<Codec> {
        let negotiated = self.negotiated.load(Ordering::Relaxed) & (1 << code(Some(source))) != 0;
        if negotiated && self.pass_source.load(Ordering::Relaxed) {
            return Some(source);
        }
        self.get()
    }

    pub(crate) fn set(&self, codec: Option<Codec>) {
        self.codec.store(code(codec), Ordering::Relaxed);
    }

    /// Publish a downlink decision: the codec, the codecs negotiated, and whether a
    /// source's own codec may pass.
    fn publish(&self, downlink: &Downlink, negotiated: &[Codec]) {
        let mask = negotiated.iter().fold(0u8, |m, c| m | 1 << code(Some(*c)));
        self.negotiated.store(mask, Ordering::Relaxed);
        self.pass_source
            .store(downlink.passes_source(), Ordering::Relaxed);
        self.set(downlink.current());
    }

    /// The share of our packets the browser last reported lost, in percent.
    pub fn loss_percent(&self) -> u8 {
        self.loss_percent.load(Ordering::Relaxed)
    }

    pub(crate) fn set_loss(&self, fraction: f32) {
        let percent = (fraction.clamp(0.0, 1.0) * 100.0).round() as u8;
        self.loss_percent.store(percent, Ordering::Relaxed);
    }
}

fn code(codec: Option<Codec>) -> u8 {
    match codec {
        None => 0,
        Some(Codec::Pcmu) => 1,
        Some(Codec::Pcma) => 2,
        Some(Codec::Opus) => 3,
    }
}

/// An RTP packet of the agent's microphone, for the call it is routed to.
#[derive(Debug, Clone)]
pub struct AgentPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub codec: Codec,
    pub payload: Vec<u8>,
}

/// Where an agent's microphone goes: the active call.
#[derive(Debug, Clone)]
pub struct Route {
    pub call: String,
    pub to_call: mpsc::Sender<AgentPacket>,
}

#[derive(Debug)]
pub enum WebrtcInput {
    /// A browser's offer; the reply is our answer SDP. A second offer from the same agent
    /// connection replaces its peer connection (the route and stream continue).
    Offer {
        peer: PeerId,
        sdp: String,
        codec: Arc<PeerCodec>,
        reply: oneshot::Sender<Result<String, WebrtcError>>,
    },
    /// A trickled candidate from the browser (`a=candidate` value, with or without the
    /// `candidate:` prefix).
    Candidate {
        peer: PeerId,
        candidate: String,
        reply: oneshot::Sender<Result<(), WebrtcError>>,
    },
    /// Route the agent's microphone to a call, or to none. Frames toward the agent are
    /// accepted only from the routed call, so a switch takes effect in one frame.
    Route { peer: PeerId, route: Option<Route> },
    /// One 20 ms frame from a call toward its agent, already encoded in `codec`.
    Audio {
        peer: PeerId,
        call: String,
        codec: Codec,
        payload: Vec<u8>,
    },
    /// The agent connection is gone.
    Close { peer: PeerId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebrtcEvent {
    /// ICE and DTLS are up: audio can flow.
    Connected { peer: PeerId },
    /// The peer connection failed or closed on its own.
    Disconnected { peer: PeerId },
}

/// How the codec toward browsers is chosen (`webrtc.downlink` and its companions).
#[derive(Debug, Clone, Copy)]
pub struct DownlinkOptions {
    pub mode: DownlinkMode,
    /// Clean reports for this long before an adaptive downlink leaves Opus.
    pub recover: Duration,
    pub simulated_loss: Option<SimulatedLoss>,
}

impl Default for DownlinkOptions {
    fn default() -> Self {
        DownlinkOptions {
            mode: DownlinkMode::Adaptive,
            recover: Duration::from_secs(30),
            simulated_loss: None,
        }
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WebrtcCounters {
    pub frames_out: std::sync::atomic::AtomicU64,
    pub frames_in: std::sync::atomic::AtomicU64,
    pub frames_dropped: std::sync::atomic::AtomicU64,
    pub peers_connected: std::sync::atomic::AtomicU64,
}

struct Peer {
    rtc: Rtc,
    created: Instant,
    connected: bool,
    mid: Option<Mid>,
    codec: Arc<PeerCodec>,
    /// Our outgoing media time, continuous across calls, renegotiations and codec switches.
    stream_time: u64,
    /// The codec it hears, from what it negotiated and the loss it reports.
    downlink: Downlink,
    connected_at: Option<Instant>,
    /// RTP packets sent to it since it connected (for the simulated loss's spacing).
    rtp_sent: u64,
    stream_codec: Option<Codec>,
    last_write: Option<Instant>,
    next_timeout: Instant,
    /// The browser's Opus bandwidth was logged (once per peer connection).
    opus_logged: bool,
}

impl Peer {
    fn send_pt(&mut self, codec: Codec) -> Option<Pt> {
        let mid = self.mid?;
        let writer = self.rtc.writer(mid)?;
        let wanted = rtc_codec(codec);
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == wanted)
            .map(|p| p.pt());
        pt
    }

    /// The audio codecs this peer connection negotiated, best first.
    fn negotiated(&mut self) -> Vec<Codec> {
        let Some(writer) = self.mid.and_then(|mid| self.rtc.writer(mid)) else {
            return Vec::new();
        };
        let codecs: Vec<RtcCodec> = writer.payload_params().map(|p| p.spec().codec).collect();
        [Codec::Opus, Codec::Pcmu, Codec::Pcma]
            .into_iter()
            .filter(|c| codecs.contains(&rtc_codec(*c)))
            .collect()
    }

    /// Choose the downlink codec again from what is negotiated now, and publish it.
    fn renegotiated(&mut self) -> Option<Codec> {
        let negotiated = self.negotiated();
        let codec = self.downlink.negotiated(&negotiated);
        self.codec.publish(&self.downlink, &negotiated);
        codec
    }
}

fn rtc_codec(codec: Codec) -> RtcCodec {
    match codec {
        Codec::Opus => RtcCodec::Opus,
        Codec::Pcmu => RtcCodec::PCMU,
        Codec::Pcma => RtcCodec::PCMA,
    }
}

fn codec_of(codec: RtcCodec) -> Option<Codec> {
    match codec {
        RtcCodec::Opus => Some(Codec::Opus),
        RtcCodec::PCMU => Some(Codec::Pcmu),
        RtcCodec::PCMA => Some(Codec::Pcma),
        _ => None,
    }
}

/// The str0m process-wide crypto provider (aws-lc-rs); call once before any peer exists.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The WebRTC shell: one socket, every agent's peer connection.
pub struct WebrtcHost {
    socket: UdpSocket,
    local: SocketAddr,
    /// The address written in our host candidate.
    advertised: SocketAddr,
    peers: HashMap<PeerId, Peer>,
    /// Remote transport addresses already matched to a peer, so most packets skip the search.
    sources: HashMap<SocketAddr, PeerId>,
    /// Each agent's routed call; kept apart from the peer so it holds before media is up.
    routes: HashMap<PeerId, Route>,
    events: mpsc::Sender<WebrtcEvent>,
    counters: Arc<WebrtcCounters>,
    /// The earliest timeout of any peer: peers are only scanned when it has passed, not on
    /// every packet.
    earliest: Instant,
    /// Peers given input in this batch, drained once when the batch is done.
    dirty: Vec<PeerId>,
    /// What the peers want sent, sent together once a round's polls are done.
    outgoing: SendQueue,
    downlink: DownlinkOptions,
    /// ICE over TCP, when configured: the listener's address, the one our candidate
    /// advertises, and what the connections send.
    tcp: Option<TcpSide>,
}

struct TcpSide {
    local: SocketAddr,
    advertised: SocketAddr,
    events: mpsc::Receiver<tcp::TcpEvent>,
    connections: HashMap<SocketAddr, TcpConnection>,
}

struct TcpConnection {
    writer: mpsc::Sender<Vec<u8>>,
    opened: Instant,
    /// A peer took a frame from it (it is an agent's browser, not a stranger).
    recognised: bool,
}

impl WebrtcHost {
    pub fn new(
        socket: UdpSocket,
        advertised_ip: Option<std::net::IpAddr>,
        events: mpsc::Sender<WebrtcEvent>,
        counters: Arc<WebrtcCounters>,
    ) -> std::io::Result<WebrtcHost> {
        install_crypto();
        let local = socket.local_addr()?;
        let advertised = SocketAddr::new(advertised_ip.unwrap_or(local.ip()), local.port());
        Ok(WebrtcHost {
            socket,
            local,
            advertised,
            peers: HashMap::new(),
            sources: HashMap::new(),
            routes: HashMap::new(),
            events,
            counters,
            earliest: Instant::now() + Duration::from_secs(1),
            dirty: Vec::new(),
            outgoing: SendQueue::default(),
            downlink: DownlinkOptions::default(),
            tcp: None,
        })
    }

    /// Offer a passive ICE-TCP candidate on `listener` too (its address advertised with the
    /// UDP candidate's IP).
    pub fn with_tcp(mut self, listener: crate::conn::LimitedTcp) -> std::io::Result<WebrtcHost> {
        let local = listener.local_addr()?;
        let (events_tx, events) = mpsc::channel(INPUT_CAPACITY);
        tokio::spawn(tcp::accept(listener, events_tx));
        self.tcp = Some(TcpSide {
            local,
            advertised: SocketAddr::new(self.advertised.ip(), local.port()),
            events,
            connections: HashMap::new(),
        });
        Ok(self)
    }

    /// How the codec toward each browser is chosen (adaptive by default).
    pub fn with_downlink(mut self, downlink: DownlinkOptions) -> WebrtcHost {
        self.downlink = downlink;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Run until the input channel closes.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<WebrtcInput>) {
        let mut arrivals = RecvBatch::new(DATAGRAM_MAX);
        loop {
            let deadline = self.earliest;
            let readable = tokio::select! {
                ready = self.socket.readable() => ready.is_ok(),
                input = inputs.recv() => match input {
                    Some(input) => {
                        self.on_input(input);
                        false
                    }
                    None => break,
                },
                Some(event) = next_tcp(&mut self.tcp) => {
                    self.on_tcp(event);
                    false
                }
                _ = tokio::time::sleep_until(deadline.into()) => false,
            };
            // Frames that came over TCP meanwhile, as datagrams are taken below.
            for _ in 0..BATCH {
                match self.tcp.as_mut().map(|t| t.events.try_recv()) {
                    Some(Ok(event)) => self.on_tcp(event),
                    _ => break,
                }
            }
            // Take whatever else is already waiting before draining the peers it touched: a
            // busy gateway polls each peer once per batch rather than once per packet.
            for _ in 0..BATCH {
                match inputs.try_recv() {
                    Ok(input) => self.on_input(input),
                    Err(_) => break,
                }
            }
            if readable {
                for _ in 0..BATCH / BATCH_DATAGRAMS {
                    match arrivals.recv(&self.socket) {
                        Ok(n) => {
                            for (source, bytes) in arrivals.datagrams() {
                                self.on_datagram(source, bytes);
                            }
                            if n < BATCH_DATAGRAMS {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            self.dirty.sort_unstable();
            self.dirty.dedup();
            let dirty = std::mem::take(&mut self.dirty);
            for id in &dirty {
                self.drain(*id);
            }
            self.dirty = dirty;
            self.dirty.clear();
            if Instant::now() >= self.earliest {
                self.on_timeouts();
            }
            // Everything this round produced, in as few system calls as it takes.
            if !self.outgoing.is_empty() {
                self.outgoing.flush(&self.socket).await;
            }
        }
        for (_, mut peer) in self.peers.drain() {
            peer.rtc.disconnect();
        }
    }

    fn on_tcp(&mut self, event: tcp::TcpEvent) {
        let Some(side) = self.tcp.as_mut() else {
            return;
        };
        match event {
            tcp::TcpEvent::Opened { remote, writer } => {
                let now = Instant::now();
                side.connections.insert(
                    remote,
                    TcpConnection {
                        writer,
                        opened: now,
                        recognised: false,
                    },
                );
            }
            tcp::TcpEvent::Closed { remote } => {
                side.connections.remove(&remote);
            }
            tcp::TcpEvent::Frame { remote, bytes } => {
                let destination = side.local;
                if let Some(id) = self.on_packet(Protocol::Tcp, remote, destination, &bytes) {
                    if let Some(c) = self
                        .tcp
                        .as_mut()
                        .and_then(|t| t.connections.get_mut(&remote))
                    {
                        if !c.recognised {
                            c.recognised = true;
                            tracing::info!(peer = id, %remote, "ICE over TCP: a browser connected to the TCP candidate");
                        }
                    }
                }
            }
        }
    }

    fn on_datagram(&mut self, source: SocketAddr, bytes: &[u8]) {
        let local = self.local;
        self.on_packet(Protocol::Udp, source, local, bytes);
    }

    /// A packet from a browser, over UDP or TCP: to the peer it belongs to (which is
    /// returned), or dropped.
    fn on_packet(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) -> Option<PeerId> {
        let now = Instant::now();
        let Ok(contents) = bytes.try_into() else {
            return None;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let known = self
            .sources
            .get(&source)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|p| p.rtc.accepts(&input)));
        let id = known.or_else(|| {
            self.peers
                .iter()
                .find(|(_, p)| p.rtc.accepts(&input))
                .map(|(id, _)| *id)
        });
        let Some(id) = id else {
            tracing::trace!(%source, ?proto, "packet for no peer");
            return None;
        };
        self.sources.insert(source, id);
        if let Some(peer) = self.peers.get_mut(&id) {
            if let Err(e) = peer.rtc.handle_input(input) {
                tracing::debug!(peer = id, error = %e, "peer input failed; closing");
                peer.rtc.disconnect();
            }
        }
        self.dirty.push(id);
        Some(id)
    }

    fn on_timeouts(&mut self) {
        let now = Instant::now();
        // ICE-TCP connections that no peer recognised in time are strangers: dropping the
        // writer closes them.
        if let Some(side) = self.tcp.as_mut() {
            side.connections.retain(|addr, c| {
                let keep =
                    c.recognised || now.duration_since(c.opened) < tcp::UNRECOGNISED_TIMEOUT;
                if !keep {
                    tracing::debug!(remote = %addr, "ICE-TCP connection no peer recognised; closed");
                }
                keep
            });
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(peer) = self.peers.get_mut(&id) {
                if !peer.connected && now.duration_since(peer.created) > CONNECT_TIMEOUT {
                    tracing::info!(peer = id, "peer connection never came up; dropping it");
                    peer.rtc.disconnect();
                } else if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(peer = id, error = %e, "peer timeout failed; closing");
                    peer.rtc.disconnect();
                }
            }
            self.drain(id);
        }
        self.earliest = self
            .peers
            .values()
            .map(|p| p.next_timeout)
            .min()
            .unwrap_or(now + Duration::from_secs(1));
    }

    fn on_input(&mut self, input: WebrtcInput) {
        match input {
            WebrtcInput::Offer {
                peer,
                sdp,
                codec,
                reply,
            } => {
                let result = self.accept_offer(peer, &sdp, codec);
                let _ = reply.send(result);
                self.dirty.push(peer);
            }
            WebrtcInput::Candidate {
                peer,
                candidate,
                reply,
            } => {
                let result = match self.peers.get_mut(&peer) {
                    None => Err(WebrtcError::NoPeer),
                    Some(p) => {
                        let text = candidate.trim();
                        let text = text.strip_prefix("a=").unwrap_or(text);
                        if text.is_empty() {
                            // End of candidates.
                            Ok(())
                        } else {
                            match Candidate::from_sdp_string(text) {
                                Ok(c) => {
                                    p.rtc.add_remote_candidate(c);
                                    Ok(())
                                }
                                Err(e) => Err(WebrtcError::BadCandidate(e.to_string())),
                            }
                        }
                    }
                };
                let _ = reply.send(result);
                self.dirty.push(peer);
            }
            WebrtcInput::Route { peer, route } => match route {
                Some(route) => {
                    self.routes.insert(peer, route);
                }
                None => {
                    self.routes.remove(&peer);
                }
            },
            WebrtcInput::Audio {
                peer,
                call,
                codec,
                payload,
            } => {
                self.write_audio(peer, &call, codec, payload);
                self.dirty.push(peer);
            }
            WebrtcInput::Close { peer } => {
                if let Some(mut p) = self.peers.remove(&peer) {
                    p.rtc.disconnect();
                    if p.connected {
                        self.counters
                            .peers_connected
                            .fetch_sub(1, Ordering::Relaxed);
                    }
                }
                self.sources.retain(|_, id| *id != peer);
                self.routes.remove(&peer);
            }
        }
    }

    fn accept_offer(
        &mut self,
        id: PeerId,
        sdp: &str,
        codec: Arc<PeerCodec>,
    ) -> Result<String, WebrtcError> {
        let offer =
            SdpOffer::from_sdp_string(sdp).map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let now = Instant::now();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            // Audio needs no RTP header extensions: without transport-cc the browser sends no
            // per-packet feedback, which is most of the RTCP a peer would otherwise cost.
            .clear_extension_map()
            // Receiver reports are read for the loss the browser sees, which decides whether
            // our Opus carries in-band FEC.
            .set_stats_interval(Some(STATS_INTERVAL))
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .build(now);
        let candidate =
            Candidate::host(self.advertised, "udp").map_err(|e| WebrtcError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        if let Some(tcp) = &self.tcp {
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp.advertised)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| WebrtcError::Rtc(e.to_string()))?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebrtcError::BadOffer(e.to_string()))?;
        let mut peer = Peer {
            rtc,
            created: now,
            connected: false,
            mid: None,
            codec,
            stream_time: rand::random::<u32>().into(),
            // A second offer keeps what the reports decided for the first.
            downlink: self.peers.get(&id).map_or_else(
                || Downlink::new(self.downlink.mode, self.downlink.recover),
                |old| old.downlink.clone(),
            ),
            connected_at: None,
            rtp_sent: 0,
            stream_codec: None,
            last_write: None,
            next_timeout: now,
            opus_logged: false,
        };
        // The audio m-line is known from the offer already; media flows once ICE is up.
        let audio_mid = sdp_audio_mids(sdp);
        peer.mid = audio_mid.into_iter().find_map(|m| {
            let mid = Mid::from(m.as_str());
            peer.rtc.media(mid).map(|_| mid)
        });
        // Decided, but published only once the new peer connection replaces the old one: an
        // offer without usable audio must not silence the call the old one carries.
        let codecs = peer.negotiated();
        let negotiated = peer.downlink.negotiated(&codecs);
        if negotiated.is_none() {
            return Err(WebrtcError::NoAudio);
        }
        peer.codec.publish(&peer.downlink, &codecs);
        if let Some(mut old) = self.peers.insert(id, peer) {
            old.rtc.disconnect();
            if old.connected {
                self.counters
                    .peers_connected
                    .fetch_sub(1, Ordering::Relaxed);
            }
            self.sources.retain(|_, p| *p != id);
        }
        tracing::debug!(peer = id, codec = ?negotiated, "answered browser offer");
        Ok(opus_narrowband(&answer.to_sdp_string()))
    }

    fn write_audio(&mut self, id: PeerId, call: &str, codec: Codec, payload: Vec<u8>) {
        if self.routes.get(&id).is_none_or(|r| r.call != call) {
            // A frame from a call that is no longer (or not yet) this agent's active one.
            return;
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.connected {
            return;
        }
        let Some(pt) = peer.send_pt(codec) else {
            self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let now = Instant::now();
        let rate = codec.clock_rate();
        let frame = u64::from(rate / 50);
        // Another codec (a renegotiation, or the adaptive downlink switching) may have another
        // clock rate: the timestamp goes on from its last value, now counting in the new rate,
        // so it never jumps on the one stream the browser plays. (RFC 7160 would rather see a
        // new SSRC per clock rate; browsers play one stream whose payload type changes, as
        // their own senders produce when they switch codecs, and a new SSRC would restart
        // their jitter buffer.)
        peer.stream_codec = Some(codec);
        // Consecutive frames advance by one frame; after a pause (no call routed), by the
        // time that passed, as RTP timestamps follow the sampling clock.
        let advance = match peer.last_write {
            Some(last) if now.duration_since(last) > Duration::from_millis(100) => {
                let elapsed =
                    now.duration_since(last).as_micros() as u64 * u64::from(rate) / 1_000_000;
                (elapsed / frame).max(1) * frame
            }
            Some(_) => frame,
            None => 0,
        };
        peer.stream_time = peer.stream_time.wrapping_add(advance);
        peer.last_write = Some(now);
        let time = MediaTime::new(
            peer.stream_time,
            Frequency::new(rate).unwrap_or(Frequency::EIGHT_KHZ),
        );
        let Some(mid) = peer.mid else {
            return;
        };
        let Some(writer) = peer.rtc.writer(mid) else {
            return;
        };
        match writer.write(pt, now, time, payload) {
            Ok(()) => {
                self.counters.frames_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(peer = id, error = %e, "cannot write audio");
                self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send what the peer wants sent and act on its events, until it only waits for time.
    fn drain(&mut self, id: PeerId) {
        loop {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            if !peer.rtc.is_alive() {
                let peer = self.peers.remove(&id);
                self.sources.retain(|_, p| *p != id);
                if peer.is_some_and(|p| p.connected) {
                    self.counters
                        .peers_connected
                        .fetch_sub(1, Ordering::Relaxed);
                }
                tracing::info!(peer = id, "peer connection closed");
                let _ = self.events.try_send(WebrtcEvent::Disconnected { peer: id });
                return;
            }
            let output = match peer.rtc.poll_output() {
                Ok(output) => output,
                Err(e) => {
                    tracing::debug!(peer = id, error = %e, "peer failed; closing");
                    peer.rtc.disconnect();
                    continue;
                }
            };
            match output {
                Output::Timeout(at) => {
                    peer.next_timeout = at;
                    self.earliest = self.earliest.min(at);
                    return;
                }
                Output::Transmit(transmit) => {
                    if let (Some(loss), Some(since)) =
                        (self.downlink.simulated_loss, peer.connected_at)
                    {
                        if is_rtp(&transmit.contents) {
                            peer.rtp_sent += 1;
                            if loss.drops(since.elapsed(), peer.rtp_sent - 1) {
                                continue;
                            }
                        }
                    }
                    if transmit.proto == Protocol::Tcp {
                        // Over the browser's TCP connection; a full queue drops the
                        // packet as a congested path would.
                        let connection = self
                            .tcp
                            .as_ref()
                            .and_then(|t| t.connections.get(&transmit.destination));
                        if let Some(c) = connection {
                            let _ = c.writer.try_send(transmit.contents.into());
                        }
                        continue;
                    }
                    self.outgoing
                        .push(transmit.destination, transmit.contents.into());
                }
                Output::Event(event) => self.on_event(id, event),
            }
        }
    }

    fn on_event(&mut self, id: PeerId, event: Event) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match event {
            Event::Connected => {
                peer.connected = true;
                peer.connected_at = Some(Instant::now());
                self.counters
                    .peers_connected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    peer = id,
                    setup_ms = peer.created.elapsed().as_millis() as u64,
                    "peer connection up"
                );
                let _ = self.events.try_send(WebrtcEvent::Connected { peer: id });
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                tracing::info!(peer = id, "ICE disconnected");
                peer.rtc.disconnect();
            }
            Event::MediaAdded(added) if peer.mid.is_none() => {
                peer.mid = Some(added.mid);
                peer.renegotiated();
            }
            Event::MediaEgressStats(stats) => {
                // `None` when no receiver report came since the last look: keep what we know.
                if let Some(loss) = stats.loss {
                    peer.codec.set_loss(loss);
                    let before = peer.downlink.current();
                    let now = peer.downlink.on_report(Instant::now(), loss);
                    tracing::debug!(peer = id, loss, "receiver report");
                    if now != before {
                        tracing::info!(peer = id, loss, codec = ?now, "downlink codec switched");
                        let codecs = peer.negotiated();
                        peer.codec.publish(&peer.downlink, &codecs);
                    }
                }
            }
            Event::MediaData(data) => {
                self.counters.frames_in.fetch_add(1, Ordering::Relaxed);
                let Some(codec) = codec_of(data.params.spec().codec) else {
                    return;
                };
                if codec == Codec::Opus && !peer.opus_logged {
                    if let Some(toc) = data.data.first() {
                        peer.opus_logged = true;
                        tracing::info!(peer = id, "browser sends Opus {}", opus_bandwidth(*toc));
                    }
                }
                let Some(route) = self.routes.get(&id) else {
                    return;
                };
                let packet = AgentPacket {
                    sequence: (*data.seq_range.start()).as_u16(),
                    timestamp: data.time.numer() as u32,
                    codec,
                    payload: data.data.to_vec(),
                };
                if route.to_call.try_send(packet).is_err() {
                    self.counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// An SRTP packet (not RTCP, RFC 5761 types 192-223; not STUN or DTLS, RFC 7983).
/// The next event from the ICE-TCP connections, or never when there is no TCP side.
async fn next_tcp(tcp: &mut Option<TcpSide>) -> Option<tcp::TcpEvent> {
    match tcp {
        Some(side) => side.events.recv().await,
        None => std::future::pending().await,
    }
}

pub fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
}

/// Tell the browser our Opus needs no more than 8 kHz audio either way (RFC 7587
/// `maxplaybackrate` and `sprop-maxcapturerate`). Every call's audio is 8 kHz PCM here, so
/// wideband would only be decoded to be thrown away; told this, Chrome encodes narrowband,
/// which costs us a quarter of the decoding time (`callgate bench-codec` here: 5.8 against
/// 23.3 us a frame) and the browser less bandwidth. str0m has no such parameter, so
/// the answer's Opus `a=fmtp` lines get it here.
fn opus_narrowband(sdp: &str) -> String {
    let opus_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, name)| name.to_ascii_lowercase().starts_with("opus/"))
        .map(|(pt, _)| pt)
        .collect();
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive("\r\n") {
        let body = line.trim_end_matches("\r\n");
        let is_opus_fmtp = body
            .strip_prefix("a=fmtp:")
            .and_then(|rest| rest.split_once(' '))
            .is_some_and(|(pt, params)| {
                opus_pts.contains(&pt) && !params.contains("maxplaybackrate")
            });
        if is_opus_fmtp {
            out.push_str(body);
            out.push_str(";maxplaybackrate=8000;sprop-maxcapturerate=8000");
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The audio bandwidth an Opus packet's TOC byte announces (RFC 6716 section 3.1).
fn opus_bandwidth(toc: u8) -> &'static str {
    match toc >> 3 {
        0..=3 | 16..=19 => "narrowband",
        4..=7 => "mediumband",
        8..=11 | 20..=23 => "wideband",
        12 | 13 | 24..=27 => "super-wideband",
        _ => "fullband",
    }
}

/// The mids of the offer's audio m-lines, in order.
fn sdp_audio_mids(sdp: &str) -> Vec<String> {
    let mut mids = Vec::new();
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            in_audio = media.starts_with("audio ");
        } else if in_audio {
            if let Some(mid) = line.strip_prefix("a=mid:") {
                mids.push(mid.trim().to_string());
            }
        }
    }
    mids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_audio_mids() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(sdp_audio_mids(sdp), vec!["0".to_string()]);
    }

    #[test]
    fn answers_ask_for_narrowband_opus_only() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n\
                   a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n\
                   a=fmtp:0 foo=1\r\n";
        let out = opus_narrowband(sdp);
        assert!(out.contains(
            "a=fmtp:111 minptime=10;useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000\r\n"
        ));
        assert!(out.contains("a=fmtp:0 foo=1\r\n"), "PCMU untouched: {out}");
        assert_eq!(opus_narrowband(&out), out, "applied once");
        assert_eq!(out.len(), sdp.len() + 47);
    }

    #[test]
    fn opus_toc_names_the_bandwidth() {
        // Configs: 1 SILK NB 20 ms, 9 SILK WB 20 ms, 15 hybrid FB 20 ms, 19 CELT NB 20 ms,
        // 31 CELT FB 20 ms.
        for (config, want) in [
            (1u8, "narrowband"),
            (5, "mediumband"),
            (9, "wideband"),
            (13, "super-wideband"),
            (15, "fullband"),
            (19, "narrowband"),
            (31, "fullband"),
        ] {
            assert_eq!(opus_bandwidth(config << 3), want, "config {config}");
        }
    }

    #[test]
    fn reported_loss_is_kept_in_percent() {
        let shared = PeerCodec::default();
        assert_eq!(shared.loss_percent(), 0);
        shared.set_loss(0.051);
        assert_eq!(shared.loss_percent(), 5);
        shared.set_loss(7.0);
        assert_eq!(shared.loss_percent(), 100);
        shared.set_loss(f32::NAN);
        assert_eq!(shared.loss_percent(), 0);
    }

    #[test]
    fn peer_codec_round_trips() {
        let shared = PeerCodec::default();
        assert_eq!(shared.get(), None);
        for codec in [Codec::Opus, Codec::Pcmu, Codec::Pcma] {
            shared.set(Some(codec));
            assert_eq!(shared.get(), Some(codec));
        }
    }
}
