//! The loop that moves each message through the pipeline stages, records every step in
//! the journal, retries transient failures with backoff and files finished messages away.
//!
//! Exactly-once rests on three rules kept here:
//! 1. the raw message is spooled and the report journaled before any external effect;
//! 2. before creating an advisory we look for our hidden marker among the repository's
//!    advisories and adopt what we find, so neither a crash after GitHub's answer nor a
//!    lost journal can create a second one;
//! 3. a message leaves the watched mailbox only after its outcome is journaled; a final
//!    state found for a message still in the mailbox means "finish the move".

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::auth;
use crate::classify::{self, Classification, ReplyDecision, SuppressReason};
use crate::config::{Config, ConfigError, GithubMode};
use crate::failure::{Classify, FailureKind};
use crate::github::{GitHub, GitHubError, GitHubSettings};
use crate::journal::{Entry, Journal, JournalError, NewEntry, State};
use crate::mail::{self, Address, Limits, Report, ReportId};
use crate::render::notice::{self, Event, NoticeContext, NoticeTemplates};
use crate::render::{self, AdvisoryContext, AdvisoryDraft, AdvisoryRef, Templates};
use crate::reply::{Mailer, MailerSettings, SendError};
use crate::route::{self, Route};
use crate::source::{FetchOutcome, ImapError, ImapSettings, ImapSource, Wake};
use crate::spool::{Spool, SpoolError};
use crate::thread;

/// IDLE must be re-issued before the 29-minute server timeout (RFC 2177).
const MAX_IDLE: Duration = Duration::from_secs(28 * 60);
/// How long a step in flight may run on after SIGTERM before it is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Claim keywords are this plus the instance name (see `ImapSource::claim`).
const CLAIM_KEYWORD_PREFIX: &str = "$AdvisoryBridgeClaim_";
/// Cap on the delay between IMAP reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(300);

/// Why the daemon cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum FatalError {
    /// A secret or the template could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The reply template is broken.
    #[error(transparent)]
    Template(#[from] render::TemplateError),
    /// The journal cannot be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The spool cannot be written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The GitHub client could not be built.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// The SMTP client could not be built.
    #[error(transparent)]
    Smtp(#[from] SendError),
    /// In `once` mode the mailbox could not be reached.
    #[error(transparent)]
    Imap(#[from] ImapError),
}

/// Counters for monitoring, also logged at exit.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages fetched from the mailbox.
    pub messages_seen: AtomicU64,
    /// Draft advisories created.
    pub advisories_created: AtomicU64,
    /// Advisories found by their marker and adopted instead of created.
    pub advisories_adopted: AtomicU64,
    /// Acknowledgements sent.
    pub replies_sent: AtomicU64,
    /// Acknowledgements deliberately not sent.
    pub replies_suppressed: AtomicU64,
    /// Messages filed as noise.
    pub ignored: AtomicU64,
    /// Messages quarantined.
    pub quarantined: AtomicU64,
    /// Transient failures that scheduled a retry.
    pub retries: AtomicU64,
    /// IMAP (re)connections.
    pub imap_connects: AtomicU64,
    /// Follow-ups added to an existing advisory.
    pub followups_added: AtomicU64,
    /// Reports held for a person (per-sender limits).
    pub held: AtomicU64,
    /// Notices sent to reporters about changes on GitHub.
    pub notices_sent: AtomicU64,
    /// True while a mailbox session is up: what `/healthz` reports.
    pub mailbox_connected: AtomicBool,
}

impl Metrics {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "messages_seen",
                "Messages fetched from the mailbox.",
                &self.messages_seen,
            ),
            (
                "advisories_created",
                "Draft advisories created.",
                &self.advisories_created,
            ),
            (
                "advisories_adopted",
                "Existing advisories adopted by marker.",
                &self.advisories_adopted,
            ),
            ("replies_sent", "Acknowledgements sent.", &self.replies_sent),
            (
                "replies_suppressed",
                "Acknowledgements not sent on purpose.",
                &self.replies_suppressed,
            ),
            ("ignored", "Messages filed as noise.", &self.ignored),
            ("quarantined", "Messages quarantined.", &self.quarantined),
            (
                "retries",
                "Transient failures that scheduled a retry.",
                &self.retries,
            ),
            (
                "imap_connects",
                "IMAP connections made.",
                &self.imap_connects,
            ),
        ] {
            out.push_str(&format!(
                "# HELP advisory_bridge_{name}_total {help}\n# TYPE advisory_bridge_{name}_total counter\nadvisory_bridge_{name}_total {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// `run` keeps watching; `once` drains what is there and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Watch the mailbox until SIGTERM.
    Run,
    /// Handle every message present now, then return.
    Once,
}

/// What a `once` run left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Messages still waiting for a retry.
    pub deferred: usize,
}

/// Everything one message's trip through the pure stages produces: what `preview`
/// prints and what the daemon acts on.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Report or noise.
    pub classification: Classification,
    /// The chosen repository.
    pub route: Route,
    /// The advisory to create.
    pub draft: AdvisoryDraft,
    /// Whether and to whom to reply.
    pub reply: ReplyDecision,
}

/// Parses raw bytes into a report and drops the `Authentication-Results` headers that
/// no trusted server wrote, so nothing downstream can be fooled by them.
pub fn parse_report(config: &Config, raw: &[u8]) -> Result<Report, mail::ParseError> {
    let mut report = mail::parse(raw, &Limits::from(&config.limits))?;
    let trusted = &config.authentication.trusted_authserv_ids;
    report.signals.authentication_results =
        auth::trusted(&report.signals.authentication_results, trusted)
            .into_iter()
            .cloned()
            .collect();
    Ok(report)
}

