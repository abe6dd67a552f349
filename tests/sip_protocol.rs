//! SIP protocol rules checked over the wire against the running gateway with raw UDP: who may
//! call, what gets which error, and that bad bytes never wedge the stack.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use callgate::sip::digest::{self, Challenge};
use common::*;

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn pcmu_offer() -> String {
    sdp_offer(27000, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv")
}

const CARRIER_TRUNK: &str = r#"
[[trunk]]
name = "carrier"
inbound_username = "carrier"
inbound_password = "carrier-pass"
options_interval = 0
"#;

#[test]
fn protocol_answers_over_udp() {
    let ports = Ports::block(11);
    let gw = Gateway::start("sip_protocol", ports, &default_trunk(25111));
    let to = gw.sip_addr();
    let local = "127.0.0.1:27101";
    let uri = |user: &str| format!("sip:{user}@127.0.0.1:{}", ports.sip);

    let r = sip_exchange(
        local,
        to,
        &raw_request("OPTIONS", &uri("echo"), local, "", ""),
    )
    .expect("OPTIONS answered");
    assert_eq!(sip_status(&r), 200, "{r}");
    assert!(
        header(&r, "Allow").is_some_and(|a| a.contains("INVITE") && a.contains("UPDATE")),
        "{r}"
    );

    let r = sip_exchange(
        local,
        to,
        &raw_request("SUBSCRIBE", &uri("echo"), local, "Event: presence\r\n", ""),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 405, "{r}");
    assert!(header(&r, "Allow").is_some(), "405 carries Allow: {r}");

    let sdp_type = "Content-Type: application/sdp\r\n";
    let r = sip_exchange(
        local,
        to,
        &raw_request(
            "INVITE",
            &uri("echo"),
            local,
            &format!("{sdp_type}Require: 100rel\r\n"),
            &pcmu_offer(),
        ),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 420, "{r}");
    assert_eq!(header(&r, "Unsupported"), Some("100rel"), "{r}");

    let invite = String::from_utf8(raw_request(
        "INVITE",
        &uri("echo"),
        local,
        sdp_type,
        &pcmu_offer(),
    ))
    .expect("utf8");
    let r = sip_exchange(
        local,
        to,
        invite
            .replace("Max-Forwards: 70", "Max-Forwards: 0")
            .as_bytes(),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 483, "{r}");

    let g729 = sdp_offer(27000, "18", "a=rtpmap:18 G729/8000\r\n", "sendrecv");
    let r = sip_exchange(
        local,
        to,
        &raw_request("INVITE", &uri("echo"), local, sdp_type, &g729),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 488, "{r}");

    let r = sip_exchange(
        local,
        to,
        &raw_request("INVITE", &uri("nobody"), local, sdp_type, &pcmu_offer()),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 404, "{r}");

    let r = sip_exchange(
        local,
        to,
        &raw_request(
            "INVITE",
            "mailto:x@example.com",
            local,
            sdp_type,
            &pcmu_offer(),
        ),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 416, "{r}");

    let bye = String::from_utf8(raw_request("BYE", &uri("echo"), local, "", "")).expect("utf8");
    let bye = bye.replace(
        &format!("To: <{}>", uri("echo")),
        &format!("To: <{}>;tag=nosuchdialog", uri("echo")),
    );
    let r = sip_exchange(local, to, bye.as_bytes()).expect("answered");
    assert_eq!(sip_status(&r), 481, "{r}");

    let r = sip_exchange(
        local,
        to,
        &raw_request(
            "INVITE",
            &uri("echo"),
            local,
            "Content-Type: text/plain\r\n",
            "hello",
        ),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 415, "{r}");

    // What went by is counted in /metrics (open to loopback clients).
    let (status, metrics) = gw.http("GET", "/metrics", None, None).expect("metrics");
    assert_eq!(status, 200);
    for line in [
        "callgate_sip_messages_total{direction=\"in\",message=\"OPTIONS\"}",
        "callgate_sip_messages_total{direction=\"out\",message=\"405\"}",
        "callgate_sip_messages_total{direction=\"out\",message=\"420\"}",
        "callgate_calls{status=\"active\"}",
        "callgate_websocket_connections 0",
        "callgate_transcode_seconds_total",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[test]
fn only_configured_trunks_may_call() {
    let ports = Ports::block(12);
    let gw = Gateway::start(
        "trunk_security",
        ports,
        &format!("{}{}", default_trunk(25121), CARRIER_TRUNK),
    );
    let to = gw.sip_addr();
    let uri = format!("sip:echo@127.0.0.1:{}", ports.sip);
    let sdp_type = "Content-Type: application/sdp\r\n";

    // 127.0.0.2 is on loopback but not in the trunk's inbound_from: challenged (a trunk
    // has credentials), and a wrong password is challenged again (401, the same answer as
    // for a wrong user, so nothing tells a guesser which was wrong).
    let local = "127.0.0.2:27201";
    let invite = raw_request("INVITE", &uri, local, sdp_type, &pcmu_offer());
    let r = sip_exchange(local, to, &invite).expect("answered");
    assert_eq!(sip_status(&r), 401, "{r}");
    let challenges: Vec<Challenge> = r
        .lines()
        .filter_map(|l| l.strip_prefix("WWW-Authenticate:"))
        .filter_map(|v| Challenge::parse(v.trim()).ok())
        .collect();
    assert!(
        challenges
            .iter()
            .any(|c| c.algorithm == digest::Algorithm::Sha256),
        "{r}"
    );
    assert!(
        challenges
            .iter()
            .any(|c| c.algorithm == digest::Algorithm::Md5),
        "{r}"
    );

    for (password, expected) in [("wrong", 401), ("carrier-pass", 200)] {
        for challenge in &challenges {
            let auth = digest::respond(
                challenge, "INVITE", &uri, "carrier", password, "abcdef", 1, b"",
            );
            let local = "127.0.0.2:27202";
            let request = raw_request(
                "INVITE",
                &uri,
                local,
                &format!("{sdp_type}Authorization: {auth}\r\n"),
                &pcmu_offer(),
            );
            let r = sip_exchange(local, to, &request).expect("answered");
            assert_eq!(
                sip_status(&r),
                expected,
                "{:?} with {password}: {r}",
                challenge.algorithm
            );
            if expected == 200 {
                hang_up_answered(
                    local,
                    to,
                    &uri,
                    std::str::from_utf8(&request).expect("utf8"),
                    &r,
                );
            }
        }
    }
    gw.wait_idle(Duration::from_secs(5));
}

/// ACK the 2xx and BYE the call, as the caller would.
fn hang_up_answered(
    local: &str,
    to: std::net::SocketAddr,
    uri: &str,
    request: &str,
    response: &str,
) {
    let from = header(request, "From").expect("From");
    let call_id = header(request, "Call-ID").expect("Call-ID");
    let to_header = header(response, "To").expect("To");
    // The exchange's socket on this address has just closed; the kernel may take a moment.
    let socket = bind_udp(local);
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    for (method, seq) in [("ACK", 1), ("BYE", 2)] {
        let msg = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{:x};rport\r\nFrom: {from}\r\nTo: {to_header}\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            rand_u64()
        );
        socket.send_to(msg.as_bytes(), to).expect("send");
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = socket.recv_from(&mut buf).expect("BYE answered");
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.contains("BYE") && text.starts_with("SIP/2.0 ") {
            assert_eq!(sip_status(&text), 200, "{text}");
            break;
        }
    }
}

#[test]
fn source_not_in_any_trunk_gets_403_without_credentials_configured() {
    let ports = Ports::block(13);
    let gw = Gateway::start("trunk_403", ports, &default_trunk(25131));
    let local = "127.0.0.3:27301";
    let uri = format!("sip:echo@127.0.0.1:{}", ports.sip);
    let r = sip_exchange(
        local,
        gw.sip_addr(),
        &raw_request(
            "INVITE",
            &uri,
            local,
            "Content-Type: application/sdp\r\n",
            &pcmu_offer(),
        ),
    )
    .expect("answered");
    assert_eq!(sip_status(&r), 403, "{r}");
    assert!(
        gw.log_text().contains("127.0.0.3"),
        "refusal is logged with the source"
    );
}

/// Every torture fixture and a burst of garbage over UDP: answered or dropped, never a
/// crash or a wedge: OPTIONS still works afterwards.
#[test]
fn torture_and_garbage_do_not_wedge_the_stack() {
    let ports = Ports::block(14);
    let gw = Gateway::start("torture_udp", ports, &default_trunk(25141));
    let socket = UdpSocket::bind("127.0.0.1:27401").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut sent = 0;
    for kind in ["valid", "invalid"] {
        let dir = repo_root().join("tests").join("torture").join(kind);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file).expect("fixture");
            if bytes.len() < 65000 {
                socket.send_to(&bytes, gw.sip_addr()).expect("send");
                sent += 1;
            }
        }
    }
    let mut seed = 0x1234_5678_u64;
    for i in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1400) as usize;
        let mut junk: Vec<u8> = (0..len)
            .map(|j| (seed.rotate_left(j as u32 % 64) & 0xff) as u8)
            .collect();
        if i % 3 == 0 {
            // Plausible start lines with broken rest reach deeper into the parser.
            let mut start =
                b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:27401\r\n"
                    .to_vec();
            start.append(&mut junk);
            junk = start;
        }
        socket.send_to(&junk, gw.sip_addr()).expect("send");
    }
    assert!(sent > 40, "fixtures found: {sent}");
    std::thread::sleep(Duration::from_millis(500));
    let local = "127.0.0.1:27402";
    let r = sip_exchange(
        local,
        gw.sip_addr(),
        &raw_request(
            "OPTIONS",
            &format!("sip:echo@127.0.0.1:{}", ports.sip),
            local,
            "",
            "",
        ),
    )
    .expect("still answering OPTIONS after the torture");
    assert_eq!(sip_status(&r), 200);
}

