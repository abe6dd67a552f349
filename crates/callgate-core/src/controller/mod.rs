//! Call policy as a sans-IO state machine: `handle(event, now) -> Vec<Command>` and
//! `request(agent, request, now)`. Owns every call's status and what it is for (a route such
//! as echo or an announcement, an operator's test dial, or an agent's call), each agent's one
//! active call and its FIFO queue of waiting and held calls ordered by `queued_at`, offers,
//! and call-log prompts. Knows nothing of SIP, WebRTC or JSON: the b2bua, the media shell and
//! the API translate.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::config::{AgentConfig, RecordMode, RouteAction, RouteConfig};
use crate::media::mixer::MonitorMode;
use crate::media::recording_mode::{RecordWant, RecordingState};

pub use crate::ids::{AgentId, CallId};
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

#[derive(Debug, Clone)]
struct Agent {
    max_calls: u32,
    supervisor: bool,
    /// The call this supervisor monitors, and how.
    monitoring: Option<(CallId, MonitorMode)>,
    connection: Option<ConnId>,
    /// What the connection is for (a monitoring connection takes no calls).
    kind: ConnKind,
    /// Ended calls, newest last, for snapshots.
    recent: VecDeque<Call>,
    /// The waiting call the agent was last told about with `call.waiting`.
    announced_head: Option<CallId>,
    /// Open call-log prompts: prospect number → the calls merged into it.
    prompts: HashMap<String, Vec<CallId>>,
    /// The number presented on the agent's outbound calls: its first DID.
    caller: Option<String>,
}

impl Agent {
    fn takes_calls(&self) -> bool {
        self.connection.is_some() && self.kind == ConnKind::Calls
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
                        kind: ConnKind::Calls,
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
    fn apply_record_mode(&mut self, call: &CallId, trunk: Option<&str>) {
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
    pub fn snapshot(&self, agent: &AgentId) -> Vec<Call> {
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

    pub fn is_connected(&self, agent: &AgentId) -> bool {
        self.agents
            .get(agent)
            .is_some_and(|a| a.connection.is_some())
    }

    /// Whether calls may ring for the agent here: signed in, not only monitoring.
    pub fn takes_calls(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(Agent::takes_calls)
    }

    pub fn is_supervisor(&self, agent: &AgentId) -> bool {
        self.agents.get(agent).is_some_and(|a| a.supervisor)
    }

    /// The call this supervisor monitors, and how.
    pub fn monitoring(&self, supervisor: &AgentId) -> Option<(CallId, MonitorMode)> {
        self.agents.get(supervisor)?.monitoring.clone()
    }

    /// The agent's call that is bridged to its browser.
    pub fn active_call(&self, agent: &AgentId) -> Option<&Call> {
        self.calls
            .values()
            .find(|c| c.agent.as_deref() == Some(agent) && c.status == Status::Active)
    }

    fn live_calls_of(&self, agent: &AgentId) -> usize {
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
            Event::AgentConnected { agent, conn, kind } => {
                let Some(a) = self.agents.get_mut(&agent) else {
                    return Vec::new();
                };
                a.kind = kind;
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
                a.kind = ConnKind::Calls;
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
        if !a.takes_calls() {
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

    fn updated(&self, call: &CallId) -> Vec<Command> {
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
    fn end(&mut self, call: &CallId, reason: EndReason, now: Instant) -> Vec<Command> {
        let joined = self.calls.get(call).filter(|c| c.joined.is_some()).cloned();
        let mut commands = self.end_call(call, reason, now, true);
        if let Some(c) = joined {
            commands.extend(self.joined_leg_ended(&c, reason, now));
        }
        commands
    }

    fn end_call(
        &mut self,
        call: &CallId,
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
    fn agent_gone(&mut self, call: &CallId, now: Instant) -> Vec<Command> {
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
        id: id.into(),
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

mod model;
mod monitor;
mod queue;
mod requests;
mod transfer;
pub use model::*;
pub use transfer::{Transfer, TransferTarget};

#[cfg(test)]
mod tests;
