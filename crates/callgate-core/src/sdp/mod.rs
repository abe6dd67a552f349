//! SDP (RFC 4566) parsing/printing and RFC 3264 offer/answer for callgate's
//! audio legs; knows codecs, not calls.
//!
//! The model keeps what a media gateway acts on (origin, connection,
//! bandwidth, timing, attributes, m= lines) and silently drops the purely
//! informational lines (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`, `r=`), so a
//! parse/print round trip is faithful for everything except those.
//! Address types (`IP4`/`IP6`) are not stored: they are derived from the
//! address text when printing, which is exact for every literal address.
//!
//! `model` holds the types, `parse` reads and prints SDP text, `negotiate` does offer/answer.

mod model;
mod negotiate;
mod parse;
#[cfg(test)]
mod tests;

pub use model::*;
pub use negotiate::{
    accept_answer, answer, offer, reanswer, AudioSession, LocalCrypto, LocalMedia, SrtpKeys,
};
