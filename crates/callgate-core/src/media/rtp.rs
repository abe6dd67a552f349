//! RTP (RFC 3550): the fixed header, parsing and writing packets, the RFC 5761 RTP/RTCP
//! demultiplexing test, an outgoing stream that keeps SSRC, sequence and timestamp continuous
//! whatever feeds it, and per-source reception statistics for RTCP report blocks (RFC 3550
//! A.1, A.3, A.8).
//!
//! Owns packet bytes and numbering only. It must not touch sockets, the clock or randomness
//! (callers pick the SSRC and initial values and pass arrival times in), nor codecs or SDP.
//! Parsing never panics: every read of the input is bounds-checked.

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RtpError {
    #[error("{0} bytes is shorter than the 12-byte RTP header")]
    Truncated(usize),
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("CSRC list of {0} entries runs past the packet")]
    CsrcTruncated(u8),
    #[error("header extension runs past the packet")]
    ExtensionTruncated,
    #[error("padding bit set but the padding count is zero")]
    ZeroPadding,
    #[error("padding count {0} is longer than the payload")]
    PaddingTooLong(u8),
}

/// Header fields we read and write. The extension is skipped on parse and never written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// At most 15 are written; the CC field has four bits.
    pub csrcs: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    /// Without header, CSRCs, extension or padding.
    pub payload: &'a [u8],
}

const FIXED_HEADER: usize = 12;

pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let Some(fixed) = buf.get(..FIXED_HEADER) else {
        return Err(RtpError::Truncated(buf.len()));
    };
    let version = fixed[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = fixed[0] & 0x20 != 0;
    let extension = fixed[0] & 0x10 != 0;
    let csrc_count = fixed[0] & 0x0f;
    let mut offset = FIXED_HEADER + 4 * usize::from(csrc_count);
    let csrcs = buf
        .get(FIXED_HEADER..offset)
        .ok_or(RtpError::CsrcTruncated(csrc_count))?
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if extension {
        // A 16-bit profile-defined field, then the extension length in 32-bit words.
        let words = match buf.get(offset + 2..offset + 4) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(RtpError::ExtensionTruncated),
        };
        offset += 4 + 4 * words;
        if buf.len() < offset {
            return Err(RtpError::ExtensionTruncated);
        }
    }
    let mut end = buf.len();
    if padding {
        // The last octet counts the padding, itself included, so zero is impossible.
        let pad = buf.last().copied().unwrap_or(0);
        if pad == 0 {
            return Err(RtpError::ZeroPadding);
        }
        if usize::from(pad) > end - offset {
            return Err(RtpError::PaddingTooLong(pad));
        }
        end -= usize::from(pad);
    }
    Ok(RtpPacket {
        header: RtpHeader {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
            csrcs,
        },
        payload: buf.get(offset..end).unwrap_or(&[]),
    })
}

