//! What the daemon counts and how healthy it is, and the optional loopback HTTP endpoint
//! that shows both: `/metrics` (Prometheus text) and `/healthz`.
//!
//! Every counter is registered once, typed, in [`Metrics::new`] (`prometheus-client`), so
//! a counter cannot exist without appearing in `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// Counters and health, shared by every part of the daemon.
pub struct Metrics {
    registry: Registry,
    /// Messages fetched from the mailbox.
    pub messages_seen: Counter,
    /// Draft advisories created.
    pub advisories_created: Counter,
    /// Advisories found by their marker and adopted instead of created.
    pub advisories_adopted: Counter,
    /// Attachments committed to an attachments repository.
    pub attachments_uploaded: Counter,
    /// Mails to the maintainers sent: new-draft notes and digests.
    pub maintainer_mails_sent: Counter,
    /// New reports found to probably repeat an earlier one.
    pub near_duplicates: Counter,
    /// Acknowledgements and follow-up notes sent.
    pub replies_sent: Counter,
    /// Replies deliberately not sent.
    pub replies_suppressed: Counter,
    /// Messages filed as noise.
    pub ignored: Counter,
    /// Messages quarantined.
    pub quarantined: Counter,
    /// Transient failures that scheduled a retry.
    pub retries: Counter,
    /// IMAP (re)connections.
    pub imap_connects: Counter,
    /// Follow-ups added to an existing advisory.
    pub followups_added: Counter,
    /// Reports held for a person (per-sender limits).
    pub held: Counter,
    /// Notices sent to reporters about changes on GitHub.
    pub notices_sent: Counter,
    /// Commands on one message (claim, fetch) the IMAP server refused with `NO`/`BAD`.
    pub imap_refusals: Counter,
    /// 1 while a mailbox session is up.
    mailbox_connected_gauge: Gauge,
    /// How many parts of the daemon wait for ops to fix their configuration.
    paused_gauge: Gauge,
    /// Messages in this instance's claim folder at the start of the last pass.
    messages_waiting: Gauge,
    other_instances: Gauge,
    /// Seconds the longest-waiting of those has waited since this instance first saw it.
    oldest_waiting_seconds: Gauge,
    /// Unix time of the last successful exchange, by `server` (`imap`, `github`, `smtp`).
    last_success: Family<Vec<(String, String)>, Gauge>,
    mailbox_connected: AtomicBool,
    /// Paused scopes (`GitHub pallets`, `SMTP`, …) with why and when to probe again.
    paused: Mutex<BTreeMap<String, Pause>>,
    /// False while the journal's database cannot be reached (PostgreSQL only).
    journal_flag: Mutex<Option<Arc<AtomicBool>>>,
}

/// A server whose last successful exchange is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The mailbox.
    Imap,
    /// The GitHub API.
    Github,
    /// The outgoing mail server.
    Smtp,
}

