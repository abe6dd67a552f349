//! SRTP toward trunks (SDES keys in SDP over SIP TLS) against a real softphone: baresip
//! calls in with mandatory SRTP (RTP/SAVP) and answers a dial with best-effort SRTP (RTP/AVP
//! with `a=crypto`); each hears its tone come back, and a capture of the gateway's RTP ports
//! holds only authenticated, encrypted packets. Over plain UDP SIP, keys are neither given
//! nor taken unless the trunk allows it.

mod common;

use std::time::Duration;

use common::tls::{baresip_pem, make_certificates, tls_tables};
use common::*;

/// A-law to linear (ITU-T G.711), the test's own.
fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0f);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// What 20 ms G.711 payloads decode to, as if they were plain.
fn decode_as_plain(payloads: &[(u8, &[u8])]) -> Vec<i16> {
    payloads
        .iter()
        .flat_map(|(pt, p)| {
            p.iter().map(move |&b| {
                if *pt == 8 {
                    alaw_to_linear(b)
                } else {
                    ulaw_to_linear(b)
                }
            })
        })
        .collect()
}

/// The `hz` tone's share of the signal: about 1.4 for a pure sine, near 0 for noise.
fn tone_share(samples: &[i16], hz: f64) -> f64 {
    tone_amplitude(samples, hz) / rms(samples).max(1.0)
}

/// The audio both ways between the gateway's RTP ports (`range`) and the peer was SRTP:
/// every G.711 packet carries an 80-bit tag after its 160 bytes, and its payload read as
/// plain G.711 holds nothing of the `hz` tone that was really sent (the same reading of
/// the plain tone finds it, so the check would catch plain RTP).
fn assert_srtp_only(packets: &[UdpPacket], range: std::ops::RangeInclusive<u16>, hz: f64) {
    let plain_tone: Vec<(u8, Vec<u8>)> = (0..50)
        .map(|frame| {
            let payload = (0..160)
                .map(|i| {
                    let t = f64::from(frame * 160 + i) / 8000.0;
                    linear_to_ulaw((9830.0 * (std::f64::consts::TAU * hz * t).sin()) as i16)
                })
                .collect();
            (0, payload)
        })
        .collect();
    let control: Vec<(u8, &[u8])> = plain_tone.iter().map(|(pt, p)| (*pt, &p[..])).collect();
    assert!(
        tone_share(&decode_as_plain(&control), hz) > 1.0,
        "the check finds a plain tone"
    );
    for from_gateway in [true, false] {
        let audio: Vec<&UdpPacket> = packets
            .iter()
            .filter(|p| range.contains(&p.src_port) == from_gateway)
            .filter(|p| range.contains(&p.src_port) || range.contains(&p.dst_port))
            .filter(|p| p.payload.len() >= 12 && p.payload[0] >> 6 == 2)
            .filter(|p| matches!(p.payload[1] & 0x7f, 0 | 8))
            .collect();
        let side = if from_gateway { "gateway" } else { "peer" };
        assert!(
            audio.len() >= 100,
            "{side}: only {} G.711 packets captured",
            audio.len()
        );
        let untagged = audio
            .iter()
            .filter(|p| p.payload.len() != 12 + 160 + 10)
            .count();
        assert!(
            untagged * 50 <= audio.len(),
            "{side}: {untagged} of {} packets are not 20 ms of G.711 with an 80-bit SRTP tag",
            audio.len()
        );
        let payloads: Vec<(u8, &[u8])> = audio
            .iter()
            .filter(|p| p.payload.len() == 182)
            .map(|p| (p.payload[1] & 0x7f, &p.payload[12..172]))
            .collect();
        let share = tone_share(&decode_as_plain(&payloads), hz);
        assert!(
            share < 0.1,
            "{side}: the {hz} Hz tone is readable in the captured payloads (share {share:.3})"
        );
    }
}

