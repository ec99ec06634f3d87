//! The SQLite journal in the state directory: what happened to each report, step by step,
//! with attempts, the next retry time and the outcome.
//!
//! The journal makes recovery fast and records outcomes; GitHub and the mailbox remain
//! the truth (a lost journal cannot cause a duplicate advisory: see `daemon`). Each
//! record is one small transaction, committed before the daemon moves on, so a crash
//! loses at most the step in flight.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::mail::ReportId;

/// A journal that cannot be opened or written. The daemon stops on it: without a
/// working journal it could not keep its promises.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}; check that the state directory is writable and not full")]
pub struct JournalError {
    /// The database file.
    pub path: String,
    /// SQLite's error.
    pub source: rusqlite::Error,
}

/// Where a report stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spooled and parsed; no advisory yet (or its creation's outcome is unknown).
    Seen,
    /// The draft advisory exists.
    AdvisoryCreated,
    /// The reply was sent or deliberately not sent.
    Acknowledged,
    /// Moved to the processed folder: done.
    Filed,
    /// Noise, moved to the ignored folder.
    Ignored,
    /// Could not be handled, moved to the quarantine folder.
    Quarantined,
    /// Over a per-sender limit, moved to the held folder for a person; moving it back to
    /// the inbox releases it.
    Held,
}

impl State {
    /// The name stored in the database and shown by `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Seen => "seen",
            State::AdvisoryCreated => "advisory_created",
            State::Acknowledged => "acknowledged",
            State::Filed => "filed",
            State::Ignored => "ignored",
            State::Quarantined => "quarantined",
            State::Held => "held",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "advisory_created" => State::AdvisoryCreated,
            "acknowledged" => State::Acknowledged,
            "filed" => State::Filed,
            "ignored" => State::Ignored,
            "quarantined" => State::Quarantined,
            "held" => State::Held,
            _ => State::Seen,
        }
    }

    /// Every state, for parsing `status --state`.
    pub const ALL: [State; 7] = [
        State::Seen,
        State::AdvisoryCreated,
        State::Acknowledged,
        State::Filed,
        State::Ignored,
        State::Quarantined,
        State::Held,
    ];

    /// True once the message has left the watched mailbox for good.
    pub fn is_final(self) -> bool {
        matches!(self, State::Filed | State::Ignored | State::Quarantined)
    }
}

/// One report's journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The report's identity.
    pub report_id: ReportId,
    /// Its `Message-ID`, if any.
    pub message_id: Option<String>,
    /// Where it stands.
    pub state: State,
    /// When we first saw it.
    pub first_seen_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The spooled raw message.
    pub spool_path: String,
    /// The reporter's address (kept here, never in the advisory unless configured).
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// `owner/name` it was routed to.
    pub repository: Option<String>,
    /// Why that repository.
    pub route_reason: Option<String>,
    /// The advisory's GHSA id.
    pub ghsa_id: Option<String>,
    /// The advisory's page.
    pub advisory_url: Option<String>,
    /// `sent`, `suppressed: <reason>`, or `None` while pending.
    pub reply: Option<String>,
    /// The reply's `Message-ID`.
    pub reply_message_id: Option<String>,
    /// Why it was ignored or quarantined.
    pub outcome: Option<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this time may the next attempt run.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// For a follow-up: the report whose advisory it was added to.
    pub thread_of: Option<ReportId>,
    /// The address the acknowledgement went to (notices go there too).
    pub reply_to: Option<String>,
    /// The advisory's state on GitHub as last seen by the watcher.
    pub github_state: Option<String>,
    /// The advisory's CVE id as last seen by the watcher.
    pub cve_id: Option<String>,
}

/// What is known about a report when first seen.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Identity.
    pub report_id: &'a ReportId,
    /// `Message-ID`.
    pub message_id: Option<&'a str>,
    /// The spooled raw message.
    pub spool_path: &'a Path,
    /// The reporter's address.
    pub sender: Option<&'a str>,
    /// The subject.
    pub subject: Option<&'a str>,
}

