//! Whole calls through the gateway core on a fake clock: SIP in as text from a trunk,
//! agents' requests, and the SIP, notices, media operations and call-log changes out.

use std::time::Duration;

use super::pair::{answer_sdp, reply, test_config, Caller, Pair, DEMO_DID};
use super::{AgentCall, Input, MediaOp, SourceSpec};
use crate::controller::{CallAction, CloseReason, ConnKind, Notice, Status};
use crate::media::monitor::MonitorMode;
use crate::sip::message::{Message, Request};

const AGENT: &str = "demo";
const CONN: u64 = 1;

/// A caller's INVITE reaches the connected agent: the call's id from the agent's notice.
fn ring(p: &mut Pair, caller: &mut Caller) -> String {
    p.take_notices(CONN);
    p.trunk_sends(&caller.invite());
    let notices = p.take_notices(CONN);
    match notices.as_slice() {
        [Notice::Incoming(c)] | [Notice::Waiting { call: c, .. }] => c.id.clone().into(),
        other => panic!("expected the call announced, got {other:?}"),
    }
}

/// The agent answers a ringing call and the caller acknowledges the 200.
fn answer(p: &mut Pair, caller: &mut Caller, call: &str) {
    p.take_sip();
    assert_eq!(
        p.request(
            AGENT,
            AgentCall::Act(CallAction::Answer { call: call.into() })
        ),
        Ok(call.into())
    );
    let ok = p.response(200);
    assert!(
        String::from_utf8_lossy(&ok.body).contains("m=audio 200"),
        "the 200 carries our RTP port: {ok:?}"
    );
    p.trunk_sends(&caller.ack(&ok));
}

/// A call from `number` (the trunk's caller `n`) rings the agent, who answers it.
fn answered_call(p: &mut Pair, n: u32, number: &str) -> (Caller, String) {
    let mut caller = Caller::new(n, number, DEMO_DID);
    let call = ring(p, &mut caller);
    answer(p, &mut caller, &call);
    (caller, call)
}

/// The agent's connection was told that `call` ended.
fn told_ended(p: &mut Pair, conn: u64, call: &str) -> bool {
    p.take_notices(conn)
        .iter()
        .any(|n| matches!(n, Notice::Ended(c) if c.id == call))
}

/// The call's media was bridged to this agent connection.
fn bridged_to(ops: &[MediaOp], conn: u64) -> bool {
    ops.iter()
        .any(|op| matches!(op, MediaOp::Bridge { conn: c } if *c == conn))
}

fn status_of(p: &Pair, call: &str) -> Option<Status> {
    p.gw.call(call).map(|c| c.status)
}

