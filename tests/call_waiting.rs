//! Call waiting over the wire: raw SIP callers (our own UDP sockets, so each caller's received
//! RTP can be measured at any moment) and a WebSocket client speaking the agent protocol.
//! Hold, Hold & Accept, swaps, decline, a caller giving up on hold, the offer of the queue's
//! head, and a disconnect with calls in every status.

mod common;

use std::time::{Duration, Instant};

use common::caller::Caller;
use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn call_id_of(event: &Value) -> String {
    event["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string()
}

/// The whole call-waiting story with one agent and three callers.
#[test]
fn waiting_hold_swap_decline_offer_and_disconnect() {
    let ports = Ports::block(50);
    let gw = Gateway::start("call_waiting", ports, &(default_trunk(27990) + DEMO_AGENT));
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");

    // A rings an idle agent and is answered.
    let mut a = Caller::dial(&gw, "+15551230001", 27000);
    let incoming = next_of(&mut agent, "call.incoming");
    let a_id = call_id_of(&incoming);
    let ok = request(&mut agent, json!({"type": "call.answer", "call_id": a_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(a.final_response(Duration::from_secs(5)), 200);

    // B arrives while A is active: waiting, and the agent is told.
    let mut b = Caller::dial(&gw, "+15551230002", 27010);
    let waiting = next_of(&mut agent, "call.waiting");
    let b_id = call_id_of(&waiting);
    assert_eq!(waiting["call"]["status"], "waiting");
    assert_eq!(waiting["queue_length"], 1);

    // Hold & Accept: A on hold hears the hold audio, B is answered and bridged.
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": b_id, "mode": "hold"}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(b.final_response(Duration::from_secs(5)), 200);
    assert!(
        a.heard(Duration::from_millis(800)) > 500.0,
        "A hears hold audio"
    );
    assert!(
        b.heard(Duration::from_millis(400)) < 100.0,
        "B hears the agent (silent here), not hold audio"
    );

    // Swap ten times: whoever is held hears the hold audio, the active one does not.
    for swap in 0..10 {
        let (resume, held) = if swap % 2 == 0 {
            (&a_id, &b)
        } else {
            (&b_id, &a)
        };
        let ok = request(
            &mut agent,
            json!({"type": "call.resume", "call_id": resume}),
        );
        assert_eq!(ok["type"], "ok", "swap {swap}: {ok}");
        let active = if swap % 2 == 0 { &a } else { &b };
        assert!(
            held.heard(Duration::from_millis(500)) > 500.0,
            "swap {swap}: held party hears hold audio"
        );
        assert!(
            active.heard(Duration::from_millis(300)) < 100.0,
            "swap {swap}: active party is off hold"
        );
    }
    // After ten swaps B is active again and A held.
    let snapshot = request(&mut agent, json!({"type": "calls.list"}));
    let status = |id: &str| {
        snapshot["calls"]
            .as_array()
            .and_then(|calls| calls.iter().find(|c| c["call_id"] == id))
            .map(|c| c["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        (status(&a_id).as_str(), status(&b_id).as_str()),
        ("on_hold", "active")
    );
    // Held five times and resumed five times: still one continuous stream toward each caller.
    a.assert_continuous_stream();
    b.assert_continuous_stream();

    // C arrives and is declined: 486 to C.
    let mut c = Caller::dial(&gw, "+15551230003", 27020);
    let waiting = next_of(&mut agent, "call.waiting");
    let c_id = call_id_of(&waiting);
    let ok = request(&mut agent, json!({"type": "call.decline", "call_id": c_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(c.final_response(Duration::from_secs(5)), 486);

    // A gives up on hold: ended by the caller, and a call-log prompt.
    a.hang_up();
    let ended = loop {
        let ended = next_of(&mut agent, "call.ended");
        if ended["call"]["call_id"] == a_id.as_str() {
            break ended;
        }
    };
    assert_eq!(
        (
            ended["call"]["call_id"].as_str(),
            ended["call"]["end_reason"].as_str()
        ),
        (Some(a_id.as_str()), Some("caller_hangup"))
    );
    let prompt = loop {
        let prompt = next_of(&mut agent, "call_log.prompt");
        if prompt["call"]["call_id"] == a_id.as_str() {
            break prompt;
        }
    };
    assert_eq!(prompt["call_ids"], json!([a_id]));

    // D waits; the agent ends B (active): D, the queue's head, is offered, nothing connects.
    let mut d = Caller::dial(&gw, "+15551230004", 27030);
    let waiting = next_of(&mut agent, "call.waiting");
    let d_id = call_id_of(&waiting);
    let ok = request(&mut agent, json!({"type": "call.hangup", "call_id": b_id}));
    assert_eq!(ok["type"], "ok");
    assert!(b.expect_bye(Duration::from_secs(5)), "B gets BYE");
    let offer = next_of(&mut agent, "call.offer");
    assert_eq!(offer["call"]["call_id"], d_id.as_str());
    assert_eq!(offer["call"]["status"], "waiting");
    // Taking the offer answers D.
    let ok = request(&mut agent, json!({"type": "call.answer", "call_id": d_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(d.final_response(Duration::from_secs(5)), 200);

    // G waits; End & Accept: D (active) gets BYE, G is answered, and no offer is made.
    let mut g = Caller::dial(&gw, "+15551230007", 27060);
    let g_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": g_id, "mode": "end"}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    assert!(
        d.expect_bye(Duration::from_secs(5)),
        "End & Accept hangs up D"
    );
    assert_eq!(g.final_response(Duration::from_secs(5)), 200);
    let snapshot = request(&mut agent, json!({"type": "calls.list"}));
    let of = |id: &str| {
        snapshot["calls"]
            .as_array()
            .and_then(|calls| calls.iter().find(|c| c["call_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(of(&d_id)["end_reason"], "agent_hangup", "{snapshot}");
    assert_eq!(of(&g_id)["status"], "active", "{snapshot}");

    // Calls in every status, then the socket drops: all of them end within 5 s.
    let mut e = Caller::dial(&gw, "+15551230005", 27040);
    let e_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": e_id, "mode": "hold"}),
    );
    assert_eq!(ok["type"], "ok");
    assert_eq!(e.final_response(Duration::from_secs(5)), 200);
    let mut f = Caller::dial(&gw, "+15551230006", 27050);
    next_of(&mut agent, "call.waiting");
    let dialed = request(
        &mut agent,
        json!({"type": "call.dial", "to": "+15551239999"}),
    );
    assert_eq!(dialed["type"], "ok", "{dialed}");
    drop(agent);
    let started = Instant::now();
    assert_eq!(
        f.final_response(Duration::from_secs(5)),
        480,
        "waiting caller rejected"
    );
    assert!(g.expect_bye(Duration::from_secs(5)), "held call gets BYE");
    assert!(e.expect_bye(Duration::from_secs(5)), "active call gets BYE");
    gw.wait_idle(Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let mut again = connect_agent(&gw, "?token=demo-token");
    let snapshot = next_of(&mut again, "calls.snapshot");
    let live = snapshot["calls"]
        .as_array()
        .map(|calls| calls.iter().filter(|c| c["status"] != "ended").count())
        .unwrap_or(99);
    assert_eq!(live, 0, "{snapshot}");
}

/// The gateway process's resident memory (KiB) and CPU time (user + system ticks of 10 ms).
fn process_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // After the name: state is not numeric, so utime and stime are the 11th and 12th numbers.
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    (rss, ticks)
}

/// A hundred callers at once for one agent: every one reaches the agent (waiting, then held
/// as the agent takes the next), none is dropped, the agent swaps through all of them, and
/// the cost of a hundred parked calls is measured (printed for the record, not asserted).
#[test]
fn a_hundred_parallel_callers_for_one_agent() {
    let ports = Ports::wide(52);
    let gw = Gateway::start(
        "waiting_hundred",
        ports,
        &(default_trunk(27991) + DEMO_AGENT),
    );
    let pid = gw.child.id();
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let (rss_idle, _) = process_usage(pid);
    let mut args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        27500,
        27510,
    );
    for (flag, value) in [("-m", "100"), ("-l", "100"), ("-r", "50")] {
        set_sipp_arg(&mut args, flag, value);
    }
    let mut callers = KillOnDrop::new(spawn_sipp(&dir, &args));

    // Take every call as it comes: the first is answered, each waiting head is taken with
    // Hold & Accept, so the previous one joins the queue.
    let mut answered: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while answered.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} calls reached the agent",
            answered.len()
        );
        let message = match agent.read() {
            Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).expect("JSON"),
            Ok(_) => continue,
            Err(e) => panic!("socket: {e}"),
        };
        let id = message["call"]["call_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let reply = match message["type"].as_str() {
            Some("call.incoming") => {
                request(&mut agent, json!({"type": "call.answer", "call_id": id}))
            }
            Some("call.waiting") => request(
                &mut agent,
                json!({"type": "call.accept", "call_id": id, "mode": "hold"}),
            ),
            Some("call.ended") => panic!("a call was dropped: {message}"),
            _ => continue,
        };
        assert_eq!(reply["type"], "ok", "{reply}");
        answered.push(id);
    }
    let snapshot = request(&mut agent, json!({"type": "calls.list"}));
    let statuses: Vec<&str> = snapshot["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "active").count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == "on_hold").count(), 99);

    // A hundred parked calls: memory and CPU, for the record.
    std::thread::sleep(Duration::from_secs(1));
    let (rss_parked, cpu_before) = process_usage(pid);
    std::thread::sleep(Duration::from_secs(10));
    let (_, cpu_after) = process_usage(pid);
    eprintln!(
        "100 calls (99 on hold playing hold audio, 1 bridged; this build): RSS {rss_idle} KiB idle -> {rss_parked} KiB ({} KiB per call); CPU {:.1} % of a core over 10 s ({:.0} us per call-second)",
        rss_parked.saturating_sub(rss_idle) / 100,
        (cpu_after - cpu_before) as f64 / 10.0,
        (cpu_after - cpu_before) as f64 * 10_000.0 / (100.0 * 10.0)
    );

    // Swap through every call: each resume makes it active and parks the previous one.
    for id in &answered {
        let ok = request(&mut agent, json!({"type": "call.resume", "call_id": id}));
        let resumed = ok["type"] == "ok" || ok["code"] == "invalid_state";
        assert!(resumed, "{ok}");
    }
    // Hang up all of them; every caller must see its BYE.
    for id in &answered {
        let ok = request(&mut agent, json!({"type": "call.hangup", "call_id": id}));
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let out = wait_child(callers.take(), Duration::from_secs(60));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (100, 0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
    );
    gw.wait_idle(Duration::from_secs(10));
}

/// The calls page lists calls in every status (screenshot in the test's folder).
#[test]
fn the_calls_page_shows_every_status() {
    require_tool("node");
    require_tool("chromium");
    let ports = Ports::block(55);
    let gw = Gateway::start("calls_page", ports, &(default_trunk(27993) + DEMO_AGENT));
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let mut a = Caller::dial(&gw, "+15551230001", 27100);
    let a_id = call_id_of(&next_of(&mut agent, "call.incoming"));
    assert_eq!(
        request(&mut agent, json!({"type": "call.answer", "call_id": a_id}))["type"],
        "ok"
    );
    assert_eq!(a.final_response(Duration::from_secs(5)), 200);
    let mut b = Caller::dial(&gw, "+15551230002", 27110);
    let b_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": b_id, "mode": "hold"}),
    );
    assert_eq!(ok["type"], "ok");
    assert_eq!(b.final_response(Duration::from_secs(5)), 200);
    let mut c = Caller::dial(&gw, "+15551230003", 27120);
    let c_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let ok = request(&mut agent, json!({"type": "call.decline", "call_id": c_id}));
    assert_eq!(ok["type"], "ok");
    assert_eq!(c.final_response(Duration::from_secs(5)), 486);
    let _d = Caller::dial(&gw, "+15551230004", 27130);
    next_of(&mut agent, "call.waiting");

    let browser_dir = repo_root().join("tests/browser");
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("agent.mjs"))
        .current_dir(&browser_dir)
        .env("CALLGATE_URL", format!("http://127.0.0.1:{}/", ports.http))
        .env("CALLGATE_TOKEN", "admin-token")
        .env("MODE", "calls")
        .env("SHOTS", &gw.dir)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CLOSED"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for status in ["active", "on_hold", "waiting", "ended"] {
        assert!(
            stdout.contains(&format!("\"{status}\"")),
            "{status}: {stdout}"
        );
    }
    // The first call was recorded while active: its row plays the file.
    assert!(stdout.contains("PLAYED "), "{stdout}");
    assert!(gw.dir.join("calls-page.png").exists());
}

/// Early media for waiting callers: with `media.waiting_audio = "ringback"`, a caller who
/// waits for a busy agent gets a 183 with SDP and hears the ringback tone (440+480 Hz,
/// measured) until the agent takes the call, then the call on the same stream. A trunk with
/// `early_media = false` gets a 180 and nothing, as before.
#[test]
fn a_waiting_caller_hears_ringback_as_early_media_unless_its_trunk_refuses_it() {
    let ports = Ports::block(79);
    let trunks = format!(
        "{}\n[[trunk]]\nname = \"no-early\"\ninbound_from = [\"127.0.0.2/32\"]\nearly_media = false\n",
        default_trunk(27996)
    );
    let gw = Gateway::start_with_media(
        "early_media",
        ports,
        &(trunks + DEMO_AGENT),
        "waiting_audio = \"ringback\"\n",
    );
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");
    let mut a = Caller::dial(&gw, "+15551230001", 27200);
    let a_id = common::caller::answer_incoming(&mut agent, &mut a);

    // B waits: 183 with SDP, then the ringback tone, measured before anyone answers.
    let mut b = Caller::dial(&gw, "+15551230002", 27204);
    let (status, progress) = b
        .provisional(Duration::from_secs(5))
        .expect("a provisional");
    assert_eq!(status, 183, "{progress}");
    assert!(progress.contains("application/sdp"), "{progress}");
    let b_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let early = b.heard_between(from + Duration::from_millis(300), Instant::now());
    assert!(
        early.len() > 4000,
        "only {} samples of early media",
        early.len()
    );
    let (f440, f480, f1000) = (
        tone_amplitude(&early, 440.0),
        tone_amplitude(&early, 480.0),
        tone_amplitude(&early, 1000.0),
    );
    assert!(
        f440 > 500.0 && f480 > 500.0 && f1000 < f440 / 5.0,
        "ringback 440 Hz {f440:.0}, 480 Hz {f480:.0}, 1 kHz {f1000:.0}"
    );

    // Hold & Accept: B's 200 carries the same session, and the ringback stops.
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": b_id, "mode": "hold"}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(b.final_response(Duration::from_secs(5)), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        b.heard(Duration::from_millis(600)) < 100.0,
        "B hears the agent (silent here), no more ringback"
    );
    // A back, B on hold: the hold audio comes on the stream the ringback started (one SSRC,
    // no sequence gap, timestamps following the clock across the silent stretch).
    let ok = request(&mut agent, json!({"type": "call.resume", "call_id": a_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert!(
        b.heard(Duration::from_millis(1500)) > 500.0,
        "B hears hold audio"
    );
    b.assert_continuous_stream();

    // C comes over the trunk that takes no early media: a 180 and nothing to hear.
    let mut c = Caller::dial_from(&gw, "+15551230003", "127.0.0.2", 27208);
    let (status, ringing) = c
        .provisional(Duration::from_secs(5))
        .expect("a provisional");
    assert_eq!(status, 180, "{ringing}");
    let c_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    assert!(
        c.heard(Duration::from_millis(1200)) < 1.0,
        "C hears nothing from us"
    );
    let ok = request(&mut agent, json!({"type": "call.decline", "call_id": c_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert!(c.final_response(Duration::from_secs(5)) >= 400);
    a.hang_up();
    b.hang_up();
    gw.wait_idle(Duration::from_secs(10));
}
