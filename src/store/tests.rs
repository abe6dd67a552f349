use super::*;

/// An inbound call of the demo agent's, as the log's tests write it.
pub(crate) fn record_of(id: &str, status: &str, at: i64) -> CallRecord {
    CallRecord {
        id: id.into(),
        direction: "inbound".into(),
        from_number: "+15551230001".into(),
        from_name: None,
        to_number: "+15550000100".into(),
        prospect: "+15551230001".into(),
        agent_id: Some("demo".into()),
        status: status.into(),
        created_at: 1_000,
        answered_at: None,
        queued_at: None,
        ended_at: None,
        end_reason: None,
        recording: "off".into(),
        recording_path: None,
        prospect_name: None,
        prospect_id: None,
        node: None,
    }
    .with_time(at)
}

trait WithTime {
    fn with_time(self, at: i64) -> Self;
}

impl WithTime for CallRecord {
    fn with_time(mut self, at: i64) -> CallRecord {
        if self.status == "ended" {
            self.ended_at = Some(at);
            self.end_reason = Some("caller_hangup".into());
        }
        self
    }
}

#[test]
fn a_batch_is_written_together_and_a_bad_change_spoils_none_of_the_others() {
    let dir = std::env::temp_dir().join(format!("callgate-store-{}", rand::random::<u64>()));
    let mut conn = super::Location::Sqlite(dir.join("calls.db").to_path_buf())
        .open()
        .expect("open");
    let segment = |call: &str| StoreOp::Recording {
        call_id: call.into(),
        path: None,
        segment: Some(RecordingSegment {
            index: 0,
            started_at: 1_000,
            ended_at: None,
            offset_ms: 0,
            duration_ms: None,
        }),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let ops = vec![
        StoreOp::Call {
            call: Box::new(record_of("c1", "active", 1_000)),
            at: 1_000,
        },
        segment("c1"),
        // No such call: the foreign key refuses it.
        segment("nobody"),
        StoreOp::Log {
            call_id: "c1".into(),
            patch: LogPatch {
                disposition: Some("callback".into()),
                ..LogPatch::default()
            },
            author: "alice".into(),
            at: 1_500,
            reply,
        },
        StoreOp::Call {
            call: Box::new(record_of("c2", "active", 2_000)),
            at: 2_000,
        },
        StoreOp::Call {
            call: Box::new(record_of("c1", "ended", 3_000)),
            at: 3_000,
        },
    ];
    apply_all(&mut conn, &Hooks::default(), ops);
    let log = answer.blocking_recv().expect("answered").expect("written");
    assert_eq!(
        log.and_then(|l| l.disposition).as_deref(),
        Some("callback"),
        "the log edit saw the call written before it"
    );
    assert_eq!(
        call(&mut conn, "c1")
            .expect("query")
            .map(|c| c.status)
            .as_deref(),
        Some("ended")
    );
    assert!(call(&mut conn, "c2").expect("query").is_some());
    assert_eq!(recording_segments(&mut conn, "c1").expect("query").len(), 1);
    assert!(recording_segments(&mut conn, "nobody")
        .expect("query")
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_changes_make_segments_and_orphans_end_failed() {
    let dir = std::env::temp_dir().join(format!("callgate-store-{}", rand::random::<u64>()));
    let path = dir.join("calls.db");
    let mut conn = super::Location::Sqlite(path.to_path_buf())
        .open()
        .expect("open");
    for (status, at) in [
        ("ringing", 1_000),
        ("active", 2_000),
        ("on_hold", 3_000),
        ("active", 4_000),
        ("ended", 5_000),
    ] {
        apply(
            &mut conn,
            &Hooks::default(),
            StoreOp::Call {
                call: Box::new(record_of("c1", status, at)),
                at,
            },
        )
        .expect("apply");
    }
    let segs = segments(&mut conn, "c1").expect("segments");
    let got: Vec<(&str, i64, Option<i64>)> = segs
        .iter()
        .map(|s| (s.status.as_str(), s.started_at, s.ended_at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("active", 2_000, Some(3_000)),
            ("on_hold", 3_000, Some(4_000)),
            ("active", 4_000, Some(5_000))
        ]
    );
    apply(
        &mut conn,
        &Hooks::default(),
        StoreOp::Call {
            call: Box::new(record_of("c2", "waiting", 6_000)),
            at: 6_000,
        },
    )
    .expect("apply");
    drop(conn);
    // Reopening runs no migration twice and ends what was live.
    let mut conn = super::Location::Sqlite(path.to_path_buf())
        .open()
        .expect("reopen");
    assert_eq!(
        end_orphans(&mut conn, &Hooks::default(), 9_000).expect("orphans"),
        1
    );
    let c2 = call(&mut conn, "c2").expect("query").expect("c2");
    assert_eq!(
        (c2.status.as_str(), c2.end_reason.as_deref(), c2.ended_at),
        ("ended", Some("failed"), Some(9_000))
    );
    assert_eq!(
        segments(&mut conn, "c2").expect("segments")[0].ended_at,
        Some(9_000)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pages_newest_first_with_a_cursor_and_filters() {
    let mut conn = super::Location::Sqlite(Path::new(":memory:").to_path_buf())
        .open()
        .expect("open");
    for i in 0..7 {
        let mut r = record_of(
            &format!("c{i}"),
            if i % 2 == 0 { "ended" } else { "active" },
            10,
        );
        r.created_at = 100 + i;
        apply(
            &mut conn,
            &Hooks::default(),
            StoreOp::Call {
                call: Box::new(r),
                at: 100 + i,
            },
        )
        .expect("apply");
    }
    let first = calls(
        &mut conn,
        &CallQuery {
            limit: 3,
            ..CallQuery::default()
        },
    )
    .expect("page");
    let ids: Vec<&str> = first.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c6", "c5", "c4"]);
    let last = first.last().expect("last");
    let next = calls(
        &mut conn,
        &CallQuery {
            limit: 3,
            before: Some((last.created_at, last.id.clone())),
            ..CallQuery::default()
        },
    )
    .expect("page");
    let ids: Vec<&str> = next.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c3", "c2", "c1"]);
    let active = calls(
        &mut conn,
        &CallQuery {
            limit: 50,
            statuses: vec!["active".into()],
            ..CallQuery::default()
        },
    )
    .expect("filter");
    assert_eq!(active.len(), 3);
    assert_eq!(
        status_counts(&mut conn).expect("counts").get("ended"),
        Some(&4)
    );
}
