//! callgate: a self-hosted SIP/WebRTC media gateway. This crate is the shells: sockets,
//! tasks, files and the clock (`app`, `api`, `webrtc`, the media tasks, the call log). The
//! cores it drives are sans-IO crates of their own, re-exported here under their usual paths:
//! `callgate_sip` (as `sip`) and `callgate_core` (`sdp`, `b2bua`, `controller`, `gateway`,
//! `config`, `ids`, and the media sessions under `media`). See "Architecture" in the README.

pub use callgate_core::{b2bua, config, controller, gateway, ids, log, sdes, sdp, sip, time};

pub mod api;
pub mod app;
#[cfg(feature = "testkit")]
pub mod bench;
pub mod cluster;
pub mod conn;
#[cfg(feature = "testkit")]
pub mod demo;
pub mod http_client;
pub mod media;
pub mod metrics;
pub mod names;
pub mod overload;
pub mod store;
pub mod tls_client;
pub mod webhooks;
pub mod webrtc;
