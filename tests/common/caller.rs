//! A SIP caller on raw sockets (SIP on one, RTP on the next), so a test can measure what the
//! gateway sends each caller at any moment, and make a caller talk: a PCMU tone paced by the
//! clock, as a phone would send it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;

/// The agent answers the call ringing it (the next `call.incoming`) and `caller` hears the
/// 200. Returns the call id.
pub fn answer_incoming(agent: &mut AgentSocket, caller: &mut Caller) -> String {
    let incoming = next_of(agent, "call.incoming");
    let id = incoming["call"]["call_id"]
        .as_str()
        .expect("call id")
        .to_string();
    let ok = request(
        agent,
        serde_json::json!({"type": "call.answer", "call_id": id}),
    );
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(caller.final_response(Duration::from_secs(5)), 200);
    id
}

/// A caller on raw sockets: SIP on one, RTP on the next.
pub struct Caller {
    pub sip: UdpSocket,
    pub rtp: UdpSocket,
    pub gateway: std::net::SocketAddr,
    /// The number called.
    pub did: String,
    pub number: String,
    pub call_id: String,
    pub to_tag: Option<String>,
    /// Through a proxy that record-routes (Kamailio): the route set and the remote target
    /// the 2xx gave, which requests inside the dialog follow.
    pub route: Option<String>,
    pub target: Option<String>,
    pub remote_rtp: Option<std::net::SocketAddr>,
    /// Every RTP packet received, read as it arrives by a thread of its own.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Packet>>>,
    /// Set to stop the tone this caller sends.
    tone_stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// An RTP packet the caller received, with its arrival time.
#[derive(Clone)]
pub struct Packet {
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload_type: u8,
    pub arrival: Instant,
    pub payload: Vec<u8>,
}

impl Caller {
    pub fn dial(gw: &Gateway, number: &str, sip_port: u16) -> Caller {
        Caller::dial_from(gw, number, "127.0.0.1", sip_port)
    }

    /// Dial from another loopback address (another trunk's `inbound_from`).
    pub fn dial_from(gw: &Gateway, number: &str, ip: &str, sip_port: u16) -> Caller {
        Caller::dial_via(gw.sip_addr(), "+15550000100", number, ip, sip_port)
    }

    /// Dial `did` through `proxy` (a gateway, or Kamailio in front of several).
    pub fn dial_via(
        proxy: std::net::SocketAddr,
        did: &str,
        number: &str,
        ip: &str,
        sip_port: u16,
    ) -> Caller {
        let sip = bind_udp(&format!("{ip}:{sip_port}"));
        let rtp = bind_udp(&format!("{ip}:{}", sip_port + 2));
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        rtp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let caller = Caller {
            sip,
            rtp,
            gateway: proxy,
            did: did.to_string(),
            number: number.to_string(),
            call_id: format!("{:x}@waiting-test", rand_u64()),
            to_tag: None,
            route: None,
            target: None,
            remote_rtp: None,
            received: std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
            tone_stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        read_rtp(&caller.rtp, &caller.received);
        let sdp = sdp_offer(sip_port + 2, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv")
            .replace("127.0.0.1", ip);
        let invite = caller.request("INVITE", 1, "Content-Type: application/sdp\r\n", &sdp);
        caller
            .sip
            .send_to(invite.as_bytes(), caller.gateway)
            .expect("INVITE");
        caller
    }

    pub fn request(&self, method: &str, cseq: u32, extra: &str, body: &str) -> String {
        let local = self.sip.local_addr().expect("addr");
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let uri = self
            .target
            .clone()
            .unwrap_or_else(|| format!("sip:{}@{}", self.did, self.gateway));
        let route = self
            .route
            .as_ref()
            .map(|r| format!("Route: {r}\r\n"))
            .unwrap_or_default();
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch:x};rport\r\n{route}From: <sip:{number}@{local}>;tag=f{number}\r\nTo: <sip:{did}@{gw}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:{number}@{local}>\r\nMax-Forwards: 70\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            gw = self.gateway,
            did = self.did,
            branch = rand_u64(),
            number = self.number,
            call_id = self.call_id,
            len = body.len(),
        )
    }

