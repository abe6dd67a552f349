//! The task of one call's media: it owns the call's RTP and RTCP sockets and the clocks, and
//! drives the call's `MediaSession` (`media::session`), which decides everything. The frame
//! clock runs only while the session has audio to play, decode or mix; packets that pass
//! through (same codec both ways, or the echo) go on the moment they arrive. It never waits
//! on the signalling task: commands arrive on a channel and events leave with `try_send`.

use crate::ids::CallId;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::media::monitor::MonitorChange;
use crate::media::recording::RecordingWriter;
use crate::media::session::{MediaSession, Party, FRAME, MAX_READS_PER_FRAME, RTCP_INTERVAL};
use crate::media::stats::MediaCounters;
use crate::sdp::AudioSession;
use crate::webrtc::{AgentPacket, PeerId, WebrtcInput};

pub use crate::media::session::{MediaCommand, MediaEvent, Source, Transmit, COMMAND_CAPACITY};

/// Datagrams a call reads on arrival within one frame's time, at most. A flood at the call's
/// ports then costs what it cost when everything was read on the frame clock (the kernel
/// drops the rest); a real peer sends one or two a frame.
struct ArrivalBudget {
    window_end: tokio::time::Instant,
    reads: usize,
}

impl ArrivalBudget {
    fn new() -> ArrivalBudget {
        ArrivalBudget {
            window_end: tokio::time::Instant::now(),
            reads: 0,
        }
    }

    fn spend(&mut self, reads: usize) {
        let now = tokio::time::Instant::now();
        if now >= self.window_end {
            self.window_end = now + FRAME;
            self.reads = 0;
        }
        self.reads += reads;
    }

    /// Spent for this window: reading waits for `window_end`.
    fn exhausted(&self) -> bool {
        self.reads >= MAX_READS_PER_FRAME && tokio::time::Instant::now() < self.window_end
    }
}

/// What woke the call's task.
enum Wake {
    Frame,
    /// The trunk's sockets have something to read.
    Arrivals,
    /// A packet from the agent's browser, or `None` once its route is gone.
    Agent(Option<AgentPacket>),
    Rtcp,
    Command(Option<ToMedia>),
}

/// The channels of one agent link (the bridged agent's or a supervisor's): what that side
/// sends the call, and where the call's audio for it goes. The session knows the link; the
/// task keeps its channels.
pub struct AgentWires {
    pub from_agent: mpsc::Receiver<AgentPacket>,
    pub toward: Toward,
}

/// Where a call's audio for the agent's side goes.
pub enum Toward {
    /// A browser's peer connection, through the WebRTC task.
    Peer {
        webrtc: mpsc::Sender<WebrtcInput>,
        peer: PeerId,
    },
    /// The media of the call joined to this one.
    Joined(mpsc::Sender<AgentPacket>),
}

/// What the signalling side sends a call's media task: a command for its session, with the
/// channels of the agent link it carries, if it carries one.
pub struct ToMedia {
    pub command: MediaCommand,
    pub wires: Option<AgentWires>,
}

impl ToMedia {
    pub fn wired(command: MediaCommand, wires: AgentWires) -> ToMedia {
        ToMedia {
            command,
            wires: Some(wires),
        }
    }
}

impl From<MediaCommand> for ToMedia {
    fn from(command: MediaCommand) -> ToMedia {
        ToMedia {
            command,
            wires: None,
        }
    }
}

/// The next packet from the bridged agent; never, while nobody is bridged.
async fn next_agent_packet(wires: &mut Option<AgentWires>) -> Option<AgentPacket> {
    match wires {
        Some(wires) => wires.from_agent.recv().await,
        None => std::future::pending().await,
    }
}

/// The call's sockets, bound by the shell from the port pool.
pub struct MediaSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
}

pub struct CallMedia {
    session: MediaSession,
    sockets: MediaSockets,
    events: mpsc::Sender<MediaEvent>,
    counters: Arc<MediaCounters>,
    /// The bridged agent's channels, and a monitoring supervisor's.
    agent: Option<AgentWires>,
    supervisor: Option<AgentWires>,
    writer: Option<RecordingWriter>,
}

impl CallMedia {
    pub fn new(
        call: CallId,
        sockets: MediaSockets,
        audio: AudioSession,
        source: Source,
        events: mpsc::Sender<MediaEvent>,
        counters: Arc<MediaCounters>,
    ) -> CallMedia {
        let mut session = MediaSession::new(
            call,
            audio,
            source,
            Arc::clone(&counters),
            Instant::now(),
            SystemTime::now(),
        );
        session.set_cpu_clock(Instant::now);
        CallMedia {
            session,
            sockets,
            events,
            counters,
            agent: None,
            supervisor: None,
            writer: None,
        }
    }

