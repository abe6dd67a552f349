//! Supervisors over the wire: raw SIP callers, the demo agent and the demo supervisor on the
//! agent protocol, each with a simulated browser (str0m) sending its own tone: the caller
//! 440 Hz, the agent 1000 Hz, the supervisor 1600 Hz. What each party hears is measured by
//! the strength of each tone in it. Listen, whisper and barge, a hold of the monitored call
//! while the agent has other calls held and waiting, resume, stop, the errors, the end of
//! the call, and what the recording keeps.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::browser::{signed_in, Browser};
use common::caller::Caller;
use common::*;
use serde_json::{json, Value};

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const SUPERVISOR_HZ: f64 = 1600.0;
/// A tone this strong (Goertzel amplitude, full scale 32768) is there; this weak, absent.
const PRESENT: f64 = 400.0;
const ABSENT: f64 = 120.0;

/// The three tones' amplitudes in what someone heard.
#[derive(Debug)]
struct Heard {
    caller: f64,
    agent: f64,
    supervisor: f64,
}

fn tones(samples: &[i16]) -> Heard {
    Heard {
        caller: tone_amplitude(samples, CALLER_HZ),
        agent: tone_amplitude(samples, AGENT_HZ),
        supervisor: tone_amplitude(samples, SUPERVISOR_HZ),
    }
}

fn call_id_of(event: &Value) -> String {
    event["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string()
}

/// Each party's ears over the last 1.2 s of a phase.
struct Ears<'a> {
    caller: &'a Caller,
    agent: &'a Browser,
    supervisor: &'a Browser,
}

impl Ears<'_> {
    fn listen(&self, phase: &str) -> (Heard, Heard, Heard) {
        let to = Instant::now();
        let from = to - Duration::from_millis(1200);
        let heard = (
            tones(&self.caller.heard_between(from, to)),
            tones(&self.agent.heard_between(from, to)),
            tones(&self.supervisor.heard_between(from, to)),
        );
        println!(
            "{phase}: caller hears {:?}\n{phase}: agent hears {:?}\n{phase}: supervisor hears {:?}",
            heard.0, heard.1, heard.2
        );
        heard
    }
}

/// The supervisor hears of the monitored call reaching `status` within 5 s.
fn status_becomes(supervisor: &mut AgentSocket, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if next_of(supervisor, "monitor.updated")["call"]["status"] == status {
            return;
        }
    }
    panic!("the monitored call never became {status}");
}

fn ok(reply: &Value) {
    assert_eq!(reply["type"], "ok", "{reply}");
}

