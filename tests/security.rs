//! Attacks on the real binary, on loopback, as someone on the internet would try them: the
//! trunk is 127.0.0.1, the attacker 127.0.0.9 (or .5, .7), and each test checks that the
//! attack changes nothing while the real peers' calls go on with audio both ways.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::browser::{signed_in, Browser};
use common::caller::{Callee, Caller};
use common::*;
use serde_json::{json, Value};

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 1000.0;
const CALLEE_HZ: f64 = 700.0;
const INJECTED_HZ: f64 = 2500.0;
const PRESENT: f64 = 400.0;
const ABSENT: f64 = 150.0;

/// The last second, from now.
fn last_second() -> (Instant, Instant) {
    let to = Instant::now();
    (to - Duration::from_secs(1), to)
}

fn ok(reply: &Value) {
    assert_eq!(reply["type"], "ok", "{reply}");
}

/// A header's value from a SIP message's text.
fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A socket of the attacker's, reads bounded by 300 ms.
fn attacker_socket(addr: &str) -> UdpSocket {
    let socket = bind_udp(addr);
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    socket
}

/// Everything `socket` receives within `window`, as text.
fn received_within(socket: &UdpSocket, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; 65536];
    let mut all = Vec::new();
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    all
}

/// The first message `socket` receives within `window` that `wanted` accepts.
fn first_within(
    socket: &UdpSocket,
    window: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + window;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if wanted(&text) {
                return Some(text);
            }
        }
    }
    None
}

