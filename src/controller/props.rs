//! Property test: random sequences of everything that can happen to agents' calls, with the
//! shell's answers fed back the way the b2bua gives them, and the controller's invariants
//! checked after every step.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::config::AgentConfig;

const AGENTS: [&str; 2] = ["ann", "bob"];
const PROSPECTS: [&str; 4] = [
    "+15551230001",
    "+15551230002",
    "+15551230003",
    "+15551230004",
];

#[derive(Debug, Clone)]
enum Step {
    Arrive {
        agent: usize,
        prospect: usize,
    },
    CallerHangup(usize),
    AgentHangup(usize),
    Answer(usize),
    Accept(usize, bool),
    Decline(usize),
    Hold(usize),
    Resume(usize),
    Dial {
        agent: usize,
        prospect: usize,
    },
    FarEndAnswers(usize),
    Disconnect(usize),
    Connect(usize),
    /// Blind transfer of call i to the other agent.
    TransferToAgent(usize),
    /// Blind transfer of call i to a number.
    TransferToNumber(usize, usize),
    /// Attended transfer of call i with call j.
    TransferAttended(usize, usize),
    /// Five seconds pass (transfers ringing too long come back).
    Wait,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..2usize, 0..4usize).prop_map(|(agent, prospect)| Step::Arrive { agent, prospect }),
        2 => (0..64usize).prop_map(Step::CallerHangup),
        1 => (0..64usize).prop_map(Step::AgentHangup),
        2 => (0..64usize).prop_map(Step::Answer),
        2 => (0..64usize, any::<bool>()).prop_map(|(i, h)| Step::Accept(i, h)),
        1 => (0..64usize).prop_map(Step::Decline),
        2 => (0..64usize).prop_map(Step::Hold),
        2 => (0..64usize).prop_map(Step::Resume),
        1 => (0..2usize, 0..4usize).prop_map(|(agent, prospect)| Step::Dial { agent, prospect }),
        2 => (0..64usize).prop_map(Step::FarEndAnswers),
        1 => (0..2usize).prop_map(Step::Disconnect),
        1 => (0..2usize).prop_map(Step::Connect),
        1 => (0..64usize).prop_map(Step::TransferToAgent),
        1 => (0..64usize, 0..4usize).prop_map(|(i, p)| Step::TransferToNumber(i, p)),
        1 => (0..64usize, 0..64usize).prop_map(|(i, j)| Step::TransferAttended(i, j)),
        1 => Just(Step::Wait),
    ]
}

struct World {
    controller: Controller,
    now: Instant,
    ids: Vec<CallId>,
    conns: [u64; 2],
    next_conn: u64,
    ended: HashSet<CallId>,
    prompted: HashMap<CallId, usize>,
}

impl World {
    fn new() -> World {
        let agents: Vec<AgentConfig> = AGENTS
            .iter()
            .enumerate()
            .map(|(i, id)| AgentConfig {
                id: id.to_string(),
                name: id.to_string(),
                token_sha256: String::new(),
                role: crate::config::Role::Agent,
                max_calls: 6,
                dids: vec![format!("+1555000010{i}")],
                recording: None,
            })
            .collect();
        let mut world = World {
            controller: Controller::new(&[], &agents),
            now: Instant::now(),
            ids: Vec::new(),
            conns: [1, 2],
            next_conn: 3,
            ended: HashSet::new(),
            prompted: HashMap::new(),
        };
        for (i, agent) in AGENTS.iter().enumerate() {
            let commands = world.controller.handle(
                Event::AgentConnected {
                    agent: agent.to_string(),
                    conn: world.conns[i],
                },
                world.now,
            );
            world.settle(commands);
        }
        world
    }

    fn id(&self, i: usize) -> Option<CallId> {
        if self.ids.is_empty() {
            None
        } else {
            Some(self.ids[i % self.ids.len()].clone())
        }
    }

    fn owner(&self, call: &str) -> Option<String> {
        self.controller.call(call).and_then(|c| c.agent.clone())
    }

