//! The journal's SQL: one connection (SQLite or PostgreSQL), used only from the
//! journal's thread. Every statement is written once for both backends (`sql`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::pg::{self, Pg, PgTarget};
use super::sql::{Backend, Conn, Row, SqlError, Val, WrongType};
use super::{AdvisoryState, Entry, JournalError, JournalFault, NewEntry, Reply, State, schema};
use crate::mail::ReportId;

const COLUMNS: &str = "report_id, message_id, state, first_seen_at, updated_at, spool_path, \
    sender, subject, repository, route_reason, ghsa_id, advisory_url, reply, \
    reply_message_id, outcome, attempts, next_attempt_at, last_error, thread_of, reply_to, \
    github_state, cve_id, released, content_hash, held_received_at";

/// This instance, as registered in a shared journal: renewed with its leases, and again
/// right after a lost connection comes back.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The instance's name.
    pub name: String,
    /// Its claim folder, for whoever takes over its mail.
    pub claim_folder: String,
    /// How long its claims stay its own without a renewal.
    pub lease: Duration,
}

/// An instance another one saw in a shared journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its name.
    pub name: String,
    /// Its claim folder.
    pub claim_folder: String,
    /// When it last renewed its lease.
    pub renewed_at: DateTime<Utc>,
    /// Until when its lease runs.
    pub lease_until: DateTime<Utc>,
    /// True when the lease has run out (by the database's clock).
    pub expired: bool,
}

/// Who may work on a report (`Db::claim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This instance: go on.
    Won,
    /// Another instance, whose lease runs until `until` (by the database's clock).
    HeldBy {
        /// The instance working on it.
        instance: String,
        /// When its lease runs out unless renewed.
        until: DateTime<Utc>,
    },
}

/// The journal's database connection with the typed operations on it.
pub struct Db {
    conn: Conn,
    path: String,
    /// How to connect again (PostgreSQL only).
    target: Option<PgTarget>,
    /// False while the database cannot be reached (shared with `/healthz`).
    reachable: Arc<AtomicBool>,
    /// Set when the daemon stops: a wait for the database gives up.
    stopping: Arc<AtomicBool>,
    /// This instance's registration in a shared journal.
    registration: Option<Registration>,
    /// When the connection last came back after a loss.
    reconnected_at: Option<std::time::Instant>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// A row as stored, before its values are checked.
struct RawEntry {
    report_id: String,
    message_id: Option<String>,
    state: String,
    first_seen_at: String,
    updated_at: String,
    spool_path: String,
    sender: Option<String>,
    subject: Option<String>,
    repository: Option<String>,
    route_reason: Option<String>,
    ghsa_id: Option<String>,
    advisory_url: Option<String>,
    reply: Option<String>,
    reply_message_id: Option<String>,
    outcome: Option<String>,
    attempts: i64,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    thread_of: Option<String>,
    reply_to: Option<String>,
    github_state: Option<String>,
    cve_id: Option<String>,
    released: i64,
    content_hash: Option<String>,
    held_received_at: Option<String>,
}

fn read_entry(row: &Row) -> Result<RawEntry, WrongType> {
    Ok(RawEntry {
        report_id: row.text(0)?,
        message_id: row.opt_text(1)?,
        state: row.text(2)?,
        first_seen_at: row.text(3)?,
        updated_at: row.text(4)?,
        spool_path: row.text(5)?,
        sender: row.opt_text(6)?,
        subject: row.opt_text(7)?,
        repository: row.opt_text(8)?,
        route_reason: row.opt_text(9)?,
        ghsa_id: row.opt_text(10)?,
        advisory_url: row.opt_text(11)?,
        reply: row.opt_text(12)?,
        reply_message_id: row.opt_text(13)?,
        outcome: row.opt_text(14)?,
        attempts: row.int(15)?,
        next_attempt_at: row.opt_text(16)?,
        last_error: row.opt_text(17)?,
        thread_of: row.opt_text(18)?,
        reply_to: row.opt_text(19)?,
        github_state: row.opt_text(20)?,
        cve_id: row.opt_text(21)?,
        released: row.int(22)?,
        content_hash: row.opt_text(23)?,
        held_received_at: row.opt_text(24)?,
    })
}

impl Db {
    /// Opens the SQLite database file, sets durability and migrates the schema.
    pub(super) fn open(path: &Path, display: &str) -> Result<Db, JournalError> {
        let wrap = |fault: JournalFault| JournalError {
            path: display.to_owned(),
            fault,
        };
        let mut conn = Connection::open(path).map_err(|e| wrap(e.into()))?;
        // WAL + synchronous=NORMAL: every committed record survives a crash of the
        // process at once, and a power cut from the next `Spool::sync` (syncfs of the
        // state directory) on, which the engine and the mailbox call before anything
        // that must not be repeated or lost leaves the machine.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| wrap(e.into()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| wrap(e.into()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| wrap(e.into()))?;
        schema::migrate(&mut conn).map_err(|e| wrap(e.into()))?;
        Ok(Db {
            conn: Conn::Sqlite(conn),
            path: display.to_owned(),
            target: None,
            reachable: Arc::new(AtomicBool::new(true)),
            stopping: Arc::new(AtomicBool::new(false)),
            registration: None,
            reconnected_at: None,
        })
    }

    /// Connects to the PostgreSQL journal and migrates its schema.
    pub(super) fn connect(
        target: PgTarget,
        reachable: Arc<AtomicBool>,
        stopping: Arc<AtomicBool>,
    ) -> Result<Db, JournalError> {
        let display = target.display.clone();
        let wrap = |fault: JournalFault| JournalError {
            path: display.clone(),
            fault,
        };
        let mut client = target
            .connect()
            .map_err(|e| wrap(JournalFault::Unreachable(e)))?;
        pg::migrate(&mut client, schema::PORTABLE, schema::latest() as i64)
            .map_err(|e| wrap(JournalFault::PgSchema(e)))?;
        Ok(Db {
            conn: Conn::Pg(Box::new(std::cell::RefCell::new(Pg::new(client)))),
            path: display.clone(),
            target: Some(target),
            reachable,
            stopping,
            registration: None,
            reconnected_at: None,
        })
    }

    /// Which backend this journal is on.
    pub fn backend(&self) -> Backend {
        self.conn.backend()
    }

    /// Where the journal is: the SQLite file, or the PostgreSQL URL without password.
    pub fn location(&self) -> &str {
        &self.path
    }

