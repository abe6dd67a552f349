//! The conference mixer of a call: N parties, each hearing the sum of the parties it may hear
//! except itself (mix-minus), on one 20 ms frame at a time. Sums run in i32 and are limited
//! back into i16 without wrapping, and a party that had no frame this tick counts as silence,
//! so one side's packet loss never stalls or shifts the others.

use crate::media::codec::FRAME_SAMPLES;

/// Who may hear whom: `hears[listener][speaker]`.
pub type HearingMatrix<const N: usize> = [[bool; N]; N];

/// What a supervisor does on a call: the three-party hearing rule the mixer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    Listen,
    Whisper,
    Barge,
}

impl MonitorMode {
    pub fn parse(s: &str) -> Option<MonitorMode> {
        match s {
            "listen" => Some(MonitorMode::Listen),
            "whisper" => Some(MonitorMode::Whisper),
            "barge" => Some(MonitorMode::Barge),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MonitorMode::Listen => "listen",
            MonitorMode::Whisper => "whisper",
            MonitorMode::Barge => "barge",
        }
    }

    /// Parties in mixer order.
    pub const PROSPECT: usize = 0;
    pub const AGENT: usize = 1;
    pub const SUPERVISOR: usize = 2;

    /// Who hears whom in this mode (`[listener][speaker]`).
    pub fn hearing(self) -> HearingMatrix<3> {
        let whisper = matches!(self, MonitorMode::Whisper | MonitorMode::Barge);
        let barge = self == MonitorMode::Barge;
        [
            // The prospect hears the agent, and the supervisor only when barging.
            [false, true, barge],
            // The agent hears the prospect, and the supervisor when whispered to or barged.
            [true, false, whisper],
            // The supervisor hears both.
            [true, true, false],
        ]
    }

    /// Whether the supervisor's voice goes anywhere.
    pub fn speaks(self) -> bool {
        self != MonitorMode::Listen
    }
}

/// Mix one frame for every listener. `frames[i]` is party i's frame (`None`: silent this
/// tick); `out[i]` receives what party i hears. Returns, per listener, whether anything was
/// mixed in (a listener who hears only silence can be sent comfort silence or nothing).
pub fn mix_minus<const N: usize>(
    frames: &[Option<&[i16]>; N],
    hears: &HearingMatrix<N>,
    out: &mut [[i16; FRAME_SAMPLES]; N],
) -> [bool; N] {
    let mut heard = [false; N];
    let mut acc = [0i32; FRAME_SAMPLES];
    for listener in 0..N {
        acc.fill(0);
        for (speaker, frame) in frames.iter().enumerate() {
            if speaker == listener || !hears[listener][speaker] {
                continue;
            }
            let Some(frame) = frame else {
                continue;
            };
            heard[listener] = true;
            for (a, s) in acc.iter_mut().zip(frame.iter()) {
                *a += i32::from(*s);
            }
        }
        for (o, a) in out[listener].iter_mut().zip(acc.iter()) {
            *o = limit(*a);
        }
    }
    heard
}

/// Bring a sum back into i16: linear up to 3/4 of full scale, then a soft knee that reaches
/// full scale only asymptotically, so loud overlaps compress instead of clipping into square
/// waves (and never wrap around).
fn limit(sum: i32) -> i16 {
    const KNEE: i32 = 24_576; // 3/4 of full scale
    const HEADROOM: f32 = (i16::MAX as i32 - KNEE) as f32;
    let magnitude = sum.abs();
    if magnitude <= KNEE {
        return sum as i16;
    }
    let over = (magnitude - KNEE) as f32;
    // x / (1 + x/h) stays below h for every x.
    let compressed = KNEE + (over / (1.0 + over / HEADROOM)) as i32;
    (compressed.min(i32::from(i16::MAX)) * sum.signum()) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f64, amplitude: f64) -> [i16; FRAME_SAMPLES] {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            *s = ((i as f64 / 8000.0 * hz * std::f64::consts::TAU).sin() * amplitude) as i16;
        }
        f
    }

    fn power(samples: &[i16], hz: f64) -> f64 {
        let w = std::f64::consts::TAU * hz / 8000.0;
        let (mut re, mut im) = (0.0, 0.0);
        for (i, s) in samples.iter().enumerate() {
            re += f64::from(*s) * (w * i as f64).cos();
            im += f64::from(*s) * (w * i as f64).sin();
        }
        (re * re + im * im).sqrt() / samples.len() as f64
    }

    #[test]
    fn each_listener_hears_the_others_it_may_hear_and_never_itself() {
        // Prospect, agent, supervisor whispering: the prospect does not hear the supervisor.
        let (p, a, s) = (
            tone(400.0, 8000.0),
            tone(1000.0, 8000.0),
            tone(1600.0, 8000.0),
        );
        let frames = [Some(&p[..]), Some(&a[..]), Some(&s[..])];
        let hears = [
            [false, true, false],
            [true, false, true],
            [true, true, false],
        ];
        let mut out = [[0i16; FRAME_SAMPLES]; 3];
        let heard = mix_minus(&frames, &hears, &mut out);
        assert_eq!(heard, [true, true, true]);
        let level = |who: usize, hz: f64| power(&out[who], hz);
        assert!(level(0, 1000.0) > 3000.0 && level(0, 1600.0) < 100.0 && level(0, 400.0) < 100.0);
        assert!(level(1, 400.0) > 3000.0 && level(1, 1600.0) > 3000.0 && level(1, 1000.0) < 100.0);
        assert!(level(2, 400.0) > 3000.0 && level(2, 1000.0) > 3000.0 && level(2, 1600.0) < 100.0);
    }

    #[test]
    fn missing_frames_are_silence_and_loud_sums_never_wrap() {
        let loud = [30_000i16; FRAME_SAMPLES];
        let quiet = [-30_000i16; FRAME_SAMPLES];
        let frames = [Some(&loud[..]), Some(&loud[..]), None, Some(&quiet[..])];
        let all = [[true; 4]; 4];
        let mut out = [[0i16; FRAME_SAMPLES]; 4];
        let heard = mix_minus(&frames, &all, &mut out);
        assert_eq!(heard, [true; 4]);
        // Party 2 hears 30000 + 30000 - 30000: plain 30000 passes the knee compressed.
        assert!(out[2][0] > 24_576 && out[2][0] < i16::MAX);
        // Party 3 hears 60000: limited below full scale, positive (no wrap to negative).
        assert!(out[3][0] > 30_000 && out[3][0] < i16::MAX, "{}", out[3][0]);
        // Party 0 hears 30000 - 30000 = 0.
        assert_eq!(out[0][0], 0);
        let none: [Option<&[i16]>; 2] = [None, None];
        let mut out2 = [[1i16; FRAME_SAMPLES]; 2];
        assert_eq!(mix_minus(&none, &[[true; 2]; 2], &mut out2), [false, false]);
        assert!(out2.iter().all(|f| f.iter().all(|s| *s == 0)));
    }

    #[test]
    fn the_limiter_is_monotonic_and_symmetric() {
        let mut last = i16::MIN;
        for sum in (-200_000..=200_000).step_by(97) {
            let v = limit(sum);
            assert!(v >= last, "{sum}");
            assert_eq!(i32::from(limit(-sum)), -i32::from(v));
            last = v;
        }
        assert_eq!(limit(1234), 1234);
    }
}
