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
//! | `GET /app`, `/app/installations`, `/{orgs,users}/{x}/installation`, `/repos/{o}/{r}/installation` | the App and its installations (App JWT) |
//! | `POST /app/installations/{id}/access_tokens` | 201 installation token (App JWT) |
//! | `GET /users/{username}` | 200 known user or 404 |
//! | `POST/GET /repos/{o}/{r}/git/{blobs,trees,commits,refs}`, `git/ref/{ref}`, `git/matching-refs/{ref}`, `contents/{path}` | the Git Data API with git's object SHAs |
//! | `GET /_fake/advisories` | every stored advisory, `{"owner/name": [..]}`: for humans, not GitHub |
//! | `/_fake/tokens`, `/_fake/installations/{id}/..`, `/_fake/link-base`, `/_fake/users`, `/_fake/git/..` | control endpoints (see the README) |
//!
//! Bodies that fail the request schema get 422 `{"message":"Validation Failed","errors":[..]}`;
//! unparseable JSON gets 400; an unknown repository or advisory 404 (also a repository of
//! an owner the token does not cover); a missing, wrong, revoked or expired token 401
//! `Bad credentials`; a token without the permission 403. Every API response carries GitHub's rate-limit headers
//! (`x-ratelimit-limit`, `-remaining`, `-used`, `-reset`, `-resource: core`) and an
//! `x-github-request-id`. When the budget is used up, requests get 403 until the reset.
//!
//! Tests steer it with [`FakeHandle::push_fault`] (next request answers with a status,
//! stalls, or loses its connection) and [`FakeHandle::set_advisory_state`] (what a
//! maintainer does on github.com).

#![warn(missing_docs)]

pub mod advisory;
pub mod auth;
mod control;
pub mod git;
mod server;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

pub use auth::{
    Access, AccountType, AppSpec, InstallationSpec, Permissions, TokenSpec, app_jwt, keys, sign_jwt,
};
pub use spec::{Operation, Spec, Violation, spec};

/// How to start a fake.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// A token with access to every repository and every permission (as `Bearer` or
    /// `token` in `Authorization`); an empty string disables it.
    pub token: String,
    /// Repositories that exist, `owner/name`; others answer 404.
    pub repos: Vec<String>,
    /// The login of the token's user (the `author` of advisories it creates).
    pub login: String,
    /// The rate-limit budget per hour (`x-ratelimit-limit`).
    pub rate_limit: u32,
    /// Seed for GHSA IDs, so a test can reproduce a run; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// More plain tokens, each scoped to an owner with its own permissions.
    pub tokens: Vec<TokenSpec>,
    /// GitHub Apps whose RS256 JWTs the fake accepts.
    pub apps: Vec<AppSpec>,
    /// Installations of those Apps.
    pub installations: Vec<InstallationSpec>,
    /// Lifetime of new installation access tokens (GitHub: one hour).
    pub installation_token_ttl: Duration,
    /// Logins `GET /users/{username}` knows besides [`FakeOptions::login`], the App bots
    /// and installation accounts; others answer 404.
    pub users: Vec<String>,
    /// Largest blob `POST git/blobs` accepts, in decoded bytes (larger: 422).
    pub max_blob_bytes: usize,
    /// The branch `GET contents/{path}` reads when no `ref` is given.
    pub default_branch: String,
    /// How many requests [`FakeHandle::requests`] keeps (the oldest go first).
    pub request_log_limit: usize,
    /// Of those, how many of the newest keep their request and response bodies; older
    /// entries have `body` and `response` `None`. Bodies over 1 MiB are never kept.
    pub request_log_bodies: usize,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            token: "fake-token".into(),
            repos: Vec::new(),
            login: "advisory-bridge-bot".into(),
            rate_limit: 5000,
            seed: None,
            tokens: Vec::new(),
            apps: Vec::new(),
            installations: Vec::new(),
            installation_token_ttl: Duration::from_secs(3600),
            users: Vec::new(),
            max_blob_bytes: 40 * 1024 * 1024,
            default_branch: "main".into(),
            request_log_limit: 10_000,
            request_log_bodies: 1_000,
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
    /// An App's key is not an RSA key in PEM.
    #[error("the key of App {0} is not an RSA public or private key in PEM")]
    BadAppKey(u64),
    /// An installation names an App that is not registered.
    #[error("installation {installation} names App {app}, which is not registered")]
    UnknownApp {
        /// The installation.
        installation: u64,
        /// The App it names.
        app: u64,
    },
    /// No such token or installation.
    #[error("the fake has no credential {0}")]
    UnknownCredential(String),
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
/// pagination cursor). The JSON is shared with the responses in the request log until it
/// changes (copy on write), so the log does not duplicate it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) json: Arc<Value>,
}