/// Why one part of the daemon waits for ops.
#[derive(Debug, Clone)]
struct Pause {
    reason: String,
    probe_at: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every counter and gauge, registered under the `advisory_bridge` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("advisory_bridge");
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let messages_seen = counter("messages_seen", "Messages fetched from the mailbox.");
        let advisories_created = counter("advisories_created", "Draft advisories created.");
        let advisories_adopted = counter(
            "advisories_adopted",
            "Existing advisories adopted by marker.",
        );
        let attachments_uploaded = counter(
            "attachments_uploaded",
            "Attachments committed to the attachments repository.",
        );
        let maintainer_mails_sent = counter(
            "maintainer_mails_sent",
            "Mails to the maintainers (new drafts, digests) sent.",
        );
        let near_duplicates = counter(
            "near_duplicates",
            "New reports that probably repeat an earlier one.",
        );
        let replies_sent = counter("replies_sent", "Acknowledgements sent.");
        let replies_suppressed = counter(
            "replies_suppressed",
            "Acknowledgements not sent on purpose.",
        );
        let ignored = counter("ignored", "Messages filed as noise.");
        let quarantined = counter("quarantined", "Messages quarantined.");
        let retries = counter("retries", "Transient failures that scheduled a retry.");
        let imap_connects = counter("imap_connects", "IMAP connections made.");
        let followups_added = counter(
            "followups_added",
            "Follow-ups added to an existing advisory.",
        );
        let held = counter(
            "held",
            "Reports held for a person by the per-sender limits.",
        );
        let notices_sent = counter(
            "notices_sent",
            "Notices sent to reporters about changes on GitHub.",
        );
        let imap_refusals = counter(
            "imap_refusals",
            "Claims and fetches of one message the IMAP server refused (NO or BAD).",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let mailbox_connected_gauge =
            gauge("mailbox_connected", "1 while a mailbox session is up.");
        let paused_gauge = gauge(
            "paused",
            "Parts of the daemon waiting for ops to fix their configuration.",
        );
        let messages_waiting = gauge(
            "messages_waiting",
            "Messages in this instance's claim folder at the start of the last pass.",
        );
        let other_instances = gauge(
            "other_instances",
            "Claim folders of other instances on this mailbox, seen at the last connect.",
        );
        let oldest_waiting_seconds = gauge(
            "oldest_waiting_seconds",
            "Seconds the longest-waiting message has waited since this instance first saw it.",
        );
        let last_success = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful exchange with each server (imap, github, smtp).",
            last_success.clone(),
        );
        Metrics {
            registry,
            messages_waiting,
            other_instances,
            oldest_waiting_seconds,
            last_success,
            messages_seen,
            advisories_created,
            advisories_adopted,
            attachments_uploaded,
            maintainer_mails_sent,
            near_duplicates,
            replies_sent,
            replies_suppressed,
            ignored,
            quarantined,
            retries,
            imap_connects,
            followups_added,
            held,
            notices_sent,
            imap_refusals,
            mailbox_connected_gauge,
            paused_gauge,
            mailbox_connected: AtomicBool::new(false),
            paused: Mutex::new(BTreeMap::new()),
            journal_flag: Mutex::new(None),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Makes `/healthz` report the journal's database unreachable while `flag` is false.
    pub fn watch_journal(&self, flag: Arc<AtomicBool>) {
        *self
            .journal_flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(flag);
    }

    /// False while the journal's database cannot be reached.
    pub fn journal_reachable(&self) -> bool {
        self.journal_flag
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_none_or(|f| f.load(Ordering::SeqCst))
    }

    /// Records whether a mailbox session is up.
    pub fn set_mailbox_connected(&self, up: bool) {
        self.mailbox_connected.store(up, Ordering::Relaxed);
        self.mailbox_connected_gauge.set(i64::from(up));
    }

    /// Records a successful exchange with `server` now.
    pub fn contact(&self, server: Server) {
        let name = match server {
            Server::Imap => "imap",
            Server::Github => "github",
            Server::Smtp => "smtp",
        };
        self.last_success
            .get_or_create(&vec![("server".to_owned(), name.to_owned())])
            .set(chrono::Utc::now().timestamp());
    }

    /// Records how many other instances' claim folders the mailbox holds.
    pub fn set_other_instances(&self, count: usize) {
        self.other_instances
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// True when other instances' claim folders were seen on the mailbox: a message may
    /// then have been handled by another instance, with a journal of its own.
    pub fn shares_mailbox(&self) -> bool {
        self.other_instances.get() > 0
    }

    /// Records the backlog: how many messages wait, and the oldest one's wait in seconds.
    pub fn waiting(&self, count: usize, oldest_seconds: i64) {
        self.messages_waiting
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        self.oldest_waiting_seconds.set(oldest_seconds.max(0));
    }

    /// True while a mailbox session is up.
    pub fn mailbox_connected(&self) -> bool {
        self.mailbox_connected.load(Ordering::Relaxed)
    }

    fn paused(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pause>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses `scope` until ops fix it, probing again after `probe_in`. True when the
    /// scope was not paused before (the caller logs the condition once).
    pub fn pause(&self, scope: &str, reason: &str, probe_in: Duration) -> bool {
        let mut paused = self.paused();
        let new = !paused.contains_key(scope);
        paused.insert(
            scope.to_owned(),
            Pause {
                reason: reason.to_owned(),
                probe_at: Instant::now() + probe_in,
            },
        );
        self.paused_gauge.set(paused.len() as i64);
        new
    }

    /// Ends the pause of `scope`; true when it was paused.
    pub fn resume(&self, scope: &str) -> bool {
        let mut paused = self.paused();
        let was = paused.remove(scope).is_some();
        self.paused_gauge.set(paused.len() as i64);
        was
    }

    /// When `scope` is paused and its next probe is not due yet: when it is, and why the
    /// scope is paused.
    pub fn paused_until(&self, scope: &str) -> Option<(Instant, String)> {
        let paused = self.paused();
        let p = paused.get(scope)?;
        (p.probe_at > Instant::now()).then(|| (p.probe_at, p.reason.clone()))
    }

    /// Every paused scope with its reason.
    pub fn pauses(&self) -> Vec<(String, String)> {
        self.paused()
            .iter()
            .map(|(s, p)| (s.clone(), p.reason.clone()))
            .collect()
    }

    /// What `/healthz` answers: healthy, or the reasons it is not.
    pub fn health(&self) -> Result<String, String> {
        let mut problems: Vec<String> = self
            .pauses()
            .into_iter()
            .map(|(scope, reason)| format!("{scope} paused: {reason}"))
            .collect();
        if !self.mailbox_connected() {
            problems.insert(0, "mailbox not connected".to_owned());
        }
        if !self.journal_reachable() {
            problems.insert(
                0,
                "journal database unreachable: waiting for it, nothing is handled meanwhile"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok("ok: mailbox connected\n".to_owned())
        } else {
            Err(problems.join("\n") + "\n")
        }
    }
}

/// Binds `listen` (validated as loopback by the config) and serves the endpoint in the
/// background. Fails at once when the address cannot be bound.
pub async fn serve(listen: &str, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    match m.health() {
                        Ok(text) => (StatusCode::OK, text).into_response(),
                        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text).into_response(),
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exposed_even_at_zero() {
        let m = Metrics::new();
        m.notices_sent.inc();
        let text = m.render();
        for name in [
            "messages_seen",
            "advisories_created",
            "advisories_adopted",
            "attachments_uploaded",
            "maintainer_mails_sent",
            "near_duplicates",
            "replies_sent",
            "replies_suppressed",
            "ignored",
            "quarantined",
            "retries",
            "imap_connects",
            "followups_added",
            "held",
            "notices_sent",
        ] {
            assert!(
                text.contains(&format!("advisory_bridge_{name}_total ")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains("advisory_bridge_notices_sent_total 1"));
        assert!(text.contains("advisory_bridge_paused 0"));
    }

    #[tokio::test]
    async fn a_pause_is_reported_once_and_ends_with_resume() {
        let m = Metrics::new();
        m.set_mailbox_connected(true);
        assert!(m.health().is_ok());
        assert!(m.pause("SMTP", "535 bad login", Duration::from_secs(60)));
        assert!(!m.pause("SMTP", "535 bad login", Duration::from_secs(60)));
        assert!(
            m.health()
                .unwrap_err()
                .contains("SMTP paused: 535 bad login")
        );
        assert!(m.paused_until("SMTP").is_some());
        assert!(m.resume("SMTP"));
        assert!(m.health().is_ok());
    }
}
