//! The process's recording writer: one thread owns every open recording file, so a slow or
//! full disk stalls recordings, never a call's media. Each call's media session decides what is
//! written (`media::call_recording`); its task hands the session's `WriterOp`s over here and
//! tells the session when the writer could not take one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use crate::ids::CallId;
pub use crate::media::call_recording::{
    CallRecording, Failure, RecordWant, RecordedSegment, RecordingSink, RecordingState,
    RecordingUpdate, WriterOp,
};
use crate::media::recorder::WavRecorder;

/// Batches the writer may fall behind by, over all calls: 100 calls for about 16 s.
const WRITER_BACKLOG: usize = 8192;

/// How files are written: where, stereo or mono, at which rate.
#[derive(Debug, Clone)]
pub struct RecordingFormat {
    pub directory: PathBuf,
    pub stereo: bool,
    /// 8000, 16000 or 48000; the bridge's 8 kHz PCM is interpolated up to it.
    pub sample_rate: u32,
}

/// What the writer thread is handed.
enum Job {
    Op(WriterOp),
    /// Close everything and end the thread.
    Shutdown(mpsc::Sender<()>),
}

/// The process's recording writer: one thread, every open file. Cheap to clone.
#[derive(Clone)]
pub struct RecordingWriter {
    jobs: SyncSender<Job>,
    format: Arc<RecordingFormat>,
    sink: RecordingSink,
}

impl std::fmt::Debug for RecordingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingWriter")
            .field("format", &self.format)
            .finish()
    }
}

impl RecordingWriter {
    /// Start the writer thread.
    pub fn start(format: RecordingFormat) -> std::io::Result<RecordingWriter> {
        let (jobs, rx) = mpsc::sync_channel(WRITER_BACKLOG);
        let format = Arc::new(format);
        let thread_format = Arc::clone(&format);
        std::thread::Builder::new()
            .name("cg-recording".into())
            .spawn(move || write_loop(&thread_format, rx))?;
        Ok(RecordingWriter {
            jobs,
            sink: RecordingSink::new(format.directory.clone()),
            format,
        })
    }

    pub fn format(&self) -> &RecordingFormat {
        &self.format
    }

    /// Where a call's recording goes, for its media session.
    pub fn sink(&self) -> RecordingSink {
        self.sink.clone()
    }

    /// Hand one of a recording's operations over without waiting; when it cannot be, the
    /// operation back and why.
    pub fn submit(&self, op: WriterOp) -> Result<(), (WriterOp, &'static str)> {
        self.jobs.try_send(Job::Op(op)).map_err(|e| match e {
            TrySendError::Full(Job::Op(op)) => {
                (op, "the recording writer is too far behind (slow disk)")
            }
            TrySendError::Disconnected(Job::Op(op)) => (op, "the recording writer stopped"),
            // Only operations are tried without waiting.
            TrySendError::Full(Job::Shutdown(_)) | TrySendError::Disconnected(Job::Shutdown(_)) => {
                unreachable!("submit sends operations only")
            }
        })
    }

