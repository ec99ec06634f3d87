//! The mailbox side of the daemon: claim new mail into this instance's folder, list what
//! is pending there, fetch one message, wait for news, and [`Mailbox::settle`] a
//! message: the only place that records an outcome in the journal and then moves the
//! message, in that order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::config::Resolved;
use crate::engine::{Action, Disposition, Folder, Incoming};
use crate::failure::Classify;
use crate::journal::{Journal, JournalError, State};
use crate::metrics::{Metrics, Server};
use crate::source::{ClaimMode, FetchOutcome, ImapError, ImapSource, MailboxState, Wake};

/// The pause scope that marks `/healthz` degraded while the server refuses commands on
/// single messages (claim or fetch).
pub const REFUSAL_SCOPE: &str = "IMAP";

/// The journal's `meta` key holding the latest refusal (`<RFC 3339 time> <reason>`) for
/// `advisory-bridge status`; empty once a pass saw none.
pub const REFUSAL_META_KEY: &str = "imap_refusal";

/// The most messages one pass claims, and the size of one claim or filing command: small
/// enough that the first report of a large backlog is handled within a second, large
/// enough that commands per message stay near one.
pub const CLAIM_BATCH: usize = 64;

/// Claim keywords are this plus the instance name (see `ImapSource::claim`).
const CLAIM_KEYWORD_PREFIX: &str = "$AdvisoryBridgeClaim_";

/// The keyword a held message carries into the held folder.
pub const HELD_KEYWORD: &str = "$AdvisoryBridgeHeld";

/// Why a mailbox step failed.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The IMAP session broke or the server refused: reconnect and try again.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The journal cannot be written: the daemon must stop.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The state directory cannot be made durable: the daemon must stop.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

/// What [`Mailbox::fetch`] found for a UID.
#[derive(Debug)]
pub enum Fetched {
    /// Gone (expunged by someone else): nothing to do.
    Gone,
    /// Waiting for a retry not before this time; not fetched again.
    Deferred(DateTime<Utc>),
    /// The message for the engine.
    Message(Incoming),
}

/// A logged-in mailbox with this instance's folders.
pub struct Mailbox {
    imap: ImapSource,
    settings: Arc<Resolved>,
    journal: Journal,
    metrics: Arc<Metrics>,
    memory: Memory,
    /// This instance's claim folder as the server names it (namespace and delimiter).
    claim_folder: String,
    /// Where copies of sent mail go: `imap.sent_folder`, else the server's `\Sent`.
    sent_folder: Option<String>,
    /// Where spam goes: `imap.junk_folder`, else the server's `\Junk`, else ignored.
    junk_folder: String,
    /// Refusals of single-message commands in the current pass.
    refusals: u32,
    /// A refusal is noted in the journal for `status` and not yet cleared.
    refusal_noted: bool,
    /// Settled messages waiting for their move: claim-folder UID, target folder, verdict.
    moves: Vec<(u32, String, Action)>,
    /// The claim folder's UIDs as the current pass listed them, for fetching sizes ahead.
    listed: Vec<u32>,
    /// Sizes fetched ahead for this pass, by UID: `None` for a UID asked about that the
    /// server did not list (gone).
    sizes: HashMap<u32, Option<u32>>,
}

/// What the mailbox remembers across sessions.
#[derive(Debug, Default)]
pub struct Memory {
    /// Per claim-folder UID (within one UIDVALIDITY): not before this time. Saves
    /// refetching messages that wait for a retry on every pass.
    deferred: HashMap<(u32, u32), DateTime<Utc>>,
    /// The claim folder's UIDVALIDITY when last selected.
    uidvalidity: Option<u32>,
    /// Per claim-folder UID: when this instance first saw it waiting (for the backlog age).
    waiting_since: HashMap<(u32, u32), DateTime<Utc>>,
}

