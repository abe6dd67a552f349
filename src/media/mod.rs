//! Media in the shell: each call's media task with its sockets and clocks (`call`), the RTP
//! port pool, the recording writer thread and its WAV files, and audio files read from disk.
//! What each call does with its packets is decided in `callgate_core::media`, re-exported
//! here so `media::session` and the rest read as one module.

pub use callgate_core::media::*;

pub mod call;
pub mod ports;
pub mod recorder;
pub mod recording;
pub mod wav;
