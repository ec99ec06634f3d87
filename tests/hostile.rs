//! Hostile mail through the pure pipeline (parse, classify, route, render), with the
//! config's default limits: each fixture under `tests/fixtures/hostile/` ends as its
//! README says (quarantined with a reason, filed as noise, answered or not, neutralised),
//! and keeps every invariant of `tests/invariants/mod.rs` on the way.

use crate::invariants;

use advisory_bridge::classify::{Classification, NoiseReason, ReplyDecision, SuppressReason};
use advisory_bridge::config::LimitsConfig;
use advisory_bridge::mail::{Limits, ParseError};
use advisory_bridge::render::markdown::inline_code;
use invariants::{Outcome, Pipeline};

fn raw(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/hostile/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn pipeline() -> Pipeline {
    Pipeline::with_limits(Limits::from(&LimitsConfig::default()))
}

/// The outcome of a fixture that must parse.
fn run(name: &str) -> Outcome {
    pipeline()
        .check(&raw(name))
        .unwrap_or_else(|e| panic!("{name} must parse: {e}"))
}

/// The parse error of a fixture that must be quarantined.
fn quarantined(name: &str) -> ParseError {
    match pipeline().check(&raw(name)) {
        Ok(_) => panic!("{name} must be quarantined"),
        Err(e) => e,
    }
}

fn noise(o: &Outcome) -> NoiseReason {
    match (&o.classification, &o.reply_decision) {
        (Classification::Noise(n), ReplyDecision::Suppress(SuppressReason::Noise(m))) => {
            assert_eq!(n, m, "the reply is suppressed for the same reason");
            n.clone()
        }
        other => panic!("expected noise without reply, got {other:?}"),
    }
}

fn sent_to(o: &Outcome) -> String {
    assert_eq!(o.classification, Classification::Report);
    match &o.reply_decision {
        ReplyDecision::Send(a) => a.email.clone(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn a_nesting_bomb_deeper_than_max_depth_is_quarantined() {
    assert_eq!(
        quarantined("nesting-bomb.eml"),
        ParseError::TooDeep {
            limit: LimitsConfig::default().max_depth
        }
    );
}

#[test]
fn attached_messages_nested_past_max_depth_are_quarantined() {
    assert!(matches!(
        quarantined("nested-messages.eml"),
        ParseError::TooDeep { .. }
    ));
}

#[test]
fn a_message_with_too_many_parts_is_quarantined() {
    assert_eq!(
        quarantined("too-many-parts.eml"),
        ParseError::TooManyParts {
            limit: LimitsConfig::default().max_parts
        }
    );
}

#[test]
fn a_message_with_too_many_attachments_is_quarantined() {
    assert_eq!(
        quarantined("too-many-attachments.eml"),
        ParseError::TooManyAttachments {
            limit: LimitsConfig::default().max_attachments
        }
    );
}

#[test]
fn hostile_file_names_are_shown_escaped_and_never_used_for_storage() {
    let o = run("filenames.eml");
    sent_to(&o);
    let names: Vec<&str> = o
        .report
        .attachments
        .iter()
        .map(|a| a.filename.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(names[0], "../../../../etc/passwd");
    assert_eq!(names[1], "CON");
    assert_eq!(
        names[5], "evil X-Injected: yes.txt",
        "RFC 2231 %0D%0A is a space"
    );
    assert_eq!(
        names[6], "inj Bcc: victim@example.org.sh",
        "an encoded CRLF is a space"
    );
    assert!(names[4].chars().count() <= 255, "over-long names are cut");
    assert!(
        names.iter().all(|n| !n.contains(['\r', '\n', '\0'])),
        "{names:?}"
    );
    assert_eq!(
        o.report.attachments.len(),
        9,
        "the Latin-1 name is kept too"
    );
    // Stored under generated names only: number, hash prefix, whitelisted extension.
    let stored: Vec<&str> = o
        .draft
        .stored_attachments
        .iter()
        .map(|s| s.file_name.as_str())
        .collect();
    for (i, s) in stored.iter().enumerate() {
        let hash = &o.report.attachments[i].sha256[..12];
        assert!(s.starts_with(&format!("{}-{hash}.", i + 1)), "{s}");
    }
    assert!(stored[1].ends_with(".txt") && stored[7].ends_with(".bin"));
    let d = &o.draft.description;
    assert!(d.contains(&inline_code("../../../../etc/passwd")));
    assert!(!d.contains("../"), "no raw path in the description");
    assert!(d.contains(
        "<code>&#46;&#8203;&#46;&#8203;&#47;&#46;&#8203;&#46;&#8203;&#47;&#46;&#8203;&#46;&#8203;\
         &#47;&#46;&#8203;&#46;&#8203;&#47;etc&#47;passwd</code>"
    ));
}

#[test]
fn encoded_line_breaks_cannot_inject_reply_headers() {
    let o = run("encoded-crlf-injection.eml");
    assert_eq!(sent_to(&o), "eve+replies@example.net", "Reply-To wins");
    assert_eq!(
        o.reply.subject,
        "Re: Flask bug Bcc: victim@example.org Injected body [GHSA-abcd-efgh-ijkl]"
    );
    assert_eq!(
        o.reply.to.name.as_deref(),
        Some("Eve Replies Cc: victim@example.org")
    );
    assert_eq!(
        o.report.from.as_ref().and_then(|a| a.name.as_deref()),
        Some("Eve X-Injected: yes")
    );
    // The invariants already checked every reply header for CR, LF and controls.
}

#[test]
fn an_html_only_report_loses_its_remote_content_and_shows_link_targets() {
    let o = run("html-remote-content.eml");
    sent_to(&o);
    assert!(o.report.text_from_html);
    let text = &o.report.text;
    assert!(text.contains("[image: tracking pixel]"), "{text}");
    assert!(!text.contains("evil.example/track.png"), "no image source");
    assert!(!text.contains("fetch("), "scripts dropped");
    assert!(!text.contains("color:red"), "styles dropped");
    assert!(
        text.contains("https://github.com/pallets/jinja (http://evil.example/real)"),
        "a lying link shows where it really goes: {text}"
    );
    let d = &o.draft.description;
    for tag in ["<img", "<form", "<iframe", "<input", "<script"] {
        assert!(!d.contains(tag), "{tag} survived");
    }
    assert!(d.contains("The message was HTML only"));
}

#[test]
fn trojan_source_bidi_controls_are_shown_not_applied() {
    let o = run("trojan-source.eml");
    sent_to(&o);
    assert_eq!(o.report.subject, "Click bug txt.exe");
    assert_eq!(o.draft.summary, "Click bug txt.exe");
    assert_eq!(
        o.report.attachments[0].filename.as_deref(),
        Some("pocgnp.py"),
        "the real name, not the disguised `pocyp.png`"
    );
    let d = &o.draft.description;
    assert!(
        d.contains(r#"access_level = "user\u{202E} \u{2066}# Check if admin\u{2069} \u{2066}""#)
    );
    assert!(!d.contains(['\u{202E}', '\u{2066}', '\u{2069}']));
}

#[test]
fn a_forged_authentication_result_below_ours_is_not_shown() {
    let o = run("forged-authentication-results.eml");
    // The trusted receiving server says DMARC failed: an advisory, but no reply (the
    // same gate the daemon applies: both run `pipeline::prepare`).
    assert_eq!(o.classification, Classification::Report);
    assert!(
        matches!(
            &o.reply_decision,
            ReplyDecision::Suppress(SuppressReason::Unauthenticated(_))
        ),
        "{:?}",
        o.reply_decision
    );
    let d = &o.draft.description;
    assert!(
        d.contains(
            "| Sender authentication | <code>dkim&#61;fail spf&#61;fail dmarc&#61;fail</code> \
             (according to <code>mx&#46;&#8203;palletsprojects&#46;&#8203;com</code>) **(unauthenticated \
             sender: the From address may be forged; no reply was sent)** |"
        ),
        "{d}"
    );
    assert!(!d.contains("dmarc&#61;pass"));
}

#[test]
fn a_message_flagged_as_spam_is_noise() {
    let o = run("spam-flag.eml");
    assert_eq!(noise(&o), NoiseReason::Spam("X-Spam-Flag: YES".into()));
}

#[test]
fn mailing_list_traffic_is_noise() {
    let o = run("mailing-list.eml");
    assert!(matches!(noise(&o), NoiseReason::Bulk(_)));
}

#[test]
fn a_null_return_path_is_a_bounce() {
    let o = run("null-return-path.eml");
    assert_eq!(noise(&o), NoiseReason::Bounce);
}

#[test]
fn a_report_from_a_noreply_address_becomes_an_advisory_without_a_reply() {
    let o = run("noreply-sender.eml");
    assert_eq!(o.classification, Classification::Report);
    assert!(matches!(
        &o.reply_decision,
        ReplyDecision::Suppress(SuppressReason::NoReplyAddress(why)) if why.contains("role address")
    ));
    assert_eq!(o.route.repository, "pallets/werkzeug");
}

#[test]
fn our_own_reply_looping_back_is_noise() {
    let o = run("own-reply-loop.eml");
    assert_eq!(noise(&o), NoiseReason::OwnMail);
}

#[test]
fn a_report_asking_for_answers_to_our_own_address_gets_none() {
    let o = run("reply-to-ourselves.eml");
    assert_eq!(o.classification, Classification::Report);
    assert_eq!(
        o.reply_decision,
        ReplyDecision::Suppress(SuppressReason::OwnAddress)
    );
}

/// Every fixture in the directory has a test above and a line in the README.
#[test]
fn every_hostile_fixture_is_described() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hostile");
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).expect("README.md");
    let this = include_str!("hostile.rs");
    for entry in std::fs::read_dir(dir).expect("fixture directory") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".eml") {
            assert!(
                readme.contains(&format!("`{name}`")),
                "{name} not in README"
            );
            assert!(this.contains(&format!("\"{name}\"")), "{name} has no test");
        }
    }
}
