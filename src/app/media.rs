//! The calls' media as the shell runs it: RTP port pairs bound for the core's `MediaPorts`,
//! one task per call started and steered as the core's `MediaOp`s say, and the audio files
//! its sources name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::AppError;
use crate::config::Config;
use crate::controller::{CallId, ConnId};
use crate::gateway::{MediaOp, MediaPorts, SourceSpec};
use crate::media::bridge::{AgentLink, JoinedLeg};
use crate::media::call::{
    AgentWires, CallMedia, MediaCommand, MediaEvent, MediaSockets, Source, ToMedia, Toward,
    COMMAND_CAPACITY,
};
use crate::media::monitor::MonitorChange;
use crate::media::ports::PortPool;
use crate::media::recording::RecordingWriter;
use crate::media::stats::MediaCounters;
use crate::webrtc::{PeerCodec, Route, WebrtcInput, AGENT_AUDIO_CAPACITY};

/// Port pairs bound and not yet handed to a call's media task, by RTP port.
type Bound = Arc<Mutex<HashMap<u16, MediaSockets>>>;

/// The RTP range, bound a pair at a time: a port another process holds is skipped.
pub struct BoundPorts {
    pool: PortPool,
    ip: IpAddr,
    bound: Bound,
}

impl MediaPorts for BoundPorts {
    fn reserve(&mut self) -> Option<u16> {
        let candidates: Vec<u16> = self.pool.candidates().take(32).collect();
        for port in candidates {
            if let Some(sockets) = bind_pair(self.ip, port) {
                self.pool.take(port);
                self.bound
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(port, sockets);
                return Some(port);
            }
        }
        tracing::error!(in_use = self.pool.in_use(), "no free RTP port pair");
        None
    }

    fn release(&mut self, port: u16) {
        // A pair never started is closed here; a started one closes with its task.
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&port);
        self.pool.release(port);
    }
}

fn bind_pair(ip: IpAddr, port: u16) -> Option<MediaSockets> {
    let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, port)).ok()?;
    let rtcp = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)).ok()?;
    rtp.set_nonblocking(true).ok()?;
    rtcp.set_nonblocking(true).ok()?;
    let rtp = UdpSocket::from_std(rtp).ok()?;
    let rtcp = UdpSocket::from_std(rtcp).ok()?;
    Some(MediaSockets { rtp, rtcp, port })
}

struct MediaHandle {
    commands: mpsc::Sender<ToMedia>,
    /// The trunk side's codec, as the other leg of a joined pair encodes for it.
    codec: Arc<PeerCodec>,
}

/// Every call's media task.
pub struct Media {
    handles: HashMap<CallId, MediaHandle>,
    bound: Bound,
    events: mpsc::Sender<MediaEvent>,
    counters: Arc<MediaCounters>,
    recordings: RecordingWriter,
    webrtc: mpsc::Sender<WebrtcInput>,
    audio_files: HashMap<PathBuf, Arc<Vec<i16>>>,
    hold_audio: PathBuf,
    /// What waiting callers hear as early media (`media.waiting_audio`), loaded at start.
    waiting_audio: Option<Arc<Vec<i16>>>,
}

impl Media {
    /// The media side and the ports the core reserves from; the announcements, hold and
    /// waiting audio are loaded now, so a missing file stops the start.
    pub fn new(
        config: &Config,
        events: mpsc::Sender<MediaEvent>,
        counters: Arc<MediaCounters>,
        recordings: RecordingWriter,
        webrtc: mpsc::Sender<WebrtcInput>,
    ) -> Result<(Media, BoundPorts), AppError> {
        let bound: Bound = Arc::default();
        let ports = BoundPorts {
            pool: PortPool::new(config.rtp.port_min, config.rtp.port_max),
            ip: config.rtp.bind,
            bound: Arc::clone(&bound),
        };
        let mut media = Media {
            handles: HashMap::new(),
            bound,
            events,
            counters,
            recordings,
            webrtc,
            audio_files: HashMap::new(),
            hold_audio: config.media.hold_audio.clone(),
            waiting_audio: None,
        };
        media.preload(config)?;
        Ok((media, ports))
    }

