//! ITU-T G.711 mu-law and A-law, sample by sample and over slices. Decoding goes through
//! 256-entry tables built at compile time. Pure arithmetic: no I/O, no packets.

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

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

pub fn alaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let mask = if s >= 0 {
        0xD5
    } else {
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

pub fn decode_ulaw_into(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|b| ULAW_TABLE[usize::from(*b)]));
}

pub fn decode_alaw_into(src: &[u8], dst: &mut Vec<i16>) {
    dst.extend(src.iter().map(|b| ALAW_TABLE[usize::from(*b)]));
}

pub fn encode_ulaw_into(src: &[i16], dst: &mut Vec<u8>) {
    dst.extend(src.iter().map(|s| ulaw_encode(*s)));
}

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
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(0), 0xD5);
    }

    #[test]
    fn every_code_round_trips_through_the_encoder() {
        for byte in 0..=255u8 {
            let u = ulaw_decode(byte);
            assert_eq!(ulaw_decode(ulaw_encode(u)), u, "ulaw {byte:#x}");
            let a = alaw_decode(byte);
            assert_eq!(alaw_decode(alaw_encode(a)), a, "alaw {byte:#x}");
        }
    }

    #[test]
    fn quantisation_error_is_bounded() {
        for s in (-32768i32..=32767).step_by(7) {
            let s = s as i16;
            let err_u = (i32::from(ulaw_decode(ulaw_encode(s))) - i32::from(s)).abs();
            let err_a = (i32::from(alaw_decode(alaw_encode(s))) - i32::from(s)).abs();
            let bound = (i32::from(s).abs() / 16).max(16) + 8;
            assert!(err_u <= bound.max(1100) || err_u <= bound, "ulaw {s}: {err_u}");
            assert!(err_a <= bound.max(1100), "alaw {s}: {err_a}");
            assert!(err_u <= 1100 && err_a <= 1100);
        }
    }
}