fn live_status(gw: &Gateway, call: &str) -> Option<String> {
    let (_, body) = gw
        .http("GET", "/v1/live-calls", Some(ADMIN_TOKEN), None)
        .expect("live calls");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["calls"]
        .as_array()?
        .iter()
        .find(|c| c["call_id"] == call)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// The demo agent answered a caller: both talk (caller 440 Hz, agent 1 kHz).
struct Desk {
    gw: Gateway,
    _agent: AgentSocket,
    browser: Browser,
    caller: Caller,
}

fn desk(name: &str, block: u16, caller_port: u16) -> Desk {
    let gw = Gateway::start(
        name,
        Ports::block(block),
        &(default_trunk(caller_port + 90) + DEMO_AGENT),
    );
    let (mut agent, browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let mut caller = Caller::dial(&gw, "+15551230001", caller_port);
    let incoming = next_of(&mut agent, "call.incoming");
    let call = incoming["call"]["call_id"]
        .as_str()
        .expect("id")
        .to_string();
    ok(&request(
        &mut agent,
        json!({"type": "call.answer", "call_id": call}),
    ));
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    caller.play_tone(CALLER_HZ);
    std::thread::sleep(Duration::from_millis(1500));
    assert_talking(&caller, &browser);
    Desk {
        gw,
        _agent: agent,
        browser,
        caller,
    }
}

/// The caller and the agent hear each other over the last second.
fn assert_talking(caller: &Caller, browser: &Browser) {
    let (from, to) = last_second();
    let caller_hears = tone_amplitude(&caller.heard_between(from, to), AGENT_HZ);
    let agent_hears = tone_amplitude(&browser.heard_between(from, to), CALLER_HZ);
    println!("the caller hears the agent {caller_hears:.0}, the agent the caller {agent_hears:.0}");
    assert!(
        caller_hears > PRESENT,
        "caller hears the agent {caller_hears:.0}"
    );
    assert!(
        agent_hears > PRESENT,
        "agent hears the caller {agent_hears:.0}"
    );
}

// ---- 1. identifiers ----------------------------------------------------------------------

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Inverts `x ^ (x >> shift)`: each round settles `shift` more of the high bits.
fn unxorshift(x: u64, shift: u32) -> u64 {
    let mut y = x;
    for _ in 0..64 / shift + 1 {
        y = x ^ (y >> shift);
    }
    y
}

fn mod_inverse(a: u64) -> u64 {
    // Newton's iteration for the inverse of an odd number modulo 2^64.
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

/// The splitmix64 state that produced output `z`.
fn splitmix_unmix(z: u64) -> u64 {
    let z = unxorshift(z, 31);
    let z = z.wrapping_mul(mod_inverse(0x94D0_49BB_1331_11EB));
    let z = unxorshift(z, 27);
    let z = z.wrapping_mul(mod_inverse(0xBF58_476D_1CE4_E5B9));
    unxorshift(z, 30)
}

#[test]
fn no_identifier_follows_from_one_callgate_sent() {
    // The inversion itself works, or the test below would prove nothing.
    for x in [1u64, 0xdead_beef, u64::MAX / 3, rand_u64()] {
        assert_eq!(splitmix_unmix(splitmix_mix(x)), x);
    }
    let gw = Gateway::start("ids", Ports::block(60), &default_trunk(24090));
    let mut tags = Vec::new();
    for i in 0..6 {
        let options = raw_request(
            "OPTIONS",
            &format!("sip:probe@{}", gw.sip_addr()),
            &format!("127.0.0.1:{}", 24000 + i),
            "",
            "",
        );
        let reply = sip_exchange(&format!("127.0.0.1:{}", 24000 + i), gw.sip_addr(), &options)
            .expect("OPTIONS answered");
        let tag = header(&reply, "To")
            .and_then(|t| t.split(";tag=").nth(1))
            .expect("a To-tag")
            .to_string();
        assert_eq!(tag.len(), 16, "{tag}");
        tags.push(u64::from_str_radix(&tag, 16).expect("hex tag"));
    }
    let mut predicted_any = 0;
    for pair in tags.windows(2) {
        let state = splitmix_unmix(pair[0]);
        let next: Vec<u64> = (1..=64u64)
            .map(|k| splitmix_mix(state.wrapping_add(GOLDEN.wrapping_mul(k))))
            .collect();
        if next.contains(&pair[1]) {
            predicted_any += 1;
        }
    }
    println!("To-tags {tags:x?}: {predicted_any} of 5 predicted from the one before");
    assert_eq!(predicted_any, 0, "a To-tag followed from the one before it");
}

// ---- 2. forged responses to an agent's dial ------------------------------------------------

#[test]
fn forged_responses_to_an_agents_dial_change_nothing() {
    let callee_port = 24190;
    let gw = Gateway::start(
        "forged_responses",
        Ports::block(61),
        &(default_trunk(callee_port) + DEMO_AGENT),
    );
    let (mut agent, browser) = signed_in(&gw, "demo-token", AGENT_HZ);
    let mut callee = Callee::listen(callee_port);
    let reply = request(
        &mut agent,
        json!({"type": "call.dial", "to": "+15559990001"}),
    );
    ok(&reply);
    let call = reply["call_id"].as_str().expect("call id").to_string();
    let invite = callee
        .receive_invite(Duration::from_secs(10))
        .expect("the trunk gets the INVITE");
    // The attacker knows everything the INVITE carried (the strongest off-path attacker: it
    // guessed right) and answers first, from another address.
    let attacker = attacker_socket("127.0.0.9:24150");
    let attacker_rtp = attacker_socket("127.0.0.9:24152");
    let copy = |status: &str, extra: &str, body: &str| {
        let mut r = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            r.push_str(&format!(
                "{name}: {}\r\n",
                header(&invite, name).expect(name)
            ));
        }
        r.push_str(&format!(
            "To: {};tag=attacker\r\nContact: <sip:evil@127.0.0.9:24150>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            header(&invite, "To").expect("To"),
            body.len()
        ));
        r
    };
    let evil_sdp = "v=0\r\no=evil 1 1 IN IP4 127.0.0.9\r\ns=-\r\nc=IN IP4 127.0.0.9\r\nt=0 0\r\nm=audio 24152 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    for forged in [
        copy("603 Declined", "", ""),
        copy("200 OK", "Content-Type: application/sdp\r\n", evil_sdp),
    ] {
        attacker
            .send_to(forged.as_bytes(), gw.sip_addr())
            .expect("forged response");
    }
    let to_attacker = received_within(&attacker, Duration::from_millis(1500));
    assert!(to_attacker.is_empty(), "the attacker got {to_attacker:?}");
    assert_eq!(
        live_status(&gw, &call).as_deref(),
        Some("dialing"),
        "the dial goes on as if nothing came"
    );
    // The real answer connects, with audio both ways and none toward the attacker.
    callee.accept();
    callee.play_tone(CALLEE_HZ);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(live_status(&gw, &call).as_deref(), Some("active"));
    let (from, to) = last_second();
    let agent_hears = tone_amplitude(&browser.heard_between(from, to), CALLEE_HZ);
    let callee_hears = tone_amplitude(&callee.heard_between(from, to), AGENT_HZ);
    println!("after the forged 603 and 200: the agent hears the callee {agent_hears:.0}, the callee the agent {callee_hears:.0}");
    assert!(agent_hears > PRESENT && callee_hears > PRESENT);
    let media_to_attacker = received_within(&attacker_rtp, Duration::from_millis(500));
    assert!(media_to_attacker.is_empty(), "RTP reached the attacker");
    let dropped = gw.metric("callgate_sip_dropped_total{reason=\"foreign_response\"}");
    println!("foreign responses dropped: {dropped}");
    assert!(dropped >= 2.0, "{dropped}");
    browser.stop();
}

// ---- 3. forged BYE and re-INVITE -----------------------------------------------------------

#[test]
fn forged_bye_and_reinvite_from_elsewhere_leave_the_call_alone() {
    let d = desk("forged_in_dialog", 62, 24200);
    let attacker = attacker_socket("127.0.0.9:24250");
    let attacker_rtp = attacker_socket("127.0.0.9:24252");
    let caller_addr = d.caller.sip.local_addr().expect("addr").to_string();
    let forge = |text: String| text.replace(&caller_addr, "127.0.0.9:24250");
    let bye = forge(d.caller.request("BYE", 5, "", ""));
    let evil_sdp = sdp_offer(24252, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv")
        .replace("127.0.0.1", "127.0.0.9");
    let reinvite =
        forge(
            d.caller
                .request("INVITE", 6, "Content-Type: application/sdp\r\n", &evil_sdp),
        );
    for forged in [bye, reinvite] {
        attacker
            .send_to(forged.as_bytes(), d.gw.sip_addr())
            .expect("forged request");
    }
    let to_attacker = received_within(&attacker, Duration::from_millis(1500));
    assert!(to_attacker.is_empty(), "the attacker got {to_attacker:?}");
    assert_eq!(d.gw.live_calls(), 1, "the call goes on");
    assert_talking(&d.caller, &d.browser);
    assert!(
        received_within(&attacker_rtp, Duration::from_millis(500)).is_empty(),
        "RTP reached the attacker"
    );
    let dropped =
        d.gw.metric("callgate_sip_dropped_total{reason=\"foreign_in_dialog\"}");
    println!("foreign in-dialog requests dropped: {dropped}");
    assert!(dropped >= 2.0, "{dropped}");
    // The real caller's BYE (a lower CSeq than the forged ones: they never counted) ends it.
    let bye = d.caller.in_dialog_request("BYE", 2, "");
    let answer = d.caller.response_to(&bye, Duration::from_secs(5));
    assert_eq!(sip_status(&answer), 200, "{answer}");
    d.gw.wait_idle(Duration::from_secs(5));
    d.browser.stop();
}

// ---- 4. RTP injection ----------------------------------------------------------------------

#[test]
fn rtp_injected_from_a_third_address_is_never_heard() {
    let d = desk("rtp_injection", 63, 24300);
    let target = d.caller.remote_rtp.expect("the call's RTP address");
    let attacker = attacker_socket("127.0.0.9:24350");
    let started = Instant::now();
    // 500 packets a second for 5 s: a loud tone the agent must never hear.
    let mut sent = 0u32;
    while started.elapsed() < Duration::from_secs(5) {
        let mut packet = vec![0x80, 0];
        packet.extend_from_slice(&(sent as u16).to_be_bytes());
        packet.extend_from_slice(&(sent * 160).to_be_bytes());
        packet.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        for i in 0..160u32 {
            let t = f64::from(sent * 160 + i) / 8000.0;
            let s = (t * INJECTED_HZ * std::f64::consts::TAU).sin() * 12000.0;
            packet.push(linear_to_ulaw(s as i16));
        }
        let _ = attacker.send_to(&packet, target);
        sent += 1;
        let due = started + Duration::from_millis(2 * u64::from(sent));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let ended = Instant::now();
    let (from, to) = (started + Duration::from_millis(200), ended);
    let agent_heard = d.browser.heard_between(from, to);
    let injected = tone_amplitude(&agent_heard, INJECTED_HZ);
    let caller_tone = tone_amplitude(&agent_heard, CALLER_HZ);
    let to_caller: Vec<_> = d
        .caller
        .received
        .lock()
        .expect("packets")
        .iter()
        .filter(|p| p.arrival >= started && p.arrival <= ended)
        .map(|p| p.sequence)
        .collect();
    let gaps = to_caller
        .windows(2)
        .filter(|w| w[1] != w[0].wrapping_add(1))
        .count();
    let back = received_within(&attacker, Duration::from_millis(500)).len();
    let foreign = d.gw.metric("callgate_rtp_foreign_packets_total");
    println!(
        "injected {sent} packets in {:?}: the agent hears the injected tone {injected:.0} and the caller {caller_tone:.0}; the caller got {} packets with {gaps} gaps; the attacker got {back}; foreign packets counted {foreign}",
        ended - started,
        to_caller.len()
    );
    assert!(sent >= 2400, "the attacker sent {sent}");
    assert!(
        injected < ABSENT,
        "the agent heard the injection: {injected:.0}"
    );
    assert!(caller_tone > PRESENT, "the agent still hears the caller");
    assert!(
        to_caller.len() >= 240,
        "the caller got {} frames",
        to_caller.len()
    );
    assert_eq!(gaps, 0, "the caller missed frames");
    assert_eq!(back, 0, "the attacker got packets back");
    assert!(
        foreign >= f64::from(sent) * 0.95,
        "{foreign} of {sent} counted"
    );
    assert_talking(&d.caller, &d.browser);
    d.browser.stop();
}

// ---- 9 and 10. strangers, digest replay and bans ------------------------------------------

/// A trunk that may also call in from anywhere with digest credentials.
const CARRIER: &str = r#"
[[trunk]]
name = "carrier"
inbound_username = "carrier"
inbound_password = "carrier-secret-9"
"#;

/// A stranger's INVITE to `uri` from `socket`; the final response's text, or `None` when
/// nothing final comes within 2 s. A 2xx is acknowledged and hung up.
fn stranger_invite(
    socket: &UdpSocket,
    gw: SocketAddr,
    uri: &str,
    call_id: &str,
    cseq: u32,
    authorization: Option<&str>,
) -> Option<String> {
    let local = socket.local_addr().expect("addr");
    let sdp = sdp_offer(
        local.port() + 2,
        "0",
        "a=rtpmap:0 PCMU/8000\r\n",
        "sendrecv",
    );
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = |method: &str, cseq: u32, to_tag: &str| {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{:x};rport\r\nFrom: <sip:stranger@{local}>;tag=s1\r\nTo: <{uri}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:stranger@{local}>\r\n",
            rand_u64()
        )
    };
    let invite = format!(
        "{}{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", cseq, ""),
        sdp.len()
    );
    socket.send_to(invite.as_bytes(), gw).expect("INVITE");
    // Only this INVITE's answer: the answer to an earlier call's BYE may still be queued.
    let cseq_line = format!("{cseq} INVITE");
    let final_response = first_within(socket, Duration::from_secs(2), |t| {
        sip_status(t) >= 200
            && header(t, "Call-ID") == Some(call_id)
            && header(t, "CSeq") == Some(cseq_line.as_str())
    })?;
    if (200..300).contains(&sip_status(&final_response)) {
        let tag = header(&final_response, "To")
            .and_then(|t| t.split(";tag=").nth(1))
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        for method in ["ACK", "BYE"] {
            let seq = if method == "ACK" { cseq } else { cseq + 1 };
            let request = format!("{}Content-Length: 0\r\n\r\n", head(method, seq, &tag));
            socket.send_to(request.as_bytes(), gw).expect(method);
        }
    }
    Some(final_response)
}

/// The digest answer to the 401 `challenge_response` for `uri`.
fn authorization_for(challenge_response: &str, uri: &str, user: &str, password: &str) -> String {
    let challenge = challenge_response
        .lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .find_map(|v| callgate::sip::digest::Challenge::parse(v).ok())
        .expect("a digest challenge");
    callgate::sip::digest::respond(&challenge, "INVITE", uri, user, password, "c0ffee", 1, b"")
        .to_string()
}

#[test]
fn a_stranger_with_a_spoofed_via_gets_at_most_one_answer() {
    let gw = Gateway::start(
        "spoofed_via",
        Ports::block(64),
        &(default_trunk(24490) + CARRIER),
    );
    let sender = attacker_socket("127.0.0.7:24400");
    let victim = attacker_socket("127.0.0.7:24410");
    // The Via names the victim's port and asks for no rport: responses go there.
    let invite = raw_request(
        "INVITE",
        &format!("sip:echo@{}", gw.sip_addr()),
        "127.0.0.7:24410",
        "Content-Type: application/sdp\r\n",
        &sdp_offer(24412, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv"),
    );
    let invite = String::from_utf8(invite)
        .expect("text")
        .replace(";rport", "");
    sender
        .send_to(invite.as_bytes(), gw.sip_addr())
        .expect("INVITE");
    let at_victim = received_within(&victim, Duration::from_secs(8));
    let at_sender = received_within(&sender, Duration::from_millis(300));
    let statuses: Vec<u16> = at_victim.iter().map(|t| sip_status(t)).collect();
    println!(
        "responses at the spoofed port over 8 s: {statuses:?}; at the sender: {}",
        at_sender.len()
    );
    assert_eq!(
        statuses,
        vec![401],
        "one challenge, no 100 Trying, no retransmission"
    );
    assert!(at_sender.is_empty());
}

#[test]
fn replayed_credentials_get_401_and_a_guesser_is_banned() {
    let gw = Gateway::start(
        "digest_replay",
        Ports::block(65),
        &(default_trunk(24590) + CARRIER + "[security]\nauth_failures = 4\n"),
    );
    let stranger = attacker_socket("127.0.0.5:24500");
    let echo = format!("sip:echo@{}", gw.sip_addr());
    let challenge =
        stranger_invite(&stranger, gw.sip_addr(), &echo, "replay-1", 1, None).expect("a challenge");
    assert_eq!(sip_status(&challenge), 401, "{challenge}");
    let auth = authorization_for(&challenge, &echo, "carrier", "carrier-secret-9");
    let answered = stranger_invite(&stranger, gw.sip_addr(), &echo, "replay-1", 2, Some(&auth))
        .expect("an answer");
    assert_eq!(
        sip_status(&answered),
        200,
        "the real carrier gets through: {answered}"
    );
    // The same Authorization again: another call, then another Request-URI.
    let replay = stranger_invite(&stranger, gw.sip_addr(), &echo, "replay-2", 1, Some(&auth))
        .expect("an answer");
    let announce = format!("sip:announce@{}", gw.sip_addr());
    let other_uri = stranger_invite(
        &stranger,
        gw.sip_addr(),
        &announce,
        "replay-3",
        1,
        Some(&auth),
    )
    .expect("an answer");
    // Someone else guesses: a wrong password and an unknown user get the very same answer.
    // (The carrier's own address, authenticated a moment ago, could not be banned this way:
    // over UDP anyone can send wrong credentials in its name.)
    let guesser = attacker_socket("127.0.0.6:24510");
    let fresh =
        stranger_invite(&guesser, gw.sip_addr(), &echo, "guess-1", 1, None).expect("a challenge");
    let wrong_password = stranger_invite(
        &guesser,
        gw.sip_addr(),
        &echo,
        "guess-1",
        2,
        Some(&authorization_for(&fresh, &echo, "carrier", "guess")),
    )
    .expect("an answer");
    let fresh =
        stranger_invite(&guesser, gw.sip_addr(), &echo, "guess-2", 1, None).expect("a challenge");
    let unknown_user = stranger_invite(
        &guesser,
        gw.sip_addr(),
        &echo,
        "guess-2",
        2,
        Some(&authorization_for(&fresh, &echo, "admin", "guess")),
    )
    .expect("an answer");
    let first_line = |t: &str| t.lines().next().unwrap_or("").to_string();
    println!(
        "replayed: {:?}; replayed to another URI: {:?}; wrong password: {:?}; unknown user: {:?}",
        first_line(&replay),
        first_line(&other_uri),
        first_line(&wrong_password),
        first_line(&unknown_user)
    );
    for answer in [&replay, &other_uri, &wrong_password, &unknown_user] {
        assert_eq!(first_line(answer), "SIP/2.0 401 Unauthorized");
    }
    // Replays are refused but guess nothing: they count toward no ban. Two more wrong
    // guesses make four: the source is banned and hears nothing more, while another stranger
    // is still challenged.
    for i in 0..2 {
        let call_id = format!("guess-more-{i}");
        let fresh = stranger_invite(&guesser, gw.sip_addr(), &echo, &call_id, 1, None)
            .expect("a challenge");
        let wrong = authorization_for(&fresh, &echo, "carrier", "guess-again");
        stranger_invite(&guesser, gw.sip_addr(), &echo, &call_id, 2, Some(&wrong))
            .expect("an answer");
    }
    let banned = stranger_invite(&guesser, gw.sip_addr(), &echo, "after-ban", 1, None);
    assert!(banned.is_none(), "a banned source was answered: {banned:?}");
    let other = attacker_socket("127.0.0.7:24520");
    let challenged = stranger_invite(&other, gw.sip_addr(), &echo, "other-1", 1, None)
        .expect("another source is still answered");
    assert_eq!(sip_status(&challenged), 401);
    let log = gw.log_text();
    let failures = log.matches("SIP auth failure from 127.0.0.6:").count();
    let refused = log.matches("SIP auth refused from 127.0.0.5:").count();
    println!("auth failure lines for the guesser: {failures}, refusals of the replays: {refused}");
    assert_eq!(failures, 4, "one line per guess");
    assert_eq!(refused, 2, "one line per replay");
    assert!(log.contains("SIP source 127.0.0.6 banned"));
    assert!(!log.contains("SIP source 127.0.0.5 banned"));
    let dropped = gw.metric("callgate_sip_dropped_total{reason=\"banned\"}");
    assert!(dropped >= 1.0);
}

// ---- 5. sipvicious -------------------------------------------------------------------------

/// The trunk of the scanner tests: calls come from 127.0.0.2, so the scanners (which cannot
/// be bound to another loopback address) are strangers at 127.0.0.1.
const PSTN_AT_2: &str = r#"
[[trunk]]
name = "pstn"
inbound_from = ["127.0.0.2/32"]
"#;

/// Run a sipvicious tool with a time limit; its output (stdout and stderr).
fn sipvicious(tool: &str, args: &[&str], limit: Duration) -> String {
    let child = std::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} starts: {e}"));
    let out = wait_child(child, limit);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One echo call from the trunk at 127.0.0.2 with sipp; whether it completed.
fn trunk_call_completes(gw: &Gateway, name: &str, local_port: u16) -> bool {
    let dir = scratch(name);
    make_ulaw_tone(&dir.join("tone.ul"), 3.0, 440);
    let mut args = single_call_sipp_args(
        &dir,
        "uac_echo.xml",
        Some((gw.ports.sip, "echo")),
        local_port,
        local_port + 2,
    );
    set_sipp_arg(&mut args, "-i", "127.0.0.2");
    set_sipp_arg(&mut args, "-mi", "127.0.0.2");
    let out = run_sipp(&dir, &args, Duration::from_secs(60));
    let counts = sipp_call_counts(&dir.join("stats.csv"));
    println!("trunk call {name}: sipp {counts:?}");
    if counts != (1, 0) {
        println!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
        );
    }
    counts == (1, 0)
}

#[test]
fn sipvicious_finds_nothing_and_its_password_guesser_is_banned() {
    for tool in ["svmap", "svwar", "svcrack", "sipp"] {
        require_tool(tool);
    }
    // Shipped defaults: the scanners' User-Agent gets no answer at all.
    let gw = Gateway::start(
        "sipvicious_blocked",
        Ports::block(66),
        &(PSTN_AT_2.to_string() + CARRIER + DEMO_AGENT),
    );
    let port = gw.ports.sip.to_string();
    let map = sipvicious(
        "svmap",
        &["-p", &port, "127.0.0.1"],
        Duration::from_secs(30),
    );
    println!("svmap against the defaults:\n{map}");
    assert!(!map.contains("callgate"), "svmap found callgate");
    let blocked = gw.metric("callgate_sip_dropped_total{reason=\"user_agent\"}");
    assert!(blocked >= 1.0, "{blocked}");
    drop(gw);

    // The blocklist emptied (a scanner that lies about its name): the answers themselves
    // must give nothing away, and guessing passwords must get the guesser banned.
    let gw = Gateway::start(
        "sipvicious_open",
        Ports::block(67),
        &(PSTN_AT_2.to_string()
            + CARRIER
            + DEMO_AGENT
            // svcrack speaks only MD5, as some carriers still do.
            + "[security]\nuser_agent_blocklist = []\nauth_failures = 5\ndigest_algorithms = [\"MD5\"]\n"),
    );
    let port = gw.ports.sip.to_string();
    let map = sipvicious(
        "svmap",
        &["-p", &port, "127.0.0.1"],
        Duration::from_secs(30),
    );
    assert!(
        map.contains("callgate"),
        "svmap works against callgate: {map}"
    );
    let dir = scratch("sipvicious_words");
    let words = dir.join("extensions.txt");
    std::fs::write(
        &words,
        "+15550000100\n15550000100\n5550000100\ndemo\necho\nannounce\nadmin\n100\n1000\n",
    )
    .expect("dictionary");
    let words = words.display().to_string();
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        for target in [vec!["-d", words.as_str()], vec!["-e", "100-140"]] {
            let mut args = vec!["-p", port.as_str(), "-m", method, "--force"];
            args.extend(target);
            args.push("127.0.0.1");
            let war = sipvicious("svwar", &args, Duration::from_secs(60));
            println!("svwar {args:?}:\n{war}");
            assert!(
                !war.contains("exists") && !war.contains("| Extension"),
                "svwar found an extension with {method}"
            );
        }
    }
    assert!(trunk_call_completes(&gw, "sipvicious_call_1", 24700));

    let passwords = dir.join("passwords.txt");
    let mut list: Vec<String> = (0..24).map(|i| format!("guess{i}")).collect();
    list.push("carrier-secret-9".into());
    std::fs::write(&passwords, list.join("\n") + "\n").expect("dictionary");
    let crack = sipvicious(
        "svcrack",
        &[
            "-p",
            &port,
            "-u",
            "carrier",
            "-d",
            &passwords.display().to_string(),
            "127.0.0.1",
        ],
        Duration::from_secs(90),
    );
    println!("svcrack:\n{crack}");
    assert!(
        !crack.contains("carrier-secret-9"),
        "svcrack found the password"
    );
    let log = gw.log_text();
    let failures = log.matches("SIP auth failure from 127.0.0.1:").count();
    println!("auth failures logged for 127.0.0.1: {failures}");
    assert_eq!(failures, 5, "the guesser was stopped after 5 tries");
    assert!(log.contains("SIP source 127.0.0.1 banned"));
    // The trunk's calls go on while the guesser is banned.
    assert!(trunk_call_completes(&gw, "sipvicious_call_2", 24710));
}

