//! The advisory GitHub receives for a report: summary, the neutralised description with
//! its metadata table and attachments, and the hidden marker that names the report.
//! Pure: attachments to keep are returned, the engine stores them.

use crate::config::{AdvisoryConfig, RepositoryConfig};
use crate::mail::clean::single_line;
use crate::mail::{Address, Report};
use crate::route::{Route, RouteReason};

use super::markdown::{DIGESTS_CLOSE, DIGESTS_OPEN, github_len, inline_code, pre_block};

/// GitHub's limit on an advisory summary, in characters.
pub const SUMMARY_LIMIT: usize = 1024;
/// GitHub's limit on an advisory description, in characters.
pub const DESCRIPTION_LIMIT: usize = 65535;

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

/// Largest file committed to the attachments repository: GitHub refuses blobs of about
/// 40 MiB and larger, so bigger files stay in `state_dir` only, with a note.
pub const MAX_UPLOAD_BYTES: usize = 39 * 1024 * 1024;

/// The private repository that receives a report's attachments, and the web address its
/// pages are under (`https://github.com`).
#[derive(Debug, Clone, Copy)]
pub struct AttachmentsTarget<'a> {
    /// `owner/name`.
    pub repository: &'a str,
    /// The GitHub web root, without a trailing slash.
    pub web_url: &'a str,
}

/// The attachments to commit to the attachments repository, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentUpload {
    /// `owner/name` of the attachments repository.
    pub repository: String,
    /// The branch that will hold them (`reports/<opaque id>`): keyed from the report id,
    /// so it names no file and no report detail, and is the same on every attempt.
    pub branch: String,
    /// Stored names of the files to commit (those up to [`MAX_UPLOAD_BYTES`]), each in
    /// the render's stored attachments.
    pub files: Vec<String>,
}

impl AttachmentUpload {
    /// Where `target` will show the branch of `id`'s attachments, and the upload with no
    /// files yet.
    pub(super) fn new(
        target: &AttachmentsTarget<'_>,
        marker: &super::MarkerKey,
        id: &crate::mail::ReportId,
    ) -> (AttachmentUpload, String) {
        let branch = marker.attachments_branch(id);
        let base = format!("{}/{}", target.web_url, target.repository);
        (
            AttachmentUpload {
                repository: target.repository.to_owned(),
                branch,
                files: Vec::new(),
            },
            base,
        )
    }
}

/// How the attachment listing links files: the upload and the repository's web root.
pub(super) struct Links<'a> {
    pub(super) upload: &'a AttachmentUpload,
    pub(super) base: &'a str,
}

impl Links<'_> {
    fn file(&self, name: &str) -> String {
        format!("{}/blob/{}/{name}", self.base, self.upload.branch)
    }
    fn tree(&self) -> String {
        format!("{}/tree/{}", self.base, self.upload.branch)
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
    /// GitHub logins credited as `reporter` (checked to exist by the engine).
    pub credits: Vec<String>,
    /// GitHub logins added as collaborators on the draft (`[advisory] invite_reporter`).
    pub collaborators: Vec<String>,
    /// The attachments to commit before the draft is created (its description links
    /// to them), when `[attachments]` names a repository for this owner.
    pub upload: Option<AttachmentUpload>,
    /// What the report shows that helps triage it: its valid CVSS vector and CWE ids
    /// are prefilled (GitHub then computes the severity; it takes a vector or a
    /// severity, never both), the rest is shown to maintainers.
    pub signals: crate::triage::Signals,
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
    /// The key of the hidden marker.
    pub marker: &'a super::MarkerKey,
    /// Where the attachments go on GitHub, if anywhere.
    pub attachments: Option<AttachmentsTarget<'a>>,
    /// An earlier report this one probably repeats (found by the engine).
    pub duplicate: Option<&'a crate::triage::Duplicate>,
}

/// Room kept free below [`DESCRIPTION_LIMIT`], in case GitHub counts a little differently
/// (line endings, normalisation) than [`markdown::github_len`].
pub(super) const DESCRIPTION_MARGIN: usize = 1024;

/// The visible note that opens every description: it becomes public on publication.
const PUBLIC_NOTE: &str = "> **This draft was created automatically from an email report** sent to the security \
address. When the advisory is published, this description becomes **public**: edit it \
before publishing, and remove the reporter's details and anything else that must \
stay private.\n";

