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
    let (result, _) = c.request(
        "ann",
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
        .request(
            "ann",
            AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
            now
        )
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
    let (r, cmds) = c.request(
        "bob",
        AgentRequest::Act(CallAction::Decline { call: "c1".into() }),
        now,
    );
    assert_eq!(r, Ok("c1".to_string()));
    assert!(
        !cmds.iter().any(|cmd| matches!(cmd, Command::Reject { .. })),
        "{cmds:?}"
    );
    assert_eq!(
        c.call("c1").map(|x| (x.status, x.agent.clone())),
        Some((Status::OnHold, Some("ann".into())))
    );
    assert!(cmds.iter().any(
        |cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Offer(_) } if agent == "ann")
    ));
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
    assert!(cmds.iter().any(
        |cmd| matches!(cmd, Command::Notify { agent, notice: Notice::Ended(_) } if agent == "bob")
    ));
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
            AgentRequest::Act(CallAction::Monitor {
                call: call.into(),
                mode,
            }),
            now,
        )
    };
    // Ringing is not monitorable; agents may not monitor at all.
    let (r, _) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Listen));
    assert_eq!(r.map_err(|e| e.code()), Err("invalid_state"));
    let (r, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
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
    let (_, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Hold { call: "c1".into() }),
        now,
    );
    assert!(cmds.iter().any(|cmd| matches!(cmd,
        Command::Notify { agent, notice: Notice::Monitoring { call, mode: MonitorMode::Barge } }
            if agent == "boss" && call.status == Status::OnHold)));
    let (r, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Resume { call: "c1".into() }),
        now,
    );
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
    let (r, cmds) = c.request(
        "boss",
        AgentRequest::Act(CallAction::Answer { call: "own".into() }),
        now,
    );
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
    let (r, _) = c.request(
        "boss",
        AgentRequest::Act(CallAction::Hangup { call: "own".into() }),
        now,
    );
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
            AgentRequest::Act(CallAction::Record {
                call: call.into(),
                action,
            }),
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
    let (result, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        t0,
    );
    assert_eq!(result, Ok("c1".to_string()));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn answering_bridges_and_a_disconnect_ends_every_call() {
    let mut c = with_agent(100);
    let now = Instant::now();
    connect(&mut c, &["ann"], now);
    ring(&mut c, "c1", now);
    let (result, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
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
    let (result, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "zz".into() }),
        now,
    );
    assert_eq!(result, Err(RequestError::NotFound));
    let (result, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
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
        AgentRequest::Act(CallAction::Dtmf {
            call: "o1".into(),
            digits: "12#".into(),
        }),
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
    let _ = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "a".into() }),
        now,
    );
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
        AgentRequest::Act(CallAction::Accept {
            call: "b".into(),
            hold_active: true,
        }),
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
        AgentRequest::Act(CallAction::Resume { call: "a".into() }),
        now + Duration::from_secs(3),
    );
    assert!(cmds.contains(&Command::Park { call: "b".into() }));
    assert!(cmds.contains(&Command::Bridge {
        call: "a".into(),
        agent: "ann".into()
    }));
    assert_eq!(c.active_call("ann").map(|a| a.id.as_str()), Some("a"));
    // Resuming the active call is an invalid state.
    let (result, _) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Resume { call: "a".into() }),
        now,
    );
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
        AgentRequest::Act(CallAction::Accept {
            call: "b".into(),
            hold_active: false,
        }),
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
    let (result, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "c".into() }),
        now,
    );
    assert_eq!(result, Ok("c".to_string()));
    assert!(cmds.iter().any(|c| matches!(c, Command::Answer { .. })));
}

#[test]
fn callers_giving_up_on_hold_are_prompted_once_per_prospect() {
    let now = Instant::now();
    let mut c = answered_one(now);
    let _ = c.request(
        "ann",
        AgentRequest::Act(CallAction::Hold { call: "a".into() }),
        now,
    );
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
    let _ = c.request(
        "ann",
        AgentRequest::Act(CallAction::Answer { call: "a".into() }),
        now,
    );
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
        (
            AgentRequest::Act(CallAction::Hold { call: "b".into() }),
            "invalid_state",
        ),
        (
            AgentRequest::Act(CallAction::Decline { call: "a".into() }),
            "invalid_state",
        ),
        (
            AgentRequest::Act(CallAction::Resume { call: "a".into() }),
            "invalid_state",
        ),
        (
            AgentRequest::Act(CallAction::Answer { call: "b".into() }),
            "invalid_state",
        ),
        (
            AgentRequest::Act(CallAction::Dtmf {
                call: "b".into(),
                digits: "1".into(),
            }),
            "invalid_state",
        ),
        (
            AgentRequest::Act(CallAction::Hold { call: "zz".into() }),
            "not_found",
        ),
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
    let (result, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Resume { call: "b".into() }),
        now,
    );
    assert_eq!(result, Ok("b".to_string()));
    assert!(cmds.contains(&Command::Park { call: "a".into() }));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Answer { call, .. } if call == "b")));
    // b ends by the agent: a answered call, so a prompt; a (held) is offered.
    let (_, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Hangup { call: "b".into() }),
        now,
    );
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
        AgentRequest::Act(CallAction::Accept {
            call: "a".into(),
            hold_active: false,
        }),
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
        AgentRequest::Act(CallAction::Accept {
            call: "b".into(),
            hold_active: true,
        }),
        now,
    );
    let (_, cmds) = c.request(
        "ann",
        AgentRequest::Act(CallAction::Hangup { call: "a".into() }),
        now,
    );
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
