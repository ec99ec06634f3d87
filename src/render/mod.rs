//! Turn a report into the advisory GitHub receives and the reply the reporter receives.
//! Pure: attachments to keep are returned, the daemon stores them.

mod followup;
pub mod markdown;
pub mod notice;

pub use self::followup::{FollowupContext, FollowupRender, append_followup, followup_marker};

use crate::config::{AdvisoryConfig, ReplyConfig, RepositoryConfig};
use crate::mail::clean::{single_line, truncate_chars};
use crate::mail::{Address, Report, ReportId};
use crate::route::{Route, RouteReason};

use self::markdown::{escape_pre, github_len, inline_code, pre_block};

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
    /// Safe generated file name (`<number>-<sha256 prefix>.<safe ext>`, the number as
    /// shown in the description's attachment table), never the sender's.
    pub file_name: String,
    /// Index into `Report::attachments`; for generated content (see `generated`) it is
    /// `Report::attachments.len()`, past the end. Use [`StoredAttachment::data`].
    pub index: usize,
    /// Content made by the renderer rather than taken from the message: the full report
    /// text when the description had to be cut to fit GitHub's limit.
    pub generated: Option<Vec<u8>>,
}

impl StoredAttachment {
    /// The bytes to store: the generated content, or the report's attachment.
    pub fn data<'a>(&'a self, report: &'a Report) -> Option<&'a [u8]> {
        match &self.generated {
            Some(data) => Some(data),
            None => report
                .attachments
                .get(self.index)
                .map(|a| a.data.as_slice()),
        }
    }
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

/// Room kept free below [`DESCRIPTION_LIMIT`], in case GitHub counts a little differently
/// (line endings, normalisation) than [`markdown::github_len`].
const DESCRIPTION_MARGIN: usize = 1024;

/// The visible note that opens every description: it becomes public on publication.
const PUBLIC_NOTE: &str = "> **This draft was created automatically from an email report** sent to the security \
address. When the advisory is published, this description becomes **public**: edit it \
before publishing, and remove the reporter's details and anything else that must \
stay private.\n";

/// Renders the draft advisory for a report.
///
/// The description has, in order: the note that it becomes public, a metadata table
/// (reporter, date, reference, how it was received, sender authentication, why this
/// repository), the report text in a neutralised block, the attachments (small textual
/// ones shown, all listed with size and SHA-256), and the hidden [`marker`] once at the
/// very end. See [`markdown`] for why the neutralisation is safe. When everything would
/// not fit GitHub's limit, the report text is cut with a note and kept in full as a
/// stored attachment, and attachments that no longer fit are listed but not shown.
pub fn advisory(report: &Report, ctx: &AdvisoryContext<'_>) -> AdvisoryDraft {
    let limit = DESCRIPTION_LIMIT - DESCRIPTION_MARGIN;
    let mut stored: Vec<StoredAttachment> = report
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| StoredAttachment {
            file_name: stored_name(i + 1, &a.sha256, a.filename.as_deref(), &a.content_type),
            index: i,
            generated: None,
        })
        .collect();

    let head = format!("{PUBLIC_NOTE}\n{}\n", metadata_table(report, ctx));
    let marker_line = format!("\n{}\n", marker(&report.report_id));
    let listing = attachment_listing(report, &stored, "## Attachments");

    // What must be there whatever the report holds; the text gets what is left.
    let full_text_name = stored_name(
        report.attachments.len() + 1,
        &crate::mail::sha256_hex(report.text.as_bytes()),
        Some("report.txt"),
        "text/plain",
    );
    let cut_note = format!(
        "> **The report text was cut here** to fit GitHub's limit on descriptions. \
         The full text is kept with the attachments as {}.\n\n",
        inline_code(&full_text_name)
    );
    let fixed = github_len(&head)
        + github_len(&listing)
        + github_len(&marker_line)
        + github_len(&cut_note)
        + 64;
    let text_budget = limit.saturating_sub(fixed);

    let mut description = head;
    description.push_str("## Report\n");
    if report.text_from_html {
        description.push_str(
            "\nThe message was HTML only; this is its text, with link targets in parentheses.\n",
        );
    }
    if report.text.trim().is_empty() {
        description.push_str("\nThe message had no text.\n\n");
    } else {
        let (escaped, complete) = escape_pre(&report.text, text_budget);
        description.push_str(&pre_block(&escaped));
        if !complete {
            description.push_str(&cut_note);
            stored.push(StoredAttachment {
                file_name: full_text_name,
                index: report.attachments.len(),
                generated: Some(report.text.as_bytes().to_vec()),
            });
        }
    }

    if !report.attachments.is_empty() {
        description.push_str(&listing);
        let used = github_len(&description) + github_len(&marker_line);
        description.push_str(&inline_attachments(
            report,
            ctx.settings,
            "### Attachment",
            limit.saturating_sub(used),
        ));
    }
    description.push_str(&marker_line);

    AdvisoryDraft {
        repository: ctx.route.repository.clone(),
        summary: summary(report, ctx.received_at),
        description,
        vulnerabilities: vec![Package {
            ecosystem: ctx.repository.ecosystem.clone(),
            name: ctx.repository.package_name().to_owned(),
        }],
        stored_attachments: stored,
    }
}

/// The sender as shown in a description: display name, and the address only when
/// `include_reporter_email` is set (the description becomes public).
fn sender_cell(from: Option<&Address>, settings: &AdvisoryConfig) -> String {
    match (from, settings.include_reporter_email) {
        (Some(a), true) => match &a.name {
            Some(name) => inline_code(&format!("{name} <{}>", a.email)),
            None => inline_code(&a.email),
        },
        (
            Some(Address {
                name: Some(name), ..
            }),
            false,
        ) => inline_code(name),
        (Some(_), false) => "(no name given; address not shown)".to_owned(),
        (None, _) => "(no sender)".to_owned(),
    }
}

