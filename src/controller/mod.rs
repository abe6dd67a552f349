//! Call policy as a sans-IO state machine: `handle(event, now) -> Vec<Command>` and
//! `request(agent, request, now)`. Owns every call's status and what it is for (a route such
//! as echo or an announcement, an operator's test dial, or an agent's call), each agent's one
//! active call and its FIFO queue of waiting and held calls ordered by `queued_at`, offers,
//! and call-log prompts. Knows nothing of SIP, WebRTC or JSON: the b2bua, the media shell and
//! the API translate.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;

use crate::config::{AgentConfig, RecordMode, RouteAction, RouteConfig};
use crate::media::mixer::MonitorMode;
use crate::media::recording_mode::{RecordWant, RecordingState};

pub type CallId = String;
pub type AgentId = String;
/// One agent WebSocket connection; a reconnect gets a new one.
pub type ConnId = u64;

/// Ended calls an agent still sees in its snapshot.
const RECENT_ENDED: usize = 50;
/// DTMF digits a call remembers from the far end (the latest ones).
pub const MAX_DTMF_HISTORY: usize = 64;
/// The longest number or SIP URI an agent may dial.
pub const MAX_DIAL_TARGET: usize = 256;
/// Digits one agent request may send at once.
const MAX_DTMF_SEND: usize = 32;

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
    pub transfer: Option<transfer::Transfer>,
    /// The leg this one's media is joined to (a transfer to a number, or an attended one).
    pub joined: Option<CallId>,
    /// The last agent who had the call: the call log's agent after it left every agent.
    pub handled_by: Option<AgentId>,
    /// Its status, queue time or recording changed since the call log last heard of it
    /// (set by the setters below, taken by `Controller::take_changed`).
    changed: bool,
}

/// Who the other party of a call is, as the CRM or the directory know them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prospect {
    pub name: Option<String>,
    pub id: Option<String>,
}

impl Call {
    /// What the call log keeps of a call changes only through these three.
    pub(crate) fn set_status(&mut self, status: Status) {
        self.changed |= self.status != status;
        self.status = status;
    }

    pub(crate) fn set_queued_at(&mut self, at: Option<Instant>) {
        self.changed |= self.queued_at != at;
        self.queued_at = at;
    }

