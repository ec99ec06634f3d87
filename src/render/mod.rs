//! Turn a report into the advisory GitHub receives and the reply the reporter receives.
//! Pure: attachments to keep are returned, the daemon stores them.

use crate::config::{AdvisoryConfig, ReplyConfig, RepositoryConfig};
use crate::mail::{Address, Report, ReportId};
use crate::route::Route;

/// GitHub's limit on an advisory summary, in characters.
pub const SUMMARY_LIMIT: usize = 1024;
/// GitHub's limit on an advisory description, in characters.
pub const DESCRIPTION_LIMIT: usize = 65535;

/// The hidden marker that names a report in its advisory's description. The report's
/// own text can never produce it (the renderer escapes `<` in report text).
pub fn marker(id: &ReportId) -> String {
    format!("<!-- advisory-bridge report-id={id} -->")
}

/// A package the advisory is about, prefilled from the repository's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// GitHub's ecosystem name, e.g. `pip`.
    pub ecosystem: String,
    /// Package name in that ecosystem.
    pub name: String,
}

/// An attachment kept in the state directory rather than (or as well as) shown inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttachment {
    /// Safe generated file name (`<index>-<sha256 prefix>.<safe ext>`), never the sender's.
    pub file_name: String,
    /// Index into `Report::attachments`.
    pub index: usize,
}

/// The draft advisory to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryDraft {
    /// The repository, `owner/name`.
    pub repository: String,
    /// Summary (title), within [`SUMMARY_LIMIT`].
    pub summary: String,
    /// Markdown description within [`DESCRIPTION_LIMIT`], containing [`marker`] once.
    pub description: String,
    /// Affected packages.
    pub vulnerabilities: Vec<Package>,
    /// Attachments the daemon must store under `state_dir/attachments/<report id>/`.
    pub stored_attachments: Vec<StoredAttachment>,
}

/// Everything the advisory renderer needs besides the report.
#[derive(Debug, Clone)]
pub struct AdvisoryContext<'a> {
    /// The chosen repository and why.
    pub route: &'a Route,
    /// That repository's config.
    pub repository: &'a RepositoryConfig,
    /// `[advisory]` settings.
    pub settings: &'a AdvisoryConfig,
    /// When the message was received (shown when the report has no valid `Date`).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// Renders the draft advisory for a report.
pub fn advisory(report: &Report, ctx: &AdvisoryContext<'_>) -> AdvisoryDraft {
    let _ = (report, ctx);
    unimplemented!("render::advisory")
}

/// The advisory a reply refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryRef {
    /// `GHSA-xxxx-xxxx-xxxx`.
    pub ghsa_id: String,
    /// The advisory's page (visible to maintainers and, once added, the reporter).
    pub html_url: String,
    /// `owner/name`.
    pub repository: String,
}

/// A reply ready for SMTP: every header value already single-line and safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    /// Recipient.
    pub to: Address,
    /// Sender (our security@ address and display name).
    pub from: Address,
    /// `Re: <subject> [GHSA-…]`.
    pub subject: String,
    /// Stable `Message-ID` without angle brackets, derived from the report id.
    pub message_id: String,
    /// The report's `Message-ID`, if it had one.
    pub in_reply_to: Option<String>,
    /// The report's `References` followed by its `Message-ID`.
    pub references: Vec<String>,
    /// Plain-text body.
    pub body: String,
}

/// Why the reply template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template file could not be read.
    #[error("cannot read reply template {path}: {source}")]
    Read {
        /// The template file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template is not valid minijinja or failed to render.
    #[error("reply template {name}: {message}")]
    Render {
        /// The template's name or path.
        name: String,
        /// minijinja's message.
        message: String,
    },
}

/// The reply templates, loaded once at start so a broken template fails `check`.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// Loads the configured template, or the built-in one when none is configured.
    pub fn load(settings: &ReplyConfig) -> Result<Templates, TemplateError> {
        let _ = settings;
        unimplemented!("render::Templates::load")
    }
}

/// Renders the acknowledgement for a report.
pub fn reply(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    let _ = (report, to, advisory, from, settings, &templates.env);
    unimplemented!("render::reply")
}
