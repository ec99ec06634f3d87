//! The invariants every message keeps through the pure pipeline (parse, classify, route,
//! render advisory, reply and follow-up), whatever its bytes. Shared by the property
//! tests (`tests/properties.rs`), the hostile-fixture tests (`tests/hostile.rs`) and the
//! fuzz target (`fuzz/fuzz_targets/pipeline.rs`, which includes this file by path), so
//! all three hold a message to the same rules. Panics, with the broken rule, on a
//! violation.
// Each includer uses a different part of this file.
#![allow(dead_code)]

use advisory_bridge::classify::{self, Classification, ReplyDecision};
use advisory_bridge::config::{Config, Secret};
use advisory_bridge::mail::clean::is_bidi_control;
use advisory_bridge::mail::{self, Address, Limits, ParseError, Report};
use advisory_bridge::openpgp::{Encryption, Keys};
use advisory_bridge::pipeline::{self, Prepared};
use advisory_bridge::render::markdown::{self, github_len};
use advisory_bridge::render::{
    self, AdvisoryDraft, AdvisoryRef, DESCRIPTION_LIMIT, FollowupContext, FollowupRender,
    MarkerKey, ReplyMessage, SUMMARY_LIMIT, Templates,
};
use advisory_bridge::route::Route;
use chrono::{DateTime, TimeZone, Utc};

/// Limits as small as a real config might set them, so nesting and count limits are hit.
pub const LIMITS: Limits = Limits {
    max_message_bytes: 1 << 20,
    max_parts: 64,
    max_depth: 6,
    max_attachments: 24,
};

/// The marker key of these checks.
pub const KEY: MarkerKey = MarkerKey::new([5; 32]);

/// Our mailbox in these checks.
pub const MAILBOX: &str = "security@palletsprojects.com";

/// What one message became.
#[derive(Debug)]
pub struct Outcome {
    /// The parsed message.
    pub report: Report,
    /// What classification made of it.
    pub classification: Classification,
    /// Whether it would be answered.
    pub reply_decision: ReplyDecision,
    /// Where it would go.
    pub route: Route,
    /// The draft advisory.
    pub draft: AdvisoryDraft,
    /// The acknowledgement, rendered to the decided address (or, when suppressed, to the
    /// sender anyway, so header safety is checked for every address).
    pub reply: ReplyMessage,
    /// The message applied as a follow-up to its own advisory.
    pub followup: FollowupRender,
    /// The message applied as a follow-up to a description close to GitHub's limit.
    pub followup_near_limit: FollowupRender,
}

/// The configuration the checks run the pipeline with (the one the fixtures assume),
/// in the two shapes of the sender cell.
pub struct Pipeline {
    limits: Limits,
    /// Reporter addresses hidden (the default) and shown.
    configs: [Config; 2],
    templates: Templates,
    /// Our OpenPGP key (the test key of `tests/fixtures/pgp`), so encrypted messages go
    /// through the decrypting path the daemon takes with `[pgp]`.
    keys: Keys,
}

/// The test key of `tests/fixtures/pgp`, as the daemon's `[pgp]` key.
pub fn test_keys() -> Keys {
    Keys::from_armored(
        include_str!("../fixtures/pgp/security.secret.asc"),
        Some(&Secret::new("correct horse")),
    )
    .expect("the test key unlocks")
}

