//! What a call's recording is asked to do and what it is doing: the words the controller
//! and the recording in the call's media share. Pure, so the controller needs nothing of the
//! recording's writer thread.

/// The call's `recording` field as agents see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    /// Not recording: never asked, never bridged yet, or stopped.
    Off,
    /// Audio is being written.
    Recording,
    /// A recording exists and will continue: the call is on hold or waiting, or the agent
    /// paused it.
    Paused,
    /// Writing failed (the reason is logged); the call goes on unrecorded.
    Failed,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Off => "off",
            RecordingState::Recording => "recording",
            RecordingState::Paused => "paused",
            RecordingState::Failed => "failed",
        }
    }
}

/// What the agent (or the configured mode) wants for a call's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordWant {
    /// Not recording, nothing to resume.
    Off,
    /// Record whenever the call is active.
    On,
    /// The agent paused it; `resume` continues the same file.
    Paused,
}