#[test]
fn an_inbound_call_rings_the_agent_is_answered_and_hung_up_by_the_caller() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let mut caller = Caller::new(1, "+15551230001", DEMO_DID);
    p.trunk_sends(&caller.invite());
    assert_eq!(p.statuses(), [100, 180], "Trying, then Ringing");
    let call = match p.take_notices(CONN).as_slice() {
        [Notice::Incoming(c)] => {
            assert_eq!(
                (c.from.as_str(), c.status),
                ("+15551230001", Status::Ringing)
            );
            c.id.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(p.stored_status(&call).as_deref(), Some("ringing"));
    assert!(p.take_media(&call).is_empty(), "no media before the answer");

    answer(&mut p, &mut caller, &call);
    let ops = p.take_media(&call);
    assert!(
        matches!(
            ops.as_slice(),
            [
                MediaOp::Start {
                    port: 20000,
                    source: SourceSpec::Silence,
                    early: false,
                    ..
                },
                MediaOp::Record(_),
                MediaOp::Bridge { conn: CONN }
            ]
        ),
        "media starts on the reserved port and is bridged to the agent: {ops:?}"
    );
    assert_eq!(status_of(&p, &call), Some(Status::Active));
    assert_eq!(p.stored_status(&call).as_deref(), Some("active"));
    assert!(p
        .take_notices(CONN)
        .iter()
        .any(|n| matches!(n, Notice::Updated(c) if c.status == Status::Active)));

    p.trunk_sends(&caller.bye());
    assert_eq!(p.statuses(), [200], "the BYE is answered");
    assert!(told_ended(&mut p, CONN, &call));
    let ops = p.take_media(&call);
    assert!(matches!(ops.last(), Some(MediaOp::Stop)), "{ops:?}");
    assert!(
        p.ports.in_use.lock().unwrap().is_empty(),
        "its port is free"
    );
    assert_eq!(p.stored_status(&call).as_deref(), Some("ended"));
    assert!(p.gw.call(&call).is_none());
}

#[test]
fn nobody_signed_in_means_480_and_an_unknown_number_404() {
    let mut p = Pair::new();
    let mut caller = Caller::new(1, "+15551230001", DEMO_DID);
    p.trunk_sends(&caller.invite());
    let statuses = p.statuses();
    assert_eq!(statuses.last(), Some(&480), "{statuses:?}");
    let mut stranger = Caller::new(2, "+15551230002", "+15559999999");
    p.trunk_sends(&stranger.invite());
    let statuses = p.statuses();
    assert_eq!(statuses.last(), Some(&404), "{statuses:?}");
    assert!(p.ports.in_use.lock().unwrap().is_empty());
}

#[test]
fn a_second_caller_waits_and_hold_accept_swaps_the_calls() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let (_, a) = answered_call(&mut p, 1, "+15551230001");
    p.take_media(&a);

    let mut second = Caller::new(2, "+15551230002", DEMO_DID);
    p.take_sip();
    p.take_notices(CONN);
    p.trunk_sends(&second.invite());
    assert_eq!(
        p.statuses(),
        [100, 180],
        "no waiting audio configured: a 180"
    );
    let b = match p.take_notices(CONN).as_slice() {
        [Notice::Waiting { call, queue_length }] => {
            assert_eq!(*queue_length, 1);
            call.id.clone()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(status_of(&p, &b), Some(Status::Waiting));

    // Hold & Accept: the first call hears the hold audio, the second is answered.
    p.request(
        AGENT,
        AgentCall::Act(CallAction::Accept {
            call: b.clone(),
            hold_active: true,
        }),
    )
    .unwrap();
    let ok = p.response(200);
    p.trunk_sends(&second.ack(&ok));
    let held = p.take_media(&a);
    assert!(
        held.iter()
            .any(|op| matches!(op, MediaOp::Source(SourceSpec::Hold))),
        "{held:?}"
    );
    assert!(
        held.iter().any(|op| matches!(op, MediaOp::Unbridge)),
        "{held:?}"
    );
    assert!(bridged_to(&p.take_media(&b), CONN));
    assert_eq!(status_of(&p, &a), Some(Status::OnHold));
    assert_eq!(status_of(&p, &b), Some(Status::Active));
    assert_eq!(p.stored_status(&a).as_deref(), Some("on_hold"));

    // Resume the first: the second goes on hold in its place. No SIP: holds are ours.
    p.take_sip();
    p.request(
        AGENT,
        AgentCall::Act(CallAction::Resume {
            call: a.clone().into(),
        }),
    )
    .unwrap();
    assert!(p.take_sip().is_empty(), "hold and resume send no SIP");
    assert_eq!(status_of(&p, &a), Some(Status::Active));
    assert_eq!(status_of(&p, &b), Some(Status::OnHold));
    assert!(bridged_to(&p.take_media(&a), CONN));
}

#[test]
fn when_the_active_call_ends_the_oldest_queued_call_is_offered() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let (_, a) = answered_call(&mut p, 1, "+15551230001");
    let mut second = Caller::new(2, "+15551230002", DEMO_DID);
    let b = ring(&mut p, &mut second);
    p.advance(Duration::from_secs(1));
    let mut third = Caller::new(3, "+15551230003", DEMO_DID);
    p.trunk_sends(&third.invite());
    let c =
        p.gw.calls()
            .into_iter()
            .find(|l| l.from == "+15551230003")
            .unwrap()
            .call_id;
    p.take_notices(CONN);

    p.take_sip();
    p.request(
        AGENT,
        AgentCall::Act(CallAction::Hangup {
            call: a.clone().into(),
        }),
    )
    .unwrap();
    let bye = p.request_sent("BYE");
    assert_eq!(bye.headers.call_id(), Some("call-1@trunk"));
    p.trunk_sends(&reply(&bye, 200, ""));
    let notices = p.take_notices(CONN);
    assert!(
        notices
            .iter()
            .any(|n| matches!(n, Notice::Offer(call) if call.id == b)),
        "the first of the waiting calls is offered: {notices:?}"
    );
    assert!(!notices
        .iter()
        .any(|n| matches!(n, Notice::Offer(call) if call.id == c)));
    // Nothing connects until the agent picks it.
    assert_eq!(status_of(&p, &b), Some(Status::Waiting));
    assert!(p.take_media(&b).is_empty());
}

#[test]
fn a_blind_transfer_rings_the_other_agent_who_takes_the_call() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    p.connect("demo2", 2);
    let (_, call) = answered_call(&mut p, 1, "+15551230001");
    p.take_media(&call);
    p.take_notices(2);

    p.take_sip();
    p.request(
        AGENT,
        AgentCall::Transfer {
            call: call.clone().into(),
            to: Some("agent:demo2".into()),
            attended: None,
        },
    )
    .unwrap();
    assert!(
        p.take_sip().is_empty(),
        "a transfer between agents sends no SIP"
    );
    assert!(p
        .take_notices(2)
        .iter()
        .any(|n| matches!(n, Notice::Incoming(c) if c.id == call)));
    p.request(
        "demo2",
        AgentCall::Act(CallAction::Answer {
            call: call.clone().into(),
        }),
    )
    .unwrap();
    assert!(bridged_to(&p.take_media(&call), 2));
    assert_eq!(
        p.gw.call(&call).and_then(|c| c.agent.clone()).as_deref(),
        Some("demo2")
    );
    assert!(told_ended(&mut p, CONN, &call));
}

