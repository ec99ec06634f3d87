//! The only code that talks to GitHub: create draft advisories and find ones we made,
//! through octocrab's typed repository-advisory calls.
//!
//! Every call has an overall deadline ([`GitHubSettings::timeout`]) on top of octocrab's
//! connect/read timeouts, so a stalled GitHub cannot hang the daemon. Failures are sorted
//! into [`FailureKind`] here and nowhere else:
//!
//! | failure | kind | `retry_after` |
//! | --- | --- | --- |
//! | network error, timeout, 5xx, 429 | transient | `Retry-After`, else the rate-limit reset when `x-ratelimit-remaining: 0` |
//! | 403 with `Retry-After`, `x-ratelimit-remaining: 0` or a "rate limit" message | transient | as above |
//! | 429 or rate-limit 403 naming no time | transient | 60 s (GitHub's advice) |
//! | 422 "the endpoint has been spammed" (abuse detection) | transient | as above, else 60 s |
//! | 401, 403 without a rate limit, 404 for a repository (list, create) | misconfigured: our credentials; work for that owner pauses | - |
//! | 404 for one advisory, a validation 422, other 4xx, unreadable answers | permanent | - |
//!
//! octocrab is built without its `retry` feature on purpose: a retried `POST` whose first
//! attempt reached GitHub would create a second advisory. Retrying is the daemon's job,
//! after it has looked for the report's marker ([`GitHub::find_by_marker`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octocrab::Octocrab;
use octocrab::models::security_advisories::{
    CreateCredit, CreatePackage, CreateRepositoryAdvisory, CreateVulnerability,
    ReportVulnerability, RepositoryAdvisory, UpdateRepositoryAdvisory,
};

use crate::config::Secret;
use crate::failure::{Classify, FailureKind};
use crate::mail::ReportId;
use crate::render::{AdvisoryDraft, AdvisoryRef, MarkerKey, MarkerQuery};

/// Advisories per list page: GitHub's maximum, so a scan costs as few requests as possible.
const PAGE_SIZE: u8 = 100;

/// A failed GitHub call, with what the retry logic needs.
#[derive(Debug, thiserror::Error)]
#[error("GitHub {operation} for {repository}: {message}")]
pub struct GitHubError {
    /// What we were doing, e.g. `create advisory`.
    pub operation: &'static str,
    /// `owner/name`.
    pub repository: String,
    /// What GitHub (or the network) said; never contains the token.
    pub message: String,
    /// Retry or quarantine; `retry_after` from `Retry-After` or `x-ratelimit-reset`.
    pub kind: FailureKind,
}

impl Classify for GitHubError {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

/// Settings for [`GitHub::new`].
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    /// REST base URL, e.g. `https://api.github.com`.
    pub api_url: String,
    /// The token for owners without their own (`github.token_file`).
    pub token: Option<Secret>,
    /// A token per owner (lower-cased), `[[github.credentials]]`.
    pub owner_tokens: Vec<(String, Secret)>,
    /// GitHub App authentication: the App's id and private key (PEM).
    pub app: Option<(u64, Secret)>,
    /// Timeout for one request.
    pub timeout: Duration,
    /// Least time between two content-creating requests.
    pub min_mutation_interval: Duration,
}

/// A GitHub client for the repository advisory endpoints.
#[derive(Clone)]
pub struct GitHub {
    /// The client for owners without credentials of their own.
    default: Option<std::sync::Arc<Octocrab>>,
    /// One client per owner with its own credentials (lower-cased owner).
    owners: std::sync::Arc<Installations>,
    /// The App's own client (authenticated by JWT), when App authentication is set.
    app: Option<std::sync::Arc<Octocrab>>,
    /// Per owner, the client of the App's installation there: one each, shared by every
    /// clone of this client, so their tokens (and refreshes) are shared too.
    installations: std::sync::Arc<tokio::sync::Mutex<Installations>>,
    /// Where every page must come from (scheme, host, port of `api_url`).
    origin: (String, String, Option<u16>),
    timeout: Duration,
    pacer: Pacer,
}

