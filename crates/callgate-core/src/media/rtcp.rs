//! RTCP (RFC 3550 §6): sender and receiver reports with SDES CNAME in compound packets, BYE,
//! NTP time conversion, and validating parsing of what peers send (A.2).
//!
//! Owns RTCP bytes only. It must not touch sockets, the clock or the RTP numbering: the media
//! task passes wall-clock time in, and report blocks come from `rtp::ReceptionStats`.
//! Parsing never panics: every read of the input is bounds-checked.

/// Why a datagram is not a valid compound RTCP packet.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RtcpError {
    #[error("empty RTCP datagram")]
    Empty,
    #[error("{0} trailing bytes are too few for an RTCP header")]
    Truncated(usize),
    #[error("RTCP version {0}, expected 2")]
    Version(u8),
    #[error("RTCP length field runs past the datagram")]
    BadLength,
    #[error("compound RTCP must start with SR or RR, not packet type {0}")]
    NotReportFirst(u8),
    #[error("padding bit set on a packet that is not the last of the compound")]
    PaddingNotLast,
    #[error("padding count {0} does not fit in its packet")]
    BadPadding(u8),
    #[error("packet type {0} shorter than its fixed part")]
    TooShort(u8),
    #[error("packet type {packet_type} shorter than its {count} items need")]
    CountOverrun { packet_type: u8, count: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed on the wire; values outside that range are clamped when written.
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
    /// Each chunk's SSRC/CSRC with its CNAME, if it had one; other items are skipped.
    SourceDescription { chunks: Vec<(u32, Option<String>)> },
    Goodbye {
        ssrcs: Vec<u32>,
        reason: Option<String>,
    },
    /// APP, RTPFB, PSFB, XR and anything newer: validated for framing, otherwise ignored.
    Other { packet_type: u8 },
}

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;
const CNAME: u8 = 1;
const REPORT_BLOCK: usize = 24;
const SENDER_INFO: usize = 20;
/// The 5-bit count field caps report blocks per SR/RR.
const MAX_REPORTS: usize = 31;

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// `body` must hold `count` blocks (checked by the caller).
fn parse_blocks(body: &[u8], count: usize) -> Vec<ReportBlock> {
    body.chunks_exact(REPORT_BLOCK)
        .take(count)
        .map(|b| {
            let lost24 = u32::from_be_bytes([0, b[5], b[6], b[7]]);
            ReportBlock {
                ssrc: be32(b, 0),
                fraction_lost: b[4],
                // Shift up then arithmetic-shift down to sign-extend the 24-bit field.
                cumulative_lost: ((lost24 << 8) as i32) >> 8,
                extended_highest_seq: be32(b, 8),
                jitter: be32(b, 12),
                last_sr: be32(b, 16),
                delay_since_last_sr: be32(b, 20),
            }
        })
        .collect()
}

/// Splits and validates a compound packet (RFC 3550 A.2): every packet version 2, the first
/// an SR or RR, padding only on the last, lengths summing exactly to the datagram, and each
/// count fitting in its packet. Any violation rejects the whole datagram.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(&[first, packet_type, len_hi, len_lo]) = rest.get(..4) else {
            return Err(RtcpError::Truncated(rest.len()));
        };
        let version = first >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        if packets.is_empty() && packet_type != SR && packet_type != RR {
            return Err(RtcpError::NotReportFirst(packet_type));
        }
        let count = first & 0x1f;
        let length = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let packet = rest.get(..length).ok_or(RtcpError::BadLength)?;
        rest = rest.get(length..).unwrap_or(&[]);
        let mut body = packet.get(4..).unwrap_or(&[]);
        if first & 0x20 != 0 {
            if !rest.is_empty() {
                return Err(RtcpError::PaddingNotLast);
            }
            let pad = packet.last().copied().unwrap_or(0);
            if pad == 0 || usize::from(pad) > body.len() {
                return Err(RtcpError::BadPadding(pad));
            }
            body = body.get(..body.len() - usize::from(pad)).unwrap_or(&[]);
        }
        let overrun = RtcpError::CountOverrun { packet_type, count };
        let n = usize::from(count);
        packets.push(match packet_type {
            SR => {
                let blocks = body.get(4 + SENDER_INFO..).ok_or(RtcpError::TooShort(SR))?;
                if blocks.len() < n * REPORT_BLOCK {
                    return Err(overrun);
                }
                RtcpPacket::SenderReport {
                    ssrc: be32(body, 0),
                    info: SenderInfo {
                        ntp_timestamp: (u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8)),
                        rtp_timestamp: be32(body, 12),
                        packet_count: be32(body, 16),
                        octet_count: be32(body, 20),
                    },
                    reports: parse_blocks(blocks, n),
                }
            }
            RR => {
                let blocks = body.get(4..).ok_or(RtcpError::TooShort(RR))?;
                if blocks.len() < n * REPORT_BLOCK {
                    return Err(overrun);
                }
                RtcpPacket::ReceiverReport {
                    ssrc: be32(body, 0),
                    reports: parse_blocks(blocks, n),
                }
            }
            SDES => RtcpPacket::SourceDescription {
                chunks: parse_sdes(body, n).ok_or(overrun)?,
            },
            BYE => {
                let ssrcs_len = n * 4;
                let ssrcs = body
                    .get(..ssrcs_len)
                    .ok_or(overrun.clone())?
                    .chunks_exact(4)
                    .map(|c| be32(c, 0))
                    .collect();
                let reason = match body.get(ssrcs_len..) {
                    Some([len, text @ ..]) if *len > 0 => Some(
                        text.get(..usize::from(*len))
                            .map(|r| String::from_utf8_lossy(r).into_owned())
                            .ok_or(overrun)?,
                    ),
                    _ => None,
                };
                RtcpPacket::Goodbye { ssrcs, reason }
            }
            other => RtcpPacket::Other { packet_type: other },
        });
    }
    Ok(packets)
}

