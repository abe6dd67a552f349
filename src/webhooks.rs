//! Webhook delivery: drains the outbox (`store::outbox`) to each `[[webhook]]` receiver as
//! signed JSON POSTs, in order per call and receiver, retrying with backoff for a day. The
//! outbox is written by the call log's writer in the transaction of the change an event
//! reports, so a crash or restart loses no event; an event may be sent again after a crash
//! (at least once), always with the same id for the receiver to recognise it.
//!
//! Signature (the scheme Stripe uses): `Callgate-Signature: t=<unix seconds>,v1=<hex>`
//! where `<hex>` is HMAC-SHA-256 with the receiver's secret over `<t>.<body>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::store::db::Db;
use crate::store::outbox::{self, Delivery, Outcome};
use crate::store::{millis, Hooks, Location};

/// How long an event is retried before it is marked failed.
pub const RETRY_FOR: Duration = Duration::from_secs(24 * 3600);
/// Deliveries taken from the outbox in one round (each a different call or receiver).
const ROUND: usize = 128;
/// Requests in flight at once toward one receiver.
const PER_RECEIVER: usize = 32;
/// What is read of a receiver's answer (only its status matters).
const MAX_ANSWER: usize = 4096;
/// Delivered rows are kept this long for operators, then pruned.
const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long the delivery task waits before trying an outbox it could not open again.
const OUTBOX_RETRY: Duration = Duration::from_secs(5);

/// The signature header's value for `body` sent at `t` (Unix seconds).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Delay before attempt `attempts + 1`: 1 s doubling to `max`, with a tenth of jitter so
/// that receivers coming back are not hit by every event at the same instant.
fn backoff(attempts: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << attempts.min(20)).min(max);
    let jitter = base.as_millis() as u64 / 10;
    base + Duration::from_millis(if jitter > 0 {
        rand::random::<u64>() % jitter
    } else {
        0
    })
}

/// The subscriptions the call log's writer queues events for.
pub fn hooks(webhooks: &[WebhookConfig], public_url: String, node: Option<String>) -> Hooks {
    Hooks {
        subscriptions: webhooks
            .iter()
            .map(|w| outbox::Subscription {
                url: w.url.clone(),
                events: w.events.clone(),
            })
            .collect(),
        public_url,
        wake: Arc::new(tokio::sync::Notify::new()),
        node,
    }
}

/// The delivery task. Runs for the life of the gateway; pending deliveries left by a
/// previous run go first. On a shared store it makes this node's deliveries only.
pub async fn run(location: Location, webhooks: Vec<WebhookConfig>, hooks: Arc<Hooks>) {
    let receivers: Arc<HashMap<String, WebhookConfig>> =
        Arc::new(webhooks.into_iter().map(|w| (w.url.clone(), w)).collect());
    let wake = Arc::clone(&hooks.wake);
    let node = hooks.node.clone();
    // The outbox's own connection, opened again when it was lost.
    let conn: Arc<std::sync::Mutex<Option<Db>>> = Arc::new(std::sync::Mutex::new(None));
    let db = |f: Box<dyn FnOnce(&mut Db) + Send>| {
        let conn = Arc::clone(&conn);
        let location = location.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(mut slot) = conn.lock() else {
                return;
            };
            if slot.as_ref().is_none_or(Db::is_lost) {
                match location.open() {
                    Ok(db) => *slot = Some(db),
                    Err(e) => {
                        tracing::error!(error = %e, "webhook outbox unavailable");
                        *slot = None;
                        return;
                    }
                }
            }
            if let Some(db) = slot.as_mut() {
                f(db);
            }
        })
    };
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        let now = millis(SystemTime::now());
        if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
            last_prune = Some(std::time::Instant::now());
            let before = now - KEEP_DELIVERED.as_millis() as i64;
            let _ = db(Box::new(move |c| {
                if let Ok(n) = outbox::prune_delivered(c, before) {
                    if n > 0 {
                        tracing::info!(deliveries = n, "delivered webhook events pruned");
                    }
                }
            }))
            .await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let node = node.clone();
        let _ = db(Box::new(move |c| {
            let mut due = outbox::due(c, &node, now, ROUND).unwrap_or_else(|e| {
                tracing::error!(error = %e, "webhook outbox read failed");
                Vec::new()
            });
            if let Err(e) = outbox::begin_attempts(c, &mut due) {
                tracing::error!(error = %e, "webhook attempts not counted; retrying later");
                due.clear();
            }
            let next = outbox::next_due(c, &node).ok().flatten();
            let _ = tx.send((due, next));
        }))
        .await;
        let Ok((due, next)) = rx.await else {
            // The outbox could not be opened: try again in a while.
            tokio::time::sleep(OUTBOX_RETRY).await;
            continue;
        };
        if due.is_empty() {
            // Sleep until the next retry falls due, a new event is committed, or a minute.
            let wait = next
                .map(|at| Duration::from_millis((at - now).clamp(0, 60_000) as u64))
                .unwrap_or(Duration::from_secs(60));
            let _ = tokio::time::timeout(wait, wake.notified()).await;
            continue;
        }
        let outcomes = deliver_round(due, &receivers).await;
        let _ = db(Box::new(move |c| {
            // Not recorded (the database failing): the deliveries stay pending and are made
            // again, with the same event ids.
            if let Err(e) = outbox::record_attempts(c, &outcomes) {
                tracing::error!(deliveries = outcomes.len(), error = %e, "webhook outcomes not recorded");
            }
        }))
        .await;
    }
}

