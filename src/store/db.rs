//! One connection to the call log, whichever engine holds it: the embedded SQLite file of a
//! single node, or the PostgreSQL a cluster's nodes share. The store's queries are written
//! once, in the SQL both engines read (`?N` placeholders, `ON CONFLICT ... DO UPDATE`), and run
//! through `Db`; only the schema and a connection's setup differ by engine. Both clients
//! block, so a `Db` is used from blocking threads only (the writer's, the readers').

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::StoreError;

/// Where the call log is: opens writer and reader connections.
#[derive(Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<postgres::Config>),
}

impl std::fmt::Debug for Location {
    // The URL's password stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Location::Postgres(config) => write!(
                f,
                "postgres {:?}/{}",
                config.get_hosts(),
                config.get_dbname().unwrap_or("")
            ),
        }
    }
}

impl Location {
    /// The store as configured: `store.database` for SQLite, `store.url` for PostgreSQL
    /// (parsed here, so a bad URL stops the start naming its key).
    pub fn from_config(store: &crate::config::StoreConfig) -> Result<Location, StoreError> {
        match store.backend {
            crate::config::StoreBackend::Sqlite => Ok(Location::Sqlite(store.database.clone())),
            crate::config::StoreBackend::Postgres => {
                let url = store.url.as_deref().unwrap_or_default();
                let config: postgres::Config = url.parse().map_err(|e| StoreError::Url {
                    reason: format!("{e}"),
                })?;
                Ok(Location::Postgres(Box::new(config)))
            }
        }
    }

    /// A connection that writes, the schema brought up to date first.
    pub fn open(&self) -> Result<Db, StoreError> {
        match self {
            Location::Sqlite(path) => super::open(path).map(Db::Sqlite),
            Location::Postgres(config) => {
                let mut db = Db::Postgres(Box::new(Pg::connect(config)?));
                super::schema::migrate(&mut db)?;
                Ok(db)
            }
        }
    }

    /// A connection for queries beside the writer (the schema is already migrated: the
    /// gateway opens the store with `open` at start).
    pub fn open_reader(&self) -> Result<Db, StoreError> {
        match self {
            Location::Sqlite(path) => super::open_reader(path).map(Db::Sqlite),
            Location::Postgres(config) => Ok(Db::Postgres(Box::new(Pg::connect(config)?))),
        }
    }

    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }
}

/// A PostgreSQL connection with its prepared statements (a statement costs a round trip to
/// prepare; the store runs the same few hundred times a second).
pub struct Pg {
    /// Always there but while being dropped (see `Drop`).
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

/// Prepared statements kept per connection at most (the calls page's filters make a few
/// dozen shapes; past this the cache starts over rather than grow).
const STATEMENT_CACHE: usize = 256;

impl Pg {
    fn connect(config: &postgres::Config) -> Result<Pg, StoreError> {
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("callgate");
        let client = config.connect(postgres::NoTls)?;
        Ok(Pg {
            client: Some(client),
            statements: HashMap::new(),
        })
    }

    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("a connection has its client until dropped")
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client().prepare(&placeholders(sql))?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

impl Drop for Pg {
    /// The blocking client closes its connection on a runtime of its own, which cannot start
    /// on an async worker (where a reader pool or a task holding a connection may be dropped
    /// at shutdown): there it is closed on a thread of its own.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// SQLite's `?N` and `?` placeholders as PostgreSQL's `$N` (a bare `?` takes the next number,
/// as in SQLite). The store's SQL has no `?` inside string literals.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '?' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        if digits.is_empty() {
            digits = next.to_string();
        }
        next = digits.parse::<usize>().unwrap_or(next) + 1;
        out.push('$');
        out.push_str(&digits);
    }
    out
}

/// One connection to the call log.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A query argument.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

/// Arguments for `Db::execute` and `Db::query`, each taken by reference: `args![id, at]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        &[$($crate::store::db::ToArg::to_arg(&$a)),*]
    };
}
pub(crate) use args;

/// A value that can be a query argument.
pub trait ToArg {
    fn to_arg(&self) -> Arg<'_>;
}

