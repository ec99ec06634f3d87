//! The hostile corpus (`tests/fixtures/hostile/`) end to end: every message delivered to
//! the real daemon ends in the folder its README names, gets a reply only where one is
//! due, and nothing is lost.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use mail_parser::MessageParser;
use support::header_value;
use support::stack::{Stack, fixture};

/// Where each message must end, and whether its sender gets a reply.
const EXPECTED: &[(&str, &str, bool)] = &[
    ("nesting-bomb.eml", "Quarantine", false),
    ("nested-messages.eml", "Quarantine", false),
    ("too-many-parts.eml", "Quarantine", false),
    ("too-many-attachments.eml", "Quarantine", false),
    ("filenames.eml", "Processed", true),
    ("encoded-crlf-injection.eml", "Processed", true),
    ("html-remote-content.eml", "Processed", true),
    ("trojan-source.eml", "Processed", true),
    // The trusted receiving server says DMARC failed: advisory, but no reply.
    ("forged-authentication-results.eml", "Processed", false),
    ("spam-flag.eml", "Ignored", false),
    ("mailing-list.eml", "Ignored", false),
    ("null-return-path.eml", "Ignored", false),
    ("noreply-sender.eml", "Processed", false),
    ("own-reply-loop.eml", "Ignored", false),
    ("reply-to-ourselves.eml", "Processed", false),
];

fn message_id(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_message_ends_where_it_belongs_and_none_is_lost() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "[retry]",
            "[authentication]\ntrusted_authserv_ids = [\"mx.palletsprojects.com\"]\n\n[retry]",
        )
    });
    let mut ids = Vec::new();
    for (name, _, _) in EXPECTED {
        let raw = fixture(&format!("hostile/{name}"));
        ids.push(message_id(&raw));
        stack.deliver(&raw).await;
    }
    let mut once = stack.daemon(&["once"]);
    let status = once.wait(Duration::from_secs(180));
    assert!(status.success(), "{status:?}\n{}", once.log());

    let mut found: HashMap<String, Vec<&str>> = HashMap::new();
    for folder in ["INBOX", "Processed", "Ignored", "Quarantine", "Held"] {
        for raw in stack.folder(folder).await {
            found.entry(message_id(&raw)).or_default().push(folder);
        }
    }
    let replied: Vec<String> = stack
        .replies()
        .iter()
        .filter_map(|r| header_value(r, "In-Reply-To"))
        .map(|v| v.trim_matches(['<', '>']).to_owned())
        .collect();
    for ((name, folder, reply), id) in EXPECTED.iter().zip(&ids) {
        assert_eq!(
            found.get(id).map(Vec::as_slice),
            Some(&[*folder][..]),
            "{name} ({id}) must be in exactly {folder}"
        );
        assert_eq!(
            replied.iter().filter(|r| *r == id).count(),
            usize::from(*reply),
            "{name}: reply expected: {reply}"
        );
    }
    let reports = EXPECTED
        .iter()
        .filter(|(_, f, _)| *f == "Processed")
        .count();
    assert_eq!(
        stack.all_advisories().len(),
        reports,
        "one advisory per report"
    );
    for (_, advisory) in stack.all_advisories() {
        let d = advisory["description"].as_str().unwrap_or("");
        assert_eq!(d.matches("<!-- advisory-bridge").count(), 1, "{d}");
        assert!(!d.contains("<img") && !d.contains("<script") && !d.contains("<iframe"));
    }
    assert!(once.log().contains("quarantined"), "{}", once.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_quarantined_without_being_read() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| t.replace("[limits]", "[limits]\nmax_message_bytes = 65536"));
    let mut raw = support::stack::report("huge-1", "Flask: big log", "see the log");
    raw.extend(std::iter::repeat_n(b'A', 200_000));
    raw.extend(b"\r\n");
    stack.deliver(&raw).await;
    stack
        .deliver(&support::stack::report("small-1", "Flask: small", "text"))
        .await;
    let once = stack.drain();
    let quarantined = stack.folder("Quarantine").await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0], raw, "kept byte for byte");
    assert_eq!(
        stack.all_advisories().len(),
        1,
        "the small one went through"
    );
    assert!(once.log().contains("max_message_bytes"), "{}", once.log());
}