impl Mailbox {
    /// Connects, creates the folders we file into, selects the watched mailbox and warns
    /// about other instances' claim folders that still hold mail.
    pub async fn connect(
        settings: Arc<Resolved>,
        journal: Journal,
        metrics: Arc<Metrics>,
        memory: Memory,
    ) -> Result<(Mailbox, MailboxState), ImapError> {
        let imap_config = &settings.config.imap;
        let mut imap = ImapSource::open(&settings.imap).await?;
        let claim_folder = imap
            .namespace()
            .child(&imap_config.processing_folder, &settings.instance);
        let mut folders = vec![
            imap_config.processed_folder.clone(),
            imap_config.ignored_folder.clone(),
            imap_config.quarantine_folder.clone(),
            imap_config.held_folder.clone(),
            claim_folder.clone(),
        ];
        folders.extend(imap_config.sent_folder.clone());
        folders.extend(imap_config.junk_folder.clone());
        let folders: Vec<&str> = folders.iter().map(String::as_str).collect();
        let state = imap.prepare(&imap_config.mailbox, &folders).await?;
        let special = imap.special_folders().clone();
        let sent_folder = imap_config.sent_folder.clone().or(special.sent);
        let junk_folder = imap_config
            .junk_folder
            .clone()
            .or(special.junk)
            .unwrap_or_else(|| imap_config.ignored_folder.clone());
        if imap_config.sent_folder.is_none()
            && let Some(sent) = &sent_folder
        {
            info!(folder = %sent, "copies of sent mail go to the server's \\Sent folder");
        }
        if imap_config.junk_folder.is_none() && junk_folder != imap_config.ignored_folder {
            info!(folder = %junk_folder, "mail flagged as spam goes to the server's \\Junk folder");
        }
        let mut mailbox = Mailbox {
            imap,
            settings,
            journal,
            metrics,
            memory,
            claim_folder,
            sent_folder,
            junk_folder,
            moves: Vec::new(),
            listed: Vec::new(),
            sizes: HashMap::new(),
            refusals: 0,
            // A note left by an earlier session or run is cleared by the first clean pass.
            refusal_noted: true,
        };
        match mailbox.other_claim_folders().await {
            Ok(others) => {
                mailbox.metrics.set_other_instances(others);
                mailbox.say_how_claims_work(others);
            }
            Err(e) => warn!(error = %e, "cannot look at other instances' claim folders"),
        }
        Ok((mailbox, state))
    }

    /// This instance's claim folder as the server names it.
    pub fn claim_folder(&self) -> &str {
        &self.claim_folder
    }

    /// One line on how this server lets us claim mail: INFO when it is safe, one WARN when
    /// another instance's claim folder exists and the server lacks CONDSTORE or keywords.
    fn say_how_claims_work(&self, other_instances: usize) {
        let imap = &self.imap;
        let server = imap.identity().unwrap_or("unknown");
        let caps = imap.describe();
        let moves = if imap.capabilities().move_command {
            "MOVE"
        } else {
            "COPY + EXPUNGE"
        };
        let features = imap.features();
        let mut lacking = Vec::new();
        if !features.condstore {
            lacking.push("CONDSTORE");
        }
        if !features.keywords {
            lacking.push("custom keywords (PERMANENTFLAGS without \\*)");
        }
        let lacking = lacking.join(" and ");
        let how = match imap.claim_mode() {
            ClaimMode::Conditional => "a conditional keyword",
            ClaimMode::Plain => "a plain keyword",
            ClaimMode::MoveOnly => "the move alone",
        };
        let shared = self.journal.is_shared();
        match (imap.claim_mode(), other_instances) {
            (ClaimMode::Conditional, _) if shared => tracing::info!(
                server,
                capabilities = %caps,
                "claims use a conditional keyword (CONDSTORE) and {moves}, and each report is claimed in the shared journal: safe for several instances"
            ),
            (_, _) if shared => tracing::info!(
                server,
                capabilities = %caps,
                "the IMAP server lacks {lacking}; claims use {how} and {moves}, and each report is claimed in the shared journal: safe for several instances"
            ),
            (ClaimMode::Conditional, _) => tracing::info!(
                server,
                capabilities = %caps,
                "claims use a conditional keyword (CONDSTORE) and {moves}: safe for several instances"
            ),
            (_, 0) => tracing::info!(
                server,
                capabilities = %caps,
                "the IMAP server lacks {lacking}; claims use {how} and {moves}, which is safe for this single instance only (no other claim folder exists)"
            ),
            (_, n) => warn!(
                server,
                capabilities = %caps,
                other_instances = n,
                "the IMAP server lacks {lacking}, but {n} other instance claim folder(s) exist: two instances may both handle one message; run a single instance on this server, or delete the other claim folders once their instances are gone for good"
            ),
        }
    }

