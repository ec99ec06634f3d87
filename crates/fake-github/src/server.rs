//! The HTTP side of the fake: accept loop, fault injection, auth, rate limits, the
//! advisory endpoints, and the dispatch to the App, user and Git Data endpoints.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::advisory::{self, NewAdvisory, Origin};
use crate::auth::{self, Access};
use crate::spec::{self, Matched, Operation, Violation};
use crate::{
    AdvisoryState, AppState, Body as Kept, Credential, CredentialKind, FakeError, Fault, Inner,
    InstallationState, LogEntry, MAX_LOGGED_BODY, Repo, Shared, SortKey,
};

/// Marks a response the connection task must not send: the fault said drop it.
#[derive(Clone, Copy)]
struct DropConnection;

/// What a [`Fault::Drop`] makes the connection task return, so hyper closes the socket.
#[derive(Debug)]
struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// Accepts connections until `stop` flips (or its sender is dropped); open connections
/// are aborted with the task.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/_fake/advisories", get(all_advisories))
        .merge(crate::control::routes())
        .fallback(api)
        // Descriptions are limited to 65535 characters; allow generous JSON escaping, and
        // a largest blob in Base64 (4/3 of its size) with room to spare.
        .layer(DefaultBodyLimit::max(
            (8 * 1024 * 1024).max(shared.max_blob_bytes / 3 * 4 + 1024 * 1024),
        ))
        .with_state(shared);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let router = router.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let router = router.clone();
                        async move {
                            let response = match router.oneshot(req).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            };
                            if response.extensions().get::<DropConnection>().is_some() {
                                return Err(DroppedByFault);
                            }
                            Ok::<_, DroppedByFault>(response)
                        }
                    });
                    // Errors here are the client going away or our own dropped-by-fault.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// `GET /_fake/advisories`: every stored advisory by repository, for humans.
async fn all_advisories(State(shared): State<Arc<Shared>>) -> Response {
    let inner = shared.lock();
    let all: serde_json::Map<String, Value> = inner
        .repos
        .values()
        .map(|r| {
            (
                r.full_name.clone(),
                Value::Array(r.advisories.iter().map(|a| (*a.json).clone()).collect()),
            )
        })
        .collect();
    json_response(StatusCode::OK, &Value::Object(all))
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    text_response(status, body.to_string())
}

fn text_response(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The answer to one API request before headers are added.
pub(crate) struct Outcome {
    status: u16,
    body: Kept,
    headers: Vec<(String, String)>,
}

impl Outcome {
    fn ok(status: u16, body: Value) -> Outcome {
        Outcome::kept(status, Kept::Json(body))
    }

    fn kept(status: u16, body: Kept) -> Outcome {
        Outcome {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// GitHub's 403 for a credential without the permission, naming what was needed.
    fn forbidden(kind: CredentialKind, permission: (&str, Access), docs: &str) -> Outcome {
        let message = match kind {
            CredentialKind::Installation(_) => "Resource not accessible by integration",
            _ => "Resource not accessible by personal access token",
        };
        let mut outcome = Outcome::error(403, message, docs);
        outcome.headers.push((
            "x-accepted-github-permissions".into(),
            format!("{}={}", permission.0, permission.1.as_str()),
        ));
        outcome
    }

    /// GitHub's "Basic Error" body.
    fn error(status: u16, message: &str, documentation_url: &str) -> Outcome {
        Outcome::ok(
            status,
            json!({
                "message": message,
                "documentation_url": documentation_url,
                "status": status.to_string(),
            }),
        )
    }

    /// GitHub's 422 "Validation Error" body.
    fn validation_failed(violations: &[Violation], documentation_url: &str) -> Outcome {
        Outcome::invalid("RepositoryAdvisory", violations, documentation_url)
    }

    /// GitHub's 422 "Validation Error" body for a resource.
    fn invalid(resource: &str, violations: &[Violation], documentation_url: &str) -> Outcome {
        let errors: Vec<Value> = violations
            .iter()
            .map(|v| {
                json!({
                    "resource": resource,
                    "field": v.field,
                    "code": v.code,
                    "message": v.message,
                })
            })
            .collect();
        Outcome::ok(
            422,
            json!({
                "message": "Validation Failed",
                "errors": errors,
                "documentation_url": documentation_url,
                "status": "422",
            }),
        )
    }
}

const REST_DOCS: &str = "https://docs.github.com/rest";

/// Every request under the API: faults, then auth, rate limit and the operation.
///
/// The work runs in its own task, so a client that gives up (timeout, closed socket)
/// does not cancel it: like GitHub, a request that arrived is carried out, which is the
/// case the daemon's marker search must recover from.
async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match tokio::spawn(respond(shared, method, uri, headers, body)).await {
        Ok(response) => response,
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"message": format!("fake-github failed: {e}"), "documentation_url": REST_DOCS, "status": "500"}),
        ),
    }
}