/// The fixtures' repositories and mailbox as a config file, with `limits`.
fn config_text(limits: &Limits, include_reporter_email: bool) -> String {
    format!(
        r#"
default_repository = "pallets/flask"
[imap]
host = "127.0.0.1"
username = "security"
password_env = "UNUSED"
[smtp]
host = "127.0.0.1"
from_address = "{MAILBOX}"
from_name = "Pallets Security"
[github]
token_env = "UNUSED"
[reply]
project_name = "Pallets"
[authentication]
trusted_authserv_ids = ["mx.palletsprojects.com"]
[advisory]
include_reporter_email = {include_reporter_email}
inline_attachment_max_bytes = 32768
[limits]
max_message_bytes = {}
max_parts = {}
max_depth = {}
max_attachments = {}
[[repository]]
name = "pallets/flask"
[[repository]]
name = "pallets/werkzeug"
[[repository]]
name = "pallets/jinja"
aliases = ["jinja2"]
[[repository]]
name = "pallets/click"
[[repository]]
name = "pallets/markupsafe"
[[repository]]
name = "pallets-eco/flask-sqlalchemy"
"#,
        limits.max_message_bytes, limits.max_parts, limits.max_depth, limits.max_attachments,
    )
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    /// The pipeline with the fixtures' repositories, the built-in reply template and
    /// the small [`LIMITS`].
    pub fn new() -> Pipeline {
        Self::with_limits(LIMITS)
    }

    /// The same with other limits (e.g. the config's defaults).
    pub fn with_limits(limits: Limits) -> Pipeline {
        let config = |shown: bool| {
            Config::parse(
                &config_text(&limits, shown),
                std::path::Path::new("invariants.toml"),
            )
            .expect("the invariants' config is valid")
        };
        let configs = [config(false), config(true)];
        let templates = Templates::load(&configs[0].reply).expect("the built-in template loads");
        Pipeline {
            limits,
            configs,
            templates,
            keys: test_keys(),
        }
    }

    /// Runs `raw` through the pure pipeline (`pipeline::parse` and `pipeline::prepare`,
    /// exactly as the engine and `preview` do) and checks every invariant, panicking on
    /// the first broken one. A parse error is a valid outcome (the daemon quarantines).
    pub fn check(&self, raw: &[u8]) -> Result<Outcome, ParseError> {
        // Alternate the privacy setting so both shapes of the sender cell are checked.
        let config = &self.configs[usize::from(raw.len().is_multiple_of(2))];
        let settings = &config.advisory;
        let report = pipeline::parse(config, Some(&self.keys), raw)?;
        check_report(&report, &self.limits);
        check_triage(&report);
        let Prepared {
            classification,
            route,
            draft,
            reply: reply_decision,
        } = pipeline::prepare(config, &KEY, &report, received_at());
        if let ReplyDecision::Send(to) = &reply_decision {
            assert!(
                classification == Classification::Report,
                "noise is never answered"
            );
            assert!(
                classify::unusable(&to.email).is_none(),
                "a reply goes to an unusable address {:?}",
                to.email
            );
        }
        assert!(
            config.repository(&route.repository).is_some(),
            "routed to an unconfigured repository {:?}",
            route.repository
        );
        assert_eq!(draft.repository, route.repository);
        check_draft(&report, &draft);

        let to = match &reply_decision {
            ReplyDecision::Send(to) => to.clone(),
            ReplyDecision::Suppress(_) => report
                .reply_to
                .clone()
                .or_else(|| report.from.clone())
                .unwrap_or_else(|| Address {
                    name: None,
                    email: "nobody@example.org".into(),
                }),
        };
        let reply = render::reply(
            &report,
            &to,
            &AdvisoryRef {
                ghsa_id: "GHSA-abcd-efgh-ijkl".into(),
                html_url:
                    "https://github.com/pallets/flask/security/advisories/GHSA-abcd-efgh-ijkl"
                        .into(),
                repository: route.repository.clone(),
            },
            &Address {
                name: Some("Pallets Security".into()),
                email: MAILBOX.into(),
            },
            &config.reply,
            &self.templates,
        )
        .expect("the built-in template renders for every report");
        check_reply(&reply);

        let original_sender = report.from.as_ref().map(|a| a.email.to_lowercase());
        let ctx = FollowupContext {
            original_sender: original_sender.as_deref(),
            received_at: received_at(),
            settings,
            marker: &KEY,
            attachments: None,
        };
        let followup = render::append_followup(&draft.description, &report, &ctx);
        check_followup(&report, &draft.description, &followup);
        let again = render::append_followup(&followup.description, &report, &ctx);
        if followup.description != draft.description {
            assert_eq!(
                again.description, followup.description,
                "a follow-up applied twice is added once"
            );
        }

        // A description a few thousand characters short of the limit: the overflow paths.
        let room = 64_000 - raw.len() % 4096;
        let near_limit = format!(
            "{}\n{}\n",
            "x".repeat(room),
            KEY.report(&mail::ReportId("0".repeat(64)))
        );
        let followup_near_limit = render::append_followup(&near_limit, &report, &ctx);
        check_followup(&report, &near_limit, &followup_near_limit);

        Ok(Outcome {
            report,
            classification,
            reply_decision,
            route,
            draft,
            reply,
            followup,
            followup_near_limit,
        })
    }
}

/// When the checks say the message was received.
pub fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0)
        .single()
        .expect("a valid fixed date")
}

/// True for characters that must never reach a mail header: controls, line breaks of any
/// kind, and bidi controls.
pub fn bends_a_header(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_bidi_control(c)
}