/// Runs parse's output through classify, route and render. Pure.
pub fn prepare(config: &Config, report: &Report, received_at: DateTime<Utc>) -> Prepared {
    let ctx = classify_context(config);
    let mut classification = classify::classify(report, &ctx);
    if classification == Classification::Report
        && let (Some(threshold), Some(score)) =
            (config.spam.score_threshold, report.signals.spam_score)
        && score >= threshold
    {
        classification = Classification::Noise(classify::NoiseReason::Spam(format!(
            "spam score {score} is at least spam.score_threshold = {threshold}"
        )));
    }
    let route = route::route(
        report,
        &config.repositories,
        &config.default_repository,
        &config.smtp.from_address,
    );
    let repository = config
        .repository(&route.repository)
        .expect("route only returns configured repositories");
    let draft = render::advisory(
        report,
        &AdvisoryContext {
            route: &route,
            repository,
            settings: &config.advisory,
            received_at,
        },
    );
    let verdict = auth::verdict(
        &report.signals.authentication_results,
        &config.authentication.trusted_authserv_ids,
    );
    let reply = if !config.reply.enabled {
        ReplyDecision::Suppress(SuppressReason::Disabled)
    } else if let auth::Verdict::Failed { server, reason } = verdict {
        ReplyDecision::Suppress(SuppressReason::Unauthenticated(format!(
            "{reason} at {server}"
        )))
    } else {
        classify::reply_decision(report, &ctx)
    };
    Prepared {
        classification,
        route,
        draft,
        reply,
    }
}

/// Our own addresses, for loop detection.
pub fn classify_context(config: &Config) -> classify::Context {
    let mut own = vec![config.own_address()];
    let login = config.imap.username.trim().to_lowercase();
    if login.contains('@') && !own.contains(&login) {
        own.push(login);
    }
    classify::Context { own_addresses: own }
}

/// Our address and display name as the sender of replies.
pub fn from_address(config: &Config) -> Address {
    Address {
        name: Some(config.smtp.from_name.clone()),
        email: config.smtp.from_address.trim().to_owned(),
    }
}

/// IMAP settings with the password read from its secret source.
pub fn imap_settings(config: &Config) -> Result<ImapSettings, ConfigError> {
    Ok(ImapSettings {
        host: config.imap.host.clone(),
        port: config.imap.port(),
        tls: config.imap.tls,
        ca_file: config.imap.ca_file.clone(),
        username: config.imap.username.clone(),
        password: config.imap_password()?,
        timeout: Duration::from_secs(config.imap.timeout_secs),
    })
}

/// SMTP settings with the password read from its secret source.
pub fn mailer_settings(config: &Config) -> Result<MailerSettings, ConfigError> {
    let credentials = match (&config.smtp.username, config.smtp_password()?) {
        (Some(user), Some(pw)) => Some((user.clone(), pw)),
        _ => None,
    };
    Ok(MailerSettings {
        host: config.smtp.host.clone(),
        port: config.smtp.port(),
        tls: config.smtp.tls,
        ca_file: config.smtp.ca_file.clone(),
        credentials,
        timeout: Duration::from_secs(config.smtp.timeout_secs),
    })
}

/// GitHub settings with the token read from its secret source.
pub fn github_settings(config: &Config) -> Result<GitHubSettings, ConfigError> {
    Ok(GitHubSettings {
        api_url: config.github.api_url.clone(),
        token: config.github_token()?,
        timeout: Duration::from_secs(config.github.timeout_secs),
        min_mutation_interval: Duration::from_millis(config.github.min_mutation_interval_ms),
    })
}

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
        Some(a) if a > d => a + Duration::from_millis(rand::random_range(0..1000)),
        _ => d,
    }
}

/// What became of one message in one pass.
enum Step {
    /// It left the mailbox (or was already gone).
    Done,
    /// It waits for a retry not before this time.
    Deferred(DateTime<Utc>),
}

/// Why one message's pass stopped early.
enum StepError {
    /// The IMAP session is broken: reconnect and try again.
    Imap(ImapError),
    /// The daemon must stop.
    Fatal(FatalError),
}

impl From<ImapError> for StepError {
    fn from(e: ImapError) -> Self {
        StepError::Imap(e)
    }
}
impl From<JournalError> for StepError {
    fn from(e: JournalError) -> Self {
        StepError::Fatal(e.into())
    }
}
impl From<SpoolError> for StepError {
    fn from(e: SpoolError) -> Self {
        StepError::Fatal(e.into())
    }
}

/// Which reply a message gets.
#[derive(Debug, Clone, Copy)]
enum ReplyKind {
    /// The acknowledgement of a new report.
    Acknowledgement,
    /// The short note answering a follow-up.
    FollowUp,
}

/// Why looking for a follow-up's thread failed.
enum ThreadLookup {
    Journal(JournalError),
    GitHub(GitHubError),
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

/// The daemon: configuration plus the clients and stores every message goes through.
pub struct Daemon {
    config: Arc<Config>,
    journal: Journal,
    spool: Spool,
    github: GitHub,
    mailer: Mailer,
    templates: Templates,
    notices: NoticeTemplates,
    /// When the watcher looks at GitHub next.
    next_watch: tokio::time::Instant,
    limits: Limits,
    metrics: Arc<Metrics>,
    imap: ImapSettings,
    /// Per mailbox UID (within one UIDVALIDITY): not before this time. Saves refetching
    /// messages that wait for a retry on every pass.
    deferred: HashMap<(u32, u32), DateTime<Utc>>,
    uidvalidity: Option<u32>,
}

impl Daemon {
    /// Reads secrets, loads the template, opens the journal and spool, and builds the
    /// clients. Contacts nothing.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Daemon, FatalError> {
        let templates = Templates::load(&config.reply)?;
        let notices = NoticeTemplates::load(config.notify.template_dir.as_deref())?;
        let imap = imap_settings(&config)?;
        let mailer = Mailer::new(&mailer_settings(&config)?)?;
        let github = GitHub::new(&github_settings(&config)?)?;
        let spool = Spool::open(&config.state_dir)?;
        let journal = Journal::open(&config.state_dir)?;
        Ok(Daemon {
            limits: Limits::from(&config.limits),
            config: Arc::new(config),
            journal,
            spool,
            github,
            mailer,
            templates,
            notices,
            next_watch: tokio::time::Instant::now(),
            metrics,
            imap,
            deferred: HashMap::new(),
            uidvalidity: None,
        })
    }