#[test]
fn closing_the_page_ends_every_call_of_the_agent() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let (_, a) = answered_call(&mut p, 1, "+15551230001");
    let mut second = Caller::new(2, "+15551230002", DEMO_DID);
    let b = ring(&mut p, &mut second);
    p.take_sip();

    p.disconnect(AGENT, CONN);
    let sent = p.take_sip();
    let bye = sent.iter().find_map(|m| match m {
        Message::Request(r) if r.method.as_str() == "BYE" => Some(r.clone()),
        _ => None,
    });
    let bye = bye.expect("the answered call gets a BYE");
    assert_eq!(bye.headers.call_id(), Some("call-1@trunk"));
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Response(r) if r.status == 480
                && r.headers.call_id() == Some("call-2@trunk"))),
        "the waiting caller is turned away: {sent:?}"
    );
    p.trunk_sends(&reply(&bye, 200, ""));
    assert!(p.gw.call(&a).is_none() && p.gw.call(&b).is_none());
    assert_eq!(p.stored_status(&a).as_deref(), Some("ended"));
    assert_eq!(p.stored_status(&b).as_deref(), Some("ended"));
    assert!(p.ports.in_use.lock().unwrap().is_empty());
    assert_eq!(p.gw.live_legs(), 0);
}

#[test]
fn a_second_sign_in_replaces_the_first_and_keeps_the_call() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let (_, call) = answered_call(&mut p, 1, "+15551230001");
    p.take_media(&call);

    p.connect(AGENT, 7);
    assert_eq!(p.closed, [(CONN, CloseReason::Replaced)]);
    assert!(bridged_to(&p.take_media(&call), 7));
    // The old connection's goodbye changes nothing.
    p.disconnect(AGENT, CONN);
    assert_eq!(status_of(&p, &call), Some(Status::Active));
}

