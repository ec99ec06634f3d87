//! Append a follow-up mail to the description of the advisory its report became.
//!
//! GitHub's REST API has no comments on repository security advisories, so a follow-up
//! becomes a dated section at the end of the description, neutralised exactly like the
//! report itself (see [`super::markdown`]) and ending in its own hidden
//! authenticated follow-up marker (see [`super::marker`]), which report content can never
//! produce.

use chrono::{DateTime, Utc};

use crate::config::AdvisoryConfig;
use crate::mail::{Report, ReportId, sha256_hex};

use super::advisory::{
    AttachmentUpload, DESCRIPTION_LIMIT, DESCRIPTION_MARGIN, Links, StoredAttachment,
    attachment_listing, inline_attachments, sender_cell, stored_name,
};
use super::markdown::{github_len, inline_code};

/// Everything the follow-up renderer needs besides the follow-up and the description.
#[derive(Debug, Clone)]
pub struct FollowupContext<'a> {
    /// The first report's `From` address, lower-cased; `None` when it had none or it is
    /// not recorded.
    pub original_sender: Option<&'a str>,
    /// When the follow-up was received; dates its section.
    pub received_at: DateTime<Utc>,
    /// `[advisory]` settings.
    pub settings: &'a AdvisoryConfig,
    /// The key of the hidden markers.
    pub marker: &'a super::MarkerKey,
    /// Where the follow-up's attachments go on GitHub, if anywhere.
    pub attachments: Option<super::advisory::AttachmentsTarget<'a>>,
}

/// The description with the follow-up added, and what the daemon must store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupRender {
    /// The new description, within [`DESCRIPTION_LIMIT`]. Equal to the current one when
    /// nothing was added: the follow-up's section is already there (a retry), or not
    /// even the short overflow note fitted.
    pub description: String,
    /// Attachments to store next to the original report's (same directory): the
    /// follow-up's attachments and, when `overflowed`, its full text. Names start with
    /// `f<first 12 hex of the follow-up's id>-`, so they never collide with the
    /// report's names (which start with a digit) nor with another follow-up's.
    pub stored_attachments: Vec<StoredAttachment>,
    /// The follow-up did not fit: the description has only a short note naming the
    /// stored attachment that holds its full text (or, when even the note did not fit,
    /// nothing new at all).
    pub overflowed: bool,
    /// The follow-up's attachments to commit before the description is updated.
    pub upload: Option<super::advisory::AttachmentUpload>,
}

