//! Property test: random sequences of everything that can happen to agents' calls, driven
//! through the whole gateway core: callers and called parties are a SIP trunk written as
//! text that answers what the gateway sends, agents are connections, and the time is fake.
//! After every step the calls' invariants hold; at the end, once everyone has hung up,
//! nothing is left: no call, no SIP leg, no RTP port.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;

use super::pair::{answer_sdp, reply, Caller, Pair};
use super::{AgentCall, Input};
use crate::controller::{AgentId, CallAction, CallId, EndReason, Notice, Status};
use crate::sip::message::{Message, Request};

const AGENTS: [&str; 2] = ["demo", "demo2"];
const DIDS: [&str; 2] = ["+15550000100", "+15550000200"];
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
    /// The far end of call i hangs up (BYE, or CANCEL before the answer).
    FarEndHangup(usize),
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
    /// The called party of call i answers (200), or refuses (486).
    FarEndAnswers(usize, bool),
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
        2 => (0..64usize).prop_map(Step::FarEndHangup),
        1 => (0..64usize).prop_map(Step::AgentHangup),
        2 => (0..64usize).prop_map(Step::Answer),
        2 => (0..64usize, any::<bool>()).prop_map(|(i, h)| Step::Accept(i, h)),
        1 => (0..64usize).prop_map(Step::Decline),
        2 => (0..64usize).prop_map(Step::Hold),
        2 => (0..64usize).prop_map(Step::Resume),
        1 => (0..2usize, 0..4usize).prop_map(|(agent, prospect)| Step::Dial { agent, prospect }),
        2 => (0..64usize, prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::FarEndAnswers(i, ok)),
        1 => (0..2usize).prop_map(Step::Disconnect),
        1 => (0..2usize).prop_map(Step::Connect),
        1 => (0..64usize).prop_map(Step::TransferToAgent),
        1 => (0..64usize, 0..4usize).prop_map(|(i, p)| Step::TransferToNumber(i, p)),
        1 => (0..64usize, 0..64usize).prop_map(|(i, j)| Step::TransferAttended(i, j)),
        1 => Just(Step::Wait),
    ]
}

/// The far end of one call as the trunk keeps it.
enum FarEnd {
    /// Someone who called in.
    Caller { caller: Caller, answered: bool },
    /// Someone the gateway called: its INVITE, and the dialog once answered.
    Called {
        invite: Request,
        answered: bool,
        /// The CSeq of its next request, and a number for its branch.
        cseq: u32,
    },
}

struct World {
    p: Pair,
    /// Every call the gateway has had, in the order it appeared.
    ids: Vec<CallId>,
    far: HashMap<CallId, FarEnd>,
    /// SIP Call-ID → the far end's call.
    by_sip: HashMap<String, CallId>,
    conns: [u64; 2],
    connected: [bool; 2],
    next_conn: u64,
    ended: HashSet<CallId>,
    prompted: HashMap<CallId, usize>,
    callers: u32,
    /// Branches of the called parties' requests, unique.
    branches: u32,
}

impl World {
    fn new() -> World {
        let mut world = World {
            p: Pair::new(),
            ids: Vec::new(),
            far: HashMap::new(),
            by_sip: HashMap::new(),
            conns: [1, 2],
            connected: [true, true],
            next_conn: 3,
            ended: HashSet::new(),
            prompted: HashMap::new(),
            callers: 0,
            branches: 0,
        };
        for (i, agent) in AGENTS.iter().enumerate() {
            world.p.connect(agent, world.conns[i]);
        }
        world.settle();
        world
    }

    fn id(&self, i: usize) -> Option<CallId> {
        if self.ids.is_empty() {
            None
        } else {
            Some(self.ids[i % self.ids.len()].clone())
        }
    }

    fn owner(&self, call: &str) -> Option<AgentId> {
        self.p.gw.call(call).and_then(|c| c.agent.clone())
    }

    /// Calls the gateway has now that the world has not seen yet.
    fn discover(&mut self) -> Vec<CallId> {
        let mut new: Vec<CallId> = self
            .p
            .gw
            .calls()
            .into_iter()
            .map(|c| c.call_id)
            .filter(|id| !self.ids.contains(id))
            .collect();
        new.sort();
        self.ids.extend(new.iter().cloned());
        new
    }

