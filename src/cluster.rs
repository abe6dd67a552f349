//! Who holds what in a cluster, kept in the shared store.
//!
//! One agent, one node: the node an agent signs in on claims the agent (`agent_claims`) and
//! tells the other nodes through PostgreSQL's `NOTIFY`; a node that had the agent signed in
//! ends that session (close code 4409, as a second sign-in on one node does) when another node
//! claims it. A notification missed while a connection was down is caught at the next refresh,
//! which also reads who holds this node's agents.
//!
//! A node's loss: each node holds a lease (`node_leases`) it refreshes six times a lease. When
//! a node's lease lapses (killed, or cut off from the store), the first survivor to notice
//! takes it over, exactly once: the dead node's live calls end as `failed` (their recordings'
//! headers brought up to their data when the directory is shared), its agents are free, and
//! its pending webhook deliveries become the survivor's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc;

use crate::store::db::{args, Db};
use crate::store::{Hooks, Location, StoreError};

/// The notification channel claims are announced on.
const CHANNEL: &str = "callgate_claims";
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

/// This node in the cluster: its name, where browsers reach it, its lease, the outbox
/// settings events of calls it takes over are queued with, and the live nodes it keeps up to
/// date.
pub struct Membership {
    pub node: String,
    pub url: String,
    pub lease: Duration,
    pub hooks: Arc<Hooks>,
    pub nodes: Nodes,
}

/// A live node of the cluster as pages are told of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub node: String,
    pub url: String,
}

/// The cluster's live nodes (their leases current), read from the store at each refresh;
/// shared with the API, which gives them to pages and names the node of each call.
#[derive(Debug, Clone, Default)]
pub struct Nodes(Arc<RwLock<NodeList>>);

#[derive(Debug, Default)]
struct NodeList {
    live: Vec<NodeInfo>,
    /// Every node URL seen live since this node started: a page keeps its first node's
    /// origin after that node is lost, and still calls this node's API from it.
    known: HashSet<String>,
}

/// Node URLs remembered at most (a cluster has a handful of nodes).
const KNOWN_ORIGINS: usize = 256;

impl Nodes {
    /// Starting with this node alone, until the first refresh reads the others.
    pub fn new(me: NodeInfo) -> Nodes {
        let nodes = Nodes::default();
        nodes.set(vec![me]);
        nodes
    }

    pub fn live(&self) -> Vec<NodeInfo> {
        self.0.read().map(|n| n.live.clone()).unwrap_or_default()
    }

    /// Where a live node is reached; None for a dead or unknown one.
    pub fn url_of(&self, node: &str) -> Option<String> {
        let nodes = self.0.read().ok()?;
        let found = nodes.live.iter().find(|n| n.node == node);
        found.map(|n| n.url.clone())
    }

    /// Whether `origin` is a cluster node's, live now or seen live before (the pages of
    /// every node may call this one's API).
    pub fn is_origin(&self, origin: &str) -> bool {
        let origin = origin_key(origin);
        self.0
            .read()
            .is_ok_and(|nodes| nodes.known.contains(&origin))
    }

    fn set(&self, live: Vec<NodeInfo>) {
        if let Ok(mut nodes) = self.0.write() {
            for node in &live {
                if nodes.known.len() < KNOWN_ORIGINS {
                    nodes.known.insert(origin_key(&node.url));
                }
            }
            nodes.live = live;
        }
    }
}

/// An origin as browsers send it in `Origin`: scheme and host in lower case, no default port,
/// no trailing `/` (a node's configured URL may be written otherwise).
fn origin_key(url: &str) -> String {
    let url = url.trim_end_matches('/').to_ascii_lowercase();
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if url.starts_with(scheme) {
            if let Some(bare) = url.strip_suffix(port) {
                return bare.to_string();
            }
        }
    }
    url
}

/// Start holding this node's lease and claims on the store at `location` (PostgreSQL).
/// Returns where to send claims and releases, and where the agents another node claimed
/// arrive.
pub fn start(
    location: Location,
    member: Membership,
) -> (mpsc::Sender<ClaimOp>, mpsc::Receiver<String>) {
    let node = member.node.clone();
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
        member,
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

fn claim(db: &mut Db, node: &str, agent: &str, lease: Duration) -> Result<(), StoreError> {
    let expires = now_ms() + lease.as_millis() as i64;
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

/// Refresh this node's lease and claims, make the claims that never reached the store, and
/// return the held agents another node has claimed meanwhile.
fn refresh(
    db: &mut Db,
    me: &NodeInfo,
    held: &HashSet<String>,
    lease: Duration,
) -> Result<Vec<String>, StoreError> {
    let node = me.node.as_str();
    let expires = now_ms() + lease.as_millis() as i64;
    db.execute(
        "INSERT INTO node_leases (node, alive_until, url) VALUES (?1, ?2, ?3)
         ON CONFLICT(node) DO UPDATE SET alive_until = excluded.alive_until,
            url = excluded.url",
        args![node, expires, me.url.as_str()],
    )?;
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
            claim(db, node, agent, lease)?;
        }
    }
    Ok(elsewhere)
}

/// The nodes whose lease is current, by name.
fn live_nodes(db: &mut Db) -> Result<Vec<NodeInfo>, StoreError> {
    db.query(
        "SELECT node, url FROM node_leases WHERE alive_until >= ?1 AND url IS NOT NULL
         ORDER BY node",
        args![now_ms()],
        |r| {
            Ok(NodeInfo {
                node: r.get::<String>(0)?,
                url: r.get::<String>(1)?,
            })
        },
    )
}