/// Renders the draft advisory for a report.
///
/// The description has, in order: the note that it becomes public, a metadata table
/// (reporter, date, reference, how it was received, sender authentication, why this
/// repository), the report text as safe Markdown ([`super::body`]), the attachments (small textual
/// ones shown, all listed with size and SHA-256), and the hidden marker once at the
/// very end. See [`markdown`] for why the neutralisation is safe. When everything would
/// not fit GitHub's limit, the report text is cut with a note and kept in full as a
/// stored attachment, and attachments that no longer fit are listed but not shown.
pub fn advisory(report: &Report, ctx: &AdvisoryContext<'_>) -> AdvisoryDraft {
    let limit = DESCRIPTION_LIMIT - DESCRIPTION_MARGIN;
    let signals = crate::triage::signals(report);
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

    let head = format!("{PUBLIC_NOTE}\n{}\n", metadata_table(report, ctx, &signals));
    let marker_line = format!("\n{}\n", ctx.marker.report(&report.report_id));
    let upload = (!report.attachments.is_empty())
        .then_some(ctx.attachments)
        .flatten()
        .map(|t| AttachmentUpload::new(&t, ctx.marker, &report.report_id));
    let links = upload.as_ref().map(|(upload, base)| Links { upload, base });
    let listing = attachment_listing(report, &stored, "## Attachments", links.as_ref());

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
        let (body, complete) = super::body::report_markdown(&report.text, text_budget);
        description.push('\n');
        description.push_str(&body);
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
        upload: upload.map(|(u, _)| u.with_files(report, &stored)),
        stored_attachments: stored,
        credits: Vec::new(),
        collaborators: Vec::new(),
        signals,
    }
}

impl AttachmentUpload {
    /// This upload with every stored attachment small enough for GitHub.
    pub(super) fn with_files(
        mut self,
        report: &Report,
        stored: &[StoredAttachment],
    ) -> AttachmentUpload {
        self.files = stored
            .iter()
            .filter(|s| s.data(report).is_some_and(|d| d.len() <= MAX_UPLOAD_BYTES))
            .map(|s| s.file_name.clone())
            .collect();
        self
    }
}

/// The sender as shown in a description: display name, and the address only when
/// `include_reporter_email` is set (the description becomes public).
pub(super) fn sender_cell(from: Option<&Address>, settings: &AdvisoryConfig) -> String {
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

fn metadata_table(
    report: &Report,
    ctx: &AdvisoryContext<'_>,
    signals: &crate::triage::Signals,
) -> String {
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
        ("Encryption", encryption(report)),
        ("Routed here because", route_reason(&ctx.route.reason)),
    ];
    if let Some(d) = ctx.duplicate {
        rows.push((
            "Possible duplicate",
            format!(
                "**probably the same as [{}]({}) in {}**, similarity {:.2}",
                d.ghsa_id.trim(),
                d.url.trim(),
                inline_code(&d.repository),
                d.similarity
            ),
        ));
    }
    rows.push(("Triage signals", signal_cell(signals)));
    if report.subject.is_empty() {
        rows.retain(|(k, _)| *k != "Subject");
    }
    if report.encryption == crate::openpgp::Encryption::Plain {
        rows.retain(|(k, _)| *k != "Encryption");
    }
    let mut table = String::from("| | |\n| --- | --- |\n");
    for (key, value) in rows {
        table.push_str(&format!("| {key} | {value} |\n"));
    }
    table
}

/// The triage checklist in one cell: each signal found with its reason, or "not
/// found"; values from the report as inline code.
fn signal_cell(s: &crate::triage::Signals) -> String {
    let found = |v: &Option<String>, what: &str| match v {
        Some(v) => format!("{what}: {}", inline_code(v)),
        None => format!("{what}: not found"),
    };
    let poc = match &s.proof_of_concept {
        // Our own words, never report text.
        Some(why) => format!("proof of concept: yes ({why})"),
        None => "proof of concept: not found".to_owned(),
    };
    let cvss = match &s.cvss {
        Some(Ok(v)) => format!("CVSS: {} (prefilled)", inline_code(v)),
        Some(Err(e)) => format!("CVSS: invalid, not prefilled ({})", inline_code(e)),
        None => "CVSS: not given".to_owned(),
    };
    let cwe = if s.cwe_ids.is_empty() {
        "CWE: not given".to_owned()
    } else {
        format!("CWE: {} (prefilled)", inline_code(&s.cwe_ids.join(", ")))
    };
    [
        poc,
        found(&s.version, "version"),
        cvss,
        cwe,
        found(&s.file, "file"),
    ]
    .join(" · ")
}

