//! The triage shield, end to end: a report that repeats an earlier one says so in its
//! draft, in the maintainers' mail and in `status`; CVSS and CWE the reporter gives are
//! prefilled when valid; a report lacking a version or a proof of concept is answered
//! with a request for them. Nothing is closed, dropped or left unanswered.

use crate::support;

use std::time::Duration;

use support::stack::{Stack, fixture};

fn advisory_of<'a>(advisories: &'a [serde_json::Value], summary: &str) -> &'a serde_json::Value {
    advisories
        .iter()
        .find(|a| a["summary"].as_str().is_some_and(|s| s.contains(summary)))
        .unwrap_or_else(|| panic!("an advisory about {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reworded_repeat_is_shown_as_a_probable_duplicate_and_an_unrelated_report_is_not() {
    let mut stack = Stack::start().await;
    stack.write_config(|text| format!("{text}\n[maintainers]\nnotify = [\"team@example.org\"]\n"));
    stack.deliver(&fixture("triage/dup-a.eml")).await;
    stack.drain();
    stack.deliver(&fixture("triage/dup-b.eml")).await;
    stack.deliver(&fixture("triage/unrelated.eml")).await;
    let once = stack.drain();
    let advisories = stack.github.advisories("pallets/werkzeug");
    assert_eq!(
        advisories.len(),
        3,
        "every report gets its draft: {}",
        once.log()
    );
    let first = advisory_of(&advisories, "safe_join path traversal on Windows");
    let ghsa = first["ghsa_id"].as_str().expect("GHSA id");
    let repeat = advisory_of(&advisories, "Security issue: path traversal");
    let description = repeat["description"].as_str().expect("description");
    let row = description
        .lines()
        .find(|l| l.starts_with("| Possible duplicate |"))
        .unwrap_or_else(|| panic!("a duplicate row in:\n{description}"));
    assert!(row.contains(ghsa) && row.contains("similarity 0."), "{row}");
    let unrelated = advisory_of(&advisories, "debugger PIN");
    assert!(
        !unrelated["description"]
            .as_str()
            .unwrap()
            .contains("Possible duplicate"),
        "same package, another issue"
    );
    assert_eq!(
        repeat["state"], "draft",
        "a duplicate stays an open draft, never closed"
    );
    // The repeat's reporter got an acknowledgement, and the maintainers were told.
    let replies = stack.replies();
    let to_bob = replies
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains("To: Bob <bob@example.org>"))
        .count();
    assert_eq!(to_bob, 1);
    let team = replies
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|m| m.contains("To: team@example.org") && m.contains("Duplicate?"))
        .expect("the maintainers' mail names the duplicate");
    assert!(team.contains(ghsa), "{team}");

    let mut status = stack.daemon(&["status", "--json"]);
    assert!(
        status.wait(Duration::from_secs(60)).success(),
        "{}",
        status.log()
    );
    let dup_lines: Vec<serde_json::Value> = status
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["duplicate_of"].is_string())
        .collect();
    assert_eq!(dup_lines.len(), 1, "{}", status.log());
    assert_eq!(dup_lines[0]["duplicate_of"], ghsa);
    assert!(
        dup_lines[0]["signals"]
            .as_str()
            .unwrap()
            .contains("version")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvss_and_cwe_are_prefilled_when_valid_and_a_report_lacking_details_is_asked_for_them() {
    let mut stack = Stack::start().await;
    for name in ["cvss-cwe.eml", "bad-cvss4.eml", "bare.eml"] {
        stack.deliver(&fixture(&format!("triage/{name}"))).await;
    }
    let once = stack.drain();
    let all: Vec<serde_json::Value> = stack.all_advisories().into_iter().map(|(_, a)| a).collect();
    assert_eq!(all.len(), 3, "{}", once.log());

    let jinja = advisory_of(&all, "xmlattr");
    assert_eq!(
        jinja["cvss"]["vector_string"],
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N"
    );
    assert_eq!(jinja["cwe_ids"], serde_json::json!(["CWE-79"]));

    let click = advisory_of(&all, "Click prompt");
    assert!(
        click["cvss"].is_null() || click["cvss"]["vector_string"].is_null(),
        "{click}"
    );
    let description = click["description"].as_str().unwrap();
    assert!(
        description.contains("CVSS: invalid, not prefilled"),
        "{description}"
    );

    let replies: Vec<String> = stack
        .replies()
        .iter()
        .map(|m| String::from_utf8_lossy(m).replace("=\r\n", ""))
        .collect();
    let to = |who: &str| {
        replies
            .iter()
            .find(|m| m.contains(&format!("To: {who}")))
            .unwrap_or_else(|| panic!("a reply to {who}"))
            .clone()
    };
    let frank = to("Frank");
    assert!(
        frank.contains("the affected version and steps or code to reproduce it"),
        "{frank}"
    );
    let dana = to("Dana");
    assert!(!dana.contains("We could not find this"), "{dana}");
}