/// Spaces content-creating requests (create, update, report) at least `interval` apart,
/// as GitHub asks of integrations, so that draining a backlog does not trip the
/// secondary rate limit. Shared by every clone of the client.
#[derive(Clone)]
struct Pacer {
    interval: Duration,
    last: std::sync::Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Pacer {
    fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            last: Default::default(),
        }
    }

    /// How long a mutating request sent now would wait; `None` for no wait. A turn
    /// being waited for right now counts as a full interval.
    fn wait(&self) -> Option<Duration> {
        if self.interval.is_zero() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let next = match self.last.try_lock() {
            Ok(last) => (*last)? + self.interval,
            Err(_) => now + self.interval,
        };
        (next > now).then(|| next - now)
    }

    /// Waits until the next mutating request may go out, and books it.
    async fn wait_turn(&self) {
        let mut last = self.last.lock().await;
        if let Some(at) = *last {
            tokio::time::sleep_until(at + self.interval).await;
        }
        *last = Some(tokio::time::Instant::now());
    }
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// How long a content-creating request sent now would wait for its turn
    /// (`github.min_mutation_interval_ms`); `None` when it would go at once.
    pub fn pacing_wait(&self) -> Option<Duration> {
        self.pacer.wait()
    }

    /// Builds a client; does not contact GitHub.
    pub fn new(settings: &GitHubSettings) -> Result<GitHub, GitHubError> {
        let invalid = |message: String| GitHubError {
            operation: "configure client",
            repository: settings.api_url.clone(),
            message,
            kind: FailureKind::Permanent,
        };
        let build = |token: &Secret| {
            Octocrab::builder()
                .base_uri(settings.api_url.as_str())
                .map_err(|e| {
                    invalid(format!(
                        "github.api_url {:?} is not a usable URL ({e}); set it to e.g. https://api.github.com",
                        settings.api_url
                    ))
                })?
                .personal_token(token.expose().to_owned())
                .set_connect_timeout(Some(settings.timeout))
                .set_read_timeout(Some(settings.timeout))
                .set_write_timeout(Some(settings.timeout))
                .build()
                .map_err(|e| invalid(format!("cannot build the HTTP client: {}", describe(&e))))
        };
        let default = settings
            .token
            .as_ref()
            .map(|t| build(t).map(std::sync::Arc::new))
            .transpose()?;
        let app = match &settings.app {
            None => None,
            Some((id, pem)) => {
                let key = octocrab::EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|e| {
                    invalid(format!(
                        "github.private_key_file is not a usable RSA private key ({e}); download a new one from the App's settings"
                    ))
                })?;
                let crab = Octocrab::builder()
                    .base_uri(settings.api_url.as_str())
                    .map_err(|e| invalid(format!("github.api_url {:?}: {e}", settings.api_url)))?
                    .app((*id).into(), key)
                    .set_connect_timeout(Some(settings.timeout))
                    .set_read_timeout(Some(settings.timeout))
                    .set_write_timeout(Some(settings.timeout))
                    .build()
                    .map_err(|e| {
                        invalid(format!("cannot build the HTTP client: {}", describe(&e)))
                    })?;
                Some(std::sync::Arc::new(crab))
            }
        };
        let owners = settings
            .owner_tokens
            .iter()
            .map(|(owner, token)| {
                Ok((
                    owner.to_ascii_lowercase(),
                    std::sync::Arc::new(build(token)?),
                ))
            })
            .collect::<Result<_, GitHubError>>()?;
        let url: http::Uri = settings.api_url.parse().map_err(|e| {
            invalid(format!(
                "github.api_url {:?} is not a URL ({e})",
                settings.api_url
            ))
        })?;
        Ok(GitHub {
            default,
            owners: std::sync::Arc::new(owners),
            app,
            installations: Default::default(),
            origin: origin_of(&url),
            timeout: settings.timeout,
            pacer: Pacer::new(settings.min_mutation_interval),
        })
    }

    /// The client whose credentials cover `repository`'s owner: the owner's own token,
    /// else the App's installation on the owner (found on first use, kept), else the
    /// default token.
    async fn client(
        &self,
        operation: &'static str,
        repository: &str,
    ) -> Result<std::sync::Arc<Octocrab>, GitHubError> {
        let owner = repository.split_once('/').map_or(repository, |(o, _)| o);
        let key = owner.to_ascii_lowercase();
        if let Some(c) = self.owners.get(&key) {
            return Ok(c.clone());
        }
        if let Some(app) = &self.app {
            let mut installations = self.installations.lock().await;
            if let Some(c) = installations.get(&key) {
                return Ok(c.clone());
            }
            let found = match self
                .call(operation, repository, app.apps().get_org_installation(owner))
                .await
            {
                // Not an organisation: a user account.
                Err(e) if e.message.starts_with("HTTP 404") => {
                    self.call(operation, repository, app.apps().get_user_installation(owner))
                        .await
                }
                other => other,
            }
            .map_err(|mut e| {
                if e.message.starts_with("HTTP 404") {
                    e.message = format!(
                        "the GitHub App (github.app_id) is not installed on {owner}; install it there with Repository security advisories: read and write"
                    );
                    e.kind = FailureKind::Misconfigured;
                }
                e
            })?;
            let crab = app.installation(found.id).map_err(|e| GitHubError {
                operation,
                repository: repository.to_owned(),
                message: format!(
                    "cannot use the App's installation on {owner}: {}",
                    describe(&e)
                ),
                kind: FailureKind::Misconfigured,
            })?;
            tracing::info!(
                owner,
                installation = found.id.0,
                "using the GitHub App's installation"
            );
            let crab = std::sync::Arc::new(crab);
            installations.insert(key, crab.clone());
            return Ok(crab);
        }
        self.default
            .clone()
            .ok_or_else(|| GitHubError {
                operation,
                repository: repository.to_owned(),
                message: format!(
                    "no credentials for {owner}: add a [[github.credentials]] entry for it or set github.token_file"
                ),
                kind: FailureKind::Misconfigured,
            })
    }

    /// The next page of a listing, but only from the configured API host: a `Link` to
    /// another host (a proxy or gateway rewriting it) would go out without credentials
    /// or leak them, so it is refused with an error that says so.
    async fn next_page(
        &self,
        operation: &'static str,
        repository: &str,
        next: &Option<http::Uri>,
    ) -> Result<Option<octocrab::Page<RepositoryAdvisory>>, GitHubError> {
        let Some(url) = next else {
            return Ok(None);
        };
        let origin = origin_of(url);
        if origin != self.origin {
            return Err(GitHubError {
                operation,
                repository: repository.to_owned(),
                message: format!(
                    "the next page is on {}://{}, not on github.api_url's host {}://{}; a proxy or gateway rewrites GitHub's Link headers: set github.api_url to the host it links to, or make it keep them",
                    origin.0, origin.1, self.origin.0, self.origin.1
                ),
                kind: FailureKind::Misconfigured,
            });
        }
        let octocrab = self.client(operation, repository).await?;
        self.call(
            operation,
            repository,
            octocrab.get_page::<RepositoryAdvisory>(next),
        )
        .await
    }

    /// Looks through the repository's advisories (every state, newest first) for the
    /// first one whose description carries one of the `wanted` markers, and says whose.
    /// With `not_before`, the walk stops at the first advisory created before it (none
    /// older can be the report's): a new report costs one page however many advisories
    /// the repository holds. Without it, every page is read.
    pub async fn find_by_marker(
        &self,
        repository: &str,
        wanted: &[MarkerQuery],
        not_before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<(ReportId, AdvisoryRef)>, GitHubError> {
        const OPERATION: &str = "find advisory by marker";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let repos = crab.repos(owner, name);
        let advisories = repos.security_advisories();
        // No `state` filter: GitHub then lists every state (triage, draft, published,
        // closed, withdrawn), and a maintainer may already have moved ours on.
        let mut page = self
            .call(
                OPERATION,
                repository,
                advisories
                    .list()
                    .sort("created")
                    .direction("desc")
                    .per_page(PAGE_SIZE)
                    .send(),
            )
            .await?;
        loop {
            for a in &page.items {
                if let (Some(bound), Some(created)) = (not_before, a.created_at)
                    && created < bound
                {
                    return Ok(None);
                }
                let Some(description) = a.description.as_deref() else {
                    continue;
                };
                if let Some(q) = wanted.iter().find(|q| q.matches(description, a.created_at)) {
                    return Ok(Some((q.id.clone(), advisory_ref(repository, a))));
                }
            }
            let next = self.next_page(OPERATION, repository, &page.next).await?;
            match next {
                Some(next) => page = next,
                None => return Ok(None),
            }
        }
    }

    /// An advisory's current description (empty when it has none) and state.
    pub async fn description(
        &self,
        repository: &str,
        ghsa_id: &str,
    ) -> Result<AdvisoryText, GitHubError> {
        const OPERATION: &str = "read advisory";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let repos = crab.repos(owner, name);
        let advisory = self
            .call(
                OPERATION,
                repository,
                repos.security_advisories().get(ghsa_id),
            )
            .await?;
        Ok(AdvisoryText {
            description: advisory.description.unwrap_or_default(),
            state: advisory.state,
        })
    }

    /// Replaces an advisory's description (how follow-ups are added: GitHub's REST API
    /// has no comment endpoint for repository advisories).
    pub async fn update_description(
        &self,
        repository: &str,
        ghsa_id: &str,
        description: &str,
    ) -> Result<(), GitHubError> {
        let body = UpdateRepositoryAdvisory {
            description: Some(description.to_owned()),
            ..UpdateRepositoryAdvisory::default()
        };
        self.update(repository, ghsa_id, &body).await
    }

    /// Sends one paced `PATCH` of an advisory.
    async fn update(
        &self,
        repository: &str,
        ghsa_id: &str,
        body: &UpdateRepositoryAdvisory,
    ) -> Result<(), GitHubError> {
        const OPERATION: &str = "update advisory";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let repos = crab.repos(owner, name);
        self.pacer.wait_turn().await;
        self.call(
            OPERATION,
            repository,
            repos.security_advisories().update(ghsa_id, body),
        )
        .await?;
        Ok(())
    }

    /// Adds `login` to the advisory's collaborating users, keeping those already there
    /// (a maintainer may have added others); nothing when it is there already.
    pub async fn add_collaborator(
        &self,
        repository: &str,
        ghsa_id: &str,
        login: &str,
    ) -> Result<(), GitHubError> {
        const OPERATION: &str = "update advisory";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let route = format!("/repos/{owner}/{name}/security-advisories/{ghsa_id}");
        let current: serde_json::Value = self
            .call(
                OPERATION,
                repository,
                crab.get::<serde_json::Value, _, ()>(route, None),
            )
            .await?;
        let mut users: Vec<String> = current["collaborating_users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["login"].as_str().map(str::to_owned))
            .collect();
        if users.iter().any(|u| u.eq_ignore_ascii_case(login)) {
            return Ok(());
        }
        users.push(login.to_owned());
        let body = UpdateRepositoryAdvisory {
            collaborating_users: Some(users),
            ..UpdateRepositoryAdvisory::default()
        };
        self.update(repository, ghsa_id, &body).await
    }

    /// Creates a draft advisory.
    pub async fn create_draft(&self, draft: &AdvisoryDraft) -> Result<AdvisoryRef, GitHubError> {
        const OPERATION: &str = "create advisory";
        let (owner, name) = split_repository(OPERATION, &draft.repository)?;
        let body = create_body(draft);
        self.pacer.wait_turn().await;
        let crab = self.client(OPERATION, &draft.repository).await?;
        let repos = crab.repos(owner, name);
        let created = self
            .call(
                OPERATION,
                &draft.repository,
                repos.security_advisories().create(&body),
            )
            .await?;
        Ok(advisory_ref(&draft.repository, &created))
    }

    /// Files the report as a private vulnerability report (the repository's triage
    /// list; its security managers are notified). The repository must have private
    /// vulnerability reporting enabled.
    pub async fn report_vulnerability(
        &self,
        draft: &AdvisoryDraft,
    ) -> Result<AdvisoryRef, GitHubError> {
        const OPERATION: &str = "create advisory";
        let (owner, name) = split_repository(OPERATION, &draft.repository)?;
        let create = create_body(draft);
        let body = ReportVulnerability {
            summary: create.summary,
            description: create.description,
            vulnerabilities: Some(create.vulnerabilities),
            cvss_vector_string: create.cvss_vector_string,
            cwe_ids: create.cwe_ids,
            ..ReportVulnerability::default()
        };
        self.pacer.wait_turn().await;
        let crab = self.client(OPERATION, &draft.repository).await?;
        let repos = crab.repos(owner, name);
        let created = self
            .call(
                OPERATION,
                &draft.repository,
                repos.security_advisories().report(&body),
            )
            .await?;
        Ok(advisory_ref(&draft.repository, &created))
    }

    /// The repository's advisories updated at or after `since` (all of them when
    /// `None`), newest first: listed sorted by `updated`, page by page, stopping at the
    /// first advisory older than `since`. Each comes with the reports whose markers
    /// (under `marker`) it carries; descriptions are not kept.
    pub async fn updated_since(
        &self,
        repository: &str,
        since: Option<chrono::DateTime<chrono::Utc>>,
        marker: &MarkerKey,
    ) -> Result<Vec<AdvisoryStatus>, GitHubError> {
        const OPERATION: &str = "list advisories";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let repos = crab.repos(owner, name);
        let advisories = repos.security_advisories();
        let mut page = self
            .call(
                OPERATION,
                repository,
                advisories
                    .list()
                    .sort("updated")
                    .direction("desc")
                    .per_page(PAGE_SIZE)
                    .send(),
            )
            .await?;
        let mut found = Vec::new();
        loop {
            for a in &page.items {
                // GitHub's timestamps have whole seconds: a change in the same second as
                // the watermark must still be seen, so only older ones end the scan.
                if let (Some(since), Some(updated)) = (since, a.updated_at)
                    && updated < since
                {
                    return Ok(found);
                }
                found.push(AdvisoryStatus {
                    ghsa_id: a.ghsa_id.clone(),
                    state: a.state.clone(),
                    cve_id: a.cve_id.clone(),
                    html_url: a.html_url.to_string(),
                    updated_at: a.updated_at,
                    reports: a
                        .description
                        .as_deref()
                        .map(|d| marker.claimed(d, a.created_at))
                        .unwrap_or_default(),
                });
            }
            let next = self.next_page(OPERATION, repository, &page.next).await?;
            match next {
                Some(next) => page = next,
                None => return Ok(found),
            }
        }
    }

    /// Checks that the token can read the repository's advisories (for `check`).
    pub async fn check_access(&self, repository: &str) -> Result<(), GitHubError> {
        const OPERATION: &str = "list advisories";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let repos = crab.repos(owner, name);
        self.call(
            OPERATION,
            repository,
            repos.security_advisories().list().per_page(1u8).send(),
        )
        .await?;
        Ok(())
    }

    /// How `owner`'s repositories are reached, for `check`: the token that covers
    /// them, or the App's installation with the `repository_advisories` permission it
    /// was granted (read from the installation's raw permissions: octocrab's typed
    /// model lacks that field). Changes nothing.
    pub async fn describe_owner(&self, owner: &str) -> Result<String, GitHubError> {
        const OPERATION: &str = "look up the App installation";
        let key = owner.to_ascii_lowercase();
        if self.owners.contains_key(&key) {
            return Ok("a token of its own ([[github.credentials]])".to_owned());
        }
        let Some(app) = &self.app else {
            return Ok(match self.default {
                Some(_) => "the token of github.token_file / token_env".to_owned(),
                None => "no credentials".to_owned(),
            });
        };
        let mut found = Err(());
        let mut last = None;
        for route in [
            format!("/orgs/{owner}/installation"),
            format!("/users/{owner}/installation"),
        ] {
            match self
                .call(
                    OPERATION,
                    owner,
                    app.get::<serde_json::Value, _, ()>(route, None),
                )
                .await
            {
                Ok(v) => {
                    found = Ok(v);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let installation = found.map_err(|()| {
            let mut e = last.expect("one attempt was made");
            if e.message.starts_with("HTTP 404") {
                e.message = format!("the GitHub App is not installed on {owner}: install it there");
                e.kind = FailureKind::Misconfigured;
            }
            e
        })?;
        let id = installation["id"].as_u64().unwrap_or(0);
        let access = installation["permissions"]["repository_advisories"]
            .as_str()
            .unwrap_or("none");
        if access != "write" {
            return Err(GitHubError {
                operation: OPERATION,
                repository: owner.to_owned(),
                message: format!(
                    "the App's installation {id} on {owner} has repository_advisories: {access}; grant \"Repository security advisories: read and write\" in the App's permissions and accept it on {owner}"
                ),
                kind: FailureKind::Misconfigured,
            });
        }
        Ok(format!(
            "GitHub App installation {id} (repository_advisories: write)"
        ))
    }

    /// Checks, without creating anything, that the credentials may write the
    /// repository's advisories: an empty create request is refused for its body (422)
    /// only when the permission is there; without it GitHub answers 403 (or 404 when the
    /// repository cannot be seen) before it looks at the body.
    pub async fn check_write(&self, repository: &str) -> Result<(), GitHubError> {
        self.probe_write(
            "create advisory",
            repository,
            "security-advisories",
            "the credentials can read but not write this repository's advisories",
        )
        .await
    }

    /// Checks, without creating anything, that the credentials may write `repository`'s
    /// Git data (Contents: write, for the attachments), the way [`GitHub::check_write`]
    /// does for advisories.
    pub async fn check_contents_write(&self, repository: &str) -> Result<(), GitHubError> {
        self.probe_write(
            "upload attachments",
            repository,
            "git/blobs",
            "the credentials lack Contents: write on this repository",
        )
        .await
    }

    /// POSTs an empty body to `/repos/{repository}/{path}`: GitHub refuses it for its
    /// body (422) only once the credentials may write there, else 403/404 first. A 403
    /// gets `forbidden` added to its message.
    async fn probe_write(
        &self,
        operation: &'static str,
        repository: &str,
        path: &str,
        forbidden: &str,
    ) -> Result<(), GitHubError> {
        let (owner, name) = split_repository(operation, repository)?;
        let crab = self.client(operation, repository).await?;
        let route = format!("/repos/{owner}/{name}/{path}");
        let empty = serde_json::json!({});
        let probe = crab.post::<_, serde_json::Value>(route, Some(&empty));
        match self.call(operation, repository, probe).await {
            Err(e) if e.message.starts_with("HTTP 422") => Ok(()),
            Err(mut e) => {
                if e.message.starts_with("HTTP 403") {
                    e.message = format!("{}; {forbidden}", e.message);
                }
                Err(e)
            }
            Ok(_) => Err(GitHubError {
                operation,
                repository: repository.to_owned(),
                message: format!(
                    "GitHub accepted an empty request to {path}; please report this: check the repository by hand"
                ),
                kind: FailureKind::Permanent,
            }),
        }
    }

    /// The account type of `login` (`User`, `Organization`, `Bot`), `None` when GitHub
    /// has no such account; asked with `repository`'s credentials.
    pub async fn account_type(
        &self,
        repository: &str,
        login: &str,
    ) -> Result<Option<String>, GitHubError> {
        const OPERATION: &str = "look up user";
        self.pacer.wait_turn().await;
        let crab = self.client(OPERATION, repository).await?;
        let users = crab.users(login);
        let lookup = async {
            match users.profile().await {
                Ok(profile) => Ok(Some(profile.r#type)),
                // An unknown login is an answer, not a misconfiguration.
                Err(octocrab::Error::GitHub { source, .. })
                    if source.status_code.as_u16() == 404 =>
                {
                    Ok(None)
                }
                Err(error) => Err(error),
            }
        };
        self.call(OPERATION, repository, lookup).await
    }

    /// Commits `files` to `repository` as the root commit of branch `branch`, unless
    /// that branch exists: the branch is the record, so a crash anywhere before it is
    /// created leaves only unreferenced objects (blobs and trees are content-addressed;
    /// re-posting them gives the same SHAs), and a retry or a second instance that finds
    /// the branch, or loses the race to create it, creates nothing. Returns whether this
    /// call created it.
    pub async fn upload_attachments(
        &self,
        repository: &str,
        branch: &str,
        message: &str,
        files: &[(&str, &[u8])],
    ) -> Result<bool, GitHubError> {
        use base64::Engine;
        use octocrab::models::git::CreateTreeEntry;
        use octocrab::params::repos::Reference;
        const OPERATION: &str = "upload attachments";
        let (owner, name) = split_repository(OPERATION, repository)?;
        let crab = self.client(OPERATION, repository).await?;
        let git = crab.git(owner, name);
        let reference = Reference::Branch(branch.to_owned());
        let existing = async {
            match git.get_ref(&reference).await {
                Ok(_) => Ok(true),
                Err(octocrab::Error::GitHub { source, .. })
                    if source.status_code.as_u16() == 404 =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        if self.call(OPERATION, repository, existing).await? {
            return Ok(false);
        }
        let mut entries = Vec::with_capacity(files.len());
        for (file, data) in files {
            self.pacer.wait_turn().await;
            let content = base64::engine::general_purpose::STANDARD.encode(data);
            let blob = self
                .call(
                    OPERATION,
                    repository,
                    git.create_blob(content).encoding("base64").send(),
                )
                .await?;
            entries.push(CreateTreeEntry::new(*file, "100644", "blob").with_sha(blob.sha));
        }
        self.pacer.wait_turn().await;
        let tree = self
            .call(OPERATION, repository, git.create_tree(entries).send())
            .await?;
        self.pacer.wait_turn().await;
        let commit = git.create_commit(message, tree.sha);
        let commit = self.call(OPERATION, repository, commit.send()).await?;
        self.pacer.wait_turn().await;
        let created = async {
            match git.create_ref(&reference, commit.sha).await {
                Ok(_) => Ok(true),
                // Created meanwhile, by an earlier attempt whose answer was lost or by
                // another instance: the branch is there, which is all we need.
                Err(octocrab::Error::GitHub { source, .. })
                    if source.status_code.as_u16() == 422
                        && source.message.contains("already exists") =>
                {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        self.call(OPERATION, repository, created).await
    }

    /// Runs one octocrab call under the overall deadline and classifies its failure.
    async fn call<T>(
        &self,
        operation: &'static str,
        repository: &str,
        request: impl Future<Output = octocrab::Result<T>>,
    ) -> Result<T, GitHubError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(operation, repository, &error, SystemTime::now())),
            Err(_) => Err(GitHubError {
                operation,
                repository: repository.to_owned(),
                message: format!(
                    "no answer within {} s (github.timeout_secs); will retry",
                    self.timeout.as_secs_f32()
                ),
                kind: FailureKind::TRANSIENT,
            }),
        }
    }
}

/// What a follow-up needs to know about its advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryText {
    /// The description as it stands.
    pub description: String,
    /// `triage`, `draft`, `published`, `closed` or `withdrawn`.
    pub state: String,
}

/// Clients by lower-cased owner (tokens per owner, the App's installations).
type Installations = std::collections::HashMap<String, std::sync::Arc<Octocrab>>;

/// Scheme, host and port of `uri` (the port filled in for http and https).
fn origin_of(uri: &http::Uri) -> (String, String, Option<u16>) {
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    (scheme, uri.host().unwrap_or("").to_ascii_lowercase(), port)
}

/// What the watcher needs to know about one advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryStatus {
    /// `GHSA-…`.
    pub ghsa_id: String,
    /// `triage`, `draft`, `published`, `closed` or `withdrawn`.
    pub state: String,
    /// Its CVE id, if any.
    pub cve_id: Option<String>,
    /// Its page.
    pub html_url: String,
    /// When it last changed.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The reports whose (counting) markers it carries.
    pub reports: Vec<ReportId>,
}

/// The request body GitHub receives for a draft: what `create_draft` sends and
/// `preview` prints.
pub fn create_body(draft: &AdvisoryDraft) -> CreateRepositoryAdvisory {
    CreateRepositoryAdvisory {
        summary: draft.summary.clone(),
        description: draft.description.clone(),
        vulnerabilities: draft
            .vulnerabilities
            .iter()
            .map(|p| CreateVulnerability {
                package: CreatePackage {
                    ecosystem: p.ecosystem.clone(),
                    name: Some(p.name.clone()),
                },
                ..CreateVulnerability::default()
            })
            .collect(),
        cvss_vector_string: draft.signals.cvss.clone().and_then(Result::ok),
        cwe_ids: (!draft.signals.cwe_ids.is_empty()).then(|| draft.signals.cwe_ids.clone()),
        credits: (!draft.credits.is_empty()).then(|| {
            draft
                .credits
                .iter()
                .map(|login| CreateCredit {
                    login: login.clone(),
                    r#type: "reporter".into(),
                })
                .collect()
        }),
        ..CreateRepositoryAdvisory::default()
    }
}

fn split_repository<'a>(
    operation: &'static str,
    repository: &'a str,
) -> Result<(&'a str, &'a str), GitHubError> {
    match repository.split_once('/') {
        Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((owner, name))
        }
        _ => Err(GitHubError {
            operation,
            repository: repository.to_owned(),
            message: "the repository must be written owner/name".into(),
            kind: FailureKind::Permanent,
        }),
    }
}

fn advisory_ref(repository: &str, advisory: &RepositoryAdvisory) -> AdvisoryRef {
    AdvisoryRef {
        ghsa_id: advisory.ghsa_id.clone(),
        html_url: advisory.html_url.to_string(),
        repository: repository.to_owned(),
    }
}

/// An error and its sources on one line (octocrab's own `Display` can include a backtrace).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sorts an octocrab failure into transient or permanent.
///
/// octocrab's `Error::GitHub` carries the failed response's status *and headers*
/// (`GitHubError::headers` in 0.54), so `Retry-After` and the `x-ratelimit-*` headers
/// are read straight from the error; no response-recording tower layer is needed.
fn classify(
    operation: &'static str,
    repository: &str,
    error: &octocrab::Error,
    now: SystemTime,
) -> GitHubError {
    let (message, kind) = match error {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code.as_u16();
            let headers = source.headers.as_ref();
            let header = |name: &str| {
                headers
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
            };
            let retry_after = header("retry-after")
                .and_then(|v| parse_retry_after(v, now))
                .or_else(|| {
                    (header("x-ratelimit-remaining") == Some("0"))
                        .then(|| header("x-ratelimit-reset"))
                        .flatten()
                        .and_then(|reset| reset.parse::<u64>().ok())
                        .map(|reset| delay_until(reset, now))
                });
            let rate_limited = header("retry-after").is_some()
                || header("x-ratelimit-remaining") == Some("0")
                || source.message.to_ascii_lowercase().contains("rate limit");
            // GitHub: a 422 from these endpoints means "Validation failed, or the endpoint
            // has been spammed"; only the spam kind is worth a retry.
            let lower = source.message.to_ascii_lowercase();
            let spammed = status == 422
                && (lower.contains("spammed") || lower.contains("abuse") || lower.contains("spam"));
            let transient = status >= 500
                || status == 429
                || status == 408
                || (status == 403 && rate_limited)
                || spammed;
            // Our credentials, not the report: rejected (401), lacking a permission (403),
            // or unable to see the repository at all (404 on the repository's own list and
            // create endpoints; a 404 for one advisory means that advisory is gone).
            let repository_level = matches!(
                operation,
                "create advisory"
                    | "list advisories"
                    | "find advisory by marker"
                    | "upload attachments"
            );
            let misconfigured = !transient
                && (status == 401 || status == 403 || (status == 404 && repository_level));
            let mut message = format!("HTTP {status}: {}", source.message);
            if let Some(errors) = source.errors.as_ref().filter(|e| !e.is_empty()) {
                let details: Vec<String> = errors.iter().map(summarise_error).collect();
                message.push_str(&format!(" ({})", details.join("; ")));
            }
            message.push_str(match status {
                401 => "; check github.token_file: the token is missing, wrong or expired",
                403 if !transient && operation == "upload attachments" => "; the credentials lack permission: they need Contents: write on the attachments repository",
                403 if !transient => "; the token lacks permission: it needs repository security advisories write access",
                404 => "; the repository does not exist or the token cannot see it",
                _ => "",
            });
            // GitHub's rate-limit guide: without a Retry-After or reset to go by, wait at
            // least a minute after a secondary rate limit.
            let retry_after = match retry_after {
                None if status == 429 || (status == 403 && rate_limited) => {
                    Some(SECONDARY_LIMIT_WAIT)
                }
                other => other,
            };
            let retry_after = if spammed {
                Some(retry_after.unwrap_or(SECONDARY_LIMIT_WAIT))
            } else {
                retry_after
            };
            let kind = if transient {
                FailureKind::Transient { retry_after }
            } else if misconfigured {
                FailureKind::Misconfigured
            } else {
                FailureKind::Permanent
            };
            (message, kind)
        }
        // The connection failed, dropped, or timed out before an answer arrived.
        octocrab::Error::Hyper { .. } | octocrab::Error::Service { .. } => (
            format!("network error: {}", describe(error)),
            FailureKind::TRANSIENT,
        ),
        octocrab::Error::Json { .. } | octocrab::Error::Serde { .. } => (
            format!(
                "GitHub answered something that is not a repository advisory ({}); \
                 if this was a create, the advisory may exist: its marker will find it",
                describe(error)
            ),
            FailureKind::Permanent,
        ),
        other => (describe(other), FailureKind::Permanent),
    };
    GitHubError {
        operation,
        repository: repository.to_owned(),
        message: truncate(message, MESSAGE_LIMIT),
        kind,
    }
}

/// The least wait after a rate limit that named no time.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Longest error message kept: GitHub's text is outside our control and ends up in logs.
const MESSAGE_LIMIT: usize = 1000;

fn truncate(mut text: String, limit: usize) -> String {
    if text.chars().count() > limit {
        text = text.chars().take(limit).collect();
        text.push('…');
    }
    text
}

/// One entry of a 422 `errors` array as `field code: message`.
fn summarise_error(error: &serde_json::Value) -> String {
    let text = |key: &str| error.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let mut out = [text("field"), text("code")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let message = text("message");
    if !message.is_empty() {
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(message);
    }
    if out.is_empty() {
        out = error.to_string();
    }
    out
}

/// `Retry-After` is either delay-seconds or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = u64::try_from(at.timestamp()).ok()?;
    Some(delay_until(at, now))
}

/// The delay from `now` until `epoch_secs` (zero when it has passed).
fn delay_until(epoch_secs: u64, now: SystemTime) -> Duration {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(epoch_secs).saturating_sub(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("30", now), Some(Duration::from_secs(30)));
        // 1_700_000_060 is Tue, 14 Nov 2023 22:14:20 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_reset_in_the_past_means_retry_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(delay_until(1_600_000_000, now), Duration::ZERO);
        assert_eq!(delay_until(1_700_000_120, now), Duration::from_secs(120));
    }

    #[test]
    fn repositories_must_be_owner_slash_name() {
        assert_eq!(
            split_repository("x", "pallets/flask").unwrap(),
            ("pallets", "flask")
        );
        for bad in ["flask", "/flask", "pallets/", "a/b/c"] {
            assert_eq!(
                split_repository("x", bad).unwrap_err().kind,
                FailureKind::Permanent
            );
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé".into(), 2), "éé…");
        assert_eq!(truncate("ok".into(), 2), "ok");
    }

    #[test]
    fn validation_errors_read_as_field_code_message() {
        let e = serde_json::json!({"field": "summary", "code": "invalid", "message": "too long"});
        assert_eq!(summarise_error(&e), "summary invalid: too long");
        assert_eq!(
            summarise_error(&serde_json::json!({"code": "custom"})),
            "custom"
        );
    }
}