/// Adds a follow-up to `current_description`.
///
/// The section added is `## Follow-up, <received date> UTC`, a table (sender's display
/// name, the address only with `include_reporter_email`; whether the sender is the
/// original reporter's address or a different one; subject; reference), the text in a
/// neutralised block, its attachments listed and small text ones shown, and
/// follow-up marker as the very last line. Nothing already in the description is
/// changed, so the original report's marker stays exactly once.
///
/// When the section would pass GitHub's limit (counted as for
/// [`super::advisory`]), only a short dated note is added, naming the stored attachment
/// that keeps the follow-up's full text; when even that does not fit, the description
/// is returned unchanged (then `overflowed` is true and nothing in the description
/// records the follow-up: the daemon must record it in its journal). Applying the same
/// follow-up twice adds nothing the second time.
pub fn append_followup(
    current_description: &str,
    report: &Report,
    ctx: &FollowupContext<'_>,
) -> FollowupRender {
    let limit = DESCRIPTION_LIMIT - DESCRIPTION_MARGIN;
    let prefix = name_prefix(&report.report_id);
    let mut stored: Vec<StoredAttachment> = report
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| StoredAttachment {
            file_name: format!(
                "{prefix}{}",
                stored_name(i + 1, &a.sha256, a.filename.as_deref(), &a.content_type)
            ),
            index: i,
            generated: None,
        })
        .collect();
    let full_text = StoredAttachment {
        file_name: format!(
            "{prefix}{}",
            stored_name(
                report.attachments.len() + 1,
                &sha256_hex(report.text.as_bytes()),
                Some("followup.txt"),
                "text/plain",
            )
        ),
        index: report.attachments.len(),
        generated: Some(report.text.as_bytes().to_vec()),
    };
    let marker_line = format!("\n{}\n", ctx.marker.followup(&report.report_id));
    let upload = (!report.attachments.is_empty())
        .then_some(ctx.attachments)
        .flatten()
        .map(|t| AttachmentUpload::new(&t, ctx.marker, &report.report_id));
    let links = upload.as_ref().map(|(upload, base)| Links { upload, base });
    let finish = |stored: &[StoredAttachment]| {
        upload
            .as_ref()
            .map(|(u, _)| u.clone().with_files(report, stored))
    };

    if ctx
        .marker
        .has_followup(current_description, &report.report_id)
    {
        // A retry after the description was already updated: same names, nothing new.
        let overflowed = current_description.contains(&inline_code(&full_text.file_name));
        if overflowed {
            stored.push(full_text);
        }
        return FollowupRender {
            description: current_description.to_owned(),
            upload: finish(&stored),
            stored_attachments: stored,
            overflowed,
        };
    }

    let mut base = current_description.to_owned();
    if !base.is_empty() && !base.ends_with('\n') {
        base.push('\n');
    }
    let heading = format!(
        "\n## Follow-up, {} UTC\n\n",
        ctx.received_at.format("%Y-%m-%d %H:%M")
    );

    let mut section = heading.clone();
    section.push_str(&followup_table(report, ctx));
    if report.text_from_html {
        section.push_str(
            "\nThe message was HTML only; this is its text, with link targets in parentheses.\n",
        );
    }
    let (text, dropped) = without_our_quotes(&report.text);
    if text.trim().is_empty() {
        section.push_str("\nThe message had no text of its own.\n\n");
    } else {
        section.push('\n');
        section.push_str(&super::body::report_markdown(&text, usize::MAX).0);
    }
    if dropped {
        section.push_str("Our own message, quoted in the reply, is left out.\n\n");
    }
    section.push_str(&attachment_listing(
        report,
        &stored,
        "### Attachments of the follow-up",
        links.as_ref(),
    ));

    let used = github_len(&base) + github_len(&section) + github_len(&marker_line);
    if used <= limit {
        section.push_str(&inline_attachments(
            report,
            ctx.settings,
            "#### Follow-up attachment",
            limit - used,
        ));
        section.push_str(&marker_line);
        base.push_str(&section);
        return FollowupRender {
            description: base,
            upload: finish(&stored),
            stored_attachments: stored,
            overflowed: false,
        };
    }

    let short_id: String = report.report_id.0.chars().take(12).collect();
    let mut note = format!(
        "{heading}> A follow-up too long for the description is kept as stored attachment {} \
         (reference {})",
        inline_code(&full_text.file_name),
        inline_code(&short_id),
    );
    if !report.attachments.is_empty() {
        note.push_str(&format!(
            "; its {} attachment(s) are stored with it",
            report.attachments.len()
        ));
    }
    note.push_str(".\n");
    note.push_str(&marker_line);
    stored.push(full_text);
    let description = if github_len(&base) + github_len(&note) <= limit {
        base.push_str(&note);
        base
    } else {
        current_description.to_owned()
    };
    FollowupRender {
        description,
        upload: finish(&stored),
        stored_attachments: stored,
        overflowed: true,
    }
}

/// Phrases only our acknowledgements and notes carry: the advisory link and the closing
/// line of the built-in templates.
const OUR_PHRASES: &[&str] = &[
    "/security/advisories/GHSA-",
    "sent automatically on behalf of",
];