    pub(crate) fn set_recording(&mut self, state: RecordingState) {
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

    fn is_live(&self) -> bool {
        self.status != Status::Ended
    }

    /// Name the prospect: what the CRM or directory know wins over the SIP display name.
    fn name(&mut self, prospect: Prospect) {
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
    /// An agent's WebSocket authenticated.
    AgentConnected { agent: AgentId, conn: ConnId },
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

/// Why the controller closes an agent's connection; the WebSocket edge gives the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer sign-in of the same agent took over.
    Replaced,
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

#[derive(Debug, Clone)]
struct Agent {
    max_calls: u32,
    supervisor: bool,
    /// The call this supervisor monitors, and how.
    monitoring: Option<(CallId, MonitorMode)>,
    connection: Option<ConnId>,
    /// Ended calls, newest last, for snapshots.
    recent: VecDeque<Call>,
    /// The waiting call the agent was last told about with `call.waiting`.
    announced_head: Option<CallId>,
    /// Open call-log prompts: prospect number → the calls merged into it.
    prompts: HashMap<String, Vec<CallId>>,
    /// The number presented on the agent's outbound calls: its first DID.
    caller: Option<String>,
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
    fn mode(&self, agent: Option<&str>, trunk: Option<&str>) -> RecordMode {
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

pub struct Controller {
    routes: HashMap<String, MediaPlan>,
    recording: RecordingPolicy,
    /// How long a call transferred to an agent rings before it comes back.
    transfer_ring: std::time::Duration,
    /// How long an inbound call may ring or wait before the caller gets 480.
    ring_timeout: std::time::Duration,
    agents: HashMap<AgentId, Agent>,
    /// DID → agent.
    dids: HashMap<String, AgentId>,
    calls: HashMap<CallId, Call>,
    /// Calls that ended since the shell last took them, as they were at the end (for the
    /// call log).
    ended: Vec<Call>,
    /// When `Event::Tick` is next due (see `poll_timeout`), kept as events come.
    next_due: Option<Instant>,
    /// An event or request was handled since `take_changed` last looked: only then can a
    /// call have changed, so a datagram that reached no call costs no look at every call.
    touched: bool,
}

impl Controller {
    pub fn new(routes: &[RouteConfig], agents: &[AgentConfig]) -> Controller {
        let routes = routes
            .iter()
            .map(|r| {
                let plan = match &r.route_action() {
                    RouteAction::Echo => MediaPlan::Echo,
                    RouteAction::Announce { file } => MediaPlan::Announce(file.clone()),
                };
                (r.user.clone(), plan)
            })
            .collect();
        let dids = agents
            .iter()
            .flat_map(|a| a.dids.iter().map(move |d| (d.clone(), a.id.clone())))
            .collect();
        let agents = agents
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    Agent {
                        max_calls: a.max_calls,
                        supervisor: a.role == crate::config::Role::Supervisor,
                        monitoring: None,
                        connection: None,
                        recent: VecDeque::new(),
                        announced_head: None,
                        prompts: HashMap::new(),
                        caller: a.dids.first().cloned(),
                    },
                )
            })
            .collect();
        Controller {
            routes,
            recording: RecordingPolicy::default(),
            transfer_ring: std::time::Duration::from_secs(20),
            ring_timeout: std::time::Duration::from_secs(120),
            agents,
            dids,
            calls: HashMap::new(),
            ended: Vec::new(),
            next_due: None,
            touched: false,
        }
    }

    /// How long a call transferred to an agent rings before it comes back (20 s unless set).
    pub fn set_ring_timeout(&mut self, timeout: std::time::Duration) {
        self.ring_timeout = timeout;
        self.next_due = self.due_at();
    }

    pub fn set_transfer_ring(&mut self, ring: std::time::Duration) {
        self.transfer_ring = ring;
    }

    /// Which calls are recorded (nothing is, until this is set).
    pub fn set_recording_policy(&mut self, policy: RecordingPolicy) {
        self.recording = policy;
    }

    /// Record the call's mode, and want a recording from the start when it is `always`.
    fn apply_record_mode(&mut self, call: &str, trunk: Option<&str>) {
        let Some(c) = self.calls.get_mut(call) else {
            return;
        };
        c.record_mode = self.recording.mode(c.agent.as_deref(), trunk);
        c.record_want = if c.record_mode == RecordMode::Always {
            RecordWant::On
        } else {
            RecordWant::Off
        };
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// The agent's live calls (oldest first) and its recently ended ones.
    pub fn snapshot(&self, agent: &str) -> Vec<Call> {
        let mut live: Vec<Call> = self
            .calls
            .values()
            .filter(|c| c.agent.as_deref() == Some(agent))
            .cloned()
            .collect();
        live.sort_by_key(|c| c.created_at);
        if let Some(a) = self.agents.get(agent) {
            live.extend(a.recent.iter().cloned());
        }
        live
    }

    pub fn is_connected(&self, agent: &str) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|a| a.connection.is_some())
    }

    /// The call this supervisor monitors, and how.
    pub fn monitoring(&self, supervisor: &str) -> Option<(CallId, MonitorMode)> {
        self.agents.get(supervisor)?.monitoring.clone()
    }

    /// The agent's call that is bridged to its browser.
    pub fn active_call(&self, agent: &str) -> Option<&Call> {
        self.calls
            .values()
            .find(|c| c.agent.as_deref() == Some(agent) && c.status == Status::Active)
    }

    fn live_calls_of(&self, agent: &str) -> usize {
        self.calls
            .values()
            .filter(|c| c.agent.as_deref() == Some(agent) && c.is_live())
            .count()
    }

    /// Take one event; the commands it leads to. `poll_timeout` then says when the next
    /// `Event::Tick` is due.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        let commands = self.on_event(event, now);
        self.next_due = self.due_at();
        self.touched = true;
        commands
    }

