//! The SIP trunk leg end to end against real peers: sipp as caller and as trunk, raw UDP for
//! protocol corner cases, tcpdump to capture the echoed audio.

mod common;

use std::time::Duration;

use common::*;

/// One sipp UAC run: scenario, target user, its ports, and how many calls how fast.
struct Uac<'a> {
    scenario: &'a str,
    service: &'a str,
    local_port: u16,
    media_port: u16,
    calls: u32,
    limit: u32,
    rate: u32,
}

fn sipp_uac_args(gw: &Gateway, dir: &std::path::Path, uac: Uac) -> Vec<String> {
    let Uac {
        scenario: scenario_file,
        service,
        local_port,
        media_port,
        calls,
        limit,
        rate,
    } = uac;
    let mut args = single_call_sipp_args(
        dir,
        scenario_file,
        Some((gw.ports.sip, service)),
        local_port,
        media_port,
    );
    set_sipp_arg(&mut args, "-m", calls);
    set_sipp_arg(&mut args, "-l", limit);
    set_sipp_arg(&mut args, "-r", rate);
    set_sipp_arg(&mut args, "-max_socket", 200);
    set_sipp_arg(&mut args, "-fd", 1);
    args
}

/// 200 calls, 50 at once, to the echo route; each streams a tone and must hear it back.
#[test]
fn sipp_load_against_echo_hears_the_echo() {
    let ports = Ports::block(1);
    let gw = Gateway::start("echo_load", ports, &default_trunk(5999));
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 2.0, 440);
    let media_port = 24000;
    let capture = capture_rtp_to(&gw, media_port);
    let args = sipp_uac_args(
        &gw,
        &dir,
        Uac {
            scenario: "uac_echo.xml",
            service: "echo",
            local_port: 24100,
            media_port,
            calls: 200,
            limit: 50,
            rate: 25,
        },
    );
    let out = run_sipp(&dir, &args, Duration::from_secs(150));
    let packets = capture.stop();
    let (ok, failed) = sipp_call_counts(&dir.join("stats.csv"));
    assert_eq!(
        (ok, failed),
        (200, 0),
        "sipp: {}\n{}\nerrors: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
    );
    assert!(out.status.success(), "sipp exit status {:?}", out.status);
    // What came back to sipp's media port from the gateway, stream by stream.
    let mut streams: std::collections::HashMap<u32, Vec<(u16, Vec<u8>)>> =
        std::collections::HashMap::new();
    for p in &packets {
        if p.payload.len() > 12 && p.payload[1] & 0x7f == 0 {
            let ssrc =
                u32::from_be_bytes([p.payload[8], p.payload[9], p.payload[10], p.payload[11]]);
            let seq = u16::from_be_bytes([p.payload[2], p.payload[3]]);
            streams
                .entry(ssrc)
                .or_default()
                .push((seq, p.payload[12..].to_vec()));
        }
    }
    // 200 calls × 2 s of tone × 50 packets/s; allow for capture start/stop edges.
    assert!(
        packets.len() > 200 * 80,
        "only {} echoed packets captured",
        packets.len()
    );
    assert!(
        streams.len() >= 190,
        "echo streams from {} SSRCs",
        streams.len()
    );
    let silent = streams
        .values()
        .filter(|s| {
            let samples: Vec<i16> = s
                .iter()
                .flat_map(|(_, p)| p.iter().map(|b| ulaw_to_linear(*b)))
                .collect();
            rms(&samples) < 3000.0
        })
        .count();
    assert_eq!(silent, 0, "{silent} calls heard a silent echo");
    // Capture order is arrival order on loopback: no resorting (sequence numbers may wrap).
    let longest = streams.values().max_by_key(|s| s.len()).expect("a stream");
    let samples: Vec<i16> = longest
        .iter()
        .flat_map(|(_, p)| p.iter().map(|b| ulaw_to_linear(*b)))
        .collect();
    assert_eq!(
        dominant_frequency(&samples[..8000.min(samples.len())], 300, 600),
        440,
        "echo carries the 440 Hz tone"
    );
    gw.wait_idle(Duration::from_secs(10));
}

