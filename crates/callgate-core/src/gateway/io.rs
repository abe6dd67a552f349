//! What goes into the gateway core and what comes out of it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::controller::{AgentId, CallId, CloseReason, ConnId, ConnKind, Notice, Prospect};
use crate::log::{CallRecord, RecordingSegment};
use crate::media::monitor::MonitorMode;
use crate::media::recording_mode::RecordWant;
use crate::media::session::MediaEvent;
use crate::sdp::AudioSession;
use crate::sip::message::{Message, ParseError};
use crate::sip::transaction::{Transmit, Transport};

/// Inbound calls at most waiting for their names at once; past it, calls go on at once
/// with the name they came with (a flood of INVITEs never becomes a flood of lookups).
pub const NAMING_CAPACITY: usize = 1024;

/// RTP port pairs for calls. The shell binds them (an even port for RTP, the odd one above
/// for RTCP) and keeps the sockets until the call's media starts; the core only counts.
pub trait MediaPorts: Send {
    /// A bound pair's RTP port, or `None` when none is free.
    fn reserve(&mut self) -> Option<u16>;
    /// The pair is no longer the call's (never started, or its media stopped).
    fn release(&mut self, port: u16);
}

/// The seeds of everything an attacker must not guess: SIP identifiers, digest nonces and
/// call ids. The shell takes them from the operating system; tests fix them.
#[derive(Debug, Clone, Copy)]
pub struct Seeds {
    pub sip: [u8; 32],
    pub nonce: [u8; 32],
    pub call_ids: [u8; 32],
}

/// What the world hands the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A SIP datagram.
    Datagram {
        source: SocketAddr,
        bytes: &'a [u8],
    },
    /// A SIP message framed on a TCP or TLS connection.
    Stream {
        peer: SocketAddr,
        transport: Transport,
        message: Box<Message>,
    },
    /// Bytes on a connection that are not SIP.
    StreamInvalid {
        peer: SocketAddr,
        transport: Transport,
        error: Box<ParseError>,
    },
    /// A connection closed or could not be made.
    StreamClosed {
        peer: SocketAddr,
        transport: Transport,
    },
    Media(MediaEvent),
    /// The name of an inbound call's caller (or its lookup gave up), after `LookupName`.
    Named {
        call: CallId,
        prospect: Prospect,
    },
    /// An agent signed in on a WebSocket. A connection already open for the agent is
    /// closed and this one inherits its calls.
    AgentConnected {
        agent: AgentId,
        conn: ConnId,
        kind: ConnKind,
    },
    AgentDisconnected {
        agent: AgentId,
        conn: ConnId,
    },
    /// In a cluster, the agent signed in on another node, which claimed it: its session here
    /// ends (closed 4409, as a second sign-in here would close it) and so do its calls here.
    AgentClaimedElsewhere {
        agent: AgentId,
    },
    /// The prospect's call log was saved: its prompt is closed.
    LogSaved {
        agent: AgentId,
        prospect: String,
    },
    /// `poll_timeout` came (or something else woke the shell; early is harmless).
    Timeout,
    /// SIGTERM: every call ends, with its BYE.
    Shutdown,
}

/// What the core wants done.
#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    /// Start or steer a call's media task.
    Media {
        call: CallId,
        op: MediaOp,
    },
    /// The agent connection no longer carries a call's audio (left the call or monitor).
    Unroute {
        conn: ConnId,
    },
    Notify {
        conn: ConnId,
        notice: Notice,
    },
    /// Close an agent's WebSocket.
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    Persist(Persist),
    /// An operator's dial (`dial`) was answered (`Ok(call)`) or failed.
    Dialled {
        call: CallId,
        result: Result<CallId, String>,
    },
    /// Look the caller's number up (directory, CRM); answer with `Input::Named`.
    LookupName {
        call: CallId,
        number: String,
    },
}

#[derive(Debug)]
pub enum MediaOp {
    /// The call's media task, on the pair `port` was reserved for; `early` while it plays
    /// early media before an answer.
    Start {
        port: u16,
        audio: AudioSession,
        source: SourceSpec,
        early: bool,
        /// Where the call's SIP comes from: RTP from that host is latched at once.
        signalling_peer: Option<IpAddr>,
    },
    /// The call in early media was answered.
    Answered,
    Source(SourceSpec),
    /// Offer/answer changed the far end's address, codec or direction.
    Update(AudioSession),
    Record(RecordWant),
    /// Bridge to the agent connection's peer, both ways.
    Bridge {
        conn: ConnId,
    },
    /// Run this call's media and `other`'s into each other.
    Join {
        other: CallId,
    },
    Unbridge,
    MonitorStart {
        conn: ConnId,
        mode: MonitorMode,
    },
    MonitorMode(MonitorMode),
    MonitorStop,
    SendDtmf(String),
    /// The call is over; its port is released.
    Stop,
}

/// What a call's media plays when no one is bridged to it; the shell has the audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Silence,
    Echo,
    /// A file once (an announcement), then `MediaEvent::Finished`.
    Play(PathBuf),
    /// `media.hold_audio`, looped.
    Hold,
    /// `media.waiting_audio`, looped.
    Waiting,
}

/// A change the call log must keep.
#[derive(Debug, Clone)]
pub enum Persist {
    /// The call as it is now; `at` (ms since the epoch) is when it changed.
    Call { record: Box<CallRecord>, at: i64 },
    /// A call's recording opened its file or opened or closed a segment.
    Recording {
        call: CallId,
        path: Option<String>,
        segment: Option<RecordingSegment>,
    },
}

/// Maps the monotonic clock of the cores to wall-clock time for the wire.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    /// The clocks as they stood at one moment, read by the caller.
    pub fn pinned(instant: Instant, system: SystemTime) -> WallClock {
        WallClock { instant, system }
    }

    pub fn at(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.instant) {
            Some(after) => self.system + after,
            None => self.system - self.instant.duration_since(t),
        }
    }
}
