use super::*;

const PEER: &str = "127.0.0.1:5070";

fn layer() -> TransactionLayer {
    let mut l = TransactionLayer::new(
        LocalAddress {
            host: "127.0.0.1".into(),
            port: 5060,
            tls_port: Some(5061),
        },
        TimerValues::default(),
        [7; 32],
        "callgate-test".into(),
    );
    let trusted = GuardSettings {
        trusted: vec![super::super::guard::Cidr::parse("127.0.0.1/32").expect("cidr")],
        ..GuardSettings::default()
    };
    l.protect(trusted, TransactionLimits::default());
    l
}

fn peer() -> SocketAddr {
    PEER.parse().expect("literal address")
}

fn request_bytes(method: &str, branch: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:echo@127.0.0.1>{extra}\r\nCall-ID: call-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContact: <sip:a@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn drain_transmits(layer: &mut TransactionLayer) -> Vec<String> {
    std::iter::from_fn(|| layer.poll_transmit())
        .map(|t| String::from_utf8_lossy(&t.bytes).to_string())
        .collect()
}

fn new_server_tx(
    layer: &mut TransactionLayer,
    now: Instant,
    method: &str,
) -> (ServerTxId, Request) {
    layer.handle_datagram(now, peer(), &request_bytes(method, "z9hG4bKabc", ""));
    match layer.poll_event() {
        Some(TransactionEvent::Request { tx, request, .. }) => (tx, request),
        other => panic!("expected a new request, got {other:?}"),
    }
}

#[test]
fn behind_strangers_are_not_answered_and_trunks_are() {
    let mut l = layer();
    let t0 = Instant::now();
    let stranger: SocketAddr = "127.0.0.9:5070".parse().expect("literal");
    let options = |branch: &str| {
        String::from_utf8(request_bytes("OPTIONS", branch, ""))
            .expect("text")
            .replace("127.0.0.1:5070", "127.0.0.9:5070")
            .into_bytes()
    };
    l.handle_datagram(t0, stranger, &options("z9hG4bKs1"));
    assert!(
        l.poll_event().is_some(),
        "a stranger's OPTIONS is heard normally"
    );
    for (rate, shed_all) in [(Some(50.0), false), (None, true)] {
        l.set_admission(rate, shed_all);
        l.handle_datagram(t0, stranger, &options(&format!("z9hG4bKs{shed_all}")));
        assert!(l.poll_event().is_none(), "behind, a stranger is not heard");
        assert!(drain_transmits(&mut l).is_empty(), "nor answered");
        l.handle_datagram(
            t0,
            peer(),
            &request_bytes("OPTIONS", &format!("z9hG4bKt{shed_all}"), ""),
        );
        assert!(l.poll_event().is_some(), "the trunk still is");
        l.set_admission(None, false);
    }
    // A limit starting lets the trunk's next call through; the one after waits its turn.
    l.set_admission(Some(5.0), false);
    let invite = |branch: &str, call: &str| {
        String::from_utf8(request_bytes("INVITE", branch, ""))
            .expect("text")
            .replace("call-1", call)
            .into_bytes()
    };
    l.handle_datagram(t0, peer(), &invite("z9hG4bKi1", "first"));
    assert!(
        l.poll_event().is_some(),
        "the first call under a new limit passes"
    );
    drain_transmits(&mut l);
    l.handle_datagram(t0, peer(), &invite("z9hG4bKi2", "second"));
    assert!(
        l.poll_event().is_none(),
        "the next one at once is over the limit"
    );
    assert!(drain_transmits(&mut l)
        .iter()
        .any(|t| t.starts_with("SIP/2.0 503")));
}

#[test]
fn invite_server_sends_trying_and_absorbs_retransmissions() {
    let mut l = layer();
    let t0 = Instant::now();
    let (tx, request) = new_server_tx(&mut l, t0, "INVITE");
    let sent = drain_transmits(&mut l);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("SIP/2.0 100"), "{}", sent[0]);
    // rport filled in and received added only when the host differs.
    assert!(sent[0].contains("rport=5070"), "{}", sent[0]);
    l.handle_datagram(t0, peer(), &request_bytes("INVITE", "z9hG4bKabc", ""));
    assert!(
        l.poll_event().is_none(),
        "a retransmission is not a new request"
    );
    assert_eq!(drain_transmits(&mut l).len(), 1, "the 100 is sent again");
    let mut busy = response_to(&request, 486, None);
    set_to_tag(&mut busy, "xyz");
    l.respond(t0, tx, busy);
    assert!(drain_transmits(&mut l)[0].starts_with("SIP/2.0 486"));
    // Timer G: retransmits at T1, then 2*T1 ... until the ACK.
    l.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(drain_transmits(&mut l).len(), 1);
    l.handle_timeout(t0 + Duration::from_millis(1500));
    assert_eq!(drain_transmits(&mut l).len(), 1);
    l.handle_datagram(
        t0 + Duration::from_millis(1600),
        peer(),
        &request_bytes("ACK", "z9hG4bKabc", ";tag=xyz"),
    );
    assert!(
        l.poll_event().is_none(),
        "ACK for a non-2xx stays in the transaction"
    );
    l.handle_timeout(t0 + Duration::from_secs(4));
    assert!(
        drain_transmits(&mut l).is_empty(),
        "no retransmission after the ACK"
    );
    l.handle_timeout(t0 + Duration::from_secs(7));
    assert_eq!(l.live_transactions(), (0, 0), "Timer I ended it");
}