    /// What to keep for the next session after this one ends.
    pub fn into_memory(self) -> (Memory, ImapSource) {
        (self.memory, self.imap)
    }

    /// Counts the claim folders of other instances and warns about those that still hold
    /// mail: if such an instance is gone for good, a person must move its mail back to
    /// the inbox.
    async fn other_claim_folders(&mut self) -> Result<usize, ImapError> {
        let prefix = self
            .imap
            .namespace()
            .child(&self.settings.config.imap.processing_folder, "");
        let ours = self.claim_folder.clone();
        let mut others = 0;
        for (folder, count) in self.imap.folders_with_prefix(&prefix).await? {
            if folder == ours {
                continue;
            }
            others += 1;
            // With a shared journal a dead instance's mail is taken over by itself.
            let shared = self.journal.is_shared();
            if count > 0 && shared {
                debug!(folder = %folder, messages = count, "another instance's claim folder holds mail; taken over should its lease run out");
            } else if count > 0 {
                warn!(
                    folder = %folder,
                    messages = count,
                    "another instance's claim folder holds mail; if that instance is gone for good, move its mail back to the inbox"
                );
            }
        }
        Ok(others)
    }

    /// Reports a command on one message the server refused while the session lives on: a
    /// WARN with the server's answer, the refusal counter, `/healthz` degraded.
    async fn refused(&mut self, uid: u32, what: &str, e: &ImapError) {
        self.refusals += 1;
        self.metrics.imap_refusals.inc();
        let reason = format!("the server refused to {what} UID {uid}: {}", e.message);
        self.metrics
            .pause(REFUSAL_SCOPE, &reason, self.refused_retry());
        warn!(uid, error = %e, "the IMAP server refused to {what} a message; it stays where it is and is tried again (check the server's log and capabilities)");
        self.note_refusal(format!("{} {reason}", Utc::now().to_rfc3339()))
            .await;
        self.refusal_noted = true;
    }

    /// Keeps the latest refusal (or none: empty) in the journal for `status`; a journal
    /// that cannot take it only costs that line.
    async fn note_refusal(&self, value: String) {
        let noted = self
            .journal
            .call(move |db| db.set_meta(REFUSAL_META_KEY, &value))
            .await;
        if let Err(e) = noted {
            warn!(error = %e, "cannot note the IMAP refusal in the journal for `status`");
        }
    }

    /// How long a refused message waits before it is tried again: the first retry delay.
    fn refused_retry(&self) -> Duration {
        Duration::from_secs(self.settings.config.retry.initial_delay_secs)
    }

    /// Ends a pass: `/healthz` is healthy again once a pass saw no refusal; after one,
    /// when the next pass should try the refused messages again.
    pub async fn end_pass(&mut self) -> Option<DateTime<Utc>> {
        if std::mem::take(&mut self.refusals) == 0 {
            // Cleared in the journal before /healthz says healthy again.
            if std::mem::take(&mut self.refusal_noted) {
                self.note_refusal(String::new()).await;
            }
            self.metrics.resume(REFUSAL_SCOPE);
            return None;
        }
        let delay = chrono::Duration::from_std(self.refused_retry()).ok()?;
        Some(Utc::now() + delay)
    }