/// The fields the list sorts by, in the order of [`Repo::sorted`].
pub(crate) const SORT_FIELDS: [&str; 3] = ["created_at", "updated_at", "published_at"];

/// A sort key: the field's value (null first) and the sequence number.
pub(crate) type SortKey = (Option<String>, u64);

#[derive(Debug)]
pub(crate) struct Repo {
    pub(crate) full_name: String,
    /// Lower-cased owner.
    pub(crate) owner: String,
    /// Lower-cased name.
    pub(crate) name: String,
    /// In insertion (sequence) order.
    pub(crate) advisories: Vec<Stored>,
    pub(crate) by_seq: HashMap<u64, usize>,
    /// Lower-cased GHSA ID to index.
    pub(crate) by_ghsa: HashMap<String, usize>,
    /// One ordered index per [`SORT_FIELDS`] entry, kept current on every change, so a
    /// page costs O(log N + page) instead of a sort of everything.
    pub(crate) sorted: [BTreeSet<SortKey>; 3],
    pub(crate) git: git::Store,
}

impl Repo {
    fn new(full_name: &str) -> Repo {
        let (owner, name) = full_name.split_once('/').unwrap_or((full_name, ""));
        Repo {
            full_name: full_name.to_owned(),
            owner: owner.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
            advisories: Vec::new(),
            by_seq: HashMap::new(),
            by_ghsa: HashMap::new(),
            sorted: Default::default(),
            git: git::Store::default(),
        }
    }

    pub(crate) fn key(json: &Value, field: usize, seq: u64) -> SortKey {
        (json[SORT_FIELDS[field]].as_str().map(str::to_owned), seq)
    }

    pub(crate) fn push(&mut self, seq: u64, json: Value) -> Arc<Value> {
        let index = self.advisories.len();
        for (field, set) in self.sorted.iter_mut().enumerate() {
            set.insert(Repo::key(&json, field, seq));
        }
        if let Some(id) = json["ghsa_id"].as_str() {
            self.by_ghsa.insert(id.to_ascii_lowercase(), index);
        }
        self.by_seq.insert(seq, index);
        let json = Arc::new(json);
        self.advisories.push(Stored {
            seq,
            json: Arc::clone(&json),
        });
        json
    }

    pub(crate) fn index_of(&self, ghsa_id: &str) -> Option<usize> {
        self.by_ghsa.get(&ghsa_id.to_ascii_lowercase()).copied()
    }

    /// Changes one advisory and keeps the sort indexes current.
    pub(crate) fn modify<R>(&mut self, index: usize, change: impl FnOnce(&mut Value) -> R) -> R {
        let stored = &mut self.advisories[index];
        let seq = stored.seq;
        for (field, set) in self.sorted.iter_mut().enumerate() {
            set.remove(&Repo::key(&stored.json, field, seq));
        }
        let result = change(Arc::make_mut(&mut stored.json));
        for (field, set) in self.sorted.iter_mut().enumerate() {
            set.insert(Repo::key(&stored.json, field, seq));
        }
        result
    }
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

/// A response body as the fake keeps it: advisories are shared, not copied.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Json(Value),
    Shared(Arc<Value>),
    List(Vec<Arc<Value>>),
}

impl Body {
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Body::Json(v) => v.clone(),
            Body::Shared(v) => (**v).clone(),
            Body::List(items) => Value::Array(items.iter().map(|v| (**v).clone()).collect()),
        }
    }

    pub(crate) fn serialize(&self) -> String {
        match self {
            Body::Json(v) => v.to_string(),
            Body::Shared(v) => v.to_string(),
            Body::List(items) => {
                let mut out = String::from("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&item.to_string());
                }
                out.push(']');
                out
            }
        }
    }
}

