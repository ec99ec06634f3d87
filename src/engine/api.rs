//! The two narrow doors the engine and the watcher use to the outside: an advisory API
//! (GitHub) and an outbox (SMTP). The real clients implement them here; tests implement
//! them in memory.

use chrono::{DateTime, Utc};

use crate::config::GithubMode;
use crate::github::{AdvisoryStatus, AdvisoryText, GitHub, GitHubError};
use crate::mail::ReportId;
use crate::render::{AdvisoryDraft, AdvisoryRef, MarkerKey, MarkerQuery, ReplyMessage};
use crate::reply::{Mailer, SendError};

/// What the engine and the watcher need from GitHub.
pub trait AdvisoryApi: Send + Sync {
    /// The first advisory of `repository` (newest first) that carries one of the
    /// reports' markers, with the report it names.
    /// Advisories created before `not_before` are not looked at.
    fn find_by_marker(
        &self,
        repository: &str,
        wanted: &[MarkerQuery],
        not_before: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Option<(ReportId, AdvisoryRef)>, GitHubError>> + Send;
    /// Creates the advisory: a draft, or a private vulnerability report in triage mode.
    fn create(
        &self,
        mode: GithubMode,
        draft: &AdvisoryDraft,
    ) -> impl Future<Output = Result<AdvisoryRef, GitHubError>> + Send;
    /// The account type (`User`, `Organization`, `Bot`) of a login, `None` when GitHub
    /// knows no such account; asked through `repository`'s credentials.
    fn account_type(
        &self,
        repository: &str,
        login: &str,
    ) -> impl Future<Output = Result<Option<String>, GitHubError>> + Send;
    /// An advisory's current description and state.
    fn description(
        &self,
        repository: &str,
        ghsa_id: &str,
    ) -> impl Future<Output = Result<AdvisoryText, GitHubError>> + Send;
    /// Replaces an advisory's description.
    fn update_description(
        &self,
        repository: &str,
        ghsa_id: &str,
        description: &str,
    ) -> impl Future<Output = Result<(), GitHubError>> + Send;
    /// The repository's advisories changed at or after `since` (all when `None`),
    /// newest first, each with the reports whose markers under `marker` it carries.
    fn updated_since(
        &self,
        repository: &str,
        since: Option<DateTime<Utc>>,
        marker: &MarkerKey,
    ) -> impl Future<Output = Result<Vec<AdvisoryStatus>, GitHubError>> + Send;
    /// Adds `login` to the advisory's collaborating users (keeping the others).
    fn add_collaborator(
        &self,
        repository: &str,
        ghsa_id: &str,
        login: &str,
    ) -> impl Future<Output = Result<(), GitHubError>> + Send;
    /// Commits `files` (name, bytes) as the root commit of a new branch `branch` of
    /// `repository`, unless the branch exists; whether this call created it. Safe to
    /// repeat: the branch is made last, and only once.
    fn upload_attachments(
        &self,
        repository: &str,
        branch: &str,
        message: &str,
        files: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<bool, GitHubError>> + Send;
    /// How long a content-creating request sent now would wait for its turn (GitHub's
    /// pacing); `None` when it would go at once.
    fn pacing_wait(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What the engine and the watcher need from SMTP.
pub trait Outbox: Send + Sync {
    /// Sends one message; the exact bytes sent, for a copy in the sent folder.
    fn send(
        &self,
        message: &ReplyMessage,
    ) -> impl Future<Output = Result<Vec<u8>, SendError>> + Send;
}

impl AdvisoryApi for GitHub {
    async fn find_by_marker(
        &self,
        repository: &str,
        wanted: &[MarkerQuery],
        not_before: Option<DateTime<Utc>>,
    ) -> Result<Option<(ReportId, AdvisoryRef)>, GitHubError> {
        GitHub::find_by_marker(self, repository, wanted, not_before).await
    }

    async fn create(
        &self,
        mode: GithubMode,
        draft: &AdvisoryDraft,
    ) -> Result<AdvisoryRef, GitHubError> {
        match mode {
            GithubMode::Draft => self.create_draft(draft).await,
            GithubMode::Triage => self.report_vulnerability(draft).await,
        }
    }

    async fn description(
        &self,
        repository: &str,
        ghsa_id: &str,
    ) -> Result<AdvisoryText, GitHubError> {
        GitHub::description(self, repository, ghsa_id).await
    }

    async fn account_type(
        &self,
        repository: &str,
        login: &str,
    ) -> Result<Option<String>, GitHubError> {
        GitHub::account_type(self, repository, login).await
    }

    async fn update_description(
        &self,
        repository: &str,
        ghsa_id: &str,
        description: &str,
    ) -> Result<(), GitHubError> {
        GitHub::update_description(self, repository, ghsa_id, description).await
    }

    async fn updated_since(
        &self,
        repository: &str,
        since: Option<DateTime<Utc>>,
        marker: &MarkerKey,
    ) -> Result<Vec<AdvisoryStatus>, GitHubError> {
        GitHub::updated_since(self, repository, since, marker).await
    }

    async fn upload_attachments(
        &self,
        repository: &str,
        branch: &str,
        message: &str,
        files: &[(&str, &[u8])],
    ) -> Result<bool, GitHubError> {
        GitHub::upload_attachments(self, repository, branch, message, files).await
    }

    async fn add_collaborator(
        &self,
        repository: &str,
        ghsa_id: &str,
        login: &str,
    ) -> Result<(), GitHubError> {
        GitHub::add_collaborator(self, repository, ghsa_id, login).await
    }

    fn pacing_wait(&self) -> Option<std::time::Duration> {
        GitHub::pacing_wait(self)
    }
}

impl Outbox for Mailer {
    async fn send(&self, message: &ReplyMessage) -> Result<Vec<u8>, SendError> {
        Mailer::send(self, message).await
    }
}

impl<T: AdvisoryApi> AdvisoryApi for std::sync::Arc<T> {
    fn find_by_marker(
        &self,
        repository: &str,
        wanted: &[MarkerQuery],
        not_before: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Option<(ReportId, AdvisoryRef)>, GitHubError>> + Send {
        (**self).find_by_marker(repository, wanted, not_before)
    }
    fn create(
        &self,
        mode: GithubMode,
        draft: &AdvisoryDraft,
    ) -> impl Future<Output = Result<AdvisoryRef, GitHubError>> + Send {
        (**self).create(mode, draft)
    }
    fn account_type(
        &self,
        repository: &str,
        login: &str,
    ) -> impl Future<Output = Result<Option<String>, GitHubError>> + Send {
        (**self).account_type(repository, login)
    }
    fn description(
        &self,
        repository: &str,
        ghsa_id: &str,
    ) -> impl Future<Output = Result<AdvisoryText, GitHubError>> + Send {
        (**self).description(repository, ghsa_id)
    }
    fn update_description(
        &self,
        repository: &str,
        ghsa_id: &str,
        description: &str,
    ) -> impl Future<Output = Result<(), GitHubError>> + Send {
        (**self).update_description(repository, ghsa_id, description)
    }
    fn updated_since(
        &self,
        repository: &str,
        since: Option<DateTime<Utc>>,
        marker: &MarkerKey,
    ) -> impl Future<Output = Result<Vec<AdvisoryStatus>, GitHubError>> + Send {
        (**self).updated_since(repository, since, marker)
    }
    fn upload_attachments(
        &self,
        repository: &str,
        branch: &str,
        message: &str,
        files: &[(&str, &[u8])],
    ) -> impl Future<Output = Result<bool, GitHubError>> + Send {
        (**self).upload_attachments(repository, branch, message, files)
    }
    fn add_collaborator(
        &self,
        repository: &str,
        ghsa_id: &str,
        login: &str,
    ) -> impl Future<Output = Result<(), GitHubError>> + Send {
        (**self).add_collaborator(repository, ghsa_id, login)
    }
    fn pacing_wait(&self) -> Option<std::time::Duration> {
        (**self).pacing_wait()
    }
}

impl<T: Outbox> Outbox for std::sync::Arc<T> {
    fn send(
        &self,
        message: &ReplyMessage,
    ) -> impl Future<Output = Result<Vec<u8>, SendError>> + Send {
        (**self).send(message)
    }
}
