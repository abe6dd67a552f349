//! The call log behind one interface on both engines: the same changes written through the
//! store's functions to the embedded SQLite file and to a PostgreSQL server (Debian's, run by
//! the test as the `postgres` user) read back the same, node by node; and on PostgreSQL, the
//! writer keeps what it could not write while the server was down and writes it once the
//! server is back.

mod common;

use std::time::{Duration, Instant};

use callgate::store::outbox::{self, Hooks, Subscription};
use callgate::store::{
    self, CallQuery, CallRecord, ContactChange, Location, LogPatch, RecordingSegment, StoreOp,
};
use common::postgres::Postgres;

fn record(id: &str, status: &str, created: i64) -> CallRecord {
    CallRecord {
        id: id.into(),
        direction: "inbound".into(),
        from_number: "+15551230001".into(),
        from_name: Some("Riley".into()),
        to_number: "+15550000100".into(),
        prospect: "+15551230001".into(),
        agent_id: Some("demo".into()),
        status: status.into(),
        created_at: created,
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
}

fn hooks(node: &str) -> Hooks {
    Hooks {
        subscriptions: vec![Subscription {
            url: "http://crm.invalid/hook".into(),
            events: vec!["*".into()],
        }],
        public_url: "https://gw.example".into(),
        wake: Default::default(),
        node: Some(node.into()),
    }
}

fn change(call: CallRecord, at: i64) -> StoreOp {
    StoreOp::Call {
        call: Box::new(call),
        at,
    }
}

/// One call's life on node a, one live call on node b, a log edit, contacts, and what each
/// node finds afterwards.
fn exercise(location: &Location) {
    let engine = format!("{location:?}");
    let mut db = location.open().expect("open");
    // Opening again runs no migration twice.
    drop(location.open().expect("open again"));
    let (a, b) = (hooks("a"), hooks("b"));

    let mut c1 = record("c1", "ringing", 1_000);
    let mut ops = vec![change(c1.clone(), 1_000)];
    c1.status = "active".into();
    c1.answered_at = Some(2_000);
    ops.push(change(c1.clone(), 2_000));
    ops.push(StoreOp::Recording {
        call_id: "c1".into(),
        path: Some("/rec/c1.wav".into()),
        segment: Some(RecordingSegment {
            index: 0,
            started_at: 2_000,
            ended_at: None,
            offset_ms: 0,
            duration_ms: None,
        }),
    });
    // No such call: refused by the foreign key, and the rest of the batch is written.
    ops.push(StoreOp::Recording {
        call_id: "nobody".into(),
        path: Some("/rec/nobody.wav".into()),
        segment: None,
    });
    c1.status = "on_hold".into();
    ops.push(change(c1.clone(), 5_000));
    c1.status = "active".into();
    ops.push(change(c1.clone(), 6_000));
    c1.status = "ended".into();
    c1.ended_at = Some(9_000);
    c1.end_reason = Some("caller_hangup".into());
    c1.recording = "off".into();
    ops.push(change(c1.clone(), 9_000));
    assert!(store::apply_all(&mut db, &a, ops).is_empty(), "{engine}");
    let mut c2 = record("c2", "active", 3_000);
    c2.answered_at = Some(3_500);
    assert!(store::apply_all(&mut db, &b, vec![change(c2, 3_500)]).is_empty());

    let saved = store::write_log(
        &mut db,
        &a,
        "c1",
        &LogPatch {
            tags: Some(vec!["interested".into()]),
            disposition: Some("callback".into()),
            comment: Some("call back Tuesday".into()),
            ..LogPatch::default()
        },
        "demo",
        10_000,
    )
    .expect("log written")
    .expect("c1 is known");
    assert_eq!(saved.tags, ["interested"], "{engine}");
    assert_eq!(saved.comments[0].text, "call back Tuesday");
    assert!(
        store::write_log(&mut db, &a, "nobody", &LogPatch::default(), "demo", 1)
            .expect("no error")
            .is_none()
    );

    // Each call names the node that wrote it; its segments are in order.
    let read = store::call(&mut db, "c1").expect("read").expect("c1");
    assert_eq!(read.node.as_deref(), Some("a"), "{engine}");
    assert_eq!(read.recording_path.as_deref(), Some("/rec/c1.wav"));
    assert_eq!(read.end_reason.as_deref(), Some("caller_hangup"));
    assert_eq!(
        store::call(&mut db, "c2")
            .expect("read")
            .expect("c2")
            .node
            .as_deref(),
        Some("b")
    );
    let segments: Vec<(String, i64, Option<i64>)> = store::segments(&mut db, "c1")
        .expect("segments")
        .into_iter()
        .map(|s| (s.status, s.started_at, s.ended_at))
        .collect();
    assert_eq!(
        segments,
        [
            ("active".to_string(), 2_000, Some(5_000)),
            ("on_hold".to_string(), 5_000, Some(6_000)),
            ("active".to_string(), 6_000, Some(9_000)),
        ],
        "{engine}"
    );
    assert_eq!(
        store::recording_segments(&mut db, "c1").expect("rec").len(),
        1
    );
    assert!(store::call(&mut db, "nobody").expect("read").is_none());

    // The calls page: newest first, filtered, paged with a cursor.
    let all = store::calls(
        &mut db,
        &CallQuery {
            limit: 10,
            ..CallQuery::default()
        },
    )
    .expect("calls");
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c2", "c1"],
        "{engine}"
    );
    let live = store::calls(
        &mut db,
        &CallQuery {
            limit: 10,
            statuses: vec!["active".into(), "on_hold".into()],
            agent: Some("demo".into()),
            ..CallQuery::default()
        },
    )
    .expect("live");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].id, "c2");
    let older = store::calls(
        &mut db,
        &CallQuery {
            limit: 10,
            before: Some((3_000, "c2".into())),
            ..CallQuery::default()
        },
    )
    .expect("older");
    assert_eq!(
        older.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c1"]
    );
    let counts = store::status_counts(&mut db).expect("counts");
    assert_eq!(counts.get("ended"), Some(&1), "{engine}");
    assert_eq!(counts.get("active"), Some(&1));

    // The outbox: each node makes its own deliveries, oldest event of a call first, and the
    // ended event carries the durations of the segments.
    let due_a = outbox::due(&mut db, &a.node, i64::MAX, 100).expect("due a");
    assert_eq!(
        due_a
            .iter()
            .map(|d| d.event_type.as_str())
            .collect::<Vec<_>>(),
        ["call.started"],
        "{engine}"
    );
    let due_b = outbox::due(&mut db, &b.node, i64::MAX, 100).expect("due b");
    assert_eq!(due_b.len(), 1);
    assert_eq!(due_b[0].call_id.as_deref(), Some("c2"));
    let everything = outbox::deliveries(&mut db, &[], None, 100).expect("deliveries");
    let ended = everything
        .iter()
        .find(|d| d.event_type == "call.ended")
        .expect("call.ended queued");
    let body: serde_json::Value = serde_json::from_str(&ended.body).expect("JSON");
    assert_eq!(body["data"]["durations"]["talk_seconds"], 6.0, "{engine}");
    assert_eq!(body["data"]["durations"]["hold_seconds"], 1.0);
    assert_eq!(
        outbox::next_due(&mut db, &a.node).expect("next"),
        Some(1_000)
    );
    let mut first = due_a;
    outbox::begin_attempts(&mut db, &mut first).expect("attempts");
    outbox::record_attempts(
        &mut db,
        &[(first[0].id, outbox::Outcome::Delivered { at: 11_000 })],
    )
    .expect("recorded");
    let next = outbox::due(&mut db, &a.node, i64::MAX, 100).expect("due a again");
    assert_eq!(next[0].event_type, "call.answered", "{engine}");

    // The contacts directory.
    let riley = store::contacts::Contact {
        number: "+15551230001".into(),
        name: "Riley Example".into(),
        prospect_id: Some("crm-1".into()),
        updated_at: 1,
    };
    let (reply, _) = tokio::sync::oneshot::channel();
    assert!(store::apply_all(
        &mut db,
        &a,
        vec![StoreOp::Contacts {
            change: ContactChange::Put(vec![riley.clone()]),
            reply,
        }],
    )
    .is_empty());
    assert_eq!(
        store::contacts::get(&mut db, "+15551230001").expect("get"),
        Some(riley),
        "{engine}"
    );
    assert!(store::contacts::delete(&mut db, "+15551230001").expect("delete"));

    // Node b starts again after a crash: only its own live call is closed as failed.
    assert_eq!(store::end_orphans(&mut db, &a, 20_000).expect("a"), 0);
    assert_eq!(store::end_orphans(&mut db, &b, 20_000).expect("b"), 1);
    let c2 = store::call(&mut db, "c2").expect("read").expect("c2");
    assert_eq!(
        (c2.status.as_str(), c2.end_reason.as_deref(), c2.ended_at),
        ("ended", Some("failed"), Some(20_000)),
        "{engine}"
    );
    // A reader sees the writer's work.
    let readers = store::Readers::new(location.clone());
    assert_eq!(
        readers
            .read(|db| store::calls(
                db,
                &CallQuery {
                    limit: 5,
                    ..CallQuery::default()
                }
            ))
            .expect("reader")
            .len(),
        2
    );
}

