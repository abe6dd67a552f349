//! ITU-T G.711 mu-law (PCMU) and A-law (PCMA), sample by sample and over slices.
//!
//! Owns only the sample <-> octet companding. It must not know about RTP, packetisation,
//! frame sizes or resampling (that is `codec`'s job), and does no I/O. Decoding goes through
//! 256-entry tables built at compile time, so the hot path is one load per sample.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// mu-law code for a 16-bit linear sample (the Sun/ITU reference algorithm on the top 14 bits).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // s is now 132..=32767: the segment is how far its top bit sits above bit 7.
    let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

const fn ulaw_decode_const(byte: u8) -> i16 {
    let u = !byte;
    let sign = u & 0x80;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0f) as i32;
    let magnitude = ((mantissa << 3) + BIAS) << exponent;
    let sample = magnitude - BIAS;
    if sign != 0 {
        -sample as i16
    } else {
        sample as i16
    }
}

/// A-law code for a 16-bit linear sample (the Sun/ITU reference algorithm on the top 13 bits).
pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let mask = if s >= 0 {
        0xD5
    } else {
        // One's complement rather than negation keeps -32768 in range and matches the
        // reference encoder's rounding of negative values.
        s = -s - 1;
        0x55
    };
    s = s.min(32767);
    let byte = if s < 256 {
        (s >> 4) as u8
    } else {
        let exponent = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(1, 7);
        let mantissa = (s >> (exponent + 3)) & 0x0f;
        ((exponent << 4) as u8) | mantissa as u8
    };
    byte ^ mask
}

const fn alaw_decode_const(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let sign = a & 0x80;
    let exponent = ((a >> 4) & 0x07) as i32;
    let mantissa = (a & 0x0f) as i32;
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if sign != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_const(i as u8)
        } else {
            ulaw_decode_const(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = table(false);
static ALAW_TABLE: [i16; 256] = table(true);

pub fn ulaw_decode(byte: u8) -> i16 {
    ULAW_TABLE[usize::from(byte)]
}

pub fn alaw_decode(byte: u8) -> i16 {
    ALAW_TABLE[usize::from(byte)]
}

/// Appends the decoded samples to `dst` (which is not cleared, so frames can be gathered).
pub fn decode_ulaw_into(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|b| ULAW_TABLE[usize::from(*b)]));
}

/// Appends the decoded samples to `dst`.
pub fn decode_alaw_into(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|b| ALAW_TABLE[usize::from(*b)]));
}

/// Appends one code per sample to `dst`.
pub fn encode_ulaw_into(src: &[i16], dst: &mut Vec<u8>) {
    dst.extend(src.iter().map(|s| ulaw_encode(*s)));
}

/// Appends one code per sample to `dst`.
pub fn encode_alaw_into(src: &[i16], dst: &mut Vec<u8>) {
    dst.extend(src.iter().map(|s| alaw_encode(*s)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
    }

    #[test]
    fn silence_bytes() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
        // Tiny noise either side of zero stays on the two codes nearest silence.
        for s in -4..=4 {
            assert!(matches!(ulaw_encode(s), 0xFF | 0x7F | 0xFE | 0x7E), "{s}");
            assert!(matches!(alaw_encode(s), 0xD5 | 0x55), "{s}");
        }
        let mut pcm = Vec::new();
        decode_ulaw_into(&[0xFF; 160], &mut pcm);
        assert!(pcm.iter().all(|s| *s == 0));
        decode_alaw_into(&[0xD5; 160], &mut pcm);
        assert_eq!(pcm.len(), 320);
        assert!(pcm[160..].iter().all(|s| *s == 8));
    }

    #[test]
    fn tables_match_the_arithmetic() {
        for byte in 0..=255u8 {
            assert_eq!(ulaw_decode(byte), ulaw_decode_const(byte));
            assert_eq!(alaw_decode(byte), alaw_decode_const(byte));
        }
    }

    #[test]
    fn every_code_round_trips_through_the_encoder() {
        for byte in 0..=255u8 {
            let u = ulaw_decode(byte);
            assert_eq!(ulaw_decode(ulaw_encode(u)), u, "ulaw {byte:#x}");
            let a = alaw_decode(byte);
            assert_eq!(alaw_encode(a), byte, "alaw {byte:#x}");
        }
        // mu-law has two zeros (0xFF and 0x7F); every other code is its own inverse.
        for byte in (0..=255u8).filter(|b| *b != 0x7F) {
            assert_eq!(ulaw_encode(ulaw_decode(byte)), byte, "ulaw {byte:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_half_a_step() {
        for s in i16::MIN..=i16::MAX {
            let m = i32::from(s).abs();
            let err_u = (i32::from(ulaw_decode(ulaw_encode(s))) - i32::from(s)).abs();
            let err_a = (i32::from(alaw_decode(alaw_encode(s))) - i32::from(s)).abs();
            // Reconstruction sits mid-step; steps double per segment, so the error is at
            // most 1/32 of the (biased) magnitude, except past the clipping point.
            if m <= 32635 {
                assert!(err_u <= (m + 0x84) / 32 + 1, "ulaw {s}: {err_u}");
            } else {
                assert!(err_u <= 32768 - 32124, "ulaw {s}: {err_u}");
            }
            assert!(err_a <= (m / 32).max(8) + 1, "alaw {s}: {err_a}");
        }
    }

    #[test]
    fn slices_match_samples() {
        let pcm: Vec<i16> = (0..400)
            .map(|i| ((i * 811) % 65536 - 32768) as i16)
            .collect();
        let (mut u, mut a) = (Vec::new(), Vec::new());
        encode_ulaw_into(&pcm, &mut u);
        encode_alaw_into(&pcm, &mut a);
        assert_eq!(u.len(), pcm.len());
        assert!(pcm.iter().zip(&u).all(|(s, c)| ulaw_encode(*s) == *c));
        assert!(pcm.iter().zip(&a).all(|(s, c)| alaw_encode(*s) == *c));
        let mut back = Vec::new();
        decode_ulaw_into(&u, &mut back);
        assert!(u.iter().zip(&back).all(|(c, s)| ulaw_decode(*c) == *s));
        encode_ulaw_into(&[], &mut u);
        assert_eq!(u.len(), 400);
    }
}
