//! The GitHub client against the fake GitHub: drafts land where they should, the marker
//! search sees every page, and every failure is sorted into retry-or-quarantine.

use std::time::Duration;

use advisory_bridge::config::Secret;
use advisory_bridge::failure::FailureKind;
use advisory_bridge::github::{GitHub, GitHubError, GitHubSettings};
use advisory_bridge::mail::ReportId;
use advisory_bridge::render::{AdvisoryDraft, MarkerKey, MarkerQuery, Package};

/// The marker key these tests write and search with.
const KEY: MarkerKey = MarkerKey::new([3; 32]);

fn marker(id: &ReportId) -> String {
    KEY.report(id)
}

/// A search for the report named `id`.
fn wanted(id: &str) -> [MarkerQuery; 1] {
    [KEY.query(&ReportId(id.into()))]
}
use fake_github::{
    AdvisoryState, FakeGitHub, FakeHandle, FakeOptions, Fault, FaultMatch, Operation,
};
use serde_json::json;

const TOKEN: &str = "ghp_fake_token_for_tests";

async fn fake() -> FakeHandle {
    FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: vec!["pallets/flask".into(), "pallets/werkzeug".into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

fn client_with(fake: &FakeHandle, token: &str, timeout: Duration) -> GitHub {
    GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        token: Some(Secret::new(token)),
        owner_tokens: Vec::new(),
        app: None,
        timeout,
        min_mutation_interval: Duration::ZERO,
    })
    .unwrap()
}

fn client(fake: &FakeHandle) -> GitHub {
    client_with(fake, TOKEN, Duration::from_secs(30))
}

fn draft(repository: &str, summary: &str, report: &str) -> AdvisoryDraft {
    AdvisoryDraft {
        repository: repository.into(),
        summary: summary.into(),
        description: format!(
            "Reported by mail.\n\n{}\n",
            marker(&ReportId(report.into()))
        ),
        vulnerabilities: vec![Package {
            ecosystem: "pip".into(),
            name: repository.rsplit('/').next().unwrap().into(),
        }],
        stored_attachments: Vec::new(),
        credits: Vec::new(),
        collaborators: Vec::new(),
        upload: None,
        signals: Default::default(),
    }
}

fn expect_transient(error: &GitHubError) -> Option<Duration> {
    match error.kind {
        FailureKind::Transient { retry_after } => retry_after,
        other => panic!("expected a transient failure, got {other:?}: {error}"),
    }
}

#[tokio::test]
async fn a_report_about_werkzeug_becomes_a_draft_in_werkzeug() {
    let fake = fake().await;
    let github = client(&fake);
    let created = github
        .create_draft(&draft(
            "pallets/werkzeug",
            "Debugger PIN bypass",
            "r1@example.org",
        ))
        .await
        .unwrap();

    let stored = fake.advisories("pallets/werkzeug");
    assert_eq!(stored.len(), 1);
    assert!(fake.advisories("pallets/flask").is_empty());
    assert_eq!(stored[0]["ghsa_id"], created.ghsa_id.as_str());
    assert_eq!(stored[0]["state"], "draft");
    assert_eq!(stored[0]["summary"], "Debugger PIN bypass");
    assert_eq!(
        stored[0]["vulnerabilities"][0]["package"],
        json!({"ecosystem": "pip", "name": "werkzeug"})
    );
    assert_eq!(created.repository, "pallets/werkzeug");
    assert_eq!(
        created.html_url,
        format!(
            "https://github.com/pallets/werkzeug/security/advisories/{}",
            created.ghsa_id
        )
    );
    assert!(fake_github::advisory::is_ghsa_id(&created.ghsa_id));
}

#[tokio::test]
async fn the_create_request_body_follows_githubs_openapi_description() {
    let fake = fake().await;
    client(&fake)
        .create_draft(&draft("pallets/flask", "Path traversal", "r2@example.org"))
        .await
        .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/repos/pallets/flask/security-advisories")
    );
    assert_eq!(request.status, Some(201));
    let body = request.body.as_ref().unwrap();
    assert_eq!(
        fake_github::spec().validate_request(Operation::Create, body),
        vec![]
    );
    assert!(request.violations.is_empty());
    // Only what we mean to send: no nulls for optional fields GitHub would interpret.
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["description", "summary", "vulnerabilities"]);
}

