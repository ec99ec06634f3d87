//! The journal's SQL: one connection, used only from the journal's thread.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{AdvisoryState, Entry, JournalError, JournalFault, NewEntry, Reply, State, schema};
use crate::mail::ReportId;

const COLUMNS: &str = "report_id, message_id, state, first_seen_at, updated_at, spool_path, \
    sender, subject, repository, route_reason, ghsa_id, advisory_url, reply, \
    reply_message_id, outcome, attempts, next_attempt_at, last_error, thread_of, reply_to, \
    github_state, cve_id, released, content_hash, held_received_at";

/// The journal's database connection with the typed operations on it.
pub struct Db {
    conn: Connection,
    path: String,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A row as stored, before its values are checked.
struct Row {
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
    attempts: u32,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    thread_of: Option<String>,
    reply_to: Option<String>,
    github_state: Option<String>,
    cve_id: Option<String>,
    released: bool,
    content_hash: Option<String>,
    held_received_at: Option<String>,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        report_id: row.get(0)?,
        message_id: row.get(1)?,
        state: row.get(2)?,
        first_seen_at: row.get(3)?,
        updated_at: row.get(4)?,
        spool_path: row.get(5)?,
        sender: row.get(6)?,
        subject: row.get(7)?,
        repository: row.get(8)?,
        route_reason: row.get(9)?,
        ghsa_id: row.get(10)?,
        advisory_url: row.get(11)?,
        reply: row.get(12)?,
        reply_message_id: row.get(13)?,
        outcome: row.get(14)?,
        attempts: row.get(15)?,
        next_attempt_at: row.get(16)?,
        last_error: row.get(17)?,
        thread_of: row.get(18)?,
        reply_to: row.get(19)?,
        github_state: row.get(20)?,
        cve_id: row.get(21)?,
        released: row.get(22)?,
        content_hash: row.get(23)?,
        held_received_at: row.get(24)?,
    })
}