    fn preload(&mut self, config: &Config) -> Result<(), AppError> {
        let load = |file: &Path| {
            crate::media::wav::load_8k_mono(file).map_err(|e| AppError::Asset {
                path: file.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let announcements = config.routes.iter().filter_map(|r| match r.route_action() {
            crate::config::RouteAction::Announce { file } => Some(file),
            crate::config::RouteAction::Echo => None,
        });
        // Hold audio must be there before anyone is put on hold.
        for file in announcements.chain(std::iter::once(config.media.hold_audio.clone())) {
            let samples = load(&file)?;
            self.audio_files.insert(file, Arc::new(samples));
        }
        self.waiting_audio = match config.media.waiting_audio.as_deref() {
            None => None,
            Some("ringback") => Some(Arc::new(crate::media::tones::ringback(
                &config.media.ringback_country,
            ))),
            Some(path) => Some(Arc::new(load(Path::new(path))?)),
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

    fn source(&mut self, spec: SourceSpec) -> Source {
        let looped = |samples: Option<Arc<Vec<i16>>>| samples.map_or(Source::Silence, Source::Loop);
        match spec {
            SourceSpec::Silence => Source::Silence,
            SourceSpec::Echo => Source::Echo,
            SourceSpec::Play(path) => self.audio(&path).map_or(Source::Silence, Source::Play),
            SourceSpec::Hold => {
                let hold = self.hold_audio.clone();
                looped(self.audio(&hold))
            }
            SourceSpec::Waiting => looped(self.waiting_audio.clone()),
        }
    }

    fn send(&self, call: &str, command: impl Into<ToMedia>) -> bool {
        self.handles
            .get(call)
            .is_some_and(|m| m.commands.try_send(command.into()).is_ok())
    }

    /// Carry out one of the core's media operations; `agents` are the open agent
    /// connections' codecs (what their browsers negotiated), for links to a browser.
    pub fn apply(&mut self, call: CallId, op: MediaOp, agents: &HashMap<ConnId, Arc<PeerCodec>>) {
        match op {
            MediaOp::Start {
                port,
                audio,
                source,
                early,
                signalling_peer,
            } => {
                let sockets = self
                    .bound
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&port);
                let Some(sockets) = sockets else {
                    tracing::error!(%call, port, "media start without its bound ports");
                    return;
                };
                let source = self.source(source);
                let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
                let codec = Arc::new(PeerCodec::of(audio.codec));
                let media = CallMedia::new(
                    call.clone(),
                    sockets,
                    audio,
                    source,
                    self.events.clone(),
                    Arc::clone(&self.counters),
                )
                .with_recording_writer(self.recordings.clone())
                .with_signalling_peer(signalling_peer);
                let media = if early { media.in_early_media() } else { media };
                tokio::spawn(media.run(rx));
                self.handles.insert(
                    call,
                    MediaHandle {
                        commands: tx,
                        codec,
                    },
                );
            }
            MediaOp::Answered => {
                self.send(&call, MediaCommand::Answered);
            }
            MediaOp::Source(spec) => {
                let source = self.source(spec);
                self.send(&call, MediaCommand::Source(source));
            }
            MediaOp::Update(audio) => {
                if let Some(media) = self.handles.get(&call) {
                    media.codec.set(Some(audio.codec));
                    let _ = media.commands.try_send(MediaCommand::Update(audio).into());
                }
            }
            MediaOp::Record(want) => {
                self.send(&call, MediaCommand::Record(want));
            }
            MediaOp::Bridge { conn } => {
                let Some((link, wires, to_call)) = self.agent_link(conn, agents) else {
                    return;
                };
                if !self.send(&call, ToMedia::wired(MediaCommand::Bridge(link), wires)) {
                    tracing::warn!(%call, "media task not taking commands; bridge lost");
                }
                self.route(conn, Some(Route { call, to_call }));
            }
            MediaOp::Join { other } => self.join(&call, &other),
            MediaOp::Unbridge => {
                self.send(&call, MediaCommand::Unbridge);
            }
            MediaOp::MonitorStart { conn, mode } => {
                let Some((link, wires, to_call)) = self.agent_link(conn, agents) else {
                    return;
                };
                let start = ToMedia::wired(
                    MediaCommand::Monitor(MonitorChange::Start(link, mode)),
                    wires,
                );
                if !self.send(&call, start) {
                    tracing::warn!(%call, "media task not taking commands; monitor lost");
                    return;
                }
                self.route(conn, Some(Route { call, to_call }));
            }
            MediaOp::MonitorMode(mode) => {
                self.send(&call, MediaCommand::Monitor(MonitorChange::Mode(mode)));
            }
            MediaOp::MonitorStop => {
                self.send(&call, MediaCommand::Monitor(MonitorChange::Stop));
            }
            MediaOp::SendDtmf(digits) => {
                self.send(&call, MediaCommand::SendDtmf(digits));
            }
            MediaOp::Stop => {
                if let Some(media) = self.handles.remove(&call) {
                    let _ = media.commands.try_send(MediaCommand::Stop.into());
                }
            }
        }
    }

    /// The agent connection's peer no longer carries a call's audio.
    pub fn unroute(&self, conn: ConnId) {
        self.route(conn, None);
    }

    fn route(&self, peer: ConnId, route: Option<Route>) {
        if self
            .webrtc
            .try_send(WebrtcInput::Route { peer, route })
            .is_err()
        {
            tracing::warn!(peer, "WebRTC task queue full; route lost");
        }
    }

    /// A new link from an agent's peer connection to a call's media: the link for the media
    /// session, its channels for the media task, and the sender the WebRTC task routes the
    /// agent's microphone into.
    fn agent_link(
        &self,
        conn: ConnId,
        agents: &HashMap<ConnId, Arc<PeerCodec>>,
    ) -> Option<(
        AgentLink,
        AgentWires,
        mpsc::Sender<crate::webrtc::AgentPacket>,
    )> {
        let codec = Arc::clone(agents.get(&conn)?);
        let (to_call, from_agent) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let link = AgentLink {
            peer: conn,
            codec,
            joined: None,
        };
        let wires = AgentWires {
            from_agent,
            toward: Toward::Peer {
                webrtc: self.webrtc.clone(),
                peer: conn,
            },
        };
        Some((link, wires, to_call))
    }

    /// Run two calls' media into each other: each takes the other's place of a browser, so
    /// packets pass through when the codecs match and are transcoded when not.
    fn join(&self, a: &str, b: &str) {
        let (Some(ma), Some(mb)) = (self.handles.get(a), self.handles.get(b)) else {
            tracing::warn!(%a, %b, "join without media");
            return;
        };
        let (into_a, from_b) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let (into_b, from_a) = mpsc::channel(AGENT_AUDIO_CAPACITY);
        let link = |codec: &Arc<PeerCodec>, from_agent, toward| {
            let link = AgentLink {
                peer: 0,
                codec: Arc::clone(codec),
                joined: Some(JoinedLeg::new()),
            };
            let wires = AgentWires {
                from_agent,
                toward: Toward::Joined(toward),
            };
            ToMedia::wired(MediaCommand::Bridge(link), wires)
        };
        let links = [
            (ma, link(&mb.codec, from_b, into_b), a),
            (mb, link(&ma.codec, from_a, into_a), b),
        ];
        for (media, link, call) in links {
            if media.commands.try_send(link).is_err() {
                tracing::warn!(%call, "media task not taking commands; bridge lost");
            }
        }
    }

    /// Every task stops (shutdown).
    pub fn stop_all(&mut self) {
        for (_, media) in self.handles.drain() {
            let _ = media.commands.try_send(MediaCommand::Stop.into());
        }
    }
}
