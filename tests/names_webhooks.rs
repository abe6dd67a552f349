//! Names and webhooks against the real binary: the contacts API, a name from `call.dial`,
//! from the directory and from a CRM lookup served by the test (and a lookup that hangs,
//! which costs the call no more than its timeout); webhook events of calls through hold,
//! swap and end, signed and in order per call, through a receiver outage and a `kill -9`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::caller::{Callee, Caller};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "test-secret-0123456789";

/// What the test's HTTP peer answers.
#[derive(Clone)]
enum Answer {
    Json(u16, Value),
    /// Never answers (the connection stays open until the test ends).
    Hang,
}

/// How the peer answers a path.
type Route = Box<dyn Fn(&str) -> Answer + Send>;

/// One request the peer got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A small HTTP server in the test: answers each request by `route(path)` after `delay`, and
/// keeps every request it got.
#[derive(Clone)]
struct Peer {
    got: Arc<Mutex<Vec<Received>>>,
    route: Arc<Mutex<Route>>,
    delay: Arc<Mutex<Duration>>,
}

impl Peer {
    fn start(port: u16) -> Peer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("peer binds");
        let peer = Peer {
            got: Arc::default(),
            route: Arc::new(Mutex::new(Box::new(|_| Answer::Json(200, json!({}))))),
            delay: Arc::default(),
        };
        let server = peer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || server.serve(stream));
            }
        });
        peer
    }

    fn answer_with(&self, route: impl Fn(&str) -> Answer + Send + 'static) {
        *self.route.lock().expect("route") = Box::new(route);
    }

    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while data.len() < head_end + length {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
        let answer = (self.route.lock().expect("route"))(&path);
        std::thread::sleep(*self.delay.lock().expect("delay"));
        let received = Received {
            path: path.clone(),
            headers,
            body,
        };
        match answer {
            Answer::Hang => {
                self.got.lock().expect("got").push(received);
                std::thread::sleep(Duration::from_secs(30));
            }
            Answer::Json(status, value) => {
                let text = value.to_string();
                let ok = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                )
                .is_ok();
                // Kept only when the answer went out: what the gateway could have seen.
                if ok {
                    self.got.lock().expect("got").push(received);
                }
            }
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.got.lock().expect("got").clone()
    }
}

