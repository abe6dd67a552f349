//! Transfers over the wire, with raw SIP callers and callees (each talking its own tone, its
//! received audio measured), the demo agents on the agent protocol with simulated browsers,
//! and the agent's other calls held and waiting meanwhile: blind to another agent (answered,
//! and not answered in time), blind to a number, attended (completed and cancelled), and a
//! REFER from the trunk refused without harm. The recording follows the call.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::browser::{signed_in, Browser};
use common::caller::{Callee, Caller};
use common::*;
use serde_json::{json, Value};

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const AGENT2_HZ: f64 = 1600.0;
const CALLEE_HZ: f64 = 700.0;
const PRESENT: f64 = 400.0;

/// The caller and the party they were handed to hear each other, and the first agent is out:
/// measured over the last second.
fn assert_talking(
    label: &str,
    caller: &Caller,
    other_hz: f64,
    other_hears: impl Fn(Instant, Instant) -> Vec<i16>,
) {
    let (from, to) = last_second();
    let caller_hears = caller.heard_between(from, to);
    let other_hears = other_hears(from, to);
    println!(
        "{label}: the caller hears them {:.0} (the first agent {:.0}); they hear the caller {:.0}, the first agent {:.0}",
        tone_amplitude(&caller_hears, other_hz),
        tone_amplitude(&caller_hears, AGENT_HZ),
        tone_amplitude(&other_hears, CALLER_HZ),
        tone_amplitude(&other_hears, AGENT_HZ),
    );
    assert!(tone_amplitude(&caller_hears, other_hz) > PRESENT);
    assert!(tone_amplitude(&caller_hears, AGENT_HZ) < 150.0);
    assert!(tone_amplitude(&other_hears, CALLER_HZ) > PRESENT);
    assert!(tone_amplitude(&other_hears, AGENT_HZ) < 150.0);
}

/// The last second, from now.
fn last_second() -> (Instant, Instant) {
    let to = Instant::now();
    (to - Duration::from_secs(1), to)
}

