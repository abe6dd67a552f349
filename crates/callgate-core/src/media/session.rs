//! One call's media toward its SIP peer, without sockets or clocks of its own: the shell
//! (`media::call`) hands it what arrives and the time, and sends what it queues. It echoes,
//! plays a file, sends and hears RFC 4733 DTMF, latches onto the peer's real source address
//! (symmetric RTP, strict: once learned, no other source is heard; see `latch`), keeps our
//! SSRC, sequence and timestamps continuous whatever it switches to, bridges to an agent
//! (passing packets through or transcoding on the 20 ms frame), mixes for a supervisor,
//! records, protects with SRTP, and reports RTCP.

use crate::ids::CallId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::media::agent::AgentPacket;
use crate::media::bridge::{AgentLink, Bridge, FromAgent};
use crate::media::call_recording::{
    CallRecording, RecordWant, RecordingSink, RecordingUpdate, WriterOp,
};
use crate::media::codec::{Encoder, FRAME_SAMPLES};
use crate::media::dtmf::{DigitReceiver, DigitSender};
use crate::media::latch::SourceLatch;
use crate::media::mixer::mix_minus;
use crate::media::monitor::{Monitor, MonitorChange, MonitorMode};
use crate::media::rtcp::{self, RtcpPacket, SenderInfo};
use crate::media::rtp::{self, ReceptionStats, RtpStream};
use crate::media::srtp::{SrtpError, SrtpSession};
use crate::media::stats::MediaCounters;
use crate::sdp::{AudioSession, SrtpKeys};

/// Capacity of a call's command channel; commands are rare (updates, DTMF, stop).
pub const COMMAND_CAPACITY: usize = 16;
/// RTCP report interval (RFC 3550 §6.2 minimum for a two-party session).
pub const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Packets read from one source per 20 ms frame at most (50 a second is normal).
pub const MAX_READS_PER_FRAME: usize = 64;
/// No RTP at all for this long after media started: the peer is gone.
const RTP_SILENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// The media clock: one frame of audio.
pub const FRAME: Duration = Duration::from_millis(20);

/// What the media plays toward the peer.
#[derive(Debug, Clone)]
pub enum Source {
    /// Send back what arrives.
    Echo,
    /// Play these 8 kHz samples once, then report `Finished`.
    Play(Arc<Vec<i16>>),
    /// Play these 8 kHz samples over and over (hold audio).
    Loop(Arc<Vec<i16>>),
    /// Send nothing (the far end hears silence; timestamps keep running).
    Silence,
}

#[derive(Debug)]
pub enum MediaCommand {
    /// Offer/answer changed the remote address, codec or direction.
    Update(AudioSession),
    Source(Source),
    /// RFC 4733 digits toward the peer.
    SendDtmf(String),
    /// Bridge to an agent's browser: its audio replaces the source, both ways.
    Bridge(AgentLink),
    /// Leave the agent; the source (silence unless set again) plays.
    Unbridge,
    /// What the call's recording should do; it writes only while bridged.
    Record(RecordWant),
    /// A supervisor joins, changes mode or leaves.
    Monitor(MonitorChange),
    /// The call in early media was answered: from now on the far end's silence counts.
    Answered,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A `Play` source ran out.
    Finished {
        call: CallId,
    },
    Dtmf {
        call: CallId,
        digit: char,
    },
    /// No RTP for a long time.
    RtpTimeout {
        call: CallId,
    },
    /// The recording changed state, opened its file, or opened or closed a segment.
    Recording {
        call: CallId,
        update: RecordingUpdate,
    },
}

/// How the call's packets with the trunk are protected.
enum Protection {
    Plain,
    Srtp(Box<SrtpSession>),
    /// SRTP was agreed and could not be set up: nothing is sent or heard rather than
    /// anything in the clear.
    Failed,
}

impl Protection {
    fn for_keys(call: &str, keys: Option<&SrtpKeys>) -> Protection {
        let Some(keys) = keys else {
            return Protection::Plain;
        };
        match SrtpSession::new(keys.suite, &keys.ours, &keys.theirs) {
            Ok(session) => {
                tracing::info!(%call, suite = keys.suite.name(), "SRTP with the trunk");
                Protection::Srtp(Box::new(session))
            }
            Err(e) => {
                tracing::error!(%call, error = %e, "cannot set up SRTP: the call stays silent");
                Protection::Failed
            }
        }
    }
}

/// Which side of the agent's an audio packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The agent the call is bridged to (or the call joined to this one).
    Agent,
    /// A supervisor monitoring the call.
    Supervisor,
}

