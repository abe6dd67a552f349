//! RTP behaviour on the wire with a hand-driven peer: symmetric RTP latching (a NATed peer
//! whose packets come from another port than its SDP says), our SSRC/sequence/timestamp
//! continuity, RTCP sender reports, and RFC 4733 DTMF both ways.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

struct RawCall {
    sip: UdpSocket,
    gateway: SocketAddr,
    uri: String,
    from: String,
    call_id: String,
    to: String,
    remote_rtp: SocketAddr,
    local: String,
}

fn header(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

impl RawCall {
    /// INVITE `user` with an SDP naming `sdp_port`, wait for the 200, ACK it.
    fn invite(
        gateway: SocketAddr,
        local: &str,
        user: &str,
        sdp_port: u16,
        rtpmaps: (&str, &str),
    ) -> RawCall {
        let sip = UdpSocket::bind(local).expect("bind SIP");
        sip.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let uri = format!("sip:{user}@{gateway}");
        let body = sdp_offer(sdp_port, rtpmaps.0, rtpmaps.1, "sendrecv");
        let request = raw_request(
            "INVITE",
            &uri,
            local,
            "Content-Type: application/sdp\r\n",
            &body,
        );
        let text = String::from_utf8(request.clone()).expect("utf8");
        sip.send_to(&request, gateway).expect("send INVITE");
        let mut buf = vec![0u8; 65536];
        let response = loop {
            let (n, _) = sip.recv_from(&mut buf).expect("INVITE answered");
            let r = String::from_utf8_lossy(&buf[..n]).to_string();
            if r.starts_with("SIP/2.0 200") {
                break r;
            }
            assert!(r.starts_with("SIP/2.0 1"), "unexpected: {r}");
        };
        let sdp = response.split("\r\n\r\n").nth(1).expect("SDP answer");
        let port: u16 = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("m= port");
        let call = RawCall {
            gateway,
            uri,
            from: header(&text, "From").expect("From"),
            call_id: header(&text, "Call-ID").expect("Call-ID"),
            to: header(&response, "To").expect("To"),
            remote_rtp: SocketAddr::from(([127, 0, 0, 1], port)),
            local: local.to_string(),
            sip,
        };
        call.send_in_dialog("ACK", 1);
        call
    }

    fn send_in_dialog(&self, method: &str, seq: u32) {
        let msg = format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{:x};rport\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.uri, self.local, rand_u64(), self.from, self.to, self.call_id
        );
        self.sip
            .send_to(msg.as_bytes(), self.gateway)
            .expect("send");
    }

    fn bye(&self) {
        self.send_in_dialog("BYE", 2);
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = self.sip.recv_from(&mut buf).expect("BYE answered");
            let r = String::from_utf8_lossy(&buf[..n]);
            if r.starts_with("SIP/2.0") && r.contains("BYE") {
                assert!(r.starts_with("SIP/2.0 200"), "{r}");
                return;
            }
        }
    }
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A flood at a call's RTP port from a stranger costs the gateway no more than when every
/// packet waited for the frame clock: the call reads at most 64 datagrams a frame's time on
/// arrival, and the kernel drops the rest. Once the flood stops the echo goes on.
#[test]
fn a_flood_at_a_calls_port_is_read_at_a_bounded_rate() {
    let ports = Ports::block(35);
    let gw = Gateway::start("rtp_flood", ports, &default_trunk(28511));
    let call = RawCall::invite(
        gw.sip_addr(),
        "127.0.0.1:28500",
        "echo",
        28510,
        ("0", "a=rtpmap:0 PCMU/8000\r\n"),
    );
    let rtp = UdpSocket::bind("127.0.0.1:28510").expect("bind RTP");
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let tone = [0x20u8; 160];
    let mut buf = [0u8; 2048];
    let mut echoes = |from_seq: u16, count: u16| {
        let mut back = 0;
        for i in 0..count {
            let seq = from_seq + i;
            rtp.send_to(
                &rtp_packet(0, seq, u32::from(seq) * 160, 0x5151, false, &tone),
                call.remote_rtp,
            )
            .expect("send");
            if rtp.recv_from(&mut buf).is_ok() {
                back += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        back
    };
    assert!(echoes(0, 10) >= 9, "the echo answers before the flood");
    let before = gw.metric("callgate_rtp_foreign_packets_total");
    let attacker = UdpSocket::bind("127.0.0.9:28520").expect("bind attacker");
    let packet = rtp_packet(0, 1, 160, 0x0bad_cafe, false, &tone);
    let started = Instant::now();
    let mut sent = 0u32;
    while sent < 30_000 && started.elapsed() < Duration::from_secs(2) {
        let _ = attacker.send_to(&packet, call.remote_rtp);
        sent += 1;
    }
    // What was queued when the flood stopped is read too (the socket's buffer, a few hundred).
    std::thread::sleep(Duration::from_millis(500));
    let window = started.elapsed();
    let read = gw.metric("callgate_rtp_foreign_packets_total") - before;
    let bound = 64.0 * (window.as_secs_f64() / 0.020 + 2.0);
    println!(
        "flood: {sent} packets in {:?}; the gateway read {read} in {window:?} (bound {bound:.0})",
        started.elapsed()
    );
    assert!(sent >= 5_000, "the attacker sent {sent}");
    assert!(read > 0.0, "the flood reached the call");
    assert!(read <= bound, "{read} read, more than {bound:.0}");
    assert!(echoes(100, 10) >= 9, "the echo answers after the flood");
}

#[test]
fn echo_latches_to_the_real_source_and_keeps_its_stream_continuous() {
    let ports = Ports::block(31);
    let gw = Gateway::start("rtp_latch", ports, &default_trunk(25311));
    // The SDP names port 28000, but the packets come from 28010: a NAT rewrote it.
    let call = RawCall::invite(
        gw.sip_addr(),
        "127.0.0.1:28100",
        "echo",
        28000,
        ("0", "a=rtpmap:0 PCMU/8000\r\n"),
    );
    let rtp = UdpSocket::bind("127.0.0.1:28010").expect("bind RTP");
    let rtcp = UdpSocket::bind("127.0.0.1:28011").expect("bind RTCP");
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let tone: Vec<u8> = (0..160)
        .map(|i| if i % 2 == 0 { 0x20 } else { 0xA0 })
        .collect();
    let mut echoed = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..100u16 {
        // Two bursts from two SSRCs (the peer restarts its stream): ours must not jump.
        let ssrc = if i < 50 { 0x1111 } else { 0x2222 };
        let ts = if i < 50 {
            u32::from(i) * 160
        } else {
            900_000 + u32::from(i) * 160
        };
        rtp.send_to(
            &rtp_packet(0, 1000 + i, ts, ssrc, i == 0, &tone),
            call.remote_rtp,
        )
        .expect("send");
        if let Ok((n, from)) = rtp.recv_from(&mut buf) {
            assert_eq!(from, call.remote_rtp, "echo comes from the port in our SDP");
            echoed.push(buf[..n].to_vec());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(echoed.len() >= 95, "echoed {} of 100", echoed.len());
    let ssrcs: std::collections::HashSet<_> = echoed
        .iter()
        .map(|p| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        .collect();
    assert_eq!(ssrcs.len(), 1, "one SSRC toward the peer");
    for pair in echoed.windows(2) {
        let s0 = u16::from_be_bytes([pair[0][2], pair[0][3]]);
        let s1 = u16::from_be_bytes([pair[1][2], pair[1][3]]);
        assert_eq!(s1, s0.wrapping_add(1), "sequence continuous");
        let t0 = u32::from_be_bytes([pair[0][4], pair[0][5], pair[0][6], pair[0][7]]);
        let t1 = u32::from_be_bytes([pair[1][4], pair[1][5], pair[1][6], pair[1][7]]);
        assert!(
            t1.wrapping_sub(t0) <= 160 * 3,
            "timestamp jump {t0} -> {t1}"
        );
    }
    assert_eq!(&echoed[10][12..], &tone[..], "payload echoed unchanged");
    // RTCP: a sender report reaches the latched RTCP port within the 5 s interval.
    rtcp.set_read_timeout(Some(Duration::from_secs(7)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut got_sr = false;
    while Instant::now() < deadline && !got_sr {
        // Keep RTP flowing so the report has something to report.
        rtp.send_to(
            &rtp_packet(0, 2000, 1_000_000, 0x2222, false, &tone),
            call.remote_rtp,
        )
        .ok();
        if let Ok((n, _)) = rtcp.recv_from(&mut buf) {
            got_sr = n >= 28 && buf[1] == 200;
        }
    }
    assert!(got_sr, "no RTCP SR received");
    call.bye();
    gw.wait_idle(Duration::from_secs(5));
}

#[test]
fn dtmf_both_ways_with_rfc4733() {
    let ports = Ports::block(32);
    let gw = Gateway::start("rtp_dtmf", ports, &default_trunk(25321));
    let call = RawCall::invite(
        gw.sip_addr(),
        "127.0.0.1:28200",
        "announce",
        28210,
        (
            "0 101",
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
        ),
    );
    let rtp = UdpSocket::bind("127.0.0.1:28210").expect("bind RTP");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // In: digit 7, start + updates + three end packets with the same timestamp.
    for (i, (end, duration)) in [
        (false, 160u16),
        (false, 320),
        (false, 480),
        (true, 640),
        (true, 640),
        (true, 640),
    ]
    .iter()
    .enumerate()
    {
        let payload = [
            7u8,
            if *end { 0x80 | 10 } else { 10 },
            (duration >> 8) as u8,
            *duration as u8,
        ];
        rtp.send_to(
            &rtp_packet(101, 500 + i as u16, 8000, 0x3333, i == 0, &payload),
            call.remote_rtp,
        )
        .expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (_, body) = gw
        .http("GET", "/v1/live-calls", Some(ADMIN_TOKEN), None)
        .expect("live calls");
    assert!(
        body.contains("\"dtmf\":\"7\""),
        "digit 7 received exactly once: {body}"
    );
    // Out: the admin API sends "19" toward the caller as telephone-events.
    let call_id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["calls"][0]
        ["call_id"]
        .as_str()
        .expect("call id")
        .to_string();
    let (status, reply) = gw
        .http(
            "POST",
            &format!("/v1/calls/{call_id}/dtmf"),
            Some(ADMIN_TOKEN),
            Some(r#"{"digits":"19"}"#),
        )
        .expect("dtmf");
    assert_eq!(status, 200, "{reply}");
    let mut events = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok((n, _)) = rtp.recv_from(&mut buf) {
            if n >= 16 && buf[1] & 0x7f == 101 {
                events.push((
                    buf[12],
                    buf[13] & 0x80 != 0,
                    u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                ));
            }
        }
    }
    let digits: Vec<u8> = events
        .iter()
        .filter(|e| e.1)
        .map(|e| e.0)
        .collect::<Vec<_>>();
    assert!(
        digits.contains(&1) && digits.contains(&9),
        "events {events:?}"
    );
    let ends_of_1: Vec<_> = events.iter().filter(|e| e.0 == 1 && e.1).collect();
    assert_eq!(
        ends_of_1.len(),
        3,
        "end packet sent three times: {events:?}"
    );
    assert!(
        ends_of_1.iter().all(|e| e.2 == ends_of_1[0].2),
        "one timestamp per event"
    );
    call.bye();
    gw.wait_idle(Duration::from_secs(5));
}

/// An Opus trunk peer that takes in-band FEC (`useinbandfec=1`) gets it once its receiver
/// report says it loses packets, and no longer once a report says it does not.
#[test]
fn an_opus_peer_reporting_loss_gets_in_band_fec() {
    let ports = Ports::block(34);
    let gw = Gateway::start("rtp_opus_fec", ports, &default_trunk(25341));
    let call = RawCall::invite(
        gw.sip_addr(),
        "127.0.0.1:28130",
        "announce",
        28120,
        (
            "111",
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n",
        ),
    );
    let rtp = UdpSocket::bind("127.0.0.1:28120").expect("bind RTP");
    let rtcp = UdpSocket::bind("127.0.0.1:28121").expect("bind RTCP");
    rtp.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let gateway_rtcp = SocketAddr::new(call.remote_rtp.ip(), call.remote_rtp.port() + 1);
    let mut buf = [0u8; 2048];
    // Opus packets received over `window`, and the gateway's SSRC.
    let mut listen = |window: Duration| -> (Vec<Vec<u8>>, u32) {
        let until = Instant::now() + window;
        let mut packets = Vec::new();
        let mut ssrc = 0;
        while Instant::now() < until {
            if let Ok(n) = rtp.recv(&mut buf) {
                if n > 12 && buf[1] & 0x7f == 111 {
                    ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    packets.push(buf[12..n].to_vec());
                }
            }
        }
        (packets, ssrc)
    };
    // A receiver report on the gateway's stream: `fraction_lost` of 256 lost.
    let report = |about: u32, fraction_lost: u8| {
        let mut rr = vec![0x81, 201, 0, 7];
        rr.extend_from_slice(&0x7e57_0001u32.to_be_bytes());
        rr.extend_from_slice(&about.to_be_bytes());
        rr.extend_from_slice(&[fraction_lost, 0, 0, 5]);
        rr.extend_from_slice(&[0; 16]);
        rtcp.send_to(&rr, gateway_rtcp).expect("send RR");
    };

    let (clean, ssrc) = listen(Duration::from_millis(1500));
    assert!(
        clean.len() > 50,
        "the announcement plays: {} packets",
        clean.len()
    );
    let fec = |p: &[Vec<u8>]| p.iter().filter(|p| opus_has_fec(p)).count();
    assert_eq!(fec(&clean), 0, "no loss reported, no FEC");

    report(ssrc, 26); // 10 %
    let (lossy, _) = listen(Duration::from_millis(1500));
    let with = fec(&lossy);
    println!(
        "10 % loss reported: {with} of {} packets carry FEC",
        lossy.len()
    );
    assert!(
        with * 2 > lossy.len(),
        "{with} of {} carry FEC",
        lossy.len()
    );

    report(ssrc, 0);
    // What was sent before the report landed, and the one packet after it that still
    // carries the frame before, are not what the report changed.
    listen(Duration::from_millis(200));
    let (healed, _) = listen(Duration::from_millis(1300));
    assert_eq!(fec(&healed), 0, "the loss is over, and so is FEC");
    call.bye();
}
