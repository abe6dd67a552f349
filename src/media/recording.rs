//! Recording a call while it is bridged. Each call's media task keeps a `CallRecording`: it
//! decides from the agent's wish and the bridge whether audio is being written, cuts the file
//! into segments (one per stretch of being active and wanted), and hands 200 ms batches of both
//! sides' 8 kHz PCM to the process's one `RecordingWriter` thread. That thread owns every open
//! file, so a slow or full disk stalls recordings, never a call's media. A failure (an
//! unwritable directory, a full disk, a writer too far behind) marks that recording `failed`
//! with a logged reason; the call goes on.

use crate::ids::CallId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::media::codec::FRAME_SAMPLES;
use crate::media::recorder::{self, WavRecorder};
pub use crate::media::recording_mode::{RecordWant, RecordingState};

/// Frames gathered before a batch goes to the writer: 200 ms, so a `kill -9` loses at most
/// that much of what the file would have held, and the writer wakes 5 times a second per call.
const BATCH_FRAMES: usize = 10;
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

/// One stretch of recorded audio, as the call log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSegment {
    /// 0 for the first segment of the call, then 1, 2, …
    pub index: u32,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
    /// Where the segment starts in the file's audio.
    pub offset_ms: u64,
    pub duration_ms: Option<u64>,
}

/// What the media task reports about a call's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingUpdate {
    pub state: RecordingState,
    /// The file, once it was opened.
    pub path: Option<PathBuf>,
    /// A segment that opened or closed with this update.
    pub segment: Option<RecordedSegment>,
}

enum WriterOp {
    Open {
        id: u64,
        call: CallId,
        path: PathBuf,
        failed: Arc<Failure>,
    },
    /// 8 kHz PCM of both sides, equally long.
    Audio {
        id: u64,
        prospect: Vec<i16>,
        agent: Vec<i16>,
    },
    /// A pause: bring the header up to date.
    Pause {
        id: u64,
    },
    Close {
        id: u64,
    },
    /// Close everything and end the thread.
    Shutdown(mpsc::Sender<()>),
}

