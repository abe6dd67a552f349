//! The agent leg end to end: Debian's headless Chromium runs the dialer page with a fake
//! microphone (a 1 kHz tone), sipp plays the PSTN side with a 440 Hz tone, and each side must
//! hear the other: the browser measures what it receives (getStats, WebAudio), tcpdump
//! captures what reaches sipp and the test decodes it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::signed_in;
use common::page::{assert_page_receives, number, BrowserAgent};
use common::*;

/// Browser tests share the machine; the one that measures gaps in what the page hears runs
/// alone. Three other Chromiums on two cores starve its page's audio thread for hundreds of
/// milliseconds at times (seen: a 705 ms gap with 24 packets lost in the whole call), which
/// says nothing about the gateway.
static BROWSERS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    BROWSERS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    BROWSERS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The browser heard the far end's tone: packets growing, a level, and a 440 Hz peak.
fn assert_browser_heard_tone(result: &str) {
    assert_page_receives(result, "the browser");
    assert!(number(result, "rms") > 0.05, "received RMS: {result}");
    let hz = number(result, "dominant_hz");
    assert!(
        (400.0..=480.0).contains(&hz),
        "dominant frequency: {result}"
    );
}

/// What the gateway sent to sipp's media port, decoded: the browser's 1 kHz tone.
fn assert_sipp_heard_browser(packets: &[UdpPacket]) {
    let samples: Vec<i16> = packets
        .iter()
        .filter(|p| p.payload.len() > 12 && p.payload[1] & 0x7f == 0)
        .flat_map(|p| p.payload[12..].iter().map(|b| ulaw_to_linear(*b)))
        .collect();
    assert!(
        samples.len() > 8000,
        "only {} samples reached sipp",
        samples.len()
    );
    // Skip the first second (ICE, jitter buffer filling), then measure a second of it.
    let window = &samples[8000.min(samples.len() - 8000)..][..8000];
    assert!(
        rms(window) > 1500.0,
        "browser audio at sipp has RMS {}",
        rms(window)
    );
    assert_eq!(
        dominant_frequency(window, 800, 1200),
        1000,
        "sipp hears the browser's 1 kHz tone"
    );
}

/// A caller rings the demo agent's DID; the page answers; audio both ways; closing the
/// browser ends the SIP call with BYE.
#[test]
fn browser_answers_a_pstn_call_and_closing_it_hangs_up() {
    let _browsers = shared();
    let ports = Ports::block(41);
    let gw = Gateway::start("agent_inbound", ports, &(default_trunk(25990) + DEMO_AGENT));
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let browser = BrowserAgent::start(&gw, &dir, "answer", &[("TALK_MS", "3000")]);
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);

    let media_port = 26610;
    let capture = capture_rtp_to(&gw, media_port);
    let args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        26600,
        media_port,
    );
    let mut caller = KillOnDrop::new(spawn_sipp(&dir, &args));

    browser.expect("ANSWERED", Duration::from_secs(40), &dir, &gw);
    let result = browser.expect("RESULT", Duration::from_secs(30), &dir, &gw);
    assert_browser_heard_tone(&result);
    browser.expect("RECORDING_TOGGLED", Duration::from_secs(30), &dir, &gw);
    browser.expect("CLOSED", Duration::from_secs(30), &dir, &gw);
    let closed = Instant::now();
    let out = wait_child(caller.take(), Duration::from_secs(30));
    let bye_after = closed.elapsed();
    let packets = capture.stop();
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "caller: {}\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default(),
        gw.log_text()
    );
    assert!(
        bye_after < Duration::from_secs(20),
        "BYE came {bye_after:?} after the browser closed"
    );
    assert_sipp_heard_browser(&packets);
    // Our answer's `maxplaybackrate=8000` made Chrome encode narrowband, all an 8 kHz call
    // can use and a quarter of the decoding work of its fullband default.
    let log = gw.log_text();
    let opus = log
        .lines()
        .find(|l| l.contains("browser sends Opus"))
        .unwrap_or_else(|| panic!("no Opus from the browser logged:\n{log}"));
    assert!(opus.contains("narrowband"), "{opus}");
    gw.wait_idle(Duration::from_secs(5));
}

