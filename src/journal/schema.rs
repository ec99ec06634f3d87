//! The journal's schema versions: ordered migrations on SQLite's `user_version`, so a
//! journal written by any earlier release opens in this one, and one written by a newer
//! release is refused instead of misread.

use rusqlite::Connection;
use rusqlite_migration::{HookError, M, Migrations};

/// Columns of `reports` as release 0.1.0 had them, with their types: version 1 adds any
/// of these a pre-release journal lacks, since those were created by `CREATE TABLE IF
/// NOT EXISTS` and columns were added to the statement over time without a migration.
const V1_COLUMNS: &[(&str, &str)] = &[
    ("message_id", "TEXT"),
    ("sender", "TEXT"),
    ("subject", "TEXT"),
    ("repository", "TEXT"),
    ("route_reason", "TEXT"),
    ("ghsa_id", "TEXT"),
    ("advisory_url", "TEXT"),
    ("reply", "TEXT"),
    ("reply_message_id", "TEXT"),
    ("outcome", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("next_attempt_at", "TEXT"),
    ("last_error", "TEXT"),
    ("thread_of", "TEXT"),
    ("replied_at", "TEXT"),
    ("reply_to", "TEXT"),
    ("github_state", "TEXT"),
    ("cve_id", "TEXT"),
];

/// Version 1: the schema of release 0.1.0 (which had no `user_version`, so its journals
/// read as version 0 and run this migration, where every statement is a no-op for them).
const V1: &str = "
CREATE TABLE IF NOT EXISTS reports (
    report_id        TEXT PRIMARY KEY,
    message_id       TEXT,
    state            TEXT NOT NULL,
    first_seen_at    TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    spool_path       TEXT NOT NULL,
    sender           TEXT,
    subject          TEXT,
    repository       TEXT,
    route_reason     TEXT,
    ghsa_id          TEXT,
    advisory_url     TEXT,
    reply            TEXT,
    reply_message_id TEXT,
    outcome          TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    last_error       TEXT,
    thread_of        TEXT,
    replied_at       TEXT,
    reply_to         TEXT,
    github_state     TEXT,
    cve_id           TEXT
);
CREATE TABLE IF NOT EXISTS notices (
    report_id  TEXT NOT NULL,
    event      TEXT NOT NULL,
    sent_at    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (report_id, event)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// Indexes of version 1, created after the hook has added any missing column they name.
const V1_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS reports_by_update ON reports(updated_at);
CREATE INDEX IF NOT EXISTS reports_by_message_id ON reports(message_id);
CREATE INDEX IF NOT EXISTS reports_by_ghsa ON reports(ghsa_id);
";

/// Version 2: a release is a flag, not the `outcome` text `released`; the reply column
/// holds only `sent` or `suppressed: <reason>`; indexes for the per-sender limits and
/// for threads; the time the journal was started.
const V2: &str = "
ALTER TABLE reports ADD COLUMN released INTEGER NOT NULL DEFAULT 0;
UPDATE reports SET released = 1, outcome = NULL WHERE outcome = 'released';
CREATE INDEX reports_by_sender ON reports(sender COLLATE NOCASE, first_seen_at);
CREATE INDEX reports_by_thread ON reports(thread_of);
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('journal_started_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
";

/// Version 3: a report's identity includes what it says (a different message reusing a
/// Message-ID is its own report), and a held message's arrival time tells a person's
/// move back (a release) from a fresh copy.
const V3: &str = "
ALTER TABLE reports ADD COLUMN content_hash TEXT;
ALTER TABLE reports ADD COLUMN held_received_at TEXT;
";

/// Version 4: when GitHub last changed each advisory, as the watcher saw it, so the
/// maintainers' digest can list drafts nobody has touched.
const V4: &str = "
ALTER TABLE reports ADD COLUMN github_updated_at TEXT;
";

/// Version 5: each report's content fingerprint, triage signals and the earlier report
/// it probably repeats (the triage shield, `crate::triage`).
const V5: &str = "
CREATE TABLE fingerprints (
    report_id    TEXT PRIMARY KEY,
    exact        TEXT NOT NULL,
    minhash      BLOB NOT NULL,
    signals      TEXT NOT NULL,
    duplicate_of TEXT,
    similarity   REAL,
    recorded_at  TEXT NOT NULL
);
CREATE INDEX fingerprints_by_exact ON fingerprints(exact);
";

/// Version 6: the coordination of several instances on one PostgreSQL journal (the
/// instances seen, with their leases, and which instance works on which report). Written
/// to run on both backends; SQLite journals have the tables but never fill them.
pub const V6: &str = "
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    claim_folder TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    renewed_at   BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL
);
CREATE TABLE claims (
    report_id   TEXT PRIMARY KEY,
    instance    TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE INDEX claims_by_instance ON claims(instance);
";

/// The migrations after the PostgreSQL baseline (version 5), as one SQL text each that
/// both backends run: `(version, sql)`, oldest first. Append only.
pub const PORTABLE: &[(i64, &str)] = &[(6, V6)];

/// Adds the columns of [`V1_COLUMNS`] a pre-release journal lacks, then the indexes.
fn v1_hook(tx: &rusqlite::Transaction<'_>) -> Result<(), HookError> {
    let existing: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('reports')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, kind) in V1_COLUMNS {
        if !existing.iter().any(|e| e == name) {
            tx.execute_batch(&format!("ALTER TABLE reports ADD COLUMN {name} {kind};"))?;
        }
    }
    tx.execute_batch(V1_INDEXES)?;
    Ok(())
}

/// Every migration, oldest first. Append only: a released migration never changes.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up_with_hook(V1, v1_hook),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up(V6),
    ])
}

/// The schema version this binary writes.
pub fn latest() -> usize {
    6
}

/// Brings `conn` to the latest version in one transaction per migration.
pub fn migrate(conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
    migrations().to_latest(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_are_valid_and_latest_is_their_count() {
        assert!(migrations().validate().is_ok());
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let v: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest());
    }

    #[test]
    fn a_pre_release_journal_without_later_columns_is_completed() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE reports (report_id TEXT PRIMARY KEY, message_id TEXT,
             state TEXT NOT NULL, first_seen_at TEXT NOT NULL, updated_at TEXT NOT NULL,
             spool_path TEXT NOT NULL);
             INSERT INTO reports VALUES ('r', NULL, 'filed', '2026-01-01T00:00:00Z',
             '2026-01-01T00:00:00Z', '');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (state, released): (String, i64) = conn
            .query_row(
                "SELECT state, released FROM reports WHERE github_state IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((state.as_str(), released), ("filed", 0));
    }
}
