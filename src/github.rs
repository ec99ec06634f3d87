//! The only code that talks to GitHub: create draft advisories and find ones we made,
//! through octocrab's typed repository-advisory calls.

use std::time::Duration;

use crate::config::Secret;
use crate::failure::{Classify, FailureKind};
use crate::render::{AdvisoryDraft, AdvisoryRef};

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
    /// Token.
    pub token: Secret,
    /// Timeout for one request.
    pub timeout: Duration,
}

/// A GitHub client for the repository advisory endpoints.
#[derive(Clone)]
pub struct GitHub {
    _private: (),
}

impl GitHub {
    /// Builds a client; does not contact GitHub.
    pub fn new(settings: &GitHubSettings) -> Result<GitHub, GitHubError> {
        let _ = settings;
        unimplemented!("github::GitHub::new")
    }

    /// Looks through all of the repository's advisories (every state, every page) for one
    /// whose description contains `marker`.
    pub async fn find_by_marker(
        &self,
        repository: &str,
        marker: &str,
    ) -> Result<Option<AdvisoryRef>, GitHubError> {
        let _ = (repository, marker);
        unimplemented!("github::GitHub::find_by_marker")
    }

    /// Creates a draft advisory.
    pub async fn create_draft(&self, draft: &AdvisoryDraft) -> Result<AdvisoryRef, GitHubError> {
        let _ = draft;
        unimplemented!("github::GitHub::create_draft")
    }

    /// Checks that the token can read the repository's advisories (for `check`).
    pub async fn check_access(&self, repository: &str) -> Result<(), GitHubError> {
        let _ = repository;
        unimplemented!("github::GitHub::check_access")
    }
}

/// The request body GitHub receives for a draft: what `preview` prints.
pub fn create_body(
    draft: &AdvisoryDraft,
) -> octocrab::models::security_advisories::CreateRepositoryAdvisory {
    let _ = draft;
    unimplemented!("github::create_body")
}
