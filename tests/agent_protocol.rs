//! The agent WebSocket protocol over the wire (`spec/agent-protocol.md`): authentication,
//! request/answer with `req`, errors that keep the connection, replacement by a second
//! connection, and what happens to calls when the socket closes.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn signed_in(gw: &Gateway, token: &str) -> AgentSocket {
    let mut socket = connect_agent(gw, &format!("?token={token}"));
    let snapshot = next_message(&mut socket).expect("snapshot");
    assert_eq!(snapshot["type"], "calls.snapshot", "{snapshot}");
    socket
}

fn invite_to_did(local: &UdpSocket, gw: &Gateway, did: &str) -> String {
    let me = local.local_addr().expect("addr").to_string();
    let uri = format!("sip:{did}@127.0.0.1:{}", gw.ports.sip);
    let offer = sdp_offer(26900, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
    let invite = String::from_utf8(raw_request(
        "INVITE",
        &uri,
        &me,
        "Content-Type: application/sdp\r\n",
        &offer,
    ))
    .expect("utf8");
    local
        .send_to(invite.as_bytes(), gw.sip_addr())
        .expect("send");
    invite
}

/// Final or provisional responses until one with a status in `want` arrives.
fn await_status(local: &UdpSocket, want: &[u16]) -> String {
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok((n, _)) = local.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if want.contains(&sip_status(&text)) {
            return text;
        }
    }
    panic!("no response with status {want:?}");
}

