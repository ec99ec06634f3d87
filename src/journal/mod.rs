//! The journal: what happened to each report, step by step, with attempts, the next
//! retry time and the outcome. SQLite in the state directory by default; with
//! `[journal] url` a PostgreSQL database shared by several instances, which also
//! coordinates them (claims with leases, one watcher: see `Db::claim`).
//!
//! The journal makes recovery fast and records outcomes; GitHub and the mailbox remain
//! the truth (a lost journal cannot cause a duplicate advisory: see `engine`). Every
//! record is committed (WAL, `synchronous=NORMAL`: durable against a crash at once, against
//! a power cut at the next `Spool::sync`) before the caller moves on; a step that
//! writes several records does so in one transaction, so a crash loses at most the step
//! in flight and never leaves half of one.
//!
//! All database work runs on one dedicated thread ([`Journal::call`]), so fsyncs and
//! round trips never block the async runtime. With PostgreSQL a lost connection is
//! waited out on that thread (callers wait, `/healthz` says so) and the operation runs
//! again once the database is back. The schema is versioned (`schema`): a journal written by an
//! earlier release is migrated on open. A value the journal cannot read back (an unknown
//! state, a broken timestamp) is an error, never a default.

mod db;
pub mod pg;
mod schema;
mod sql;
#[cfg(test)]
pub(crate) mod testing;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use crate::mail::ReportId;

pub use db::{ClaimOutcome, Db, InstanceInfo, Registration};
pub use pg::PgTarget;
pub use sql::Backend;

/// A journal that cannot be opened, read or written. The daemon stops on it: without a
/// working journal it could not keep its promises.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {fault}")]
pub struct JournalError {
    /// The database file.
    pub path: String,
    /// What went wrong.
    pub fault: JournalFault,
}

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalFault {
    /// SQLite refused.
    #[error("{0}; check that the state directory is writable and not full")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement.
    #[error("{}; check the database's log", pg::describe(.0))]
    Postgres(#[from] postgres::Error),
    /// The PostgreSQL journal cannot be reached at start.
    #[error(
        "cannot connect: {}; check [journal] url (host, port, user, database), the password in journal.password_file or journal.password_env, journal.tls and journal.ca_file, and that the database is up",
        pg::describe(.0)
    )]
    Unreachable(#[source] postgres::Error),
    /// The PostgreSQL journal's schema cannot be used.
    #[error("cannot migrate the schema: {0}")]
    PgSchema(#[from] pg::PgSchemaError),
    /// The schema could not be brought to this release's version.
    #[error(
        "cannot migrate the schema: {0}; a journal from a newer advisory-bridge cannot be opened by an older one"
    )]
    Migration(#[from] rusqlite_migration::Error),
    /// A stored value this release cannot read.
    #[error("report {report_id}: {message}; the journal was changed by hand or is damaged")]
    Corrupt {
        /// The report whose record is broken.
        report_id: String,
        /// What is wrong with it.
        message: String,
    },
    /// `[journal]` is set but unusable.
    #[error("{0}")]
    Config(String),
    /// The journal's thread is gone (it panicked, or the journal was closed).
    #[error("the journal's thread has stopped")]
    Stopped,
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
    /// Over a per-sender limit and on its way to the held folder: a crash before the
    /// move finishes the move at the next start rather than reading it as released.
    Holding,
    /// Over a per-sender limit, in the held folder for a person; moving it back to the
    /// inbox releases it.
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
            State::Holding => "holding",
            State::Held => "held",
        }
    }

    /// The state named `s`, if it is one.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Every state, for parsing `status --state`.
    pub const ALL: [State; 8] = [
        State::Seen,
        State::AdvisoryCreated,
        State::Acknowledged,
        State::Filed,
        State::Ignored,
        State::Quarantined,
        State::Holding,
        State::Held,
    ];

    /// True once the message has left the watched mailbox for good.
    pub fn is_final(self) -> bool {
        matches!(self, State::Filed | State::Ignored | State::Quarantined)
    }
}