#[test]
fn a_claim_by_another_node_ends_the_session_here_and_its_calls() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    answered_call(&mut p, 1, "+15551230001");
    p.take_sip();

    p.handle(Input::AgentClaimedElsewhere {
        agent: AGENT.into(),
    });
    assert_eq!(p.closed, [(CONN, CloseReason::Replaced)]);
    let sent = p.take_sip();
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Request(r) if r.method.as_str() == "BYE")),
        "the caller gets a BYE: {sent:?}"
    );
    // The page's own goodbye afterwards changes nothing; a second notice neither.
    p.disconnect(AGENT, CONN);
    p.handle(Input::AgentClaimedElsewhere {
        agent: AGENT.into(),
    });
    assert_eq!(p.closed.len(), 1);
}

#[test]
fn a_retransmitted_invite_is_absorbed_and_an_unanswered_call_times_out() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let mut caller = Caller::new(1, "+15551230001", DEMO_DID);
    let call = ring(&mut p, &mut caller);
    p.take_sip();
    p.trunk_sends(&caller.invite_again());
    assert!(
        p.take_notices(CONN).is_empty(),
        "a retransmission is not a new call"
    );
    assert_eq!(p.gw.calls().len(), 1);
    let statuses = p.statuses();
    assert!(
        statuses.iter().all(|&s| s == 180 || s == 100) && !statuses.is_empty(),
        "the last provisional is sent again: {statuses:?}"
    );

    // security.ring_timeout is 120 s in the shipped config.
    p.advance(Duration::from_secs(119));
    assert_eq!(status_of(&p, &call), Some(Status::Ringing));
    p.advance(Duration::from_secs(2));
    assert_eq!(p.statuses().last(), Some(&480));
    assert!(p.gw.call(&call).is_none());
    assert!(told_ended(&mut p, CONN, &call));
}

#[test]
fn an_unacknowledged_answer_is_retransmitted_then_the_call_ends() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let mut caller = Caller::new(1, "+15551230001", DEMO_DID);
    let call = ring(&mut p, &mut caller);
    p.take_sip();
    p.request(
        AGENT,
        AgentCall::Act(CallAction::Answer {
            call: call.clone().into(),
        }),
    )
    .unwrap();
    assert_eq!(p.statuses(), [200]);
    p.advance(Duration::from_millis(600));
    assert_eq!(p.statuses(), [200], "again after T1");
    // Timer H: 64*T1 = 32 s without an ACK and the call is over, with a BYE.
    p.advance(Duration::from_secs(33));
    let sent = p.take_sip();
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Request(r) if r.method.as_str() == "BYE")),
        "{sent:?}"
    );
    assert!(p.gw.call(&call).is_none(), "the call ended");
    assert_eq!(p.stored_status(&call).as_deref(), Some("ended"));
}

#[test]
fn an_agent_dials_out_through_the_trunk_with_its_number() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let call = p
        .request(
            AGENT,
            AgentCall::Dial {
                to: " +15551239999 ".into(),
                prospect: Default::default(),
            },
        )
        .unwrap();
    let invite = p.request_sent("INVITE");
    assert!(
        invite.uri.to_string().contains("+15551239999"),
        "{invite:?}"
    );
    let from = invite.headers.get("From").unwrap();
    assert!(
        from.contains(DEMO_DID),
        "the agent's DID is the caller: {from}"
    );
    assert_eq!(status_of(&p, &call), Some(Status::Dialing));

    p.trunk_sends(&reply(&invite, 180, ""));
    p.trunk_sends(&reply(&invite, 200, &answer_sdp(40000)));
    let ack = p.request_sent("ACK");
    assert_eq!(ack.headers.call_id(), invite.headers.call_id());
    assert_eq!(status_of(&p, &call), Some(Status::Active));
    let ops = p.take_media(&call);
    assert!(
        matches!(ops.first(), Some(MediaOp::Start { early: false, .. })),
        "{ops:?}"
    );
    assert!(bridged_to(&ops, CONN));
}

