//! Call recording over the wire: a raw SIP caller playing 440 Hz, the demo agent on the agent
//! protocol with a simulated browser (a str0m peer with ICE, DTLS and SRTP, playing 1 kHz as
//! Opus), and the WAV fetched through `GET /v1/calls/{id}/recording` and decoded. Holds pause
//! the file, `kill -9` leaves it readable and the restart repairs it, an unwritable directory
//! fails the recording and not the call, and `call.record` drives an on-demand recording.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::browser::signed_in;
use common::caller::{answer_incoming, Caller};
use common::*;
use serde_json::{json, Value};

/// The caller dials the demo agent, the agent answers, the caller starts its 440 Hz tone.
/// Returns the call id.
fn answered_call(agent: &mut AgentSocket, caller: &mut Caller) -> String {
    let id = answer_incoming(agent, caller);
    caller.play_tone(440.0);
    id
}

/// The next `call.updated` of this call whose `recording` is `state`, within 5 s.
fn recording_becomes(agent: &mut AgentSocket, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let m = next_of(agent, "call.updated");
        if m["call"]["call_id"] == id && m["call"]["recording"] == state {
            return;
        }
    }
    panic!("call {id}: recording never became {state}");
}

fn call_json(gw: &Gateway, id: &str) -> Value {
    let (status, body) = gw
        .http("GET", &format!("/v1/calls/{id}"), Some(ADMIN_TOKEN), None)
        .expect("GET call");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Wait until the call log has the call ended with its recording's segments all closed.
fn ended_call(gw: &Gateway, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let call = call_json(gw, id);
        let closed = call["recording_info"]["segments"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| !s["duration_ms"].is_null()));
        if call["status"] == "ended" && closed {
            return call;
        }
        assert!(Instant::now() < deadline, "call never ended: {call}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Wav {
    channels: u16,
    rate: u32,
    left: Vec<i16>,
    right: Vec<i16>,
}

impl Wav {
    fn decode(bytes: &[u8]) -> Wav {
        let mut reader = hound::WavReader::new(Cursor::new(bytes)).expect("a valid WAV");
        let spec = reader.spec();
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        let channels = spec.channels;
        let (left, right) = if channels == 2 {
            (
                samples.iter().step_by(2).copied().collect(),
                samples.iter().skip(1).step_by(2).copied().collect(),
            )
        } else {
            (samples.clone(), samples)
        };
        Wav {
            channels,
            rate: spec.sample_rate,
            left,
            right,
        }
    }

    fn seconds(&self) -> f64 {
        self.left.len() as f64 / f64::from(self.rate)
    }
}

/// Each 250 ms window of `samples` from `from_s` to `to_s`: its dominant frequency and RMS.
fn windows(samples: &[i16], from_s: f64, to_s: f64) -> Vec<(u32, f64)> {
    let window = 2000; // 250 ms at 8 kHz
    let (from, to) = ((from_s * 8000.0) as usize, (to_s * 8000.0) as usize);
    samples[from.min(samples.len())..to.min(samples.len())]
        .chunks_exact(window)
        .map(|w| (dominant_frequency(w, 200, 1500), rms(w)))
        .collect()
}

/// Every window of both channels in the stretch carries its side's tone, and nothing else
/// dominates (hold audio, silence).
fn assert_both_sides(wav: &Wav, from_s: f64, to_s: f64) {
    for (name, samples, hz) in [("left", &wav.left, 440), ("right", &wav.right, 1000)] {
        for (i, (f, level)) in windows(samples, from_s, to_s).into_iter().enumerate() {
            let at = from_s + i as f64 * 0.25;
            assert!(
                f.abs_diff(hz) <= 20 && level > 1000.0,
                "{name} channel at {at:.2} s: {f} Hz, RMS {level:.0} (want {hz} Hz)"
            );
        }
    }
}

/// 4 s active, 3 s on hold, 5 s active: the file holds the 9 s of conversation, caller left,
/// agent right, and no hold audio.
#[test]
fn hold_pauses_the_recording_and_the_file_holds_only_the_conversation() {
    require_tool("sox");
    let ports = Ports::block(17);
    let gw = Gateway::start(
        "recording_hold",
        ports,
        &(default_trunk(28390) + DEMO_AGENT + DEMO2_AGENT),
    );
    let (mut agent, browser) = signed_in(&gw, "demo-token", 1000.0);
    let mut caller = Caller::dial(&gw, "+15551230001", 28300);
    let id = answered_call(&mut agent, &mut caller);
    let answered = Instant::now();
    recording_becomes(&mut agent, &id, "recording");

    std::thread::sleep(Duration::from_secs(4).saturating_sub(answered.elapsed()));
    let held = request(&mut agent, json!({"type": "call.hold", "call_id": id}));
    assert_eq!(held["type"], "ok", "{held}");
    let hold_started = Instant::now();
    recording_becomes(&mut agent, &id, "paused");
    // The caller hears the hold music meanwhile; the recording must not.
    assert!(caller.heard(Duration::from_millis(1500)) > 500.0);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(hold_started.elapsed()));
    let resumed = request(&mut agent, json!({"type": "call.resume", "call_id": id}));
    assert_eq!(resumed["type"], "ok", "{resumed}");
    let resumed_at = Instant::now();
    recording_becomes(&mut agent, &id, "recording");
    std::thread::sleep(Duration::from_secs(5).saturating_sub(resumed_at.elapsed()));
    let hung = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert_eq!(hung["type"], "ok", "{hung}");
    assert!(caller.expect_bye(Duration::from_secs(5)), "caller got BYE");
    let received = browser.stop();
    assert!(
        received > 300,
        "the browser heard the caller: {received} frames"
    );

    // The call log: two segments, where the hold was, and where each sits in the file.
    let call = ended_call(&gw, &id);
    assert_eq!(
        call["recording"], "off",
        "nothing is recorded after the end"
    );
    let info = &call["recording_info"];
    assert_eq!(
        call["recording_url"],
        format!("/v1/calls/{id}/recording"),
        "{call}"
    );
    let segments = info["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 2, "{info}");
    let duration = |i: usize| segments[i]["duration_ms"].as_i64().expect("duration");
    let offset = |i: usize| segments[i]["offset_ms"].as_i64().expect("offset");
    assert_eq!(offset(0), 0);
    assert_eq!(
        offset(1),
        duration(0),
        "the second segment follows the first"
    );
    assert!((3950..=4150).contains(&duration(0)), "{info}");
    assert!((4950..=5150).contains(&duration(1)), "{info}");
    assert_eq!(info["file"]["channels"], 2);
    assert_eq!(info["file"]["sample_rate"], 8000);

    // The file, fetched whole.
    let path = format!("/v1/calls/{id}/recording");
    let (status, head, bytes) = gw.get_bytes(&path, "demo-token", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: audio/wav"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("accept-ranges: bytes"),
        "{head}"
    );
    let file = gw.dir.join("fetched.wav");
    std::fs::write(&file, &bytes).expect("saved");
    let sox = std::process::Command::new("sox")
        .arg("--i")
        .arg("-D")
        .arg(&file)
        .output()
        .expect("sox runs");
    assert!(sox.status.success(), "sox --i rejects the file");
    let sox_seconds: f64 = String::from_utf8_lossy(&sox.stdout)
        .trim()
        .parse()
        .expect("sox prints the duration");
    let wav = Wav::decode(&bytes);
    println!(
        "recording: {:.3} s (sox {sox_seconds:.3} s), segments {} + {} ms",
        wav.seconds(),
        duration(0),
        duration(1)
    );
    assert_eq!((wav.channels, wav.rate), (2, 8000));
    assert!((wav.seconds() - 9.0).abs() <= 0.1, "{} s", wav.seconds());
    assert!((sox_seconds - wav.seconds()).abs() < 0.001);
    let segments_s = (duration(0) + duration(1)) as f64 / 1000.0;
    assert!(
        (wav.seconds() - segments_s).abs() <= 0.04,
        "file {} s, segments {segments_s} s",
        wav.seconds()
    );
    // Both sides all through each segment, once the jitter buffers have filled (0.5 s).
    let first = duration(0) as f64 / 1000.0;
    assert_both_sides(&wav, 0.5, first - 0.1);
    assert_both_sides(&wav, first + 0.5, wav.seconds() - 0.1);

    // Ranges: the header alone, the tail, and one past the end.
    let (status, head, part) = gw.get_bytes(&path, "demo-token", "Range: bytes=0-43\r\n");
    assert_eq!(status, 206, "{head}");
    assert_eq!(&part[..], &bytes[..44]);
    assert!(
        head.contains(&format!("bytes 0-43/{}", bytes.len())),
        "{head}"
    );
    let (status, _, tail) = gw.get_bytes(&path, "demo-token", "Range: bytes=-1000\r\n");
    assert_eq!(status, 206);
    assert_eq!(&tail[..], &bytes[bytes.len() - 1000..]);
    let (status, head, _) = gw.get_bytes(
        &path,
        "demo-token",
        &format!("Range: bytes={}-\r\n", bytes.len()),
    );
    assert_eq!(status, 416, "{head}");
    assert!(head.contains(&format!("bytes */{}", bytes.len())), "{head}");
    // Another agent may not have it; nobody without a token; no such call is 404.
    let (status, _, _) = gw.get_bytes(&path, "demo2-token", "");
    assert_eq!(status, 403);
    let (status, _, _) = gw.get_bytes(&path, "nobody", "");
    assert_eq!(status, 401);
    let (status, _, _) = gw.get_bytes("/v1/calls/c_none/recording", ADMIN_TOKEN, "");
    assert_eq!(status, 404);
}

/// `kill -9` in the middle of a recorded call: the file is readable as it was left, holding
/// the audio up to within a second of the kill; the restart repairs its header and the call
/// log serves it.
#[test]
fn a_killed_gateway_leaves_a_readable_recording_the_restart_repairs() {
    let ports = Ports::block(18);
    let mut gw = Gateway::start(
        "recording_kill",
        ports,
        &(default_trunk(28391) + DEMO_AGENT),
    );
    let (mut agent, _browser) = signed_in(&gw, "demo-token", 1000.0);
    let mut caller = Caller::dial(&gw, "+15551230002", 28310);
    let id = answered_call(&mut agent, &mut caller);
    recording_becomes(&mut agent, &id, "recording");
    let recording_since = Instant::now();
    std::thread::sleep(Duration::from_millis(3500));
    let recorded = recording_since.elapsed().as_secs_f64();
    gw.crash();

    let files = wav_files(&gw.dir.join("recordings"));
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).expect("file");
    let data_seconds = (bytes.len() as f64 - 44.0) / 32000.0;
    let before = Wav::decode(&bytes);
    println!(
        "killed after {recorded:.2} s: {:.2} s on disk, the header says {:.2} s",
        data_seconds,
        before.seconds()
    );
    assert!(
        data_seconds >= recorded - 1.0,
        "{data_seconds} s written of {recorded} s"
    );
    assert!(
        before.seconds() >= recorded - 1.0 - 1.0 && before.seconds() <= data_seconds,
        "the header lags at most a second: {} s",
        before.seconds()
    );

    gw.restart();
    let after = std::fs::read(&files[0]).expect("file");
    let repaired = Wav::decode(&after);
    assert!(
        (repaired.seconds() - (after.len() as f64 - 44.0) / 32000.0).abs() < 1e-6,
        "the header covers every sample"
    );
    assert!(repaired.seconds() >= data_seconds - 0.001);
    assert_both_sides(&repaired, 0.5, repaired.seconds() - 0.3);
    let call = call_json(&gw, &id);
    assert_eq!(
        (&call["status"], &call["end_reason"], &call["recording"]),
        (&json!("ended"), &json!("failed"), &json!("off")),
        "{call}"
    );
    let (status, _, served) = gw.get_bytes(&format!("/v1/calls/{id}/recording"), "demo-token", "");
    assert_eq!(status, 200);
    assert_eq!(served, after);
    // The header is refreshed each second, so at the kill it may or may not have lagged.
    if before.seconds() < data_seconds - 0.001 {
        assert!(gw.log_text().contains("recording header repaired"));
    }
}

