//! What the controller speaks: calls and their statuses, the events it takes, the requests
//! agents make, the notices agents get and the commands the gateway carries out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::{AgentId, CallId, ConnId, Transfer, TransferTarget};
use crate::config::RecordMode;
use crate::media::mixer::MonitorMode;
use crate::media::recording_mode::{RecordWant, RecordingState};

/// What a call's media does toward its SIP leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPlan {
    /// Send back what arrives.
    Echo,
    /// Play a file, then the call ends.
    Announce(PathBuf),
    /// Bridged to this agent's browser while the call is active.
    Agent(AgentId),
    /// The far end of a transfer to a number: joined to this call once answered.
    Join(CallId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ringing,
    Waiting,
    Dialing,
    Active,
    OnHold,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ringing => "ringing",
            Status::Waiting => "waiting",
            Status::Dialing => "dialing",
            Status::Active => "active",
            Status::OnHold => "on_hold",
            Status::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    CallerHangup,
    AgentHangup,
    Declined,
    Replaced,
    AgentDisconnected,
    Failed,
    Transferred,
    /// An inbound call rang or waited longer than the ring timeout (the caller got 480).
    NoAnswer,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::Declined => "declined",
            EndReason::Replaced => "replaced",
            EndReason::AgentDisconnected => "agent_disconnected",
            EndReason::Failed => "failed",
            EndReason::Transferred => "transferred",
            EndReason::NoAnswer => "no_answer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub id: CallId,
    pub direction: Direction,
    pub from: String,
    /// The caller's display name from SIP, when it gave one.
    pub from_name: Option<String>,
    /// The prospect's name and CRM id: from `call.dial`, the contacts directory or the CRM
    /// lookup, else the SIP display name.
    pub prospect_name: Option<String>,
    pub prospect_id: Option<String>,
    pub to: String,
    pub status: Status,
    pub plan: MediaPlan,
    /// The agent whose call this is.
    pub agent: Option<AgentId>,
    pub created_at: Instant,
    pub answered_at: Option<Instant>,
    pub queued_at: Option<Instant>,
    pub ended_at: Option<Instant>,
    pub end_reason: Option<EndReason>,
    /// DTMF digits received from the far end, in order.
    pub dtmf: String,
    /// Whether this call may be recorded, from the agent's, trunk's or global setting.
    pub record_mode: RecordMode,
    /// What the mode or the agent asked of the recording.
    pub record_want: RecordWant,
    /// The recording as the media last reported it.
    pub recording: RecordingState,
    /// A transfer under way (the call rings another agent, or waits for a number to answer).
    pub transfer: Option<Transfer>,
    /// The leg this one's media is joined to (a transfer to a number, or an attended one).
    pub joined: Option<CallId>,
    /// The last agent who had the call: the call log's agent after it left every agent.
    pub handled_by: Option<AgentId>,
    /// Its status, queue time or recording changed since the call log last heard of it
    /// (set by the setters below, taken by `Controller::take_changed`).
    pub(super) changed: bool,
}

/// Who the other party of a call is, as the CRM or the directory know them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prospect {
    pub name: Option<String>,
    pub id: Option<String>,
}

impl Call {
    /// What the call log keeps of a call changes only through these three.
    pub(super) fn set_status(&mut self, status: Status) {
        self.changed |= self.status != status;
        self.status = status;
    }

    pub(super) fn set_queued_at(&mut self, at: Option<Instant>) {
        self.changed |= self.queued_at != at;
        self.queued_at = at;
    }

    pub(super) fn set_recording(&mut self, state: RecordingState) {
        self.changed |= self.recording != state;
        self.recording = state;
    }