    /// Claims up to [`CLAIM_BATCH`] of the watched mailbox's new mail into this
    /// instance's folder, while `go_on` says so: in batches of that size (flags, one
    /// conditional store, flags again, one move: four commands per batch), so the first
    /// messages of a large backlog are handled at once and the rest are claimed between
    /// passes. A message another instance claimed first is simply theirs; a crash after
    /// the move leaves the message in our folder, where the next start finds it. A batch
    /// the server refuses (`NO`/`BAD`) is claimed again one message at a time, so the
    /// refusal ([`Mailbox::refused`]) names the message, never read as another
    /// instance's. Returns how many of the messages it looked at stay in the inbox
    /// (other instances' and refused ones); the caller passes again while the inbox
    /// holds more than that.
    pub async fn claim_new(&mut self, go_on: impl Fn() -> bool) -> Result<u32, ImapError> {
        let new = self.imap.list_uids().await?;
        let keyword = format!("{CLAIM_KEYWORD_PREFIX}{}", self.settings.instance);
        let claim = self.claim_folder.clone();
        let mut others = 0u32;
        let mut claimed = 0usize;
        for batch in new.chunks(CLAIM_BATCH) {
            if !go_on() || claimed >= CLAIM_BATCH {
                break;
            }
            let ours = match self
                .imap
                .claim_all(batch, CLAIM_KEYWORD_PREFIX, &keyword)
                .await
            {
                Ok(ours) => ours,
                Err(e) if self.imap.is_connected() => {
                    debug!(error = %e, "a batch claim was refused; claiming one message at a time");
                    self.claim_one_by_one(batch, &keyword).await?
                }
                Err(e) => return Err(e),
            };
            others += u32::try_from(batch.len() - ours.len()).unwrap_or(u32::MAX);
            // A failed move still ends the session as before: the reconnect recreates a
            // claim folder someone deleted.
            self.imap.move_all(&ours, &claim).await?;
            claimed += ours.len();
        }
        if claimed > 0 {
            debug!(count = claimed, folder = %claim, "claimed new mail");
        }
        Ok(others)
    }

    /// Claims `uids` one at a time (after the server refused them as a batch); the
    /// refused ones are reported and stay. Returns the UIDs that are ours.
    async fn claim_one_by_one(
        &mut self,
        uids: &[u32],
        keyword: &str,
    ) -> Result<Vec<u32>, ImapError> {
        let mut ours = Vec::new();
        for &uid in uids {
            match self.imap.claim(uid, CLAIM_KEYWORD_PREFIX, keyword).await {
                Ok(true) => ours.push(uid),
                Ok(false) => {}
                Err(e) if self.imap.is_connected() => self.refused(uid, "claim", &e).await,
                Err(e) => return Err(e),
            }
        }
        Ok(ours)
    }

    /// Moves every message in `folder` (the claim folder of an instance that died, as
    /// the shared journal names it) into this instance's claim folder; how many moved.
    /// Only the instance that won the takeover in the journal calls this, so the mail of
    /// a dead instance is handled once, and by a live one.
    pub async fn take_over_folder(&mut self, folder: &str) -> Result<usize, ImapError> {
        let ours = self.claim_folder.clone();
        if self.imap.namespace().resolve(folder) == ours {
            return Ok(0);
        }
        self.imap.select_folder(folder).await?;
        let uids = self.imap.list_uids().await?;
        for &uid in &uids {
            self.imap.move_to(uid, &ours).await?;
        }
        Ok(uids.len())
    }