impl Db {
    /// Opens the database file, sets durability and migrates the schema.
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
            conn,
            path: display.to_owned(),
        })
    }

    fn wrap(&self, source: rusqlite::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            fault: source.into(),
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

    fn time(&self, id: &str, column: &str, value: &str) -> Result<DateTime<Utc>, JournalError> {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| self.corrupt(id, format!("{column} `{value}` is not a timestamp ({e})")))
    }

    fn entry(&self, r: Row) -> Result<Entry, JournalError> {
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
            released: r.released,
            attempts: r.attempts,
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

    fn one(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Option<Entry>, JournalError> {
        let row = self
            .conn
            .query_row(sql, params, read_row)
            .optional()
            .map_err(|e| self.wrap(e))?;
        row.map(|r| self.entry(r)).transpose()
    }

    fn many(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Vec<Entry>, JournalError> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params, read_row)
            .map_err(|e| self.wrap(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.wrap(e))?;
        rows.into_iter().map(|r| self.entry(r)).collect()
    }

    /// The record of a report, if any.
    pub fn get(&self, id: &ReportId) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!("SELECT {COLUMNS} FROM reports WHERE report_id = ?1"),
            &[&id.0],
        )
    }

    /// Records a report seen for the first time; an existing record is left alone.
    /// Returns the record as it now stands.
    pub fn record_seen(&self, new: &NewEntry, now: DateTime<Utc>) -> Result<Entry, JournalError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO reports
                 (report_id, message_id, state, first_seen_at, updated_at, spool_path, sender,
                  subject, content_hash)
                 VALUES (?1, ?2, 'seen', ?3, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.report_id.0,
                    new.message_id,
                    ts(now),
                    new.spool_path,
                    new.sender,
                    new.subject,
                    new.content_hash,
                ],
            )
            .map_err(|e| self.wrap(e))?;
        // A report journaled before content hashes existed learns its hash now, and one
        // rebuilt from its advisory (journal lost) what only its message tells.
        self.conn
            .execute(
                "UPDATE reports SET content_hash = COALESCE(content_hash, ?2),
                 message_id = COALESCE(message_id, ?3), sender = COALESCE(sender, ?4),
                 subject = COALESCE(subject, ?5),
                 spool_path = CASE WHEN spool_path = '' THEN ?6 ELSE spool_path END
                 WHERE report_id = ?1",
                params![
                    new.report_id.0,
                    new.content_hash,
                    new.message_id,
                    new.sender,
                    new.subject,
                    new.spool_path
                ],
            )
            .map_err(|e| self.wrap(e))?;
        self.get(&new.report_id)?
            .ok_or_else(|| self.wrap(rusqlite::Error::QueryReturnedNoRows))
    }

    fn update(
        &self,
        id: &ReportId,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        let sql = format!("UPDATE reports SET {set}, updated_at = ?1 WHERE report_id = ?2");
        let now = ts(now);
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&now, &id.0];
        all.extend_from_slice(values);
        self.conn
            .execute(&sql, all.as_slice())
            .map_err(|e| self.wrap(e))?;
        Ok(())
    }

    /// The report (not a follow-up) with this `Message-ID`, if any.
    pub fn find_by_message_id(&self, message_id: &str) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE message_id = ?1
                 ORDER BY first_seen_at LIMIT 1"
            ),
            &[&message_id],
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
        let values: Vec<&dyn rusqlite::ToSql> = message_ids
            .iter()
            .map(|m| m as &dyn rusqlite::ToSql)
            .chain(report_ids.iter().map(|r| &r.0 as &dyn rusqlite::ToSql))
            .collect();
        self.many(&sql, &values)
    }

    /// The report whose advisory has this GHSA id (the original, not a follow-up).
    pub fn find_by_ghsa(&self, ghsa_id: &str) -> Result<Option<Entry>, JournalError> {
        self.one(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE ghsa_id = ?1 COLLATE NOCASE
                 AND thread_of IS NULL ORDER BY first_seen_at LIMIT 1"
            ),
            &[&ghsa_id],
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
            &[&original.0, &repository],
            now,
        )
    }

    /// The senders (lower-cased) a thread already includes: the report's, and those of
    /// follow-ups that were added to its advisory.
    pub fn thread_senders(&self, original: &ReportId) -> Result<Vec<String>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT lower(trim(sender)) FROM reports WHERE sender IS NOT NULL
                 AND (report_id = ?1 OR (thread_of = ?1 AND ghsa_id IS NOT NULL))",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([&original.0], |row| row.get(0))
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.wrap(e))
    }

    /// When the last reply in a thread (the report and its follow-ups) was sent.
    pub fn last_reply_in_thread(
        &self,
        original: &ReportId,
    ) -> Result<Option<DateTime<Utc>>, JournalError> {
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT MAX(replied_at) FROM reports WHERE report_id = ?1 OR thread_of = ?1",
                [&original.0],
                |row| row.get(0),
            )
            .map_err(|e| self.wrap(e))?;
        t.map(|t| self.time(&original.0, "replied_at", &t))
            .transpose()
    }

    /// Reports (not follow-ups) from `sender` first seen since `since` that got an
    /// advisory: what the per-sender advisory limit counts.
    pub fn advisories_from(&self, sender: &str, since: DateTime<Utc>) -> Result<u32, JournalError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM reports WHERE sender = ?1 COLLATE NOCASE
                 AND thread_of IS NULL AND ghsa_id IS NOT NULL AND first_seen_at >= ?2",
                params![sender, ts(since)],
                |row| row.get(0),
            )
            .map_err(|e| self.wrap(e))
    }

    /// Replies sent since `since` for messages from `sender`: what the per-sender reply
    /// limit counts.
    pub fn replies_to(&self, sender: &str, since: DateTime<Utc>) -> Result<u32, JournalError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM reports WHERE sender = ?1 COLLATE NOCASE
                 AND replied_at >= ?2",
                params![sender, ts(since)],
                |row| row.get(0),
            )
            .map_err(|e| self.wrap(e))
    }

    /// A held report a person moved back to the inbox: it starts over, exempt from the
    /// per-sender limits.
    pub fn record_released(&self, id: &ReportId, now: DateTime<Utc>) -> Result<(), JournalError> {
        self.update(
            id,
            "state = 'seen', released = 1, outcome = NULL, next_attempt_at = NULL",
            &[],
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
        self.update(id, "sender = COALESCE(sender, ?3)", &[&sender], now)
    }

    /// Records when the server received a message about to be held.
    pub fn record_held_received_at(
        &self,
        id: &ReportId,
        received_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(id, "held_received_at = ?3", &[&received_at.map(ts)], now)
    }

    /// A value kept between runs (e.g. the watcher's watermark per repository).
    pub fn meta(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.wrap(e))
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
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// Reports (not follow-ups) in `repository` that have an advisory: what the watcher
    /// compares GitHub's list with.
    pub fn reports_with_advisory(&self, repository: &str) -> Result<Vec<Entry>, JournalError> {
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM reports WHERE repository = ?1 COLLATE NOCASE
                 AND thread_of IS NULL AND ghsa_id IS NOT NULL"
            ),
            &[&repository],
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
            &[&state.as_str(), &cve_id, &changed],
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
        self.conn
            .execute(
                "INSERT OR REPLACE INTO fingerprints
                 (report_id, exact, minhash, signals, duplicate_of, similarity, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id.0,
                    fingerprint.exact,
                    fingerprint.minhash_bytes(),
                    signals,
                    duplicate.map(|d| d.0),
                    duplicate.map(|d| d.1),
                    ts(now)
                ],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
    }

    /// The fingerprints of every other report that has an advisory, with its GHSA id,
    /// repository and URL: what a new report is compared with.
    pub fn fingerprints_with_advisory(
        &self,
        except: &ReportId,
    ) -> Result<Vec<(crate::triage::Fingerprint, String, String, String)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT f.exact, f.minhash, r.ghsa_id, COALESCE(r.repository, ''),
                        COALESCE(r.advisory_url, '')
                 FROM fingerprints f JOIN reports r ON r.report_id = f.report_id
                 WHERE r.ghsa_id IS NOT NULL AND r.thread_of IS NULL AND f.report_id != ?1",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params![except.0], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (exact, bytes, ghsa, repository, url) = row.map_err(|e| self.wrap(e))?;
            let fingerprint = crate::triage::Fingerprint::from_stored(exact, &bytes)
                .ok_or_else(|| self.corrupt(&ghsa, "a fingerprint of the wrong size".into()))?;
            out.push((fingerprint, ghsa, repository, url));
        }
        Ok(out)
    }

    /// A report's triage record: its signals, and the advisory it probably repeats with
    /// the similarity.
    pub fn triage_of(&self, id: &ReportId) -> Result<Option<super::TriageRecord>, JournalError> {
        self.conn
            .query_row(
                "SELECT signals, duplicate_of, similarity FROM fingerprints WHERE report_id = ?1",
                params![id.0],
                |row| {
                    Ok(super::TriageRecord {
                        signals: row.get(0)?,
                        duplicate_of: row.get(1)?,
                        similarity: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.wrap(e))
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
            &[&ts(cutoff)],
        )
    }

    /// True when the notice for `event` already went out for this report.
    pub fn notice_sent(&self, id: &ReportId, event: &str) -> Result<bool, JournalError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM notices WHERE report_id = ?1 AND event = ?2",
                params![id.0, event],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.wrap(e))
    }

    /// Records a notice the SMTP server accepted.
    pub fn record_notice(
        &self,
        id: &ReportId,
        event: &str,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO notices (report_id, event, sent_at, message_id)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id.0, event, ts(now), message_id],
            )
            .map(|_| ())
            .map_err(|e| self.wrap(e))
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
            &[&repository, &reason],
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
            &[&ghsa_id, &url],
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
             replied_at = CASE WHEN ?4 IS NULL THEN replied_at ELSE ?1 END, \
             reply_to = COALESCE(?5, reply_to)",
            &[&reply.encode(), &message_id, &to],
            now,
        )
    }

    /// Records a final state (filed, ignored, quarantined), or holding / held, with its
    /// reason.
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
        self.update(
            id,
            "state = ?3, outcome = COALESCE(?4, outcome), next_attempt_at = NULL",
            &[&state.as_str(), &outcome],
            now,
        )
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
            &[&error, &ts(next_attempt_at)],
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
        let tx = self.conn.transaction().map_err(|e| JournalError {
            path: self.path.clone(),
            fault: e.into(),
        })?;
        tx.execute(
            "INSERT OR IGNORE INTO reports
             (report_id, state, first_seen_at, updated_at, spool_path)
             VALUES (?1, 'seen', ?2, ?2, '')",
            params![id.0, ts(now)],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE reports SET state = 'advisory_created', repository = ?2,
                 route_reason = 'rebuilt from its advisory', ghsa_id = ?3, advisory_url = ?4,
                 attempts = 0, next_attempt_at = NULL, last_error = NULL, updated_at = ?5
                 WHERE report_id = ?1",
                params![id.0, repository, ghsa_id, url, ts(now)],
            )
        })
        .and_then(|_| tx.commit())
        .map_err(|e| self.wrap(e))?;
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
                "SELECT {COLUMNS} FROM reports WHERE (?1 IS NULL OR state = ?1)
                 ORDER BY updated_at DESC LIMIT ?2"
            ),
            &[&state.map(State::as_str), &limit],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Db {
        let path = dir.join("journal.sqlite3");
        Db::open(&path, &path.display().to_string()).unwrap()
    }

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

    #[test]
    fn a_report_moves_through_its_states_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = ReportId("r1".into());
        let now = Utc::now();
        {
            let j = open(dir.path());
            let e = j.record_seen(&new_entry(&id, "/s/1.eml"), now).unwrap();
            assert_eq!(e.state, State::Seen);
            assert_eq!(e.reply, Reply::Pending);
            j.record_route(&id, "pallets/werkzeug", "alias", now)
                .unwrap();
            j.record_advisory(&id, "GHSA-2345-6789-cfgh", "https://x", now)
                .unwrap();
        }
        let j = open(dir.path());
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

    #[test]
    fn seeing_a_report_again_keeps_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let id = ReportId("r2".into());
        let now = Utc::now();
        j.record_seen(&new_entry(&id, "/s/2.eml"), now).unwrap();
        j.record_advisory(&id, "GHSA-x", "u", now).unwrap();
        let again = j.record_seen(&new_entry(&id, "/s/2.eml"), now).unwrap();
        assert_eq!(again.state, State::AdvisoryCreated);
    }

    #[test]
    fn failures_count_attempts_and_a_success_resets_them() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
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

    #[test]
    fn an_unknown_state_or_a_broken_timestamp_is_an_error_not_a_default() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let now = Utc::now();
        let a = ReportId("a".into());
        let b = ReportId("b".into());
        j.record_seen(&new_entry(&a, "/s/a"), now).unwrap();
        j.record_seen(&new_entry(&b, "/s/b"), now).unwrap();
        j.conn
            .execute(
                "UPDATE reports SET state = 'exploded' WHERE report_id = 'a'",
                [],
            )
            .unwrap();
        j.conn
            .execute(
                "UPDATE reports SET next_attempt_at = 'soon' WHERE report_id = 'b'",
                [],
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

    #[test]
    fn a_rebuilt_record_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = open(dir.path());
        let id = ReportId("lost".into());
        let e = j
            .record_rebuilt(&id, "pallets/flask", "GHSA-q", "u", Utc::now())
            .unwrap()
            .unwrap();
        assert_eq!(e.state, State::AdvisoryCreated);
        assert_eq!(e.ghsa_id.as_deref(), Some("GHSA-q"));
        assert_eq!(e.repository.as_deref(), Some("pallets/flask"));
    }
}