fn trunk_scenario(dir: &std::path::Path, gateway_hangs_up: bool) -> String {
    let text = std::fs::read_to_string(scenario("uas_trunk_auth.xml")).expect("scenario");
    let marker = r#"<nop hide="true" test="gateway_hangs_up" next="waitbye"/>"#;
    let text = if gateway_hangs_up {
        text.replace(marker, r#"<nop hide="true" next="waitbye"/>"#)
    } else {
        text.replace(marker, "")
    };
    let path = dir.join(if gateway_hangs_up {
        "uas_gw_bye.xml"
    } else {
        "uas_trunk_bye.xml"
    });
    std::fs::write(&path, text).expect("scenario written");
    path.display().to_string()
}

fn sipp_uas_args(
    scenario: String,
    port: u16,
    media_port: u16,
    dir: &std::path::Path,
) -> Vec<String> {
    let mut args = one_call_sipp_args(scenario, port, media_port, &dir.join("uas_stats.csv"));
    set_sipp_arg(&mut args, "-timeout", "60s");
    args
}

fn dial(gw: &Gateway, to: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "dial",
            to,
            "--http",
            &format!("127.0.0.1:{}", gw.ports.http),
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .expect("callgate dial runs")
}

/// `callgate dial` through a trunk that challenges with digest auth; the trunk hangs up.
#[test]
fn outbound_call_through_trunk_with_digest_trunk_hangs_up() {
    let ports = Ports::block(2);
    let trunk_port = 25060;
    let gw = Gateway::start("outbound_trunk_bye", ports, &default_trunk(trunk_port));
    let dir = gw.dir.clone();
    let uas = spawn_sipp(
        &dir,
        &sipp_uas_args(trunk_scenario(&dir, false), trunk_port, 25100, &dir),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = dial(&gw, "+15551234567");
    assert!(
        out.status.success(),
        "dial: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dial prints JSON");
    assert!(reply["call_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("c_")));
    let result = wait_child(uas, Duration::from_secs(30));
    assert!(
        result.status.success(),
        "sipp trunk: {}\n{}",
        String::from_utf8_lossy(&result.stdout),
        gw.log_text()
    );
    assert_eq!(sipp_call_counts(&dir.join("uas_stats.csv")), (1, 0));
    gw.wait_idle(Duration::from_secs(5));
}

/// Same, but the gateway ends the call (`callgate hangup`): BYE from our side.
#[test]
fn outbound_call_through_trunk_gateway_hangs_up() {
    let ports = Ports::block(3);
    let trunk_port = 25070;
    let gw = Gateway::start("outbound_gw_bye", ports, &default_trunk(trunk_port));
    let dir = gw.dir.clone();
    let uas = spawn_sipp(
        &dir,
        &sipp_uas_args(trunk_scenario(&dir, true), trunk_port, 25110, &dir),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = dial(&gw, "sip:bob@127.0.0.1");
    assert!(
        out.status.success(),
        "dial: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dial prints JSON");
    let call_id = reply["call_id"].as_str().expect("call_id").to_string();
    assert_eq!(gw.live_calls(), 1);
    let hangup = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "hangup",
            &call_id,
            "--http",
            &format!("127.0.0.1:{}", gw.ports.http),
        ])
        .output()
        .expect("callgate hangup runs");
    assert!(
        hangup.status.success(),
        "hangup: {}",
        String::from_utf8_lossy(&hangup.stderr)
    );
    let result = wait_child(uas, Duration::from_secs(30));
    assert!(
        result.status.success(),
        "sipp trunk: {}\n{}",
        String::from_utf8_lossy(&result.stdout),
        gw.log_text()
    );
    assert_eq!(sipp_call_counts(&dir.join("uas_stats.csv")), (1, 0));
    gw.wait_idle(Duration::from_secs(5));
}

/// The dial plan blocks what the operator did not allow, before any SIP is sent.
#[test]
fn dial_plan_denies_unlisted_numbers() {
    let ports = Ports::block(4);
    let gw = Gateway::start("dial_plan", ports, &default_trunk(25080));
    let out = dial(&gw, "+445551234567");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("dial_plan_denied"),
        "{err}"
    );
    let (status, body) = gw
        .http("POST", "/v1/dial", Some(ADMIN_TOKEN), Some(r#"{"to":""}"#))
        .expect("http");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("to"), "{body}");
    let (status, _) = gw
        .http(
            "POST",
            "/v1/dial",
            Some("demo-token"),
            Some(r#"{"to":"+15551234567"}"#),
        )
        .expect("http");
    assert_eq!(
        status, 401,
        "agent tokens are not configured in this test config"
    );
    let (status, _) = gw
        .http("POST", "/v1/dial", None, Some(r#"{"to":"+15551234567"}"#))
        .expect("http");
    assert_eq!(status, 401);
}

/// A caller that re-INVITEs with sendonly gets recvonly back, and UPDATE resumes.
#[test]
fn far_end_hold_with_reinvite_and_update() {
    let ports = Ports::block(5);
    let gw = Gateway::start("far_end_hold", ports, &default_trunk(25090));
    let dir = gw.dir.clone();
    let args = sipp_uac_args(
        &gw,
        &dir,
        Uac {
            scenario: "uac_hold.xml",
            service: "echo",
            local_port: 26100,
            media_port: 26000,
            calls: 1,
            limit: 1,
            rate: 1,
        },
    );
    let out = run_sipp(&dir, &args, Duration::from_secs(60));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "{}\n{}",
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default(),
        gw.log_text()
    );
    assert!(out.status.success());
    gw.wait_idle(Duration::from_secs(5));
}

/// SIP over TCP on the same port.
#[test]
fn calls_over_tcp() {
    let ports = Ports::block(6);
    let gw = Gateway::start("tcp_calls", ports, &default_trunk(25095));
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 1.0, 440);
    let mut args = sipp_uac_args(
        &gw,
        &dir,
        Uac {
            scenario: "uac_echo.xml",
            service: "echo",
            local_port: 26200,
            media_port: 26300,
            calls: 5,
            limit: 5,
            rate: 5,
        },
    );
    args.extend(["-t".to_string(), "t1".to_string()]);
    let out = run_sipp(&dir, &args, Duration::from_secs(60));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (5, 0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default(),
        gw.log_text()
    );
    gw.wait_idle(Duration::from_secs(5));
}

/// SIGTERM sends BYE to every live call before the gateway exits.
#[test]
fn sigterm_sends_bye_to_live_calls() {
    let ports = Ports::block(7);
    let mut gw = Gateway::start("sigterm", ports, &default_trunk(25097));
    let dir = gw.dir.clone();
    let args = sipp_uac_args(
        &gw,
        &dir,
        Uac {
            scenario: "uac_wait_bye.xml",
            service: "echo",
            local_port: 26400,
            media_port: 26500,
            calls: 3,
            limit: 3,
            rate: 10,
        },
    );
    let uac = spawn_sipp(&dir, &args);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.live_calls() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "calls never came up: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = gw.terminate();
    assert!(status.success(), "gateway exit {status:?}");
    let log = gw.log_text();
    assert!(
        log.contains("callgate stopped") && !log.contains(" ERROR "),
        "a clean stop:\n{log}"
    );
    let out = wait_child(uac, Duration::from_secs(20));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (3, 0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        gw.log_text()
    );
    // Every call's end reached the call log before the process went (a call left live
    // there would only be closed as `failed` by the next start).
    let db = rusqlite::Connection::open(dir.join("callgate.db")).expect("call log");
    let calls: Vec<(String, Option<String>)> = db
        .prepare("SELECT status, end_reason FROM calls")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("calls");
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().all(|(status, reason)| status == "ended"
            && reason.as_deref().is_some_and(|r| r != "failed")),
        "{calls:?}"
    );
}

/// SIGTERM to an idle gateway: it stops at once (nothing to wait for), without an error.
#[test]
fn an_idle_gateway_stops_at_once_on_sigterm() {
    let ports = Ports::block(25);
    let mut gw = Gateway::start("sigterm_idle", ports, &default_trunk(25093));
    let asked = std::time::Instant::now();
    let status = gw.terminate();
    let took = asked.elapsed();
    assert!(status.success(), "gateway exit {status:?}");
    let log = gw.log_text();
    assert!(
        log.contains("callgate stopped") && !log.contains(" ERROR "),
        "a clean stop:\n{log}"
    );
    // It used to wait 5 s for a call-log writer the HTTP server kept alive.
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
}

/// The announcement route answers, plays and hangs up (sipp waits for our BYE).
#[test]
fn announcement_route_hangs_up_when_done() {
    let ports = Ports::block(8);
    let gw = Gateway::start("announce_sipp", ports, &default_trunk(25098));
    let dir = gw.dir.clone();
    let started = std::time::Instant::now();
    let args = sipp_uac_args(
        &gw,
        &dir,
        Uac {
            scenario: "uac_wait_bye.xml",
            service: "announce",
            local_port: 26600,
            media_port: 26700,
            calls: 1,
            limit: 1,
            rate: 1,
        },
    );
    let out = run_sipp(&dir, &args, Duration::from_secs(40));
    assert_eq!(
        sipp_call_counts(&dir.join("stats.csv")),
        (1, 0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let took = started.elapsed();
    // config/announcement.wav lasts about 6 s.
    assert!(
        took > Duration::from_secs(5) && took < Duration::from_secs(15),
        "{took:?}"
    );
}