#[tokio::test]
async fn the_marker_is_found_on_page_three_of_three_in_any_state() {
    let fake = fake().await;
    let old = marker(&ReportId("old@example.org".into()));
    let target = fake
        .insert_advisory(
            "pallets/flask",
            &json!({"summary": "old report", "description": format!("text\n{old}"), "vulnerabilities": []}),
        )
        .unwrap();
    fake.set_advisory_state("pallets/flask", &target, AdvisoryState::Closed)
        .unwrap();
    for i in 0..249 {
        fake.insert_advisory(
            "pallets/flask",
            &json!({"summary": format!("report {i}"), "description": format!("report {i}"), "vulnerabilities": []}),
        )
        .unwrap();
    }
    let github = client(&fake);

    let found = github
        .find_by_marker("pallets/flask", &wanted("old@example.org"), None)
        .await
        .unwrap();
    let (id, found) = found.expect("the advisory with the marker");
    assert_eq!(id.0, "old@example.org");
    assert_eq!(found.ghsa_id, target);
    assert_eq!(found.repository, "pallets/flask");
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::List))
        .collect();
    assert_eq!(
        lists.len(),
        3,
        "newest first, 100 per page: the oldest is on page 3"
    );
    assert!(lists.iter().all(|r| r.status == Some(200)));
    assert!(lists[0].query.as_deref().unwrap().contains("per_page=100"));
    assert!(
        !lists[0].query.as_deref().unwrap().contains("state="),
        "every state"
    );

    assert_eq!(
        github
            .find_by_marker("pallets/flask", &wanted("never@example.org"), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        github
            .find_by_marker("pallets/werkzeug", &wanted("old@example.org"), None)
            .await
            .unwrap(),
        None,
        "another repository's advisory does not count"
    );
}