    /// Close every open file (final headers, synced) and wait for it, up to `timeout`.
    pub fn shutdown(&self, timeout: std::time::Duration) {
        let (done, wait) = mpsc::channel();
        if self.jobs.send(Job::Shutdown(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

struct OpenFile {
    call: CallId,
    wav: WavRecorder,
    failed: Arc<Failure>,
    /// The last 8 kHz sample of each side, for interpolating across batches.
    last: (i16, i16),
}

fn write_loop(format: &RecordingFormat, jobs: mpsc::Receiver<Job>) {
    let mut files: HashMap<u64, OpenFile> = HashMap::new();
    let factor = (format.sample_rate / 8000).max(1) as usize;
    let channels = if format.stereo { 2 } else { 1 };
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let fail = |file: OpenFile, error: &dyn std::fmt::Display| {
        tracing::error!(call = %file.call, path = %file.wav.path().display(), %error,
            "recording failed; the call goes on unrecorded");
        file.failed.set(error.to_string());
        // What was written stays readable: try to leave a header that covers it.
        let _ = file.wav.finish();
    };
    while let Ok(job) = jobs.recv() {
        let op = match job {
            Job::Op(op) => op,
            Job::Shutdown(done) => {
                for (_, file) in files.drain() {
                    let _ = file.wav.finish();
                }
                let _ = done.send(());
                return;
            }
        };
        match op {
            WriterOp::Open {
                id,
                call,
                path,
                failed,
            } => match WavRecorder::create(&path, channels, format.sample_rate) {
                Ok(wav) => {
                    files.insert(
                        id,
                        OpenFile {
                            call,
                            wav,
                            failed,
                            last: (0, 0),
                        },
                    );
                }
                Err(error) => {
                    tracing::error!(%call, %error, "cannot open the recording; the call goes on unrecorded");
                    failed.set(error.to_string());
                }
            },
            WriterOp::Audio {
                id,
                prospect,
                agent,
            } => {
                let Some(file) = files.get_mut(&id) else {
                    continue; // failed earlier
                };
                upsample(&prospect, factor, &mut file.last.0, &mut left);
                upsample(&agent, factor, &mut file.last.1, &mut right);
                if let Err(error) = file.wav.write_frame(&left, &right, Instant::now()) {
                    if let Some(file) = files.remove(&id) {
                        fail(file, &error);
                    }
                }
            }
            WriterOp::Pause { id } => {
                let Some(file) = files.get_mut(&id) else {
                    continue;
                };
                if let Err(error) = file.wav.write_header(Instant::now()) {
                    if let Some(file) = files.remove(&id) {
                        fail(file, &error);
                    }
                }
            }
            WriterOp::Close { id } => {
                if let Some(file) = files.remove(&id) {
                    let call = file.call.clone();
                    match file.wav.finish() {
                        Ok(seconds) => tracing::debug!(%call, seconds, "recording closed"),
                        Err(error) => {
                            tracing::error!(%call, %error, "recording could not be finished")
                        }
                    }
                }
            }
        }
    }
}

/// 8 kHz to `factor` × 8 kHz by linear interpolation from the previous sample. Telephone audio
/// holds nothing above 4 kHz, so this only changes the file's rate for players and tools that
/// want wideband files.
fn upsample(input: &[i16], factor: usize, last: &mut i16, out: &mut Vec<i16>) {
    out.clear();
    for &s in input {
        let (from, to) = (i32::from(*last), i32::from(s));
        for j in 1..=factor {
            out.push((from + (to - from) * j as i32 / factor as i32) as i16);
        }
        *last = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::FRAME_SAMPLES;
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "callgate-recording-{name}-{}",
            rand::random::<u64>()
        ))
    }

    fn writer(dir: &Path, stereo: bool, rate: u32) -> RecordingWriter {
        RecordingWriter::start(RecordingFormat {
            directory: dir.to_path_buf(),
            stereo,
            sample_rate: rate,
        })
        .expect("writer")
    }

    fn tone(freq: f64, frame: u64) -> Vec<i16> {
        (0..FRAME_SAMPLES as u64)
            .map(|i| {
                let t = (frame * FRAME_SAMPLES as u64 + i) as f64 / 8000.0;
                ((t * freq * std::f64::consts::TAU).sin() * 8000.0) as i16
            })
            .collect()
    }

    /// A call's recording as its media task drives it: what the session asks of the writer is
    /// handed over after each step, and a refusal goes back to the session.
    struct Driven {
        rec: CallRecording,
        writer: RecordingWriter,
        updates: Vec<RecordingUpdate>,
    }

    impl Driven {
        fn new(call: &str, writer: &RecordingWriter, want: RecordWant) -> Driven {
            Driven {
                rec: CallRecording::new(call.into(), writer.sink(), want),
                writer: writer.clone(),
                updates: Vec::new(),
            }
        }

        fn pump(&mut self) -> &mut Driven {
            while let Some(op) = self.rec.poll_op() {
                if let Err((op, reason)) = self.writer.submit(op) {
                    self.rec
                        .writer_refused(SystemTime::now(), op, reason, &mut self.updates);
                }
            }
            self
        }

        fn bridged(&mut self, on: bool) -> &mut Driven {
            self.rec
                .set_bridged(SystemTime::now(), on, &mut self.updates);
            self.pump()
        }

        fn want(&mut self, want: RecordWant) -> &mut Driven {
            self.rec
                .set_want(SystemTime::now(), want, &mut self.updates);
            self.pump()
        }

        fn frames(&mut self, n: u64) -> &mut Driven {
            for f in 0..n {
                let (p, a) = (tone(440.0, f), tone(1000.0, f));
                self.rec
                    .frame(SystemTime::now(), Some(&p), Some(&a), &mut self.updates);
                self.pump();
            }
            self
        }

        fn frame(&mut self, prospect: &[i16], agent: &[i16]) -> &mut Driven {
            self.rec.frame(
                SystemTime::now(),
                Some(prospect),
                Some(agent),
                &mut self.updates,
            );
            self.pump()
        }

        fn close(&mut self) -> &mut Driven {
            self.rec.close(SystemTime::now(), &mut self.updates);
            self.pump()
        }
    }

    #[test]
    fn only_active_wanted_frames_are_written_in_numbered_segments() {
        let dir = scratch("segments");
        let writer = writer(&dir, true, 8000);
        let mut d = Driven::new("c1", &writer, RecordWant::On);
        assert_eq!(d.rec.state(), RecordingState::Off, "not bridged yet");
        d.frames(5);
        assert!(d.updates.is_empty());
        d.bridged(true);
        assert_eq!(d.rec.state(), RecordingState::Recording);
        let path = d.updates[0].path.clone().expect("opened");
        assert_eq!(d.updates[0].segment.as_ref().map(|s| s.offset_ms), Some(0));
        d.frames(50); // 1 s
        d.bridged(false); // hold
        assert_eq!(d.rec.state(), RecordingState::Paused);
        let closed = d
            .updates
            .last()
            .and_then(|u| u.segment.clone())
            .expect("closed");
        assert_eq!((closed.index, closed.duration_ms), (0, Some(1000)));
        d.frames(30); // on hold: nothing written
        d.bridged(true);
        let opened = d
            .updates
            .last()
            .and_then(|u| u.segment.clone())
            .expect("opened");
        assert_eq!((opened.index, opened.offset_ms), (1, 1000));
        d.frames(7); // a batch left partial: written at close
        d.want(RecordWant::Paused);
        assert_eq!(d.rec.state(), RecordingState::Paused);
        d.want(RecordWant::Off);
        assert_eq!(d.rec.state(), RecordingState::Off, "stopped");
        d.close();
        writer.shutdown(Duration::from_secs(5));
        let reader = hound::WavReader::open(&path).expect("a valid WAV");
        assert_eq!(reader.duration(), 57 * 160, "1 s + 140 ms, holds left out");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn wideband_files_are_interpolated_and_mono_mixes() {
        let dir = scratch("wide");
        let writer = writer(&dir, false, 16000);
        let mut d = Driven::new("c2", &writer, RecordWant::On);
        d.bridged(true);
        let path = d.rec.path().expect("opened").to_path_buf();
        for _ in 0..10 {
            d.frame(&[800; 160], &[200; 160]);
        }
        d.close();
        writer.shutdown(Duration::from_secs(5));
        let mut reader = hound::WavReader::open(&path).expect("valid");
        assert_eq!(
            (reader.spec().channels, reader.spec().sample_rate),
            (1, 16000)
        );
        let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.expect("s")).collect();
        assert_eq!(samples.len(), 3200);
        assert_eq!(samples[0], 500, "interpolated up from silence");
        assert!(samples[1..].iter().all(|&s| s == 1000), "mixed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failing_disk_marks_the_recording_failed_and_nothing_panics() {
        let dir = scratch("failing");
        std::fs::create_dir_all(&dir).expect("dir");
        // A file where the date directories should go: the open fails.
        std::fs::write(dir.join("blocker"), b"x").expect("blocker");
        let writer = writer(&dir.join("blocker"), true, 8000);
        let mut d = Driven::new("c3", &writer, RecordWant::On);
        d.bridged(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut f = 0;
        while d.rec.state() != RecordingState::Failed && Instant::now() < deadline {
            d.frames(1);
            f += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(d.rec.state(), RecordingState::Failed, "after {f} frames");
        assert_eq!(
            d.updates.last().map(|u| u.state),
            Some(RecordingState::Failed)
        );
        // Further frames, holds and wishes change nothing.
        d.frames(20).bridged(false).want(RecordWant::On);
        assert_eq!(d.rec.state(), RecordingState::Failed);
        d.close();
        writer.shutdown(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }
}
