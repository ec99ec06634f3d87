//! The supervisor: connects the mailbox (reconnecting with backoff), runs passes over
//! it, waits for the next [`Event`] and handles it, starts the notice watcher as its own
//! task, honours shutdown with a grace period for the step in flight, and talks to
//! systemd (READY, STATUS, STOPPING, and a watchdog fed by the loop's own progress).
//!
//! The rules for one message live in `engine`, the mailbox operations in `mailbox`;
//! this file only decides when each runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, ConfigError, Resolved};
use crate::engine::{Clock, Engine, EngineError, backoff};
use crate::github::{GitHub, GitHubError};
use crate::journal::{Journal, JournalError, Registration};
use crate::mailbox::{self, Fetched, Mailbox, MailboxError, Memory};
use crate::metrics::Metrics;
use crate::render::marker::MarkerKeyError;
use crate::render::notice::NoticeTemplates;
use crate::render::{self, MarkerKey, Templates};
use crate::reply::{Mailer, SendError};
use crate::source::{ImapError, Wake};
use crate::spool::{Spool, SpoolError};
use crate::watcher::{self, CopiesRx, Watcher};

/// IDLE must be re-issued before the 29-minute server timeout (RFC 2177).
const MAX_IDLE: Duration = Duration::from_secs(28 * 60);
/// How long a step in flight may run on after SIGTERM before it is abandoned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
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
    /// The key of the advisory markers cannot be read or made.
    #[error(transparent)]
    MarkerKey(#[from] MarkerKeyError),
}

impl From<EngineError> for FatalError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Journal(e) => FatalError::Journal(e),
            EngineError::Spool(e) => FatalError::Spool(e),
        }
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

/// Everything that makes the supervisor act: the closed set of triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// The server announced news in the watched mailbox (or a poll is due).
    MailboxChanged,
    /// A message waiting in the claim folder is due for its retry.
    RetryDue,
    /// The watcher sent mail whose copy belongs in the sent folder.
    CopiesWaiting,
    /// Nothing happened for a while: time to tell the watchdog we are alive.
    Tick,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// Why a session ended early.
enum SessionError {
    /// The IMAP session broke: reconnect.
    Imap(ImapError),
    /// The daemon must stop.
    Fatal(FatalError),
}

impl From<ImapError> for SessionError {
    fn from(e: ImapError) -> Self {
        SessionError::Imap(e)
    }
}
impl From<MailboxError> for SessionError {
    fn from(e: MailboxError) -> Self {
        match e {
            MailboxError::Imap(e) => SessionError::Imap(e),
            MailboxError::Journal(e) => SessionError::Fatal(e.into()),
            MailboxError::Spool(e) => SessionError::Fatal(e.into()),
        }
    }
}
impl From<EngineError> for SessionError {
    fn from(e: EngineError) -> Self {
        SessionError::Fatal(e.into())
    }
}

/// Which lane of a pass a message is handled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Without waiting for GitHub's pacing.
    Unpaced,
    /// Waiting for it.
    Paced,
}

/// What became of one message in a pass.
enum Stepped {
    /// Filed, held, or gone.
    Done,
    /// Left for a retry not before this time.
    Deferred(DateTime<Utc>),
    /// Would have waited for GitHub's pacing: handled again in the paced lane.
    Paced,
}

/// What one pass over the claim folder left.
#[derive(Debug, Default)]
struct Pass {
    /// Messages waiting for a retry.
    deferred: usize,
    /// The earliest retry among them.
    next_due: Option<DateTime<Utc>>,
    /// Messages in the inbox that other instances claimed.
    others: u32,
    /// Shutdown came during the pass.
    stopped: bool,
}

/// The supervisor with the engine and the watcher it runs.
pub struct Daemon {
    settings: Arc<Resolved>,
    engine: Engine<GitHub, Mailer>,
    journal: Journal,
    metrics: Arc<Metrics>,
    watcher: Option<Watcher<GitHub, Mailer>>,
    copies: CopiesRx,
    memory: Option<Memory>,
    watchdog: Option<Duration>,
}