    /// The call is in early media (not answered yet): its caller's silence ends nothing.
    pub fn in_early_media(mut self) -> CallMedia {
        self.session.set_early_media();
        self
    }

    /// The host this call's SIP came from: its RTP may come from there (behind a NAT).
    pub fn with_signalling_peer(mut self, host: Option<IpAddr>) -> CallMedia {
        self.session.set_signalling_peer(host);
        self
    }

    /// Where this call's recording goes, if it is ever asked to record.
    pub fn with_recording_writer(mut self, writer: RecordingWriter) -> CallMedia {
        self.session.set_recording(writer.sink());
        self.writer = Some(writer);
        self
    }

    /// Run until stopped. The task owns everything it touches.
    pub async fn run(self, commands: mpsc::Receiver<ToMedia>) {
        use tracing::Instrument;
        // Instrumented, not entered: a guard held across awaits would nest every call's span
        // into the next task's on the same thread, without end.
        let span =
            tracing::debug_span!("media", call = %self.session.call(), port = self.sockets.port);
        self.serve(commands).instrument(span).await
    }

    async fn serve(mut self, mut commands: mpsc::Receiver<ToMedia>) {
        let mut frame_clock = tokio::time::interval(FRAME);
        frame_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut clock_on = true;
        let mut budget = ArrivalBudget::new();
        let mut rtcp_clock =
            tokio::time::interval_at(tokio::time::Instant::now() + RTCP_INTERVAL, RTCP_INTERVAL);
        let mut rtp_buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 2048];
        loop {
            // The frame clock runs only while something is played, decoded or mixed on it: a
            // call whose packets all pass through costs no wake-up of its own.
            let wants_clock = self.session.needs_frame_clock();
            if wants_clock && !clock_on {
                // The next frame a whole frame from now, not a burst of the ones skipped.
                frame_clock.reset();
            }
            clock_on = wants_clock;
            let throttled = budget.exhausted();
            let rtp_on_arrival = (!clock_on || self.session.forwards_trunk_packets()) && !throttled;
            let agent_on_arrival = !clock_on || self.session.agent_uplink_passthrough();
            let wake = tokio::select! {
                _ = frame_clock.tick(), if clock_on => Wake::Frame,
                ready = self.sockets.rtp.readable(), if rtp_on_arrival => match ready {
                    Ok(()) => Wake::Arrivals,
                    Err(_) => Wake::Frame,
                },
                _ = tokio::time::sleep_until(budget.window_end), if throttled => Wake::Arrivals,
                packet = next_agent_packet(&mut self.agent), if agent_on_arrival => {
                    Wake::Agent(packet)
                }
                _ = rtcp_clock.tick() => Wake::Rtcp,
                command = commands.recv() => Wake::Command(command),
            };
            let now = Instant::now();
            let mut go_on = true;
            match wake {
                Wake::Frame => {
                    // Everything that arrived since the last frame is read now: one wake-up
                    // per 20 ms per transcoded call instead of one per packet. What passes
                    // through was sent on arrival already.
                    self.read_arrivals(&mut rtp_buf, &mut rtcp_buf);
                    self.session.handle_frame(now);
                }
                Wake::Arrivals => {
                    let reads = self.read_arrivals(&mut rtp_buf, &mut rtcp_buf);
                    budget.spend(reads);
                }
                Wake::Agent(Some(packet)) => {
                    self.session.handle_agent_packet(now, packet);
                    // Whatever else came with it goes out in the same wake-up.
                    let reads = self.read_arrivals(&mut rtp_buf, &mut rtcp_buf);
                    budget.spend(reads);
                }
                Wake::Agent(None) => {
                    self.agent = None;
                    self.session.handle_agent_gone(now);
                }
                Wake::Rtcp => {
                    // RTCP is read with the RTP it comes with, on the frame clock, and here:
                    // it never needs a wake-up of its own.
                    let reads = self.read_arrivals(&mut rtp_buf, &mut rtcp_buf);
                    budget.spend(reads);
                    self.session.handle_rtcp_tick(now);
                }
                Wake::Command(command) => go_on = self.on_command(now, command),
            }
            self.flush().await;
            if !go_on {
                break;
            }
        }
        let (sent, received) = self.session.packet_counts();
        tracing::debug!(sent, received, "media stopped");
    }

    /// Hand the session what the sockets and the agents' channels hold, without waiting;
    /// the datagrams read from the sockets.
    fn read_arrivals(&mut self, rtp_buf: &mut [u8], rtcp_buf: &mut [u8]) -> usize {
        let mut reads = 0;
        // Bounded so a flood cannot starve the frame clock.
        for _ in 0..MAX_READS_PER_FRAME {
            match self.sockets.rtp.try_recv_from(rtp_buf) {
                Ok((n, from)) => {
                    reads += 1;
                    let n = n.min(rtp_buf.len());
                    // Each datagram's own arrival time, as the jitter buffers want it.
                    self.session
                        .handle_rtp(Instant::now(), from, &mut rtp_buf[..n]);
                }
                Err(_) => break,
            }
        }
        for _ in 0..MAX_READS_PER_FRAME {
            match self.sockets.rtcp.try_recv_from(rtcp_buf) {
                Ok((n, from)) => {
                    reads += 1;
                    let n = n.min(rtcp_buf.len());
                    self.session
                        .handle_rtcp(Instant::now(), from, &mut rtcp_buf[..n]);
                }
                Err(_) => break,
            }
        }
        self.drain_agents(Instant::now());
        reads
    }

    /// A command for the session; the channels it carries are kept here. `false` once the
    /// media is to stop.
    fn on_command(&mut self, now: Instant, command: Option<ToMedia>) -> bool {
        let Some(ToMedia { command, wires }) = command else {
            return self.session.handle_command(now, None);
        };
        match &command {
            MediaCommand::Bridge(_) => self.agent = wires,
            MediaCommand::Unbridge => self.agent = None,
            MediaCommand::Monitor(MonitorChange::Start(..)) => self.supervisor = wires,
            MediaCommand::Monitor(MonitorChange::Stop) => self.supervisor = None,
            _ => {}
        }
        self.session.handle_command(now, Some(command))
    }

    /// Take what the bridged agent and a supervisor sent since the last look, without
    /// waiting, at most `MAX_READS_PER_FRAME` of each.
    fn drain_agents(&mut self, now: Instant) {
        use tokio::sync::mpsc::error::TryRecvError;
        for _ in 0..MAX_READS_PER_FRAME {
            let Some(wires) = self.agent.as_mut() else {
                break;
            };
            match wires.from_agent.try_recv() {
                Ok(packet) => self.session.handle_agent_packet(now, packet),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.agent = None;
                    self.session.handle_agent_gone(now);
                    break;
                }
            }
        }
        for _ in 0..MAX_READS_PER_FRAME {
            let Some(wires) = self.supervisor.as_mut() else {
                break;
            };
            match wires.from_agent.try_recv() {
                Ok(packet) => self.session.handle_supervisor_packet(now, packet),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.supervisor = None;
                    self.session.handle_supervisor_gone();
                    break;
                }
            }
        }
    }

    /// Hand the agent's side its audio and the recording writer its work, without waiting.
    fn hand_over(&mut self) {
        while let Some(audio) = self.session.poll_agent_audio() {
            let wires = match audio.to {
                Party::Agent => self.agent.as_ref(),
                Party::Supervisor => self.supervisor.as_ref(),
            };
            match wires.map(|w| &w.toward) {
                Some(Toward::Peer { webrtc, peer }) => {
                    let _ = webrtc.try_send(WebrtcInput::Audio {
                        peer: *peer,
                        call: self.session.call().clone(),
                        codec: audio.packet.codec,
                        payload: audio.packet.payload,
                    });
                }
                Some(Toward::Joined(other)) => {
                    let _ = other.try_send(audio.packet);
                }
                None => {}
            }
        }
        while let Some(op) = self.session.poll_recording_op() {
            let refused = match self.writer.as_ref() {
                Some(writer) => writer.submit(op).err(),
                None => Some((op, "no recording writer")),
            };
            if let Some((op, reason)) = refused {
                self.session
                    .handle_recording_refused(Instant::now(), op, reason);
            }
        }
    }

    /// Send what the session queued, and pass on its events.
    async fn flush(&mut self) {
        self.hand_over();
        while let Some(transmit) = self.session.poll_transmit() {
            let socket = if transmit.rtcp {
                &self.sockets.rtcp
            } else {
                &self.sockets.rtp
            };
            let sent = socket.send_to(&transmit.bytes, transmit.to).await.is_ok();
            if sent && !transmit.rtcp {
                self.counters.packet_out(transmit.bytes.len());
            }
        }
        while let Some(event) = self.session.poll_event() {
            let _ = self.events.try_send(event);
        }
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        // A task that ends without `Stop` (it panicked) still leaves a whole recording: its file
        // is closed, and nothing else is asked of a session that may be what failed.
        if let (Some(op), Some(writer)) = (self.session.abandon_recording(), self.writer.as_ref()) {
            let _ = writer.submit(op);
        }
    }
}