/// One entry of the request log, compact: the body as received (parsed only when a test
/// asks), the response shared with the store.
#[derive(Debug, Clone)]
pub(crate) struct LogEntry {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) body: Option<axum::body::Bytes>,
    pub(crate) operation: Option<Operation>,
    pub(crate) status: Option<u16>,
    pub(crate) response: Option<Body>,
    pub(crate) violations: Vec<Violation>,
}

/// Request or response bodies larger than this are not kept in the log.
pub(crate) const MAX_LOGGED_BODY: usize = 1024 * 1024;

impl LogEntry {
    fn recorded(&self) -> RecordedRequest {
        RecordedRequest {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            body: self.body.as_ref().map(|raw| {
                serde_json::from_slice(raw)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
            }),
            operation: self.operation,
            status: self.status,
            response: self.response.as_ref().map(Body::to_value),
            violations: self.violations.clone(),
        }
    }
}

/// What kind of credential a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialKind {
    /// [`FakeOptions::token`]: everything.
    Master,
    /// A [`TokenSpec`].
    Personal,
    /// An installation access token of this installation.
    Installation(u64),
}

/// A token the fake accepts and what it may reach.
#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub(crate) kind: CredentialKind,
    /// Lower-cased owner; `None`: every owner.
    pub(crate) owner: Option<String>,
    /// Lower-cased repository names within the owner; `None`: all.
    pub(crate) repositories: Option<HashSet<String>>,
    /// `None`: every permission.
    pub(crate) permissions: Option<Permissions>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) login: String,
}

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) spec: AppSpec,
    pub(crate) key: rsa::RsaPublicKey,
    pub(crate) created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub(crate) struct InstallationState {
    pub(crate) spec: InstallationSpec,
    pub(crate) revoked: bool,
    pub(crate) created_at: DateTime<Utc>,
}

pub(crate) struct Inner {
    /// Keyed by lower-cased `owner/name`: GitHub matches names case-insensitively.
    pub(crate) repos: BTreeMap<String, Repo>,
    pub(crate) requests: VecDeque<LogEntry>,
    pub(crate) request_total: u64,
    pub(crate) log_limit: usize,
    pub(crate) log_bodies: usize,
    pub(crate) faults: VecDeque<FaultRule>,
    pub(crate) rate: RateLimit,
    pub(crate) rng: StdRng,
    pub(crate) next_seq: u64,
    pub(crate) next_request: u64,
    /// Every GHSA ID in use (upper case as issued).
    pub(crate) ghsa_ids: HashSet<String>,
    pub(crate) credentials: HashMap<String, Credential>,
    pub(crate) revoked: HashSet<String>,
    pub(crate) apps: BTreeMap<u64, AppState>,
    pub(crate) installations: BTreeMap<u64, InstallationState>,
    pub(crate) token_ttl: Duration,
    /// Lower-cased login to login.
    pub(crate) users: BTreeMap<String, String>,
    /// Replaces the scheme and host of `Link` URLs (a gateway in front of the API).
    pub(crate) link_base: Option<String>,
}

impl Inner {
    pub(crate) fn log(&mut self, entry: LogEntry) {
        self.request_total += 1;
        self.requests.push_back(entry);
        while self.requests.len() > self.log_limit.max(1) {
            self.requests.pop_front();
        }
        let len = self.requests.len();
        if len > self.log_bodies
            && let Some(old) = self.requests.get_mut(len - self.log_bodies - 1)
        {
            old.body = None;
            old.response = None;
        }
    }

    pub(crate) fn add_user(&mut self, login: &str) {
        self.users
            .entry(login.to_ascii_lowercase())
            .or_insert_with(|| login.to_owned());
    }
}

pub(crate) struct Shared {
    pub(crate) login: String,
    pub(crate) base_url: String,
    pub(crate) max_blob_bytes: usize,
    pub(crate) default_branch: String,
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

fn check_full_name(full_name: &str) -> Result<(), FakeError> {
    let mut parts = full_name.split('/');
    let valid = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty()
    );
    if valid {
        Ok(())
    } else {
        Err(FakeError::BadRepository(full_name.to_owned()))
    }
}