impl Daemon {
    /// Reads secrets, loads the templates, opens the journal and spool, loads (or makes)
    /// the marker key, and builds the clients. Contacts nothing.
    pub async fn new(config: Config, metrics: Arc<Metrics>) -> Result<Daemon, FatalError> {
        let templates = Arc::new(Templates::load(&config.reply)?);
        let notices = NoticeTemplates::load(config.notify.template_dir.as_deref())?;
        let settings = Arc::new(Resolved::new(config)?);
        let mailer = Mailer::new(&settings.smtp)?;
        let github = GitHub::new(&settings.github)?;
        let spool = Spool::open(&settings.config.state_dir)?;
        let journal = Journal::from_config(&settings.config)?;
        metrics.watch_journal(journal.reachable_flag());
        let config = &settings.config;
        // Markers without a tag were written by releases before keys existed: they count
        // on advisories older than this journal's first start with such a release.
        let legacy_before = journal.call(|db| db.started_at()).await?;
        let marker = MarkerKey::load(
            &config.marker_key_path(),
            config.advisory.marker_key_file.is_none(),
        )?
        .with_legacy_before(legacy_before);
        let (copies_tx, copies) = watcher::copies();
        let watcher = Watcher::new(
            settings.clone(),
            journal.clone(),
            github.clone(),
            mailer.clone(),
            notices,
            marker.clone(),
            metrics.clone(),
            Clock::System,
            copies_tx,
        );
        let engine = Engine::new(
            settings.clone(),
            journal.clone(),
            spool,
            github,
            mailer,
            templates,
            marker,
            metrics.clone(),
            Clock::System,
        );
        Ok(Daemon {
            settings,
            engine,
            journal,
            metrics,
            watcher: Some(watcher),
            copies,
            memory: Some(Memory::default()),
            watchdog: watchdog_period(),
        })
    }

    /// Runs until `shutdown` turns true (`Run`) or the mailbox is drained (`Once`).
    pub async fn run(
        &mut self,
        mode: Mode,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Summary, FatalError> {
        let watcher = match (mode, self.watcher.take()) {
            (Mode::Run, Some(w)) => Some(tokio::spawn(w.run(shutdown.clone()))),
            _ => None,
        };
        let renewal = self.journal.is_shared().then(|| {
            tokio::spawn(renew_leases(
                self.journal.clone(),
                Duration::from_secs(self.settings.config.journal.lease_secs),
                shutdown.clone(),
            ))
        });
        let result = self.supervise(mode, shutdown).await;
        if let Some(task) = renewal {
            task.abort();
        }
        if let Some(task) = watcher {
            // After a shutdown the watcher ends by itself; after a fatal error it must be
            // stopped. A journal failure in the watcher is fatal too.
            if result.is_err() {
                task.abort();
            }
            if let Ok(Err(e)) = task.await
                && result.is_ok()
            {
                return Err(e.into());
            }
        }
        result
    }

    async fn supervise(
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
            self.metrics.imap_connects.inc();
            let memory = self.memory.take().unwrap_or_default();
            let connected = Mailbox::connect(
                self.settings.clone(),
                self.journal.clone(),
                self.metrics.clone(),
                memory,
            )
            .await;
            let (mut mailbox, state) = match connected {
                Ok(c) => c,
                Err(e) if mode == Mode::Once => return Err(e.into()),
                Err(e) => {
                    self.memory = Some(Memory::default());
                    reconnect_attempts += 1;
                    let delay = backoff(
                        reconnect_attempts,
                        Duration::from_secs(1),
                        MAX_RECONNECT_DELAY,
                        None,
                    );
                    mailbox::log_connect_failure(&e, delay);
                    notify_status(&format!("mailbox unreachable: {e}"));
                    if self.wait_or_shutdown(&mut shutdown, delay).await {
                        return Ok(Summary::default());
                    }
                    continue;
                }
            };
            reconnect_attempts = 0;
            if self.journal.is_shared() {
                // Registered with the claim folder as this server names it, for whoever
                // takes over our mail should we die.
                let registration = Registration {
                    name: self.settings.instance.clone(),
                    claim_folder: mailbox.claim_folder().to_owned(),
                    lease: Duration::from_secs(self.settings.config.journal.lease_secs),
                };
                let registered = self
                    .journal
                    .call(move |db| db.register(&registration))
                    .await;
                if let Err(e) = registered {
                    let _ = mailbox.into_memory().1.logout().await;
                    return Err(e.into());
                }
            }
            self.metrics.set_mailbox_connected(true);
            if !ready_sent {
                ready_sent = true;
                notify_ready();
            }
            info!(
                mailbox = %self.settings.config.imap.mailbox,
                messages = state.exists,
                "watching the mailbox"
            );
            let session_started = tokio::time::Instant::now();
            let result = self.session(&mut mailbox, mode, &mut shutdown).await;
            self.metrics.set_mailbox_connected(false);
            let (memory, imap) = mailbox.into_memory();
            self.memory = Some(memory);
            match result {
                Ok(summary) => {
                    let _ = imap.logout().await;
                    return Ok(summary);
                }
                Err(SessionError::Fatal(e)) => {
                    let _ = imap.logout().await;
                    return Err(e);
                }
                Err(SessionError::Imap(e)) => {
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
                    if self.wait_or_shutdown(&mut shutdown, delay).await {
                        return Ok(Summary::default());
                    }
                }
            }
        }
    }