fn check_report(report: &Report, limits: &Limits) {
    assert!(
        !report.subject.chars().any(bends_a_header),
        "subject keeps a control: {:?}",
        report.subject
    );
    for a in report.from.iter().chain(&report.reply_to) {
        assert!(
            !a.email
                .chars()
                .any(|c| c.is_control() || is_bidi_control(c)),
            "address keeps a control: {:?}",
            a.email
        );
    }
    assert!(
        report.attachments.len() <= limits.max_attachments,
        "{} attachments, over the limit",
        report.attachments.len()
    );
    assert_eq!(report.report_id.0.len(), 64, "report id is a SHA-256");
    if let Encryption::Unreadable { reason, .. } = &report.encryption {
        assert!(
            report.text.is_empty() && report.attachments.is_empty(),
            "an unreadable message keeps nothing it said"
        );
        assert!(
            !reason.contains(['\r', '\n']),
            "reason is one line: {reason:?}"
        );
    }
}

/// The triage shield on any report: a fingerprint equals itself and survives the
/// journal's encoding; the signals name only what GitHub takes.
fn check_triage(report: &Report) {
    use advisory_bridge::triage;
    if let Some(f) = triage::fingerprint(report) {
        assert_eq!(f.minhash.len(), triage::MINHASH_SLOTS);
        assert_eq!(f.similarity(&f), 1.0);
        assert_eq!(
            triage::Fingerprint::from_stored(f.exact.clone(), &f.minhash_bytes()).as_ref(),
            Some(&f)
        );
    }
    let s = triage::signals(report);
    if let Some(Ok(vector)) = &s.cvss {
        assert!(
            vector.starts_with("CVSS:3.0/")
                || vector.starts_with("CVSS:3.1/")
                || vector.starts_with("CVSS:4.0/"),
            "a CVSS vector GitHub does not take: {vector}"
        );
    }
    assert!(s.cwe_ids.len() <= 5);
    for id in &s.cwe_ids {
        assert!(
            id.strip_prefix("CWE-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            "{id}"
        );
    }
}

fn check_draft(report: &Report, draft: &AdvisoryDraft) {
    let d = &draft.description;
    assert!(
        github_len(d) <= DESCRIPTION_LIMIT,
        "description is {} UTF-16 units, over {DESCRIPTION_LIMIT}",
        github_len(d)
    );
    assert!(
        github_len(&draft.summary) <= SUMMARY_LIMIT,
        "summary is {} UTF-16 units, over {SUMMARY_LIMIT}",
        github_len(&draft.summary)
    );
    assert!(!draft.summary.trim().is_empty(), "empty summary");
    assert!(
        !draft.summary.chars().any(bends_a_header),
        "summary keeps a control: {:?}",
        draft.summary
    );
    let marker = KEY.report(&report.report_id);
    assert!(
        d.ends_with(&format!("\n{marker}\n")),
        "the marker does not end the description"
    );
    assert_eq!(
        d.matches(&marker).count(),
        1,
        "the marker is not there once"
    );
    assert_eq!(
        d.matches("<!--").count(),
        1,
        "an HTML comment besides the marker"
    );
    check_markdown(d, &[marker]);
    check_stored_names(&draft.stored_attachments);
    assert!(
        draft.stored_attachments.len() >= report.attachments.len(),
        "an attachment is not stored"
    );
}

fn check_followup(report: &Report, before: &str, f: &FollowupRender) {
    let d = &f.description;
    assert!(
        github_len(d) <= DESCRIPTION_LIMIT,
        "description after a follow-up is {} UTF-16 units",
        github_len(d)
    );
    assert!(d.starts_with(before), "a follow-up changed what was there");
    let marker = KEY.followup(&report.report_id);
    let comments_before = before.matches("<!--").count();
    if d == before {
        assert!(f.overflowed, "nothing added without overflow");
    } else {
        assert!(
            d.ends_with(&format!("\n{marker}\n")),
            "the follow-up marker does not end the description"
        );
        assert_eq!(d.matches(&marker).count(), 1);
        assert_eq!(
            d.matches("<!--").count(),
            comments_before + 1,
            "an HTML comment besides the follow-up marker"
        );
    }
    let report_markers: Vec<String> = before
        .lines()
        .filter(|l| l.starts_with("<!-- advisory-bridge "))
        .map(str::to_owned)
        .chain([marker])
        .collect();
    check_markdown(d, &report_markers);
    check_stored_names(&f.stored_attachments);
    let prefix = format!("f{}-", &report.report_id.0[..12]);
    assert!(
        f.stored_attachments
            .iter()
            .all(|s| s.file_name.starts_with(&prefix)),
        "a follow-up's stored name without its prefix"
    );
    if f.overflowed {
        assert!(
            f.stored_attachments
                .last()
                .and_then(|s| s.data(report))
                .is_some_and(|data| data == report.text.as_bytes()),
            "an overflowed follow-up's text is not stored"
        );
    }
}

/// Stored names are safe file names, distinct within one render.
fn check_stored_names(stored: &[render::StoredAttachment]) {
    let mut seen = std::collections::HashSet::new();
    for s in stored {
        assert!(
            !s.file_name.is_empty()
                && !s.file_name.starts_with('.')
                && s.file_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'),
            "unsafe stored name {:?}",
            s.file_name
        );
        assert!(
            seen.insert(&s.file_name),
            "duplicate stored name {}",
            s.file_name
        );
    }
}

/// Outside code blocks, our own `<pre>`/`<code>` tags and the markers, no `<` survives;
/// every `<pre>` block and every fence opens and closes on a line of its own with nothing
/// inside able to close it, and no fence holds an HTML comment; the rows of each table
/// keep one column count; no raw control or bidi character is left.
fn check_markdown(description: &str, markers: &[String]) {
    let mut in_pre = false;
    let mut fence: Option<&str> = None;
    let mut table_pipes: Option<usize> = None;
    let mut outside = String::new();
    for line in description.lines() {
        let unescaped_pipes = line.matches('|').count() - line.matches("\\|").count();
        if let Some(f) = fence {
            if line == f {
                fence = None;
            } else {
                assert!(
                    !line.contains("<!--"),
                    "an HTML comment in a fence: {line:?}"
                );
                assert!(
                    !(line.starts_with(f) && line.trim_start_matches('`').trim().is_empty()),
                    "a fence closed by report text: {line:?}"
                );
            }
            continue;
        }
        match (in_pre, line) {
            (false, "<pre>") => in_pre = true,
            (true, "</pre>") => in_pre = false,
            (true, l) => assert!(
                !l.to_ascii_lowercase().contains("</"),
                "a closing tag inside a block: {l:?}"
            ),
            (false, l) if l.starts_with("```") => {
                fence = Some(&l[..l.len() - l.trim_start_matches('`').len()]);
            }
            (false, l) if l.starts_with("| ") => {
                let expected = *table_pipes.get_or_insert(unescaped_pipes);
                assert_eq!(unescaped_pipes, expected, "table row broken: {l:?}");
                outside.push_str(l);
                outside.push('\n');
            }
            (false, l) => {
                if !l.starts_with('|') {
                    table_pipes = None;
                }
                outside.push_str(l);
                outside.push('\n');
            }
        }
    }
    assert!(fence.is_none(), "an unclosed fence");
    assert!(!in_pre, "an unclosed <pre>");
    let mut rest = outside
        .replace(markdown::DIGESTS_OPEN, "")
        .replace(markdown::DIGESTS_CLOSE, "")
        .replace("<pre>", "")
        .replace("</pre>", "")
        .replace("<code>", "")
        .replace("</code>", "");
    for m in markers {
        rest = rest.replace(m.as_str(), "");
    }
    assert!(
        !rest.contains('<'),
        "a `<` from the message survived near {:?}",
        rest.find('<')
            .map(|i| rest[i..].chars().take(60).collect::<String>())
    );
    assert!(
        !description
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)),
        "a raw control or bidi character in the description"
    );
}

fn check_reply(reply: &ReplyMessage) {
    let fields = [
        ("subject", Some(reply.subject.as_str())),
        ("message_id", Some(reply.message_id.as_str())),
        ("in_reply_to", reply.in_reply_to.as_deref()),
        ("to.name", reply.to.name.as_deref()),
        ("to.email", Some(reply.to.email.as_str())),
        ("from.name", reply.from.name.as_deref()),
        ("from.email", Some(reply.from.email.as_str())),
    ];
    for (field, value) in fields.into_iter().chain(
        reply
            .references
            .iter()
            .map(|r| ("references", Some(r.as_str()))),
    ) {
        if let Some(v) = value {
            assert!(
                !v.chars().any(bends_a_header),
                "reply header {field} keeps a control: {v:?}"
            );
        }
    }
    for id in reply
        .in_reply_to
        .iter()
        .chain(&reply.references)
        .chain([&reply.message_id])
    {
        assert!(
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>'),
            "message id not header safe: {id:?}"
        );
    }
}