#[test]
fn listen_whisper_barge_follow_the_call_through_hold_and_resume() {
    let ports = Ports::block(22);
    let gw = Gateway::start(
        "supervisor",
        ports,
        &(default_trunk(28490) + DEMO_AGENT + SUPERVISOR_AGENT),
    );
    let (mut agent, agent_browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let (mut supervisor, supervisor_browser) = signed_in(&gw, "super-token", SUPERVISOR_HZ);

    // The agent's other calls: one held, one waiting.
    let mut held = Caller::dial(&gw, "+15551230011", 28400);
    let held_id = call_id_of(&next_of(&mut agent, "call.incoming"));
    ok(&request(
        &mut agent,
        json!({"type": "call.answer", "call_id": held_id}),
    ));
    assert_eq!(held.final_response(Duration::from_secs(5)), 200);
    held.play_tone(600.0);
    let mut prospect = Caller::dial(&gw, "+15551230012", 28410);
    let id = call_id_of(&next_of(&mut agent, "call.waiting"));
    ok(&request(
        &mut agent,
        json!({"type": "call.accept", "call_id": id, "mode": "hold"}),
    ));
    let answered = Instant::now();
    assert_eq!(prospect.final_response(Duration::from_secs(5)), 200);
    prospect.play_tone(CALLER_HZ);
    let _waiting = Caller::dial(&gw, "+15551230013", 28420);
    let waiting_id = call_id_of(&next_of(&mut agent, "call.waiting"));

    // Errors first: only supervisors, known modes, answered calls.
    let e = request(
        &mut agent,
        json!({"type": "call.monitor", "call_id": id, "mode": "listen"}),
    );
    assert_eq!(e["code"], "forbidden", "{e}");
    let e = request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": id, "mode": "spy"}),
    );
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(e["message"].as_str().unwrap_or("").contains("mode"), "{e}");
    let e = request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": waiting_id, "mode": "listen"}),
    );
    assert_eq!(e["code"], "invalid_state", "{e}");
    let e = request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": "c_none", "mode": "listen"}),
    );
    assert_eq!(e["code"], "not_found", "{e}");
    let e = request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": id, "mode": "stop"}),
    );
    assert_eq!(e["code"], "invalid_state", "{e}");

    let ears = Ears {
        caller: &prospect,
        agent: &agent_browser,
        supervisor: &supervisor_browser,
    };
    let monitor = |supervisor: &mut AgentSocket, mode: &str| {
        let reply = request(
            supervisor,
            json!({"type": "call.monitor", "call_id": id, "mode": mode}),
        );
        ok(&reply);
        let update = next_of(supervisor, "monitor.updated");
        assert_eq!(update["mode"], mode, "{update}");
        assert_eq!(update["call"]["call_id"], id.as_str());
        std::thread::sleep(Duration::from_millis(2000));
    };

    // Listen: the supervisor hears both; nobody hears the supervisor.
    monitor(&mut supervisor, "listen");
    let (caller, agent_ears, sup) = ears.listen("listen");
    assert!(sup.caller > PRESENT && sup.agent > PRESENT, "{sup:?}");
    assert!(sup.supervisor < ABSENT, "never their own voice: {sup:?}");
    assert!(agent_ears.caller > PRESENT && agent_ears.supervisor < ABSENT);
    assert!(caller.agent > PRESENT && caller.supervisor < ABSENT);

    // Whisper: the agent hears the supervisor, the caller does not.
    let whisper_at = Instant::now();
    monitor(&mut supervisor, "whisper");
    let (caller, agent_ears, sup) = ears.listen("whisper");
    assert!(agent_ears.caller > PRESENT && agent_ears.supervisor > PRESENT);
    assert!(
        caller.agent > PRESENT && caller.supervisor < ABSENT,
        "{caller:?}"
    );
    assert!(sup.caller > PRESENT && sup.agent > PRESENT);

    // Barge: both hear the supervisor.
    let barge_at = Instant::now();
    monitor(&mut supervisor, "barge");
    let (caller, agent_ears, sup) = ears.listen("barge");
    assert!(
        caller.agent > PRESENT && caller.supervisor > PRESENT,
        "{caller:?}"
    );
    assert!(agent_ears.caller > PRESENT && agent_ears.supervisor > PRESENT);
    assert!(sup.caller > PRESENT && sup.agent > PRESENT && sup.supervisor < ABSENT);
    let hold_at = Instant::now();

    // The agent holds the monitored call: the supervisor follows the call (the prospect
    // and the hold audio), not the agent; their voice reaches nobody meanwhile.
    ok(&request(
        &mut agent,
        json!({"type": "call.hold", "call_id": id}),
    ));
    status_becomes(&mut supervisor, "on_hold");
    std::thread::sleep(Duration::from_millis(2000));
    let (caller, agent_ears, sup) = ears.listen("held");
    assert!(sup.caller > PRESENT, "the held prospect: {sup:?}");
    // The hold audio (an arpeggio) has a little energy near 1 kHz; the agent's tone would
    // be twenty times that.
    assert!(sup.agent < 600.0, "not the agent: {sup:?}");
    assert!(
        caller.supervisor < ABSENT && caller.agent < 600.0,
        "{caller:?}"
    );
    assert!(agent_ears.supervisor < ABSENT && agent_ears.caller < ABSENT);
    // The supervisor hears the hold audio the prospect hears: its strongest note is there.
    let to = Instant::now();
    let from = to - Duration::from_millis(1200);
    let hold_audio = prospect.heard_between(from, to);
    let note = (200..1500)
        .step_by(5)
        .map(f64::from)
        .max_by(|a, b| tone_amplitude(&hold_audio, *a).total_cmp(&tone_amplitude(&hold_audio, *b)))
        .expect("a note");
    let note_level = tone_amplitude(&supervisor_browser.heard_between(from, to), note);
    println!(
        "held: hold audio's strongest note {note} Hz, {note_level:.0} in the supervisor's ears"
    );
    assert!(note_level > 100.0, "the supervisor hears the hold audio");

    // Resume: monitoring carries on in barge.
    ok(&request(
        &mut agent,
        json!({"type": "call.resume", "call_id": id}),
    ));
    status_becomes(&mut supervisor, "active");
    std::thread::sleep(Duration::from_millis(2000));
    let (caller, agent_ears, sup) = ears.listen("resumed");
    assert!(
        caller.agent > PRESENT && caller.supervisor > PRESENT,
        "{caller:?}"
    );
    assert!(agent_ears.caller > PRESENT && agent_ears.supervisor > PRESENT);
    assert!(sup.caller > PRESENT && sup.agent > PRESENT);

    // Stop: the supervisor is off the call.
    ok(&request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": id, "mode": "stop"}),
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let (caller, _, sup) = ears.listen("stopped");
    assert!(caller.supervisor < ABSENT && sup.caller < ABSENT && sup.agent < ABSENT);

    // Listening again, then the prospect hangs up: the supervisor is told.
    monitor(&mut supervisor, "listen");
    prospect.hang_up();
    let ended = next_of(&mut supervisor, "monitor.ended");
    assert_eq!(ended["call"]["call_id"], id.as_str(), "{ended}");
    assert_eq!(ended["call"]["end_reason"], "caller_hangup");

    // The recording (the call was answered at `answered`): in the whisper the supervisor is
    // in neither channel; in the barge they are in what the prospect heard (right).
    let deadline = Instant::now() + Duration::from_secs(10);
    let bytes = loop {
        let (status, _, bytes) =
            gw.get_bytes(&format!("/v1/calls/{id}/recording"), "super-token", "");
        if status == 200 && bytes.len() > 44 {
            let (_, body) = gw
                .http("GET", &format!("/v1/calls/{id}"), Some("super-token"), None)
                .expect("call");
            if body.contains("\"status\":\"ended\"") {
                break bytes;
            }
        }
        assert!(Instant::now() < deadline, "no recording");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut reader = hound::WavReader::new(Cursor::new(&bytes)).expect("WAV");
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.expect("s")).collect();
    let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
    let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let stretch = |side: &[i16], from: Instant, to: Instant| -> Heard {
        let at = |t: Instant| (t.duration_since(answered).as_secs_f64() * 8000.0) as usize;
        let (a, b) = (at(from).min(side.len()), at(to).min(side.len()));
        tones(&side[a..b])
    };
    let settle = Duration::from_millis(500);
    let whisper_left = stretch(&left, whisper_at + settle, barge_at);
    let whisper_right = stretch(&right, whisper_at + settle, barge_at);
    let barge_right = stretch(&right, barge_at + settle, hold_at);
    let barge_left = stretch(&left, barge_at + settle, hold_at);
    println!("recording: whisper left {whisper_left:?} right {whisper_right:?}");
    println!("recording: barge left {barge_left:?} right {barge_right:?}");
    assert!(whisper_left.caller > PRESENT && whisper_left.supervisor < ABSENT);
    assert!(whisper_right.agent > PRESENT && whisper_right.supervisor < ABSENT);
    assert!(barge_right.agent > PRESENT && barge_right.supervisor > PRESENT);
    assert!(barge_left.caller > PRESENT && barge_left.supervisor < ABSENT);
    agent_browser.stop();
    supervisor_browser.stop();
}

