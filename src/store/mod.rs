//! The call log: every call, its status segments (each waiting / active / on_hold interval)
//! and what agents write about it, on the embedded SQLite of a single node or on the
//! PostgreSQL a cluster's nodes share (`db`: one interface, the same schema). One writer task
//! owns the write connection and takes changes from a bounded channel, so signalling and
//! media never wait on the disk; readers (the HTTP API) use their own connections, which WAL
//! (or PostgreSQL) lets run beside the writer. Nothing here knows SIP or WebSockets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::mpsc;

#[cfg(feature = "testkit")]
mod bench;
pub mod contacts;
pub mod db;
pub mod outbox;
mod query;
mod schema;

#[cfg(feature = "testkit")]
pub use bench::*;
pub use callgate_core::log::{CallRecord, RecordingSegment};
pub use callgate_core::time::{from_millis, millis};
pub use query::*;

use db::{args, Db};
pub use db::{Location, Readers};

pub use outbox::Hooks;

/// Changes queued for the writer. Calls change status a few times each, so this covers
/// thousands of calls of backlog; when it is full the change is logged and dropped (the disk
/// has been stalled for a long time by then).
pub const WRITE_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store.database {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("store.url: {reason}")]
    Url { reason: String },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("database: column {column} is NULL or out of range")]
    Null { column: usize },
    #[error("database: every read connection busy")]
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub status: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// What an agent wrote about a call.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct CallLog {
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub disposition: Option<String>,
    pub comments: Vec<Comment>,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Comment {
    pub author: String,
    pub text: String,
    pub at: i64,
}

/// A change to a call's log: only the fields given change; `comment` adds one.
#[derive(Debug, Clone, Default)]
pub struct LogPatch {
    pub assignee: Option<String>,
    pub tags: Option<Vec<String>>,
    pub disposition: Option<String>,
    pub comment: Option<String>,
}

/// A change for the writer.
#[derive(Debug)]
pub enum StoreOp {
    /// The call as it is now; `at` is when it changed (opens and closes segments).
    Call { call: Box<CallRecord>, at: i64 },
    /// An agent's edit of a call's log, answered with the log as stored (`None`: no such
    /// call). All of it is written or none.
    Log {
        call_id: String,
        patch: LogPatch,
        author: String,
        at: i64,
        reply: tokio::sync::oneshot::Sender<Result<Option<CallLog>, String>>,
    },
    /// Directory entries put (all or none) or one deleted, answered once committed
    /// (`true`: something changed; for a delete, there was an entry).
    Contacts {
        change: ContactChange,
        reply: tokio::sync::oneshot::Sender<Result<bool, String>>,
    },
    /// A call's recording opened its file (`path`) or opened or closed a segment.
    Recording {
        call_id: String,
        path: Option<String>,
        segment: Option<RecordingSegment>,
    },
}

#[derive(Debug)]
pub enum ContactChange {
    Put(Vec<contacts::Contact>),
    Delete(String),
}

/// Statuses that make a segment.
fn segmented(status: &str) -> bool {
    matches!(status, "waiting" | "active" | "on_hold")
}

/// Open (or create) the SQLite database, run the migrations, and return the connection.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Directory {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL is durable across process crashes (an OS crash may lose the last
    // transactions, never corrupt the file).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut db = Db::Sqlite(conn);
    schema::migrate(&mut db)?;
    let Db::Sqlite(conn) = db else {
        unreachable!("opened as SQLite")
    };
    Ok(conn)
}

/// A read-only SQLite connection for queries beside the writer (WAL lets them run at once).
/// The schema is already migrated: the gateway opens the database with `open` at start.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// This node's name as the store keeps it ("" on a single node, whose rows name none).
fn node_key(node: &Option<String>) -> &str {
    node.as_deref().unwrap_or("")
}

/// The recordings of this node's calls that were live when it last stopped: their writer
/// died, so their headers may be behind their data (call before `end_orphans`).
pub fn orphan_recordings(db: &mut Db, node: &Option<String>) -> Result<Vec<PathBuf>, StoreError> {
    recordings_left_by(db, node_key(node))
}

/// The recordings of `node`'s live calls ("" for a single node's).
pub fn recordings_left_by(db: &mut Db, node: &str) -> Result<Vec<PathBuf>, StoreError> {
    let paths = db.query(
        "SELECT recording_path FROM calls WHERE status != 'ended'
            AND recording_path IS NOT NULL AND COALESCE(node, '') = ?1",
        args![node],
        |r| r.get::<String>(0),
    )?;
    Ok(paths.into_iter().map(PathBuf::from).collect())
}

