//! An adaptive jitter buffer for one direction of one call, used only where media terminates
//! (decode, mix, record): packets go in as they arrive, and the 20 ms frame clock takes one
//! frame out per tick. Playout follows RTP sequence numbers; the target delay follows the
//! RFC 3550 interarrival jitter estimate between 20 and 200 ms, and a late packet pushes it
//! up. Sans-IO: arrival times are given, nothing here reads a clock.

use std::collections::BTreeMap;

/// Shortest and longest target delay, in 20 ms frames (20–200 ms).
pub const MIN_DELAY_FRAMES: usize = 1;
pub const MAX_DELAY_FRAMES: usize = 10;
/// Consecutive missing frames after which the stream is taken to have stopped (hold, a silent
/// peer): playout pauses and starts again, refilled, when packets return.
const STALL_FRAMES: u32 = 10;
/// Arrivals (about a second of 20 ms packets) that must all want less delay before the target
/// shrinks by a frame.
const SHRINK_AFTER: u32 = 50;
/// Arrivals (about ten seconds) after a late packet before the target may shrink again: a
/// target that shrinks back into lateness would conceal a frame every few seconds.
const HOLD_AFTER_LATE: u32 = 500;
/// Ticks (a second) over which the buffer watches for frames it holds beyond its target.
const SPARE_WINDOW: u32 = 50;
/// A sequence number this far from the playout point starts a new stream (a new SSRC or a
/// restart) rather than being a very late or very early packet.
const RESYNC_DISTANCE: i32 = 200;

/// What the frame clock gets on a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The packet due now.
    Frame(Vec<u8>),
    /// The packet due now is missing: conceal it. `next` is the packet after it when that one
    /// is already here (Opus can rebuild the lost frame from its in-band FEC).
    Lost { next: Option<Vec<u8>> },
    /// Nothing to play: the buffer is filling, or the peer stopped sending.
    Idle,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub received: u64,
    pub played: u64,
    pub concealed: u64,
    pub late: u64,
    pub duplicates: u64,
    /// Dropped to bring a grown buffer back to its target.
    pub dropped: u64,
}

#[derive(Debug)]
pub struct JitterBuffer {
    /// Packets waiting, by extended (unwrapped) sequence number.
    packets: BTreeMap<i64, Vec<u8>>,
    /// Extended sequence number of the next frame to play, once playing.
    next: Option<i64>,
    /// Highest extended sequence number seen, to unwrap the next one.
    highest: Option<i64>,
    /// Samples per second of the RTP clock, to turn timestamps into time.
    clock_rate: u32,
    /// RFC 3550 §6.4.1 interarrival jitter, in RTP clock units (scaled by 16 as in §A.8).
    jitter_q4: i64,
    last_transit: Option<i64>,
    target: usize,
    /// Consecutive arrivals that wanted a shorter delay than the target.
    calm: u32,
    /// Arrivals left before the target may shrink after a late packet.
    hold: u32,
    /// The fewest frames held beyond the target at any tick of this window, and the ticks
    /// the window has run: a buffer that never dips to its target plays later than it needs.
    least_spare: usize,
    spare_ticks: u32,
    missing_run: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    pub fn new(clock_rate: u32) -> JitterBuffer {
        JitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            clock_rate: clock_rate.max(1),
            jitter_q4: 0,
            last_transit: None,
            target: 2,
            calm: 0,
            hold: 0,
            least_spare: usize::MAX,
            spare_ticks: 0,
            missing_run: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The delay the buffer aims for, in frames.
    pub fn target_frames(&self) -> usize {
        self.target
    }

    /// Frames waiting.
    pub fn depth(&self) -> usize {
        self.packets.len()
    }

    /// Interarrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        (self.jitter_q4 as f64 / 16.0) * 1000.0 / f64::from(self.clock_rate)
    }

    fn extend(&self, seq: u16) -> i64 {
        let Some(highest) = self.highest else {
            return i64::from(seq);
        };
        let delta = i64::from(seq.wrapping_sub(highest as u16) as i16);
        highest + delta
    }