    /// The first provisional response above 100 within `within`: its status and text (a
    /// 183's SDP tells where the early media comes from).
    pub fn provisional(&mut self, within: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + within;
        while let Some((text, _)) = next_sip(&self.sip, deadline) {
            let status = sip_status(&text);
            if (101..200).contains(&status) {
                if let Some(rtp) = sdp_audio(&text) {
                    self.remote_rtp = Some(rtp);
                }
                return Some((status, text));
            }
        }
        None
    }

    /// Wait for a final response; on 2xx, remember the dialog and send ACK.
    pub fn final_response(&mut self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        while let Some((text, _)) = next_sip(&self.sip, deadline) {
            let status = sip_status(&text);
            if status < 200 {
                continue;
            }
            if (200..300).contains(&status) {
                self.to_tag = text
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("to:"))
                    .and_then(|l| l.split(";tag=").nth(1))
                    .map(|t| t.trim().to_string());
                self.remote_rtp = sdp_audio(&text);
                // A proxy that record-routed stays on the path (one proxy here: its route).
                let header = |name: &str| {
                    text.lines()
                        .find(|l| l.to_ascii_lowercase().starts_with(name))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                };
                self.route = header("record-route:");
                if self.route.is_some() {
                    self.target = header("contact:").map(|c| {
                        c.trim_start_matches('<')
                            .split('>')
                            .next()
                            .unwrap_or_default()
                            .to_string()
                    });
                }
                let ack = self.request("ACK", 1, "", "");
                self.sip.send_to(ack.as_bytes(), self.gateway).expect("ACK");
            } else {
                let ack = self.request("ACK", 1, "", "");
                let _ = self.sip.send_to(ack.as_bytes(), self.gateway);
            }
            return status;
        }
        panic!("{}: no final response", self.number);
    }

    pub fn hang_up(&self) {
        let bye = self.request("BYE", 2, "", "");
        self.sip.send_to(bye.as_bytes(), self.gateway).expect("BYE");
    }

    /// Answer a BYE from the gateway if one arrives within `within`.
    pub fn expect_bye(&self, within: Duration) -> bool {
        answer_bye(&self.sip, within)
    }

    /// RMS of the PCMU the gateway sends this caller over the next `window` (0 when nothing
    /// comes).
    pub fn heard(&self, window: Duration) -> f64 {
        let from = Instant::now();
        std::thread::sleep(window);
        let all = self.received.lock().expect("packets").clone();
        let samples: Vec<i16> = all
            .iter()
            .filter(|p| p.arrival >= from && p.payload_type == 0)
            .flat_map(|p| p.payload.iter().map(|b| ulaw_to_linear(*b)))
            .collect();
        if samples.is_empty() {
            0.0
        } else {
            rms(&samples)
        }
    }
}