    /// One logged-in session: passes over the mailbox, each followed by waiting for the
    /// next event that calls for one.
    async fn session(
        &mut self,
        mailbox: &mut Mailbox,
        mode: Mode,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Summary, SessionError> {
        loop {
            self.keep_copies(mailbox).await?;
            let pass = self.pass(mailbox, shutdown).await?;
            if pass.stopped {
                return Ok(Summary {
                    deferred: pass.deferred,
                });
            }
            let inbox = mailbox.back_to_inbox().await?;
            notify_status(&format!(
                "idle; {} message(s) waiting for a retry",
                pass.deferred
            ));
            if inbox.exists > pass.others {
                // Mail arrived while we worked in the claim folder, or more of a backlog
                // waits than one pass claims.
                continue;
            }
            if mode == Mode::Once {
                return Ok(Summary {
                    deferred: pass.deferred,
                });
            }
            loop {
                feed_watchdog();
                match self.next_event(mailbox, pass.next_due, shutdown).await? {
                    Event::MailboxChanged | Event::RetryDue => break,
                    Event::CopiesWaiting => self.keep_copies(mailbox).await?,
                    Event::Tick => {}
                    Event::Shutdown => {
                        return Ok(Summary {
                            deferred: pass.deferred,
                        });
                    }
                }
            }
        }
    }

    /// Waits in the watched mailbox for whatever comes first.
    async fn next_event(
        &mut self,
        mailbox: &mut Mailbox,
        next_due: Option<DateTime<Utc>>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Event, ImapError> {
        if *shutdown.borrow() {
            return Ok(Event::Shutdown);
        }
        let until_due = next_due.map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        if until_due == Some(Duration::ZERO) {
            return Ok(Event::RetryDue);
        }
        let mut max_wait = until_due.unwrap_or(MAX_IDLE).min(MAX_IDLE);
        if let Some(period) = self.watchdog {
            max_wait = max_wait.min(period);
        }
        let mut stop = shutdown.clone();
        let copies = &self.copies;
        let interrupt = async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = copies.ready() => {}
            }
        };
        let wake = mailbox.wait(max_wait, interrupt).await?;
        Ok(match wake {
            Wake::Changed => Event::MailboxChanged,
            Wake::Interrupted if *shutdown.borrow() => Event::Shutdown,
            Wake::Interrupted => Event::CopiesWaiting,
            Wake::Timeout if next_due.is_some_and(|t| t <= Utc::now()) => Event::RetryDue,
            Wake::Timeout => Event::Tick,
        })
    }

