//! Attachments on GitHub: with `[attachments] repository`, a report's attachments are
//! committed to that private repository (blobs, a tree, a root commit, a branch named
//! only by an opaque id) before the draft is created, and the draft links to them;
//! exactly once, whatever fails in between.

use crate::support;

use std::time::Duration;

use fake_github::{Fault, FaultMatch, Operation};
use support::ServerKind;
use support::stack::Stack;

/// The private repository of the tests.
const INTAKE: &str = "pallets/security-intake";

/// A stack whose fake GitHub has the attachments repository and whose config names it.
async fn stack() -> Stack {
    let stack = Stack::start_with(ServerKind::dovecot(), |mut options| {
        options.repos.push(INTAKE.into());
        options
    })
    .await;
    stack.write_config(|text| format!("{text}\n[attachments]\nrepository = \"{INTAKE}\"\n"));
    stack
}

/// The one branch of the attachments repository, as (ref, short branch name).
fn only_branch(stack: &Stack) -> (String, String) {
    let refs = stack.github.git_refs(INTAKE);
    assert_eq!(refs.len(), 1, "one branch per report: {refs:?}");
    let name = refs.keys().next().expect("a ref").clone();
    let branch = name
        .strip_prefix("refs/heads/")
        .expect("a branch")
        .to_owned();
    (name, branch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_committed_to_the_private_repository_and_linked_from_the_draft() {
    let mut stack = stack().await;
    let raw = stack.deliver_fixture("patch-and-binary.eml").await;
    let once = stack.drain();
    let advisories = stack.github.advisories("pallets/markupsafe");
    assert_eq!(advisories.len(), 1, "{}", once.log());

    let (_, branch) = only_branch(&stack);
    let opaque = branch.strip_prefix("reports/").expect("under reports/");
    assert!(
        opaque.len() == 32 && opaque.chars().all(|c| c.is_ascii_hexdigit()),
        "an opaque id, nothing from the report: {branch}"
    );
    let files = stack
        .github
        .git_files(INTAKE, &branch)
        .expect("the branch has a commit");
    assert_eq!(files.len(), 2, "{:?}", files.keys());
    let png = files
        .iter()
        .find(|(name, _)| name.ends_with(".png"))
        .map(|(_, bytes)| bytes.clone())
        .expect("the PNG");
    assert!(png.starts_with(b"\x89PNG"), "the picture's bytes, decoded");
    assert!(
        files
            .keys()
            .all(|n| !n.contains("alert") && !n.contains("fix-escape")),
        "the sender's file names are not used: {:?}",
        files.keys()
    );
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("alert.png"), "the fixture names its picture");

    // The draft links each file by its opaque path, and says where they are.
    let description = advisories[0]["description"].as_str().expect("description");
    let base = format!("{}/{INTAKE}", stack.github.url());
    for name in files.keys() {
        let link = format!("[{name}]({base}/blob/{branch}/{name})");
        assert!(description.contains(&link), "{link} in:\n{description}");
    }
    assert!(
        description.contains(&format!("({base}/tree/{branch})")),
        "{description}"
    );
    // Rendered as GitHub does, the only links are ours, into the private repository.
    let html = crate::rendered::render(description);
    let hrefs: Vec<&str> = html
        .split("<a href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(hrefs.len(), files.len() + 1, "{html}");
    assert!(
        hrefs.iter().all(|h| h.starts_with(&format!("{base}/"))),
        "{hrefs:?}"
    );
    let commit = stack.github.git_refs(INTAKE)[&format!("refs/heads/{branch}")].clone();
    assert_eq!(commit.len(), 40, "a commit SHA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_attachments_commits_nothing() {
    let mut stack = stack().await;
    stack.deliver_fixture("plain-werkzeug.eml").await;
    let once = stack.drain();
    assert_eq!(stack.all_advisories().len(), 1, "{}", once.log());
    assert!(stack.github.git_refs(INTAKE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_between_blob_and_branch_neither_lose_nor_duplicate_the_commit() {
    let mut stack = stack().await;
    // The first blob is refused, then the branch is made but its answer comes after
    // github.timeout_secs (3 s in the test config): both attempts are retried, and the
    // second finds the branch there.
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::CreateBlob),
        Fault::status(502),
    );
    stack.github.push_fault_when(
        FaultMatch::operation(Operation::CreateRef),
        Fault::DelayResponse(Duration::from_secs(5)),
    );
    stack.deliver_fixture("patch-and-binary.eml").await;
    let mut daemon = stack.daemon(&["run"]);
    stack.wait_for_folder("Processed", 1).await;
    daemon.terminate();
    let log = daemon.log();
    assert!(log.matches("will retry").count() >= 2, "{log}");
    assert!(
        log.contains("attachments already committed"),
        "the retry found the branch: {log}"
    );
    let (_, branch) = only_branch(&stack);
    assert_eq!(
        stack.github.git_files(INTAKE, &branch).map(|f| f.len()),
        Some(2)
    );
    let advisories = stack.github.advisories("pallets/markupsafe");
    assert_eq!(advisories.len(), 1, "one draft: {log}");
    assert_eq!(stack.replies().len(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_whether_the_attachments_repository_is_writable() {
    let mut stack = stack().await;
    let mut ok = stack.daemon(&["check"]);
    assert!(ok.wait(Duration::from_secs(60)).success(), "{}", ok.log());
    let out = ok.log();
    assert!(
        out.contains(&format!("ok      GitHub attachments repository {INTAKE}")),
        "{out}"
    );
    // `write_config` starts from the base config: name the missing one instead.
    stack.write_config(|text| {
        format!("{text}\n[attachments]\nrepository = \"pallets/no-such-intake\"\n")
    });
    let mut failed = stack.daemon(&["check"]);
    assert!(
        !failed.wait(Duration::from_secs(60)).success(),
        "{}",
        failed.log()
    );
    let out = failed.log();
    assert!(
        out.contains("FAILED  GitHub attachments repository pallets/no-such-intake")
            && out.contains("404"),
        "{out}"
    );
}
