//! SIP (RFC 3261 and friends) as pure cores: messages and URIs, transactions, dialogs and
//! digest authentication. Nothing here imports tokio, opens a socket or reads the clock, and
//! nothing here knows another module of ours.

pub mod dialog;
pub mod digest;
pub mod guard;
pub mod message;
pub mod transaction;
pub mod uri;
