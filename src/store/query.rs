//! Reading the call log: the calls page's filtered, paged list, one call, its recording
//! segments, and the status counts for metrics.

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

pub(super) fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<CallRecord> {
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
    })
}

pub(super) const CALL_COLUMNS: &str =
    "id, direction, from_number, from_name, to_number, prospect, agent_id,
    status, created_at, answered_at, queued_at, ended_at, end_reason, recording, recording_path,
    prospect_name, prospect_id";

/// Calls, newest first.
pub fn calls(conn: &Connection, query: &CallQuery) -> Result<Vec<CallRecord>, StoreError> {
    let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if !query.statuses.is_empty() {
        let marks = vec!["?"; query.statuses.len()].join(", ");
        sql.push_str(&format!(" AND status IN ({marks})"));
        args.extend(query.statuses.iter().cloned().map(Into::into));
    }
    if let Some(agent) = &query.agent {
        sql.push_str(" AND agent_id = ?");
        args.push(agent.clone().into());
    }
    if let Some((at, id)) = &query.before {
        sql.push_str(" AND (created_at < ? OR (created_at = ? AND id < ?))");
        args.push((*at).into());
        args.push((*at).into());
        args.push(id.clone().into());
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    args.push((query.limit.clamp(1, 500) as i64).into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), record)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn call(conn: &Connection, id: &str) -> Result<Option<CallRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
            params![id],
            record,
        )
        .optional()?)
}

/// A call's recorded stretches, in file order.
pub fn recording_segments(
    conn: &Connection,
    id: &str,
) -> Result<Vec<RecordingSegment>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, started_at, ended_at, offset_ms, duration_ms FROM recording_segments
         WHERE call_id = ?1 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok(RecordingSegment {
            index: r.get(0)?,
            started_at: r.get(1)?,
            ended_at: r.get(2)?,
            offset_ms: r.get(3)?,
            duration_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn segments(conn: &Connection, id: &str) -> Result<Vec<Segment>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT status, started_at, ended_at FROM segments WHERE call_id = ?1 ORDER BY started_at, rowid",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok(Segment {
            status: r.get(0)?,
            started_at: r.get(1)?,
            ended_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Counts by status, for metrics.
pub fn status_counts(conn: &Connection) -> Result<HashMap<String, i64>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM calls GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
}