    /// When the controller next needs `Event::Tick`: the earliest ring timeout of a caller
    /// nobody took, or of a transfer to an agent; `None` while nothing waits on time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_due
    }

    /// The deadlines `expire_unanswered` and `expire_transfers` act on, earliest first.
    fn due_at(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter(|c| matches!(c.status, Status::Ringing | Status::Waiting))
            .filter_map(|c| match &c.transfer {
                Some(transfer) => transfer.deadline,
                None if c.direction == Direction::Inbound => Some(c.created_at + self.ring_timeout),
                None => None,
            })
            .min()
    }

    fn on_event(&mut self, event: Event, now: Instant) -> Vec<Command> {
        match event {
            Event::Incoming {
                call,
                from,
                from_name,
                prospect,
                to_user,
                trunk,
            } => {
                let commands = self.incoming(call.clone(), from, from_name, prospect, to_user, now);
                self.apply_record_mode(&call, trunk.as_deref());
                commands
            }
            Event::Recording { call, state } => {
                let Some(c) = self.calls.get_mut(&call) else {
                    return Vec::new();
                };
                if c.recording == state {
                    return Vec::new();
                }
                c.set_recording(state);
                self.updated(&call)
            }
            Event::Dial { call, to, plan } => {
                self.calls.insert(
                    call.clone(),
                    new_call(
                        &call,
                        Direction::Outbound,
                        String::new(),
                        None,
                        &to,
                        plan,
                        None,
                        now,
                    ),
                );
                vec![Command::Dial { call, to }]
            }
            Event::Answered { call } => self.answered(call, now),
            Event::LegEnded {
                call,
                remote,
                failed,
            } => {
                let reason = if failed {
                    EndReason::Failed
                } else if remote {
                    EndReason::CallerHangup
                } else {
                    EndReason::AgentHangup
                };
                self.end(&call, reason, now)
            }
            Event::MediaFinished { call } | Event::Hangup { call } => {
                if self.calls.contains_key(&call) {
                    vec![Command::Hangup { call }]
                } else {
                    Vec::new()
                }
            }
            Event::Dtmf { call, digit } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    // The far end may send digits forever; the call keeps the latest ones.
                    if c.dtmf.len() >= MAX_DTMF_HISTORY {
                        c.dtmf.remove(0);
                    }
                    c.dtmf.push(digit);
                }
                Vec::new()
            }
            Event::AgentConnected { agent, conn } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return Vec::new();
                };
                // A second connection replaces the first and inherits its calls.
                match a.connection.replace(conn) {
                    Some(old) if old != conn => vec![Command::CloseConnection {
                        agent,
                        conn: old,
                        reason: CloseReason::Replaced,
                    }],
                    _ => Vec::new(),
                }
            }
            Event::AgentDisconnected { agent, conn } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return Vec::new();
                };
                if a.connection != Some(conn) {
                    return Vec::new(); // a replaced connection: its calls moved on
                }
                a.connection = None;
                // A supervisor who is gone monitors nothing.
                let mut commands = self.stop_monitoring(&agent);
                let mut ids: Vec<CallId> = self
                    .calls
                    .values()
                    .filter(|c| c.agent.as_deref() == Some(agent.as_str()))
                    .map(|c| c.id.clone())
                    .collect();
                ids.sort();
                for id in ids {
                    commands.extend(self.agent_gone(&id, now));
                }
                commands
            }
            Event::Tick => {
                let mut commands = self.expire_transfers(now);
                commands.extend(self.expire_unanswered(now));
                commands
            }
            Event::Shutdown => {
                let mut ids: Vec<CallId> = self.calls.keys().cloned().collect();
                ids.sort();
                ids.into_iter()
                    .map(|call| Command::Hangup { call })
                    .collect()
            }
        }
    }

    /// Inbound calls nobody took within the ring timeout: the caller gets 480 (a caller
    /// cannot hold a slot in an agent's queue, and its media, forever).
    fn expire_unanswered(&mut self, now: Instant) -> Vec<Command> {
        let timeout = self.ring_timeout;
        let mut due: Vec<CallId> = self
            .calls
            .values()
            .filter(|c| {
                c.direction == Direction::Inbound
                    && c.transfer.is_none()
                    && matches!(c.status, Status::Ringing | Status::Waiting)
                    && now.saturating_duration_since(c.created_at) >= timeout
            })
            .map(|c| c.id.clone())
            .collect();
        due.sort();
        let mut commands = Vec::new();
        for call in due {
            if let Some(c) = self.calls.get_mut(&call) {
                c.end_reason = Some(EndReason::NoAnswer);
            }
            commands.push(Command::Reject {
                call: call.clone(),
                reason: RejectReason::Unavailable,
            });
            commands.extend(self.end(&call, EndReason::NoAnswer, now));
        }
        commands
    }

    fn incoming(
        &mut self,
        call: CallId,
        from: String,
        from_name: Option<String>,
        prospect: Prospect,
        to_user: String,
        now: Instant,
    ) -> Vec<Command> {
        if let Some(plan) = self.routes.get(&to_user).cloned() {
            let mut c = new_call(
                &call,
                Direction::Inbound,
                from,
                from_name,
                &to_user,
                plan.clone(),
                None,
                now,
            );
            c.name(prospect);
            c.set_status(Status::Active);
            c.answered_at = Some(now);
            self.calls.insert(call.clone(), c);
            return vec![Command::Answer { call, plan }];
        }
        let Some(agent) = self.dids.get(&to_user).cloned() else {
            return vec![Command::Reject {
                call,
                reason: RejectReason::UnknownNumber,
            }];
        };
        let Some(a) = self.agents.get(&agent) else {
            return vec![Command::Reject {
                call,
                reason: RejectReason::UnknownNumber,
            }];
        };
        if a.connection.is_none() {
            // Nobody to ring: the caller may try again later.
            return vec![Command::Reject {
                call,
                reason: RejectReason::Unavailable,
            }];
        }
        if self.live_calls_of(&agent) >= a.max_calls as usize {
            return vec![Command::Reject {
                call,
                reason: RejectReason::Busy,
            }];
        }
        let mut c = new_call(
            &call,
            Direction::Inbound,
            from,
            from_name,
            &to_user,
            MediaPlan::Agent(agent.clone()),
            Some(agent.clone()),
            now,
        );
        c.name(prospect);
        // Busy (a call active, ringing or being dialled): this one waits in the queue.
        let busy = self.calls.values().any(|o| {
            o.agent.as_deref() == Some(agent.as_str())
                && matches!(o.status, Status::Active | Status::Ringing | Status::Dialing)
        });
        if busy {
            c.set_status(Status::Waiting);
            c.set_queued_at(Some(now));
        }
        self.calls.insert(call.clone(), c.clone());
        let mut commands = vec![Command::Ring {
            call,
            waiting: busy,
        }];
        if busy {
            commands.extend(self.announce_waiting(&agent));
        } else {
            commands.push(Command::Notify {
                agent,
                notice: Notice::Incoming(Box::new(c)),
            });
        }
        commands
    }

    fn updated(&self, call: &str) -> Vec<Command> {
        let Some(c) = self.calls.get(call) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        if let Some(agent) = &c.agent {
            commands.push(Command::Notify {
                agent: agent.clone(),
                notice: Notice::Updated(Box::new(c.clone())),
            });
        }
        for (supervisor, mode) in self.monitors_of(call) {
            commands.push(Command::Notify {
                agent: supervisor,
                notice: Notice::Monitoring {
                    call: Box::new(c.clone()),
                    mode,
                },
            });
        }
        commands
    }

    fn answered(&mut self, call: CallId, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(&call) else {
            return vec![Command::Hangup { call }];
        };
        if c.status != Status::Dialing {
            return vec![Command::Hangup { call }];
        }
        c.answered_at = Some(now);
        match (c.plan.clone(), c.agent.clone()) {
            (MediaPlan::Agent(_), Some(agent)) => {
                // The agent may have resumed another call while this one was being dialled:
                // the answered call is the one they asked for, the other goes on hold.
                let mut commands = self.hold_active(&agent, now);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.set_status(Status::Active);
                }
                commands.push(Command::Bridge {
                    call: call.clone(),
                    agent,
                });
                commands.extend(self.updated(&call));
                commands
            }
            (MediaPlan::Join(other), _) => {
                // The far end of a transfer to a number answered: the caller meets them.
                if let Some(c) = self.calls.get_mut(&call) {
                    c.set_status(Status::Active);
                }
                let landed = self.calls.get_mut(&other).and_then(|o| {
                    let from = o.transfer.take()?.from;
                    Some((from, o.clone()))
                });
                let mut commands = vec![Command::Join {
                    a: other.clone(),
                    b: call.clone(),
                }];
                // The transfer landed: the agent it came from logs the call now.
                if let Some((from, caller)) = landed {
                    if caller.answered_at.is_some() {
                        commands.extend(self.prompt(&from, &caller));
                    }
                }
                commands.extend(self.updated_monitors(&other));
                commands
            }
            (plan, _) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.set_status(Status::Active);
                }
                vec![Command::StartMedia { call, plan }]
            }
        }
    }

    /// The call is over, whoever ended it: stop its media, tell its agent, prompt for the
    /// call log, and offer the queue's head when the active call went.
    fn end(&mut self, call: &str, reason: EndReason, now: Instant) -> Vec<Command> {
        let joined = self.calls.get(call).filter(|c| c.joined.is_some()).cloned();
        let mut commands = self.end_call(call, reason, now, true);
        if let Some(c) = joined {
            commands.extend(self.joined_leg_ended(&c, reason, now));
        }
        commands
    }

    fn end_call(
        &mut self,
        call: &str,
        reason: EndReason,
        now: Instant,
        offer_next: bool,
    ) -> Vec<Command> {
        let Some(mut c) = self.calls.remove(call) else {
            return Vec::new();
        };
        let mut commands = Vec::new();
        let was = c.status;
        if let (Some(agent), Status::Active) = (&c.agent, was) {
            commands.push(Command::Unbridge {
                call: c.id.clone(),
                agent: agent.clone(),
            });
        }
        commands.push(Command::StopMedia { call: c.id.clone() });
        // An unanswered call the agent ended was declined, not hung up.
        let reason = match (reason, was) {
            (EndReason::AgentHangup, Status::Ringing | Status::Waiting) => EndReason::Declined,
            (reason, _) => c.end_reason.unwrap_or(reason),
        };
        c.set_status(Status::Ended);
        c.ended_at = Some(now);
        // Nothing is recorded after the end; a file, if any, stays (`recording_url`), and a
        // failure stays visible.
        if c.recording != RecordingState::Failed {
            c.set_recording(RecordingState::Off);
        }
        c.end_reason = Some(reason);
        self.ended.push(c.clone());
        // Supervisors on the call are off it now (the media stops with the call).
        for (supervisor, _) in self.monitors_of(&c.id) {
            if let Some(a) = self.agents.get_mut(&supervisor) {
                a.monitoring = None;
            }
            commands.push(Command::MonitorStop {
                call: c.id.clone(),
                supervisor: supervisor.clone(),
            });
            commands.push(Command::Notify {
                agent: supervisor,
                notice: Notice::MonitorEnded(Box::new(c.clone())),
            });
        }
        let Some(agent) = c.agent.clone() else {
            return commands;
        };
        let connected = self.is_connected(&agent);
        self.remember_ended(&agent, &c);
        commands.push(Command::Notify {
            agent: agent.clone(),
            notice: Notice::Ended(Box::new(c.clone())),
        });
        // The log is wanted for every answered call, and for callers who gave up waiting or
        // on hold.
        let prompt = c.answered_at.is_some()
            || (reason == EndReason::CallerHangup
                && matches!(was, Status::Waiting | Status::OnHold));
        if prompt {
            commands.extend(self.prompt(&agent, &c));
        }
        if connected {
            if offer_next && was == Status::Active && self.active_call(&agent).is_none() {
                if let Some(head) = self.queue(&agent).first().map(|h| (*h).clone()) {
                    commands.push(Command::Notify {
                        agent: agent.clone(),
                        notice: Notice::Offer(Box::new(head)),
                    });
                }
            }
            commands.extend(self.announce_waiting(&agent));
        }
        commands
    }

    /// The agent's connection closed: end this call of theirs now.
    fn agent_gone(&mut self, call: &str, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        if c.transfer.is_some() && matches!(c.status, Status::Ringing | Status::Waiting) {
            // It was only ringing here on its way from another agent: it goes back.
            return self.transfer_failed(call, now);
        }
        c.end_reason = Some(EndReason::AgentDisconnected);
        let status = c.status;
        let id = c.id.clone();
        match status {
            // Never answered: rejected; the b2bua reports the leg ended.
            Status::Ringing | Status::Waiting => {
                let mut commands = vec![Command::Reject {
                    call: id.clone(),
                    reason: RejectReason::Unavailable,
                }];
                commands.extend(self.end(&id, EndReason::AgentDisconnected, now));
                commands
            }
            // Being dialled: cancelled, and over for the agent now (a far end that never
            // answers the CANCEL must not keep the call alive).
            Status::Dialing => {
                let mut commands = vec![Command::Hangup { call: id.clone() }];
                commands.extend(self.end(&id, EndReason::AgentDisconnected, now));
                commands
            }
            _ => vec![Command::Hangup { call: id }],
        }
    }

    /// Calls that ended since the last call of this, oldest first.
    pub fn take_ended(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.ended)
    }

    /// Live calls whose status, queue time or recording changed since the last call of
    /// this, as they are now; each change is marked where it is made.
    pub fn take_changed(&mut self) -> Vec<Call> {
        if !std::mem::take(&mut self.touched) {
            return Vec::new();
        }
        self.calls
            .values_mut()
            .filter_map(|c| std::mem::take(&mut c.changed).then(|| c.clone()))
            .collect()
    }
}

