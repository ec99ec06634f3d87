//! The notice watcher: its own task, on its own interval, that lists each repository's
//! advisories changed since the last look and tells the reporter, in the report's
//! thread, once per change (published, CVE assigned, closed, withdrawn).
//!
//! It never touches IMAP: copies of the notices it sends go to the mailbox side through
//! a channel. It also sends the maintainers' digest of drafts nobody has touched. A
//! notice is journaled after the SMTP server accepted it; a failed one
//! leaves the state and the watermark untouched so the next look tries again. GitHub
//! trouble is logged and waits for the next look. Shutdown is observed between any two
//! requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{GithubMode, Resolved};
use crate::engine::{AdvisoryApi, Clock, Outbox};
use crate::github::AdvisoryStatus;
use crate::journal::{AdvisoryState, Entry, Journal, JournalError};
use crate::mail::Address;
use crate::metrics::Metrics;
use crate::render::MarkerKey;
use crate::render::notice::{self, Event, NoticeContext, NoticeTemplates};

/// Copies of mail the watcher sent, on their way to the sent folder, and the signal that
/// wakes the mailbox side to append them.
#[derive(Clone)]
pub struct Copies {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    notify: Arc<Notify>,
}

/// The receiving end of [`Copies`].
pub struct CopiesRx {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    notify: Arc<Notify>,
}

/// A channel for copies of sent mail.
pub fn copies() -> (Copies, CopiesRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let notify = Arc::new(Notify::new());
    (
        Copies {
            tx,
            notify: notify.clone(),
        },
        CopiesRx { rx, notify },
    )
}

impl Copies {
    /// Hands one copy over and wakes the mailbox side.
    pub fn send(&self, raw: Vec<u8>) {
        if self.tx.send(raw).is_ok() {
            self.notify.notify_one();
        }
    }
}

impl CopiesRx {
    /// Completes when a copy may be waiting.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Every copy waiting now.
    pub fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(copy) = self.rx.try_recv() {
            out.push(copy);
        }
        out
    }
}

/// The journal's `meta` key holding the last digest period sent.
const DIGEST_PERIOD_KEY: &str = "maintainers_digest_period";

/// The watcher with what it reads and sends through.
pub struct Watcher<A, O> {
    settings: Arc<Resolved>,
    journal: Journal,
    github: A,
    outbox: O,
    templates: NoticeTemplates,
    marker: MarkerKey,
    metrics: Arc<Metrics>,
    clock: Clock,
    copies: Copies,
}

