//! The per-report state machine: one message in, one [`Disposition`] out.
//!
//! The engine reaches GitHub only through [`AdvisoryApi`] and SMTP only through
//! [`Outbox`], records every step in the journal, and never touches IMAP: what becomes of
//! the message in the mailbox (filed into a folder, held, left for a retry, left while
//! we are paused) is the disposition it returns, which `mailbox::Mailbox::settle` carries
//! out. That keeps every rule here (retry, adopt, hold, release, follow-up throttle,
//! pause) testable in-process with paused time (`tests.rs`).
//!
//! Exactly-once rests on three rules kept here and in `settle`:
//! 1. the raw message is spooled and the report journaled before any external effect;
//! 2. before creating an advisory we look for our hidden marker among the repository's
//!    advisories and adopt what we find, so neither a crash after GitHub's answer nor a
//!    lost journal can create a second one;
//! 3. a message leaves the watched mailbox only after its outcome is journaled; a final
//!    state found for a message still in the mailbox means "finish the move".

mod api;
mod clock;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::classify::{Classification, NoiseReason, ReplyDecision};
use crate::config::{GithubMode, Resolved};
use crate::failure::{Classify, FailureKind};
use crate::github::GitHubError;
use crate::journal::{ClaimOutcome, Entry, Journal, JournalError, NewEntry, Reply, State};
use crate::mail::{self, Report, ReportId};
use crate::metrics::Metrics;
use crate::pipeline::{self, Prepared};
use crate::render::{self, AdvisoryDraft, AdvisoryRef, MarkerKey, Templates};
use crate::reply::SendError;
use crate::spool::{Spool, SpoolError};
use crate::thread;

pub use api::{AdvisoryApi, Outbox};
pub use clock::Clock;

/// How long a listing of a repository's marked advisories (for thread recovery after a
/// lost journal) is reused before GitHub is asked again.
pub const RECOVERY_SCAN_INTERVAL: Duration = Duration::from_secs(600);

/// The scope SMTP trouble pauses.
pub const SMTP_SCOPE: &str = "SMTP";

/// The scope GitHub trouble with `repository`'s credentials pauses: its owner.
pub fn github_scope(repository: &str) -> String {
    let owner = repository.split_once('/').map_or(repository, |(o, _)| o);
    format!("GitHub {owner}")
}

/// A message as the mailbox hands it over.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// The message's bytes, and when the server received it.
    Message {
        /// Raw RFC 5322 bytes.
        raw: Vec<u8>,
        /// The server's `INTERNALDATE`, when given.
        received_at: Option<DateTime<Utc>>,
        /// Whether it carries the held keyword (`mailbox::HELD_KEYWORD`); `None` where
        /// the server keeps no keywords.
        held_mark: Option<bool>,
    },
    /// A message over `limits.max_message_bytes`, never read.
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// A key naming it in the mailbox (`<uidvalidity>-<uid>`), for its journal record.
        key: String,
    },
}

/// The folder a finished message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Handled: an advisory (or a follow-up added to one).
    Processed,
    /// Noise.
    Ignored,
    /// Noise the receiving server flagged as spam: the junk folder, else `Ignored`.
    Junk,
    /// Could not be handled.
    Quarantine,
}

/// What the mailbox must do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Journal `state` with `reason`, then move the message to `folder`.
    File {
        /// The report.
        report_id: ReportId,
        /// Where it goes.
        folder: Folder,
        /// Its final state.
        state: State,
        /// Why, for ignored and quarantined messages.
        reason: Option<String>,
    },
    /// Move the message to the held folder for a person, journaling it held.
    Hold {
        /// The report.
        report_id: ReportId,
        /// Why.
        reason: String,
    },
    /// Leave it; try again not before `at`.
    Retry {
        /// The earliest next attempt.
        at: DateTime<Utc>,
    },
    /// Leave it for now, nothing journaled: the next GitHub request would wait for
    /// GitHub's pacing, and the caller asked not to wait ([`Engine::handle_unless_paced`]).
    /// Handle it again after the other mail, so noise never waits behind pacing.
    Paced,
    /// Leave it: our own configuration is wrong for `scope`; one message probes again
    /// at `at`.
    Pause {
        /// The earliest next attempt.
        at: DateTime<Utc>,
        /// What is paused, e.g. `GitHub pallets` or `SMTP`.
        scope: String,
        /// Why.
        reason: String,
    },
}

/// The engine's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// What the mailbox does with the message.
    pub action: Action,
    /// Exact bytes of the mail we sent for it, for the sent folder.
    pub copies: Vec<Vec<u8>>,
}

impl From<Action> for Disposition {
    fn from(action: Action) -> Self {
        Disposition {
            action,
            copies: Vec::new(),
        }
    }
}

/// Why the engine cannot go on at all: without its journal or spool it could not keep
/// its promises.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The journal cannot be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The spool cannot be written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Which reply a message gets.
#[derive(Debug, Clone, Copy)]
enum ReplyKind<'a> {
    /// The acknowledgement of a new report.
    Acknowledgement(&'a AdvisoryRef),
    /// The short note answering a follow-up.
    FollowUp(&'a AdvisoryRef),
    /// The note that an encrypted message could not be decrypted.
    Unreadable,
}

/// A failure of an external step for one report.
enum ReportFailure {
    GitHub(GitHubError),
    Smtp(SendError),
    Template(render::TemplateError),
}

impl ReportFailure {
    fn kind(&self) -> FailureKind {
        match self {
            ReportFailure::GitHub(e) => e.kind(),
            ReportFailure::Smtp(e) => e.kind(),
            ReportFailure::Template(_) => FailureKind::Permanent,
        }
    }

    /// What a misconfiguration of this kind pauses.
    fn scope(&self) -> String {
        match self {
            ReportFailure::GitHub(e) => github_scope(&e.repository),
            ReportFailure::Smtp(_) => SMTP_SCOPE.to_owned(),
            ReportFailure::Template(_) => "templates".to_owned(),
        }
    }
}

impl std::fmt::Display for ReportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportFailure::GitHub(e) => e.fmt(f),
            ReportFailure::Smtp(e) => e.fmt(f),
            ReportFailure::Template(e) => e.fmt(f),
        }
    }
}

/// The step that continues, or the disposition that ends this pass.
type Flow<T> = Result<ControlFlow<Disposition, T>, EngineError>;

/// How long before a message's arrival the marker scan still looks: clocks and time zones
/// of mail servers are not always right.
const MARKER_SCAN_SLACK_HOURS: i64 = 24;

/// Capped exponential backoff with jitter: attempt 1 waits about `initial`, each further
/// attempt doubles it up to `max`; the result is drawn from [d/2, d] so that many
/// deferred messages do not retry in lockstep. A delay the remote side asked for is
/// honoured as a floor.
pub fn backoff(
    attempts: u32,
    initial: Duration,
    max: Duration,
    asked: Option<Duration>,
) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let d = initial.saturating_mul(1u32 << exp).min(max);
    let half = d / 2;
    let jitter = half.mul_f64(rand::random::<f64>());
    let d = half + jitter;
    match asked {
        Some(a) if a > d => a.saturating_add(Duration::from_millis(rand::random_range(0..1000))),
        _ => d,
    }
}

/// Runs blocking file work (fsync of up to 25 MiB) off the async worker where the
/// runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The state machine with the stores and clients it works through.
pub struct Engine<A, O> {
    settings: Arc<Resolved>,
    journal: Journal,
    spool: Spool,
    github: A,
    outbox: O,
    templates: Arc<Templates>,
    marker: MarkerKey,
    metrics: Arc<Metrics>,
    clock: Clock,
    /// Per repository: when its marked advisories were listed, and what they were.
    recovery: tokio::sync::Mutex<RecoveryCache>,
    /// When the journal was created (read once): mail that arrived before may have been
    /// handled under a journal that is gone.
    journal_born: tokio::sync::OnceCell<Option<DateTime<Utc>>>,
    /// Reports new to the journal that came back [`Action::Paced`] before any request
    /// for them: still new at their next turn (no create can have been sent).
    paced_new: std::sync::Mutex<std::collections::HashSet<ReportId>>,
    /// The fingerprints of earlier reports with an advisory, read incrementally.
    fingerprints: tokio::sync::Mutex<FingerprintCache>,
}