fn api(
    gw: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = gw.http(method, path, token, body).expect("HTTP");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn call_id_of(event: &Value) -> String {
    event["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string()
}

/// Decline a ringing or waiting call and see the caller turned away.
fn decline(agent: &mut AgentSocket, caller: &mut Caller, id: &str) {
    let ok = request(agent, json!({"type": "call.decline", "call_id": id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    let status = caller.final_response(Duration::from_secs(5));
    assert!(status >= 400, "declined call got {status}");
}

/// Dial, see the call named, let the trunk answer, hang up; the call's id.
fn dial_answer_hang_up(
    agent: &mut AgentSocket,
    callee: &mut Callee,
    dial: Value,
    (name, id): (&str, &str),
) -> String {
    let ok = request(agent, dial);
    assert_eq!(ok["type"], "ok", "{ok}");
    let dialled = ok["call_id"].as_str().expect("call id").to_string();
    let updated = next_of(agent, "call.updated");
    assert_eq!(updated["call"]["prospect"]["name"], name, "{updated}");
    assert_eq!(updated["call"]["prospect"]["prospect_id"], id, "{updated}");
    assert!(
        callee.answer(Duration::from_secs(5)),
        "the trunk got the INVITE"
    );
    let ok = request(agent, json!({"type": "call.hangup", "call_id": dialled}));
    assert_eq!(ok["type"], "ok", "{ok}");
    assert!(callee.expect_bye(Duration::from_secs(5)));
    dialled
}

#[test]
fn names_from_the_dial_the_directory_and_the_crm_lookup() {
    let ports = Ports::block(72);
    let crm = Peer::start(25710);
    crm.answer_with(|path| {
        if path.contains("%2B15551230003") {
            Answer::Json(200, json!({"name": "Lee Lookup", "prospect_id": "crm-3"}))
        } else if path.contains("%2B15551230004") {
            Answer::Json(200, json!({"name": "CRM Wins", "prospect_id": 4}))
        } else if path.contains("%2B15551230005") {
            Answer::Hang
        } else {
            Answer::Json(404, json!({"error": "unknown"}))
        }
    });
    let config = format!(
        "{}{DEMO_AGENT}\n[lookup]\nurl = \"http://127.0.0.1:25710/lookup\"\ntimeout_ms = 400\ncache_seconds = 60\n",
        default_trunk(25700)
    );
    let gw = Gateway::start("names", ports, &config);

    // The directory over HTTP: admin only, numbers normalised, bad input named.
    let (status, entry) = api(
        &gw,
        "PUT",
        "/v1/contacts/+1%20555%20123%200002",
        Some(ADMIN_TOKEN),
        Some(r#"{"name":"Dana Directory","prospect_id":"crm-2"}"#),
    );
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["number"], "+15551230002");
    assert_eq!(entry["name"], "Dana Directory");
    let (status, got) = api(
        &gw,
        "GET",
        "/v1/contacts/+15551230002",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(
        (status, &got["prospect_id"]),
        (200, &json!("crm-2")),
        "{got}"
    );
    assert_eq!(
        api(&gw, "GET", "/v1/contacts/+15551230002", None, None).0,
        401
    );
    assert_eq!(
        api(
            &gw,
            "GET",
            "/v1/contacts/+15551230002",
            Some("demo-token"),
            None
        )
        .0,
        403
    );
    for (path, body, field) in [
        ("/v1/contacts/555", r#"{"name":"X"}"#, "number:"),
        ("/v1/contacts/+15551230009", r#"{"name":""}"#, "name:"),
        ("/v1/contacts/+15551230009", r#"{"name":7}"#, "name:"),
        ("/v1/contacts/+15551230009", r#"{"nom":"X"}"#, "nom:"),
        ("/v1/contacts/+15551230009", r#"not json"#, "body:"),
    ] {
        let (status, e) = api(&gw, "PUT", path, Some(ADMIN_TOKEN), Some(body));
        assert_eq!(status, 400, "{path} {body}: {e}");
        assert!(
            e["message"].as_str().unwrap_or("").starts_with(field),
            "{body}: {e}"
        );
    }
    // An import is all or nothing, and a bad line is named.
    let (status, e) = api(
        &gw,
        "POST",
        "/v1/contacts:import",
        Some(ADMIN_TOKEN),
        Some("number,name,prospect_id\n+15551230004,Dir Name,d-4\nnot-a-number,Bob\n"),
    );
    assert_eq!(status, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("line 3: number"),
        "{e}"
    );
    assert_eq!(
        api(
            &gw,
            "GET",
            "/v1/contacts/+15551230004",
            Some(ADMIN_TOKEN),
            None
        )
        .0,
        404
    );
    let (status, done) = api(
        &gw,
        "POST",
        "/v1/contacts:import",
        Some(ADMIN_TOKEN),
        Some("number,name,prospect_id\n+15551230004,Dir Name,d-4\n\"+1 555 123 0006\",\"Doe, Jane\"\n"),
    );
    assert_eq!((status, &done["imported"]), (200, &json!(2)), "{done}");
    let (_, jane) = api(
        &gw,
        "GET",
        "/v1/contacts/+15551230006",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(jane["name"], "Doe, Jane");
    let (status, _) = api(
        &gw,
        "DELETE",
        "/v1/contacts/+15551230006",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(
        api(
            &gw,
            "DELETE",
            "/v1/contacts/+15551230006",
            Some(ADMIN_TOKEN),
            None
        )
        .0,
        404
    );

    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");

    // Inbound: the directory's name (the CRM does not know the number), the CRM's, the CRM's
    // over the directory's, and none from a CRM that hangs, after no more than its timeout.
    let mut names = Vec::new();
    for (i, (number, name, id)) in [
        ("+15551230002", Some("Dana Directory"), Some("crm-2")),
        ("+15551230003", Some("Lee Lookup"), Some("crm-3")),
        ("+15551230004", Some("CRM Wins"), Some("4")),
        ("+15551230005", None, None),
    ]
    .into_iter()
    .enumerate()
    {
        let started = Instant::now();
        let mut caller = Caller::dial(&gw, number, 25720 + i as u16 * 4);
        let incoming = next_of(&mut agent, "call.incoming");
        let waited = started.elapsed();
        assert_eq!(incoming["call"]["prospect"]["number"], number, "{incoming}");
        assert_eq!(
            incoming["call"]["prospect"]["name"],
            json!(name),
            "{incoming}"
        );
        assert_eq!(
            incoming["call"]["prospect"]["prospect_id"],
            json!(id),
            "{incoming}"
        );
        // The lookup's timeout is 400 ms; what is over it is the test's own scheduling.
        assert!(
            waited < Duration::from_millis(1400),
            "{number}: the agent heard of the call after {waited:?}"
        );
        println!("{number}: call.incoming {waited:?} after the INVITE");
        let id = call_id_of(&incoming);
        decline(&mut agent, &mut caller, &id);
        names.push((id, name));
    }
    assert!(
        crm.requests()
            .iter()
            .any(|r| r.path == "/lookup?number=%2B15551230005"),
        "the hanging lookup was asked"
    );
    // The CRM's answer is cached: a second call from the number is named without asking.
    let mut again = Caller::dial(&gw, "+15551230003", 25740);
    let incoming = next_of(&mut agent, "call.incoming");
    assert_eq!(
        incoming["call"]["prospect"]["name"], "Lee Lookup",
        "{incoming}"
    );
    let id = call_id_of(&incoming);
    decline(&mut agent, &mut again, &id);
    names.push((id, Some("Lee Lookup")));
    let asked = crm
        .requests()
        .iter()
        .filter(|r| r.path == "/lookup?number=%2B15551230003")
        .count();
    assert_eq!(
        asked, 1,
        "the lookup was asked {asked} times for one number"
    );

    // Outbound: the name given with the dial, then the directory's for a dial without one.
    let mut callee = Callee::listen(25700);
    let dialled = dial_answer_hang_up(
        &mut agent,
        &mut callee,
        json!({"type": "call.dial", "to": "+15551239999", "name": "Olive Outbound", "prospect_id": "crm-9"}),
        ("Olive Outbound", "crm-9"),
    );
    names.push((dialled, Some("Olive Outbound")));
    let bad = request(
        &mut agent,
        json!({"type": "call.dial", "to": "+15551239999", "name": 5}),
    );
    assert_eq!(bad["code"], "bad_request", "{bad}");
    assert!(
        bad["message"].as_str().unwrap_or("").starts_with("name:"),
        "{bad}"
    );
    let dialled = dial_answer_hang_up(
        &mut agent,
        &mut callee,
        json!({"type": "call.dial", "to": "+15551230002"}),
        ("Dana Directory", "crm-2"),
    );
    names.push((dialled, Some("Dana Directory")));

    // The calls API and the log keep every name.
    gw.wait_idle(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    for (id, name) in names {
        loop {
            let (status, call) = api(
                &gw,
                "GET",
                &format!("/v1/calls/{id}"),
                Some(ADMIN_TOKEN),
                None,
            );
            if status == 200 && call["status"] == "ended" {
                assert_eq!(call["prospect"]["name"], json!(name), "{call}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never ended in the log: {call}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The events one receiver got, by call, with each signature checked.
fn events_by_call(requests: &[Received]) -> HashMap<String, Vec<Value>> {
    let mut by_call: HashMap<String, Vec<Value>> = HashMap::new();
    for r in requests.iter().filter(|r| r.path == "/hooks") {
        let signature = r.headers.get("callgate-signature").expect("signed");
        let (t, v1) = signature
            .split_once(",v1=")
            .map(|(t, v)| (t.trim_start_matches("t="), v))
            .expect("t=...,v1=...");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(format!("{t}.{}", r.body).as_bytes());
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1, want, "signature of {}", r.body);
        let event: Value = serde_json::from_str(&r.body).expect("JSON event");
        assert_eq!(
            r.headers.get("callgate-event-id").map(String::as_str),
            event["id"].as_str()
        );
        let call = event["data"]["call"]["call_id"]
            .as_str()
            .expect("call")
            .to_string();
        // A redelivery (after a crash) repeats an id; the story is told by the first.
        let list = by_call.entry(call).or_default();
        if !list.iter().any(|e| e["id"] == event["id"]) {
            list.push(event);
        }
    }
    by_call
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["type"].as_str() {
            Some("call.status") => format!(
                "status:{}",
                e["data"]["call"]["status"].as_str().unwrap_or("?")
            ),
            Some(k) => k.to_string(),
            None => "?".into(),
        })
        .collect()
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the receiver has the call's `call.ended`; the kinds of its events.
fn wait_until_ended(receiver: &Peer, call: &str, what: &str) -> Vec<String> {
    let ended = || {
        events_by_call(&receiver.requests())
            .get(call)
            .map(|e| kinds(e))
            .filter(|k| k.last().map(String::as_str) == Some("call.ended"))
    };
    wait_for(what, Duration::from_secs(15), || ended().is_some());
    ended().unwrap_or_default()
}

/// Wait until the outbox's pending deliveries satisfy `check`.
fn wait_pending(gw: &Gateway, what: &str, check: impl Fn(&[Value]) -> bool) {
    wait_for(what, Duration::from_secs(10), || {
        let (_, list) = api(
            gw,
            "GET",
            "/v1/webhooks/deliveries?status=pending",
            Some(ADMIN_TOKEN),
            None,
        );
        list["deliveries"].as_array().is_some_and(|l| check(l))
    });
}

#[test]
fn webhook_events_arrive_signed_in_order_through_an_outage_and_a_crash() {
    let ports = Ports::block(73);
    let receiver = Peer::start(25760);
    let config = format!(
        "{}{DEMO_AGENT}\n[[webhook]]\nurl = \"http://127.0.0.1:25760/hooks\"\nevents = [\"*\"]\nsecret = \"{SECRET}\"\nmax_backoff_seconds = 1\n",
        default_trunk(25750)
    );
    let mut gw = Gateway::start("webhooks", ports, &config);
    let mut agent = connect_agent(&gw, "?token=demo-token");
    next_of(&mut agent, "calls.snapshot");

    // A is answered; B waits; Hold & Accept; swap back to A; both end.
    let mut a = Caller::dial(&gw, "+15551230001", 25770);
    let a_id = common::caller::answer_incoming(&mut agent, &mut a);
    let mut b = Caller::dial(&gw, "+15551230002", 25774);
    let b_id = call_id_of(&next_of(&mut agent, "call.waiting"));
    let ok = request(
        &mut agent,
        json!({"type": "call.accept", "call_id": b_id, "mode": "hold"}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(b.final_response(Duration::from_secs(5)), 200);
    std::thread::sleep(Duration::from_millis(300));
    let ok = request(&mut agent, json!({"type": "call.resume", "call_id": a_id}));
    assert_eq!(ok["type"], "ok", "{ok}");
    std::thread::sleep(Duration::from_millis(300));
    a.hang_up();
    b.hang_up();
    // The log is written after the call's end is (the events go in the order the changes
    // were committed, and the agent writes a log once the call is over).
    wait_for("A's end in the call log", Duration::from_secs(10), || {
        api(
            &gw,
            "GET",
            &format!("/v1/calls/{a_id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .1["status"]
            == "ended"
    });
    let ok = request(
        &mut agent,
        json!({"type": "call_log.dismiss", "number": "+15551230001"}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    let (status, _) = api(
        &gw,
        "PUT",
        &format!("/v1/calls/{a_id}/log"),
        Some("demo-token"),
        Some(r#"{"disposition":"callback"}"#),
    );
    assert_eq!(status, 200);

    let want_a = [
        "call.started",
        "call.answered",
        "status:active",
        "status:on_hold",
        "status:active",
        "call.ended",
        "call_log.saved",
    ];
    let want_b = [
        "call.started",
        "status:waiting",
        "call.answered",
        "status:active",
        "status:on_hold",
        "call.ended",
    ];
    wait_for(
        "the first two calls' events",
        Duration::from_secs(15),
        || {
            let by_call = events_by_call(&receiver.requests());
            by_call.get(&a_id).map_or(0, Vec::len) >= want_a.len()
                && by_call.get(&b_id).map_or(0, Vec::len) >= want_b.len()
        },
    );
    let by_call = events_by_call(&receiver.requests());
    assert_eq!(kinds(&by_call[&a_id]), want_a, "{:#?}", by_call[&a_id]);
    assert_eq!(kinds(&by_call[&b_id]), want_b, "{:#?}", by_call[&b_id]);
    let ended = &by_call[&a_id][5];
    assert_eq!(
        ended["data"]["call"]["end_reason"], "caller_hangup",
        "{ended}"
    );
    assert!(
        ended["data"]["durations"]["hold_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.2,
        "{ended}"
    );
    assert!(
        ended["data"]["durations"]["talk_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.2,
        "{ended}"
    );
    assert_eq!(by_call[&a_id][6]["data"]["log"]["disposition"], "callback");

    // The receiver fails for a while: events wait, the operator sees why, then all arrive.
    receiver.answer_with(|_| Answer::Json(503, json!({"error": "down"})));
    let mut c = Caller::dial(&gw, "+15551230003", 25778);
    let c_id = call_id_of(&next_of(&mut agent, "call.incoming"));
    decline(&mut agent, &mut c, &c_id);
    wait_pending(&gw, "a failed attempt shows", |l| {
        l.iter()
            .any(|d| d["call_id"] == c_id.as_str() && d["last_error"] == "HTTP 503")
    });
    assert_eq!(
        api(
            &gw,
            "GET",
            "/v1/webhooks/deliveries",
            Some("demo-token"),
            None
        )
        .0,
        403
    );
    let (status, e) = api(
        &gw,
        "GET",
        "/v1/webhooks/deliveries?status=lost",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 400);
    assert!(
        e["message"].as_str().unwrap_or("").starts_with("status:"),
        "{e}"
    );
    std::thread::sleep(Duration::from_secs(2));
    receiver.answer_with(|_| Answer::Json(200, json!({})));
    assert_eq!(
        wait_until_ended(&receiver, &c_id, "the outage's events after it"),
        ["call.started", "call.ended"]
    );

    // Down again, a call, kill -9 with its events pending; after the restart they arrive.
    receiver.answer_with(|_| Answer::Json(500, json!({})));
    let mut d = Caller::dial(&gw, "+15551230004", 25782);
    let d_id = call_id_of(&next_of(&mut agent, "call.incoming"));
    decline(&mut agent, &mut d, &d_id);
    wait_pending(&gw, "the crash call's events are pending", |l| {
        l.iter().filter(|d| d["call_id"] == d_id.as_str()).count() == 2
    });
    // And one call live at the crash: after the restart it ends as failed, and says so.
    let mut e = Caller::dial(&gw, "+15551230005", 25786);
    let e_id = common::caller::answer_incoming(&mut agent, &mut e);
    wait_pending(&gw, "the live call's events are pending", |l| {
        l.iter()
            .any(|d| d["call_id"] == e_id.as_str() && d["event"] == "call.status")
    });
    drop(agent);
    gw.crash();
    receiver.answer_with(|_| Answer::Json(200, json!({})));
    gw.restart();
    assert_eq!(
        wait_until_ended(&receiver, &e_id, "the live call's end after the restart"),
        [
            "call.started",
            "call.answered",
            "status:active",
            "call.ended"
        ]
    );
    assert_eq!(
        events_by_call(&receiver.requests())[&e_id][3]["data"]["call"]["end_reason"],
        "failed"
    );
    assert_eq!(
        wait_until_ended(
            &receiver,
            &d_id,
            "the crash call's events after the restart"
        ),
        ["call.started", "call.ended"]
    );

    // At least once, never twice in one attempt: every event id arrived, and no (id,
    // attempt) pair came more than once.
    let requests = receiver.requests();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for r in requests.iter().filter(|r| r.path == "/hooks") {
        let key = (
            r.headers
                .get("callgate-event-id")
                .cloned()
                .unwrap_or_default(),
            r.headers
                .get("callgate-attempt")
                .cloned()
                .unwrap_or_default(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let (_, pending) = api(
        &gw,
        "GET",
        "/v1/webhooks/deliveries?status=pending,failed",
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(pending["deliveries"], json!([]), "{pending}");
}
