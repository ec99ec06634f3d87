//! The engine's rules as scenarios, in-process: an in-memory advisory API and outbox, a
//! real journal in a temporary directory, and tokio's paused clock, so each test asserts
//! the exact wait the engine asks for and runs in milliseconds.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::config::Config;
use crate::github::{AdvisoryStatus, AdvisoryText};
use crate::journal::AdvisoryState;
use crate::mailbox::{record_after_move, record_before_move};
use crate::render::notice::NoticeTemplates;
use crate::render::{MarkerQuery, ReplyMessage};
use crate::watcher::{CopiesRx, Watcher, copies};

/// One advisory the fake holds.
#[derive(Debug, Clone)]
struct Stored {
    repository: String,
    ghsa_id: String,
    description: String,
    state: AdvisoryState,
    cve_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    credits: Vec<String>,
    collaborators: Vec<String>,
}

/// What the next call of an operation does instead of succeeding.
#[derive(Debug, Clone)]
struct Fault {
    operation: &'static str,
    kind: FailureKind,
    message: &'static str,
    /// The request still takes effect (a create that GitHub processed, but whose answer
    /// never arrived).
    lands: bool,
}

/// A branch of an attachments repository: (repository, branch), and its files.
type Branch = ((String, String), Vec<(String, Vec<u8>)>);

#[derive(Default)]
struct GitHubState {
    advisories: Vec<Stored>,
    faults: VecDeque<Fault>,
    calls: Vec<&'static str>,
    /// Logins GitHub knows, with their account type.
    users: Vec<(String, &'static str)>,
    /// Branches of attachment repositories: (repository, branch) and its files.
    branches: Vec<Branch>,
    /// What [`AdvisoryApi::pacing_wait`] says.
    pacing: Option<Duration>,
}

/// GitHub in memory: advisories, faults queued per operation, and a log of calls.
#[derive(Clone, Default)]
struct MemoryGitHub(Arc<Mutex<GitHubState>>);

impl MemoryGitHub {
    fn fail(&self, operation: &'static str, kind: FailureKind, message: &'static str) {
        self.push(Fault {
            operation,
            kind,
            message,
            lands: false,
        });
    }

    fn push(&self, fault: Fault) {
        self.0.lock().unwrap().faults.push_back(fault);
    }

    fn advisories(&self) -> Vec<Stored> {
        self.0.lock().unwrap().advisories.clone()
    }

    fn calls(&self, operation: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| **c == operation)
            .count()
    }

    fn set_state(&self, ghsa: &str, state: AdvisoryState, cve: Option<&str>, at: DateTime<Utc>) {
        let mut s = self.0.lock().unwrap();
        let a = s.advisories.iter_mut().find(|a| a.ghsa_id == ghsa).unwrap();
        a.state = state;
        a.cve_id = cve.map(str::to_owned);
        a.updated_at = at;
    }