/// Set by the writer when a recording's file failed; read by its call on the next frame.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Failure {
    fn set(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// The process's recording writer: one thread, every open file. Cheap to clone.
#[derive(Clone)]
pub struct RecordingWriter {
    ops: SyncSender<WriterOp>,
    format: Arc<RecordingFormat>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
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
        let (ops, rx) = mpsc::sync_channel(WRITER_BACKLOG);
        let format = Arc::new(format);
        let thread_format = Arc::clone(&format);
        std::thread::Builder::new()
            .name("cg-recording".into())
            .spawn(move || write_loop(&thread_format, rx))?;
        Ok(RecordingWriter {
            ops,
            format,
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        })
    }

    pub fn format(&self) -> &RecordingFormat {
        &self.format
    }

    /// Close every open file (final headers, synced) and wait for it, up to `timeout`.
    pub fn shutdown(&self, timeout: std::time::Duration) {
        let (done, wait) = mpsc::channel();
        if self.ops.send(WriterOp::Shutdown(done)).is_ok() {
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

fn write_loop(format: &RecordingFormat, ops: mpsc::Receiver<WriterOp>) {
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
    while let Ok(op) = ops.recv() {
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
            WriterOp::Shutdown(done) => {
                for (_, file) in files.drain() {
                    let _ = file.wav.finish();
                }
                let _ = done.send(());
                return;
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

/// The open file of one call, as its media task holds it.
struct FileHandle {
    id: u64,
    path: PathBuf,
    failed: Arc<Failure>,
}

/// One call's recording, driven by its media task on the 20 ms clock.
pub struct CallRecording {
    call: CallId,
    writer: RecordingWriter,
    want: RecordWant,
    bridged: bool,
    file: Option<FileHandle>,
    failed: bool,
    /// Frames handed to the writer: the file's length.
    frames: u64,
    /// The open segment: index, wall-clock start, first frame.
    segment: Option<(u32, SystemTime, u64)>,
    segments: u32,
    prospect: Vec<i16>,
    agent: Vec<i16>,
    reported: RecordingState,
}

impl CallRecording {
    pub fn new(call: CallId, writer: RecordingWriter, want: RecordWant) -> CallRecording {
        CallRecording {
            call,
            writer,
            want,
            bridged: false,
            file: None,
            failed: false,
            frames: 0,
            segment: None,
            segments: 0,
            prospect: Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            agent: Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            reported: RecordingState::Off,
        }
    }

    /// Audio is being written on each frame.
    pub fn writing(&self) -> bool {
        self.segment.is_some()
    }

    pub fn state(&self) -> RecordingState {
        if self.failed {
            RecordingState::Failed
        } else if self.segment.is_some() {
            RecordingState::Recording
        } else if self.file.is_some() && self.want != RecordWant::Off {
            RecordingState::Paused
        } else {
            RecordingState::Off
        }
    }

    pub fn set_want(&mut self, want: RecordWant, updates: &mut Vec<RecordingUpdate>) {
        self.want = want;
        self.settle(updates);
    }

    pub fn set_bridged(&mut self, bridged: bool, updates: &mut Vec<RecordingUpdate>) {
        self.bridged = bridged;
        self.settle(updates);
    }

    /// One 20 ms frame of both sides (`None`: that side had nothing, written as silence so
    /// the channels never drift apart).
    pub fn frame(
        &mut self,
        prospect: Option<&[i16]>,
        agent: Option<&[i16]>,
        updates: &mut Vec<RecordingUpdate>,
    ) {
        if self.segment.is_none() {
            return;
        }
        if self.file.as_ref().is_some_and(|f| f.failed.is_set()) {
            self.fail(updates);
            return;
        }
        for (side, samples) in [(&mut self.prospect, prospect), (&mut self.agent, agent)] {
            let start = side.len();
            if let Some(s) = samples {
                side.extend_from_slice(&s[..s.len().min(FRAME_SAMPLES)]);
            }
            side.resize(start + FRAME_SAMPLES, 0);
        }
        self.frames += 1;
        if self.prospect.len() >= FRAME_SAMPLES * BATCH_FRAMES {
            self.flush(updates);
        }
    }

    /// The call's media stopped: close the segment and the file.
    pub fn close(&mut self, updates: &mut Vec<RecordingUpdate>) {
        self.bridged = false;
        self.settle(updates);
        if let Some(file) = self.file.take() {
            let _ = self.writer.ops.try_send(WriterOp::Close { id: file.id });
        }
    }

    fn flush(&mut self, updates: &mut Vec<RecordingUpdate>) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        if self.prospect.is_empty() {
            return;
        }
        let op = WriterOp::Audio {
            id: file.id,
            prospect: std::mem::replace(
                &mut self.prospect,
                Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            ),
            agent: std::mem::replace(
                &mut self.agent,
                Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            ),
        };
        if let Err(e) = self.writer.ops.try_send(op) {
            let reason = match e {
                TrySendError::Full(_) => "the recording writer is too far behind (slow disk)",
                TrySendError::Disconnected(_) => "the recording writer stopped",
            };
            tracing::error!(call = %self.call, reason, "recording failed; the call goes on unrecorded");
            if let Some(file) = self.file.as_ref() {
                file.failed.set(reason.into());
            }
            self.fail(updates);
        }
    }

    fn fail(&mut self, updates: &mut Vec<RecordingUpdate>) {
        self.failed = true;
        self.prospect.clear();
        self.agent.clear();
        let segment = self.end_segment();
        if let Some(file) = self.file.take() {
            let _ = self.writer.ops.try_send(WriterOp::Close { id: file.id });
        }
        self.reported = RecordingState::Failed;
        updates.push(RecordingUpdate {
            state: RecordingState::Failed,
            path: None,
            segment,
        });
    }

    fn end_segment(&mut self) -> Option<RecordedSegment> {
        let (index, started_at, first) = self.segment.take()?;
        Some(RecordedSegment {
            index,
            started_at,
            ended_at: Some(SystemTime::now()),
            offset_ms: first * 20,
            duration_ms: Some((self.frames - first) * 20),
        })
    }

    /// Open or close a segment to match the wish and the bridge, and report what changed.
    fn settle(&mut self, updates: &mut Vec<RecordingUpdate>) {
        if self.failed {
            return;
        }
        let should = self.want == RecordWant::On && self.bridged;
        let mut segment = None;
        let mut opened = None;
        if should && self.segment.is_none() {
            if self.file.is_none() {
                let path = recorder::path_for(
                    &self.writer.format.directory,
                    &self.call,
                    SystemTime::now(),
                );
                let id = self
                    .writer
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let failed = Arc::new(Failure::default());
                let op = WriterOp::Open {
                    id,
                    call: self.call.clone(),
                    path: path.clone(),
                    failed: Arc::clone(&failed),
                };
                if self.writer.ops.try_send(op).is_err() {
                    tracing::error!(call = %self.call, "recording writer unavailable; the call goes on unrecorded");
                    self.fail(updates);
                    return;
                }
                opened = Some(path.clone());
                self.file = Some(FileHandle { id, path, failed });
            }
            let started_at = SystemTime::now();
            let index = self.segments;
            self.segments += 1;
            self.segment = Some((index, started_at, self.frames));
            segment = Some(RecordedSegment {
                index,
                started_at,
                ended_at: None,
                offset_ms: self.frames * 20,
                duration_ms: None,
            });
        } else if !should && self.segment.is_some() {
            self.flush(updates);
            if self.failed {
                return;
            }
            if let Some(file) = self.file.as_ref() {
                let _ = self.writer.ops.try_send(WriterOp::Pause { id: file.id });
            }
            segment = self.end_segment();
        }
        let state = self.state();
        if state != self.reported || segment.is_some() {
            self.reported = state;
            updates.push(RecordingUpdate {
                state,
                path: opened,
                segment,
            });
        }
    }

    /// The file, once opened.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }
}

impl Drop for CallRecording {
    fn drop(&mut self) {
        // A media task that ends without `close` (it panicked) still leaves a whole file.
        if let Some(file) = self.file.take() {
            let _ = self.writer.ops.try_send(WriterOp::Close { id: file.id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    fn frames(rec: &mut CallRecording, n: u64, updates: &mut Vec<RecordingUpdate>) {
        for f in 0..n {
            rec.frame(Some(&tone(440.0, f)), Some(&tone(1000.0, f)), updates);
        }
    }

    #[test]
    fn only_active_wanted_frames_are_written_in_numbered_segments() {
        let dir = scratch("segments");
        let writer = writer(&dir, true, 8000);
        let mut updates = Vec::new();
        let mut rec = CallRecording::new("c1".into(), writer.clone(), RecordWant::On);
        assert_eq!(rec.state(), RecordingState::Off, "not bridged yet");
        frames(&mut rec, 5, &mut updates);
        assert!(updates.is_empty());
        rec.set_bridged(true, &mut updates);
        assert_eq!(rec.state(), RecordingState::Recording);
        let path = updates[0].path.clone().expect("opened");
        assert_eq!(updates[0].segment.as_ref().map(|s| s.offset_ms), Some(0));
        frames(&mut rec, 50, &mut updates); // 1 s
        rec.set_bridged(false, &mut updates); // hold
        assert_eq!(rec.state(), RecordingState::Paused);
        let closed = updates
            .last()
            .and_then(|u| u.segment.clone())
            .expect("closed");
        assert_eq!((closed.index, closed.duration_ms), (0, Some(1000)));
        frames(&mut rec, 30, &mut updates); // on hold: nothing written
        rec.set_bridged(true, &mut updates);
        let opened = updates
            .last()
            .and_then(|u| u.segment.clone())
            .expect("opened");
        assert_eq!((opened.index, opened.offset_ms), (1, 1000));
        frames(&mut rec, 7, &mut updates); // a batch left partial: written at close
        rec.set_want(RecordWant::Paused, &mut updates);
        assert_eq!(rec.state(), RecordingState::Paused);
        rec.set_want(RecordWant::Off, &mut updates);
        assert_eq!(rec.state(), RecordingState::Off, "stopped");
        rec.close(&mut updates);
        writer.shutdown(Duration::from_secs(5));
        let reader = hound::WavReader::open(&path).expect("a valid WAV");
        assert_eq!(reader.duration(), 57 * 160, "1 s + 140 ms, holds left out");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn wideband_files_are_interpolated_and_mono_mixes() {
        let dir = scratch("wide");
        let writer = writer(&dir, false, 16000);
        let mut updates = Vec::new();
        let mut rec = CallRecording::new("c2".into(), writer.clone(), RecordWant::On);
        rec.set_bridged(true, &mut updates);
        let path = rec.path().expect("opened").to_path_buf();
        for _ in 0..10 {
            rec.frame(Some(&[800; 160]), Some(&[200; 160]), &mut updates);
        }
        rec.close(&mut updates);
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
        let mut updates = Vec::new();
        let mut rec = CallRecording::new("c3".into(), writer.clone(), RecordWant::On);
        rec.set_bridged(true, &mut updates);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut f = 0;
        while rec.state() != RecordingState::Failed && Instant::now() < deadline {
            frames(&mut rec, 1, &mut updates);
            f += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(rec.state(), RecordingState::Failed, "after {f} frames");
        assert_eq!(
            updates.last().map(|u| u.state),
            Some(RecordingState::Failed)
        );
        // Further frames, holds and wishes change nothing.
        frames(&mut rec, 20, &mut updates);
        rec.set_bridged(false, &mut updates);
        rec.set_want(RecordWant::On, &mut updates);
        assert_eq!(rec.state(), RecordingState::Failed);
        rec.close(&mut updates);
        writer.shutdown(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(dir);
    }
}