/// The journal: one SQLite database in the state directory.
pub struct Journal {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
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
CREATE INDEX IF NOT EXISTS reports_by_update ON reports(updated_at);
CREATE INDEX IF NOT EXISTS reports_by_message_id ON reports(message_id);
CREATE INDEX IF NOT EXISTS reports_by_ghsa ON reports(ghsa_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

const COLUMNS: &str = "report_id, message_id, state, first_seen_at, updated_at, spool_path, \
    sender, subject, repository, route_reason, ghsa_id, advisory_url, reply, \
    reply_message_id, outcome, attempts, next_attempt_at, last_error, thread_of, reply_to, \
    github_state, cve_id";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        report_id: ReportId(row.get(0)?),
        message_id: row.get(1)?,
        state: State::parse(&row.get::<_, String>(2)?),
        first_seen_at: parse_ts(&row.get::<_, String>(3)?),
        updated_at: parse_ts(&row.get::<_, String>(4)?),
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
        next_attempt_at: row.get::<_, Option<String>>(16)?.map(|s| parse_ts(&s)),
        last_error: row.get(17)?,
        thread_of: row.get::<_, Option<String>>(18)?.map(ReportId),
        reply_to: row.get(19)?,
        github_state: row.get(20)?,
        cve_id: row.get(21)?,
    })
}

impl Journal {
    /// Opens (creating) `state_dir/journal.sqlite3`.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let path = state_dir.join("journal.sqlite3");
        let display = path.display().to_string();
        let wrap = |source| JournalError {
            path: display.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(wrap)?;
        // WAL + synchronous=FULL: every committed record survives a power cut.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(wrap)?;
        conn.execute_batch(SCHEMA).map_err(wrap)?;
        Ok(Journal {
            conn,
            path: display,
        })
    }

    fn wrap(&self, source: rusqlite::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
    }