    /// The prospect's number: the caller on inbound calls, the callee on outbound ones.
    pub fn prospect(&self) -> &str {
        match self.direction {
            Direction::Inbound => &self.from,
            Direction::Outbound => &self.to,
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.status != Status::Ended
    }

    /// Name the prospect: what the CRM or directory know wins over the SIP display name.
    pub(super) fn name(&mut self, prospect: Prospect) {
        if prospect.name.is_some() {
            self.prospect_name = prospect.name;
        }
        self.prospect_id = prospect.id;
    }
}

/// Inputs, from the SIP side, the media side, agents and operators.
#[derive(Debug, Clone)]
pub enum Event {
    Incoming {
        call: CallId,
        from: String,
        from_name: Option<String>,
        /// Who the caller is, as the directory or the CRM lookup know them.
        prospect: Prospect,
        to_user: String,
        /// The trunk it came in on (for its recording setting).
        trunk: Option<String>,
    },
    /// An outbound call was answered by the far end.
    Answered { call: CallId },
    /// The SIP leg is gone (BYE, cancel, failure), `remote` when the far end ended it.
    LegEnded {
        call: CallId,
        remote: bool,
        failed: bool,
    },
    /// The media finished what it was asked to do (an announcement ran out).
    MediaFinished { call: CallId },
    /// An operator's test dial (admin API): an outbound call with this media once answered.
    Dial {
        call: CallId,
        to: String,
        plan: MediaPlan,
    },
    /// An operator ends a call.
    Hangup { call: CallId },
    /// The far end pressed a key (RFC 4733 or SIP INFO).
    Dtmf { call: CallId, digit: char },
    /// The media reported a change of the call's recording.
    Recording { call: CallId, state: RecordingState },
    /// An agent's WebSocket authenticated, for calls or, a supervisor's, to monitor only.
    AgentConnected {
        agent: AgentId,
        conn: ConnId,
        kind: ConnKind,
    },
    /// An agent's WebSocket closed (any reason): all its calls end.
    AgentDisconnected { agent: AgentId, conn: ConnId },
    /// The clock moved (about once a second): transfers not answered in time come back.
    Tick,
    /// Shut down: end every call.
    Shutdown,
}

/// What an agent does with one of its calls (agent protocol, `call.*`): everything but a dial
/// and a transfer, which the gateway resolves first (dial plan, trunk, new ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    Answer {
        call: CallId,
    },
    Decline {
        call: CallId,
    },
    Hangup {
        call: CallId,
    },
    /// `call.monitor` (supervisors): join another agent's call in this mode, switch mode, or
    /// leave (`None`).
    Monitor {
        call: CallId,
        mode: Option<MonitorMode>,
    },
    /// `call.record`: start, pause, resume or stop the call's recording.
    Record {
        call: CallId,
        action: RecordAction,
    },
    Dtmf {
        call: CallId,
        digits: String,
    },
    /// End & Accept (`end`) or Hold & Accept (`hold`): the active call ends or goes on hold,
    /// then `call` is answered (waiting) or resumed (on hold).
    Accept {
        call: CallId,
        hold_active: bool,
    },
    Hold {
        call: CallId,
    },
    /// Make a held (or waiting) call active; the active one, if any, goes on hold.
    Resume {
        call: CallId,
    },
}

/// An agent's request as the controller takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    Act(CallAction),
    /// `call` is the id the gateway chose for the new call; `trunk` the first one whose dial
    /// plan allows `to` (for its recording setting).
    Dial {
        call: CallId,
        to: String,
        trunk: Option<String>,
        /// Who is called, as `call.dial` or the directory name them.
        prospect: Prospect,
    },
    /// `call.transfer`: hand the call to another agent, a number, or a call set up first.
    Transfer {
        call: CallId,
        target: TransferTarget,
    },
}

/// Why an agent request failed; `code()` is the agent protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no such call for this agent")]
    NotFound,
    #[error("the call is {0}")]
    InvalidState(&'static str),
    #[error("the agent already has {0} calls, its limit")]
    LimitReached(u32),
    #[error("{0}")]
    BadRequest(String),
    #[error("the agent is not connected")]
    NotConnected,
    #[error("{0}")]
    Forbidden(&'static str),
}

impl RequestError {
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::NotFound => "not_found",
            RequestError::InvalidState(_) => "invalid_state",
            RequestError::LimitReached(_) => "limit_reached",
            RequestError::BadRequest(_) => "bad_request",
            RequestError::NotConnected => "unauthorized",
            RequestError::Forbidden(_) => "forbidden",
        }
    }
}

/// What an agent hears about its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    // Boxed: a call is large and commands travel by value.
    Incoming(Box<Call>),
    Updated(Box<Call>),
    Ended(Box<Call>),
    /// The head of the agent's waiting calls, with the length of its whole queue.
    Waiting {
        call: Box<Call>,
        queue_length: usize,
    },
    /// The active call ended and this queued call is next (FIFO head); nothing connects yet.
    Offer(Box<Call>),
    /// Fill in the call log for this prospect; `call_ids` are every call merged into the
    /// prompt (one open prompt per prospect number).
    LogPrompt {
        call: Box<Call>,
        call_ids: Vec<CallId>,
    },
    /// To a supervisor: the call they monitor changed (status, recording) or their mode did.
    Monitoring {
        call: Box<Call>,
        mode: MonitorMode,
    },
    /// To a supervisor: monitoring of this call is over (the call ended).
    MonitorEnded(Box<Call>),
}

