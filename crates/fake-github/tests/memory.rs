//! Large repositories: 5,000 advisories with ~4 KiB descriptions, created over HTTP and
//! listed page by page (several full walks, as a daemon's marker search does), must fit
//! in well under 200 MB and page in time linear in the page, not in the repository.
//!
//! Alone in its own test binary, so the resident set measured is this test's only.

mod support;

use std::time::Instant;

use fake_github::{FakeGitHub, FakeOptions};
use serde_json::json;
use support::{call, next_link};

const TOKEN: &str = "t";
const COUNT: usize = 5_000;

/// Resident set size of this process, from `/proc/self/statm` (pages of 4 KiB).
fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_advisories_fit_in_under_200_mb_and_page_quickly() {
    let fake = FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: vec!["big/repo".into()],
        seed: Some(5),
        rate_limit: 1_000_000,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let before = rss_mb();
    let started = Instant::now();
    for i in 0..COUNT {
        // ~4 KiB of report text, different for every advisory.
        let description = format!(
            "Report {i}.\n\n{}",
            format!("line {i} of the report. ").repeat(170)
        );
        let reply = call(
            &fake,
            "POST",
            "/repos/big/repo/security-advisories",
            Some(TOKEN),
            Some(&json!({
                "summary": format!("Advisory {i}"),
                "description": description,
                "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "big"}}],
            })),
        )
        .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let created = started.elapsed();
    let after_create = rss_mb();

    let mut walk_times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut seen = 0;
        let mut next = Some("/repos/big/repo/security-advisories?per_page=100".to_owned());
        while let Some(url) = next {
            let page = call(&fake, "GET", &url, Some(TOKEN), None).await;
            assert_eq!(page.status, 200);
            seen += page.body.as_array().unwrap().len();
            next = next_link(page.header("link"));
        }
        assert_eq!(seen, COUNT);
        walk_times.push(started.elapsed());
    }
    let after_walks = rss_mb();
    assert_eq!(fake.advisory_count("big/repo"), COUNT);
    println!(
        "fake-github memory: {before:.0} MB at start, {after_create:.0} MB after {COUNT} creates \
         ({created:.1?}), {after_walks:.0} MB after 3 full list walks (each {:.1?}); request log \
         holds {} of {} requests",
        walk_times[0],
        fake.requests().len(),
        fake.request_count()
    );
    assert!(after_walks < 200.0, "resident set {after_walks:.0} MB");
}
