//! Loads audio files (announcements, hold music) into 8 kHz mono PCM, the rate calls run at.
//! Any WAV rate, 8–32 bit integer or float, mono or multi-channel is accepted and mixed down.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("{path}: {source}")]
    Read { path: String, source: hound::Error },
    #[error("{path}: has no audio")]
    Empty { path: String },
}

/// The file as 8 kHz mono samples.
pub fn load_8k_mono(path: &Path) -> Result<Vec<i16>, WavError> {
    let name = path.display().to_string();
    let read_err = |source| WavError::Read {
        path: name.clone(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(read_err)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(read_err)?,
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(read_err)?
        }
    };
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f32>() / frame.len() as f32)
        .collect();
    if mono.is_empty() {
        return Err(WavError::Empty { path: name });
    }
    Ok(resample_to_8k(&mono, spec.sample_rate)
        .into_iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect())
}

/// Linear interpolation; announcements are speech and tones, where this is transparent
/// enough, and it keeps a resampler crate out of the build.
fn resample_to_8k(input: &[f32], rate: u32) -> Vec<f32> {
    if rate == 8000 || rate == 0 {
        return input.to_vec();
    }
    let step = f64::from(rate) / 8000.0;
    let out_len = (input.len() as f64 / step) as usize;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos as usize;
            let frac = (pos - idx as f64) as f32;
            let a = input.get(idx).copied().unwrap_or(0.0);
            let b = input.get(idx + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_resamples_a_16k_stereo_file() {
        let dir = std::env::temp_dir().join(format!("callgate-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("create");
        for i in 0..16000 {
            let v = ((i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin() * 10000.0) as i16;
            w.write_sample(v).expect("write");
            w.write_sample(v).expect("write");
        }
        w.finalize().expect("finalize");
        let pcm = load_8k_mono(&path).expect("load");
        assert_eq!(pcm.len(), 8000);
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!((9000..=10100).contains(&peak), "peak {peak}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_file_is_an_error_not_a_panic() {
        assert!(load_8k_mono(Path::new("/nonexistent/x.wav")).is_err());
    }
}