/// `text` without the quoted copies of our own mail: each run of `>` lines that carries
/// one of [`OUR_PHRASES`], with the "On … wrote:" line (one or two lines) just before it.
/// Returns whether anything was left out. Quotes of anyone else stay.
fn without_our_quotes(text: &str) -> (String, bool) {
    let lines: Vec<&str> = text.lines().collect();
    let quoted = |l: &str| l.trim_start().starts_with('>');
    let mut keep = vec![true; lines.len()];
    let mut dropped = false;
    let mut i = 0;
    while i < lines.len() {
        if !quoted(lines[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && (quoted(lines[i]) || lines[i].trim().is_empty()) {
            i += 1;
        }
        let block = lines[start..i].join("\n");
        if !OUR_PHRASES.iter().any(|p| block.contains(p)) {
            continue;
        }
        dropped = true;
        keep[start..i].iter_mut().for_each(|k| *k = false);
        // The attribution: `On <date>, <us> wrote:`, which clients may wrap in two.
        let mut a = start;
        while a > 0 && lines[a - 1].trim().is_empty() {
            a -= 1;
        }
        if a > 0 && lines[a - 1].trim_end().ends_with("wrote:") {
            keep[a - 1..start].iter_mut().for_each(|k| *k = false);
            if a > 1
                && lines[a - 2].trim_start().starts_with("On ")
                && !lines[a - 2].contains("wrote:")
            {
                keep[a - 2] = false;
            }
        }
    }
    if !dropped {
        return (text.to_owned(), false);
    }
    let kept: Vec<&str> = lines
        .iter()
        .zip(&keep)
        .filter_map(|(l, k)| k.then_some(*l))
        .collect();
    (kept.join("\n").trim_end().to_owned() + "\n", true)
}

/// `f<first 12 hex of the follow-up's id>-`: keeps a follow-up's stored names apart from
/// the report's and from other follow-ups' in the report's attachment directory.
fn name_prefix(id: &ReportId) -> String {
    let hex: String =
        id.0.chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect();
    format!("f{hex}-")
}

fn followup_table(report: &Report, ctx: &FollowupContext<'_>) -> String {
    let from_email = report.from.as_ref().map(|a| a.email.to_lowercase());
    let address = match (from_email.as_deref(), ctx.original_sender) {
        (None, _) => "the follow-up has no sender address".to_owned(),
        (Some(_), None) => "unknown: the original report's address is not recorded".to_owned(),
        (Some(now), Some(original)) if now == original.trim().to_lowercase() => {
            "the original reporter's address".to_owned()
        }
        (Some(_), Some(_)) => "**a different address than the original report**".to_owned(),
    };
    let short_id: String = report.report_id.0.chars().take(12).collect();
    let mut rows = vec![
        ("From", sender_cell(report.from.as_ref(), ctx.settings)),
        ("Sender address", address),
    ];
    if !report.subject.is_empty() {
        rows.push(("Subject", inline_code(&report.subject)));
    }
    rows.push(("Follow-up reference", inline_code(&short_id)));
    let mut table = String::from("| | |\n| --- | --- |\n");
    for (key, value) in rows {
        table.push_str(&format!("| {key} | {value} |\n"));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RepositoryConfig;
    use crate::render::test_support::{TEST_KEY, fixture};
    use crate::render::{AdvisoryContext, advisory};
    use crate::route::{Route, RouteReason};
    use chrono::TimeZone;

    fn received() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 10, 30, 0).unwrap()
    }

    /// The description the original report got.
    fn original(report: &Report) -> String {
        let route = Route {
            repository: "pallets/werkzeug".into(),
            reason: RouteReason::SubjectAlias("werkzeug".into()),
        };
        let repository = RepositoryConfig {
            name: "pallets/werkzeug".into(),
            aliases: vec![],
            ecosystem: "pip".into(),
            package: None,
        };
        advisory(
            report,
            &AdvisoryContext {
                route: &route,
                repository: &repository,
                settings: &AdvisoryConfig::default(),
                received_at: received(),
                marker: &TEST_KEY,
                attachments: None,
                duplicate: None,
            },
        )
        .description
    }

    fn append(current: &str, followup: &Report, original_sender: Option<&str>) -> FollowupRender {
        append_with(
            current,
            followup,
            original_sender,
            &AdvisoryConfig::default(),
        )
    }

    fn append_with(
        current: &str,
        followup: &Report,
        original_sender: Option<&str>,
        settings: &AdvisoryConfig,
    ) -> FollowupRender {
        append_followup(
            current,
            followup,
            &FollowupContext {
                original_sender,
                received_at: received(),
                settings,
                marker: &TEST_KEY,
                attachments: None,
            },
        )
    }

    /// What remains of a description once our own tags and markers are taken out.
    fn outside_our_tags(description: &str, markers: &[String]) -> String {
        use crate::render::advisory::tests::{markdown_outside_code, without_our_details};
        let mut s = markdown_outside_code(&without_our_details(description));
        for m in markers {
            s = s.replace(m, "");
        }
        s
    }

    #[test]
    fn a_hostile_follow_up_is_appended_neutralised_after_the_report() {
        let report = fixture("plain-werkzeug.eml");
        let current = original(&report);
        let followup = fixture("hostile.eml");
        let r = append(&current, &followup, Some("alice@example.net"));
        let d = &r.description;
        assert!(!r.overflowed);
        assert!(d.starts_with(&current), "the report's part is unchanged");
        let added = &d[current.len()..];
        assert!(
            added.starts_with("\n## Follow-up, 2026-11-25 10:30 UTC\n"),
            "{added}"
        );
        assert!(d.ends_with(&format!("\n{}\n", TEST_KEY.followup(&followup.report_id))));
        assert_eq!(d.matches(&TEST_KEY.report(&report.report_id)).count(), 1);
        assert_eq!(
            d.matches(&TEST_KEY.followup(&followup.report_id)).count(),
            1
        );
        assert_eq!(d.matches("<!--").count(), 2, "the forged marker is inert");
        assert!(added.contains("&lt;\\!-- advisory-bridge report-id=0000"));
        let rest = outside_our_tags(
            d,
            &[
                TEST_KEY.report(&report.report_id),
                TEST_KEY.followup(&followup.report_id),
            ],
        );
        assert!(!rest.contains('<'), "a `<` from the follow-up survived");
        assert!(added.contains("&lt;img src=http:&#8203;//evil.example/track.png&gt;"));
        assert!(added.contains("&lt;script&gt;"));
        assert!(added.contains("abc\\u{202E}dcba"), "bidi made visible");
        // Mentions only inside <pre> (GitHub skips it) or as &#64; in <code>.
        for line in added.lines().filter(|l| l.contains('@')) {
            assert!(
                !line.starts_with('|') && !line.starts_with('#'),
                "a mention outside a block: {line}"
            );
        }
        assert!(
            added.contains("| Sender address | **a different address than the original report** |")
        );
        assert!(added.contains("| From | <code>Mallory X&#45;Injected&#58;&#8203; yes</code> |"));
        assert!(
            !added.contains("mallory@example.com"),
            "address not shown by default"
        );
        assert!(added.contains(&format!(
            "| Follow-up reference | <code>{}</code> |",
            &followup.report_id.0[..12]
        )));
        assert!(added.contains("### Attachments of the follow-up"));
        assert!(added.contains("#### Follow-up attachment 1: "));
        assert!(github_len(d) <= DESCRIPTION_LIMIT);
    }

    #[test]
    fn our_quoted_acknowledgement_is_left_out_but_other_quotes_stay() {
        let text = "Here is the PoC you asked for.\n\n\
            > the maintainer's question stays\n\n\
            On Tue, Nov 24, 2026 at 12:00 PM Pallets Security\n\
            <security@palletsprojects.com> wrote:\n\
            > Hello Rita,\n\
            >\n\
            > Your report has been converted to a private draft GitHub security advisory,\n\
            >     https://github.com/pallets/click/security/advisories/GHSA-abcd-efgh-ijkl\n\
            > This acknowledgement was sent automatically on behalf of Pallets.\n";
        let (kept, dropped) = without_our_quotes(text);
        assert!(dropped);
        assert_eq!(
            kept,
            "Here is the PoC you asked for.\n\n> the maintainer's question stays\n"
        );
        let theirs = "> someone else's words\nmy answer\n";
        assert_eq!(without_our_quotes(theirs), (theirs.to_owned(), false));
    }

    #[test]
    fn a_follow_up_from_the_reporter_says_so_whatever_the_case() {
        let current = original(&fixture("plain-werkzeug.eml"));
        let mut followup = fixture("no-project.eml");
        followup.from = Some(crate::mail::Address {
            name: Some("Alice".into()),
            email: "Alice@Example.NET".into(),
        });
        let r = append(&current, &followup, Some("alice@example.net"));
        assert!(
            r.description
                .contains("| Sender address | the original reporter's address |")
        );
        let r = append(&current, &followup, None);
        assert!(r.description.contains(
            "| Sender address | unknown: the original report's address is not recorded |"
        ));
        followup.from = None;
        let r = append(&current, &followup, Some("alice@example.net"));
        assert!(r.description.contains("| From | (no sender) |"));
        assert!(
            r.description
                .contains("| Sender address | the follow-up has no sender address |")
        );
    }

    #[test]
    fn the_address_is_shown_only_when_configured() {
        let current = original(&fixture("plain-werkzeug.eml"));
        let followup = fixture("no-project.eml");
        let from = followup.from.clone().expect("the fixture has a From");
        let email = from.email.clone();
        let shown = append_with(
            &current,
            &followup,
            None,
            &AdvisoryConfig {
                include_reporter_email: true,
                ..AdvisoryConfig::default()
            },
        );
        let cell = inline_code(&format!("{} <{email}>", from.name.expect("a display name")));
        assert!(shown.description.contains(&format!("| From | {cell} |")));
        let hidden = append(&current, &followup, None);
        assert!(!hidden.description.contains(&email));
    }

    #[test]
    fn follow_up_attachments_get_names_that_cannot_collide_with_the_reports() {
        let report = fixture("patch-and-binary.eml");
        let current = original(&report);
        let mut followup = report.clone();
        followup.report_id = ReportId(sha256_hex(b"follow-up@example.com"));
        let r = append(&current, &followup, Some("bob@example.com"));
        let prefix = format!("f{}-", &followup.report_id.0[..12]);
        assert_eq!(r.stored_attachments.len(), 2);
        for (i, s) in r.stored_attachments.iter().enumerate() {
            assert!(s.file_name.starts_with(&prefix), "{}", s.file_name);
            assert_eq!(s.index, i);
            assert_eq!(s.generated, None);
            assert!(r.description.contains(&inline_code(&s.file_name)));
            assert!(!current.contains(&s.file_name));
        }
    }

    #[test]
    fn a_follow_up_too_long_for_the_description_is_stored_with_a_note() {
        let mut report = fixture("plain-werkzeug.eml");
        report.text = "a long report line\n".repeat(3000);
        let current = original(&report);
        let mut followup = fixture("no-project.eml");
        followup.text = "a long follow-up line with <tags> @mentions\n".repeat(1000);
        let r = append(&current, &followup, None);
        assert!(r.overflowed);
        let d = &r.description;
        assert!(github_len(d) <= DESCRIPTION_LIMIT, "{}", github_len(d));
        assert!(d.starts_with(&current));
        let full = r.stored_attachments.last().expect("full text stored");
        assert_eq!(full.data(&followup), Some(followup.text.as_bytes()));
        assert_eq!(full.index, followup.attachments.len());
        assert!(
            full.file_name
                .starts_with(&format!("f{}-", &followup.report_id.0[..12]))
        );
        assert!(full.file_name.ends_with(".txt"));
        let added = &d[current.len()..];
        assert!(added.contains(&format!(
            "> A follow-up too long for the description is kept as stored attachment {}",
            inline_code(&full.file_name)
        )));
        assert!(!added.contains("a long follow-up line"));
        assert_eq!(d.matches(&TEST_KEY.report(&report.report_id)).count(), 1);
        assert!(d.ends_with(&format!("\n{}\n", TEST_KEY.followup(&followup.report_id))));
    }

    #[test]
    fn when_not_even_the_note_fits_the_description_is_unchanged() {
        let current = format!(
            "{}\n{}\n",
            "x".repeat(DESCRIPTION_LIMIT - DESCRIPTION_MARGIN - 50),
            TEST_KEY.report(&ReportId("ab".repeat(32)))
        );
        let followup = fixture("patch-and-binary.eml");
        let r = append(&current, &followup, None);
        assert!(r.overflowed);
        assert_eq!(r.description, current);
        assert_eq!(r.stored_attachments.len(), followup.attachments.len() + 1);
        assert!(r.stored_attachments.last().unwrap().generated.is_some());
    }

    #[test]
    fn applying_the_same_follow_up_twice_adds_it_once() {
        let current = original(&fixture("plain-werkzeug.eml"));
        let followup = fixture("patch-and-binary.eml");
        let once = append(&current, &followup, None);
        let twice = append(&once.description, &followup, None);
        assert_eq!(twice.description, once.description);
        assert_eq!(twice.stored_attachments, once.stored_attachments);
        assert!(!twice.overflowed);

        let full = "x".repeat(DESCRIPTION_LIMIT - DESCRIPTION_MARGIN - 2000);
        let mut big = followup.clone();
        big.text = "y".repeat(5000);
        let once = append(&full, &big, None);
        assert!(once.overflowed && once.description != full);
        let twice = append(&once.description, &big, None);
        assert_eq!(twice, once);
    }

    #[test]
    fn a_description_edited_to_end_without_a_newline_still_gets_a_heading_line() {
        let followup = fixture("no-project.eml");
        let r = append("Edited by a maintainer.", &followup, None);
        assert!(
            r.description
                .starts_with("Edited by a maintainer.\n\n## Follow-up, 2026-11-25 10:30 UTC\n")
        );
    }
}