fn metadata_table(report: &Report, ctx: &AdvisoryContext<'_>) -> String {
    let reporter = sender_cell(report.from.as_ref(), ctx.settings);
    let date = match report.date {
        Some(d) => d.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => format!(
            "{} (received; the message had no valid date)",
            ctx.received_at.format("%Y-%m-%d %H:%M UTC")
        ),
    };
    let short_id: String = report.report_id.0.chars().take(12).collect();
    let mut received = format!("email, {}", human_size(report.raw_size));
    if !report.attachments.is_empty() {
        received.push_str(&format!(", {} attachment(s)", report.attachments.len()));
    }
    if report.text_from_html {
        received.push_str(", HTML only");
    }
    let mut rows = vec![
        ("Reporter", reporter),
        ("Date", date),
        ("Subject", inline_code(&report.subject)),
        ("Report reference", inline_code(&short_id)),
        ("Received", received),
        ("Sender authentication", authentication(report)),
        ("Routed here because", route_reason(&ctx.route.reason)),
    ];
    if report.subject.is_empty() {
        rows.retain(|(k, _)| *k != "Subject");
    }
    let mut table = String::from("| | |\n| --- | --- |\n");
    for (key, value) in rows {
        table.push_str(&format!("| {key} | {value} |\n"));
    }
    table
}

/// The verdicts of the topmost `Authentication-Results` (the one our receiving server
/// added), as stated there; not verified here.
fn authentication(report: &Report) -> String {
    let Some(first) = report.signals.authentication_results.first() else {
        return "not recorded".to_owned();
    };
    let server = first.split(';').next().unwrap_or("").trim();
    let verdicts: Vec<&str> = first
        .split([';', ' '])
        .map(str::trim)
        .filter(|t| {
            let t = t.to_ascii_lowercase();
            t.starts_with("dmarc=") || t.starts_with("dkim=") || t.starts_with("spf=")
        })
        .collect();
    if verdicts.is_empty() {
        return "not recorded".to_owned();
    }
    // The daemon keeps only headers from trusted authserv-ids (see `auth`), so the
    // topmost one here speaks for the receiving server.
    let id = server.split_whitespace().next().unwrap_or("").to_owned();
    let warning = match crate::auth::verdict(&report.signals.authentication_results, &[id]) {
        crate::auth::Verdict::Failed { .. } => {
            " **(unauthenticated sender: the From address may be forged; no reply was sent)**"
        }
        _ => "",
    };
    format!(
        "{} (according to {}){warning}",
        inline_code(&verdicts.join(" ")),
        inline_code(server)
    )
}

fn route_reason(reason: &RouteReason) -> String {
    match reason {
        RouteReason::PlusAddress(tag) => {
            format!("sent to the {} address", inline_code(&format!("+{tag}")))
        }
        RouteReason::GitHubUrl(url) => format!("the report links to {}", inline_code(url)),
        RouteReason::SubjectAlias(a) => format!("the subject names {}", inline_code(a)),
        RouteReason::BodyAlias(a) => format!("the report text names {}", inline_code(a)),
        RouteReason::Default => {
            "no configured project was named; this is the default repository".to_owned()
        }
    }
}

/// The sections showing a report's small text attachments, each under `heading`
/// followed by its number and name, whole or not at all (the listing already names
/// every attachment), in at most `room` characters (counted as by [`github_len`]).
fn inline_attachments(
    report: &Report,
    settings: &AdvisoryConfig,
    heading: &str,
    room: usize,
) -> String {
    let mut out = String::new();
    let mut used = 0;
    for (i, a) in report.attachments.iter().enumerate() {
        if !a.is_text || a.data.len() > settings.inline_attachment_max_bytes {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&a.data) else {
            continue;
        };
        let (escaped, complete) = escape_pre(text, room.saturating_sub(used));
        let section = format!(
            "{heading} {}: {}\n{}",
            i + 1,
            inline_code(a.filename.as_deref().unwrap_or("(no name)")),
            pre_block(&escaped)
        );
        if complete && used + github_len(&section) <= room {
            used += github_len(&section);
            out.push_str(&section);
        }
    }
    out
}

/// Room the attachment table may take at most; the rest is left for the report text.
const LISTING_MAX_CHARS: usize = 24_000;

/// The table of a report's attachments under the Markdown `heading` line (e.g.
/// `## Attachments`), naming each by its stored name in `stored`.
fn attachment_listing(report: &Report, stored: &[StoredAttachment], heading: &str) -> String {
    if report.attachments.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n{heading}\n\nAll attachments are kept by advisory-bridge under the names \
         below; small text attachments are also shown.\n\n\
         | # | Name | Type | Size | SHA-256 | Stored as |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for (i, a) in report.attachments.iter().enumerate() {
        let stored_as = stored
            .iter()
            .find(|s| s.index == i && s.generated.is_none())
            .map_or_else(String::new, |s| inline_code(&s.file_name));
        let row = format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            a.filename
                .as_deref()
                .map_or_else(|| "(no name)".to_owned(), inline_code),
            inline_code(&a.content_type),
            human_size(a.data.len()),
            inline_code(&a.sha256),
            stored_as
        );
        if github_len(&s) + github_len(&row) > LISTING_MAX_CHARS {
            s.push_str(&format!(
                "\n{} more attachment(s) are not listed here for lack of room; all are stored.\n",
                report.attachments.len() - i
            ));
            break;
        }
        s.push_str(&row);
    }
    s.push('\n');
    s
}

