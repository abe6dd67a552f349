//! `callgate demo`: a simulated PSTN caller for trying the gateway without a trunk. It calls
//! an agent's DID on the local gateway over SIP/UDP, plays a gentle two-tone melody as PCMU
//! once answered, reports how much audio came back from the agent, and hangs up after the
//! given time (or when the agent hangs up). A shell over our own SIP parser and RTP writer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::media::g711;
use crate::media::rtp::{self, RtpHeader};
use crate::sip::message::{Message, Response};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("the gateway did not answer the INVITE within {0:?}")]
    NoAnswer(Duration),
    #[error("the call was rejected: {0} {1}")]
    Rejected(u16, String),
}

/// What the call did, for the summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoReport {
    pub answered_after: Duration,
    pub talked: Duration,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// RMS of what the agent sent, 16-bit scale.
    pub received_rms: f64,
    pub agent_hung_up: bool,
}

struct Dialog {
    call_id: String,
    from_tag: String,
    to: String,
    target: String,
    local: SocketAddr,
}

impl Dialog {
    fn request(&self, method: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> String {
        let branch = format!("z9hG4bK-demo-{:x}", rand::random::<u64>());
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             From: \"callgate demo\" <sip:+15559990000@{local}>;tag={from_tag}\r\n\
             To: <{to}>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:demo@{local}>\r\n\
             Max-Forwards: 70\r\n\
             User-Agent: callgate-demo\r\n\
             {content_type}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            target = self.target,
            local = self.local,
            from_tag = self.from_tag,
            to = self.to,
            call_id = self.call_id,
        )
    }
}

/// The to-tag and the RTP address of the answer.
fn answer_of(response: &Response) -> (Option<String>, Option<SocketAddr>) {
    let to_tag = response.headers.get("To").and_then(|to| {
        to.split(';')
            .find_map(|p| p.trim().strip_prefix("tag=").map(str::to_string))
    });
    let body = String::from_utf8_lossy(&response.body);
    let ip = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .and_then(|ip| ip.trim().parse().ok());
    let port = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    let media = match (ip, port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    };
    (to_tag, media)
}

/// One 20 ms frame of the melody: A4 and C#5 alternating each second, softly.
fn melody_frame(frame: u64, out: &mut Vec<i16>) {
    out.clear();
    let freq = if (frame / 50).is_multiple_of(2) {
        440.0
    } else {
        554.37
    };
    for i in 0..160u64 {
        let t = (frame * 160 + i) as f64 / 8000.0;
        out.push(((t * freq * std::f64::consts::TAU).sin() * 6000.0) as i16);
    }
}