async fn respond(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().map(str::to_owned);
    let matched = spec::match_operation(method.as_str(), &path);
    let operation = matched.as_ref().map(|m| m.operation);

    let (request_number, fault) = {
        let mut inner = shared.lock();
        let number = inner.next_request;
        inner.next_request += 1;
        let position = inner
            .faults
            .iter()
            .position(|rule| rule.when.matches(method.as_str(), operation));
        let fault = position
            .and_then(|i| inner.faults.remove(i))
            .map(|rule| rule.fault);
        (number, fault)
    };

    // The log keeps the body as received (parsed only when a test reads it), and not at
    // all when it is large (a blob upload).
    let mut record = LogEntry {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: (!body.is_empty() && body.len() <= MAX_LOGGED_BODY).then(|| body.clone()),
        operation,
        status: None,
        response: None,
        violations: Vec::new(),
    };

    let mut fault_headers = Vec::new();
    let outcome = match fault {
        Some(Fault::Drop) => {
            tracing::info!(%method, %path, "dropping the connection (injected fault)");
            shared.lock().log(record);
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(DropConnection);
            return response;
        }
        Some(Fault::Status { code, headers }) => {
            fault_headers = headers;
            fault_outcome(code, operation)
        }
        Some(Fault::Json {
            code,
            headers,
            body,
        }) => {
            fault_headers = headers;
            Outcome::ok(code, body)
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            handle(
                &shared,
                matched,
                query.as_deref(),
                &body,
                &headers,
                &mut record,
            )
        }
        Some(Fault::DelayResponse(delay)) => {
            let outcome = handle(
                &shared,
                matched,
                query.as_deref(),
                &body,
                &headers,
                &mut record,
            );
            tokio::time::sleep(delay).await;
            outcome
        }
        None => handle(
            &shared,
            matched,
            query.as_deref(),
            &body,
            &headers,
            &mut record,
        ),
    };

    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let text = if outcome.status == 204 {
        String::new()
    } else {
        outcome.body.serialize()
    };
    let text_len = text.len();
    let mut response = if outcome.status == 204 {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = status;
        r
    } else {
        text_response(status, text)
    };
    {
        let inner = shared.lock();
        let rate = &inner.rate;
        let h = response.headers_mut();
        let remaining = rate.limit.saturating_sub(rate.used);
        insert_header(h, "x-ratelimit-limit", &rate.limit.to_string());
        insert_header(h, "x-ratelimit-remaining", &remaining.to_string());
        insert_header(h, "x-ratelimit-used", &rate.used.to_string());
        insert_header(h, "x-ratelimit-reset", &rate.reset.to_string());
        insert_header(h, "x-ratelimit-resource", "core");
    }
    let h = response.headers_mut();
    insert_header(
        h,
        "x-github-request-id",
        &format!("FAKE:{request_number:08X}"),
    );
    insert_header(h, "x-github-api-version-selected", "2022-11-28");
    insert_header(h, "x-github-media-type", "github.v3; format=json");
    for (name, value) in outcome.headers.iter().chain(fault_headers.iter()) {
        insert_header(h, name, value);
    }

    tracing::info!(%method, %path, query = query.as_deref().unwrap_or(""), status = outcome.status, "request");
    record.status = Some(outcome.status);
    if outcome.status != 204 && text_len <= MAX_LOGGED_BODY {
        record.response = Some(outcome.body);
    }
    shared.lock().log(record);
    response
}

/// Who is asking.
enum Principal {
    /// No `Authorization` (only `GET /users/{username}` allows it).
    Anonymous,
    /// A GitHub App, by a verified JWT.
    App(u64),
    /// A token the fake issued or was given.
    Token(Credential),
}

impl Principal {
    fn login<'a>(&'a self, shared: &'a Shared) -> &'a str {
        match self {
            Principal::Token(c) => &c.login,
            _ => &shared.login,
        }
    }
}

fn docs_for(operation: Option<Operation>) -> &'static str {
    operation
        .map(|o| spec::spec().documentation_url(o))
        .unwrap_or(REST_DOCS)
}

/// Reads `Authorization` the way GitHub does; `Err` is the 401 (or 403) to answer.
fn authenticate(
    inner: &Inner,
    headers: &HeaderMap,
    operation: Option<Operation>,
    now: DateTime<Utc>,
) -> Result<Principal, Outcome> {
    let docs = docs_for(operation);
    let Some(value) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        if operation == Some(Operation::GetUser) {
            return Ok(Principal::Anonymous);
        }
        if operation.is_some_and(Operation::needs_app_jwt) {
            return Err(Outcome::error(401, auth::JWT_UNDECODABLE, docs));
        }
        return Err(Outcome::error(401, "Requires authentication", REST_DOCS));
    };
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| {
            scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
        })
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    let app_key = |id: u64| inner.apps.get(&id).map(|a| a.key.clone());
    if operation.is_some_and(Operation::needs_app_jwt) {
        if !auth::looks_like_jwt(token) {
            return Err(Outcome::error(401, auth::JWT_UNDECODABLE, docs));
        }
        return auth::verify_app_jwt(token, app_key, now.timestamp())
            .map(Principal::App)
            .map_err(|message| Outcome::error(401, message, docs));
    }
    if let Some(credential) = inner.credentials.get(token) {
        let revoked = inner.revoked.contains(token)
            || credential.expires_at.is_some_and(|at| at <= now)
            || matches!(credential.kind, CredentialKind::Installation(id)
                if inner.installations.get(&id).is_none_or(|i| i.revoked));
        if revoked {
            return Err(Outcome::error(401, "Bad credentials", REST_DOCS));
        }
        return Ok(Principal::Token(credential.clone()));
    }
    if auth::looks_like_jwt(token) {
        // An App's own JWT only works on the App endpoints (and public reads).
        return match auth::verify_app_jwt(token, app_key, now.timestamp()) {
            Ok(id) if operation == Some(Operation::GetUser) => Ok(Principal::App(id)),
            Ok(_) => Err(Outcome::error(
                403,
                "Resource not accessible by integration",
                docs,
            )),
            Err(message) => Err(Outcome::error(401, message, docs)),
        };
    }
    Err(Outcome::error(401, "Bad credentials", REST_DOCS))
}