/// How far back [`Engine::duplicate_of`] reads again what it may have read, for
/// fingerprints another instance on a shared journal recorded with a clock behind ours.
const FINGERPRINT_CLOCK_MARGIN_MINUTES: i64 = 10;

/// Earlier reports' fingerprints with their advisory (GHSA id, repository, URL), and up
/// to when they were read.
#[derive(Default)]
struct FingerprintCache {
    by_report: HashMap<ReportId, (crate::triage::Fingerprint, String, String, String)>,
    loaded_to: Option<DateTime<Utc>>,
}

/// How [`Engine::ensure_advisory`] looks for an advisory made earlier for a report.
enum Scan {
    /// Walk the newest advisories down to the message's arrival.
    Walk,
    /// Look in the cached listing of the repository's marked advisories.
    BeforeJournal,
    /// None can exist.
    None,
}

/// What the mailbox said about one message, and whether the journal knew it before.
struct Arrival {
    received_at: DateTime<Utc>,
    internal_date: Option<DateTime<Utc>>,
    held_mark: Option<bool>,
    journaled: bool,
    /// The caller lets GitHub's pacing make this report wait.
    may_wait: bool,
}

/// Marked advisories by repository, with when they were listed.
type RecoveryCache = HashMap<String, (tokio::time::Instant, Arc<HashMap<ReportId, AdvisoryRef>>)>;