/// This node's calls that were live when it last stopped (crash, kill -9) are over: mark
/// them ended with reason `failed` and close their segments, and tell the webhooks so (in the
/// same transaction). Other nodes' calls on a shared store are theirs. Returns how many.
pub fn end_orphans(db: &mut Db, hooks: &Hooks, now: i64) -> Result<usize, StoreError> {
    let node = node_key(&hooks.node).to_string();
    db.transaction(|tx| end_calls_of(tx, hooks, &node, now))
}

/// Inside the caller's transaction: end the live calls of `node` ("" for a single node's) as
/// `failed`, closing their segments and queueing their webhook events as this node's. For a
/// node's own orphans at start, and for a dead node's calls taken over by a survivor.
pub fn end_calls_of(tx: &mut Db, hooks: &Hooks, node: &str, now: i64) -> Result<usize, StoreError> {
    let orphans: Vec<CallRecord> = tx.query(
        &format!(
            "SELECT {CALL_COLUMNS} FROM calls
             WHERE status != 'ended' AND COALESCE(node, '') = ?1"
        ),
        args![node],
        record,
    )?;
    for before in &orphans {
        tx.execute(
            "UPDATE segments SET ended_at = ?2 WHERE call_id = ?1 AND ended_at IS NULL",
            args![before.id, now],
        )?;
        tx.execute(
            "UPDATE recording_segments SET ended_at = ?2
             WHERE call_id = ?1 AND ended_at IS NULL",
            args![before.id, now],
        )?;
        tx.execute(
            "UPDATE calls SET status = 'ended', ended_at = ?2, end_reason = 'failed',
                recording = CASE WHEN recording IN ('recording', 'paused') THEN 'off'
                                 ELSE recording END
             WHERE id = ?1",
            args![before.id, now],
        )?;
        let before_state = outbox::Before {
            status: before.status.clone(),
            answered_at: before.answered_at,
            recording_path: before.recording_path.clone(),
        };
        if let Some(after) = call(tx, &before.id)? {
            outbox::call_changed(tx, hooks, Some(&before_state), &after, now)?;
        }
    }
    Ok(orphans.len())
}

/// A call's log, or `None` when nothing was written about it yet.
pub fn log(db: &mut Db, call_id: &str) -> Result<Option<CallLog>, StoreError> {
    let head = db.query_one(
        "SELECT assignee, tags, disposition, updated_at, updated_by FROM call_logs
         WHERE call_id = ?1",
        args![call_id],
        |r| {
            Ok((
                r.get::<Option<String>>(0)?,
                r.get::<String>(1)?,
                r.get::<Option<String>>(2)?,
                r.get::<i64>(3)?,
                r.get::<Option<String>>(4)?,
            ))
        },
    )?;
    let Some((assignee, tags, disposition, updated_at, updated_by)) = head else {
        return Ok(None);
    };
    let comments = db.query(
        "SELECT author, text, created_at FROM comments WHERE call_id = ?1 ORDER BY id",
        args![call_id],
        |r| {
            Ok(Comment {
                author: r.get(0)?,
                text: r.get(1)?,
                at: r.get(2)?,
            })
        },
    )?;
    Ok(Some(CallLog {
        assignee,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        disposition,
        comments,
        updated_at: Some(updated_at),
        updated_by,
    }))
}

/// Write a log edit in one transaction; `None` when the call is unknown.
pub fn write_log(
    db: &mut Db,
    hooks: &Hooks,
    call_id: &str,
    patch: &LogPatch,
    author: &str,
    at: i64,
) -> Result<Option<CallLog>, StoreError> {
    db.transaction(|tx| {
        let known = tx.query_one("SELECT id FROM calls WHERE id = ?1", args![call_id], |r| {
            r.get::<String>(0)
        })?;
        if known.is_none() {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO call_logs (call_id, updated_at, updated_by) VALUES (?1, ?2, ?3)
             ON CONFLICT(call_id) DO UPDATE SET updated_at = excluded.updated_at,
                updated_by = excluded.updated_by",
            args![call_id, at, author],
        )?;
        if let Some(assignee) = &patch.assignee {
            tx.execute(
                "UPDATE call_logs SET assignee = ?2 WHERE call_id = ?1",
                args![call_id, assignee],
            )?;
        }
        if let Some(tags) = &patch.tags {
            let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "UPDATE call_logs SET tags = ?2 WHERE call_id = ?1",
                args![call_id, tags],
            )?;
        }
        if let Some(disposition) = &patch.disposition {
            tx.execute(
                "UPDATE call_logs SET disposition = ?2 WHERE call_id = ?1",
                args![call_id, disposition],
            )?;
        }
        if let Some(text) = &patch.comment {
            tx.execute(
                "INSERT INTO comments (call_id, author, text, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                args![call_id, author, text, at],
            )?;
        }
        let saved = log(tx, call_id)?;
        if let Some(saved) = &saved {
            outbox::log_saved(tx, hooks, call_id, saved, at)?;
        }
        Ok(saved)
    })
}

