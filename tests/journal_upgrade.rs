//! Upgrading keeps the journal: a journal written by release 0.1.0 (before schema
//! versions) opens in this release, is migrated once, and `status` lists the same
//! reports in the same states; a journal from a newer release is refused, not misread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TestDir, daemon_binary};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal")
}

/// A config good enough for `status`, with its state directory in `dir`.
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
state_dir = "{}"
default_repository = "pallets/flask"
[imap]
host = "127.0.0.1"
username = "security"
password_env = "UNUSED_BY_STATUS"
[smtp]
host = "127.0.0.1"
from_address = "security@palletsprojects.com"
[github]
token_env = "UNUSED_BY_STATUS"
[[repository]]
name = "pallets/flask"
"#,
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn status(config: &Path) -> std::process::Output {
    Command::new(daemon_binary())
        .args(["--config"])
        .arg(config)
        .args(["status", "--json", "--limit", "1000"])
        .output()
        .expect("the binary runs")
}

/// report id -> (state, repository, ghsa, github state, follow-up) as `status --json`
/// prints them.
fn listed(out: &[u8]) -> BTreeMap<String, Vec<String>> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
            let text = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
            let follow_up = if v["follow_up_of"].is_string() {
                "yes"
            } else {
                "no"
            };
            (
                text("report_id"),
                vec![
                    text("state"),
                    text("repository"),
                    text("ghsa_id"),
                    text("github_state"),
                    follow_up.to_owned(),
                ],
            )
        })
        .collect()
}

fn expected() -> BTreeMap<String, Vec<String>> {
    std::fs::read_to_string(fixture_dir().join("v0.1.0.expected.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut cols = l.split('\t').map(str::to_owned);
            (cols.next().unwrap(), cols.collect())
        })
        .collect()
}

fn user_version(journal: &Path) -> i64 {
    rusqlite::Connection::open(journal)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_journal_from_release_0_1_0_is_migrated_and_lists_the_same_reports() {
    let dir = TestDir::new();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let journal = state.join("journal.sqlite3");
    std::fs::copy(fixture_dir().join("v0.1.0.sqlite3"), &journal).unwrap();
    assert_eq!(
        user_version(&journal),
        0,
        "the fixture predates schema versions"
    );
    let config = config(dir.path());

    let out = status(&config);
    assert!(
        out.status.success(),
        "status on the old journal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = expected();
    assert_eq!(want.len(), 17, "the fixture's reports");
    assert_eq!(listed(&out.stdout), want);
    assert_eq!(
        user_version(&journal),
        6,
        "migrated to this release's schema (6: the coordination tables of a shared journal)"
    );

    // Opening it again changes nothing.
    let again = status(&config);
    assert!(again.status.success());
    assert_eq!(listed(&again.stdout), want);
}

#[test]
fn a_journal_from_a_newer_release_is_refused_with_a_clear_error() {
    let dir = TestDir::new();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let journal = state.join("journal.sqlite3");
    std::fs::copy(fixture_dir().join("v0.1.0.sqlite3"), &journal).unwrap();
    rusqlite::Connection::open(&journal)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let out = status(&config(dir.path()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot migrate the schema"), "{err}");
    assert_eq!(user_version(&journal), 99, "left as it was");
}
