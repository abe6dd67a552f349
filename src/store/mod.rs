//! The call log on SQLite: every call, its status segments (each waiting / active / on_hold
//! interval) and what agents write about it. One writer task owns the write connection and
//! takes changes from a bounded channel, so signalling and media never wait on the disk;
//! readers (the HTTP API) open their own connections, which WAL lets run beside the writer.
//! Nothing here knows SIP or WebSockets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

#[cfg(feature = "testkit")]
mod bench;
pub mod contacts;
pub mod outbox;
mod query;

#[cfg(feature = "testkit")]
pub use bench::*;
pub use callgate_core::log::{CallRecord, RecordingSegment};
pub use callgate_core::time::{from_millis, millis};
pub use query::*;

pub use outbox::Hooks;

/// Changes queued for the writer. Calls change status a few times each, so this covers
/// thousands of calls of backlog; when it is full the change is logged and dropped (the disk
/// has been stalled for a long time by then).
pub const WRITE_CAPACITY: usize = 65_536;

/// The schema, one entry per version; `PRAGMA user_version` says how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: calls, their status segments, call logs and comments.
    "CREATE TABLE calls (
        id TEXT PRIMARY KEY,
        direction TEXT NOT NULL,
        from_number TEXT NOT NULL,
        from_name TEXT,
        to_number TEXT NOT NULL,
        prospect TEXT NOT NULL,
        agent_id TEXT,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        answered_at INTEGER,
        queued_at INTEGER,
        ended_at INTEGER,
        end_reason TEXT,
        recording TEXT NOT NULL DEFAULT 'off'
     );
     CREATE INDEX calls_by_time ON calls (created_at DESC, id DESC);
     CREATE INDEX calls_by_agent ON calls (agent_id, created_at DESC);
     CREATE TABLE segments (
        call_id TEXT NOT NULL REFERENCES calls(id),
        status TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER
     );
     CREATE INDEX segments_by_call ON segments (call_id, started_at);
     CREATE TABLE call_logs (
        call_id TEXT PRIMARY KEY REFERENCES calls(id),
        assignee TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        disposition TEXT,
        updated_at INTEGER NOT NULL,
        updated_by TEXT
     );
     CREATE TABLE comments (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL REFERENCES calls(id),
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL
     );
     CREATE INDEX comments_by_call ON comments (call_id, id);",
    // 2: recordings: the file of a call and each recorded stretch of it.
    "ALTER TABLE calls ADD COLUMN recording_path TEXT;
     CREATE TABLE recording_segments (
        call_id TEXT NOT NULL REFERENCES calls(id),
        idx INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        offset_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        PRIMARY KEY (call_id, idx)
     );",
    // 3: the prospect's name and CRM id on each call, the contacts directory, and the
    // webhook outbox (one row per event per receiver, written with the change it reports).
    "ALTER TABLE calls ADD COLUMN prospect_name TEXT;
     ALTER TABLE calls ADD COLUMN prospect_id TEXT;
     CREATE TABLE contacts (
        number TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prospect_id TEXT,
        updated_at INTEGER NOT NULL
     );
     CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        webhook TEXT NOT NULL,
        event_type TEXT NOT NULL,
        call_id TEXT,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error TEXT,
        delivered_at INTEGER
     );
     CREATE INDEX deliveries_due ON webhook_deliveries (status, next_attempt_at);
     CREATE INDEX deliveries_in_order ON webhook_deliveries (webhook, call_id, status, id);",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store.database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("store.database {path}: {reason}")]
    Directory { path: String, reason: String },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
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

/// A transaction that takes the write lock at its start (`BEGIN IMMEDIATE`). The call log's
/// writer and the webhook delivery task both write; a transaction that read first and wrote
/// later would fail at once with "database is locked" whenever the other had committed in
/// between (SQLite cannot wait there), where this one waits its turn (the busy timeout).
pub fn write_transaction(conn: &Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    Ok(rusqlite::Transaction::new_unchecked(
        conn,
        rusqlite::TransactionBehavior::Immediate,
    )?)
}

/// Open (or create) the database, run the migrations, and return the connection.
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
    migrate(&conn)?;
    Ok(conn)
}

/// A read-only connection for queries beside the writer (WAL lets them run at once). The
/// schema is already migrated: the gateway opens the database with `open` at start.
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

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = write_transaction(conn)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "database migrated");
    }
    Ok(())
}

/// The recordings of calls that were live when the gateway last stopped: their writer died,
/// so their headers may be behind their data (call before `end_orphans`).
pub fn orphan_recordings(conn: &Connection) -> Result<Vec<PathBuf>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT recording_path FROM calls WHERE status != 'ended' AND recording_path IS NOT NULL",
    )?;
    let paths = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths.into_iter().map(PathBuf::from).collect())
}

