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
}

/// Who the other party of a call is, as the CRM or the directory know them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prospect {
    pub name: Option<String>,
    pub id: Option<String>,
}

impl Call {
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

/// An agent's request (agent protocol, `call.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    Answer {
        call: CallId,
    },
    Decline {
        call: CallId,
    },
    Hangup {
        call: CallId,
    },
    /// `call` is the id the shell chose for the new call; `trunk` the first one whose dial
    /// plan allows `to` (for its recording setting).
    Dial {
        call: CallId,
        to: String,
        trunk: Option<String>,
        /// Who is called, as `call.dial` or the directory name them.
        prospect: Prospect,
    },
    /// `call.monitor` (supervisors): join another agent's call in this mode, switch mode, or
    /// leave (`None`).
    Monitor {
        call: CallId,
        mode: Option<MonitorMode>,
    },
    /// `call.transfer`: hand the call to another agent, a number, or a call set up first.
    Transfer {
        call: CallId,
        target: TransferTarget,
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
                c.recording = state;
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
            c.status = Status::Active;
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
            c.status = Status::Waiting;
            c.queued_at = Some(now);
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

    /// The agent's queue: waiting and held calls, oldest `queued_at` first.
    pub fn queue(&self, agent: &str) -> Vec<&Call> {
        let mut queue: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| {
                c.agent.as_deref() == Some(agent)
                    && matches!(c.status, Status::Waiting | Status::OnHold)
            })
            .collect();
        queue.sort_by(|a, b| a.queued_at.cmp(&b.queued_at).then(a.id.cmp(&b.id)));
        queue
    }

    /// `call.waiting` for the oldest waiting call, once per head.
    fn announce_waiting(&mut self, agent: &str) -> Vec<Command> {
        let queue = self.queue(agent);
        let queue_length = queue.len();
        let head = queue
            .into_iter()
            .find(|c| c.status == Status::Waiting)
            .cloned();
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        match head {
            Some(head) if a.announced_head.as_deref() != Some(head.id.as_str()) => {
                a.announced_head = Some(head.id.clone());
                vec![Command::Notify {
                    agent: agent.to_string(),
                    notice: Notice::Waiting {
                        call: Box::new(head),
                        queue_length,
                    },
                }]
            }
            Some(_) => Vec::new(),
            None => {
                a.announced_head = None;
                Vec::new()
            }
        }
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

    /// The supervisors on this call.
    fn monitors_of(&self, call: &str) -> Vec<(AgentId, MonitorMode)> {
        let mut found: Vec<(AgentId, MonitorMode)> = self
            .agents
            .iter()
            .filter_map(|(id, a)| match &a.monitoring {
                Some((c, mode)) if c == call => Some((id.clone(), *mode)),
                _ => None,
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// The supervisor leaves whatever call they monitor (to take a call of their own, or
    /// because they are gone).
    fn stop_monitoring(&mut self, supervisor: &str) -> Vec<Command> {
        let Some(a) = self.agents.get_mut(supervisor) else {
            return Vec::new();
        };
        match a.monitoring.take() {
            Some((call, _)) => vec![Command::MonitorStop {
                call,
                supervisor: supervisor.to_string(),
            }],
            None => Vec::new(),
        }
    }

    /// The supervisor's `call.monitor`.
    fn monitor(
        &mut self,
        supervisor: &str,
        call: CallId,
        mode: Option<MonitorMode>,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        let Some(a) = self.agents.get(supervisor) else {
            return (Err(RequestError::NotFound), Vec::new());
        };
        if !a.supervisor {
            return (
                Err(RequestError::Forbidden(
                    "only supervisors may monitor calls",
                )),
                Vec::new(),
            );
        }
        let current = a.monitoring.clone();
        let Some(mode) = mode else {
            return match current {
                Some((c, _)) if c == call => (Ok(call), self.stop_monitoring(supervisor)),
                _ => (
                    Err(RequestError::InvalidState("not monitoring this call")),
                    Vec::new(),
                ),
            };
        };
        let Some(c) = self.calls.get(&call) else {
            return (Err(RequestError::NotFound), Vec::new());
        };
        if !matches!(c.status, Status::Active | Status::OnHold) || c.agent.is_none() {
            return (
                Err(RequestError::InvalidState(c.status.as_str())),
                Vec::new(),
            );
        }
        if c.agent.as_deref() == Some(supervisor) {
            return (Err(RequestError::InvalidState("your own call")), Vec::new());
        }
        if self.active_call(supervisor).is_some() {
            // Their one peer connection carries their own active call.
            return (
                Err(RequestError::InvalidState("busy with a call of your own")),
                Vec::new(),
            );
        }
        let mut commands = Vec::new();
        match current {
            Some((c, _)) if c == call => commands.push(Command::MonitorMode {
                call: call.clone(),
                mode,
            }),
            _ => {
                commands.extend(self.stop_monitoring(supervisor));
                commands.push(Command::MonitorStart {
                    call: call.clone(),
                    supervisor: supervisor.to_string(),
                    mode,
                });
            }
        }
        if let Some(a) = self.agents.get_mut(supervisor) {
            a.monitoring = Some((call.clone(), mode));
        }
        if let Some(c) = self.calls.get(&call) {
            commands.push(Command::Notify {
                agent: supervisor.to_string(),
                notice: Notice::Monitoring {
                    call: Box::new(c.clone()),
                    mode,
                },
            });
        }
        (Ok(call), commands)
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
                    c.status = Status::Active;
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
                    c.status = Status::Active;
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
                    c.status = Status::Active;
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
        c.status = Status::Ended;
        c.ended_at = Some(now);
        // Nothing is recorded after the end; a file, if any, stays (`recording_url`), and a
        // failure stays visible.
        if c.recording != RecordingState::Failed {
            c.recording = RecordingState::Off;
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

    /// Keep an ended call (as the agent saw it end) for the agent's snapshots.
    fn remember_ended(&mut self, agent: &str, call: &Call) {
        if let Some(a) = self.agents.get_mut(agent) {
            a.recent.push_back(call.clone());
            while a.recent.len() > RECENT_ENDED {
                a.recent.pop_front();
            }
        }
    }

    /// Open (or merge into) the call-log prompt for the call's prospect.
    fn prompt(&mut self, agent: &str, call: &Call) -> Vec<Command> {
        let Some(a) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        let ids = a.prompts.entry(call.prospect().to_string()).or_default();
        if !ids.contains(&call.id) {
            ids.push(call.id.clone());
        }
        vec![Command::Notify {
            agent: agent.to_string(),
            notice: Notice::LogPrompt {
                call: Box::new(call.clone()),
                call_ids: ids.clone(),
            },
        }]
    }

    /// The prospect's call log was saved or dismissed: its prompt closes.
    pub fn close_prompt(&mut self, agent: &str, prospect: &str) -> bool {
        self.agents
            .get_mut(agent)
            .is_some_and(|a| a.prompts.remove(prospect).is_some())
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

    /// Park the agent's active call, if any: it joins the queue with `queued_at = now`.
    fn hold_active(&mut self, agent: &str, now: Instant) -> Vec<Command> {
        let Some(id) = self.active_call(agent).map(|c| c.id.clone()) else {
            return Vec::new();
        };
        self.hold(agent, &id, now)
    }

    fn hold(&mut self, agent: &str, call: &str, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        c.status = Status::OnHold;
        c.queued_at = Some(now);
        let mut commands = vec![
            Command::Unbridge {
                call: call.to_string(),
                agent: agent.to_string(),
            },
            Command::Park {
                call: call.to_string(),
            },
        ];
        commands.extend(self.updated(call));
        commands
    }

    /// Make a ringing, waiting or held call the active one (the agent has none active).
    fn activate(&mut self, agent: &str, call: &str, now: Instant) -> Vec<Command> {
        let Some(c) = self.calls.get_mut(call) else {
            return Vec::new();
        };
        // A transferred call was answered long ago: it only needs bridging.
        let answer =
            matches!(c.status, Status::Ringing | Status::Waiting) && c.answered_at.is_none();
        c.transfer = None;
        c.status = Status::Active;
        c.queued_at = None;
        if answer {
            c.answered_at = Some(now);
        }
        let mut commands = Vec::new();
        if answer {
            commands.push(Command::Answer {
                call: call.to_string(),
                plan: MediaPlan::Agent(agent.to_string()),
            });
        }
        commands.push(Command::Bridge {
            call: call.to_string(),
            agent: agent.to_string(),
        });
        commands.extend(self.updated(call));
        commands.extend(self.announce_waiting(agent));
        commands
    }

    /// An agent's request; `Ok` carries the call it concerns.
    pub fn request(
        &mut self,
        agent: &str,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        let outcome = self.on_request(agent, request, now);
        self.next_due = self.due_at();
        outcome
    }

    fn on_request(
        &mut self,
        agent: &str,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        if !self.is_connected(agent) {
            return (Err(RequestError::NotConnected), Vec::new());
        }
        // A supervisor taking a call of their own leaves the call they monitor first: their
        // one peer connection carries one call.
        let takes_a_call = matches!(
            request,
            AgentRequest::Answer { .. }
                | AgentRequest::Accept { .. }
                | AgentRequest::Resume { .. }
                | AgentRequest::Dial { .. }
        );
        let saved = self.agents.get(agent).and_then(|a| a.monitoring.clone());
        let mut leave = if takes_a_call {
            self.stop_monitoring(agent)
        } else {
            Vec::new()
        };
        let (result, commands) = self.agent_request(agent, request, now);
        if result.is_err() {
            // Nothing changed, so they go on monitoring.
            if let Some(a) = self.agents.get_mut(agent) {
                a.monitoring = saved;
            }
            return (result, commands);
        }
        leave.extend(commands);
        (result, leave)
    }

    fn agent_request(
        &mut self,
        agent: &str,
        request: AgentRequest,
        now: Instant,
    ) -> (Result<CallId, RequestError>, Vec<Command>) {
        match request {
            AgentRequest::Monitor { call, mode } => self.monitor(agent, call, mode),
            AgentRequest::Answer { call } => {
                let status = match self.own_call(agent, &call) {
                    Some(c) => c.status,
                    None => return (Err(RequestError::NotFound), Vec::new()),
                };
                let mut commands = Vec::new();
                match status {
                    // The agent may have resumed a held call while this one rang: that one
                    // goes back on hold.
                    Status::Ringing => commands.extend(self.hold_active(agent, now)),
                    // Taking an offered (or any queued) call while nothing is active.
                    Status::Waiting | Status::OnHold if self.active_call(agent).is_none() => {}
                    other => return (Err(RequestError::InvalidState(other.as_str())), Vec::new()),
                }
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Accept { call, hold_active } => {
                let queued = [Status::Ringing, Status::Waiting, Status::OnHold];
                if let Err(e) = self.own_call_in(agent, &call, &queued) {
                    return (Err(e), Vec::new());
                }
                let mut commands = Vec::new();
                if let Some(active) = self.active_call(agent).map(|c| c.id.clone()) {
                    if hold_active {
                        commands.extend(self.hold(agent, &active, now));
                    } else {
                        // The BYE goes out now and the call is over for the agent at once
                        // (the b2bua's later report of the leg's end finds nothing to do);
                        // no offer, since the accepted call takes its place.
                        commands.push(Command::Hangup {
                            call: active.clone(),
                        });
                        commands.extend(self.end_call(&active, EndReason::AgentHangup, now, false));
                    }
                }
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Hold { call } => {
                if let Err(e) = self.own_call_in(agent, &call, &[Status::Active]) {
                    return (Err(e), Vec::new());
                }
                let commands = self.hold(agent, &call, now);
                (Ok(call), commands)
            }
            AgentRequest::Resume { call } => {
                if let Err(e) = self.own_call_in(agent, &call, &[Status::OnHold, Status::Waiting]) {
                    return (Err(e), Vec::new());
                }
                let mut commands = self.hold_active(agent, now);
                commands.extend(self.activate(agent, &call, now));
                (Ok(call), commands)
            }
            AgentRequest::Decline { call } => {
                let c = match self.own_call_in(agent, &call, &[Status::Ringing, Status::Waiting]) {
                    Ok(c) => c,
                    Err(e) => return (Err(e), Vec::new()),
                };
                if c.transfer.is_some() {
                    // Declining a transferred call sends it back, not away.
                    return (Ok(call.clone()), self.transfer_failed(&call, now));
                }
                c.end_reason = Some(EndReason::Declined);
                let mut commands = vec![Command::Reject {
                    call: call.clone(),
                    reason: RejectReason::Busy,
                }];
                commands.extend(self.end(&call, EndReason::Declined, now));
                (Ok(call), commands)
            }
            AgentRequest::Hangup { call } => {
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                match c.status {
                    Status::Ringing | Status::Waiting if c.transfer.is_some() => {
                        (Ok(call.clone()), self.transfer_failed(&call, now))
                    }
                    Status::Ringing | Status::Waiting => {
                        c.end_reason = Some(EndReason::Declined);
                        let mut commands = vec![Command::Reject {
                            call: call.clone(),
                            reason: RejectReason::Busy,
                        }];
                        commands.extend(self.end(&call, EndReason::Declined, now));
                        (Ok(call), commands)
                    }
                    _ => {
                        c.end_reason = Some(EndReason::AgentHangup);
                        (Ok(call.clone()), vec![Command::Hangup { call }])
                    }
                }
            }
            AgentRequest::Transfer { call, target } => self.transfer(agent, call, target, now),
            AgentRequest::Record { call, action } => {
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                if c.record_mode == RecordMode::Off {
                    return (
                        Err(RequestError::Forbidden("recording is off for this call")),
                        Vec::new(),
                    );
                }
                let want = match (action, c.record_want) {
                    (RecordAction::Start, RecordWant::Off | RecordWant::Paused) => RecordWant::On,
                    (RecordAction::Resume, RecordWant::Paused) => RecordWant::On,
                    (RecordAction::Pause, RecordWant::On) => RecordWant::Paused,
                    (RecordAction::Stop, RecordWant::On | RecordWant::Paused) => RecordWant::Off,
                    (_, current) => {
                        return (
                            Err(RequestError::InvalidState(match current {
                                RecordWant::On => "already being recorded",
                                RecordWant::Paused => "recording is paused",
                                RecordWant::Off => "not being recorded",
                            })),
                            Vec::new(),
                        )
                    }
                };
                if let Some(c) = self.calls.get_mut(&call) {
                    c.record_want = want;
                }
                (Ok(call.clone()), vec![Command::Record { call, want }])
            }
            AgentRequest::Dial {
                call,
                to,
                trunk,
                prospect,
            } => {
                let to = match dial_target(&to) {
                    Ok(to) => to,
                    Err(e) => return (Err(e), Vec::new()),
                };
                let max = self.agents.get(agent).map_or(0, |a| a.max_calls);
                if self.live_calls_of(agent) >= max as usize {
                    return (Err(RequestError::LimitReached(max)), Vec::new());
                }
                let dialing = self.calls.values().any(|c| {
                    c.agent.as_deref() == Some(agent)
                        && matches!(c.status, Status::Dialing | Status::Ringing)
                });
                if dialing {
                    return (
                        Err(RequestError::InvalidState("busy with a call being set up")),
                        Vec::new(),
                    );
                }
                // The active call goes on hold first.
                let mut commands = self.hold_active(agent, now);
                let mut c = new_call(
                    &call,
                    Direction::Outbound,
                    String::new(),
                    None,
                    &to,
                    MediaPlan::Agent(agent.to_string()),
                    Some(agent.to_string()),
                    now,
                );
                c.name(prospect);
                self.calls.insert(call.clone(), c);
                self.apply_record_mode(&call, trunk.as_deref());
                commands.push(Command::Dial {
                    call: call.clone(),
                    to,
                });
                commands.extend(self.updated(&call));
                (Ok(call), commands)
            }
            AgentRequest::Dtmf { call, digits } => {
                if digits.is_empty()
                    || digits.len() > MAX_DTMF_SEND
                    || !digits
                        .chars()
                        .all(|d| matches!(d, '0'..='9' | '*' | '#' | 'A'..='D'))
                {
                    return (
                        Err(RequestError::BadRequest(
                            "digits: 1 to 32 of 0-9, *, # or A-D".into(),
                        )),
                        Vec::new(),
                    );
                }
                let Some(c) = self.own_call(agent, &call) else {
                    return (Err(RequestError::NotFound), Vec::new());
                };
                if c.status != Status::Active {
                    return (
                        Err(RequestError::InvalidState(c.status.as_str())),
                        Vec::new(),
                    );
                }
                (Ok(call.clone()), vec![Command::SendDtmf { call, digits }])
            }
        }
    }

    /// Calls that ended since the last call of this, oldest first.
    pub fn take_ended(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.ended)
    }

    /// Record the number callgate presents on an agent's outbound call.
    pub fn set_caller(&mut self, call: &str, from: &str) {
        if let Some(c) = self.calls.get_mut(call) {
            c.from = from.to_string();
        }
    }

    fn own_call(&mut self, agent: &str, call: &str) -> Option<&mut Call> {
        self.calls
            .get_mut(call)
            .filter(|c| c.agent.as_deref() == Some(agent))
    }

    /// The agent's call, if it is in one of `allowed` statuses: `not_found` or
    /// `invalid_state` otherwise.
    fn own_call_in(
        &mut self,
        agent: &str,
        call: &str,
        allowed: &[Status],
    ) -> Result<&mut Call, RequestError> {
        let c = self.own_call(agent, call).ok_or(RequestError::NotFound)?;
        if allowed.contains(&c.status) {
            Ok(c)
        } else {
            Err(RequestError::InvalidState(c.status.as_str()))
        }
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
    }
}

mod transfer;
pub use transfer::{Transfer, TransferTarget};

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn controller() -> Controller {
        Controller::new(
            &[
                RouteConfig::echo("echo"),
                RouteConfig::announce("announce", std::path::Path::new("a.wav")),
            ],
            &[],
        )
    }

    #[test]
    fn routes_inbound_calls_by_user() {
        let mut c = controller();
        let now = Instant::now();
        let cmds = c.handle(
            Event::Incoming {
                prospect: Default::default(),
                call: "c1".into(),
                from: "+1555".into(),
                from_name: None,
                to_user: "echo".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(
            cmds,
            vec![Command::Answer {
                call: "c1".into(),
                plan: MediaPlan::Echo
            }]
        );
        let cmds = c.handle(
            Event::Incoming {
                prospect: Default::default(),
                call: "c2".into(),
                from: "+1555".into(),
                from_name: None,
                to_user: "nobody".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(
            cmds,
            vec![Command::Reject {
                call: "c2".into(),
                reason: RejectReason::UnknownNumber
            }]
        );
        assert!(c.call("c2").is_none());
    }

    #[test]
    fn announcement_end_hangs_up_and_leg_end_stops_media() {
        let mut c = controller();
        let now = Instant::now();
        c.handle(
            Event::Incoming {
                prospect: Default::default(),
                call: "c1".into(),
                from: "x".into(),
                from_name: None,
                to_user: "announce".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(
            c.handle(Event::MediaFinished { call: "c1".into() }, now),
            vec![Command::Hangup { call: "c1".into() }]
        );
        assert_eq!(
            c.handle(
                Event::LegEnded {
                    call: "c1".into(),
                    remote: false,
                    failed: false
                },
                now
            ),
            vec![Command::StopMedia { call: "c1".into() }]
        );
        assert!(c
            .handle(Event::MediaFinished { call: "c1".into() }, now)
            .is_empty());
    }

    #[test]
    fn dial_starts_media_only_when_answered() {
        let mut c = controller();
        let now = Instant::now();
        assert_eq!(
            c.handle(
                Event::Dial {
                    call: "o1".into(),
                    to: "+15551234567".into(),
                    plan: MediaPlan::Echo
                },
                now
            ),
            vec![Command::Dial {
                call: "o1".into(),
                to: "+15551234567".into()
            }]
        );
        assert_eq!(c.call("o1").map(|c| c.status), Some(Status::Dialing));
        assert_eq!(
            c.handle(Event::Answered { call: "o1".into() }, now),
            vec![Command::StartMedia {
                call: "o1".into(),
                plan: MediaPlan::Echo
            }]
        );
        assert_eq!(c.call("o1").map(|c| c.status), Some(Status::Active));
        // A stray answer for an unknown call is hung up.
        assert_eq!(
            c.handle(Event::Answered { call: "zz".into() }, now),
            vec![Command::Hangup { call: "zz".into() }]
        );
    }

    #[test]
    fn shutdown_hangs_up_everything() {
        let mut c = controller();
        let now = Instant::now();
        for i in 0..3 {
            c.handle(
                Event::Incoming {
                    prospect: Default::default(),
                    call: format!("c{i}"),
                    from: "x".into(),
                    from_name: None,
                    to_user: "echo".into(),
                    trunk: None,
                },
                now,
            );
        }
        let cmds = c.handle(Event::Shutdown, now);
        assert_eq!(cmds.len(), 3);
        assert!(cmds.iter().all(|c| matches!(c, Command::Hangup { .. })));
    }

    fn agent(id: &str, did: &str, max_calls: u32) -> AgentConfig {
        AgentConfig {
            id: id.into(),
            name: id.into(),
            token_sha256: String::new(),
            role: crate::config::Role::Agent,
            max_calls,
            dids: vec![did.into()],
            recording: None,
        }
    }

    /// Ann takes c1 back from her queue.
    fn resume(c: &mut Controller, now: Instant) {
        let (result, _) = c.request("ann", AgentRequest::Resume { call: "c1".into() }, now);
        assert!(result.is_ok(), "{result:?}");
    }

    /// Sign these agents in, with connections 1, 2, …
    fn connect(c: &mut Controller, agents: &[&str], now: Instant) {
        for (i, agent) in agents.iter().enumerate() {
            c.handle(
                Event::AgentConnected {
                    agent: agent.to_string(),
                    conn: i as u64 + 1,
                },
                now,
            );
        }
    }

    fn with_agent(max_calls: u32) -> Controller {
        Controller::new(&[], &[agent("ann", "+15550000100", max_calls)])
    }

    fn ring(c: &mut Controller, call: &str, now: Instant) -> Vec<Command> {
        c.handle(
            Event::Incoming {
                prospect: Default::default(),
                call: call.into(),
                from: "+15551230001".into(),
                from_name: Some("Pat".into()),
                to_user: "+15550000100".into(),
                trunk: None,
            },
            now,
        )
    }

    #[test]
    fn transfers_hand_calls_on_and_bring_them_back_when_they_do_not_land() {
        let mut c = Controller::new(
            &[],
            &[
                agent("ann", "+15550000100", 100),
                agent("bob", "+15550000200", 100),
            ],
        );
        let mut now = Instant::now();
        connect(&mut c, &["ann", "bob"], now);
        ring(&mut c, "c1", now);
        assert!(c
            .request("ann", AgentRequest::Answer { call: "c1".into() }, now)
            .0
            .is_ok());
        let transfer = |c: &mut Controller, target, now| {
            c.request(
                "ann",
                AgentRequest::Transfer {
                    call: "c1".into(),
                    target,
                },
                now,
            )
        };
        // To bob: ann sees it go (transferred, no prompt: it is bob's to log), bob rings, the
        // caller is parked, and nothing is answered again at the SIP level.
        let (r, cmds) = transfer(&mut c, TransferTarget::Agent("bob".into()), now);
        assert_eq!(r, Ok("c1".to_string()));
        assert!(cmds.contains(&Command::Park { call: "c1".into() }));
        assert!(cmds.iter().any(
            |cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Ended(call) }
            if agent == "ann" && call.end_reason == Some(EndReason::Transferred))
        ));
        assert!(!cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Notify {
                notice: Notice::LogPrompt { .. },
                ..
            }
        )));
        assert!(cmds.iter().any(|cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Incoming(_) } if agent == "bob")));
        // Bob declines: back on hold in ann's queue, offered to her (she is free).
        let (r, cmds) = c.request("bob", AgentRequest::Decline { call: "c1".into() }, now);
        assert_eq!(r, Ok("c1".to_string()));
        assert!(
            !cmds.iter().any(|cmd| matches!(cmd, Command::Reject { .. })),
            "{cmds:?}"
        );
        assert_eq!(
            c.call("c1").map(|x| (x.status, x.agent.clone())),
            Some((Status::OnHold, Some("ann".into())))
        );
        assert!(cmds.iter().any(|cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Offer(_) } if agent == "ann")));
        // Again, and nobody answers within the ring time (20 s by default).
        resume(&mut c, now);
        assert!(transfer(&mut c, TransferTarget::Agent("bob".into()), now)
            .0
            .is_ok());
        assert_eq!(
            c.poll_timeout(),
            Some(now + std::time::Duration::from_secs(20)),
            "the controller asks for time when the transfer's ring runs out"
        );
        now += std::time::Duration::from_secs(19);
        assert!(c.handle(Event::Tick, now).is_empty());
        now += std::time::Duration::from_secs(2);
        let cmds = c.handle(Event::Tick, now);
        assert!(cmds.iter().any(|cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Ended(_) } if agent == "bob")));
        assert_eq!(c.call("c1").map(|x| x.status), Some(Status::OnHold));
        // To a number that fails: back again, no prompt yet; one that answers: joined, and
        // ann logs it.
        resume(&mut c, now);
        let (_, cmds) = transfer(
            &mut c,
            TransferTarget::Number {
                to: "+15559990001".into(),
                leg: "t1".into(),
            },
            now,
        );
        assert!(cmds.contains(&Command::Dial {
            call: "t1".into(),
            to: "+15559990001".into()
        }));
        assert!(!cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Notify {
                notice: Notice::LogPrompt { .. },
                ..
            }
        )));
        let cmds = c.handle(
            Event::LegEnded {
                call: "t1".into(),
                remote: true,
                failed: true,
            },
            now,
        );
        assert_eq!(
            c.call("c1").map(|x| (x.status, x.agent.clone())),
            Some((Status::OnHold, Some("ann".into())))
        );
        assert!(
            !cmds.iter().any(|cmd| matches!(cmd, Command::Hangup { .. })),
            "the caller stays: {cmds:?}"
        );
        resume(&mut c, now);
        let (r, _) = transfer(
            &mut c,
            TransferTarget::Number {
                to: "+15559990001".into(),
                leg: "t2".into(),
            },
            now,
        );
        assert!(r.is_ok());
        let cmds = c.handle(Event::Answered { call: "t2".into() }, now);
        assert!(cmds.contains(&Command::Join {
            a: "c1".into(),
            b: "t2".into()
        }));
        assert!(cmds.iter().any(|cmd| matches!(cmd, Command::Notify { agent, notice: Notice::LogPrompt { .. } } if agent == "ann")));
        // Either leg ending ends the other.
        let cmds = c.handle(
            Event::LegEnded {
                call: "t2".into(),
                remote: true,
                failed: false,
            },
            now,
        );
        assert!(cmds.contains(&Command::Hangup { call: "c1".into() }));
        assert!(c.call("c1").is_none() && c.call("t2").is_none());
    }

    #[test]
    fn supervisors_monitor_other_agents_calls_and_leave_them_to_take_their_own() {
        let mut boss = agent("boss", "+15550000900", 100);
        boss.role = crate::config::Role::Supervisor;
        let mut c = Controller::new(&[], &[agent("ann", "+15550000100", 100), boss]);
        let now = Instant::now();
        connect(&mut c, &["ann", "boss"], now);
        ring(&mut c, "c1", now);
        let monitor = |c: &mut Controller, who: &str, call: &str, mode| {
            c.request(
                who,
                AgentRequest::Monitor {
                    call: call.into(),
                    mode,
                },
                now,
            )
        };
        // Ringing is not monitorable; agents may not monitor at all.
        let (r, _) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Listen));
        assert_eq!(r.map_err(|e| e.code()), Err("invalid_state"));
        let (r, _) = c.request("ann", AgentRequest::Answer { call: "c1".into() }, now);
        assert!(r.is_ok());
        let (r, _) = monitor(&mut c, "ann", "c1", Some(MonitorMode::Listen));
        assert_eq!(r.map_err(|e| e.code()), Err("forbidden"));
        let (r, cmds) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Listen));
        assert_eq!(r, Ok("c1".to_string()));
        assert!(cmds.contains(&Command::MonitorStart {
            call: "c1".into(),
            supervisor: "boss".into(),
            mode: MonitorMode::Listen
        }));
        // Switching mode is a mode change, not a new join.
        let (_, cmds) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Barge));
        assert!(cmds.contains(&Command::MonitorMode {
            call: "c1".into(),
            mode: MonitorMode::Barge
        }));
        // The agent's hold is told to the supervisor too.
        let (_, cmds) = c.request("ann", AgentRequest::Hold { call: "c1".into() }, now);
        assert!(cmds.iter().any(|cmd| matches!(cmd,
            Command::Notify { agent, notice: Notice::Monitoring { call, mode: MonitorMode::Barge } }
                if agent == "boss" && call.status == Status::OnHold)));
        let (r, _) = c.request("ann", AgentRequest::Resume { call: "c1".into() }, now);
        assert!(r.is_ok());
        // The supervisor answers a call of their own: they leave the monitored one first.
        c.handle(
            Event::Incoming {
                prospect: Default::default(),
                call: "own".into(),
                from: "+15551239999".into(),
                from_name: None,
                to_user: "+15550000900".into(),
                trunk: None,
            },
            now,
        );
        let (r, cmds) = c.request("boss", AgentRequest::Answer { call: "own".into() }, now);
        assert_eq!(r, Ok("own".to_string()));
        assert_eq!(
            cmds[0],
            Command::MonitorStop {
                call: "c1".into(),
                supervisor: "boss".into()
            }
        );
        // Busy with their own call, they cannot monitor; once it ends they can, and the end
        // of the monitored call tells them.
        let (r, _) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Listen));
        assert_eq!(r.map_err(|e| e.code()), Err("invalid_state"));
        let (r, _) = c.request("boss", AgentRequest::Hangup { call: "own".into() }, now);
        assert!(r.is_ok());
        c.handle(
            Event::LegEnded {
                call: "own".into(),
                remote: false,
                failed: false,
            },
            now,
        );
        let (r, _) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Whisper));
        assert_eq!(r, Ok("c1".to_string()));
        let cmds = c.handle(
            Event::LegEnded {
                call: "c1".into(),
                remote: true,
                failed: false,
            },
            now,
        );
        assert!(cmds.contains(&Command::MonitorStop {
            call: "c1".into(),
            supervisor: "boss".into()
        }));
        assert!(cmds.iter().any(|cmd| matches!(cmd,
            Command::Notify { agent, notice: Notice::MonitorEnded(call) } if agent == "boss" && call.id == "c1")));
        let (r, _) = monitor(&mut c, "boss", "c1", None);
        assert_eq!(
            r.map_err(|e| e.code()),
            Err("invalid_state"),
            "nothing left to stop"
        );
    }

    #[test]
    fn recording_modes_follow_agent_then_trunk_then_default_and_call_record_obeys_them() {
        let mut c = Controller::new(
            &[],
            &[
                agent("ann", "+15550000100", 100),
                agent("bob", "+15550000200", 100),
            ],
        );
        c.set_recording_policy(RecordingPolicy {
            default: RecordMode::Always,
            agents: HashMap::from([("bob".to_string(), RecordMode::Off)]),
            trunks: HashMap::from([("carrier".to_string(), RecordMode::OnDemand)]),
        });
        let now = Instant::now();
        connect(&mut c, &["ann", "bob"], now);
        let arrive = |c: &mut Controller, call: &str, did: &str, trunk: Option<&str>| {
            c.handle(
                Event::Incoming {
                    prospect: Default::default(),
                    call: call.into(),
                    from: "+15551230001".into(),
                    from_name: None,
                    to_user: did.into(),
                    trunk: trunk.map(str::to_string),
                },
                now,
            );
        };
        arrive(&mut c, "a1", "+15550000100", None);
        arrive(&mut c, "a2", "+15550000100", Some("carrier"));
        arrive(&mut c, "b1", "+15550000200", Some("carrier"));
        let mode = |c: &Controller, id: &str| c.call(id).map(|c| (c.record_mode, c.record_want));
        assert_eq!(mode(&c, "a1"), Some((RecordMode::Always, RecordWant::On)));
        assert_eq!(
            mode(&c, "a2"),
            Some((RecordMode::OnDemand, RecordWant::Off))
        );
        assert_eq!(
            mode(&c, "b1"),
            Some((RecordMode::Off, RecordWant::Off)),
            "agent wins"
        );
        let record = |c: &mut Controller, agent: &str, call: &str, action| {
            c.request(
                agent,
                AgentRequest::Record {
                    call: call.into(),
                    action,
                },
                now,
            )
        };
        // Off: nobody may record it.
        let (result, cmds) = record(&mut c, "bob", "b1", RecordAction::Start);
        assert_eq!(result.map_err(|e| e.code()), Err("forbidden"));
        assert!(cmds.is_empty());
        // Another agent's call is not there for them.
        let (result, _) = record(&mut c, "bob", "a2", RecordAction::Start);
        assert_eq!(result.map_err(|e| e.code()), Err("not_found"));
        // On demand: start, pause, resume, stop, each once.
        let steps = [
            (RecordAction::Pause, Err("invalid_state")),
            (RecordAction::Start, Ok(RecordWant::On)),
            (RecordAction::Start, Err("invalid_state")),
            (RecordAction::Pause, Ok(RecordWant::Paused)),
            (RecordAction::Pause, Err("invalid_state")),
            (RecordAction::Resume, Ok(RecordWant::On)),
            (RecordAction::Stop, Ok(RecordWant::Off)),
            (RecordAction::Resume, Err("invalid_state")),
        ];
        for (action, expected) in steps {
            let (result, cmds) = record(&mut c, "ann", "a2", action);
            match expected {
                Ok(want) => {
                    assert_eq!(result, Ok("a2".to_string()), "{action:?}");
                    assert_eq!(
                        cmds,
                        vec![Command::Record {
                            call: "a2".into(),
                            want
                        }]
                    );
                }
                Err(code) => {
                    assert_eq!(result.map_err(|e| e.code()), Err(code), "{action:?}");
                    assert!(cmds.is_empty());
                }
            }
        }
        // The media's reports become the call's `recording`, told to its agent once each.
        let cmds = c.handle(
            Event::Recording {
                call: "a1".into(),
                state: RecordingState::Recording,
            },
            now,
        );
        assert!(
            matches!(&cmds[..], [Command::Notify { notice: Notice::Updated(call), .. }]
            if call.recording == RecordingState::Recording)
        );
        let again = c.handle(
            Event::Recording {
                call: "a1".into(),
                state: RecordingState::Recording,
            },
            now,
        );
        assert!(again.is_empty());
    }

    #[test]
    fn an_agents_did_rings_only_while_the_agent_is_connected() {
        let mut c = with_agent(100);
        let now = Instant::now();
        assert_eq!(
            ring(&mut c, "c1", now),
            vec![Command::Reject {
                call: "c1".into(),
                reason: RejectReason::Unavailable
            }]
        );
        connect(&mut c, &["ann"], now);
        let cmds = ring(&mut c, "c2", now);
        assert_eq!(
            cmds[0],
            Command::Ring {
                call: "c2".into(),
                waiting: false
            }
        );
        assert!(matches!(
            &cmds[1],
            Command::Notify { agent, notice: Notice::Incoming(call) }
                if agent == "ann" && call.status == Status::Ringing && call.from_name.as_deref() == Some("Pat")
        ));
        // Busy with one call: a second caller waits (180) and the agent hears of it.
        let cmds = ring(&mut c, "c3", now);
        assert_eq!(
            cmds[0],
            Command::Ring {
                call: "c3".into(),
                waiting: true
            }
        );
        assert!(matches!(
            &cmds[1],
            Command::Notify { notice: Notice::Waiting { call, queue_length: 1 }, .. }
                if call.status == Status::Waiting
        ));
    }

    #[test]
    fn unanswered_callers_get_480_after_the_ring_timeout() {
        let mut c = with_agent(100);
        c.set_ring_timeout(std::time::Duration::from_secs(120));
        let t0 = Instant::now();
        connect(&mut c, &["ann"], t0);
        assert_eq!(c.poll_timeout(), None, "nothing waits on time");
        ring(&mut c, "c1", t0);
        // A second caller waits while the first rings; both go unanswered.
        ring(&mut c, "c2", t0 + std::time::Duration::from_secs(30));
        // The controller asks for time exactly when the first caller's ring runs out.
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + std::time::Duration::from_secs(120))
        );
        assert!(c
            .handle(Event::Tick, t0 + std::time::Duration::from_secs(119))
            .is_empty());
        let cmds = c.handle(Event::Tick, t0 + std::time::Duration::from_secs(120));
        assert_eq!(
            cmds[0],
            Command::Reject {
                call: "c1".into(),
                reason: RejectReason::Unavailable
            }
        );
        assert!(cmds.iter().any(|cmd| matches!(cmd,
            Command::Notify { notice: Notice::Ended(call), .. }
                if call.id == "c1" && call.end_reason == Some(EndReason::NoAnswer))));
        assert!(c.call("c1").is_none());
        assert!(c.call("c2").is_some(), "the later caller has time left");
        assert_eq!(
            c.poll_timeout(),
            Some(t0 + std::time::Duration::from_secs(150))
        );
        let cmds = c.handle(Event::Tick, t0 + std::time::Duration::from_secs(150));
        assert!(cmds.contains(&Command::Reject {
            call: "c2".into(),
            reason: RejectReason::Unavailable
        }));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn an_answered_call_needs_no_more_time() {
        let mut c = with_agent(100);
        let t0 = Instant::now();
        connect(&mut c, &["ann"], t0);
        ring(&mut c, "c1", t0);
        assert!(c.poll_timeout().is_some());
        let (result, _) = c.request("ann", AgentRequest::Answer { call: "c1".into() }, t0);
        assert_eq!(result, Ok("c1".to_string()));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn answering_bridges_and_a_disconnect_ends_every_call() {
        let mut c = with_agent(100);
        let now = Instant::now();
        connect(&mut c, &["ann"], now);
        ring(&mut c, "c1", now);
        let (result, cmds) = c.request("ann", AgentRequest::Answer { call: "c1".into() }, now);
        assert_eq!(result, Ok("c1".to_string()));
        assert_eq!(
            cmds[..2],
            [
                Command::Answer {
                    call: "c1".into(),
                    plan: MediaPlan::Agent("ann".into())
                },
                Command::Bridge {
                    call: "c1".into(),
                    agent: "ann".into()
                }
            ]
        );
        // Another agent's call id is not found; answering twice is an invalid state.
        let (result, _) = c.request("ann", AgentRequest::Answer { call: "zz".into() }, now);
        assert_eq!(result, Err(RequestError::NotFound));
        let (result, _) = c.request("ann", AgentRequest::Answer { call: "c1".into() }, now);
        assert_eq!(result, Err(RequestError::InvalidState("active")));
        // A replaced connection's close changes nothing; the current one's ends the calls.
        let cmds = c.handle(
            Event::AgentConnected {
                agent: "ann".into(),
                conn: 2,
            },
            now,
        );
        assert_eq!(
            cmds,
            vec![Command::CloseConnection {
                agent: "ann".into(),
                conn: 1,
                reason: CloseReason::Replaced,
            }]
        );
        assert!(c
            .handle(
                Event::AgentDisconnected {
                    agent: "ann".into(),
                    conn: 1
                },
                now
            )
            .is_empty());
        let cmds = c.handle(
            Event::AgentDisconnected {
                agent: "ann".into(),
                conn: 2,
            },
            now,
        );
        assert_eq!(cmds, vec![Command::Hangup { call: "c1".into() }]);
        let cmds = c.handle(
            Event::LegEnded {
                call: "c1".into(),
                remote: false,
                failed: false,
            },
            now,
        );
        assert!(cmds.contains(&Command::Unbridge {
            call: "c1".into(),
            agent: "ann".into()
        }));
        assert!(cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Notify { notice: Notice::Ended(call), .. }
                if call.end_reason == Some(EndReason::AgentDisconnected)
        )));
        assert_eq!(c.snapshot("ann")[0].status, Status::Ended);
    }

    #[test]
    fn agent_dials_bridge_on_answer_and_respect_max_calls() {
        let mut c = with_agent(1);
        let now = Instant::now();
        let (result, _) = c.request(
            "ann",
            AgentRequest::Dial {
                prospect: Default::default(),
                call: "o1".into(),
                to: "+15551234567".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(result, Err(RequestError::NotConnected));
        connect(&mut c, &["ann"], now);
        let (result, cmds) = c.request(
            "ann",
            AgentRequest::Dial {
                prospect: Default::default(),
                call: "o1".into(),
                to: "+15551234567".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(result, Ok("o1".to_string()));
        assert_eq!(
            cmds[0],
            Command::Dial {
                call: "o1".into(),
                to: "+15551234567".into()
            }
        );
        let (result, _) = c.request(
            "ann",
            AgentRequest::Dial {
                prospect: Default::default(),
                call: "o2".into(),
                to: "+15551234568".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(result, Err(RequestError::LimitReached(1)));
        let cmds = c.handle(Event::Answered { call: "o1".into() }, now);
        assert_eq!(
            cmds[0],
            Command::Bridge {
                call: "o1".into(),
                agent: "ann".into()
            }
        );
        let (result, cmds) = c.request(
            "ann",
            AgentRequest::Dtmf {
                call: "o1".into(),
                digits: "12#".into(),
            },
            now,
        );
        assert_eq!(result, Ok("o1".to_string()));
        assert_eq!(
            cmds,
            vec![Command::SendDtmf {
                call: "o1".into(),
                digits: "12#".into()
            }]
        );
    }

    fn notices(cmds: &[Command]) -> Vec<&Notice> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Notify { notice, .. } => Some(notice),
                _ => None,
            })
            .collect()
    }

    fn answered_one(now: Instant) -> Controller {
        let mut c = with_agent(100);
        connect(&mut c, &["ann"], now);
        ring(&mut c, "a", now);
        let _ = c.request("ann", AgentRequest::Answer { call: "a".into() }, now);
        c
    }

    #[test]
    fn hold_and_accept_parks_the_active_call_and_bridges_the_waiting_one() {
        let now = Instant::now();
        let mut c = answered_one(now);
        ring(&mut c, "b", now + Duration::from_secs(1));
        assert_eq!(c.call("b").map(|b| b.status), Some(Status::Waiting));
        let (result, cmds) = c.request(
            "ann",
            AgentRequest::Accept {
                call: "b".into(),
                hold_active: true,
            },
            now + Duration::from_secs(2),
        );
        assert_eq!(result, Ok("b".to_string()));
        let order: Vec<&Command> = cmds
            .iter()
            .filter(|c| !matches!(c, Command::Notify { .. }))
            .collect();
        assert_eq!(
            order,
            vec![
                &Command::Unbridge {
                    call: "a".into(),
                    agent: "ann".into()
                },
                &Command::Park { call: "a".into() },
                &Command::Answer {
                    call: "b".into(),
                    plan: MediaPlan::Agent("ann".into())
                },
                &Command::Bridge {
                    call: "b".into(),
                    agent: "ann".into()
                },
            ]
        );
        assert_eq!(c.call("a").map(|a| a.status), Some(Status::OnHold));
        assert_eq!(c.queue("ann").len(), 1);
        // Resume swaps back: b on hold, a active, and the queue stays in hold order.
        let (_, cmds) = c.request(
            "ann",
            AgentRequest::Resume { call: "a".into() },
            now + Duration::from_secs(3),
        );
        assert!(cmds.contains(&Command::Park { call: "b".into() }));
        assert!(cmds.contains(&Command::Bridge {
            call: "a".into(),
            agent: "ann".into()
        }));
        assert_eq!(c.active_call("ann").map(|a| a.id.as_str()), Some("a"));
        // Resuming the active call is an invalid state.
        let (result, _) = c.request("ann", AgentRequest::Resume { call: "a".into() }, now);
        assert_eq!(result, Err(RequestError::InvalidState("active")));
    }

    #[test]
    fn end_and_accept_hangs_up_without_offering_and_the_end_of_a_call_offers_the_head() {
        let now = Instant::now();
        let mut c = answered_one(now);
        ring(&mut c, "b", now + Duration::from_secs(1));
        ring(&mut c, "c", now + Duration::from_secs(2));
        let (_, cmds) = c.request(
            "ann",
            AgentRequest::Accept {
                call: "b".into(),
                hold_active: false,
            },
            now + Duration::from_secs(3),
        );
        assert!(cmds.contains(&Command::Hangup { call: "a".into() }));
        assert!(!notices(&cmds).iter().any(|n| matches!(n, Notice::Offer(_))));
        assert!(notices(&cmds)
            .iter()
            .any(|n| matches!(n, Notice::Waiting { call, .. } if call.id == "c")));
        // The far end of b hangs up: c, the FIFO head, is offered; nothing connects.
        let cmds = c.handle(
            Event::LegEnded {
                call: "b".into(),
                remote: true,
                failed: false,
            },
            now + Duration::from_secs(4),
        );
        assert!(notices(&cmds)
            .iter()
            .any(|n| matches!(n, Notice::Offer(call) if call.id == "c")));
        assert!(!cmds.iter().any(|c| matches!(c, Command::Answer { .. })));
        assert_eq!(c.call("c").map(|c| c.status), Some(Status::Waiting));
        // Taking the offer answers it.
        let (result, cmds) = c.request("ann", AgentRequest::Answer { call: "c".into() }, now);
        assert_eq!(result, Ok("c".to_string()));
        assert!(cmds.iter().any(|c| matches!(c, Command::Answer { .. })));
    }

    #[test]
    fn callers_giving_up_on_hold_are_prompted_once_per_prospect() {
        let now = Instant::now();
        let mut c = answered_one(now);
        let _ = c.request("ann", AgentRequest::Hold { call: "a".into() }, now);
        let cmds = c.handle(
            Event::LegEnded {
                call: "a".into(),
                remote: true,
                failed: false,
            },
            now,
        );
        let prompts: Vec<&Notice> = notices(&cmds)
            .into_iter()
            .filter(|n| matches!(n, Notice::LogPrompt { .. }))
            .collect();
        assert_eq!(prompts.len(), 1);
        assert!(cmds.iter().any(|cmd| matches!(
            cmd,
            Command::Notify { notice: Notice::Ended(call), .. }
                if call.end_reason == Some(EndReason::CallerHangup)
        )));
        // The same prospect calls again, waits, and gives up: merged into the open prompt.
        ring(&mut c, "a2", now);
        ring(&mut c, "a3", now);
        let cmds = c.handle(
            Event::LegEnded {
                call: "a3".into(),
                remote: true,
                failed: false,
            },
            now,
        );
        assert!(notices(&cmds).iter().any(|n| matches!(
            n,
            Notice::LogPrompt { call_ids, .. } if call_ids == &vec!["a".to_string(), "a3".to_string()]
        )));
        assert!(c.close_prompt("ann", "+15551230001"));
    }

    #[test]
    fn dialing_while_on_a_call_holds_it_and_the_limit_turns_callers_away() {
        let now = Instant::now();
        let mut c = with_agent(2);
        connect(&mut c, &["ann"], now);
        ring(&mut c, "a", now);
        let _ = c.request("ann", AgentRequest::Answer { call: "a".into() }, now);
        let (result, cmds) = c.request(
            "ann",
            AgentRequest::Dial {
                prospect: Default::default(),
                call: "o".into(),
                to: "+15551234567".into(),
                trunk: None,
            },
            now,
        );
        assert_eq!(result, Ok("o".to_string()));
        let park = cmds
            .iter()
            .position(|c| c == &Command::Park { call: "a".into() });
        let dial = cmds.iter().position(|c| matches!(c, Command::Dial { .. }));
        assert!(park < dial, "hold first, then dial: {cmds:?}");
        // Two live calls is this agent's limit.
        assert_eq!(
            ring(&mut c, "x", now),
            vec![Command::Reject {
                call: "x".into(),
                reason: RejectReason::Busy
            }]
        );
    }

    #[test]
    fn requests_in_the_wrong_state_are_refused_and_change_nothing() {
        let now = Instant::now();
        let mut c = answered_one(now);
        ring(&mut c, "b", now);
        let before: Vec<(String, Status)> = {
            let mut v: Vec<_> = c.calls().map(|x| (x.id.clone(), x.status)).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        for (request, code) in [
            (AgentRequest::Hold { call: "b".into() }, "invalid_state"),
            (AgentRequest::Decline { call: "a".into() }, "invalid_state"),
            (AgentRequest::Resume { call: "a".into() }, "invalid_state"),
            (AgentRequest::Answer { call: "b".into() }, "invalid_state"),
            (
                AgentRequest::Dtmf {
                    call: "b".into(),
                    digits: "1".into(),
                },
                "invalid_state",
            ),
            (AgentRequest::Hold { call: "zz".into() }, "not_found"),
        ] {
            let (result, cmds) = c.request("ann", request.clone(), now);
            assert_eq!(result.map_err(|e| e.code()), Err(code), "{request:?}");
            assert!(cmds.is_empty(), "{request:?}: {cmds:?}");
        }
        let after: Vec<(String, Status)> = {
            let mut v: Vec<_> = c.calls().map(|x| (x.id.clone(), x.status)).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(before, after);
    }

    #[test]
    fn resuming_a_waiting_call_answers_it_and_accepting_with_nothing_active_just_answers() {
        let now = Instant::now();
        let mut c = answered_one(now);
        ring(&mut c, "b", now + Duration::from_secs(1));
        let (result, cmds) = c.request("ann", AgentRequest::Resume { call: "b".into() }, now);
        assert_eq!(result, Ok("b".to_string()));
        assert!(cmds.contains(&Command::Park { call: "a".into() }));
        assert!(cmds
            .iter()
            .any(|c| matches!(c, Command::Answer { call, .. } if call == "b")));
        // b ends by the agent: a answered call, so a prompt; a (held) is offered.
        let (_, cmds) = c.request("ann", AgentRequest::Hangup { call: "b".into() }, now);
        assert_eq!(cmds, vec![Command::Hangup { call: "b".into() }]);
        let cmds = c.handle(
            Event::LegEnded {
                call: "b".into(),
                remote: false,
                failed: false,
            },
            now,
        );
        let kinds: Vec<&Notice> = notices(&cmds);
        assert!(kinds
            .iter()
            .any(|n| matches!(n, Notice::LogPrompt { call, .. } if call.id == "b")));
        assert!(kinds
            .iter()
            .any(|n| matches!(n, Notice::Offer(call) if call.id == "a")));
        // Accepting the held call with nothing active resumes it without ending anything.
        let (result, cmds) = c.request(
            "ann",
            AgentRequest::Accept {
                call: "a".into(),
                hold_active: false,
            },
            now,
        );
        assert_eq!(result, Ok("a".to_string()));
        assert!(!cmds
            .iter()
            .any(|c| matches!(c, Command::Hangup { .. } | Command::Answer { .. })));
        assert_eq!(c.active_call("ann").map(|x| x.id.as_str()), Some("a"));
    }

    #[test]
    fn the_agent_hanging_up_a_held_call_prompts_and_keeps_the_active_one() {
        let now = Instant::now();
        let mut c = answered_one(now);
        ring(&mut c, "b", now);
        let _ = c.request(
            "ann",
            AgentRequest::Accept {
                call: "b".into(),
                hold_active: true,
            },
            now,
        );
        let (_, cmds) = c.request("ann", AgentRequest::Hangup { call: "a".into() }, now);
        assert_eq!(cmds, vec![Command::Hangup { call: "a".into() }]);
        let cmds = c.handle(
            Event::LegEnded {
                call: "a".into(),
                remote: false,
                failed: false,
            },
            now,
        );
        assert!(!cmds.iter().any(|c| matches!(c, Command::Unbridge { .. })));
        assert!(notices(&cmds)
            .iter()
            .any(|n| matches!(n, Notice::LogPrompt { .. })));
        assert!(!notices(&cmds).iter().any(|n| matches!(n, Notice::Offer(_))));
        assert_eq!(c.active_call("ann").map(|x| x.id.as_str()), Some("b"));
    }
}