#[test]
fn malformed_request_gets_400_naming_the_problem() {
    let ports = Ports::block(15);
    let gw = Gateway::start("malformed_400", ports, &default_trunk(25151));
    let local = "127.0.0.1:27501";
    let request = String::from_utf8(raw_request(
        "OPTIONS",
        &format!("sip:echo@127.0.0.1:{}", ports.sip),
        local,
        "",
        "",
    ))
    .expect("utf8");
    let request = request.replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS");
    let r = sip_exchange(local, gw.sip_addr(), request.as_bytes()).expect("answered");
    assert_eq!(sip_status(&r), 400, "{r}");
    let reason = r.lines().next().unwrap_or("");
    assert!(
        reason.to_ascii_lowercase().contains("cseq"),
        "reason names the header: {reason}"
    );
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = scratch("check_config");
    let bad = dir.join("bad.toml");
    let text =
        std::fs::read_to_string(repo_root().join("config/callgate.toml")).expect("shipped config");
    // `callgate check-config` on `config` fails (exit 1) naming `key`.
    let refused_naming = |config: String, key: &str| {
        std::fs::write(&bad, config).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(["check-config"])
            .arg(&bad)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{stderr}");
    };
    refused_naming(
        text.replace("port_min = 20000", "port_min = 30000"),
        "rtp.port_min",
    );
    // A PostgreSQL URL its client cannot read is named too, before any connection is tried.
    refused_naming(
        text.replace(
            "[store]\n",
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://cg@127.0.0.1:notaport/cg\"\n",
        ),
        "store.url",
    );
    let good = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check-config", "config/callgate.toml"])
        .current_dir(repo_root())
        .output()
        .expect("runs");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for word in ["serve", "check-config", "dial", "hangup"] {
        assert!(help.contains(word), "--help lists {word}: {help}");
    }
}