    fn folders(&self) -> Vec<String> {
        let mut folders = vec![
            self.config.imap.processed_folder.clone(),
            self.config.imap.ignored_folder.clone(),
            self.config.imap.quarantine_folder.clone(),
            self.config.imap.held_folder.clone(),
            self.config.imap.claim_folder(),
        ];
        folders.extend(self.config.imap.sent_folder.clone());
        folders
    }

    /// Runs until `shutdown` turns true (`Run`) or the mailbox is drained (`Once`).
    pub async fn run(
        &mut self,
        mode: Mode,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Summary, FatalError> {
        let mut reconnect_attempts = 0u32;
        let mut session_failures = 0u32;
        let mut ready_sent = false;
        loop {
            if *shutdown.borrow() {
                return Ok(Summary::default());
            }
            Metrics::inc(&self.metrics.imap_connects);
            let folders = self.folders();
            let folders: Vec<&str> = folders.iter().map(String::as_str).collect();
            let connected =
                ImapSource::connect(&self.imap, &self.config.imap.mailbox, &folders).await;
            let (mut imap, state) = match connected {
                Ok(c) => c,
                Err(e) if mode == Mode::Once => return Err(e.into()),
                Err(e) => {
                    reconnect_attempts += 1;
                    let delay = backoff(
                        reconnect_attempts,
                        Duration::from_secs(1),
                        MAX_RECONNECT_DELAY,
                        None,
                    );
                    if e.kind().is_transient() {
                        warn!(error = %e, retry_in = ?delay, "cannot reach the mailbox; retrying");
                    } else {
                        error!(error = %e, retry_in = ?delay, "the mailbox refused us; fix the configuration, retrying");
                    }
                    notify_status(&format!("mailbox unreachable: {e}"));
                    if wait_or_shutdown(&mut shutdown, delay).await {
                        return Ok(Summary::default());
                    }
                    continue;
                }
            };
            reconnect_attempts = 0;
            self.metrics
                .mailbox_connected
                .store(true, Ordering::Relaxed);
            if let Err(e) = self.warn_about_orphaned_claims(&mut imap).await {
                warn!(error = %e, "cannot look at other instances' claim folders");
            }
            if !ready_sent {
                ready_sent = true;
                notify_ready();
            }
            info!(
                mailbox = %self.config.imap.mailbox,
                messages = state.exists,
                "watching the mailbox"
            );
            let session_started = tokio::time::Instant::now();
            let result = self.session(&mut imap, mode, &mut shutdown).await;
            self.metrics
                .mailbox_connected
                .store(false, Ordering::Relaxed);
            match result {
                Ok(summary) => {
                    let _ = imap.logout().await;
                    return Ok(summary);
                }
                Err(StepError::Fatal(e)) => {
                    let _ = imap.logout().await;
                    return Err(e);
                }
                Err(StepError::Imap(e)) => {
                    if mode == Mode::Once {
                        return Err(e.into());
                    }
                    // A server that drops every session right after login must not be
                    // hammered: back off unless the session lived a while.
                    if session_started.elapsed() > Duration::from_secs(60) {
                        session_failures = 0;
                    }
                    session_failures += 1;
                    let delay = backoff(
                        session_failures,
                        Duration::from_secs(1),
                        MAX_RECONNECT_DELAY,
                        None,
                    );
                    warn!(error = %e, retry_in = ?delay, "lost the mailbox connection; reconnecting");
                    notify_status(&format!("reconnecting: {e}"));
                    if wait_or_shutdown(&mut shutdown, delay).await {
                        return Ok(Summary::default());
                    }
                }
            }
        }
    }

    /// One logged-in session: passes over the mailbox separated by waits.
    async fn session(
        &mut self,
        imap: &mut ImapSource,
        mode: Mode,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Summary, StepError> {
        let claim = self.config.imap.claim_folder();
        let inbox = self.config.imap.mailbox.clone();
        loop {
            // Claim: move new mail out of the shared inbox into this instance's own
            // folder. A message another instance moved first is simply gone from our
            // view, so two instances never work on the same message. A crash after the
            // move leaves the message in our folder, where the next start finds it.
            let new = imap.list_uids().await?;
            let keyword = format!("{CLAIM_KEYWORD_PREFIX}{}", self.config.imap.instance());
            // Messages another instance claimed but has not moved yet.
            let mut others = 0u32;
            for &uid in &new {
                if *shutdown.borrow() {
                    return Ok(Summary::default());
                }
                if imap.claim(uid, CLAIM_KEYWORD_PREFIX, &keyword).await? {
                    imap.move_to(uid, &claim).await?;
                } else {
                    others += 1;
                }
            }
            if !new.is_empty() {
                debug!(count = new.len(), folder = %claim, "claimed new mail");
            }
            let state = imap.select_folder(&claim).await?;
            if self.uidvalidity != Some(state.uidvalidity) {
                if self.uidvalidity.is_some() {
                    warn!(
                        uidvalidity = state.uidvalidity,
                        "UIDVALIDITY of the claim folder changed; rescanning (reports are keyed by Message-ID, so nothing is duplicated)"
                    );
                }
                self.deferred.clear();
                self.uidvalidity = Some(state.uidvalidity);
            }
            let uids = imap.list_uids().await?;
            let mut next_due: Option<DateTime<Utc>> = None;
            let mut deferred = 0usize;
            for uid in uids {
                if *shutdown.borrow() {
                    return Ok(Summary { deferred });
                }
                let span = info_span!("message", uid);
                let step = self
                    .process_with_grace(imap, uid, shutdown)
                    .instrument(span)
                    .await?;
                match step {
                    Some(Step::Done) => {}
                    Some(Step::Deferred(t)) => {
                        deferred += 1;
                        next_due = Some(next_due.map_or(t, |n| n.min(t)));
                    }
                    None => return Ok(Summary { deferred }),
                }
            }
            // Back to the inbox to wait for news there.
            let inbox_state = imap.select_folder(&inbox).await?;
            notify_status(&format!("idle; {deferred} message(s) waiting for a retry"));
            if mode == Mode::Once {
                return Ok(Summary { deferred });
            }
            if tokio::time::Instant::now() >= self.next_watch {
                self.watch_advisories(imap).await?;
                self.next_watch = tokio::time::Instant::now()
                    + Duration::from_secs(self.config.notify.interval_secs);
            }
            if inbox_state.exists > others {
                // Mail arrived while we worked in the claim folder.
                continue;
            }
            let until_watch = self
                .next_watch
                .saturating_duration_since(tokio::time::Instant::now());
            let max_wait = next_due
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_IDLE)
                .min(MAX_IDLE)
                .min(until_watch);
            let poll = Duration::from_secs(self.config.imap.poll_interval_secs);
            tokio::select! {
                woke = imap.wait(self.config.imap.idle, poll, max_wait) => {
                    let _: Wake = woke?;
                }
                _ = shutdown.changed() => return Ok(Summary { deferred }),
            }
        }
    }

    /// Warns about claim folders of other instances that still hold mail: if such an
    /// instance is gone for good, a person must move its mail back to the inbox.
    async fn warn_about_orphaned_claims(&self, imap: &mut ImapSource) -> Result<(), ImapError> {
        let prefix = format!("{}.", self.config.imap.processing_folder);
        let ours = self.config.imap.claim_folder();
        for (folder, count) in imap.folders_with_prefix(&prefix).await? {
            if folder != ours && count > 0 {
                warn!(
                    folder = %folder,
                    messages = count,
                    "another instance's claim folder holds mail; if that instance is gone for good, move its mail back to the inbox"
                );
            }
        }
        Ok(())
    }

    /// Processes one message; on SIGTERM the step in flight gets a short grace period and
    /// is then abandoned (the journal lets the next start finish it). `None` means
    /// shutdown.
    async fn process_with_grace(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Step>, StepError> {
        let mut rx = shutdown.clone();
        let work = self.process(imap, uid);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => return r.map(Some),
            _ = rx.changed() => {}
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, work).await {
            Ok(r) => r.map(|_| None),
            Err(_) => {
                warn!(
                    uid,
                    "abandoning the step in flight for shutdown; it resumes at the next start"
                );
                Ok(None)
            }
        }
    }

    /// Moves one message as far through the pipeline as it can go now.
    async fn process(&mut self, imap: &mut ImapSource, uid: u32) -> Result<Step, StepError> {
        let uidvalidity = self.uidvalidity.unwrap_or(0);
        let now = Utc::now();
        if let Some(&until) = self.deferred.get(&(uidvalidity, uid))
            && until > now
        {
            return Ok(Step::Deferred(until));
        }
        let fetched = match imap.fetch(uid, self.limits.max_message_bytes).await? {
            FetchOutcome::Gone => return Ok(Step::Done),
            FetchOutcome::TooLarge { size } => {
                // Never read into memory; the message itself stays intact in quarantine.
                let id = ReportId(format!("oversize-{uidvalidity}-{uid}"));
                let reason = format!(
                    "message is {size} bytes, over limits.max_message_bytes = {}",
                    self.limits.max_message_bytes
                );
                self.journal.record_seen(
                    &NewEntry {
                        report_id: &id,
                        message_id: None,
                        spool_path: std::path::Path::new(""),
                        sender: None,
                        subject: None,
                    },
                    now,
                )?;
                self.quarantine(imap, uid, &id, &reason).await?;
                return Ok(Step::Done);
            }
            FetchOutcome::Message(m) => m,
        };
        Metrics::inc(&self.metrics.messages_seen);
        let received_at = fetched.internal_date.unwrap_or(now);
        let spool_path = self.spool.store_message(&fetched.raw)?;
        let report = match parse_report(&self.config, &fetched.raw) {
            Ok(r) => r,
            Err(e) => {
                let id = ReportId(hex::encode(Sha256::digest(&fetched.raw)));
                self.journal.record_seen(
                    &NewEntry {
                        report_id: &id,
                        message_id: None,
                        spool_path: &spool_path,
                        sender: None,
                        subject: None,
                    },
                    now,
                )?;
                self.quarantine(imap, uid, &id, &e.to_string()).await?;
                return Ok(Step::Done);
            }
        };
        let sender = report.from.as_ref().map(|a| a.email.as_str());
        let entry = self.journal.record_seen(
            &NewEntry {
                report_id: &report.report_id,
                message_id: report.message_id.as_deref(),
                spool_path: &spool_path,
                sender,
                subject: Some(&report.subject),
            },
            now,
        )?;
        let span = info_span!("report", report_id = %report.report_id);
        self.advance(imap, uid, &report, entry, received_at)
            .instrument(span)
            .await
    }

    /// Continues a journaled report from wherever it stands.
    async fn advance(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        report: &Report,
        entry: Entry,
        received_at: DateTime<Utc>,
    ) -> Result<Step, StepError> {
        let id = &report.report_id;
        let now = Utc::now();
        let entry = if entry.state == State::Held {
            // Held messages sit in the held folder; one back in the mailbox was moved
            // there by a person: released, exempt from the per-sender limits.
            info!("a held report was moved back to the inbox; releasing it");
            self.journal.record_released(id, now)?;
            self.journal.get(id)?.unwrap_or(entry)
        } else {
            entry
        };
        if entry.state.is_final() {
            // Either a crash between the journal record and the move, or a second copy
            // of a report already handled (same Message-ID): finish the move.
            let folder = self.folder_for(entry.state).to_owned();
            info!(state = entry.state.as_str(), folder = %folder, "report already handled; filing this copy");
            imap.move_to(uid, &folder).await?;
            return Ok(Step::Done);
        }
        if let Some(t) = entry.next_attempt_at
            && t > now
        {
            self.deferred
                .insert((self.uidvalidity.unwrap_or(0), uid), t);
            return Ok(Step::Deferred(t));
        }
        let prepared = prepare(&self.config, report, received_at);
        if let Classification::Noise(reason) = &prepared.classification {
            let reason = reason.to_string();
            self.journal
                .record_final(id, State::Ignored, Some(&reason), now)?;
            imap.move_to(uid, &self.config.imap.ignored_folder).await?;
            Metrics::inc(&self.metrics.ignored);
            info!(outcome = "ignored", reason = %reason, "message is not a report");
            return Ok(Step::Done);
        }
        let thread = match &entry.thread_of {
            Some(original) => self.journal.get(original)?,
            None => match self.find_thread(report).await {
                Ok(t) => t,
                Err(ThreadLookup::Journal(e)) => return Err(e.into()),
                Err(ThreadLookup::GitHub(e)) => {
                    return self
                        .failed(imap, uid, id, &entry, ReportFailure::GitHub(e))
                        .await;
                }
            },
        };
        if let Some(original) = thread {
            return self
                .follow_up(imap, uid, report, entry, original, &prepared, received_at)
                .await;
        }
        let route = &prepared.route;
        if entry.repository.is_none() {
            self.journal
                .record_route(id, &route.repository, &route.reason.to_string(), now)?;
        }

        let released = entry.outcome.as_deref() == Some("released");
        if entry.state == State::Seen
            && !released
            && let Some(reason) = self.over_advisory_limit(report)?
        {
            return self.hold(imap, uid, id, &reason).await;
        }

        let advisory = match (&entry.ghsa_id, &entry.advisory_url) {
            (Some(ghsa), Some(url)) if entry.state != State::Seen => AdvisoryRef {
                ghsa_id: ghsa.clone(),
                html_url: url.clone(),
                repository: entry.repository.clone().unwrap_or(route.repository.clone()),
            },
            _ => {
                for a in &prepared.draft.stored_attachments {
                    if let Some(data) = a.data(report) {
                        self.spool.store_attachment(id, &a.file_name, data)?;
                    }
                }
                match self.ensure_advisory(report, &prepared.draft).await {
                    Ok(a) => {
                        self.journal
                            .record_advisory(id, &a.ghsa_id, &a.html_url, Utc::now())?;
                        a
                    }
                    Err(e) => return self.failed(imap, uid, id, &entry, e).await,
                }
            }
        };

        if entry.state != State::Acknowledged
            && let Some(step) = self
                .acknowledge(
                    imap,
                    uid,
                    report,
                    &entry,
                    &prepared.reply,
                    None,
                    ReplyKind::Acknowledgement,
                    &advisory,
                )
                .await?
        {
            return Ok(step);
        }

        self.file_processed(imap, uid, id).await?;
        info!(
            outcome = "filed",
            repository = %advisory.repository,
            ghsa = %advisory.ghsa_id,
            route = %route.reason,
            "report handled"
        );
        Ok(Step::Done)
    }

    /// The earlier report this message continues, if any: by `In-Reply-To` and
    /// `References` (a report's own id or one of our replies), then by a GHSA id in the
    /// subject. Only reports whose advisory exists count. When one of our replies is
    /// referenced but the journal does not know its report (the journal was lost), the
    /// report's marker is looked up on GitHub and the journal record rebuilt.
    async fn find_thread(&self, report: &Report) -> Result<Option<Entry>, ThreadLookup> {
        let with_advisory = |e: Entry| -> Result<Option<Entry>, JournalError> {
            // A follow-up's record points at the report it belongs to.
            let e = match &e.thread_of {
                Some(original) => match self.journal.get(original)? {
                    Some(o) => o,
                    None => return Ok(None),
                },
                None => e,
            };
            Ok(e.ghsa_id.is_some().then_some(e))
        };
        let mut lost: Vec<ReportId> = Vec::new();
        for referenced in thread::referenced_ids(report) {
            if let Some(original) = thread::report_of_our_reply(referenced) {
                if original == report.report_id {
                    continue;
                }
                match self.journal.get(&original).map_err(ThreadLookup::Journal)? {
                    Some(e) => {
                        if let Some(e) = with_advisory(e).map_err(ThreadLookup::Journal)? {
                            return Ok(Some(e));
                        }
                    }
                    None => lost.push(original),
                }
            }
            if let Some(e) = self
                .journal
                .find_by_message_id(referenced)
                .map_err(ThreadLookup::Journal)?
                && e.report_id != report.report_id
                && let Some(e) = with_advisory(e).map_err(ThreadLookup::Journal)?
            {
                return Ok(Some(e));
            }
        }
        for ghsa in thread::ghsa_ids(&report.subject) {
            if let Some(e) = self
                .journal
                .find_by_ghsa(&ghsa)
                .map_err(ThreadLookup::Journal)?
                && let Some(e) = with_advisory(e).map_err(ThreadLookup::Journal)?
            {
                return Ok(Some(e));
            }
        }
        for original in lost {
            let marker = render::marker(&original);
            for repo in &self.config.repositories {
                let found = self
                    .github
                    .find_by_marker(&repo.name, &marker)
                    .await
                    .map_err(ThreadLookup::GitHub)?;
                if let Some(found) = found {
                    info!(ghsa = %found.ghsa_id, "rebuilt the journal record of a report from its advisory");
                    let now = Utc::now();
                    let j = &self.journal;
                    let rebuild = || -> Result<Option<Entry>, JournalError> {
                        j.record_seen(
                            &NewEntry {
                                report_id: &original,
                                message_id: None,
                                spool_path: std::path::Path::new(""),
                                sender: None,
                                subject: None,
                            },
                            now,
                        )?;
                        j.record_route(&original, &repo.name, "rebuilt from its advisory", now)?;
                        j.record_advisory(&original, &found.ghsa_id, &found.html_url, now)?;
                        j.record_final(&original, State::Filed, None, now)?;
                        j.get(&original)
                    };
                    return rebuild().map_err(ThreadLookup::Journal);
                }
            }
        }
        Ok(None)
    }

    /// Adds a follow-up to its report's advisory (appended to the description: GitHub's
    /// REST API has no comments for repository advisories), answers it at most once a
    /// day per thread, and files it.
    #[allow(clippy::too_many_arguments)]
    async fn follow_up(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        report: &Report,
        entry: Entry,
        original: Entry,
        prepared: &Prepared,
        received_at: DateTime<Utc>,
    ) -> Result<Step, StepError> {
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
        if entry.thread_of.is_none() {
            self.journal
                .record_thread(id, &original.report_id, &repository, Utc::now())?;
        }
        if entry.state == State::Seen {
            let current = match self.github.description(&repository, &ghsa).await {
                Ok(d) => d,
                Err(e) => {
                    return self
                        .failed(imap, uid, id, &entry, ReportFailure::GitHub(e))
                        .await;
                }
            };
            if current.contains(&render::followup_marker(id)) {
                info!(ghsa = %ghsa, "follow-up already in the advisory (added before a restart)");
            } else {
                let rendered = render::append_followup(
                    &current,
                    report,
                    &render::FollowupContext {
                        original_sender: original.sender.as_deref(),
                        received_at,
                        settings: &self.config.advisory,
                    },
                );
                for a in &rendered.stored_attachments {
                    if let Some(data) = a.data(report) {
                        self.spool.store_attachment(id, &a.file_name, data)?;
                    }
                }
                if let Err(e) = self
                    .github
                    .update_description(&repository, &ghsa, &rendered.description)
                    .await
                {
                    return self
                        .failed(imap, uid, id, &entry, ReportFailure::GitHub(e))
                        .await;
                }
                Metrics::inc(&self.metrics.followups_added);
                info!(ghsa = %ghsa, overflowed = rendered.overflowed, "follow-up added to the advisory");
            }
            self.journal
                .record_advisory(id, &ghsa, &advisory.html_url, Utc::now())?;
        }
        if entry.state != State::Acknowledged {
            let recent = self
                .journal
                .last_reply_in_thread(&original.report_id)?
                .is_some_and(|t| Utc::now() - t < chrono::Duration::hours(24));
            let withheld = if !self.config.reply.followup_replies {
                Some("follow-up replies are off".to_owned())
            } else if recent {
                Some("this thread got a reply within the last day".to_owned())
            } else {
                None
            };
            if let Some(step) = self
                .acknowledge(
                    imap,
                    uid,
                    report,
                    &entry,
                    &prepared.reply,
                    withheld,
                    ReplyKind::FollowUp,
                    &advisory,
                )
                .await?
            {
                return Ok(step);
            }
        }
        self.file_processed(imap, uid, id).await?;
        info!(outcome = "follow-up filed", repository = %repository, ghsa = %ghsa, "follow-up handled");
        Ok(Step::Done)
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
    fn over_advisory_limit(&self, report: &Report) -> Result<Option<String>, JournalError> {
        let Some(sender) = Self::sender_key(report) else {
            return Ok(None);
        };
        let limit = self.config.limits.max_advisories_per_sender_per_day;
        let count = self
            .journal
            .advisories_from(&sender, Utc::now() - chrono::Duration::hours(24))?;
        Ok((count >= limit).then(|| {
            format!(
                "the sender already has {count} advisories in 24 hours \
                 (limits.max_advisories_per_sender_per_day = {limit})"
            )
        }))
    }

    /// Why no more replies go to this sender today, if so.
    fn over_reply_limit(&self, report: &Report) -> Result<Option<String>, JournalError> {
        let Some(sender) = Self::sender_key(report) else {
            return Ok(None);
        };
        let limit = self.config.limits.max_replies_per_sender_per_day;
        let count = self
            .journal
            .replies_to(&sender, Utc::now() - chrono::Duration::hours(24))?;
        Ok((count >= limit).then(|| {
            format!(
                "{count} replies to this sender in 24 hours \
                 (limits.max_replies_per_sender_per_day = {limit})"
            )
        }))
    }

    /// Moves a report over a per-sender limit to the held folder. The move comes first:
    /// a held record for a message still in the claim folder would read as "released".
    async fn hold(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        id: &ReportId,
        reason: &str,
    ) -> Result<Step, StepError> {
        imap.move_to(uid, &self.config.imap.held_folder).await?;
        self.journal
            .record_final(id, State::Held, Some(reason), Utc::now())?;
        Metrics::inc(&self.metrics.held);
        warn!(outcome = "held", reason, "report held for a person");
        Ok(Step::Done)
    }

    /// Journals a handled message as filed, then moves it to the processed folder.
    async fn file_processed(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        id: &ReportId,
    ) -> Result<(), StepError> {
        self.journal
            .record_final(id, State::Filed, None, Utc::now())?;
        imap.move_to(uid, &self.config.imap.processed_folder)
            .await?;
        self.deferred.remove(&(self.uidvalidity.unwrap_or(0), uid));
        Ok(())
    }

    /// Sends the reply a report or follow-up is due, or records why none goes out
    /// (`withheld`, the decision, the per-sender limit). `Some(step)` means the send
    /// failed and the failure was handled (retry scheduled or quarantined).
    #[allow(clippy::too_many_arguments)]
    async fn acknowledge(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        report: &Report,
        entry: &Entry,
        decision: &ReplyDecision,
        withheld: Option<String>,
        kind: ReplyKind,
        advisory: &AdvisoryRef,
    ) -> Result<Option<Step>, StepError> {
        let id = &report.report_id;
        let to = match decision {
            ReplyDecision::Suppress(reason) => Err(reason.to_string()),
            ReplyDecision::Send(to) => match withheld {
                Some(reason) => Err(reason),
                None => match self.over_reply_limit(report)? {
                    Some(reason) => Err(reason),
                    None => Ok(to),
                },
            },
        };
        let to = match to {
            Ok(to) => to,
            Err(reason) => {
                self.journal.record_reply(
                    id,
                    &format!("suppressed: {reason}"),
                    None,
                    Utc::now(),
                )?;
                Metrics::inc(&self.metrics.replies_suppressed);
                info!(reason = %reason, "no reply sent");
                return Ok(None);
            }
        };
        let render = match kind {
            ReplyKind::Acknowledgement => render::reply,
            ReplyKind::FollowUp => render::followup_reply,
        };
        let message = match render(
            report,
            to,
            advisory,
            &from_address(&self.config),
            &self.config.reply,
            &self.templates,
        ) {
            Ok(m) => m,
            Err(e) => {
                let step = self
                    .failed(imap, uid, id, entry, ReportFailure::Template(e))
                    .await?;
                return Ok(Some(step));
            }
        };
        let sent = match self.mailer.send(&message).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let step = self
                    .failed(imap, uid, id, entry, ReportFailure::Smtp(e))
                    .await?;
                return Ok(Some(step));
            }
        };
        self.journal
            .record_reply(id, "sent", Some(&message.message_id), Utc::now())?;
        self.journal.record_reply_to(id, &to.email, Utc::now())?;
        Metrics::inc(&self.metrics.replies_sent);
        if let Some(folder) = &self.config.imap.sent_folder {
            // The mail went out; a failed copy must not send it again.
            if let Err(e) = imap.append(folder, &sent).await {
                warn!(error = %e, "reply sent, but its copy could not be kept in the sent folder");
                if !imap.is_connected() {
                    return Err(StepError::Imap(e));
                }
            }
        }
        Ok(None)
    }