#[tokio::test]
async fn a_failure_on_a_later_page_fails_the_search_as_transient() {
    let fake = fake().await;
    for i in 0..150 {
        fake.insert_advisory(
            "pallets/flask",
            &json!({"summary": format!("report {i}"), "description": "d", "vulnerabilities": []}),
        )
        .unwrap();
    }
    fake.push_fault_when(
        FaultMatch::operation(Operation::List),
        Fault::Delay(Duration::ZERO),
    );
    fake.push_fault_when(FaultMatch::operation(Operation::List), Fault::status(502));
    let error = client(&fake)
        .find_by_marker("pallets/flask", &wanted("absent"), None)
        .await
        .unwrap_err();
    expect_transient(&error);
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_repository_the_token_cannot_see_is_our_misconfiguration() {
    let fake = fake().await;
    let error = client(&fake)
        .create_draft(&draft("pallets/quart", "s", "r3@example.org"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
    assert!(error.message.contains("404"), "{error}");
    assert_eq!(error.repository, "pallets/quart");
}

#[tokio::test]
async fn a_wrong_token_is_our_misconfiguration_and_not_repeated_in_the_error() {
    let fake = fake().await;
    let github = client_with(&fake, "ghp_wrong_secret_value", Duration::from_secs(30));
    let error = github
        .create_draft(&draft("pallets/flask", "s", "r4@example.org"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
    assert!(error.message.contains("Bad credentials"), "{error}");
    assert!(!format!("{error} {error:?}").contains("ghp_wrong_secret_value"));
    assert!(fake.advisories("pallets/flask").is_empty());
}

#[tokio::test]
async fn a_rejected_body_is_permanent_with_githubs_message() {
    let fake = fake().await;
    let error = client(&fake)
        .create_draft(&draft(
            "pallets/flask",
            &"Subject words ".repeat(80),
            "r5@example.org",
        ))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Permanent, "{error}");
    assert!(error.message.contains("Validation Failed"), "{error}");
    assert!(
        error.message.contains("summary"),
        "the field is named: {error}"
    );
}

#[tokio::test]
async fn service_unavailable_is_transient_without_advice() {
    let fake = fake().await;
    fake.push_fault(Fault::status(503));
    let error = client(&fake)
        .create_draft(&draft("pallets/flask", "s", "r6@example.org"))
        .await
        .unwrap_err();
    assert_eq!(expect_transient(&error), None);
    assert!(error.message.contains("503"), "{error}");
}

#[tokio::test]
async fn too_many_requests_and_secondary_limits_wait_for_retry_after() {
    let fake = fake().await;
    let github = client(&fake);
    fake.push_fault(Fault::Status {
        code: 429,
        headers: vec![("retry-after".into(), "42".into())],
    });
    let error = github
        .create_draft(&draft("pallets/flask", "s", "r7@example.org"))
        .await
        .unwrap_err();
    assert_eq!(expect_transient(&error), Some(Duration::from_secs(42)));

    fake.push_fault(Fault::secondary_rate_limit(17));
    let error = github.check_access("pallets/flask").await.unwrap_err();
    assert_eq!(expect_transient(&error), Some(Duration::from_secs(17)));

    // A secondary limit that names no time: GitHub says wait at least a minute.
    fake.push_fault(Fault::status(403));
    let error = github.check_access("pallets/flask").await.unwrap_err();
    assert_eq!(expect_transient(&error), Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn an_exhausted_rate_limit_waits_until_the_reset() {
    let fake = fake().await;
    let reset = chrono::Utc::now().timestamp() + 120;
    fake.push_fault(Fault::rate_limit_exhausted(reset));
    let error = client(&fake)
        .create_draft(&draft("pallets/flask", "s", "r8@example.org"))
        .await
        .unwrap_err();
    let delay = expect_transient(&error).expect("a delay derived from x-ratelimit-reset");
    assert!(
        delay <= Duration::from_secs(120) && delay >= Duration::from_secs(60),
        "{delay:?}"
    );
}

#[tokio::test]
async fn a_forbidden_without_rate_limit_signs_is_a_missing_permission() {
    let fake = fake().await;
    fake.push_fault(Fault::forbidden());
    let error = client(&fake)
        .check_access("pallets/flask")
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
    assert!(error.message.contains("Resource not accessible"), "{error}");
}

#[tokio::test]
async fn a_stalled_github_times_out_as_transient() {
    let fake = fake().await;
    fake.push_fault(Fault::Delay(Duration::from_secs(60)));
    let github = client_with(&fake, TOKEN, Duration::from_millis(500));
    let error = github
        .create_draft(&draft("pallets/flask", "s", "r9@example.org"))
        .await
        .unwrap_err();
    expect_transient(&error);
}

#[tokio::test]
async fn a_dropped_connection_is_transient() {
    let fake = fake().await;
    fake.push_fault(Fault::Drop);
    let error = client(&fake)
        .create_draft(&draft("pallets/flask", "s", "r10@example.org"))
        .await
        .unwrap_err();
    expect_transient(&error);
    assert!(error.message.contains("network"), "{error}");
}

#[tokio::test]
async fn check_access_reads_one_advisory() {
    let fake = fake().await;
    let github = client(&fake);
    github.check_access("pallets/flask").await.unwrap();
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.operation, Some(Operation::List));
    assert_eq!(request.query.as_deref(), Some("per_page=1"));
    let error = github.check_access("pallets/quart").await.unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured);
}

#[tokio::test]
async fn a_create_that_timed_out_can_still_land_and_the_marker_finds_it() {
    let fake = fake().await;
    fake.push_fault(Fault::Delay(Duration::from_secs(2)));
    let impatient = client_with(&fake, TOKEN, Duration::from_millis(300));
    let report = draft("pallets/flask", "Late", "late@example.org");
    let error = impatient.create_draft(&report).await.unwrap_err();
    expect_transient(&error);

    // GitHub finishes what it started: wait (generously) for the advisory to appear.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.advisories("pallets/flask").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delayed create never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, found) = client(&fake)
        .find_by_marker("pallets/flask", &wanted("late@example.org"), None)
        .await
        .unwrap()
        .expect("the create that timed out is found by its marker");
    assert_eq!(
        found.ghsa_id,
        fake.advisories("pallets/flask")[0]["ghsa_id"]
            .as_str()
            .unwrap()
    );
}

#[tokio::test]
async fn the_fakes_own_rate_limit_is_read_from_its_headers() {
    let fake = FakeGitHub::start(FakeOptions {
        token: TOKEN.into(),
        repos: vec!["pallets/flask".into()],
        rate_limit: 1,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let github = client(&fake);
    github.check_access("pallets/flask").await.unwrap();
    let error = github.check_access("pallets/flask").await.unwrap_err();
    let delay = expect_transient(&error).expect("a delay until the hourly reset");
    assert!(
        delay <= Duration::from_secs(3600) && delay >= Duration::from_secs(3000),
        "{delay:?}"
    );
    assert!(error.message.contains("rate limit"), "{error}");
}

#[tokio::test]
async fn content_creating_requests_are_spaced_by_the_configured_interval() {
    let fake = fake().await;
    let interval = Duration::from_millis(400);
    let github = GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        token: Some(Secret::new(TOKEN)),
        owner_tokens: Vec::new(),
        app: None,
        timeout: Duration::from_secs(30),
        min_mutation_interval: interval,
    })
    .unwrap();
    let paced = github.clone();
    let started = std::time::Instant::now();
    for i in 0..3 {
        paced
            .create_draft(&draft(
                "pallets/flask",
                &format!("paced {i}"),
                &format!("p{i}"),
            ))
            .await
            .unwrap();
    }
    // Three creates need at least two full intervals between them, however fast the
    // fake answers (a lower bound only: never flaky).
    assert!(started.elapsed() >= interval * 2, "{:?}", started.elapsed());
    assert_eq!(fake.advisories("pallets/flask").len(), 3);
}

#[tokio::test]
async fn two_organisations_each_with_its_own_token() {
    use fake_github::{Access, TokenSpec};
    let fake = FakeGitHub::start(FakeOptions {
        // No token that sees everything: each owner's token sees only its repositories.
        token: String::new(),
        repos: vec!["pallets/flask".into(), "pallets-eco/blinker".into()],
        tokens: vec![
            TokenSpec::new("tok-pallets", "pallets", Access::Write),
            TokenSpec::new("tok-eco", "pallets-eco", Access::Write),
        ],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let github = GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        token: None,
        owner_tokens: vec![
            ("pallets".into(), Secret::new("tok-pallets")),
            ("pallets-eco".into(), Secret::new("tok-eco")),
        ],
        app: None,
        timeout: Duration::from_secs(30),
        min_mutation_interval: Duration::ZERO,
    })
    .unwrap();
    github
        .create_draft(&draft("pallets/flask", "one", "o1@example.org"))
        .await
        .unwrap();
    github
        .create_draft(&draft("pallets-eco/blinker", "two", "o2@example.org"))
        .await
        .unwrap();
    assert_eq!(fake.advisories("pallets/flask").len(), 1);
    assert_eq!(fake.advisories("pallets-eco/blinker").len(), 1);

    // With only one owner's token, the other owner is our misconfiguration, named.
    let only_pallets = GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        token: Some(Secret::new("tok-pallets")),
        owner_tokens: Vec::new(),
        app: None,
        timeout: Duration::from_secs(30),
        min_mutation_interval: Duration::ZERO,
    })
    .unwrap();
    let error = only_pallets
        .create_draft(&draft("pallets-eco/blinker", "three", "o3@example.org"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
}

#[tokio::test]
async fn a_next_page_on_another_host_is_refused_with_a_clear_error() {
    let fake = fake().await;
    for i in 0..150 {
        fake.insert_advisory(
            "pallets/flask",
            &json!({"summary": format!("report {i}"), "description": "text", "vulnerabilities": []}),
        )
        .unwrap();
    }
    // A gateway that rewrites GitHub's Link headers to its own public name.
    fake.set_link_base(Some("https://gateway.example.test:8443"));
    let error = client(&fake)
        .find_by_marker("pallets/flask", &wanted("nowhere@example.org"), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
    assert!(error.message.contains("gateway.example.test"), "{error}");
    assert!(error.message.contains("github.api_url"), "{error}");
    let lists = fake
        .requests()
        .into_iter()
        .filter(|r| r.operation == Some(Operation::List))
        .count();
    assert_eq!(
        lists, 1,
        "the second page was never asked for without credentials"
    );
}

/// A client that authenticates as the test App (id 42) and nothing else.
fn app_client(fake: &FakeHandle) -> GitHub {
    GitHub::new(&GitHubSettings {
        api_url: fake.url(),
        token: None,
        owner_tokens: Vec::new(),
        app: Some((42, Secret::new(fake_github::keys::APP_PRIVATE_KEY_PEM))),
        timeout: Duration::from_secs(30),
        min_mutation_interval: Duration::ZERO,
    })
    .unwrap()
}

#[tokio::test]
async fn two_organisations_through_one_app_with_tokens_that_expire() {
    use fake_github::{AppSpec, InstallationSpec, keys};
    let fake = FakeGitHub::start(FakeOptions {
        token: String::new(),
        repos: vec!["pallets/flask".into(), "pallets-eco/blinker".into()],
        apps: vec![AppSpec::new(42, keys::APP_PUBLIC_KEY_PEM)],
        installations: vec![
            InstallationSpec::new(10, 42, "pallets"),
            InstallationSpec::new(11, 42, "pallets-eco"),
        ],
        // Short-lived installation tokens, so refreshes happen within the test.
        installation_token_ttl: Duration::from_secs(1),
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let github = app_client(&fake);
    for round in 0..3 {
        for repo in ["pallets/flask", "pallets-eco/blinker"] {
            github
                .create_draft(&draft(
                    repo,
                    "report",
                    &format!("{repo}-{round}@example.org"),
                ))
                .await
                .unwrap_or_else(|e| panic!("{repo}, round {round}: {e}"));
        }
        // Let the installation tokens run out between rounds (the fake's clock).
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert_eq!(fake.advisories("pallets/flask").len(), 3);
    assert_eq!(fake.advisories("pallets-eco/blinker").len(), 3);
    assert!(
        fake.installation_tokens(10).len() > 1 && fake.installation_tokens(11).len() > 1,
        "tokens were refreshed: {:?} {:?}",
        fake.installation_tokens(10),
        fake.installation_tokens(11)
    );
    for r in fake.requests() {
        assert!(r.violations.is_empty(), "{r:?}");
    }
}

#[tokio::test]
async fn an_owner_without_the_app_installed_is_our_misconfiguration() {
    use fake_github::{AppSpec, InstallationSpec, keys};
    let fake = FakeGitHub::start(FakeOptions {
        token: String::new(),
        repos: vec!["pallets/flask".into(), "pallets-eco/blinker".into()],
        apps: vec![AppSpec::new(42, keys::APP_PUBLIC_KEY_PEM)],
        installations: vec![InstallationSpec::new(10, 42, "pallets")],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let github = app_client(&fake);
    let error = github
        .create_draft(&draft("pallets-eco/blinker", "r", "x@example.org"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
    assert!(
        error.message.contains("not installed on pallets-eco"),
        "{error}"
    );
}

#[tokio::test]
async fn a_422_for_spam_detection_is_retried_and_a_validation_422_is_not() {
    let fake = fake().await;
    fake.push_fault(Fault::Json {
        code: 422,
        headers: Vec::new(),
        body: json!({
            "message": "Validation Failed: the endpoint has been spammed.",
            "documentation_url": "https://docs.github.com/rest/security-advisories/repository-advisories#create-a-repository-security-advisory",
        }),
    });
    let error = client(&fake)
        .create_draft(&draft("pallets/flask", "s", "spam@example.org"))
        .await
        .unwrap_err();
    assert_eq!(
        expect_transient(&error),
        Some(Duration::from_secs(60)),
        "waits at least a minute, as after a secondary limit: {error}"
    );
    fake.push_fault(Fault::status(422));
    let error = client(&fake)
        .create_draft(&draft("pallets/flask", "s", "invalid@example.org"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::Permanent, "{error}");
}
