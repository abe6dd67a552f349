//! Reading the call log: the calls page's filtered, paged list, one call, its recording
//! segments, and the status counts for metrics.

use super::db::ToArg;
use super::*;

/// One page of the calls list.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    pub statuses: Vec<String>,
    pub agent: Option<String>,
    pub limit: usize,
    /// Cursor: `created_at:id` of the last call of the previous page.
    pub before: Option<(i64, String)>,
}

pub(super) fn record(row: &db::Row<'_>) -> Result<CallRecord, StoreError> {
    Ok(CallRecord {
        id: row.get(0)?,
        direction: row.get(1)?,
        from_number: row.get(2)?,
        from_name: row.get(3)?,
        to_number: row.get(4)?,
        prospect: row.get(5)?,
        agent_id: row.get(6)?,
        status: row.get(7)?,
        created_at: row.get(8)?,
        answered_at: row.get(9)?,
        queued_at: row.get(10)?,
        ended_at: row.get(11)?,
        end_reason: row.get(12)?,
        recording: row.get(13)?,
        recording_path: row.get(14)?,
        prospect_name: row.get(15)?,
        prospect_id: row.get(16)?,
        node: row.get(17)?,
    })
}

pub(super) const CALL_COLUMNS: &str =
    "id, direction, from_number, from_name, to_number, prospect, agent_id,
    status, created_at, answered_at, queued_at, ended_at, end_reason, recording, recording_path,
    prospect_name, prospect_id, node";

/// Calls, newest first.
pub fn calls(db: &mut Db, query: &CallQuery) -> Result<Vec<CallRecord>, StoreError> {
    let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1");
    let limit = query.limit.clamp(1, 500) as i64;
    let mut args: Vec<db::Arg<'_>> = Vec::new();
    if !query.statuses.is_empty() {
        let marks = vec!["?"; query.statuses.len()].join(", ");
        sql.push_str(&format!(" AND status IN ({marks})"));
        args.extend(query.statuses.iter().map(|s| s.to_arg()));
    }
    if let Some(agent) = &query.agent {
        sql.push_str(" AND agent_id = ?");
        args.push(agent.to_arg());
    }
    if let Some((at, id)) = &query.before {
        sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
        args.push(at.to_arg());
        args.push(at.to_arg());
        args.push(id.to_arg());
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    args.push(limit.to_arg());
    db.query(&sql, &args, record)
}

pub fn call(db: &mut Db, id: &str) -> Result<Option<CallRecord>, StoreError> {
    db.query_one(
        &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
        args![id],
        record,
    )
}

/// A call's recorded stretches, in file order.
pub fn recording_segments(db: &mut Db, id: &str) -> Result<Vec<RecordingSegment>, StoreError> {
    db.query(
        "SELECT idx, started_at, ended_at, offset_ms, duration_ms FROM recording_segments
         WHERE call_id = ?1 ORDER BY idx",
        args![id],
        |r| {
            Ok(RecordingSegment {
                index: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
                offset_ms: r.get(3)?,
                duration_ms: r.get(4)?,
            })
        },
    )
}

pub fn segments(db: &mut Db, id: &str) -> Result<Vec<Segment>, StoreError> {
    db.query(
        "SELECT status, started_at, ended_at FROM segments WHERE call_id = ?1
         ORDER BY started_at, rowid",
        args![id],
        |r| {
            Ok(Segment {
                status: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
            })
        },
    )
}

/// Counts by status, for metrics.
pub fn status_counts(db: &mut Db) -> Result<HashMap<String, i64>, StoreError> {
    let rows = db.query(
        "SELECT status, COUNT(*) FROM calls GROUP BY status",
        &[],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    Ok(rows.into_iter().collect())
}