/// The number or SIP URI an agent asked to reach, trimmed; blank is a bad request.
fn dial_target(to: &str) -> Result<String, RequestError> {
    let to = to.trim();
    if to.is_empty() {
        return Err(RequestError::BadRequest(
            "to: a number or SIP URI is required".into(),
        ));
    }
    if to.len() > MAX_DIAL_TARGET {
        return Err(RequestError::BadRequest(format!(
            "to: at most {MAX_DIAL_TARGET} characters"
        )));
    }
    Ok(to.to_string())
}

#[allow(clippy::too_many_arguments)]
fn new_call(
    id: &str,
    direction: Direction,
    from: String,
    from_name: Option<String>,
    to: &str,
    plan: MediaPlan,
    agent: Option<AgentId>,
    now: Instant,
) -> Call {
    Call {
        id: id.to_string(),
        direction,
        from,
        prospect_name: from_name.clone(),
        prospect_id: None,
        from_name,
        to: to.to_string(),
        status: if direction == Direction::Inbound {
            Status::Ringing
        } else {
            Status::Dialing
        },
        plan,
        handled_by: agent.clone(),
        agent,
        created_at: now,
        answered_at: None,
        queued_at: None,
        ended_at: None,
        end_reason: None,
        dtmf: String::new(),
        record_mode: RecordMode::Off,
        record_want: RecordWant::Off,
        recording: RecordingState::Off,
        transfer: None,
        joined: None,
        // New: the call log has not heard of it.
        changed: true,
    }
}

mod monitor;
mod queue;
mod requests;
mod transfer;
pub use transfer::{Transfer, TransferTarget};

#[cfg(test)]
mod tests;