/// The page dials a number; the trunk's far end (sipp UAS) answers; audio both ways; the
/// page's hang-up button sends BYE.
#[test]
fn browser_dials_out_through_the_trunk() {
    let _browsers = shared();
    let ports = Ports::block(42);
    let trunk_port = 26700;
    let gw = Gateway::start(
        "agent_outbound",
        ports,
        &(default_trunk(trunk_port) + DEMO_AGENT),
    );
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let media_port = 26710;
    let args = single_call_sipp_args(&dir, "uas_agent_trunk.xml", None, trunk_port, media_port);
    let mut callee = KillOnDrop::new(spawn_sipp(&dir, &args));
    let capture = capture_rtp_to(&gw, media_port);
    let browser = BrowserAgent::start(
        &gw,
        &dir,
        "dial",
        &[
            ("NUMBER", "+15551230001"),
            ("HANGUP", "1"),
            ("TALK_MS", "3000"),
        ],
    );
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    browser.expect("DIALED", Duration::from_secs(30), &dir, &gw);
    let result = browser.expect("RESULT", Duration::from_secs(30), &dir, &gw);
    assert_browser_heard_tone(&result);
    browser.expect("HUNG_UP", Duration::from_secs(30), &dir, &gw);
    let out = wait_child(callee.take(), Duration::from_secs(20));
    let packets = capture.stop();
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "callee: {}\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default(),
        gw.log_text()
    );
    assert_sipp_heard_browser(&packets);
}