impl Caller {
    /// The gateway's stream toward this caller stayed one stream across holds and resumes:
    /// one SSRC, no sequence gap, and timestamps that follow the clock (8 per ms) even across
    /// the stretches when nothing was sent.
    pub fn assert_continuous_stream(&self) {
        let received = self.received.lock().expect("packets").clone();
        assert!(received.len() > 100, "only {} packets", received.len());
        let ssrc = received[0].ssrc;
        for pair in received.windows(2) {
            let (s0, c0) = (pair[0].sequence, pair[0].ssrc);
            let (s1, c1) = (pair[1].sequence, pair[1].ssrc);
            assert_eq!((c0, c1), (ssrc, ssrc), "SSRC changed");
            assert_eq!(s1, s0.wrapping_add(1), "sequence jumped {s0} -> {s1}");
        }
        // Where each packet's timestamp puts it against when it came, relative to the first
        // (ms; wrapping arithmetic, 8 ticks a ms). A new timestamp base after a hold is off by
        // anything up to 2^32 ticks, and a clock that stood still while nothing was sent is off
        // by the whole silent stretch, for every packet after it. A packet the scheduler held up
        // (a stall of the test's own threads of over 300 ms was seen on two cores) is off only
        // while it and those queued behind it are late, so the medians of one-second windows
        // leave it out and catch the others.
        let first = &received[0];
        let offsets: Vec<i64> = received
            .iter()
            .map(|p| {
                let ts_ms = i64::from(p.timestamp.wrapping_sub(first.timestamp) as i32) / 8;
                ts_ms - p.arrival.duration_since(first.arrival).as_millis() as i64
            })
            .collect();
        let medians: Vec<i64> = offsets
            .chunks(50)
            .filter(|w| w.len() >= 25)
            .map(|w| {
                let mut w = w.to_vec();
                w.sort_unstable();
                w[w.len() / 2]
            })
            .collect();
        let (low, high) = (
            medians.iter().min().copied().unwrap_or(0),
            medians.iter().max().copied().unwrap_or(0),
        );
        assert!(
            high - low < 300,
            "timestamps drift from the wall clock by {low}..{high} ms across the stream"
        );
    }
}

impl Caller {
    /// Send a PCMU tone at `hz` toward the gateway, 20 ms a packet, from a thread of its own
    /// until the caller is dropped or `stop_tone` is called. Needs the answer (`final_response`).
    pub fn play_tone(&self, hz: f64) {
        let to = self
            .remote_rtp
            .expect("the gateway's RTP address (answer first)");
        play_tone(&self.rtp, to, hz, &self.tone_stop);
    }

    /// Talk rather than hum (`callgate::bench::voice_sample`): codecs' voice detectors soon
    /// call a steady tone background noise.
    pub fn play_voice(&self) {
        let to = self
            .remote_rtp
            .expect("the gateway's RTP address (answer first)");
        play_signal(
            &self.rtp,
            to,
            &self.tone_stop,
            callgate::bench::voice_sample,
        );
    }

    /// Send a request inside the call's dialog; returns its text.
    pub fn in_dialog_request(&self, method: &str, cseq: u32, extra: &str) -> String {
        let request = self.request(method, cseq, extra, "");
        self.sip
            .send_to(request.as_bytes(), self.gateway)
            .expect("request");
        request
    }

    /// The final response to `request` (matched by its CSeq), within `within`.
    pub fn response_to(&self, request: &str, within: Duration) -> String {
        let cseq = request
            .lines()
            .find_map(|l| l.strip_prefix("CSeq: "))
            .unwrap_or("")
            .to_string();
        let deadline = Instant::now() + within;
        while let Some((text, _)) = next_sip(&self.sip, deadline) {
            if sip_status(&text) >= 200 && text.contains(&format!("CSeq: {cseq}")) {
                return text;
            }
        }
        panic!("no response to {cseq}");
    }

    /// The PCMU the gateway sent this caller between two moments, decoded.
    pub fn heard_between(&self, from: Instant, to: Instant) -> Vec<i16> {
        pcmu_between(&self.received, from, to)
    }

    pub fn stop_tone(&self) {
        self.tone_stop.store(true, Ordering::SeqCst);
    }
}

/// Wait up to `within` for a BYE on `sip` and answer it 200; whether one came.
fn answer_bye(sip: &UdpSocket, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while let Some((text, from)) = next_sip(sip, deadline) {
        if text.starts_with("BYE ") {
            let mut ok = String::from("SIP/2.0 200 OK\r\n");
            for line in text.lines() {
                let l = line.to_ascii_lowercase();
                if ["via:", "from:", "to:", "call-id:", "cseq:"]
                    .iter()
                    .any(|h| l.starts_with(h))
                {
                    ok.push_str(line);
                    ok.push_str("\r\n");
                }
            }
            ok.push_str("Content-Length: 0\r\n\r\n");
            let _ = sip.send_to(ok.as_bytes(), from);
            return true;
        }
    }
    false
}