/// How the report was encrypted and what its signature says (fingerprints are hex).
fn encryption(report: &Report) -> String {
    use crate::openpgp::Encryption;
    match &report.encryption {
        Encryption::Plain => "none".to_owned(),
        Encryption::Decrypted { format, signature } => {
            format!("encrypted ({format}); {signature}")
        }
        Encryption::Unreadable { format, .. } => {
            format!("encrypted ({format}); could not be decrypted")
        }
    }
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
pub(super) fn inline_attachments(
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
        let section = format!(
            "{heading} {}: {}\n\n{}",
            i + 1,
            inline_code(a.filename.as_deref().unwrap_or("(no name)")),
            super::body::attachment_block(text, is_patch(a))
        );
        if used + github_len(&section) <= room {
            used += github_len(&section);
            out.push_str(&section);
        }
    }
    out
}

/// Whether an attachment says it is a patch, by its name or type.
fn is_patch(a: &crate::mail::Attachment) -> bool {
    let ext = a
        .filename
        .as_deref()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    matches!(ext.as_deref(), Some("patch" | "diff"))
        || matches!(
            a.content_type.as_str(),
            "text/x-patch" | "text/x-diff" | "application/x-patch" | "application/x-diff"
        )
}

/// Hex digits of an attachment's SHA-256 shown in the table, as in the stored name.
const SHORT_HASH: usize = 12;

/// Room the attachment table may take at most; the rest is left for the report text.
const LISTING_MAX_CHARS: usize = 24_000;

