//! A stateful fake of GitHub's repository security-advisory REST API, for tests and the
//! local dev stack, that checks every request against GitHub's official OpenAPI
//! description and answers the way GitHub does.
//!
//! # What it serves
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /repos/{o}/{r}/security-advisories` | 201 full `repository-advisory`, state `draft` |
//! | `GET /repos/{o}/{r}/security-advisories` | 200 list; `state`, `sort`, `direction`, `per_page`, cursor `before`/`after`, `Link` header |
//! | `GET /repos/{o}/{r}/security-advisories/{ghsa}` | 200 advisory or 404 |
//! | `PATCH /repos/{o}/{r}/security-advisories/{ghsa}` | 200 updated advisory (state changes too) |
//! | `POST /repos/{o}/{r}/security-advisories/reports` | 201 private report, state `triage` |
//! | `POST /repos/{o}/{r}/security-advisories/{ghsa}/cve` | 202 `{}` |
//! | `GET /_fake/advisories` | every stored advisory, `{"owner/name": [..]}`: for humans, not GitHub |
//!
//! Bodies that fail the request schema get 422 `{"message":"Validation Failed","errors":[..]}`;
//! unparseable JSON gets 400; an unknown repository or advisory 404; a missing or wrong
//! token 401 `Bad credentials`. Every API response carries GitHub's rate-limit headers
//! (`x-ratelimit-limit`, `-remaining`, `-used`, `-reset`, `-resource: core`) and an
//! `x-github-request-id`. When the budget is used up, requests get 403 until the reset.
//!
//! Tests steer it with [`FakeHandle::push_fault`] (next request answers with a status,
//! stalls, or loses its connection) and [`FakeHandle::set_advisory_state`] (what a
//! maintainer does on github.com).

#![warn(missing_docs)]

pub mod advisory;
mod server;
pub mod spec;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

pub use spec::{Operation, Spec, Violation, spec};

/// How to start a fake.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The only token accepted (as `Bearer` or `token` in `Authorization`).
    pub token: String,
    /// Repositories that exist, `owner/name`; others answer 404.
    pub repos: Vec<String>,
    /// The login of the token's user (the `author` of advisories it creates).
    pub login: String,
    /// The rate-limit budget per hour (`x-ratelimit-limit`).
    pub rate_limit: u32,
    /// Seed for GHSA IDs, so a test can reproduce a run; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            token: "fake-token".into(),
            repos: Vec::new(),
            login: "advisory-bridge-bot".into(),
            rate_limit: 5000,
            seed: None,
        }
    }
}

/// A misbehaviour to inject into an upcoming request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and GitHub's error body for it, plus these headers
    /// (they replace the fake's own, e.g. `retry-after` or `x-ratelimit-remaining`).
    Status {
        /// HTTP status.
        code: u16,
        /// Extra or replacing response headers.
        headers: Vec<(String, String)>,
    },
    /// Answer with this status, JSON body and headers, exactly.
    Json {
        /// HTTP status.
        code: u16,
        /// Extra or replacing response headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Value,
    },
    /// Wait this long, then handle the request normally, even when the client has given
    /// up meanwhile (a create still creates: the "outcome unknown" case).
    Delay(Duration),
    /// Handle the request at once, then wait this long before answering: GitHub did the
    /// work but the answer is late or never read (the client timed out or crashed).
    DelayResponse(Duration),
    /// Close the connection without an answer; the request has no effect.
    Drop,
}

impl Fault {
    /// A bare status with no extra headers.
    pub fn status(code: u16) -> Fault {
        Fault::Status {
            code,
            headers: Vec::new(),
        }
    }

    /// A 403 for a token without the needed permission (not a rate limit).
    pub fn forbidden() -> Fault {
        Fault::Json {
            code: 403,
            headers: Vec::new(),
            body: serde_json::json!({
                "message": "Resource not accessible by personal access token",
                "documentation_url": "https://docs.github.com/rest/security-advisories/repository-advisories#create-a-repository-security-advisory",
                "status": "403",
            }),
        }
    }

    /// GitHub's secondary rate limit: 403 with `retry-after`.
    pub fn secondary_rate_limit(retry_after_secs: u64) -> Fault {
        Fault::Status {
            code: 403,
            headers: vec![("retry-after".into(), retry_after_secs.to_string())],
        }
    }

    /// The primary rate limit used up: 403, `x-ratelimit-remaining: 0`, reset at
    /// `reset_epoch_secs`.
    pub fn rate_limit_exhausted(reset_epoch_secs: i64) -> Fault {
        Fault::Status {
            code: 403,
            headers: vec![
                ("x-ratelimit-remaining".into(), "0".into()),
                ("x-ratelimit-reset".into(), reset_epoch_secs.to_string()),
            ],
        }
    }
}

/// Which requests a queued fault applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultMatch {
    /// Only this method (`GET`, `POST`, ...), any when `None`.
    pub method: Option<String>,
    /// Only this operation, any when `None`.
    pub operation: Option<Operation>,
}

impl FaultMatch {
    /// Matches every API request.
    pub fn any() -> FaultMatch {
        FaultMatch::default()
    }

    /// Matches one operation.
    pub fn operation(operation: Operation) -> FaultMatch {
        FaultMatch {
            method: None,
            operation: Some(operation),
        }
    }

    fn matches(&self, method: &str, operation: Option<Operation>) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.operation.is_none_or(|o| Some(o) == operation)
    }
}

/// One request the fake received, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The body as JSON, or as a JSON string when it was not JSON; `None` when empty.
    pub body: Option<Value>,
    /// The operation the path names, if any.
    pub operation: Option<Operation>,
    /// The status answered; `None` when a [`Fault::Drop`] closed the connection.
    pub status: Option<u16>,
    /// The JSON body answered, if any.
    pub response: Option<Value>,
    /// Schema violations found in the request body (empty when it was valid).
    pub violations: Vec<Violation>,
}

/// The lifecycle states a maintainer can move an advisory to on github.com.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdvisoryState {
    /// A private report awaiting a maintainer.
    Triage,
    /// A draft.
    Draft,
    /// Published to the advisory database.
    Published,
    /// Closed without publishing.
    Closed,
    /// Withdrawn after publishing.
    Withdrawn,
}

impl AdvisoryState {
    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdvisoryState::Triage => "triage",
            AdvisoryState::Draft => "draft",
            AdvisoryState::Published => "published",
            AdvisoryState::Closed => "closed",
            AdvisoryState::Withdrawn => "withdrawn",
        }
    }
}

/// Errors from driving the fake.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// A configured repository is not `owner/name`.
    #[error("repository {0:?} is not owner/name")]
    BadRepository(String),
    /// The listen socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No such repository.
    #[error("the fake has no repository {0}")]
    UnknownRepository(String),
    /// No such advisory.
    #[error("{repository} has no advisory {ghsa_id}")]
    UnknownAdvisory {
        /// The repository.
        repository: String,
        /// The GHSA ID.
        ghsa_id: String,
    },
}

/// A stored advisory with its insertion sequence number (the stable sort tie-breaker and
/// pagination cursor).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) json: Value,
}

#[derive(Debug)]
pub(crate) struct Repo {
    pub(crate) full_name: String,
    pub(crate) advisories: Vec<Stored>,
}

#[derive(Debug)]
pub(crate) struct RateLimit {
    pub(crate) limit: u32,
    pub(crate) used: u32,
    pub(crate) reset: i64,
}

#[derive(Debug)]
pub(crate) struct FaultRule {
    pub(crate) when: FaultMatch,
    pub(crate) fault: Fault,
}

pub(crate) struct Inner {
    /// Keyed by lower-cased `owner/name`: GitHub matches names case-insensitively.
    pub(crate) repos: BTreeMap<String, Repo>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) faults: VecDeque<FaultRule>,
    pub(crate) rate: RateLimit,
    pub(crate) rng: StdRng,
    pub(crate) next_seq: u64,
    pub(crate) next_request: u64,
}

pub(crate) struct Shared {
    pub(crate) token: String,
    pub(crate) login: String,
    pub(crate) base_url: String,
    pub(crate) inner: Mutex<Inner>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Entry point: `FakeGitHub::start(options).await`.
pub struct FakeGitHub;

impl FakeGitHub {
    /// Starts a fake on `127.0.0.1` with a free port.
    pub async fn start(options: FakeOptions) -> Result<FakeHandle, FakeError> {
        FakeGitHub::start_on(options, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a fake on `addr`. Each request is logged through `tracing` at `info`.
    pub async fn start_on(options: FakeOptions, addr: SocketAddr) -> Result<FakeHandle, FakeError> {
        let mut repos = BTreeMap::new();
        for full_name in &options.repos {
            let mut parts = full_name.split('/');
            let valid = matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty()
            );
            if !valid {
                return Err(FakeError::BadRepository(full_name.clone()));
            }
            repos.insert(
                full_name.to_ascii_lowercase(),
                Repo {
                    full_name: full_name.clone(),
                    advisories: Vec::new(),
                },
            );
        }
        // Compile the schemas before the first request, so that request is not slowed
        // by it (a test with a short client timeout would see a stall that is ours).
        let _ = tokio::task::spawn_blocking(spec::spec).await;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| FakeError::Bind { addr, source })?;
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let shared = Arc::new(Shared {
            token: options.token,
            login: options.login,
            base_url: format!("http://{local}"),
            inner: Mutex::new(Inner {
                repos,
                requests: Vec::new(),
                faults: VecDeque::new(),
                rate: RateLimit {
                    limit: options.rate_limit,
                    used: 0,
                    reset: chrono::Utc::now().timestamp() + 3600,
                },
                rng,
                next_seq: 1,
                next_request: 1,
            }),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), stop_rx));
        Ok(FakeHandle {
            shared,
            addr: local,
            stop: stop_tx,
            task: Some(task),
        })
    }
}

/// A running fake; stops serving when dropped (or on [`FakeHandle::shutdown`]).
pub struct FakeHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeHandle {
    /// Base URL, e.g. `http://127.0.0.1:41234` (use as octocrab's `base_uri`).
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The advisories of `owner/name`, oldest first; empty for unknown repositories.
    pub fn advisories(&self, repo: &str) -> Vec<Value> {
        let inner = self.shared.lock();
        inner
            .repos
            .get(&repo.to_ascii_lowercase())
            .map(|r| r.advisories.iter().map(|a| a.json.clone()).collect())
            .unwrap_or_default()
    }

    /// Every request so far, in arrival order (`/_fake/` requests are not recorded).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Makes the next API request misbehave.
    pub fn push_fault(&self, fault: Fault) {
        self.push_fault_when(FaultMatch::any(), fault);
    }

    /// Makes the next API request matching `when` misbehave. Faults are consumed in
    /// the order pushed; each applies once.
    pub fn push_fault_when(&self, when: FaultMatch, fault: Fault) {
        self.shared
            .lock()
            .faults
            .push_back(FaultRule { when, fault });
    }

    /// Faults pushed but not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    /// Does what a maintainer does on github.com: moves an advisory to `state`, setting
    /// `published_at`/`closed_at`/`withdrawn_at` (and `publisher` on publishing).
    pub fn set_advisory_state(
        &self,
        repo: &str,
        ghsa_id: &str,
        state: AdvisoryState,
    ) -> Result<(), FakeError> {
        let login = self.shared.login.clone();
        let base = self.shared.base_url.clone();
        self.with_advisory(repo, ghsa_id, |advisory| {
            server::set_state(advisory, state, &base, &login, chrono::Utc::now());
        })
    }

    /// Does what GitHub does when it assigns a CVE: sets `cve_id` and `identifiers`.
    pub fn assign_cve(&self, repo: &str, ghsa_id: &str, cve_id: &str) -> Result<(), FakeError> {
        self.with_advisory(repo, ghsa_id, |advisory| {
            advisory["cve_id"] = Value::String(cve_id.to_owned());
            advisory::refresh_identifiers(advisory);
            advisory["updated_at"] = Value::String(advisory::timestamp(chrono::Utc::now()));
        })
    }

    /// Stores an advisory directly (as if created earlier, e.g. by a maintainer), built
    /// from a create-advisory body; returns its GHSA ID. The request is not recorded.
    pub fn insert_advisory(&self, repo: &str, body: &Value) -> Result<String, FakeError> {
        server::insert(&self.shared, repo, body, advisory::Origin::Maintainer)
    }

    fn with_advisory(
        &self,
        repo: &str,
        ghsa_id: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<(), FakeError> {
        let mut inner = self.shared.lock();
        let repo_entry = inner
            .repos
            .get_mut(&repo.to_ascii_lowercase())
            .ok_or_else(|| FakeError::UnknownRepository(repo.to_owned()))?;
        let stored = repo_entry
            .advisories
            .iter_mut()
            .find(|a| a.json["ghsa_id"].as_str() == Some(ghsa_id))
            .ok_or_else(|| FakeError::UnknownAdvisory {
                repository: repo.to_owned(),
                ghsa_id: ghsa_id.to_owned(),
            })?;
        change(&mut stored.json);
        Ok(())
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
