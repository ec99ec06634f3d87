//! The HTTP side of the fake: accept loop, fault injection, auth, rate limits and the
//! advisory endpoints.

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
use crate::spec::{self, Matched, Operation, Violation};
use crate::{AdvisoryState, FakeError, Fault, Inner, RecordedRequest, Shared, Stored};

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
        .fallback(api)
        // Descriptions are limited to 65535 characters; allow generous JSON escaping.
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
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
                Value::Array(r.advisories.iter().map(|a| a.json.clone()).collect()),
            )
        })
        .collect();
    json_response(StatusCode::OK, &Value::Object(all))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The answer to one API request before headers are added.
struct Outcome {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Outcome {
    fn ok(status: u16, body: Value) -> Outcome {
        Outcome {
            status,
            body,
            headers: Vec::new(),
        }
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
        let errors: Vec<Value> = violations
            .iter()
            .map(|v| {
                json!({
                    "resource": "RepositoryAdvisory",
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
    let body_json: Option<Value> = if body.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
        )
    };

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

    let mut record = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body_json,
        operation,
        status: None,
        response: None,
        violations: Vec::new(),
    };

    let mut fault_headers = Vec::new();
    let outcome = match fault {
        Some(Fault::Drop) => {
            tracing::info!(%method, %path, "dropping the connection (injected fault)");
            shared.lock().requests.push(record);
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

    let mut response = json_response(
        StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &outcome.body,
    );
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
    record.response = Some(outcome.body);
    shared.lock().requests.push(record);
    response
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

/// Auth, rate limit, routing, then the operation.
fn handle(
    shared: &Shared,
    matched: Option<Matched>,
    query: Option<&str>,
    body: &Bytes,
    headers: &HeaderMap,
    record: &mut RecordedRequest,
) -> Outcome {
    match headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None => return Outcome::error(401, "Requires authentication", REST_DOCS),
        Some(value) => {
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| {
                    scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
                })
                .map(|(_, token)| token.trim());
            if token != Some(shared.token.as_str()) {
                return Outcome::error(401, "Bad credentials", REST_DOCS);
            }
        }
    }

    let mut inner = shared.lock();
    let now = Utc::now();
    if now.timestamp() >= inner.rate.reset {
        inner.rate.used = 0;
        inner.rate.reset = now.timestamp() + 3600;
    }
    if inner.rate.used >= inner.rate.limit {
        let user_id = advisory::user_id_for(&shared.login);
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
    if !inner.repos.contains_key(&repo_key) {
        return Outcome::error(404, "Not Found", docs);
    }

    let parsed_body = match operation {
        Operation::Create | Operation::Report | Operation::Update => {
            let parsed = match serde_json::from_slice::<Value>(body) {
                Ok(v) => v,
                Err(_) => return Outcome::error(400, "Problems parsing JSON", docs),
            };
            let violations = spec::spec().validate_request(operation, &parsed);
            if !violations.is_empty() {
                record.violations = violations.clone();
                return Outcome::validation_failed(&violations, docs);
            }
            parsed
        }
        _ => Value::Null,
    };

    let ctx = Ctx {
        base_url: &shared.base_url,
        login: &shared.login,
        now,
        docs,
    };
    match operation {
        Operation::List => list(&mut inner, &ctx, &repo_key, query, &matched),
        Operation::Create => create(
            &mut inner,
            &ctx,
            &repo_key,
            &parsed_body,
            Origin::Maintainer,
        ),
        Operation::Report => create(
            &mut inner,
            &ctx,
            &repo_key,
            &parsed_body,
            Origin::PrivateReport,
        ),
        Operation::Get => match find(&mut inner, &repo_key, matched.ghsa_id.as_deref()) {
            Some(stored) => Outcome::ok(200, stored.json.clone()),
            None => Outcome::error(404, "Not Found", docs),
        },
        Operation::Update => update(
            &mut inner,
            &ctx,
            &repo_key,
            matched.ghsa_id.as_deref(),
            &parsed_body,
        ),
        Operation::RequestCve => match find(&mut inner, &repo_key, matched.ghsa_id.as_deref()) {
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
        },
        // Temporary private forks are outside what the fake models.
        Operation::CreateFork => Outcome::error(404, "Not Found", docs),
    }
}

struct Ctx<'a> {
    base_url: &'a str,
    login: &'a str,
    now: DateTime<Utc>,
    docs: &'a str,
}

fn find<'a>(inner: &'a mut Inner, repo_key: &str, ghsa_id: Option<&str>) -> Option<&'a mut Stored> {
    let ghsa_id = ghsa_id?;
    inner
        .repos
        .get_mut(repo_key)?
        .advisories
        .iter_mut()
        .find(|a| {
            a.json["ghsa_id"]
                .as_str()
                .is_some_and(|id| id.eq_ignore_ascii_case(ghsa_id))
        })
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
    let advisory = insert_locked(
        inner,
        ctx.base_url,
        ctx.login,
        repo_key,
        body,
        origin,
        ctx.now,
    );
    Outcome::ok(201, advisory)
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
) -> Value {
    let ghsa_id = loop {
        let candidate = advisory::new_ghsa_id(&mut inner.rng);
        let taken = inner.repos.values().any(|r| {
            r.advisories
                .iter()
                .any(|a| a.json["ghsa_id"].as_str() == Some(candidate.as_str()))
        });
        if !taken {
            break candidate;
        }
    };
    let seq = inner.next_seq;
    inner.next_seq += 1;
    let Some(repo) = inner.repos.get_mut(repo_key) else {
        return Value::Null;
    };
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
    repo.advisories.push(Stored {
        seq,
        json: json.clone(),
    });
    json
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
    if !inner.repos.contains_key(&key) {
        return Err(FakeError::UnknownRepository(repo.to_owned()));
    }
    let json = insert_locked(
        &mut inner,
        &shared.base_url,
        &shared.login,
        &key,
        body,
        origin,
        Utc::now(),
    );
    Ok(json["ghsa_id"].as_str().unwrap_or_default().to_owned())
}

fn update(
    inner: &mut Inner,
    ctx: &Ctx<'_>,
    repo_key: &str,
    ghsa_id: Option<&str>,
    body: &Value,
) -> Outcome {
    let Some(stored) = find(inner, repo_key, ghsa_id) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let current = stored.json["state"].as_str().unwrap_or_default().to_owned();
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
    advisory::apply_fields(&mut stored.json, ctx.base_url, body);
    let state = match wanted {
        Some("published") if current != "published" => Some(AdvisoryState::Published),
        Some("closed") if current != "closed" => Some(AdvisoryState::Closed),
        Some("draft") if current != "draft" => Some(AdvisoryState::Draft),
        _ => None,
    };
    match state {
        Some(state) => set_state(&mut stored.json, state, ctx.base_url, ctx.login, ctx.now),
        None => stored.json["updated_at"] = Value::String(advisory::timestamp(ctx.now)),
    }
    Outcome::ok(200, stored.json.clone())
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
    let Some(repo) = inner.repos.get(repo_key) else {
        return Outcome::error(404, "Not Found", ctx.docs);
    };
    let field = match sort.as_str() {
        "updated" => "updated_at",
        "published" => "published_at",
        _ => "created_at",
    };
    let mut items: Vec<&Stored> = repo
        .advisories
        .iter()
        .filter(|a| {
            state
                .as_deref()
                .is_none_or(|s| a.json["state"].as_str() == Some(s))
        })
        .collect();
    items.sort_by(|a, b| {
        let ka = (a.json[field].as_str(), a.seq);
        let kb = (b.json[field].as_str(), b.seq);
        ka.cmp(&kb)
    });
    if descending {
        items.reverse();
    }
    let position = |cursor: &str| {
        decode_cursor(cursor).and_then(|seq| items.iter().position(|a| a.seq == seq))
    };
    let (start, end) = if let Some(cursor) = &after {
        let Some(i) = position(cursor) else {
            return Outcome::error(400, "Invalid cursor for after", ctx.docs);
        };
        (i + 1, (i + 1 + per_page).min(items.len()))
    } else if let Some(cursor) = &before {
        let Some(i) = position(cursor) else {
            return Outcome::error(400, "Invalid cursor for before", ctx.docs);
        };
        (i.saturating_sub(per_page), i)
    } else {
        (0, per_page.min(items.len()))
    };
    let page: Vec<Value> = items[start..end].iter().map(|a| a.json.clone()).collect();

    let link_to = |cursor_name: &str, seq: u64| {
        let mut q: Vec<String> = passthrough
            .iter()
            .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
            .collect();
        q.push(format!("per_page={per_page}"));
        q.push(format!("{cursor_name}={}", encode_cursor(seq)));
        format!(
            "<{}/repos/{}/{}/security-advisories?{}>",
            ctx.base_url,
            matched.owner,
            matched.repo,
            q.join("&")
        )
    };
    let mut links = Vec::new();
    if !page.is_empty() && end < items.len() {
        links.push(format!(
            "{}; rel=\"next\"",
            link_to("after", items[end - 1].seq)
        ));
    }
    if !page.is_empty() && start > 0 {
        links.push(format!(
            "{}; rel=\"prev\"",
            link_to("before", items[start].seq)
        ));
    }
    let mut outcome = Outcome::ok(200, Value::Array(page));
    if !links.is_empty() {
        outcome.headers.push(("link".into(), links.join(", ")));
    }
    outcome
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