fn human_size(bytes: usize) -> String {
    match bytes {
        0..=1023 => format!("{bytes} bytes"),
        1024..=1_048_575 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// File extensions a stored attachment may keep; anything else is stored as `.bin`.
const SAFE_EXTENSIONS: &[&str] = &[
    "txt", "patch", "diff", "log", "md", "rst", "py", "js", "ts", "json", "yaml", "yml", "toml",
    "cfg", "ini", "sh", "html", "htm", "xml", "csv", "rs", "c", "h", "go", "rb", "php", "java",
    "sql", "har", "eml", "png", "jpg", "jpeg", "gif", "webp", "pdf", "zip", "gz", "tgz", "tar",
    "pcap", "mp4", "webm",
];

/// `<number>-<first 12 hex of sha256>.<ext>`: never derived from the sender's name beyond
/// a whitelisted extension, so it cannot traverse paths or collide.
pub fn stored_name(
    number: usize,
    sha256: &str,
    filename: Option<&str>,
    content_type: &str,
) -> String {
    let from_name = filename
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| SAFE_EXTENSIONS.contains(&ext.as_str()));
    let from_type = match content_type {
        "message/rfc822" => Some("eml"),
        "text/plain" => Some("txt"),
        "text/html" => Some("html"),
        "text/x-patch" | "text/x-diff" | "application/x-patch" | "application/x-diff" => {
            Some("patch")
        }
        "application/json" => Some("json"),
        "application/pdf" => Some("pdf"),
        "application/zip" => Some("zip"),
        "image/png" => Some("png"),
        "image/jpeg" => Some("jpg"),
        "image/gif" => Some("gif"),
        _ => None,
    };
    let ext = from_name.as_deref().or(from_type).unwrap_or("bin");
    let prefix: String = sha256
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("{number}-{prefix}.{ext}")
}

/// The subject without reply and forward prefixes or leading `[tags]`, white space
/// collapsed.
pub fn strip_subject(subject: &str) -> String {
    let mut s = single_line(subject);
    loop {
        let trimmed = s.trim_start();
        let lower = trimmed.to_lowercase();
        let prefix_len = [
            "re:", "fwd:", "fw:", "aw:", "wg:", "sv:", "vs:", "tr:", "antw:",
        ]
        .iter()
        .find(|p| lower.starts_with(*p))
        .map(|p| p.len())
        .or_else(|| {
            // `[list-tag]` or `Re[2]:`-style counters.
            if trimmed.starts_with('[') {
                trimmed.find(']').map(|i| i + 1)
            } else {
                None
            }
        });
        match prefix_len {
            Some(n) if trimmed.is_char_boundary(n) => s = trimmed[n..].to_owned(),
            _ => break,
        }
    }
    single_line(&s)
}

/// The advisory summary: the stripped subject, or a description of who sent it when.
fn summary(report: &Report, received_at: chrono::DateTime<chrono::Utc>) -> String {
    let subject = strip_subject(&report.subject);
    let summary = if subject.is_empty() {
        let who = report
            .from
            .as_ref()
            .and_then(|a| a.name.clone())
            .unwrap_or_else(|| "an email reporter".to_owned());
        let date = report.date.unwrap_or(received_at).format("%Y-%m-%d");
        format!("Security report from {who} ({date})")
    } else {
        subject
    };
    truncate_utf16(&summary, SUMMARY_LIMIT).to_owned()
}

/// Cuts `s` on a character boundary to at most `max` UTF-16 code units, the way
/// [`github_len`] counts, so astral characters (emoji) cannot take a summary past the
/// limit.
fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > max {
            return &s[..i];
        }
    }
    s
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
    name: String,
    followup_name: String,
}

/// The built-in acknowledgement, used when `[reply] template` is not set.
const BUILTIN_TEMPLATE: &str = include_str!("reply.txt.j2");
const BUILTIN_NAME: &str = "built-in reply.txt.j2";
/// The built-in note to follow-ups, used when `[reply] followup_template` is not set.
const BUILTIN_FOLLOWUP_TEMPLATE: &str = include_str!("followup-reply.txt.j2");
const BUILTIN_FOLLOWUP_NAME: &str = "built-in followup-reply.txt.j2";

/// Reads a configured template file, or takes the built-in one.
fn template_source(
    path: Option<&std::path::Path>,
    builtin_name: &str,
    builtin: &str,
) -> Result<(String, String), TemplateError> {
    match path {
        Some(path) => Ok((
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
                path: path.to_owned(),
                source,
            })?,
        )),
        None => Ok((builtin_name.to_owned(), builtin.to_owned())),
    }
}

impl Templates {
    /// Loads the configured template, or the built-in one when none is configured.
    ///
    /// Undefined variables are errors, not empty strings, and the template is rendered
    /// once with sample values here, so a typo fails at start (and in `check`) rather
    /// than when the first reporter is waiting for an answer. No auto-escaping: the
    /// result is plain text.
    pub fn load(settings: &ReplyConfig) -> Result<Templates, TemplateError> {
        let (name, source) =
            template_source(settings.template.as_deref(), BUILTIN_NAME, BUILTIN_TEMPLATE)?;
        let (followup_name, followup_source) = template_source(
            settings.followup_template.as_deref(),
            BUILTIN_FOLLOWUP_NAME,
            BUILTIN_FOLLOWUP_TEMPLATE,
        )?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(name.clone(), source)
            .map_err(|e| render_error(&name, &e))?;
        env.add_template_owned(followup_name.clone(), followup_source)
            .map_err(|e| render_error(&followup_name, &e))?;
        let templates = Templates {
            env,
            name,
            followup_name,
        };
        let sample = ReplyVars {
            reporter_name: "Ada Reporter".into(),
            ghsa_id: "GHSA-xxxx-xxxx-xxxx".into(),
            advisory_url: "https://github.com/owner/name/security/advisories/GHSA-xxxx-xxxx-xxxx"
                .into(),
            repository: "owner/name".into(),
            policy_url: settings.policy_url.clone(),
            project_name: settings.project_name.clone(),
            subject: "Sample subject".into(),
        };
        templates.render(&templates.name, &sample)?;
        templates.render(&templates.followup_name, &sample)?;
        Ok(templates)
    }

