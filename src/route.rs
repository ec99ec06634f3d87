//! Decide which configured repository a report is about, and record why. Pure.

use crate::config::RepositoryConfig;
use crate::mail::Report;

/// The evidence that chose the repository, strongest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteReason {
    /// The report was sent to `security+TAG@`.
    PlusAddress(String),
    /// The report links to the repository on GitHub.
    GitHubUrl(String),
    /// The subject names an alias of the repository.
    SubjectAlias(String),
    /// The body names an alias of the repository.
    BodyAlias(String),
    /// Nothing named a configured repository.
    Default,
}

impl std::fmt::Display for RouteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteReason::PlusAddress(tag) => write!(f, "sent to the +{tag} address"),
            RouteReason::GitHubUrl(url) => write!(f, "the report links to {url}"),
            RouteReason::SubjectAlias(a) => write!(f, "the subject names \"{a}\""),
            RouteReason::BodyAlias(a) => write!(f, "the report text names \"{a}\""),
            RouteReason::Default => f.write_str("no project named; the default repository"),
        }
    }
}

/// The chosen repository and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `owner/name`, exactly as configured.
    pub repository: String,
    /// The evidence.
    pub reason: RouteReason,
}

/// Chooses the repository for a report.
///
/// `mailbox_address` is our security@ address (plus-tags are read from recipient and
/// delivery addresses with the same local part and domain); `default_repository` is used
/// when nothing matches.
pub fn route(
    report: &Report,
    repositories: &[RepositoryConfig],
    default_repository: &str,
    mailbox_address: &str,
) -> Route {
    let _ = (report, repositories, default_repository, mailbox_address);
    unimplemented!("route::route")
}
