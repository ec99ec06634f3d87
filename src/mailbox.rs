//! The mailbox side of the daemon: claim new mail into this instance's folder, list what
//! is pending there, fetch one message, wait for news, and [`Mailbox::settle`] a
//! message: the only place that records an outcome in the journal and then moves the
//! message, in that order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use crate::config::Resolved;
use crate::engine::{Action, Disposition, Folder, Incoming};
use crate::failure::Classify;
use crate::journal::{Journal, JournalError, State};
use crate::metrics::Metrics;
use crate::source::{FetchOutcome, ImapError, ImapSource, MailboxState, Wake};

/// Claim keywords are this plus the instance name (see `ImapSource::claim`).
const CLAIM_KEYWORD_PREFIX: &str = "$AdvisoryBridgeClaim_";

/// Why a mailbox step failed.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// The IMAP session broke or the server refused: reconnect and try again.
    #[error(transparent)]
    Imap(#[from] ImapError),
    /// The journal cannot be written: the daemon must stop.
    #[error(transparent)]
    Journal(#[from] JournalError),
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
}

/// What the mailbox remembers across sessions.
#[derive(Debug, Default)]
pub struct Memory {
    /// Per claim-folder UID (within one UIDVALIDITY): not before this time. Saves
    /// refetching messages that wait for a retry on every pass.
    deferred: HashMap<(u32, u32), DateTime<Utc>>,
    /// The claim folder's UIDVALIDITY when last selected.
    uidvalidity: Option<u32>,
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
        let mut folders = vec![
            imap_config.processed_folder.clone(),
            imap_config.ignored_folder.clone(),
            imap_config.quarantine_folder.clone(),
            imap_config.held_folder.clone(),
            settings.claim_folder.clone(),
        ];
        folders.extend(imap_config.sent_folder.clone());
        let folders: Vec<&str> = folders.iter().map(String::as_str).collect();
        let (imap, state) =
            ImapSource::connect(&settings.imap, &imap_config.mailbox, &folders).await?;
        let mut mailbox = Mailbox {
            imap,
            settings,
            journal,
            metrics,
            memory,
        };
        if let Err(e) = mailbox.warn_about_orphaned_claims().await {
            warn!(error = %e, "cannot look at other instances' claim folders");
        }
        Ok((mailbox, state))
    }

    /// What to keep for the next session after this one ends.
    pub fn into_memory(self) -> (Memory, ImapSource) {
        (self.memory, self.imap)
    }

    /// Warns about claim folders of other instances that still hold mail: if such an
    /// instance is gone for good, a person must move its mail back to the inbox.
    async fn warn_about_orphaned_claims(&mut self) -> Result<(), ImapError> {
        let prefix = format!("{}.", self.settings.config.imap.processing_folder);
        let ours = self.settings.claim_folder.clone();
        for (folder, count) in self.imap.folders_with_prefix(&prefix).await? {
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

    /// Claims the watched mailbox's new mail into this instance's folder, one message at
    /// a time, while `go_on` says so. A message another instance claimed first is simply
    /// theirs; a crash after the move leaves the message in our folder, where the next
    /// start finds it. Returns how many messages other instances hold in the inbox.
    pub async fn claim_new(&mut self, go_on: impl Fn() -> bool) -> Result<u32, ImapError> {
        let new = self.imap.list_uids().await?;
        let keyword = format!("{CLAIM_KEYWORD_PREFIX}{}", self.settings.instance);
        let claim = self.settings.claim_folder.clone();
        let mut others = 0u32;
        for &uid in &new {
            if !go_on() {
                break;
            }
            if self.imap.claim(uid, CLAIM_KEYWORD_PREFIX, &keyword).await? {
                self.imap.move_to(uid, &claim).await?;
            } else {
                others += 1;
            }
        }
        if !new.is_empty() {
            debug!(count = new.len(), folder = %claim, "claimed new mail");
        }
        Ok(others)
    }

    /// Selects the claim folder and lists its messages. A change of UIDVALIDITY voids
    /// what we remembered about its UIDs (reports are keyed by their identity, so nothing
    /// is duplicated by a rescan).
    pub async fn pending(&mut self) -> Result<Vec<u32>, ImapError> {
        let claim = self.settings.claim_folder.clone();
        let state = self.imap.select_folder(&claim).await?;
        if self.memory.uidvalidity != Some(state.uidvalidity) {
            if self.memory.uidvalidity.is_some() {
                warn!(
                    uidvalidity = state.uidvalidity,
                    "UIDVALIDITY of the claim folder changed; rescanning (reports are keyed by Message-ID, so nothing is duplicated)"
                );
            }
            self.memory.deferred.clear();
            self.memory.uidvalidity = Some(state.uidvalidity);
        }
        self.imap.list_uids().await
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
        Ok(match self.imap.fetch(uid, max).await? {
            FetchOutcome::Gone => Fetched::Gone,
            FetchOutcome::TooLarge { size } => Fetched::Message(Incoming::TooLarge {
                size,
                key: format!("{}-{uid}", self.memory.uidvalidity.unwrap_or(0)),
            }),
            FetchOutcome::Message(m) => Fetched::Message(Incoming::Message {
                raw: m.raw,
                received_at: m.internal_date,
            }),
        })
    }

    /// Carries out the engine's verdict on one message: keeps copies of the mail sent for
    /// it, then journals its outcome and moves it (or leaves it for a retry). Returns when
    /// it next wants attention, for messages left in place.
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
            Action::File { folder, .. } => match folder {
                Folder::Processed => folders.processed_folder.clone(),
                Folder::Ignored => folders.ignored_folder.clone(),
                Folder::Quarantine => folders.quarantine_folder.clone(),
            },
            Action::Hold { .. } => folders.held_folder.clone(),
        };
        record_before_move(&self.journal, &disposition.action, Utc::now()).await?;
        self.imap.move_to(uid, &target).await?;
        record_after_move(&self.journal, &disposition.action, Utc::now()).await?;
        match &disposition.action {
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
        let key = self.key(uid);
        self.memory.deferred.remove(&key);
        Ok(None)
    }

    /// Appends a copy of mail we sent to `imap.sent_folder`, when configured. The mail
    /// went out already: a failed copy is a warning, never a reason to send again, unless
    /// the session broke (then the caller reconnects).
    pub async fn keep_copy(&mut self, raw: &[u8]) -> Result<(), ImapError> {
        let Some(folder) = self.settings.config.imap.sent_folder.clone() else {
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
        self.imap.wait(idle, poll, max_wait, interrupt).await
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
        Action::Retry { .. } | Action::Pause { .. } => return Ok(()),
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