/// `callgate demo` rings the agent: the page answers, hears the melody, and the demo caller
/// hears the browser.
#[test]
fn the_demo_caller_rings_the_page() {
    let _browsers = shared();
    let ports = Ports::block(48);
    let gw = Gateway::start("agent_demo", ports, &(default_trunk(26994) + DEMO_AGENT));
    let dir = gw.dir.clone();
    let browser = BrowserAgent::start(&gw, &dir, "answer", &[("TALK_MS", "1000")]);
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    let demo = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["demo", "--seconds", "8", "--config"])
        .arg(dir.join("callgate.toml"))
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callgate demo starts");
    let mut demo = KillOnDrop::new(demo);
    browser.expect("ANSWERED", Duration::from_secs(40), &dir, &gw);
    let result = browser.expect("RESULT", Duration::from_secs(30), &dir, &gw);
    assert!(
        number(&result, "rms") > 0.05,
        "the page hears the melody: {result}"
    );
    assert!(number(&result, "audio_level") > 0.01, "{result}");
    let out = wait_child(demo.take(), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "received N from the agent (RMS R)": the browser's tone came back to the caller.
    let received: u64 = stdout
        .split("received ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let rms: f64 = stdout
        .split("(RMS ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(received > 100 && rms > 1000.0, "{stdout}");
}

/// Call waiting in the page: A is answered, B waits; the test clicks Hold & Accept, opens the
/// calls popup and resumes A, with a screenshot of each state in the test's folder.
#[test]
fn browser_holds_accepts_and_resumes_from_the_calls_popup() {
    let _browsers = shared();
    let ports = Ports::block(51);
    let gw = Gateway::start(
        "agent_waiting_page",
        ports,
        &(default_trunk(26996) + DEMO_AGENT),
    );
    let dir = gw.dir.clone();
    let browser = BrowserAgent::start(&gw, &dir, "waiting", &[("TALK_MS", "1000")]);
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    let caller = |name: &str, number: &str, sip_port: u16| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("caller dir");
        make_ulaw_tone(&sub.join("tone.ul"), 5.0, 440);
        let mut args = single_call_sipp_args(
            &sub,
            "uac_agent_call.xml",
            Some((ports.sip, "+15550000100")),
            sip_port,
            sip_port + 10,
        );
        set_sipp_arg(&mut args, "caller", number);
        (sub.clone(), KillOnDrop::new(spawn_sipp(&sub, &args)))
    };
    let (a_dir, mut a) = caller("a", "+15551230001", 26620);
    browser.expect("ANSWERED", Duration::from_secs(40), &dir, &gw);
    let (b_dir, mut b) = caller("b", "+15551230002", 26640);
    let states = browser.expect("STATES", Duration::from_secs(40), &dir, &gw);
    assert!(
        states.contains(r#""+15551230001":"active""#)
            && states.contains(r#""+15551230002":"on_hold""#),
        "{states}"
    );
    let result = browser.expect("RESULT", Duration::from_secs(30), &dir, &gw);
    assert_browser_heard_tone(&result);
    browser.expect("CLOSED", Duration::from_secs(30), &dir, &gw);
    for (name, sub, child) in [("A", &a_dir, a.take()), ("B", &b_dir, b.take())] {
        let out = wait_child(child, Duration::from_secs(30));
        assert_eq!(
            sipp_call_counts(&sub.join("stats.csv")),
            (1, 0),
            "caller {name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            gw.log_text()
        );
    }
    for shot in [
        "1-call-waiting",
        "2-hold-and-accepted",
        "3-calls-popup",
        "4-resumed-first-call",
    ] {
        assert!(dir.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}

/// After a call the page asks for the call log: closing it unsaved says so and keeps it; the
/// saved tags, outcome and comment are in the calls API.
#[test]
fn the_call_log_prompt_saves_through_the_api() {
    let _browsers = shared();
    let ports = Ports::block(54);
    let gw = Gateway::start(
        "agent_log_prompt",
        ports,
        &(default_trunk(26997) + DEMO_AGENT),
    );
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let browser = BrowserAgent::start(&gw, &dir, "log", &[]);
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    let args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        26660,
        26670,
    );
    let mut caller = KillOnDrop::new(spawn_sipp(&dir, &args));
    browser.expect("ANSWERED", Duration::from_secs(40), &dir, &gw);
    browser.expect("LOGGED", Duration::from_secs(40), &dir, &gw);
    let out = wait_child(caller.take(), Duration::from_secs(30));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (status, body) = gw
        .http("GET", "/v1/calls?agent=demo", Some("admin-token"), None)
        .expect("HTTP");
    assert_eq!(status, 200, "{body}");
    let calls: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let log = &calls["calls"][0]["log"];
    assert_eq!(log["tags"], serde_json::json!(["interested"]), "{body}");
    assert_eq!(log["disposition"], "callback");
    assert_eq!(log["comments"][0]["text"], "Wants a demo next week");
    assert_eq!(log["comments"][0]["author"], "demo");
    assert!(dir.join("log-unsaved.png").exists());
}

/// A supervisor in the page: the live-calls list shows the demo agent's call, Listen joins
/// it (the page receives the call's audio), Barge and Stop work from the same row
/// (screenshot `supervisor.png`). The agent is a simulated browser at 1600 Hz.
#[test]
fn a_supervisor_listens_and_barges_from_the_page() {
    let _browsers = shared();
    let ports = Ports::block(28);
    let gw = Gateway::start(
        "agent_supervisor_page",
        ports,
        &(default_trunk(29090) + DEMO_AGENT + SUPERVISOR_AGENT),
    );
    let dir = gw.dir.clone();
    let (mut agent, agent_browser) = signed_in(&gw, "demo-token", 1600.0);
    let mut caller = common::caller::Caller::dial(&gw, "+15551230031", 29000);
    let id = next_of(&mut agent, "call.incoming")["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    let ok = request(
        &mut agent,
        serde_json::json!({"type": "call.answer", "call_id": id}),
    );
    assert_eq!(ok["type"], "ok");
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    caller.play_tone(440.0);

    let page = BrowserAgent::start(
        &gw,
        &dir,
        "supervise",
        &[("CALLGATE_TOKEN", "super-token"), ("TALK_MS", "300")],
    );
    page.expect("READY", Duration::from_secs(70), &dir, &gw);
    page.expect("MONITORING", Duration::from_secs(30), &dir, &gw);
    let result = page.expect("RESULT", Duration::from_secs(30), &dir, &gw);
    assert_page_receives(&result, "the supervisor receives the call");
    page.expect("STOPPED", Duration::from_secs(30), &dir, &gw);
    page.expect("CLOSED", Duration::from_secs(30), &dir, &gw);
    assert!(dir.join("supervisor.png").exists());
    caller.hang_up();
    agent_browser.stop();
}

/// The page's transfer form hands an answered call to another agent, who takes it: the
/// caller then hears them.
#[test]
fn the_page_transfers_a_call_to_another_agent() {
    let _browsers = shared();
    let ports = Ports::block(29);
    let gw = Gateway::start(
        "agent_transfer_page",
        ports,
        &(default_trunk(29091) + DEMO_AGENT + DEMO2_AGENT),
    );
    let dir = gw.dir.clone();
    let (mut agent2, agent2_browser) = signed_in(&gw, "demo2-token", 1600.0);
    let page = BrowserAgent::start(&gw, &dir, "transfer", &[("TRANSFER_TO", "agent:demo2")]);
    page.expect("READY", Duration::from_secs(70), &dir, &gw);
    let mut caller = common::caller::Caller::dial(&gw, "+15551230032", 29010);
    page.expect("ANSWERED", Duration::from_secs(30), &dir, &gw);
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    caller.play_tone(440.0);
    page.expect("TRANSFERRED", Duration::from_secs(30), &dir, &gw);
    let id = next_of(&mut agent2, "call.incoming")["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    let ok = request(
        &mut agent2,
        serde_json::json!({"type": "call.answer", "call_id": id}),
    );
    assert_eq!(ok["type"], "ok");
    std::thread::sleep(Duration::from_millis(1500));
    let to = Instant::now();
    let heard = caller.heard_between(to - Duration::from_secs(1), to);
    assert!(
        tone_amplitude(&heard, 1600.0) > 400.0,
        "the caller hears demo2 after the page's transfer"
    );
    page.expect("CLOSED", Duration::from_secs(30), &dir, &gw);
    caller.hang_up();
    agent2_browser.stop();
}

/// The adaptive downlink in Chromium: on a clean path the page receives the trunk's PCMU as
/// it came; while the gateway's simulated loss drops 5 % of the packets toward it, the
/// browser's receiver reports show it and the page gets Opus (with in-band FEC); after a
/// clean stretch, PCMU again. The far end's tone never stops for more than 40 ms, switches
/// included.
#[test]
fn the_page_hears_pcmu_on_a_clean_path_and_opus_while_it_loses_packets() {
    let _browsers = alone();
    let ports = Ports::block(23);
    let gw = Gateway::start_with_webrtc(
        "agent_downlink",
        ports,
        &(default_trunk(27210) + DEMO_AGENT),
        "downlink_recover_seconds = 4\n\
         simulated_loss = { percent = 5, after_seconds = 8, for_seconds = 10 }",
    );
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let browser = BrowserAgent::start(
        &gw,
        &dir,
        "downlink",
        &[("LISTEN_S", "42"), ("TIMEOUT_MS", "120000")],
    );
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    let args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        27210,
        27220,
    );
    let _caller = KillOnDrop::new(spawn_sipp(&dir, &args));
    browser.expect("ANSWERED", Duration::from_secs(40), &dir, &gw);
    let line = browser.expect("DOWNLINK", Duration::from_secs(60), &dir, &gw);
    let result: serde_json::Value =
        serde_json::from_str(line.trim_start_matches("DOWNLINK ")).expect("JSON");
    let codecs: Vec<(u64, String)> = result["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .map(|c| {
            (
                c[0].as_u64().unwrap_or(0),
                c[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = codecs.iter().map(|(_, c)| c.as_str()).collect();
    let log = gw.log_text();
    let switches: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("downlink codec switched"))
        .collect();
    assert_eq!(
        names,
        ["audio/PCMU", "audio/opus", "audio/PCMU"],
        "{result}\nswitches:\n{}",
        switches.join("\n")
    );
    assert!(
        result["median_rms"].as_f64().unwrap_or(0.0) > 0.05,
        "the tone is heard: {result}"
    );
    assert!(
        result["longest_gap_ms"].as_u64().unwrap_or(u64::MAX) <= 40,
        "a gap in the tone: {result}\nswitches:\n{}",
        switches.join("\n")
    );
    eprintln!("downlink: {result}");
}

/// The caller's name from the contacts directory on the page: in the incoming call, on the
/// active call and on the calls page (screenshots `name-*.png` in the test's folder).
#[test]
fn the_page_shows_the_callers_name_from_the_directory() {
    let _browsers = shared();
    let ports = Ports::block(74);
    let gw = Gateway::start(
        "agent_names_page",
        ports,
        &(default_trunk(26998) + DEMO_AGENT),
    );
    let (status, body) = gw
        .http(
            "PUT",
            "/v1/contacts/+15551230007",
            Some(ADMIN_TOKEN),
            Some(r#"{"name":"Riley Example","prospect_id":"crm-123"}"#),
        )
        .expect("HTTP");
    assert_eq!(status, 200, "{body}");
    let dir = gw.dir.clone();
    let browser = BrowserAgent::start(&gw, &dir, "names", &[]);
    browser.expect("READY", Duration::from_secs(70), &dir, &gw);
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let mut args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((ports.sip, "+15550000100")),
        26660,
        26670,
    );
    set_sipp_arg(&mut args, "caller", "+15551230007");
    let mut sipp = KillOnDrop::new(spawn_sipp(&dir, &args));
    let incoming = browser.expect("INCOMING_NAME", Duration::from_secs(40), &dir, &gw);
    assert_eq!(incoming, "INCOMING_NAME Riley Example");
    let active = browser.expect("ACTIVE_TEXT", Duration::from_secs(30), &dir, &gw);
    assert!(active.contains("Riley Example"), "{active}");
    let rows = browser.expect("CALLS_PAGE", Duration::from_secs(40), &dir, &gw);
    assert!(rows.contains("Riley Example"), "{rows}");
    browser.expect("CLOSED", Duration::from_secs(30), &dir, &gw);
    let _ = wait_child(sipp.take(), Duration::from_secs(30));
    for shot in ["name-incoming", "name-active", "name-calls-page"] {
        assert!(dir.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}

/// The page (answer mode, `page_hash` added to its address) answers a sipp caller; each side
/// hears the other's tone, measured. The ICE candidate pair the browser used (its PAIR line).
fn answer_and_talk(gw: &Gateway, page_hash: &str, sip_port: u16, media_port: u16) -> String {
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 5.0, 440);
    let browser = BrowserAgent::start(
        gw,
        &dir,
        "answer",
        &[("TALK_MS", "3000"), ("PAGE_HASH", page_hash)],
    );
    browser.expect("READY", Duration::from_secs(70), &dir, gw);
    let capture = capture_rtp_to(gw, media_port);
    let args = single_call_sipp_args(
        &dir,
        "uac_agent_call.xml",
        Some((gw.ports.sip, "+15550000100")),
        sip_port,
        media_port,
    );
    let mut caller = KillOnDrop::new(spawn_sipp(&dir, &args));
    browser.expect("ANSWERED", Duration::from_secs(40), &dir, gw);
    let result = browser.expect("RESULT", Duration::from_secs(30), &dir, gw);
    assert_browser_heard_tone(&result);
    let pair = browser.expect("PAIR", Duration::from_secs(10), &dir, gw);
    println!("{pair}");
    browser.expect("CLOSED", Duration::from_secs(40), &dir, gw);
    let out = wait_child(caller.take(), Duration::from_secs(30));
    let packets = capture.stop();
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "caller: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_sipp_heard_browser(&packets);
    pair
}

/// An agent whose network allows only a TURN relay: Chromium with `iceTransportPolicy:
/// "relay"` (the page's `#ice=relay`) and a coturn started here on loopback, with credentials
/// the gateway makes from coturn's shared secret at sign-in. The call's audio flows through
/// the relay both ways, measured at both ends.
#[test]
fn a_relay_only_browser_talks_through_coturn() {
    let _browsers = shared();
    require_tool("turnserver");
    let ports = Ports::block(76);
    let secret = "turn-shared-secret-0123456789";
    let dir = scratch("agent_turn_coturn");
    let coturn_log = std::fs::File::create(dir.join("coturn.log")).expect("coturn log");
    let _coturn = KillOnDrop::new(
        Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                "--listening-port=27500",
                "--min-port=27510",
                "--max-port=27599",
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=callgate.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--fingerprint",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
            ])
            .stdout(coturn_log.try_clone().expect("log clone"))
            .stderr(coturn_log)
            .spawn()
            .expect("turnserver starts"),
    );
    let gw = Gateway::start_with_webrtc(
        "agent_turn",
        ports,
        &(default_trunk(27600) + DEMO_AGENT),
        &format!(
            "[[webrtc.ice_server]]\nurls = [\"turn:127.0.0.1:27500?transport=udp\"]\nshared_secret = \"{secret}\"\n"
        ),
    );
    let pair = answer_and_talk(&gw, "&ice=relay", 26680, 26690);
    assert!(pair.contains(r#""local":"relay""#), "{pair}");
    // coturn accepted the credentials the gateway made for the agent at sign-in.
    let log = std::fs::read_to_string(dir.join("coturn.log")).unwrap_or_default();
    for step in [
        "ALLOCATE processed, success",
        "CREATE_PERMISSION processed, success",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(":demo>") && l.contains(step)),
            "coturn's log has no {step:?} for the agent:\n{log}"
        );
    }
}

/// An agent whose network blocks UDP: the page keeps only the gateway's passive TCP candidate
/// (`#ice=tcp` strips the answer's UDP ones), ICE runs over TCP (RFC 6544, RFC 4571 framing),
/// and the call's audio is measured both ways.
#[test]
fn a_browser_talks_over_ice_tcp_when_udp_is_stripped() {
    let _browsers = shared();
    let ports = Ports::block(77);
    let gw = Gateway::start_with_webrtc(
        "agent_ice_tcp",
        ports,
        &(default_trunk(26898) + DEMO_AGENT),
        &format!("tcp_listen = \"127.0.0.1:{}\"\n", ports.http + 2),
    );
    let pair = answer_and_talk(&gw, "&ice=tcp", 26880, 26890);
    assert!(
        pair.contains(r#""local_protocol":"tcp""#) && pair.contains(r#""remote_protocol":"tcp""#),
        "{pair}"
    );
    let log = gw.log_text();
    let tcp = log
        .lines()
        .find(|l| l.contains("ICE over TCP"))
        .unwrap_or_else(|| panic!("no ICE-TCP connection logged:\n{log}"));
    println!("{tcp}");
}
