//! What a call's media knows of the agent's side: a browser's peer connection by its id, the
//! packets of its microphone, and the codec it negotiated, shared with the WebRTC task that
//! keeps it current.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::media::downlink::Downlink;
use crate::sdp::Codec;

/// One agent connection's peer connection.
pub type PeerId = u64;

/// An RTP packet of the agent's microphone, for the call it is routed to.
#[derive(Debug, Clone)]
pub struct AgentPacket {
    pub sequence: u16,
    pub timestamp: u32,
    pub codec: Codec,
    pub payload: Vec<u8>,
}

/// What the calls that encode for an agent's browser need to know of it, shared so they can
/// follow it without a round trip: the codec to send it (chosen from what it negotiated and,
/// with the adaptive downlink, from the loss it reports; either may change mid-call) and the
/// packet loss it reports in its RTCP receiver reports.
#[derive(Debug, Default)]
pub struct PeerCodec {
    codec: AtomicU8,
    loss_percent: AtomicU8,
    /// The codecs it negotiated (bit per `code`), and whether it may hear its source's codec
    /// untouched when it negotiated it (an adaptive downlink on a clean path).
    negotiated: AtomicU8,
    pass_source: std::sync::atomic::AtomicBool,
}

impl PeerCodec {
    pub fn get(&self) -> Option<Codec> {
        match self.codec.load(Ordering::Relaxed) {
            1 => Some(Codec::Pcmu),
            2 => Some(Codec::Pcma),
            3 => Some(Codec::Opus),
            _ => None,
        }
    }

    /// A codec fixed from the start (the far leg of a transfer, whose trunk codec it is).
    pub fn of(codec: Codec) -> PeerCodec {
        let c = PeerCodec::default();
        c.set(Some(codec));
        c
    }

    /// What a call whose audio is in `source` sends it: `source` itself on an adaptive
    /// downlink's clean path when it negotiated it (passed through), otherwise `get()`.
    pub fn toward(&self, source: Codec) -> Option<Codec> {
        let negotiated = self.negotiated.load(Ordering::Relaxed) & (1 << code(Some(source))) != 0;
        if negotiated && self.pass_source.load(Ordering::Relaxed) {
            return Some(source);
        }
        self.get()
    }

    pub fn set(&self, codec: Option<Codec>) {
        self.codec.store(code(codec), Ordering::Relaxed);
    }

    /// Publish a downlink decision: the codec, the codecs negotiated, and whether a
    /// source's own codec may pass.
    pub fn publish(&self, downlink: &Downlink, negotiated: &[Codec]) {
        let mask = negotiated.iter().fold(0u8, |m, c| m | 1 << code(Some(*c)));
        self.negotiated.store(mask, Ordering::Relaxed);
        self.pass_source
            .store(downlink.passes_source(), Ordering::Relaxed);
        self.set(downlink.current());
    }

    /// The share of our packets the browser last reported lost, in percent.
    pub fn loss_percent(&self) -> u8 {
        self.loss_percent.load(Ordering::Relaxed)
    }

    pub fn set_loss(&self, fraction: f32) {
        let percent = (fraction.clamp(0.0, 1.0) * 100.0).round() as u8;
        self.loss_percent.store(percent, Ordering::Relaxed);
    }
}

fn code(codec: Option<Codec>) -> u8 {
    match codec {
        None => 0,
        Some(Codec::Pcmu) => 1,
        Some(Codec::Pcma) => 2,
        Some(Codec::Opus) => 3,
    }
}
