//! GitHub App JWTs, installations and their tokens, per-owner tokens, revocation,
//! expiry, `Link` rewriting and users, over real HTTP; every answer is checked against
//! the OpenAPI description.

use crate::support;

use std::time::Duration;

use chrono::Utc;
use fake_github::{
    Access, AccountType, AppSpec, FakeGitHub, FakeHandle, FakeOptions, InstallationSpec,
    Permissions, TokenSpec, app_jwt, keys, sign_jwt,
};
use serde_json::{Value, json};
use support::{assert_every_response_follows_the_description, call, next_link};

const MASTER: &str = "master-token";
const APP_ID: u64 = 4242;

fn draft(summary: &str) -> Value {
    json!({
        "summary": summary,
        "description": "Path traversal.",
        "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "flask"}}],
    })
}

async fn start() -> FakeHandle {
    let mut alice = InstallationSpec::new(11, APP_ID, "alice");
    alice.account_type = AccountType::User;
    let mut readonly = InstallationSpec::new(12, APP_ID, "readers");
    readonly.permissions = Permissions::read_only();
    FakeGitHub::start(FakeOptions {
        token: MASTER.into(),
        repos: vec![
            "pallets/flask".into(),
            "pallets/werkzeug".into(),
            "django/django".into(),
            "alice/tool".into(),
            "readers/book".into(),
        ],
        seed: Some(3),
        apps: vec![AppSpec::new(APP_ID, keys::APP_PUBLIC_KEY_PEM)],
        installations: vec![
            InstallationSpec::new(10, APP_ID, "pallets"),
            alice,
            readonly,
        ],
        tokens: vec![
            TokenSpec::new("pat-pallets-write", "pallets", Access::Write),
            TokenSpec::new("pat-pallets-read", "pallets", Access::Read),
        ],
        users: vec!["reporter-one".into()],
        ..FakeOptions::default()
    })
    .await
    .unwrap()
}

fn jwt_with(key: &str, iat_offset: i64, exp_offset: i64, iss: Value) -> String {
    let now = Utc::now().timestamp();
    sign_jwt(
        key,
        &json!({"iat": now + iat_offset, "exp": now + exp_offset, "iss": iss}),
    )
    .unwrap()
}