    /// The trunk answers what the gateway sent, until it sends nothing more; then notices
    /// are checked.
    fn settle(&mut self) {
        loop {
            let sent = self.p.take_sip();
            if sent.is_empty() {
                break;
            }
            for message in sent {
                self.trunk_receives(message);
            }
        }
        let notices: Vec<Notice> = std::mem::take(&mut self.p.notices)
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        self.check_notices(&notices);
    }

    fn trunk_receives(&mut self, message: Message) {
        match message {
            Message::Request(r) => match r.method.as_str() {
                "BYE" | "CANCEL" => {
                    if let Some(call) = r.headers.call_id().and_then(|c| self.by_sip.get(c)) {
                        let call = call.clone();
                        if r.method.as_str() == "CANCEL" {
                            if let Some(FarEnd::Called { invite, .. }) = self.far.get(&call) {
                                let terminated = reply(invite, 487, "");
                                self.p.trunk_sends(&reply(&r, 200, ""));
                                self.p.trunk_sends(&terminated);
                                return;
                            }
                        }
                    }
                    self.p.trunk_sends(&reply(&r, 200, ""));
                }
                "INVITE" => {
                    // A leg the gateway places: which call it is shows in the gateway's
                    // calls now (a dial or a transfer to a number).
                    self.p.trunk_sends(&reply(&r, 100, ""));
                    let sip_id = r.headers.call_id().unwrap_or_default().to_string();
                    let call = self
                        .discover()
                        .into_iter()
                        .find(|c| {
                            self.p.gw.call(c).map(|c| c.status) == Some(Status::Dialing)
                                && !self.far.contains_key(c)
                        })
                        .or_else(|| {
                            // Found by an earlier discovery: the dialing call without a far end.
                            self.ids
                                .iter()
                                .find(|c| {
                                    self.p.gw.call(c).map(|c| c.status) == Some(Status::Dialing)
                                        && !self.far.contains_key(*c)
                                })
                                .cloned()
                        });
                    let Some(call) = call else {
                        panic!("an INVITE for no call being dialled: {r:?}");
                    };
                    self.by_sip.insert(sip_id, call.clone());
                    self.far.insert(
                        call,
                        FarEnd::Called {
                            invite: r,
                            answered: false,
                            cseq: 1,
                        },
                    );
                }
                _ => {}
            },
            Message::Response(r) => {
                let Some(call) = r
                    .headers
                    .call_id()
                    .and_then(|c| self.by_sip.get(c))
                    .cloned()
                else {
                    return;
                };
                let is_invite = r
                    .headers
                    .cseq()
                    .is_some_and(|c| c.method.as_str() == "INVITE");
                if !is_invite || r.status < 200 {
                    return;
                }
                if let Some(FarEnd::Caller { caller, answered }) = self.far.get_mut(&call) {
                    if r.status < 300 {
                        *answered = true;
                        let ack = caller.ack(&r);
                        self.p.trunk_sends(&ack);
                    } else {
                        let ack = caller.ack_failure(&r);
                        self.p.trunk_sends(&ack);
                    }
                }
            }
        }
    }