/// Apply one change in its own transaction.
pub fn apply(db: &mut Db, hooks: &Hooks, op: StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Log {
            call_id,
            patch,
            author,
            at,
            reply,
        } => {
            let result = write_log(db, hooks, &call_id, &patch, &author, at);
            let answer = match &result {
                Ok(log) => Ok(log.clone()),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(answer);
            result.map(|_| ())
        }
        StoreOp::Contacts { change, reply } => {
            let result = match &change {
                ContactChange::Put(entries) => contacts::put_all(db, entries).map(|()| true),
                ContactChange::Delete(number) => contacts::delete(db, number),
            };
            let _ = reply.send(result.as_ref().map(|b| *b).map_err(|e| e.to_string()));
            result.map(|_| ())
        }
        change => db.transaction(|tx| write_change(tx, hooks, &change)),
    }
}

/// The call a change is about, for the error log.
fn change_call(op: &StoreOp) -> &str {
    match op {
        StoreOp::Call { call, .. } => &call.id,
        StoreOp::Log { call_id, .. } | StoreOp::Recording { call_id, .. } => call_id,
        StoreOp::Contacts { .. } => "-",
    }
}

/// Apply changes in order. The calls' own changes (status, recording) go in as few
/// transactions as possible: one commit for a busy second's hundreds of small changes,
/// instead of one each. A run in which a change fails is rolled back and written again one
/// change at a time, so one bad row never takes the others with it. An agent's log edit
/// is answered only once it is committed, so it has a transaction of its own.
///
/// When the connection itself is lost (PostgreSQL restarted), the calls' changes not yet
/// written come back, in order, for the caller to write again on a new connection; an edit
/// or directory change is answered with the error instead (its sender may try again).
pub fn apply_all(db: &mut Db, hooks: &Hooks, ops: Vec<StoreOp>) -> Vec<StoreOp> {
    let mut run: Vec<StoreOp> = Vec::new();
    let mut ops = ops.into_iter();
    while let Some(op) = ops.next() {
        if matches!(op, StoreOp::Log { .. } | StoreOp::Contacts { .. }) {
            if let Err(mut unwritten) = apply_run(db, hooks, std::mem::take(&mut run)) {
                unwritten.push(op);
                unwritten.extend(ops);
                return unwritten;
            }
            let call = change_call(&op).to_string();
            if let Err(e) = apply(db, hooks, op) {
                tracing::error!(%call, error = %e, "call log write failed");
            }
        } else {
            run.push(op);
        }
    }
    apply_run(db, hooks, run).err().unwrap_or_default()
}

/// Write a run of calls' changes; `Err` gives back the changes when the connection was lost.
fn apply_run(db: &mut Db, hooks: &Hooks, run: Vec<StoreOp>) -> Result<(), Vec<StoreOp>> {
    if run.is_empty() {
        return Ok(());
    }
    let together = db.transaction(|tx| {
        for op in &run {
            write_change(tx, hooks, op)?;
        }
        Ok(())
    });
    if together.is_ok() {
        return Ok(());
    }
    if db.is_lost() {
        return Err(run);
    }
    for op in run {
        let call = change_call(&op).to_string();
        if let Err(e) = apply(db, hooks, op) {
            tracing::error!(%call, error = %e, "call log write failed");
        }
    }
    Ok(())
}

