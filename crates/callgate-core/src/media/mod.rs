//! Media as pure state: RTP/RTCP, codecs, jitter buffers, DTMF, the mixer and each call's
//! `MediaSession`, all on 20 ms frames. Knows packets and samples; never sockets, tasks, files
//! or the clock (the shell's `media::call` task hands each session what arrives and the time),
//! never SIP, WebSocket or the controller's state.

pub mod agent;
pub mod bridge;
pub mod call_recording;
pub mod codec;
pub mod downlink;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod latch;
pub mod mixer;
pub mod monitor;
pub mod recording_mode;
pub mod rtcp;
pub mod rtp;
pub mod session;
pub mod srtp;
pub mod stats;
pub mod tones;
