//! Mail to the maintainers: one note per new draft (GitHub notifies no one of drafts
//! created through its API) and a digest of drafts nobody has touched for a while, the
//! deadline clock GitHub does not keep. Plain text, private mail: the reporter's address
//! is shown, the report text only with `[maintainers] include_report`.

use chrono::{DateTime, Utc};

use crate::auth::Verdict;
use crate::journal::Entry;
use crate::mail::clean::single_line;
use crate::mail::{Address, Report};

use super::advisory::{AdvisoryDraft, MAX_UPLOAD_BYTES};
use super::message_id::{self, Kind};
use super::outgoing::{AdvisoryRef, ReplyMessage};

/// Longest summary shown in a subject, in characters.
const SUBJECT_SUMMARY_CHARS: usize = 120;

/// Everything the note about a new draft says.
pub struct DraftNote<'a> {
    /// The report.
    pub report: &'a Report,
    /// Its advisory.
    pub advisory: &'a AdvisoryRef,
    /// The draft as rendered (summary, attachments, upload).
    pub draft: &'a AdvisoryDraft,
    /// Why this repository.
    pub route_reason: &'a str,
    /// What the receiving server said of the sender.
    pub verdict: &'a Verdict,
    /// Put the report text in the mail.
    pub include_report: bool,
    /// The GitHub web root, for the attachments link.
    pub web_url: &'a str,
    /// When the report arrived.
    pub received_at: DateTime<Utc>,
    /// An earlier report this one probably repeats.
    pub duplicate: Option<&'a crate::triage::Duplicate>,
}

/// The note telling maintainer `to` of a new draft. Its `Message-ID` is stable per
/// report, so a resend after a crash is folded by mail clients.
pub fn new_draft(note: &DraftNote<'_>, to: &Address, from: &Address) -> ReplyMessage {
    let r = note.report;
    let a = note.advisory;
    // This mail goes out in the clear: nothing decrypted goes into it.
    let encrypted = r.encryption != crate::openpgp::Encryption::Plain;
    let summary = if encrypted {
        "(an encrypted report: its summary is in the advisory)".to_owned()
    } else {
        cut(&single_line(&note.draft.summary), SUBJECT_SUMMARY_CHARS)
    };
    let reporter = match &r.from {
        Some(Address {
            name: Some(name),
            email,
        }) => format!("{} <{}>", single_line(name), single_line(email)),
        Some(Address { email, .. }) => single_line(email),
        None => "(no sender)".to_owned(),
    };
    let authentication = match note.verdict {
        Verdict::Authenticated { server } => format!("authenticated (according to {server})"),
        Verdict::Failed { server, reason } => format!(
            "FAILED ({reason}, according to {server}): the From address may be forged; no reply was sent"
        ),
        Verdict::Unknown => "not recorded".to_owned(),
    };
    let mut body = format!(
        "A new security report is a private draft advisory on GitHub. GitHub tells no one\n\
         of drafts created through its API; this mail does.\n\n\
         Advisory:        {ghsa} in {repository}\n\
         \x20                {url}\n\
         Summary:         {summary}\n\
         Reporter:        {reporter}\n\
         Received:        {received}\n\
         Routed there:    {route}\n\
         Authentication:  {authentication}\n",
        ghsa = single_line(&a.ghsa_id),
        repository = single_line(&a.repository),
        url = single_line(&a.html_url),
        received = note.received_at.format("%Y-%m-%d %H:%M UTC"),
        route = single_line(note.route_reason),
    );
    if let Some(d) = note.duplicate {
        body.push_str(&format!(
            "Duplicate?       probably the same as {} in {} (similarity {:.2})\n\
             \x20                {}\n",
            single_line(&d.ghsa_id),
            single_line(&d.repository),
            d.similarity,
            single_line(&d.url)
        ));
    }
    let signals = &note.draft.signals;
    body.push_str(&format!(
        "Signals:         {}\n",
        match signals.summary().as_str() {
            "" => "none found (no proof of concept, version, CVSS, CWE or file named)".to_owned(),
            s => s.replace(' ', ", "),
        }
    ));
    if r.attachments.is_empty() {
        body.push_str("Attachments:     none\n");
    } else {
        body.push_str(&format!("Attachments:     {}\n", r.attachments.len()));
        for (i, att) in r.attachments.iter().enumerate() {
            let stored = note
                .draft
                .stored_attachments
                .iter()
                .find(|s| s.index == i && s.generated.is_none())
                .map_or("", |s| s.file_name.as_str());
            body.push_str(&format!(
                "  {}. {stored} ({}, {} bytes{})\n",
                i + 1,
                single_line(&att.content_type),
                att.data.len(),
                if att.data.len() > MAX_UPLOAD_BYTES {
                    ", kept by advisory-bridge only"
                } else {
                    ""
                }
            ));
        }
        if let Some(u) = &note.draft.upload {
            body.push_str(&format!(
                "  On GitHub: {}/{}/tree/{}\n",
                note.web_url, u.repository, u.branch
            ));
        }
    }
    if encrypted {
        body.push_str(
            "\nThe report came encrypted: its text is in the advisory only, never in this mail.\n",
        );
    } else if note.include_report {
        body.push_str("\nThe report as received (its text, also in the advisory):\n\n");
        for line in r.text.lines() {
            body.push_str("  ");
            body.push_str(&single_line(line));
            body.push('\n');
        }
    } else {
        body.push_str(
            "\nThe report text is in the advisory (maintainers.include_report = true puts it\n\
             in this mail too).\n",
        );
    }
    body.push_str(
        "\nAnswers to this mail reach the security address and are filed, not added to the\n\
         advisory: discuss the report on GitHub.\n",
    );
    ReplyMessage {
        to: to.clone(),
        from: from.clone(),
        subject: format!(
            "[{}] New draft {}: {summary}",
            single_line(&a.repository),
            single_line(&a.ghsa_id)
        ),
        message_id: message_id::make(&r.report_id, Kind::Maintainers, from),
        in_reply_to: None,
        references: Vec::new(),
        body,
        encrypt_to: None,
    }
}