/// RFC 5626 keepalives on a SIP TCP connection: a double-CRLF ping gets a CRLF pong, a flood of
/// CRLFs is dropped rather than buffered, and a request after them is still answered.
#[test]
fn tcp_keepalives_are_answered_and_never_buffered() {
    use std::io::{Read, Write};
    let ports = Ports::block(16);
    let gw = Gateway::start("tcp_keepalive", ports, &default_trunk(25161));
    let mut stream = std::net::TcpStream::connect(gw.sip_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(b"\r\n\r\n").expect("ping");
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).expect("pong");
    assert_eq!(&pong, b"\r\n");
    // Far more CRLF than the largest message the gateway accepts.
    let flood = b"\r\n".repeat(200_000);
    stream.write_all(&flood).expect("flood");
    let local = stream.local_addr().expect("local").to_string();
    let uri = format!("sip:echo@127.0.0.1:{}", ports.sip);
    let options = String::from_utf8(raw_request("OPTIONS", &uri, &local, "", ""))
        .expect("utf8")
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    stream.write_all(options.as_bytes()).expect("OPTIONS");
    // Pongs for the flood may come first; the answer follows them.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("SIP/2.0 200") {
        let n = stream
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("no answer after keepalives ({e}): {}", gw.log_text()));
        assert!(n > 0, "connection closed: {}", gw.log_text());
        seen.extend_from_slice(&chunk[..n]);
    }
}