#[test]
fn the_dial_plan_refuses_what_the_operator_did_not_allow() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let refused = p
        .request(
            AGENT,
            AgentCall::Dial {
                to: "+4420700000".into(),
                prospect: Default::default(),
            },
        )
        .unwrap_err();
    assert_eq!(refused.code, "dial_plan_denied");
    let refused = p
        .request(
            AGENT,
            AgentCall::Dial {
                to: "+1-555-CALLGATE".into(),
                prospect: Default::default(),
            },
        )
        .unwrap_err();
    assert_eq!(refused.code, "bad_request");
    assert!(p.take_sip().is_empty(), "nothing left for the trunk");
    assert!(p.gw.calls().is_empty());
    assert!(p.ports.in_use.lock().unwrap().is_empty());
}

#[test]
fn an_operator_dial_reports_its_failure() {
    let mut p = Pair::new();
    let (now, wall) = (p.now, p.wall);
    let call = p.gw.dial(
        now,
        wall,
        "+15551239999".into(),
        crate::controller::MediaPlan::Echo,
    );
    p.progress();
    let invite = p.request_sent("INVITE");
    p.trunk_sends(&reply(&invite, 486, ""));
    assert_eq!(
        p.dialled,
        [(call.clone(), Err("call failed with SIP 486".to_string()))]
    );
    assert!(p.ports.in_use.lock().unwrap().is_empty());
    assert_eq!(p.stored_status(&call).as_deref(), Some("ended"));
}

#[test]
fn a_sip_request_from_a_stranger_starts_no_call() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let mut stranger = Caller::new(1, "+15551230001", DEMO_DID);
    let invite = stranger.invite();
    p.handle(Input::Datagram {
        source: "10.9.8.7:5060".parse().unwrap(),
        bytes: invite.as_bytes(),
    });
    assert!(p.take_notices(CONN).is_empty());
    assert!(p.gw.calls().is_empty());
    let statuses = p.statuses();
    assert!(
        statuses.iter().all(|&s| s >= 400),
        "nothing but a refusal: {statuses:?}"
    );
}

#[test]
fn shutdown_ends_every_call_with_a_bye() {
    let mut p = Pair::new();
    p.connect(AGENT, CONN);
    let (_, call) = answered_call(&mut p, 1, "+15551230001");
    p.take_sip();
    p.handle(Input::Shutdown);
    let bye = p.request_sent("BYE");
    p.trunk_sends(&reply(&bye, 200, ""));
    assert_eq!(p.gw.live_legs(), 0);
    assert_eq!(p.stored_status(&call).as_deref(), Some("ended"));
}