/// The same with sipp as the caller (its tone looped from a file, what reaches it captured on
/// loopback with tcpdump): the supervisor hears sipp and the agent when listening, and sipp
/// hears the supervisor only once they barge.
#[test]
fn a_sipp_caller_hears_a_barging_supervisor_and_not_a_listening_one() {
    require_tool("sipp");
    require_tool("tcpdump");
    let ports = Ports::block(30);
    let gw = Gateway::start(
        "supervisor_sipp",
        ports,
        &(default_trunk(28491) + DEMO_AGENT + SUPERVISOR_AGENT),
    );
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let (mut agent, agent_browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let (mut supervisor, supervisor_browser) = signed_in(&gw, "super-token", SUPERVISOR_HZ);

    let media_port = 28470;
    let capture = capture_rtp_to(&gw, media_port);
    let args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        28460,
        media_port,
    );
    let mut caller = KillOnDrop::new(spawn_sipp(&dir, &args));
    let id = call_id_of(&next_of(&mut agent, "call.incoming"));
    ok(&request(
        &mut agent,
        json!({"type": "call.answer", "call_id": id}),
    ));
    std::thread::sleep(Duration::from_millis(1000));
    ok(&request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": id, "mode": "listen"}),
    ));
    std::thread::sleep(Duration::from_millis(2000));
    let to = Instant::now();
    let sup = tones(&supervisor_browser.heard_between(to - Duration::from_millis(1200), to));
    println!("sipp, listen: supervisor hears {sup:?}");
    assert!(sup.caller > PRESENT && sup.agent > PRESENT, "{sup:?}");
    ok(&request(
        &mut supervisor,
        json!({"type": "call.monitor", "call_id": id, "mode": "barge"}),
    ));
    std::thread::sleep(Duration::from_millis(2000));
    ok(&request(
        &mut agent,
        json!({"type": "call.hangup", "call_id": id}),
    ));
    let out = wait_child(caller.take(), Duration::from_secs(30));
    let packets = capture.stop();
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // What sipp heard, 20 ms a packet: the last 1.3 s were barge, 2.5 to 4 s before the end
    // were listen.
    let frames: Vec<Vec<i16>> = packets
        .iter()
        .filter(|p| p.payload.len() > 12 && p.payload[1] & 0x7f == 0)
        .map(|p| p.payload[12..].iter().map(|b| ulaw_to_linear(*b)).collect())
        .collect();
    assert!(
        frames.len() > 220,
        "only {} packets reached sipp",
        frames.len()
    );
    let stretch = |from_end: usize, to_end: usize| -> Heard {
        let n = frames.len();
        tones(&frames[n - from_end..n - to_end].concat())
    };
    let barge = stretch(75, 10);
    let listen = stretch(200, 125);
    println!("sipp hears, listening: {listen:?}; barging: {barge:?}");
    assert!(
        listen.agent > PRESENT && listen.supervisor < ABSENT,
        "{listen:?}"
    );
    assert!(
        barge.agent > PRESENT && barge.supervisor > PRESENT,
        "{barge:?}"
    );
    agent_browser.stop();
    supervisor_browser.stop();
}

