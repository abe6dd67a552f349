//! RFC 4733 telephone-events: the payload format, digit <-> event mapping, the packet
//! sequence a sender emits for one digit, and a receiver that reports each digit once despite
//! the redundant end packets.
//!
//! Owns only the event payloads and their sequencing. It must not touch RTP numbering (the
//! media task asks `rtp::RtpStream::event_header` for headers), sockets, timers or SIP INFO
//! DTMF. Parsing never panics.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DtmfError {
    #[error("telephone-event payload of {0} bytes, need 4")]
    Truncated(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// 0..=63, in -dBm0 (RFC 4733 §2.3.4).
    pub volume: u8,
    /// In RTP timestamp units since the event began.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        // Longer payloads are accepted: a peer may append further (redundant) events, and the
        // first one is the current event.
        let [event, flags, d0, d1, ..] = payload else {
            return Err(DtmfError::Truncated(payload.len()));
        };
        Ok(TelephoneEvent {
            event: *event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([*d0, *d1]),
        })
    }

    /// Appends the 4-byte payload; the reserved bit is sent as zero and the volume is masked
    /// to its six bits.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.event);
        out.push(if self.end { 0x80 } else { 0 } | (self.volume & 0x3f));
        out.extend_from_slice(&self.duration.to_be_bytes());
    }
}

/// RFC 4733 §3.2 event code of a DTMF digit: 0-9, * (10), # (11), A-D (12-15, either case).
pub fn digit_to_event(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (c as u8 - b'A')),
        'a'..='d' => Some(12 + (c as u8 - b'a')),
        _ => None,
    }
}

/// The DTMF digit of an event code; `None` for flash (16) and the other non-DTMF events.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The packets of one digit, one per frame: a start packet with the marker bit, updates with
/// growing duration, then the end packet three times with the final duration (RFC 4733
/// §2.5.1.4, so one lost packet cannot lose the end). All carry the event's start timestamp,
/// which the caller keeps; the iterator is exhausted after the third end packet.
#[derive(Debug, Clone)]
pub struct DigitSender {
    event: u8,
    frame_ticks: u16,
    total_ticks: u16,
    elapsed: u16,
    ends_sent: u8,
}

/// Volume we send, in -dBm0: a level every DTMF detector accepts.
pub const DIGIT_VOLUME: u8 = 10;
/// Times the final packet is sent.
const END_REPEATS: u8 = 3;

impl DigitSender {
    /// `frame_ticks`: timestamp units per packet (160 for 20 ms at 8 kHz); `total_ticks`: how
    /// long the digit lasts, at least one frame. Durations beyond 65535 ticks would need RFC
    /// 4733 §2.5.1.3 segments, which no digit needs, so they are clamped. `None` for a
    /// character that is not a DTMF digit.
    pub fn new(digit: char, frame_ticks: u16, total_ticks: u32) -> Option<DigitSender> {
        let event = digit_to_event(digit)?;
        let frame_ticks = frame_ticks.max(1);
        let total = u16::try_from(total_ticks)
            .unwrap_or(u16::MAX)
            .max(frame_ticks);
        Some(DigitSender {
            event,
            frame_ticks,
            total_ticks: total,
            elapsed: 0,
            ends_sent: 0,
        })
    }
}

impl Iterator for DigitSender {
    /// (marker bit, event) for the next packet.
    type Item = (bool, TelephoneEvent);

    fn next(&mut self) -> Option<Self::Item> {
        if self.ends_sent >= END_REPEATS {
            return None;
        }
        let marker = self.elapsed == 0;
        self.elapsed = self
            .elapsed
            .saturating_add(self.frame_ticks)
            .min(self.total_ticks);
        let end = self.elapsed >= self.total_ticks;
        if end {
            self.ends_sent += 1;
        }
        Some((
            marker,
            TelephoneEvent {
                event: self.event,
                end,
                volume: DIGIT_VOLUME,
                duration: self.elapsed,
            },
        ))
    }
}

/// How many recent events the receiver remembers, so that late or reordered packets of an
/// earlier digit are not reported again.
const REMEMBERED_EVENTS: usize = 8;

/// Reports each received digit once. An event is identified by its RTP timestamp (all its
/// packets share the start timestamp). The digit is reported on the first packet seen of it,
/// whatever that is (start, update or end), so a lost start or end packet never loses the
/// digit and the caller hears it as soon as it begins. One receiver per incoming SSRC.
#[derive(Debug, Default)]
pub struct DigitReceiver {
    /// Timestamps of recent events, oldest overwritten first.
    recent: [Option<u32>; REMEMBERED_EVENTS],
    next_slot: usize,
}

impl DigitReceiver {
    pub fn new() -> DigitReceiver {
        DigitReceiver::default()
    }

