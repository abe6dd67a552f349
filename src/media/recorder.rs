//! A call's recording as a WAV file that survives a crash: 16-bit PCM, stereo (left the
//! prospect, right the agent) or mono mixed, written frame by frame. The header's sizes are
//! rewritten at least once a second and at every pause, so a `kill -9` loses at most a second
//! of audio; `repair` fixes the header of a file whose writer died. Errors (disk full, an
//! unwritable directory) come back as values: the caller marks the recording failed and the
//! call goes on.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How stale the header's sizes may get.
const HEADER_EVERY: Duration = Duration::from_secs(1);
const HEADER_LEN: u64 = 44;

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: not a WAV file this recorder wrote")]
    NotOurs(String),
}

#[derive(Debug)]
pub struct WavRecorder {
    file: File,
    path: PathBuf,
    channels: u16,
    sample_rate: u32,
    data_bytes: u64,
    header_written: Instant,
    mix: Vec<u8>,
}

fn header(channels: u16, sample_rate: u32, data_bytes: u64) -> [u8; HEADER_LEN as usize] {
    let data = data_bytes.min(u64::from(u32::MAX) - 36) as u32;
    let block_align = channels * 2;
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

impl WavRecorder {
    /// Create the file (and its directories) with an empty header.
    pub fn create(
        path: &Path,
        channels: u16,
        sample_rate: u32,
    ) -> Result<WavRecorder, RecorderError> {
        let io = |source| RecorderError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        file.write_all(&header(channels, sample_rate, 0))
            .map_err(io)?;
        Ok(WavRecorder {
            file,
            path: path.to_path_buf(),
            channels,
            sample_rate,
            data_bytes: 0,
            header_written: Instant::now(),
            mix: Vec::with_capacity(1920),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seconds of audio written.
    pub fn duration(&self) -> f64 {
        self.data_bytes as f64 / f64::from(u32::from(self.channels) * 2 * self.sample_rate)
    }

    fn io(&self, source: std::io::Error) -> RecorderError {
        RecorderError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// One frame: the prospect's and the agent's samples, equally long (a side that sent
    /// nothing is silence, so the channels never drift apart).
    pub fn write_frame(
        &mut self,
        prospect: &[i16],
        agent: &[i16],
        now: Instant,
    ) -> Result<(), RecorderError> {
        let n = prospect.len().max(agent.len());
        self.mix.clear();
        for i in 0..n {
            let left = prospect.get(i).copied().unwrap_or(0);
            let right = agent.get(i).copied().unwrap_or(0);
            if self.channels == 2 {
                self.mix.extend_from_slice(&left.to_le_bytes());
                self.mix.extend_from_slice(&right.to_le_bytes());
            } else {
                let mixed = (i32::from(left) + i32::from(right))
                    .clamp(i32::from(i16::MIN), i32::from(i16::MAX))
                    as i16;
                self.mix.extend_from_slice(&mixed.to_le_bytes());
            }
        }
        if let Err(e) = self.file.write_all(&self.mix) {
            return Err(self.io(e));
        }
        self.data_bytes += self.mix.len() as u64;
        if now.duration_since(self.header_written) >= HEADER_EVERY {
            self.write_header(now)?;
        }
        Ok(())
    }

    /// Bring the header's sizes up to date (each second, at a pause, at the end).
    pub fn write_header(&mut self, now: Instant) -> Result<(), RecorderError> {
        let h = header(self.channels, self.sample_rate, self.data_bytes);
        let result = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&h))
            .and_then(|_| self.file.seek(SeekFrom::End(0)).map(|_| ()));
        result.map_err(|e| self.io(e))?;
        self.header_written = now;
        Ok(())
    }

    /// Finish the file: final header, flushed to disk.
    pub fn finish(mut self) -> Result<f64, RecorderError> {
        self.write_header(Instant::now())?;
        if let Err(e) = self.file.sync_all() {
            return Err(self.io(e));
        }
        Ok(self.duration())
    }
}

/// Fix the header of a recording whose writer died: the sizes are set from the file's length
/// (whole frames only). Returns whether anything changed.
pub fn repair(path: &Path) -> Result<bool, RecorderError> {
    let io = |source| RecorderError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut h).map_err(io)?;
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[36..40] != b"data" {
        return Err(RecorderError::NotOurs(path.display().to_string()));
    }
    let channels = u16::from_le_bytes([h[22], h[23]]).max(1);
    let sample_rate = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    let recorded = u32::from_le_bytes([h[40], h[41], h[42], h[43]]);
    let len = file.metadata().map_err(io)?.len();
    let frame = u64::from(channels) * 2;
    let data = (len.saturating_sub(HEADER_LEN) / frame) * frame;
    if u64::from(recorded) == data && len == HEADER_LEN + data {
        return Ok(false);
    }
    file.set_len(HEADER_LEN + data).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header(channels, sample_rate, data))
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("callgate-rec-{name}-{}", rand::random::<u64>()))
    }

    fn tone(freq: f32, frame: usize) -> Vec<i16> {
        (0..160)
            .map(|i| {
                let t = (frame * 160 + i) as f32 / 8000.0;
                ((t * freq * std::f32::consts::TAU).sin() * 8000.0) as i16
            })
            .collect()
    }

    use callgate_core::media::call_recording::path_for;
    use std::time::SystemTime;

    #[test]
    fn stereo_frames_make_a_valid_wav_with_each_side_on_its_channel() {
        let dir = scratch("stereo");
        let path = path_for(&dir, "c_abc/../x", SystemTime::UNIX_EPOCH);
        assert!(path.ends_with("1970/01/01/c_abc____x.wav"), "{path:?}");
        let mut rec = WavRecorder::create(&path, 2, 8000).expect("create");
        let start = Instant::now();
        for f in 0..100 {
            rec.write_frame(
                &tone(440.0, f),
                &tone(1000.0, f),
                start + Duration::from_millis(20 * f as u64),
            )
            .expect("frame");
        }
        assert!((rec.finish().expect("finish") - 2.0).abs() < 1e-9);
        let mut reader = hound::WavReader::open(&path).expect("valid WAV");
        let spec = reader.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let samples: Vec<i16> = reader
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        assert_eq!(samples.len(), 2 * 16_000);
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        assert_eq!(&left[..160], &tone(440.0, 0)[..]);
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        assert_eq!(&right[160..320], &tone(1000.0, 1)[..]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_writer_killed_mid_call_leaves_a_file_repair_makes_whole() {
        let dir = scratch("crash");
        let path = dir.join("c.wav");
        let mut rec = WavRecorder::create(&path, 2, 8000).expect("create");
        let start = Instant::now();
        for f in 0..130 {
            // 2.6 s of audio, the header refreshed each second of it.
            rec.write_frame(
                &tone(440.0, f),
                &[],
                start + Duration::from_millis(20 * f as u64),
            )
            .expect("frame");
        }
        // The process dies here: no finish. A torn last frame too.
        drop(rec);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[1, 2, 3]).expect("torn bytes");
        drop(f);
        // Readable as it is, up to the last header refresh (within a second of the end).
        let before = hound::WavReader::open(&path)
            .expect("readable after the crash")
            .duration();
        assert!(
            (16_000..=20_800).contains(&before),
            "{before} frames before repair"
        );
        assert!(repair(&path).expect("repair"));
        let after = hound::WavReader::open(&path)
            .expect("valid after repair")
            .duration();
        assert_eq!(after, 130 * 160);
        assert!(
            !repair(&path).expect("second repair"),
            "a whole file is left alone"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let dir = scratch("ro");
        std::fs::create_dir_all(&dir).expect("dir");
        // A file where a directory should be: creating below it must fail.
        let blocker = dir.join("blocked");
        std::fs::write(&blocker, b"x").expect("blocker");
        let err = WavRecorder::create(&blocker.join("2026/c.wav"), 2, 8000).expect_err("must fail");
        assert!(err.to_string().contains("blocked"), "{err}");
        assert!(matches!(
            repair(&blocker),
            Err(RecorderError::Io { .. }) | Err(RecorderError::NotOurs(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_disk_is_an_error_not_a_panic() {
        let dir = scratch("full");
        let mut rec = WavRecorder::create(&dir.join("f.wav"), 2, 8000).expect("create");
        // The disk fills up mid-call: /dev/full refuses every write with ENOSPC.
        rec.file = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let err = rec
            .write_frame(&[1; 160], &[2; 160], Instant::now())
            .expect_err("ENOSPC");
        assert!(err.to_string().contains("f.wav"), "{err}");
        assert!(rec.write_header(Instant::now()).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mono_mixes_both_sides() {
        let dir = scratch("mono");
        let path = dir.join("m.wav");
        let mut rec = WavRecorder::create(&path, 1, 8000).expect("create");
        rec.write_frame(&[1000; 160], &[500; 160], Instant::now())
            .expect("frame");
        rec.write_frame(&[i16::MAX; 160], &[i16::MAX; 160], Instant::now())
            .expect("frame");
        rec.finish().expect("finish");
        let samples: Vec<i16> = hound::WavReader::open(&path)
            .expect("valid")
            .samples::<i16>()
            .map(|s| s.expect("sample"))
            .collect();
        assert_eq!(
            (samples[0], samples[200]),
            (1500, i16::MAX),
            "mixed and clipped"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