    /// The watcher: lists each repository's advisories changed since the last look
    /// (sorted by `updated`, paged), and for the ones we created tells the reporter,
    /// in the report's thread, once per change. A notice is journaled after the SMTP
    /// server accepted it; a failed one leaves the state and watermark untouched so the
    /// next look tries again. GitHub trouble is logged and waits for the next look.
    async fn watch_advisories(&mut self, imap: &mut ImapSource) -> Result<(), StepError> {
        let repositories: Vec<String> = self
            .config
            .repositories
            .iter()
            .map(|r| r.name.clone())
            .collect();
        for repo in repositories {
            let ours = self.journal.reports_with_advisory(&repo)?;
            if ours.is_empty() {
                continue;
            }
            let key = format!("watermark:{repo}");
            let since = self
                .journal
                .meta(&key)?
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            let changed = match self.github.updated_since(&repo, since).await {
                Ok(list) => list,
                Err(e) => {
                    warn!(error = %e, repository = %repo, "cannot look at advisories; next look later");
                    continue;
                }
            };
            let mut complete = true;
            for advisory in &changed {
                let Some(entry) = ours.iter().find(|e| {
                    e.ghsa_id
                        .as_deref()
                        .is_some_and(|g| g.eq_ignore_ascii_case(&advisory.ghsa_id))
                }) else {
                    continue;
                };
                let created_as = match self.config.github.mode {
                    GithubMode::Draft => "draft",
                    GithubMode::Triage => "triage",
                };
                let old_state = entry.github_state.as_deref().unwrap_or(created_as);
                let events = notice::transitions(
                    old_state,
                    entry.cve_id.as_deref(),
                    &advisory.state,
                    advisory.cve_id.as_deref(),
                );
                let mut all_sent = true;
                for event in events {
                    if !self.notice_wanted(event)
                        || self.journal.notice_sent(&entry.report_id, event.as_str())?
                    {
                        continue;
                    }
                    if !self.send_notice(imap, entry, advisory, event).await? {
                        all_sent = false;
                        break;
                    }
                }
                if all_sent {
                    self.journal.record_github_state(
                        &entry.report_id,
                        &advisory.state,
                        advisory.cve_id.as_deref(),
                        Utc::now(),
                    )?;
                } else {
                    complete = false;
                }
            }
            if complete && let Some(newest) = changed.iter().filter_map(|a| a.updated_at).max() {
                self.journal.set_meta(&key, &newest.to_rfc3339())?;
            }
        }
        Ok(())
    }

