//! A conversation, not a drop box: follow-ups reach the same advisory, and the reporter
//! hears, once per change, when a maintainer publishes, closes or withdraws the
//! advisory or a CVE is assigned, also across a restart.

use crate::support;

use std::time::Duration;

use fake_github::AdvisoryState;
use mail_parser::MessageParser;
use serde_json::Value;
use support::header_value;
use support::stack::{PATIENCE, SECURITY_ADDRESS, Stack, report};
use support::wait_for_async;

fn ghsa_of(stack: &Stack, repo: &str, index: usize) -> String {
    stack.github.advisories(repo)[index]["ghsa_id"]
        .as_str()
        .expect("ghsa id")
        .to_owned()
}

/// Notices (not acknowledgements) received so far, by the event in their Message-ID.
fn notices(stack: &Stack, event: &str) -> Vec<Vec<u8>> {
    stack
        .replies()
        .into_iter()
        .filter(|r| {
            header_value(r, "Message-ID").is_some_and(|id| id.contains(&format!(".{event}@")))
        })
        .collect()
}

fn follow_up(id: &str, subject: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Rita Reporter <rita@example.net>\r\n\
         To: {SECURITY_ADDRESS}\r\n\
         Subject: {subject}\r\n\
         Date: Tue, 24 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <{id}@example.net>\r\n\
         {headers}\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {body}\r\n"
    )
    .into_bytes()
}

fn description(stack: &Stack, repo: &str) -> String {
    let all: Vec<Value> = stack.github.advisories(repo);
    assert_eq!(all.len(), 1, "still one advisory in {repo}");
    all[0]["description"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_by_in_reply_to_references_and_ghsa_tag_reach_the_same_advisory() {
    let mut stack = Stack::start().await;
    stack
        .deliver(&report("conv-1", "Click: shell injection", "the report"))
        .await;
    stack.drain();
    let ghsa = ghsa_of(&stack, "pallets/click", 0);
    let ack = stack.replies().pop().expect("acknowledged");
    let ack_id = header_value(&ack, "Message-ID").unwrap();

    stack
        .deliver(&follow_up(
            "conv-2",
            "Re: Click: shell injection",
            "In-Reply-To: <conv-1@example.net>\r\n",
            "first follow-up, by In-Reply-To",
        ))
        .await;
    stack
        .deliver(&follow_up(
            "conv-3",
            "Re: something else entirely",
            &format!("References: {ack_id}\r\n"),
            "second follow-up, by References to the reply",
        ))
        .await;
    stack
        .deliver(&follow_up(
            "conv-4",
            &format!("New details [{ghsa}]"),
            "",
            "third follow-up, by the GHSA tag",
        ))
        .await;
    stack.drain();

    let d = description(&stack, "pallets/click");
    for text in [
        "by In-Reply-To",
        "by References to the reply",
        "by the GHSA tag",
    ] {
        assert!(d.contains(text), "{text} missing:\n{d}");
    }
    assert_eq!(d.matches("advisory-bridge followup-id=").count(), 3);
    assert_eq!(stack.all_advisories().len(), 1, "no new advisory");
    assert_eq!(stack.folder("Processed").await.len(), 4);
    // The acknowledgement went out minutes ago: no note to the follow-ups today.
    assert_eq!(
        stack.replies().len(),
        1,
        "at most one reply a day per thread"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_too_long_for_the_description_is_kept_and_pointed_to() {
    let mut stack = Stack::start().await;
    stack
        .deliver(&report("long-1", "Flask: session fixation", "the report"))
        .await;
    stack.drain();
    let huge = "A very long log line that keeps going. ".repeat(2000);
    stack
        .deliver(&follow_up(
            "long-2",
            "Re: Flask: session fixation",
            "In-Reply-To: <long-1@example.net>\r\n",
            &huge,
        ))
        .await;
    stack.drain();
    let d = description(&stack, "pallets/flask");
    assert!(d.chars().count() <= 65535);
    assert!(d.contains("stored attachment"), "{d}");
    let kept = walk(&stack.state_dir.join("attachments"));
    assert!(
        kept.iter()
            .any(|f| f.file_name().unwrap().to_string_lossy().starts_with('f')),
        "{kept:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_on_github_brings_exactly_one_notice_also_across_a_restart() {
    let mut stack = Stack::start().await;
    for (id, subject) in [
        ("n-pub", "Werkzeug: to be published"),
        ("n-cve", "Flask: gets a CVE"),
        ("n-closed", "Click: not a bug"),
    ] {
        stack.deliver(&report(id, subject, "text")).await;
    }
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", 3).await;
    let werkzeug = ghsa_of(&stack, "pallets/werkzeug", 0);
    let flask = ghsa_of(&stack, "pallets/flask", 0);
    let click = ghsa_of(&stack, "pallets/click", 0);

    // Maintainers act on GitHub.
    stack
        .github
        .assign_cve("pallets/werkzeug", &werkzeug, "CVE-2026-1111")
        .unwrap();
    stack
        .github
        .set_advisory_state("pallets/werkzeug", &werkzeug, AdvisoryState::Published)
        .unwrap();
    stack
        .github
        .assign_cve("pallets/flask", &flask, "CVE-2026-2222")
        .unwrap();
    stack
        .github
        .set_advisory_state("pallets/click", &click, AdvisoryState::Closed)
        .unwrap();
    wait_for_async(PATIENCE, "three notices", || async {
        notices(&stack, "published").len() == 1
            && notices(&stack, "cve").len() == 1
            && notices(&stack, "closed").len() == 1
    })
    .await;
    let published = &notices(&stack, "published")[0];
    let parsed = MessageParser::default().parse(published).unwrap();
    let body = parsed.body_text(0).unwrap_or_default().to_string();
    assert!(body.contains("CVE-2026-1111"), "{body}");
    assert!(body.contains(&werkzeug), "{body}");
    assert!(
        parsed
            .in_reply_to()
            .as_text()
            .is_some_and(|id| id.starts_with("advisory-bridge.")),
        "answers our acknowledgement"
    );
    assert!(
        header_value(published, "References").is_some_and(|r| r.contains("n-pub@example.net")),
        "threaded under the report"
    );
    daemon.terminate();

    // After a restart nothing is sent again; a new change still is.
    let mut again = stack.daemon(&["run"]);
    stack
        .github
        .set_advisory_state("pallets/werkzeug", &werkzeug, AdvisoryState::Withdrawn)
        .unwrap();
    wait_for_async(PATIENCE, "the withdrawal notice", || async {
        notices(&stack, "withdrawn").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    again.terminate();
    assert_eq!(notices(&stack, "published").len(), 1);
    assert_eq!(notices(&stack, "cve").len(), 1);
    assert_eq!(notices(&stack, "closed").len(), 1);
    assert_eq!(notices(&stack, "withdrawn").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_switched_off_is_not_sent() {
    let mut stack = Stack::start().await;
    stack.write_config(|t| t.replace("[notify]\n", "[notify]\nclosed = false\n"));
    stack
        .deliver(&report("off-1", "Click: closed quietly", "text"))
        .await;
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", 1).await;
    let click = ghsa_of(&stack, "pallets/click", 0);
    stack
        .github
        .set_advisory_state("pallets/click", &click, AdvisoryState::Closed)
        .unwrap();
    stack
        .deliver(&report("off-2", "Click: another one", "text"))
        .await;
    // The second report proves the daemon kept running and looking.
    stack.wait_for_folder("Processed", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    daemon.terminate();
    assert!(notices(&stack, "closed").is_empty());
    assert!(daemon.log().contains("watching the mailbox"));
}