/// The ICE-TCP port facing the internet: a frame longer than ICE-TCP ever sends closes the
/// connection at once, and a connection whose frames no peer recognises is closed within
/// seconds, so strangers cannot sit on the connection caps.
#[test]
fn strangers_on_the_ice_tcp_port_are_let_go() {
    use std::io::{Read, Write};
    let ports = Ports::block(78);
    let tcp_port = ports.http + 2;
    let gw = Gateway::start_with_webrtc(
        "ice_tcp_strangers",
        ports,
        DEMO_AGENT,
        &format!("tcp_listen = \"127.0.0.1:{tcp_port}\"\n"),
    );
    let closed_within = |stream: &mut std::net::TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Some(started.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(started.elapsed())
                }
                Err(_) => return None,
            }
        }
    };
    let mut huge = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    huge.write_all(&[0xff, 0xff, 1, 2, 3]).expect("write");
    let took = closed_within(&mut huge, Duration::from_secs(3));
    assert!(
        took.is_some(),
        "an oversized frame left the connection open"
    );

    let mut stranger = std::net::TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
    stranger
        .write_all(&[0, 4, 0xde, 0xad, 0xbe, 0xef])
        .expect("write");
    let took = closed_within(&mut stranger, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("an unrecognised connection stayed open:\n{}", gw.log_text()));
    assert!(
        took >= Duration::from_secs(5),
        "closed after {took:?}, before its grace"
    );
    println!("unrecognised ICE-TCP connection closed after {took:?}");
}