    fn render(&self, name: &str, vars: &ReplyVars) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| render_error(name, &e))?;
        template
            .render(minijinja::context! {
                reporter_name => vars.reporter_name,
                ghsa_id => vars.ghsa_id,
                advisory_url => vars.advisory_url,
                repository => vars.repository,
                policy_url => vars.policy_url,
                project_name => vars.project_name,
                subject => vars.subject,
            })
            .map_err(|e| render_error(name, &e))
    }
}

/// The values a reply template can use.
struct ReplyVars {
    reporter_name: String,
    ghsa_id: String,
    advisory_url: String,
    repository: String,
    policy_url: String,
    project_name: String,
    subject: String,
}

fn render_error(name: &str, e: &minijinja::Error) -> TemplateError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    TemplateError::Render {
        name: name.to_owned(),
        message,
    }
}

/// Most `References` entries kept, as mail clients do: the thread's first message and
/// the most recent ones.
const MAX_REFERENCES: usize = 20;
/// Longest subject text kept in the reply's subject, in characters.
const REPLY_SUBJECT_CHARS: usize = 160;

/// Renders the acknowledgement for a report.
///
/// The body never quotes the report; only the subject and the reporter's display name
/// come from the message, both single-line. Threading: `In-Reply-To` is the report's
/// `Message-ID`, `References` the report's references plus its id (deduplicated, at most
/// 20, keeping the first); ids that are not plain visible ASCII are left
/// out so no header can be bent. The reply's own `Message-ID` is derived from the report
/// id, so a resent acknowledgement is recognisably the same message. A subject already
/// ending in the advisory's `[GHSA-…]` tag (an answer to one of our replies) is not
/// tagged twice.
pub fn reply(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    reply_with(
        &templates.name,
        report,
        to,
        advisory,
        from,
        settings,
        templates,
    )
}

/// Renders the short note that answers a follow-up (same threading and `Message-ID`
/// rules as [`reply`], body from the follow-up template).
pub fn followup_reply(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    reply_with(
        &templates.followup_name,
        report,
        to,
        advisory,
        from,
        settings,
        templates,
    )
}

fn reply_with(
    template: &str,
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    let ghsa = single_line(&advisory.ghsa_id);
    let stripped = untagged(&strip_subject(&report.subject), &ghsa);
    let subject_text = if stripped.is_empty() {
        "Your security report".to_owned()
    } else if stripped.chars().count() > REPLY_SUBJECT_CHARS {
        format!(
            "{}…",
            truncate_chars(&stripped, REPLY_SUBJECT_CHARS - 1).trim_end()
        )
    } else {
        stripped
    };
    let subject = format!("Re: {subject_text} [{ghsa}]");

    let body = templates.render(
        template,
        &ReplyVars {
            reporter_name: to
                .name
                .as_deref()
                .or(report.from.as_ref().and_then(|f| f.name.as_deref()))
                .map(single_line)
                .unwrap_or_default(),
            ghsa_id: ghsa,
            advisory_url: single_line(&advisory.html_url),
            repository: single_line(&advisory.repository),
            policy_url: settings.policy_url.clone(),
            project_name: settings.project_name.clone(),
            subject: single_line(&report.subject),
        },
    )?;

    let domain: String = from
        .email
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    let domain = if domain.is_empty() {
        "localhost".to_owned()
    } else {
        domain
    };
    let message_id = format!("advisory-bridge.{}@{domain}", report.report_id);

    let in_reply_to = report.message_id.clone().filter(|id| header_safe_id(id));
    let mut references: Vec<String> = Vec::new();
    for id in report.references.iter().chain(in_reply_to.iter()) {
        if header_safe_id(id) && !references.contains(id) {
            references.push(id.clone());
        }
    }
    if references.len() > MAX_REFERENCES {
        let tail = references.split_off(references.len() - (MAX_REFERENCES - 1));
        references.truncate(1);
        references.extend(tail);
    }

    Ok(ReplyMessage {
        to: safe_address(to),
        from: safe_address(from),
        subject,
        message_id,
        in_reply_to,
        references,
        body,
    })
}

/// `subject` without a trailing `[GHSA-…]` tag for `ghsa` (any case), so a report that
/// answers one of our replies (a follow-up) is not tagged twice.
fn untagged(subject: &str, ghsa: &str) -> String {
    let tag = format!("[{ghsa}]").to_ascii_lowercase();
    let lower = subject.to_ascii_lowercase();
    match lower.strip_suffix(&tag) {
        // ASCII lower-casing keeps byte offsets, so the cut is on a character boundary.
        Some(rest) if !ghsa.is_empty() => subject[..rest.len()].trim_end().to_owned(),
        _ => subject.to_owned(),
    }
}

/// A message id that can go between angle brackets in a header unchanged.
fn header_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

