//! One agent, one node: in a cluster, the node an agent signs in on claims the agent in the
//! shared store (`agent_claims`: the agent, the node, a lease the node refreshes) and tells the
//! other nodes through PostgreSQL's `NOTIFY`; a node that had the agent signed in ends that
//! session (close code 4409, as a second sign-in on one node does) when another node claims
//! it. A notification missed while a connection was down is caught at the next refresh, which
//! also reads who holds this node's agents.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc;

use crate::store::db::{args, Db};
use crate::store::{Location, StoreError};

/// The notification channel claims are announced on.
const CHANNEL: &str = "callgate_claims";
/// How long a claim holds without a refresh (a node that died lets its agents go then).
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a node refreshes its claims and checks them.
const REFRESH: Duration = Duration::from_secs(5);
/// How long the listener waits before opening a lost connection again.
const RECONNECT: Duration = Duration::from_secs(2);
/// Claims and releases queued at most (one per sign-in and sign-out).
const QUEUE: usize = 1024;

/// What the signalling task tells the claim task.
#[derive(Debug)]
pub enum ClaimOp {
    /// The agent signed in here: claim it, taking it from any other node.
    Claim(String),
    /// The agent's last connection here closed.
    Release(String),
}

/// The notification's payload: which agent, claimed by which node.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claimed {
    agent: String,
    node: String,
}

/// Start claiming for `node` on the store at `location` (PostgreSQL). Returns where to send
/// claims and releases, and where the agents another node claimed arrive.
pub fn start(location: Location, node: String) -> (mpsc::Sender<ClaimOp>, mpsc::Receiver<String>) {
    let (ops_tx, ops_rx) = mpsc::channel(QUEUE);
    let (lost_tx, lost_rx) = mpsc::channel(QUEUE);
    let (notified_tx, notified_rx) = mpsc::channel(QUEUE);
    if let Location::Postgres(config) = &location {
        let (config, node) = ((**config).clone(), node.clone());
        // The blocking client's notifications are read on a thread of their own.
        let _ = std::thread::Builder::new()
            .name("claims-listen".into())
            .spawn(move || listen(config, node, notified_tx));
    }
    tokio::spawn(run(
        location,
        node,
        ops_rx,
        Channels {
            notified: notified_rx,
            lost: lost_tx,
        },
    ));
    (ops_tx, lost_rx)
}

fn now_ms() -> i64 {
    crate::store::millis(std::time::SystemTime::now())
}

fn claim(db: &mut Db, node: &str, agent: &str) -> Result<(), StoreError> {
    let expires = now_ms() + LEASE.as_millis() as i64;
    let payload = serde_json::to_string(&Claimed {
        agent: agent.into(),
        node: node.into(),
    })
    .unwrap_or_default();
    db.transaction(|tx| {
        tx.execute(
            "INSERT INTO agent_claims (agent_id, node, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(agent_id) DO UPDATE SET node = excluded.node,
                expires_at = excluded.expires_at",
            args![agent, node, expires],
        )?;
        // Delivered at commit to every node listening (this one ignores its own).
        tx.execute("SELECT pg_notify(?1, ?2)", args![CHANNEL, payload])?;
        Ok(())
    })
}

/// Refresh this node's claims, make those that never reached the store, and return the held
/// agents another node has claimed meanwhile.
fn refresh(db: &mut Db, node: &str, held: &HashSet<String>) -> Result<Vec<String>, StoreError> {
    let expires = now_ms() + LEASE.as_millis() as i64;
    db.execute(
        "UPDATE agent_claims SET expires_at = ?2 WHERE node = ?1",
        args![node, expires],
    )?;
    let holders = db.query("SELECT agent_id, node FROM agent_claims", &[], |r| {
        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
    })?;
    let mut elsewhere = Vec::new();
    let mut written = HashSet::new();
    for (agent, holder) in holders {
        if !held.contains(&agent) {
            continue;
        }
        if holder == node {
            written.insert(agent);
        } else {
            elsewhere.push(agent);
        }
    }
    for agent in held {
        if !written.contains(agent) && !elsewhere.contains(agent) {
            claim(db, node, agent)?;
        }
    }
    Ok(elsewhere)
}

/// Run `f` on the claim task's connection on a blocking thread, opening it first when it is
/// not open; `None` when the store cannot be reached.
async fn with_db<T: Send + 'static>(
    location: &Location,
    conn: &Arc<Mutex<Option<Db>>>,
    f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
) -> Option<T> {
    let (location, conn) = (location.clone(), Arc::clone(conn));
    let done = tokio::task::spawn_blocking(move || {
        let mut slot = conn.lock().ok()?;
        if slot.as_ref().is_none_or(Db::is_lost) {
            *slot = Some(
                location
                    .open_reader()
                    .map_err(|e| {
                        tracing::warn!(error = %e, "agent claims: store unreachable");
                    })
                    .ok()?,
            );
        }
        match slot.as_mut().map(f)? {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "agent claims: store write failed");
                None
            }
        }
    })
    .await;
    done.ok().flatten()
}