/// The table of a report's attachments under the Markdown `heading` line (e.g.
/// `## Attachments`), naming each by its stored name in `stored`.
pub(super) fn attachment_listing(
    report: &Report,
    stored: &[StoredAttachment],
    heading: &str,
    links: Option<&Links<'_>>,
) -> String {
    if report.attachments.is_empty() {
        return String::new();
    }
    let intro = match links {
        Some(l) => format!(
            "All attachments are in the private repository {} on branch [{}]({}), named \
             as below (the links open them), and kept by advisory-bridge; small text \
             attachments are also shown.",
            inline_code(&l.upload.repository),
            l.upload.branch,
            l.tree()
        ),
        None => "All attachments are kept by advisory-bridge under the names below; small \
                 text attachments are also shown."
            .to_owned(),
    };
    let mut s = format!(
        "\n{heading}\n\n{intro}\n\n\
         | # | Name | Type | Size | SHA-256 | Stored as |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let mut listed = 0;
    for (i, a) in report.attachments.iter().enumerate() {
        let stored_as = stored
            .iter()
            .find(|s| s.index == i && s.generated.is_none())
            .map_or_else(String::new, |s| match links {
                Some(l) if a.data.len() <= MAX_UPLOAD_BYTES => {
                    format!("[{}]({})", s.file_name, l.file(&s.file_name))
                }
                Some(_) => format!(
                    "{} (too large for GitHub: kept by advisory-bridge only)",
                    inline_code(&s.file_name)
                ),
                None => inline_code(&s.file_name),
            });
        let row = format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            a.filename
                .as_deref()
                .map_or_else(|| "(no name)".to_owned(), inline_code),
            inline_code(&a.content_type),
            human_size(a.data.len()),
            inline_code(&a.sha256[..a.sha256.len().min(SHORT_HASH)]),
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
        listed += 1;
    }
    // The full digests, for whoever verifies a file, folded away under the table.
    let digests: String = report.attachments[..listed]
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}  {}\n", i + 1, a.sha256))
        .collect();
    s.push_str(&format!(
        "\n{DIGESTS_OPEN}{}{DIGESTS_CLOSE}\n",
        pre_block(&digests)
    ));
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
    const PREFIXES: [&str; 9] = [
        "re:", "fwd:", "fw:", "aw:", "wg:", "sv:", "vs:", "tr:", "antw:",
    ];
    let cleaned = single_line(subject);
    // One pass over a shrinking slice: each step removes what it looked at, so the
    // whole walk is linear in the subject, however many prefixes it stacks.
    let mut rest = cleaned.as_str();
    loop {
        rest = rest.trim_start();
        let prefix = PREFIXES
            .iter()
            .find(|p| {
                rest.get(..p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p))
            })
            .map(|p| p.len())
            // `[list-tag]` or `Re[2]:`-style counters.
            .or_else(|| {
                rest.starts_with('[')
                    .then(|| rest.find(']').map(|i| i + 1))
                    .flatten()
            });
        match prefix {
            Some(n) => rest = &rest[n..],
            None => break,
        }
    }
    rest.trim_end().to_owned()
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::render::test_support::{TEST_KEY, fixture};
    use chrono::TimeZone;

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
                marker: &TEST_KEY,
                attachments: None,
                duplicate: None,
            },
        )
    }

    fn render(report: &Report) -> AdvisoryDraft {
        render_with(report, &AdvisoryConfig::default())
    }

    /// The code blocks of a description (`<pre>` blocks other than our digest list, and
    /// fences), checking each closes and nothing inside a `<pre>` can close it; and the
    /// lines outside them.
    fn split_code(description: &str) -> (Vec<String>, String) {
        enum In<'a> {
            Out,
            Pre(Vec<&'a str>),
            Fence(&'a str, Vec<&'a str>),
        }
        let mut blocks = Vec::new();
        let mut outside = String::new();
        let mut state = In::Out;
        for line in description.lines() {
            state = match state {
                In::Out if line == "<pre>" => In::Pre(Vec::new()),
                In::Out if line.starts_with("```") => {
                    let n = line.len() - line.trim_start_matches('`').len();
                    In::Fence(&line[..n], Vec::new())
                }
                In::Out => {
                    outside.push_str(line);
                    outside.push('\n');
                    In::Out
                }
                In::Pre(lines) if line == "</pre>" => {
                    // The folded digest list is ours, not report content.
                    let digests = !lines.is_empty()
                        && lines.iter().all(|l| {
                            l.split_once("  ").is_some_and(|(n, h)| {
                                n.parse::<usize>().is_ok()
                                    && h.len() == 64
                                    && h.chars().all(|c| c.is_ascii_hexdigit())
                            })
                        });
                    if !digests {
                        blocks.push(lines.join("\n"));
                    }
                    In::Out
                }
                In::Pre(mut lines) => {
                    assert!(
                        !line.to_ascii_lowercase().contains("</pre"),
                        "block broken by {line:?}"
                    );
                    lines.push(line);
                    In::Pre(lines)
                }
                In::Fence(fence, lines) if line == fence => {
                    blocks.push(lines.join("\n"));
                    In::Out
                }
                In::Fence(fence, mut lines) => {
                    assert!(!line.contains("<!--"), "a comment in a fence: {line:?}");
                    lines.push(line);
                    In::Fence(fence, lines)
                }
            };
        }
        assert!(matches!(state, In::Out), "unclosed code block");
        (blocks, outside)
    }

    /// The code blocks of a description; see [`split_code`].
    fn pre_blocks(description: &str) -> Vec<String> {
        split_code(description).0
    }

    /// The description without the digest `<details>` wrapper we write ourselves.
    pub(in crate::render) fn without_our_details(description: &str) -> String {
        description
            .replace(DIGESTS_OPEN, "")
            .replace(DIGESTS_CLOSE, "")
    }

    /// The description with code blocks and `<code>` spans removed: what GitHub would
    /// treat as Markdown.
    pub(in crate::render) fn markdown_outside_code(description: &str) -> String {
        let mut out = String::new();
        for l in split_code(description).1.lines() {
            let mut rest = l;
            while let Some(start) = rest.find("<code>") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find("</code>").expect("code closes") + start;
                rest = &rest[end + 7..];
            }
            out.push_str(rest);
            out.push('\n');
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
        assert!(blocks[0].contains(">>> from werkzeug.security import safe_join"));
        // Paragraphs are Markdown that wraps, escaped.
        assert!(
            d.description
                .contains("werkzeug.security.safe\\_join when the application\nruns on Windows"),
            "{}",
            d.description
        );
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
                .ends_with(&format!("\n{}\n", TEST_KEY.report(&r.report_id)))
        );
        assert_eq!(
            d.description
                .matches(&TEST_KEY.report(&r.report_id))
                .count(),
            1
        );
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
                "| Reporter | <code>Alice Reporter &lt;alice&#64;&#8203;example&#46;&#8203;net&gt;</code> |"
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
        assert!(desc.ends_with(&format!("{}\n", TEST_KEY.report(&r.report_id))));
        assert!(desc.contains("&lt;\\!-- advisory-bridge report-id=0000"));
        // No raw HTML from the report outside code blocks, where it is shown as text;
        // mentions, links, images and fences only inside code, where they are inert.
        let md = without_our_details(&markdown_outside_code(desc));
        for inert in [
            "<img",
            "<script",
            "</details>",
            "<b>",
            "@pallets",
            "@davidism",
            "@everyone",
            "![",
            "```",
            "~~~",
            "://evil.example",
        ] {
            assert!(!md.contains(inert), "{inert} outside code:\n{md}");
        }
        assert!(
            md.contains("Hi @&#8203;pallets/maintainers and @&#8203;davidism"),
            "{md}"
        );
        // The reporter's two fences stay code blocks (the second, six backticks, unclosed,
        // runs to the end as GitHub would show it), then the text attachment.
        let blocks = pre_blocks(desc);
        assert_eq!(blocks.len(), 3, "{blocks:#?}");
        assert_eq!(blocks[0], "closing the fence early");
        assert!(
            blocks[1].contains("abc\\u{202E}dcba"),
            "bidi override made visible"
        );
        assert!(blocks[1].contains("zero\\u{0000}nul"));
        assert!(blocks[2].contains("@everyone <b>bold</b>"), "{}", blocks[2]);
        assert!(!desc.contains('\u{202E}') && !desc.contains('\u{2066}'));
        // The subject cell stays on one line and one cell.
        let subject_row = desc.lines().find(|l| l.starts_with("| Subject |")).unwrap();
        assert_eq!(subject_row.matches('|').count(), 3, "{subject_row}");
        // The attachment's hostile name is escaped in the listing, not used for storage.
        let row = desc.lines().find(|l| l.starts_with("| 1 |")).unwrap();
        assert_eq!(row.matches('|').count(), 7, "{row}");
        assert!(
            row.contains("&#46;&#8203;&#46;&#8203;&#47;&#46;&#8203;&#46;&#8203;&#47;etc&#47;evil&#124;&#96;name&#96;&#46;&#8203;txt"),
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
        assert_eq!(blocks.len(), 1, "the patch; the report text is paragraphs");
        assert!(blocks[0].starts_with("diff --git a/src/markupsafe/__init__.py"));
        assert!(d.description.contains("\n```diff\ndiff --git"));
        assert!(
            d.description
                .contains("### Attachment 1: <code>fix&#45;escape&#46;&#8203;patch</code>")
        );
        assert!(!d.description.contains("### Attachment 2"));
        assert!(
            d.description.contains(
                "| 2 | <code>alert&#46;&#8203;png</code> | <code>image&#47;png</code> | 70 bytes |"
            ),
            "{}",
            d.description
        );
        // The table shows 12 hex digits; a details block has every full digest.
        let full = &r.attachments[1].sha256;
        let row = d
            .description
            .lines()
            .find(|l| l.starts_with("| 2 |"))
            .unwrap();
        assert!(
            row.contains(&format!("<code>{}</code>", &full[..12])),
            "{row}"
        );
        assert!(!row.contains(full.as_str()), "{row}");
        let details = &d.description[d.description.find("<details>").expect("details")..];
        assert!(details.contains(&format!("2  {full}")), "{details}");
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
        assert_eq!(pre_blocks(&d.description).len(), 0);
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
        assert_eq!(
            d.description
                .matches(&TEST_KEY.report(&r.report_id))
                .count(),
            1
        );
        assert!(
            d.description
                .ends_with(&format!("{}\n", TEST_KEY.report(&r.report_id)))
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
                .contains("| 1 | <code>fix&#45;escape&#46;&#8203;patch</code>")
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
                .ends_with(&format!("{}\n", TEST_KEY.report(&r.report_id)))
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
            assert!(desc.ends_with(&format!("{}\n", TEST_KEY.report(&r.report_id))));
            pre_blocks(desc);
            let ours = markdown_outside_code(&without_our_details(desc))
                .replace(&TEST_KEY.report(&r.report_id), "");
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
                .contains("preuve de concept (https:&#8203;//example.org/poc/flask-session)"),
            "{}",
            d.description
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
}