fn safe_address(a: &Address) -> Address {
    Address {
        name: a.name.as_deref().map(single_line).filter(|n| !n.is_empty()),
        email: single_line(&a.email),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{Limits, parse};
    use chrono::TimeZone;

    const LIMITS: Limits = Limits {
        max_message_bytes: 1 << 22,
        max_parts: 64,
        max_depth: 8,
        max_attachments: 16,
    };

    fn fixture(name: &str) -> Report {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        parse(&raw, &LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn repo(name: &str) -> RepositoryConfig {
        RepositoryConfig {
            name: name.into(),
            aliases: vec![],
            ecosystem: "pip".into(),
            package: None,
        }
    }

    fn received() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn render_with(report: &Report, settings: &AdvisoryConfig) -> AdvisoryDraft {
        let route = Route {
            repository: "pallets/werkzeug".into(),
            reason: RouteReason::SubjectAlias("werkzeug".into()),
        };
        let repository = repo("pallets/werkzeug");
        advisory(
            report,
            &AdvisoryContext {
                route: &route,
                repository: &repository,
                settings,
                received_at: received(),
            },
        )
    }

    fn render(report: &Report) -> AdvisoryDraft {
        render_with(report, &AdvisoryConfig::default())
    }

    /// The `<pre>` blocks of a description, checking each opens and closes on its own line.
    fn pre_blocks(description: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<Vec<&str>> = None;
        for line in description.lines() {
            match (&mut current, line) {
                (None, "<pre>") => current = Some(Vec::new()),
                (Some(lines), "</pre>") => {
                    blocks.push(lines.join("\n"));
                    current = None;
                }
                (Some(lines), l) => {
                    assert!(
                        !l.to_ascii_lowercase().contains("</pre"),
                        "block broken by {l:?}"
                    );
                    lines.push(l);
                }
                (None, _) => {}
            }
        }
        assert!(current.is_none(), "unclosed <pre>");
        blocks
    }

    /// The description with `<pre>` blocks and `<code>` spans removed: what GitHub would
    /// treat as Markdown.
    fn markdown_outside_code(description: &str) -> String {
        let mut out = String::new();
        let mut in_pre = false;
        for line in description.lines() {
            match line {
                "<pre>" => in_pre = true,
                "</pre>" => in_pre = false,
                l if !in_pre => {
                    let mut rest = l;
                    while let Some(start) = rest.find("<code>") {
                        out.push_str(&rest[..start]);
                        let end = rest[start..].find("</code>").expect("code closes") + start;
                        rest = &rest[end + 7..];
                    }
                    out.push_str(rest);
                    out.push('\n');
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn a_werkzeug_report_becomes_a_draft_that_warns_it_will_be_public() {
        let r = fixture("plain-werkzeug.eml");
        let d = render(&r);
        assert_eq!(d.repository, "pallets/werkzeug");
        assert_eq!(d.summary, "Path traversal in Werkzeug safe_join on Windows");
        assert!(
            d.description
                .starts_with("> **This draft was created automatically from an email report**")
        );
        assert!(d.description.contains("becomes **public**"));
        assert!(
            d.description
                .contains("| Reporter | <code>Alice Reporter</code> |")
        );
        assert!(d.description.contains("| Date | 2026-11-24 08:15 UTC |"));
        assert!(d.description.contains(&format!(
            "| Report reference | <code>{}</code> |",
            &r.report_id.0[..12]
        )));
        assert!(
            d.description
                .contains("| Routed here because | the subject names <code>werkzeug</code> |")
        );
        assert!(
            d.description
                .contains("<code>dkim&#61;pass spf&#61;pass dmarc&#61;pass</code>"),
            "{}",
            d.description
        );
        assert!(
            !d.description.contains("alice@example.net"),
            "address hidden by default"
        );
        let blocks = pre_blocks(&d.description);
        assert_eq!(blocks.len(), 1);
        assert!(
            blocks[0].contains("safe_join(\"C:/app/static\", \"..\\\\secret.txt\")"),
            "{}",
            blocks[0]
        );
        assert!(blocks[0].contains("&gt;&gt;&gt; from werkzeug.security import safe_join"));
        assert_eq!(
            d.vulnerabilities,
            vec![Package {
                ecosystem: "pip".into(),
                name: "werkzeug".into()
            }]
        );
        assert!(d.stored_attachments.is_empty());
        assert!(
            d.description
                .ends_with(&format!("\n{}\n", marker(&r.report_id)))
        );
        assert_eq!(d.description.matches(&marker(&r.report_id)).count(), 1);
    }

    #[test]
    fn the_reporter_address_is_shown_only_when_configured() {
        let r = fixture("plain-werkzeug.eml");
        let settings = AdvisoryConfig {
            include_reporter_email: true,
            ..AdvisoryConfig::default()
        };
        let d = render_with(&r, &settings);
        assert!(
            d.description.contains(
                "| Reporter | <code>Alice Reporter &lt;alice&#64;example&#46;net&gt;</code> |"
            ),
            "{}",
            d.description
        );
    }

    #[test]
    fn a_hostile_report_cannot_ping_embed_inject_or_forge_the_marker() {
        let r = fixture("hostile.eml");
        let d = render(&r);
        let desc = &d.description;
        // Exactly one marker, ours, at the very end.
        assert_eq!(desc.matches("<!-- advisory-bridge").count(), 1, "{desc}");
        assert!(desc.ends_with(&format!("{}\n", marker(&r.report_id))));
        assert!(desc.contains("&lt;!-- advisory-bridge report-id=0000"));
        // No raw HTML from the report.
        for raw in ["<img", "<script", "</details>", "<b>"] {
            assert!(!desc.contains(raw), "{raw} in {desc}");
        }
        // Mentions, images and fences only inside <pre> or <code>, where they are inert.
        let md = markdown_outside_code(desc);
        for inert in [
            "@pallets",
            "@davidism",
            "@everyone",
            "![",
            "```",
            "~~~",
            "evil.example",
        ] {
            assert!(!md.contains(inert), "{inert} outside code:\n{md}");
        }
        let blocks = pre_blocks(desc);
        assert_eq!(blocks.len(), 2, "report text and the small text attachment");
        assert!(blocks[0].contains("Hi @pallets/maintainers and @davidism"));
        assert!(
            blocks[0].contains("abc\\u{202E}dcba"),
            "bidi override made visible"
        );
        assert!(blocks[0].contains("zero\\u{0000}nul"));
        assert!(!desc.contains('\u{202E}') && !desc.contains('\u{2066}'));
        // The subject cell stays on one line and one cell.
        let subject_row = desc.lines().find(|l| l.starts_with("| Subject |")).unwrap();
        assert_eq!(subject_row.matches('|').count(), 3, "{subject_row}");
        // The attachment's hostile name is escaped in the listing, not used for storage.
        let row = desc.lines().find(|l| l.starts_with("| 1 |")).unwrap();
        assert_eq!(row.matches('|').count(), 7, "{row}");
        assert!(
            row.contains("&#46;&#46;&#47;&#46;&#46;&#47;etc&#47;evil&#124;&#96;name&#96;&#46;txt"),
            "{row}"
        );
        let sha = &r.attachments[0].sha256;
        assert_eq!(
            d.stored_attachments[0].file_name,
            format!("1-{}.txt", &sha[..12])
        );
        // The summary loses line breaks and bidi controls.
        assert!(
            !d.summary.contains(['\r', '\n', '\u{202E}']),
            "{:?}",
            d.summary
        );
    }

    #[test]
    fn every_table_row_keeps_its_column_count() {
        for name in [
            "hostile.eml",
            "patch-and-binary.eml",
            "html-latin1.eml",
            "shift-jis.eml",
            "bounce.eml",
        ] {
            let d = render(&fixture(name));
            for line in d.description.lines().filter(|l| l.starts_with("| ")) {
                let pipes = line.matches('|').count();
                assert!(pipes == 3 || pipes == 7, "{name}: {line}");
            }
        }
    }

    #[test]
    fn a_small_patch_is_shown_and_a_picture_only_listed_but_both_are_stored() {
        let r = fixture("patch-and-binary.eml");
        let d = render(&r);
        let blocks = pre_blocks(&d.description);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].starts_with("diff --git a/src/markupsafe/__init__.py"));
        assert!(
            d.description
                .contains("### Attachment 1: <code>fix&#45;escape&#46;patch</code>")
        );
        assert!(!d.description.contains("### Attachment 2"));
        assert!(
            d.description.contains(
                "| 2 | <code>alert&#46;png</code> | <code>image&#47;png</code> | 70 bytes |"
            ),
            "{}",
            d.description
        );
        let names: Vec<_> = d
            .stored_attachments
            .iter()
            .map(|s| (s.index, s.file_name.clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                (0, format!("1-{}.patch", &r.attachments[0].sha256[..12])),
                (1, format!("2-{}.png", &r.attachments[1].sha256[..12])),
            ]
        );
        assert_eq!(
            d.stored_attachments[1].data(&r),
            Some(r.attachments[1].data.as_slice())
        );
    }

    #[test]
    fn text_attachments_over_the_inline_limit_are_only_listed() {
        let r = fixture("patch-and-binary.eml");
        let settings = AdvisoryConfig {
            inline_attachment_max_bytes: 10,
            ..AdvisoryConfig::default()
        };
        let d = render_with(&r, &settings);
        assert_eq!(pre_blocks(&d.description).len(), 1);
        assert_eq!(d.stored_attachments.len(), 2);
    }

    #[test]
    fn a_forwarded_message_is_stored_as_eml() {
        let r = fixture("forwarded-attachment.eml");
        let d = render(&r);
        assert!(d.stored_attachments[0].file_name.ends_with(".eml"));
        assert!(d.summary == "Werkzeug debugger PIN bypass", "{}", d.summary);
    }

    #[test]
    fn an_oversized_report_is_cut_with_a_note_and_kept_in_full() {
        let mut r = fixture("plain-werkzeug.eml");
        r.text = "A line of the report with <angle> & 😀 emoji.\n".repeat(4000);
        let d = render(&r);
        assert!(
            github_len(&d.description) <= DESCRIPTION_LIMIT,
            "{}",
            github_len(&d.description)
        );
        assert!(d.description.contains("**The report text was cut here**"));
        assert_eq!(d.description.matches(&marker(&r.report_id)).count(), 1);
        assert!(
            d.description
                .ends_with(&format!("{}\n", marker(&r.report_id)))
        );
        let full = d.stored_attachments.last().expect("full text stored");
        assert_eq!(full.index, r.attachments.len());
        assert_eq!(full.data(&r), Some(r.text.as_bytes()));
        assert!(full.file_name.ends_with(".txt"));
        assert!(d.description.contains(&inline_code(&full.file_name)));
        pre_blocks(&d.description);
    }

    #[test]
    fn attachments_that_no_longer_fit_are_listed_but_not_shown() {
        let mut r = fixture("patch-and-binary.eml");
        r.text = "x".repeat(DESCRIPTION_LIMIT);
        let d = render(&r);
        assert!(github_len(&d.description) <= DESCRIPTION_LIMIT);
        assert!(!d.description.contains("### Attachment 1"));
        assert!(
            d.description
                .contains("| 1 | <code>fix&#45;escape&#46;patch</code>")
        );
        assert_eq!(d.stored_attachments.len(), 3);
    }

    #[test]
    fn many_attachments_with_huge_names_and_a_huge_subject_still_fit() {
        let mut r = fixture("patch-and-binary.eml");
        r.subject = "|<@x>".repeat(20_000);
        let template = r.attachments[0].clone();
        r.attachments = (0..300)
            .map(|i| crate::mail::Attachment {
                filename: Some(format!("{i}{}", "|`<".repeat(100))),
                ..template.clone()
            })
            .collect();
        r.text = "report ".repeat(20_000);
        let d = render(&r);
        assert!(
            github_len(&d.description) <= DESCRIPTION_LIMIT,
            "{}",
            github_len(&d.description)
        );
        assert!(
            d.description
                .contains("more attachment(s) are not listed here")
        );
        assert_eq!(
            d.stored_attachments.len(),
            301,
            "all attachments and the full text are kept"
        );
        assert!(
            d.description
                .ends_with(&format!("{}\n", marker(&r.report_id)))
        );
        assert_eq!(d.summary.chars().count(), SUMMARY_LIMIT);
    }

    #[test]
    fn no_mix_of_dangerous_tokens_breaks_out_of_its_place() {
        const TOKENS: &[&str] = &[
            "<",
            ">",
            "&",
            "</pre>",
            "</PRE >",
            "<pre>",
            "```",
            "~~~",
            "@team",
            "@org/team",
            "|",
            "\n",
            "\r",
            "\t",
            "<!--",
            "-->",
            "advisory-bridge report-id=",
            "\u{202E}",
            "\u{2066}",
            "![x](http://e/x.png)",
            "<img src=x>",
            "`",
            "\\",
            "*",
            "_",
            "[l](u)",
            "    ",
            "#",
            "&lt;",
            "</code>",
            "<code>",
            "é",
            "😀",
            "\u{0}",
            "\u{85}",
        ];
        let base = fixture("patch-and-binary.eml");
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..300 {
            let mut piece = || {
                (0..40)
                    .map(|_| TOKENS[next() % TOKENS.len()])
                    .collect::<String>()
            };
            let mut r = base.clone();
            r.text = piece();
            r.subject = crate::mail::clean::single_line(&piece());
            r.attachments[0].filename = Some(piece());
            r.attachments[0].data = piece().into_bytes();
            r.attachments[0].content_type = piece();
            r.from = Some(Address {
                name: Some(piece()),
                email: piece(),
            });
            let d = render_with(
                &r,
                &AdvisoryConfig {
                    include_reporter_email: true,
                    ..AdvisoryConfig::default()
                },
            );
            let desc = &d.description;
            assert_eq!(desc.matches("<!--").count(), 1, "{desc}");
            assert!(desc.ends_with(&format!("{}\n", marker(&r.report_id))));
            pre_blocks(desc);
            let ours = desc
                .replace("<pre>", "")
                .replace("</pre>", "")
                .replace("<code>", "")
                .replace("</code>", "")
                .replace(&marker(&r.report_id), "");
            assert!(
                !ours.contains('<'),
                "a `<` from the report survived:\n{desc}"
            );
            assert!(
                !desc.contains(['\r', '\u{202E}', '\u{2066}', '\u{0}']),
                "{desc:?}"
            );
            for line in desc.lines().filter(|l| l.starts_with("| ")) {
                let pipes = line.matches('|').count();
                assert!(pipes == 3 || pipes == 7, "{line}");
            }
            assert!(!d.summary.contains(['\r', '\n']));
        }
    }

    #[test]
    fn the_summary_drops_reply_prefixes_and_list_tags() {
        let mut r = fixture("no-project.eml");
        r.subject = "Re: AW: [security] Fwd:  WG: [pallets]   XSS  in   templates".into();
        assert_eq!(render(&r).summary, "XSS in templates");
        r.subject = "Bug in dict[str] handling".into();
        assert_eq!(render(&r).summary, "Bug in dict[str] handling");
    }

    #[test]
    fn without_a_subject_the_summary_names_the_reporter_and_date() {
        let mut r = fixture("no-project.eml");
        r.subject = "Re: ".into();
        assert_eq!(
            render(&r).summary,
            "Security report from Frank (2026-11-30)"
        );
        r.from = None;
        r.date = None;
        assert_eq!(
            render(&r).summary,
            "Security report from an email reporter (2026-11-24)"
        );
    }

    #[test]
    fn a_long_subject_is_cut_to_the_summary_limit_on_a_character_boundary() {
        let mut r = fixture("no-project.eml");
        r.subject = "é".repeat(2000);
        let s = render(&r).summary;
        assert_eq!(s.chars().count(), SUMMARY_LIMIT);
    }

    #[test]
    fn an_emoji_subject_is_cut_to_the_summary_limit_as_github_counts() {
        let mut r = fixture("no-project.eml");
        r.subject = "😀".repeat(2000);
        let s = render(&r).summary;
        assert_eq!(github_len(&s), SUMMARY_LIMIT);
        assert_eq!(s.chars().count(), SUMMARY_LIMIT / 2);
    }

    #[test]
    fn without_a_date_the_received_time_is_shown() {
        let mut r = fixture("no-project.eml");
        r.date = None;
        let d = render(&r);
        assert!(
            d.description.contains(
                "| Date | 2026-11-24 09:00 UTC (received; the message had no valid date) |"
            )
        );
    }

    #[test]
    fn an_html_report_says_it_was_converted() {
        let d = render(&fixture("html-latin1.eml"));
        assert!(d.description.contains("The message was HTML only"));
        assert!(
            d.description
                .contains("preuve de concept (https://example.org/poc/flask-session)")
        );
    }

    #[test]
    fn stored_names_keep_only_whitelisted_extensions() {
        let sha = "0123456789abcdef".repeat(4);
        assert_eq!(
            stored_name(1, &sha, Some("poc.py"), "text/x-python"),
            "1-0123456789ab.py"
        );
        assert_eq!(
            stored_name(2, &sha, Some("../../x.sh;rm -rf"), "text/plain"),
            "2-0123456789ab.txt"
        );
        assert_eq!(
            stored_name(3, &sha, Some("evil.exe"), "application/x-msdownload"),
            "3-0123456789ab.bin"
        );
        assert_eq!(
            stored_name(4, &sha, None, "message/rfc822"),
            "4-0123456789ab.eml"
        );
        assert_eq!(
            stored_name(5, &sha, Some("A.PNG"), "image/png"),
            "5-0123456789ab.png"
        );
    }

    // ---- replies ----

    fn ghsa() -> AdvisoryRef {
        AdvisoryRef {
            ghsa_id: "GHSA-abcd-efgh-ijkl".into(),
            html_url: "https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl"
                .into(),
            repository: "pallets/werkzeug".into(),
        }
    }

    fn us() -> Address {
        Address {
            name: Some("Pallets Security".into()),
            email: "security@palletsprojects.com".into(),
        }
    }

    fn pallets() -> ReplyConfig {
        ReplyConfig {
            project_name: "Pallets".into(),
            ..ReplyConfig::default()
        }
    }

    fn reply_to(report: &Report) -> ReplyMessage {
        let settings = pallets();
        let templates = Templates::load(&settings).expect("built-in template loads");
        let to = report.from.clone().unwrap();
        reply(report, &to, &ghsa(), &us(), &settings, &templates).expect("reply renders")
    }

    #[test]
    fn the_acknowledgement_keeps_the_policy_promises_and_is_threaded() {
        let r = fixture("plain-werkzeug.eml");
        let m = reply_to(&r);
        assert_eq!(
            m.subject,
            "Re: Path traversal in Werkzeug safe_join on Windows [GHSA-abcd-efgh-ijkl]"
        );
        assert_eq!(
            m.message_id,
            format!("advisory-bridge.{}@palletsprojects.com", r.report_id)
        );
        assert_eq!(
            m.in_reply_to.as_deref(),
            Some("20261124091500.4242@mail.example.net")
        );
        assert_eq!(m.references, vec!["20261124091500.4242@mail.example.net"]);
        assert_eq!(m.to.email, "alice@example.net");
        assert_eq!(m.from, us());
        let body = &m.body;
        for promise in [
            "Hello Alice Reporter,",
            "Thank you for reporting a security issue to Pallets.",
            "private draft GitHub security advisory,\nGHSA-abcd-efgh-ijkl, in the pallets/werkzeug repository",
            "https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl",
            "volunteers working in their free time",
            "cannot guarantee any specific timeline",
            "work with you to understand the issue and decide on its validity",
            "We will obtain a CVE id as well; please do not request one yourself.",
            "keep the issue private",
            "https://palletsprojects.com/security",
            "reply to this email",
        ] {
            assert!(body.contains(promise), "missing {promise:?} in:\n{body}");
        }
        assert!(!body.contains("safe_join"), "the report is never quoted");
        assert!(!body.contains("{{") && !body.contains("{%"));
    }

    #[test]
    fn a_hostile_subject_cannot_inject_headers_into_the_reply() {
        let m = reply_to(&fixture("hostile.eml"));
        assert!(
            !m.subject.contains(['\r', '\n', '\u{202E}']),
            "{:?}",
            m.subject
        );
        assert!(
            m.subject
                .starts_with("Re: Flask bug Bcc: victim@example.org")
        );
        assert!(m.subject.ends_with(" [GHSA-abcd-efgh-ijkl]"));
        assert!(!m.to.name.unwrap().contains(['\r', '\n']));
        assert!(!m.body.contains("@davidism"));
    }

    #[test]
    fn a_follow_up_subject_already_tagged_is_not_tagged_twice() {
        let mut r = fixture("no-project.eml");
        r.subject = "Re: Re: Session fixation [ghsa-ABCD-efgh-ijkl]".into();
        assert_eq!(
            reply_to(&r).subject,
            "Re: Session fixation [GHSA-abcd-efgh-ijkl]"
        );
        r.subject = "[GHSA-abcd-efgh-ijkl] first, then text".into();
        assert_eq!(
            reply_to(&r).subject,
            "Re: first, then text [GHSA-abcd-efgh-ijkl]",
            "a leading tag goes like any [tag]"
        );
    }

    #[test]
    fn a_long_subject_is_cut_and_a_missing_one_replaced() {
        let mut r = fixture("no-project.eml");
        r.subject = format!("Fwd: {}", "word ".repeat(100));
        let m = reply_to(&r);
        assert!(m.subject.chars().count() < 200, "{}", m.subject);
        assert!(m.subject.contains("…"));
        r.subject = String::new();
        assert_eq!(
            reply_to(&r).subject,
            "Re: Your security report [GHSA-abcd-efgh-ijkl]"
        );
    }

    #[test]
    fn references_are_deduplicated_limited_and_header_safe() {
        let mut r = fixture("no-project.eml");
        r.references = (0..30).map(|i| format!("ref{i}@example.org")).collect();
        r.references.push("noproj-1@example.org".into());
        r.references.push("bad id\r\nX: y".into());
        let m = reply_to(&r);
        assert_eq!(m.references.len(), 20);
        assert_eq!(m.references[0], "ref0@example.org");
        assert_eq!(m.references.last().unwrap(), "noproj-1@example.org");
        assert_eq!(
            m.references
                .iter()
                .filter(|x| *x == "noproj-1@example.org")
                .count(),
            1
        );
        assert!(m.references.iter().all(|id| header_safe_id(id)));
        r.message_id = None;
        assert_eq!(reply_to(&r).in_reply_to, None);
    }

    #[test]
    fn a_custom_template_is_used_and_a_typo_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.j2");
        std::fs::write(
            &good,
            "Dear {{ reporter_name }}: {{ ghsa_id }} <{{ advisory_url }}> & {{ subject }}\n",
        )
        .unwrap();
        let settings = ReplyConfig {
            template: Some(good),
            ..pallets()
        };
        let templates = Templates::load(&settings).unwrap();
        let r = fixture("html-latin1.eml");
        let m = reply(
            &r,
            r.from.as_ref().unwrap(),
            &ghsa(),
            &us(),
            &settings,
            &templates,
        )
        .unwrap();
        assert_eq!(
            m.body,
            "Dear José Müller: GHSA-abcd-efgh-ijkl <https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl> & Problème de sécurité dans la session\n",
            "no HTML escaping in text mail"
        );

        let typo = dir.path().join("typo.j2");
        std::fs::write(&typo, "Hello {{ reporter_nmae }}\n").unwrap();
        let err = Templates::load(&ReplyConfig {
            template: Some(typo.clone()),
            ..pallets()
        })
        .err()
        .expect("undefined variable is an error");
        let msg = err.to_string();
        assert!(
            msg.contains("typo.j2") && msg.contains("undefined"),
            "{msg}"
        );

        let broken = dir.path().join("broken.j2");
        std::fs::write(&broken, "Hello {% if %}\n").unwrap();
        assert!(matches!(
            Templates::load(&ReplyConfig {
                template: Some(broken),
                ..pallets()
            }),
            Err(TemplateError::Render { .. })
        ));

        let missing = dir.path().join("missing.j2");
        assert!(matches!(
            Templates::load(&ReplyConfig {
                template: Some(missing),
                ..pallets()
            }),
            Err(TemplateError::Read { .. })
        ));
    }
}