/// True when the credential reaches this repository at all (otherwise GitHub says 404).
fn reaches(credential: &Credential, repo: &Repo) -> bool {
    credential.owner.as_deref().is_none_or(|o| o == repo.owner)
        && credential
            .repositories
            .as_ref()
            .is_none_or(|names| names.contains(&repo.name))
}

/// Auth, rate limit, routing, then the operation.
fn handle(
    shared: &Shared,
    matched: Option<Matched>,
    query: Option<&str>,
    body: &Bytes,
    headers: &HeaderMap,
    record: &mut LogEntry,
) -> Outcome {
    let now = Utc::now();
    let mut inner = shared.lock();
    let principal = match authenticate(&inner, headers, matched.as_ref().map(|m| m.operation), now)
    {
        Ok(p) => p,
        Err(outcome) => return outcome,
    };

    if now.timestamp() >= inner.rate.reset {
        inner.rate.used = 0;
        inner.rate.reset = now.timestamp() + 3600;
    }
    if inner.rate.used >= inner.rate.limit {
        let user_id = advisory::user_id_for(principal.login(shared));
        return Outcome::error(
            403,
            &format!(
                "API rate limit exceeded for user ID {user_id}. If you reach out to GitHub Support for help, please include the request ID FAKE."
            ),
            "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
        );
    }
    inner.rate.used += 1;

    let Some(matched) = matched else {
        return Outcome::error(404, "Not Found", REST_DOCS);
    };
    let operation = matched.operation;
    let docs = spec::spec().documentation_url(operation);
    let repo_key = format!("{}/{}", matched.owner, matched.repo).to_ascii_lowercase();

    if operation.is_repository_operation() && !operation.needs_app_jwt() {
        let Some(repo) = inner.repos.get(&repo_key) else {
            return Outcome::error(404, "Not Found", docs);
        };
        if let Principal::Token(credential) = &principal {
            if !reaches(credential, repo) {
                return Outcome::error(404, "Not Found", docs);
            }
            if let (Some(permissions), Some(needed)) = (
                &credential.permissions,
                auth::required_permission(operation),
            ) && needed.0 != "metadata"
                && !permissions.allows(needed.0, needed.1)
            {
                return Outcome::forbidden(credential.kind, needed, docs);
            }
        }
    }

    let parsed_body = if spec::spec().has_request_body(operation) {
        let parsed = if body.is_empty() && operation == Operation::CreateInstallationToken {
            json!({})
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(_) => return Outcome::error(400, "Problems parsing JSON", docs),
            }
        };
        let violations = spec::spec().validate_request(operation, &parsed);
        if !violations.is_empty() {
            record.violations = violations.clone();
            return Outcome::invalid(resource_name(operation), &violations, docs);
        }
        parsed
    } else {
        Value::Null
    };

    let login = principal.login(shared).to_owned();
    let ctx = Ctx {
        base_url: &shared.base_url,
        login: &login,
        now,
        docs,
    };
    let inner = &mut *inner;
    match operation {
        Operation::List => list(inner, &ctx, &repo_key, query, &matched),
        Operation::Create => create(inner, &ctx, &repo_key, &parsed_body, Origin::Maintainer),
        Operation::Report => create(inner, &ctx, &repo_key, &parsed_body, Origin::PrivateReport),
        Operation::Get => {
            let Some(repo) = inner.repos.get(&repo_key) else {
                return Outcome::error(404, "Not Found", docs);
            };
            match matched.ghsa_id.as_deref().and_then(|id| repo.index_of(id)) {
                Some(i) => Outcome::kept(200, Kept::Shared(Arc::clone(&repo.advisories[i].json))),
                None => Outcome::error(404, "Not Found", docs),
            }
        }
        Operation::Update => update(
            inner,
            &ctx,
            &repo_key,
            matched.ghsa_id.as_deref(),
            &parsed_body,
        ),
        Operation::RequestCve => {
            let repo = inner.repos.get(&repo_key);
            match repo.and_then(|r| {
                matched
                    .ghsa_id
                    .as_deref()
                    .and_then(|id| r.index_of(id))
                    .map(|i| &r.advisories[i])
            }) {
                None => Outcome::error(404, "Not Found", docs),
                Some(stored) if !stored.json["cve_id"].is_null() => Outcome::validation_failed(
                    &[Violation {
                        field: "cve_id".into(),
                        code: "already_exists",
                        message: "This advisory already has a CVE ID.".into(),
                    }],
                    docs,
                ),
                Some(_) => Outcome::ok(202, json!({})),
            }
        }
        // Temporary private forks are outside what the fake models.
        Operation::CreateFork => Outcome::error(404, "Not Found", docs),
        Operation::GetUser => get_user(inner, &ctx, matched.param("username")),
        Operation::GetApp
        | Operation::ListInstallations
        | Operation::CreateInstallationToken
        | Operation::GetOrgInstallation
        | Operation::GetRepoInstallation
        | Operation::GetUserInstallation => {
            let Principal::App(app_id) = principal else {
                return Outcome::error(401, auth::JWT_UNDECODABLE, docs);
            };
            app_operation(inner, &ctx, app_id, &matched, &parsed_body)
        }
        _ => git_operation(
            shared,
            inner,
            &ctx,
            &repo_key,
            &matched,
            query,
            &parsed_body,
        ),
    }
}