    fn notice_wanted(&self, event: Event) -> bool {
        let n = &self.config.notify;
        match event {
            Event::Published => n.published,
            Event::CveAssigned => n.cve_assigned,
            Event::Closed => n.closed,
            Event::Withdrawn => n.withdrawn,
        }
    }

    /// Sends one notice; false when it could not go out now (retried at the next look).
    async fn send_notice(
        &mut self,
        imap: &mut ImapSource,
        entry: &Entry,
        advisory: &crate::github::AdvisoryStatus,
        event: Event,
    ) -> Result<bool, StepError> {
        let Some(to) = entry.reply_to.clone() else {
            // The report got no reply (noise rules, forged sender, limits): no notices.
            return Ok(true);
        };
        let mut thread: Vec<String> = Vec::new();
        thread.extend(entry.message_id.clone());
        thread.extend(entry.reply_message_id.clone());
        let ctx = NoticeContext {
            report_id: &entry.report_id,
            subject: entry.subject.as_deref().unwrap_or(""),
            thread,
            ghsa_id: &advisory.ghsa_id,
            advisory_url: &advisory.html_url,
            repository: entry.repository.as_deref().unwrap_or(""),
            cve_id: advisory.cve_id.as_deref(),
            policy_url: &self.config.reply.policy_url,
            project_name: &self.config.reply.project_name,
        };
        let to = Address {
            name: None,
            email: to,
        };
        let message = match self
            .notices
            .render(event, &ctx, &to, &from_address(&self.config))
        {
            Ok(m) => m,
            Err(e) => {
                error!(error = %e, "cannot render a notice; fix the template");
                return Ok(false);
            }
        };
        let sent = match self.mailer.send(&message).await {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, event = event.as_str(), "notice not sent; next look tries again");
                return Ok(false);
            }
        };
        self.journal.record_notice(
            &entry.report_id,
            event.as_str(),
            &message.message_id,
            Utc::now(),
        )?;
        Metrics::inc(&self.metrics.notices_sent);
        info!(event = event.as_str(), ghsa = %advisory.ghsa_id, "reporter notified");
        if let Some(folder) = &self.config.imap.sent_folder
            && let Err(e) = imap.append(folder, &sent).await
        {
            warn!(error = %e, "notice sent, but its copy could not be kept in the sent folder");
            if !imap.is_connected() {
                return Err(StepError::Imap(e));
            }
        }
        Ok(true)
    }

    /// Adopts the advisory that carries this report's marker, or creates it.
    async fn ensure_advisory(
        &self,
        report: &Report,
        draft: &AdvisoryDraft,
    ) -> Result<AdvisoryRef, ReportFailure> {
        let marker = render::marker(&report.report_id);
        if let Some(found) = self
            .github
            .find_by_marker(&draft.repository, &marker)
            .await
            .map_err(ReportFailure::GitHub)?
        {
            Metrics::inc(&self.metrics.advisories_adopted);
            info!(ghsa = %found.ghsa_id, "adopted an existing advisory that carries this report's marker");
            return Ok(found);
        }
        let created = match self.config.github.mode {
            GithubMode::Draft => self.github.create_draft(draft).await,
            GithubMode::Triage => self.github.report_vulnerability(draft).await,
        }
        .map_err(ReportFailure::GitHub)?;
        Metrics::inc(&self.metrics.advisories_created);
        info!(ghsa = %created.ghsa_id, repository = %created.repository, "draft advisory created");
        Ok(created)
    }

    /// Schedules a retry for a transient failure, or quarantines on a permanent one.
    async fn failed(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        id: &ReportId,
        entry: &Entry,
        failure: ReportFailure,
    ) -> Result<Step, StepError> {
        match failure.kind() {
            FailureKind::Transient { retry_after } => {
                // A create (or update) that failed without a clear answer may still be
                // landing at GitHub: wait at least one request timeout before the retry
                // looks for its marker, so the retry finds it instead of racing it.
                let retry_after = match &failure {
                    ReportFailure::GitHub(e)
                        if matches!(e.operation, "create advisory" | "update advisory") =>
                    {
                        let floor = Duration::from_secs(self.config.github.timeout_secs);
                        Some(retry_after.map_or(floor, |r| r.max(floor)))
                    }
                    _ => retry_after,
                };
                let delay = backoff(
                    entry.attempts + 1,
                    Duration::from_secs(self.config.retry.initial_delay_secs),
                    Duration::from_secs(self.config.retry.max_delay_secs),
                    retry_after,
                );
                let now = Utc::now();
                let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
                let attempts = self
                    .journal
                    .record_failure(id, &failure.to_string(), next, now)?;
                self.deferred
                    .insert((self.uidvalidity.unwrap_or(0), uid), next);
                Metrics::inc(&self.metrics.retries);
                warn!(error = %failure, attempts, retry_in = ?delay, "step failed; will retry");
                Ok(Step::Deferred(next))
            }
            FailureKind::Permanent => {
                // The entry may predate this pass's own progress (an advisory made just
                // now): read the journal again for the reason.
                let current = self.journal.get(id)?.unwrap_or_else(|| entry.clone());
                let reason = match &current.ghsa_id {
                    Some(ghsa) => format!("advisory {ghsa} exists, but: {failure}"),
                    None => failure.to_string(),
                };
                self.quarantine(imap, uid, id, &reason).await?;
                Ok(Step::Done)
            }
        }
    }

    async fn quarantine(
        &mut self,
        imap: &mut ImapSource,
        uid: u32,
        id: &ReportId,
        reason: &str,
    ) -> Result<(), StepError> {
        self.journal
            .record_final(id, State::Quarantined, Some(reason), Utc::now())?;
        imap.move_to(uid, &self.config.imap.quarantine_folder)
            .await?;
        Metrics::inc(&self.metrics.quarantined);
        error!(outcome = "quarantined", report_id = %id, reason, "message quarantined");
        Ok(())
    }

    fn folder_for(&self, state: State) -> &str {
        match state {
            State::Ignored => &self.config.imap.ignored_folder,
            State::Quarantined => &self.config.imap.quarantine_folder,
            _ => &self.config.imap.processed_folder,
        }
    }
}

/// Sleeps `delay` unless shutdown comes first; true means shutdown.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Tells systemd we are ready (no-op outside systemd).
fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Sets systemd's status line (no-op outside systemd).
pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_what_the_server_asked() {
        let s = Duration::from_secs;
        for attempt in 1..40 {
            let d = backoff(attempt, s(5), s(900), None);
            assert!(d <= s(900), "attempt {attempt}: {d:?}");
            let nominal = s(5).saturating_mul(1 << (attempt - 1).min(20)).min(s(900));
            assert!(d >= nominal / 2, "attempt {attempt}: {d:?}");
        }
        let d = backoff(1, s(5), s(900), Some(s(120)));
        assert!(d >= s(120) && d <= s(121), "{d:?}");
    }
}
