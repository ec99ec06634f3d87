//! The PostgreSQL connection of the journal: where to connect (URL, password, TLS),
//! prepared statements, reconnection, the schema version table and the advisory lock
//! that picks the one instance running the watcher.

use std::sync::Arc;
use std::time::Duration;

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::sql::{Row, StatementCache, Val, dollar_placeholders};

/// The first half of the advisory lock held by the instance that runs the notice
/// watcher and the maintainers' digest (`ab-w` in ASCII); the second half is a hash of
/// the journal's schema, so journals in different schemas of one database do not share
/// a watcher.
pub const WATCHER_LOCK: i32 = 0x6162_2d77;
/// The advisory lock key held while the schema is migrated, so two instances starting
/// at once do not both migrate.
const MIGRATION_LOCK: i64 = 0x6162_2d6d_6967_7261;

/// Where the PostgreSQL journal is and how to reach it.
#[derive(Clone)]
pub struct PgTarget {
    /// Parsed URL with the password added.
    pub config: postgres::Config,
    /// rustls client config; `None` for a plain-text connection (loopback only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The URL without any password, for messages.
    pub display: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.display)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgTarget {
    /// Opens a new connection.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                )),
            None => self.config.connect(NoTls),
        }
    }
}

/// One live connection with its prepared statements.
pub struct Pg {
    client: Client,
    statements: StatementCache,
    /// True while this connection holds the watcher's lock ([`WATCHER_LOCK`]).
    pub(super) leading: bool,
}

impl Pg {
    /// Wraps a fresh connection.
    pub(super) fn new(client: Client) -> Pg {
        Pg {
            client,
            statements: StatementCache::new(),
            leading: false,
        }
    }

    /// True once the connection is gone for good (the server closed it or it broke).
    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client.prepare(&dollar_placeholders(sql))?;
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    /// Runs a statement; the number of rows changed.
    pub(super) fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, postgres::Error> {
        let stmt = self.prepared(sql)?;
        let refs = param_refs(params);
        self.client.execute(&stmt, &refs)
    }

    /// Runs a query; every row.
    pub(super) fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>, postgres::Error> {
        let stmt = self.prepared(sql)?;
        let refs = param_refs(params);
        let rows = self.client.query(&stmt, &refs)?;
        rows.iter().map(read_row).collect()
    }

    /// Runs statements without parameters.
    pub(super) fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    /// Takes the watcher's lock ([`WATCHER_LOCK`]) if free (or already ours); true while this connection
    /// holds it. The lock goes with the connection: an instance that dies or loses the
    /// database loses it, and another takes it.
    pub(super) fn try_lead(&mut self) -> Result<bool, postgres::Error> {
        if self.leading {
            // Still ours as long as the connection lives: prove it does.
            self.client.batch_execute("SELECT 1")?;
            return Ok(true);
        }
        let row = self.client.query_one(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
            &[&WATCHER_LOCK],
        )?;
        self.leading = row.get::<_, bool>(0);
        Ok(self.leading)
    }
}

fn param_refs(params: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    const NULL: Option<String> = None;
    params
        .iter()
        .map(|v| match v {
            Val::Text(t) => t as &(dyn ToSql + Sync),
            Val::Int(n) => n as &(dyn ToSql + Sync),
            Val::Real(n) => n as &(dyn ToSql + Sync),
            Val::Blob(b) => b as &(dyn ToSql + Sync),
            Val::Null => &NULL as &(dyn ToSql + Sync),
        })
        .collect()
}

fn read_row(row: &postgres::Row) -> Result<Row, postgres::Error> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let v = if *ty == Type::INT8 {
            Val::Int(row.try_get(i)?)
        } else if *ty == Type::INT4 {
            Val::Int(row.try_get::<_, Option<i32>>(i)?.map(i64::from))
        } else if *ty == Type::INT2 {
            Val::Int(row.try_get::<_, Option<i16>>(i)?.map(i64::from))
        } else if *ty == Type::BOOL {
            Val::Int(row.try_get::<_, Option<bool>>(i)?.map(i64::from))
        } else if *ty == Type::FLOAT8 {
            Val::Real(row.try_get(i)?)
        } else if *ty == Type::FLOAT4 {
            Val::Real(row.try_get::<_, Option<f32>>(i)?.map(f64::from))
        } else if *ty == Type::BYTEA {
            Val::Blob(row.try_get(i)?)
        } else {
            Val::Text(row.try_get(i)?)
        };
        out.push(v);
    }
    Ok(Row(out))
}

