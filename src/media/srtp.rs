//! SRTP toward trunks (RFC 3711), by libsrtp2: the implementation SIP phones and
//! gateways share, so callgate's packets are protected exactly as its peers expect.
//!
//! A call protected by SDES has two contexts: one with our master key for what we send and
//! one with the trunk's for what it sends. libsrtp keeps the rollover counters and the
//! replay windows; an inbound packet that fails its authentication tag, or comes again, is
//! an error here and is dropped by the caller before anything else looks at it.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::fmt;
use std::sync::Once;

use crate::sdes::{MasterKey, SrtpSuite};

/// Room libsrtp may write past a packet when protecting it (`SRTP_MAX_TRAILER_LEN`, with
/// the four bytes of the SRTCP index).
pub const MAX_TRAILER: usize = 144 + 4;

/// `srtp_crypto_policy_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

/// `srtp_ssrc_t`.
#[repr(C)]
struct SsrcSpec {
    kind: c_int,
    value: c_uint,
}

/// `srtp_policy_t` of libsrtp 2.x (checked against the C layout in the tests).
#[repr(C)]
struct Policy {
    ssrc: SsrcSpec,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *const u8,
    keys: *mut c_void,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

type SrtpT = *mut c_void;

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

#[link(name = "srtp2")]
extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut SrtpT, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: SrtpT) -> c_int;
    fn srtp_protect(ctx: SrtpT, rtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: SrtpT, srtp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_rtcp(ctx: SrtpT, rtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect_rtcp(ctx: SrtpT, srtcp: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_crypto_policy_set_rtp_default(policy: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_rtcp_default(policy: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(policy: *mut CryptoPolicy);
}

/// What libsrtp said no to (`srtp_err_status_t`), named where callers act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// The authentication tag did not match: forged, corrupted or under another key.
    Auth,
    /// A packet index seen already, or too old for the replay window.
    Replay,
    /// Too short to be a protected packet, or not RTP at all.
    Malformed,
    /// Anything else libsrtp reports, by its number.
    Other(i32),
}

impl SrtpError {
    fn from_status(status: c_int) -> SrtpError {
        match status {
            7 => SrtpError::Auth,
            9 | 10 => SrtpError::Replay,
            2 | 21 => SrtpError::Malformed,
            other => SrtpError::Other(other),
        }
    }
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::Auth => f.write_str("authentication failed"),
            SrtpError::Replay => f.write_str("replayed packet"),
            SrtpError::Malformed => f.write_str("malformed packet"),
            SrtpError::Other(status) => write!(f, "libsrtp error {status}"),
        }
    }
}

impl std::error::Error for SrtpError {}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: called once, before any other libsrtp function.
        let status = unsafe { srtp_init() };
        assert_eq!(status, 0, "libsrtp2 failed to initialise ({status})");
    });
}

/// One libsrtp session holding one direction's stream template.
struct Context {
    raw: SrtpT,
}

// SAFETY: a libsrtp session has no thread affinity; `Context` owns its session alone and
// all use goes through `&mut`, so moving it between threads is sound.
unsafe impl Send for Context {}

