//! Crash anywhere, lose the journal, run two instances: still every report ends with
//! exactly one advisory, every reporter is answered (a rare duplicate only with the same
//! Message-ID), and every message ends in exactly one folder.

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use fake_github::{Fault, FaultMatch, Operation};
use mail_parser::MessageParser;
use rand::{Rng, SeedableRng};
use support::header_value;
use support::stack::{PATIENCE, Stack, report};
use support::wait_for_async;

const FOLDERS: &[&str] = &["INBOX", "Processed", "Ignored", "Quarantine", "Held"];

fn message_id(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_owned))
        .unwrap_or_default()
}

/// What the invariants found over all reports sent so far.
#[derive(Debug, Default)]
struct Tally {
    lost: usize,
    duplicate_advisories: usize,
    duplicate_replies: usize,
    misplaced: usize,
}

/// Checks every invariant for the reports with these Message-IDs.
async fn tally(stack: &Stack, ids: &[String]) -> Tally {
    let mut t = Tally::default();
    let mut placed: HashMap<String, usize> = HashMap::new();
    for folder in FOLDERS {
        for raw in stack.folder(folder).await {
            *placed.entry(message_id(&raw)).or_default() += 1;
        }
    }
    // The claim folders too: a message must not linger in two places.
    for raw in stack.folder("Processing.crash-test").await {
        *placed.entry(message_id(&raw)).or_default() += 1;
    }
    let descriptions: Vec<String> = stack
        .all_advisories()
        .into_iter()
        .map(|(_, a)| a["description"].as_str().unwrap_or("").to_owned())
        .collect();
    let replies = stack.replies();
    for id in ids {
        let hash = advisory_bridge::mail::sha256_hex(
            advisory_bridge::mail::normalise_id(id)
                .expect("test ids are valid")
                .as_bytes(),
        );
        let marker = format!("report-id={hash}");
        let advisories = descriptions.iter().filter(|d| d.contains(&marker)).count();
        match placed.get(id).copied().unwrap_or(0) {
            0 => t.lost += 1,
            1 => {}
            _ => t.misplaced += 1,
        }
        if advisories == 0 {
            t.lost += 1;
        }
        t.duplicate_advisories += advisories.saturating_sub(1);
        let answers: Vec<String> = replies
            .iter()
            .filter(|r| header_value(r, "In-Reply-To").as_deref() == Some(&format!("<{id}>")))
            .filter_map(|r| header_value(r, "Message-ID"))
            .collect();
        if answers.is_empty() {
            t.lost += 1;
        }
        let mut distinct = answers.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() <= 1,
            "a second reply to {id} must carry the same Message-ID: {answers:?}"
        );
        t.duplicate_replies += answers.len().saturating_sub(1);
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_no_advisory() {
    let trials: usize = std::env::var("ADVISORY_BRIDGE_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("ADVISORY_BRIDGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: seed={seed} (ADVISORY_BRIDGE_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut stack = Stack::start().await;
    stack.write_config(|t| {
        t.replace(
            "poll_interval_secs = 1",
            "poll_interval_secs = 1\ninstance_name = \"crash-test\"",
        )
    });
    let mut ids = Vec::new();
    let per_trial = 4;
    for trial in 0..trials {
        for i in 0..per_trial {
            let id = format!("crash-{seed}-{trial}-{i}@example.net");
            stack
                .deliver(&report(
                    id.trim_end_matches("@example.net"),
                    &format!("Werkzeug crash trial {trial} report {i}"),
                    "The debugger PIN can be guessed.",
                ))
                .await;
            ids.push(id);
        }
        // Some trials hold the create POST in flight, so the kill lands between GitHub
        // acting and our record of it.
        if rng.random_bool(0.4) {
            stack.github.push_fault_when(
                FaultMatch::operation(Operation::Create),
                Fault::DelayResponse(Duration::from_millis(rng.random_range(100..800))),
            );
        }
        let mut daemon = stack.daemon(&["run"]);
        let delay = Duration::from_millis(rng.random_range(0..2500));
        tokio::time::sleep(delay).await;
        daemon.kill();
        // Restart and let it finish everything.
        let mut again = stack.daemon(&["run"]);
        let expected = ids.len();
        wait_for_async(PATIENCE, "every message to be filed", || async {
            stack.folder("Processed").await.len() >= expected
        })
        .await;
        again.terminate();
    }
    let t = tally(&stack, &ids).await;
    println!(
        "trials={trials} lost={} duplicate_advisories={} duplicate_replies={}",
        t.lost, t.duplicate_advisories, t.duplicate_replies
    );
    assert_eq!(t.lost, 0, "{t:?}");
    assert_eq!(t.duplicate_advisories, 0, "{t:?}");
    assert_eq!(t.misplaced, 0, "every message in exactly one folder: {t:?}");
    assert!(stack.folder("INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_wiped_creates_no_duplicate_advisory() {
    let mut stack = Stack::start().await;
    let ids: Vec<String> = (0..6).map(|i| format!("wiped-{i}@example.net")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack
            .deliver(&report(
                id.trim_end_matches("@example.net"),
                &format!("Flask report {i}"),
                "text",
            ))
            .await;
    }
    // GitHub creates the first advisory but answers late; kill the daemon meanwhile and
    // wipe its journal: that advisory exists and nothing local knows it.
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::Create),
        Fault::DelayResponse(Duration::from_secs(30)),
    );
    let mut first = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "a create in flight", || async {
        stack
            .github
            .requests()
            .iter()
            .any(|r| r.operation == Some(Operation::Create))
    })
    .await;
    // The advisory exists on GitHub; the daemon still waits for the answer.
    wait_for_async(PATIENCE, "the advisory to exist", || async {
        !stack.all_advisories().is_empty()
    })
    .await;
    first.kill();
    std::fs::remove_dir_all(&stack.state_dir).expect("wipe the state directory");

    let mut second = stack.daemon(&["run"]);
    wait_for_async(PATIENCE, "all six filed", || async {
        stack.folder("Processed").await.len() >= ids.len()
    })
    .await;
    second.terminate();
    let t = tally(&stack, &ids).await;
    assert_eq!(t.lost, 0, "{t:?}");
    assert_eq!(t.duplicate_advisories, 0, "{t:?}");
    assert_eq!(stack.all_advisories().len(), ids.len());
    assert!(
        second.log().contains("adopted"),
        "an advisory made before the wipe was adopted:\n{}",
        second.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_mailbox_make_no_duplicates() {
    let mut stack = Stack::start().await;
    let n = 20;
    let ids: Vec<String> = (0..n).map(|i| format!("twin-{i}@example.net")).collect();
    for (i, id) in ids.iter().enumerate() {
        stack
            .deliver(&report(
                id.trim_end_matches("@example.net"),
                &format!("Click report {i}"),
                "text",
            ))
            .await;
    }
    // Two configs: same mailbox, same GitHub, own state directories and names.
    let base = std::fs::read_to_string(&stack.config_path).unwrap();
    let second_config = stack.dir.join("config-b.toml");
    std::fs::write(
        &second_config,
        base.replace(
            &stack.state_dir.display().to_string(),
            &stack.dir.join("state-b").display().to_string(),
        )
        .replace(
            "poll_interval_secs = 1",
            "poll_interval_secs = 1\ninstance_name = \"b\"",
        ),
    )
    .unwrap();
    stack.write_config(|t| {
        t.replace(
            "poll_interval_secs = 1",
            "poll_interval_secs = 1\ninstance_name = \"a\"",
        )
    });
    let mut a = stack.daemon(&["run"]);
    let mut b = support::Process::spawn(
        support::daemon_binary(),
        ["--config", second_config.to_str().unwrap(), "run"],
        &[("TEST_SMTP_PASSWORD", "smtp-secret")],
        &stack.dir.join("daemon-b.log"),
    );
    wait_for_async(PATIENCE, "all reports filed", || async {
        stack.folder("Processed").await.len() >= n
    })
    .await;
    a.terminate();
    b.terminate();
    let t = tally(&stack, &ids).await;
    assert_eq!(t.lost, 0, "{t:?}");
    assert_eq!(t.duplicate_advisories, 0, "{t:?}");
    assert_eq!(t.misplaced, 0, "{t:?}");
    assert_eq!(stack.all_advisories().len(), n);
    let mut reply_ids: Vec<String> = stack
        .replies()
        .iter()
        .filter_map(|r| header_value(r, "Message-ID"))
        .collect();
    reply_ids.sort();
    reply_ids.dedup();
    assert_eq!(reply_ids.len(), n, "one reply per report");
}