/// Send one round's deliveries, at most `PER_RECEIVER` at a time to each receiver, and say
/// how each went.
async fn deliver_round(
    due: Vec<Delivery>,
    receivers: &Arc<HashMap<String, WebhookConfig>>,
) -> Vec<(i64, Outcome)> {
    let mut limits: HashMap<String, Arc<tokio::sync::Semaphore>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut outcomes = Vec::with_capacity(due.len());
    for delivery in due {
        let Some(receiver) = receivers.get(&delivery.webhook).cloned() else {
            outcomes.push((
                delivery.id,
                Outcome::Failed {
                    error: "webhook no longer configured".into(),
                },
            ));
            continue;
        };
        let limit = Arc::clone(
            limits
                .entry(delivery.webhook.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_RECEIVER))),
        );
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let id = delivery.id;
            (id, attempt(&receiver, &delivery).await)
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(result) = done {
            outcomes.push(result);
        }
    }
    outcomes
}

/// One attempt at one delivery.
async fn attempt(receiver: &WebhookConfig, delivery: &Delivery) -> Outcome {
    let sent = SystemTime::now();
    let t = sent
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let body = delivery.body.as_bytes();
    let headers = [
        ("content-type", "application/json".to_string()),
        ("callgate-event", delivery.event_type.clone()),
        ("callgate-event-id", delivery.event_id.clone()),
        ("idempotency-key", delivery.event_id.clone()),
        ("callgate-attempt", delivery.attempts.to_string()),
        ("callgate-signature", signature(&receiver.secret, t, body)),
    ];
    let result = crate::http_client::request(
        "POST",
        &receiver.url,
        &headers,
        body.to_vec(),
        Duration::from_millis(receiver.timeout_ms),
        MAX_ANSWER,
    )
    .await;
    let error = match result {
        Ok(r) if (200..300).contains(&r.status) => {
            tracing::debug!(event = %delivery.event_id, kind = %delivery.event_type, "webhook delivered");
            return Outcome::Delivered { at: millis(sent) };
        }
        Ok(r) => format!("HTTP {}", r.status),
        Err(e) => e.to_string(),
    };
    let now = millis(SystemTime::now());
    if now - delivery.created_at >= RETRY_FOR.as_millis() as i64 {
        tracing::error!(event = %delivery.event_id, %error, "webhook delivery failed for good");
        return Outcome::Failed { error };
    }
    let wait = backoff(
        delivery.attempts.saturating_sub(1),
        Duration::from_secs(receiver.max_backoff_seconds),
    );
    tracing::warn!(event = %delivery.event_id, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed");
    Outcome::Retry {
        error,
        next_at: now + wait.as_millis() as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe"), so the HMAC is the standard one.
    #[test]
    fn the_signature_is_hmac_sha256_over_time_dot_body() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The signed text is "<t>.<body>" (value from Python's hmac module).
        assert_eq!(
            signature("Jefe", 12, b"body"),
            "t=12,v1=7a2ce2402de2c5d2be800321a847e14a5fc9fe9ae7839bcdb00a8625ed49b888"
        );
        assert!(signature("Jefe", 12, b"body").starts_with("t=12,v1="));
        assert_ne!(
            signature("Jefe", 12, b"body"),
            signature("Jeff", 12, b"body")
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let max = Duration::from_secs(600);
        assert!(
            backoff(0, max) >= Duration::from_secs(1)
                && backoff(0, max) < Duration::from_millis(1100)
        );
        assert!(backoff(3, max) >= Duration::from_secs(8));
        assert!(backoff(30, max) >= max && backoff(30, max) <= max + max / 10);
    }
}