/// Call `did` on the gateway at `gateway` and talk for `talk`.
pub async fn run(gateway: SocketAddr, did: &str, talk: Duration) -> Result<DemoReport, DemoError> {
    let bind_ip = if gateway.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sip = UdpSocket::bind(bind_ip).await?;
    let media = UdpSocket::bind(SocketAddr::new(sip.local_addr()?.ip(), 0)).await?;
    let local = sip.local_addr()?;
    let media_port = media.local_addr()?.port();
    let target = format!("sip:{did}@{gateway}");
    let dialog = Dialog {
        call_id: format!("demo-{:x}@callgate", rand::random::<u64>()),
        from_tag: format!("{:x}", rand::random::<u32>()),
        to: target.clone(),
        target,
        local,
    };
    let sdp = format!(
        "v=0\r\no=demo 1 1 IN IP4 {ip}\r\ns=callgate demo\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        ip = local.ip()
    );
    let invite = dialog.request("INVITE", 1, None, &sdp);
    let started = Instant::now();
    let ring_limit = Duration::from_secs(60);
    let mut buf = vec![0u8; 65536];
    let mut last_send = None::<Instant>;
    let (to_tag, remote) = loop {
        if last_send.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            // Retransmit until a provisional answer arrives (RFC 3261 timer A, simplified).
            sip.send_to(invite.as_bytes(), gateway).await?;
            last_send = Some(Instant::now());
        }
        if started.elapsed() > ring_limit {
            let cancel = dialog.request("CANCEL", 1, None, "");
            let _ = sip.send_to(cancel.as_bytes(), gateway).await;
            return Err(DemoError::NoAnswer(ring_limit));
        }
        let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), sip.recv_from(&mut buf)).await
        else {
            continue;
        };
        let Ok(Message::Response(response)) = Message::parse_datagram(&buf[..n]) else {
            continue;
        };
        match response.status {
            100..=199 => {
                last_send = Some(Instant::now() + Duration::from_secs(3600));
                if response.status == 180 {
                    println!("ringing {did}: answer it in the dialer page");
                }
            }
            200..=299 => break answer_of(&response),
            status => {
                let ack = dialog.request("ACK", 1, answer_of(&response).0.as_deref(), "");
                let _ = sip.send_to(ack.as_bytes(), gateway).await;
                return Err(DemoError::Rejected(status, response.reason));
            }
        }
    };
    let ack = dialog.request("ACK", 1, to_tag.as_deref(), "");
    sip.send_to(ack.as_bytes(), gateway).await?;
    let mut report = DemoReport {
        answered_after: started.elapsed(),
        ..DemoReport::default()
    };
    println!(
        "answered after {:.1} s; playing a test melody for {} s",
        report.answered_after.as_secs_f64(),
        talk.as_secs()
    );
    let talk_started = Instant::now();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    let mut frame = 0u64;
    let mut pcm = Vec::with_capacity(160);
    let mut payload = Vec::with_capacity(160);
    let mut packet = Vec::with_capacity(200);
    let mut media_buf = vec![0u8; 2048];
    let (mut energy, mut samples) = (0f64, 0u64);
    let ssrc: u32 = rand::random();
    loop {
        tokio::select! {
            _ = clock.tick() => {
                if talk_started.elapsed() >= talk {
                    break;
                }
                let Some(remote) = remote else { continue };
                melody_frame(frame, &mut pcm);
                payload.clear();
                g711::encode_ulaw_into(&pcm, &mut payload);
                let header = RtpHeader {
                    marker: frame == 0,
                    payload_type: 0,
                    sequence: frame as u16,
                    timestamp: (frame * 160) as u32,
                    ssrc,
                    csrcs: Vec::new(),
                };
                packet.clear();
                rtp::write(&header, &payload, &mut packet);
                if media.send_to(&packet, remote).await.is_ok() {
                    report.packets_sent += 1;
                }
                frame += 1;
            }
            received = media.recv_from(&mut media_buf) => {
                if let Ok((n, _)) = received {
                    if let Ok(p) = rtp::parse(&media_buf[..n]) {
                        if p.header.payload_type == 0 {
                            report.packets_received += 1;
                            for b in p.payload {
                                let s = f64::from(g711::ulaw_decode(*b));
                                energy += s * s;
                                samples += 1;
                            }
                        }
                    }
                }
            }
            received = sip.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if let Ok(Message::Request(request)) = Message::parse_datagram(&buf[..n]) {
                    if request.method.as_str() == "BYE" {
                        let ok = ok_for(&buf[..n]);
                        let _ = sip.send_to(ok.as_bytes(), from).await;
                        report.agent_hung_up = true;
                        break;
                    }
                }
            }
        }
    }
    report.talked = talk_started.elapsed();
    report.received_rms = if samples > 0 {
        (energy / samples as f64).sqrt()
    } else {
        0.0
    };
    if !report.agent_hung_up {
        let bye = dialog.request("BYE", 2, to_tag.as_deref(), "");
        for _ in 0..4 {
            sip.send_to(bye.as_bytes(), gateway).await?;
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(500), sip.recv_from(&mut buf)).await
            {
                if let Ok(Message::Response(r)) = Message::parse_datagram(&buf[..n]) {
                    if r.status >= 200 {
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// 200 OK for a request, echoing the headers RFC 3261 §8.2.6 asks for.
fn ok_for(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(request);
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in text.lines() {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "via" | "v" | "from" | "f" | "to" | "t" | "call-id" | "i" | "cseq"
        ) {
            out.push_str(line.trim_end());
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn melody_alternates_each_second() {
        let mut frame = Vec::new();
        melody_frame(0, &mut frame);
        assert_eq!(frame.len(), 160);
        let mut later = Vec::new();
        melody_frame(50, &mut later);
        assert_ne!(frame, later);
    }

    #[test]
    fn ok_keeps_the_dialog_headers() {
        let bye = b"BYE sip:demo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let ok = ok_for(bye);
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(ok.contains("CSeq: 5 BYE") && ok.contains("tag=2") && !ok.contains("Max-Forwards"));
        assert!(matches!(
            Message::parse_datagram(ok.as_bytes()),
            Ok(Message::Response(_))
        ));
    }
}