/// Take over the nodes whose lease lapsed; each goes to the one survivor whose delete of its
/// lease row finds it (the others' wait on the row and find nothing). Returns each node taken
/// over with how many live calls it left.
fn take_over_lapsed(
    db: &mut Db,
    me: &str,
    hooks: &Hooks,
) -> Result<Vec<(String, usize)>, StoreError> {
    let now = now_ms();
    let lapsed = db.query(
        "SELECT node FROM node_leases WHERE alive_until < ?1 AND node != ?2",
        args![now, me],
        |r| r.get::<String>(0),
    )?;
    let mut taken = Vec::new();
    for node in lapsed {
        let taken_over = db.transaction(|tx| {
            let gone = tx.execute(
                "DELETE FROM node_leases WHERE node = ?1 AND alive_until < ?2",
                args![node, now],
            )?;
            if gone == 0 {
                return Ok(None); // another survivor took it, or it came back
            }
            let recordings = crate::store::recordings_left_by(tx, &node)?;
            let ended = crate::store::end_calls_of(tx, hooks, &node, now)?;
            tx.execute("DELETE FROM agent_claims WHERE node = ?1", args![node])?;
            tx.execute(
                "UPDATE webhook_deliveries SET node = ?2 WHERE node = ?1 AND status = 'pending'",
                args![node, me],
            )?;
            Ok(Some((ended, recordings)))
        })?;
        let Some((ended, recordings)) = taken_over else {
            continue;
        };
        // What its writers left behind the data, where this node can reach the files (the
        // survivor that took the node over, only).
        for path in recordings.iter().filter(|p| p.exists()) {
            if let Err(e) = crate::media::recorder::repair(path) {
                tracing::warn!(path = %path.display(), error = %e, "recording of a dead node not repaired");
            }
        }
        taken.push((node, ended));
    }
    Ok(taken)
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
                    .open()
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
    member: Membership,
    conn: Arc<Mutex<Option<Db>>>,
    held: HashSet<String>,
}

impl Claims {
    async fn apply(&mut self, op: ClaimOp) {
        let (node, lease) = (self.member.node.clone(), self.member.lease);
        match op {
            ClaimOp::Claim(agent) => {
                self.held.insert(agent.clone());
                // Not written (the store is down): the next refresh makes it.
                with_db(&self.location, &self.conn, move |db| {
                    claim(db, &node, &agent, lease)
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
        let node = self.member.node.clone();
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

    /// Refresh, then take over the nodes that lapsed; the agents lost to other nodes.
    async fn refresh(&mut self) -> Vec<String> {
        let me = NodeInfo {
            node: self.member.node.clone(),
            url: self.member.url.clone(),
        };
        let (snapshot, lease) = (self.held.clone(), self.member.lease);
        let hooks = Arc::clone(&self.member.hooks);
        let done = with_db(&self.location, &self.conn, move |db| {
            let elsewhere = refresh(db, &me, &snapshot, lease)?;
            let taken = take_over_lapsed(db, &me.node, &hooks)?;
            Ok((elsewhere, taken, live_nodes(db)?))
        })
        .await;
        let Some((elsewhere, taken, live)) = done else {
            return Vec::new();
        };
        self.member.nodes.set(live);
        for (node, calls) in &taken {
            tracing::warn!(%node, calls, "a node's lease lapsed: its live calls ended as failed here");
        }
        if !taken.is_empty() {
            self.member.hooks.wake.notify_one();
        }
        for agent in &elsewhere {
            self.held.remove(agent);
        }
        elsewhere
    }
}

async fn run(
    location: Location,
    member: Membership,
    mut ops: mpsc::Receiver<ClaimOp>,
    channels: Channels,
) {
    let Channels { mut notified, lost } = channels;
    let refresh_every = member.lease / 6;
    let mut claims = Claims {
        location,
        member,
        conn: Arc::new(Mutex::new(None)),
        held: HashSet::new(),
    };
    let mut tick = tokio::time::interval(refresh_every);
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
                for agent in claims.refresh().await {
                    let _ = lost.send(agent).await;
                }
            }
        }
    }
    // Shutting down (every call ended first): this node's agents are free at once rather than
    // at the lease's end, and no survivor need take it over.
    let node = claims.member.node.clone();
    with_db(&claims.location, &claims.conn, move |db| {
        db.execute("DELETE FROM agent_claims WHERE node = ?1", args![node])?;
        db.execute("DELETE FROM node_leases WHERE node = ?1", args![node])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_origin_matches_however_its_url_was_written() {
        let nodes = Nodes::new(NodeInfo {
            node: "a".into(),
            url: "HTTPS://A.Example.com:443/".into(),
        });
        assert!(nodes.is_origin("https://a.example.com"));
        nodes.set(vec![NodeInfo {
            node: "b".into(),
            url: "http://10.0.0.4:8080".into(),
        }]);
        assert!(nodes.is_origin("http://10.0.0.4:8080"));
        assert!(nodes.is_origin("https://a.example.com"), "seen live once");
        assert!(!nodes.is_origin("http://10.0.0.4"), "another port");
        assert!(!nodes.is_origin("https://10.0.0.4:8080"), "another scheme");
        assert!(!nodes.is_origin("null"));
        assert_eq!(nodes.url_of("a"), None, "not live now");
    }
}