/// `None` when the chunks run past the packet.
fn parse_sdes(body: &[u8], count: usize) -> Option<Vec<(u32, Option<String>)>> {
    let mut chunks = Vec::with_capacity(count);
    let mut pos = 0;
    for _ in 0..count {
        let ssrc = body.get(pos..pos + 4).map(|_| be32(body, pos))?;
        pos += 4;
        let mut cname = None;
        loop {
            let item = *body.get(pos)?;
            if item == 0 {
                // The item list ends with a null octet; the next chunk starts at the next
                // 32-bit boundary (chunks, like the body, are 32-bit aligned).
                pos = (pos + 4) & !3;
                break;
            }
            let len = usize::from(*body.get(pos + 1)?);
            let text = body.get(pos + 2..pos + 2 + len)?;
            if item == CNAME {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
            pos += 2 + len;
        }
        chunks.push((ssrc, cname));
    }
    Some(chunks)
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

/// Fills in the length field of the packet that starts at `start` and runs to the end of
/// `out`, which every writer here keeps a multiple of four bytes long.
fn finish_length(out: &mut [u8], start: usize) {
    let words = ((out.len() - start) / 4 - 1) as u16;
    if let Some(field) = out.get_mut(start + 2..start + 4) {
        field.copy_from_slice(&words.to_be_bytes());
    }
}

fn write_sdes(ssrc: u32, cname: &str, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0x81, SDES, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    // The item length is one octet; a longer CNAME is cut (it is only an identifier).
    let name = cname.as_bytes().get(..cname.len().min(255)).unwrap_or(&[]);
    out.push(CNAME);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    // The item list ends with a null octet, then nulls up to a 32-bit boundary.
    out.push(0);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    finish_length(out, start);
}

fn write_report(
    packet_type: u8,
    ssrc: u32,
    info: Option<&SenderInfo>,
    reports: &[ReportBlock],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let reports = reports.get(..reports.len().min(MAX_REPORTS)).unwrap_or(&[]);
    out.extend_from_slice(&[0x80 | reports.len() as u8, packet_type, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(info) = info {
        out.extend_from_slice(&info.ntp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.packet_count.to_be_bytes());
        out.extend_from_slice(&info.octet_count.to_be_bytes());
    }
    for block in reports {
        write_block(block, out);
    }
    finish_length(out, start);
}

/// Clears `out` and writes the compound SR + SDES CNAME. Only the first 31 report blocks fit
/// one SR; callers with more sources would need an extra RR, which we never have.
pub fn write_sender_report(
    ssrc: u32,
    info: &SenderInfo,
    reports: &[ReportBlock],
    cname: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    write_report(SR, ssrc, Some(info), reports, out);
    write_sdes(ssrc, cname, out);
}

/// Clears `out` and writes the compound RR + SDES CNAME (at most 31 report blocks).
pub fn write_receiver_report(ssrc: u32, reports: &[ReportBlock], cname: &str, out: &mut Vec<u8>) {
    out.clear();
    write_report(RR, ssrc, None, reports, out);
    write_sdes(ssrc, cname, out);
}

/// Appends a BYE for `ssrc` to the compound packet already in `out` (an SR or RR + SDES
/// written by the functions above; BYE must come last).
pub fn write_goodbye(ssrc: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0x81, BYE, 0, 0]);
    out.extend_from_slice(&ssrc.to_be_bytes());
    finish_length(out, start);
}

/// Same as [`write_goodbye`]; the name the media task already uses.
pub fn append_goodbye(ssrc: u32, out: &mut Vec<u8>) {
    write_goodbye(ssrc, out);
}

/// Clears `out` and writes a complete leaving packet: an empty RR (a compound must start
/// with a report), SDES CNAME, then BYE.
pub fn write_bye_compound(ssrc: u32, cname: &str, out: &mut Vec<u8>) {
    write_receiver_report(ssrc, &[], cname, out);
    write_goodbye(ssrc, out);
}

/// NTP 64-bit timestamp (seconds since 1900 in the high word, binary fraction in the low one)
/// from Unix microseconds. The seconds wrap in 2036 as NTP's era 0 does.
pub fn ntp_timestamp(unix_micros: u64) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = (unix_micros / 1_000_000).wrapping_add(UNIX_TO_NTP);
    let frac = ((unix_micros % 1_000_000) << 32) / 1_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits, as the LSR field and DLSR arithmetic use them (16.16 seconds).
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

    fn info() -> SenderInfo {
        SenderInfo {
            ntp_timestamp: ntp_timestamp(1_700_000_000_500_000),
            rtp_timestamp: 160,
            packet_count: 10,
            octet_count: 1600,
        }
    }

    /// Every packet of a compound as (packet type, length in bytes from its header).
    fn framing(buf: &[u8]) -> Vec<(u8, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(h) = buf.get(pos..pos + 4) {
            let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
            out.push((h[1], len));
            pos += len;
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn sender_report_round_trips_with_cname_and_bye() {
        let mut out = vec![9; 7];
        write_sender_report(7, &info(), &[block()], "callgate-c1", &mut out);
        assert_eq!(framing(&out), vec![(SR, 28 + 24), (SDES, 24)]);
        write_goodbye(7, &mut out);
        assert_eq!(out.len() % 4, 0);
        let packets = parse_compound(&out).expect("valid compound");
        assert_eq!(
            packets,
            vec![
                RtcpPacket::SenderReport {
                    ssrc: 7,
                    info: info(),
                    reports: vec![block()]
                },
                RtcpPacket::SourceDescription {
                    chunks: vec![(7, Some("callgate-c1".into()))]
                },
                RtcpPacket::Goodbye {
                    ssrcs: vec![7],
                    reason: None
                },
            ]
        );
    }

    #[test]
    fn receiver_report_round_trips() {
        let mut out = Vec::new();
        write_receiver_report(9, &[block(), block()], "x", &mut out);
        assert_eq!(framing(&out), vec![(RR, 8 + 48), (SDES, 12)]);
        let packets = parse_compound(&out).expect("valid");
        assert_eq!(
            packets[0],
            RtcpPacket::ReceiverReport {
                ssrc: 9,
                reports: vec![block(), block()]
            }
        );
        // CNAME lengths that land on each alignment still frame correctly.
        for len in 0..12 {
            let cname = "c".repeat(len);
            write_receiver_report(9, &[], &cname, &mut out);
            let packets = parse_compound(&out).expect("valid");
            assert_eq!(
                packets[1],
                RtcpPacket::SourceDescription {
                    chunks: vec![(9, Some(cname))]
                }
            );
        }
    }

    #[test]
    fn bye_compound_and_extreme_values() {
        let mut out = Vec::new();
        write_bye_compound(3, "leaving", &mut out);
        let packets = parse_compound(&out).expect("valid");
        assert_eq!(packets.len(), 3);
        assert_eq!(
            packets[0],
            RtcpPacket::ReceiverReport {
                ssrc: 3,
                reports: vec![]
            }
        );
        assert!(matches!(&packets[2], RtcpPacket::Goodbye { ssrcs, .. } if ssrcs == &[3]));
        let extremes = [i32::MIN, -0x80_0000, 0x7f_ffff, i32::MAX, 0];
        let blocks: Vec<ReportBlock> = extremes
            .iter()
            .map(|lost| ReportBlock {
                cumulative_lost: *lost,
                ..block()
            })
            .collect();
        write_receiver_report(1, &blocks, "x", &mut out);
        let Ok(packets) = parse_compound(&out) else {
            panic!("valid");
        };
        let RtcpPacket::ReceiverReport { reports, .. } = &packets[0] else {
            panic!("RR first");
        };
        let lost: Vec<i32> = reports.iter().map(|r| r.cumulative_lost).collect();
        assert_eq!(lost, vec![-0x80_0000, -0x80_0000, 0x7f_ffff, 0x7f_ffff, 0]);
        let many = vec![block(); 40];
        write_receiver_report(1, &many, "x", &mut out);
        assert_eq!(out[0] & 0x1f, 31);
        assert!(parse_compound(&out).is_ok());
    }

    #[test]
    fn peer_packets_with_reason_padding_and_unknown_types() {
        let mut out = Vec::new();
        write_receiver_report(1, &[], "a", &mut out);
        // An APP packet, then a padded BYE with a reason, as a peer might send.
        out.extend_from_slice(&[0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e']);
        out.extend_from_slice(&[0xA2, BYE, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2]);
        out.extend_from_slice(&[3, b'b', b'y', b'e', 0, 0, 0, 4]);
        let packets = parse_compound(&out).expect("valid");
        assert_eq!(packets[2], RtcpPacket::Other { packet_type: 204 });
        assert_eq!(
            packets[3],
            RtcpPacket::Goodbye {
                ssrcs: vec![1, 2],
                reason: Some("bye".into())
            }
        );
    }

    #[test]
    fn malformed_compounds_are_errors_not_panics() {
        assert_eq!(parse_compound(&[]), Err(RtcpError::Empty));
        assert_eq!(
            parse_compound(&[0x80, 200, 0]),
            Err(RtcpError::Truncated(3))
        );
        assert_eq!(
            parse_compound(&[0x40, 200, 0, 0]),
            Err(RtcpError::Version(1))
        );
        assert_eq!(
            parse_compound(&[0x80, 200, 0, 9, 0, 0, 0, 0]),
            Err(RtcpError::BadLength)
        );
        assert_eq!(
            parse_compound(&[0x81, 203, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::NotReportFirst(203))
        );
        // SR too short for its sender info, RR claiming more blocks than it has.
        assert_eq!(
            parse_compound(&[0x80, 200, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::TooShort(SR))
        );
        assert_eq!(
            parse_compound(&[0x80, 201, 0, 0]),
            Err(RtcpError::TooShort(RR))
        );
        assert_eq!(
            parse_compound(&[0x82, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::CountOverrun {
                packet_type: 201,
                count: 2
            })
        );
        let mut out = Vec::new();
        write_receiver_report(1, &[block()], "cname", &mut out);
        // Lengths must sum to the datagram: trailing junk is an error.
        let mut long = out.clone();
        long.extend_from_slice(&[0, 0]);
        assert_eq!(parse_compound(&long), Err(RtcpError::Truncated(2)));
        // Padding on the first of two packets.
        let mut padded = out.clone();
        padded[0] |= 0x20;
        assert_eq!(parse_compound(&padded), Err(RtcpError::PaddingNotLast));
        // Padding count zero or longer than the packet on the last one.
        let mut rr_only = out.clone();
        rr_only.truncate(32);
        rr_only[0] |= 0x20;
        rr_only[31] = 0;
        assert_eq!(parse_compound(&rr_only), Err(RtcpError::BadPadding(0)));
        rr_only[31] = 40;
        assert_eq!(parse_compound(&rr_only), Err(RtcpError::BadPadding(40)));
        // SDES whose chunk count runs past the packet.
        let mut sdes = out.clone();
        sdes[32] = 0x83;
        assert_eq!(
            parse_compound(&sdes),
            Err(RtcpError::CountOverrun {
                packet_type: SDES,
                count: 3
            })
        );
        for len in 0..out.len() {
            let _ = parse_compound(&out[..len]);
        }
        for i in 0..out.len() {
            for flip in [0xffu8, 0x01, 0x20, 0x80] {
                let mut bent = out.clone();
                bent[i] ^= flip;
                let _ = parse_compound(&bent);
            }
        }
        let mut seed = 99u32;
        for len in 0..300 {
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            if let Some(b) = junk.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            if let Some(b) = junk.get_mut(1) {
                *b = 200 + (*b % 4);
            }
            let _ = parse_compound(&junk);
        }
    }

    #[test]
    fn ntp_conversion() {
        let ntp = ntp_timestamp(0);
        assert_eq!(ntp >> 32, 2_208_988_800);
        assert_eq!(ntp_timestamp(500_000) & 0xffff_ffff, 1 << 31);
        assert_eq!(ntp_timestamp(250_000) & 0xffff_ffff, 1 << 30);
        assert_eq!(ntp_timestamp(1_000_000) >> 32, 2_208_988_801);
        assert_eq!(ntp_middle(0x1234_5678_9abc_def0), 0x5678_9abc);
        let _ = ntp_timestamp(u64::MAX);
    }
}
