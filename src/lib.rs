//! callgate: a self-hosted SIP/WebRTC media gateway. See DESIGN in the README: cores (sip,
//! sdp, b2bua, controller, media codecs) are sans-IO; shells (app, api, media tasks) own
//! sockets, tasks and files.

pub use callgate_core::{b2bua, config, controller, gateway, ids, log, sdes, sdp, sip, time};

pub mod api;
pub mod app;
#[cfg(feature = "testkit")]
pub mod bench;
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
