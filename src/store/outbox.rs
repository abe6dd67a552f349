//! The webhook outbox: the events a call's changes make, one row per event and receiver,
//! written by the call log's writer inside the transaction of the change they report (so a
//! crash loses none and invents none), and the queries the delivery task drains it with.
//! Delivery itself (HTTP, signatures, backoff) is `crate::webhooks`; nothing here sends.

use serde_json::{json, Value};

use super::db::{args, Db, Row, ToArg};
use super::{from_millis, node_key, CallLog, CallRecord, StoreError};
use crate::api::wire::rfc3339;

pub use callgate_core::config::WEBHOOK_EVENTS as EVENT_TYPES;

/// The receivers and what the events need to know about the gateway.
#[derive(Debug, Default)]
pub struct Hooks {
    pub subscriptions: Vec<Subscription>,
    /// Prefix of a recording's address in `call.ended` (`{public_url}/v1/calls/{id}/recording`).
    pub public_url: String,
    /// Woken after the writer commits, so deliveries start at once rather than at the next
    /// poll.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    /// This node's name (`[cluster] node`): on a shared store, the calls it writes and the
    /// deliveries it queues and makes are its own.
    pub node: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub url: String,
    /// Event types, or `*` for all.
    pub events: Vec<String>,
}

impl Subscription {
    fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// What the call log held for a call before a change.
#[derive(Debug)]
pub struct Before {
    pub status: String,
    pub answered_at: Option<i64>,
    pub recording_path: Option<String>,
}

/// A call as webhooks carry it: the calls API's object, with the CRM's id.
fn call_json(c: &CallRecord, recording_path: Option<&str>, public_url: &str) -> Value {
    let time = |ms: Option<i64>| ms.map(|ms| rfc3339(from_millis(ms)));
    json!({
        "call_id": c.id,
        "direction": c.direction,
        "from": c.from_number,
        "to": c.to_number,
        "prospect": {"number": c.prospect, "name": c.prospect_name, "prospect_id": c.prospect_id},
        "agent_id": c.agent_id,
        "status": c.status,
        "created_at": time(Some(c.created_at)),
        "answered_at": time(c.answered_at),
        "ended_at": time(c.ended_at),
        "end_reason": c.end_reason,
        "recording": c.recording,
        "recording_url": recording_path
            .map(|_| format!("{public_url}/v1/calls/{}/recording", c.id)),
    })
}

/// Seconds the call spent in each status, from its closed segments, and in all.
fn durations(db: &mut Db, c: &CallRecord) -> Result<Value, StoreError> {
    // PostgreSQL sums BIGINTs into NUMERIC: the cast keeps one type on both engines.
    let by_status: std::collections::HashMap<String, i64> = db
        .query(
            "SELECT status, CAST(SUM(COALESCE(ended_at, started_at) - started_at) AS BIGINT)
             FROM segments WHERE call_id = ?1 GROUP BY status",
            args![c.id],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?
        .into_iter()
        .collect();
    let secs = |status: &str| by_status.get(status).copied().unwrap_or(0) as f64 / 1000.0;
    let total = c.ended_at.unwrap_or(c.created_at) - c.created_at;
    Ok(json!({
        "total_seconds": total.max(0) as f64 / 1000.0,
        "talk_seconds": secs("active"),
        "hold_seconds": secs("on_hold"),
        "waiting_seconds": secs("waiting"),
    }))
}

/// Queue the events a call's change makes: `call.started` for a new call, `call.answered`
/// when it was first answered, `call.status` on each move between waiting, active and
/// on_hold, `call.ended` (with its end reason, durations and recording) when it ends.
pub fn call_changed(
    db: &mut Db,
    hooks: &Hooks,
    before: Option<&Before>,
    call: &CallRecord,
    at: i64,
) -> Result<(), StoreError> {
    if hooks.subscriptions.is_empty() {
        return Ok(());
    }
    let previous = before.map(|b| b.status.as_str());
    let recording_path = before.and_then(|b| b.recording_path.as_deref());
    let object = || call_json(call, recording_path, &hooks.public_url);
    let mut events: Vec<(&str, Value)> = Vec::new();
    if before.is_none() {
        events.push(("call.started", json!({"call": object()})));
    }
    if before.is_none_or(|b| b.answered_at.is_none()) && call.answered_at.is_some() {
        events.push(("call.answered", json!({"call": object()})));
    }
    if previous != Some(call.status.as_str()) {
        if super::segmented(&call.status) {
            events.push((
                "call.status",
                json!({"call": object(), "previous_status": previous}),
            ));
        }
        if call.status == "ended" {
            events.push((
                "call.ended",
                json!({"call": object(), "durations": durations(db, call)?}),
            ));
        }
    }
    for (kind, data) in events {
        queue(db, hooks, kind, Some(&call.id), data, at)?;
    }
    Ok(())
}

/// Queue `call_log.saved` for a log edit.
pub fn log_saved(
    db: &mut Db,
    hooks: &Hooks,
    call_id: &str,
    log: &CallLog,
    at: i64,
) -> Result<(), StoreError> {
    if hooks.subscriptions.is_empty() {
        return Ok(());
    }
    let call = super::call(db, call_id)?;
    let data = json!({
        "call": call.as_ref().map(|c| call_json(c, c.recording_path.as_deref(), &hooks.public_url)),
        "log": log,
    });
    queue(db, hooks, "call_log.saved", Some(call_id), data, at)
}

/// A fresh event id: the receiver's idempotency key, the same in every attempt and for
/// every receiver of the event.
fn event_id() -> String {
    format!("evt_{:032x}", rand::random::<u128>())
}

fn queue(
    db: &mut Db,
    hooks: &Hooks,
    kind: &str,
    call_id: Option<&str>,
    data: Value,
    at: i64,
) -> Result<(), StoreError> {
    let id = event_id();
    let body = json!({
        "id": id,
        "type": kind,
        "created_at": rfc3339(from_millis(at)),
        "data": data,
    })
    .to_string();
    for sub in hooks.subscriptions.iter().filter(|s| s.wants(kind)) {
        db.execute(
            "INSERT INTO webhook_deliveries
                (event_id, webhook, event_type, call_id, body, created_at, next_attempt_at, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            args![id, sub.url, kind, call_id, body, at, hooks.node],
        )?;
    }
    Ok(())
}

/// One queued delivery of an event to one receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub webhook: String,
    pub event_type: String,
    pub call_id: Option<String>,
    pub body: String,
    pub created_at: i64,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, webhook, event_type, call_id, body, created_at,
    status, attempts, next_attempt_at, last_error, delivered_at";

fn delivery(r: &Row<'_>) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        webhook: r.get(2)?,
        event_type: r.get(3)?,
        call_id: r.get(4)?,
        body: r.get(5)?,
        created_at: r.get(6)?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_at: r.get(9)?,
        last_error: r.get(10)?,
        delivered_at: r.get(11)?,
    })
}

/// This node's deliveries to make now: of each receiver's pending events for one call, only
/// the oldest, so a call's events arrive in the order they happened; oldest first.
pub fn due(
    db: &mut Db,
    node: &Option<String>,
    now: i64,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let limit = limit as i64;
    db.query(
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
               AND COALESCE(d.node, '') = ?3
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                    WHERE e.webhook = d.webhook AND e.call_id IS NOT DISTINCT FROM d.call_id
                      AND e.status = 'pending' AND e.id < d.id)
             ORDER BY d.id LIMIT ?2"
        ),
        args![now, limit, node_key(node)],
        delivery,
    )
}