/// The next SIP message on `sip` before `deadline` (`None` once it has passed).
fn next_sip(sip: &UdpSocket, deadline: Instant) -> Option<(String, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sip.recv_from(&mut buf) {
            return Some((String::from_utf8_lossy(&buf[..n]).to_string(), from));
        }
    }
    None
}

/// Where a message's SDP wants audio (loopback, the `m=audio` port).
fn sdp_audio(text: &str) -> Option<SocketAddr> {
    text.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse::<u16>().ok())
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
}

type Received = std::sync::Arc<std::sync::Mutex<Vec<Packet>>>;

/// Read every RTP packet arriving on `socket` into `received`, with arrival times, on a thread
/// that ends when `received` has no other owner.
fn read_rtp(socket: &UdpSocket, received: &Received) {
    let socket = socket.try_clone().expect("clone RTP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let received = std::sync::Arc::clone(received);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        loop {
            if std::sync::Arc::strong_count(&received) == 1 {
                return;
            }
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                let p = &buf[..n];
                if n > 12 && p[0] >> 6 == 2 {
                    let packet = Packet {
                        sequence: u16::from_be_bytes([p[2], p[3]]),
                        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
                        payload_type: p[1] & 0x7f,
                        arrival: Instant::now(),
                        payload: p[12..].to_vec(),
                    };
                    if let Ok(mut all) = received.lock() {
                        all.push(packet);
                    }
                }
            }
        }
    });
}

fn pcmu_between(received: &Received, from: Instant, to: Instant) -> Vec<i16> {
    received
        .lock()
        .expect("packets")
        .iter()
        .filter(|p| p.arrival >= from && p.arrival <= to && p.payload_type == 0)
        .flat_map(|p| p.payload.iter().map(|b| ulaw_to_linear(*b)))
        .collect()
}

/// Send a PCMU tone at `hz` to `to` from `socket`, 20 ms a packet paced by the clock, on a
/// thread of its own until `stop` is set.
fn play_tone(
    socket: &UdpSocket,
    to: SocketAddr,
    hz: f64,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    play_signal(socket, to, stop, move |t| {
        (t * hz * std::f64::consts::TAU).sin() * 8000.0
    });
}

/// Send `signal` (sample value at time t in seconds) as PCMU, 20 ms a packet, paced on the
/// clock, until `stop`.
fn play_signal(
    socket: &UdpSocket,
    to: SocketAddr,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    signal: impl Fn(f64) -> f64 + Send + 'static,
) {
    {
        let socket = socket.try_clone().expect("clone RTP socket");
        let stop = std::sync::Arc::clone(stop);
        stop.store(false, Ordering::SeqCst);
        let ssrc = rand_u64() as u32;
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut frame: u32 = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut packet = vec![0x80, 0, 0, 0];
                packet[1] = if frame == 0 { 0x80 } else { 0 };
                packet[2..4].copy_from_slice(&(frame as u16).to_be_bytes());
                packet.extend_from_slice(&(frame * 160).to_be_bytes());
                packet.extend_from_slice(&ssrc.to_be_bytes());
                for i in 0..160u32 {
                    let t = f64::from(frame * 160 + i) / 8000.0;
                    let s = signal(t) as i16;
                    packet.push(linear_to_ulaw(s));
                }
                let _ = socket.send_to(&packet, to);
                frame += 1;
                // Paced on the clock, not on the sleeps, so the rate never drifts.
                let due = started + Duration::from_millis(20 * u64::from(frame));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
    }
}