#[test]
fn invite_2xx_is_retransmitted_until_ack_and_times_out_without_one() {
    let mut l = layer();
    let t0 = Instant::now();
    let (tx, request) = new_server_tx(&mut l, t0, "INVITE");
    drain_transmits(&mut l);
    let mut ok = response_to(&request, 200, None);
    set_to_tag(&mut ok, "xyz");
    l.respond(t0, tx, ok);
    assert_eq!(drain_transmits(&mut l).len(), 1);
    let mut at = t0;
    let mut retransmits = 0;
    while at < t0 + Duration::from_secs(40) {
        at += Duration::from_millis(100);
        l.handle_timeout(at);
        retransmits += drain_transmits(&mut l).len();
    }
    assert!(retransmits >= 7, "2xx retransmitted {retransmits} times");
    let events: Vec<_> = std::iter::from_fn(|| l.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, TransactionEvent::AckTimeout { tx: t } if *t == tx)),
        "{events:?}"
    );
}

#[test]
fn ack_for_2xx_stops_retransmission_and_reaches_the_user() {
    let mut l = layer();
    let t0 = Instant::now();
    let (tx, request) = new_server_tx(&mut l, t0, "INVITE");
    drain_transmits(&mut l);
    let mut ok = response_to(&request, 200, None);
    set_to_tag(&mut ok, "xyz");
    l.respond(t0, tx, ok);
    drain_transmits(&mut l);
    l.handle_datagram(
        t0 + Duration::from_millis(100),
        peer(),
        &request_bytes("ACK", "z9hG4bKother", ";tag=xyz"),
    );
    assert!(matches!(l.poll_event(), Some(TransactionEvent::Ack { .. })));
    // The transaction user found it came from the dialog's peer.
    l.ack_received(t0 + Duration::from_millis(100), "call-1", 1);
    l.handle_timeout(t0 + Duration::from_secs(2));
    assert!(drain_transmits(&mut l).is_empty());
    l.handle_timeout(t0 + Duration::from_secs(40));
    assert!(l.poll_event().is_none(), "no ACK timeout once acknowledged");
    assert_eq!(l.live_transactions(), (0, 0));
}

#[test]
fn cancel_matches_the_pending_invite() {
    let mut l = layer();
    let t0 = Instant::now();
    let (invite, _) = new_server_tx(&mut l, t0, "INVITE");
    drain_transmits(&mut l);
    l.handle_datagram(t0, peer(), &request_bytes("CANCEL", "z9hG4bKabc", ""));
    assert!(
        matches!(l.poll_event(), Some(TransactionEvent::Cancelled { invite: i }) if i == invite)
    );
    assert!(drain_transmits(&mut l)[0].starts_with("SIP/2.0 200"));
    l.handle_datagram(t0, peer(), &request_bytes("CANCEL", "z9hG4bKnothing", ""));
    assert!(drain_transmits(&mut l)[0].starts_with("SIP/2.0 481"));
}

#[test]
fn client_invite_retransmits_with_timer_a_and_times_out_with_timer_b() {
    let mut l = layer();
    let t0 = Instant::now();
    let request = match Message::parse_datagram(&request_bytes("INVITE", "z9hG4bKx", "")) {
        Ok(Message::Request(mut r)) => {
            r.headers.remove("Via");
            r
        }
        other => panic!("{other:?}"),
    };
    let tx = l.send_request(t0, request, peer(), Transport::Udp);
    assert_eq!(drain_transmits(&mut l).len(), 1);
    let mut sends = Vec::new();
    let mut at = t0;
    while at <= t0 + Duration::from_secs(33) {
        at += Duration::from_millis(50);
        l.handle_timeout(at);
        if !drain_transmits(&mut l).is_empty() {
            sends.push(at.duration_since(t0).as_millis());
        }
    }
    // T1 doubling: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
    assert_eq!(sends.len(), 6, "{sends:?}");
    assert!(
        (500..=550).contains(&sends[0]) && (1500..=1550).contains(&sends[1]),
        "{sends:?}"
    );
    assert!(matches!(l.poll_event(), Some(TransactionEvent::Timeout { tx: t }) if t == tx));
}

