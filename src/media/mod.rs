//! Media: RTP/RTCP, codecs, DTMF and each call's media task, all on 20 ms frames. Knows
//! packets, samples and sockets; never SIP, WebSocket or the controller's state.

pub mod bridge;
pub mod call;
pub mod call_recording;
pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod latch;
pub mod mixer;
pub mod monitor;
pub mod ports;
pub mod recorder;
pub mod recording;
pub mod recording_mode;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod srtp;
pub mod stats;
pub mod tones;
pub mod wav;