/// The `resource` GitHub names in a 422 for each operation.
fn resource_name(operation: Operation) -> &'static str {
    use Operation as O;
    match operation {
        O::CreateBlob | O::GetBlob => "Blob",
        O::CreateTree | O::GetTree => "Tree",
        O::CreateCommit | O::GetCommit => "Commit",
        O::CreateRef | O::UpdateRef | O::DeleteRef | O::GetRef | O::ListMatchingRefs => "Reference",
        O::CreateInstallationToken => "InstallationAccessToken",
        _ => "RepositoryAdvisory",
    }
}

struct Ctx<'a> {
    base_url: &'a str,
    login: &'a str,
    now: DateTime<Utc>,
    docs: &'a str,
}

fn create(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    repo_key: &str,
    body: &Value,
    origin: Origin,
) -> Outcome {
    let both = ["severity", "cvss_vector_string"]
        .iter()
        .all(|k| body.get(*k).is_some_and(|v| !v.is_null()));
    if both {
        return Outcome::validation_failed(
            &[Violation {
                field: "severity".into(),
                code: "custom",
                message: "You must choose between setting severity or cvss_vector_string.".into(),
            }],
            ctx.docs,
        );
    }
    match insert_locked(
        inner,
        ctx.base_url,
        ctx.login,
        repo_key,
        body,
        origin,
        ctx.now,
    ) {
        Some(advisory) => Outcome::kept(201, Kept::Shared(advisory)),
        None => Outcome::error(404, "Not Found", ctx.docs),
    }
}

/// Stores a new advisory built from a validated body and returns it.
fn insert_locked(
    inner: &mut Inner,
    base_url: &str,
    login: &str,
    repo_key: &str,
    body: &Value,
    origin: Origin,
    now: DateTime<Utc>,
) -> Option<Arc<Value>> {
    if !inner.repos.contains_key(repo_key) {
        return None;
    }
    let ghsa_id = loop {
        let candidate = advisory::new_ghsa_id(&mut inner.rng);
        if !inner.ghsa_ids.contains(&candidate) {
            break candidate;
        }
    };
    inner.ghsa_ids.insert(ghsa_id.clone());
    let seq = inner.next_seq;
    inner.next_seq += 1;
    let repo = inner.repos.get_mut(repo_key)?;
    let json = advisory::build(
        NewAdvisory {
            api_url: base_url,
            full_name: &repo.full_name,
            ghsa_id: &ghsa_id,
            author: advisory::simple_user(base_url, login, advisory::user_id_for(login)),
            now,
            origin,
        },
        body,
    );
    Some(repo.push(seq, json))
}

/// [`crate::FakeHandle::insert_advisory`].
pub(crate) fn insert(
    shared: &Shared,
    repo: &str,
    body: &Value,
    origin: Origin,
) -> Result<String, FakeError> {
    let mut inner = shared.lock();
    let key = repo.to_ascii_lowercase();
    let json = insert_locked(
        &mut inner,
        &shared.base_url,
        &shared.login,
        &key,
        body,
        origin,
        Utc::now(),
    )
    .ok_or_else(|| FakeError::UnknownRepository(repo.to_owned()))?;
    Ok(json["ghsa_id"].as_str().unwrap_or_default().to_owned())
}

