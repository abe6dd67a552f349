//! The agents' peer connections: one task over str0m owns one UDP socket that carries every
//! agent's ICE, DTLS-SRTP and RTP. It answers browser offers (ICE-lite, host candidate on the
//! configured address), writes the frames calls send toward each agent with one continuous
//! RTP stream per peer connection whatever call they come from, and hands each agent's
//! microphone packets to the one call that agent's audio is routed to. With
//! `webrtc.tcp_listen` it also offers a passive ICE-TCP candidate (`tcp`), for browsers whose
//! network blocks UDP. It knows peers and call ids as opaque routes, never queues or call
//! policy.

mod codecs;
mod mmsg;
#[cfg(feature = "testkit")]
pub mod peer;
mod signalling;
pub mod tcp;

pub use callgate_core::media::agent::{AgentPacket, PeerCodec, PeerId};
pub use callgate_core::media::downlink;
pub use callgate_core::media::downlink::DownlinkOptions;
use codecs::*;

use crate::ids::CallId;
use std::collections::HashMap;
use std::net::SocketAddr;
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
use downlink::Downlink;
use mmsg::{RecvBatch, SendQueue, BATCH_DATAGRAMS};
use std::sync::atomic::Ordering;

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

/// Where an agent's microphone goes: the active call.
#[derive(Debug, Clone)]
pub struct Route {
    pub call: CallId,
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
        call: CallId,
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
}

/// The next event from the ICE-TCP connections, or never when there is no TCP side.
async fn next_tcp(tcp: &mut Option<TcpSide>) -> Option<tcp::TcpEvent> {
    match tcp {
        Some(side) => side.events.recv().await,
        None => std::future::pending().await,
    }
}

/// An SRTP packet (not RTCP, RFC 5761 types 192-223; not STUN or DTLS, RFC 7983).
pub fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() > 12 && datagram[0] >> 6 == 2 && !(192..=223).contains(&datagram[1])
}