/// An audio packet for the shell to hand to the agent's side.
#[derive(Debug, Clone)]
pub struct AgentAudio {
    pub to: Party,
    pub packet: AgentPacket,
}

/// One datagram for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    /// On the RTCP socket (else the RTP one).
    pub rtcp: bool,
    pub bytes: Vec<u8>,
}

pub struct MediaSession {
    call: CallId,
    audio: AudioSession,
    source: Source,
    play_pos: usize,
    encoder: Option<Encoder>,
    stream: RtpStream,
    /// Which source is the peer's: learned from its first packets (NAT), the SDP's address
    /// preferred, everyone else ignored.
    latch: SourceLatch,
    protection: Protection,
    /// Where an outgoing packet is protected (RTP is kept for the next frame's header).
    protected: Vec<u8>,
    reception: Option<ReceptionStats>,
    /// Offset mapping the peer's RTP timestamps into ours when echoing.
    echo_offset: Option<u32>,
    started: Instant,
    last_rtp_in: Instant,
    /// Early media (a waiting caller hearing the waiting audio before any answer): callers
    /// send no RTP then, so their silence ends nothing.
    early: bool,
    dtmf_out: Vec<char>,
    dtmf_sender: Option<(DigitSender, u32)>,
    dtmf_in: DigitReceiver,
    events: VecDeque<MediaEvent>,
    transmits: VecDeque<Transmit>,
    /// The wall-clock time at `started`'s first value, for RTCP's NTP timestamps.
    wall: (Instant, SystemTime),
    /// Scratch buffers for the packet being built and its payload.
    out: Vec<u8>,
    payload: Vec<u8>,
    counters: Arc<MediaCounters>,
    last_sr: Option<(u32, Instant)>,
    finished_sent: bool,
    bridge: Option<Bridge>,
    /// Maps the agent's RTP timestamps into ours when the agent's packets pass through.
    bridge_offset: Option<(u32, u32)>,
    pcm: Vec<i16>,
    sink: Option<RecordingSink>,
    recording: Option<CallRecording>,
    recording_updates: Vec<RecordingUpdate>,
    monitor: Option<Monitor>,
    /// The clock transcoding time is measured on, for the metrics; none in tests.
    cpu_clock: Option<fn() -> Instant>,
    /// What each party hears this tick while a supervisor is on the call.
    mix: [[i16; FRAME_SAMPLES]; 3],
    /// The frame the source played toward the peer this tick (hold audio, for a supervisor
    /// listening to a held call).
    source_frame: Option<[i16; FRAME_SAMPLES]>,
}

/// `now`, in `codec`'s RTP clock units since `started` (arrival times for a jitter buffer).
fn arrival_in(started: Instant, now: Instant, codec: crate::sdp::Codec) -> u32 {
    (now.saturating_duration_since(started).as_micros() as u64 * u64::from(codec.clock_rate())
        / 1_000_000) as u32
}

/// A decoded frame as a fixed array (frames are resized to `FRAME_SAMPLES` when decoded).
fn frame_of(pcm: &[i16]) -> [i16; FRAME_SAMPLES] {
    let mut frame = [0i16; FRAME_SAMPLES];
    let n = pcm.len().min(FRAME_SAMPLES);
    frame[..n].copy_from_slice(&pcm[..n]);
    frame
}

fn random_u32() -> u32 {
    rand::random()
}

impl MediaSession {
    pub fn new(
        call: CallId,
        audio: AudioSession,
        source: Source,
        counters: Arc<MediaCounters>,
        now: Instant,
        wall: SystemTime,
    ) -> MediaSession {
        let latch = SourceLatch::new(now, audio.remote, audio.remote_rtcp);
        let encoder = Encoder::new(audio.codec)
            .map_err(|e| tracing::error!(%call, error = %e, "cannot create encoder"))
            .ok();
        let protection = Protection::for_keys(&call, audio.srtp.as_ref());
        MediaSession {
            call,
            audio,
            protection,
            protected: Vec::with_capacity(512),
            source,
            play_pos: 0,
            encoder,
            stream: RtpStream::new(random_u32(), rand::random(), random_u32()),
            latch,
            reception: None,
            echo_offset: None,
            started: now,
            last_rtp_in: now,
            early: false,
            dtmf_out: Vec::new(),
            dtmf_sender: None,
            dtmf_in: DigitReceiver::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            wall: (now, wall),
            out: Vec::with_capacity(512),
            payload: Vec::with_capacity(512),
            counters,
            last_sr: None,
            finished_sent: false,
            bridge: None,
            bridge_offset: None,
            pcm: Vec::with_capacity(FRAME_SAMPLES * 6),
            sink: None,
            recording: None,
            recording_updates: Vec::new(),
            monitor: None,
            cpu_clock: None,
            mix: [[0; FRAME_SAMPLES]; 3],
            source_frame: None,
        }
    }

