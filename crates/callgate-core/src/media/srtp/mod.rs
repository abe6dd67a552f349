//! SRTP toward trunks (RFC 3711), by the `libsrtp` crate: an SRTP implementation made to
//! stand in for Cisco's libsrtp (same profiles, same rules), in Rust on RustCrypto's AES
//! and HMAC-SHA1. The system's libsrtp2 was tried first and cost 6 to 20 µs a packet here
//! (its Debian build sets up an NSS context per packet); this one costs about 0.7 µs. The
//! tests hold it to libsrtp2 both ways (`reference`).
//!
//! A call protected by SDES has two sessions: one with our master key for what we send and
//! one with the trunk's for what it sends. The sessions keep the rollover counters and the
//! replay windows; an inbound packet that fails its authentication tag, or comes again, is
//! an error here and is dropped by the caller before anything else looks at it. A stream
//! for a new SSRC is kept only once a packet of it has authenticated, so forged packets
//! leave nothing behind.

#[cfg(test)]
mod reference;

use std::fmt;

use libsrtp::{ProtectionProfile, RecvSession, SendSession, StreamConfig};

use crate::sdes::{MasterKey, SrtpSuite};

/// Why a packet was not protected or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// The authentication tag did not match: forged, corrupted or under another key.
    Auth,
    /// A packet index seen already, or too old for the replay window.
    Replay,
    /// Too short to be a protected packet, or not RTP at all.
    Malformed,
    /// The key reached the end of its life (2^48 packets), or could not be set up.
    Key,
}

impl SrtpError {
    fn of(error: libsrtp::SrtpError) -> SrtpError {
        match error {
            libsrtp::SrtpError::Authentication => SrtpError::Auth,
            libsrtp::SrtpError::InvalidPacketIndex => SrtpError::Replay,
            libsrtp::SrtpError::InvalidPacket | libsrtp::SrtpError::InvalidMki => {
                SrtpError::Malformed
            }
            _ => SrtpError::Key,
        }
    }
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrtpError::Auth => "authentication failed",
            SrtpError::Replay => "replayed packet",
            SrtpError::Malformed => "malformed packet",
            SrtpError::Key => "no usable key",
        })
    }
}

impl std::error::Error for SrtpError {}

fn profile(suite: SrtpSuite) -> ProtectionProfile {
    match suite {
        SrtpSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha180,
        SrtpSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha132,
    }
}

/// The stream template for `key`: every SSRC gets a stream from it (RFC 4568 §6.4's SDES
/// keys are per direction, not per SSRC). SRTCP keeps the 80-bit tag under both suites
/// (RFC 4568 §6.2).
fn template(suite: SrtpSuite, key: &MasterKey) -> StreamConfig {
    let (master, salt) = key.0.split_at(16);
    StreamConfig::new(
        vec![libsrtp::MasterKey::new(master, salt, &None)],
        &profile(suite),
        &ProtectionProfile::Aes128CmHmacSha180,
    )
}

fn recv_session(suite: SrtpSuite, key: &MasterKey) -> Result<RecvSession, SrtpError> {
    let mut session = RecvSession::new();
    session
        .add_stream(None, &template(suite, key))
        .map_err(SrtpError::of)?;
    Ok(session)
}

/// A call's SRTP with one trunk: ours protects what we send, theirs checks and opens what
/// the trunk sends.
pub struct SrtpSession {
    suite: SrtpSuite,
    theirs: MasterKey,
    send: SendSession,
    recv: RecvSession,
    /// Where an inbound packet is opened (the crate works on owned buffers).
    opened: Vec<u8>,
}

impl SrtpSession {
    pub fn new(suite: SrtpSuite, ours: &MasterKey, theirs: &MasterKey) -> Result<Self, SrtpError> {
        let mut send = SendSession::new();
        send.add_stream(None, &template(suite, ours))
            .map_err(SrtpError::of)?;
        Ok(SrtpSession {
            suite,
            theirs: *theirs,
            send,
            recv: recv_session(suite, theirs)?,
            opened: Vec::with_capacity(512),
        })
    }