/// True when `e` means the connection is unusable (refused, broken, closed by a
/// server shutting down) rather than a statement refused: the journal then waits for
/// the database and tries again.
pub(super) fn is_connection_error(e: &postgres::Error, closed: bool) -> bool {
    if closed || e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; class 57: operator intervention (shutdown,
        // crash, cannot connect now); 53300: too many connections.
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("57") || c == "53300"
        }
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// The schema on PostgreSQL at version 5 (the same tables, columns and meaning as
/// SQLite's migrations 1 to 5 produce), for a new database. Later versions run the same
/// portable SQL on both backends (`schema::PORTABLE`).
pub(super) const BASELINE_V5: &str = "
CREATE TABLE reports (
    report_id         TEXT PRIMARY KEY,
    message_id        TEXT,
    state             TEXT NOT NULL,
    first_seen_at     TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    spool_path        TEXT NOT NULL,
    sender            TEXT,
    subject           TEXT,
    repository        TEXT,
    route_reason      TEXT,
    ghsa_id           TEXT,
    advisory_url      TEXT,
    reply             TEXT,
    reply_message_id  TEXT,
    outcome           TEXT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    last_error        TEXT,
    thread_of         TEXT,
    replied_at        TEXT,
    reply_to          TEXT,
    github_state      TEXT,
    cve_id            TEXT,
    released          BIGINT NOT NULL DEFAULT 0,
    content_hash      TEXT,
    held_received_at  TEXT,
    github_updated_at TEXT
);
CREATE INDEX reports_by_update ON reports(updated_at);
CREATE INDEX reports_by_message_id ON reports(message_id);
CREATE INDEX reports_by_ghsa ON reports(lower(ghsa_id));
CREATE INDEX reports_by_sender ON reports(lower(sender), first_seen_at);
CREATE INDEX reports_by_thread ON reports(thread_of);
CREATE INDEX reports_by_repository ON reports(lower(repository));
CREATE TABLE notices (
    report_id  TEXT NOT NULL,
    event      TEXT NOT NULL,
    sent_at    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (report_id, event)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('journal_started_at',
    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'));
CREATE TABLE fingerprints (
    report_id    TEXT PRIMARY KEY,
    exact        TEXT NOT NULL,
    minhash      BYTEA NOT NULL,
    signals      TEXT NOT NULL,
    duplicate_of TEXT,
    similarity   DOUBLE PRECISION,
    recorded_at  TEXT NOT NULL
);
CREATE INDEX fingerprints_by_exact ON fingerprints(exact);
";

/// Why the schema of a PostgreSQL journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgSchemaError {
    /// The database refused a statement.
    #[error("{}", describe(.0))]
    Postgres(#[from] postgres::Error),
    /// Written by a newer release.
    #[error(
        "the database's schema is version {found}, newer than this release's {latest}; upgrade every instance to the same release"
    )]
    Newer {
        /// The version found.
        found: i64,
        /// This release's version.
        latest: i64,
    },
}

/// The schema version of the database, `None` when it has no journal yet.
pub fn schema_version(client: &mut Client) -> Result<Option<i64>, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('journal_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client.query_one("SELECT max(version) FROM journal_schema", &[])?;
    Ok(row.get::<_, Option<i64>>(0))
}

/// Brings the database to `latest`: the baseline, then each portable migration, each
/// in its own transaction, under a lock so that concurrent starts migrate once.
pub(super) fn migrate(
    client: &mut Client,
    portable: &[(i64, &str)],
    latest: i64,
) -> Result<(), PgSchemaError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // `IF NOT EXISTS` would log a NOTICE at every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS journal_schema (
            version    BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let found: Option<i64> = tx
        .query_one("SELECT max(version) FROM journal_schema", &[])?
        .get(0);
    let mut version = found.unwrap_or(0);
    if version > latest {
        return Err(PgSchemaError::Newer {
            found: version,
            latest,
        });
    }
    if version < 5 {
        tx.batch_execute(BASELINE_V5)?;
        tx.execute("INSERT INTO journal_schema (version) VALUES (5)", &[])?;
        version = 5;
    }
    for (v, sql) in portable {
        if *v > version {
            tx.batch_execute(sql)?;
            tx.execute("INSERT INTO journal_schema (version) VALUES ($1)", &[v])?;
            version = *v;
        }
    }
    tx.commit()?;
    Ok(())
}

/// What went wrong, readably: the server's message (with its SQLSTATE) or the chain of
/// causes (refused connection, TLS failure), where `postgres::Error` alone says only
/// "db error" or "error connecting to server".
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({}: {})", e, db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// How long to wait before the `attempt`th reconnection.
pub(super) fn reconnect_delay(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

/// What `check` found in a PostgreSQL journal.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The schema version stored; `None` for an empty database (the first `run`
    /// creates the journal).
    pub version: Option<i64>,
    /// The instances registered, with their last renewal and lease.
    pub instances: Vec<super::InstanceInfo>,
}

/// Connects (blocking), reads the schema version and the registered instances, and
/// changes nothing: what `check` reports.
pub fn inspect(target: &PgTarget) -> Result<Inspection, super::JournalError> {
    let wrap = |fault: super::JournalFault| super::JournalError {
        path: target.display.clone(),
        fault,
    };
    let mut client = target
        .connect()
        .map_err(|e| wrap(super::JournalFault::Unreachable(e)))?;
    let version = schema_version(&mut client).map_err(|e| wrap(e.into()))?;
    let has_instances: bool = client
        .query_one("SELECT to_regclass('instances') IS NOT NULL", &[])
        .map_err(|e| wrap(e.into()))?
        .get(0);
    let mut instances = Vec::new();
    if has_instances {
        let rows = client
            .query(
                "SELECT name, claim_folder, renewed_at, lease_until,
                 lease_until < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)
                 FROM instances ORDER BY name",
                &[],
            )
            .map_err(|e| wrap(e.into()))?;
        for r in rows {
            instances.push(super::InstanceInfo {
                name: r.get(0),
                claim_folder: r.get(1),
                renewed_at: chrono::DateTime::from_timestamp_millis(r.get(2)).unwrap_or_default(),
                lease_until: chrono::DateTime::from_timestamp_millis(r.get(3)).unwrap_or_default(),
                expired: r.get(4),
            });
        }
    }
    Ok(Inspection { version, instances })
}
