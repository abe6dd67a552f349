//! A cluster behind Kamailio (Debian's, started here on 127.0.0.2 with the shipped
//! `deploy/kamailio/kamailio.cfg`) sharing one call log on PostgreSQL (Debian's, run by the
//! test as the `postgres` user): each node registers its signed-in agents' DIDs at Kamailio, so
//! a trunk's call through Kamailio reaches the node the agent is on, and follows the agent when
//! it signs in on another node; the calls API of either node lists every node's calls, each
//! naming its node. The dialer page in Chromium signs in on another node by itself when its
//! node dies, and a supervisor's page monitors a call on the node the call lives on.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::caller::Caller;
use common::page::{assert_page_receives, BrowserAgent};
use common::*;

const KAMAILIO: &str = "127.0.0.2:25800";
/// The test's trunk.
const TRUNK: &str = "127.0.0.1:25802";
/// Neither a node nor a trunk.
const STRANGER: &str = "127.0.0.1:25806";
/// The trunk's callers under load, from any port of this address.
const LOAD_IP: &str = "127.0.0.5";
/// The trunk's caller with audio (SIP here, RTP two ports up).
const AUDIO_CALLER_PORT: u16 = 25808;
const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const AGENT2_HZ: f64 = 1600.0;
/// An agent whose page (Chromium) outlives its node (token `pager-token`).
const PAGER_AGENT: &str = r#"
[[agent]]
id = "pager"
name = "Paged Agent"
token_sha256 = "2602a18cb7e9e9fad652a1f8372daac389eabe8c4fd2217593ace2a2aacdafa8"
dids = ["+15550000300"]
"#;

/// Kamailio and its worker processes, all stopped when dropped (killing only the main process
/// would leave the workers answering on its port).
struct Kamailio(std::process::Child);