    /// Selects the claim folder and lists its messages. A change of UIDVALIDITY voids
    /// what we remembered about its UIDs (reports are keyed by their identity, so nothing
    /// is duplicated by a rescan).
    pub async fn pending(&mut self) -> Result<Vec<u32>, ImapError> {
        let claim = self.claim_folder.clone();
        let state = self.imap.select_folder(&claim).await?;
        if self.memory.uidvalidity != Some(state.uidvalidity) {
            if self.memory.uidvalidity.is_some() {
                warn!(
                    uidvalidity = state.uidvalidity,
                    "UIDVALIDITY of the claim folder changed; rescanning (reports are keyed by Message-ID, so nothing is duplicated)"
                );
            }
            self.memory.deferred.clear();
            self.memory.waiting_since.clear();
            self.memory.uidvalidity = Some(state.uidvalidity);
        }
        let uids = self.imap.list_uids().await?;
        self.metrics.contact(Server::Imap);
        let now = Utc::now();
        let validity = self.memory.uidvalidity.unwrap_or(0);
        let since = &mut self.memory.waiting_since;
        since.retain(|(v, uid), _| *v == validity && uids.contains(uid));
        for &uid in &uids {
            since.entry((validity, uid)).or_insert(now);
        }
        let oldest = since.values().min().map_or(0, |t| (now - *t).num_seconds());
        self.metrics.waiting(uids.len(), oldest);
        self.listed = uids.clone();
        self.sizes.clear();
        Ok(uids)
    }

    fn key(&self, uid: u32) -> (u32, u32) {
        (self.memory.uidvalidity.unwrap_or(0), uid)
    }

