//! Counters `/metrics` reports that are not media's: SIP messages by direction and method or
//! status code, SIP dropped by the guard, and open agent WebSockets. Counting a SIP message
//! takes an uncontended lock in the signalling task; the media path never touches these.
//! Label values come from fixed sets, so no input can grow the metrics without bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::sip::guard::{DropCounts, DropReason};

#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// (direction `in`/`out`, method or status code) → messages.
    sip: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// The SIP guard's drops, by `DropReason::ALL` order (copied from the signalling core).
    sip_dropped: [AtomicU64; DropReason::ALL.len()],
    pub websockets: AtomicI64,
    /// Open connections by listener, and those refused for being over a cap.
    pub sip_tcp_connections: Arc<AtomicI64>,
    pub http_connections: Arc<AtomicI64>,
    pub ice_tcp_connections: Arc<AtomicI64>,
    pub connections_refused: Arc<AtomicU64>,
    /// New calls answered 503 because SIP was queueing.
    pub calls_shed: AtomicU64,
    /// Live SIP server and client transactions.
    pub server_transactions: AtomicU64,
    pub client_transactions: AtomicU64,
}

/// Methods counted by name; any other is `other`.
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "UPDATE",
    "INFO",
    "PRACK",
    "REFER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
    "PUBLISH",
];

/// A request's method as a label: one of a fixed set.
pub fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// The method of a request or the status code of a response, from a message's first line.
fn label(bytes: &[u8]) -> String {
    let line = bytes
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(&[]);
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    match words.next() {
        Some(v) if v.starts_with("SIP/") => words
            .next()
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("invalid")
            .to_string(),
        Some(m) if m.bytes().all(|b| b.is_ascii_uppercase()) => method_label(m).to_string(),
        _ => "invalid".to_string(),
    }
}

impl GatewayCounters {
    pub fn sip_in(&self, bytes: &[u8]) {
        self.count("in", bytes);
    }

    /// A message that arrived already parsed (TCP): its method or status code.
    pub fn sip_in_label(&self, label: String) {
        if let Ok(mut map) = self.sip.lock() {
            *map.entry(("in", label)).or_default() += 1;
        }
    }

    pub fn sip_out(&self, bytes: &[u8]) {
        self.count("out", bytes);
    }

    fn count(&self, direction: &'static str, bytes: &[u8]) {
        if let Ok(mut map) = self.sip.lock() {
            *map.entry((direction, label(bytes))).or_default() += 1;
        }
    }

    /// The guard's totals so far (the signalling task copies them after each input).
    pub fn set_sip_dropped(&self, drops: DropCounts) {
        for (slot, reason) in self.sip_dropped.iter().zip(DropReason::ALL) {
            slot.store(drops.get(reason), Relaxed);
        }
    }

    pub fn sip_dropped(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .zip(&self.sip_dropped)
            .map(|(r, n)| (r.as_str(), n.load(Relaxed)))
            .collect()
    }

    pub fn sip(&self) -> Vec<(&'static str, String, u64)> {
        self.sip
            .lock()
            .map(|m| m.iter().map(|((d, l), n)| (*d, l.clone(), *n)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_requests_by_method_and_responses_by_code() {
        assert_eq!(label(b"INVITE sip:a@b SIP/2.0\r\n"), "INVITE");
        assert_eq!(label(b"SIP/2.0 486 Busy Here\r\n"), "486");
        assert_eq!(label(b"\x00garbage"), "invalid");
        assert_eq!(label(b"SIP/2.0 99999 x"), "invalid");
        assert_eq!(label(b"FOOBARBAZ sip:a@b SIP/2.0\r\n"), "other");
        assert_eq!(method_label("XYZZY"), "other");
        let c = GatewayCounters::default();
        c.sip_in(b"OPTIONS sip:x SIP/2.0\r\n");
        c.sip_in(b"OPTIONS sip:x SIP/2.0\r\n");
        c.sip_out(b"SIP/2.0 200 OK\r\n");
        assert_eq!(
            c.sip(),
            vec![
                ("in", "OPTIONS".to_string(), 2),
                ("out", "200".to_string(), 1)
            ]
        );
    }
}