    /// A packet arrived. `arrival` is the arrival time in RTP clock units on any fixed origin.
    pub fn push(&mut self, seq: u16, timestamp: u32, arrival: u32, payload: &[u8]) {
        self.stats.received += 1;
        let mut ext = self.extend(seq);
        if let Some(next) = self.next {
            if (ext - next).abs() > i64::from(RESYNC_DISTANCE) {
                // A new stream: start over from this packet.
                self.packets.clear();
                self.next = None;
                self.highest = None;
                self.last_transit = None;
                ext = i64::from(seq);
            }
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.update_jitter(timestamp, arrival);
        if let Some(next) = self.next {
            if ext < next {
                // Too late to play: its slot was concealed. Wait longer from now on.
                self.stats.late += 1;
                self.wait_longer();
                return;
            }
        }
        if self.packets.insert(ext, payload.to_vec()).is_some() {
            self.stats.duplicates += 1;
        }
    }

    fn update_jitter(&mut self, timestamp: u32, arrival: u32) {
        let transit = i64::from(arrival.wrapping_sub(timestamp) as i32);
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // J += (|D| - J) / 16, kept scaled by 16 (RFC 3550 §A.8).
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        // A frame, and another for each whole frame of twice the jitter: a packet waits for
        // the next tick anyway (up to a frame), which absorbs jitter of a few milliseconds;
        // one that comes too late all the same raises the target (see `push`).
        let frame = i64::from(self.clock_rate / 50).max(1);
        let jitter = self.jitter_q4 >> 4;
        let wanted = ((2 * jitter) / frame + 1) as usize;
        let wanted = wanted.clamp(MIN_DELAY_FRAMES, MAX_DELAY_FRAMES);
        self.hold = self.hold.saturating_sub(1);
        // Grow at once; shrink one frame after a second of calm arrivals, and not for a while
        // after a packet came too late.
        if wanted > self.target {
            self.target = wanted;
            self.calm = 0;
        } else if wanted < self.target && self.hold > 0 {
            self.calm = 0;
        } else if wanted < self.target {
            self.calm += 1;
            if self.calm >= SHRINK_AFTER {
                self.target -= 1;
                self.calm = 0;
            }
        } else {
            self.calm = 0;
        }
    }

    /// The packets waiting to be played, in order (the buffer keeps them).
    pub fn pending(&self) -> impl Iterator<Item = &[u8]> {
        let from = self.next.unwrap_or(i64::MIN);
        self.packets.range(from..).map(|(_, p)| p.as_slice())
    }

    /// Everything up to and including `seq` has been delivered by other means (passed
    /// through): drop it, and fill up to the target delay again before playing what comes
    /// after it (playing on at once would put the frame clock at the live edge, where every
    /// packet is late).
    pub fn skip_through(&mut self, seq: u16) {
        let ext = self.extend(seq);
        self.packets.retain(|&k, _| k > ext);
        if self.next.is_some_and(|n| n <= ext) {
            self.next = None;
            self.missing_run = 0;
        }
    }

    /// A packet came, or would have come, too late: a frame more of delay, kept for a while.
    fn wait_longer(&mut self) {
        self.target = (self.target + 1).min(MAX_DELAY_FRAMES);
        self.hold = HOLD_AFTER_LATE;
    }

    /// A buffer that held more than its target at every tick for a second (it started
    /// filling at a larger target, or a burst left it deep) drops its oldest frame: one
    /// 20 ms skip a second at most, until the delay is back at the target.
    fn shed_spare(&mut self) {
        let spare = self.packets.len().saturating_sub(self.target);
        self.least_spare = self.least_spare.min(spare);
        self.spare_ticks += 1;
        if self.spare_ticks < SPARE_WINDOW {
            return;
        }
        if self.least_spare > 0 {
            if let Some((&seq, _)) = self.packets.iter().next() {
                self.packets.remove(&seq);
                self.stats.dropped += 1;
                self.next = Some(seq + 1);
            }
        }
        self.least_spare = usize::MAX;
        self.spare_ticks = 0;
    }

    /// One tick of the 20 ms frame clock.
    pub fn pop(&mut self) -> Playout {
        let Some(next) = self.next else {
            // Filling: start once the target delay is buffered.
            if self.packets.len() < self.target {
                return Playout::Idle;
            }
            let Some((&first, _)) = self.packets.iter().next() else {
                return Playout::Idle;
            };
            self.next = Some(first);
            return self.pop();
        };
        // A buffer grown well past its target (a burst, or clock drift) drops its oldest.
        while self.packets.len() > self.target + 2 {
            if let Some((&seq, _)) = self.packets.iter().next() {
                self.packets.remove(&seq);
                self.stats.dropped += 1;
                self.next = Some(seq + 1);
            }
        }
        self.shed_spare();
        let next = self.next.unwrap_or(next);
        self.next = Some(next + 1);
        if let Some(payload) = self.packets.remove(&next) {
            self.missing_run = 0;
            self.stats.played += 1;
            return Playout::Frame(payload);
        }
        self.missing_run += 1;
        if self.missing_run > STALL_FRAMES || (self.packets.is_empty() && self.missing_run > 3) {
            // The peer stopped (or paused) sending: wait to refill rather than conceal forever.
            self.next = None;
            self.missing_run = 0;
            return Playout::Idle;
        }
        self.stats.concealed += 1;
        if self.packets.is_empty() {
            // Nothing after it has come either: the packet is late rather than lost (a frame
            // clock at the edge of the arrivals' phase, a burst on the way). Wait a frame for
            // it instead of skipping it, and keep the frame of delay that buys for a while:
            // skipping would drop it as late and conceal again on every tick that raced it.
            self.next = Some(next);
            if self.missing_run == 1 {
                self.wait_longer();
            }
            return Playout::Lost { next: None };
        }
        Playout::Lost {
            next: self.packets.get(&(next + 1)).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_packets_can_be_read_and_skipped() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 10..14u16 {
            jb.push(
                seq,
                u32::from(seq) * 160,
                u32::from(seq) * 160,
                &[seq as u8],
            );
        }
        assert_eq!(jb.pop(), Playout::Frame(vec![10]));
        let waiting: Vec<u8> = jb.pending().map(|p| p[0]).collect();
        assert_eq!(waiting, [11, 12, 13]);
        // 11 and 12 went out as they came: 13 plays once the target delay is buffered again.
        jb.skip_through(12);
        assert_eq!(jb.pending().count(), 1);
        assert_eq!(jb.pop(), Playout::Idle);
        jb.push(14, 14 * 160, 14 * 160, &[14]);
        assert_eq!(jb.pop(), Playout::Frame(vec![13]));
        assert_eq!(jb.pop(), Playout::Frame(vec![14]));
    }

    const TICKS: u32 = 160;

    fn feed(jb: &mut JitterBuffer, seq: u16, arrival_frames: u32) {
        let ts = u32::from(seq) * TICKS;
        jb.push(seq, ts, arrival_frames * TICKS, &[seq as u8]);
    }

    #[test]
    fn plays_in_sequence_order_after_filling() {
        let mut jb = JitterBuffer::new(8000);
        feed(&mut jb, 11, 0);
        assert_eq!(jb.pop(), Playout::Idle, "filling to the target first");
        feed(&mut jb, 10, 0);
        assert_eq!(jb.pop(), Playout::Frame(vec![10]));
        assert_eq!(jb.pop(), Playout::Frame(vec![11]));
    }

    #[test]
    fn conceals_a_lost_packet_and_offers_the_next_for_fec() {
        let mut jb = JitterBuffer::new(8000);
        for seq in [1u16, 2, 4, 5] {
            feed(&mut jb, seq, u32::from(seq));
        }
        assert_eq!(jb.pop(), Playout::Frame(vec![1]));
        assert_eq!(jb.pop(), Playout::Frame(vec![2]));
        assert_eq!(
            jb.pop(),
            Playout::Lost {
                next: Some(vec![4])
            }
        );
        assert_eq!(jb.pop(), Playout::Frame(vec![4]));
        assert_eq!(jb.stats().concealed, 1);
    }

    #[test]
    fn late_packets_are_dropped_and_raise_the_target() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 1u16..=3 {
            feed(&mut jb, seq, u32::from(seq));
        }
        let before = jb.target_frames();
        for _ in 0..3 {
            jb.pop();
        }
        feed(&mut jb, 2, 4);
        assert_eq!(jb.stats().late, 1);
        assert!(jb.target_frames() > before);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new(8000);
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            jb.push(seq, i as u32 * TICKS, i as u32 * TICKS, &[i as u8]);
        }
        let played: Vec<Playout> = (0..4).map(|_| jb.pop()).collect();
        assert_eq!(
            played,
            (0..4u8)
                .map(|i| Playout::Frame(vec![i]))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn target_delay_adapts_to_jitter_within_bounds() {
        let mut calm = JitterBuffer::new(8000);
        for seq in 0u16..200 {
            feed(&mut calm, seq, u32::from(seq));
            calm.pop();
        }
        assert_eq!(
            calm.target_frames(),
            MIN_DELAY_FRAMES,
            "a calm stream settles at 20 ms"
        );
        let mut rough = JitterBuffer::new(8000);
        for seq in 0u16..200 {
            // Arrivals wander by up to 60 ms.
            let wobble = [0, 3, 1, 2][usize::from(seq) % 4] * TICKS;
            rough.push(
                seq,
                u32::from(seq) * TICKS,
                u32::from(seq) * TICKS + wobble,
                &[0],
            );
            rough.pop();
        }
        assert!(
            (3..=MAX_DELAY_FRAMES).contains(&rough.target_frames()),
            "{} frames for {:.1} ms jitter",
            rough.target_frames(),
            rough.jitter_ms()
        );
        let mut wild = JitterBuffer::new(8000);
        for seq in 0u16..200 {
            let wobble = if seq % 2 == 0 { 0 } else { 100 * TICKS };
            wild.push(
                seq,
                u32::from(seq) * TICKS,
                u32::from(seq) * TICKS + wobble,
                &[0],
            );
        }
        assert_eq!(wild.target_frames(), MAX_DELAY_FRAMES);
    }

    #[test]
    fn a_few_milliseconds_of_jitter_keep_one_frame_and_a_packet_that_misses_its_tick_holds_two() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 0u16..200 {
            // Arrivals wander by up to 4 ms.
            let wobble = [0, 32, 8, 16][usize::from(seq) % 4];
            jb.push(
                seq,
                u32::from(seq) * TICKS,
                u32::from(seq) * TICKS + wobble,
                &[0],
            );
            jb.pop();
        }
        assert_eq!(jb.target_frames(), 1, "{:.1} ms jitter", jb.jitter_ms());
        // A packet that misses its tick is waited for (one frame concealed), played on the
        // next tick rather than dropped as late, and the frame of delay that bought is kept
        // for the next ten seconds of calm arrivals, then given back.
        let mut seq = 200u16;
        assert_eq!(jb.pop(), Playout::Lost { next: None });
        jb.push(seq, u32::from(seq) * TICKS, u32::from(seq) * TICKS, &[7]);
        assert_eq!(jb.pop(), Playout::Frame(vec![7]), "played, not dropped");
        assert_eq!(jb.stats().late, 0);
        let held = jb.target_frames();
        assert_eq!(held, 2);
        for _ in 1..HOLD_AFTER_LATE {
            seq += 1;
            feed(&mut jb, seq, u32::from(seq));
            jb.pop();
        }
        assert_eq!(jb.target_frames(), held, "held after the late packet");
        for _ in 0..(SHRINK_AFTER as usize * held) {
            seq += 1;
            feed(&mut jb, seq, u32::from(seq));
            jb.pop();
        }
        assert_eq!(jb.target_frames(), 1);
    }

    #[test]
    fn a_buffer_deeper_than_its_target_for_a_second_sheds_a_frame() {
        let mut jb = JitterBuffer::new(8000);
        // Playout starts at the initial two frames; the calm stream brings the target to one.
        for seq in 0u16..300 {
            feed(&mut jb, seq, u32::from(seq));
            jb.pop();
        }
        assert_eq!(jb.target_frames(), 1);
        assert_eq!(jb.depth(), 0, "each frame plays on the tick it arrived by");
        assert_eq!(jb.stats().dropped, 1, "one frame shed to get there");
    }

    #[test]
    fn a_stopped_stream_goes_idle_and_refills() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 0u16..4 {
            feed(&mut jb, seq, u32::from(seq));
        }
        let mut idle = 0;
        for _ in 0..20 {
            if jb.pop() == Playout::Idle {
                idle += 1;
            }
        }
        assert!(idle > 10, "{idle}");
        for seq in 30u16..34 {
            feed(&mut jb, seq, u32::from(seq));
        }
        assert!(matches!(jb.pop(), Playout::Frame(_)));
    }

    #[test]
    fn a_new_stream_resynchronises() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 0u16..4 {
            feed(&mut jb, seq, u32::from(seq));
        }
        jb.pop();
        for seq in 40000u16..40004 {
            feed(&mut jb, seq, u32::from(seq));
        }
        assert_eq!(jb.pop(), Playout::Frame(vec![(40000u16 as u8)]));
    }

    #[test]
    fn a_grown_buffer_drops_its_oldest() {
        let mut jb = JitterBuffer::new(8000);
        for seq in 0u16..2 {
            feed(&mut jb, seq, u32::from(seq));
        }
        jb.pop();
        for seq in 2u16..40 {
            feed(&mut jb, seq, 2);
        }
        jb.pop();
        assert!(jb.depth() <= jb.target_frames() + 2);
        assert!(jb.stats().dropped > 0);
    }
}
