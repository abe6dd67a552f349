//! The reference SRTP implementation, Cisco's libsrtp2 (C, the system library), bound for
//! the tests alone: what callgate protects must open there, and what it protects must open
//! here, so the Rust implementation the gateway runs is held to the one peers grew up with.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::sync::Once;

use crate::sdes::{MasterKey, SrtpSuite};

/// Room libsrtp may write past a packet when protecting it (`SRTP_MAX_TRAILER_LEN`, with
/// the four bytes of the SRTCP index).
const MAX_TRAILER: usize = 144 + 4;

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
    fn new(suite: SrtpSuite, key: &MasterKey, ssrc_kind: c_int) -> Result<Context, c_int> {
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
            return Err(status);
        }
        Ok(Context { raw })
    }

    /// Run `transform` over `packet` in place, with room for the trailer it may add.
    fn apply(
        &mut self,
        packet: &mut Vec<u8>,
        transform: unsafe extern "C" fn(SrtpT, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<(), c_int> {
        let len = packet.len();
        let Ok(mut c_len) = c_int::try_from(len) else {
            return Err(-1);
        };
        packet.resize(len + MAX_TRAILER, 0);
        // SAFETY: the buffer holds `len` bytes of packet and MAX_TRAILER writable bytes
        // after them, which is all libsrtp writes; it reports the new length in `c_len`.
        let status = unsafe { transform(self.raw, packet.as_mut_ptr().cast(), &mut c_len) };
        if status != 0 {
            packet.truncate(len);
            return Err(status);
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
    ) -> Result<usize, c_int> {
        // Shorter than any RTP header or SRTCP trailer: libsrtp is not asked.
        if packet.len() < 12 {
            return Err(-1);
        }
        let Ok(mut c_len) = c_int::try_from(packet.len()) else {
            return Err(-1);
        };
        // SAFETY: unprotecting reads the packet's bytes and writes only within them (the
        // plaintext is never longer than the protected packet).
        let status = unsafe { transform(self.raw, packet.as_mut_ptr().cast(), &mut c_len) };
        if status != 0 {
            return Err(status);
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

/// Both directions of one SRTP session, as a trunk running libsrtp2 would hold them.
pub struct ReferenceSession {
    outbound: Context,
    inbound: Context,
}

impl ReferenceSession {
    pub fn new(suite: SrtpSuite, ours: &MasterKey, theirs: &MasterKey) -> Result<Self, c_int> {
        Ok(ReferenceSession {
            outbound: Context::new(suite, ours, SSRC_ANY_OUTBOUND)?,
            inbound: Context::new(suite, theirs, SSRC_ANY_INBOUND)?,
        })
    }

    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), c_int> {
        self.outbound.apply(packet, srtp_protect)
    }

    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), c_int> {
        self.outbound.apply(packet, srtp_protect_rtcp)
    }

    pub fn unprotect_rtp(&mut self, packet: &mut [u8]) -> Result<usize, c_int> {
        self.inbound.apply_in_place(packet, srtp_unprotect)
    }

    pub fn unprotect_rtcp(&mut self, packet: &mut [u8]) -> Result<usize, c_int> {
        self.inbound.apply_in_place(packet, srtp_unprotect_rtcp)
    }
}

#[test]
fn the_policy_struct_matches_libsrtp_2() {
    // sizeof(srtp_policy_t) and sizeof(srtp_crypto_policy_t) on 64-bit Linux, libsrtp 2.5.
    assert_eq!(std::mem::size_of::<Policy>(), 128);
    assert_eq!(std::mem::size_of::<CryptoPolicy>(), 24);
}