/// A supervisor who signs in again (a second tab takes over, the first gets 4409) keeps
/// monitoring: the new browser hears the call.
#[test]
fn monitoring_moves_with_a_supervisors_second_sign_in() {
    let ports = Ports::block(31);
    let gw = Gateway::start(
        "supervisor_replaced",
        ports,
        &(default_trunk(28492) + DEMO_AGENT + SUPERVISOR_AGENT),
    );
    let (mut agent, agent_browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let (mut first, first_browser) = signed_in(&gw, "super-token", SUPERVISOR_HZ);
    let mut prospect = Caller::dial(&gw, "+15551230014", 28430);
    let id = call_id_of(&next_of(&mut agent, "call.incoming"));
    ok(&request(
        &mut agent,
        json!({"type": "call.answer", "call_id": id}),
    ));
    assert_eq!(prospect.final_response(Duration::from_secs(5)), 200);
    prospect.play_tone(CALLER_HZ);
    ok(&request(
        &mut first,
        json!({"type": "call.monitor", "call_id": id, "mode": "listen"}),
    ));
    let (_second, second_browser) = signed_in(&gw, "super-token", SUPERVISOR_HZ);
    let closed = loop {
        if let Err(code) = next_message(&mut first) {
            break code;
        }
    };
    assert_eq!(closed, Some(4409), "the first tab is replaced");
    first_browser.stop();
    std::thread::sleep(Duration::from_millis(2500));
    let to = Instant::now();
    let heard = tones(&second_browser.heard_between(to - Duration::from_millis(1200), to));
    println!("after the second sign-in the supervisor hears {heard:?}");
    assert!(heard.caller > PRESENT && heard.agent > PRESENT, "{heard:?}");
    second_browser.stop();
    agent_browser.stop();
}
