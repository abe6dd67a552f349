//! Which address a call's RTP and RTCP may come from, the way rtpengine's `strict-source`
//! does it: the peer's address is learned from its first packets (symmetric RTP, for peers
//! behind NAT), the SDP's own address always wins, and once learned every other source is
//! ignored. Only a packet from the SDP's host or from the host the call's signalling came
//! from can be learned (a NAT keeps the host and changes the port), so a stranger spraying
//! the port range never wins the race. Pure: the caller gives the time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long after an answer or a re-offer a new source may still be learned when the call's
/// signalling host is not known (a packet from the SDP's host is learned at any time).
pub const LATCH_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SourceLatch {
    /// Where the SDP says the peer sends from (its `c=`/`m=` address).
    expected: Option<SocketAddr>,
    expected_rtcp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// The host the call's SIP came from: its RTP may come from there too.
    signalling: Option<IpAddr>,
    /// Without a signalling host, until then any source may be learned.
    learn_until: Instant,
}

impl SourceLatch {
    pub fn new(
        now: Instant,
        expected: Option<SocketAddr>,
        expected_rtcp: Option<SocketAddr>,
    ) -> SourceLatch {
        SourceLatch {
            expected,
            expected_rtcp,
            latched: None,
            latched_rtcp: None,
            signalling: None,
            learn_until: now + LATCH_WINDOW,
        }
    }

    /// The host the call's signalling came from (a trunk's address, or the proxy's).
    pub fn with_signalling(mut self, host: Option<IpAddr>) -> SourceLatch {
        self.signalling = host;
        self
    }

    /// May a packet from `from` be learned now (nothing latched yet)?
    fn learnable(&self, now: Instant, from: SocketAddr) -> bool {
        let sdp_host = self.expected.map(|e| e.ip());
        match self.signalling {
            Some(host) => from.ip() == host || Some(from.ip()) == sdp_host,
            None => Some(from.ip()) == sdp_host || now < self.learn_until,
        }
    }

    /// Offer/answer moved the peer: learn again, preferring the new SDP address.
    pub fn renegotiated(
        &mut self,
        now: Instant,
        expected: Option<SocketAddr>,
        expected_rtcp: Option<SocketAddr>,
    ) {
        *self = SourceLatch::new(now, expected, expected_rtcp).with_signalling(self.signalling);
    }

    /// An RTP packet from `from`: may it be used? Learns the source when it may.
    pub fn accept_rtp(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.latched == Some(from) {
            return true;
        }
        let learn =
            Some(from) == self.expected || (self.latched.is_none() && self.learnable(now, from));
        if learn {
            // RTCP follows RTP through the same NAT, one port up, until its own packets say
            // where they come from.
            self.latched = Some(from);
            self.latched_rtcp = Some(SocketAddr::new(from.ip(), from.port().wrapping_add(1)));
        }
        learn
    }

    /// An RTCP packet from `from` (on the RTCP port, or muxed): only the peer's host.
    pub fn accept_rtcp(&mut self, from: SocketAddr) -> bool {
        let known = [
            self.latched,
            self.expected,
            self.expected_rtcp,
            self.latched_rtcp,
        ];
        let ours = known.iter().flatten().any(|a| a.ip() == from.ip());
        if ours {
            self.latched_rtcp = Some(from);
        }
        ours
    }

    /// Where our RTP goes: the learned source, else the SDP's address.
    pub fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched.or(self.expected)
    }

    pub fn rtcp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtcp.or(self.expected_rtcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn learns_the_first_source_then_ignores_others() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.10:4000");
        let mut latch = SourceLatch::new(t0, Some(sdp), Some(addr("192.0.2.10:4001")));
        assert_eq!(latch.rtp_destination(), Some(sdp));
        // The peer is behind NAT: its packets come from elsewhere, and that is learned.
        let natted = addr("198.51.100.7:31000");
        assert!(latch.accept_rtp(t0, natted));
        assert_eq!(latch.rtp_destination(), Some(natted));
        // A third party is ignored, then and later.
        let attacker = addr("203.0.113.66:5000");
        assert!(!latch.accept_rtp(t0, attacker));
        assert!(!latch.accept_rtp(t0 + Duration::from_secs(30), attacker));
        assert_eq!(latch.rtp_destination(), Some(natted));
        assert!(!latch.accept_rtcp(attacker));
        assert!(latch.accept_rtcp(addr("198.51.100.7:31001")));
    }

    #[test]
    fn the_sdp_address_wins_over_an_earlier_latch() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.10:4000");
        let mut latch = SourceLatch::new(t0, Some(sdp), None);
        let racer = addr("203.0.113.66:5000");
        assert!(latch.accept_rtp(t0, racer), "first packet in the window");
        assert!(
            latch.accept_rtp(t0, sdp),
            "the SDP's own address takes over"
        );
        assert!(!latch.accept_rtp(t0, racer));
        assert_eq!(latch.rtp_destination(), Some(sdp));
    }

    #[test]
    fn only_the_sdp_host_or_the_signalling_host_can_be_learned() {
        let t0 = Instant::now();
        let sdp = addr("10.0.0.5:4000"); // a private address behind the trunk's NAT
        let trunk: IpAddr = "198.51.100.7".parse().expect("ip");
        let mut latch = SourceLatch::new(t0, Some(sdp), None).with_signalling(Some(trunk));
        // A stranger spraying the port first never wins the race.
        assert!(!latch.accept_rtp(t0, addr("203.0.113.66:5000")));
        // The trunk's host, from whatever port its NAT chose, is learned, even late.
        let late = t0 + LATCH_WINDOW * 3;
        assert!(latch.accept_rtp(late, addr("198.51.100.7:31000")));
        assert!(
            !latch.accept_rtp(late, addr("198.51.100.7:31002")),
            "then strict"
        );
        assert_eq!(latch.rtp_destination(), Some(addr("198.51.100.7:31000")));
        latch.renegotiated(late, Some(sdp), None);
        assert!(
            !latch.accept_rtp(late, addr("203.0.113.66:5000")),
            "still after a re-offer"
        );
    }

    #[test]
    fn nothing_new_is_learned_after_the_window() {
        let t0 = Instant::now();
        let sdp = addr("192.0.2.10:4000");
        let mut latch = SourceLatch::new(t0, Some(sdp), None);
        let late = t0 + LATCH_WINDOW + Duration::from_millis(1);
        assert!(!latch.accept_rtp(late, addr("198.51.100.7:31000")));
        assert!(latch.accept_rtp(late, sdp));
        // A re-offer opens the window again.
        latch.renegotiated(late, Some(sdp), None);
        assert!(latch.accept_rtp(late, addr("198.51.100.7:31000")));
    }
}