/// What became of a report's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Not decided yet.
    Pending,
    /// The SMTP server accepted it.
    Sent,
    /// Deliberately not sent, and why.
    Suppressed(String),
}

impl Reply {
    /// The stored form: `sent` or `suppressed: <reason>`; `None` while pending.
    fn encode(&self) -> Option<String> {
        match self {
            Reply::Pending => None,
            Reply::Sent => Some("sent".into()),
            Reply::Suppressed(reason) => Some(format!("suppressed: {reason}")),
        }
    }

    /// Reads the stored form back; `None` for text this release never writes.
    fn decode(stored: Option<&str>) -> Option<Reply> {
        match stored {
            None => Some(Reply::Pending),
            Some("sent") => Some(Reply::Sent),
            Some(s) => s
                .strip_prefix("suppressed: ")
                .map(|r| Reply::Suppressed(r.to_owned())),
        }
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Pending => f.write_str("pending"),
            Reply::Sent => f.write_str("sent"),
            Reply::Suppressed(reason) => write!(f, "suppressed: {reason}"),
        }
    }
}

/// An advisory's state on GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryState {
    /// A private vulnerability report waiting for triage.
    Triage,
    /// A draft only maintainers see.
    Draft,
    /// Public.
    Published,
    /// Closed without publication.
    Closed,
    /// Published, then withdrawn.
    Withdrawn,
}

