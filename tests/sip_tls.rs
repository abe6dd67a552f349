//! SIP over TLS against a real softphone: baresip calls the echo route over TLS (verifying
//! the gateway's certificate against the CA the test made), plays a tone and hears it back;
//! the capture of the TLS port holds no SIP in the clear.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::{baresip_pem, make_certificates, tls_tables, Certificates};
use common::*;

#[test]
fn baresip_calls_the_echo_route_over_tls() {
    require_tool("baresip");
    require_tool("openssl");
    require_tool("sox");
    require_tool("tcpdump");
    let ports = Ports::block(80);
    let tls_port = ports.sip + 1;
    let dir = scratch("sip_tls_certs");
    let certificates = make_certificates(&dir);
    let sip = tls_tables(tls_port, &certificates);
    let ca = certificates.ca;
    let gw = Gateway::start_with_tables(
        "sip_tls",
        ports,
        &default_trunk(25291),
        Tables {
            sip: &sip,
            ..Tables::default()
        },
    );
    let gw_dir = gw.dir.clone();
    let capture = Capture::start(gw_dir.join("tls.pcap"), &format!("tcp port {tls_port}"));
    let tone = gw_dir.join("tone.wav");
    baresip::sox_tone(&tone, 20, 700, 0.3);
    let cfg = baresip::configure(
        &gw_dir,
        29260,
        &format!("sip_cafile {}\n", ca.display()),
        &tone,
        "<sip:tester@127.0.0.1;transport=tls>;regint=0",
    );
    let child = baresip::start(
        &cfg,
        &gw_dir,
        Some(&format!(
            "/dial sip:echo@127.0.0.1:{tls_port};transport=tls"
        )),
        6,
    );
    let out = wait_child(child, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let packets = capture.stop();
    assert!(
        stdout.contains("Call established"),
        "baresip: {stdout}\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log_text()
    );
    let log = gw.log_text();
    assert!(log.contains("SIP TLS connection"), "{log}");
    // baresip heard its own tone back through the echo.
    let (_, samples) = baresip::heard(&gw_dir, &stdout);
    let echoed = dominant_frequency(&samples, 300, 1500);
    assert!(
        echoed.abs_diff(700) <= 20,
        "the echo of the 700 Hz tone: {echoed} Hz"
    );
    // The signalling went encrypted: the TLS port carried bytes, none of them SIP text.
    drop(packets);
    let pcap = std::fs::read(gw_dir.join("tls.pcap")).expect("capture");
    assert!(
        pcap.len() > 2000,
        "only {} bytes captured on the TLS port",
        pcap.len()
    );
    for clear in [&b"SIP/2.0"[..], b"INVITE", b"echo@"] {
        assert!(
            !pcap.windows(clear.len()).any(|w| w == clear),
            "{} in the clear on the TLS port",
            String::from_utf8_lossy(clear)
        );
    }
}

/// The other way: `POST /v1/dial` through a trunk whose proxy is reached over TLS
/// (`transport=tls`, its certificate checked against the pinned `tls_ca`), to baresip
/// answering on its TLS port; the echo of baresip's tone comes back to it.
#[test]
fn a_dial_goes_out_through_a_tls_trunk_to_baresip() {
    require_tool("baresip");
    require_tool("openssl");
    require_tool("sox");
    let ports = Ports::block(81);
    let dir = scratch("sip_tls_out_certs");
    let certificates = make_certificates(&dir);
    let combined = baresip_pem(&dir, &certificates);
    let Certificates { ca, key, cert } = certificates;
    // baresip listens for TLS one port above its sip_listen.
    let (baresip_sip, baresip_tls) = (29280, 29281);
    // A first trunk pins another CA: its connection is refused on the certificate, the
    // INVITE fails at once (not at Timer B, 32 s, after baresip's 12 s are over), and the
    // dial goes on to the next trunk.
    let other_dir = dir.join("other");
    std::fs::create_dir_all(&other_dir).expect("dir");
    let other = make_certificates(&other_dir);
    // Its proxy: a TLS server whose certificate the test CA signed, not the pinned one.
    let impostor_port = 29290;
    let _impostor = KillOnDrop::new(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", &impostor_port.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts"),
    );
    let trunk = format!(
        r#"
[[trunk]]
name = "wrong-ca"
outbound_proxy = "sip:127.0.0.1:{impostor_port};transport=tls"
tls_ca = "{}"
options_interval = 0
dial_plan = ["+1*"]

[[trunk]]
name = "tls-carrier"
outbound_proxy = "sip:127.0.0.1:{baresip_tls};transport=tls"
tls_ca = "{}"
options_interval = 0
dial_plan = ["+1*"]
"#,
        other.ca.display(),
        ca.display()
    );
    let gw = Gateway::start("sip_tls_out", ports, &trunk);
    let gw_dir = gw.dir.clone();
    let tone = gw_dir.join("tone.wav");
    baresip::sox_tone(&tone, 20, 900, 0.3);
    let cfg = baresip::configure(
        &gw_dir,
        baresip_sip,
        &format!("sip_certificate {}\n", combined.display()),
        &tone,
        "<sip:+15551230001@127.0.0.1>;regint=0;answermode=auto",
    );
    let baresip = KillOnDrop::new(baresip::start(&cfg, &gw_dir, None, 12));
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = gw
        .http(
            "POST",
            "/v1/dial",
            Some(ADMIN_TOKEN),
            Some(r#"{"to":"+15551230001","media":"echo"}"#),
        )
        .expect("HTTP");
    let mut baresip = baresip;
    let out = wait_child(baresip.take(), Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(status, 200, "{body}\nbaresip: {stdout}\n{}", gw.log_text());
    assert!(stdout.contains("Call established"), "baresip: {stdout}");
    let log = gw.log_text();
    assert!(
        log.contains("trunk=wrong-ca") && log.contains("trunk=tls-carrier"),
        "{log}"
    );
    let refused = log
        .lines()
        .find(|l| l.contains("SIP TLS connect failed"))
        .unwrap_or_else(|| panic!("the wrong CA's trunk was not refused:\n{log}"));
    assert!(refused.contains("certificate"), "{refused}");
    let (_, samples) = baresip::heard(&gw_dir, &stdout);
    let heard = dominant_frequency(&samples, 300, 1500);
    assert!(
        heard.abs_diff(900) <= 20,
        "the echo of the 900 Hz tone: {heard} Hz"
    );
}

/// The TLS port facing the internet: plain SIP sent to it, or a connection that never starts
/// its handshake, is dropped (the latter at the handshake timeout), and the gateway goes on.
#[test]
fn strangers_on_the_sip_tls_port_are_let_go() {
    use std::io::{Read, Write};
    let ports = Ports::block(82);
    let tls_port = ports.sip + 1;
    let dir = scratch("sip_tls_strangers_certs");
    let sip = tls_tables(tls_port, &make_certificates(&dir));
    let gw = Gateway::start_with_tables(
        "sip_tls_strangers",
        ports,
        &default_trunk(25293),
        Tables {
            sip: &sip,
            ..Tables::default()
        },
    );
    let closed_within = |stream: &mut std::net::TcpStream, limit: Duration| {
        stream.set_read_timeout(Some(limit)).expect("timeout");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
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
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    plain
        .write_all(b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .expect("write");
    assert!(
        closed_within(&mut plain, Duration::from_secs(5)).is_some(),
        "plain SIP on the TLS port left the connection open"
    );
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", tls_port)).expect("connect");
    let took = closed_within(&mut silent, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("a silent connection stayed open:\n{}", gw.log_text()));
    println!("a connection that never started its handshake closed after {took:?}");
    assert_eq!(gw.http("GET", "/healthz", None, None).expect("HTTP").0, 200);
}
