//! The call log's rows as the gateway core hands them to the store (`Persist`): plain data in
//! wall-clock milliseconds; the store decides how they are kept.

/// A call as stored: the controller's view at one moment, in wall-clock milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub direction: String,
    pub from_number: String,
    pub from_name: Option<String>,
    pub to_number: String,
    pub prospect: String,
    pub agent_id: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub queued_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub recording: String,
    /// The recording's file, once one was opened (set by `StoreOp::Recording` only; a call's
    /// own updates leave it alone).
    pub recording_path: Option<String>,
    /// The prospect's name (from the dial, the contacts directory, the CRM lookup or the SIP
    /// display name, in that order) and the CRM's id for them.
    pub prospect_name: Option<String>,
    pub prospect_id: Option<String>,
    /// The cluster node the call lives on, as the store read it (the store's writer names its
    /// own node when it first writes a call; `None` on a single node).
    pub node: Option<String>,
}

/// One recorded stretch of a call: where it sits in the file and in wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSegment {
    pub index: u32,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub offset_ms: i64,
    pub duration_ms: Option<i64>,
}