impl Context {
    fn new(suite: SrtpSuite, key: &MasterKey, ssrc_kind: c_int) -> Result<Context, SrtpError> {
        init();
        let mut rtp = CryptoPolicy {
            cipher_type: 0,
            cipher_key_len: 0,
            auth_type: 0,
            auth_key_len: 0,
            auth_tag_len: 0,
            sec_serv: 0,
        };
        let mut rtcp = rtp;
        // SAFETY: both functions only fill in the struct they are given.
        unsafe {
            match suite {
                SrtpSuite::AesCm128HmacSha1_80 => srtp_crypto_policy_set_rtp_default(&mut rtp),
                SrtpSuite::AesCm128HmacSha1_32 => {
                    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&mut rtp)
                }
            }
            // RFC 4568 §6.2: SRTCP keeps the 80-bit tag under both suites.
            srtp_crypto_policy_set_rtcp_default(&mut rtcp);
        }
        let policy = Policy {
            ssrc: SsrcSpec {
                kind: ssrc_kind,
                value: 0,
            },
            rtp,
            rtcp,
            key: key.0.as_ptr(),
            keys: std::ptr::null_mut(),
            num_master_keys: 0,
            deprecated_ekt: std::ptr::null_mut(),
            // 0: libsrtp's default replay window of 128 packets.
            window_size: 0,
            allow_repeat_tx: 0,
            enc_xtn_hdr: std::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: std::ptr::null_mut(),
        };
        let mut raw: SrtpT = std::ptr::null_mut();
        // SAFETY: `policy` and the key it points to live through the call; libsrtp derives
        // its session keys from the master key during `srtp_create` and keeps no pointer to
        // either.
        let status = unsafe { srtp_create(&mut raw, &policy) };
        if status != 0 || raw.is_null() {
            return Err(SrtpError::from_status(status));
        }
        Ok(Context { raw })
    }

    /// Run `transform` over `packet` in place, with room for the trailer it may add.
    fn apply(
        &mut self,
        packet: &mut Vec<u8>,
        transform: unsafe extern "C" fn(SrtpT, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<(), SrtpError> {
        let len = packet.len();
        let Ok(mut c_len) = c_int::try_from(len) else {
            return Err(SrtpError::Malformed);
        };
        packet.resize(len + MAX_TRAILER, 0);
        // SAFETY: the buffer holds `len` bytes of packet and MAX_TRAILER writable bytes
        // after them, which is all libsrtp writes; it reports the new length in `c_len`.
        let status = unsafe { transform(self.raw, packet.as_mut_ptr().cast(), &mut c_len) };
        if status != 0 {
            packet.truncate(len);
            return Err(SrtpError::from_status(status));
        }
        let new_len = usize::try_from(c_len).unwrap_or(0).min(len + MAX_TRAILER);
        packet.truncate(new_len);
        Ok(())
    }

    /// Like `apply`, for a transform that only shrinks the packet (unprotect).
    fn apply_in_place(
        &mut self,
        packet: &mut [u8],
        transform: unsafe extern "C" fn(SrtpT, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<usize, SrtpError> {
        // Shorter than any RTP header or SRTCP trailer: libsrtp is not asked.
        if packet.len() < 12 {
            return Err(SrtpError::Malformed);
        }
        let Ok(mut c_len) = c_int::try_from(packet.len()) else {
            return Err(SrtpError::Malformed);
        };
        // SAFETY: unprotecting reads the packet's bytes and writes only within them (the
        // plaintext is never longer than the protected packet).
        let status = unsafe { transform(self.raw, packet.as_mut_ptr().cast(), &mut c_len) };
        if status != 0 {
            return Err(SrtpError::from_status(status));
        }
        Ok(usize::try_from(c_len).unwrap_or(0).min(packet.len()))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the session was created by `srtp_create` and is freed once, here.
        unsafe {
            srtp_dealloc(self.raw);
        }
    }
}

/// A call's SRTP with one trunk: ours protects what we send, theirs checks and opens what
/// the trunk sends.
pub struct SrtpSession {
    suite: SrtpSuite,
    theirs: MasterKey,
    outbound: Context,
    inbound: Context,
}

impl SrtpSession {
    pub fn new(suite: SrtpSuite, ours: &MasterKey, theirs: &MasterKey) -> Result<Self, SrtpError> {
        Ok(SrtpSession {
            suite,
            theirs: *theirs,
            outbound: Context::new(suite, ours, SSRC_ANY_OUTBOUND)?,
            inbound: Context::new(suite, theirs, SSRC_ANY_INBOUND)?,
        })
    }

    /// A re-offer that changes the trunk's key (RFC 4568 §7.1.4): a new inbound context,
    /// ours goes on so our stream's rollover counter and the trunk's replay state hold.
    pub fn rekey_inbound(&mut self, suite: SrtpSuite, theirs: &MasterKey) -> Result<(), SrtpError> {
        if suite == self.suite && *theirs == self.theirs {
            return Ok(());
        }
        self.inbound = Context::new(suite, theirs, SSRC_ANY_INBOUND)?;
        self.theirs = *theirs;
        Ok(())
    }

    /// RTP in `packet` becomes SRTP (the tag is appended).
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        self.outbound.apply(packet, srtp_protect)
    }

    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        self.outbound.apply(packet, srtp_protect_rtcp)
    }

    /// SRTP in `packet` is checked and decrypted in place; the RTP's length.
    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.inbound.apply_in_place(packet, srtp_unprotect)
    }

    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        self.inbound.apply_in_place(packet, srtp_unprotect_rtcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
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
    fn the_policy_struct_matches_libsrtp_2() {
        // sizeof(srtp_policy_t) and sizeof(srtp_crypto_policy_t) on 64-bit Linux, libsrtp 2.5.
        assert_eq!(std::mem::size_of::<Policy>(), 128);
        assert_eq!(std::mem::size_of::<CryptoPolicy>(), 24);
    }

    #[test]
    fn packets_round_trip_and_tampering_is_caught() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ] {
            let (mut us, mut them) = pair(suite);
            let payload = [0x55u8; 160];
            let plain = rtp(1, &payload);
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
    fn rtcp_round_trips() {
        let (mut us, mut them) = pair(SrtpSuite::AesCm128HmacSha1_32);
        // A receiver report with no blocks.
        let plain = vec![0x80, 201, 0, 1, 1, 2, 3, 4];
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
        for mut junk in [vec![], vec![0x80], vec![0x80; 12], vec![0xff; 400]] {
            assert!(them.unprotect_rtp(&mut junk).is_err());
            assert!(them.unprotect_rtcp(&mut junk).is_err());
        }
    }

    #[test]
    fn a_new_key_from_the_trunk_replaces_only_the_inbound_context() {
        let (a, b, c) = (
            MasterKey::random(),
            MasterKey::random(),
            MasterKey::random(),
        );
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let mut us = SrtpSession::new(suite, &a, &b).unwrap();
        let mut them = SrtpSession::new(suite, &c, &a).unwrap();
        us.rekey_inbound(suite, &c).unwrap();
        let mut packet = rtp(9, &[1; 20]);
        them.protect_rtp(&mut packet).unwrap();
        assert!(us.unprotect_rtp(&mut packet).is_ok());
        let mut ours = rtp(10, &[2; 20]);
        us.protect_rtp(&mut ours).unwrap();
        assert!(them.unprotect_rtp(&mut ours).is_ok());
    }
}
