//! The request log is bounded: it keeps the newest requests, and bodies only for the
//! newest of those, while the count of every request goes on.

use crate::support;

use fake_github::{FakeGitHub, FakeOptions};
use serde_json::json;
use support::call;

#[tokio::test]
async fn the_request_log_keeps_the_newest_requests_and_bodies() {
    let fake = FakeGitHub::start(FakeOptions {
        token: "t".into(),
        repos: vec!["o/r".into()],
        request_log_limit: 5,
        request_log_bodies: 2,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    for i in 0..8 {
        let body = json!({"summary": format!("s{i}"), "description": "d",
            "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "x"}}]});
        assert_eq!(
            call(
                &fake,
                "POST",
                "/repos/o/r/security-advisories",
                Some("t"),
                Some(&body)
            )
            .await
            .status,
            201
        );
    }
    let log = fake.requests();
    assert_eq!(log.len(), 5);
    assert_eq!(fake.request_count(), 8);
    assert!(
        log[..3]
            .iter()
            .all(|r| r.body.is_none() && r.response.is_none())
    );
    assert_eq!(log[4].body.as_ref().unwrap()["summary"], "s7");
    assert_eq!(log[4].response.as_ref().unwrap()["summary"], "s7");
    assert!(log.iter().all(|r| r.status == Some(201)));
    fake.clear_requests();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.advisory_count("o/r"), 8);
}