    /// The record of a report, if any.
    pub fn get(&self, id: &ReportId) -> Result<Option<Entry>, JournalError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM reports WHERE report_id = ?1"),
                [&id.0],
                row_to_entry,
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Records a report seen for the first time; an existing record is left alone.
    /// Returns the record as it now stands.
    pub fn record_seen(
        &self,
        new: &NewEntry<'_>,
        now: DateTime<Utc>,
    ) -> Result<Entry, JournalError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO reports
                 (report_id, message_id, state, first_seen_at, updated_at, spool_path, sender, subject)
                 VALUES (?1, ?2, 'seen', ?3, ?3, ?4, ?5, ?6)",
                params![
                    new.report_id.0,
                    new.message_id,
                    ts(now),
                    new.spool_path.display().to_string(),
                    new.sender,
                    new.subject,
                ],
            )
            .map_err(|e| self.wrap(e))?;
        self.get(new.report_id)?
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
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM reports WHERE message_id = ?1
                     ORDER BY first_seen_at LIMIT 1"
                ),
                [message_id],
                row_to_entry,
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// The report whose advisory has this GHSA id (the original, not a follow-up).
    pub fn find_by_ghsa(&self, ghsa_id: &str) -> Result<Option<Entry>, JournalError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM reports WHERE ghsa_id = ?1 COLLATE NOCASE
                     AND thread_of IS NULL ORDER BY first_seen_at LIMIT 1"
                ),
                [ghsa_id],
                row_to_entry,
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Records that a message is a follow-up to `original`, added to its advisory.
    pub fn record_thread(
        &self,
        id: &ReportId,
        original: &ReportId,
        repository: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "thread_of = ?3, repository = ?4, route_reason = 'follow-up'",
            &[&original.0, &repository],
            now,
        )
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
        Ok(t.map(|t| parse_ts(&t)))
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
            "state = 'seen', outcome = 'released', next_attempt_at = NULL",
            &[],
            now,
        )
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

    /// Records the address a reply went to.
    pub fn record_reply_to(
        &self,
        id: &ReportId,
        address: &str,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(id, "reply_to = ?3", &[&address], now)
    }

    /// Reports (not follow-ups) in `repository` that have an advisory: what the watcher
    /// compares GitHub's list with.
    pub fn reports_with_advisory(&self, repository: &str) -> Result<Vec<Entry>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM reports WHERE repository = ?1 COLLATE NOCASE
                 AND thread_of IS NULL AND ghsa_id IS NOT NULL"
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([repository], row_to_entry)
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.wrap(e))
    }

    /// Records the advisory's state and CVE id as GitHub shows them now.
    pub fn record_github_state(
        &self,
        id: &ReportId,
        state: &str,
        cve_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "github_state = ?3, cve_id = ?4",
            &[&state, &cve_id],
            now,
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

    /// Records the reply: `sent` with its `Message-ID`, or `suppressed: <reason>`.
    pub fn record_reply(
        &self,
        id: &ReportId,
        reply: &str,
        message_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        self.update(
            id,
            "state = 'acknowledged', reply = ?3, reply_message_id = ?4, attempts = 0, \
             next_attempt_at = NULL, last_error = NULL, \
             replied_at = CASE WHEN ?4 IS NULL THEN replied_at ELSE ?1 END",
            &[&reply, &message_id],
            now,
        )
    }

    /// Records a final state (filed, ignored or quarantined) with its reason.
    pub fn record_final(
        &self,
        id: &ReportId,
        state: State,
        outcome: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), JournalError> {
        debug_assert!(
            state.is_final() || state == State::Held,
            "record_final takes a final state"
        );
        self.update(
            id,
            "state = ?3, outcome = COALESCE(?4, outcome), next_attempt_at = NULL",
            &[&state.as_str(), &outcome],
            now,
        )
    }

    /// Records a transient failure and when to try again; returns the attempt count.
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

    /// The most recently changed reports, newest first, optionally only in one state.
    pub fn recent(&self, limit: usize, state: Option<State>) -> Result<Vec<Entry>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM reports WHERE (?1 IS NULL OR state = ?1)
                 ORDER BY updated_at DESC LIMIT ?2"
            ))
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(
                params![state.map(State::as_str), limit as i64],
                row_to_entry,
            )
            .map_err(|e| self.wrap(e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.wrap(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_entry<'a>(id: &'a ReportId, path: &'a Path) -> NewEntry<'a> {
        NewEntry {
            report_id: id,
            message_id: Some("abc@example.org"),
            spool_path: path,
            sender: Some("reporter@example.org"),
            subject: Some("XSS in werkzeug"),
        }
    }

    #[test]
    fn a_report_moves_through_its_states_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = ReportId("r1".into());
        let now = Utc::now();
        {
            let j = Journal::open(dir.path()).unwrap();
            let e = j
                .record_seen(&new_entry(&id, Path::new("/s/1.eml")), now)
                .unwrap();
            assert_eq!(e.state, State::Seen);
            j.record_route(&id, "pallets/werkzeug", "alias", now)
                .unwrap();
            j.record_advisory(&id, "GHSA-2345-6789-cfgh", "https://x", now)
                .unwrap();
        }
        let j = Journal::open(dir.path()).unwrap();
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!(e.state, State::AdvisoryCreated);
        assert_eq!(e.ghsa_id.as_deref(), Some("GHSA-2345-6789-cfgh"));
        assert_eq!(e.repository.as_deref(), Some("pallets/werkzeug"));
        j.record_reply(&id, "sent", Some("ack@x"), now).unwrap();
        j.record_final(&id, State::Filed, None, now).unwrap();
        let e = j.get(&id).unwrap().unwrap();
        assert_eq!(e.state, State::Filed);
        assert_eq!(e.reply.as_deref(), Some("sent"));
    }

    #[test]
    fn seeing_a_report_again_keeps_its_progress() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = ReportId("r2".into());
        let now = Utc::now();
        j.record_seen(&new_entry(&id, Path::new("/s/2.eml")), now)
            .unwrap();
        j.record_advisory(&id, "GHSA-x", "u", now).unwrap();
        let again = j
            .record_seen(&new_entry(&id, Path::new("/s/2.eml")), now)
            .unwrap();
        assert_eq!(again.state, State::AdvisoryCreated);
    }

    #[test]
    fn failures_count_attempts_and_a_success_resets_them() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = ReportId("r3".into());
        let now = Utc::now();
        j.record_seen(&new_entry(&id, Path::new("/s/3.eml")), now)
            .unwrap();
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
}