fn update(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    repo_key: &str,
    ghsa_id: Option<&str>,
    body: &Value,
) -> Outcome {
    let Some(repo) = inner.repos.get_mut(repo_key) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let Some(index) = ghsa_id.and_then(|id| repo.index_of(id)) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let current = repo.advisories[index].json["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let wanted = body.get("state").and_then(Value::as_str);
    if current == "published" && wanted.is_some_and(|w| w != "published") {
        return Outcome::validation_failed(
            &[Violation {
                field: "state".into(),
                code: "invalid",
                message: "A published advisory cannot be moved back to draft or closed.".into(),
            }],
            ctx.docs,
        );
    }
    let state = match wanted {
        Some("published") if current != "published" => Some(AdvisoryState::Published),
        Some("closed") if current != "closed" => Some(AdvisoryState::Closed),
        Some("draft") if current != "draft" => Some(AdvisoryState::Draft),
        _ => None,
    };
    repo.modify(index, |json| {
        advisory::apply_fields(json, ctx.base_url, body);
        match state {
            Some(state) => set_state(json, state, ctx.base_url, ctx.login, ctx.now),
            None => json["updated_at"] = Value::String(advisory::timestamp(ctx.now)),
        }
    });
    Outcome::kept(200, Kept::Shared(Arc::clone(&repo.advisories[index].json)))
}

fn list(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    repo_key: &str,
    query: Option<&str>,
    matched: &Matched,
) -> Outcome {
    let pairs: Vec<(String, String)> = match query {
        None => Vec::new(),
        Some(q) => match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
            &format!("/?{q}").parse::<Uri>().unwrap_or_default(),
        ) {
            Ok(axum::extract::Query(pairs)) => pairs,
            Err(_) => return Outcome::error(400, "Invalid query string", ctx.docs),
        },
    };
    let spec = spec::spec();
    let known: Vec<&str> = spec.query_parameters(Operation::List).collect();
    let mut state = None;
    let mut sort = "created".to_owned();
    let mut descending = true;
    let mut per_page: usize = 30;
    let mut before = None;
    let mut after = None;
    let mut passthrough = Vec::new();
    for (name, raw) in &pairs {
        if !known.contains(&name.as_str()) {
            // GitHub ignores parameters an endpoint does not define.
            continue;
        }
        let value = if name == "per_page" {
            match raw.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => json!(raw),
            }
        } else {
            json!(raw)
        };
        let violations = spec
            .validate_query(Operation::List, name, &value)
            .unwrap_or_default();
        if let Some(v) = violations.first() {
            return Outcome::error(
                400,
                &format!("Invalid value {raw:?} for parameter {name}: {}", v.message),
                ctx.docs,
            );
        }
        match name.as_str() {
            "state" => state = Some(raw.clone()),
            "sort" => sort = raw.clone(),
            "direction" => descending = raw == "desc",
            "per_page" => {
                per_page = value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(30)
            }
            "before" => before = Some(raw.clone()),
            "after" => after = Some(raw.clone()),
            _ => {}
        }
        if !matches!(name.as_str(), "before" | "after" | "per_page") {
            passthrough.push((name.clone(), raw.clone()));
        }
    }
    if before.is_some() && after.is_some() {
        return Outcome::error(400, "Only one of before or after may be given", ctx.docs);
    }
    let link_base = inner.link_base.clone();
    let Some(repo) = inner.repos.get(repo_key) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let field = match sort.as_str() {
        "updated" => 1,
        "published" => 2,
        _ => 0,
    };
    let index = &repo.sorted[field];
    let matches = |key: &SortKey| {
        state.as_deref().is_none_or(|s| {
            repo.by_seq
                .get(&key.1)
                .is_some_and(|&i| repo.advisories[i].json["state"].as_str() == Some(s))
        })
    };
    // The sort key an advisory has now, for a cursor naming it.
    let cursor_key = |cursor: &str| -> Option<SortKey> {
        let seq = decode_cursor(cursor)?;
        let i = *repo.by_seq.get(&seq)?;
        let key = Repo::key(&repo.advisories[i].json, field, seq);
        matches(&key).then_some(key)
    };
    // Listing order from a key on (exclusive), and the reverse (nearest first).
    type Walk<'a> = Box<dyn Iterator<Item = &'a SortKey> + 'a>;
    let onward = |from: Option<&SortKey>| -> Walk<'_> {
        match (from, descending) {
            (None, true) => Box::new(index.iter().rev()),
            (None, false) => Box::new(index.iter()),
            (Some(k), true) => Box::new(index.range(..k.clone()).rev()),
            (Some(k), false) => Box::new(index.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            ))),
        }
    };
    let backward = |from: &SortKey| -> Walk<'_> {
        if descending {
            Box::new(index.range((
                std::ops::Bound::Excluded(from.clone()),
                std::ops::Bound::Unbounded,
            )))
        } else {
            Box::new(index.range(..from.clone()).rev())
        }
    };
    let (page, has_prev, has_next): (Vec<&SortKey>, bool, bool) = if let Some(cursor) = &after {
        let Some(key) = cursor_key(cursor) else {
            return Outcome::error(400, "Invalid cursor for after", ctx.docs);
        };
        let mut page: Vec<&SortKey> = onward(Some(&key))
            .filter(|k| matches(k))
            .take(per_page + 1)
            .collect();
        let more = page.len() > per_page;
        page.truncate(per_page);
        (page, true, more)
    } else if let Some(cursor) = &before {
        let Some(key) = cursor_key(cursor) else {
            return Outcome::error(400, "Invalid cursor for before", ctx.docs);
        };
        let mut page: Vec<&SortKey> = backward(&key)
            .filter(|k| matches(k))
            .take(per_page + 1)
            .collect();
        let more = page.len() > per_page;
        page.truncate(per_page);
        page.reverse();
        (page, more, true)
    } else {
        let mut page: Vec<&SortKey> = onward(None)
            .filter(|k| matches(k))
            .take(per_page + 1)
            .collect();
        let more = page.len() > per_page;
        page.truncate(per_page);
        (page, false, more)
    };
    let items: Vec<Arc<Value>> = page
        .iter()
        .filter_map(|k| repo.by_seq.get(&k.1))
        .map(|&i| Arc::clone(&repo.advisories[i].json))
        .collect();

    let base = link_base.as_deref().unwrap_or(ctx.base_url);
    let link_to = |cursor_name: &str, seq: u64| {
        let mut q: Vec<String> = passthrough
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
            .collect();
        q.push(format!("per_page={per_page}"));
        q.push(format!("{cursor_name}={}", encode_cursor(seq)));
        format!(
            "<{base}/repos/{}/{}/security-advisories?{}>",
            matched.owner,
            matched.repo,
            q.join("&")
        )
    };
    let mut links = Vec::new();
    if let (true, Some(last)) = (has_next, page.last()) {
        links.push(format!("{}; rel=\"next\"", link_to("after", last.1)));
    }
    if let (true, Some(first)) = (has_prev, page.first()) {
        links.push(format!("{}; rel=\"prev\"", link_to("before", first.1)));
    }
    let mut outcome = Outcome::kept(200, Kept::List(items));
    if !links.is_empty() {
        outcome.headers.push(("link".into(), links.join(", ")));
    }
    outcome
}

