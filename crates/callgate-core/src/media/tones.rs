//! Call-progress tones, generated: the ringback a waiting caller hears as early media when the
//! operator chose `media.waiting_audio = "ringback"`. One cadence period of 8 kHz samples,
//! played in a loop by the call's media task.

/// The countries whose ringback `ringback` knows (`media.ringback_country`).
pub const RINGBACK_COUNTRIES: &[&str] = &["us", "uk", "eu"];

/// (frequencies in Hz, on/off stretches in ms: on, off, on, off, ...)
fn cadence(country: &str) -> (&'static [f64], &'static [u32]) {
    match country {
        // BT SIN 350: 400+450 Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
        "uk" => (&[400.0, 450.0], &[400, 200, 400, 2000]),
        // ETSI TR 101 041 / most of Europe: 425 Hz, 1 s on, 4 s off.
        "eu" => (&[425.0], &[1000, 4000]),
        // North America (ANSI T1.401): 440+480 Hz, 2 s on, 4 s off.
        _ => (&[440.0, 480.0], &[2000, 4000]),
    }
}

/// One period of `country`'s ringback at 8 kHz, at about -16 dBm0 a component.
pub fn ringback(country: &str) -> Vec<i16> {
    let (freqs, stretches) = cadence(country);
    let amplitude = 4000.0 / freqs.len() as f64;
    let mut samples = Vec::new();
    for (i, ms) in stretches.iter().enumerate() {
        let n = (*ms as usize) * 8;
        let on = i % 2 == 0;
        for _ in 0..n {
            let t = samples.len() as f64 / 8000.0;
            let v = if on {
                freqs
                    .iter()
                    .map(|f| amplitude * (2.0 * std::f64::consts::PI * f * t).sin())
                    .sum::<f64>()
            } else {
                0.0
            };
            samples.push(v.round() as i16);
        }
    }
    samples
}

/// Voice-like audio at time `t` (seconds): a 140 Hz voice with its harmonics, in syllables
/// four times a second, peaking near 15,000. A steady tone would soon be treated as
/// background noise by Opus's voice detector, which changes what encoding it costs.
pub fn voice_sample(t: f64) -> f64 {
    let syllable = (t * 4.0 * std::f64::consts::TAU).sin().abs();
    let v: f64 = (1..8)
        .map(|h| (t * 140.0 * f64::from(h) * std::f64::consts::TAU).sin() / f64::from(h))
        .sum();
    v * syllable * 6000.0
}

/// `frames` 20 ms frames of `voice_sample` at `rate`.
pub fn voice(rate: u32, frames: usize) -> Vec<i16> {
    let samples = rate as usize / 50 * frames;
    (0..samples)
        .map(|i| voice_sample(i as f64 / f64::from(rate)) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strength of `hz` in `samples` (one Goertzel bin), relative to full scale.
    fn strength(samples: &[i16], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for x in samples {
            let s0 = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt() / samples.len() as f64
    }

    #[test]
    fn each_ringback_has_its_cadence_and_frequencies() {
        let us = ringback("us");
        assert_eq!(us.len(), 6 * 8000);
        let on = &us[..16000];
        assert!(strength(on, 440.0) > 500.0 && strength(on, 480.0) > 500.0);
        assert!(strength(on, 425.0) < strength(on, 440.0) / 4.0);
        assert!(us[16000..].iter().all(|s| *s == 0), "silent after 2 s");
        let uk = ringback("uk");
        assert_eq!(uk.len(), 3 * 8000);
        assert!(strength(&uk[..3200], 400.0) > 500.0 && strength(&uk[..3200], 450.0) > 500.0);
        assert!(uk[3200..4800].iter().all(|s| *s == 0));
        let eu = ringback("eu");
        assert_eq!(eu.len(), 5 * 8000);
        assert!(strength(&eu[..8000], 425.0) > 1000.0);
    }
}