/// The digest for `period` listing `stale` drafts (none updated on GitHub for
/// `remind_after_days`), oldest first.
pub fn digest(
    stale: &[Entry],
    remind_after_days: u32,
    period: u64,
    now: DateTime<Utc>,
    to: &Address,
    from: &Address,
) -> ReplyMessage {
    let mut body = format!(
        "{} draft advisor{} created from email reports {} not been touched on GitHub for\n\
         {remind_after_days} day{} or more. Reporters are waiting for an answer: triage \
         each one,\nor close it with a word to the reporter.\n\n",
        stale.len(),
        if stale.len() == 1 { "y" } else { "ies" },
        if stale.len() == 1 { "has" } else { "have" },
        if remind_after_days == 1 { "" } else { "s" },
    );
    for e in stale {
        let age = (now - e.first_seen_at).num_days();
        body.push_str(&format!(
            "- {} in {}, reported {} ({age} day{} ago): {}\n  {}\n",
            single_line(e.ghsa_id.as_deref().unwrap_or("?")),
            single_line(e.repository.as_deref().unwrap_or("?")),
            e.first_seen_at.format("%Y-%m-%d"),
            if age == 1 { "" } else { "s" },
            cut(
                &single_line(e.subject.as_deref().unwrap_or("(no subject)")),
                SUBJECT_SUMMARY_CHARS
            ),
            single_line(e.advisory_url.as_deref().unwrap_or("")),
        ));
    }
    body.push_str(
        "\nThis digest is sent by advisory-bridge every maintainers.digest_interval while\n\
         drafts wait; answers to it are filed, not acted on.\n",
    );
    ReplyMessage {
        to: to.clone(),
        from: from.clone(),
        subject: format!(
            "[advisory-bridge] {} draft advisor{} waiting for {remind_after_days}+ days",
            stale.len(),
            if stale.len() == 1 { "y" } else { "ies" }
        ),
        message_id: message_id::digest(period, from),
        in_reply_to: None,
        references: Vec::new(),
        body,
        encrypt_to: None,
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::fixture;

    fn us() -> Address {
        Address {
            name: Some("Pallets Security".into()),
            email: "security@palletsprojects.com".into(),
        }
    }

    #[test]
    fn the_note_names_the_draft_and_keeps_the_report_out_unless_asked() {
        let report = fixture("patch-and-binary.eml");
        let advisory = AdvisoryRef {
            ghsa_id: "GHSA-abcd-efgh-ijkl".into(),
            html_url:
                "https://github.com/pallets/markupsafe/security/advisories/GHSA-abcd-efgh-ijkl"
                    .into(),
            repository: "pallets/markupsafe".into(),
        };
        let draft = AdvisoryDraft {
            repository: advisory.repository.clone(),
            summary: "XSS\r\nBcc: victim@example.org".into(),
            description: String::new(),
            vulnerabilities: Vec::new(),
            stored_attachments: Vec::new(),
            credits: Vec::new(),
            collaborators: Vec::new(),
            upload: None,
            signals: Default::default(),
        };
        let verdict = Verdict::Unknown;
        let mut note = DraftNote {
            report: &report,
            advisory: &advisory,
            draft: &draft,
            route_reason: "the subject names \"markupsafe\"",
            verdict: &verdict,
            include_report: false,
            web_url: "https://github.com",
            received_at: chrono::Utc::now(),
            duplicate: None,
        };
        let to = Address {
            name: None,
            email: "team@example.org".into(),
        };
        let m = new_draft(&note, &to, &us());
        assert!(!m.subject.contains(['\r', '\n']), "{}", m.subject);
        assert!(
            m.subject
                .starts_with("[pallets/markupsafe] New draft GHSA-abcd-efgh-ijkl: XSS")
        );
        assert!(m.body.contains(&advisory.html_url), "{}", m.body);
        assert!(m.body.contains("Attachments:     2"), "{}", m.body);
        assert!(!m.body.contains("escape() does not escape"), "{}", m.body);
        assert!(message_id::is_to_maintainers(&m.message_id));
        note.include_report = true;
        let m = new_draft(&note, &to, &us());
        assert!(m.body.contains("escape() does not escape"), "{}", m.body);

        // A decrypted report's text and summary never go into this plain mail.
        let mut encrypted = report.clone();
        encrypted.encryption = crate::openpgp::Encryption::Decrypted {
            format: crate::openpgp::Format::PgpMime,
            signature: crate::openpgp::Signature::Unsigned,
        };
        note.report = &encrypted;
        let m = new_draft(&note, &to, &us());
        assert!(!m.body.contains("escape() does not escape"), "{}", m.body);
        assert!(!m.subject.contains("XSS"), "{}", m.subject);
        assert!(m.body.contains("came encrypted"), "{}", m.body);
    }
}