/// `GET /users/{username}`: a public user for a login the fake knows.
fn get_user(inner: &Inner, ctx: &Ctx<'_>, username: &str) -> Outcome {
    let Some(login) = inner.users.get(&username.to_ascii_lowercase()) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let mut user = advisory::simple_user(ctx.base_url, login, advisory::user_id_for(login));
    if login.ends_with("[bot]") {
        user["type"] = json!("Bot");
    }
    if inner.installations.values().any(|i| {
        i.spec.account.eq_ignore_ascii_case(login)
            && i.spec.account_type == auth::AccountType::Organization
    }) {
        user["type"] = json!("Organization");
    }
    let created =
        advisory::timestamp(DateTime::from_timestamp(1_500_000_000, 0).unwrap_or(ctx.now));
    for (key, value) in [
        ("bio", Value::Null),
        ("blog", json!("")),
        ("company", Value::Null),
        ("email", Value::Null),
        ("hireable", Value::Null),
        ("location", Value::Null),
        ("twitter_username", Value::Null),
        ("public_gists", json!(0)),
        ("public_repos", json!(0)),
        ("followers", json!(0)),
        ("following", json!(0)),
        ("created_at", json!(created)),
        ("updated_at", json!(created)),
    ] {
        user[key] = value;
    }
    Outcome::ok(200, user)
}

/// The `installation` object GitHub returns.
fn installation_json(base: &str, installation: &InstallationState, app: &AppState) -> Value {
    let spec = &installation.spec;
    let mut account =
        advisory::simple_user(base, &spec.account, advisory::user_id_for(&spec.account));
    account["type"] = json!(spec.account_type.as_str());
    let at = advisory::timestamp(installation.created_at);
    let html_url = match spec.account_type {
        auth::AccountType::Organization => format!(
            "https://github.com/organizations/{}/settings/installations/{}",
            spec.account, spec.id
        ),
        auth::AccountType::User => {
            format!("https://github.com/settings/installations/{}", spec.id)
        }
    };
    json!({
        "id": spec.id,
        "account": account,
        "repository_selection": if spec.repositories.is_some() { "selected" } else { "all" },
        "access_tokens_url": format!("{base}/app/installations/{}/access_tokens", spec.id),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": html_url,
        "app_id": app.spec.id,
        "app_slug": app.spec.slug,
        "client_id": format!("Iv1.fake{:08x}", app.spec.id),
        "target_id": advisory::user_id_for(&spec.account),
        "target_type": spec.account_type.as_str(),
        "permissions": spec.permissions.to_json(),
        "events": [],
        "created_at": at,
        "updated_at": at,
        "single_file_name": null,
        "has_multiple_single_files": false,
        "single_file_paths": [],
        "suspended_by": null,
        "suspended_at": null,
    })
}