    /// Appends the copies of mail the watcher sent.
    async fn keep_copies(&mut self, mailbox: &mut Mailbox) -> Result<(), ImapError> {
        for copy in self.copies.drain() {
            mailbox.keep_copy(&copy).await?;
        }
        Ok(())
    }

    /// Claims new mail, then moves every message in the claim folder as far as it can go.
    async fn pass(
        &mut self,
        mailbox: &mut Mailbox,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Pass, SessionError> {
        let mut pass = Pass::default();
        let stop = shutdown.clone();
        pass.others = mailbox.claim_new(|| !*stop.borrow()).await?;
        self.take_over_dead_instances(mailbox).await?;
        let shared = self.journal.is_shared();
        let takeover_every = Duration::from_secs(self.settings.config.journal.lease_secs) / 3;
        let mut takeover_checked = tokio::time::Instant::now();
        // Two lanes: first every message except new reports that would wait for GitHub's
        // pacing (noise, follow-ups, reports while the pacer is free), then those
        // reports, in order, waiting their turn.
        let mut uids = mailbox.pending().await?;
        for lane in [Lane::Unpaced, Lane::Paced] {
            let mut paced = Vec::new();
            for uid in std::mem::take(&mut uids) {
                // A long pass still takes over a dead instance's mail soon after its
                // lease ran out; what it moves here is handled right after this pass.
                if shared && takeover_checked.elapsed() >= takeover_every {
                    takeover_checked = tokio::time::Instant::now();
                    // Queued moves name UIDs of our claim folder: out before another
                    // folder is selected.
                    mailbox.flush_moves().await?;
                    let (won, moved) = self.take_over_dead_instances(mailbox).await?;
                    if moved > 0 {
                        pass.next_due = Some(Utc::now());
                    }
                    if won > 0 {
                        // The takeover selected the dead instance's folder: back to ours.
                        mailbox.pending().await?;
                    }
                }
                if *shutdown.borrow() {
                    pass.stopped = true;
                    mailbox.flush_moves().await?;
                    return Ok(pass);
                }
                feed_watchdog();
                let step = self
                    .step(mailbox, uid, lane, shutdown)
                    .instrument(info_span!("message", uid))
                    .await?;
                match step {
                    None => {
                        pass.stopped = true;
                        mailbox.flush_moves().await?;
                        return Ok(pass);
                    }
                    Some(Stepped::Done) => {}
                    Some(Stepped::Paced) => paced.push(uid),
                    Some(Stepped::Deferred(at)) => {
                        pass.deferred += 1;
                        pass.next_due = Some(pass.next_due.map_or(at, |n| n.min(at)));
                    }
                }
            }
            uids = paced;
        }
        // Before anything selects another folder: the queued UIDs are the claim folder's.
        mailbox.flush_moves().await?;
        if let Some(at) = mailbox.end_pass().await {
            pass.next_due = Some(pass.next_due.map_or(at, |n| n.min(at)));
        }
        if self.journal.is_shared() {
            // Another pass every third of a lease even when no mail comes: it takes over
            // the mail of an instance that died soon after its lease runs out.
            let lease = Duration::from_secs(self.settings.config.journal.lease_secs);
            let at = Utc::now() + chrono::Duration::from_std(lease / 3).unwrap_or_default();
            pass.next_due = Some(pass.next_due.map_or(at, |n| n.min(at)));
        }
        Ok(pass)
    }

    /// On a shared journal: for each other instance whose lease ran out, wins its
    /// takeover in the journal (one winner) and moves the mail of its claim folder into
    /// ours, where this pass handles it; its claims on reports become ours. An instance
    /// that comes back meanwhile keeps its registration. Returns how many instances
    /// were taken over and how many messages moved.
    async fn take_over_dead_instances(
        &mut self,
        mailbox: &mut Mailbox,
    ) -> Result<(usize, usize), SessionError> {
        if !self.journal.is_shared() {
            return Ok((0, 0));
        }
        let (mut won_any, mut total) = (0, 0);
        let me = self.settings.instance.clone();
        let lease = Duration::from_secs(self.settings.config.journal.lease_secs);
        let instances = self
            .journal
            .call(|db| db.instances())
            .await
            .map_err(|e| SessionError::Fatal(e.into()))?;
        for dead in instances.into_iter().filter(|i| i.expired && i.name != me) {
            let (name, taker) = (dead.name.clone(), me.clone());
            let won = self
                .journal
                .call(move |db| db.take_over(&name, &taker, lease))
                .await
                .map_err(|e| SessionError::Fatal(e.into()))?;
            let Some(renewed_at) = won else { continue };
            won_any += 1;
            let moved = mailbox.take_over_folder(&dead.claim_folder).await?;
            total += moved;
            warn!(
                instance = %dead.name,
                last_renewal = %dead.renewed_at,
                moved,
                "took over the mail of an instance whose lease ran out"
            );
            let name = dead.name.clone();
            self.journal
                .call(move |db| db.forget_instance(&name, renewed_at))
                .await
                .map_err(|e| SessionError::Fatal(e.into()))?;
        }
        Ok((won_any, total))
    }

    /// Fetches, handles and settles one message. On shutdown the step in flight gets a
    /// short grace period and is then abandoned (the journal lets the next start finish
    /// it): `None`. Otherwise what became of the message.
    async fn step(
        &mut self,
        mailbox: &mut Mailbox,
        uid: u32,
        lane: Lane,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Option<Stepped>, SessionError> {
        let engine = &self.engine;
        let work = async {
            match mailbox.fetch(uid, Utc::now()).await? {
                Fetched::Gone => Ok(Stepped::Done),
                Fetched::Deferred(at) => Ok(Stepped::Deferred(at)),
                Fetched::Message(incoming) => {
                    let disposition = match lane {
                        Lane::Unpaced => engine.handle_unless_paced(incoming).await?,
                        Lane::Paced => engine.handle(incoming).await?,
                    };
                    if disposition.action == crate::engine::Action::Paced {
                        return Ok(Stepped::Paced);
                    }
                    Ok::<_, SessionError>(match mailbox.settle(uid, disposition).await? {
                        Some(at) => Stepped::Deferred(at),
                        None => Stepped::Done,
                    })
                }
            }
        };
        tokio::pin!(work);
        let mut stop = shutdown.clone();
        tokio::select! {
            r = &mut work => return r.map(Some),
            _ = stop.changed() => {}
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

    /// Sleeps `delay` unless shutdown comes first; true means shutdown.
    async fn wait_or_shutdown(
        &self,
        shutdown: &mut watch::Receiver<bool>,
        delay: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            feed_watchdog();
            let nap = self
                .watchdog
                .unwrap_or(delay)
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {
                    if tokio::time::Instant::now() >= deadline {
                        return *shutdown.borrow();
                    }
                }
                _ = shutdown.changed() => return true,
            }
        }
    }
}

/// Renews this instance's lease and those of its claims every third of the lease, until
/// shutdown; then makes journal waits give up, so that a stop while the database is
/// unreachable does not hang.
async fn renew_leases(journal: Journal, lease: Duration, mut shutdown: watch::Receiver<bool>) {
    let every = (lease / 3).max(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {
                journal.stop_waiting();
                return;
            }
        }
        if *shutdown.borrow() {
            journal.stop_waiting();
            return;
        }
        if let Err(e) = journal.call(|db| db.renew_leases()).await {
            warn!(error = %e, "cannot renew this instance's leases; trying again");
        }
    }
}

/// Half of systemd's watchdog interval, when the watchdog is on.
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0u64;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec / 2))
}

/// Tells systemd's watchdog the loop made progress (no-op outside systemd).
fn feed_watchdog() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
}

/// Tells systemd we are ready (no-op outside systemd).
fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Sets systemd's status line (no-op outside systemd).
pub fn notify_status(status: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
}