impl<A: AdvisoryApi, O: Outbox> Watcher<A, O> {
    /// A watcher over these stores and clients.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Resolved>,
        journal: Journal,
        github: A,
        outbox: O,
        templates: NoticeTemplates,
        marker: MarkerKey,
        metrics: Arc<Metrics>,
        clock: Clock,
        copies: Copies,
    ) -> Self {
        Watcher {
            settings,
            journal,
            github,
            outbox,
            templates,
            marker,
            metrics,
            clock,
            copies,
        }
    }

    /// Looks at once, then every `notify.interval_secs`, until shutdown. Only a journal
    /// failure ends it early (the daemon then stops).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), JournalError> {
        let interval = Duration::from_secs(self.settings.config.notify.interval_secs.max(1));
        // Who runs the watcher is news only on a shared journal.
        let shared = self.journal.is_shared();
        let mut was_leading = None;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            // On a shared journal only the instance holding the watcher's lock looks
            // (one sender of notices and digests); the others wait to take over.
            let leading = self.journal.call(|db| db.try_lead()).await?;
            if shared && was_leading != Some(leading) {
                was_leading = Some(leading);
                if leading {
                    info!("this instance runs the notice watcher and the maintainers' digest");
                } else {
                    info!(
                        "another instance runs the notice watcher; this one takes over if it goes away"
                    );
                }
            }
            if leading {
                tokio::select! {
                    r = self.look() => r?,
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// One look at every configured repository, then the maintainers' digest when one
    /// is due.
    pub async fn look(&self) -> Result<(), JournalError> {
        for repo in &self.settings.config.repositories {
            self.look_at(&repo.name).await?;
        }
        self.digest().await
    }

    /// Sends the digest of drafts nobody has touched for `remind_after_days` to every
    /// `[maintainers] notify` address, once per `digest_interval` period (numbered from
    /// the Unix epoch): each address's mail is journaled after the SMTP server accepted
    /// it and the period when all went out, so a restart neither skips nor repeats one.
    /// Nothing is sent when nothing waits.
    async fn digest(&self) -> Result<(), JournalError> {
        let m = &self.settings.config.maintainers;
        if m.notify.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let interval = m.digest_interval.as_secs().max(60);
        let period = u64::try_from(now.timestamp()).unwrap_or(0) / interval;
        let last = self
            .journal
            .call(|db| db.meta(DIGEST_PERIOD_KEY))
            .await?
            .and_then(|v| v.parse::<u64>().ok());
        if last.is_some_and(|p| p >= period) {
            return Ok(());
        }
        let cutoff = now - chrono::Duration::days(i64::from(m.remind_after_days));
        let stale = self.journal.call(move |db| db.stale_drafts(cutoff)).await?;
        for address in &m.notify {
            if stale.is_empty() {
                break;
            }
            let key = format!("digest:{period}:{}", address.to_ascii_lowercase());
            let k = key.clone();
            let (sent_before, leading) = self
                .journal
                .call(move |db| Ok((db.meta(&k)?.is_some(), db.try_lead()?)))
                .await?;
            if !leading {
                return Ok(());
            }
            if sent_before {
                continue;
            }
            let to = Address {
                name: None,
                email: address.clone(),
            };
            let message = crate::render::maintainers::digest(
                &stale,
                m.remind_after_days,
                period,
                now,
                &to,
                &self.settings.from,
            );
            match self.outbox.send(&message).await {
                Ok(sent) => {
                    let mid = message.message_id.clone();
                    self.journal.call(move |db| db.set_meta(&key, &mid)).await?;
                    self.metrics.maintainer_mails_sent.inc();
                    self.metrics.contact(crate::metrics::Server::Smtp);
                    info!(to = %address, drafts = stale.len(), "maintainers' digest sent");
                    self.copies.send(sent);
                }
                Err(e) => {
                    warn!(error = %e, to = %address, "maintainers' digest not sent; next look tries again");
                    return Ok(());
                }
            }
        }
        let value = period.to_string();
        self.journal
            .call(move |db| db.set_meta(DIGEST_PERIOD_KEY, &value))
            .await
    }

    async fn look_at(&self, repo: &str) -> Result<(), JournalError> {
        let (r, key) = (repo.to_owned(), format!("watermark:{repo}"));
        let k = key.clone();
        let (ours, since) = self
            .journal
            .call(move |db| Ok((db.reports_with_advisory(&r)?, db.meta_time(&k)?)))
            .await?;
        // Every repository is looked at, also one the journal knows nothing of: after a
        // lost journal, the advisories carrying our markers are adopted here.
        let changed = match self.github.updated_since(repo, since, &self.marker).await {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, repository = %repo, "cannot look at advisories; next look later");
                return Ok(());
            }
        };
        let mut complete = true;
        for advisory in &changed {
            let known = ours.iter().find(|e| {
                e.ghsa_id
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(&advisory.ghsa_id))
            });
            let adopted;
            let entry = match known {
                Some(e) => e,
                None => match self.adopt(repo, advisory).await? {
                    Some(e) => {
                        adopted = e;
                        &adopted
                    }
                    None => continue,
                },
            };
            let Some(new_state) = AdvisoryState::parse(&advisory.state) else {
                warn!(ghsa = %advisory.ghsa_id, state = %advisory.state, "GitHub reports an advisory state this release does not know; ignoring the change");
                continue;
            };
            if !self.advisory_changed(entry, advisory, new_state).await? {
                complete = false;
            }
        }
        if complete && let Some(newest) = changed.iter().filter_map(|a| a.updated_at).max() {
            let value = newest.to_rfc3339();
            self.journal
                .call(move |db| db.set_meta(&key, &value))
                .await?;
        }
        Ok(())
    }

    /// Sends the notices one change of `entry`'s advisory means; false when one could
    /// not go out now (the next look tries again).
    async fn advisory_changed(
        &self,
        entry: &Entry,
        advisory: &AdvisoryStatus,
        new_state: AdvisoryState,
    ) -> Result<bool, JournalError> {
        let created_as = match self.settings.config.github.mode {
            GithubMode::Draft => AdvisoryState::Draft,
            GithubMode::Triage => AdvisoryState::Triage,
        };
        let old_state = entry.github_state.unwrap_or(created_as);
        let events = notice::transitions(
            old_state,
            entry.cve_id.as_deref(),
            new_state,
            advisory.cve_id.as_deref(),
        );
        for event in events {
            let (id, name) = (entry.report_id.clone(), event.as_str());
            let (sent_before, leading) = self
                .journal
                .call(move |db| Ok((db.notice_sent(&id, name)?, db.try_lead()?)))
                .await?;
            if !leading {
                // The lock went to another instance (a lost connection): it sends.
                return Ok(false);
            }
            if !self.wanted(event) || sent_before {
                continue;
            }
            if !self.send_notice(entry, advisory, event).await? {
                return Ok(false);
            }
        }
        let (id, cve, changed, now) = (
            entry.report_id.clone(),
            advisory.cve_id.clone(),
            advisory.updated_at,
            self.clock.now(),
        );
        self.journal
            .call(move |db| db.record_github_state(&id, new_state, cve.as_deref(), changed, now))
            .await?;
        Ok(true)
    }

    /// Journals an advisory that carries one of our markers but that the journal does
    /// not know (it was lost, or the advisory was made by an instance with another
    /// journal), so it is watched from now on.
    async fn adopt(
        &self,
        repo: &str,
        advisory: &AdvisoryStatus,
    ) -> Result<Option<Entry>, JournalError> {
        let Some(id) = advisory.reports.first().cloned() else {
            return Ok(None);
        };
        let (r, ghsa, url, now) = (
            repo.to_owned(),
            advisory.ghsa_id.clone(),
            advisory.html_url.clone(),
            self.clock.now(),
        );
        let entry = self
            .journal
            .call(move |db| match db.get(&id)? {
                // Known under its report id (a follow-up's thread, another repository):
                // nothing to adopt.
                Some(_) => Ok(None),
                None => db.record_rebuilt(&id, &r, &ghsa, &url, now),
            })
            .await?;
        if let Some(e) = &entry {
            info!(ghsa = %advisory.ghsa_id, report_id = %e.report_id, "adopted an advisory the journal did not know");
        }
        Ok(entry)
    }

    fn wanted(&self, event: Event) -> bool {
        let n = &self.settings.config.notify;
        match event {
            Event::Published => n.published,
            Event::CveAssigned => n.cve_assigned,
            Event::Closed => n.closed,
            Event::Withdrawn => n.withdrawn,
        }
    }

    /// The key the report carried (for an encrypted notice), read again from the
    /// spooled message through the same pure parse; `None` without `[pgp]` or a key.
    async fn reporter_key(&self, entry: &Entry) -> Option<String> {
        let keys = self.settings.pgp.clone()?;
        let config = self.settings.config.clone();
        let path = entry.spool_path.clone();
        tokio::task::spawn_blocking(move || {
            let raw = std::fs::read(&path).ok()?;
            crate::pipeline::parse(&config, Some(&keys), &raw)
                .ok()?
                .sender_key
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends one notice; false when it could not go out now.
    async fn send_notice(
        &self,
        entry: &Entry,
        advisory: &AdvisoryStatus,
        event: Event,
    ) -> Result<bool, JournalError> {
        let Some(to) = entry.reply_to.clone() else {
            // The report got no reply (noise rules, forged sender, limits): no notices.
            return Ok(true);
        };
        let mut thread: Vec<String> = Vec::new();
        thread.extend(entry.message_id.clone());
        thread.extend(entry.reply_message_id.clone());
        let config = &self.settings.config;
        let ctx = NoticeContext {
            report_id: &entry.report_id,
            subject: entry.subject.as_deref().unwrap_or(""),
            thread,
            ghsa_id: &advisory.ghsa_id,
            advisory_url: &advisory.html_url,
            repository: entry.repository.as_deref().unwrap_or(""),
            cve_id: advisory.cve_id.as_deref(),
            policy_url: &config.reply.policy_url,
            project_name: &config.reply.project_name,
        };
        let to = Address {
            name: None,
            email: to,
        };
        let message = match self.templates.render(event, &ctx, &to, &self.settings.from) {
            Ok(mut m) => {
                m.encrypt_to = self.reporter_key(entry).await;
                m
            }
            Err(e) => {
                error!(error = %e, "cannot render a notice; fix the template");
                return Ok(false);
            }
        };
        let sent = match self.outbox.send(&message).await {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, event = event.as_str(), "notice not sent; next look tries again");
                return Ok(false);
            }
        };
        let (id, mid, now) = (
            entry.report_id.clone(),
            message.message_id.clone(),
            self.clock.now(),
        );
        self.journal
            .call(move |db| db.record_notice(&id, event.as_str(), &mid, now))
            .await?;
        self.metrics.notices_sent.inc();
        self.metrics.contact(crate::metrics::Server::Smtp);
        info!(event = event.as_str(), ghsa = %advisory.ghsa_id, "reporter notified");
        self.copies.send(sent);
        Ok(true)
    }
}
