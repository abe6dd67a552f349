//! callgate: a self-hosted SIP/WebRTC media gateway. See DESIGN in the README: cores (sip,
//! sdp, b2bua, controller, media codecs) are sans-IO; shells (app, api, media tasks) own
//! sockets, tasks and files.

pub mod api;
pub mod app;
pub mod b2bua;
pub mod bench;
pub mod config;
pub mod conn;
pub mod controller;
pub mod demo;
pub mod gateway;
pub mod http_client;
pub mod ids;
pub mod media;
pub mod metrics;
pub mod names;
pub mod overload;
pub mod sdes;
pub mod sdp;
pub mod sip;
pub mod store;
pub mod tls_client;
pub mod webhooks;
pub mod webrtc;