/// The App endpoints, for a verified App JWT.
fn app_operation(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    app_id: u64,
    matched: &Matched,
    body: &Value,
) -> Outcome {
    let Some(app) = inner.apps.get(&app_id) else {
        return Outcome::error(401, auth::JWT_UNDECODABLE, ctx.docs);
    };
    let base = ctx.base_url;
    let mine = |i: &&InstallationState| i.spec.app_id == app_id && !i.revoked;
    let find_account = |account: &str, kind: Option<auth::AccountType>| {
        inner
            .installations
            .values()
            .filter(mine)
            .find(|i| {
                i.spec.account.eq_ignore_ascii_case(account)
                    && kind.is_none_or(|k| k == i.spec.account_type)
            })
            .map(|i| installation_json(base, i, app))
    };
    let found = |value: Option<Value>| match value {
        Some(v) => Outcome::ok(200, v),
        None => Outcome::error(404, "Not Found", ctx.docs),
    };
    match matched.operation {
        Operation::GetApp => {
            let mut owner = advisory::simple_user(
                base,
                &app.spec.owner,
                advisory::user_id_for(&app.spec.owner),
            );
            owner["type"] = json!("Organization");
            let at = advisory::timestamp(app.created_at);
            Outcome::ok(
                200,
                json!({
                    "id": app.spec.id,
                    "slug": app.spec.slug,
                    "node_id": format!("A_fake{}", app.spec.id),
                    "client_id": format!("Iv1.fake{:08x}", app.spec.id),
                    "owner": owner,
                    "name": app.spec.name,
                    "description": null,
                    "external_url": format!("https://github.com/{}", app.spec.owner),
                    "html_url": format!("https://github.com/apps/{}", app.spec.slug),
                    "created_at": at,
                    "updated_at": at,
                    "permissions": crate::Permissions::advisory_bridge().to_json(),
                    "events": [],
                    "installations_count": inner.installations.values().filter(mine).count(),
                }),
            )
        }
        Operation::ListInstallations => Outcome::ok(
            200,
            Value::Array(
                inner
                    .installations
                    .values()
                    .filter(mine)
                    .map(|i| {
                        // This operation's description gives `account` as `allOf` Simple
                        // User *and* Enterprise (the others say `anyOf`), so the fake adds
                        // the enterprise fields to stay inside it.
                        let mut json = installation_json(base, i, app);
                        let login = i.spec.account.clone();
                        let at = advisory::timestamp(i.created_at);
                        let account = &mut json["account"];
                        account["name"] = json!(login);
                        account["slug"] = json!(login);
                        account["description"] = Value::Null;
                        account["website_url"] = Value::Null;
                        account["created_at"] = json!(at);
                        account["updated_at"] = json!(at);
                        json
                    })
                    .collect(),
            ),
        ),
        Operation::GetOrgInstallation => found(find_account(
            matched.param("org"),
            Some(auth::AccountType::Organization),
        )),
        Operation::GetUserInstallation => found(find_account(
            matched.param("username"),
            Some(auth::AccountType::User),
        )),
        Operation::GetRepoInstallation => {
            let key = format!("{}/{}", matched.owner, matched.repo).to_ascii_lowercase();
            let Some(repo) = inner.repos.get(&key) else {
                return Outcome::error(404, "Not Found", ctx.docs);
            };
            found(
                inner
                    .installations
                    .values()
                    .filter(mine)
                    .find(|i| {
                        i.spec.account.eq_ignore_ascii_case(&repo.owner)
                            && i.spec.repositories.as_ref().is_none_or(|names| {
                                names.iter().any(|n| n.eq_ignore_ascii_case(&repo.name))
                            })
                    })
                    .map(|i| installation_json(base, i, app)),
            )
        }
        Operation::CreateInstallationToken => {
            let id = matched.param("installation_id").parse::<u64>().ok();
            let Some(installation) = id
                .and_then(|id| inner.installations.get(&id))
                .filter(|i| i.spec.app_id == app_id && !i.revoked)
            else {
                return Outcome::error(404, "Not Found", ctx.docs);
            };
            let spec = installation.spec.clone();
            let mut permissions = spec.permissions.clone();
            if let Some(requested) = body.get("permissions") {
                let Some(wanted) = crate::Permissions::from_json(requested) else {
                    return Outcome::error(
                        422,
                        "The permissions requested are not valid.",
                        ctx.docs,
                    );
                };
                if wanted
                    .0
                    .iter()
                    .any(|(name, level)| !spec.permissions.allows(name, *level))
                {
                    return Outcome::error(
                        422,
                        "The permissions requested are not granted to this installation.",
                        ctx.docs,
                    );
                }
                permissions = wanted;
            }
            let mut repositories: Option<std::collections::HashSet<String>> = spec
                .repositories
                .as_ref()
                .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect());
            if let Some(names) = body.get("repositories").and_then(Value::as_array) {
                let wanted: std::collections::HashSet<String> = names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect();
                let owner = spec.account.to_ascii_lowercase();
                let reachable = |name: &String| {
                    inner.repos.contains_key(&format!("{owner}/{name}"))
                        && repositories.as_ref().is_none_or(|r| r.contains(name))
                };
                if !wanted.iter().all(reachable) {
                    return Outcome::error(
                        422,
                        "There is at least one repository that does not exist or is not accessible to the parent installation.",
                        ctx.docs,
                    );
                }
                repositories = Some(wanted);
            }
            let token: String = {
                use rand::Rng;
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                let mut t = String::from("ghs_");
                for _ in 0..36 {
                    t.push(char::from(
                        alphabet[inner.rng.random_range(0..alphabet.len())],
                    ));
                }
                t
            };
            let ttl = chrono::Duration::from_std(inner.token_ttl)
                .unwrap_or_else(|_| chrono::Duration::hours(1));
            let expires_at = ctx.now + ttl;
            let selection = if repositories.is_some() {
                "selected"
            } else {
                "all"
            };
            let bot = format!("{}[bot]", app.spec.slug);
            inner.credentials.insert(
                token.clone(),
                Credential {
                    kind: CredentialKind::Installation(spec.id),
                    owner: Some(spec.account.to_ascii_lowercase()),
                    repositories,
                    permissions: Some(permissions.clone()),
                    expires_at: Some(expires_at),
                    login: bot,
                },
            );
            Outcome::ok(
                201,
                json!({
                    "token": token,
                    "expires_at": advisory::timestamp(expires_at),
                    "permissions": permissions.to_json(),
                    "repository_selection": selection,
                }),
            )
        }
        _ => Outcome::error(404, "Not Found", ctx.docs),
    }
}