#[test]
fn authentication_and_errors_that_keep_the_connection() {
    let ports = Ports::block(43);
    let gw = Gateway::start(
        "agent_protocol",
        ports,
        &(default_trunk(26990) + DEMO_AGENT + DEMO2_AGENT),
    );

    // A bad token in the URL: closed with 4401, nothing else.
    let mut bad = connect_agent(&gw, "?token=wrong");
    assert_eq!(next_message(&mut bad).err(), Some(Some(4401)));

    // Token as the first message, answered with ok for its req, then the snapshot.
    let mut socket = connect_agent(&gw, "");
    send_message(
        &mut socket,
        json!({"type": "auth", "token": "demo-token", "req": "a1"}),
    );
    let ok = next_message(&mut socket).expect("ok");
    assert_eq!(
        (ok["type"].as_str(), ok["req"].as_str()),
        (Some("ok"), Some("a1")),
        "{ok}"
    );
    assert_eq!(next_of(&mut socket, "calls.snapshot")["calls"], json!([]));

    // Malformed JSON, unknown type, missing and wrong fields: errors, and the socket stays.
    socket
        .send(Message::Text("{not json".into()))
        .expect("send");
    let e = next_of(&mut socket, "error");
    assert_eq!(e["code"], "bad_request", "{e}");
    send_message(&mut socket, json!({"type": "call.frobnicate", "req": "r2"}));
    let e = next_of(&mut socket, "error");
    assert_eq!(
        (e["code"].as_str(), e["req"].as_str()),
        (Some("bad_request"), Some("r2"))
    );
    send_message(&mut socket, json!({"type": "call.answer", "req": "r3"}));
    let e = next_of(&mut socket, "error");
    assert!(
        e["message"].as_str().unwrap_or("").contains("call_id"),
        "{e}"
    );
    send_message(
        &mut socket,
        json!({"type": "call.answer", "call_id": 7, "req": "r4"}),
    );
    let e = next_of(&mut socket, "error");
    assert!(
        e["message"].as_str().unwrap_or("").contains("call_id"),
        "{e}"
    );
    send_message(
        &mut socket,
        json!({"type": "call.answer", "call_id": "c_nope", "req": "r5"}),
    );
    let e = next_of(&mut socket, "error");
    assert_eq!(e["code"], "not_found", "{e}");
    send_message(
        &mut socket,
        json!({"type": "call.dial", "to": "+445551234567", "req": "r6"}),
    );
    let e = next_of(&mut socket, "error");
    assert_eq!(e["code"], "dial_plan_denied", "{e}");
    send_message(
        &mut socket,
        json!({"type": "call.dtmf", "call_id": "c_nope", "digits": "12x", "req": "r7"}),
    );
    let e = next_of(&mut socket, "error");
    assert_eq!(e["code"], "bad_request", "{e}");
    send_message(
        &mut socket,
        json!({"type": "webrtc.offer", "sdp": "v=0 nonsense", "req": "r8"}),
    );
    let e = next_of(&mut socket, "error");
    assert_eq!(e["code"], "bad_request", "{e}");
    send_message(&mut socket, json!({"type": "ping", "req": "r9"}));
    let pong = next_of(&mut socket, "pong");
    assert_eq!(pong["req"], "r9");
    send_message(&mut socket, json!({"type": "calls.list", "req": "r10"}));
    let snapshot = next_of(&mut socket, "calls.snapshot");
    assert_eq!(snapshot["req"], "r10");

    // The agents list: who is connected; an agent sees itself only.
    let (status, body) = gw
        .http("GET", "/v1/agents", Some("admin-token"), None)
        .expect("HTTP");
    assert_eq!(status, 200, "{body}");
    let agents: Value = serde_json::from_str(&body).expect("JSON");
    let connected = |id: &str| {
        agents["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["agent_id"] == id))
            .map(|x| x["connected"].clone())
    };
    assert_eq!(connected("demo"), Some(json!(true)), "{body}");
    assert_eq!(connected("demo2"), Some(json!(false)), "{body}");
    let (status, body) = gw
        .http("GET", "/v1/agents", Some("demo-token"), None)
        .expect("HTTP");
    assert_eq!(status, 200);
    let mine: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(mine["agents"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(
        gw.http("GET", "/v1/agents", None, None).expect("HTTP").0,
        401
    );

    // No auth message within 5 s: 4401.
    let mut silent = connect_agent(&gw, "");
    let started = Instant::now();
    assert_eq!(next_message(&mut silent).err(), Some(Some(4401)));
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// Before it has authenticated a connection may send 4 KiB; after, messages up to 64 KiB.
#[test]
fn a_connection_sends_little_before_it_authenticates() {
    let ports = Ports::block(71);
    let gw = Gateway::start(
        "pre_auth_budget",
        ports,
        &(default_trunk(26980) + DEMO_AGENT),
    );
    let padding = "x".repeat(5000);

    // The right token in an auth message padded past the budget is never read: 4401.
    let mut padded = connect_agent(&gw, "");
    send_message(
        &mut padded,
        json!({"type": "auth", "token": "demo-token", "pad": padding}),
    );
    assert_eq!(next_message(&mut padded).err(), Some(Some(4401)));

    // A stranger announcing a 60 KiB frame and sending 8 KiB of it is closed once the budget
    // is spent, not left holding it until the 5 s auth deadline.
    let mut stranger = connect_agent(&gw, "");
    let tungstenite::stream::MaybeTlsStream::Plain(raw) = stranger.get_mut() else {
        panic!("plain stream");
    };
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&60_000u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(b'a' ^ 1, 8000));
    let sent = Instant::now();
    let _ = std::io::Write::write_all(raw, &frame);
    raw.set_read_timeout(Some(Duration::from_secs(4)))
        .expect("timeout");
    let mut closed = false;
    let mut scratch = [0u8; 4096];
    while sent.elapsed() < Duration::from_secs(4) {
        match std::io::Read::read(raw, &mut scratch) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the connection stayed open {:?} after 8 KiB",
        sent.elapsed()
    );

    // Authenticated, the same padding is an ordinary message, and a large one sent right
    // behind the auth message (before its answer) is read whole.
    let mut socket = connect_agent(&gw, "");
    send_message(
        &mut socket,
        json!({"type": "auth", "token": "demo-token", "req": "a"}),
    );
    send_message(
        &mut socket,
        json!({"type": "calls.list", "req": "b", "pad": "y".repeat(30_000)}),
    );
    let answer = next_message(&mut socket).expect("auth answer");
    assert_eq!(answer["type"], "ok", "{answer}");
    assert_eq!(answer["req"], "a", "{answer}");
    let listed = next_of(&mut socket, "calls.snapshot");
    let listed = if listed.get("req").is_some() {
        listed
    } else {
        next_of(&mut socket, "calls.snapshot")
    };
    assert_eq!(listed["req"], "b", "{listed}");
    let answer = request(&mut socket, json!({"type": "ping", "pad": padding}));
    assert_ne!(answer["type"], "error", "{answer}");
}

#[test]
fn a_second_connection_replaces_the_first_and_inherits_its_calls() {
    let ports = Ports::block(44);
    let gw = Gateway::start(
        "agent_replace",
        ports,
        &(default_trunk(26991) + DEMO_AGENT + DEMO2_AGENT),
    );
    let mut first = signed_in(&gw, "demo-token");
    let local = sip_socket(26810, Duration::from_millis(500));
    invite_to_did(&local, &gw, "+15550000100");
    await_status(&local, &[180]);
    let incoming = next_of(&mut first, "call.incoming");
    let call_id = incoming["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string();
    assert_eq!(incoming["call"]["status"], "ringing");
    assert_eq!(
        incoming["call"]["prospect"]["number"], "tester",
        "{incoming}"
    );
    assert_eq!(incoming["call"]["direction"], "inbound");

    let mut second = connect_agent(&gw, "?token=demo-token");
    let snapshot = next_message(&mut second).expect("snapshot");
    assert_eq!(
        snapshot["calls"][0]["call_id"],
        call_id.as_str(),
        "{snapshot}"
    );
    assert_eq!(next_message(&mut first).err(), Some(Some(4409)));
    // The call still rings for the new connection; declining it sends 486 to the caller.
    send_message(
        &mut second,
        json!({"type": "call.decline", "call_id": call_id, "req": "d"}),
    );
    let ok = next_of(&mut second, "ok");
    assert_eq!(ok["req"], "d");
    let ended = next_of(&mut second, "call.ended");
    assert_eq!(ended["call"]["end_reason"], "declined", "{ended}");
    await_status(&local, &[486]);
}

#[test]
fn closing_the_socket_rejects_ringing_calls_and_nobody_connected_means_480() {
    let ports = Ports::block(45);
    let gw = Gateway::start(
        "agent_close",
        ports,
        &(default_trunk(26992) + DEMO_AGENT + DEMO2_AGENT),
    );
    let local = sip_socket(26820, Duration::from_millis(500));
    // demo2 is not signed in: its DID answers 480 at once.
    invite_to_did(&local, &gw, "+15550000200");
    await_status(&local, &[480]);

    let mut socket = signed_in(&gw, "demo-token");
    invite_to_did(&local, &gw, "+15550000100");
    await_status(&local, &[180]);
    next_of(&mut socket, "call.incoming");
    socket.close(None).expect("close");
    let _ = socket.flush();
    drop(socket);
    await_status(&local, &[480]);
    // The next connection sees the call as ended by the disconnect.
    let mut again = connect_agent(&gw, "?token=demo-token");
    let snapshot = next_message(&mut again).expect("snapshot");
    assert_eq!(snapshot["calls"][0]["status"], "ended", "{snapshot}");
    assert_eq!(
        snapshot["calls"][0]["end_reason"], "agent_disconnected",
        "{snapshot}"
    );
}

/// With a certificate and key the HTTP listener speaks HTTPS (and so WSS): the dialer page
/// and the API answer over TLS, plain HTTP does not.
#[test]
fn https_with_a_configured_certificate() {
    require_tool("openssl");
    require_tool("curl");
    let ports = Ports::block(46);
    let dir = scratch("agent_tls_keys");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let http_extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    );
    let gw = Gateway::spawn(
        "agent_tls",
        ports,
        &(default_trunk(26993) + DEMO_AGENT + DEMO2_AGENT),
        &http_extra,
    );
    let curl = |url: &str| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "3", "--cacert"])
            .arg(&cert)
            .arg(url)
            .output()
            .expect("curl runs")
    };
    let https = format!("https://127.0.0.1:{}", ports.http);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(&format!("{https}/healthz"));
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok") {
            break;
        }
        assert!(Instant::now() < deadline, "no HTTPS: {}", gw.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let page = curl(&format!("{https}/"));
    assert!(String::from_utf8_lossy(&page.stdout).contains("callgate dialer"));
    let plain = curl(&format!("http://127.0.0.1:{}/healthz", ports.http));
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"ok\""));

    // A key file that cannot be read stops the gateway at startup, naming the key.
    let bad = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        dir.join("missing.pem").display()
    );
    let mut broken = Gateway::spawn("agent_tls_bad", Ports::block(47), "", &bad);
    let status = broken.child.wait().expect("exits");
    assert!(!status.success());
    assert!(
        broken.log_text().contains("http.tls_key"),
        "{}",
        broken.log_text()
    );
}

/// A client that stops answering pings (a dead network, a frozen tab) is dropped after the
/// 15 s ping timeout, and its ringing call is rejected like on any other close.
#[test]
fn a_silent_client_times_out_and_its_calls_end() {
    let ports = Ports::block(49);
    let gw = Gateway::start(
        "agent_ping_timeout",
        ports,
        &(default_trunk(26995) + DEMO_AGENT + DEMO2_AGENT),
    );
    let local = sip_socket(26830, Duration::from_millis(500));
    let mut socket = signed_in(&gw, "demo-token");
    invite_to_did(&local, &gw, "+15550000100");
    await_status(&local, &[180]);
    next_of(&mut socket, "call.incoming");
    // Not reading means not answering the server's pings.
    let silent_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut buf = vec![0u8; 65536];
    let rejected = loop {
        assert!(Instant::now() < deadline, "no 480 after the ping timeout");
        let Ok((n, _)) = local.recv_from(&mut buf) else {
            continue;
        };
        if String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 480") {
            break silent_since.elapsed();
        }
    };
    assert!(
        rejected >= Duration::from_secs(14),
        "dropped after {rejected:?}, before the 15 s timeout"
    );
    drop(socket);
}
