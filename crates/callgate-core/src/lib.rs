//! callgate's cores: the gateway (`gateway::Gateway`: the B2BUA and the controller behind one
//! `handle(now, wall, input)` / `poll_output()` interface), SDP and SDES, the configuration,
//! and each call's `media::session::MediaSession`. No tokio, no sockets and no clock reads:
//! the time comes with every input (clippy's `disallowed-methods` in `clippy.toml` keeps
//! `Instant::now` and `SystemTime::now` out), so everything here runs under a test on a fake
//! clock. The shells in the `callgate` crate own sockets, tasks and files.

// Tests may read the clock to make up a starting point.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub use callgate_sip as sip;

pub mod b2bua;
pub mod config;
pub mod controller;
pub mod gateway;
pub mod ids;
pub mod log;
pub mod media;
pub mod sdes;
pub mod sdp;
pub mod time;
pub mod url;
