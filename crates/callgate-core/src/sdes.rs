//! SDES (RFC 4568): the SRTP master keys a trunk and callgate give each other in SDP
//! `a=crypto` lines. Only the text of those lines lives here; the offer/answer rules are in
//! `sdp`, the packet protection in `media::srtp`.
//!
//! Keys travel in the SDP itself, so they are only as secret as the signalling: the b2bua
//! puts them in SDP only toward trunks reached over SIP TLS, unless the operator allows
//! otherwise for a trunk.

use std::fmt;

use base64::Engine;
use rand::RngCore;

/// AES-128 key and 112-bit salt, the master key of both suites callgate speaks.
pub const MASTER_KEY_LEN: usize = 30;

/// An SRTP master key with its salt. Its `Debug` never shows the bytes: keys end up in
/// logged structs (the SDP's session), and must not end up in the logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey(pub [u8; MASTER_KEY_LEN]);

impl MasterKey {
    /// A fresh key from the operating system's generator: one per call and direction.
    pub fn random() -> MasterKey {
        let mut key = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        MasterKey(key)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// The crypto suites callgate accepts (RFC 4568 §6.2). Both protect SRTCP with an 80-bit
/// tag; `_32` shortens only the SRTP tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    pub fn name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    pub fn parse(name: &str) -> Option<SrtpSuite> {
        [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Bytes of authentication tag each SRTP packet carries.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// One `a=crypto` line: `tag suite inline:key[|lifetime]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    pub tag: u32,
    pub suite: SrtpSuite,
    pub key: MasterKey,
}

/// Session parameters (RFC 4568 §6.3) that change nothing for callgate: a key derivation
/// rate of 0 is the default, and a window size hint may be ignored.
fn harmless_session_param(param: &str) -> bool {
    param == "KDR=0"
        || param
            .strip_prefix("WSH=")
            .is_some_and(|n| n.parse::<u32>().is_ok())
}

impl CryptoAttribute {
    /// The value of an `a=crypto` attribute. `None` for a line callgate cannot honour (an
    /// unknown suite, several keys, a master key identifier, a session parameter that
    /// would change the protection): RFC 4568 §7.1.1 has such a line skipped, not the
    /// whole offer refused.
    pub fn parse(value: &str) -> Option<CryptoAttribute> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next()?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let suite = SrtpSuite::parse(fields.next()?)?;
        let key_params = fields.next()?;
        if !fields.all(harmless_session_param) {
            return None;
        }
        let key_info = key_params.strip_prefix("inline:")?;
        if key_info.contains(';') {
            return None; // several master keys need MKIs, which callgate does not use
        }
        let mut parts = key_info.split('|');
        let encoded = parts.next()?;
        match (parts.next(), parts.next()) {
            (None, None) => {}
            // A lifetime ("2^31", or a count) is fine: no call reaches 2^31 packets. One
            // with an MKI ("1:4") is not.
            (Some(lifetime), None) if !lifetime.contains(':') => {}
            _ => return None,
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let key: [u8; MASTER_KEY_LEN] = bytes.try_into().ok()?;
        Some(CryptoAttribute {
            tag: tag.parse().ok()?,
            suite,
            key: MasterKey(key),
        })
    }

    /// The attribute's value, as `parse` reads it.
    pub fn value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(self.key.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4568 §6.1's example key.
    const RFC_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn reads_the_rfc_example_and_writes_it_back() {
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4");
        // The RFC's example carries an MKI: skipped.
        assert_eq!(CryptoAttribute::parse(&line), None);
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20");
        let crypto = CryptoAttribute::parse(&line).expect("parses");
        assert_eq!(crypto.tag, 1);
        assert_eq!(crypto.suite, SrtpSuite::AesCm128HmacSha1_80);
        assert_eq!(&crypto.key.0[..4], b"YS__");
        assert_eq!(
            crypto.value(),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}")
        );
        assert_eq!(CryptoAttribute::parse(&crypto.value()), Some(crypto));
    }

    #[test]
    fn lines_callgate_cannot_honour_are_skipped() {
        for value in [
            format!("1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}"),
            format!("1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY};inline:{RFC_KEY}"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=1"),
            format!("1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^31|1:1"),
            format!("x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"),
            format!("1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"),
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_string(),
            format!("1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}"),
            "1 AES_CM_128_HMAC_SHA1_80".to_string(),
            String::new(),
        ] {
            assert_eq!(CryptoAttribute::parse(&value), None, "{value}");
        }
    }

    #[test]
    fn harmless_session_parameters_and_the_short_tag_are_taken() {
        let line = format!("7 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}|2^31 KDR=0 WSH=128");
        let crypto = CryptoAttribute::parse(&line).expect("parses");
        assert_eq!(crypto.tag, 7);
        assert_eq!(crypto.suite.rtp_tag_len(), 4);
    }

    #[test]
    fn keys_are_fresh_and_never_printed() {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "MasterKey(..)");
    }
}