async fn installation_token(fake: &FakeHandle, installation: u64) -> Value {
    let jwt = app_jwt(keys::APP_PRIVATE_KEY_PEM, APP_ID).unwrap();
    let reply = call(
        fake,
        "POST",
        &format!("/app/installations/{installation}/access_tokens"),
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body
}

#[tokio::test]
async fn app_jwts_are_verified_like_github_does() {
    let fake = start().await;
    let good = app_jwt(keys::APP_PRIVATE_KEY_PEM, APP_ID).unwrap();
    let reply = call(&fake, "GET", "/app", Some(&good), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["id"], APP_ID);
    assert_eq!(reply.body["slug"], "advisory-bridge");

    // `iss` as a string, and an `iat` a little ahead (clock drift) are fine.
    let string_iss = jwt_with(
        keys::APP_PRIVATE_KEY_PEM,
        30,
        300,
        json!(APP_ID.to_string()),
    );
    assert_eq!(
        call(&fake, "GET", "/app", Some(&string_iss), None)
            .await
            .status,
        200
    );

    let cases = [
        (
            "wrong key",
            jwt_with(keys::OTHER_PRIVATE_KEY_PEM, -60, 540, json!(APP_ID)),
            "A JSON web token could not be decoded",
        ),
        (
            "unknown app",
            jwt_with(keys::APP_PRIVATE_KEY_PEM, -60, 540, json!(1)),
            "A JSON web token could not be decoded",
        ),
        (
            "expired",
            jwt_with(keys::APP_PRIVATE_KEY_PEM, -700, -60, json!(APP_ID)),
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
        ),
        (
            "exp beyond 10 minutes",
            jwt_with(keys::APP_PRIVATE_KEY_PEM, -60, 3600, json!(APP_ID)),
            "'Expiration time' claim ('exp') is too far in the future",
        ),
        (
            "iat in the future",
            jwt_with(keys::APP_PRIVATE_KEY_PEM, 300, 540, json!(APP_ID)),
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
        ),
        (
            "a plain token",
            MASTER.to_owned(),
            "A JSON web token could not be decoded",
        ),
    ];
    for (what, token, message) in cases {
        let reply = call(&fake, "GET", "/app", Some(&token), None).await;
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
        assert_eq!(reply.body["message"], message, "{what}");
    }
    // The App's JWT is not a token for repositories.
    let reply = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories",
        Some(&good),
        None,
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn installations_are_found_by_org_repo_user_and_listed() {
    let fake = start().await;
    let jwt = app_jwt(keys::APP_PRIVATE_KEY_PEM, APP_ID).unwrap();
    let org = call(&fake, "GET", "/orgs/pallets/installation", Some(&jwt), None).await;
    assert_eq!(org.status, 200, "{}", org.body);
    assert_eq!(org.body["id"], 10);
    assert_eq!(org.body["account"]["login"], "pallets");
    assert_eq!(org.body["target_type"], "Organization");
    assert_eq!(
        org.body["permissions"],
        json!({"contents": "write", "metadata": "read", "repository_advisories": "write"})
    );
    let repo = call(
        &fake,
        "GET",
        "/repos/Pallets/flask/installation",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!((repo.status, repo.body["id"].clone()), (200, json!(10)));
    let user = call(&fake, "GET", "/users/alice/installation", Some(&jwt), None).await;
    assert_eq!((user.status, user.body["id"].clone()), (200, json!(11)));
    // A user account is not found under /orgs, nor an unknown account or repository.
    for path in [
        "/orgs/alice/installation",
        "/orgs/nobody/installation",
        "/repos/django/django/installation",
        "/repos/pallets/missing/installation",
    ] {
        assert_eq!(
            call(&fake, "GET", path, Some(&jwt), None).await.status,
            404,
            "{path}"
        );
    }
    let all = call(&fake, "GET", "/app/installations", Some(&jwt), None).await;
    assert_eq!(all.status, 200);
    let ids: Vec<u64> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![10, 11, 12]);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn installation_tokens_reach_their_owner_only_and_expire() {
    let fake = start().await;
    fake.set_installation_token_ttl(Duration::from_secs(2));
    let issued = installation_token(&fake, 10).await;
    let token = issued["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ghs_"), "{token}");
    assert_eq!(issued["repository_selection"], "all");
    assert_eq!(issued["permissions"]["repository_advisories"], "write");
    let expires =
        chrono::DateTime::parse_from_rfc3339(issued["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires.timestamp() - Utc::now().timestamp() <= 3);

    let created = call(
        &fake,
        "POST",
        "/repos/pallets/flask/security-advisories",
        Some(&token),
        Some(&draft("via app")),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["author"]["login"], "advisory-bridge[bot]");
    // Another owner's repository does not exist for this token.
    let other = call(
        &fake,
        "POST",
        "/repos/django/django/security-advisories",
        Some(&token),
        Some(&draft("elsewhere")),
    )
    .await;
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(other.body["message"], "Not Found");
    assert!(fake.advisories("django/django").is_empty());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(late.status, 401);
    assert_eq!(late.body["message"], "Bad credentials");

    // A fresh token works again; its expiry can be moved by the test.
    fake.set_installation_token_ttl(Duration::from_secs(3600));
    let fresh = installation_token(&fake, 10).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = |t: String| {
        let fake = &fake;
        async move {
            call(
                fake,
                "GET",
                "/repos/pallets/flask/security-advisories",
                Some(&t),
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(list(fresh.clone()).await, 200);
    fake.set_token_expiry(&fresh, Some(Utc::now() - chrono::Duration::seconds(1)))
        .unwrap();
    assert_eq!(list(fresh.clone()).await, 401);
    let reply = call(
        &fake,
        "POST",
        "/_fake/tokens/expiry",
        None,
        Some(&json!({"token": fresh, "expires_at": null})),
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(list(fresh.clone()).await, 200);
    assert_eq!(fake.installation_tokens(10).len(), 2);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn a_read_only_installation_or_token_gets_403_on_writes() {
    let fake = start().await;
    let token = installation_token(&fake, 12).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = call(
        &fake,
        "GET",
        "/repos/readers/book/security-advisories",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(list.status, 200);
    let write = call(
        &fake,
        "POST",
        "/repos/readers/book/security-advisories",
        Some(&token),
        Some(&draft("nope")),
    )
    .await;
    assert_eq!(write.status, 403, "{}", write.body);
    assert_eq!(
        write.body["message"],
        "Resource not accessible by integration"
    );
    assert_eq!(
        write.header("x-accepted-github-permissions"),
        Some("repository_advisories=write")
    );
    let blob = call(
        &fake,
        "POST",
        "/repos/readers/book/git/blobs",
        Some(&token),
        Some(&json!({"content": "x"})),
    )
    .await;
    assert_eq!(blob.status, 403);

    let pat = call(
        &fake,
        "POST",
        "/repos/pallets/flask/security-advisories",
        Some("pat-pallets-read"),
        Some(&draft("nope")),
    )
    .await;
    assert_eq!(pat.status, 403);
    assert_eq!(
        pat.body["message"],
        "Resource not accessible by personal access token"
    );
    assert!(fake.advisories("pallets/flask").is_empty());
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn per_owner_tokens_see_their_owner_only_and_the_master_token_sees_all() {
    let fake = start().await;
    for (token, repo, status) in [
        ("pat-pallets-write", "pallets/werkzeug", 201),
        ("pat-pallets-write", "django/django", 404),
        ("pat-pallets-read", "django/django", 404),
        (MASTER, "django/django", 201),
        ("unknown-token", "pallets/flask", 401),
    ] {
        let reply = call(
            &fake,
            "POST",
            &format!("/repos/{repo}/security-advisories"),
            Some(token),
            Some(&draft("t")),
        )
        .await;
        assert_eq!(reply.status, status, "{token} on {repo}: {}", reply.body);
    }
    // Tokens can be added at run time, by the handle or over HTTP.
    fake.add_token(TokenSpec::new("pat-django", "django", Access::Write));
    let reply = call(
        &fake,
        "POST",
        "/_fake/tokens",
        None,
        Some(&json!({"token": "pat-django-read", "owner": "django", "access": "read"})),
    )
    .await;
    assert_eq!(reply.status, 204);
    let status = |token: &'static str| {
        let fake = &fake;
        async move {
            call(
                fake,
                "POST",
                "/repos/django/django/security-advisories",
                Some(token),
                Some(&draft("d")),
            )
            .await
            .status
        }
    };
    assert_eq!(status("pat-django").await, 201);
    assert_eq!(status("pat-django-read").await, 403);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn revoked_tokens_and_installations_answer_401_until_restored() {
    let fake = start().await;
    let get = |token: String| {
        let fake = &fake;
        async move {
            call(
                fake,
                "GET",
                "/repos/pallets/flask/security-advisories",
                Some(&token),
                None,
            )
            .await
        }
    };
    fake.revoke_token("pat-pallets-write");
    let reply = get("pat-pallets-write".into()).await;
    assert_eq!(
        (reply.status, reply.body["message"].clone()),
        (401, json!("Bad credentials"))
    );
    fake.restore_token("pat-pallets-write");
    assert_eq!(get("pat-pallets-write".into()).await.status, 200);

    // Over HTTP, the master token too.
    let revoke = call(
        &fake,
        "POST",
        "/_fake/tokens/revoke",
        None,
        Some(&json!({"token": MASTER})),
    )
    .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(get(MASTER.into()).await.status, 401);
    call(
        &fake,
        "POST",
        "/_fake/tokens/restore",
        None,
        Some(&json!({"token": MASTER})),
    )
    .await;
    assert_eq!(get(MASTER.into()).await.status, 200);

    let token = installation_token(&fake, 10).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.revoke_installation(10).unwrap();
    assert_eq!(get(token.clone()).await.status, 401);
    let jwt = app_jwt(keys::APP_PRIVATE_KEY_PEM, APP_ID).unwrap();
    let again = call(
        &fake,
        "POST",
        "/app/installations/10/access_tokens",
        Some(&jwt),
        None,
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(
        call(&fake, "GET", "/orgs/pallets/installation", Some(&jwt), None)
            .await
            .status,
        404
    );
    let restore = call(&fake, "POST", "/_fake/installations/10/restore", None, None).await;
    assert_eq!(restore.status, 204);
    assert_eq!(get(token).await.status, 200);
    assert!(fake.revoke_installation(99).is_err());
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn a_narrowed_installation_token_keeps_to_what_it_asked_for() {
    let fake = start().await;
    let jwt = app_jwt(keys::APP_PRIVATE_KEY_PEM, APP_ID).unwrap();
    let reply = call(
        &fake,
        "POST",
        "/app/installations/10/access_tokens",
        Some(&jwt),
        Some(&json!({"repositories": ["flask"], "permissions": {"repository_advisories": "read"}})),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["repository_selection"], "selected");
    let token = reply.body["token"].as_str().unwrap();
    let flask = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories",
        Some(token),
        None,
    )
    .await;
    assert_eq!(flask.status, 200);
    let werkzeug = call(
        &fake,
        "GET",
        "/repos/pallets/werkzeug/security-advisories",
        Some(token),
        None,
    )
    .await;
    assert_eq!(werkzeug.status, 404);
    let write = call(
        &fake,
        "POST",
        "/repos/pallets/flask/security-advisories",
        Some(token),
        Some(&draft("x")),
    )
    .await;
    assert_eq!(write.status, 403);
    let too_much = call(
        &fake,
        "POST",
        "/app/installations/12/access_tokens",
        Some(&jwt),
        Some(&json!({"permissions": {"contents": "write"}})),
    )
    .await;
    assert_eq!(too_much.status, 422, "{}", too_much.body);
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn link_headers_can_name_a_gateway_host() {
    let fake = start().await;
    for i in 0..5 {
        fake.insert_advisory("pallets/flask", &draft(&format!("a{i}")))
            .unwrap();
    }
    let first = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories?per_page=2",
        Some(MASTER),
        None,
    )
    .await;
    let next = next_link(first.header("link")).unwrap();
    assert!(
        next.starts_with(&format!("{}/repos/pallets/flask/", fake.url())),
        "{next}"
    );

    fake.set_link_base(Some("https://gateway.example.test:8443/"));
    let first = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories?per_page=2",
        Some(MASTER),
        None,
    )
    .await;
    let next = next_link(first.header("link")).unwrap();
    assert!(
        next.starts_with(
            "https://gateway.example.test:8443/repos/pallets/flask/security-advisories?"
        ),
        "{next}"
    );
    // The rewritten URL still pages when sent to the fake itself.
    let path = next
        .strip_prefix("https://gateway.example.test:8443")
        .unwrap();
    let second = call(&fake, "GET", path, Some(MASTER), None).await;
    assert_eq!(second.body.as_array().unwrap().len(), 2);

    let reply = call(
        &fake,
        "POST",
        "/_fake/link-base",
        None,
        Some(&json!({"base": null})),
    )
    .await;
    assert_eq!(reply.status, 204);
    let first = call(
        &fake,
        "GET",
        "/repos/pallets/flask/security-advisories?per_page=2",
        Some(MASTER),
        None,
    )
    .await;
    assert!(
        next_link(first.header("link"))
            .unwrap()
            .starts_with(&fake.url())
    );
}

#[tokio::test]
async fn users_are_known_by_login_or_404() {
    let fake = start().await;
    let bot = call(
        &fake,
        "GET",
        "/users/advisory-bridge-bot",
        Some(MASTER),
        None,
    )
    .await;
    assert_eq!(bot.status, 200, "{}", bot.body);
    assert_eq!(bot.body["login"], "advisory-bridge-bot");
    // No token needed, as on GitHub; names match case-insensitively.
    let reporter = call(&fake, "GET", "/users/Reporter-One", None, None).await;
    assert_eq!(
        (reporter.status, reporter.body["login"].clone()),
        (200, json!("reporter-one"))
    );
    let unknown = call(&fake, "GET", "/users/someone-else", Some(MASTER), None).await;
    assert_eq!(
        (unknown.status, unknown.body["message"].clone()),
        (404, json!("Not Found"))
    );
    fake.add_user("someone-else");
    assert_eq!(
        call(&fake, "GET", "/users/someone-else", None, None)
            .await
            .status,
        200
    );
    let added = call(
        &fake,
        "POST",
        "/_fake/users",
        None,
        Some(&json!({"login": "third"})),
    )
    .await;
    assert_eq!(added.status, 204);
    assert_eq!(
        call(&fake, "GET", "/users/third", Some(MASTER), None)
            .await
            .status,
        200
    );
    let listed = call(&fake, "GET", "/_fake/users", None, None).await;
    assert!(listed.body.as_array().unwrap().contains(&json!("third")));
    assert_every_response_follows_the_description(&fake);
}

#[tokio::test]
async fn bad_app_keys_and_unknown_apps_refuse_to_start() {
    let bad = FakeGitHub::start(FakeOptions {
        apps: vec![AppSpec::new(1, "not a key")],
        ..FakeOptions::default()
    })
    .await;
    assert!(matches!(bad, Err(fake_github::FakeError::BadAppKey(1))));
    let orphan = FakeGitHub::start(FakeOptions {
        installations: vec![InstallationSpec::new(5, 77, "pallets")],
        ..FakeOptions::default()
    })
    .await;
    assert!(matches!(
        orphan,
        Err(fake_github::FakeError::UnknownApp { .. })
    ));
    // A private key PEM (what `openssl genrsa` writes) registers as well.
    let fake = FakeGitHub::start(FakeOptions {
        apps: vec![AppSpec::new(9, keys::APP_PRIVATE_KEY_PEM)],
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let jwt = app_jwt(keys::APP_PRIVATE_KEY_PEM, 9).unwrap();
    assert_eq!(
        call(&fake, "GET", "/app", Some(&jwt), None).await.status,
        200
    );
}