/// Why an inbound call is turned away unanswered; the SIP edge says it in its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The dialled number belongs to nobody.
    UnknownNumber,
    /// Nobody can take it now: the agent is signed out or gone, or it rang unanswered.
    Unavailable,
    /// The agent is busy, or declined it.
    Busy,
}

/// What an agent's connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnKind {
    /// A sign-in: the agent's calls ring here and it may do anything the protocol allows.
    #[default]
    Calls,
    /// A supervisor's second connection, on the node of a call it monitors in a cluster (its
    /// sign-in is on another node): it may monitor and nothing else, and no call rings on it.
    Monitor,
}

/// Why the controller closes an agent's connection; the WebSocket edge gives the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer sign-in of the same agent took over.
    Replaced,
    /// A monitoring connection from one who is not a supervisor, or who is signed in here.
    MonitorRefused,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Answer {
        call: CallId,
        plan: MediaPlan,
    },
    /// 180 Ringing toward the caller.
    Ring {
        call: CallId,
        /// The call waits in a queue: the caller may hear waiting audio as early media.
        waiting: bool,
    },
    Reject {
        call: CallId,
        reason: RejectReason,
    },
    Dial {
        call: CallId,
        to: String,
    },
    StartMedia {
        call: CallId,
        plan: MediaPlan,
    },
    Hangup {
        call: CallId,
    },
    StopMedia {
        call: CallId,
    },
    /// Connect the call's media to the agent's peer connection (both ways).
    Bridge {
        call: CallId,
        agent: AgentId,
    },
    /// Run two calls' media into each other (a transfer's two legs).
    Join {
        a: CallId,
        b: CallId,
    },
    /// Join a supervisor's peer connection to the call's media, in this mode.
    MonitorStart {
        call: CallId,
        supervisor: AgentId,
        mode: MonitorMode,
    },
    /// The supervisor switched mode.
    MonitorMode {
        call: CallId,
        mode: MonitorMode,
    },
    /// Take the supervisor off the call.
    MonitorStop {
        call: CallId,
        supervisor: AgentId,
    },
    /// The call's recording should now do this (it writes only while the call is bridged).
    Record {
        call: CallId,
        want: RecordWant,
    },
    /// Take the call's media off the agent's peer connection.
    Unbridge {
        call: CallId,
        agent: AgentId,
    },
    /// The call is parked: the other party hears the hold audio.
    Park {
        call: CallId,
    },
    SendDtmf {
        call: CallId,
        digits: String,
    },
    Notify {
        agent: AgentId,
        notice: Notice,
    },
    /// Close an agent's connection, for this reason.
    CloseConnection {
        agent: AgentId,
        conn: ConnId,
        reason: CloseReason,
    },
}

/// An agent's `call.record` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAction {
    Start,
    Pause,
    Resume,
    Stop,
}

impl RecordAction {
    pub fn parse(s: &str) -> Option<RecordAction> {
        match s {
            "start" => Some(RecordAction::Start),
            "pause" => Some(RecordAction::Pause),
            "resume" => Some(RecordAction::Resume),
            "stop" => Some(RecordAction::Stop),
            _ => None,
        }
    }
}

/// Which calls are recorded: an agent's own setting, else its trunk's, else the default.
#[derive(Debug, Clone)]
pub struct RecordingPolicy {
    pub default: RecordMode,
    pub agents: HashMap<AgentId, RecordMode>,
    pub trunks: HashMap<String, RecordMode>,
}

impl RecordingPolicy {
    pub(super) fn mode(&self, agent: Option<&str>, trunk: Option<&str>) -> RecordMode {
        agent
            .and_then(|a| self.agents.get(a))
            .or_else(|| trunk.and_then(|t| self.trunks.get(t)))
            .copied()
            .unwrap_or(self.default)
    }
}

impl Default for RecordingPolicy {
    fn default() -> Self {
        RecordingPolicy {
            default: RecordMode::Off,
            agents: HashMap::new(),
            trunks: HashMap::new(),
        }
    }
}