    /// Fetches one pending message, unless it waits for a retry not yet due.
    pub async fn fetch(&mut self, uid: u32, now: DateTime<Utc>) -> Result<Fetched, ImapError> {
        if let Some(&until) = self.memory.deferred.get(&self.key(uid))
            && until > now
        {
            return Ok(Fetched::Deferred(until));
        }
        let max = self.settings.limits.max_message_bytes;
        let outcome = match self.fetch_ahead(uid, now).await {
            Ok(Some(size)) => self.imap.fetch_sized(uid, size, max).await,
            Ok(None) => Ok(FetchOutcome::Gone),
            // The batch was refused: ask for this message alone, so a refusal names it.
            Err(_) if self.imap.is_connected() => self.imap.fetch(uid, max).await,
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) if self.imap.is_connected() => {
                // A NO to the fetch is not "gone": the message stays and is tried again.
                self.refused(uid, "fetch", &e).await;
                let until = now
                    + chrono::Duration::from_std(self.refused_retry())
                        .unwrap_or(chrono::Duration::seconds(60));
                let key = self.key(uid);
                self.memory.deferred.insert(key, until);
                return Ok(Fetched::Deferred(until));
            }
            Err(e) => return Err(e),
        };
        Ok(match outcome {
            FetchOutcome::Gone => Fetched::Gone,
            FetchOutcome::TooLarge { size } => Fetched::Message(Incoming::TooLarge {
                size,
                key: format!("{}-{uid}", self.memory.uidvalidity.unwrap_or(0)),
            }),
            FetchOutcome::Message(m) => Fetched::Message(Incoming::Message {
                held_mark: self
                    .imap
                    .features()
                    .keywords
                    .then(|| m.flags.iter().any(|f| f.eq_ignore_ascii_case(HELD_KEYWORD))),
                raw: m.raw,
                received_at: m.internal_date,
            }),
        })
    }

    /// The size of `uid`, fetched with those of the next [`CLAIM_BATCH`] listed messages
    /// not waiting for a retry (one command for the lot); `None` when it is gone.
    async fn fetch_ahead(
        &mut self,
        uid: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, ImapError> {
        if !self.sizes.contains_key(&uid) {
            let from = self
                .listed
                .iter()
                .position(|&u| u == uid)
                .unwrap_or(self.listed.len());
            let mut ahead = vec![uid];
            for &u in self.listed.iter().skip(from + 1) {
                if ahead.len() >= CLAIM_BATCH {
                    break;
                }
                let waiting = self
                    .memory
                    .deferred
                    .get(&self.key(u))
                    .is_some_and(|&until| until > now);
                if !waiting && !self.sizes.contains_key(&u) {
                    ahead.push(u);
                }
            }
            let found = self.imap.sizes(&ahead).await?;
            for u in ahead {
                self.sizes.insert(u, found.get(&u).copied());
            }
        }
        Ok(self.sizes.get(&uid).copied().flatten())
    }

    /// Carries out the engine's verdict on one message: keeps copies of the mail sent for
    /// it, then journals its outcome and queues its move (or leaves it for a retry).
    /// Queued moves go out together, one command per folder, when [`CLAIM_BATCH`] are
    /// queued and at [`Mailbox::flush_moves`] (the end of every pass): the journal holds
    /// each outcome first, so a crash before the move only repeats the move. Returns when
    /// the message next wants attention, for messages left in place.
    pub async fn settle(
        &mut self,
        uid: u32,
        disposition: Disposition,
    ) -> Result<Option<DateTime<Utc>>, MailboxError> {
        for copy in &disposition.copies {
            self.keep_copy(copy).await?;
        }
        let folders = &self.settings.config.imap;
        let target = match &disposition.action {
            Action::Retry { at } | Action::Pause { at, .. } => {
                let key = self.key(uid);
                self.memory.deferred.insert(key, *at);
                return Ok(Some(*at));
            }
            // Handled again later in this pass (the daemon keeps its UID).
            Action::Paced => return Ok(None),
            Action::File { folder, .. } => match folder {
                Folder::Processed => folders.processed_folder.clone(),
                Folder::Ignored => folders.ignored_folder.clone(),
                Folder::Junk => self.junk_folder.clone(),
                Folder::Quarantine => folders.quarantine_folder.clone(),
            },
            Action::Hold { .. } => folders.held_folder.clone(),
        };
        record_before_move(&self.journal, &disposition.action, Utc::now()).await?;
        self.moves.push((uid, target, disposition.action));
        if self.moves.len() >= CLAIM_BATCH {
            self.flush_moves().await?;
        }
        Ok(None)
    }

    /// Moves every settled message to its folder: per folder, held messages marked first
    /// (one `STORE`), then one `MOVE` for the lot, then the records that follow a move.
    pub async fn flush_moves(&mut self) -> Result<(), MailboxError> {
        if self.moves.is_empty() {
            return Ok(());
        }
        // The messages leave the claim folder: their spool files and outcomes must
        // survive a power cut first. One syncfs for the batch.
        let state_dir = self.settings.config.state_dir.clone();
        tokio::task::spawn_blocking(move || crate::spool::sync_state(&state_dir))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let mut queued = std::mem::take(&mut self.moves);
        while !queued.is_empty() {
            let target = queued[0].1.clone();
            let (batch, rest): (Vec<_>, Vec<_>) = queued.into_iter().partition(|m| m.1 == target);
            queued = rest;
            let uids: Vec<u32> = batch.iter().map(|m| m.0).collect();
            let held: Vec<u32> = batch
                .iter()
                .filter(|m| matches!(m.2, Action::Hold { .. }))
                .map(|m| m.0)
                .collect();
            if !held.is_empty() && self.imap.features().keywords {
                // What tells this message, moved back by a person, from a fresh copy: the
                // keyword travels with a move, and no mail can set it.
                if let Err(e) = self.imap.set_flag_all(&held, HELD_KEYWORD).await {
                    warn!(error = %e, "cannot mark the held message; its arrival time tells a release instead");
                    if !self.imap.is_connected() {
                        return Err(e.into());
                    }
                }
            }
            self.imap.move_all(&uids, &target).await?;
            for (uid, _, action) in &batch {
                record_after_move(&self.journal, action, Utc::now()).await?;
                match action {
                    Action::File {
                        state: State::Ignored,
                        ..
                    } => self.metrics.ignored.inc(),
                    Action::File {
                        state: State::Quarantined,
                        ..
                    } => self.metrics.quarantined.inc(),
                    Action::Hold { .. } => self.metrics.held.inc(),
                    _ => 0,
                };
                let key = self.key(*uid);
                self.memory.deferred.remove(&key);
            }
        }
        Ok(())
    }

    /// Appends a copy of mail we sent to `imap.sent_folder` (or the server's `\Sent`), if any. The mail
    /// went out already: a failed copy is a warning, never a reason to send again, unless
    /// the session broke (then the caller reconnects).
    pub async fn keep_copy(&mut self, raw: &[u8]) -> Result<(), ImapError> {
        let Some(folder) = self.sent_folder.clone() else {
            return Ok(());
        };
        if let Err(e) = self.imap.append(&folder, raw).await {
            warn!(error = %e, "mail sent, but its copy could not be kept in the sent folder");
            if !self.imap.is_connected() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Selects the watched mailbox again, to wait for news there.
    pub async fn back_to_inbox(&mut self) -> Result<MailboxState, ImapError> {
        let inbox = self.settings.config.imap.mailbox.clone();
        self.imap.select_folder(&inbox).await
    }

    /// Waits for news in the watched mailbox (IDLE or polling) for at most `max_wait`, or
    /// until `interrupt` completes.
    pub async fn wait(
        &mut self,
        max_wait: Duration,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Wake, ImapError> {
        let config = &self.settings.config.imap;
        let poll = Duration::from_secs(config.poll_interval_secs);
        let idle = config.idle;
        let recheck = Duration::from_secs(config.idle_recheck_secs);
        if !idle || !self.imap.capabilities().idle || recheck.is_zero() {
            return self.imap.wait(idle, poll, max_wait, interrupt).await;
        }
        // Every IDLE lasts at most `recheck`; then one NOOP asks for news, for servers
        // that push new mail late (or never) during IDLE.
        let deadline = tokio::time::Instant::now() + max_wait;
        tokio::pin!(interrupt);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Wake::Timeout);
            }
            let bound = left.min(recheck);
            match self
                .imap
                .wait(true, poll, bound, interrupt.as_mut())
                .await?
            {
                Wake::Timeout if bound < left => {
                    if self.imap.poll_news().await? {
                        return Ok(Wake::Changed);
                    }
                }
                wake => return Ok(wake),
            }
        }
    }

    /// Logs out politely.
    pub async fn logout(self) {
        let (_, imap) = self.into_memory();
        let _ = imap.logout().await;
    }
}