impl ToArg for i64 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(*self)
    }
}
impl ToArg for u32 {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Int(i64::from(*self))
    }
}
impl ToArg for Option<i64> {
    fn to_arg(&self) -> Arg<'_> {
        self.map_or(Arg::Null, Arg::Int)
    }
}
impl ToArg for str {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for String {
    fn to_arg(&self) -> Arg<'_> {
        Arg::Text(self)
    }
}
impl ToArg for Option<String> {
    fn to_arg(&self) -> Arg<'_> {
        self.as_deref().map_or(Arg::Null, Arg::Text)
    }
}
impl ToArg for Option<&str> {
    fn to_arg(&self) -> Arg<'_> {
        self.map_or(Arg::Null, Arg::Text)
    }
}
impl<T: ToArg + ?Sized> ToArg for &T {
    fn to_arg(&self) -> Arg<'_> {
        (**self).to_arg()
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Arg::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Arg::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Arg::Int(v) => v.to_sql(ty, out),
            Arg::Text(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8 | Type::INT4 | Type::INT2 | Type::TEXT | Type::VARCHAR | Type::BPCHAR
        )
    }

    to_sql_checked!();
}

/// One result row.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    pub fn get<T: Column>(&self, i: usize) -> Result<T, StoreError> {
        match self {
            Row::Sqlite(row) => T::from_sqlite(row, i),
            Row::Postgres(row) => T::from_postgres(row, i),
        }
    }
}

/// A value a column can be read as.
pub trait Column: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError>;
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError>;
}

/// An integer column of any width (counts are BIGINT in PostgreSQL, a few columns may be
/// narrower), as i64.
fn pg_int(row: &postgres::Row, i: usize) -> Result<Option<i64>, StoreError> {
    let ty = row.columns().get(i).map(|c| c.type_().clone());
    Ok(match ty {
        Some(Type::INT4) => row.try_get::<_, Option<i32>>(i)?.map(i64::from),
        Some(Type::INT2) => row.try_get::<_, Option<i16>>(i)?.map(i64::from),
        _ => row.try_get::<_, Option<i64>>(i)?,
    })
}

impl Column for Option<i64> {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok(row.get(i)?)
    }
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        pg_int(row, i)
    }
}

impl Column for i64 {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok(row.get(i)?)
    }
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        pg_int(row, i)?.ok_or(StoreError::Null { column: i })
    }
}

impl Column for u32 {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok(row.get(i)?)
    }
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        let v = i64::from_postgres(row, i)?;
        u32::try_from(v).map_err(|_| StoreError::Null { column: i })
    }
}

impl Column for Option<String> {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok(row.get(i)?)
    }
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        Ok(row.try_get(i)?)
    }
}

impl Column for String {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, StoreError> {
        Ok(row.get(i)?)
    }
    fn from_postgres(row: &postgres::Row, i: usize) -> Result<Self, StoreError> {
        Option::<String>::from_postgres(row, i)?.ok_or(StoreError::Null { column: i })
    }
}

impl Db {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// The connection is gone (PostgreSQL restarted or the network dropped it): open another.
    pub fn is_lost(&self) -> bool {
        match self {
            Db::Sqlite(_) => false,
            Db::Postgres(pg) => pg.client.as_ref().is_none_or(postgres::Client::is_closed),
        }
    }