/// The far end of an outbound call: a raw UAS on the trunk's proxy address that answers the
/// gateway's INVITE with PCMU, talks (a tone) and listens.
pub struct Callee {
    sip: UdpSocket,
    rtp: UdpSocket,
    invite: Option<(String, SocketAddr)>,
    remote_rtp: Option<SocketAddr>,
    received: Received,
    tone_stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A header's value from a SIP message's text.
fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

impl Callee {
    /// Listen for SIP on `sip_port` (RTP on the port after next).
    pub fn listen(sip_port: u16) -> Callee {
        let sip = bind_udp(&format!("127.0.0.1:{sip_port}"));
        let rtp = bind_udp(&format!("127.0.0.1:{}", sip_port + 2));
        sip.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let callee = Callee {
            sip,
            rtp,
            invite: None,
            remote_rtp: None,
            received: std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
            tone_stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        read_rtp(&callee.rtp, &callee.received);
        callee
    }

    fn respond(&self, request: &str, status: &str, extra: &str, body: &str, to: SocketAddr) {
        let mut response = format!("SIP/2.0 {status}\r\n");
        for name in ["Via", "From", "Call-ID", "CSeq"] {
            for line in request.lines() {
                if line
                    .split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                {
                    response.push_str(line);
                    response.push_str("\r\n");
                }
            }
        }
        let to_header = header(request, "To").unwrap_or("");
        if to_header.contains(";tag=") {
            response.push_str(&format!("To: {to_header}\r\n"));
        } else {
            response.push_str(&format!("To: {to_header};tag=callee\r\n"));
        }
        response.push_str(&format!(
            "{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        self.sip.send_to(response.as_bytes(), to).expect("response");
    }

    /// Wait for the gateway's INVITE and answer it (200 with our SDP); true when answered.
    pub fn answer(&mut self, within: Duration) -> bool {
        self.receive_invite(within).is_some() && {
            self.accept();
            true
        }
    }

    /// Wait for the gateway's INVITE without answering it yet; its text.
    pub fn receive_invite(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while let Some((text, from)) = next_sip(&self.sip, deadline) {
            if !text.starts_with("INVITE ") {
                if text.starts_with("OPTIONS ") {
                    self.respond(&text, "200 OK", "", "", from);
                }
                continue;
            }
            self.remote_rtp = sdp_audio(&text);
            self.invite = Some((text.clone(), from));
            return Some(text);
        }
        None
    }

    /// Answer the INVITE `receive_invite` returned: 200 with our SDP.
    pub fn accept(&self) {
        let Some((text, from)) = &self.invite else {
            panic!("no INVITE to answer");
        };
        let local = self.sip.local_addr().expect("addr");
        let rtp_port = self.rtp.local_addr().expect("addr").port();
        let sdp = sdp_offer(rtp_port, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        self.respond(
            text,
            "200 OK",
            &format!("Contact: <sip:callee@{local}>\r\nContent-Type: application/sdp\r\n"),
            &sdp,
            *from,
        );
    }

    /// Every SIP message this callee received from now for `window`, as text.
    pub fn messages_for(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        std::iter::from_fn(|| next_sip(&self.sip, deadline).map(|(t, _)| t)).collect()
    }

    pub fn play_tone(&self, hz: f64) {
        let to = self
            .remote_rtp
            .expect("the gateway's RTP address (answer first)");
        play_tone(&self.rtp, to, hz, &self.tone_stop);
    }

    pub fn heard_between(&self, from: Instant, to: Instant) -> Vec<i16> {
        pcmu_between(&self.received, from, to)
    }

    /// Answer a BYE from the gateway if one arrives within `within`.
    pub fn expect_bye(&self, within: Duration) -> bool {
        answer_bye(&self.sip, within)
    }

    /// Hang up: BYE to the gateway in the dialog the INVITE made.
    pub fn hang_up(&self) {
        let Some((invite, from)) = &self.invite else {
            return;
        };
        let local = self.sip.local_addr().expect("addr");
        let contact = header(invite, "Contact")
            .and_then(|c| c.split('<').nth(1))
            .and_then(|c| c.split('>').next())
            .unwrap_or("sip:gateway@127.0.0.1");
        let bye = format!(
            "BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{:x}\r\nFrom: {};tag=callee\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            rand_u64(),
            header(invite, "To").unwrap_or(""),
            header(invite, "From").unwrap_or(""),
            header(invite, "Call-ID").unwrap_or(""),
        );
        self.sip.send_to(bye.as_bytes(), from).expect("BYE");
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.tone_stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop_tone();
    }
}