    /// True when `e` says the database went away (PostgreSQL only): the journal's
    /// thread then waits for it ([`Db::reconnect`]) and runs the operation again.
    pub(super) fn lost(&self, e: &JournalError) -> bool {
        match (&self.conn, &e.fault) {
            (Conn::Pg(p), JournalFault::Postgres(pe)) => {
                let closed = p.try_borrow().map(|p| p.is_closed()).unwrap_or(false);
                pg::is_connection_error(pe, closed)
            }
            _ => false,
        }
    }

    /// Waits until the database can be reached again (health says it cannot meanwhile),
    /// then registers this instance again; false when the daemon stops first.
    pub(super) fn reconnect(&mut self) -> bool {
        let Some(target) = self.target.clone() else {
            return false;
        };
        self.reachable.store(false, Ordering::SeqCst);
        let mut attempt = 0u32;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return false;
            }
            match target.connect() {
                Ok(client) => {
                    self.conn = Conn::Pg(Box::new(std::cell::RefCell::new(Pg::new(client))));
                    let renewed = match self.registration.clone() {
                        Some(r) => self.renew(&r),
                        None => Ok(()),
                    };
                    match renewed {
                        Ok(()) => {
                            self.reachable.store(true, Ordering::SeqCst);
                            self.reconnected_at = Some(std::time::Instant::now());
                            tracing::info!(journal = %self.path, "the journal's database is reachable again; resuming");
                            return true;
                        }
                        Err(e) => tracing::debug!(error = %e, "renewal after reconnecting failed"),
                    }
                }
                Err(e) => {
                    if attempt == 0 {
                        tracing::warn!(journal = %self.path, error = %pg::describe(&e), "the journal's database is unreachable; waiting for it (nothing is handled meanwhile)");
                    }
                }
            }
            attempt += 1;
            std::thread::sleep(pg::reconnect_delay(attempt));
        }
    }

    fn wrap(&self, source: impl Into<SqlError>) -> JournalError {
        let fault = match source.into() {
            SqlError::Sqlite(e) => JournalFault::Sqlite(e),
            SqlError::Postgres(e) => JournalFault::Postgres(e),
        };
        JournalError {
            path: self.path.clone(),
            fault,
        }
    }

    fn corrupt(&self, report_id: &str, message: String) -> JournalError {
        JournalError {
            path: self.path.clone(),
            fault: JournalFault::Corrupt {
                report_id: report_id.to_owned(),
                message,
            },
        }
    }

    fn wrong_type(&self, w: WrongType) -> JournalError {
        self.corrupt(
            "(a row)",
            format!("column {} does not hold {}", w.index, w.expected),
        )
    }

    fn exec(&self, sql: &str, params: &[Val]) -> Result<u64, JournalError> {
        self.conn.exec(sql, params).map_err(|e| self.wrap(e))
    }

    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<Row>, JournalError> {
        self.conn.rows(sql, params).map_err(|e| self.wrap(e))
    }

    fn row(&self, sql: &str, params: &[Val]) -> Result<Option<Row>, JournalError> {
        self.conn.row(sql, params).map_err(|e| self.wrap(e))
    }

    fn count(&self, sql: &str, params: &[Val]) -> Result<u32, JournalError> {
        let n = match self.row(sql, params)? {
            Some(r) => r.int(0).map_err(|w| self.wrong_type(w))?,
            None => 0,
        };
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Runs `f` in one transaction: all of it is committed, or none.
    fn transaction<R>(
        &self,
        f: impl FnOnce(&Db) -> Result<R, JournalError>,
    ) -> Result<R, JournalError> {
        self.conn.batch("BEGIN").map_err(|e| self.wrap(e))?;
        match f(self) {
            Ok(r) => {
                self.conn.batch("COMMIT").map_err(|e| self.wrap(e))?;
                Ok(r)
            }
            Err(e) => {
                let _ = self.conn.batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn time(&self, id: &str, column: &str, value: &str) -> Result<DateTime<Utc>, JournalError> {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(id, format!("{column} `{value}` is not a timestamp ({e})")))
    }

    fn entry(&self, r: RawEntry) -> Result<Entry, JournalError> {
        let id = r.report_id.as_str();
        let state = State::parse(&r.state)
            .ok_or_else(|| self.corrupt(id, format!("unknown state `{}`", r.state)))?;
        let reply = Reply::decode(r.reply.as_deref()).ok_or_else(|| {
            self.corrupt(
                id,
                format!("unknown reply `{}`", r.reply.as_deref().unwrap_or("")),
            )
        })?;
        let github_state = match r.github_state.as_deref() {
            None => None,
            Some(s) => Some(
                AdvisoryState::parse(s)
                    .ok_or_else(|| self.corrupt(id, format!("unknown GitHub state `{s}`")))?,
            ),
        };
        let next_attempt_at = match r.next_attempt_at.as_deref() {
            None => None,
            Some(t) => Some(self.time(id, "next_attempt_at", t)?),
        };
        let held_received_at = match r.held_received_at.as_deref() {
            None => None,
            Some(t) => Some(self.time(id, "held_received_at", t)?),
        };
        Ok(Entry {
            first_seen_at: self.time(id, "first_seen_at", &r.first_seen_at)?,
            updated_at: self.time(id, "updated_at", &r.updated_at)?,
            report_id: ReportId(r.report_id),
            message_id: r.message_id,
            state,
            spool_path: r.spool_path,
            sender: r.sender,
            subject: r.subject,
            repository: r.repository,
            route_reason: r.route_reason,
            ghsa_id: r.ghsa_id,
            advisory_url: r.advisory_url,
            reply,
            reply_message_id: r.reply_message_id,
            outcome: r.outcome,
            released: r.released != 0,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            next_attempt_at,
            last_error: r.last_error,
            thread_of: r.thread_of.map(ReportId),
            reply_to: r.reply_to,
            github_state,
            cve_id: r.cve_id,
            content_hash: r.content_hash,
            held_received_at,
        })
    }

    fn one(&self, sql: &str, params: &[Val]) -> Result<Option<Entry>, JournalError> {
        match self.row(sql, params)? {
            None => Ok(None),
            Some(row) => {
                let raw = read_entry(&row).map_err(|w| self.wrong_type(w))?;
                self.entry(raw).map(Some)
            }
        }
    }

    fn many(&self, sql: &str, params: &[Val]) -> Result<Vec<Entry>, JournalError> {
        self.rows(sql, params)?
            .iter()
            .map(|row| {
                let raw = read_entry(row).map_err(|w| self.wrong_type(w))?;
                self.entry(raw)
            })
            .collect()
    }

    /// The record of a report, if any.
    pub fn get(&self, id: &ReportId) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!("SELECT {COLUMNS} FROM reports WHERE report_id = ?1"),
            &[(&id.0).into()],
        )
    }

    /// Records a report seen for the first time; an existing record is left alone.
    /// Returns the record as it now stands.
    pub fn record_seen(&self, new: &NewEntry, now: DateTime<Utc>) -> Result<Entry, JournalError> {
        self.exec(
            "INSERT INTO reports
             (report_id, message_id, state, first_seen_at, updated_at, spool_path, sender,
              subject, content_hash)
             VALUES (?1, ?2, 'seen', ?3, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO NOTHING",
            &[
                (&new.report_id.0).into(),
                (&new.message_id).into(),
                ts(now).into(),
                (&new.spool_path).into(),
                (&new.sender).into(),
                (&new.subject).into(),
                (&new.content_hash).into(),
            ],
        )?;
        // A report journaled before content hashes existed learns its hash now, and one
        // rebuilt from its advisory (journal lost) what only its message tells.
        self.exec(
            "UPDATE reports SET content_hash = COALESCE(content_hash, ?2),
             message_id = COALESCE(message_id, ?3), sender = COALESCE(sender, ?4),
             subject = COALESCE(subject, ?5),
             spool_path = CASE WHEN spool_path = '' THEN ?6 ELSE spool_path END
             WHERE report_id = ?1",
            &[
                (&new.report_id.0).into(),
                (&new.content_hash).into(),
                (&new.message_id).into(),
                (&new.sender).into(),
                (&new.subject).into(),
                (&new.spool_path).into(),
            ],
        )?;
        self.get(&new.report_id)?
            .ok_or_else(|| self.corrupt(&new.report_id.0, "vanished as it was written".into()))
    }

    fn update(
        &self,
        id: &ReportId,
        set: &str,
        values: Vec<Val>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let sql = format!("UPDATE reports SET {set}, updated_at = ?1 WHERE report_id = ?2");
        let mut all: Vec<Val> = vec![ts(now).into(), (&id.0).into()];
        all.extend(values);
        self.exec(&sql, &all)?;
        Ok(())
    }

    /// The report (not a follow-up) with this `Message-ID`, if any.
    pub fn find_by_message_id(&self, message_id: &str) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE message_id = ?1
                 ORDER BY first_seen_at LIMIT 1"
            ),
            &[message_id.into()],
        )
    }

    /// Every report with one of these `Message-ID`s or one of these report ids, in one
    /// query (a follow-up's thread lookup).
    pub fn find_related(
        &self,
        message_ids: &[String],
        report_ids: &[ReportId],
    ) -> Result<Vec<Entry>, JournalError> {
        if message_ids.is_empty() && report_ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = |n: usize, from: usize| {
            if n == 0 {
                // `IN ()` is SQLite's only; NULL matches nothing on both.
                return "NULL".to_owned();
            }
            (from..from + n)
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM reports WHERE message_id IN ({}) OR report_id IN ({})",
            marks(message_ids.len(), 1),
            marks(report_ids.len(), message_ids.len() + 1),
        );
        let values: Vec<Val> = message_ids
            .iter()
            .map(Val::from)
            .chain(report_ids.iter().map(|r| Val::from(&r.0)))
            .collect();
        self.many(&sql, &values)
    }

    /// The report whose advisory has this GHSA id (the original, not a follow-up).
    pub fn find_by_ghsa(&self, ghsa_id: &str) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE {}
                 AND thread_of IS NULL ORDER BY first_seen_at LIMIT 1",
                self.conn.nocase("ghsa_id", "?1")
            ),
            &[ghsa_id.into()],
        )
    }

    /// Records that a message is a follow-up to `original`, added to its advisory.
    pub fn record_thread(
        &self,
        id: &ReportId,
        original: &ReportId,
        repository: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "thread_of = ?3, repository = ?4, route_reason = 'follow-up'",
            vec![(&original.0).into(), repository.into()],
            now,
        )
    }

    /// The senders (lower-cased) a thread already includes: the report's, and those of
    /// follow-ups that were added to its advisory.
    pub fn thread_senders(&self, original: &ReportId) -> Result<Vec<String>, JournalError> {
        self.rows(
            "SELECT DISTINCT lower(trim(sender)) FROM reports WHERE sender IS NOT NULL
             AND (report_id = ?1 OR (thread_of = ?1 AND ghsa_id IS NOT NULL))",
            &[(&original.0).into()],
        )?
        .iter()
        .map(|r| r.text(0).map_err(|w| self.wrong_type(w)))
        .collect()
    }

    /// When the last reply in a thread (the report and its follow-ups) was sent.
    pub fn last_reply_in_thread(
        &self,
        original: &ReportId,
    ) -> Result<Option<DateTime<Utc>>, JournalError> {
        let t = match self.row(
            "SELECT MAX(replied_at) FROM reports WHERE report_id = ?1 OR thread_of = ?1",
            &[(&original.0).into()],
        )? {
            Some(r) => r.opt_text(0).map_err(|w| self.wrong_type(w))?,
            None => None,
        };
        t.map(|t| self.time(&original.0, "replied_at", &t))
            .transpose()
    }

    /// Reports (not follow-ups) from `sender` first seen since `since` that got an
    /// advisory: what the per-sender advisory limit counts (across every instance on a
    /// shared journal).
    pub fn advisories_from(&self, sender: &str, since: DateTime<Utc>) -> Result<u32, JournalError> {
        self.count(
            &format!(
                "SELECT COUNT(*) FROM reports WHERE {}
                 AND thread_of IS NULL AND ghsa_id IS NOT NULL AND first_seen_at >= ?2",
                self.conn.nocase("sender", "?1")
            ),
            &[sender.into(), ts(since).into()],
        )
    }

    /// Replies sent since `since` for messages from `sender`: what the per-sender reply
    /// limit counts.
    pub fn replies_to(&self, sender: &str, since: DateTime<Utc>) -> Result<u32, JournalError> {
        self.count(
            &format!(
                "SELECT COUNT(*) FROM reports WHERE {} AND replied_at >= ?2",
                self.conn.nocase("sender", "?1")
            ),
            &[sender.into(), ts(since).into()],
        )
    }

    /// A held report a person moved back to the inbox: it starts over, exempt from the
    /// per-sender limits.
    pub fn record_released(&self, id: &ReportId, now: DateTime<Utc>) -> Result<(), JournalError> {
        self.update(
            id,
            "state = 'seen', released = 1, outcome = NULL, next_attempt_at = NULL",
            vec![],
            now,
        )
    }

    /// Records the reporter of a report whose record was rebuilt without one.
    pub fn record_sender_if_unknown(
        &self,
        id: &ReportId,
        sender: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "sender = COALESCE(sender, ?3)",
            vec![sender.into()],
            now,
        )
    }

    /// Records when the server received a message about to be held.
    pub fn record_held_received_at(
        &self,
        id: &ReportId,
        received_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "held_received_at = ?3",
            vec![received_at.map(ts).into()],
            now,
        )
    }

    /// A value kept between runs (e.g. the watcher's watermark per repository).
    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        match self.row("SELECT value FROM meta WHERE key = ?1", &[key.into()])? {
            Some(r) => r.opt_text(0).map_err(|w| self.wrong_type(w)),
            None => Ok(None),
        }
    }

    /// A timestamp kept between runs; a value that is not one is an error.
    pub fn meta_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, JournalError> {
        match self.meta(key)? {
            None => Ok(None),
            Some(t) => DateTime::parse_from_rfc3339(&t)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    self.corrupt(
                        &format!("(meta {key})"),
                        format!("`{t}` is not a timestamp ({e})"),
                    )
                }),
        }
    }

    /// Sets a value kept between runs.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), JournalError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[key.into(), value.into()],
        )
        .map(|_| ())
    }

    /// Sets a value kept between runs unless one is set already; true when this call
    /// set it (one winner across instances).
    pub fn set_meta_once(&self, key: &str, value: &str) -> Result<bool, JournalError> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[key.into(), value.into()],
        )
        .map(|n| n > 0)
    }

    /// Reports (not follow-ups) in `repository` that have an advisory: what the watcher
    /// compares GitHub's list with.
    pub fn reports_with_advisory(&self, repository: &str) -> Result<Vec<Entry>, JournalError> {
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE {}
                 AND thread_of IS NULL AND ghsa_id IS NOT NULL",
                self.conn.nocase("repository", "?1")
            ),
            &[repository.into()],
        )
    }

    /// Records the advisory's state and CVE id as GitHub shows them now, and when GitHub
    /// last changed it (kept when GitHub did not say).
    pub fn record_github_state(
        &self,
        id: &ReportId,
        state: AdvisoryState,
        cve_id: Option<&str>,
        github_updated_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let changed = github_updated_at.map(ts);
        self.update(
            id,
            "github_state = ?3, cve_id = ?4, github_updated_at = COALESCE(?5, github_updated_at)",
            vec![state.as_str().into(), cve_id.into(), changed.into()],
            now,
        )
    }

    /// Records a report's fingerprint, signals (`triage::Signals::summary`) and the
    /// advisory it probably repeats, replacing an earlier record.
    pub fn record_fingerprint(
        &self,
        id: &ReportId,
        fingerprint: &crate::triage::Fingerprint,
        signals: &str,
        duplicate: Option<(&str, f64)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.exec(
            "INSERT INTO fingerprints
             (report_id, exact, minhash, signals, duplicate_of, similarity, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (report_id) DO UPDATE SET exact = excluded.exact,
             minhash = excluded.minhash, signals = excluded.signals,
             duplicate_of = excluded.duplicate_of, similarity = excluded.similarity,
             recorded_at = excluded.recorded_at",
            &[
                (&id.0).into(),
                (&fingerprint.exact).into(),
                fingerprint.minhash_bytes().into(),
                signals.into(),
                duplicate.map(|d| d.0).into(),
                duplicate.map(|d| d.1).into(),
                ts(now).into(),
            ],
        )
        .map(|_| ())
    }

    /// The fingerprints of every other report that has an advisory, with its GHSA id,
    /// repository and URL: what a new report is compared with.
    pub fn fingerprints_with_advisory(
        &self,
        except: &ReportId,
    ) -> Result<Vec<(crate::triage::Fingerprint, String, String, String)>, JournalError> {
        Ok(self
            .fingerprints_recorded_since(None)?
            .into_iter()
            .filter(|(id, ..)| id != except)
            .map(|(_, f, ghsa, repository, url)| (f, ghsa, repository, url))
            .collect())
    }

    /// [`Db::fingerprints_with_advisory`] recorded at or after `since` (all for `None`),
    /// each with its report, for a cache that reads only what is new.
    #[allow(clippy::type_complexity)]
    pub fn fingerprints_recorded_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(ReportId, crate::triage::Fingerprint, String, String, String)>, JournalError>
    {
        let since = since.map(ts).unwrap_or_default();
        let rows = self.rows(
            "SELECT f.exact, f.minhash, r.ghsa_id, COALESCE(r.repository, ''),
                    COALESCE(r.advisory_url, ''), f.report_id
             FROM fingerprints f JOIN reports r ON r.report_id = f.report_id
             WHERE r.ghsa_id IS NOT NULL AND r.thread_of IS NULL AND f.recorded_at >= ?1",
            &[(&since).into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let read = || -> Result<_, WrongType> {
                Ok((
                    row.text(0)?,
                    row.blob(1)?,
                    row.text(2)?,
                    row.text(3)?,
                    row.text(4)?,
                    row.text(5)?,
                ))
            };
            let (exact, bytes, ghsa, repository, url, id) =
                read().map_err(|w| self.wrong_type(w))?;
            let fingerprint = crate::triage::Fingerprint::from_stored(exact, &bytes)
                .ok_or_else(|| self.corrupt(&ghsa, "a fingerprint of the wrong size".into()))?;
            out.push((ReportId(id), fingerprint, ghsa, repository, url));
        }
        Ok(out)
    }

    /// A report's triage record: its signals, and the advisory it probably repeats with
    /// the similarity.
    pub fn triage_of(&self, id: &ReportId) -> Result<Option<super::TriageRecord>, JournalError> {
        let Some(row) = self.row(
            "SELECT signals, duplicate_of, similarity FROM fingerprints WHERE report_id = ?1",
            &[(&id.0).into()],
        )?
        else {
            return Ok(None);
        };
        let read = || -> Result<_, WrongType> {
            Ok(super::TriageRecord {
                signals: row.text(0)?,
                duplicate_of: row.opt_text(1)?,
                similarity: row.opt_real(2)?,
            })
        };
        read().map(Some).map_err(|w| self.wrong_type(w))
    }

    /// Reports whose advisory is still a draft (or in triage) and was last changed on
    /// GitHub (or, not yet seen there, first seen here) before `cutoff`, oldest first.
    pub fn stale_drafts(&self, cutoff: DateTime<Utc>) -> Result<Vec<Entry>, JournalError> {
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE thread_of IS NULL AND ghsa_id IS NOT NULL
                 AND (github_state IS NULL OR github_state IN ('draft', 'triage'))
                 AND COALESCE(github_updated_at, first_seen_at) < ?1
                 ORDER BY first_seen_at"
            ),
            &[ts(cutoff).into()],
        )
    }

    /// True when the notice for `event` already went out for this report.
    pub fn notice_sent(&self, id: &ReportId, event: &str) -> Result<bool, JournalError> {
        self.count(
            "SELECT COUNT(*) FROM notices WHERE report_id = ?1 AND event = ?2",
            &[(&id.0).into(), event.into()],
        )
        .map(|n| n > 0)
    }

    /// Records a notice the SMTP server accepted.
    pub fn record_notice(
        &self,
        id: &ReportId,
        event: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.exec(
            "INSERT INTO notices (report_id, event, sent_at, message_id)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            &[
                (&id.0).into(),
                event.into(),
                ts(now).into(),
                message_id.into(),
            ],
        )
        .map(|_| ())
    }

    /// Records where the report was routed and why.
    pub fn record_route(
        &self,
        id: &ReportId,
        repository: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "repository = ?3, route_reason = ?4",
            vec![repository.into(), reason.into()],
            now,
        )
    }

    /// Records the advisory created (or adopted) for the report.
    pub fn record_advisory(
        &self,
        id: &ReportId,
        ghsa_id: &str,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "state = 'advisory_created', ghsa_id = ?3, advisory_url = ?4, attempts = 0, \
             next_attempt_at = NULL, last_error = NULL",
            vec![ghsa_id.into(), url.into()],
            now,
        )
    }

    /// Records the reply in one statement: sent (with its `Message-ID` and the address
    /// it went to) or suppressed with the reason.
    pub fn record_reply(
        &self,
        id: &ReportId,
        reply: &Reply,
        sent: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let (message_id, to) = sent.unzip();
        self.update(
            id,
            "state = 'acknowledged', reply = ?3, reply_message_id = ?4, attempts = 0, \
             next_attempt_at = NULL, last_error = NULL, \
             replied_at = CASE WHEN CAST(?4 AS TEXT) IS NULL THEN replied_at \
             ELSE CAST(?1 AS TEXT) END, \
             reply_to = COALESCE(?5, reply_to)",
            vec![reply.encode().into(), message_id.into(), to.into()],
            now,
        )
    }

    /// Records a final state (filed, ignored, quarantined), or holding / held, with its
    /// reason, and ends any instance's claim on the report (in one transaction).
    pub fn record_final(
        &self,
        id: &ReportId,
        state: State,
        outcome: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        debug_assert!(
            state.is_final() || matches!(state, State::Holding | State::Held),
            "record_final takes a final state"
        );
        let set = || {
            self.update(
                id,
                "state = ?3, outcome = COALESCE(?4, outcome), next_attempt_at = NULL",
                vec![state.as_str().into(), outcome.into()],
                now,
            )
        };
        // SQLite journals hold no claims (one instance each): the delete finds nothing.
        self.transaction(|db| {
            set()?;
            db.exec("DELETE FROM claims WHERE report_id = ?1", &[(&id.0).into()])?;
            Ok(())
        })
    }

    /// Records a failure and when to try again; returns the attempt count.
    pub fn record_failure(
        &self,
        id: &ReportId,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u32, JournalError> {
        self.update(
            id,
            "attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4",
            vec![error.into(), ts(next_attempt_at).into()],
            now,
        )?;
        Ok(self.get(id)?.map_or(1, |e| e.attempts))
    }

    /// Rebuilds the record of a report whose journal entry was lost, from its advisory on
    /// GitHub, in one transaction: seen, routed, advisory recorded. Its state is
    /// `advisory_created`, not filed: its message may still wait in the claim folder for
    /// its acknowledgement, which the engine then sends before filing it.
    pub fn record_rebuilt(
        &mut self,
        id: &ReportId,
        repository: &str,
        ghsa_id: &str,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Entry>, JournalError> {
        self.transaction(|db| {
            db.exec(
                "INSERT INTO reports
                 (report_id, state, first_seen_at, updated_at, spool_path)
                 VALUES (?1, 'seen', ?2, ?2, '') ON CONFLICT DO NOTHING",
                &[(&id.0).into(), ts(now).into()],
            )?;
            db.exec(
                "UPDATE reports SET state = 'advisory_created', repository = ?2,
                 route_reason = 'rebuilt from its advisory', ghsa_id = ?3, advisory_url = ?4,
                 attempts = 0, next_attempt_at = NULL, last_error = NULL, updated_at = ?5
                 WHERE report_id = ?1",
                &[
                    (&id.0).into(),
                    repository.into(),
                    ghsa_id.into(),
                    url.into(),
                    ts(now).into(),
                ],
            )?;
            Ok(())
        })?;
        self.get(id)
    }

    /// When this journal was started (the first start of a release with schema
    /// versions, for journals older than that).
    pub fn started_at(&self) -> Result<Option<DateTime<Utc>>, JournalError> {
        self.meta_time("journal_started_at")
    }

    /// The most recently changed reports, newest first, optionally only in one state.
    pub fn recent(&self, limit: usize, state: Option<State>) -> Result<Vec<Entry>, JournalError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1)
                 ORDER BY updated_at DESC LIMIT ?2"
            ),
            &[state.map(State::as_str).into(), limit.into()],
        )
    }

    // ---- Coordination of several instances (a shared PostgreSQL journal) ----

    /// Registers this instance (or renews its registration) with a lease, and renews
    /// the leases of every claim it holds, in one transaction. Remembered, so that a
    /// lost connection coming back renews at once.
    pub fn register(&mut self, registration: &Registration) -> Result<(), JournalError> {
        self.registration = Some(registration.clone());
        self.renew(registration)
    }

    /// Renews this instance's lease and those of its claims.
    fn renew(&self, r: &Registration) -> Result<(), JournalError> {
        let now = self.conn.now_ms();
        let lease = lease_ms(r.lease);
        self.transaction(|db| {
            db.exec(
                &format!(
                    "INSERT INTO instances (name, claim_folder, started_at, renewed_at, lease_until)
                     VALUES (?1, ?2, {now}, {now}, {now} + ?3)
                     ON CONFLICT (name) DO UPDATE SET claim_folder = excluded.claim_folder,
                     renewed_at = excluded.renewed_at, lease_until = excluded.lease_until"
                ),
                &[(&r.name).into(), (&r.claim_folder).into(), lease.into()],
            )?;
            db.exec(
                &format!("UPDATE claims SET lease_until = {now} + ?2 WHERE instance = ?1"),
                &[(&r.name).into(), lease.into()],
            )?;
            Ok(())
        })
    }

    /// Renews this instance's registration (see [`Db::register`]); a no-op before it.
    pub fn renew_leases(&self) -> Result<(), JournalError> {
        match &self.registration {
            Some(r) => self.renew(r),
            None => Ok(()),
        }
    }

    /// Claims a report for `instance` in one statement: it wins when nobody holds the
    /// report, when it holds it already, or when the holder's lease has run out. One
    /// winner across every instance on the journal.
    pub fn claim(
        &self,
        id: &ReportId,
        instance: &str,
        lease: Duration,
    ) -> Result<ClaimOutcome, JournalError> {
        let now = self.conn.now_ms();
        let won = self.row(
            &format!(
                "INSERT INTO claims (report_id, instance, lease_until) VALUES (?1, ?2, {now} + ?3)
                 ON CONFLICT (report_id) DO UPDATE SET instance = excluded.instance,
                 lease_until = excluded.lease_until
                 WHERE claims.instance = excluded.instance OR claims.lease_until < {now}
                 RETURNING instance"
            ),
            &[(&id.0).into(), instance.into(), lease_ms(lease).into()],
        )?;
        if won.is_some() {
            return Ok(ClaimOutcome::Won);
        }
        match self.row(
            "SELECT instance, lease_until FROM claims WHERE report_id = ?1",
            &[(&id.0).into()],
        )? {
            Some(row) => {
                let holder = row.text(0).map_err(|w| self.wrong_type(w))?;
                let until = row.int(1).map_err(|w| self.wrong_type(w))?;
                Ok(ClaimOutcome::HeldBy {
                    instance: holder,
                    until: ms_time(until),
                })
            }
            // Released between the two statements: try again.
            None => self.claim(id, instance, lease),
        }
    }

    /// Every instance registered in the journal, by name.
    pub fn instances(&self) -> Result<Vec<InstanceInfo>, JournalError> {
        let now = self.conn.now_ms();
        let rows = self.rows(
            &format!(
                "SELECT name, claim_folder, renewed_at, lease_until,
                 CASE WHEN lease_until < {now} THEN 1 ELSE 0 END
                 FROM instances ORDER BY name"
            ),
            &[],
        )?;
        rows.iter()
            .map(|r| {
                let read = || -> Result<_, WrongType> {
                    Ok(InstanceInfo {
                        name: r.text(0)?,
                        claim_folder: r.text(1)?,
                        renewed_at: ms_time(r.int(2)?),
                        lease_until: ms_time(r.int(3)?),
                        expired: r.int(4)? != 0,
                    })
                };
                read().map_err(|w| self.wrong_type(w))
            })
            .collect()
    }

    /// Takes over a dead instance: when `dead`'s lease has run out, extends it for
    /// `taker` to move the dead instance's mail (one winner); true when this call won.
    /// The taker then moves the mail and calls [`Db::forget_instance`].
    ///
    /// For one lease after this connection came back from a loss nobody is taken over:
    /// the database itself was away, every instance lost it at once and the others
    /// have not renewed yet; they are not dead.
    ///
    /// The dead instance's claims on reports become the taker's in the same
    /// transaction: should the dead one come back before the taker is done, it does not
    /// renew claims on mail that is no longer in its folder.
    pub fn take_over(
        &self,
        dead: &str,
        taker: &str,
        lease: Duration,
    ) -> Result<Option<i64>, JournalError> {
        if self.reconnected_at.is_some_and(|t| t.elapsed() < lease) {
            return Ok(None);
        }
        let now = self.conn.now_ms();
        self.transaction(|db| {
            let row = db.row(
                &format!(
                    "UPDATE instances SET lease_until = {now} + ?2
                     WHERE name = ?1 AND lease_until < {now} RETURNING renewed_at"
                ),
                &[dead.into(), lease_ms(lease).into()],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let renewed_at = row.int(0).map_err(|w| db.wrong_type(w))?;
            db.exec(
                &format!(
                    "UPDATE claims SET instance = ?2, lease_until = {now} + ?3 WHERE instance = ?1"
                ),
                &[dead.into(), taker.into(), lease_ms(lease).into()],
            )?;
            Ok(Some(renewed_at))
        })
    }

    /// Forgets a taken-over instance, unless it came back meanwhile (renewed since).
    pub fn forget_instance(&self, dead: &str, renewed_at: i64) -> Result<(), JournalError> {
        self.exec(
            "DELETE FROM instances WHERE name = ?1 AND renewed_at = ?2",
            &[dead.into(), renewed_at.into()],
        )
        .map(|_| ())
    }

    /// True while this instance may run the notice watcher and the maintainers' digest:
    /// always with SQLite (one instance per journal); with PostgreSQL while this
    /// connection holds the watcher's advisory lock.
    pub fn try_lead(&self) -> Result<bool, JournalError> {
        match &self.conn {
            Conn::Sqlite(_) => Ok(true),
            Conn::Pg(p) => p.borrow_mut().try_lead().map_err(|e| self.wrap(e)),
        }
    }

    /// The schema version the database holds.
    pub fn stored_schema_version(&self) -> Result<i64, JournalError> {
        let sql = match self.backend() {
            Backend::Sqlite => "PRAGMA user_version",
            Backend::Postgres => "SELECT max(version) FROM journal_schema",
        };
        match self.row(sql, &[])? {
            Some(r) => r.int(0).map_err(|w| self.wrong_type(w)),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal of `dir` on `backend`: the SQLite file in it, or the PostgreSQL
    /// schema named after it in the test cluster.
    fn open(backend: Backend, dir: &Path) -> Db {
        match backend {
            Backend::Sqlite => {
                let path = dir.join("journal.sqlite3");
                Db::open(&path, &path.display().to_string()).unwrap()
            }
            Backend::Postgres => Db::connect(
                crate::journal::testing::pg_target(&dir.display().to_string()),
                Arc::new(AtomicBool::new(true)),
                Arc::new(AtomicBool::new(false)),
            )
            .unwrap(),
        }
    }

    /// Runs each named test (a `fn(Backend)`) on SQLite and on PostgreSQL.
    macro_rules! on_both {
        ($($name:ident),* $(,)?) => {
            $(
                mod $name {
                    #[test]
                    fn sqlite() {
                        super::$name(super::Backend::Sqlite)
                    }
                    #[test]
                    fn postgres() {
                        super::$name(super::Backend::Postgres)
                    }
                }
            )*
        };
    }

    on_both!(
        a_report_moves_through_its_states_and_survives_reopening,
        seeing_a_report_again_keeps_its_progress,
        failures_count_attempts_and_a_success_resets_them,
        an_unknown_state_or_a_broken_timestamp_is_an_error_not_a_default,
        a_rebuilt_record_is_written_whole,
        per_sender_counts_ignore_case_and_follow_ups,
        one_instance_wins_a_claim_until_its_lease_runs_out_or_the_report_is_final,
        a_dead_instance_is_taken_over_once_and_kept_when_it_comes_back,
        fingerprints_and_meta_round_trip,
    );

    fn new_entry(id: &ReportId, path: &str) -> NewEntry {
        NewEntry {
            report_id: id.clone(),
            message_id: Some("abc@example.org".into()),
            spool_path: path.into(),
            sender: Some("reporter@example.org".into()),
            subject: Some("XSS in werkzeug".into()),
            content_hash: None,
        }
    }

    fn a_report_moves_through_its_states_and_survives_reopening(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let id = ReportId("r1".into());
        let now = Utc::now();
        {
            let j = open(b, dir.path());
            let e = j.record_seen(&new_entry(&id, "/s/1.eml"), now).unwrap();
            assert_eq!(e.state, State::Seen);
            assert_eq!(e.reply, Reply::Pending);
            j.record_route(&id, "pallets/werkzeug", "alias", now)
                .unwrap();
            j.record_advisory(&id, "GHSA-2345-6789-cfgh", "https://x", now)
                .unwrap();
        }
        let j = open(b, dir.path());
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!(e.state, State::AdvisoryCreated);
        assert_eq!(e.ghsa_id.as_deref(), Some("GHSA-2345-6789-cfgh"));
        assert_eq!(e.repository.as_deref(), Some("pallets/werkzeug"));
        j.record_reply(&id, &Reply::Sent, Some(("ack@x", "r@example.org")), now)
            .unwrap();
        j.record_final(&id, State::Filed, None, now).unwrap();
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!(e.state, State::Filed);
        assert_eq!(e.reply, Reply::Sent);
        assert_eq!(e.reply_to.as_deref(), Some("r@example.org"));
        assert_eq!(e.reply_message_id.as_deref(), Some("ack@x"));
    }

    fn seeing_a_report_again_keeps_its_progress(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let id = ReportId("r2".into());
        let now = Utc::now();
        j.record_seen(&new_entry(&id, "/s/2.eml"), now).unwrap();
        j.record_advisory(&id, "GHSA-x", "u", now).unwrap();
        let again = j.record_seen(&new_entry(&id, "/s/2.eml"), now).unwrap();
        assert_eq!(again.state, State::AdvisoryCreated);
    }

    fn failures_count_attempts_and_a_success_resets_them(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let id = ReportId("r3".into());
        let now = Utc::now();
        j.record_seen(&new_entry(&id, "/s/3.eml"), now).unwrap();
        assert_eq!(j.record_failure(&id, "503", now, now).unwrap(), 1);
        assert_eq!(j.record_failure(&id, "503", now, now).unwrap(), 2);
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!(e.last_error.as_deref(), Some("503"));
        assert!(e.next_attempt_at.is_some());
        j.record_advisory(&id, "GHSA-y", "u", now).unwrap();
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!((e.attempts, e.next_attempt_at), (0, None));
        assert_eq!(j.recent(10, Some(State::AdvisoryCreated)).unwrap().len(), 1);
        assert!(j.recent(10, Some(State::Filed)).unwrap().is_empty());
    }

    fn an_unknown_state_or_a_broken_timestamp_is_an_error_not_a_default(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let now = Utc::now();
        let a = ReportId("a".into());
        let b = ReportId("b".into());
        j.record_seen(&new_entry(&a, "/s/a"), now).unwrap();
        j.record_seen(&new_entry(&b, "/s/b"), now).unwrap();
        j.exec(
            "UPDATE reports SET state = 'exploded' WHERE report_id = 'a'",
            &[],
        )
        .unwrap();
        j.exec(
            "UPDATE reports SET next_attempt_at = 'soon' WHERE report_id = 'b'",
            &[],
        )
        .unwrap();
        let e = j.get(&a).unwrap_err().to_string();
        assert!(e.contains("unknown state `exploded`"), "{e}");
        let e = j.get(&b).unwrap_err().to_string();
        assert!(
            e.contains("next_attempt_at `soon` is not a timestamp"),
            "{e}"
        );
    }

    fn a_rebuilt_record_is_written_whole(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(b, dir.path());
        let id = ReportId("lost".into());
        let e = j
            .record_rebuilt(&id, "pallets/flask", "GHSA-q", "u", Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(e.state, State::AdvisoryCreated);
        assert_eq!(e.ghsa_id.as_deref(), Some("GHSA-q"));
        assert_eq!(e.repository.as_deref(), Some("pallets/flask"));
    }

    #[allow(clippy::needless_pass_by_value)]
    fn per_sender_counts_ignore_case_and_follow_ups(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let now = Utc::now();
        let (r, f) = (ReportId("r".into()), ReportId("f".into()));
        j.record_seen(&new_entry(&r, "/s/r"), now).unwrap();
        j.record_advisory(&r, "GHSA-abcd", "u", now).unwrap();
        j.record_reply(&r, &Reply::Sent, Some(("m@x", "reporter@example.org")), now)
            .unwrap();
        j.record_seen(&new_entry(&f, "/s/f"), now).unwrap();
        j.record_thread(&f, &r, Some("pallets/flask"), now).unwrap();
        let since = now - chrono::Duration::hours(1);
        assert_eq!(j.advisories_from("REPORTER@example.org", since).unwrap(), 1);
        assert_eq!(j.replies_to("Reporter@Example.org", since).unwrap(), 1);
        assert_eq!(j.find_by_ghsa("ghsa-ABCD").unwrap().unwrap().report_id, r);
        assert_eq!(j.thread_senders(&r).unwrap(), vec!["reporter@example.org"]);
        assert!(j.last_reply_in_thread(&r).unwrap().is_some());
        let related = j.find_related(&["abc@example.org".into()], &[]).unwrap();
        assert_eq!(related.len(), 2);
        assert_eq!(
            j.find_related(&[], std::slice::from_ref(&f)).unwrap().len(),
            1
        );
    }

    fn one_instance_wins_a_claim_until_its_lease_runs_out_or_the_report_is_final(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let id = ReportId("claimed".into());
        let long = Duration::from_secs(3600);
        assert_eq!(j.claim(&id, "a", long).unwrap(), ClaimOutcome::Won);
        assert_eq!(
            j.claim(&id, "a", long).unwrap(),
            ClaimOutcome::Won,
            "its own claim"
        );
        match j.claim(&id, "b", long).unwrap() {
            ClaimOutcome::HeldBy { instance, .. } => assert_eq!(instance, "a"),
            other => panic!("b must not win a live claim: {other:?}"),
        }
        // Filed: the claim ends with it.
        j.record_seen(&new_entry(&id, "/s/c"), Utc::now()).unwrap();
        j.record_final(&id, State::Filed, None, Utc::now()).unwrap();
        assert_eq!(j.claim(&id, "b", long).unwrap(), ClaimOutcome::Won);
        // A lease that ran out goes to whoever asks next.
        let other = ReportId("expiring".into());
        assert_eq!(
            j.claim(&other, "a", Duration::ZERO).unwrap(),
            ClaimOutcome::Won
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(j.claim(&other, "b", long).unwrap(), ClaimOutcome::Won);
        assert!(matches!(
            j.claim(&other, "a", long).unwrap(),
            ClaimOutcome::HeldBy { .. }
        ));
    }

    fn a_dead_instance_is_taken_over_once_and_kept_when_it_comes_back(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(b, dir.path());
        let reg = |name: &str, lease: Duration| Registration {
            name: name.into(),
            claim_folder: format!("Processing.{name}"),
            lease,
        };
        let hour = Duration::from_secs(3600);
        j.register(&reg("dead", Duration::ZERO)).unwrap();
        let mail = ReportId("in-the-dead-ones-folder".into());
        assert_eq!(j.claim(&mail, "dead", hour).unwrap(), ClaimOutcome::Won);
        j.register(&reg("dead", Duration::ZERO)).unwrap();
        j.register(&reg("alive", hour)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let seen = j.instances().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().any(|i| i.name == "dead" && i.expired));
        assert!(seen.iter().any(|i| i.name == "alive" && !i.expired));
        let minute = Duration::from_secs(60);
        assert!(j.take_over("alive", "taker", minute).unwrap().is_none());
        let won = j.take_over("dead", "taker", minute).unwrap();
        assert!(won.is_some());
        assert!(
            j.take_over("dead", "other", minute).unwrap().is_none(),
            "one winner"
        );
        // Its claims went to the taker with its mail.
        match j.claim(&mail, "dead", minute).unwrap() {
            ClaimOutcome::HeldBy { instance, .. } => assert_eq!(instance, "taker"),
            other => panic!("the taker holds the dead one's claims: {other:?}"),
        }
        // It came back before the taker was done: it keeps its registration, and
        // renewing its leases does not take the claims back.
        std::thread::sleep(Duration::from_millis(5));
        j.register(&reg("dead", hour)).unwrap();
        j.forget_instance("dead", won.unwrap()).unwrap();
        assert_eq!(j.instances().unwrap().len(), 2);
        assert!(matches!(
            j.claim(&mail, "dead", minute).unwrap(),
            ClaimOutcome::HeldBy { .. }
        ));
        // Gone for good this time.
        j.register(&reg("dead", Duration::ZERO)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let won = j.take_over("dead", "taker", minute).unwrap().unwrap();
        j.forget_instance("dead", won).unwrap();
        let left: Vec<String> = j.instances().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(left, vec!["alive".to_owned()]);
    }

    fn fingerprints_and_meta_round_trip(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let j = open(b, dir.path());
        let now = Utc::now();
        let (a, c) = (ReportId("fa".into()), ReportId("fc".into()));
        j.record_seen(&new_entry(&a, "/s/a"), now).unwrap();
        j.record_advisory(&a, "GHSA-f", "https://a", now).unwrap();
        let bytes: Vec<u8> = (0..4096u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let fp = (1..=bytes.len() / 4)
            .find_map(|n| crate::triage::Fingerprint::from_stored("exact".into(), &bytes[..n * 4]))
            .expect("a fingerprint of some size");
        j.record_fingerprint(&a, &fp, "poc", Some(("GHSA-x", 0.75)), now)
            .unwrap();
        j.record_fingerprint(&a, &fp, "poc cvss", Some(("GHSA-x", 0.5)), now)
            .unwrap();
        let t = j.triage_of(&a).unwrap().unwrap();
        assert_eq!(t.signals, "poc cvss");
        assert_eq!(t.similarity, Some(0.5));
        let others = j.fingerprints_with_advisory(&c).unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].0, fp);
        assert!(j.fingerprints_with_advisory(&a).unwrap().is_empty());
        assert_eq!(j.meta("k").unwrap(), None);
        j.set_meta("k", "1").unwrap();
        j.set_meta("k", "2").unwrap();
        assert_eq!(j.meta("k").unwrap().as_deref(), Some("2"));
        assert!(j.set_meta_once("once", "a").unwrap());
        assert!(!j.set_meta_once("once", "b").unwrap());
        assert!(j.started_at().unwrap().is_some());
        assert_eq!(j.stored_schema_version().unwrap(), schema::latest() as i64);
        j.record_notice(&a, "published", "n@x", now).unwrap();
        j.record_notice(&a, "published", "n2@x", now).unwrap();
        assert!(j.notice_sent(&a, "published").unwrap());
        assert!(!j.notice_sent(&a, "cve").unwrap());
        assert_eq!(j.recent(10, None).unwrap().len(), 1);
        assert_eq!(
            j.stale_drafts(now + chrono::Duration::days(1))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn on_postgres_claims_from_many_connections_have_one_winner_each() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().display().to_string();
        // Migrate once first.
        drop(open(Backend::Postgres, dir.path()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let key = key.clone();
                std::thread::spawn(move || {
                    let db = Db::connect(
                        crate::journal::testing::pg_target(&key),
                        Arc::default(),
                        Arc::default(),
                    )
                    .unwrap();
                    (0..60)
                        .filter(|i| {
                            let id = ReportId(format!("race-{i}"));
                            db.claim(&id, &format!("i{t}"), Duration::from_secs(600))
                                .unwrap()
                                == ClaimOutcome::Won
                        })
                        .count()
                })
            })
            .collect();
        let won: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(won, 60, "each report has exactly one winner");
    }

    #[test]
    fn on_postgres_one_connection_leads_and_another_takes_over_when_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(Backend::Postgres, dir.path());
        let b = open(Backend::Postgres, dir.path());
        // The lock is the journal's (its schema's): other tests' journals do not hold it.
        assert!(a.try_lead().unwrap());
        assert!(!b.try_lead().unwrap(), "never two leaders");
        assert!(a.try_lead().unwrap(), "a leader stays one");
        drop(a);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !b.try_lead().unwrap() {
            assert!(std::time::Instant::now() < deadline, "b never took over");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_sqlite_journal_never_makes_healthz_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let j = crate::journal::Journal::open(dir.path()).unwrap();
        assert!(j.reachable());
        let m = crate::metrics::Metrics::new();
        m.watch_journal(j.reachable_flag());
        m.set_mailbox_connected(true);
        assert!(m.health().is_ok(), "{:?}", m.health());
    }

    #[test]
    fn sqlite_always_leads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(Backend::Sqlite, dir.path()).try_lead().unwrap());
    }
}
