//! The Git Data API of a private intake repository: object SHAs are git's own, blobs are
//! idempotent, refs refuse to be created twice, and files can be read back by path.

use crate::support;

use std::process::Command;

use base64::Engine;
use fake_github::{FakeGitHub, FakeHandle, FakeOptions, git::blob_sha};
use serde_json::{Value, json};
use support::{assert_every_response_follows_the_description, call};

const TOKEN: &str = "t";
const REPO: &str = "/repos/sec/intake";

async fn start(max_blob_bytes: usize) -> FakeHandle {
    FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: vec!["sec/intake".into()],
        max_blob_bytes,
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

async fn post(fake: &FakeHandle, what: &str, body: Value) -> support::Reply {
    call(
        fake,
        "POST",
        &format!("{REPO}/git/{what}"),
        Some(TOKEN),
        Some(&body),
    )
    .await
}

fn git(dir: &std::path::Path, args: &[&str], stdin: Option<&[u8]>) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Intake")
        .env("GIT_AUTHOR_EMAIL", "intake@example.org")
        .env("GIT_AUTHOR_DATE", "1767323045 +0000")
        .env("GIT_COMMITTER_NAME", "Intake")
        .env("GIT_COMMITTER_EMAIL", "intake@example.org")
        .env("GIT_COMMITTER_DATE", "1767323045 +0000")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    if let Some(input) = stdin {
        child.stdin.take()?.write_all(input).ok()?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test]
async fn an_attachment_is_stored_committed_and_read_back_by_path() {
    let fake = start(40 * 1024 * 1024).await;
    let attachment: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&attachment);

    let blob = post(
        &fake,
        "blobs",
        json!({"content": b64, "encoding": "base64"}),
    )
    .await;
    assert_eq!(blob.status, 201, "{}", blob.body);
    let blob_sha_value = blob.body["sha"].as_str().unwrap().to_owned();
    assert_eq!(blob_sha_value, blob_sha(&attachment));
    // The same content again is the same object, as on GitHub.
    let again = post(
        &fake,
        "blobs",
        json!({"content": b64, "encoding": "base64"}),
    )
    .await;
    assert_eq!(again.body["sha"], blob_sha_value.as_str());
    let text = post(&fake, "blobs", json!({"content": "hello\n"})).await;
    assert_eq!(text.body["sha"], "ce013625030ba8dba906f756967f9e9ca394464a");

    let tree = post(
        &fake,
        "trees",
        json!({"tree": [
            {"path": "reports/r1/dump.bin", "mode": "100644", "type": "blob", "sha": blob_sha_value},
            {"path": "reports/r1/message.eml", "mode": "100644", "type": "blob", "content": "hello\n"},
        ]}),
    )
    .await;
    assert_eq!(tree.status, 201, "{}", tree.body);
    let tree_sha = tree.body["sha"].as_str().unwrap().to_owned();
    assert_eq!(tree.body["tree"][0]["path"], "reports");
    assert_eq!(tree.body["tree"][0]["type"], "tree");

    let message = "Intake report r1\n";
    let signature =
        json!({"name": "Intake", "email": "intake@example.org", "date": "2026-01-02T03:04:05Z"});
    let commit = post(
        &fake,
        "commits",
        json!({"message": message, "tree": tree_sha, "author": signature, "committer": signature}),
    )
    .await;
    assert_eq!(commit.status, 201, "{}", commit.body);
    let commit_sha = commit.body["sha"].as_str().unwrap().to_owned();
    assert_eq!(commit.body["parents"], json!([]));

    // The same objects built by git itself have the same ids.
    let dir = tempfile::tempdir().unwrap();
    if git(dir.path(), &["init", "-q"], None).is_some() {
        let b1 = git(
            dir.path(),
            &["hash-object", "-w", "--stdin"],
            Some(&attachment),
        )
        .unwrap();
        let b2 = git(
            dir.path(),
            &["hash-object", "-w", "--stdin"],
            Some(b"hello\n"),
        )
        .unwrap();
        let inner = git(
            dir.path(),
            &["mktree"],
            Some(format!("100644 blob {b1}\tdump.bin\n100644 blob {b2}\tmessage.eml\n").as_bytes()),
        )
        .unwrap();
        let r1 = git(
            dir.path(),
            &["mktree"],
            Some(format!("040000 tree {inner}\tr1\n").as_bytes()),
        )
        .unwrap();
        let root = git(
            dir.path(),
            &["mktree"],
            Some(format!("040000 tree {r1}\treports\n").as_bytes()),
        )
        .unwrap();
        assert_eq!(root, tree_sha, "tree SHA as git computes it");
        let c = git(
            dir.path(),
            &["commit-tree", &root, "-m", "Intake report r1"],
            None,
        )
        .unwrap();
        assert_eq!(c, commit_sha, "commit SHA as git computes it");
    }

    let created = post(
        &fake,
        "refs",
        json!({"ref": "refs/heads/report-r1", "sha": commit_sha}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["object"]["sha"], commit_sha.as_str());
    let twice = post(
        &fake,
        "refs",
        json!({"ref": "refs/heads/report-r1", "sha": commit_sha}),
    )
    .await;
    assert_eq!(twice.status, 422);
    assert_eq!(twice.body["message"], "Reference already exists");
    let bad = post(
        &fake,
        "refs",
        json!({"ref": "report-r2", "sha": commit_sha}),
    )
    .await;
    assert_eq!(bad.status, 422);

    let got = call(
        &fake,
        "GET",
        &format!("{REPO}/git/ref/heads/report-r1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.body["ref"].clone()),
        (200, json!("refs/heads/report-r1"))
    );
    let missing = call(
        &fake,
        "GET",
        &format!("{REPO}/git/ref/heads/nope"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    let matching = call(
        &fake,
        "GET",
        &format!("{REPO}/git/matching-refs/heads/report-"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(matching.body.as_array().unwrap().len(), 1);

    let file = call(
        &fake,
        "GET",
        &format!("{REPO}/contents/reports/r1/dump.bin?ref=report-r1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(file.status, 200, "{}", file.body);
    assert_eq!(file.body["encoding"], "base64");
    let compact: String = file.body["content"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap(),
        attachment
    );
    let dir_listing = call(
        &fake,
        "GET",
        &format!("{REPO}/contents/reports/r1?ref=report-r1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(dir_listing.body.as_array().unwrap().len(), 2);
    let no_branch = call(
        &fake,
        "GET",
        &format!("{REPO}/contents/reports/r1/dump.bin"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(no_branch.status, 404, "main does not exist");

    let raw = call(
        &fake,
        "GET",
        &format!("{REPO}/git/blobs/{blob_sha_value}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(raw.body["size"], 3000);
    let tree_back = call(
        &fake,
        "GET",
        &format!("{REPO}/git/trees/{tree_sha}?recursive=1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(tree_back.body["tree"].as_array().unwrap().len(), 4);
    let commit_back = call(
        &fake,
        "GET",
        &format!("{REPO}/git/commits/{commit_sha}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(commit_back.body["message"], message);

    // The test's own view.
    assert_eq!(
        fake.git_refs("sec/intake")["refs/heads/report-r1"],
        commit_sha
    );
    assert_eq!(
        fake.git_file("sec/intake", "report-r1", "reports/r1/message.eml")
            .unwrap(),
        b"hello\n"
    );
    let view = call(&fake, "GET", "/_fake/git/sec/intake", None, None).await;
    assert_eq!(
        view.body["files"]["refs/heads/report-r1"]["reports/r1/dump.bin"]["size"],
        3000
    );
    let bytes = call(
        &fake,
        "GET",
        "/_fake/git/sec/intake/file?ref=report-r1&path=reports/r1/dump.bin",
        None,
        None,
    )
    .await;
    assert_eq!(bytes.raw, attachment);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn refs_move_forward_only_unless_forced() {
    let fake = start(1024).await;
    let tree = post(
        &fake,
        "trees",
        json!({"tree": [{"path": "a", "mode": "100644", "type": "blob", "content": "1"}]}),
    )
    .await;
    let tree_sha = tree.body["sha"].as_str().unwrap();
    let first = post(
        &fake,
        "commits",
        json!({"message": "one", "tree": tree_sha}),
    )
    .await;
    let first_sha = first.body["sha"].as_str().unwrap().to_owned();
    assert_eq!(first.body["author"]["name"], "advisory-bridge-bot");
    post(
        &fake,
        "refs",
        json!({"ref": "refs/heads/main", "sha": first_sha}),
    )
    .await;
    let second = post(
        &fake,
        "commits",
        json!({"message": "two", "tree": tree_sha, "parents": [first_sha]}),
    )
    .await;
    let second_sha = second.body["sha"].as_str().unwrap().to_owned();
    let other = post(
        &fake,
        "commits",
        json!({"message": "other", "tree": tree_sha}),
    )
    .await;
    let other_sha = other.body["sha"].as_str().unwrap().to_owned();
    let patch = |sha: String, force: bool| {
        let fake = &fake;
        async move {
            call(
                fake,
                "PATCH",
                &format!("{REPO}/git/refs/heads/main"),
                Some(TOKEN),
                Some(&json!({"sha": sha, "force": force})),
            )
            .await
        }
    };
    assert_eq!(patch(second_sha.clone(), false).await.status, 200);
    let refused = patch(other_sha.clone(), false).await;
    assert_eq!(
        (refused.status, refused.body["message"].clone()),
        (422, json!("Update is not a fast forward"))
    );
    assert_eq!(patch(other_sha.clone(), true).await.status, 200);
    // `main` is the default branch for contents.
    let file = call(
        &fake,
        "GET",
        &format!("{REPO}/contents/a"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(file.status, 200, "{}", file.body);

    let missing_parent = post(
        &fake,
        "commits",
        json!({"message": "x", "tree": tree_sha, "parents": ["0".repeat(40)]}),
    )
    .await;
    assert_eq!(missing_parent.status, 422);
    let too_big = post(&fake, "blobs", json!({"content": "x".repeat(1025)})).await;
    assert_eq!(too_big.status, 422, "{}", too_big.body);
    let fits = post(&fake, "blobs", json!({"content": "x".repeat(1024)})).await;
    assert_eq!(fits.status, 201);
    let schema = post(&fake, "blobs", json!({"encoding": "base64"})).await;
    assert_eq!(schema.status, 422);
    assert_eq!(schema.body["errors"][0]["field"], "content");
    let deleted = call(
        &fake,
        "DELETE",
        &format!("{REPO}/git/refs/heads/main"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert!(fake.git_refs("sec/intake").is_empty());
    assert_every_response_follows_the_description(&fake);
}