/// Logs a failed connection attempt, at the level its kind deserves.
pub fn log_connect_failure(e: &ImapError, retry_in: Duration) {
    if e.kind().is_transient() {
        warn!(error = %e, retry_in = ?retry_in, "cannot reach the mailbox; retrying");
    } else {
        tracing::error!(error = %e, retry_in = ?retry_in, "the mailbox refused us; fix the configuration, retrying");
    }
}

/// The journal record a disposition needs before its message moves: the final state
/// (the message may leave the mailbox only once it is durable), or `holding` (a crash
/// before the move then finishes the move instead of reading as a release).
pub async fn record_before_move(
    journal: &Journal,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), JournalError> {
    let (id, state, reason) = match action {
        Action::File {
            report_id,
            state,
            reason,
            ..
        } => (report_id.clone(), *state, reason.clone()),
        Action::Hold { report_id, reason } => {
            (report_id.clone(), State::Holding, Some(reason.clone()))
        }
        Action::Retry { .. } | Action::Pause { .. } | Action::Paced => return Ok(()),
    };
    journal
        .call(move |db| db.record_final(&id, state, reason.as_deref(), now))
        .await
}

/// The journal record a disposition needs after its message moved: `held` once a held
/// message is in the held folder (a held record for a message found in the claim folder
/// means a person moved it back: a release).
pub async fn record_after_move(
    journal: &Journal,
    action: &Action,
    now: DateTime<Utc>,
) -> Result<(), JournalError> {
    let Action::Hold { report_id, reason } = action else {
        return Ok(());
    };
    let (id, reason) = (report_id.clone(), reason.clone());
    journal
        .call(move |db| db.record_final(&id, State::Held, Some(&reason), now))
        .await
}