/// The Git Data and contents endpoints.
fn git_operation(
    shared: &Shared,
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    repo_key: &str,
    matched: &Matched,
    query: Option<&str>,
    body: &Value,
) -> Outcome {
    let Some(repo) = inner.repos.get_mut(repo_key) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let urls = crate::git::Urls {
        api: ctx.base_url,
        full_name: &repo.full_name,
    };
    let query_value = |name: &str| {
        query.and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| v.to_owned())
            })
        })
    };
    let store = &mut repo.git;
    let max = shared.max_blob_bytes;
    let result = match matched.operation {
        Operation::CreateBlob => store.create_blob(&urls, body, max),
        Operation::GetBlob => store.get_blob(&urls, matched.param("file_sha")),
        Operation::CreateTree => store.create_tree(&urls, body, max),
        Operation::GetTree => store.get_tree(
            &urls,
            matched.param("tree_sha"),
            query_value("recursive").is_some_and(|v| !v.is_empty() && v != "0" && v != "false"),
        ),
        Operation::CreateCommit => {
            let email = format!(
                "{}+{}@users.noreply.github.com",
                advisory::user_id_for(ctx.login),
                ctx.login
            );
            store.create_commit(&urls, body, (ctx.login, &email), ctx.now)
        }
        Operation::GetCommit => store.get_commit(&urls, matched.param("commit_sha")),
        Operation::CreateRef => store.create_ref(&urls, body),
        Operation::UpdateRef => store.update_ref(&urls, matched.param("ref"), body),
        Operation::DeleteRef => store.delete_ref(matched.param("ref")),
        Operation::GetRef => store.get_ref(&urls, matched.param("ref")),
        Operation::ListMatchingRefs => store.matching_refs(&urls, matched.param("ref")),
        Operation::GetContent => store.contents(
            &urls,
            matched.param("path"),
            query_value("ref").as_deref(),
            &shared.default_branch,
        ),
        _ => Err((404, "Not Found".to_owned())),
    };
    match result {
        Ok((status, value)) => Outcome::ok(status, value),
        Err((status, message)) => Outcome::error(status, &message, ctx.docs),
    }
}

/// Moves an advisory to `state` with the timestamps GitHub sets.
pub(crate) fn set_state(
    advisory: &mut Value,
    state: AdvisoryState,
    base_url: &str,
    login: &str,
    now: DateTime<Utc>,
) {
    let at = Value::String(advisory::timestamp(now));
    match state {
        AdvisoryState::Published => {
            advisory["published_at"] = at.clone();
            advisory["closed_at"] = Value::Null;
            advisory["publisher"] =
                advisory::simple_user(base_url, login, advisory::user_id_for(login));
        }
        AdvisoryState::Closed => advisory["closed_at"] = at.clone(),
        AdvisoryState::Withdrawn => advisory["withdrawn_at"] = at.clone(),
        AdvisoryState::Draft | AdvisoryState::Triage => advisory["closed_at"] = Value::Null,
    }
    if state == AdvisoryState::Draft && advisory["submission"].is_object() {
        advisory["submission"] = json!({"accepted": true});
    }
    advisory["state"] = Value::String(state.as_str().to_owned());
    advisory["updated_at"] = at;
}

/// Opaque-looking pagination cursors naming an advisory's sequence number.
fn encode_cursor(seq: u64) -> String {
    format!("cursor:v2:{seq}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(text: &str) -> Option<u64> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    String::from_utf8(bytes?)
        .ok()?
        .strip_prefix("cursor:v2:")?
        .parse()
        .ok()
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// GitHub's body for a status a test injected.
fn fault_outcome(code: u16, operation: Option<Operation>) -> Outcome {
    let docs = operation
        .map(|o| spec::spec().documentation_url(o))
        .unwrap_or(REST_DOCS);
    let message = match code {
        401 => "Bad credentials".to_owned(),
        403 | 429 => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID FAKE.".to_owned(),
        404 => "Not Found".to_owned(),
        422 => "Validation Failed".to_owned(),
        _ => StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown error")
            .to_owned(),
    };
    if code == 422 {
        return Outcome::validation_failed(&[], docs);
    }
    Outcome::error(code, &message, docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query_value("a b&c"), "a%20b%26c");
    }
}