/// baresip calls the echo route over TLS with mandatory SRTP (`mediaenc=srtp-mand`:
/// RTP/SAVP), through a trunk that requires SRTP.
#[test]
fn baresip_calls_in_over_tls_with_srtp_required() {
    require_tool("baresip");
    require_tool("openssl");
    require_tool("sox");
    require_tool("tcpdump");
    let ports = Ports::block(83);
    let tls_port = ports.sip + 1;
    let dir = scratch("sip_srtp_in_certs");
    let certificates = make_certificates(&dir);
    // A trunk that only calls in (an outbound proxy over UDP would be refused with it).
    let trunk = r#"
[[trunk]]
name = "tls-in"
inbound_from = ["127.0.0.1/32"]
srtp = "required"
options_interval = 0
"#;
    let sip = tls_tables(tls_port, &certificates);
    let gw = Gateway::start_with_tables(
        "sip_srtp_in",
        ports,
        trunk,
        Tables {
            sip: &sip,
            ..Tables::default()
        },
    );
    let gw_dir = gw.dir.clone();
    let last = ports.rtp_min + ports.rtp_span - 1;
    let capture = Capture::start(
        gw_dir.join("rtp.pcap"),
        &format!("udp and portrange {}-{last}", ports.rtp_min),
    );
    let tone = gw_dir.join("tone.wav");
    baresip::sox_tone(&tone, 20, 700, 0.3);
    let cfg = baresip::configure(
        &gw_dir,
        29300,
        &format!(
            "sip_cafile {}\nrtp_ports 29320-29339\nmodule srtp.so\n",
            certificates.ca.display()
        ),
        &tone,
        "<sip:tester@127.0.0.1;transport=tls>;regint=0;mediaenc=srtp-mand",
    );
    let child = baresip::start(
        &cfg,
        &gw_dir,
        Some(&format!(
            "/dial sip:echo@127.0.0.1:{tls_port};transport=tls"
        )),
        7,
    );
    let out = wait_child(child, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let packets = capture.stop();
    let log = gw.log_text();
    assert!(
        stdout.contains("Call established"),
        "baresip: {stdout}\n{}\ngateway:\n{log}",
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        log.contains("SRTP with the trunk") && log.contains("AES_CM_128_HMAC_SHA1_80"),
        "{log}"
    );
    // baresip heard its own tone back: decrypted by the gateway, echoed, encrypted again.
    let (_, samples) = baresip::heard(&gw_dir, &stdout);
    let echoed = dominant_frequency(&samples, 300, 1500);
    assert!(
        echoed.abs_diff(700) <= 20,
        "the echo of the 700 Hz tone: {echoed} Hz"
    );
    assert_srtp_only(&packets, ports.rtp_min..=last, 700.0);
}

/// `POST /v1/dial` through a TLS trunk with `srtp = "optional"`: callgate offers RTP/AVP
/// with its key, baresip (`mediaenc=srtp`, best effort) answers with its own.
#[test]
fn a_dial_goes_out_over_tls_with_best_effort_srtp() {
    require_tool("baresip");
    require_tool("openssl");
    require_tool("sox");
    require_tool("tcpdump");
    let ports = Ports::block(84);
    let dir = scratch("sip_srtp_out_certs");
    let certificates = make_certificates(&dir);
    let combined = baresip_pem(&dir, &certificates);
    let (baresip_sip, baresip_tls) = (29310, 29311);
    let trunk = format!(
        r#"
[[trunk]]
name = "tls-carrier"
outbound_proxy = "sip:127.0.0.1:{baresip_tls};transport=tls"
tls_ca = "{}"
srtp = "optional"
options_interval = 0
dial_plan = ["+1*"]
"#,
        certificates.ca.display()
    );
    let gw = Gateway::start("sip_srtp_out", ports, &trunk);
    let gw_dir = gw.dir.clone();
    let last = ports.rtp_min + ports.rtp_span - 1;
    let capture = Capture::start(
        gw_dir.join("rtp.pcap"),
        &format!("udp and portrange {}-{last}", ports.rtp_min),
    );
    let tone = gw_dir.join("tone.wav");
    baresip::sox_tone(&tone, 20, 900, 0.3);
    let cfg = baresip::configure(
        &gw_dir,
        baresip_sip,
        &format!(
            "sip_certificate {}\nrtp_ports 29340-29359\nmodule srtp.so\n",
            combined.display()
        ),
        &tone,
        "<sip:+15551230001@127.0.0.1>;regint=0;answermode=auto;mediaenc=srtp",
    );
    let mut baresip = KillOnDrop::new(baresip::start(&cfg, &gw_dir, None, 12));
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = gw
        .http(
            "POST",
            "/v1/dial",
            Some(ADMIN_TOKEN),
            Some(r#"{"to":"+15551230001","media":"echo"}"#),
        )
        .expect("HTTP");
    let out = wait_child(baresip.take(), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let packets = capture.stop();
    let log = gw.log_text();
    assert_eq!(status, 200, "{body}\nbaresip: {stdout}\n{log}");
    assert!(stdout.contains("Call established"), "baresip: {stdout}");
    assert!(log.contains("SRTP with the trunk"), "{log}");
    let (_, samples) = baresip::heard(&gw_dir, &stdout);
    let heard = dominant_frequency(&samples, 300, 1500);
    assert!(
        heard.abs_diff(900) <= 20,
        "the echo of the 900 Hz tone: {heard} Hz"
    );
    assert_srtp_only(&packets, ports.rtp_min..=last, 900.0);
}

/// Over plain UDP SIP the keys would be readable on the way: an RTP/SAVP offer is refused
/// (488) and best-effort keys are not answered with ours, a trunk that requires SRTP takes
/// no call at all, and a trunk whose operator allowed it (`srtp_over_plain_sip`) does SRTP.
#[test]
fn keys_cross_plain_sip_only_where_the_operator_allows_it() {
    let ports = Ports::block(85);
    let trunks = r#"
[[trunk]]
name = "optional"
inbound_from = ["127.0.0.1/32"]
srtp = "optional"
options_interval = 0

[[trunk]]
name = "required"
inbound_from = ["127.0.0.2/32"]
srtp = "required"
options_interval = 0

[[trunk]]
name = "private-link"
inbound_from = ["127.0.0.3/32"]
srtp = "optional"
srtp_over_plain_sip = true
options_interval = 0
"#;
    let gw = Gateway::start("sip_srtp_udp", ports, trunks);
    let to = gw.sip_addr();
    let uri = format!("sip:echo@127.0.0.1:{}", ports.sip);
    let sdp_type = "Content-Type: application/sdp\r\n";
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let crypto = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n");
    let offer = |protocol: &str, with_keys: bool| {
        sdp_offer(27310, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv").replace("RTP/AVP", protocol)
            + if with_keys { &crypto } else { "" }
    };
    let call = |local: &str, body: &str| {
        sip_exchange(
            local,
            to,
            &raw_request("INVITE", &uri, local, sdp_type, body),
        )
        .expect("answered")
    };

    let r = call("127.0.0.1:27311", &offer("RTP/SAVP", true));
    assert_eq!(sip_status(&r), 488, "SAVP over UDP: {r}");
    let r = call("127.0.0.1:27312", &offer("RTP/AVP", true));
    assert_eq!(sip_status(&r), 200, "{r}");
    assert!(!r.contains("a=crypto"), "our key in the clear: {r}");
    let r = call("127.0.0.2:27313", &offer("RTP/AVP", false));
    assert_eq!(sip_status(&r), 488, "{r}");
    let r = call("127.0.0.3:27314", &offer("RTP/SAVP", true));
    assert_eq!(sip_status(&r), 200, "{r}");
    assert!(r.contains("m=audio") && r.contains("RTP/SAVP"), "{r}");
    assert!(
        r.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") && !r.contains(key),
        "answered with a key of our own: {r}"
    );
    let log = gw.log_text();
    assert!(log.contains("the trunk requires SRTP"), "{log}");
}
