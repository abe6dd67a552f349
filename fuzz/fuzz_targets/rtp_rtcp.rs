//! Fuzz target: arbitrary datagrams on a call's RTP and RTCP ports (anyone can send them).
//! The RTP, RTCP and RFC 4733 parsers may not panic; an RTP packet that parses must write
//! back to one that parses to the same header and payload, and the source latch must never
//! accept a stranger once it has learned the peer.
//! Run with `cargo fuzz run rtp_rtcp` from this directory.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callgate::media::latch::SourceLatch;
use callgate::media::{dtmf, rtcp, rtp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rtp::is_rtcp(data);
    let _ = rtcp::parse_compound(data);
    if let Ok(packet) = rtp::parse(data) {
        let _ = dtmf::TelephoneEvent::parse(packet.payload);
        let mut out = Vec::new();
        rtp::write(&packet.header, packet.payload, &mut out);
        let again = rtp::parse(&out).expect("a written packet parses");
        assert_eq!(again.payload, packet.payload);
        assert_eq!(again.header.sequence, packet.header.sequence);
        assert_eq!(again.header.timestamp, packet.header.timestamp);
        assert_eq!(again.header.ssrc, packet.header.ssrc);
    }
    // The first two bytes pick a source among a few; the peer is learned from the first.
    let now = Instant::now();
    let peer: SocketAddr = "192.0.2.1:4000".parse().expect("literal");
    let mut latch = SourceLatch::new(now, Some(peer), None);
    assert!(latch.accept_rtp(now, peer));
    for (i, b) in data.iter().enumerate() {
        let from = SocketAddr::from(([192, 0, 2, b % 4], 4000 + u16::from(b / 64)));
        let at = now + Duration::from_millis(i as u64 * 37);
        let accepted = latch.accept_rtp(at, from);
        assert_eq!(accepted, from == peer, "{from} accepted={accepted}");
        assert_eq!(latch.rtp_destination(), Some(peer));
    }
});