/// When this node's earliest pending delivery falls due (`None`: nothing pending).
pub fn next_due(db: &mut Db, node: &Option<String>) -> Result<Option<i64>, StoreError> {
    Ok(db
        .query_one(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries
             WHERE status = 'pending' AND COALESCE(node, '') = ?1",
            args![node_key(node)],
            |r| r.get::<Option<i64>>(0),
        )?
        .flatten())
}

/// Count an attempt at each delivery before it is made, so that an attempt number is never
/// sent twice for one event, not even when the gateway dies between sending and recording.
/// The deliveries' `attempts` become the number of the attempt about to be made.
pub fn begin_attempts(db: &mut Db, deliveries: &mut [Delivery]) -> Result<(), StoreError> {
    db.transaction(|tx| {
        for d in deliveries.iter() {
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1 WHERE id = ?1",
                args![d.id],
            )?;
        }
        Ok(())
    })?;
    for d in deliveries.iter_mut() {
        d.attempts += 1;
    }
    Ok(())
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        at: i64,
    },
    /// Try again at `next_at`.
    Retry {
        error: String,
        next_at: i64,
    },
    /// Retried for as long as allowed (or the receiver is no longer configured).
    Failed {
        error: String,
    },
}

/// Record how a round's attempts went, in one transaction.
pub fn record_attempts(db: &mut Db, outcomes: &[(i64, Outcome)]) -> Result<(), StoreError> {
    db.transaction(|tx| {
        for (id, outcome) in outcomes {
            record_attempt(tx, *id, outcome)?;
        }
        Ok(())
    })
}