    /// Records the call; the queued fault for it, if any.
    fn enter(&self, operation: &'static str, repository: &str) -> Result<(), (GitHubError, bool)> {
        let mut s = self.0.lock().unwrap();
        s.calls.push(operation);
        match s.faults.front() {
            Some(f) if f.operation == operation => {
                let f = s.faults.pop_front().unwrap();
                let operation = match operation {
                    "find" => "find advisory by marker",
                    "create" => "create advisory",
                    "read" => "read advisory",
                    "update" => "update advisory",
                    "user" => "look up user",
                    "upload" => "upload attachments",
                    _ => "list advisories",
                };
                Err((
                    GitHubError {
                        operation,
                        repository: repository.to_owned(),
                        message: f.message.to_owned(),
                        kind: f.kind,
                    },
                    f.lands,
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The `n`th GHSA id, in GitHub's alphabet.
fn ghsa_id(n: usize) -> String {
    const ALPHABET: &[u8] = b"23456789cfghjmpqrvwx";
    let group: String = (0..4)
        .map(|i| ALPHABET[(n / 20usize.pow(3 - i)) % 20] as char)
        .collect();
    format!("GHSA-{group}-cfgh-2345")
}

fn reference(a: &Stored) -> AdvisoryRef {
    AdvisoryRef {
        ghsa_id: a.ghsa_id.clone(),
        html_url: format!(
            "https://github.com/{}/security/advisories/{}",
            a.repository, a.ghsa_id
        ),
        repository: a.repository.clone(),
    }
}

impl AdvisoryApi for MemoryGitHub {
    fn pacing_wait(&self) -> Option<Duration> {
        self.0.lock().unwrap().pacing
    }

    async fn find_by_marker(
        &self,
        repository: &str,
        wanted: &[MarkerQuery],
        not_before: Option<DateTime<Utc>>,
    ) -> Result<Option<(ReportId, AdvisoryRef)>, GitHubError> {
        self.enter("find", repository).map_err(|(e, _)| e)?;
        let s = self.0.lock().unwrap();
        Ok(s.advisories
            .iter()
            .rev()
            .filter(|a| a.repository == repository)
            .take_while(|a| not_before.is_none_or(|b| a.created_at >= b))
            .find_map(|a| {
                wanted
                    .iter()
                    .find(|q| q.matches(&a.description, Some(a.created_at)))
                    .map(|q| (q.id.clone(), reference(a)))
            }))
    }

    async fn create(
        &self,
        mode: GithubMode,
        draft: &AdvisoryDraft,
    ) -> Result<AdvisoryRef, GitHubError> {
        let outcome = self.enter("create", &draft.repository);
        if let Err((_, false)) = &outcome {
            return Err(outcome.unwrap_err().0);
        }
        let mut s = self.0.lock().unwrap();
        let n = s.advisories.len();
        let stored = Stored {
            repository: draft.repository.clone(),
            ghsa_id: ghsa_id(n),
            description: draft.description.clone(),
            state: match mode {
                GithubMode::Draft => AdvisoryState::Draft,
                GithubMode::Triage => AdvisoryState::Triage,
            },
            cve_id: None,
            created_at: start(),
            updated_at: start(),
            credits: draft.credits.clone(),
            collaborators: Vec::new(),
        };
        s.advisories.push(stored.clone());
        match outcome {
            Err((e, _)) => Err(e),
            Ok(()) => Ok(reference(&stored)),
        }
    }

    async fn account_type(
        &self,
        repository: &str,
        login: &str,
    ) -> Result<Option<String>, GitHubError> {
        self.enter("user", repository).map_err(|(e, _)| e)?;
        let s = self.0.lock().unwrap();
        Ok(s.users
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(login))
            .map(|(_, kind)| (*kind).to_owned()))
    }

    async fn description(
        &self,
        repository: &str,
        ghsa_id: &str,
    ) -> Result<AdvisoryText, GitHubError> {
        self.enter("read", repository).map_err(|(e, _)| e)?;
        let s = self.0.lock().unwrap();
        let a = s.advisories.iter().find(|a| a.ghsa_id == ghsa_id).unwrap();
        Ok(AdvisoryText {
            description: a.description.clone(),
            state: a.state.as_str().to_owned(),
        })
    }

    async fn update_description(
        &self,
        repository: &str,
        ghsa_id: &str,
        description: &str,
    ) -> Result<(), GitHubError> {
        self.enter("update", repository).map_err(|(e, _)| e)?;
        let mut s = self.0.lock().unwrap();
        if let Some(a) = s.advisories.iter_mut().find(|a| a.ghsa_id == ghsa_id) {
            a.description = description.to_owned();
        }
        Ok(())
    }

    async fn updated_since(
        &self,
        repository: &str,
        since: Option<DateTime<Utc>>,
        marker: &MarkerKey,
    ) -> Result<Vec<AdvisoryStatus>, GitHubError> {
        self.enter("list", repository).map_err(|(e, _)| e)?;
        let s = self.0.lock().unwrap();
        let mut found: Vec<AdvisoryStatus> = s
            .advisories
            .iter()
            .filter(|a| a.repository == repository && since.is_none_or(|t| a.updated_at >= t))
            .map(|a| AdvisoryStatus {
                ghsa_id: a.ghsa_id.clone(),
                state: a.state.as_str().to_owned(),
                cve_id: a.cve_id.clone(),
                html_url: reference(a).html_url,
                updated_at: Some(a.updated_at),
                reports: marker.claimed(&a.description, Some(a.created_at)),
            })
            .collect();
        found.sort_by_key(|a| std::cmp::Reverse(a.updated_at));
        Ok(found)
    }

    async fn add_collaborator(
        &self,
        repository: &str,
        ghsa_id: &str,
        login: &str,
    ) -> Result<(), GitHubError> {
        self.enter("collaborator", repository).map_err(|(e, _)| e)?;
        let mut s = self.0.lock().unwrap();
        if let Some(a) = s.advisories.iter_mut().find(|a| a.ghsa_id == ghsa_id)
            && !a.collaborators.iter().any(|c| c == login)
        {
            a.collaborators.push(login.to_owned());
        }
        Ok(())
    }

    async fn upload_attachments(
        &self,
        repository: &str,
        branch: &str,
        _message: &str,
        files: &[(&str, &[u8])],
    ) -> Result<bool, GitHubError> {
        let outcome = self.enter("upload", repository);
        if let Err((_, false)) = &outcome {
            return Err(outcome.unwrap_err().0);
        }
        let mut s = self.0.lock().unwrap();
        let key = (repository.to_owned(), branch.to_owned());
        let created = !s.branches.iter().any(|(k, _)| *k == key);
        if created {
            let files = files
                .iter()
                .map(|(n, d)| ((*n).to_owned(), d.to_vec()))
                .collect();
            s.branches.push((key, files));
        }
        match outcome {
            Err((e, _)) => Err(e),
            Ok(()) => Ok(created),
        }
    }
}

#[derive(Default)]
struct OutboxState {
    sent: Vec<ReplyMessage>,
    faults: VecDeque<SendError>,
    attempts: usize,
}

/// SMTP in memory: what was sent, and faults queued for the next sends.
#[derive(Clone, Default)]
struct MemoryOutbox(Arc<Mutex<OutboxState>>);

impl MemoryOutbox {
    fn sent(&self) -> Vec<ReplyMessage> {
        self.0.lock().unwrap().sent.clone()
    }

    fn attempts(&self) -> usize {
        self.0.lock().unwrap().attempts
    }

    fn fail(&self, kind: FailureKind, message: &str) {
        self.0.lock().unwrap().faults.push_back(SendError {
            recipient: "reporter".into(),
            message: message.into(),
            kind,
        });
    }
}

impl Outbox for MemoryOutbox {
    async fn send(&self, message: &ReplyMessage) -> Result<Vec<u8>, SendError> {
        let mut s = self.0.lock().unwrap();
        s.attempts += 1;
        if let Some(e) = s.faults.pop_front() {
            return Err(e);
        }
        s.sent.push(message.clone());
        Ok(format!(
            "Message-ID: <{}>\r\n\r\n{}",
            message.message_id, message.body
        )
        .into_bytes())
    }
}

/// An engine over the in-memory GitHub and outbox, with a journal in `dir`.
struct Harness {
    engine: Engine<MemoryGitHub, MemoryOutbox>,
    github: MemoryGitHub,
    outbox: MemoryOutbox,
    metrics: Arc<Metrics>,
    settings: Arc<Resolved>,
    clock: Clock,
    _dir: tempfile::TempDir,
}

/// The marker key of every engine under test.
const KEY: MarkerKey = MarkerKey::new([4; 32]);

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}

fn config(dir: &Path, extra: &str) -> Config {
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret = secret.display();
    let text = format!(
        r#"
state_dir = "{state}"
default_repository = "pallets/flask"
[imap]
host = "127.0.0.1"
username = "security"
password_file = "{secret}"
[smtp]
host = "127.0.0.1"
from_address = "security@palletsprojects.com"
[github]
token_file = "{secret}"
timeout_secs = 30
[retry]
initial_delay_secs = 5
max_delay_secs = 900
{extra}
[[repository]]
name = "pallets/flask"
[[repository]]
name = "pallets/werkzeug"
"#,
        state = dir.join("state").display(),
    );
    Config::parse(&text, &dir.join("config.toml")).unwrap()
}

impl Harness {
    fn new(extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Harness::in_dir(dir, extra, MemoryGitHub::default())
    }

    fn in_dir(dir: tempfile::TempDir, extra: &str, github: MemoryGitHub) -> Harness {
        let config = config(dir.path(), extra);
        let templates = Arc::new(Templates::load(&config.reply).unwrap());
        let settings = Arc::new(Resolved::new(config).unwrap());
        let state_dir = &settings.config.state_dir;
        let spool = Spool::open(state_dir).unwrap();
        // The same tests on both backends: `ADVISORY_BRIDGE_TEST_JOURNAL=postgres` (as
        // scripts/test sets for a second run) puts the journal in PostgreSQL, one schema
        // per state directory.
        let journal = if crate::journal::testing::postgres_requested() {
            Journal::connect(crate::journal::testing::pg_target(
                &state_dir.display().to_string(),
            ))
            .unwrap()
        } else {
            Journal::open(state_dir).unwrap()
        };
        // Created long before the test's mail arrives, as a running daemon's journal is:
        // a report new to it needs no marker scan (see the tests at the end).
        set_journal_born(&journal, "2020-01-01T00:00:00.000Z");
        let outbox = MemoryOutbox::default();
        let metrics = Arc::new(Metrics::new());
        let clock = Clock::tokio_from(start());
        let engine = Engine::new(
            settings.clone(),
            journal,
            spool,
            github.clone(),
            outbox.clone(),
            templates,
            KEY,
            metrics.clone(),
            clock,
        );
        Harness {
            engine,
            github,
            outbox,
            metrics,
            settings,
            clock,
            _dir: dir,
        }
    }

    /// Hands the message over and carries out the journal side of the verdict, as the
    /// mailbox does around its move.
    async fn handle(&self, raw: &[u8]) -> Disposition {
        let d = self
            .engine
            .handle(Incoming::Message {
                raw: raw.to_vec(),
                received_at: Some(self.clock.now()),
                held_mark: None,
            })
            .await
            .unwrap();
        let journal = self.engine.journal();
        record_before_move(journal, &d.action, self.clock.now())
            .await
            .unwrap();
        record_after_move(journal, &d.action, self.clock.now())
            .await
            .unwrap();
        d
    }

    /// A watcher over the same journal, GitHub and outbox, and where its copies go.
    fn watcher(&self) -> (Watcher<MemoryGitHub, MemoryOutbox>, CopiesRx) {
        let (tx, rx) = copies();
        let watcher = Watcher::new(
            self.settings.clone(),
            self.engine.journal().clone(),
            self.github.clone(),
            self.outbox.clone(),
            NoticeTemplates::load(None).unwrap(),
            KEY,
            self.metrics.clone(),
            self.clock,
            tx,
        );
        (watcher, rx)
    }

    async fn entry(&self, raw: &[u8]) -> Entry {
        let report =
            pipeline::parse(&self.settings.config, self.settings.pgp.as_deref(), raw).unwrap();
        self.engine
            .journal()
            .get(&report.report_id)
            .await
            .unwrap()
            .unwrap()
    }
}

fn mail(id: &str, from: &str, subject: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: Reporter <{from}>\r\nTo: security@palletsprojects.com\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nDate: Tue, 01 Dec 2026 08:00:00 +0000\r\n{extra_headers}\
         Content-Type: text/plain; charset=utf-8\r\n\r\nThe session cookie of werkzeug can be forged.\r\n"
    )
    .into_bytes()
}

fn report(id: &str) -> Vec<u8> {
    mail(id, "rita@example.net", "Cookie forgery in werkzeug", "")
}

fn filed(d: &Disposition) -> bool {
    matches!(
        d.action,
        Action::File {
            folder: Folder::Processed,
            state: State::Filed,
            ..
        }
    )
}

fn retry_at(d: &Disposition) -> DateTime<Utc> {
    match d.action {
        Action::Retry { at } => at,
        ref other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_report_becomes_one_draft_one_reply_and_is_filed() {
    let h = Harness::new("");
    let d = h.handle(&report("r1@example.net")).await;
    assert!(filed(&d), "{d:?}");
    let advisories = h.github.advisories();
    assert_eq!(advisories.len(), 1);
    assert_eq!(advisories[0].repository, "pallets/werkzeug");
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].in_reply_to.as_deref(), Some("r1@example.net"));
    assert_eq!(d.copies.len(), 1, "the reply's bytes go to the sent folder");
    let e = h.entry(&report("r1@example.net")).await;
    assert_eq!(e.state, State::Filed);
    assert_eq!(e.reply, Reply::Sent);
    assert_eq!(e.reply_to.as_deref(), Some("rita@example.net"));
}

fn signed_report(id: &str, signature: &str) -> Vec<u8> {
    let raw = String::from_utf8(report(id)).unwrap();
    format!("{}\r\n-- \r\nRita\r\n{signature}\r\n", raw.trim_end()).into_bytes()
}

#[tokio::test(start_paused = true)]
async fn a_github_login_the_reporter_states_is_credited_once_github_knows_the_user() {
    let h = Harness::new("");
    h.github.0.lock().unwrap().users.extend([
        ("ritar".to_owned(), "User"),
        ("pallets".to_owned(), "Organization"),
    ]);
    let d = h
        .handle(&signed_report("c1@example.net", "@ritar on GitHub"))
        .await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories()[0].credits, ["ritar"]);

    // Unknown logins, organisations and a failed lookup credit no one, and still file.
    h.handle(&signed_report("c2@example.net", "GitHub: nobody-here"))
        .await;
    h.handle(&signed_report(
        "c3@example.net",
        "https://github.com/pallets",
    ))
    .await;
    h.github
        .fail("user", FailureKind::TRANSIENT, "HTTP 502: Bad Gateway");
    let d = h
        .handle(&signed_report("c4@example.net", "GitHub: ritar"))
        .await;
    assert!(filed(&d), "a failed lookup costs only the credit: {d:?}");
    let credits: Vec<_> = h
        .github
        .advisories()
        .iter()
        .map(|a| a.credits.clone())
        .collect();
    assert_eq!(credits, [vec!["ritar".to_owned()], vec![], vec![], vec![]]);
    assert_eq!(h.github.calls("user"), 4);
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_waits_exactly_as_asked_then_creates_once() {
    let h = Harness::new("");
    h.github.fail(
        "create",
        FailureKind::Transient {
            retry_after: Some(Duration::from_secs(40)),
        },
        "HTTP 429: slow down",
    );
    let d = h.handle(&report("r429@example.net")).await;
    let at = retry_at(&d);
    let wait = (at - h.clock.now()).to_std().unwrap();
    assert!(
        wait >= Duration::from_secs(40) && wait <= Duration::from_secs(41),
        "waits what GitHub asked (plus < 1 s jitter): {wait:?}"
    );
    assert!(h.github.advisories().is_empty());
    assert!(h.outbox.sent().is_empty(), "no reply before the advisory");

    // Handed over again too early: still waiting, and GitHub is not asked.
    tokio::time::advance(Duration::from_secs(20)).await;
    let early = h.handle(&report("r429@example.net")).await;
    assert_eq!(retry_at(&early), at);
    assert_eq!(h.github.calls("create"), 1);

    tokio::time::advance(Duration::from_secs(21)).await;
    let d = h.handle(&report("r429@example.net")).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories().len(), 1);
    assert_eq!(h.outbox.sent().len(), 1);
    assert_eq!(h.metrics.retries.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_between_attempts_and_is_capped() {
    let h = Harness::new("");
    // A journal younger than the mail: every attempt lists the marked advisories first,
    // and that request fails (a failed create would wait one request timeout instead).
    set_journal_born(h.engine.journal(), &h.clock.now().to_rfc3339());
    let raw = report("r5xx@example.net");
    let mut waits = Vec::new();
    for attempt in 0..10 {
        // Then, journaled, each retry walks the newest advisories (`find`).
        let operation = if attempt == 0 { "list" } else { "find" };
        h.github
            .fail(operation, FailureKind::TRANSIENT, "HTTP 502: Bad Gateway");
        let d = h.handle(&raw).await;
        let at = retry_at(&d);
        let wait = (at - h.clock.now()).to_std().unwrap();
        waits.push(wait);
        tokio::time::advance(wait).await;
    }
    for (attempt, wait) in waits.iter().enumerate() {
        let nominal = Duration::from_secs(5 * (1u64 << attempt)).min(Duration::from_secs(900));
        assert!(
            *wait >= nominal / 2 && *wait <= nominal,
            "attempt {}: {wait:?} (nominal {nominal:?})",
            attempt + 1
        );
    }
    assert_eq!(h.entry(&raw).await.attempts, 10);
    let d = h.handle(&raw).await;
    assert!(filed(&d));
    assert_eq!(h.entry(&raw).await.attempts, 0, "success resets the count");
}

#[tokio::test(start_paused = true)]
async fn a_create_that_times_out_but_landed_is_adopted_by_its_marker() {
    let h = Harness::new("");
    h.github.push(Fault {
        operation: "create",
        kind: FailureKind::TRANSIENT,
        message: "no answer within 30 s (github.timeout_secs); will retry",
        lands: true,
    });
    let raw = report("rslow@example.net");
    let d = h.handle(&raw).await;
    let wait = (retry_at(&d) - h.clock.now()).to_std().unwrap();
    assert!(
        wait >= Duration::from_secs(30),
        "the retry waits at least one request timeout, so it finds the create instead of racing it: {wait:?}"
    );
    assert_eq!(h.github.advisories().len(), 1, "GitHub did create it");
    assert!(h.outbox.sent().is_empty());

    tokio::time::advance(wait).await;
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories().len(), 1, "adopted, not created twice");
    assert_eq!(h.github.calls("create"), 1);
    assert_eq!(h.metrics.advisories_adopted.get(), 1);
    assert_eq!(h.outbox.sent().len(), 1);
    let e = h.entry(&raw).await;
    assert_eq!(
        e.ghsa_id.as_deref(),
        Some(h.github.advisories()[0].ghsa_id.as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn a_validation_422_quarantines_with_githubs_reason_and_no_reply() {
    let h = Harness::new("");
    h.github.fail(
        "create",
        FailureKind::Permanent,
        "HTTP 422: Validation Failed (summary is too long)",
    );
    let d = h.handle(&report("r422@example.net")).await;
    match &d.action {
        Action::File {
            folder: Folder::Quarantine,
            state: State::Quarantined,
            reason: Some(reason),
            ..
        } => assert!(reason.contains("422"), "{reason}"),
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert!(h.outbox.sent().is_empty());
    assert_eq!(
        h.entry(&report("r422@example.net")).await.state,
        State::Quarantined
    );
}

#[tokio::test(start_paused = true)]
async fn a_sender_over_the_limit_is_held_and_a_person_releases_it() {
    let h = Harness::new("[limits]\nmax_advisories_per_sender_per_day = 1\n");
    assert!(filed(&h.handle(&report("first@example.net")).await));
    let second = report("second@example.net");
    let d = h.handle(&second).await;
    match &d.action {
        Action::Hold { reason, .. } => {
            assert!(
                reason.contains("max_advisories_per_sender_per_day = 1"),
                "{reason}"
            )
        }
        other => panic!("expected a hold, got {other:?}"),
    }
    assert_eq!(h.entry(&second).await.state, State::Held);
    assert_eq!(h.github.advisories().len(), 1);
    assert_eq!(h.outbox.sent().len(), 1, "no reply to the held report");

    // A person moved it back to the inbox: released, exempt from the limit.
    let d = h.handle(&second).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories().len(), 2);
    assert!(h.entry(&second).await.released);

    // A third report the next day is under the limit again.
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    assert!(filed(&h.handle(&report("third@example.net")).await));
}

#[tokio::test(start_paused = true)]
async fn a_hold_interrupted_before_its_move_finishes_the_move_instead_of_releasing() {
    let h = Harness::new("[limits]\nmax_advisories_per_sender_per_day = 1\n");
    assert!(filed(&h.handle(&report("a@example.net")).await));
    let raw = report("b@example.net");
    let d = h
        .engine
        .handle(Incoming::Message {
            raw: raw.clone(),
            received_at: None,
            held_mark: None,
        })
        .await
        .unwrap();
    // Only the record before the move: the daemon died during the move.
    record_before_move(h.engine.journal(), &d.action, h.clock.now())
        .await
        .unwrap();
    assert_eq!(h.entry(&raw).await.state, State::Holding);
    let again = h.handle(&raw).await;
    assert!(matches!(again.action, Action::Hold { .. }), "{again:?}");
    assert_eq!(h.github.advisories().len(), 1, "not released by the crash");
}

#[tokio::test(start_paused = true)]
async fn follow_ups_are_answered_at_most_once_a_day_per_thread() {
    let h = Harness::new("");
    assert!(filed(&h.handle(&report("orig@example.net")).await));
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    let follow = |id: &str| {
        mail(
            id,
            "rita@example.net",
            "Re: Cookie forgery in werkzeug",
            "In-Reply-To: <orig@example.net>\r\nReferences: <orig@example.net>\r\n",
        )
    };
    // The acknowledgement went out just now: the first follow-up is not answered.
    let d = h.handle(&follow("f1@example.net")).await;
    assert!(filed(&d), "{d:?}");
    let f1 = h.entry(&follow("f1@example.net")).await;
    assert_eq!(
        f1.reply,
        Reply::Suppressed("this thread got a reply within the last day".into())
    );
    assert_eq!(f1.ghsa_id.as_deref(), Some(ghsa.as_str()));
    assert_eq!(h.github.advisories().len(), 1, "no second advisory");
    assert!(
        h.github.advisories()[0]
            .description
            .contains(&KEY.followup(&f1.report_id))
    );

    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    assert!(filed(&h.handle(&follow("f2@example.net")).await));
    assert_eq!(h.entry(&follow("f2@example.net")).await.reply, Reply::Sent);
    assert!(filed(&h.handle(&follow("f3@example.net")).await));
    assert!(matches!(
        h.entry(&follow("f3@example.net")).await.reply,
        Reply::Suppressed(_)
    ));
    assert_eq!(h.outbox.sent().len(), 2, "the acknowledgement and one note");
    assert_eq!(h.metrics.followups_added.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_refused_smtp_login_pauses_replies_until_a_probe_succeeds() {
    let h = Harness::new("");
    h.outbox.fail(
        FailureKind::Misconfigured,
        "535 authentication failed; check smtp.username and the password",
    );
    let raw = report("p1@example.net");
    let d = h.handle(&raw).await;
    let at = match &d.action {
        Action::Pause { at, scope, reason } => {
            assert_eq!(scope, SMTP_SCOPE);
            assert!(reason.contains("535"), "{reason}");
            *at
        }
        other => panic!("expected a pause, got {other:?}"),
    };
    assert_eq!(
        (at - h.clock.now()).to_std().unwrap(),
        Duration::from_secs(60)
    );
    assert!(h.metrics.health().unwrap_err().contains("SMTP paused"));
    // The advisory exists; nothing is quarantined for our own configuration.
    assert_eq!(h.github.advisories().len(), 1);
    assert_eq!(h.entry(&raw).await.state, State::AdvisoryCreated);

    // Another report meanwhile gets its advisory, and waits for the same probe
    // without trying SMTP again.
    let other = report("p2@example.net");
    let d2 = h.handle(&other).await;
    assert!(matches!(d2.action, Action::Pause { .. }), "{d2:?}");
    assert_eq!(h.outbox.attempts(), 1);

    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(filed(&h.handle(&raw).await));
    assert!(h.metrics.health().is_ok_or_mailbox_only());
    assert!(filed(&h.handle(&other).await));
    assert_eq!(h.outbox.sent().len(), 2);
    assert_eq!(h.github.advisories().len(), 2, "no advisory twice");
}

trait HealthExt {
    fn is_ok_or_mailbox_only(&self) -> bool;
}

impl HealthExt for Result<String, String> {
    /// Healthy but for the mailbox, which these tests never connect.
    fn is_ok_or_mailbox_only(&self) -> bool {
        match self {
            Ok(_) => true,
            Err(text) => text.trim() == "mailbox not connected",
        }
    }
}

#[tokio::test(start_paused = true)]
async fn noise_is_ignored_without_github_or_a_reply() {
    let h = Harness::new("");
    let raw = mail(
        "ooo@example.net",
        "rita@example.net",
        "Out of office",
        "Auto-Submitted: auto-replied\r\n",
    );
    let d = h.handle(&raw).await;
    assert!(
        matches!(
            &d.action,
            Action::File {
                folder: Folder::Ignored,
                state: State::Ignored,
                reason: Some(_),
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(h.github.calls("find") + h.github.calls("create"), 0);
    assert!(h.outbox.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_handled_report_seen_again_is_only_filed() {
    let h = Harness::new("");
    let raw = report("again@example.net");
    assert!(filed(&h.handle(&raw).await));
    let calls = h.github.calls("find");
    let d = h.handle(&raw).await;
    assert!(filed(&d));
    assert!(d.copies.is_empty());
    assert_eq!(h.github.calls("find"), calls);
    assert_eq!(h.outbox.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lost_journal_adopts_the_advisory_instead_of_creating_another() {
    let dir = tempfile::tempdir().unwrap();
    let github = MemoryGitHub::default();
    let raw = report("lost@example.net");
    let state = dir.path().join("state");
    {
        let h = Harness::in_dir(tempfile::tempdir().unwrap(), "", github.clone());
        assert!(filed(&h.handle(&raw).await));
    }
    // A fresh state directory: the journal knows nothing, and was created just now.
    let h = Harness::in_dir(dir, "", github.clone());
    set_journal_born(h.engine.journal(), &h.clock.now().to_rfc3339());
    assert!(state.exists());
    assert!(filed(&h.handle(&raw).await));
    assert_eq!(github.advisories().len(), 1);
    assert_eq!(h.metrics.advisories_adopted.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_oversized_message_is_quarantined_unread() {
    let h = Harness::new("");
    let d = h
        .engine
        .handle(Incoming::TooLarge {
            size: 99_000_000,
            key: "7-42".into(),
        })
        .await
        .unwrap();
    match d.action {
        Action::File {
            folder: Folder::Quarantine,
            reason: Some(reason),
            report_id,
            ..
        } => {
            assert!(reason.contains("max_message_bytes"), "{reason}");
            assert_eq!(report_id.0, "oversize-7-42");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_watcher_tells_the_reporter_once_per_change() {
    let h = Harness::new("");
    assert!(filed(&h.handle(&report("w@example.net")).await));
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    let (watcher, mut rx) = h.watcher();
    watcher.look().await.unwrap();
    assert_eq!(h.outbox.sent().len(), 1, "nothing changed yet");

    tokio::time::advance(Duration::from_secs(60)).await;
    h.github.set_state(
        &ghsa,
        AdvisoryState::Published,
        Some("CVE-2026-0001"),
        h.clock.now(),
    );
    watcher.look().await.unwrap();
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), 2);
    let notice = &sent[1];
    assert!(notice.body.contains("CVE-2026-0001"));
    assert!(notice.message_id.contains(".published@"));
    assert_eq!(
        crate::thread::report_of_our_reply(&notice.message_id),
        Some(h.entry(&report("w@example.net")).await.report_id),
        "a reply to a notice leads back to its report"
    );
    assert_eq!(
        rx.drain().len(),
        1,
        "its copy is handed to the mailbox side"
    );

    watcher.look().await.unwrap();
    assert_eq!(h.outbox.sent().len(), 2, "not told twice");
    let e = h.entry(&report("w@example.net")).await;
    assert_eq!(e.github_state, Some(AdvisoryState::Published));
    assert_eq!(h.metrics.notices_sent.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_absurd_delay_asked_by_a_server_is_capped_at_an_hour() {
    let h = Harness::new("");
    // Retry-After: 1000000000000, then a rate-limit reset in the year 9999.
    let reset_9999 = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    let asked = [
        Duration::from_secs(1_000_000_000_000),
        (reset_9999 - h.clock.now()).to_std().unwrap(),
        Duration::MAX,
    ];
    let raw = report("absurd@example.net");
    // Every attempt lists the marked advisories first (the journal is younger).
    set_journal_born(h.engine.journal(), &h.clock.now().to_rfc3339());
    for (attempt, delay) in asked.into_iter().enumerate() {
        h.github.fail(
            if attempt == 0 { "list" } else { "find" },
            FailureKind::Transient {
                retry_after: Some(delay),
            },
            "HTTP 429: come back much later",
        );
        let d = h.handle(&raw).await;
        let wait = (retry_at(&d) - h.clock.now()).to_std().unwrap();
        assert!(
            wait >= Duration::from_secs(3600) && wait <= Duration::from_secs(3601),
            "asked {delay:?}, waits {wait:?}"
        );
        tokio::time::advance(wait).await;
    }
    assert!(filed(&h.handle(&raw).await));
}

fn reply_to_orig(id: &str, from: &str, subject: &str) -> Vec<u8> {
    mail(
        id,
        from,
        subject,
        "In-Reply-To: <orig@example.net>\r\nReferences: <orig@example.net>\r\n",
    )
}

fn held_reason(d: &Disposition) -> String {
    match &d.action {
        Action::Hold { reason, .. } => reason.clone(),
        other => panic!("expected a hold, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn nobody_can_add_text_to_a_published_advisory_by_mail() {
    let h = Harness::new("");
    assert!(filed(&h.handle(&report("orig@example.net")).await));
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    h.github
        .set_state(&ghsa, AdvisoryState::Published, None, h.clock.now());
    let before = h.github.advisories()[0].description.clone();

    // Neither the reporter replying in the thread, nor a stranger with the public id.
    let from_reporter = reply_to_orig("late@example.net", "rita@example.net", "Re: Cookie forgery");
    let d = h.handle(&from_reporter).await;
    assert!(held_reason(&d).contains("is published"), "{d:?}");
    let stranger = mail(
        "deface@evil.example",
        "mallory@evil.example",
        &format!("Update [{ghsa}]"),
        "",
    );
    let d = h.handle(&stranger).await;
    assert!(held_reason(&d).contains("neither the reporter"), "{d:?}");

    assert_eq!(h.github.advisories()[0].description, before, "unchanged");
    assert_eq!(h.github.calls("update"), 0);
    let e = h.entry(&stranger).await;
    assert_eq!(e.state, State::Held);
    assert!(
        e.outcome.unwrap().contains("neither the reporter"),
        "the reason is recorded"
    );
    assert_eq!(h.outbox.sent().len(), 1, "no reply to either");

    // A person moves the reporter's one back: it is filed, still not added.
    let d = h.handle(&from_reporter).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories()[0].description, before);
}

#[tokio::test(start_paused = true)]
async fn a_stranger_joins_a_draft_thread_only_when_a_person_releases_them() {
    let h = Harness::new("");
    assert!(filed(&h.handle(&report("orig@example.net")).await));
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    let stranger = mail(
        "s1@other.example",
        "colleague@other.example",
        &format!("More [{ghsa}]"),
        "",
    );
    let d = h.handle(&stranger).await;
    assert!(held_reason(&d).contains("colleague@other.example"), "{d:?}");
    assert_eq!(h.github.calls("update"), 0);
    // Released by a person: added, marked as from another address.
    let d = h.handle(&stranger).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.calls("update"), 1);
    // Now part of the thread: their next message goes straight in.
    let next = mail(
        "s2@other.example",
        "colleague@other.example",
        &format!("Even more [{ghsa}]"),
        "",
    );
    assert!(filed(&h.handle(&next).await));
    assert_eq!(h.github.calls("update"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_while_github_is_down_joins_its_report() {
    let h = Harness::new("");
    for _ in 0..3 {
        h.github
            .fail("create", FailureKind::TRANSIENT, "HTTP 503: unavailable");
    }
    let original = report("orig@example.net");
    let d = h.handle(&original).await;
    let first_retry = retry_at(&d);
    let more = reply_to_orig(
        "more@example.net",
        "rita@example.net",
        "Re: Cookie forgery in werkzeug",
    );
    let d = h.handle(&more).await;
    assert!(
        matches!(d.action, Action::Retry { .. }),
        "the follow-up waits: {d:?}"
    );
    assert_eq!(
        h.entry(&more).await.thread_of,
        Some(h.entry(&original).await.report_id),
        "linked to its report"
    );
    // GitHub stays down a while longer; both keep waiting, nothing is created.
    tokio::time::advance((first_retry - h.clock.now()).to_std().unwrap()).await;
    let d = h.handle(&original).await;
    tokio::time::advance((retry_at(&d) - h.clock.now()).to_std().unwrap()).await;
    let d = h.handle(&original).await;
    tokio::time::advance((retry_at(&d) - h.clock.now()).to_std().unwrap()).await;
    assert!(filed(&h.handle(&original).await));
    assert!(filed(&h.handle(&more).await));

    let advisories = h.github.advisories();
    assert_eq!(advisories.len(), 1, "one advisory");
    assert!(advisories[0].description.contains("The session cookie"));
    assert_eq!(h.github.calls("update"), 1, "the follow-up's text is in it");
    assert_eq!(h.outbox.sent().len(), 1, "one acknowledgement, one GHSA id");
}

#[tokio::test(start_paused = true)]
async fn a_fresh_copy_of_a_held_report_does_not_release_it() {
    let h = Harness::new("[limits]\nmax_advisories_per_sender_per_day = 1\n");
    assert!(filed(&h.handle(&report("one@example.net")).await));
    let held = report("two@example.net");
    assert!(matches!(h.handle(&held).await.action, Action::Hold { .. }));
    // The same message sent again a minute later: another copy, held as well.
    tokio::time::advance(Duration::from_secs(60)).await;
    let d = h.handle(&held).await;
    assert!(held_reason(&d).contains("a copy of a held report"), "{d:?}");
    assert_eq!(h.github.advisories().len(), 1, "the limit still holds");
    // The held message itself, moved back (its arrival time kept): released.
    let moved_back = h
        .engine
        .handle(Incoming::Message {
            raw: held.clone(),
            received_at: Some(start()),
            held_mark: None,
        })
        .await
        .unwrap();
    assert!(filed(&moved_back), "{moved_back:?}");
    assert_eq!(h.github.advisories().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_different_message_reusing_a_message_id_is_its_own_report() {
    let h = Harness::new("");
    assert!(filed(&h.handle(&report("dup@example.net")).await));
    let other = mail(
        "dup@example.net",
        "rita@example.net",
        "Another problem in werkzeug",
        "",
    );
    let d = h.handle(&other).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(
        h.github.advisories().len(),
        2,
        "its content reaches maintainers"
    );
    assert_eq!(h.outbox.sent().len(), 2);
    // An exact copy of the first is filed as a copy, nothing more.
    let d = h.handle(&report("dup@example.net")).await;
    assert!(filed(&d));
    assert_eq!(h.github.advisories().len(), 2);
    assert_eq!(h.outbox.sent().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_a_lost_journal_a_reply_to_the_report_itself_finds_its_advisory() {
    let github = MemoryGitHub::default();
    {
        let h = Harness::in_dir(tempfile::tempdir().unwrap(), "", github.clone());
        assert!(filed(&h.handle(&report("orig@example.net")).await));
    }
    // A new journal; the reporter answers their own report, not our reply.
    let h = Harness::in_dir(tempfile::tempdir().unwrap(), "", github.clone());
    let more = reply_to_orig(
        "again@example.net",
        "rita@example.net",
        "Re: Cookie forgery",
    );
    let d = h.handle(&more).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(github.advisories().len(), 1, "no second advisory");
    assert_eq!(github.calls("update"), 1, "added to the first one");
}

#[tokio::test(start_paused = true)]
async fn after_a_lost_journal_the_watcher_adopts_every_marked_advisory() {
    let github = MemoryGitHub::default();
    {
        let h = Harness::in_dir(tempfile::tempdir().unwrap(), "", github.clone());
        assert!(filed(&h.handle(&report("a@example.net")).await));
        assert!(filed(
            &h.handle(&mail("b@example.net", "bob@example.org", "Flask issue", ""))
                .await
        ));
    }
    let h = Harness::in_dir(tempfile::tempdir().unwrap(), "", github.clone());
    let (watcher, _rx) = h.watcher();
    watcher.look().await.unwrap();
    for a in github.advisories() {
        let listed = h
            .engine
            .journal()
            .call(move |db| db.find_by_ghsa(&a.ghsa_id))
            .await
            .unwrap();
        assert!(listed.is_some(), "adopted into the journal");
    }
}

#[tokio::test(start_paused = true)]
async fn a_forged_marker_in_report_text_is_not_adopted() {
    let h = Harness::new("");
    let victim = ReportId(mail::sha256_hex(b"victim@example.net"));
    // Text that spells out both marker forms for another report; whatever the
    // renderer lets through, only the key makes a marker count.
    let forged = format!(
        "<!-- advisory-bridge report-id={victim} -->\r\n<!-- advisory-bridge report-id={victim} mac=00000000000000000000000000000000 -->"
    );
    let attacker = format!(
        "From: M <m@evil.example>\r\nTo: security@palletsprojects.com\r\nSubject: werkzeug\r\n\
         Message-ID: <forger@evil.example>\r\nContent-Type: text/plain\r\n\r\n{forged}\r\n"
    );
    assert!(filed(&h.handle(attacker.as_bytes()).await));
    // Even planted raw in a description, the forged marker does not make this report's
    // advisory the victim's.
    h.github.0.lock().unwrap().advisories[0]
        .description
        .push_str(&forged);
    let d = h.handle(&report("victim@example.net")).await;
    assert!(filed(&d));
    assert_eq!(
        h.github.advisories().len(),
        2,
        "the victim's report got its own advisory"
    );
    assert_eq!(h.metrics.advisories_adopted.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_megabyte_subject_and_a_hundred_thousand_references_cost_little() {
    let h = Harness::new("");
    let subject = "Re: ".repeat(262_144);
    let references: String = (0..100_000)
        .map(|i| format!("<advisory-bridge.{:064x}@forged.example> ", i))
        .collect();
    let raw = mail(
        "heavy@example.net",
        "rita@example.net",
        &subject,
        &format!("References: {references}\r\n"),
    );
    let started = std::time::Instant::now();
    let d = h.handle(&raw).await;
    let took = started.elapsed();
    assert!(filed(&d), "{d:?}");
    let report = pipeline::parse(&h.settings.config, h.settings.pgp.as_deref(), &raw).unwrap();
    assert!(report.subject.len() <= mail::MAX_SUBJECT_BYTES);
    assert!(report.references.len() <= mail::MAX_REFERENCED_IDS);
    // Forged references to our ids: at most one listing per repository.
    assert!(h.github.calls("list") <= 2, "{}", h.github.calls("list"));
    // A second such mail within the interval costs no listing at all.
    let again = mail(
        "heavy2@example.net",
        "rita@example.net",
        "x",
        &format!("References: {references}\r\n"),
    );
    let calls = h.github.calls("list");
    assert!(filed(&h.handle(&again).await));
    assert_eq!(h.github.calls("list"), calls);
    // Generous: seconds, not the minutes the quadratic paths took (a debug build).
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn revoked_github_credentials_pause_that_owner_and_nothing_is_quarantined() {
    let h = Harness::new("");
    h.github.fail(
        "create",
        FailureKind::Misconfigured,
        "HTTP 401: Bad credentials; check github.token_file",
    );
    let raw = report("cred@example.net");
    let d = h.handle(&raw).await;
    match &d.action {
        Action::Pause { scope, reason, .. } => {
            assert_eq!(scope, "GitHub pallets");
            assert!(reason.contains("401"), "{reason}");
        }
        other => panic!("expected a pause, got {other:?}"),
    }
    let health = h.metrics.health().unwrap_err();
    assert!(health.contains("GitHub pallets paused"), "{health}");
    // Meanwhile another report for the same owner waits without asking GitHub.
    let other = report("cred2@example.net");
    assert!(matches!(
        h.handle(&other).await.action,
        Action::Pause { .. }
    ));
    assert_eq!(h.github.calls("create"), 1);
    assert!(
        h.outbox.sent().is_empty(),
        "no acknowledgement while paused"
    );

    // Credentials fixed: the next probe works and the backlog drains by itself.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(filed(&h.handle(&raw).await));
    assert!(filed(&h.handle(&other).await));
    assert!(h.metrics.health().is_ok_or_mailbox_only());
    assert_eq!(h.github.advisories().len(), 2);
    assert_eq!(h.metrics.quarantined.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn where_the_server_keeps_keywords_the_held_mark_tells_a_release_from_a_copy() {
    let h = Harness::new("[limits]\nmax_advisories_per_sender_per_day = 1\n");
    assert!(filed(&h.handle(&report("k1@example.net")).await));
    let held = report("k2@example.net");
    assert!(matches!(h.handle(&held).await.action, Action::Hold { .. }));
    let arrive = |mark| Incoming::Message {
        raw: held.clone(),
        // The same second as the held one: the arrival time alone could not tell.
        received_at: Some(h.clock.now()),
        held_mark: Some(mark),
    };
    let copy = h.engine.handle(arrive(false)).await.unwrap();
    assert!(
        held_reason(&copy).contains("a copy of a held report"),
        "{copy:?}"
    );
    let moved_back = h.engine.handle(arrive(true)).await.unwrap();
    assert!(filed(&moved_back), "{moved_back:?}");
    assert_eq!(h.github.advisories().len(), 2);
}

/// A report with a small Python attachment.
fn report_with_attachment(id: &str) -> Vec<u8> {
    format!(
        "From: Reporter <rita@example.net>\r\nTo: security@palletsprojects.com\r\n\
         Subject: Cookie forgery in werkzeug\r\nMessage-ID: <{id}>\r\n\
         Date: Tue, 01 Dec 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe cookie can be forged.\r\n\
         --b\r\nContent-Type: text/x-python; name=\"poc.py\"\r\n\
         Content-Disposition: attachment; filename=\"poc.py\"\r\n\r\nprint('forged')\r\n\
         --b--\r\n"
    )
    .into_bytes()
}

const INTAKE: &str = "[attachments]\nrepository = \"pallets/security-intake\"\n";

#[tokio::test(start_paused = true)]
async fn attachments_are_committed_once_and_before_the_draft_that_links_them() {
    let h = Harness::new(INTAKE);
    // The commit lands, but its answer is lost.
    h.github.push(Fault {
        operation: "upload",
        kind: FailureKind::TRANSIENT,
        message: "no answer within 30 s (github.timeout_secs); will retry",
        lands: true,
    });
    let raw = report_with_attachment("att1@example.net");
    let d = h.handle(&raw).await;
    let wait = (retry_at(&d) - h.clock.now()).to_std().unwrap();
    assert!(
        h.github.advisories().is_empty(),
        "no draft links to attachments that may not be there"
    );
    tokio::time::advance(wait).await;
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    let branches = h.github.0.lock().unwrap().branches.clone();
    assert_eq!(branches.len(), 1, "one branch: {branches:?}");
    let ((repository, branch), files) = &branches[0];
    assert_eq!(repository, "pallets/security-intake");
    assert_eq!(
        branch,
        &KEY.attachments_branch(&h.entry(&raw).await.report_id)
    );
    assert_eq!(files.len(), 1);
    assert!(files[0].0.ends_with(".py") && files[0].1.starts_with(b"print('forged')"));
    assert_eq!(h.github.calls("upload"), 2);
    let advisories = h.github.advisories();
    assert_eq!(advisories.len(), 1);
    assert!(
        advisories[0].description.contains(&format!(
            "/pallets/security-intake/blob/{branch}/{}",
            files[0].0
        )),
        "{}",
        advisories[0].description
    );
}

#[tokio::test(start_paused = true)]
async fn an_attachments_repository_we_cannot_write_pauses_the_owner() {
    let h = Harness::new(INTAKE);
    h.github.fail(
        "upload",
        FailureKind::Misconfigured,
        "HTTP 403: Resource not accessible by integration",
    );
    let raw = report_with_attachment("att2@example.net");
    let d = h.handle(&raw).await;
    assert!(
        matches!(&d.action, Action::Pause { reason, .. } if reason.contains("403")),
        "{d:?}"
    );
    assert!(h.github.advisories().is_empty());
    assert_eq!(h.entry(&raw).await.state, State::Seen, "nothing lost");
    // Without attachments, nothing is uploaded and nothing waits for it.
    let h = Harness::new(INTAKE);
    let d = h.handle(&report("att3@example.net")).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.calls("upload"), 0);
}

const MAINTAINERS: &str = "[reply]\nenabled = false\n[maintainers]\nnotify = [\"team@example.org\", \"lead@example.org\"]\n";

#[tokio::test(start_paused = true)]
async fn maintainers_hear_of_each_new_draft_once_even_when_a_send_fails() {
    let h = Harness::new(MAINTAINERS);
    h.outbox.fail(FailureKind::TRANSIENT, "421 try again later");
    let raw = report("m1@example.net");
    let d = h.handle(&raw).await;
    let wait = (retry_at(&d) - h.clock.now()).to_std().unwrap();
    assert_eq!(h.github.advisories().len(), 1, "the draft exists");
    tokio::time::advance(wait).await;
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    let sent = h.outbox.sent();
    let to: Vec<&str> = sent.iter().map(|m| m.to.email.as_str()).collect();
    assert_eq!(to, ["team@example.org", "lead@example.org"]);
    let m = &sent[0];
    let ghsa = &h.github.advisories()[0].ghsa_id;
    assert!(m.subject.contains(ghsa.as_str()), "{}", m.subject);
    assert!(m.body.contains("GitHub tells no one"), "{}", m.body);
    assert!(
        !m.body.contains("can be forged"),
        "no report text by default: {}",
        m.body
    );
    assert_eq!(sent[0].message_id, sent[1].message_id, "one id per report");
    assert_eq!(d.copies.len(), 2, "copies for the sent folder");

    // Seen again (a restart before the move), nothing goes out twice.
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.outbox.sent().len(), 2);
    assert_eq!(h.metrics.maintainer_mails_sent.get(), 2);

    // A refused address is given up, not retried forever; the report is still filed.
    h.outbox.0.lock().unwrap().faults.push_back(SendError {
        recipient: "team@example.org".into(),
        message: "550 no such user".into(),
        kind: FailureKind::Permanent,
    });
    let d = h.handle(&report("m2@example.net")).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.outbox.sent().len(), 3, "lead still hears of it");
}

#[tokio::test(start_paused = true)]
async fn the_digest_lists_untouched_drafts_once_per_interval() {
    let h = Harness::new(MAINTAINERS);
    h.handle(&report("d1@example.net")).await;
    let (watcher, _copies) = h.watcher();
    watcher.look().await.unwrap();
    let told = h.outbox.sent().len();
    assert_eq!(told, 2, "the new-draft mails, no digest for a fresh draft");

    // A week later nobody has touched it: one digest per address.
    tokio::time::advance(Duration::from_secs(8 * 24 * 3600)).await;
    watcher.look().await.unwrap();
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), told + 2, "{sent:#?}");
    let digest = &sent[told];
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    assert!(digest.body.contains(&ghsa), "{}", digest.body);
    assert!(
        digest.subject.contains("1 draft advisory waiting"),
        "{}",
        digest.subject
    );
    watcher.look().await.unwrap();
    assert_eq!(h.outbox.sent().len(), told + 2, "once per interval");

    // The next interval lists it again; once a maintainer works on it, it is not.
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    watcher.look().await.unwrap();
    assert_eq!(h.outbox.sent().len(), told + 4);
    h.github
        .set_state(&ghsa, AdvisoryState::Draft, None, h.clock.now());
    watcher.look().await.unwrap();
    tokio::time::advance(Duration::from_secs(24 * 3600)).await;
    watcher.look().await.unwrap();
    assert_eq!(
        h.outbox.sent().len(),
        told + 4,
        "a touched draft is not listed"
    );
}

const INVITE: &str = "[advisory]\ninvite_reporter = true\n\
    [authentication]\ntrusted_authserv_ids = [\"mx.palletsprojects.com\"]\n";

fn authenticated_report(id: &str, verdict: &str, body: &str) -> Vec<u8> {
    let headers = format!("Authentication-Results: mx.palletsprojects.com; {verdict}\r\n");
    let raw = String::from_utf8(mail(
        id,
        "rita@example.net",
        "Cookie forgery in werkzeug",
        &headers,
    ))
    .unwrap();
    format!("{}\r\n{body}\r\n", raw.trim_end()).into_bytes()
}

/// Makes `ritar` a GitHub user and handles an authenticated report stating that login.
async fn invite_ritar(h: &Harness, id: &str) -> Disposition {
    h.github
        .0
        .lock()
        .unwrap()
        .users
        .push(("ritar".to_owned(), "User"));
    h.handle(&authenticated_report(
        id,
        "dmarc=pass header.from=example.net",
        "@ritar on GitHub",
    ))
    .await
}

#[tokio::test(start_paused = true)]
async fn an_authenticated_reporter_is_invited_to_the_draft_and_told_so() {
    let h = Harness::new(INVITE);
    let d = invite_ritar(&h, "i1@example.net").await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.advisories()[0].collaborators, ["ritar"]);
    let ack = &h.outbox.sent()[0];
    assert!(
        ack.body
            .contains("We have added your GitHub account, ritar, to the draft"),
        "{}",
        ack.body
    );

    // Without authentication nobody is invited, and the reply says only the
    // maintainers can see it.
    let d = h
        .handle(&authenticated_report(
            "i2@example.net",
            "none",
            "@ritar on GitHub",
        ))
        .await;
    assert!(filed(&d), "{d:?}");
    assert!(h.github.advisories()[1].collaborators.is_empty());
    let ack = &h.outbox.sent()[1];
    assert!(
        ack.body.contains("Only the maintainers can see"),
        "{}",
        ack.body
    );
    assert_eq!(h.github.calls("collaborator"), 1);

    // With replies off, an authenticated reporter is still invited.
    let h = Harness::new(&format!("{INVITE}[reply]\nenabled = false\n"));
    let d = invite_ritar(&h, "i3@example.net").await;
    assert!(filed(&d), "{d:?}");
    assert!(h.outbox.sent().is_empty());
    assert_eq!(h.github.advisories()[0].collaborators, ["ritar"]);
}

/// `[pgp]` with the test key of `tests/fixtures/pgp` (its passphrase in a file of `dir`),
/// and the receiving server's authserv-id trusted.
fn pgp_extra(dir: &Path) -> String {
    let pass = dir.join("pgp-passphrase");
    std::fs::write(&pass, "correct horse").unwrap();
    format!(
        "[authentication]\ntrusted_authserv_ids = [\"mx.palletsprojects.com\"]\n\
         [pgp]\nsecret_key_file = \"{}/tests/fixtures/pgp/security.secret.asc\"\n\
         passphrase_file = \"{}\"\nkey_url = \"https://palletsprojects.com/security.asc\"\n",
        env!("CARGO_MANIFEST_DIR"),
        pass.display()
    )
}

fn pgp_harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let extra = pgp_extra(dir.path());
    Harness::in_dir(dir, &extra, MemoryGitHub::default())
}

fn pgp_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/pgp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_message_is_quarantined_and_its_sender_told_once() {
    let h = pgp_harness();
    let raw = pgp_fixture("wrong-key.eml");
    let d = h.handle(&raw).await;
    match &d.action {
        Action::File {
            folder: Folder::Quarantine,
            state: State::Quarantined,
            reason: Some(reason),
            ..
        } => assert!(reason.contains("not encrypted to our key"), "{reason}"),
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert!(h.github.advisories().is_empty(), "no advisory");
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].body.contains("nobody has read it"),
        "{}",
        sent[0].body
    );
    assert!(
        sent[0]
            .body
            .contains("https://palletsprojects.com/security.asc")
    );
    assert!(
        !sent[0].subject.contains('['),
        "no GHSA tag: {}",
        sent[0].subject
    );
    assert_eq!(d.copies.len(), 1, "the note goes to the sent folder");
    assert_eq!(h.entry(&raw).await.reply, Reply::Sent);
    // A copy arriving again is filed with the original: no second note.
    h.handle(&raw).await;
    assert_eq!(h.outbox.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_message_from_a_forged_sender_gets_no_reply() {
    let h = pgp_harness();
    let raw = String::from_utf8(pgp_fixture("wrong-key.eml"))
        .unwrap()
        .replace("dmarc=pass", "dmarc=fail");
    let d = h.handle(raw.as_bytes()).await;
    assert!(
        matches!(
            d.action,
            Action::File {
                folder: Folder::Quarantine,
                ..
            }
        ),
        "{d:?}"
    );
    assert!(h.outbox.sent().is_empty(), "DMARC failed: no reply");
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_note_that_fails_to_send_is_retried_then_quarantined() {
    let h = pgp_harness();
    let raw = pgp_fixture("wrong-key.eml");
    h.outbox.fail(FailureKind::TRANSIENT, "451 try later");
    let d = h.handle(&raw).await;
    assert!(matches!(d.action, Action::Retry { .. }), "{d:?}");
    tokio::time::advance(Duration::from_secs(3600)).await;
    let d = h.handle(&raw).await;
    assert!(
        matches!(
            d.action,
            Action::File {
                folder: Folder::Quarantine,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(h.outbox.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_decrypted_report_is_filed_and_its_reply_is_encrypted_to_the_reporter() {
    let h = pgp_harness();
    let raw = pgp_fixture("exchange-mixed-up.eml");
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    let advisories = h.github.advisories();
    assert_eq!(advisories.len(), 1);
    assert!(
        advisories[0]
            .description
            .contains("encrypted (PGP/MIME); signed, verified with key"),
        "{}",
        advisories[0].description
    );
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .encrypt_to
            .as_deref()
            .is_some_and(|k| k.contains("BEGIN PGP PUBLIC KEY BLOCK")),
        "the reply goes encrypted to the key the report carried"
    );
}

#[tokio::test(start_paused = true)]
async fn a_notice_to_a_reporter_who_sent_a_key_is_encrypted_too() {
    let h = pgp_harness();
    assert!(filed(&h.handle(&pgp_fixture("pgp-mime-signed.eml")).await));
    let ghsa = h.github.advisories()[0].ghsa_id.clone();
    let (watcher, _rx) = h.watcher();
    tokio::time::advance(Duration::from_secs(60)).await;
    h.github
        .set_state(&ghsa, AdvisoryState::Published, None, h.clock.now());
    watcher.look().await.unwrap();
    let sent = h.outbox.sent();
    assert_eq!(sent.len(), 2, "the acknowledgement and the notice");
    assert!(sent[1].message_id.contains(".published@"));
    assert!(
        sent[1].encrypt_to.is_some(),
        "the key is read again from the spooled report"
    );
}

/// Sets when `journal` says it was created (before the engine first asks).
fn set_journal_born(journal: &Journal, at: &str) {
    let at = at.to_owned();
    futures::executor::block_on(journal.call(move |db| db.set_meta("journal_started_at", &at)))
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_report_new_to_the_journal_costs_one_request_and_no_marker_scan() {
    let h = Harness::new("");
    let d = h.handle(&report("fresh@example.net")).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(
        h.github.calls("find"),
        0,
        "nothing to find for a report never seen"
    );
    assert_eq!(h.github.calls("create"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_report_journaled_by_an_earlier_attempt_is_scanned_for_its_marker() {
    let h = Harness::new("");
    h.github.push(Fault {
        operation: "create",
        kind: FailureKind::TRANSIENT,
        message: "no answer within 30 s (github.timeout_secs); will retry",
        lands: true,
    });
    let raw = report("landed@example.net");
    let d = h.handle(&raw).await;
    assert_eq!(h.github.calls("find"), 0, "the first attempt does not scan");
    tokio::time::advance((retry_at(&d) - h.clock.now()).to_std().unwrap()).await;
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(
        h.github.calls("find"),
        1,
        "the outcome of the first create was unknown"
    );
    assert_eq!(h.github.calls("create"), 1, "adopted, not created twice");
    assert_eq!(h.github.advisories().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn mail_older_than_the_journal_or_a_shared_mailbox_means_a_marker_scan() {
    // The harness's journal was created now, after the test clock's messages arrived:
    // they may have been handled under a journal that is gone.
    // One listing of the repository's marked advisories answers for all of them.
    let h = Harness::new("");
    let born = (h.clock.now() + chrono::Duration::hours(1)).to_rfc3339();
    set_journal_born(h.engine.journal(), &born);
    assert!(filed(&h.handle(&report("older@example.net")).await));
    assert!(filed(&h.handle(&report("older2@example.net")).await));
    assert_eq!(h.github.calls("find"), 0);
    assert_eq!(h.github.calls("list"), 1);

    // Another instance's claim folder on the mailbox: it has a journal of its own,
    // unless the journal is the shared PostgreSQL one, which knows its reports too.
    let h = Harness::new("");
    h.metrics.set_other_instances(1);
    assert!(filed(&h.handle(&report("shared@example.net")).await));
    let walks = match h.engine.journal().backend() {
        crate::journal::Backend::Sqlite => 1,
        crate::journal::Backend::Postgres => 0,
    };
    assert_eq!(h.github.calls("find"), walks);
}

#[tokio::test(start_paused = true)]
async fn a_report_that_would_wait_for_pacing_comes_back_paced_and_noise_does_not_wait() {
    let h = Harness::new("");
    h.github.0.lock().unwrap().pacing = Some(Duration::from_secs(1));
    let incoming = |raw: &[u8]| Incoming::Message {
        raw: raw.to_vec(),
        received_at: Some(h.clock.now()),
        held_mark: None,
    };
    let raw = report("paced@example.net");
    let d = h.engine.handle_unless_paced(incoming(&raw)).await.unwrap();
    assert_eq!(d.action, Action::Paced);
    assert!(d.copies.is_empty());
    assert!(h.github.calls("create") == 0 && h.outbox.sent().is_empty());

    // Noise is filed at once, whatever the pacing says.
    let noise = mail(
        "ooo@example.net",
        "rita@example.net",
        "Out of office",
        "Auto-Submitted: auto-replied\r\n",
    );
    let d = h
        .engine
        .handle_unless_paced(incoming(&noise))
        .await
        .unwrap();
    assert!(
        matches!(
            d.action,
            Action::File {
                folder: Folder::Ignored,
                ..
            }
        ),
        "{d:?}"
    );

    // Its turn (the paced lane waits): still new to the journal, so no marker scan.
    h.github.0.lock().unwrap().pacing = None;
    let d = h.handle(&raw).await;
    assert!(filed(&d), "{d:?}");
    assert_eq!(h.github.calls("find") + h.github.calls("list"), 0);
    assert_eq!(h.github.calls("create"), 1);
    assert_eq!(h.outbox.sent().len(), 1);
}