impl<A: AdvisoryApi, O: Outbox> Engine<A, O> {
    /// An engine over these stores and clients.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Resolved>,
        journal: Journal,
        spool: Spool,
        github: A,
        outbox: O,
        templates: Arc<Templates>,
        marker: MarkerKey,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Engine {
            settings,
            journal,
            spool,
            github,
            outbox,
            templates,
            marker,
            metrics,
            clock,
            recovery: Default::default(),
            journal_born: tokio::sync::OnceCell::new(),
            paced_new: Default::default(),
            fingerprints: Default::default(),
        }
    }

    /// The journal this engine records into.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Moves one message as far through the pipeline as it can go now.
    pub async fn handle(&self, incoming: Incoming) -> Result<Disposition, EngineError> {
        self.handle_pacing(incoming, true).await
    }

    /// [`Engine::handle`], except that a report whose next GitHub request would wait for
    /// GitHub's pacing comes back as [`Action::Paced`] instead of waiting.
    pub async fn handle_unless_paced(
        &self,
        incoming: Incoming,
    ) -> Result<Disposition, EngineError> {
        self.handle_pacing(incoming, false).await
    }

    async fn handle_pacing(
        &self,
        incoming: Incoming,
        may_wait: bool,
    ) -> Result<Disposition, EngineError> {
        let now = self.clock.now();
        let (raw, received_at, held_mark) = match incoming {
            Incoming::TooLarge { size, key } => {
                // Never read into memory; the message itself stays intact in quarantine.
                let id = ReportId(format!("oversize-{key}"));
                if let Some(at) = self.claim(&id).await? {
                    return Ok(Action::Retry { at }.into());
                }
                let reason = format!(
                    "message is {size} bytes, over limits.max_message_bytes = {}",
                    self.settings.limits.max_message_bytes
                );
                self.record_seen(NewEntry {
                    report_id: id.clone(),
                    message_id: None,
                    spool_path: String::new(),
                    sender: None,
                    subject: None,
                    content_hash: None,
                })
                .await?;
                return Ok(self.quarantine(id, reason));
            }
            Incoming::Message {
                raw,
                received_at,
                held_mark,
            } => (raw, received_at, held_mark),
        };
        self.metrics.messages_seen.inc();
        let internal_date = received_at;
        let received_at = received_at.unwrap_or(now);
        let spool_path = blocking(|| self.spool.store_message(&raw))?;
        let spool_path = spool_path.display().to_string();
        let mut report =
            match pipeline::parse(&self.settings.config, self.settings.pgp.as_deref(), &raw) {
                Ok(r) => r,
                Err(e) => {
                    let id = ReportId(hex::encode(Sha256::digest(&raw)));
                    if let Some(at) = self.claim(&id).await? {
                        return Ok(Action::Retry { at }.into());
                    }
                    self.record_seen(NewEntry {
                        report_id: id.clone(),
                        message_id: None,
                        spool_path,
                        sender: None,
                        subject: None,
                        content_hash: None,
                    })
                    .await?;
                    return Ok(self.quarantine(id, e.to_string()));
                }
            };
        drop(raw);
        // Identity is the Message-ID and what the message says: an exact copy is the
        // same report, a different message reusing a known id is a report of its own.
        let content = mail::content_hash(&report);
        let known = self.journal.get(&report.report_id).await?;
        // Journaled before this call: an earlier attempt may have sent the create.
        let mut journaled = known.is_some();
        if let Some(hash) = known.and_then(|e| e.content_hash)
            && hash != content
        {
            let own = ReportId(mail::sha256_hex(
                format!("{}:{content}", report.report_id).as_bytes(),
            ));
            info!(
                message_id = report.message_id.as_deref().unwrap_or(""),
                "a different message reuses a known Message-ID; it is a report of its own"
            );
            report.report_id = own;
            journaled = self.journal.get(&report.report_id).await?.is_some();
        }
        if journaled
            && self
                .paced_new
                .lock()
                .expect("the paced set's lock")
                .remove(&report.report_id)
        {
            journaled = false;
        }
        if let Some(at) = self.claim(&report.report_id).await? {
            return Ok(Action::Retry { at }.into());
        }
        let entry = self
            .record_seen(NewEntry {
                report_id: report.report_id.clone(),
                message_id: report.message_id.clone(),
                spool_path,
                sender: report.from.as_ref().map(|a| a.email.clone()),
                subject: Some(report.subject.clone()),
                content_hash: Some(content),
            })
            .await?;
        let was_held = matches!(entry.state, State::Held | State::Holding);
        let span = info_span!("report", report_id = %report.report_id);
        let disposition = self
            .advance(
                &report,
                entry,
                Arrival {
                    received_at,
                    internal_date,
                    held_mark,
                    journaled,
                    may_wait,
                },
            )
            .instrument(span)
            .await?;
        if let Action::Hold { report_id, .. } = &disposition.action
            && !was_held
        {
            // What tells the held message, moved back by a person, from a new copy.
            let (rid, now) = (report_id.clone(), self.clock.now());
            self.journal
                .call(move |db| db.record_held_received_at(&rid, internal_date, now))
                .await?;
        }
        Ok(disposition)
    }

    /// On a shared (PostgreSQL) journal, claims the report for this instance: one
    /// winner across every instance, whatever the IMAP server offers. `None` means go
    /// on; `Some(at)` means another instance holds a live lease on it: leave the message
    /// and look again at `at` (by then it is done, and this copy is filed as one, or its
    /// holder died and the claim is ours). SQLite journals serve one instance: `None`.
    async fn claim(&self, id: &ReportId) -> Result<Option<DateTime<Utc>>, JournalError> {
        if !self.journal.is_shared() {
            return Ok(None);
        }
        let (rid, instance) = (id.clone(), self.settings.instance.clone());
        let lease = Duration::from_secs(self.settings.config.journal.lease_secs);
        match self
            .journal
            .call(move |db| db.claim(&rid, &instance, lease))
            .await?
        {
            ClaimOutcome::Won => Ok(None),
            ClaimOutcome::HeldBy { instance, until } => {
                info!(
                    report_id = %id,
                    holder = %instance,
                    lease_until = %until,
                    "another instance works on this report; leaving this copy until its lease ends"
                );
                let wait = chrono::Duration::from_std(lease).unwrap_or_default();
                Ok(Some(self.clock.now() + wait))
            }
        }
    }

    async fn record_seen(&self, new: NewEntry) -> Result<Entry, JournalError> {
        let now = self.clock.now();
        self.journal.call(move |db| db.record_seen(&new, now)).await
    }

    /// Continues a journaled report from wherever it stands.
    async fn advance(
        &self,
        report: &Report,
        entry: Entry,
        arrival: Arrival,
    ) -> Result<Disposition, EngineError> {
        let Arrival {
            received_at,
            internal_date,
            held_mark,
            journaled,
            may_wait,
        } = arrival;
        let id = &report.report_id;
        let now = self.clock.now();
        let entry = match entry.state {
            // A copy of a held report (same Message-ID, same text) arriving anew does not
            // release it: only the held message itself, moved back by a person, does. It
            // carries the held keyword (where the server keeps keywords); elsewhere its
            // arrival time, which a move keeps, tells it from a new copy.
            State::Held
                if match held_mark {
                    Some(marked) => !marked,
                    None => {
                        internal_date.is_none()
                            || internal_date.map(|t| t.timestamp())
                                != entry.held_received_at.map(|t| t.timestamp())
                    }
                } =>
            {
                let reason = "a copy of a held report; moving the held message back to the inbox releases it".to_owned();
                warn!(outcome = "held", reason, "copy of a held report held too");
                return Ok(Action::Hold {
                    report_id: id.clone(),
                    reason,
                }
                .into());
            }
            // Held messages sit in the held folder; one back in the mailbox was moved
            // there by a person: released, exempt from the per-sender limits.
            State::Held => {
                info!("a held report was moved back to the inbox; releasing it");
                let rid = id.clone();
                self.journal
                    .call(move |db| {
                        db.record_released(&rid, now)?;
                        db.get(&rid)
                    })
                    .await?
                    .unwrap_or(entry)
            }
            // A crash came between the hold's record and its move: finish the move.
            State::Holding => {
                return Ok(Action::Hold {
                    report_id: id.clone(),
                    reason: entry.outcome.clone().unwrap_or_default(),
                }
                .into());
            }
            _ => entry,
        };
        if entry.state.is_final() {
            // Either a crash between the journal record and the move, or a second copy
            // of a report already handled (same Message-ID): finish the move.
            let folder = folder_for(entry.state);
            info!(state = entry.state.as_str(), folder = ?folder, "report already handled; filing this copy");
            return Ok(Action::File {
                report_id: id.clone(),
                folder,
                state: entry.state,
                reason: None,
            }
            .into());
        }
        if let Some(t) = entry.next_attempt_at
            && t > now
        {
            return Ok(Action::Retry { at: t }.into());
        }
        let config = &self.settings.config;
        let prepared = pipeline::prepare(config, &self.marker, report, received_at);
        if let Classification::Noise(reason) = &prepared.classification {
            let folder = match reason {
                NoiseReason::Spam(_) => Folder::Junk,
                _ => Folder::Ignored,
            };
            let reason = reason.to_string();
            info!(outcome = "ignored", reason = %reason, "message is not a report");
            return Ok(Action::File {
                report_id: id.clone(),
                folder,
                state: State::Ignored,
                reason: Some(reason),
            }
            .into());
        }
        if let crate::openpgp::Encryption::Unreadable { reason, .. } = &report.encryption {
            return self.unreadable(report, &entry, &prepared, reason).await;
        }
        let thread = match &entry.thread_of {
            Some(original) => self.journal.get(original).await?,
            None => match self.find_thread(report).await {
                Ok(t) => t,
                Err(ThreadLookup::Journal(e)) => return Err(e.into()),
                Err(ThreadLookup::GitHub(e)) => {
                    return self.failed(&entry, ReportFailure::GitHub(e)).await;
                }
            },
        };
        if let Some(original) = thread {
            if original.ghsa_id.is_none() {
                return self.wait_for_original(&entry, original).await;
            }
            return self
                .follow_up(report, entry, original, &prepared, received_at)
                .await;
        }
        // The triage shield: an earlier report this one probably repeats is shown in
        // the draft; nothing is decided on it.
        let fingerprint = crate::triage::fingerprint(report);
        let duplicate = match (&fingerprint, entry.state) {
            (Some(f), State::Seen) => self.duplicate_of(id, f).await?,
            _ => None,
        };
        let prepared = match &duplicate {
            Some(d) => pipeline::prepare_with(config, &self.marker, report, received_at, Some(d)),
            None => prepared,
        };
        let route = &prepared.route;
        if entry.repository.is_none() {
            let (rid, repo, reason) = (
                id.clone(),
                route.repository.clone(),
                route.reason.to_string(),
            );
            self.journal
                .call(move |db| db.record_route(&rid, &repo, &reason, now))
                .await?;
        }

        if entry.state == State::Seen
            && !entry.released
            && let Some(reason) = self.over_advisory_limit(report).await?
        {
            warn!(outcome = "held", reason, "report held for a person");
            return Ok(Action::Hold {
                report_id: id.clone(),
                reason,
            }
            .into());
        }

        let advisory = match (&entry.ghsa_id, &entry.advisory_url) {
            (Some(ghsa), Some(url)) if entry.state != State::Seen => AdvisoryRef {
                ghsa_id: ghsa.clone(),
                html_url: url.clone(),
                repository: entry.repository.clone().unwrap_or(route.repository.clone()),
            },
            _ => {
                if let Some(paused) = self.paused(&github_scope(&route.repository)) {
                    return Ok(paused);
                }
                if !may_wait && self.github.pacing_wait().is_some() {
                    if !journaled {
                        self.paced_new
                            .lock()
                            .expect("the paced set's lock")
                            .insert(id.clone());
                    }
                    return Ok(Action::Paced.into());
                }
                for a in &prepared.draft.stored_attachments {
                    if let Some(data) = a.data(report) {
                        blocking(|| self.spool.store_attachment(id, &a.file_name, data))?;
                    }
                }
                // The one durable point before the create: the spooled message, its
                // attachments and the journal's record of the report (which makes a
                // retry look for the advisory's marker) survive a power cut from here.
                blocking(|| self.spool.sync())?;
                match self
                    .ensure_advisory(report, &prepared.draft, internal_date, journaled)
                    .await
                {
                    Ok(a) => {
                        let (rid, a2, at) = (id.clone(), a.clone(), self.clock.now());
                        let signals = prepared.draft.signals.summary();
                        let (f, dup) = (
                            fingerprint.clone(),
                            duplicate
                                .as_ref()
                                .map(|d| (d.ghsa_id.clone(), d.similarity)),
                        );
                        self.journal
                            .call(move |db| {
                                db.record_advisory(&rid, &a2.ghsa_id, &a2.html_url, at)?;
                                match &f {
                                    Some(f) => db.record_fingerprint(
                                        &rid,
                                        f,
                                        &signals,
                                        dup.as_ref().map(|(g, s)| (g.as_str(), *s)),
                                        at,
                                    ),
                                    None => Ok(()),
                                }
                            })
                            .await?;
                        if let Some(f) = &fingerprint {
                            self.fingerprints.lock().await.by_report.insert(
                                id.clone(),
                                (
                                    f.clone(),
                                    a.ghsa_id.clone(),
                                    a.repository.clone(),
                                    a.html_url.clone(),
                                ),
                            );
                        }
                        a
                    }
                    Err(e) => return self.failed(&entry, e).await,
                }
            }
        };

        let mut copies = Vec::new();
        if entry.state != State::Acknowledged {
            match self
                .acknowledge(
                    report,
                    &entry,
                    &prepared.reply,
                    None,
                    ReplyKind::Acknowledgement(&advisory),
                )
                .await?
            {
                ControlFlow::Break(d) => return Ok(d),
                ControlFlow::Continue(sent) => copies.extend(sent),
            }
        }
        match self
            .tell_maintainers(
                report,
                &entry,
                &prepared,
                &advisory,
                received_at,
                duplicate.as_ref(),
            )
            .await?
        {
            ControlFlow::Break(d) => return Ok(d),
            ControlFlow::Continue(sent) => copies.extend(sent),
        }
        info!(
            outcome = "filed",
            repository = %advisory.repository,
            ghsa = %advisory.ghsa_id,
            route = %route.reason,
            "report handled"
        );
        Ok(Disposition {
            action: Action::File {
                report_id: id.clone(),
                folder: Folder::Processed,
                state: State::Filed,
                reason: None,
            },
            copies,
        })
    }

    /// The earlier report this message continues, if any: by `In-Reply-To` and
    /// `References` (a report's own id or one of our messages), then by a GHSA id in the
    /// subject. Only reports whose advisory exists count. When one of our messages is
    /// referenced but the journal does not know its report (the journal was lost), the
    /// report's marker is looked up on GitHub and the journal record rebuilt.
    async fn find_thread(&self, report: &Report) -> Result<Option<Entry>, ThreadLookup> {
        let referenced: Vec<String> = thread::referenced_ids(report)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let ghsa_ids = thread::ghsa_ids(&report.subject);
        let own = report.report_id.clone();
        let (found, lost) = self
            .journal
            .call(move |db| {
                // One query for every id the message refers to: the reports they are,
                // and the reports our own messages among them answered.
                let ours: Vec<Option<ReportId>> = referenced
                    .iter()
                    .map(|id| thread::report_of_our_reply(id))
                    .collect();
                let report_ids: Vec<ReportId> = ours.iter().flatten().cloned().collect();
                let related = db.find_related(&referenced, &report_ids)?;
                let by_id = |id: &ReportId| related.iter().find(|e| &e.report_id == id);
                let by_message = |mid: &str| {
                    related
                        .iter()
                        .filter(|e| e.message_id.as_deref() == Some(mid))
                        .min_by_key(|e| e.first_seen_at)
                };
                // A follow-up's record points at the report it belongs to. A report
                // counts once it has its advisory, or while it is still on its way to
                // one (the follow-up then waits for it); one that ended without an
                // advisory (noise, quarantine) starts no thread.
                let root = |e: &Entry| -> Result<Option<Entry>, JournalError> {
                    let e = match &e.thread_of {
                        Some(original) => match db.get(original)? {
                            Some(o) => o,
                            None => return Ok(None),
                        },
                        None => e.clone(),
                    };
                    Ok((e.ghsa_id.is_some() || !e.state.is_final()).then_some(e))
                };
                let mut lost: Vec<ReportId> = Vec::new();
                for (mid, our) in referenced.iter().zip(&ours) {
                    if let Some(original) = our {
                        if *original == own {
                            continue;
                        }
                        match by_id(original) {
                            Some(e) => {
                                if let Some(e) = root(e)? {
                                    return Ok((Some(e), lost));
                                }
                            }
                            None => lost.push(original.clone()),
                        }
                    }
                    match by_message(mid) {
                        Some(e) if e.report_id != own => {
                            if let Some(e) = root(e)? {
                                return Ok((Some(e), lost));
                            }
                        }
                        Some(_) => {}
                        // Unknown here: after a lost journal this may be the report
                        // itself, whose id its Message-ID gives.
                        None if our.is_none() => {
                            lost.push(ReportId(mail::sha256_hex(mid.as_bytes())));
                        }
                        None => {}
                    }
                }
                for ghsa in &ghsa_ids {
                    if let Some(e) = db.find_by_ghsa(ghsa)?
                        && let Some(e) = root(&e)?
                    {
                        return Ok((Some(e), lost));
                    }
                }
                Ok((None, lost))
            })
            .await
            .map_err(ThreadLookup::Journal)?;
        if found.is_some() {
            return Ok(found);
        }
        if lost.is_empty() {
            return Ok(None);
        }
        for repo in &self.settings.config.repositories {
            let marked = self
                .marked_advisories(&repo.name)
                .await
                .map_err(ThreadLookup::GitHub)?;
            if let Some((original, found)) = lost
                .iter()
                .find_map(|id| marked.get(id).map(|a| (id.clone(), a.clone())))
            {
                info!(ghsa = %found.ghsa_id, "rebuilt the journal record of a report from its advisory");
                let (name, now) = (repo.name.clone(), self.clock.now());
                return self
                    .journal
                    .call(move |db| {
                        db.record_rebuilt(&original, &name, &found.ghsa_id, &found.html_url, now)
                    })
                    .await
                    .map_err(ThreadLookup::Journal);
            }
        }
        Ok(None)
    }

    /// The advisories of `repository` that carry our markers, by report: listed from
    /// GitHub at most once per [`RECOVERY_SCAN_INTERVAL`] and cached, so no mail, however
    /// many forged references it carries, costs more than that.
    async fn marked_advisories(
        &self,
        repository: &str,
    ) -> Result<Arc<HashMap<ReportId, AdvisoryRef>>, GitHubError> {
        let now = tokio::time::Instant::now();
        if let Some((at, map)) = self.recovery.lock().await.get(repository)
            && now.saturating_duration_since(*at) < RECOVERY_SCAN_INTERVAL
        {
            return Ok(map.clone());
        }
        let listed = self
            .github
            .updated_since(repository, None, &self.marker)
            .await?;
        let map: HashMap<ReportId, AdvisoryRef> = listed
            .into_iter()
            .flat_map(|a| {
                let r = AdvisoryRef {
                    ghsa_id: a.ghsa_id.clone(),
                    html_url: a.html_url.clone(),
                    repository: repository.to_owned(),
                };
                a.reports.into_iter().map(move |id| (id, r.clone()))
            })
            .collect();
        let map = Arc::new(map);
        self.recovery
            .lock()
            .await
            .insert(repository.to_owned(), (now, map.clone()));
        Ok(map)
    }

    /// A follow-up to a report that has no advisory yet (GitHub was down, the report
    /// waits for a retry): it joins that report and waits with it, so the conversation
    /// gets one advisory and one acknowledgement. One to a held report is held too.
    async fn wait_for_original(
        &self,
        entry: &Entry,
        original: Entry,
    ) -> Result<Disposition, EngineError> {
        if entry.thread_of.is_none() {
            let (rid, oid, repo, now) = (
                entry.report_id.clone(),
                original.report_id.clone(),
                original.repository.clone(),
                self.clock.now(),
            );
            self.journal
                .call(move |db| db.record_thread(&rid, &oid, repo.as_deref(), now))
                .await?;
        }
        if matches!(original.state, State::Held | State::Holding) {
            let reason = format!(
                "the report it continues ({}) is held for a person",
                original.report_id
            );
            warn!(outcome = "held", reason, "follow-up held with its report");
            return Ok(Action::Hold {
                report_id: entry.report_id.clone(),
                reason,
            }
            .into());
        }
        let now = self.clock.now();
        let soonest = self.clock.after(Duration::from_secs(
            self.settings.config.retry.initial_delay_secs,
        ));
        let at = original
            .next_attempt_at
            .filter(|t| *t > now)
            .unwrap_or(soonest);
        info!(original = %original.report_id, "follow-up waits for its report's advisory");
        Ok(Action::Retry { at }.into())
    }

    /// True when the message answers `original` or one of our messages about it by
    /// `In-Reply-To` or `References`.
    fn references(report: &Report, original: &Entry) -> bool {
        thread::referenced_ids(report).into_iter().any(|id| {
            thread::report_of_our_reply(id).as_ref() == Some(&original.report_id)
                || original.message_id.as_deref() == Some(id)
                || mail::sha256_hex(id.as_bytes()) == original.report_id.0
        })
    }

    /// Why a follow-up must wait for a person rather than change the advisory: its
    /// sender is neither the reporter nor part of the thread. A GHSA id in a subject is
    /// public once the advisory is: it does not make a stranger part of the thread.
    async fn stranger(
        &self,
        report: &Report,
        original: &Entry,
    ) -> Result<Option<String>, JournalError> {
        let oid = original.report_id.clone();
        let senders = self.journal.call(move |db| db.thread_senders(&oid)).await?;
        // A record rebuilt after a lost journal does not know its reporter. Then the
        // first sender who answers in the thread itself (not merely naming the public
        // GHSA id) is taken as the reporter, as they hold its message ids.
        if original.sender.is_none()
            && let Some(sender) = Self::sender_key(report)
            && Self::references(report, original)
        {
            let oid = original.report_id.clone();
            let now = self.clock.now();
            self.journal
                .call(move |db| db.record_sender_if_unknown(&oid, &sender, now))
                .await?;
            return Ok(None);
        }
        Ok(match Self::sender_key(report) {
            Some(s) if senders.contains(&s) => None,
            Some(s) => Some(format!(
                "{s} is neither the reporter nor part of this thread; a person decides whether it belongs to {}",
                original.ghsa_id.as_deref().unwrap_or("the advisory")
            )),
            None => Some("the follow-up names no sender".to_owned()),
        })
    }

    /// Adds a follow-up to its report's advisory (appended to the description: GitHub's
    /// REST API has no comments for repository advisories), answers it at most once a
    /// day per thread, and files it. Only while the advisory is a draft (or in triage)
    /// and only from the thread's own participants: anything else is held for a person,
    /// so nothing that arrives by mail ever changes public text.
    async fn follow_up(
        &self,
        report: &Report,
        entry: Entry,
        original: Entry,
        prepared: &Prepared,
        received_at: DateTime<Utc>,
    ) -> Result<Disposition, EngineError> {
        let id = &report.report_id;
        let (Some(repository), Some(ghsa)) =
            (original.repository.clone(), original.ghsa_id.clone())
        else {
            unreachable!("find_thread only returns reports with an advisory");
        };
        let advisory = AdvisoryRef {
            ghsa_id: ghsa.clone(),
            html_url: original.advisory_url.clone().unwrap_or_default(),
            repository: repository.clone(),
        };
        if entry.thread_of.is_none() || entry.repository.is_none() {
            let (rid, oid, repo, now) = (
                id.clone(),
                original.report_id.clone(),
                repository.clone(),
                self.clock.now(),
            );
            self.journal
                .call(move |db| db.record_thread(&rid, &oid, Some(&repo), now))
                .await?;
        }
        if entry.state == State::Seen {
            if !entry.released
                && let Some(reason) = self.stranger(report, &original).await?
            {
                warn!(outcome = "held", ghsa = %ghsa, reason, "follow-up held for a person");
                return Ok(Action::Hold {
                    report_id: id.clone(),
                    reason,
                }
                .into());
            }
            if let Some(paused) = self.paused(&github_scope(&repository)) {
                return Ok(paused);
            }
            let advisory_now = match self.github.description(&repository, &ghsa).await {
                Ok(d) => d,
                Err(e) => return self.failed(&entry, ReportFailure::GitHub(e)).await,
            };
            if !matches!(advisory_now.state.as_str(), "draft" | "triage") {
                let state = &advisory_now.state;
                if entry.released {
                    // A person let it through, but public text is never written from
                    // mail: file it; its text stays in the mailbox and the spool.
                    let reason = format!("released, but not added: {ghsa} is {state}");
                    info!(outcome = "follow-up filed", ghsa = %ghsa, reason, "follow-up not added");
                    return Ok(Action::File {
                        report_id: id.clone(),
                        folder: Folder::Processed,
                        state: State::Filed,
                        reason: Some(reason),
                    }
                    .into());
                }
                let reason = format!(
                    "{ghsa} is {state}: nothing that arrives by mail is added to it; a person reads this follow-up"
                );
                warn!(outcome = "held", ghsa = %ghsa, reason, "follow-up held for a person");
                return Ok(Action::Hold {
                    report_id: id.clone(),
                    reason,
                }
                .into());
            }
            let current = advisory_now.description;
            if self.marker.has_followup(&current, id) {
                info!(ghsa = %ghsa, "follow-up already in the advisory (added before a restart)");
            } else {
                let web_url = self.settings.config.github.web_url();
                let rendered = render::append_followup(
                    &current,
                    report,
                    &render::FollowupContext {
                        original_sender: original.sender.as_deref(),
                        received_at,
                        settings: &self.settings.config.advisory,
                        marker: &self.marker,
                        attachments: self
                            .settings
                            .config
                            .attachments
                            .repository_for(repository.split_once('/').map_or("", |(o, _)| o))
                            .map(|r| render::AttachmentsTarget {
                                repository: r,
                                web_url: &web_url,
                            }),
                    },
                );
                for a in &rendered.stored_attachments {
                    if let Some(data) = a.data(report) {
                        blocking(|| self.spool.store_attachment(id, &a.file_name, data))?;
                    }
                }
                if let Some(upload) = &rendered.upload
                    && let Err(e) = self
                        .upload(report, &rendered.stored_attachments, upload)
                        .await
                {
                    return self.failed(&entry, ReportFailure::GitHub(e)).await;
                }
                if let Err(e) = self
                    .github
                    .update_description(&repository, &ghsa, &rendered.description)
                    .await
                {
                    return self.failed(&entry, ReportFailure::GitHub(e)).await;
                }
                self.metrics.followups_added.inc();
                info!(ghsa = %ghsa, overflowed = rendered.overflowed, "follow-up added to the advisory");
            }
            self.resumed(&github_scope(&repository));
            let (rid, g, url, now) = (
                id.clone(),
                ghsa.clone(),
                advisory.html_url.clone(),
                self.clock.now(),
            );
            self.journal
                .call(move |db| db.record_advisory(&rid, &g, &url, now))
                .await?;
        }
        let mut copies = Vec::new();
        if entry.state != State::Acknowledged {
            let oid = original.report_id.clone();
            let last = self
                .journal
                .call(move |db| db.last_reply_in_thread(&oid))
                .await?;
            let recent = last.is_some_and(|t| self.clock.now() - t < chrono::Duration::hours(24));
            let withheld = if !self.settings.config.reply.followup_replies {
                Some("follow-up replies are off".to_owned())
            } else if recent {
                Some("this thread got a reply within the last day".to_owned())
            } else {
                None
            };
            match self
                .acknowledge(
                    report,
                    &entry,
                    &prepared.reply,
                    withheld,
                    ReplyKind::FollowUp(&advisory),
                )
                .await?
            {
                ControlFlow::Break(d) => return Ok(d),
                ControlFlow::Continue(sent) => copies.extend(sent),
            }
        }
        info!(outcome = "follow-up filed", repository = %repository, ghsa = %ghsa, "follow-up handled");
        Ok(Disposition {
            action: Action::File {
                report_id: id.clone(),
                folder: Folder::Processed,
                state: State::Filed,
                reason: None,
            },
            copies,
        })
    }

    /// The sender's address as the per-sender limits count it.
    fn sender_key(report: &Report) -> Option<String> {
        report
            .from
            .as_ref()
            .map(|a| a.email.trim().to_lowercase())
            .filter(|e| !e.is_empty())
    }

    /// Why this report must wait for a person instead of going to GitHub, if it must.
    async fn over_advisory_limit(&self, report: &Report) -> Result<Option<String>, JournalError> {
        let Some(sender) = Self::sender_key(report) else {
            return Ok(None);
        };
        let limit = self
            .settings
            .config
            .limits
            .max_advisories_per_sender_per_day;
        let since = self.clock.now() - chrono::Duration::hours(24);
        let count = self
            .journal
            .call(move |db| db.advisories_from(&sender, since))
            .await?;
        Ok((count >= limit).then(|| {
            format!(
                "the sender already has {count} advisories in 24 hours \
                 (limits.max_advisories_per_sender_per_day = {limit})"
            )
        }))
    }

    /// Why no more replies go to this sender today, if so.
    async fn over_reply_limit(&self, report: &Report) -> Result<Option<String>, JournalError> {
        let Some(sender) = Self::sender_key(report) else {
            return Ok(None);
        };
        let limit = self.settings.config.limits.max_replies_per_sender_per_day;
        let since = self.clock.now() - chrono::Duration::hours(24);
        let count = self
            .journal
            .call(move |db| db.replies_to(&sender, since))
            .await?;
        Ok((count >= limit).then(|| {
            format!(
                "{count} replies to this sender in 24 hours \
                 (limits.max_replies_per_sender_per_day = {limit})"
            )
        }))
    }

    /// Sends the reply a report or follow-up is due, or records why none goes out
    /// (`withheld`, the decision, the per-sender limit). Continues with the sent bytes
    /// (for the sent folder), or breaks with the disposition of a failed send.
    async fn acknowledge(
        &self,
        report: &Report,
        entry: &Entry,
        decision: &ReplyDecision,
        withheld: Option<String>,
        kind: ReplyKind<'_>,
    ) -> Flow<Option<Vec<u8>>> {
        let id = &report.report_id;
        let to = match decision {
            ReplyDecision::Suppress(reason) => Err(reason.to_string()),
            ReplyDecision::Send(to) => match withheld {
                Some(reason) => Err(reason),
                None => match self.over_reply_limit(report).await? {
                    Some(reason) => Err(reason),
                    None => Ok(to),
                },
            },
        };
        let to = match to {
            Ok(to) => to,
            Err(reason) => {
                if let ReplyKind::Acknowledgement(advisory) = kind {
                    // No reply to say so, but the reporter may still open the draft.
                    self.invite(report, advisory).await;
                }
                let (rid, now) = (id.clone(), self.clock.now());
                let reply = Reply::Suppressed(reason.clone());
                self.journal
                    .call(move |db| db.record_reply(&rid, &reply, None, now))
                    .await?;
                self.metrics.replies_suppressed.inc();
                info!(reason = %reason, "no reply sent");
                return Ok(ControlFlow::Continue(None));
            }
        };
        if let Some(paused) = self.paused(SMTP_SCOPE) {
            return Ok(ControlFlow::Break(paused));
        }
        let rendered = match kind {
            ReplyKind::Acknowledgement(advisory) => {
                let invited = self.invite(report, advisory).await;
                render::reply_inviting(
                    report,
                    to,
                    advisory,
                    &self.settings.from,
                    &self.settings.config.reply,
                    &self.templates,
                    invited.as_deref(),
                )
            }
            ReplyKind::FollowUp(advisory) => render::followup_reply(
                report,
                to,
                advisory,
                &self.settings.from,
                &self.settings.config.reply,
                &self.templates,
            ),
            ReplyKind::Unreadable => Ok(render::unreadable_reply(
                report,
                to,
                &self.settings.from,
                &self.settings.config.reply,
                &self.where_our_key_is(),
            )),
        };
        let message = match rendered {
            Ok(mut m) => {
                // Encrypted (and signed) to the reporter's own key when they sent one.
                m.encrypt_to = report.sender_key.clone();
                m
            }
            Err(e) => {
                let d = self.failed(entry, ReportFailure::Template(e)).await?;
                return Ok(ControlFlow::Break(d));
            }
        };
        let sent = match self.outbox.send(&message).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let d = self.failed(entry, ReportFailure::Smtp(e)).await?;
                return Ok(ControlFlow::Break(d));
            }
        };
        self.resumed(SMTP_SCOPE);
        let (rid, mid, addr, now) = (
            id.clone(),
            message.message_id.clone(),
            to.email.clone(),
            self.clock.now(),
        );
        self.journal
            .call(move |db| db.record_reply(&rid, &Reply::Sent, Some((&mid, &addr)), now))
            .await?;
        self.metrics.replies_sent.inc();
        self.metrics.contact(crate::metrics::Server::Smtp);
        Ok(ControlFlow::Continue(Some(sent)))
    }

    /// The advisory of an earlier report this one probably repeats (across every
    /// repository and organisation), counted in `near_duplicates`.
    async fn duplicate_of(
        &self,
        id: &ReportId,
        fingerprint: &crate::triage::Fingerprint,
    ) -> Result<Option<crate::triage::Duplicate>, EngineError> {
        let mut cache = self.fingerprints.lock().await;
        // Read once; then this engine adds what it records itself, so the cost per
        // report stays flat as the journal grows. A shared journal also holds what other
        // instances record: read what came since the last look (with a margin for their
        // clocks).
        let shared = self.journal.is_shared();
        if cache.loaded_to.is_none() || shared {
            let since = cache
                .loaded_to
                .map(|t| t - chrono::Duration::minutes(FINGERPRINT_CLOCK_MARGIN_MINUTES));
            let now = self.clock.now();
            let new = self
                .journal
                .call(move |db| db.fingerprints_recorded_since(since))
                .await?;
            for (report, f, ghsa, repo, url) in new {
                cache.by_report.insert(report, (f, ghsa, repo, url));
            }
            cache.loaded_to = Some(now);
        }
        let best = crate::triage::best_match(
            fingerprint,
            cache
                .by_report
                .iter()
                .filter(|(report, _)| *report != id)
                .map(|(_, (f, ghsa, repo, url))| (f, (ghsa, repo, url))),
        );
        Ok(best.map(|(similarity, (ghsa, repo, url))| {
            self.metrics.near_duplicates.inc();
            info!(ghsa = %ghsa, similarity, "probably a duplicate of an earlier report");
            crate::triage::Duplicate {
                ghsa_id: ghsa.clone(),
                repository: repo.clone(),
                url: url.clone(),
                similarity,
            }
        }))
    }

    /// Tells every `[maintainers] notify` address of the report's draft, once each (the
    /// `notices` table records `maintainers:<address>` after the SMTP server accepted
    /// the mail): the copies of what was sent. A transient failure retries the message
    /// (the acknowledgement, journaled, is not resent); a refused login pauses SMTP; an
    /// address the server refuses for good is logged as an ERROR and given up, since
    /// the report itself is safe in its advisory.
    async fn tell_maintainers(
        &self,
        report: &Report,
        entry: &Entry,
        prepared: &Prepared,
        advisory: &AdvisoryRef,
        received_at: DateTime<Utc>,
        duplicate: Option<&crate::triage::Duplicate>,
    ) -> Flow<Vec<Vec<u8>>> {
        let config = &self.settings.config;
        let mut copies = Vec::new();
        if config.maintainers.notify.is_empty() {
            return Ok(ControlFlow::Continue(copies));
        }
        let verdict = crate::auth::verdict(
            &report.signals.authentication_results,
            &config.authentication.trusted_authserv_ids,
        );
        let web_url = config.github.web_url();
        let route_reason = prepared.route.reason.to_string();
        let note = render::maintainers::DraftNote {
            report,
            advisory,
            draft: &prepared.draft,
            route_reason: &route_reason,
            verdict: &verdict,
            include_report: config.maintainers.include_report,
            web_url: &web_url,
            received_at,
            duplicate,
        };
        for address in &config.maintainers.notify {
            let event = format!("maintainers:{}", address.to_ascii_lowercase());
            let (rid, ev) = (report.report_id.clone(), event.clone());
            if self
                .journal
                .call(move |db| db.notice_sent(&rid, &ev))
                .await?
            {
                continue;
            }
            if let Some(paused) = self.paused(SMTP_SCOPE) {
                return Ok(ControlFlow::Break(paused));
            }
            let to = crate::mail::Address {
                name: None,
                email: address.clone(),
            };
            let message = render::maintainers::new_draft(&note, &to, &self.settings.from);
            let recorded = match self.outbox.send(&message).await {
                Ok(sent) => {
                    self.resumed(SMTP_SCOPE);
                    self.metrics.maintainer_mails_sent.inc();
                    self.metrics.contact(crate::metrics::Server::Smtp);
                    info!(to = %address, ghsa = %advisory.ghsa_id, "maintainers told of the new draft");
                    copies.push(sent);
                    message.message_id.clone()
                }
                Err(e) if e.kind() == FailureKind::Permanent => {
                    error!(to = %address, error = %e, "cannot tell this maintainer address of the new draft; giving up on it (check maintainers.notify)");
                    format!("refused: {}", e.message)
                }
                Err(e) => {
                    let d = self.failed(entry, ReportFailure::Smtp(e)).await?;
                    return Ok(ControlFlow::Break(d));
                }
            };
            let (rid, now) = (report.report_id.clone(), self.clock.now());
            self.journal
                .call(move |db| db.record_notice(&rid, &event, &recorded, now))
                .await?;
        }
        Ok(ControlFlow::Continue(copies))
    }

    /// Adopts the advisory that carries this report's marker, or creates it. The scan
    /// for a marker runs only when an advisory could exist: an earlier attempt may have
    /// sent the create (the report was journaled before), or the report may have been
    /// handled where this journal cannot see ([`Engine::may_be_known_elsewhere`]). A new
    /// report costs one request: the create.
    async fn ensure_advisory(
        &self,
        report: &Report,
        draft: &AdvisoryDraft,
        arrived: Option<DateTime<Utc>>,
        journaled: bool,
    ) -> Result<AdvisoryRef, ReportFailure> {
        let found = match self.scan_needed(journaled, arrived).await {
            Scan::Walk => self.find_marked(report, draft, arrived).await?,
            Scan::BeforeJournal => {
                let marked = self
                    .marked_advisories(&draft.repository)
                    .await
                    .map_err(ReportFailure::GitHub)?;
                marked.get(&report.report_id).cloned()
            }
            Scan::None => {
                debug!("a report new to this journal and this mailbox: no marker scan");
                None
            }
        };
        if let Some(found) = found {
            self.resumed(&github_scope(&draft.repository));
            self.metrics.advisories_adopted.inc();
            info!(ghsa = %found.ghsa_id, "adopted an existing advisory that carries this report's marker");
            return Ok(found);
        }
        self.create_advisory(report, draft).await
    }

    /// Where an advisory for this report could exist without the journal knowing it.
    /// An earlier attempt may have sent the create (the report was journaled before), or
    /// another instance with a journal of its own shares the mailbox, or the arrival
    /// time is unknown: walk the newest advisories down to the message's arrival. (A
    /// shared PostgreSQL journal is every instance's: the others need no walk there.) Mail
    /// that arrived before this journal was created (a lost journal, a first start on a
    /// backlog) can only have an advisory made before that, which one cached listing of
    /// the repository's marked advisories shows ([`Engine::marked_advisories`]): every
    /// advisory made since is this journal's own. Otherwise there is none.
    async fn scan_needed(&self, journaled: bool, arrived: Option<DateTime<Utc>>) -> Scan {
        let Some(arrived) = arrived else {
            return Scan::Walk;
        };
        // A shared (PostgreSQL) journal knows every instance's reports: only a journal of
        // our own leaves the others' unseen.
        if journaled || (!self.journal.is_shared() && self.metrics.shares_mailbox()) {
            return Scan::Walk;
        }
        let born = self
            .journal_born
            .get_or_init(|| async {
                match self.journal.call(|db| db.started_at()).await {
                    Ok(born) => born,
                    Err(e) => {
                        warn!(error = %e, "cannot read when the journal was created; scanning for markers");
                        None
                    }
                }
            })
            .await;
        match born {
            // A day of slack, for a mail server whose clock is ahead of ours.
            Some(born) if *born + chrono::Duration::hours(MARKER_SCAN_SLACK_HOURS) < arrived => {
                Scan::None
            }
            _ => Scan::BeforeJournal,
        }
    }

    /// The advisory that already carries this report's marker, adopted, if any.
    async fn find_marked(
        &self,
        report: &Report,
        draft: &AdvisoryDraft,
        arrived: Option<DateTime<Utc>>,
    ) -> Result<Option<AdvisoryRef>, ReportFailure> {
        let wanted = [self.marker.query(&report.report_id)];
        // No advisory for this report can predate the message: not its arrival at the
        // mail server (INTERNALDATE, kept by every move), nor, for an identical copy that
        // arrived earlier elsewhere (another instance, a lost journal), its `Date`, which
        // every copy shares. The walk stops at the earlier of the two, so it costs one
        // page whatever the repository holds; a day of slack covers clocks and time
        // zones that are off. Without both, every page is read.
        let not_before = match (arrived, report.date) {
            (Some(arrived), Some(date)) => {
                Some(arrived.min(date) - chrono::Duration::hours(MARKER_SCAN_SLACK_HOURS))
            }
            _ => None,
        };
        if let Some((_, found)) = self
            .github
            .find_by_marker(&draft.repository, &wanted, not_before)
            .await
            .map_err(ReportFailure::GitHub)?
        {
            return Ok(Some(found));
        }
        Ok(None)
    }

    /// Commits the attachments (if any) and creates the advisory.
    async fn create_advisory(
        &self,
        report: &Report,
        draft: &AdvisoryDraft,
    ) -> Result<AdvisoryRef, ReportFailure> {
        if let Some(upload) = &draft.upload {
            self.upload(report, &draft.stored_attachments, upload)
                .await
                .map_err(ReportFailure::GitHub)?;
        }
        let mode = self.settings.config.github.mode;
        let draft = &self.with_credit(report, draft).await;
        let created = self
            .github
            .create(mode, draft)
            .await
            .map_err(ReportFailure::GitHub)?;
        self.resumed(&github_scope(&draft.repository));
        self.metrics.advisories_created.inc();
        let what = match mode {
            GithubMode::Draft => "draft advisory created",
            GithubMode::Triage => "private vulnerability report filed",
        };
        info!(ghsa = %created.ghsa_id, repository = %created.repository, "{what}");
        Ok(created)
    }

    /// With `[advisory] invite_reporter`, adds the GitHub login the reporter states to
    /// the draft's collaborators when the sender is authenticated (a forged `From` must
    /// not give anyone access) and GitHub knows the login as a person; the login added,
    /// for the acknowledgement to say so. Runs again when a crash came before the
    /// acknowledgement was journaled: adding is idempotent. A failure costs only the
    /// invitation.
    async fn invite(&self, report: &Report, advisory: &AdvisoryRef) -> Option<String> {
        let config = &self.settings.config;
        if !config.advisory.invite_reporter {
            return None;
        }
        let login = crate::credit::stated_login(&report.text)?;
        let verdict = crate::auth::verdict(
            &report.signals.authentication_results,
            &config.authentication.trusted_authserv_ids,
        );
        if !matches!(verdict, crate::auth::Verdict::Authenticated { .. }) {
            info!(login = %login, "not inviting the stated login: the sender is not authenticated");
            return None;
        }
        let repository = &advisory.repository;
        match self.github.account_type(repository, &login).await {
            Ok(Some(kind)) if kind == "User" => {}
            Ok(_) => return None,
            Err(e) => {
                warn!(login = %login, error = %e, "cannot check the reporter's GitHub login; not invited");
                return None;
            }
        }
        match self
            .github
            .add_collaborator(repository, &advisory.ghsa_id, &login)
            .await
        {
            Ok(()) => {
                info!(login = %login, ghsa = %advisory.ghsa_id, "the reporter was added to the draft");
                Some(login)
            }
            Err(e) => {
                warn!(login = %login, error = %e, "cannot add the reporter to the draft; not invited");
                None
            }
        }
    }

    /// Commits the attachments `upload` names to the attachments repository (once: see
    /// [`AdvisoryApi::upload_attachments`]), before the description that links to them
    /// reaches GitHub.
    async fn upload(
        &self,
        report: &Report,
        stored: &[render::StoredAttachment],
        upload: &render::AttachmentUpload,
    ) -> Result<(), GitHubError> {
        let files: Vec<(&str, &[u8])> = upload
            .files
            .iter()
            .filter_map(|name| {
                let s = stored.iter().find(|s| &s.file_name == name)?;
                Some((name.as_str(), s.data(report)?))
            })
            .collect();
        let message = format!(
            "Attachments of report {}\n\nCommitted by advisory-bridge.",
            &report.report_id.0[..12]
        );
        let created = self
            .github
            .upload_attachments(&upload.repository, &upload.branch, &message, &files)
            .await?;
        if created {
            self.metrics.attachments_uploaded.inc_by(files.len() as u64);
            info!(repository = %upload.repository, branch = %upload.branch, files = files.len(), "attachments committed");
        } else {
            info!(repository = %upload.repository, branch = %upload.branch, "attachments already committed (before a restart)");
        }
        Ok(())
    }

    /// The draft with the GitHub login the reporter stated credited as `reporter`, when
    /// GitHub knows it as a user. A failed lookup only costs the credit (the login stays
    /// in the report for a maintainer to add), never the report.
    async fn with_credit(&self, report: &Report, draft: &AdvisoryDraft) -> AdvisoryDraft {
        let mut draft = draft.clone();
        let Some(login) = crate::credit::stated_login(&report.text) else {
            return draft;
        };
        match self.github.account_type(&draft.repository, &login).await {
            Ok(Some(kind)) if kind == "User" => {
                info!(login = %login, "the reporter's GitHub login is credited");
                draft.credits.push(login);
            }
            Ok(Some(kind)) => {
                debug!(login = %login, kind = %kind, "the stated login is not a person")
            }
            Ok(None) => debug!(login = %login, "the stated login does not exist on GitHub"),
            Err(e) => {
                warn!(login = %login, error = %e, "cannot check the reporter's GitHub login; no credit")
            }
        }
        draft
    }

    /// When `scope` is paused and its probe is not due: the disposition that leaves the
    /// message waiting until it is.
    fn paused(&self, scope: &str) -> Option<Disposition> {
        let (until, reason) = self.metrics.paused_until(scope)?;
        let wait = until.saturating_duration_since(tokio::time::Instant::now());
        Some(
            Action::Pause {
                at: self.clock.after(wait),
                scope: scope.to_owned(),
                reason,
            }
            .into(),
        )
    }

    /// Ends a pause of `scope` after a call that needed it succeeded.
    fn resumed(&self, scope: &str) {
        if scope.starts_with("GitHub") {
            self.metrics.contact(crate::metrics::Server::Github);
        }
        if self.metrics.resume(scope) {
            info!(scope, "credentials work again; resuming");
        }
    }

    /// Schedules a retry for a transient failure, pauses on our own misconfiguration,
    /// or quarantines on a permanent failure.
    async fn failed(
        &self,
        entry: &Entry,
        failure: ReportFailure,
    ) -> Result<Disposition, EngineError> {
        let id = entry.report_id.clone();
        let now = self.clock.now();
        let retry = &self.settings.config.retry;
        match failure.kind() {
            FailureKind::Transient { retry_after } => {
                // Whatever a server asks for, it does not park a report for days (nor
                // overflow a timestamp): at most `retry.max_server_delay_secs`.
                let cap = Duration::from_secs(retry.max_server_delay_secs);
                let retry_after = retry_after.map(|r| r.min(cap));
                // A create (or update) that failed without a clear answer may still be
                // landing at GitHub: wait at least one request timeout before the retry
                // looks for its marker, so the retry finds it instead of racing it.
                let retry_after = match &failure {
                    ReportFailure::GitHub(e)
                        if matches!(
                            e.operation,
                            "create advisory" | "update advisory" | "upload attachments"
                        ) =>
                    {
                        let floor = self.settings.github.timeout;
                        Some(retry_after.map_or(floor, |r| r.max(floor)))
                    }
                    _ => retry_after,
                };
                let delay = backoff(
                    entry.attempts + 1,
                    Duration::from_secs(retry.initial_delay_secs),
                    Duration::from_secs(retry.max_delay_secs),
                    retry_after,
                );
                let next = self.clock.after(delay);
                let message = failure.to_string();
                let attempts = self
                    .journal
                    .call(move |db| db.record_failure(&id, &message, next, now))
                    .await?;
                self.metrics.retries.inc();
                warn!(error = %failure, attempts, retry_in = ?delay, "step failed; will retry");
                Ok(Action::Retry { at: next }.into())
            }
            FailureKind::Misconfigured => {
                let scope = failure.scope();
                let reason = failure.to_string();
                let probe = Duration::from_secs(retry.pause_probe_secs.max(1));
                if self.metrics.pause(&scope, &reason, probe) {
                    error!(scope = %scope, error = %failure, "paused until the configuration is fixed; messages wait and nothing is quarantined");
                }
                let next = self.clock.after(probe);
                let message = reason.clone();
                self.journal
                    .call(move |db| db.record_failure(&id, &message, next, now))
                    .await?;
                Ok(Action::Pause {
                    at: next,
                    scope,
                    reason,
                }
                .into())
            }
            FailureKind::Permanent => {
                // The entry may predate this pass's own progress (an advisory made just
                // now): read the journal again for the reason.
                let current = self
                    .journal
                    .get(&id)
                    .await?
                    .unwrap_or_else(|| entry.clone());
                let reason = match &current.ghsa_id {
                    Some(ghsa) => format!("advisory {ghsa} exists, but: {failure}"),
                    None => failure.to_string(),
                };
                Ok(self.quarantine(id, reason))
            }
        }
    }

    /// An encrypted message our key cannot open: quarantined with the reason (no
    /// advisory), and the reporter told, under the usual reply rules, that it could not
    /// be read and where our key is. Never any of its content.
    async fn unreadable(
        &self,
        report: &Report,
        entry: &Entry,
        prepared: &Prepared,
        reason: &str,
    ) -> Result<Disposition, EngineError> {
        let mut copies = Vec::new();
        if entry.reply == Reply::Pending {
            match self
                .acknowledge(report, entry, &prepared.reply, None, ReplyKind::Unreadable)
                .await?
            {
                ControlFlow::Break(d) => return Ok(d),
                ControlFlow::Continue(sent) => copies.extend(sent),
            }
        }
        let mut d = self.quarantine(
            report.report_id.clone(),
            format!("an encrypted message that could not be read: {reason}"),
        );
        d.copies = copies;
        Ok(d)
    }

    /// Where the "could not read" reply says our key is.
    fn where_our_key_is(&self) -> String {
        crate::openpgp::key_hint(
            self.settings.pgp.as_deref(),
            self.settings
                .config
                .pgp
                .as_ref()
                .and_then(|p| p.key_url.as_deref()),
        )
    }

    fn quarantine(&self, id: ReportId, reason: String) -> Disposition {
        error!(outcome = "quarantined", report_id = %id, reason, "message quarantined");
        Action::File {
            report_id: id,
            folder: Folder::Quarantine,
            state: State::Quarantined,
            reason: Some(reason),
        }
        .into()
    }
}

/// Why looking for a follow-up's thread failed.
enum ThreadLookup {
    Journal(JournalError),
    GitHub(GitHubError),
}

/// The folder a message in a final state belongs in.
fn folder_for(state: State) -> Folder {
    match state {
        State::Ignored => Folder::Ignored,
        State::Quarantined => Folder::Quarantine,
        _ => Folder::Processed,
    }
}