impl Drop for Kamailio {
    fn drop(&mut self) {
        let group = -(self.0.id() as i32);
        // SAFETY: kill(2) with a process group id; no memory is touched.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn start_kamailio(dir: &Path, nodes: &[SocketAddr]) -> Kamailio {
    require_tool("kamailio");
    std::fs::create_dir_all(dir).expect("dir");
    let list: String = nodes.iter().map(|n| format!("1 sip:{n}\n")).collect();
    let list_path = dir.join("nodes.list");
    std::fs::write(&list_path, list).expect("dispatcher list");
    let (ip, port) = TRUNK.split_once(':').expect("trunk address");
    let trunks_path = dir.join("trunks.list");
    std::fs::write(
        &trunks_path,
        format!("1 {ip} 32 {port}\n1 {ip} 32 {AUDIO_CALLER_PORT}\n1 {LOAD_IP} 32 0\n"),
    )
    .expect("trunks list");
    let log = std::fs::File::create(dir.join("kamailio.log")).expect("log");
    let child = Command::new("kamailio")
        .process_group(0)
        .arg("-f")
        .arg(repo_root().join("deploy/kamailio/kamailio.cfg"))
        .args(["-DD", "-E", "-m", "64", "-M", "8"])
        .arg("-w")
        .arg(dir)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .args(["-l", &format!("udp:{KAMAILIO}")])
        .arg("-A")
        .arg(format!("DISPATCHER_LIST=\"{}\"", list_path.display()))
        .arg("-A")
        .arg(format!("TRUNKS_LIST=\"{}\"", trunks_path.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kamailio starts");
    let guard = Kamailio(child);
    // Up when it answers: an OPTIONS to an unknown user is relayed to a node or refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let options = raw_request("OPTIONS", &format!("sip:probe@{KAMAILIO}"), TRUNK, "", "");
    while sip_exchange(TRUNK, KAMAILIO.parse().unwrap(), &options).is_none() {
        assert!(
            Instant::now() < deadline,
            "kamailio did not answer: {}",
            std::fs::read_to_string(dir.join("kamailio.log")).unwrap_or_default()
        );
    }
    guard
}

/// Where browsers reach a node: its HTTP listener.
fn url_of(gw: &Gateway) -> String {
    format!("http://127.0.0.1:{}", gw.ports.http)
}

fn node(name: &str, block: u16, ip: &str, store_url: &str) -> Gateway {
    let http = Ports::block(block).http;
    let extra = format!(
        r#"
[[trunk]]
name = "kamailio"
inbound_from = ["127.0.0.2/32"]
outbound_proxy = "sip:{KAMAILIO}"
options_interval = 0
register_expires = 60
dial_plan = ["+1*"]
[cluster]
node = "{name}"
registrar = "kamailio"
lease = 3
{DEMO_AGENT}{DEMO2_AGENT}{SUPERVISOR_AGENT}{PAGER_AGENT}"#
    );
    Gateway::start_with_tables(
        &format!("cluster_{name}"),
        Ports::block(block),
        &extra,
        Tables {
            sip_ip: ip,
            http: &format!("public_url = \"http://127.0.0.1:{http}\""),
            store: &format!("backend = \"postgres\"\nurl = \"{store_url}\""),
            ..Tables::default()
        },
    )
}

/// The head of the node's answer to a CORS preflight from `origin` for a PUT.
fn preflight(gw: &Gateway, origin: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", gw.ports.http)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "OPTIONS /v1/calls/c_x/log HTTP/1.1\r\nHost: test\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(head, _)| head.to_lowercase())
}

/// Wait until the node's log says `line`.
fn wait_log(gw: &Gateway, line: &str, within: Duration) {
    wait_log_times(gw, line, 1, within);
}

/// Wait until the node's log has said `line` `times` times.
fn wait_log_times(gw: &Gateway, line: &str, times: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while gw.log_text().matches(line).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in {}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node's calls page (the newest 200 calls of the shared log).
fn calls_page(gw: &Gateway) -> Vec<serde_json::Value> {
    let (status, body) = gw
        .http("GET", "/v1/calls?limit=200", Some(ADMIN_TOKEN), None)
        .expect("calls API");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    page["calls"].as_array().cloned().unwrap_or_default()
}

/// One call as the node's calls API gives it, when it is in the log.
fn call_on(gw: &Gateway, id: &str) -> Option<serde_json::Value> {
    match gw.http("GET", &format!("/v1/calls/{id}"), Some(ADMIN_TOKEN), None) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The close code the node ends the agent's session with, waiting up to `within` for it.
fn close_code(socket: &mut AgentSocket, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        match next_message(socket) {
            Ok(_) => continue,
            Err(Some(code)) => return Some(code),
            // A read timeout: the close may still come.
            Err(None) if Instant::now() < deadline => continue,
            Err(None) => return None,
        }
    }
}

/// The trunk calls `did` through Kamailio; the INVITE's Via branch, Call-ID and From tag.
fn call_through_kamailio(trunk: &UdpSocket, did: &str) -> Vec<u8> {
    let offer = sdp_offer(25804, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
    let invite = raw_request(
        "INVITE",
        &format!("sip:{did}@{KAMAILIO}"),
        TRUNK,
        "Content-Type: application/sdp\r\n",
        &offer,
    );
    trunk
        .send_to(&invite, KAMAILIO)
        .expect("INVITE to kamailio");
    invite
}

/// CANCEL of `invite` (same branch, Call-ID, From and CSeq number).
fn cancel_of(invite: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(invite);
    let header = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    let uri = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default();
    format!(
        "CANCEL {uri} SIP/2.0\r\n{}\r\n{}\r\n{}\r\n{}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header("Via:"),
        header("From:"),
        header("To:"),
        header("Call-ID:"),
    )
    .into_bytes()
}

#[test]
fn calls_through_kamailio_reach_the_node_the_agent_is_signed_in_on() {
    let pg = common::postgres::Postgres::start("cluster", 25851);
    let mut a = node("a", 86, "127.0.0.3", &pg.url());
    let b = node("b", 87, "127.0.0.4", &pg.url());
    let nodes: [SocketAddr; 2] = [
        format!("127.0.0.3:{}", a.ports.sip).parse().unwrap(),
        format!("127.0.0.4:{}", b.ports.sip).parse().unwrap(),
    ];
    let kamailio_dir = scratch("cluster_kamailio");
    let _kamailio = start_kamailio(&kamailio_dir, &nodes);
    // A stranger can neither place itself at an agent's DID nor send a call in.
    let hijack = raw_request(
        "REGISTER",
        &format!("sip:{KAMAILIO}"),
        STRANGER,
        "Expires: 60\r\n",
        "",
    );
    let hijack = String::from_utf8(hijack)
        .unwrap()
        .replacen("To: <sip:", "To: <sip:+15550000100@", 1)
        .into_bytes();
    let answer = sip_exchange(STRANGER, KAMAILIO.parse().unwrap(), &hijack).expect("answered");
    assert_eq!(sip_status(&answer), 403, "{answer}");
    let intrusion = raw_request(
        "INVITE",
        &format!("sip:+15550000100@{KAMAILIO}"),
        STRANGER,
        "",
        "",
    );
    let answer = sip_exchange(STRANGER, KAMAILIO.parse().unwrap(), &intrusion).expect("answered");
    assert_eq!(sip_status(&answer), 403, "{answer}");
    let trunk = bind_udp(TRUNK);
    trunk
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    // Signed in on node A: its DID is registered there, and a call finds the agent on A.
    let mut on_a = connect_agent(&a, "?token=demo-token");
    assert_eq!(
        next_message(&mut on_a).expect("snapshot")["type"],
        "calls.snapshot"
    );
    wait_log(&a, "location registered", Duration::from_secs(10));
    let invite = call_through_kamailio(&trunk, "+15550000100");
    let incoming = next_of(&mut on_a, "call.incoming");
    assert_eq!(incoming["call"]["to"], "+15550000100", "{incoming}");
    trunk
        .send_to(&cancel_of(&invite), KAMAILIO)
        .expect("CANCEL");
    next_of(&mut on_a, "call.ended");
    let on_node_a = incoming["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();

    // The agent leaves A (its registration goes) and signs in on B: the next call finds B.
    drop(on_a);
    wait_log(&a, "location removed", Duration::from_secs(10));
    let mut on_b = connect_agent(&b, "?token=demo-token");
    assert_eq!(
        next_message(&mut on_b).expect("snapshot")["type"],
        "calls.snapshot"
    );
    wait_log(&b, "location registered", Duration::from_secs(10));
    let invite = call_through_kamailio(&trunk, "+15550000100");
    let incoming = next_of(&mut on_b, "call.incoming");
    assert_eq!(incoming["call"]["to"], "+15550000100", "{incoming}");
    trunk
        .send_to(&cancel_of(&invite), KAMAILIO)
        .expect("CANCEL");
    next_of(&mut on_b, "call.ended");
    let on_node_b = incoming["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();

    // One call log: either node's calls API lists both calls, each naming its node, ended.
    for gw in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let page = calls_page(gw);
            let node_of = |id: &str| {
                page.iter()
                    .find(|c| c["call_id"] == id && c["status"] == "ended")
                    .map(|c| c["node"].clone())
            };
            if node_of(&on_node_a) == Some("a".into()) && node_of(&on_node_b) == Some("b".into()) {
                break;
            }
            assert!(Instant::now() < deadline, "calls page: {page:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // A page signing in learns this node and the live ones, with where browsers reach them.
    let (a_url, b_url) = (url_of(&a), url_of(&b));
    let deadline = Instant::now() + Duration::from_secs(10);
    let live_nodes = loop {
        let mut page = connect_agent(&b, "");
        let ok = request(
            &mut page,
            serde_json::json!({"type": "auth", "token": "super-token"}),
        );
        assert_eq!(ok["node"], "b", "{ok}");
        let nodes = ok["nodes"].clone();
        if nodes.as_array().is_some_and(|n| n.len() == 2) {
            break nodes;
        }
        assert!(Instant::now() < deadline, "{ok}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        live_nodes,
        serde_json::json!([{"node": "a", "url": a_url}, {"node": "b", "url": b_url}])
    );
    // Each node lets the other's pages call its API (CORS), and nobody else's.
    let allowed = preflight(&b, &a_url);
    assert!(
        allowed.contains(&format!("access-control-allow-origin: {a_url}"))
            && allowed.contains("access-control-allow-headers: authorization, content-type"),
        "{allowed}"
    );
    let refused = preflight(&b, "http://evil.example.com");
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
    // A monitoring connection is a supervisor's only.
    let mut not_supervisor = connect_agent(&b, "?token=demo2-token&monitor=true");
    assert_eq!(
        close_code(&mut not_supervisor, Duration::from_secs(5)),
        Some(4403)
    );

    // One agent, one node: signing in on A while the agent is signed in on B ends the session
    // on B with 4409 (A claimed the agent in PostgreSQL and B heard of it), B takes its DID's
    // registration back, and the next call reaches A.
    let (mut again_on_a, browser) = common::browser::signed_in(&a, "demo-token", AGENT_HZ);
    // A second agent works on B.
    let (mut demo2_on_b, browser2) = common::browser::signed_in(&b, "demo2-token", AGENT2_HZ);
    wait_log_times(&b, "location registered", 2, Duration::from_secs(10));
    assert_eq!(
        close_code(&mut on_b, Duration::from_secs(15)),
        Some(4409),
        "node b's log:\n{}",
        b.log_text()
    );
    wait_log(&b, "location removed", Duration::from_secs(10));
    wait_log_times(&a, "location registered", 2, Duration::from_secs(10));
    let invite = call_through_kamailio(&trunk, "+15550000100");
    let incoming = next_of(&mut again_on_a, "call.incoming");
    assert_eq!(incoming["call"]["to"], "+15550000100", "{incoming}");
    trunk
        .send_to(&cancel_of(&invite), KAMAILIO)
        .expect("CANCEL");
    next_of(&mut again_on_a, "call.ended");

    // Audio both ways through the cluster: the trunk's caller reaches the agent's browser on A
    // through Kamailio, each hears the other's tone, and the caller's BYE follows the route
    // Kamailio recorded.
    let mut caller = Caller::dial_via(
        KAMAILIO.parse().unwrap(),
        "+15550000100",
        "+15551230009",
        "127.0.0.1",
        AUDIO_CALLER_PORT,
    );
    let audio_call = common::caller::answer_incoming(&mut again_on_a, &mut caller);
    assert!(
        caller.route.is_some(),
        "Kamailio stays on the dialog's path"
    );
    caller.play_tone(CALLER_HZ);
    std::thread::sleep(Duration::from_millis(2000));
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    let caller_hears = caller.heard_between(from, to);
    let agent_hears = browser.heard_between(from, to);
    assert!(
        tone_amplitude(&caller_hears, AGENT_HZ) > 400.0,
        "the caller hears the agent: {:.0}",
        tone_amplitude(&caller_hears, AGENT_HZ)
    );
    assert!(
        tone_amplitude(&agent_hears, CALLER_HZ) > 400.0,
        "the agent hears the caller: {:.0}",
        tone_amplitude(&agent_hears, CALLER_HZ)
    );
    // A supervisor signed in on B monitors that call, which lives on A: the calls API names
    // its node and where the node is reached, and the page (Chromium) opens a monitoring
    // connection and a peer connection there, hears the call, barges and stops.
    let listed = call_on(&b, &audio_call).expect("the call in B's calls API");
    assert_eq!(
        (listed["node"].as_str(), listed["node_url"].as_str()),
        (Some("a"), Some(a_url.as_str())),
        "{listed}"
    );
    let supervisor_dir = scratch("cluster_supervisor_page");
    let supervisor = BrowserAgent::start(
        &b,
        &supervisor_dir,
        "supervise",
        &[("CALLGATE_TOKEN", "super-token"), ("TALK_MS", "300")],
    );
    supervisor.expect("READY", Duration::from_secs(70), &supervisor_dir, &b);
    supervisor.expect("MONITORING", Duration::from_secs(30), &supervisor_dir, &a);
    let heard = supervisor.expect("RESULT", Duration::from_secs(30), &supervisor_dir, &a);
    assert_page_receives(&heard, "the supervisor on B receives the call on A");
    supervisor.expect("STOPPED", Duration::from_secs(30), &supervisor_dir, &a);
    supervisor.expect("CLOSED", Duration::from_secs(30), &supervisor_dir, &b);
    let a_log = a.log_text();
    assert!(
        a_log.contains("agent connected agent=super") && a_log.contains("kind=Monitor"),
        "A took a monitoring connection: {a_log}"
    );
    assert!(a_log.contains("supervisor joined the call"), "{a_log}");
    // The call went on undisturbed.
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    assert!(tone_amplitude(&caller.heard_between(from, to), AGENT_HZ) > 400.0);

    // A blind transfer from the agent on A to the agent on B: A dials demo2's DID through
    // Kamailio, B rings demo2, and once answered the caller and demo2 hear each other (the
    // audio relayed by A), demo out of the call.
    let transfer = request(
        &mut again_on_a,
        serde_json::json!({"type": "call.transfer", "call_id": audio_call, "to": "agent:demo2"}),
    );
    assert_eq!(transfer["type"], "ok", "{transfer}");
    next_of(&mut again_on_a, "call.ended");
    let transferred = next_of(&mut demo2_on_b, "call.incoming");
    let on_b = transferred["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    let answered = request(
        &mut demo2_on_b,
        serde_json::json!({"type": "call.answer", "call_id": on_b}),
    );
    assert_eq!(answered["type"], "ok", "{answered}");
    std::thread::sleep(Duration::from_millis(2000));
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    let caller_hears = caller.heard_between(from, to);
    let demo2_hears = browser2.heard_between(from, to);
    assert!(
        tone_amplitude(&caller_hears, AGENT2_HZ) > 400.0,
        "the caller hears the agent on B: {:.0}",
        tone_amplitude(&caller_hears, AGENT2_HZ)
    );
    assert!(
        tone_amplitude(&caller_hears, AGENT_HZ) < 150.0,
        "and no longer the agent on A"
    );
    assert!(
        tone_amplitude(&demo2_hears, CALLER_HZ) > 400.0,
        "the agent on B hears the caller: {:.0}",
        tone_amplitude(&demo2_hears, CALLER_HZ)
    );
    caller.hang_up();
    let ended = next_of(&mut demo2_on_b, "call.ended");
    assert_eq!(ended["call"]["call_id"], on_b.as_str(), "{ended}");
    drop(browser2);

    // An agent works in the dialer page (Chromium) signed in on A, for what A's death does to
    // it below.
    let pager_dir = scratch("cluster_failover_page");
    let pager = BrowserAgent::start(
        &a,
        &pager_dir,
        "failover",
        &[
            ("CALLGATE_TOKEN", "pager-token"),
            ("HANGUP", "1"),
            ("TIMEOUT_MS", "240000"),
        ],
    );
    pager.expect("READY", Duration::from_secs(70), &pager_dir, &a);
    assert_eq!(
        pager.expect("NODE", Duration::from_secs(10), &pager_dir, &a),
        "NODE a"
    );
    wait_log(
        &a,
        "location registered did=+15550000300",
        Duration::from_secs(10),
    );

    // 50 calls at once to the echo route through Kamailio, which spreads them over both nodes:
    // each caller hears its own tone back, and the shared log has calls of both nodes.
    let mut callers: Vec<Caller> = (0..50u16)
        .map(|i| {
            Caller::dial_via(
                KAMAILIO.parse().unwrap(),
                "echo",
                &format!("+1555123{:04}", 100 + i),
                LOAD_IP,
                26000 + i * 4,
            )
        })
        .collect();
    for caller in &mut callers {
        assert_eq!(caller.final_response(Duration::from_secs(10)), 200);
        assert!(caller.route.is_some());
        caller.play_tone(CALLER_HZ);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    for caller in &callers {
        let echoed = tone_amplitude(&caller.heard_between(from, to), CALLER_HZ);
        assert!(
            echoed > 400.0,
            "{} hears its tone back: {echoed:.0}",
            caller.number
        );
    }
    let echo_calls_of = |node: &str| {
        calls_page(&b)
            .iter()
            .filter(|c| c["to"] == "echo" && c["node"] == node && c["status"] == "active")
            .count()
    };
    let (on_a, on_b) = (echo_calls_of("a"), echo_calls_of("b"));
    assert_eq!(
        on_a + on_b,
        50,
        "live in the shared log: {on_a} on a, {on_b} on b"
    );
    assert!(on_a >= 10 && on_b >= 10, "spread: {on_a} on a, {on_b} on b");
    // 20 of them stay for what follows; the rest hang up.
    for caller in &callers[20..] {
        caller.hang_up();
    }
    callers.truncate(20);
    let on_node = |caller: &Caller, ip: &str| {
        caller
            .target
            .as_deref()
            .is_some_and(|t| t.contains(&format!("@{ip}:")))
    };
    let kept_on_a = callers.iter().filter(|c| on_node(c, "127.0.0.3")).count();
    let kept_on_b = callers.iter().filter(|c| on_node(c, "127.0.0.4")).count();
    assert_eq!(kept_on_a + kept_on_b, 20, "each answered by a node");

    // A node's loss: A dies (SIGKILL) during 20 calls and with a call ringing for its agent.
    // B's calls keep their audio; once A's lease (3 s here) lapses, B ends A's live calls in
    // the shared log as failed; a new call for A's agent gets 480 at once while the agent is
    // nowhere, and reaches them on B once they sign in there.
    call_through_kamailio(&trunk, "+15550000100");
    let ringing = next_of(&mut again_on_a, "call.incoming");
    let orphan = ringing["call"]["call_id"].as_str().expect("id").to_string();
    // Once it is in the shared log (a call whose first write had not reached PostgreSQL when
    // its node died is not in the log at all).
    let deadline = Instant::now() + Duration::from_secs(10);
    while call_on(&b, &orphan).is_none() {
        assert!(Instant::now() < deadline, "{orphan} never reached the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.crash();
    let killed = Instant::now();
    // The page saw its connection drop and signed in on B by itself, with its audio up again,
    // and calls B's API from now on.
    let moved = pager.expect("MOVED", Duration::from_secs(30), &pager_dir, &b);
    let took = killed.elapsed();
    eprintln!("the page signed in again on B, audio up, {took:?} after A was killed");
    assert_eq!(moved, format!("MOVED b {b_url}"));
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Until Kamailio takes A out, the round robin still picks it for every other new call:
    // that call goes to the next node when A does not answer in time (failure_route
    // NEXT_NODE), so of two echo calls in a row both are answered, by B.
    let kamailio_log =
        || std::fs::read_to_string(kamailio_dir.join("kamailio.log")).unwrap_or_default();
    let to_a = format!("INVITE sip:echo@{KAMAILIO} to node sip:{}", nodes[0]);
    let tried_a = kamailio_log().matches(&to_a).count();
    for (i, port) in [26330u16, 26334].into_iter().enumerate() {
        let mut echo = Caller::dial_via(
            KAMAILIO.parse().unwrap(),
            "echo",
            &format!("+155512399{:02}", 80 + i),
            LOAD_IP,
            port,
        );
        assert_eq!(echo.final_response(Duration::from_secs(10)), 200);
        assert!(on_node(&echo, "127.0.0.4"), "answered by B");
        echo.hang_up();
    }
    assert_eq!(
        kamailio_log().matches(&to_a).count(),
        tried_a + 1,
        "one of them was sent to A first"
    );
    // Kamailio's dispatcher takes A out once its OPTIONS probes go unanswered.
    let down = format!("dispatcher: node sip:{} down", nodes[0]);
    let deadline = killed + Duration::from_secs(15);
    while !kamailio_log().contains(&down) {
        assert!(Instant::now() < deadline, "Kamailio never marked A down");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = killed.elapsed();
    eprintln!("Kamailio's dispatcher marked A down {took:?} after it was killed");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(call) = call_on(&b, &orphan).filter(|c| c["status"] == "ended") {
            assert_eq!(call["end_reason"], "failed", "{call}");
            assert_eq!(call["node"], "a", "{call}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{orphan} not ended; node b's log:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_log(&b, "a node's lease lapsed", Duration::from_secs(1));
    let failed_on_a = calls_page(&b)
        .iter()
        .filter(|c| c["to"] == "echo" && c["node"] == "a" && c["end_reason"] == "failed")
        .count();
    assert_eq!(failed_on_a, kept_on_a, "A's live echo calls end as failed");

    // B's callers still hear their own tone.
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    for caller in callers.iter().filter(|c| on_node(c, "127.0.0.4")) {
        let echoed = tone_amplitude(&caller.heard_between(from, to), CALLER_HZ);
        assert!(
            echoed > 400.0,
            "{} on B after A died: {echoed:.0}",
            caller.number
        );
    }

    // A's agent is nowhere now: Kamailio still has A's registration, A does not answer, and
    // the caller hears 480 (not a 30 s wait).
    let mut late = Caller::dial_via(
        KAMAILIO.parse().unwrap(),
        "+15550000100",
        "+15551239998",
        LOAD_IP,
        26300,
    );
    assert_eq!(late.final_response(Duration::from_secs(10)), 480);
    // The agent signs in on B (their page reconnecting there): the next call reaches them.
    let mut moved = connect_agent(&b, "?token=demo-token");
    next_of(&mut moved, "calls.snapshot");
    // (the agent's DID was registered from B once before, when they first moved there)
    wait_log_times(
        &b,
        "location registered did=+15550000100",
        2,
        Duration::from_secs(10),
    );
    let _reached = Caller::dial_via(
        KAMAILIO.parse().unwrap(),
        "+15550000100",
        "+15551239999",
        LOAD_IP,
        26310,
    );
    let incoming = next_of(&mut moved, "call.incoming");
    assert_eq!(incoming["call"]["to"], "+15550000100", "{incoming}");

    // The page that moved by itself gets its DID's call on B and talks: each side hears the
    // other. Its hang-up's call log is saved through B's API from A's origin.
    wait_log(
        &b,
        "location registered did=+15550000300",
        Duration::from_secs(10),
    );
    let mut paged = Caller::dial_via(
        KAMAILIO.parse().unwrap(),
        "+15550000300",
        "+15551239997",
        LOAD_IP,
        26320,
    );
    pager.expect("ANSWERED", Duration::from_secs(30), &pager_dir, &b);
    assert_eq!(paged.final_response(Duration::from_secs(10)), 200);
    paged.play_tone(CALLER_HZ);
    let heard = pager.expect("RESULT", Duration::from_secs(30), &pager_dir, &b);
    assert_page_receives(&heard, "the page hears the caller on B");
    let (to, from) = (Instant::now(), Instant::now() - Duration::from_secs(1));
    let page_tone = tone_amplitude(&paged.heard_between(from, to), 1000.0);
    assert!(
        page_tone > 400.0,
        "the caller hears the page: {page_tone:.0}"
    );
    pager.expect("HUNG_UP", Duration::from_secs(30), &pager_dir, &b);
    pager.expect("LOGGED", Duration::from_secs(30), &pager_dir, &b);
    let logged = calls_page(&b)
        .into_iter()
        .find(|c| c["to"] == "+15550000300" && c["node"] == "b")
        .expect("the paged call in the log");
    assert_eq!(
        logged["log"]["tags"],
        serde_json::json!(["interested"]),
        "{logged}"
    );
    assert_eq!(
        logged["log"]["comments"][0]["text"], "after failover",
        "{logged}"
    );

    for caller in &callers {
        caller.hang_up();
    }
    drop(pager);
    drop((a, b));
    drop(pg);
}