    /// The call is in early media (not answered yet): see `early`.
    pub fn in_early_media(mut self) -> MediaSession {
        self.set_early_media();
        self
    }

    pub fn set_early_media(&mut self) {
        self.early = true;
    }

    /// The host this call's SIP came from: its RTP may come from there (behind a NAT).
    pub fn with_signalling_peer(mut self, host: Option<std::net::IpAddr>) -> MediaSession {
        self.set_signalling_peer(host);
        self
    }

    pub fn set_signalling_peer(&mut self, host: Option<std::net::IpAddr>) {
        self.latch = self.latch.clone().with_signalling(host);
    }

    /// Measure transcoding's CPU time on `clock` (the metrics' `transcode` figures).
    pub fn set_cpu_clock(&mut self, clock: fn() -> Instant) {
        self.cpu_clock = Some(clock);
    }

    /// Where this call's recording goes, if it is ever asked to record.
    pub fn set_recording(&mut self, sink: RecordingSink) {
        self.sink = Some(sink);
    }

    fn set_bridge(&mut self, now: Instant, bridge: Option<Bridge>) {
        let bridged = bridge.is_some();
        let wall = self.wall_at(now);
        self.bridge = bridge;
        if let (true, Some(monitor)) = (bridged, self.monitor.as_mut()) {
            monitor.bridged();
        }
        if let Some(recording) = self.recording.as_mut() {
            recording.set_bridged(wall, bridged, &mut self.recording_updates);
        }
    }

    fn record(&mut self, now: Instant, want: RecordWant) {
        let wall = self.wall_at(now);
        if self.recording.is_none() && want != RecordWant::Off {
            let Some(sink) = self.sink.clone() else {
                tracing::warn!("recording asked for, but no recording writer");
                return;
            };
            let mut recording = CallRecording::new(self.call.clone(), sink, want);
            recording.set_bridged(wall, self.bridge.is_some(), &mut self.recording_updates);
            self.recording = Some(recording);
        } else if let Some(recording) = self.recording.as_mut() {
            recording.set_want(wall, want, &mut self.recording_updates);
        }
    }

    /// The recording's updates become events only when the task reads them, after it handed
    /// the writer its work: an open the writer refused is then never reported as opened.
    fn report_recording(&mut self) {
        for update in self.recording_updates.drain(..) {
            self.events.push_back(MediaEvent::Recording {
                call: self.call.clone(),
                update,
            });
        }
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.latch.rtp_destination()
    }

    fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.latch.rtcp_destination()
    }

    /// The wall-clock time at `now`, from the pair read when the session started: recording
    /// segments and RTCP's NTP times follow the monotonic clock, so a system clock stepped
    /// mid-call moves them only for calls that start after it.
    fn wall_at(&self, now: Instant) -> SystemTime {
        self.wall.1 + now.saturating_duration_since(self.wall.0)
    }

    pub fn call(&self) -> &CallId {
        &self.call
    }

    /// A datagram from the call's RTP socket (RTCP muxed on it is taken too).
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
        let mut out = std::mem::take(&mut self.out);
        self.on_rtp(now, bytes, from, &mut out);
        self.out = out;
    }

    /// A datagram from the call's RTCP socket.
    pub fn handle_rtcp(&mut self, now: Instant, from: SocketAddr, bytes: &mut [u8]) {
        self.on_rtcp(now, bytes, from);
    }

    /// One packet of the bridged agent's microphone.
    pub fn handle_agent_packet(&mut self, now: Instant, packet: AgentPacket) {
        let mut out = std::mem::take(&mut self.out);
        self.on_agent_packet(now, packet, &mut out);
        self.out = out;
    }

    /// The WebRTC side dropped the agent's route: the agent is gone.
    pub fn handle_agent_gone(&mut self, now: Instant) {
        self.set_bridge(now, None);
    }

    /// One packet of a monitoring supervisor's microphone.
    pub fn handle_supervisor_packet(&mut self, now: Instant, packet: AgentPacket) {
        if let Some(monitor) = self.monitor.as_mut() {
            let arrival = arrival_in(self.started, now, packet.codec);
            monitor.on_supervisor_packet(&packet, arrival);
        }
    }

    /// The supervisor's route is gone: they no longer monitor the call.
    pub fn handle_supervisor_gone(&mut self) {
        self.monitor = None;
    }

    /// The recording writer could not take `op`, one of this call's recording's operations.
    pub fn handle_recording_refused(&mut self, now: Instant, op: WriterOp, reason: &str) {
        let wall = self.wall_at(now);
        if let Some(recording) = self.recording.as_mut() {
            recording.writer_refused(wall, op, reason, &mut self.recording_updates);
        }
    }

    /// The call's task is going away without a `Stop` (it panicked): the one thing left to do
    /// is to close the recording's file, with nothing else decided on the way.
    pub fn abandon_recording(&mut self) -> Option<WriterOp> {
        self.recording.as_mut()?.abandon()
    }

    /// The 20 ms frame clock ticked (while `needs_frame_clock`).
    pub fn handle_frame(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.out);
        let mut payload = std::mem::take(&mut self.payload);
        self.on_frame(now, &mut out, &mut payload);
        self.out = out;
        self.payload = payload;
    }

    /// The RTCP interval passed: a report toward the peer, and the check for a peer that
    /// went silent.
    pub fn handle_rtcp_tick(&mut self, now: Instant) {
        let mut out = std::mem::take(&mut self.out);
        self.send_rtcp(now, &mut out, false);
        self.out = out;
        if !self.early
            && now.saturating_duration_since(self.last_rtp_in) > RTP_SILENCE_TIMEOUT
            && now.saturating_duration_since(self.started) > RTP_SILENCE_TIMEOUT
            && self.audio.remote_direction.sends()
        {
            self.events.push_back(MediaEvent::RtpTimeout {
                call: self.call.clone(),
            });
            self.last_rtp_in = now;
        }
    }

    /// A command from the signalling side (`None`: its channel closed); `false` once the
    /// media is to stop, with its last RTCP (a BYE) queued.
    pub fn handle_command(&mut self, now: Instant, command: Option<MediaCommand>) -> bool {
        let mut out = std::mem::take(&mut self.out);
        let go_on = self.on_command(now, command, &mut out);
        self.out = out;
        go_on
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the signalling side.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.report_recording();
        self.events.pop_front()
    }

    /// The next audio packet toward the agent's side: the bridged agent's browser (or the
    /// joined call), or the monitoring supervisor's.
    pub fn poll_agent_audio(&mut self) -> Option<AgentAudio> {
        if let Some(packet) = self.bridge.as_mut().and_then(Bridge::poll_sent) {
            return Some(AgentAudio {
                to: Party::Agent,
                packet,
            });
        }
        let packet = self.monitor.as_mut().and_then(Monitor::poll_sent)?;
        Some(AgentAudio {
            to: Party::Supervisor,
            packet,
        })
    }

    /// The next thing the recording writer is to do.
    pub fn poll_recording_op(&mut self) -> Option<WriterOp> {
        self.recording.as_mut()?.poll_op()
    }

    /// Whether the agent's packets go on as they arrive (rather than on the frame clock).
    pub fn agent_uplink_passthrough(&self) -> bool {
        self.bridge.as_ref().is_some_and(|b| b.uplink_passthrough())
    }

    /// RTP packets sent, and received from the peer (for the log at the end).
    pub fn packet_counts(&self) -> (u32, u64) {
        (
            self.stream.packets_sent(),
            self.reception.as_ref().map(|r| r.received()).unwrap_or(0),
        )
    }

    /// Act on a command; `false` once the call's media is to stop.
    fn on_command(
        &mut self,
        now: Instant,
        command: Option<MediaCommand>,
        out: &mut Vec<u8>,
    ) -> bool {
        match command {
            Some(MediaCommand::Update(audio)) => self.update(now, audio),
            Some(MediaCommand::Source(source)) => {
                self.source = source;
                self.play_pos = 0;
                self.finished_sent = false;
            }
            Some(MediaCommand::SendDtmf(digits)) => self.dtmf_out.extend(digits.chars().rev()),
            Some(MediaCommand::Answered) => {
                self.early = false;
                self.started = now;
                self.last_rtp_in = now;
            }
            Some(MediaCommand::Bridge(link)) => {
                tracing::debug!(peer = link.peer, "bridged to agent");
                let bridge = Bridge::new(link, self.audio.codec);
                self.set_bridge(now, Some(bridge));
                self.bridge_offset = None;
            }
            Some(MediaCommand::Unbridge) => {
                self.set_bridge(now, None);
                self.source = Source::Silence;
            }
            Some(MediaCommand::Record(want)) => self.record(now, want),
            Some(MediaCommand::Monitor(change)) => match change {
                MonitorChange::Start(link, mode) => {
                    tracing::debug!(peer = link.peer, mode = mode.as_str(), "supervisor joined");
                    self.monitor = Some(Monitor::new(link, mode));
                }
                MonitorChange::Mode(mode) => {
                    if let Some(monitor) = self.monitor.as_mut() {
                        monitor.mode = mode;
                    }
                }
                MonitorChange::Stop => self.monitor = None,
            },
            Some(MediaCommand::Stop) | None => {
                let wall = self.wall_at(now);
                if let Some(recording) = self.recording.as_mut() {
                    recording.close(wall, &mut self.recording_updates);
                }
                self.send_rtcp(now, out, true);
                return false;
            }
        }
        true
    }

    /// Whether anything has to happen on the 20 ms clock: a source to play, audio to decode,
    /// mix, encode or record, a digit to send. A bridge whose packets pass through both ways
    /// and the echo need none.
    pub fn needs_frame_clock(&self) -> bool {
        if self.monitor.is_some()
            || self.dtmf_sender.is_some()
            || !self.dtmf_out.is_empty()
            || self.recording.as_ref().is_some_and(|r| r.writing())
        {
            return true;
        }
        match &self.bridge {
            Some(bridge) => !bridge.passthrough(),
            None => !matches!(self.source, Source::Echo),
        }
    }

    /// Whether the peer's packets go on as they arrive (to the browser, or echoed back)
    /// rather than into a jitter buffer read on the frame clock.
    pub fn forwards_trunk_packets(&self) -> bool {
        match &self.bridge {
            Some(bridge) => bridge.downlink_passthrough(),
            None => matches!(self.source, Source::Echo),
        }
    }

    fn update(&mut self, now: Instant, audio: AudioSession) {
        if audio.codec != self.audio.codec {
            self.encoder = Encoder::new(audio.codec).ok();
            if let Some(bridge) = self.bridge.as_mut() {
                bridge.set_trunk_codec(audio.codec);
            }
        }
        if audio.remote != self.audio.remote {
            // A new address from offer/answer overrides what we latched onto.
            self.latch
                .renegotiated(now, audio.remote, audio.remote_rtcp);
        }
        match (&mut self.protection, audio.srtp.as_ref()) {
            (Protection::Srtp(session), Some(keys)) => {
                // A re-offer may bring the trunk's new key (RFC 4568 §7.1.4); ours stays.
                if let Err(e) = session.rekey_inbound(keys.suite, &keys.theirs) {
                    tracing::error!(error = %e, "cannot take the trunk's new SRTP key");
                    self.protection = Protection::Failed;
                }
            }
            (Protection::Plain, Some(keys)) => {
                self.protection = Protection::for_keys(&self.call, Some(keys));
            }
            // SDP never takes SRTP away once agreed (`sdp::reanswer`).
            _ => {}
        }
        self.audio = audio;
    }

    /// Queue one RTP packet toward the peer (protected first, under SRTP).
    fn send_out(&mut self, out: &[u8]) {
        let Some(to) = self.destination() else {
            return;
        };
        if !self.audio.local_direction.sends() {
            return;
        }
        let bytes = match &mut self.protection {
            Protection::Plain => out.to_vec(),
            Protection::Srtp(session) => {
                self.protected.clear();
                self.protected.extend_from_slice(out);
                if let Err(e) = session.protect_rtp(&mut self.protected) {
                    tracing::debug!(error = %e, "SRTP protect failed");
                    return;
                }
                self.protected.clone()
            }
            Protection::Failed => return,
        };
        self.transmits.push_back(Transmit {
            to,
            rtcp: false,
            bytes,
        });
    }

    /// The plain packet inside `bytes` (as received, for plain RTP); `None` when SRTP's
    /// check refuses it, before anything (the source latch included) has looked at it.
    fn open<'a>(&mut self, bytes: &'a mut [u8], rtcp: bool) -> Option<&'a [u8]> {
        let session = match &mut self.protection {
            Protection::Plain => return Some(bytes),
            Protection::Srtp(session) => session,
            Protection::Failed => return None,
        };
        let opened = if rtcp {
            session.unprotect_rtcp(bytes)
        } else {
            session.unprotect_rtp(bytes)
        };
        match opened {
            Ok(len) => Some(&bytes[..len]),
            Err(SrtpError::Malformed) => {
                self.counters.bad_packet();
                None
            }
            Err(e) => {
                tracing::trace!(error = %e, rtcp, "SRTP packet refused");
                self.counters.srtp_rejected();
                None
            }
        }
    }
}

mod play;
mod receive;
#[cfg(test)]
mod tests;
