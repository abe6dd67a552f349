//! The call log on SQLite through the HTTP API: calls with their segments, who may see what,
//! bad requests naming the field, and a `kill -9` in the middle of calls that leaves every
//! call ended (the live ones as failed) after the restart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const ADMIN: &str = "admin-token";

fn get(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = gw.http("GET", path, token, None).expect("HTTP");
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn sipp_echo(
    gw: &Gateway,
    scenario_file: &str,
    calls: u32,
    local_port: u16,
) -> std::process::Child {
    let dir = gw.dir.clone();
    make_ulaw_tone(&dir.join("tone.ul"), 1.0, 440);
    let mut args = single_call_sipp_args(
        &dir,
        scenario_file,
        Some((gw.ports.sip, "echo")),
        local_port,
        local_port + 10,
    );
    set_sipp_arg(&mut args, "-m", calls);
    set_sipp_arg(&mut args, "-l", calls);
    set_sipp_arg(&mut args, "-r", 20);
    spawn_sipp(&dir, &args)
}

#[test]
fn calls_are_logged_with_segments_and_survive_a_crash() {
    let ports = Ports::block(53);
    let mut gw = Gateway::start("call_log", ports, &(default_trunk(27992) + DEMO_AGENT));

    // One finished call to the echo route.
    let out = wait_child(
        sipp_echo(&gw, "uac_echo.xml", 1, 27600),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    gw.wait_idle(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    let finished = loop {
        let (status, body) = get(&gw, "/v1/calls?status=ended", Some(ADMIN));
        assert_eq!(status, 200, "{body}");
        if let Some(c) = body["calls"].as_array().and_then(|c| c.first()).cloned() {
            break c;
        }
        assert!(Instant::now() < deadline, "the call never reached the log");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(finished["to"], "echo");
    assert_eq!(finished["end_reason"], "caller_hangup", "{finished}");
    let id = finished["call_id"].as_str().expect("id").to_string();
    let (status, one) = get(&gw, &format!("/v1/calls/{id}"), Some(ADMIN));
    assert_eq!(status, 200);
    let segments = one["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 1, "{one}");
    assert_eq!(segments[0]["status"], "active");
    assert!(segments[0]["to"].is_string(), "{one}");

    // Who may see what, and bad requests naming the field.
    assert_eq!(get(&gw, "/v1/calls", None).0, 401);
    assert_eq!(get(&gw, "/v1/calls", Some("nope")).0, 401);
    let (status, mine) = get(&gw, "/v1/calls", Some("demo-token"));
    assert_eq!(
        (status, mine["calls"].as_array().map(Vec::len)),
        (200, Some(0)),
        "agents see only their calls"
    );
    assert_eq!(
        get(&gw, "/v1/calls?agent=someone", Some("demo-token")).0,
        403
    );
    assert_eq!(
        get(&gw, &format!("/v1/calls/{id}"), Some("demo-token")).0,
        403
    );
    assert_eq!(get(&gw, "/v1/calls/c_nope", Some(ADMIN)).0, 404);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("status=bogus", "status"),
        ("before=zz", "before"),
    ] {
        let (status, body) = get(&gw, &format!("/v1/calls?{query}"), Some(ADMIN));
        assert_eq!(status, 400, "{query}");
        assert!(
            body["message"].as_str().unwrap_or("").starts_with(field),
            "{query}: {body}"
        );
    }

    // The log: written whole or not at all, fields named on 400, comments with authors.
    let put = |token: &str, body: &str| {
        let (status, text) = gw
            .http(
                "PUT",
                &format!("/v1/calls/{id}/log"),
                Some(token),
                Some(body),
            )
            .expect("HTTP");
        (
            status,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };
    let (status, log) = put(
        ADMIN,
        r#"{"assignee":"bob","tags":["interested"],"disposition":"callback","comment":"call back Tuesday"}"#,
    );
    assert_eq!(status, 200, "{log}");
    assert_eq!(
        (log["assignee"].as_str(), log["disposition"].as_str()),
        (Some("bob"), Some("callback"))
    );
    assert_eq!(log["comments"][0]["author"], "admin");
    for (body, field) in [
        (r#"{"assignee":"carol","tags":"x"}"#, "tags"),
        (r#"{"assignee":"carol","tags":[""]}"#, "tags"),
        (r#"{"assignee":7}"#, "assignee"),
        (r#"{"mood":"happy"}"#, "mood"),
        (r#"not json"#, "body"),
    ] {
        let (status, err) = put(ADMIN, body);
        assert_eq!(status, 400, "{body}");
        assert!(
            err["message"].as_str().unwrap_or("").starts_with(field),
            "{body}: {err}"
        );
    }
    assert_eq!(
        put("demo-token", r#"{"tags":[]}"#).0,
        403,
        "not the agent's call"
    );
    assert_eq!(put("nope", r#"{"tags":[]}"#).0, 401);
    let (status, _) = gw
        .http(
            "PUT",
            "/v1/calls/c_nope/log",
            Some(ADMIN),
            Some(r#"{"tags":[]}"#),
        )
        .expect("HTTP");
    assert_eq!(status, 404);
    let (status, _) = gw
        .http(
            "POST",
            &format!("/v1/calls/{id}/log/comments"),
            Some(ADMIN),
            Some(r#"{"text":"left a voicemail"}"#),
        )
        .expect("HTTP");
    assert_eq!(status, 200);
    let (_, one) = get(&gw, &format!("/v1/calls/{id}"), Some(ADMIN));
    assert_eq!(
        one["log"]["assignee"], "bob",
        "the failed edits wrote nothing: {one}"
    );
    assert_eq!(one["log"]["tags"], serde_json::json!(["interested"]));
    assert_eq!(one["log"]["comments"].as_array().map(Vec::len), Some(2));

    // Twenty calls up, then kill -9: after the restart they are ended (failed), the earlier
    // call and its log are intact, and paging walks all twenty-one.
    let callers = sipp_echo(&gw, "uac_wait_bye.xml", 20, 27700);
    let mut callers = KillOnDrop::new(callers);
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.live_calls() < 20 {
        assert!(
            Instant::now() < deadline,
            "calls never came up: {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    gw.crash_and_restart();
    drop(callers.take());
    let (status, body) = get(&gw, "/v1/calls?limit=15", Some(ADMIN));
    assert_eq!(status, 200);
    let first = body["calls"].as_array().expect("calls").clone();
    let next = body["next"].as_str().expect("a next cursor").to_string();
    let (_, body) = get(
        &gw,
        &format!("/v1/calls?limit=15&before={next}"),
        Some(ADMIN),
    );
    let second = body["calls"].as_array().expect("calls").clone();
    let all: Vec<&Value> = first.iter().chain(second.iter()).collect();
    assert_eq!(all.len(), 21, "{first:?} {second:?}");
    let failed = all
        .iter()
        .filter(|c| c["end_reason"] == "failed" && c["status"] == "ended")
        .count();
    assert_eq!(failed, 20, "{all:?}");
    assert!(all
        .iter()
        .any(|c| c["call_id"] == id.as_str() && c["end_reason"] == "caller_hangup"));
}