pub(crate) fn personal_credential(spec: &TokenSpec, default_login: &str) -> Credential {
    Credential {
        kind: CredentialKind::Personal,
        owner: spec.owner.as_deref().map(str::to_ascii_lowercase),
        repositories: None,
        permissions: Some(spec.permissions.clone()),
        expires_at: spec.expires_at,
        login: spec
            .login
            .clone()
            .unwrap_or_else(|| default_login.to_owned()),
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
            check_full_name(full_name)?;
            repos.insert(full_name.to_ascii_lowercase(), Repo::new(full_name));
        }
        let now = Utc::now();
        let mut apps = BTreeMap::new();
        for app in &options.apps {
            let key = auth::public_key(&app.key_pem).ok_or(FakeError::BadAppKey(app.id))?;
            apps.insert(
                app.id,
                AppState {
                    spec: app.clone(),
                    key,
                    created_at: now,
                },
            );
        }
        let mut installations = BTreeMap::new();
        for installation in &options.installations {
            if !apps.contains_key(&installation.app_id) {
                return Err(FakeError::UnknownApp {
                    installation: installation.id,
                    app: installation.app_id,
                });
            }
            installations.insert(
                installation.id,
                InstallationState {
                    spec: installation.clone(),
                    revoked: false,
                    created_at: now,
                },
            );
        }
        let mut credentials = HashMap::new();
        if !options.token.is_empty() {
            credentials.insert(
                options.token.clone(),
                Credential {
                    kind: CredentialKind::Master,
                    owner: None,
                    repositories: None,
                    permissions: None,
                    expires_at: None,
                    login: options.login.clone(),
                },
            );
        }
        for spec in &options.tokens {
            credentials.insert(
                spec.token.clone(),
                personal_credential(spec, &options.login),
            );
        }
        let mut users = BTreeMap::new();
        let known = std::iter::once(options.login.clone())
            .chain(options.users.iter().cloned())
            .chain(options.apps.iter().map(|a| format!("{}[bot]", a.slug)))
            .chain(options.apps.iter().map(|a| a.owner.clone()))
            .chain(options.installations.iter().map(|i| i.account.clone()))
            .chain(options.tokens.iter().filter_map(|t| t.login.clone()));
        for login in known {
            users.entry(login.to_ascii_lowercase()).or_insert(login);
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
            login: options.login,
            base_url: format!("http://{local}"),
            max_blob_bytes: options.max_blob_bytes,
            default_branch: options.default_branch,
            inner: Mutex::new(Inner {
                repos,
                requests: VecDeque::new(),
                request_total: 0,
                log_limit: options.request_log_limit,
                log_bodies: options.request_log_bodies,
                faults: VecDeque::new(),
                rate: RateLimit {
                    limit: options.rate_limit,
                    used: 0,
                    reset: now.timestamp() + 3600,
                },
                rng,
                next_seq: 1,
                next_request: 1,
                ghsa_ids: HashSet::new(),
                credentials,
                revoked: HashSet::new(),
                apps,
                installations,
                token_ttl: options.installation_token_ttl,
                users,
                link_base: None,
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
            .map(|r| r.advisories.iter().map(|a| (*a.json).clone()).collect())
            .unwrap_or_default()
    }

    /// How many advisories `owner/name` holds (cheaper than `advisories().len()`).
    pub fn advisory_count(&self, repo: &str) -> usize {
        self.shared
            .lock()
            .repos
            .get(&repo.to_ascii_lowercase())
            .map_or(0, |r| r.advisories.len())
    }

    /// The requests kept in the log, in arrival order (`/_fake/` requests are not
    /// recorded): the newest [`FakeOptions::request_log_limit`], of which the newest
    /// [`FakeOptions::request_log_bodies`] with bodies.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .map(LogEntry::recorded)
            .collect()
    }

    /// How many API requests arrived in all, including those the log has let go.
    pub fn request_count(&self) -> u64 {
        self.shared.lock().request_total
    }

    /// Empties the request log (the count goes on).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
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

    /// Moves an advisory's `created_at` (and `updated_at`) back to `at`, as if it had
    /// been made then: for repositories with a history.
    pub fn backdate_advisory(
        &self,
        repo: &str,
        ghsa_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), FakeError> {
        let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.with_advisory(repo, ghsa_id, |advisory| {
            advisory["created_at"] = Value::String(stamp.clone());
            advisory["updated_at"] = Value::String(stamp);
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
        let index = repo_entry
            .index_of(ghsa_id)
            .ok_or_else(|| FakeError::UnknownAdvisory {
                repository: repo.to_owned(),
                ghsa_id: ghsa_id.to_owned(),
            })?;
        repo_entry.modify(index, change);
        Ok(())
    }

    /// Accepts one more plain token from now on (replacing one with the same secret).
    pub fn add_token(&self, spec: TokenSpec) {
        let credential = personal_credential(&spec, &self.shared.login);
        let mut inner = self.shared.lock();
        inner.revoked.remove(&spec.token);
        inner.credentials.insert(spec.token, credential);
    }

    /// Makes a token (any kind: [`FakeOptions::token`], a [`TokenSpec`], an
    /// installation token) answer 401 `Bad credentials` until [`FakeHandle::restore_token`].
    pub fn revoke_token(&self, token: &str) {
        self.shared.lock().revoked.insert(token.to_owned());
    }

    /// Undoes [`FakeHandle::revoke_token`].
    pub fn restore_token(&self, token: &str) {
        self.shared.lock().revoked.remove(token);
    }

    /// Sets (or with `None` lifts) a token's expiry; from then on it answers 401.
    pub fn set_token_expiry(
        &self,
        token: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), FakeError> {
        let mut inner = self.shared.lock();
        let credential = inner
            .credentials
            .get_mut(token)
            .ok_or_else(|| FakeError::UnknownCredential("a token".into()))?;
        credential.expires_at = expires_at;
        Ok(())
    }

    /// The lifetime of installation tokens issued from now on.
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.shared.lock().token_ttl = ttl;
    }

    /// The installation tokens issued so far for `installation_id`.
    pub fn installation_tokens(&self, installation_id: u64) -> Vec<String> {
        let inner = self.shared.lock();
        let mut tokens: Vec<String> = inner
            .credentials
            .iter()
            .filter(|(_, c)| c.kind == CredentialKind::Installation(installation_id))
            .map(|(t, _)| t.clone())
            .collect();
        tokens.sort();
        tokens
    }

    /// Uninstalls an App from its account for now: its tokens answer 401, lookups of it
    /// and new tokens for it 404, until [`FakeHandle::restore_installation`].
    pub fn revoke_installation(&self, installation_id: u64) -> Result<(), FakeError> {
        self.set_installation_revoked(installation_id, true)
    }

    /// Undoes [`FakeHandle::revoke_installation`] (its unexpired tokens work again).
    pub fn restore_installation(&self, installation_id: u64) -> Result<(), FakeError> {
        self.set_installation_revoked(installation_id, false)
    }

    fn set_installation_revoked(&self, id: u64, revoked: bool) -> Result<(), FakeError> {
        let mut inner = self.shared.lock();
        let installation = inner
            .installations
            .get_mut(&id)
            .ok_or_else(|| FakeError::UnknownCredential(format!("installation {id}")))?;
        installation.revoked = revoked;
        Ok(())
    }

    /// Makes `Link` headers name another scheme and host (e.g. `https://gateway.test:8443`),
    /// as a proxy or API gateway in front of GitHub does; `None` restores the fake's own.
    pub fn set_link_base(&self, base: Option<&str>) {
        self.shared.lock().link_base = base.map(|b| b.trim_end_matches('/').to_owned());
    }

    /// Makes `GET /users/{login}` answer 200 for this login.
    pub fn add_user(&self, login: &str) {
        self.shared.lock().add_user(login);
    }

    /// The refs of a repository's Git store (`refs/heads/main` to commit SHA).
    pub fn git_refs(&self, repo: &str) -> BTreeMap<String, String> {
        self.shared
            .lock()
            .repos
            .get(&repo.to_ascii_lowercase())
            .map(|r| r.git.refs.clone())
            .unwrap_or_default()
    }

    /// Every file on a ref (branch, `heads/x`, tag or commit SHA), by path; `None` when
    /// the repository or ref does not exist.
    pub fn git_files(&self, repo: &str, reference: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let inner = self.shared.lock();
        let repo = inner.repos.get(&repo.to_ascii_lowercase())?;
        let commit = repo.git.resolve(reference)?;
        Some(
            repo.git
                .files(&commit)
                .into_iter()
                .map(|(path, bytes)| (path, bytes.to_vec()))
                .collect(),
        )
    }

    /// One file's content on a ref.
    pub fn git_file(&self, repo: &str, reference: &str, path: &str) -> Option<Vec<u8>> {
        self.git_files(repo, reference)?.remove(path)
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
