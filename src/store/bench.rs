//! `callgate bench-store`: how long the call log takes to write a day's calls and to answer
//! the calls page's queries over them.

use super::*;

/// What `callgate bench-store` measured.
#[derive(Debug, Clone)]
pub struct StoreBench {
    pub rows: usize,
    pub write: Duration,
    /// Median and worst of the calls page queries, per query kind.
    pub queries: Vec<(&'static str, Duration, Duration)>,
}

/// Write `rows` calls (each with segments and a log) into a fresh database at `path`, then
/// time the calls page queries the API runs.
pub fn bench(path: &Path, rows: usize) -> Result<StoreBench, StoreError> {
    let _ = std::fs::remove_file(path);
    let mut conn = super::Location::Sqlite(path.to_path_buf()).open()?;
    let started = std::time::Instant::now();
    let statuses = ["ended", "ended", "ended", "active", "on_hold", "waiting"];
    for i in 0..rows {
        let at = 1_700_000_000_000 + i as i64 * 1_000;
        let status = statuses[i % statuses.len()];
        let record = CallRecord {
            id: format!("c_{i:08}"),
            direction: if i % 3 == 0 { "outbound" } else { "inbound" }.into(),
            from_number: format!("+1555{:07}", i % 5000),
            from_name: None,
            to_number: "+15550000100".into(),
            prospect: format!("+1555{:07}", i % 5000),
            agent_id: Some(format!("agent{}", i % 20)),
            status: status.into(),
            created_at: at,
            answered_at: Some(at + 2_000),
            queued_at: None,
            ended_at: (status == "ended").then_some(at + 60_000),
            end_reason: (status == "ended").then(|| "caller_hangup".into()),
            recording: "off".into(),
            recording_path: None,
            prospect_name: None,
            prospect_id: None,
            node: None,
        };
        apply(
            &mut conn,
            &Hooks::default(),
            StoreOp::Call {
                call: Box::new(record),
                at,
            },
        )?;
        let patch = LogPatch {
            assignee: Some("bob".into()),
            tags: Some(vec!["interested".into()]),
            disposition: Some("callback".into()),
            comment: Some("call back next week".into()),
        };
        write_log(
            &mut conn,
            &Hooks::default(),
            &format!("c_{i:08}"),
            &patch,
            "agent",
            at + 70_000,
        )?;
    }
    let write = started.elapsed();
    let kinds: Vec<(&'static str, CallQuery)> = vec![
        (
            "newest 50",
            CallQuery {
                limit: 50,
                ..CallQuery::default()
            },
        ),
        (
            "active, on_hold, waiting",
            CallQuery {
                limit: 50,
                statuses: vec!["active".into(), "on_hold".into(), "waiting".into()],
                ..CallQuery::default()
            },
        ),
        (
            "one agent",
            CallQuery {
                limit: 50,
                agent: Some("agent7".into()),
                ..CallQuery::default()
            },
        ),
        (
            "a page deep in the past",
            CallQuery {
                limit: 50,
                before: Some((1_700_000_000_000 + (rows as i64 / 10) * 1_000, "c_".into())),
                ..CallQuery::default()
            },
        ),
    ];
    let mut queries = Vec::new();
    for (name, query) in kinds {
        let mut times = Vec::new();
        for _ in 0..21 {
            let t = std::time::Instant::now();
            // What the API does for a page: the calls, then each one's log.
            let calls = calls(&mut conn, &query)?;
            for c in &calls {
                log(&mut conn, &c.id)?;
            }
            times.push(t.elapsed());
        }
        times.sort();
        queries.push((name, times[times.len() / 2], times[times.len() - 1]));
    }
    Ok(StoreBench {
        rows,
        write,
        queries,
    })
}