    /// Statements with no arguments and no results (schema, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(pg) => Ok(pg.client().batch_execute(sql)?),
        }
    }

    /// Rows changed.
    pub fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<usize, StoreError> {
        match self {
            Db::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args.iter()))?),
            Db::Postgres(pg) => {
                let statement = pg.statement(sql)?;
                let params: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                Ok(pg.client().execute(&statement, &params)? as usize)
            }
        }
    }

    /// Every row, each made into a `T`.
    pub fn query<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Db::Postgres(pg) => {
                let statement = pg.statement(sql)?;
                let params: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                pg.client()
                    .query(&statement, &params)?
                    .iter()
                    .map(|row| f(&Row::Postgres(row)))
                    .collect()
            }
        }
    }

    /// The first row, if any.
    pub fn query_one<T>(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
        f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.query(sql, args, f)?.into_iter().next())
    }

    /// Run `f` in one transaction: all of it is committed, or none when it fails. SQLite's
    /// takes the write lock at its start (`BEGIN IMMEDIATE`): the call log's writer and the
    /// webhook delivery task both write, and a transaction that read first and wrote later
    /// would fail at once with "database is locked" whenever the other had committed in
    /// between, where this one waits its turn (the busy timeout).
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.batch(match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        })?;
        match f(self) {
            Ok(value) => {
                self.batch("COMMIT")?;
                Ok(value)
            }
            Err(e) => {
                // Nothing more can be done when the rollback fails too: the connection is
                // gone, and the transaction with it.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Idle read connections kept for reuse at most.
const IDLE_READERS: usize = 4;
/// Read connections open at once at most: a burst of API requests waits its turn rather than
/// open a connection each (PostgreSQL serves 100 by default, for every node of the cluster).
const MAX_READERS: usize = 8;
/// How long a read waits for a connection before it gives up (the API answers 503).
const READER_WAIT: Duration = Duration::from_secs(5);

/// Read connections to the call log, reused: opening one costs more than most reads (a
/// PostgreSQL connection far more). Blocking: used from blocking threads.
pub struct Readers {
    location: Location,
    idle: std::sync::Mutex<Vec<Db>>,
    /// Connections lent out now, and the wake-up for a read waiting for one.
    lent: std::sync::Mutex<usize>,
    returned: std::sync::Condvar,
}

impl Readers {
    pub fn new(location: Location) -> Readers {
        Readers {
            location,
            idle: std::sync::Mutex::new(Vec::new()),
            lent: std::sync::Mutex::new(0),
            returned: std::sync::Condvar::new(),
        }
    }

    /// Wait for a turn among the `MAX_READERS` (false: none came in `READER_WAIT`).
    fn take_turn(&self) -> bool {
        let Ok(lent) = self.lent.lock() else {
            return false;
        };
        let waited = self
            .returned
            .wait_timeout_while(lent, READER_WAIT, |lent| *lent >= MAX_READERS);
        match waited {
            Ok((mut lent, timeout)) if !timeout.timed_out() || *lent < MAX_READERS => {
                *lent += 1;
                true
            }
            _ => false,
        }
    }

    fn end_turn(&self) {
        if let Ok(mut lent) = self.lent.lock() {
            *lent = lent.saturating_sub(1);
        }
        self.returned.notify_one();
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Run `f` on an idle connection, or a new one when none is idle. A connection that was
    /// lost meanwhile is not kept.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.take_turn() {
            return Err(StoreError::Busy);
        }
        let result = self.read_in_turn(f);
        self.end_turn();
        result
    }

    fn read_in_turn<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut db = match idle {
            Some(db) if !db.is_lost() => db,
            _ => self.location.open_reader()?,
        };
        let result = f(&mut db);
        if !db.is_lost() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < IDLE_READERS {
                    idle.push(db);
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads beyond `MAX_READERS` wait for a turn; none is refused while turns come back.
    #[test]
    fn readers_are_bounded_and_take_turns() {
        let dir = std::env::temp_dir().join(format!("cg-readers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("r.db");
        drop(crate::store::open(&path).expect("created"));
        let readers = std::sync::Arc::new(Readers::new(Location::Sqlite(path)));
        let busiest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..3 * MAX_READERS)
            .map(|_| {
                let (readers, busiest, now) = (readers.clone(), busiest.clone(), now.clone());
                std::thread::spawn(move || {
                    readers.read(|db| {
                        use std::sync::atomic::Ordering::SeqCst;
                        let at_once = now.fetch_add(1, SeqCst) + 1;
                        busiest.fetch_max(at_once, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        now.fetch_sub(1, SeqCst);
                        crate::store::status_counts(db)
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("read in its turn");
        }
        let busiest = busiest.load(std::sync::atomic::Ordering::SeqCst);
        assert!(busiest <= MAX_READERS, "{busiest} at once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE x = ?1 AND y = ?2 OR z = ?1"),
            "SELECT a FROM t WHERE x = $1 AND y = $2 OR z = $1"
        );
        assert_eq!(
            placeholders("SELECT a FROM t WHERE s IN (?, ?) AND a = ? LIMIT ?"),
            "SELECT a FROM t WHERE s IN ($1, $2) AND a = $3 LIMIT $4"
        );
        assert_eq!(placeholders("VALUES (?5, ?6, ?6)"), "VALUES ($5, $6, $6)");
    }
}