/// A TLS or TCP connection that cannot be made fails the INVITE over it at once (503 to
/// the transaction user), not 32 s later; a transaction to another peer is untouched.
#[test]
fn a_failed_connection_fails_its_transactions_at_once() {
    let mut l = layer();
    let t0 = Instant::now();
    let invite = || match Message::parse_datagram(&request_bytes("INVITE", "z9hG4bKx", "")) {
        Ok(Message::Request(mut r)) => {
            r.headers.remove("Via");
            r
        }
        other => panic!("{other:?}"),
    };
    let other: SocketAddr = "127.0.0.9:5061".parse().expect("addr");
    let tx = l.send_request(t0, invite(), peer(), Transport::Tls);
    let kept = l.send_request(t0, invite(), other, Transport::Tls);
    // Sent over TLS, the Via names the TLS listener's port.
    let sent = drain_transmits(&mut l);
    assert!(
        sent[0].contains("Via: SIP/2.0/TLS 127.0.0.1:5061;"),
        "{}",
        sent[0]
    );
    // The same address over another transport is another connection.
    l.handle_transport_error(peer(), Transport::Tcp);
    assert!(l.poll_event().is_none());
    l.handle_transport_error(peer(), Transport::Tls);
    assert!(matches!(l.poll_event(), Some(TransactionEvent::TransportError { tx: t }) if t == tx));
    assert!(l.poll_event().is_none());
    assert!(l.client_request(kept).is_some());
    assert!(l.client_request(tx).is_none());
}

#[test]
fn client_non_invite_final_response_is_delivered_once() {
    let mut l = layer();
    let t0 = Instant::now();
    let request = match Message::parse_datagram(&request_bytes("OPTIONS", "z9hG4bKx", "")) {
        Ok(Message::Request(mut r)) => {
            r.headers.remove("Via");
            r
        }
        other => panic!("{other:?}"),
    };
    let tx = l.send_request(t0, request, peer(), Transport::Udp);
    let sent = l.client_request(tx).expect("client tx").clone();
    drain_transmits(&mut l);
    let response = response_to(&sent, 200, None);
    let bytes = Message::Response(response).to_bytes();
    l.handle_datagram(t0, peer(), &bytes);
    l.handle_datagram(t0, peer(), &bytes);
    let events: Vec<_> = std::iter::from_fn(|| l.poll_event()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    l.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!(l.live_transactions(), (0, 0), "Timer K ended it");
}

#[test]
fn unanswerable_garbage_is_dropped_and_bad_requests_get_400() {
    let mut l = layer();
    let t0 = Instant::now();
    l.handle_datagram(t0, peer(), b"\x00\x01garbage\r\n\r\n");
    assert!(drain_transmits(&mut l).is_empty());
    let bad = String::from_utf8(request_bytes("OPTIONS", "z9hG4bKq", ""))
        .expect("utf8")
        .replace("CSeq: 1 OPTIONS", "CSeq: x OPTIONS");
    l.handle_datagram(t0, peer(), bad.as_bytes());
    let sent = drain_transmits(&mut l);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("SIP/2.0 400"), "{}", sent[0]);
}

/// A proxy that record-routed an INVITE stays on the dialog's path: the responses that may
/// establish the dialog carry its Record-Route back (§12.1.1); the rest need not.
#[test]
fn dialog_establishing_responses_copy_record_route() {
    let request = |method: &str| {
        let text = String::from_utf8(request_bytes(method, "z9hG4bKrr", ""))
            .expect("utf8")
            .replacen(
            "Call-ID:",
            "Record-Route: <sip:127.0.0.2;lr>\r\nRecord-Route: <sip:10.0.0.1;lr;ftag=x>\r\nCall-ID:",
            1,
        );
        match Message::parse_datagram(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    };
    let invite = request("INVITE");
    for status in [180, 183, 200] {
        let routes: Vec<String> = response_to(&invite, status, None)
            .headers
            .all("Record-Route")
            .map(str::to_string)
            .collect();
        assert_eq!(
            routes,
            ["<sip:127.0.0.2;lr>", "<sip:10.0.0.1;lr;ftag=x>"],
            "{status}"
        );
    }
    for (method, status) in [("INVITE", 100), ("INVITE", 486), ("OPTIONS", 200)] {
        let response = response_to(&request(method), status, None);
        assert!(
            response.headers.all("Record-Route").next().is_none(),
            "{method} {status}"
        );
    }
}