    /// Apply commands the way the shell and the b2bua answer them: a hangup or rejection is
    /// followed by the leg's end.
    fn settle(&mut self, commands: Vec<Command>) {
        let mut pending = commands;
        while !pending.is_empty() {
            let mut next = Vec::new();
            let batch = std::mem::take(&mut pending);
            self.check_prompts(&batch);
            for command in batch {
                match command {
                    Command::Hangup { call } | Command::Reject { call, .. } => {
                        next.extend(self.controller.handle(
                            Event::LegEnded {
                                call,
                                remote: false,
                                failed: false,
                            },
                            self.now,
                        ));
                    }
                    Command::Notify {
                        notice: Notice::Ended(call),
                        ..
                    } if call.end_reason != Some(EndReason::Transferred) => {
                        assert!(
                            self.ended.insert(call.id.clone()),
                            "{} ended twice",
                            call.id
                        );
                    }
                    _ => {}
                }
            }
            pending = next;
        }
    }

    /// Every answered call that ends is in a prompt in the same batch, once.
    fn check_prompts(&mut self, batch: &[Command]) {
        for command in batch {
            if let Command::Notify {
                notice: Notice::LogPrompt { call, call_ids },
                ..
            } = command
            {
                assert!(call_ids.contains(&call.id));
                *self.prompted.entry(call.id.clone()).or_default() += 1;
            }
        }
        for command in batch {
            if let Command::Notify {
                notice: Notice::Ended(call),
                ..
            } = command
            {
                // A transfer is the call leaving one agent, not its end: whether that agent
                // logs it depends on where it went (the unit tests cover it).
                let transferred = call.end_reason == Some(EndReason::Transferred);
                if call.answered_at.is_some() && !transferred {
                    assert_eq!(
                        self.prompted.get(&call.id),
                        Some(&1),
                        "answered call {} ended without exactly one prompt",
                        call.id
                    );
                }
            }
        }
    }

    fn apply(&mut self, step: Step) {
        self.now += Duration::from_millis(250);
        let now = self.now;
        let commands = match step {
            Step::Arrive { agent, prospect } => {
                let id = format!("in{}", self.ids.len());
                self.ids.push(id.clone());
                self.controller.handle(
                    Event::Incoming {
                        prospect: Default::default(),
                        call: id,
                        from: PROSPECTS[prospect].to_string(),
                        from_name: None,
                        to_user: format!("+1555000010{agent}"),
                        trunk: None,
                    },
                    now,
                )
            }
            Step::CallerHangup(i) => match self.id(i) {
                Some(call) => self.controller.handle(
                    Event::LegEnded {
                        call,
                        remote: true,
                        failed: false,
                    },
                    now,
                ),
                None => Vec::new(),
            },
            Step::FarEndAnswers(i) => match self.id(i) {
                Some(call)
                    if self.controller.call(&call).map(|c| c.status) == Some(Status::Dialing) =>
                {
                    self.controller.handle(Event::Answered { call }, now)
                }
                _ => Vec::new(),
            },
            Step::Disconnect(agent) => self.controller.handle(
                Event::AgentDisconnected {
                    agent: AGENTS[agent].to_string(),
                    conn: self.conns[agent],
                },
                now,
            ),
            Step::Connect(agent) => {
                self.conns[agent] = self.next_conn;
                self.next_conn += 1;
                self.controller.handle(
                    Event::AgentConnected {
                        agent: AGENTS[agent].to_string(),
                        conn: self.conns[agent],
                    },
                    now,
                )
            }
            Step::Wait => {
                self.now += Duration::from_secs(5);
                // The shell ticks only when the controller asks for time: a tick before then
                // must change nothing.
                let due = self.controller.poll_timeout();
                if due.is_none_or(|due| self.now < due) {
                    let early = self.controller.handle(Event::Tick, self.now);
                    assert!(early.is_empty(), "a tick before {due:?} acted: {early:?}");
                    Vec::new()
                } else {
                    self.controller.handle(Event::Tick, self.now)
                }
            }
            Step::TransferToAgent(i)
            | Step::TransferToNumber(i, _)
            | Step::TransferAttended(i, _) => {
                let Some(call) = self.id(i) else {
                    return;
                };
                let agent = self
                    .owner(&call)
                    .unwrap_or_else(|| AGENTS[i % 2].to_string());
                let target = match step {
                    Step::TransferToAgent(_) => {
                        let other = if agent == AGENTS[0] {
                            AGENTS[1]
                        } else {
                            AGENTS[0]
                        };
                        TransferTarget::Agent(other.to_string())
                    }
                    Step::TransferToNumber(_, prospect) => {
                        let leg = format!("leg{}", self.ids.len());
                        self.ids.push(leg.clone());
                        TransferTarget::Number {
                            to: PROSPECTS[prospect].to_string(),
                            leg,
                        }
                    }
                    Step::TransferAttended(_, j) => match self.id(j) {
                        Some(consult) => TransferTarget::Attended(consult),
                        None => return,
                    },
                    _ => return,
                };
                self.controller
                    .request(&agent, AgentRequest::Transfer { call, target }, now)
                    .1
            }
            Step::Dial { agent, prospect } => {
                let id = format!("out{}", self.ids.len());
                self.ids.push(id.clone());
                self.controller
                    .request(
                        AGENTS[agent],
                        AgentRequest::Dial {
                            prospect: Default::default(),
                            call: id,
                            to: PROSPECTS[prospect].to_string(),
                            trunk: None,
                        },
                        now,
                    )
                    .1
            }
            other => {
                let index = match &other {
                    Step::AgentHangup(i)
                    | Step::Answer(i)
                    | Step::Accept(i, _)
                    | Step::Decline(i)
                    | Step::Hold(i)
                    | Step::Resume(i) => *i,
                    _ => 0,
                };
                let Some(call) = self.id(index) else {
                    return;
                };
                // Agents act on their own calls, and sometimes on someone else's (refused).
                let agent = self
                    .owner(&call)
                    .unwrap_or_else(|| AGENTS[index % 2].to_string());
                let request = match other {
                    Step::AgentHangup(_) => AgentRequest::Hangup { call },
                    Step::Answer(_) => AgentRequest::Answer { call },
                    Step::Accept(_, hold) => AgentRequest::Accept {
                        call,
                        hold_active: hold,
                    },
                    Step::Decline(_) => AgentRequest::Decline { call },
                    Step::Hold(_) => AgentRequest::Hold { call },
                    _ => AgentRequest::Resume { call },
                };
                self.controller.request(&agent, request, now).1
            }
        };
        self.settle(commands);
        self.check();
    }

