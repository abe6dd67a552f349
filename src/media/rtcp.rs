//! RTCP (RFC 3550 §6): sender and receiver reports with SDES CNAME in compound packets, BYE,
//! and validating parsing of what peers send (A.2). Pure: the media task owns the socket and
//! the clock and passes wall-clock time in.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtcpError {
    #[error("RTCP packet shorter than its header")]
    Truncated,
    #[error("RTCP version {0}, expected 2")]
    Version(u8),
    #[error("RTCP length field runs past the datagram")]
    BadLength,
    #[error("compound RTCP must start with SR or RR")]
    NotReportFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire.
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp_timestamp: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        reports: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    SourceDescription {
        chunks: Vec<(u32, Option<String>)>,
    },
    Goodbye {
        ssrcs: Vec<u32>,
        reason: Option<String>,
    },
    Other {
        packet_type: u8,
    },
}

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn parse_blocks(body: &[u8], count: usize) -> Vec<ReportBlock> {
    body.chunks_exact(24)
        .take(count)
        .map(|b| {
            let lost24 = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            // Sign-extend the 24-bit cumulative loss.
            let cumulative_lost = ((lost24 << 8) as i32) >> 8;
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                cumulative_lost,
                extended_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect()
}

pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let header = buf.get(pos..pos + 4).ok_or(RtcpError::Truncated)?;
        let version = header[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let count = usize::from(header[0] & 0x1f);
        let packet_type = header[1];
        let length = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let packet = buf.get(pos..pos + length).ok_or(RtcpError::BadLength)?;
        if packets.is_empty() && packet_type != SR && packet_type != RR {
            return Err(RtcpError::NotReportFirst);
        }
        let body = &packet[4..];
        packets.push(match packet_type {
            SR if body.len() >= 24 => RtcpPacket::SenderReport {
                ssrc: be32(body, 0),
                info: SenderInfo {
                    ntp_timestamp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                    rtp_timestamp: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                },
                reports: parse_blocks(&body[24..], count),
            },
            RR if body.len() >= 4 => RtcpPacket::ReceiverReport {
                ssrc: be32(body, 0),
                reports: parse_blocks(&body[4..], count),
            },
            SDES => RtcpPacket::SourceDescription {
                chunks: parse_sdes(body, count),
            },
            BYE => {
                let ssrcs: Vec<u32> = (0..count.min(body.len() / 4)).map(|i| be32(body, i * 4)).collect();
                let rest = body.get(count * 4..).unwrap_or(&[]);
                let reason = rest.first().and_then(|len| {
                    rest.get(1..1 + usize::from(*len))
                        .map(|r| String::from_utf8_lossy(r).to_string())
                });
                RtcpPacket::Goodbye { ssrcs, reason }
            }
            SR | RR => return Err(RtcpError::Truncated),
            other => RtcpPacket::Other { packet_type: other },
        });
        pos += length;
    }
    if packets.is_empty() {
        return Err(RtcpError::Truncated);
    }
    Ok(packets)
}

fn parse_sdes(body: &[u8], count: usize) -> Vec<(u32, Option<String>)> {
    let mut chunks = Vec::new();
    let mut pos = 0;
    for _ in 0..count {
        if pos + 4 > body.len() {
            break;
        }
        let ssrc = be32(body, pos);
        pos += 4;
        let mut cname = None;
        while let Some(&item) = body.get(pos) {
            if item == 0 {
                // End of items; skip to the next 32-bit boundary.
                pos = (pos + 4) & !3;
                break;
            }
            let len = usize::from(*body.get(pos + 1).unwrap_or(&0));
            let text = body.get(pos + 2..pos + 2 + len);
            if item == 1 {
                cname = text.map(|t| String::from_utf8_lossy(t).to_string());
            }
            pos += 2 + len;
        }
        chunks.push((ssrc, cname));
    }
    chunks
}

fn write_block(block: &ReportBlock, out: &mut Vec<u8>) {
    out.extend_from_slice(&block.ssrc.to_be_bytes());
    out.push(block.fraction_lost);
    let lost = (block.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
    out.extend_from_slice(&lost.to_be_bytes()[1..]);
    out.extend_from_slice(&block.extended_highest_seq.to_be_bytes());
    out.extend_from_slice(&block.jitter.to_be_bytes());
    out.extend_from_slice(&block.last_sr.to_be_bytes());
    out.extend_from_slice(&block.delay_since_last_sr.to_be_bytes());
}

fn finish_length(out: &mut [u8], start: usize) {
    let words = ((out.len() - start) / 4 - 1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

fn write_sdes(ssrc: u32, cname: &str, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0x81, SDES, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    let name = &cname.as_bytes()[..cname.len().min(255)];
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    // The item list ends with a zero octet and pads to a 32-bit boundary.
    out.push(0);
    while (out.len() - start) % 4 != 0 {
        out.push(0);
    }
    finish_length(out, start);
}

/// Clears `out` and writes SR + SDES CNAME.
pub fn write_sender_report(ssrc: u32, info: &SenderInfo, reports: &[ReportBlock], cname: &str, out: &mut Vec<u8>) {
    out.clear();
    let reports = &reports[..reports.len().min(31)];
    out.extend_from_slice(&[0x80 | reports.len() as u8, SR, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&info.ntp_timestamp.to_be_bytes());
    out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
    out.extend_from_slice(&info.packet_count.to_be_bytes());
    out.extend_from_slice(&info.octet_count.to_be_bytes());
    for block in reports {
        write_block(block, out);
    }
    finish_length(out, 0);
    write_sdes(ssrc, cname, out);
}

/// Clears `out` and writes RR + SDES CNAME.
pub fn write_receiver_report(ssrc: u32, reports: &[ReportBlock], cname: &str, out: &mut Vec<u8>) {
    out.clear();
    let reports = &reports[..reports.len().min(31)];
    out.extend_from_slice(&[0x80 | reports.len() as u8, RR, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    for block in reports {
        write_block(block, out);
    }
    finish_length(out, 0);
    write_sdes(ssrc, cname, out);
}

/// Appends a BYE to a compound packet already in `out`.
pub fn append_goodbye(ssrc: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0x81, BYE, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    finish_length(out, start);
}

/// NTP 64-bit timestamp (seconds since 1900 . fraction) from Unix microseconds.
pub fn ntp_timestamp(unix_micros: u64) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = unix_micros / 1_000_000 + UNIX_TO_NTP;
    let frac = ((unix_micros % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits, as LSR/DLSR use them.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: 42,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_highest_seq: 70000,
            jitter: 17,
            last_sr: 5,
            delay_since_last_sr: 6,
        }
    }

    #[test]
    fn sender_report_round_trips_with_cname_and_bye() {
        let info = SenderInfo {
            ntp_timestamp: ntp_timestamp(1_700_000_000_500_000),
            rtp_timestamp: 160,
            packet_count: 10,
            octet_count: 1600,
        };
        let mut out = Vec::new();
        write_sender_report(7, &info, &[block()], "callgate-c1", &mut out);
        append_goodbye(7, &mut out);
        assert_eq!(out.len() % 4, 0);
        let packets = parse_compound(&out).expect("valid compound");
        assert_eq!(packets.len(), 3);
        assert_eq!(
            packets[0],
            RtcpPacket::SenderReport {
                ssrc: 7,
                info,
                reports: vec![block()]
            }
        );
        assert_eq!(
            packets[1],
            RtcpPacket::SourceDescription {
                chunks: vec![(7, Some("callgate-c1".into()))]
            }
        );
        assert_eq!(
            packets[2],
            RtcpPacket::Goodbye {
                ssrcs: vec![7],
                reason: None
            }
        );
    }

    #[test]
    fn receiver_report_round_trips() {
        let mut out = Vec::new();
        write_receiver_report(9, &[block(), block()], "x", &mut out);
        match &parse_compound(&out).expect("valid")[0] {
            RtcpPacket::ReceiverReport { ssrc, reports } => {
                assert_eq!(*ssrc, 9);
                assert_eq!(reports, &vec![block(), block()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_compounds_are_errors_not_panics() {
        assert_eq!(parse_compound(&[]), Err(RtcpError::Truncated));
        assert_eq!(parse_compound(&[0x80, 200, 0]), Err(RtcpError::Truncated));
        assert_eq!(parse_compound(&[0x40, 200, 0, 0]), Err(RtcpError::Version(1)));
        assert_eq!(parse_compound(&[0x80, 200, 0, 9, 0, 0, 0, 0]), Err(RtcpError::BadLength));
        assert_eq!(parse_compound(&[0x81, 203, 0, 1, 0, 0, 0, 1]), Err(RtcpError::NotReportFirst));
        let mut out = Vec::new();
        write_receiver_report(1, &[block()], "cname", &mut out);
        for len in 0..out.len() {
            let _ = parse_compound(&out[..len]);
        }
        for i in 0..out.len() {
            let mut bent = out.clone();
            bent[i] ^= 0xff;
            let _ = parse_compound(&bent);
        }
    }

    #[test]
    fn ntp_conversion() {
        let ntp = ntp_timestamp(0);
        assert_eq!(ntp >> 32, 2_208_988_800);
        assert_eq!(ntp_timestamp(500_000) & 0xffff_ffff, 1 << 31);
        assert_eq!(ntp_middle(0x1234_5678_9abc_def0), 0x5678_9abc);
    }
}