    /// `Some(digit)` the first time an event is seen; `None` for its other packets and for
    /// events that are not DTMF digits.
    pub fn on_packet(&mut self, rtp_timestamp: u32, event: &TelephoneEvent) -> Option<char> {
        if self.recent.contains(&Some(rtp_timestamp)) {
            return None;
        }
        if let Some(slot) = self.recent.get_mut(self.next_slot) {
            *slot = Some(rtp_timestamp);
        }
        self.next_slot = (self.next_slot + 1) % REMEMBERED_EVENTS;
        event_to_digit(event.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_truncation() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let mut out = Vec::new();
        ev.write(&mut out);
        assert_eq!(out, vec![11, 0x8a, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&out), Ok(ev));
        for len in 0..4 {
            assert_eq!(
                TelephoneEvent::parse(&out[..len]),
                Err(DtmfError::Truncated(len))
            );
        }
        // Reserved bit ignored, trailing bytes ignored.
        let peer = [5, 0x40 | 63, 0xff, 0xff, 1, 2, 3, 4];
        assert_eq!(
            TelephoneEvent::parse(&peer),
            Ok(TelephoneEvent {
                event: 5,
                end: false,
                volume: 63,
                duration: 65535
            })
        );
        let loud = TelephoneEvent {
            volume: 200,
            end: false,
            ..ev
        };
        out.clear();
        loud.write(&mut out);
        assert_eq!(
            out[1],
            200 & 0x3f,
            "volume masked, end and reserved bits clear"
        );
    }

    #[test]
    fn digits_map_both_ways() {
        for (i, c) in "0123456789*#ABCD".chars().enumerate() {
            assert_eq!(digit_to_event(c), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(c));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(event_to_digit(16), None);
        assert_eq!(event_to_digit(255), None);
    }

    #[test]
    fn sender_emits_marker_updates_and_three_ends() {
        let packets: Vec<_> = DigitSender::new('5', 160, 800).expect("digit").collect();
        assert_eq!(packets.len(), 7, "{packets:?}");
        assert!(packets[0].0 && packets.iter().skip(1).all(|p| !p.0));
        let durations: Vec<u16> = packets.iter().map(|p| p.1.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        let ends: Vec<bool> = packets.iter().map(|p| p.1.end).collect();
        assert_eq!(ends, vec![false, false, false, false, true, true, true]);
        assert!(packets
            .iter()
            .all(|p| p.1.event == 5 && p.1.volume == DIGIT_VOLUME));
        assert!(DigitSender::new('x', 160, 800).is_none());
    }

    #[test]
    fn sender_edge_durations() {
        // Not a whole number of frames: the last update is cut to the total.
        let d: Vec<u16> = DigitSender::new('#', 160, 500)
            .expect("digit")
            .map(|p| p.1.duration)
            .collect();
        assert_eq!(d, vec![160, 320, 480, 500, 500, 500]);
        // Shorter than a frame: the first packet is already the end, and still has the marker.
        let p: Vec<_> = DigitSender::new('1', 160, 10).expect("digit").collect();
        assert_eq!(p.len(), 3);
        assert!(p[0].0 && p[0].1.end && p[0].1.duration == 160);
        // Far too long: clamped to what 16 bits hold, and it still terminates.
        let p: Vec<_> = DigitSender::new('1', 0, u32::MAX)
            .expect("digit")
            .take(70_000)
            .collect();
        assert!(
            p.len() < 70_000
                && p.last()
                    .is_some_and(|l| l.1.end && l.1.duration == u16::MAX)
        );
    }

    #[test]
    fn receiver_reports_each_event_once() {
        let mut rx = DigitReceiver::new();
        let ev = |event, end| TelephoneEvent {
            event,
            end,
            volume: 10,
            duration: 160,
        };
        assert_eq!(rx.on_packet(1000, &ev(7, false)), Some('7'));
        assert_eq!(rx.on_packet(1000, &ev(7, false)), None);
        assert_eq!(rx.on_packet(1000, &ev(7, true)), None);
        assert_eq!(rx.on_packet(1000, &ev(7, true)), None);
        assert_eq!(
            rx.on_packet(2000, &ev(7, true)),
            Some('7'),
            "a new event, even if only its end arrives"
        );
        // A late end packet of the first digit after the second began.
        assert_eq!(rx.on_packet(1000, &ev(7, true)), None);
        assert_eq!(
            rx.on_packet(3000, &ev(16, false)),
            None,
            "flash is not a digit"
        );
        assert_eq!(rx.on_packet(3000, &ev(16, true)), None);
    }

    #[test]
    fn sender_output_is_received_as_one_digit() {
        let mut rx = DigitReceiver::new();
        let mut digits = String::new();
        for (i, c) in "123#".chars().enumerate() {
            let start_ts = 8000 * i as u32;
            for (_, ev) in DigitSender::new(c, 160, 800).expect("digit") {
                let mut payload = Vec::new();
                ev.write(&mut payload);
                let parsed = TelephoneEvent::parse(&payload).expect("valid");
                digits.extend(rx.on_packet(start_ts, &parsed));
            }
        }
        assert_eq!(digits, "123#");
    }
}