fn wav_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(wav_files(&path));
        } else if path.extension().is_some_and(|e| e == "wav") {
            found.push(path);
        }
    }
    found
}

/// The recordings directory cannot be created: the recording is marked failed, with the
/// reason logged, and the call carries on with audio both ways.
#[test]
fn an_unwritable_recordings_directory_fails_the_recording_not_the_call() {
    let ports = Ports::block(19);
    let gw = Gateway::start(
        "recording_unwritable",
        ports,
        &(default_trunk(28392) + DEMO_AGENT),
    );
    // A file where the directory should be (root may write anywhere, so permissions would
    // not stop it).
    std::fs::write(gw.dir.join("recordings"), b"not a directory").expect("blocker");
    let (mut agent, browser) = signed_in(&gw, "demo-token", 1000.0);
    let mut caller = Caller::dial(&gw, "+15551230003", 28320);
    let id = answered_call(&mut agent, &mut caller);
    recording_becomes(&mut agent, &id, "failed");
    // The call goes on: the caller hears the agent's tone, the agent's browser the caller.
    std::thread::sleep(Duration::from_millis(500));
    let heard = caller.heard(Duration::from_secs(1));
    assert!(heard > 500.0, "caller hears the agent: RMS {heard:.0}");
    let snapshot = request(&mut agent, json!({"type": "calls.list"}));
    assert_eq!(snapshot["calls"][0]["status"], "active", "{snapshot}");
    let hung = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert_eq!(hung["type"], "ok");
    assert!(caller.expect_bye(Duration::from_secs(5)));
    assert!(browser.stop() > 50);
    let deadline = Instant::now() + Duration::from_secs(10);
    let call = loop {
        let call = call_json(&gw, &id);
        if call["status"] == "ended" || Instant::now() > deadline {
            break call;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(call["recording"], "failed", "{call}");
    assert_eq!(call["end_reason"], "agent_hangup");
    let (status, _, _) = gw.get_bytes(&format!("/v1/calls/{id}/recording"), ADMIN_TOKEN, "");
    assert_eq!(status, 404);
    let log = gw.log_text();
    assert!(
        log.contains("cannot open the recording") && log.contains("recordings"),
        "the reason is logged"
    );
}

/// An agent whose calls record on demand: `call.record` starts, pauses, resumes and stops,
/// each reported in the call's `recording`, and the file holds the recorded stretches only.
#[test]
fn call_record_drives_an_on_demand_recording() {
    let ports = Ports::block(20);
    let agent_on_demand = format!("{DEMO_AGENT}recording = \"on_demand\"\n");
    let gw = Gateway::start(
        "recording_on_demand",
        ports,
        &(default_trunk(28393) + &agent_on_demand),
    );
    let (mut agent, browser) = signed_in(&gw, "demo-token", 1000.0);
    let mut caller = Caller::dial(&gw, "+15551230004", 28330);
    let id = answered_call(&mut agent, &mut caller);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        call_json(&gw, &id)["recording"],
        "off",
        "nothing until asked"
    );
    let record = |agent: &mut AgentSocket, action: &str| {
        request(
            agent,
            json!({"type": "call.record", "call_id": id, "action": action}),
        )
    };
    let e = record(&mut agent, "pause");
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("invalid_state")),
        "{e}"
    );
    let e = record(&mut agent, "rewind");
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("action"),
        "{e}"
    );
    let e = request(
        &mut agent,
        json!({"type": "call.record", "call_id": "c_none", "action": "start"}),
    );
    assert_eq!(e["code"], "not_found", "{e}");

    for (action, state, hold_for) in [
        ("start", "recording", 1500),
        ("pause", "paused", 1000),
        ("resume", "recording", 1500),
        ("stop", "off", 500),
    ] {
        let ok = record(&mut agent, action);
        assert_eq!(ok["type"], "ok", "{action}: {ok}");
        recording_becomes(&mut agent, &id, state);
        std::thread::sleep(Duration::from_millis(hold_for));
    }
    request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
    assert!(caller.expect_bye(Duration::from_secs(5)));
    browser.stop();
    let call = ended_call(&gw, &id);
    let segments = call["recording_info"]["segments"]
        .as_array()
        .expect("segments")
        .clone();
    assert_eq!(segments.len(), 2, "{call}");
    let (_, _, bytes) = gw.get_bytes(&format!("/v1/calls/{id}/recording"), "demo-token", "");
    let wav = Wav::decode(&bytes);
    let total: i64 = segments
        .iter()
        .map(|s| s["duration_ms"].as_i64().expect("duration"))
        .sum();
    println!(
        "on demand: {:.3} s in the file, segments {total} ms",
        wav.seconds()
    );
    assert!((wav.seconds() - 3.0).abs() <= 0.1, "{} s", wav.seconds());
    assert!((wav.seconds() - total as f64 / 1000.0).abs() <= 0.04);
    assert_both_sides(&wav, 0.5, 1.4);
}

#[test]
fn the_tests_own_ulaw_encoder_round_trips() {
    for s in [-32000i16, -1000, -1, 0, 1, 100, 1000, 8000, 32000] {
        let back = ulaw_to_linear(linear_to_ulaw(s));
        assert!(
            (i32::from(back) - i32::from(s)).abs() <= i32::from(s).abs() / 16 + 8,
            "{s} -> {back}"
        );
    }
}