/// Clears `out` and writes the packet into it: no padding, no extension, at most 15 CSRCs.
pub fn write(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let cc = header.csrcs.len().min(15);
    out.reserve(FIXED_HEADER + 4 * cc + payload.len());
    out.push(0x80 | cc as u8);
    out.push(if header.marker { 0x80 } else { 0 } | (header.payload_type & 0x7f));
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    for csrc in header.csrcs.iter().take(cc) {
        out.extend_from_slice(&csrc.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// RFC 5761 §4 demultiplexing: RTCP packet types 192–223 sit where RTP's marker+PT byte is,
/// and RTP payload types are kept out of 64–95 so the two never collide.
pub fn is_rtcp(buf: &[u8]) -> bool {
    match buf {
        [first, second, ..] => first >> 6 == 2 && (192..=223).contains(second),
        _ => false,
    }
}

/// One outgoing stream. Callers say "a frame of N ticks"; the stream keeps the numbering
/// continuous across whatever produces the frames.
#[derive(Debug, Clone)]
pub struct RtpStream {
    ssrc: u32,
    next_seq: u16,
    next_ts: u32,
    last_ts: u32,
    packets_sent: u32,
    octets_sent: u32,
}

impl RtpStream {
    pub fn new(ssrc: u32, initial_seq: u16, initial_ts: u32) -> RtpStream {
        RtpStream {
            ssrc,
            next_seq: initial_seq,
            next_ts: initial_ts,
            last_ts: initial_ts,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// The header for a frame of `ticks` timestamp units, advancing the stream past it.
    pub fn next_header(&mut self, payload_type: u8, ticks: u32, marker: bool) -> RtpHeader {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_seq,
            timestamp: self.next_ts,
            ssrc: self.ssrc,
            csrcs: Vec::new(),
        };
        self.last_ts = self.next_ts;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_ts = self.next_ts.wrapping_add(ticks);
        header
    }

    /// A packet at an explicit timestamp (echoed media, RFC 4733 events that keep their start
    /// timestamp). The stream's clock moves on to at least one frame past it.
    pub fn header_at(
        &mut self,
        payload_type: u8,
        timestamp: u32,
        marker: bool,
        frame_ticks: u32,
    ) -> RtpHeader {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_seq,
            timestamp,
            ssrc: self.ssrc,
            csrcs: Vec::new(),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.last_ts = timestamp;
        let after = timestamp.wrapping_add(frame_ticks);
        // Only move forward (modulo wrap): a late explicit timestamp never rewinds the clock.
        if after.wrapping_sub(self.next_ts) < u32::MAX / 2 {
            self.next_ts = after;
        }
        header
    }

    /// RFC 4733 packets all carry the event's start timestamp (normally the `next_timestamp()`
    /// taken when the digit began). Only the sequence number advances: the caller still calls
    /// `skip` for each frame the event occupies, so audio resumes at the right time.
    /// `end_of_event` does not change the numbering; it is in the signature so callers state
    /// what they send and per-event bookkeeping can be added without API churn.
    pub fn event_header(
        &mut self,
        payload_type: u8,
        event_start_ts: u32,
        marker: bool,
        end_of_event: bool,
    ) -> RtpHeader {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_seq,
            timestamp: event_start_ts,
            ssrc: self.ssrc,
            csrcs: Vec::new(),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.last_ts = event_start_ts;
        let _ = end_of_event;
        header
    }

    /// Time passes without a packet (hold, silence suppression, a DTMF event's frames): the
    /// timestamp moves on, the sequence does not, so the receiver sees a gap in time but no
    /// loss.
    pub fn skip(&mut self, ticks: u32) {
        self.next_ts = self.next_ts.wrapping_add(ticks);
    }

    /// Record a packet actually sent, for the sender report. RFC 3550 counts payload octets
    /// only, and both counters wrap (§6.4.1), hence the deliberate truncation.
    pub fn count_sent(&mut self, payload_len: usize) {
        self.packets_sent = self.packets_sent.wrapping_add(1);
        self.octets_sent = self.octets_sent.wrapping_add(payload_len as u32);
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    pub fn packets_sent(&self) -> u32 {
        self.packets_sent
    }
    pub fn octets_sent(&self) -> u32 {
        self.octets_sent
    }
    /// Timestamp of the last header handed out (the initial timestamp before any).
    pub fn last_timestamp(&self) -> u32 {
        self.last_ts
    }
    /// Timestamp the next frame will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_ts
    }
}

/// What one packet did to the sequence state (RFC 3550 A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// In order, possibly after a gap smaller than the dropout limit; counted.
    New,
    /// Same sequence number as the highest seen; not counted.
    Duplicate,
    /// Slightly behind the highest seen (late, or a duplicate of an older one); counted as A.1
    /// does, so heavy duplication can make the cumulative loss negative.
    Reordered,
    /// A large jump not (yet) confirmed by its successor; not counted. The media may still be
    /// played: only the statistics ignore it.
    Jump,
    /// The packet after a large jump arrived: the sender restarted its sequence, and the
    /// statistics start again from this packet.
    Restart,
    /// The source is not validated yet: fewer than two packets in sequence. Counted
    /// provisionally; a break in the run starts probation again from this packet.
    Probation,
}

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u32 = 100;
const SEQ_MOD: u32 = 1 << 16;
/// Packets in sequence before a source is believed (A.1 uses 2).
const MIN_SEQUENTIAL: u8 = 2;

/// Reception statistics of one incoming SSRC: what an RTCP report block says about it.
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    ssrc: u32,
    max_seq: u16,
    /// Sequence wraps, in units of 65536 (A.1's `cycles`).
    cycles: u32,
    base_seq: u32,
    /// The sequence number that would confirm a restart; out of u16 range when none.
    bad_seq: u32,
    probation: u8,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet, for A.8.
    transit: Option<u32>,
    /// Interarrival jitter times 16, A.8's integer form; u64 so hostile timestamps cannot
    /// overflow it.
    jitter_q4: u64,
}

impl ReceptionStats {
    /// Statistics for a source whose first packet carried `first_seq`. That packet counts as
    /// received and starts probation.
    pub fn new(ssrc: u32, first_seq: u16) -> ReceptionStats {
        ReceptionStats {
            ssrc,
            max_seq: first_seq,
            cycles: 0,
            base_seq: u32::from(first_seq),
            bad_seq: SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL - 1,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Whether probation is over.
    pub fn is_valid(&self) -> bool {
        self.probation == 0
    }

    fn restart_from(&mut self, seq: u16) {
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u32::from(seq);
        self.bad_seq = SEQ_MOD + 1;
        self.received = 1;
        self.expected_prior = 0;
        self.received_prior = 0;
        // A restarted sender usually has a new timestamp base too; comparing transit times
        // across it would record one huge spurious jitter sample.
        self.transit = None;
    }

    /// RFC 3550 A.1 sequence tracking and A.8 jitter for one packet. `arrival_ts` is the
    /// arrival time converted to the stream's timestamp units, from any fixed origin: only
    /// differences matter, modulo 2^32.
    pub fn update(&mut self, seq: u16, rtp_ts: u32, arrival_ts: u32) -> SeqOutcome {
        let delta = seq.wrapping_sub(self.max_seq);
        let outcome = if self.probation > 0 {
            if delta != 1 {
                self.probation = MIN_SEQUENTIAL - 1;
                self.restart_from(seq);
                self.transit = Some(arrival_ts.wrapping_sub(rtp_ts));
                return SeqOutcome::Probation;
            }
            self.advance(seq);
            self.probation -= 1;
            self.received += 1;
            if self.probation == 0 {
                SeqOutcome::New
            } else {
                SeqOutcome::Probation
            }
        } else if delta == 0 {
            return SeqOutcome::Duplicate;
        } else if delta < MAX_DROPOUT {
            self.advance(seq);
            self.received += 1;
            SeqOutcome::New
        } else if u32::from(delta) <= SEQ_MOD - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two in a row after a big jump: the sender restarted.
                self.restart_from(seq);
                self.transit = Some(arrival_ts.wrapping_sub(rtp_ts));
                return SeqOutcome::Restart;
            }
            self.bad_seq = u32::from(seq.wrapping_add(1));
            return SeqOutcome::Jump;
        } else {
            self.received += 1;
            SeqOutcome::Reordered
        };
        self.update_jitter(rtp_ts, arrival_ts);
        outcome
    }

    fn advance(&mut self, seq: u16) {
        if seq < self.max_seq {
            self.cycles = self.cycles.wrapping_add(SEQ_MOD);
        }
        self.max_seq = seq;
    }

    fn update_jitter(&mut self, rtp_ts: u32, arrival_ts: u32) {
        // Transit and its change are taken modulo 2^32, so a wrap of either clock is harmless;
        // the change is then read as signed.
        let transit = arrival_ts.wrapping_sub(rtp_ts);
        if let Some(previous) = self.transit {
            let d = u64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        u64::from(self.extended_highest_seq().wrapping_sub(self.base_seq)) + 1
    }

    /// Expected minus received, clamped to the report block's 24-bit signed field.
    pub fn cumulative_lost(&self) -> i32 {
        let lost = self.expected() as i64 - self.received as i64;
        lost.clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// A report block for RTCP (A.3). The fraction lost covers the time since the previous
    /// call, so call it once per report sent.
    pub fn report_block(
        &mut self,
        last_sr_ntp_middle: u32,
        delay_since_last_sr: u32,
    ) -> crate::media::rtcp::ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        // Nothing expected means nothing lost. Losing everything would be 256/256, one more
        // than the 8-bit field holds.
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        crate::media::rtcp::ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr: last_sr_ntp_middle,
            delay_since_last_sr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 111,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
            csrcs: vec![7, 8],
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let mut out = vec![1, 2, 3];
        write(&header(), b"abc", &mut out);
        assert_eq!(out.len(), 12 + 8 + 3, "write clears first");
        assert_eq!(out[..2], [0x82, 0x80 | 111]);
        let packet = parse(&out).expect("valid");
        assert_eq!(packet.header, header());
        assert_eq!(packet.payload, b"abc");
        assert!(!is_rtcp(&out));
        let plain = RtpHeader {
            marker: false,
            csrcs: Vec::new(),
            ..header()
        };
        write(&plain, b"", &mut out);
        let packet = parse(&out).expect("empty payload is valid");
        assert_eq!(packet.header, plain);
        assert!(packet.payload.is_empty());
    }

    #[test]
    fn extension_and_padding_are_removed() {
        let mut p = vec![0xB1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0, 0, 0, 9]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension, one word
        p.extend_from_slice(&[0xaa, 0xbb]); // payload
        p.extend_from_slice(&[0, 0, 3]); // padding
        let packet = parse(&p).expect("valid");
        assert_eq!(packet.header.csrcs, vec![9]);
        assert_eq!(packet.header.timestamp, 2);
        assert_eq!(packet.header.ssrc, 3);
        assert_eq!(packet.payload, &[0xaa, 0xbb]);
    }

    #[test]
    fn malformed_packets_are_precise_errors() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::Truncated(5)));
        assert_eq!(parse(&[]), Err(RtpError::Truncated(0)));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::Version(1)));
        assert_eq!(parse(&[0xC0; 12]), Err(RtpError::Version(3)));
        let mut p = vec![0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 200];
        assert_eq!(parse(&p), Err(RtpError::PaddingTooLong(200)));
        p[14] = 0;
        assert_eq!(parse(&p), Err(RtpError::ZeroPadding));
        p[14] = 3;
        assert_eq!(parse(&p).expect("all padding").payload, &[] as &[u8]);
        p[14] = 4;
        assert_eq!(parse(&p), Err(RtpError::PaddingTooLong(4)));
        p[14] = 2;
        assert_eq!(parse(&p).expect("padding ok").payload, &[9]);
        let header_only_padding = [0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            parse(&header_only_padding),
            Err(RtpError::PaddingTooLong(1))
        );
        let ext = [0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 9];
        assert_eq!(parse(&ext), Err(RtpError::ExtensionTruncated));
        let ext_header_cut = [0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0];
        assert_eq!(parse(&ext_header_cut), Err(RtpError::ExtensionTruncated));
        let csrc = [0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&csrc), Err(RtpError::CsrcTruncated(15)));
    }

    #[test]
    fn junk_never_panics() {
        let mut out = Vec::new();
        write(&header(), &[5; 40], &mut out);
        for len in 0..out.len() {
            let _ = parse(&out[..len]);
        }
        let mut seed = 0x1234_5678u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse(&junk);
            for first in [0x80u8, 0x90, 0xA0, 0xB0, 0xBF] {
                let mut bent = junk.clone();
                if let Some(b) = bent.first_mut() {
                    *b = first;
                }
                let _ = parse(&bent);
                let _ = is_rtcp(&bent);
            }
        }
    }

    #[test]
    fn rtcp_demultiplexing() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x80, 191]));
        assert!(!is_rtcp(&[0x80, 0x80]), "PCMU with marker");
        assert!(!is_rtcp(&[0x80]));
        assert!(!is_rtcp(&[0x40, 200, 0, 6]), "not version 2");
    }

    #[test]
    fn stream_stays_continuous() {
        let mut s = RtpStream::new(1, 65534, u32::MAX - 100);
        let a = s.next_header(0, 160, true);
        assert_eq!(
            (a.sequence, a.timestamp, a.ssrc),
            (65534, u32::MAX - 100, 1)
        );
        assert!(a.marker);
        s.skip(160);
        let b = s.next_header(0, 160, false);
        assert_eq!(b.sequence, 65535);
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(320));
        assert_eq!(s.last_timestamp(), b.timestamp);
        let c = s.header_at(0, b.timestamp.wrapping_add(160), false, 160);
        assert_eq!(c.sequence, 0);
        assert_eq!(s.next_timestamp(), c.timestamp.wrapping_add(160));
        let late = s.header_at(0, a.timestamp, false, 160);
        assert_eq!(late.timestamp, a.timestamp);
        assert_eq!(
            s.next_timestamp(),
            c.timestamp.wrapping_add(160),
            "no rewind"
        );
        s.count_sent(160);
        s.count_sent(4);
        assert_eq!((s.packets_sent(), s.octets_sent(), s.ssrc()), (2, 164, 1));
    }

    #[test]
    fn events_keep_their_start_timestamp() {
        let mut s = RtpStream::new(5, 10, 1000);
        s.next_header(0, 160, false);
        let start = s.next_timestamp();
        let mut seqs = Vec::new();
        for i in 0..4 {
            let h = s.event_header(101, start, i == 0, i == 3);
            assert_eq!(h.timestamp, start);
            assert_eq!(h.marker, i == 0);
            assert_eq!(h.payload_type, 101);
            seqs.push(h.sequence);
            s.skip(160);
        }
        assert_eq!(seqs, vec![11, 12, 13, 14]);
        let audio = s.next_header(0, 160, false);
        assert_eq!(audio.sequence, 15);
        assert_eq!(audio.timestamp, start + 4 * 160);
    }

    /// Feeds perfectly paced packets: timestamp and arrival both advance 160 per packet.
    fn feed(r: &mut ReceptionStats, seqs: impl IntoIterator<Item = u16>, ts: &mut u32) {
        for seq in seqs {
            *ts = ts.wrapping_add(160);
            r.update(seq, *ts, *ts);
        }
    }

    #[test]
    fn probation_then_valid() {
        let mut r = ReceptionStats::new(9, 100);
        assert!(!r.is_valid());
        assert_eq!(r.update(500, 0, 0), SeqOutcome::Probation, "not sequential");
        assert_eq!(r.received(), 1, "probation restarted from 500");
        assert_eq!(r.update(501, 0, 0), SeqOutcome::New);
        assert!(r.is_valid());
        assert_eq!(r.received(), 2);
        assert_eq!(r.extended_highest_seq(), 501);
        assert_eq!(r.cumulative_lost(), 0);
    }

    #[test]
    fn sequence_wrap_extends_the_highest_sequence() {
        let mut r = ReceptionStats::new(9, 65530);
        let mut ts = 0u32;
        feed(&mut r, 65531..=65535, &mut ts);
        // Lose 0 and 1 across the wrap.
        feed(&mut r, 2..10, &mut ts);
        assert_eq!(r.extended_highest_seq(), 65536 + 9);
        assert_eq!(r.cumulative_lost(), 2);
        assert_eq!(r.received(), 6 + 8);
        assert_eq!(r.update(9, ts, ts), SeqOutcome::Duplicate);
        assert_eq!(r.received(), 14, "duplicates of the newest are not counted");
        // The lost packet 1 turns up late.
        assert_eq!(r.update(1, ts, ts), SeqOutcome::Reordered);
        assert_eq!(r.cumulative_lost(), 1);
        assert_eq!(
            r.extended_highest_seq(),
            65536 + 9,
            "late packets do not move it"
        );
        let block = r.report_block(0x1234_5678, 65536);
        assert_eq!(block.ssrc, 9);
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.extended_highest_seq, 65545);
        // 16 expected, 15 received: 1/16 of 256.
        assert_eq!(block.fraction_lost, 16);
        assert_eq!(
            (block.last_sr, block.delay_since_last_sr),
            (0x1234_5678, 65536)
        );
        assert_eq!(block.jitter, 0, "perfectly paced packets have no jitter");
        feed(&mut r, 10..20, &mut ts);
        assert_eq!(
            r.report_block(0, 0).fraction_lost,
            0,
            "no loss this interval"
        );
        feed(&mut r, [20, 22, 24, 26], &mut ts);
        // 7 expected (20..=26), 4 received.
        assert_eq!(r.report_block(0, 0).fraction_lost, 109, "3/7 of 256");
        assert_eq!(r.report_block(0, 0).fraction_lost, 0, "empty interval");
    }

    #[test]
    fn loss_of_everything_saturates_the_fraction() {
        let mut r = ReceptionStats::new(1, 0);
        r.update(1, 0, 0);
        r.report_block(0, 0);
        r.update(1000, 0, 0);
        assert_eq!(r.report_block(0, 0).fraction_lost, 255);
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        let mut r = ReceptionStats::new(1, 0);
        assert_eq!(r.update(1, 1000, 5000), SeqOutcome::New);
        // One packet 160 ticks late: D = 160, J = 160/16.
        r.update(2, 1160, 5320);
        assert_eq!(r.jitter(), 10);
        // Back on time: D = 160 again, J = 10 + (160 - 10)/16 = 19.375.
        r.update(3, 1320, 5320);
        assert_eq!(r.jitter(), 19);
        // Alternating lateness converges on the swing, like the floating-point form.
        let mut float = 19.375f64;
        for seq in 4..200u16 {
            let ts = 1000 + 160 * u32::from(seq - 1);
            let late = if seq % 2 == 0 { 80 } else { 0 };
            let before = r.transit;
            r.update(seq, ts, ts + 4000 + late);
            let d =
                f64::from((r.transit.unwrap_or(0).wrapping_sub(before.unwrap_or(0)) as i32).abs());
            float += (d - float) / 16.0;
            // The integer form truncates, so it may trail the real-valued one slightly.
            assert!(
                (f64::from(r.jitter()) - float).abs() <= 2.0,
                "{seq}: {} vs {float}",
                r.jitter()
            );
        }
        assert!((79..=80).contains(&r.jitter()), "{}", r.jitter());
    }

    #[test]
    fn jitter_is_immune_to_timestamp_wrap() {
        let mut r = ReceptionStats::new(1, 0);
        let mut ts = u32::MAX - 800;
        let mut arrival = 7u32;
        for seq in 1..20u16 {
            r.update(seq, ts, arrival);
            ts = ts.wrapping_add(160);
            arrival = arrival.wrapping_add(160);
        }
        assert_eq!(r.jitter(), 0);
        // A hostile sender jumping its timestamps cannot overflow anything.
        for seq in 20..200u16 {
            r.update(seq, u32::from(seq) << 24, 0);
        }
        assert!(r.jitter() > 0);
    }

    #[test]
    fn big_jump_then_successor_is_a_restart() {
        let mut r = ReceptionStats::new(9, 100);
        r.update(101, 0, 0);
        assert_eq!(r.update(20000, 0, 0), SeqOutcome::Jump);
        assert_eq!(r.extended_highest_seq(), 101, "a lone jump is ignored");
        assert_eq!(r.received(), 2);
        assert_eq!(r.update(102, 0, 0), SeqOutcome::New);
        assert_eq!(r.update(30000, 0, 0), SeqOutcome::Jump);
        assert_eq!(r.update(30001, 0, 0), SeqOutcome::Restart);
        assert_eq!(r.extended_highest_seq(), 30001);
        assert_eq!(r.received(), 1);
        assert_eq!(r.cumulative_lost(), 0);
        assert_eq!(r.update(30002, 0, 0), SeqOutcome::New);
    }

    #[test]
    fn misorder_window_boundary() {
        let mut r = ReceptionStats::new(9, 1000);
        r.update(1001, 0, 0);
        // 99 behind is still "late"; 100 behind is a jump (A.1: udelta <= MOD - MISORDER).
        assert_eq!(r.update(1001 - 99, 0, 0), SeqOutcome::Reordered);
        assert_eq!(r.update(1001 - 100, 0, 0), SeqOutcome::Jump);
        // 2999 ahead is a gap; 3000 ahead is a jump.
        assert_eq!(r.update(1001 + 2999, 0, 0), SeqOutcome::New);
        assert_eq!(r.update(4000 + 3000, 0, 0), SeqOutcome::Jump);
    }
}
