//! Counters `/metrics` reports that are not media's: SIP messages by direction and method or
//! status code, and open agent WebSockets. Counting a SIP message takes an uncontended lock
//! in the signalling task; the media path never touches these.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct GatewayCounters {
    /// (direction `in`/`out`, method or status code) → messages.
    sip: Mutex<BTreeMap<(&'static str, String), u64>>,
    pub websockets: AtomicI64,
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
        Some(m) if m.len() <= 16 && m.bytes().all(|b| b.is_ascii_uppercase()) => m.to_string(),
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
