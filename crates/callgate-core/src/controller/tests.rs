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
                call: format!("c{i}").into(),
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
    let (result, _) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Resume { call: "c1".into() }),
        now,
    );
    assert!(result.is_ok(), "{result:?}");
}

/// Sign these agents in, with connections 1, 2, …
fn connect(c: &mut Controller, agents: &[&str], now: Instant) {
    for (i, agent) in agents.iter().enumerate() {
        c.handle(
            Event::AgentConnected {
                agent: (*agent).into(),
                conn: i as u64 + 1,
                kind: ConnKind::Calls,
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
    let (result, _) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        t0,
    );
    assert_eq!(result, Ok("c1".into()));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn answering_bridges_and_a_disconnect_ends_every_call() {
    let mut c = with_agent(100);
    let now = Instant::now();
    connect(&mut c, &["ann"], now);
    ring(&mut c, "c1", now);
    let (result, cmds) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
    assert_eq!(result, Ok("c1".into()));
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
    let (result, _) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "zz".into() }),
        now,
    );
    assert_eq!(result, Err(RequestError::NotFound));
    let (result, _) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
    assert_eq!(result, Err(RequestError::InvalidState("active")));
    // A replaced connection's close changes nothing; the current one's ends the calls.
    let cmds = c.handle(
        Event::AgentConnected {
            agent: "ann".into(),
            conn: 2,
            kind: ConnKind::Calls,
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
    assert_eq!(c.snapshot(&"ann".into())[0].status, Status::Ended);
}

#[test]
fn agent_dials_bridge_on_answer_and_respect_max_calls() {
    let mut c = with_agent(1);
    let now = Instant::now();
    let (result, _) = c.request(
        &"ann".into(),
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
        &"ann".into(),
        AgentRequest::Dial {
            prospect: Default::default(),
            call: "o1".into(),
            to: "+15551234567".into(),
            trunk: None,
        },
        now,
    );
    assert_eq!(result, Ok("o1".into()));
    assert_eq!(
        cmds[0],
        Command::Dial {
            call: "o1".into(),
            to: "+15551234567".into()
        }
    );
    let (result, _) = c.request(
        &"ann".into(),
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Dtmf {
            call: "o1".into(),
            digits: "12#".into(),
        }),
        now,
    );
    assert_eq!(result, Ok("o1".into()));
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
    let _ = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "a".into() }),
        now,
    );
    c
}

mod transfer_monitor;
mod waiting;