    /// A re-offer that changes the trunk's key (RFC 4568 §7.1.4): a new inbound session,
    /// ours goes on so our stream's rollover counter and the trunk's replay state hold.
    pub fn rekey_inbound(&mut self, suite: SrtpSuite, theirs: &MasterKey) -> Result<(), SrtpError> {
        if suite == self.suite && *theirs == self.theirs {
            return Ok(());
        }
        self.recv = recv_session(suite, theirs)?;
        self.theirs = *theirs;
        Ok(())
    }

    /// RTP in `packet` becomes SRTP (the tag is appended).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        *packet = self
            .send
            .rtp_protect(std::mem::take(packet))
            .map_err(SrtpError::of)?;
        Ok(())
    }

    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        *packet = self
            .send
            .rtcp_protect(std::mem::take(packet))
            .map_err(SrtpError::of)?;
        Ok(())
    }

    /// SRTP in `packet` is checked and decrypted in place; the RTP's length.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.open(packet, true)
    }

    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.open(packet, false)
    }

    fn open(&mut self, packet: &mut [u8], rtp: bool) -> Result<usize, SrtpError> {
        // Shorter than an RTP header or an SRTCP trailer: nothing to ask the session.
        if packet.len() < 12 {
            return Err(SrtpError::Malformed);
        }
        let mut buffer = std::mem::take(&mut self.opened);
        buffer.clear();
        buffer.extend_from_slice(packet);
        let opened = if rtp {
            self.recv.rtp_unprotect(buffer)
        } else {
            self.recv.rtcp_unprotect(buffer)
        }
        .map_err(SrtpError::of)?;
        let len = opened.len().min(packet.len());
        packet[..len].copy_from_slice(&opened[..len]);
        self.opened = opened;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::reference::ReferenceSession;
    use super::*;

    const SUITES: [SrtpSuite; 2] = [
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
    ];

    fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A sender report with one report block, for SRTCP.
    fn rtcp(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x81, 200, 0, 12];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[7; 20]);
        p.extend_from_slice(&[9; 24]);
        p
    }

    fn pair(suite: SrtpSuite) -> (SrtpSession, SrtpSession) {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        (
            SrtpSession::new(suite, &a, &b).unwrap(),
            SrtpSession::new(suite, &b, &a).unwrap(),
        )
    }

    #[test]
    fn packets_round_trip_and_tampering_is_caught() {
        for suite in SUITES {
            let (mut us, mut them) = pair(suite);
            let payload = [0x55u8; 160];
            let plain = rtp(0x1234_5678, 1, &payload);
            let mut packet = plain.clone();
            us.protect_rtp(&mut packet).unwrap();
            assert_eq!(packet.len(), plain.len() + suite.rtp_tag_len());
            assert_eq!(packet[..12], plain[..12], "the header stays readable");
            assert_ne!(packet[12..172], payload[..], "the payload is encrypted");
            let mut tampered = packet.clone();
            tampered[40] ^= 1;
            assert_eq!(them.unprotect_rtp(&mut tampered), Err(SrtpError::Auth));
            let mut received = packet.clone();
            let len = them.unprotect_rtp(&mut received).unwrap();
            assert_eq!(received[..len], plain[..]);
            let mut again = packet.clone();
            assert_eq!(them.unprotect_rtp(&mut again), Err(SrtpError::Replay));
            // Our own packets are not accepted back as theirs (another key).
            let mut reflected = packet;
            assert_eq!(us.unprotect_rtp(&mut reflected), Err(SrtpError::Auth));
        }
    }

    #[test]
    fn forged_packets_under_new_ssrcs_leave_no_stream_behind() {
        let (mut us, mut them) = pair(SrtpSuite::AesCm128HmacSha1_80);
        for ssrc in 0..1000u32 {
            let mut forged = rtp(ssrc, 1, &[0; 170]);
            assert_eq!(them.unprotect_rtp(&mut forged), Err(SrtpError::Auth));
        }
        // A real packet of SSRC 5, sequence 1, still opens: no forged stream took its index.
        let mut packet = rtp(5, 1, &[3; 160]);
        us.protect_rtp(&mut packet).unwrap();
        assert!(them.unprotect_rtp(&mut packet).is_ok());
    }

    #[test]
    fn rtcp_round_trips() {
        let (mut us, mut them) = pair(SrtpSuite::AesCm128HmacSha1_32);
        let plain = rtcp(0x0102_0304);
        let mut packet = plain.clone();
        us.protect_rtcp(&mut packet).unwrap();
        assert_eq!(
            packet.len(),
            plain.len() + 4 + 10,
            "SRTCP index and 80-bit tag"
        );
        let len = them.unprotect_rtcp(&mut packet).unwrap();
        assert_eq!(packet[..len], plain[..]);
    }

    #[test]
    fn garbage_is_refused_not_crashed_on() {
        let (_, mut them) = pair(SrtpSuite::AesCm128HmacSha1_80);
        for mut junk in [
            vec![],
            vec![0x80],
            vec![0x80; 12],
            vec![0xff; 400],
            vec![0x80; 21],
        ] {
            assert!(them.unprotect_rtp(&mut junk).is_err());
            assert!(them.unprotect_rtcp(&mut junk).is_err());
        }
    }

    #[test]
    fn a_new_key_from_the_trunk_replaces_only_the_inbound_session() {
        let (a, b, c) = (
            MasterKey::random(),
            MasterKey::random(),
            MasterKey::random(),
        );
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut us = SrtpSession::new(suite, &a, &b).unwrap();
        let mut them = SrtpSession::new(suite, &c, &a).unwrap();
        us.rekey_inbound(suite, &c).unwrap();
        let mut packet = rtp(1, 9, &[1; 20]);
        them.protect_rtp(&mut packet).unwrap();
        assert!(us.unprotect_rtp(&mut packet).is_ok());
        let mut ours = rtp(2, 10, &[2; 20]);
        us.protect_rtp(&mut ours).unwrap();
        assert!(them.unprotect_rtp(&mut ours).is_ok());
    }

    /// Both ways against Cisco's libsrtp2, both suites, RTP over a sequence wrap (the
    /// rollover counter) and SRTCP.
    #[test]
    fn agrees_with_libsrtp2_both_ways() {
        for suite in SUITES {
            let (a, b) = (MasterKey::random(), MasterKey::random());
            let mut ours = SrtpSession::new(suite, &a, &b).unwrap();
            let mut reference = ReferenceSession::new(suite, &b, &a).unwrap();
            for i in 0..300u32 {
                let seq = 65_400u16.wrapping_add(i as u16);
                let payload: Vec<u8> = (0..160).map(|j| (i + j) as u8).collect();
                let plain = rtp(0xcafe_0001, seq, &payload);
                let mut packet = plain.clone();
                ours.protect_rtp(&mut packet).unwrap();
                let len = reference.unprotect_rtp(&mut packet).unwrap();
                assert_eq!(
                    packet[..len],
                    plain[..],
                    "{suite:?} seq {seq}: ours → libsrtp2"
                );
                let plain = rtp(0xbeef_0002, seq, &payload);
                let mut packet = plain.clone();
                reference.protect_rtp(&mut packet).unwrap();
                let len = ours.unprotect_rtp(&mut packet).unwrap();
                assert_eq!(
                    packet[..len],
                    plain[..],
                    "{suite:?} seq {seq}: libsrtp2 → ours"
                );
            }
            for _ in 0..3 {
                let plain = rtcp(0xcafe_0001);
                let mut packet = plain.clone();
                ours.protect_rtcp(&mut packet).unwrap();
                let len = reference.unprotect_rtcp(&mut packet).unwrap();
                assert_eq!(packet[..len], plain[..]);
                let plain = rtcp(0xbeef_0002);
                let mut packet = plain.clone();
                reference.protect_rtcp(&mut packet).unwrap();
                let len = ours.unprotect_rtcp(&mut packet).unwrap();
                assert_eq!(packet[..len], plain[..]);
            }
        }
    }
}