/// Write a call's change inside the caller's transaction.
fn write_change(db: &mut Db, hooks: &Hooks, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Log { .. } | StoreOp::Contacts { .. } => Ok(()),
        StoreOp::Recording {
            call_id,
            path,
            segment,
        } => {
            if let Some(path) = path {
                db.execute(
                    "UPDATE calls SET recording_path = ?2 WHERE id = ?1",
                    args![call_id, path],
                )?;
            }
            if let Some(seg) = segment {
                let written = db.execute(
                    "INSERT INTO recording_segments
                        (call_id, idx, started_at, ended_at, offset_ms, duration_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(call_id, idx) DO UPDATE SET
                        ended_at = excluded.ended_at, duration_ms = excluded.duration_ms",
                    args![
                        call_id,
                        seg.index,
                        seg.started_at,
                        seg.ended_at,
                        seg.offset_ms,
                        seg.duration_ms
                    ],
                );
                written?;
            }
            Ok(())
        }
        StoreOp::Call { call, at } => {
            let before = db.query_one(
                "SELECT status, answered_at, recording_path FROM calls WHERE id = ?1",
                args![call.id],
                |r| {
                    Ok(outbox::Before {
                        status: r.get(0)?,
                        answered_at: r.get(1)?,
                        recording_path: r.get(2)?,
                    })
                },
            )?;
            // The node is the one the call started on; later changes leave it.
            db.execute(
                "INSERT INTO calls (id, direction, from_number, from_name, to_number, prospect,
                    agent_id, status, created_at, answered_at, queued_at, ended_at, end_reason,
                    recording, prospect_name, prospect_id, node)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17)
                 ON CONFLICT(id) DO UPDATE SET
                    from_number = excluded.from_number, from_name = excluded.from_name,
                    to_number = excluded.to_number, prospect = excluded.prospect,
                    agent_id = excluded.agent_id, status = excluded.status,
                    answered_at = excluded.answered_at, queued_at = excluded.queued_at,
                    ended_at = excluded.ended_at, end_reason = excluded.end_reason,
                    recording = excluded.recording, prospect_name = excluded.prospect_name,
                    prospect_id = excluded.prospect_id",
                args![
                    call.id,
                    call.direction,
                    call.from_number,
                    call.from_name,
                    call.to_number,
                    call.prospect,
                    call.agent_id,
                    call.status,
                    call.created_at,
                    call.answered_at,
                    call.queued_at,
                    call.ended_at,
                    call.end_reason,
                    call.recording,
                    call.prospect_name,
                    call.prospect_id,
                    hooks.node,
                ],
            )?;
            let previous = before.as_ref().map(|b| b.status.as_str());
            if previous != Some(call.status.as_str()) {
                db.execute(
                    "UPDATE segments SET ended_at = ?2 WHERE call_id = ?1 AND ended_at IS NULL",
                    args![call.id, at],
                )?;
                if segmented(&call.status) {
                    db.execute(
                        "INSERT INTO segments (call_id, status, started_at) VALUES (?1, ?2, ?3)",
                        args![call.id, call.status, at],
                    )?;
                }
            }
            // The events this change makes, in the same transaction: the outbox never holds
            // an event whose change was rolled back, nor misses one that was committed.
            outbox::call_changed(db, hooks, before.as_ref(), call, *at)?;
            Ok(())
        }
    }
}

/// How long the writer waits before opening a lost connection again, at most.
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The writer task: applies changes in order; a failed write is logged with its call id and
/// the task goes on (one bad row never stops the log). A lost connection is opened again,
/// the changes it had not written kept and written first.
pub async fn run_writer(
    location: Location,
    hooks: std::sync::Arc<Hooks>,
    mut ops: mpsc::Receiver<StoreOp>,
) {
    let open = {
        let location = location.clone();
        move || location.open()
    };
    let db = match tokio::task::spawn_blocking(open.clone()).await {
        Ok(Ok(db)) => db,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "call log unavailable");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "call log task failed");
            return;
        }
    };
    let db = std::sync::Arc::new(std::sync::Mutex::new(db));
    let mut pending: Vec<StoreOp> = Vec::new();
    let mut backoff = Duration::from_millis(250);
    loop {
        if pending.is_empty() {
            let Some(op) = ops.recv().await else {
                break;
            };
            pending.push(op);
        }
        // Take everything queued and write it in one blocking hop.
        while let Ok(op) = ops.try_recv() {
            pending.push(op);
            if pending.len() >= 512 {
                break;
            }
        }
        let batch = std::mem::take(&mut pending);
        let db = std::sync::Arc::clone(&db);
        let hooks = std::sync::Arc::clone(&hooks);
        let open = open.clone();
        let result = tokio::task::spawn_blocking(move || {
            let Ok(mut db) = db.lock() else {
                return Err(("store lock poisoned".to_string(), Vec::new()));
            };
            if db.is_lost() {
                match open() {
                    Ok(fresh) => {
                        *db = fresh;
                        tracing::info!("call log connection opened again");
                    }
                    Err(e) => return Err((e.to_string(), batch)),
                }
            }
            let unwritten = apply_all(&mut db, &hooks, batch);
            if !hooks.subscriptions.is_empty() {
                hooks.wake.notify_one();
            }
            Ok(unwritten)
        })
        .await;
        match result {
            Ok(Ok(unwritten)) if unwritten.is_empty() => backoff = Duration::from_millis(250),
            Ok(Ok(unwritten)) => {
                tracing::warn!(
                    changes = unwritten.len(),
                    "call log connection lost; writing again once it is back"
                );
                pending = unwritten;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
            Ok(Err((e, unwritten))) => {
                tracing::error!(error = %e, "call log unavailable; retrying");
                pending = unwritten;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
            Err(e) => tracing::error!(error = %e, "call log writer failed"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