    /// Every call that ends is told to its agent once; an answered one with exactly one
    /// call-log prompt.
    fn check_notices(&mut self, notices: &[Notice]) {
        for notice in notices {
            if let Notice::LogPrompt { call, call_ids } = notice {
                assert!(call_ids.contains(&call.id));
                *self.prompted.entry(call.id.clone()).or_default() += 1;
            }
        }
        for notice in notices {
            if let Notice::Ended(call) = notice {
                // A transfer is the call leaving one agent, not its end.
                if call.end_reason == Some(EndReason::Transferred) {
                    continue;
                }
                assert!(
                    self.ended.insert(call.id.clone()),
                    "{} ended twice",
                    call.id
                );
                if call.answered_at.is_some() {
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

    fn far_end_hangup(&mut self, call: &str) {
        let Some(far) = self.far.get_mut(call) else {
            return;
        };
        let text = match far {
            FarEnd::Caller { caller, answered } => {
                if *answered {
                    caller.bye()
                } else {
                    caller.cancel()
                }
            }
            FarEnd::Called {
                invite,
                answered,
                cseq,
            } => {
                if !*answered {
                    return;
                }
                *cseq += 1;
                self.branches += 1;
                bye_from_called(invite, *cseq, self.branches)
            }
        };
        self.p.trunk_sends(&text);
    }

    fn far_end_answers(&mut self, call: &str, ok: bool) {
        let Some(FarEnd::Called {
            invite, answered, ..
        }) = self.far.get_mut(call)
        else {
            return;
        };
        if *answered || self.p.gw.call(call).map(|c| c.status) != Some(Status::Dialing) {
            return;
        }
        let text = if ok {
            *answered = true;
            reply(invite, 200, &answer_sdp(41000))
        } else {
            reply(invite, 486, "")
        };
        self.p.trunk_sends(&text);
    }

    fn apply(&mut self, step: Step) {
        self.p.advance(Duration::from_millis(250));
        self.settle();
        match step {
            Step::Arrive { agent, prospect } => {
                self.callers += 1;
                let mut caller = Caller::new(self.callers, PROSPECTS[prospect], DIDS[agent]);
                self.p.trunk_sends(&caller.invite());
                let new = self.discover();
                if let Some(call) = new.first() {
                    self.by_sip.insert(caller.call_id.clone(), call.clone());
                    self.far.insert(
                        call.clone(),
                        FarEnd::Caller {
                            caller,
                            answered: false,
                        },
                    );
                } else {
                    // Refused at once (the agent is signed out): the trunk still ACKs.
                    let refusal = self.p.take_sip().into_iter().find_map(|m| match m {
                        Message::Response(r) if r.status >= 300 => Some(r),
                        _ => None,
                    });
                    if let Some(r) = refusal {
                        let ack = caller.ack_failure(&r);
                        self.p.trunk_sends(&ack);
                    }
                }
            }
            Step::FarEndHangup(i) => {
                if let Some(call) = self.id(i) {
                    self.far_end_hangup(&call);
                }
            }
            Step::FarEndAnswers(i, ok) => {
                if let Some(call) = self.id(i) {
                    self.far_end_answers(&call, ok);
                }
            }
            Step::Disconnect(agent) => {
                self.p.disconnect(AGENTS[agent], self.conns[agent]);
                self.connected[agent] = false;
            }
            Step::Connect(agent) => {
                self.conns[agent] = self.next_conn;
                self.next_conn += 1;
                self.p.connect(AGENTS[agent], self.conns[agent]);
                self.connected[agent] = true;
            }
            Step::Wait => {
                // A wake-up before the time the core asked for changes nothing.
                let due = self.p.gw.poll_timeout();
                if due.is_none_or(|due| self.p.now < due) {
                    let before = (self.p.media.len(), self.p.persisted.len());
                    self.p.handle(Input::Timeout);
                    assert!(
                        self.p.sip.is_empty()
                            && self.p.notices.is_empty()
                            && before == (self.p.media.len(), self.p.persisted.len()),
                        "a wake-up before {due:?} acted"
                    );
                }
                self.p.advance(Duration::from_secs(5));
            }
            Step::TransferToAgent(i)
            | Step::TransferToNumber(i, _)
            | Step::TransferAttended(i, _) => {
                let Some(call) = self.id(i) else {
                    return;
                };
                let agent = self.owner(&call).unwrap_or_else(|| AGENTS[i % 2].into());
                let (to, attended) = match step {
                    Step::TransferToAgent(_) => {
                        let other = if agent == AGENTS[0] {
                            AGENTS[1]
                        } else {
                            AGENTS[0]
                        };
                        (Some(format!("agent:{other}")), None)
                    }
                    Step::TransferToNumber(_, prospect) => (Some(PROSPECTS[prospect].into()), None),
                    Step::TransferAttended(_, j) => match self.id(j) {
                        Some(consult) => (None, Some(consult.into())),
                        None => return,
                    },
                    _ => return,
                };
                let _ = self
                    .p
                    .request(&agent, AgentCall::Transfer { call, to, attended });
            }
            Step::Dial { agent, prospect } => {
                let _ = self.p.request(
                    AGENTS[agent],
                    AgentCall::Dial {
                        to: PROSPECTS[prospect].into(),
                        prospect: Default::default(),
                    },
                );
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
                    .unwrap_or_else(|| (AGENTS[index % 2].to_string()).into());
                let request = match other {
                    Step::AgentHangup(_) => AgentCall::Act(CallAction::Hangup { call }),
                    Step::Answer(_) => AgentCall::Act(CallAction::Answer { call }),
                    Step::Accept(_, hold) => AgentCall::Act(CallAction::Accept {
                        call,
                        hold_active: hold,
                    }),
                    Step::Decline(_) => AgentCall::Act(CallAction::Decline { call }),
                    Step::Hold(_) => AgentCall::Act(CallAction::Hold { call }),
                    _ => AgentCall::Act(CallAction::Resume { call }),
                };
                let _ = self.p.request(&agent, request);
            }
        }
        self.settle();
        self.discover();
        self.check();
    }

    fn check(&self) {
        let controller = self.p.gw.controller();
        let mut seen: HashSet<&str> = HashSet::new();
        for agent in AGENTS {
            let active = controller
                .calls()
                .filter(|c| c.agent.as_deref() == Some(agent) && c.status == Status::Active)
                .count();
            assert!(active <= 1, "{agent} has {active} active calls");
            let queue = controller.queue(&agent.into());
            for pair in queue.windows(2) {
                assert!(pair[0].queued_at <= pair[1].queued_at, "queue out of order");
            }
            for c in &queue {
                assert!(c.queued_at.is_some(), "{} queued without queued_at", c.id);
            }
            for c in controller
                .calls()
                .filter(|c| c.agent.as_deref() == Some(agent))
            {
                assert!(seen.insert(c.id.as_str()), "{} belongs to two agents", c.id);
            }
            if !controller.is_connected(&agent.into()) {
                assert_eq!(
                    controller
                        .calls()
                        .filter(|c| c.agent.as_deref() == Some(agent))
                        .count(),
                    0,
                    "{agent} is disconnected but has live calls"
                );
            }
        }
        // Joined legs point at each other (a far end still being dialled points back too).
        for c in controller.calls() {
            if let Some(other) = &c.joined {
                if let Some(o) = controller.call(other) {
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
            assert!(controller.call(id).is_none(), "{id} came back after ending");
        }
        // No more RTP ports than calls: each call holds at most one pair.
        let ports = self.p.ports.in_use.lock().unwrap().len();
        assert!(
            ports <= controller.calls().count(),
            "{ports} ports held by {} calls",
            controller.calls().count()
        );
    }

    /// Everyone hangs up and signs out: nothing may be left behind.
    fn wind_down(&mut self) {
        for (i, agent) in AGENTS.iter().enumerate() {
            if self.connected[i] {
                self.p.disconnect(agent, self.conns[i]);
            }
        }
        self.settle();
        for call in self.ids.clone() {
            if self.p.gw.call(&call).is_some() {
                self.far_end_hangup(&call);
                self.settle();
            }
        }
        // Past every SIP timer (Timer H, 64*T1) and ring timeout.
        for _ in 0..30 {
            self.p.advance(Duration::from_secs(5));
            self.settle();
        }
        let left: Vec<_> = self.p.gw.calls().into_iter().map(|c| c.call_id).collect();
        assert!(left.is_empty(), "calls left: {left:?}");
        assert_eq!(self.p.gw.live_legs(), 0, "SIP legs left");
        let ports = self.p.ports.in_use.lock().unwrap().clone();
        assert!(ports.is_empty(), "RTP ports left: {ports:?}");
    }
}

/// The called party's BYE in the dialog its 200 (with `reply`'s tag) set up.
fn bye_from_called(invite: &Request, cseq: u32, branch: u32) -> String {
    let h = &invite.headers;
    let contact = h
        .contact()
        .map(|c| c.uri.to_string())
        .unwrap_or_else(|| invite.uri.to_string());
    format!(
        "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {trunk};branch=z9hG4bK-bye{branch}\r\n\
         Max-Forwards: 70\r\nFrom: {to};tag=trunk\r\nTo: {from}\r\nCall-ID: {cid}\r\n\
         CSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n",
        trunk = super::pair::TRUNK,
        to = h.get("To").unwrap_or_default(),
        from = h.get("From").unwrap_or_default(),
        cid = h.call_id().unwrap_or_default(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_for_any_sequence(steps in proptest::collection::vec(step(), 1..80)) {
        let mut world = World::new();
        for s in steps {
            world.apply(s);
        }
        world.wind_down();
    }
}
