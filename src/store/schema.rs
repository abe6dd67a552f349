//! The call log's schema, version by version, on both engines, and bringing a database up to
//! date.

use super::db::{args, Db};
use super::StoreError;

/// The schema on SQLite, one entry per version; `PRAGMA user_version` says how many have run.
/// PostgreSQL runs the same list, each rewritten in its types (`for_postgres`).
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
    // 4: the node each call lives on, and each delivery's sender (`[cluster] node`; none on a
    // single node). A node closes only its own orphans and delivers only its own events.
    "ALTER TABLE calls ADD COLUMN node TEXT;
     ALTER TABLE webhook_deliveries ADD COLUMN node TEXT;",
    // 5: which node holds each signed-in agent in a cluster, and until when each node is
    // alive (`cluster.rs`).
    "CREATE TABLE agent_claims (
        agent_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE TABLE node_leases (
        node TEXT PRIMARY KEY,
        alive_until INTEGER NOT NULL
     );",
    // 6: where browsers reach each node (`http.public_url`): pages fail over to the live ones,
    // and a supervisor monitors a call on its node.
    "ALTER TABLE node_leases ADD COLUMN url TEXT;",
];

/// A migration of `MIGRATIONS` as PostgreSQL runs it: the same tables and columns in its
/// types. SQLite's INTEGER is 64 bits (BIGINT) and its INTEGER PRIMARY KEY a row id
/// (BIGSERIAL); `segments` gets the `rowid` SQLite gives every table implicitly (two segments
/// of a call may start in the same millisecond; insertion order breaks the tie).
fn for_postgres(sql: &str) -> String {
    sql.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace(
            "CREATE TABLE segments (",
            "CREATE TABLE segments (\n        rowid BIGSERIAL PRIMARY KEY,",
        )
}

/// The key of the PostgreSQL advisory lock nodes take while migrating, so that two nodes
/// starting at once do not both run a migration.
const MIGRATION_LOCK: i64 = 0x6361_6c6c_6761_7465; // "callgate"

/// Bring the schema up to date, each version in its own transaction.
pub(super) fn migrate(db: &mut Db) -> Result<(), StoreError> {
    match db {
        Db::Sqlite(conn) => {
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
                db.transaction(|tx| {
                    tx.batch(sql)?;
                    tx.batch(&format!("PRAGMA user_version = {}", i + 1))
                })?;
                tracing::info!(version = i + 1, "database migrated");
            }
            Ok(())
        }
        Db::Postgres(_) => {
            db.execute("SELECT pg_advisory_lock(?1)", args![MIGRATION_LOCK])?;
            let result = migrate_postgres(db);
            db.execute("SELECT pg_advisory_unlock(?1)", args![MIGRATION_LOCK])?;
            result
        }
    }
}

fn migrate_postgres(db: &mut Db) -> Result<(), StoreError> {
    db.batch("CREATE TABLE IF NOT EXISTS callgate_schema (version BIGINT NOT NULL)")?;
    let version: i64 = db
        .query_one("SELECT MAX(version) FROM callgate_schema", &[], |r| {
            r.get::<Option<i64>>(0)
        })?
        .flatten()
        .unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let version = (i + 1) as i64;
        db.transaction(|tx| {
            tx.batch(&for_postgres(sql))?;
            tx.execute(
                "INSERT INTO callgate_schema (version) VALUES (?1)",
                args![version],
            )
            .map(|_| ())
        })?;
        tracing::info!(version, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's schema has no 32-bit column (times are milliseconds) and every row id and
    /// the segments' order survive the rewrite.
    #[test]
    fn postgres_runs_the_same_migrations_in_its_types() {
        let all: String = MIGRATIONS.iter().map(|m| for_postgres(m)).collect();
        assert!(!all.contains("INTEGER"), "{all}");
        assert_eq!(all.matches("BIGSERIAL PRIMARY KEY").count(), 3, "{all}");
        assert!(all.contains("CREATE TABLE segments (\n        rowid BIGSERIAL PRIMARY KEY,"));
        assert!(all.contains("created_at BIGINT NOT NULL"));
    }
}