/// The claim task's other ends: agents another node announced it claimed (from the
/// listener), and agents this node lost (to the signalling task).
struct Channels {
    notified: mpsc::Receiver<String>,
    lost: mpsc::Sender<String>,
}

/// The claim task's state: its connection and the agents it holds.
struct Claims {
    location: Location,
    node: String,
    conn: Arc<Mutex<Option<Db>>>,
    held: HashSet<String>,
}

impl Claims {
    async fn apply(&mut self, op: ClaimOp) {
        let node = self.node.clone();
        match op {
            ClaimOp::Claim(agent) => {
                self.held.insert(agent.clone());
                // Not written (the store is down): the next refresh makes it.
                with_db(&self.location, &self.conn, move |db| {
                    claim(db, &node, &agent)
                })
                .await;
            }
            ClaimOp::Release(agent) => {
                self.held.remove(&agent);
                with_db(&self.location, &self.conn, move |db| {
                    db.execute(
                        "DELETE FROM agent_claims WHERE agent_id = ?1 AND node = ?2",
                        args![agent, node],
                    )
                })
                .await;
            }
        }
    }

    /// Whether another node holds `agent` now, by the store (a notification may be older
    /// than this node's own claim of the agent since).
    async fn held_elsewhere(&self, agent: String) -> bool {
        let node = self.node.clone();
        with_db(&self.location, &self.conn, move |db| {
            db.query_one(
                "SELECT node FROM agent_claims WHERE agent_id = ?1",
                args![agent],
                |r| r.get::<String>(0),
            )
        })
        .await
        .flatten()
        .is_some_and(|holder| holder != node)
    }
}

async fn run(
    location: Location,
    node: String,
    mut ops: mpsc::Receiver<ClaimOp>,
    channels: Channels,
) {
    let Channels { mut notified, lost } = channels;
    let mut claims = Claims {
        location,
        node,
        conn: Arc::new(Mutex::new(None)),
        held: HashSet::new(),
    };
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => match op {
                Some(op) => claims.apply(op).await,
                None => break,
            },
            Some(agent) = notified.recv() => {
                // This node's own sign-ins queued meanwhile are written first: the store then
                // says who holds the agent last.
                while let Ok(op) = ops.try_recv() {
                    claims.apply(op).await;
                }
                if claims.held.contains(&agent) && claims.held_elsewhere(agent.clone()).await {
                    claims.held.remove(&agent);
                    let _ = lost.send(agent).await;
                }
            }
            _ = tick.tick() => {
                let (node, snapshot) = (claims.node.clone(), claims.held.clone());
                let elsewhere = with_db(&claims.location, &claims.conn, move |db| {
                    refresh(db, &node, &snapshot)
                })
                .await
                .unwrap_or_default();
                for agent in elsewhere {
                    claims.held.remove(&agent);
                    let _ = lost.send(agent).await;
                }
            }
        }
    }
    // Shutting down: this node's agents are free at once rather than at the lease's end.
    let node = claims.node.clone();
    with_db(&claims.location, &claims.conn, move |db| {
        db.execute("DELETE FROM agent_claims WHERE node = ?1", args![node])
    })
    .await;
}

/// Listen for claims (a blocking thread): an agent another node claimed is sent on
/// `notified`.
/// Opens a lost connection again; what was announced meanwhile the next refresh finds.
fn listen(config: postgres::Config, node: String, notified: mpsc::Sender<String>) {
    loop {
        let mut client = match config.connect(postgres::NoTls) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(error = %e, "agent claims: cannot listen");
                std::thread::sleep(RECONNECT);
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "agent claims: cannot listen");
            std::thread::sleep(RECONNECT);
            continue;
        }
        let mut notifications = client.notifications();
        let mut iter = notifications.blocking_iter();
        loop {
            match iter.next() {
                Ok(Some(notification)) => {
                    let Ok(claimed) = serde_json::from_str::<Claimed>(notification.payload())
                    else {
                        continue;
                    };
                    if claimed.node != node && notified.blocking_send(claimed.agent).is_err() {
                        return; // the gateway is stopping
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "agent claims: listening connection lost");
                    break;
                }
            }
        }
        drop(iter);
        drop(notifications);
        drop(client);
        std::thread::sleep(RECONNECT);
    }
}