/// Calls that were live when the gateway last stopped (crash, kill -9) are over: mark them
/// ended with reason `failed` and close their segments, and tell the webhooks so (in the
/// same transaction). Returns how many.
pub fn end_orphans(conn: &Connection, hooks: &Hooks, now: i64) -> Result<usize, StoreError> {
    let tx = write_transaction(conn)?;
    let orphans: Vec<CallRecord> = {
        let mut stmt = tx.prepare(&format!(
            "SELECT {CALL_COLUMNS} FROM calls WHERE status != 'ended'"
        ))?;
        let rows = stmt.query_map([], record)?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute(
        "UPDATE segments SET ended_at = ?1 WHERE ended_at IS NULL",
        params![now],
    )?;
    tx.execute(
        "UPDATE recording_segments SET ended_at = ?1 WHERE ended_at IS NULL",
        params![now],
    )?;
    tx.execute(
        "UPDATE calls SET recording = 'off'
         WHERE status != 'ended' AND recording IN ('recording', 'paused')",
        [],
    )?;
    let n = tx.execute(
        "UPDATE calls SET status = 'ended', ended_at = ?1, end_reason = 'failed'
         WHERE status != 'ended'",
        params![now],
    )?;
    for before in orphans {
        let before_state = outbox::Before {
            status: before.status.clone(),
            answered_at: before.answered_at,
            recording_path: before.recording_path.clone(),
        };
        if let Some(after) = call(&tx, &before.id)? {
            outbox::call_changed(&tx, hooks, Some(&before_state), &after, now)?;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// A call's log, or `None` when nothing was written about it yet.
pub fn log(conn: &Connection, call_id: &str) -> Result<Option<CallLog>, StoreError> {
    let head = conn
        .query_row(
            "SELECT assignee, tags, disposition, updated_at, updated_by FROM call_logs WHERE call_id = ?1",
            params![call_id],
            |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((assignee, tags, disposition, updated_at, updated_by)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT author, text, created_at FROM comments WHERE call_id = ?1 ORDER BY id",
    )?;
    let comments = stmt
        .query_map(params![call_id], |r| {
            Ok(Comment {
                author: r.get(0)?,
                text: r.get(1)?,
                at: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
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
    conn: &Connection,
    hooks: &Hooks,
    call_id: &str,
    patch: &LogPatch,
    author: &str,
    at: i64,
) -> Result<Option<CallLog>, StoreError> {
    let tx = write_transaction(conn)?;
    let known: Option<String> = tx
        .query_row(
            "SELECT id FROM calls WHERE id = ?1",
            params![call_id],
            |r| r.get(0),
        )
        .optional()?;
    if known.is_none() {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO call_logs (call_id, updated_at, updated_by) VALUES (?1, ?2, ?3)
         ON CONFLICT(call_id) DO UPDATE SET updated_at = excluded.updated_at,
            updated_by = excluded.updated_by",
        params![call_id, at, author],
    )?;
    if let Some(assignee) = &patch.assignee {
        tx.execute(
            "UPDATE call_logs SET assignee = ?2 WHERE call_id = ?1",
            params![call_id, assignee],
        )?;
    }
    if let Some(tags) = &patch.tags {
        let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "UPDATE call_logs SET tags = ?2 WHERE call_id = ?1",
            params![call_id, tags],
        )?;
    }
    if let Some(disposition) = &patch.disposition {
        tx.execute(
            "UPDATE call_logs SET disposition = ?2 WHERE call_id = ?1",
            params![call_id, disposition],
        )?;
    }
    if let Some(text) = &patch.comment {
        tx.execute(
            "INSERT INTO comments (call_id, author, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![call_id, author, text, at],
        )?;
    }
    let saved = log(&tx, call_id)?;
    if let Some(saved) = &saved {
        outbox::log_saved(&tx, hooks, call_id, saved, at)?;
    }
    tx.commit()?;
    Ok(saved)
}

/// Apply one change in its own transaction.
pub fn apply(conn: &Connection, hooks: &Hooks, op: StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Log {
            call_id,
            patch,
            author,
            at,
            reply,
        } => {
            let result = write_log(conn, hooks, &call_id, &patch, &author, at);
            let answer = match &result {
                Ok(log) => Ok(log.clone()),
                Err(e) => Err(e.to_string()),
            };
            let _ = reply.send(answer);
            result.map(|_| ())
        }
        StoreOp::Contacts { change, reply } => {
            let result = match &change {
                ContactChange::Put(entries) => contacts::put_all(conn, entries).map(|()| true),
                ContactChange::Delete(number) => contacts::delete(conn, number),
            };
            let _ = reply.send(result.as_ref().map(|b| *b).map_err(|e| e.to_string()));
            result.map(|_| ())
        }
        change => {
            let tx = write_transaction(conn)?;
            write_change(&tx, hooks, &change)?;
            tx.commit()?;
            Ok(())
        }
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
pub fn apply_all(conn: &Connection, hooks: &Hooks, ops: Vec<StoreOp>) {
    let mut run: Vec<StoreOp> = Vec::new();
    for op in ops {
        if matches!(op, StoreOp::Log { .. } | StoreOp::Contacts { .. }) {
            apply_run(conn, hooks, std::mem::take(&mut run));
            let call = change_call(&op).to_string();
            if let Err(e) = apply(conn, hooks, op) {
                tracing::error!(%call, error = %e, "call log write failed");
            }
        } else {
            run.push(op);
        }
    }
    apply_run(conn, hooks, run);
}

fn apply_run(conn: &Connection, hooks: &Hooks, run: Vec<StoreOp>) {
    if run.is_empty() {
        return;
    }
    let together = (|| {
        let tx = write_transaction(conn)?;
        for op in &run {
            write_change(&tx, hooks, op)?;
        }
        tx.commit()?;
        Ok::<(), StoreError>(())
    })();
    if together.is_ok() {
        return;
    }
    for op in run {
        let call = change_call(&op).to_string();
        if let Err(e) = apply(conn, hooks, op) {
            tracing::error!(%call, error = %e, "call log write failed");
        }
    }
}

/// Write a call's change inside the caller's transaction (statements prepared once per
/// connection and kept).
fn write_change(conn: &Connection, hooks: &Hooks, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Log { .. } | StoreOp::Contacts { .. } => Ok(()),
        StoreOp::Recording {
            call_id,
            path,
            segment,
        } => {
            if let Some(path) = path {
                conn.prepare_cached("UPDATE calls SET recording_path = ?2 WHERE id = ?1")?
                    .execute(params![call_id, path])?;
            }
            if let Some(seg) = segment {
                conn.prepare_cached(
                    "INSERT INTO recording_segments
                        (call_id, idx, started_at, ended_at, offset_ms, duration_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(call_id, idx) DO UPDATE SET
                        ended_at = excluded.ended_at, duration_ms = excluded.duration_ms",
                )?
                .execute(params![
                    call_id,
                    seg.index,
                    seg.started_at,
                    seg.ended_at,
                    seg.offset_ms,
                    seg.duration_ms
                ])?;
            }
            Ok(())
        }
        StoreOp::Call { call, at } => {
            let before: Option<outbox::Before> = conn
                .prepare_cached(
                    "SELECT status, answered_at, recording_path FROM calls WHERE id = ?1",
                )?
                .query_row(params![call.id], |r| {
                    Ok(outbox::Before {
                        status: r.get(0)?,
                        answered_at: r.get(1)?,
                        recording_path: r.get(2)?,
                    })
                })
                .optional()?;
            conn.prepare_cached(
                "INSERT INTO calls (id, direction, from_number, from_name, to_number, prospect,
                    agent_id, status, created_at, answered_at, queued_at, ended_at, end_reason,
                    recording, prospect_name, prospect_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT(id) DO UPDATE SET
                    from_number = excluded.from_number, from_name = excluded.from_name,
                    to_number = excluded.to_number, prospect = excluded.prospect,
                    agent_id = excluded.agent_id, status = excluded.status,
                    answered_at = excluded.answered_at, queued_at = excluded.queued_at,
                    ended_at = excluded.ended_at, end_reason = excluded.end_reason,
                    recording = excluded.recording, prospect_name = excluded.prospect_name,
                    prospect_id = excluded.prospect_id",
            )?
            .execute(params![
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
            ])?;
            let previous = before.as_ref().map(|b| b.status.as_str());
            if previous != Some(call.status.as_str()) {
                conn.prepare_cached(
                    "UPDATE segments SET ended_at = ?2 WHERE call_id = ?1 AND ended_at IS NULL",
                )?
                .execute(params![call.id, at])?;
                if segmented(&call.status) {
                    conn.prepare_cached(
                        "INSERT INTO segments (call_id, status, started_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![call.id, call.status, at])?;
                }
            }
            // The events this change makes, in the same transaction: the outbox never holds
            // an event whose change was rolled back, nor misses one that was committed.
            outbox::call_changed(conn, hooks, before.as_ref(), call, *at)?;
            Ok(())
        }
    }
}

/// The writer task: applies changes in order; a failed write is logged with its call id and
/// the task goes on (one bad row never stops the log).
pub async fn run_writer(
    path: PathBuf,
    hooks: std::sync::Arc<Hooks>,
    mut ops: mpsc::Receiver<StoreOp>,
) {
    let conn = match tokio::task::spawn_blocking(move || open(&path)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "call log unavailable");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "call log task failed");
            return;
        }
    };
    let conn = std::sync::Arc::new(std::sync::Mutex::new(conn));
    while let Some(op) = ops.recv().await {
        // Take everything queued and write it in one blocking hop.
        let mut batch = vec![op];
        while let Ok(op) = ops.try_recv() {
            batch.push(op);
            if batch.len() >= 512 {
                break;
            }
        }
        let conn = std::sync::Arc::clone(&conn);
        let hooks = std::sync::Arc::clone(&hooks);
        let result = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| "store lock poisoned".to_string())?;
            apply_all(&conn, &hooks, batch);
            if !hooks.subscriptions.is_empty() {
                hooks.wake.notify_one();
            }
            Ok::<(), String>(())
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "call log writer failed");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