#[test]
fn in_a_cluster_a_signed_in_agents_did_is_registered_here_refreshed_and_removed() {
    let config = cluster_config();
    config
        .validate()
        .expect("a cluster naming the trunk is valid");
    let mut p = Pair::with_config(config);
    p.connect("demo", 1);
    let register = p.request_sent("REGISTER");
    let h = &register.headers;
    assert!(h
        .get("To")
        .unwrap()
        .contains(&format!("sip:{DEMO_DID}@127.0.0.1")));
    let contact = h.get("Contact").unwrap().to_string();
    assert!(contact.contains(&format!("sip:{DEMO_DID}@")), "{contact}");
    assert_eq!(h.get("Expires"), Some("3600"));
    let call_id = h.get("Call-ID").unwrap().to_string();
    let cseq = |r: &Request| -> u32 {
        r.headers
            .get("CSeq")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = cseq(&register);
    p.trunk_sends(&reply(&register, 200, ""));
    assert_eq!(p.gw.b2bua().locations(), vec![(DEMO_DID.to_string(), true)]);
    // Refreshed at 80 % of what was granted, on the same Call-ID with a higher CSeq.
    p.advance(Duration::from_secs(2879));
    assert!(p.take_sip().is_empty(), "nothing before the refresh");
    p.advance(Duration::from_secs(2));
    let refresh = p.request_sent("REGISTER");
    assert_eq!(refresh.headers.get("Call-ID"), Some(call_id.as_str()));
    assert!(cseq(&refresh) > first);
    p.trunk_sends(&reply(&refresh, 200, ""));
    // A second connection of the agent's registers nothing more; the last one leaving
    // removes the registration.
    p.connect("demo", 2);
    assert!(p.take_sip().is_empty());
    p.disconnect("demo", 1);
    assert!(p.take_sip().is_empty());
    p.disconnect("demo", 2);
    let gone = p.request_sent("REGISTER");
    assert_eq!(gone.headers.get("Expires"), Some("0"));
    assert_eq!(gone.headers.get("Call-ID"), Some(call_id.as_str()));
    p.trunk_sends(&reply(&gone, 200, ""));
    assert!(p.gw.b2bua().locations().is_empty());
    // Without a cluster, nothing is registered.
    let mut single = Pair::new();
    single.connect("demo", 1);
    assert!(single.take_sip().is_empty());
}

#[test]
fn shutdown_removes_this_nodes_registrations() {
    let mut p = Pair::with_config(cluster_config());
    p.connect("demo", 1);
    let register = p.request_sent("REGISTER");
    p.trunk_sends(&reply(&register, 200, ""));
    p.handle(Input::Shutdown);
    let gone = p.request_sent("REGISTER");
    assert_eq!(gone.headers.get("Expires"), Some("0"));
}

#[test]
fn a_challenged_location_registration_is_retried_with_the_trunks_credentials() {
    let mut p = Pair::with_config(cluster_config());
    p.connect("demo", 1);
    let register = p.request_sent("REGISTER");
    assert!(register.headers.get("Authorization").is_none());
    let challenge = reply(&register, 401, "").replacen(
        "Content-Length: 0",
        "WWW-Authenticate: Digest realm=\"kamailio\", nonce=\"abc123\", qop=\"auth\"\r\nContent-Length: 0",
        1,
    );
    p.trunk_sends(&challenge);
    let retry = p.request_sent("REGISTER");
    let auth = retry
        .headers
        .get("Authorization")
        .expect("credentials")
        .to_string();
    assert!(
        auth.contains("username=\"trunk\"") && auth.contains("nonce=\"abc123\""),
        "{auth}"
    );
    assert_eq!(
        retry.headers.get("Call-ID"),
        register.headers.get("Call-ID")
    );
    p.trunk_sends(&reply(&retry, 200, ""));
    assert_eq!(p.gw.b2bua().locations(), vec![(DEMO_DID.to_string(), true)]);
}

/// A supervisor signed in on another node monitors a call here over a monitoring
/// connection: it hears the call and may switch modes, but it is not signed in here (no
/// registration, no claim notice ends it, no call or transfer reaches it, it may not dial),
/// and only a supervisor not signed in here may open one.
#[test]
fn a_monitoring_connection_monitors_and_does_nothing_else() {
    let mut p = Pair::with_config(cluster_config());
    p.connect(AGENT, CONN);
    let register = p.request_sent("REGISTER");
    p.trunk_sends(&reply(&register, 200, ""));
    let (_, call) = answered_call(&mut p, 1, "+15551230001");
    p.take_media(&call);
    p.take_sip();

    const WATCHER: u64 = 9;
    p.connect_as("super", WATCHER, ConnKind::Monitor);
    assert!(p.closed.is_empty(), "{:?}", p.closed);
    assert!(
        p.take_sip().is_empty(),
        "nothing registered for a monitoring connection"
    );
    let monitor = |mode| {
        AgentCall::Act(CallAction::Monitor {
            call: call.as_str().into(),
            mode,
        })
    };
    assert_eq!(
        p.request("super", monitor(Some(MonitorMode::Listen))),
        Ok(call.as_str().into())
    );
    let ops = p.take_media(&call);
    assert!(
        ops.iter().any(|op| matches!(
            op,
            MediaOp::MonitorStart {
                conn: WATCHER,
                mode: MonitorMode::Listen
            }
        )),
        "the call's media joins the monitoring connection: {ops:?}"
    );
    assert!(p
        .take_notices(WATCHER)
        .iter()
        .any(|n| matches!(n, Notice::Monitoring { .. })));
    assert!(p
        .request("super", monitor(Some(MonitorMode::Barge)))
        .is_ok());
    // Nothing but monitoring.
    let dial = p.request(
        "super",
        AgentCall::Dial {
            to: "+15551239999".into(),
            prospect: Default::default(),
        },
    );
    assert_eq!(dial.map_err(|e| e.code), Err("forbidden"));
    // The supervisor's own node claiming them again does not end a connection never claimed.
    p.handle(Input::AgentClaimedElsewhere {
        agent: "super".into(),
    });
    assert!(p.closed.is_empty(), "{:?}", p.closed);
    // A transfer to them rings nobody here (their calls ring on their node).
    let _ = p.request(
        AGENT,
        AgentCall::Transfer {
            call: call.as_str().into(),
            to: Some("agent:super".into()),
            attended: None,
        },
    );
    assert!(p
        .take_notices(WATCHER)
        .iter()
        .all(|n| !matches!(n, Notice::Incoming(_) | Notice::Waiting { .. })));

    // Refused: an agent who is not a supervisor, and a supervisor signed in here.
    p.connect_as("demo2", 10, ConnKind::Monitor);
    assert_eq!(p.closed, [(10, CloseReason::MonitorRefused)]);
    assert!(!p.gw.is_connected(10));
    p.connect("super", 11);
    assert_eq!(p.closed.last(), Some(&(WATCHER, CloseReason::Replaced)));
    p.connect_as("super", 12, ConnKind::Monitor);
    assert_eq!(p.closed.last(), Some(&(12, CloseReason::MonitorRefused)));
}

/// The test configuration as node `a` of a cluster whose registrar is the first trunk.
fn cluster_config() -> crate::config::Config {
    let mut config = test_config();
    config.cluster = Some(crate::config::ClusterConfig {
        node: "a".into(),
        registrar: config.trunks[0].name.clone(),
        lease: 30,
    });
    config.http.public_url = Some("https://a.example.com".into());
    config.store.backend = crate::config::StoreBackend::Postgres;
    config.store.url = Some("postgres://cg@127.0.0.1/cg".into());
    config
}

/// The agent's blind transfer of `call` to `to`.
fn transfer(p: &mut Pair, call: &str, to: &str) {
    p.request(
        AGENT,
        AgentCall::Transfer {
            call: call.into(),
            to: Some(to.into()),
            attended: None,
        },
    )
    .expect("transfer accepted");
}

/// In a cluster, a blind transfer to an agent signed in on no connection here goes out as an
/// INVITE through the registrar trunk to that agent's DID (the registrar knows their node),
/// past the dial plan; to an agent signed in here it stays a transfer between agents.
#[test]
fn in_a_cluster_a_transfer_to_an_agent_elsewhere_dials_their_did_through_the_registrar() {
    let mut config = cluster_config();
    // The dial plan lets nothing out: the registrar leg does not ask it.
    for trunk in &mut config.trunks {
        trunk.dial_plan = vec!["+44*".into()];
    }
    config.validate().expect("valid");
    let mut p = Pair::with_config(config);
    p.connect(AGENT, CONN);
    p.take_sip();
    let (_, call) = answered_call(&mut p, 1, "+15551230001");
    p.take_sip();

    transfer(&mut p, &call, "agent:demo2");
    let invite = p.request_sent("INVITE");
    assert!(
        invite.uri.to_string().contains("+15550000200"),
        "demo2's DID: {}",
        invite.uri
    );
    assert!(told_ended(&mut p, CONN, &call), "the call left demo");

    // An agent signed in here is handed the call directly, with no SIP.
    let mut p2 = Pair::with_config(cluster_config());
    p2.connect(AGENT, CONN);
    p2.connect("demo2", 2);
    let mut caller = Caller::new(1, "+15551230001", DEMO_DID);
    let call = ring(&mut p2, &mut caller);
    answer(&mut p2, &mut caller, &call);
    p2.take_sip();
    transfer(&mut p2, &call, "agent:demo2");
    assert!(
        !p2.take_sip()
            .iter()
            .any(|m| matches!(m, Message::Request(r) if r.method.as_str() == "INVITE")),
        "no INVITE for an agent signed in here"
    );
}
