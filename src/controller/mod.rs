//! Call policy as a sans-IO state machine: `handle(event, now) -> Vec<Command>`. Owns every
//! call's status and what it is for (a route such as echo or an announcement, or an operator's
//! test dial). Knows nothing of SIP, WebRTC or JSON: the b2bua and the media shell translate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::config::{RouteAction, RouteConfig};

pub type CallId = String;

/// What a call's media does toward its SIP leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPlan {
    /// Send back what arrives.
    Echo,
    /// Play a file, then the call ends.
    Announce(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ringing,
    Dialing,
    Active,
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    CallerHangup,
    AgentHangup,
    Declined,
    Failed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::AgentHangup => "agent_hangup",
            EndReason::Declined => "declined",
            EndReason::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Call {
    pub id: CallId,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    pub status: Status,
    pub plan: MediaPlan,
    pub created_at: Instant,
    pub answered_at: Option<Instant>,
    /// DTMF digits received from the far end, in order.
    pub dtmf: String,
}

/// Inputs, from the SIP side, the media side and operators.
#[derive(Debug, Clone)]
pub enum Event {
    Incoming {
        call: CallId,
        from: String,
        to_user: String,
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
    /// Shut down: end every call.
    Shutdown,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Answer { call: CallId, plan: MediaPlan },
    Reject { call: CallId, status: u16 },
    Dial { call: CallId, to: String },
    StartMedia { call: CallId, plan: MediaPlan },
    Hangup { call: CallId },
    StopMedia { call: CallId },
}

pub struct Controller {
    routes: HashMap<String, MediaPlan>,
    calls: HashMap<CallId, Call>,
}

impl Controller {
    pub fn new(routes: &[RouteConfig]) -> Controller {
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
        Controller {
            routes,
            calls: HashMap::new(),
        }
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        match event {
            Event::Incoming {
                call,
                from,
                to_user,
            } => {
                let Some(plan) = self.routes.get(&to_user).cloned() else {
                    return vec![Command::Reject { call, status: 404 }];
                };
                self.calls.insert(
                    call.clone(),
                    Call {
                        id: call.clone(),
                        direction: Direction::Inbound,
                        from,
                        to: to_user,
                        status: Status::Active,
                        plan: plan.clone(),
                        created_at: now,
                        answered_at: Some(now),
                        dtmf: String::new(),
                    },
                );
                vec![Command::Answer { call, plan }]
            }
            Event::Dial { call, to, plan } => {
                self.calls.insert(
                    call.clone(),
                    Call {
                        id: call.clone(),
                        direction: Direction::Outbound,
                        from: String::new(),
                        to: to.clone(),
                        status: Status::Dialing,
                        plan,
                        created_at: now,
                        answered_at: None,
                        dtmf: String::new(),
                    },
                );
                vec![Command::Dial { call, to }]
            }
            Event::Answered { call } => match self.calls.get_mut(&call) {
                Some(c) if c.status == Status::Dialing => {
                    c.status = Status::Active;
                    c.answered_at = Some(now);
                    vec![Command::StartMedia {
                        call,
                        plan: c.plan.clone(),
                    }]
                }
                _ => vec![Command::Hangup { call }],
            },
            Event::LegEnded { call, .. } => match self.calls.remove(&call) {
                Some(_) => vec![Command::StopMedia { call }],
                None => Vec::new(),
            },
            Event::MediaFinished { call } | Event::Hangup { call } => {
                if self.calls.contains_key(&call) {
                    vec![Command::Hangup { call }]
                } else {
                    Vec::new()
                }
            }
            Event::Dtmf { call, digit } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.dtmf.push(digit);
                }
                Vec::new()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Controller {
        Controller::new(&[
            RouteConfig::echo("echo"),
            RouteConfig::announce("announce", std::path::Path::new("a.wav")),
        ])
    }

    #[test]
    fn routes_inbound_calls_by_user() {
        let mut c = controller();
        let now = Instant::now();
        let cmds = c.handle(
            Event::Incoming {
                call: "c1".into(),
                from: "+1555".into(),
                to_user: "echo".into(),
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
                call: "c2".into(),
                from: "+1555".into(),
                to_user: "nobody".into(),
            },
            now,
        );
        assert_eq!(
            cmds,
            vec![Command::Reject {
                call: "c2".into(),
                status: 404
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
                call: "c1".into(),
                from: "x".into(),
                to_user: "announce".into(),
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
                    call: format!("c{i}"),
                    from: "x".into(),
                    to_user: "echo".into(),
                },
                now,
            );
        }
        let cmds = c.handle(Event::Shutdown, now);
        assert_eq!(cmds.len(), 3);
        assert!(cmds.iter().all(|c| matches!(c, Command::Hangup { .. })));
    }
}
