//! Scenarios against a running fake, over real HTTP: it answers as GitHub does, and every
//! body it produces validates against the official OpenAPI description.

use std::time::Duration;

use fake_github::{
    AdvisoryState, FakeGitHub, FakeHandle, FakeOptions, Fault, FaultMatch, Operation, spec,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A deliberately dumb HTTP/1.1 client, so these tests depend on nothing but sockets.
async fn call(
    fake: &FakeHandle,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Reply> {
    let target = target.strip_prefix(&fake.url()).unwrap_or(target);
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await?;
    let body_text = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        fake.addr(),
        body_text.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body_text);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response head")
    })?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn start(repos: &[&str]) -> FakeHandle {
    FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: repos.iter().map(|r| r.to_string()).collect(),
        seed: Some(1),
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

fn draft_body(summary: &str) -> Value {
    json!({
        "summary": summary,
        "description": "Path traversal in send_from_directory.\n\n<!-- advisory-bridge report-id=abc -->",
        "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "flask"}}],
    })
}

/// The fake's honesty check: every answer it gave validates against the response schema
/// the description documents for that operation and status; statuses the description
/// leaves out (401, the rate-limit 403s) carry GitHub's basic error shape.
fn assert_every_response_follows_the_description(fake: &FakeHandle) {
    let spec = spec();
    for request in fake.requests() {
        let (Some(operation), Some(status), Some(body)) =
            (request.operation, request.status, &request.response)
        else {
            continue;
        };
        match spec.validate_response(operation, status, body) {
            Ok(violations) => assert!(
                violations.is_empty(),
                "{} {} answered {status} with a body outside the description: {violations:#?}",
                request.method,
                request.path
            ),
            Err(_) => {
                assert!(
                    body["message"].is_string() && body["documentation_url"].is_string(),
                    "undocumented status {status} without GitHub's error shape: {body}"
                );
            }
        }
    }
}

#[tokio::test]
async fn creating_a_draft_returns_a_full_advisory_and_stores_it() {
    let fake = start(&["pallets/flask"]).await;
    let reply = call(
        &fake,
        "POST",
        "/repos/pallets/flask/security-advisories",
        Some(TOKEN),
        Some(&draft_body("Path traversal")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.body);
    let ghsa = reply.body["ghsa_id"].as_str().unwrap().to_owned();
    assert!(fake_github::advisory::is_ghsa_id(&ghsa), "{ghsa}");
    assert_eq!(reply.body["state"], "draft");
    assert_eq!(
        reply.body["html_url"],
        format!("https://github.com/pallets/flask/security/advisories/{ghsa}")
    );
    assert_eq!(reply.body["author"]["login"], "advisory-bridge-bot");
    assert_eq!(reply.body["vulnerabilities"][0]["package"]["name"], "flask");
    assert_eq!(reply.body["identifiers"][0]["value"], ghsa.as_str());
    assert_eq!(fake.advisories("pallets/flask"), vec![reply.body.clone()]);
    assert_eq!(fake.advisories("PALLETS/Flask").len(), 1);

    assert_eq!(reply.header("x-ratelimit-limit"), Some("5000"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("4999"));
    assert_eq!(reply.header("x-ratelimit-used"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-resource"), Some("core"));
    assert!(
        reply
            .header("x-ratelimit-reset")
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > chrono::Utc::now().timestamp()
    );
    assert!(reply.header("x-github-request-id").is_some());

    let again = call(
        &fake,
        "GET",
        &format!("/repos/pallets/flask/security-advisories/{ghsa}"),
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.body, reply.body);
    assert_eq!(again.header("x-ratelimit-remaining"), Some("4998"));
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn bodies_outside_the_description_get_422_with_the_fields_named() {
    let fake = start(&["pallets/flask"]).await;
    let path = "/repos/pallets/flask/security-advisories";
    let too_long = call(
        &fake,
        "POST",
        path,
        Some(TOKEN),
        Some(&draft_body(&"x".repeat(1025))),
    )
    .await
    .unwrap();
    assert_eq!(too_long.status, 422);
    assert_eq!(too_long.body["message"], "Validation Failed");
    assert_eq!(too_long.body["errors"][0]["field"], "summary");

    let mut unknown_field = draft_body("s");
    unknown_field["labels"] = json!(["security"]);
    let reply = call(&fake, "POST", path, Some(TOKEN), Some(&unknown_field))
        .await
        .unwrap();
    assert_eq!(reply.status, 422, "{}", reply.body);

    let bad_ecosystem = json!({"summary": "s", "description": "d",
        "vulnerabilities": [{"package": {"ecosystem": "pypi", "name": "flask"}}]});
    let reply = call(&fake, "POST", path, Some(TOKEN), Some(&bad_ecosystem))
        .await
        .unwrap();
    assert_eq!(reply.status, 422);
    assert_eq!(
        reply.body["errors"][0]["field"],
        "vulnerabilities/0/package/ecosystem"
    );

    let missing = json!({"summary": "s", "description": "d"});
    let reply = call(&fake, "POST", path, Some(TOKEN), Some(&missing))
        .await
        .unwrap();
    assert_eq!(reply.body["errors"][0]["code"], "missing_field");
    assert_eq!(reply.body["errors"][0]["field"], "vulnerabilities");

    let mut both = draft_body("s");
    both["severity"] = json!("high");
    both["cvss_vector_string"] = json!("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:L");
    let reply = call(&fake, "POST", path, Some(TOKEN), Some(&both))
        .await
        .unwrap();
    assert_eq!(reply.status, 422);

    let reply = call(
        &fake,
        "POST",
        path,
        Some(TOKEN),
        Some(&json!("not an object")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 422);

    assert!(fake.advisories("pallets/flask").is_empty());
    let recorded = fake.requests();
    assert!(!recorded[0].violations.is_empty());
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn unknown_repositories_and_bad_tokens_are_refused_like_github() {
    let fake = start(&["pallets/flask"]).await;
    let body = draft_body("s");
    let reply = call(
        &fake,
        "POST",
        "/repos/pallets/quart/security-advisories",
        Some(TOKEN),
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body["message"], "Not Found");
    assert_eq!(reply.body["status"], "404");

    let reply = call(
        &fake,
        "POST",
        "/repos/pallets/flask/security-advisories",
        Some("wrong"),
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body["message"], "Bad credentials");
    let reply = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 401);

    let reply = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories/GHSA-2222-3333-4444",
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);
    assert!(fake.advisories("pallets/flask").is_empty());
    assert_every_response_follows_the_description(&fake);
}

/// Follows `rel` links from a first page and returns every summary seen, in order.
async fn walk(fake: &FakeHandle, first: &str, rel: &str) -> (Vec<String>, Vec<String>) {
    let mut summaries = Vec::new();
    let mut targets = vec![first.to_owned()];
    let mut next = Some(first.to_owned());
    while let Some(target) = next.take() {
        let reply = call(fake, "GET", &target, Some(TOKEN), None).await.unwrap();
        assert_eq!(reply.status, 200, "{target}: {}", reply.body);
        for a in reply.body.as_array().unwrap() {
            summaries.push(a["summary"].as_str().unwrap().to_owned());
        }
        next = reply.header("link").and_then(|link| {
            link.split(", ")
                .find(|part| part.ends_with(&format!("rel=\"{rel}\"")))
                .and_then(|part| part.split_once('<'))
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(url, _)| url.to_owned())
        });
        if let Some(n) = &next {
            targets.push(n.clone());
        }
    }
    (summaries, targets)
}

#[tokio::test]
async fn the_list_pages_with_cursor_links_in_both_directions() {
    let fake = start(&["pallets/flask"]).await;
    for i in 1..=5 {
        fake.insert_advisory("pallets/flask", &draft_body(&format!("report {i}")))
            .unwrap();
    }
    let base = "/repos/pallets/flask/security-advisories";
    let (newest_first, targets) = walk(&fake, &format!("{base}?per_page=2"), "next").await;
    assert_eq!(
        newest_first,
        ["report 5", "report 4", "report 3", "report 2", "report 1"]
    );
    assert_eq!(targets.len(), 3, "three pages of at most two");
    assert!(
        targets[1].starts_with(&fake.url()),
        "links are absolute: {}",
        targets[1]
    );
    assert!(targets[1].contains("after="));

    let last_page = targets.last().unwrap().clone();
    // Walking back from the last page: pages keep their newest-first order.
    let (backwards, _) = walk(&fake, &last_page, "prev").await;
    assert_eq!(
        backwards,
        ["report 1", "report 3", "report 2", "report 5", "report 4"]
    );

    let (oldest_first, _) = walk(
        &fake,
        &format!("{base}?per_page=100&direction=asc&sort=created"),
        "next",
    )
    .await;
    assert_eq!(
        oldest_first,
        ["report 1", "report 2", "report 3", "report 4", "report 5"]
    );

    let default_page = call(&fake, "GET", base, Some(TOKEN), None).await.unwrap();
    assert_eq!(default_page.body.as_array().unwrap().len(), 5);
    assert!(default_page.header("link").is_none());

    for bad in [
        "per_page=0",
        "per_page=101",
        "per_page=ten",
        "state=withdrawn",
        "sort=name",
        "direction=up",
        "after=nonsense",
    ] {
        let reply = call(&fake, "GET", &format!("{base}?{bad}"), Some(TOKEN), None)
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn maintainer_actions_change_state_and_the_list_filters_by_it() {
    let fake = start(&["pallets/werkzeug"]).await;
    let base = "/repos/pallets/werkzeug/security-advisories";
    let first = fake
        .insert_advisory("pallets/werkzeug", &draft_body("one"))
        .unwrap();
    let second = fake
        .insert_advisory("pallets/werkzeug", &draft_body("two"))
        .unwrap();
    fake.set_advisory_state("pallets/werkzeug", &first, AdvisoryState::Published)
        .unwrap();
    fake.assign_cve("pallets/werkzeug", &first, "CVE-2026-0001")
        .unwrap();
    assert!(
        fake.set_advisory_state(
            "pallets/werkzeug",
            "GHSA-2222-2222-2222",
            AdvisoryState::Closed
        )
        .is_err()
    );

    let published = call(
        &fake,
        "GET",
        &format!("{base}?state=published"),
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    let list = published.body.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["ghsa_id"], first.as_str());
    assert_eq!(list[0]["cve_id"], "CVE-2026-0001");
    assert!(list[0]["published_at"].is_string());
    assert_eq!(list[0]["identifiers"][1]["type"], "CVE");

    let closed = call(
        &fake,
        "PATCH",
        &format!("{base}/{second}"),
        Some(TOKEN),
        Some(&json!({"state": "closed", "severity": "high"})),
    )
    .await
    .unwrap();
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["state"], "closed");
    assert_eq!(closed.body["severity"], "high");
    assert!(closed.body["closed_at"].is_string());
    let reopen_published = call(
        &fake,
        "PATCH",
        &format!("{base}/{first}"),
        Some(TOKEN),
        Some(&json!({"state": "draft"})),
    )
    .await
    .unwrap();
    assert_eq!(reopen_published.status, 422);
    let bad_state = call(
        &fake,
        "PATCH",
        &format!("{base}/{second}"),
        Some(TOKEN),
        Some(&json!({"state": "withdrawn"})),
    )
    .await
    .unwrap();
    assert_eq!(bad_state.status, 422);

    let report = call(
        &fake,
        "POST",
        &format!("{base}/reports"),
        Some(TOKEN),
        Some(&json!({"summary": "XSS", "description": "details"})),
    )
    .await
    .unwrap();
    assert_eq!(report.status, 201, "{}", report.body);
    assert_eq!(report.body["state"], "triage");
    assert_eq!(report.body["submission"]["accepted"], false);

    let cve = call(
        &fake,
        "POST",
        &format!("{base}/{second}/cve"),
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(cve.status, 202);
    let cve_again = call(
        &fake,
        "POST",
        &format!("{base}/{first}/cve"),
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(cve_again.status, 422, "it already has a CVE");
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn injected_faults_apply_once_to_the_next_matching_request() {
    let fake = start(&["pallets/flask"]).await;
    let base = "/repos/pallets/flask/security-advisories";
    fake.push_fault_when(FaultMatch::operation(Operation::Create), Fault::status(503));
    fake.push_fault(Fault::secondary_rate_limit(17));

    // The List request takes the second fault: the first only matches Create.
    let limited = call(&fake, "GET", base, Some(TOKEN), None).await.unwrap();
    assert_eq!(limited.status, 403);
    assert_eq!(limited.header("retry-after"), Some("17"));
    assert!(
        limited.body["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit")
    );

    let unavailable = call(&fake, "POST", base, Some(TOKEN), Some(&draft_body("s")))
        .await
        .unwrap();
    assert_eq!(unavailable.status, 503);
    assert!(
        fake.advisories("pallets/flask").is_empty(),
        "a failed create stores nothing"
    );
    assert_eq!(fake.pending_faults(), 0);

    fake.push_fault(Fault::rate_limit_exhausted(1_900_000_000));
    let exhausted = call(&fake, "GET", base, Some(TOKEN), None).await.unwrap();
    assert_eq!(exhausted.status, 403);
    assert_eq!(exhausted.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(exhausted.header("x-ratelimit-reset"), Some("1900000000"));

    fake.push_fault(Fault::Drop);
    let dropped = call(&fake, "POST", base, Some(TOKEN), Some(&draft_body("s"))).await;
    assert!(dropped.is_err(), "the connection closes without an answer");
    assert!(fake.advisories("pallets/flask").is_empty());
    assert_eq!(fake.requests().last().unwrap().status, None);

    fake.push_fault(Fault::Delay(Duration::from_millis(200)));
    let delayed = call(&fake, "POST", base, Some(TOKEN), Some(&draft_body("s")))
        .await
        .unwrap();
    assert_eq!(delayed.status, 201);
    assert_eq!(fake.advisories("pallets/flask").len(), 1);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn a_used_up_rate_limit_answers_403_with_zero_remaining() {
    let fake = FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: vec!["pallets/flask".into()],
        rate_limit: 2,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let base = "/repos/pallets/flask/security-advisories";
    for remaining in ["1", "0"] {
        let reply = call(&fake, "GET", base, Some(TOKEN), None).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-ratelimit-remaining"), Some(remaining));
    }
    let reply = call(&fake, "GET", base, Some(TOKEN), None).await.unwrap();
    assert_eq!(reply.status, 403);
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .starts_with("API rate limit exceeded")
    );
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn the_inspection_endpoint_shows_every_advisory_by_repository() {
    let fake = start(&["pallets/flask", "pallets-eco/flask-wtf"]).await;
    let ghsa = fake
        .insert_advisory("pallets-eco/flask-wtf", &draft_body("csrf"))
        .unwrap();
    let reply = call(&fake, "GET", "/_fake/advisories", None, None)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body["pallets-eco/flask-wtf"][0]["ghsa_id"],
        ghsa.as_str()
    );
    assert_eq!(reply.body["pallets/flask"], json!([]));
    assert!(
        fake.requests().is_empty(),
        "inspection is not recorded as API traffic"
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let fake = start(&["pallets/flask"]).await;
    let addr = fake.addr();
    drop(fake);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