pub fn record_attempt(db: &mut Db, id: i64, outcome: &Outcome) -> Result<(), StoreError> {
    match outcome {
        Outcome::Delivered { at } => db.execute(
            "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = ?2,
                last_error = NULL WHERE id = ?1",
            args![id, at],
        )?,
        Outcome::Retry { error, next_at } => db.execute(
            "UPDATE webhook_deliveries SET last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            args![id, error, next_at],
        )?,
        Outcome::Failed { error } => db.execute(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = ?2 WHERE id = ?1",
            args![id, error],
        )?,
    };
    Ok(())
}

/// Deliveries in these statuses (all when empty), oldest first, after the cursor `after`.
pub fn deliveries(
    db: &mut Db,
    statuses: &[String],
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let after = after.unwrap_or(0);
    let limit = limit.clamp(1, 1000) as i64;
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id > ?");
    let mut args: Vec<super::db::Arg<'_>> = vec![after.to_arg()];
    if !statuses.is_empty() {
        let marks = vec!["?"; statuses.len()].join(", ");
        sql.push_str(&format!(" AND status IN ({marks})"));
        args.extend(statuses.iter().map(|s| s.to_arg()));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push(limit.to_arg());
    db.query(&sql, &args, delivery)
}

/// Forget deliveries that succeeded before `before` (the outbox stays bounded; failed ones
/// stay for the operator). Returns how many.
pub fn prune_delivered(db: &mut Db, before: i64) -> Result<usize, StoreError> {
    db.execute(
        "DELETE FROM webhook_deliveries WHERE status = 'delivered' AND delivered_at < ?1",
        args![before],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{apply_all, LogPatch, StoreOp};

    fn call(status: &str, answered: Option<i64>, ended: Option<i64>) -> CallRecord {
        CallRecord {
            answered_at: answered,
            ended_at: ended,
            end_reason: ended.map(|_| "caller_hangup".into()),
            prospect_name: Some("Riley".into()),
            prospect_id: Some("crm-1".into()),
            node: None,
            ..crate::store::tests::record_of("c_1", status, 0)
        }
    }

    fn kinds(db: &mut Db, webhook: &str) -> Vec<String> {
        db.query(
            "SELECT event_type FROM webhook_deliveries WHERE webhook = ?1 ORDER BY id",
            args![webhook],
            |r| r.get(0),
        )
        .expect("kinds")
    }

    /// A call's life makes its events in order, each receiver gets what it subscribed to,
    /// and the outbox hands out only the oldest pending event of each call and receiver.
    #[test]
    fn a_calls_changes_queue_its_events_and_each_call_is_delivered_in_order() {
        let dir = std::env::temp_dir().join(format!("cg-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut conn = crate::store::Location::Sqlite(dir.join("o.db"))
            .open()
            .expect("open");
        let hooks = Hooks {
            subscriptions: vec![
                Subscription {
                    url: "http://all".into(),
                    events: vec!["*".into()],
                },
                Subscription {
                    url: "http://ends".into(),
                    events: vec!["call.ended".into()],
                },
            ],
            public_url: "https://gw".into(),
            wake: Default::default(),
            node: None,
        };
        let op = |c: CallRecord, at: i64| StoreOp::Call {
            call: Box::new(c),
            at,
        };
        apply_all(
            &mut conn,
            &hooks,
            vec![
                op(call("ringing", None, None), 1_000),
                op(call("active", Some(2_000), None), 2_000),
                op(call("on_hold", Some(2_000), None), 5_000),
                op(call("active", Some(2_000), None), 6_000),
                op(call("ended", Some(2_000), Some(9_000)), 9_000),
            ],
        );
        let (reply, _answer) = tokio::sync::oneshot::channel();
        apply_all(
            &mut conn,
            &hooks,
            vec![StoreOp::Log {
                call_id: "c_1".into(),
                patch: LogPatch {
                    disposition: Some("callback".into()),
                    ..LogPatch::default()
                },
                author: "demo".into(),
                at: 10_000,
                reply,
            }],
        );
        assert_eq!(
            kinds(&mut conn, "http://all"),
            [
                "call.started",
                "call.answered",
                "call.status",
                "call.status",
                "call.status",
                "call.ended",
                "call_log.saved"
            ]
        );
        assert_eq!(kinds(&mut conn, "http://ends"), ["call.ended"]);

        // The ended event carries the durations of the call's segments and its name.
        let ended: Value = conn
            .query_one(
                "SELECT body FROM webhook_deliveries WHERE webhook = 'http://ends'",
                &[],
                |r| r.get::<String>(0),
            )
            .expect("query")
            .map(|b| serde_json::from_str(&b).expect("JSON"))
            .expect("ended");
        assert_eq!(ended["type"], "call.ended");
        assert_eq!(ended["data"]["durations"]["talk_seconds"], 6.0);
        assert_eq!(ended["data"]["durations"]["hold_seconds"], 1.0);
        assert_eq!(ended["data"]["durations"]["total_seconds"], 8.0);
        assert_eq!(ended["data"]["call"]["prospect"]["name"], "Riley");

        // Only the head of each (receiver, call) is due; the next once it is delivered.
        let due1 = due(&mut conn, &None, 100_000, 10).expect("due");
        assert_eq!(
            due1.iter()
                .map(|d| (d.webhook.as_str(), d.event_type.as_str()))
                .collect::<Vec<_>>(),
            [
                ("http://all", "call.started"),
                ("http://ends", "call.ended")
            ]
        );
        // Not yet due: nothing.
        assert!(due(&mut conn, &None, 0, 10).expect("due").is_empty());
        record_attempt(&mut conn, due1[0].id, &Outcome::Delivered { at: 11_000 }).expect("ok");
        // A head waiting for its retry holds the call's later events back.
        record_attempt(
            &mut conn,
            due1[1].id,
            &Outcome::Retry {
                error: "HTTP 503".into(),
                next_at: 200_000,
            },
        )
        .expect("retry");
        let due2 = due(&mut conn, &None, 100_000, 10).expect("due");
        assert_eq!(due2.len(), 1);
        assert_eq!(due2[0].event_type, "call.answered");
        assert_eq!(next_due(&mut conn, &None).expect("next"), Some(2_000));
        let pending = deliveries(&mut conn, &["pending".into()], None, 100).expect("list");
        assert_eq!(pending.len(), 7);
        assert!(pending
            .iter()
            .any(|d| d.last_error.as_deref() == Some("HTTP 503")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
