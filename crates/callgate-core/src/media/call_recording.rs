//! One call's recording as its media session decides it: from the agent's wish and the bridge,
//! whether audio is being written, the file cut into segments (one per stretch of being active
//! and wanted), and 200 ms batches of both sides' 8 kHz PCM. What is to be written leaves as
//! `WriterOp`s the shell hands to the process's one writer thread (`media::recording`), which
//! owns every file; a failure there (an unwritable directory, a full disk, a writer too far
//! behind) comes back and marks the recording `failed`; the call goes on. No file, thread or
//! clock here: the wall-clock time comes with each call.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::ids::CallId;
use crate::media::codec::FRAME_SAMPLES;
pub use crate::media::recording_mode::{RecordWant, RecordingState};

/// Frames gathered before a batch goes to the writer: 200 ms, so a `kill -9` loses at most
/// that much of what the file would have held, and the writer wakes 5 times a second per call.
const BATCH_FRAMES: usize = 10;

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

/// What a call's recording asks of the writer.
#[derive(Debug)]
pub enum WriterOp {
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
}

/// Set by the writer when a recording's file failed; read by its call on the next frame.
#[derive(Debug, Default)]
pub struct Failure {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Failure {
    pub fn set(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub fn is_set(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Where a call's recording goes: `DIR/YYYY/MM/DD/<call_id>.wav` (UTC date).
pub fn path_for(dir: &Path, call_id: &str, started: SystemTime) -> PathBuf {
    let stamp = crate::time::rfc3339(started);
    let (year, month, day) = (&stamp[0..4], &stamp[5..7], &stamp[8..10]);
    // Call ids are ours, but a path never takes anything that could climb out of DIR.
    let name: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(year)
        .join(month)
        .join(day)
        .join(format!("{name}.wav"))
}

/// Where recordings go and how their files are numbered: what a session needs of the writer.
#[derive(Debug, Clone)]
pub struct RecordingSink {
    pub directory: PathBuf,
    next_id: Arc<AtomicU64>,
}

impl RecordingSink {
    pub fn new(directory: PathBuf) -> RecordingSink {
        RecordingSink {
            directory,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// The open file of one call, as its media task holds it.
struct FileHandle {
    id: u64,
    path: PathBuf,
    failed: Arc<Failure>,
}

/// One call's recording, driven by its media session on the 20 ms clock.
pub struct CallRecording {
    call: CallId,
    sink: RecordingSink,
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
    /// What the writer is to do, in order, until the shell takes it.
    ops: VecDeque<WriterOp>,
}

impl CallRecording {
    pub fn new(call: CallId, sink: RecordingSink, want: RecordWant) -> CallRecording {
        CallRecording {
            call,
            sink,
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
            ops: VecDeque::new(),
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

    pub fn set_want(
        &mut self,
        wall: SystemTime,
        want: RecordWant,
        updates: &mut Vec<RecordingUpdate>,
    ) {
        self.want = want;
        self.settle(wall, updates);
    }

    pub fn set_bridged(
        &mut self,
        wall: SystemTime,
        bridged: bool,
        updates: &mut Vec<RecordingUpdate>,
    ) {
        self.bridged = bridged;
        self.settle(wall, updates);
    }

    /// One 20 ms frame of both sides (`None`: that side had nothing, written as silence so
    /// the channels never drift apart).
    pub fn frame(
        &mut self,
        wall: SystemTime,
        prospect: Option<&[i16]>,
        agent: Option<&[i16]>,
        updates: &mut Vec<RecordingUpdate>,
    ) {
        if self.segment.is_none() {
            return;
        }
        if self.file.as_ref().is_some_and(|f| f.failed.is_set()) {
            self.fail(wall, updates);
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
            self.flush();
        }
    }

    /// The call's media stopped: close the segment and the file.
    pub fn close(&mut self, wall: SystemTime, updates: &mut Vec<RecordingUpdate>) {
        self.bridged = false;
        self.settle(wall, updates);
        if let Some(file) = self.file.take() {
            self.ops.push_back(WriterOp::Close { id: file.id });
        }
    }

    /// The next thing for the writer to do.
    pub fn poll_op(&mut self) -> Option<WriterOp> {
        self.ops.pop_front()
    }

    /// The writer could not take `op` (too far behind, or stopped): the recording fails with
    /// `reason`, the call goes on unrecorded. A refused open never made a file: what was to
    /// report it opened, still among `updates`, is taken back.
    pub fn writer_refused(
        &mut self,
        wall: SystemTime,
        op: WriterOp,
        reason: &str,
        updates: &mut Vec<RecordingUpdate>,
    ) {
        if self.failed {
            return;
        }
        tracing::error!(call = %self.call, reason, "recording failed; the call goes on unrecorded");
        if let WriterOp::Open { path, .. } = &op {
            updates.retain(|u| u.path.as_ref() != Some(path));
            self.file = None;
            self.segment = None;
        }
        if let Some(file) = self.file.as_ref() {
            file.failed.set(reason.into());
        }
        self.fail(wall, updates);
    }

    /// The call's task is going away without a stop: close the file, nothing more.
    pub fn abandon(&mut self) -> Option<WriterOp> {
        let file = self.file.take()?;
        Some(WriterOp::Close { id: file.id })
    }

    fn flush(&mut self) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        if self.prospect.is_empty() {
            return;
        }
        self.ops.push_back(WriterOp::Audio {
            id: file.id,
            prospect: std::mem::replace(
                &mut self.prospect,
                Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            ),
            agent: std::mem::replace(
                &mut self.agent,
                Vec::with_capacity(FRAME_SAMPLES * BATCH_FRAMES),
            ),
        });
    }

    fn fail(&mut self, wall: SystemTime, updates: &mut Vec<RecordingUpdate>) {
        self.failed = true;
        self.prospect.clear();
        self.agent.clear();
        let segment = self.end_segment(wall);
        if let Some(file) = self.file.take() {
            self.ops.push_back(WriterOp::Close { id: file.id });
        }
        self.reported = RecordingState::Failed;
        updates.push(RecordingUpdate {
            state: RecordingState::Failed,
            path: None,
            segment,
        });
    }

    fn end_segment(&mut self, wall: SystemTime) -> Option<RecordedSegment> {
        let (index, started_at, first) = self.segment.take()?;
        Some(RecordedSegment {
            index,
            started_at,
            ended_at: Some(wall),
            offset_ms: first * 20,
            duration_ms: Some((self.frames - first) * 20),
        })
    }

    /// Open or close a segment to match the wish and the bridge, and report what changed.
    fn settle(&mut self, wall: SystemTime, updates: &mut Vec<RecordingUpdate>) {
        if self.failed {
            return;
        }
        let should = self.want == RecordWant::On && self.bridged;
        let mut segment = None;
        let mut opened = None;
        if should && self.segment.is_none() {
            if self.file.is_none() {
                let path = path_for(&self.sink.directory, &self.call, wall);
                let id = self.sink.next_id();
                let failed = Arc::new(Failure::default());
                self.ops.push_back(WriterOp::Open {
                    id,
                    call: self.call.clone(),
                    path: path.clone(),
                    failed: Arc::clone(&failed),
                });
                opened = Some(path.clone());
                self.file = Some(FileHandle { id, path, failed });
            }
            let index = self.segments;
            self.segments += 1;
            self.segment = Some((index, wall, self.frames));
            segment = Some(RecordedSegment {
                index,
                started_at: wall,
                ended_at: None,
                offset_ms: self.frames * 20,
                duration_ms: None,
            });
        } else if !should && self.segment.is_some() {
            self.flush();
            if let Some(file) = self.file.as_ref() {
                self.ops.push_back(WriterOp::Pause { id: file.id });
            }
            segment = self.end_segment(wall);
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