    fn check(&self) {
        let mut seen: HashSet<&str> = HashSet::new();
        for agent in AGENTS {
            let active = self
                .controller
                .calls()
                .filter(|c| c.agent.as_deref() == Some(agent) && c.status == Status::Active)
                .count();
            assert!(active <= 1, "{agent} has {active} active calls");
            let queue = self.controller.queue(agent);
            for pair in queue.windows(2) {
                assert!(pair[0].queued_at <= pair[1].queued_at, "queue out of order");
            }
            for c in &queue {
                assert!(c.queued_at.is_some(), "{} queued without queued_at", c.id);
            }
            for c in self
                .controller
                .calls()
                .filter(|c| c.agent.as_deref() == Some(agent))
            {
                assert!(seen.insert(c.id.as_str()), "{} belongs to two agents", c.id);
            }
            if !self.controller.is_connected(agent) {
                assert_eq!(
                    self.controller
                        .calls()
                        .filter(|c| c.agent.as_deref() == Some(agent))
                        .count(),
                    0,
                    "{agent} is disconnected but has live calls"
                );
            }
        }
        // Joined legs point at each other (a far end still being dialled points back too).
        for c in self.controller.calls() {
            if let Some(other) = &c.joined {
                if let Some(o) = self.controller.call(other) {
                    assert_eq!(
                        o.joined.as_deref(),
                        Some(c.id.as_str()),
                        "{} half joined",
                        c.id
                    );
                }
                assert!(
                    c.agent.is_none() || c.transfer.is_some() || c.status == Status::Dialing,
                    "{} is joined and still an agent's",
                    c.id
                );
            }
        }
        for id in &self.ended {
            assert!(
                self.controller.call(id).is_none(),
                "{id} came back after ending"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..80)) {
        let mut world = World::new();
        for s in steps {
            world.apply(s);
        }
    }
}
