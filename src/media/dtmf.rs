//! RFC 4733 telephone-events: the payload format, the packet sequence a sender emits for one
//! digit, and a receiver that reports each digit once despite redundant end packets. Pure:
//! the media task supplies timestamps and sends the packets.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DtmfError {
    #[error("telephone-event payload shorter than 4 bytes")]
    Truncated,
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
        let [event, flags, d0, d1, ..] = payload else {
            return Err(DtmfError::Truncated);
        };
        Ok(TelephoneEvent {
            event: *event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3f,
            duration: u16::from_be_bytes([*d0, *d1]),
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(self.event);
        out.push(if self.end { 0x80 } else { 0 } | (self.volume & 0x3f));
        out.extend_from_slice(&self.duration.to_be_bytes());
    }
}

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

pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The packets of one digit, one per 20 ms frame: a start packet with the marker bit, updates
/// with growing duration, then the end packet three times with the final duration
/// (RFC 4733 §2.5.1.4), followed by one frame of quiet so the next digit is distinct.
#[derive(Debug, Clone)]
pub struct DigitSender {
    event: u8,
    frame_ticks: u16,
    total_ticks: u16,
    elapsed: u16,
    ends_sent: u8,
}

/// Default digit length and volume.
pub const DIGIT_VOLUME: u8 = 10;

impl DigitSender {
    /// `frame_ticks`: timestamp units per 20 ms frame; `total_ticks`: how long the digit lasts.
    pub fn new(digit: char, frame_ticks: u16, total_ticks: u32) -> Option<DigitSender> {
        let event = digit_to_event(digit)?;
        let frame_ticks = frame_ticks.max(1);
        let total = u16::try_from(total_ticks).unwrap_or(u16::MAX).max(frame_ticks);
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
        if self.ends_sent >= 3 {
            return None;
        }
        let marker = self.elapsed == 0;
        self.elapsed = self.elapsed.saturating_add(self.frame_ticks).min(self.total_ticks);
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

/// Reports each received digit once. An event is identified by its RTP timestamp (all its
/// packets share the start timestamp); the digit is reported on its first packet so a lost
/// end packet does not lose the digit.
#[derive(Debug, Default)]
pub struct DigitReceiver {
    last_timestamp: Option<u32>,
}

impl DigitReceiver {
    pub fn new() -> DigitReceiver {
        DigitReceiver::default()
    }

    pub fn on_packet(&mut self, rtp_timestamp: u32, event: &TelephoneEvent) -> Option<char> {
        if self.last_timestamp == Some(rtp_timestamp) {
            return None;
        }
        self.last_timestamp = Some(rtp_timestamp);
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
        assert_eq!(TelephoneEvent::parse(&out[..3]), Err(DtmfError::Truncated));
    }

    #[test]
    fn digits_map_both_ways() {
        for c in "0123456789*#ABCD".chars() {
            assert_eq!(digit_to_event(c).and_then(event_to_digit), Some(c));
        }
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(event_to_digit(16), None);
    }

    #[test]
    fn sender_emits_marker_updates_and_three_ends() {
        let packets: Vec<_> = DigitSender::new('5', 160, 800).expect("digit").collect();
        assert_eq!(packets.len(), 7, "{packets:?}");
        assert!(packets[0].0 && packets.iter().skip(1).all(|p| !p.0));
        let durations: Vec<u16> = packets.iter().map(|p| p.1.duration).collect();
        assert_eq!(durations, vec![160, 320, 480, 640, 800, 800, 800]);
        assert_eq!(packets.iter().filter(|p| p.1.end).count(), 3);
        assert!(DigitSender::new('x', 160, 800).is_none());
    }

    #[test]
    fn receiver_reports_each_event_once() {
        let mut rx = DigitReceiver::new();
        let ev = |end| TelephoneEvent {
            event: 7,
            end,
            volume: 10,
            duration: 160,
        };
        assert_eq!(rx.on_packet(1000, &ev(false)), Some('7'));
        assert_eq!(rx.on_packet(1000, &ev(false)), None);
        assert_eq!(rx.on_packet(1000, &ev(true)), None);
        assert_eq!(rx.on_packet(1000, &ev(true)), None);
        assert_eq!(rx.on_packet(2000, &ev(true)), Some('7'), "a new event, even if only its end arrives");
    }
}