fn call_id_of(event: &Value) -> String {
    event["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string()
}

fn ok(reply: &Value) {
    assert_eq!(reply["type"], "ok", "{reply}");
}

/// The next `call.ended` of `id`, with its reason.
fn ended(agent: &mut AgentSocket, id: &str) -> String {
    loop {
        let m = next_of(agent, "call.ended");
        if m["call"]["call_id"] == id {
            return m["call"]["end_reason"].as_str().unwrap_or("").to_string();
        }
    }
}

/// The demo agent with a call answered (caller at 440 Hz) plus one held and one waiting.
struct Desk {
    gw: Gateway,
    agent: AgentSocket,
    browser: Browser,
    caller: Caller,
    call: String,
    _held: Caller,
    _waiting: Caller,
}

fn desk(name: &str, block: u16, caller_port: u16, extra: &str) -> Desk {
    let ports = Ports::block(block);
    let gw = Gateway::start(
        name,
        ports,
        &(default_trunk(caller_port + 90) + DEMO_AGENT + DEMO2_AGENT + extra),
    );
    let (mut agent, browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let mut held = Caller::dial(&gw, "+15551230021", caller_port);
    let held_id = call_id_of(&next_of(&mut agent, "call.incoming"));
    ok(&request(
        &mut agent,
        json!({"type": "call.answer", "call_id": held_id}),
    ));
    assert_eq!(held.final_response(Duration::from_secs(5)), 200);
    let mut caller = Caller::dial(&gw, "+15551230022", caller_port + 10);
    let call = call_id_of(&next_of(&mut agent, "call.waiting"));
    ok(&request(
        &mut agent,
        json!({"type": "call.accept", "call_id": call, "mode": "hold"}),
    ));
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    caller.play_tone(CALLER_HZ);
    let waiting = Caller::dial(&gw, "+15551230023", caller_port + 20);
    next_of(&mut agent, "call.waiting");
    std::thread::sleep(Duration::from_millis(1200));
    let (from, to) = last_second();
    assert!(tone_amplitude(&caller.heard_between(from, to), AGENT_HZ) > PRESENT);
    Desk {
        gw,
        agent,
        browser,
        caller,
        call,
        _held: held,
        _waiting: waiting,
    }
}

#[test]
fn blind_transfer_to_another_agent_rings_them_and_the_recording_follows() {
    let mut d = desk("transfer_agent", 23, 28500, "");
    let (mut agent2, browser2) = signed_in(&d.gw, "demo2-token", AGENT2_HZ);

    // Errors: no such agent, oneself, nothing to say where.
    let e = request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "agent:nobody"}),
    );
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "agent:demo"}),
    );
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call}),
    );
    assert_eq!(e["code"], "bad_request", "{e}");

    ok(&request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "agent:demo2"}),
    ));
    assert_eq!(ended(&mut d.agent, &d.call), "transferred");
    let incoming = next_of(&mut agent2, "call.incoming");
    assert_eq!(call_id_of(&incoming), d.call);
    assert!(incoming["call"]["answered_at"].is_string(), "{incoming}");
    // Meanwhile the caller is parked: hold audio, not silence.
    assert!(d.caller.heard(Duration::from_millis(800)) > 500.0);
    ok(&request(
        &mut agent2,
        json!({"type": "call.answer", "call_id": d.call}),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    assert_talking("to demo2", &d.caller, AGENT2_HZ, |from, to| {
        browser2.heard_between(from, to)
    });
    d.caller.hang_up();
    assert_eq!(ended(&mut agent2, &d.call), "caller_hangup");

    // One call, one file: demo's stretch then demo2's, each agent on the right channel.
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let (_, body) =
            d.gw.http(
                "GET",
                &format!("/v1/calls/{}", d.call),
                Some(ADMIN_TOKEN),
                None,
            )
            .expect("call");
        let call: Value = serde_json::from_str(&body).expect("JSON");
        let closed = call["recording_info"]["segments"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| !s["duration_ms"].is_null()));
        if call["status"] == "ended" && closed {
            break call;
        }
        assert!(Instant::now() < deadline, "{call}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(call["agent_id"], "demo2", "{call}");
    let segments = call["recording_info"]["segments"]
        .as_array()
        .expect("segments");
    assert_eq!(segments.len(), 2, "{call}");
    let (_, _, bytes) =
        d.gw.get_bytes(&format!("/v1/calls/{}/recording", d.call), ADMIN_TOKEN, "");
    let mut reader = hound::WavReader::new(Cursor::new(&bytes)).expect("WAV");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.expect("s")).collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let at = |ms: i64| (ms as usize * 8).min(right.len());
    let first = segments[0]["duration_ms"].as_i64().expect("ms");
    let second_from = segments[1]["offset_ms"].as_i64().expect("ms");
    let second = segments[1]["duration_ms"].as_i64().expect("ms");
    let demo_part = &right[at(300)..at(first - 100)];
    let demo2_part = &right[at(second_from + 500)..at(second_from + second - 100)];
    assert!(tone_amplitude(demo_part, AGENT_HZ) > PRESENT);
    assert!(tone_amplitude(demo2_part, AGENT2_HZ) > PRESENT);
    browser2.stop();
    d.browser.stop();
}

#[test]
fn an_unanswered_transfer_comes_back_to_the_agent() {
    let mut d = desk("transfer_back", 24, 28600, "[transfer]\nring_seconds = 2\n");
    let mut agent2 = connect_agent(&d.gw, "?token=demo2-token");
    next_of(&mut agent2, "calls.snapshot");
    let started = Instant::now();
    ok(&request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "agent:demo2"}),
    ));
    assert_eq!(ended(&mut d.agent, &d.call), "transferred");
    assert_eq!(call_id_of(&next_of(&mut agent2, "call.incoming")), d.call);
    // Nobody answers: after 2 s demo2 loses it and it is back in demo's queue, on hold.
    assert_eq!(ended(&mut agent2, &d.call), "transferred");
    let back = loop {
        let m = next_of(&mut d.agent, "call.updated");
        if m["call"]["call_id"] == d.call.as_str() {
            break m;
        }
    };
    let waited = started.elapsed();
    assert_eq!(back["call"]["status"], "on_hold", "{back}");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "came back after {waited:?}"
    );
    take_back(&mut d);
    d.browser.stop();
}

