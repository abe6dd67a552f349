//! Media counters shared by every call task and read by `/metrics`: plain atomics, so the
//! media path never takes a lock to count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct MediaCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bad_packets: AtomicU64,
    /// RTP and RTCP from an address that is not the call's peer (dropped).
    pub foreign_packets: AtomicU64,
    /// SRTP and SRTCP that failed authentication or came again (dropped).
    pub srtp_rejected: AtomicU64,
    pub codec_errors: AtomicU64,
    /// Latest cumulative loss and jitter a peer reported over RTCP (last writer wins).
    pub peer_lost: AtomicI64,
    pub peer_jitter: AtomicU64,
    /// Time spent decoding and encoding for transcoded bridges, and the frames it covered.
    pub transcode_nanos: AtomicU64,
    pub transcoded_frames: AtomicU64,
}

impl MediaCounters {
    pub fn packet_in(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
    }
    pub fn packet_out(&self, bytes: usize) {
        self.packets_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }
    pub fn foreign_packet(&self) {
        self.foreign_packets.fetch_add(1, Relaxed);
    }
    pub fn srtp_rejected(&self) {
        self.srtp_rejected.fetch_add(1, Relaxed);
    }
    pub fn bad_packet(&self) {
        self.bad_packets.fetch_add(1, Relaxed);
    }
    pub fn transcoded(&self, took: std::time::Duration) {
        self.transcode_nanos
            .fetch_add(took.as_nanos() as u64, Relaxed);
        self.transcoded_frames.fetch_add(1, Relaxed);
    }
    pub fn codec_error(&self) {
        self.codec_errors.fetch_add(1, Relaxed);
    }
    pub fn peer_report(&self, lost: i32, jitter: u32) {
        self.peer_lost.store(i64::from(lost), Relaxed);
        self.peer_jitter.store(u64::from(jitter), Relaxed);
    }
}