impl AdvisoryState {
    /// GitHub's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvisoryState::Triage => "triage",
            AdvisoryState::Draft => "draft",
            AdvisoryState::Published => "published",
            AdvisoryState::Closed => "closed",
            AdvisoryState::Withdrawn => "withdrawn",
        }
    }

    /// The state GitHub calls `s`, if it is one we know.
    pub fn parse(s: &str) -> Option<AdvisoryState> {
        [
            AdvisoryState::Triage,
            AdvisoryState::Draft,
            AdvisoryState::Published,
            AdvisoryState::Closed,
            AdvisoryState::Withdrawn,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
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
    /// What became of the reply.
    pub reply: Reply,
    /// The reply's `Message-ID`.
    pub reply_message_id: Option<String>,
    /// Why it was ignored, quarantined or held.
    pub outcome: Option<String>,
    /// A person moved it out of the held folder: exempt from the per-sender limits.
    pub released: bool,
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
    pub github_state: Option<AdvisoryState>,
    /// The advisory's CVE id as last seen by the watcher.
    pub cve_id: Option<String>,
    /// What the message says (`mail::content_hash`); unknown for reports journaled by
    /// releases before 0.2.
    pub content_hash: Option<String>,
    /// For a held report: when the server received the held message (its IMAP
    /// INTERNALDATE, which a move keeps).
    pub held_received_at: Option<DateTime<Utc>>,
}

/// What the triage shield recorded of a report (`triage`).
#[derive(Debug, Clone, PartialEq)]
pub struct TriageRecord {
    /// The signals found, one word each (`poc version cvss cwe file`).
    pub signals: String,
    /// The GHSA id of the earlier report it probably repeats.
    pub duplicate_of: Option<String>,
    /// How similar to it, 0 to 1.
    pub similarity: Option<f64>,
}

/// What is known about a report when first seen.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Identity.
    pub report_id: ReportId,
    /// `Message-ID`.
    pub message_id: Option<String>,
    /// The spooled raw message.
    pub spool_path: String,
    /// The reporter's address.
    pub sender: Option<String>,
    /// The subject.
    pub subject: Option<String>,
    /// What the message says (`mail::content_hash`).
    pub content_hash: Option<String>,
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The journal: an async handle to one SQLite database in the state directory, served by
/// a dedicated thread. Cloning the handle shares the thread; it ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Journal {
    jobs: std::sync::mpsc::Sender<Job>,
    path: Arc<str>,
    backend: Backend,
    /// False while the database cannot be reached.
    reachable: Arc<AtomicBool>,
    /// Set when the daemon stops: waits for the database give up.
    stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (creating) `state_dir/journal.sqlite3` on its own thread and migrates it to
    /// this release's schema.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let path = state_dir.join("journal.sqlite3");
        let display: Arc<str> = path.display().to_string().into();
        let thread_path = display.clone();
        Journal::spawn(
            display,
            Backend::Sqlite,
            // A local file is always reachable; `/healthz` never reports it.
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
            move |_, _| Db::open(&path, &thread_path),
        )
    }

    /// Connects to the PostgreSQL journal at `target` on its own thread and migrates it
    /// to this release's schema.
    pub fn connect(target: PgTarget) -> Result<Journal, JournalError> {
        let display: Arc<str> = target.display.clone().into();
        let reachable = Arc::new(AtomicBool::new(true));
        Journal::spawn(
            display,
            Backend::Postgres,
            reachable,
            Arc::new(AtomicBool::new(false)),
            move |reachable, stopping| Db::connect(target, reachable, stopping),
        )
    }

    /// Opens the journal the configuration names: PostgreSQL with `[journal] url`, else
    /// SQLite in the state directory.
    pub fn from_config(config: &crate::config::Config) -> Result<Journal, JournalError> {
        match config.journal_target().map_err(|e| JournalError {
            path: config.journal.url.clone().unwrap_or_default(),
            fault: JournalFault::Config(e.to_string()),
        })? {
            Some(target) => Journal::connect(target),
            None => Journal::open(&config.state_dir),
        }
    }

    fn spawn(
        display: Arc<str>,
        backend: Backend,
        reachable: Arc<AtomicBool>,
        stopping: Arc<AtomicBool>,
        open: impl FnOnce(Arc<AtomicBool>, Arc<AtomicBool>) -> Result<Db, JournalError> + Send + 'static,
    ) -> Result<Journal, JournalError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let (r, st) = (reachable.clone(), stopping.clone());
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || {
                let mut db = match open(r, st) {
                    Ok(db) => {
                        let _ = opened_tx.send(Ok(()));
                        db
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    job(&mut db);
                }
            })
            .map_err(|e| JournalError {
                path: display.to_string(),
                fault: JournalFault::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
            })?;
        match opened.recv() {
            Ok(Ok(())) => Ok(Journal {
                jobs,
                path: display,
                backend,
                reachable,
                stopping,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(JournalError {
                path: display.to_string(),
                fault: JournalFault::Stopped,
            }),
        }
    }

    /// Which backend the journal is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// True on a shared (PostgreSQL) journal: every instance's reports, claims and
    /// leases are in it.
    pub fn is_shared(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Where the journal is (file, or URL without password).
    pub fn location(&self) -> &str {
        &self.path
    }

    /// False while the journal's database cannot be reached (PostgreSQL only).
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// The flag behind [`Journal::reachable`], for `/healthz`.
    pub fn reachable_flag(&self) -> Arc<AtomicBool> {
        self.reachable.clone()
    }

    /// Makes waits for an unreachable database give up (the daemon is stopping): the
    /// operations waiting fail instead of keeping the process alive.
    pub fn stop_waiting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Runs `f` on the journal's thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, JournalError>
    where
        R: Send + 'static,
        F: FnMut(&mut Db) -> Result<R, JournalError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut f = f;
        let job: Job = Box::new(move |db| {
            // A lost PostgreSQL connection: wait for the database, then run the operation
            // again (every operation is safe to repeat: a statement either committed or
            // not, and the records are idempotent or counted again harmlessly).
            let result = loop {
                match f(db) {
                    Err(e) if db.lost(&e) => {
                        if !db.reconnect() {
                            break Err(e);
                        }
                    }
                    r => break r,
                }
            };
            let _ = tx.send(result);
        });
        let stopped = || JournalError {
            path: self.path.to_string(),
            fault: JournalFault::Stopped,
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// The record of a report, if any.
    pub async fn get(&self, id: &ReportId) -> Result<Option<Entry>, JournalError> {
        let id = id.clone();
        self.call(move |db| db.get(&id)).await
    }

    /// The schema version this release writes.
    pub fn schema_version() -> usize {
        schema::latest()
    }
}
