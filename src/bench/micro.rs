//! Micro-benchmarks beside the call bench: the conference mixer and the codecs, and the
//! voice-like audio both use.

use super::*;

/// What the conference mixer costs: one 3-party mix-minus (prospect, agent, supervisor in
/// barge, each hearing the other two) of a 20 ms frame, over `frames` frames of tones.
pub struct MixerReport {
    pub frames: usize,
    pub elapsed: Duration,
}

impl MixerReport {
    pub fn ns_per_mix(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e9 / self.frames.max(1) as f64
    }

    /// CPU µs per second of a monitored call (50 mixes a second).
    pub fn us_per_call_second(&self) -> f64 {
        self.ns_per_mix() * 50.0 / 1000.0
    }
}

pub fn mixer(frames: usize) -> MixerReport {
    use crate::media::codec::FRAME_SAMPLES;
    use crate::media::mixer::mix_minus;
    use crate::media::monitor::MonitorMode;
    let tone = |hz: f64, frame: usize| -> [i16; FRAME_SAMPLES] {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            let t = (frame * FRAME_SAMPLES + i) as f64 / 8000.0;
            *s = ((t * hz * std::f64::consts::TAU).sin() * 12_000.0) as i16;
        }
        f
    };
    // A second of each party's audio, reused: the mixer, not the tone maker, is measured.
    let parties: Vec<[[i16; FRAME_SAMPLES]; 3]> = (0..50)
        .map(|f| [tone(440.0, f), tone(1000.0, f), tone(1600.0, f)])
        .collect();
    let hearing = MonitorMode::Barge.hearing();
    let mut out = [[0i16; FRAME_SAMPLES]; 3];
    let mut checksum = 0i64;
    let started = Instant::now();
    for i in 0..frames {
        let p = &parties[i % parties.len()];
        let frames_in = [Some(&p[0][..]), Some(&p[1][..]), Some(&p[2][..])];
        let heard = mix_minus(&frames_in, &hearing, &mut out);
        checksum += i64::from(out[i % 3][i % FRAME_SAMPLES]) + i64::from(heard[0]);
    }
    let elapsed = started.elapsed();
    // Keeps the work from being optimised away.
    std::hint::black_box(checksum);
    MixerReport { frames, elapsed }
}

/// What one codec operation on one 20 ms frame costs.
pub struct CodecCost {
    pub what: &'static str,
    pub per_frame: Duration,
}

impl CodecCost {
    /// CPU µs per second of one call (50 frames a second).
    pub fn us_per_call_second(&self) -> f64 {
        self.per_frame.as_secs_f64() * 1e6 * 50.0
    }
}

pub use callgate_core::media::tones::{voice, voice_sample};

/// Time the codec work of a transcoded call over `frames` frames per operation: G.711 both
/// ways, Opus encoding on a clean path and with loss reported (in-band FEC), and Opus decoding
/// of the narrowband stream our answer asks browsers for against the fullband one a browser
/// sends when not asked. Each operation runs `rounds` times, interleaved with the others so a
/// noisy neighbour hits them alike; the median round counts.
pub fn codecs(frames: usize, rounds: usize) -> anyhow::Result<Vec<CodecCost>> {
    use crate::media::codec::{Decoder, Encoder, FRAME_SAMPLES};
    let frames = frames.max(1);
    let pcm = voice(8000, frames);
    let frame_of = |f: usize| &pcm[f * FRAME_SAMPLES..(f + 1) * FRAME_SAMPLES];
    let encoded = |codec: Codec| -> anyhow::Result<Vec<Vec<u8>>> {
        let mut enc = Encoder::new(codec)?;
        let mut payloads = Vec::with_capacity(frames);
        for f in 0..frames {
            let mut out = Vec::new();
            enc.encode(frame_of(f), &mut out)?;
            payloads.push(out);
        }
        Ok(payloads)
    };
    let pcmu = encoded(Codec::Pcmu)?;
    let narrowband = encoded(Codec::Opus)?;
    // What Chrome sends by default: 48 kHz fullband at 32 kb/s.
    let fullband = {
        let wide = voice(48_000, frames);
        let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
        enc.set_bitrate(opus::Bitrate::Bits(32_000))?;
        let mut out = vec![0u8; 1500];
        let mut payloads = Vec::with_capacity(frames);
        for f in 0..frames {
            let n = enc.encode(&wide[f * 960..(f + 1) * 960], &mut out)?;
            payloads.push(out[..n].to_vec());
        }
        payloads
    };

    /// One timed operation: what it is, and one round of it over every frame.
    type Operation<'a> = (&'static str, Box<dyn FnMut() -> anyhow::Result<()> + 'a>);
    let encode =
        |codec: Codec, loss: u8| -> anyhow::Result<Box<dyn FnMut() -> anyhow::Result<()> + '_>> {
            let mut out = Vec::with_capacity(512);
            Ok(Box::new(move || {
                // A fresh encoder each round, as a call starts with one.
                let mut enc = Encoder::new(codec)?;
                enc.set_expected_loss(loss)?;
                for f in 0..frames {
                    enc.encode(frame_of(f), &mut out)?;
                }
                Ok(())
            }))
        };
    let decode =
        |codec: Codec, payloads: &Vec<Vec<u8>>| -> Box<dyn FnMut() -> anyhow::Result<()> + '_> {
            let payloads = payloads.clone();
            let mut out = Vec::with_capacity(FRAME_SAMPLES * 6);
            Box::new(move || {
                let mut dec = Decoder::new(codec)?;
                for p in &payloads {
                    out.clear();
                    dec.decode(p, &mut out)?;
                }
                Ok(())
            })
        };
    let mut operations: Vec<Operation> = vec![
        ("PCMU encode", encode(Codec::Pcmu, 0)?),
        ("Opus encode, clean path", encode(Codec::Opus, 0)?),
        (
            "Opus encode, 5 % loss reported (FEC)",
            encode(Codec::Opus, 5)?,
        ),
        ("PCMU decode", decode(Codec::Pcmu, &pcmu)),
        (
            "Opus decode, narrowband (as asked)",
            decode(Codec::Opus, &narrowband),
        ),
        (
            "Opus decode to 8 kHz, fullband 32 kb/s",
            decode(Codec::Opus, &fullband),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); operations.len()];
    for _ in 0..rounds.max(1) {
        for (i, (_, run)) in operations.iter_mut().enumerate() {
            let started = Instant::now();
            run()?;
            times[i].push(started.elapsed() / frames as u32);
        }
    }
    Ok(operations
        .iter()
        .zip(times.iter_mut())
        .map(|((what, _), t)| {
            t.sort();
            CodecCost {
                what,
                per_frame: t[t.len() / 2],
            }
        })
        .collect())
}
