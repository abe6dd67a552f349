//! Transfers, supervisors' monitoring and the recording policy.

use super::*;

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
            &"ann".into(),
            AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
            now
        )
        .0
        .is_ok());
    let transfer = |c: &mut Controller, target, now| {
        c.request(
            &"ann".into(),
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
    assert_eq!(r, Ok("c1".into()));
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
        &"bob".into(),
        AgentRequest::Act(CallAction::Decline { call: "c1".into() }),
        now,
    );
    assert_eq!(r, Ok("c1".into()));
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
            &who.into(),
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "c1".into() }),
        now,
    );
    assert!(r.is_ok());
    let (r, _) = monitor(&mut c, "ann", "c1", Some(MonitorMode::Listen));
    assert_eq!(r.map_err(|e| e.code()), Err("forbidden"));
    let (r, cmds) = monitor(&mut c, "boss", "c1", Some(MonitorMode::Listen));
    assert_eq!(r, Ok("c1".into()));
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Hold { call: "c1".into() }),
        now,
    );
    assert!(cmds.iter().any(|cmd| matches!(cmd,
        Command::Notify { agent, notice: Notice::Monitoring { call, mode: MonitorMode::Barge } }
            if agent == "boss" && call.status == Status::OnHold)));
    let (r, _) = c.request(
        &"ann".into(),
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
        &"boss".into(),
        AgentRequest::Act(CallAction::Answer { call: "own".into() }),
        now,
    );
    assert_eq!(r, Ok("own".into()));
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
        &"boss".into(),
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
    assert_eq!(r, Ok("c1".into()));
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
        agents: HashMap::from([("bob".into(), RecordMode::Off)]),
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
            &agent.into(),
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
                assert_eq!(result, Ok("a2".into()), "{action:?}");
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