#[test]
fn the_call_log_reads_back_the_same_on_sqlite_and_postgres() {
    let dir = common::scratch("store_engines");
    exercise(&Location::Sqlite(dir.join("calls.db")));

    let pg = Postgres::start("store_engines", 25850);
    let location = Location::Postgres(Box::new(pg.url().parse().expect("URL")));
    // Two nodes starting at once on an empty database: one migrates, the other waits for it.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let location = location.clone();
            std::thread::spawn(move || location.open().map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect();
    for racer in racers {
        racer.join().expect("thread").expect("migrated");
    }
    exercise(&location);
    drop(pg);
}

/// Wait until `check` holds on a fresh reader, or panic saying what was awaited.
fn eventually(
    location: &Location,
    what: &str,
    within: Duration,
    check: impl Fn(&mut store::db::Db) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let held = location
            .open_reader()
            .map(|mut db| check(&mut db))
            .unwrap_or(false);
        if held {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_writer_keeps_what_it_could_not_write_while_postgres_was_down() {
    let pg = Postgres::start("store_outage", 25852);
    let location = Location::Postgres(Box::new(pg.url().parse().expect("URL")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, rx) = tokio::sync::mpsc::channel(store::WRITE_CAPACITY);
    let writer = runtime.spawn(store::run_writer(
        location.clone(),
        std::sync::Arc::new(hooks("a")),
        rx,
    ));
    tx.blocking_send(change(record("before", "active", 1_000), 1_000))
        .expect("queued");
    eventually(
        &location,
        "the first call written",
        Duration::from_secs(20),
        |db| store::call(db, "before").ok().flatten().is_some(),
    );

    pg.stop();
    // Written while the server is down: kept, in order.
    let mut during = record("during", "ringing", 2_000);
    tx.blocking_send(change(during.clone(), 2_000))
        .expect("queued");
    during.status = "active".into();
    during.answered_at = Some(2_500);
    tx.blocking_send(change(during.clone(), 2_500))
        .expect("queued");
    let mut before = record("before", "ended", 1_000);
    before.ended_at = Some(3_000);
    before.end_reason = Some("caller_hangup".into());
    tx.blocking_send(change(before, 3_000)).expect("queued");
    std::thread::sleep(Duration::from_secs(2));
    pg.start_again();

    eventually(
        &location,
        "the changes made during the outage written once PostgreSQL is back",
        Duration::from_secs(30),
        |db| {
            let during = store::call(db, "during").ok().flatten();
            let before = store::call(db, "before").ok().flatten();
            during.is_some_and(|c| c.status == "active")
                && before.is_some_and(|c| c.status == "ended")
        },
    );
    let mut db = location.open_reader().expect("reader");
    let segments = store::segments(&mut db, "during").expect("segments");
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(segments[0].started_at, 2_500);
    drop(tx);
    runtime
        .block_on(writer)
        .expect("writer ends with its channel");
    drop(pg);
}

/// Two nodes' claim tasks on one PostgreSQL: a claim by one node reaches the other at once
/// (NOTIFY), and a change of holder that came with no notice (as when a node's listening
/// connection was down) is found at the next refresh.
#[test]
fn an_agent_claimed_by_another_node_is_let_go_here() {
    use callgate::cluster::{self as claims, ClaimOp};
    let pg = Postgres::start("claims", 25853);
    let location = Location::Postgres(Box::new(pg.url().parse().expect("URL")));
    drop(location.open().expect("migrated"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let member = |node: &str| claims::Membership {
            node: node.into(),
            url: format!("http://{node}.example.com"),
            lease: Duration::from_secs(30),
            hooks: std::sync::Arc::new(hooks(node)),
            nodes: Default::default(),
        };
        let (a, mut lost_a) = claims::start(location.clone(), member("a"));
        let (b, mut lost_b) = claims::start(location.clone(), member("b"));
        // Let both listeners start listening.
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.send(ClaimOp::Claim("demo".into())).await.expect("claim");
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.send(ClaimOp::Claim("demo".into())).await.expect("claim");
        let lost = tokio::time::timeout(Duration::from_secs(3), lost_a.recv())
            .await
            .expect("node a hears of b's claim within the notice's time, not the refresh's");
        assert_eq!(lost.as_deref(), Some("demo"));
        assert!(lost_b.try_recv().is_err(), "b keeps the agent");

        // The holder changes behind b's back: its next refresh finds it.
        let reader = location.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = reader.open_reader().expect("reader");
            store::db::Db::execute(
                &mut db,
                "UPDATE agent_claims SET node = 'c' WHERE agent_id = 'demo'",
                &[],
            )
            .expect("moved")
        })
        .await
        .expect("blocking");
        let lost = tokio::time::timeout(Duration::from_secs(12), lost_b.recv())
            .await
            .expect("node b finds the change at its refresh");
        assert_eq!(lost.as_deref(), Some("demo"));

        // A node that stops releases its claims.
        a.send(ClaimOp::Claim("other".into())).await.expect("claim");
        drop(a);
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let mut db = location.open_reader().expect("reader");
    let holders = db
        .query(
            "SELECT agent_id, node FROM agent_claims ORDER BY agent_id",
            &[],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )
        .expect("claims");
    assert_eq!(holders, [("demo".to_string(), "c".to_string())]);
    drop(runtime);
    drop(pg);
}

/// A node whose lease lapsed is taken over by exactly one of the survivors: its live calls
/// end as failed (one `call.ended` each), its claims go, its pending deliveries become the
/// survivor's; the survivors' own leases are written.
#[test]
fn a_dead_nodes_live_calls_end_failed_once_its_lease_lapses() {
    use callgate::cluster::{self, Membership};
    let pg = Postgres::start("takeover", 25854);
    let location = Location::Postgres(Box::new(pg.url().parse().expect("URL")));
    let mut db = location.open().expect("migrated");
    let dead = hooks("dead");
    let mut live = record("live", "active", 1_000);
    live.answered_at = Some(1_500);
    assert!(store::apply_all(&mut db, &dead, vec![change(live, 1_500)]).is_empty());
    let mut over = record("over", "ended", 500);
    over.ended_at = Some(900);
    over.end_reason = Some("caller_hangup".into());
    assert!(store::apply_all(&mut db, &dead, vec![change(over, 900)]).is_empty());
    // Its lease ran out a second ago; it held an agent.
    let lapsed = store::millis(std::time::SystemTime::now()) - 1_000;
    db.execute(
        "INSERT INTO node_leases (node, alive_until, url) VALUES ('dead', ?1, 'http://dead.example.com')",
        &[store::db::Arg::Int(lapsed)],
    )
    .expect("lease");
    db.execute(
        "INSERT INTO agent_claims (agent_id, node, expires_at) VALUES ('demo', 'dead', ?1)",
        &[store::db::Arg::Int(lapsed)],
    )
    .expect("claim");
    drop(db);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let senders = runtime.block_on(async {
        // Two survivors notice at once.
        let b_sees = cluster::Nodes::default();
        let member = |node: &str, nodes: &cluster::Nodes| Membership {
            node: node.into(),
            url: format!("http://{node}.example.com"),
            lease: Duration::from_secs(3),
            hooks: std::sync::Arc::new(hooks(node)),
            nodes: nodes.clone(),
        };
        let b = cluster::start(location.clone(), member("b", &b_sees));
        let c = cluster::start(location.clone(), member("c", &Default::default()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The live nodes, where pages reach them: the dead one is not among them.
        assert_eq!(
            b_sees.live(),
            [
                cluster::NodeInfo {
                    node: "b".into(),
                    url: "http://b.example.com".into()
                },
                cluster::NodeInfo {
                    node: "c".into(),
                    url: "http://c.example.com".into()
                }
            ]
        );
        assert_eq!(b_sees.url_of("c").as_deref(), Some("http://c.example.com"));
        assert!(b_sees.url_of("dead").is_none());
        assert!(b_sees.is_origin("http://c.example.com"));
        assert!(
            !b_sees.is_origin("http://dead.example.com"),
            "never seen live"
        );
        assert!(!b_sees.is_origin("http://evil.example.com"));
        (b, c)
    });
    let mut db = location.open_reader().expect("reader");
    let call = store::call(&mut db, "live").expect("read").expect("live");
    assert_eq!(
        (
            call.status.as_str(),
            call.end_reason.as_deref(),
            call.node.as_deref()
        ),
        ("ended", Some("failed"), Some("dead"))
    );
    let over = store::call(&mut db, "over").expect("read").expect("over");
    assert_eq!(
        over.end_reason.as_deref(),
        Some("caller_hangup"),
        "left alone"
    );
    let deliveries = outbox::deliveries(&mut db, &[], None, 100).expect("deliveries");
    let ended: Vec<_> = deliveries
        .iter()
        .filter(|d| d.call_id.as_deref() == Some("live") && d.event_type == "call.ended")
        .collect();
    assert_eq!(ended.len(), 1, "taken over once: {deliveries:?}");
    // The dead node's pending deliveries now belong to survivors, so someone makes them.
    let owners = db
        .query(
            "SELECT DISTINCT node FROM webhook_deliveries WHERE status = 'pending'",
            &[],
            |r| r.get::<Option<String>>(0),
        )
        .expect("owners");
    assert!(
        owners
            .iter()
            .all(|o| matches!(o.as_deref(), Some("b" | "c"))),
        "{owners:?}"
    );
    let leases = db
        .query("SELECT node FROM node_leases ORDER BY node", &[], |r| {
            r.get::<String>(0)
        })
        .expect("leases");
    assert_eq!(leases, ["b", "c"]);
    let claims = db
        .query("SELECT agent_id FROM agent_claims", &[], |r| {
            r.get::<String>(0)
        })
        .expect("claims");
    assert!(claims.is_empty(), "{claims:?}");
    drop(senders);
    drop(runtime);
    drop(pg);
}