#[test]
fn blind_transfer_to_a_number_joins_the_caller_to_the_far_end() {
    let mut d = desk("transfer_number", 25, 28700, "");
    let mut callee = Callee::listen(28790);
    let e = request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "+44123"}),
    );
    assert_eq!(e["code"], "dial_plan_denied", "{e}");
    ok(&request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "to": "+15559990001"}),
    ));
    assert_eq!(ended(&mut d.agent, &d.call), "transferred");
    assert!(
        callee.answer(Duration::from_secs(10)),
        "the far end was called"
    );
    callee.play_tone(CALLEE_HZ);
    std::thread::sleep(Duration::from_millis(1500));
    assert_talking("to a number", &d.caller, CALLEE_HZ, |from, to| {
        callee.heard_between(from, to)
    });
    // The caller hangs up: the far end gets BYE.
    d.caller.hang_up();
    assert!(
        callee.expect_bye(Duration::from_secs(5)),
        "BYE to the far end"
    );
    d.browser.stop();
}

/// The agent resumes the caller: they hear each other again.
fn take_back(d: &mut Desk) {
    ok(&request(
        &mut d.agent,
        json!({"type": "call.resume", "call_id": d.call}),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let (from, to) = last_second();
    assert!(tone_amplitude(&d.caller.heard_between(from, to), AGENT_HZ) > PRESENT);
    assert!(tone_amplitude(&d.browser.heard_between(from, to), CALLER_HZ) > PRESENT);
}

/// The agent dials `number` (the caller goes on hold); the far end answers and talks.
fn dial_consult(d: &mut Desk, number: &str) -> (Callee, String) {
    let mut callee = Callee::listen(28890);
    let reply = request(&mut d.agent, json!({"type": "call.dial", "to": number}));
    ok(&reply);
    assert!(callee.answer(Duration::from_secs(10)));
    callee.play_tone(CALLEE_HZ);
    (callee, reply["call_id"].as_str().expect("id").to_string())
}

#[test]
fn attended_transfer_completes_or_cancels_back() {
    let mut d = desk("transfer_attended", 26, 28800, "");
    // Cancel: consult the far end, then hang it up and take the caller back.
    let (first, consult) = dial_consult(&mut d, "+15559990002");
    std::thread::sleep(Duration::from_millis(1500));
    let (from, to) = last_second();
    assert!(tone_amplitude(&d.browser.heard_between(from, to), CALLEE_HZ) > PRESENT);
    assert!(
        tone_amplitude(&d.caller.heard_between(from, to), AGENT_HZ) < 150.0,
        "the caller is on hold meanwhile"
    );
    ok(&request(
        &mut d.agent,
        json!({"type": "call.hangup", "call_id": consult}),
    ));
    assert!(first.expect_bye(Duration::from_secs(5)));
    take_back(&mut d);
    drop(first);

    // Complete: consult again, then join the caller to the far end.
    let (second, consult) = dial_consult(&mut d, "+15559990003");
    std::thread::sleep(Duration::from_millis(800));
    let e = request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "attended_call_id": "c_none"}),
    );
    assert_eq!(e["code"], "bad_request", "{e}");
    ok(&request(
        &mut d.agent,
        json!({"type": "call.transfer", "call_id": d.call, "attended_call_id": consult}),
    ));
    assert_eq!(ended(&mut d.agent, &d.call), "transferred");
    std::thread::sleep(Duration::from_millis(1500));
    assert_talking("attended", &d.caller, CALLEE_HZ, |from, to| {
        second.heard_between(from, to)
    });
    // The far end hangs up: the caller gets BYE.
    second.hang_up();
    assert!(
        d.caller.expect_bye(Duration::from_secs(5)),
        "BYE to the caller"
    );
    d.browser.stop();
}

/// A REFER from the trunk inside a call is refused (405, with Allow) and the call goes on.
#[test]
fn a_refer_from_the_trunk_is_refused_and_the_call_goes_on() {
    let d = desk("transfer_refer", 27, 28900, "");
    let refer = d.caller.in_dialog_request(
        "REFER",
        5,
        "Refer-To: <sip:+15559990009@127.0.0.1>\r\nReferred-By: <sip:carrier@127.0.0.1>\r\n",
    );
    let status = d.caller.response_to(&refer, Duration::from_secs(5));
    assert!(status.starts_with("SIP/2.0 405"), "{status}");
    assert!(status.to_ascii_lowercase().contains("\nallow:"), "{status}");
    std::thread::sleep(Duration::from_millis(1200));
    let (from, to) = last_second();
    assert!(tone_amplitude(&d.caller.heard_between(from, to), AGENT_HZ) > PRESENT);
}
