//! Call waiting: hold & accept, end & accept, the FIFO offer, callers giving up on hold,
//! and requests in the wrong state.

use super::*;

#[test]
fn hold_and_accept_parks_the_active_call_and_bridges_the_waiting_one() {
    let now = Instant::now();
    let mut c = answered_one(now);
    ring(&mut c, "b", now + Duration::from_secs(1));
    assert_eq!(c.call("b").map(|b| b.status), Some(Status::Waiting));
    let (result, cmds) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Accept {
            call: "b".into(),
            hold_active: true,
        }),
        now + Duration::from_secs(2),
    );
    assert_eq!(result, Ok("b".into()));
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
    assert_eq!(c.queue(&"ann".into()).len(), 1);
    // Resume swaps back: b on hold, a active, and the queue stays in hold order.
    let (_, cmds) = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Resume { call: "a".into() }),
        now + Duration::from_secs(3),
    );
    assert!(cmds.contains(&Command::Park { call: "b".into() }));
    assert!(cmds.contains(&Command::Bridge {
        call: "a".into(),
        agent: "ann".into()
    }));
    assert_eq!(
        c.active_call(&"ann".into()).map(|a| a.id.as_str()),
        Some("a")
    );
    // Resuming the active call is an invalid state.
    let (result, _) = c.request(
        &"ann".into(),
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
        &"ann".into(),
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "c".into() }),
        now,
    );
    assert_eq!(result, Ok("c".into()));
    assert!(cmds.iter().any(|c| matches!(c, Command::Answer { .. })));
}

#[test]
fn callers_giving_up_on_hold_are_prompted_once_per_prospect() {
    let now = Instant::now();
    let mut c = answered_one(now);
    let _ = c.request(
        &"ann".into(),
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
    assert!(c.close_prompt(&"ann".into(), "+15551230001"));
}

#[test]
fn dialing_while_on_a_call_holds_it_and_the_limit_turns_callers_away() {
    let now = Instant::now();
    let mut c = with_agent(2);
    connect(&mut c, &["ann"], now);
    ring(&mut c, "a", now);
    let _ = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Answer { call: "a".into() }),
        now,
    );
    let (result, cmds) = c.request(
        &"ann".into(),
        AgentRequest::Dial {
            prospect: Default::default(),
            call: "o".into(),
            to: "+15551234567".into(),
            trunk: None,
        },
        now,
    );
    assert_eq!(result, Ok("o".into()));
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
    let before: Vec<(CallId, Status)> = {
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
        let (result, cmds) = c.request(&"ann".into(), request.clone(), now);
        assert_eq!(result.map_err(|e| e.code()), Err(code), "{request:?}");
        assert!(cmds.is_empty(), "{request:?}: {cmds:?}");
    }
    let after: Vec<(CallId, Status)> = {
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Resume { call: "b".into() }),
        now,
    );
    assert_eq!(result, Ok("b".into()));
    assert!(cmds.contains(&Command::Park { call: "a".into() }));
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Answer { call, .. } if call == "b")));
    // b ends by the agent: a answered call, so a prompt; a (held) is offered.
    let (_, cmds) = c.request(
        &"ann".into(),
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
        &"ann".into(),
        AgentRequest::Act(CallAction::Accept {
            call: "a".into(),
            hold_active: false,
        }),
        now,
    );
    assert_eq!(result, Ok("a".into()));
    assert!(!cmds
        .iter()
        .any(|c| matches!(c, Command::Hangup { .. } | Command::Answer { .. })));
    assert_eq!(
        c.active_call(&"ann".into()).map(|x| x.id.as_str()),
        Some("a")
    );
}

#[test]
fn the_agent_hanging_up_a_held_call_prompts_and_keeps_the_active_one() {
    let now = Instant::now();
    let mut c = answered_one(now);
    ring(&mut c, "b", now);
    let _ = c.request(
        &"ann".into(),
        AgentRequest::Act(CallAction::Accept {
            call: "b".into(),
            hold_active: true,
        }),
        now,
    );
    let (_, cmds) = c.request(
        &"ann".into(),
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
    assert_eq!(
        c.active_call(&"ann".into()).map(|x| x.id.as_str()),
        Some("b")
    );
}
