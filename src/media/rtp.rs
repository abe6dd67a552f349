//! RTP (RFC 3550): the fixed header, parsing and writing packets, an outgoing stream that keeps
//! SSRC, sequence and timestamp continuous whatever feeds it, and reception statistics for
//! RTCP reports (RFC 3550 A.1, A.3, A.8). Pure: no sockets, no clock.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RtpError {
    #[error("packet shorter than its RTP header")]
    Truncated,
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("padding longer than the payload")]
    BadPadding,
    #[error("header extension runs past the packet")]
    BadExtension,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrcs: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    pub payload: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub fn parse(buf: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if buf.len() < 12 {
        return Err(RtpError::Truncated);
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let padding = buf[0] & 0x20 != 0;
    let extension = buf[0] & 0x10 != 0;
    let csrc_count = usize::from(buf[0] & 0x0f);
    let mut offset = 12 + 4 * csrc_count;
    if buf.len() < offset {
        return Err(RtpError::Truncated);
    }
    let csrcs = (0..csrc_count)
        .filter_map(|i| be32(buf, 12 + 4 * i))
        .collect();
    if extension {
        let words = buf
            .get(offset + 2..offset + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or(RtpError::BadExtension)?;
        offset += 4 + 4 * words;
        if buf.len() < offset {
            return Err(RtpError::BadExtension);
        }
    }
    let mut end = buf.len();
    if padding {
        let pad = usize::from(buf[end - 1]);
        if pad == 0 || offset + pad > end {
            return Err(RtpError::BadPadding);
        }
        end -= pad;
    }
    Ok(RtpPacket {
        header: RtpHeader {
            marker: buf[1] & 0x80 != 0,
            payload_type: buf[1] & 0x7f,
            sequence: u16::from_be_bytes([buf[2], buf[3]]),
            timestamp: be32(buf, 4).unwrap_or(0),
            ssrc: be32(buf, 8).unwrap_or(0),
            csrcs,
        },
        payload: &buf[offset..end],
    })
}

/// Clears `out` and writes the packet into it.
pub fn write(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let cc = header.csrcs.len().min(15);
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

/// RFC 5761 demultiplexing: RTCP packet types 192–223 sit where RTP's marker+PT byte is.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
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
    pub fn header_at(&mut self, payload_type: u8, timestamp: u32, marker: bool, frame_ticks: u32) -> RtpHeader {
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

    /// RFC 4733 packets all carry the event's start timestamp.
    pub fn event_header(&mut self, payload_type: u8, event_start_ts: u32, marker: bool, end_of_event: bool) -> RtpHeader {
        let header = RtpHeader {
            marker,
            payload_type,
            sequence: self.next_seq,
            timestamp: event_start_ts,
            ssrc: self.ssrc,
            csrcs: Vec::new(),
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        let _ = end_of_event;
        header
    }

    /// Time passes without a packet (hold, silence, a DTMF event's frames).
    pub fn skip(&mut self, ticks: u32) {
        self.next_ts = self.next_ts.wrapping_add(ticks);
    }

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
    /// Timestamp of the last packet sent.
    pub fn last_timestamp(&self) -> u32 {
        self.last_ts
    }
    /// Timestamp the next frame will carry.
    pub fn next_timestamp(&self) -> u32 {
        self.next_ts
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    New,
    Duplicate,
    Reordered,
    Restart,
}

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// Reception statistics of one incoming SSRC.
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    ssrc: u32,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    transit: Option<i64>,
    jitter: f64,
}

impl ReceptionStats {
    pub fn new(ssrc: u32, first_seq: u16) -> ReceptionStats {
        ReceptionStats {
            ssrc,
            max_seq: first_seq,
            cycles: 0,
            base_seq: u32::from(first_seq),
            bad_seq: u32::MAX,
            received: 1,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter: 0.0,
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// RFC 3550 A.1 sequence tracking and A.8 jitter. `arrival_ts` is the arrival time in
    /// the stream's timestamp units.
    pub fn update(&mut self, seq: u16, rtp_ts: u32, arrival_ts: u32) -> SeqOutcome {
        let delta = seq.wrapping_sub(self.max_seq);
        let outcome = if delta == 0 {
            SeqOutcome::Duplicate
        } else if delta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
            SeqOutcome::New
        } else if delta <= u16::MAX - MAX_MISORDER {
            if u32::from(seq) == self.bad_seq {
                // Two in a row after a big jump: the sender restarted.
                *self = ReceptionStats::new(self.ssrc, seq);
                return SeqOutcome::Restart;
            }
            self.bad_seq = u32::from(seq.wrapping_add(1));
            return SeqOutcome::Reordered;
        } else {
            SeqOutcome::Reordered
        };
        if outcome != SeqOutcome::Duplicate {
            self.received += 1;
        }
        if outcome == SeqOutcome::New {
            let transit = i64::from(arrival_ts) - i64::from(rtp_ts);
            if let Some(previous) = self.transit {
                let d = (transit - previous).abs() as f64;
                self.jitter += (d - self.jitter) / 16.0;
            }
            self.transit = Some(transit);
        }
        outcome
    }

    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    fn expected(&self) -> u64 {
        u64::from(self.extended_highest_seq().wrapping_sub(self.base_seq)) + 1
    }

    pub fn cumulative_lost(&self) -> i32 {
        let lost = self.expected() as i64 - self.received as i64;
        lost.clamp(-0x80_0000, 0x7f_ffff) as i32
    }

    pub fn jitter(&self) -> u32 {
        self.jitter as u32
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// A report block for RTCP; the fraction lost covers the time since the previous call.
    pub fn report_block(&mut self, last_sr: u32, delay_since_last_sr: u32) -> crate::media::rtcp::ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        crate::media::rtcp::ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse_round_trips() {
        let header = RtpHeader {
            marker: true,
            payload_type: 111,
            sequence: 65535,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
            csrcs: vec![7, 8],
        };
        let mut out = Vec::new();
        write(&header, b"abc", &mut out);
        let packet = parse(&out).expect("valid");
        assert_eq!(packet.header, header);
        assert_eq!(packet.payload, b"abc");
        assert!(!is_rtcp(&out));
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::Truncated));
        assert_eq!(parse(&[0x40; 12]).map(|_| ()), Err(RtpError::Version(1)));
        let mut p = vec![0xA0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 200];
        assert_eq!(parse(&p).map(|_| ()), Err(RtpError::BadPadding));
        p[14] = 2;
        assert_eq!(parse(&p).expect("padding ok").payload, &[9]);
        let ext = [0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 9];
        assert_eq!(parse(&ext).map(|_| ()), Err(RtpError::BadExtension));
        let csrc = [0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse(&csrc).map(|_| ()), Err(RtpError::Truncated));
        for len in 0..40 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x80) as u8).collect();
            let _ = parse(&junk);
        }
    }

    #[test]
    fn stream_stays_continuous() {
        let mut s = RtpStream::new(1, 65534, u32::MAX - 100);
        let a = s.next_header(0, 160, true);
        s.skip(160);
        let b = s.next_header(0, 160, false);
        assert_eq!(b.sequence, a.sequence.wrapping_add(1));
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(320));
        let c = s.header_at(0, b.timestamp.wrapping_add(160), false, 160);
        assert_eq!(c.sequence, 0);
        assert_eq!(s.next_timestamp(), c.timestamp.wrapping_add(160));
        let late = s.header_at(0, a.timestamp, false, 160);
        assert_eq!(late.timestamp, a.timestamp);
        assert_eq!(s.next_timestamp(), c.timestamp.wrapping_add(160), "no rewind");
    }

    #[test]
    fn reception_handles_wrap_loss_and_jitter() {
        let mut r = ReceptionStats::new(9, 65530);
        let mut ts = 0u32;
        for seq in 65531..=65535u16 {
            ts += 160;
            assert_eq!(r.update(seq, ts, ts), SeqOutcome::New);
        }
        // Lose seq 0 and 1, wrap.
        for seq in 2..10u16 {
            ts += 160;
            r.update(seq, ts, ts);
        }
        assert_eq!(r.extended_highest_seq(), 65536 + 9);
        assert_eq!(r.cumulative_lost(), 2);
        assert_eq!(r.update(9, ts, ts), SeqOutcome::Duplicate);
        let block = r.report_block(0, 0);
        assert_eq!(block.cumulative_lost, 2);
        assert!(block.fraction_lost > 0);
        assert_eq!(r.jitter(), 0, "perfectly paced packets have no jitter");
        // 40 ticks of alternating lateness build jitter.
        for (i, seq) in (10..40u16).enumerate() {
            ts += 160;
            let late = if i % 2 == 0 { 80 } else { 0 };
            r.update(seq, ts, ts + late);
        }
        assert!(r.jitter() > 30, "jitter {}", r.jitter());
        assert_eq!(r.report_block(0, 0).fraction_lost, 0, "no loss this interval");
    }

    #[test]
    fn big_jump_twice_is_a_restart() {
        let mut r = ReceptionStats::new(9, 100);
        assert_eq!(r.update(20000, 0, 0), SeqOutcome::Reordered);
        assert_eq!(r.update(20001, 0, 0), SeqOutcome::Restart);
        assert_eq!(r.extended_highest_seq(), 20001);
    }
}
