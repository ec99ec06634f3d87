//! The `/_fake/...` control endpoints: what a test (or a human with curl) does to the
//! fake at run time. None of them needs a token; none is recorded in the request log.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::json_response;
use crate::{Access, Permissions, Shared, TokenSpec, personal_credential};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_fake/tokens", post(add_token))
        .route("/_fake/tokens/revoke", post(revoke_token))
        .route("/_fake/tokens/restore", post(restore_token))
        .route("/_fake/tokens/expiry", post(token_expiry))
        .route(
            "/_fake/installations/{id}/revoke",
            post(revoke_installation),
        )
        .route(
            "/_fake/installations/{id}/restore",
            post(restore_installation),
        )
        .route("/_fake/installation-token-ttl", post(token_ttl))
        .route("/_fake/link-base", post(link_base))
        .route("/_fake/users", get(list_users).post(add_user))
        .route("/_fake/git/{owner}/{repo}", get(git_view))
        .route("/_fake/git/{owner}/{repo}/file", get(git_file))
}

/// A JSON body, whatever `content-type` says (curl without `-H` sends a form type).
struct Lenient<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Lenient<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Response> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|_| problem(StatusCode::BAD_REQUEST, "cannot read the body"))?;
        let text: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(Lenient)
            .map_err(|e| problem(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")))
    }
}

fn done() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn problem(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"message": message}))
}

/// `POST /_fake/tokens` body.
#[derive(Deserialize)]
struct NewToken {
    token: String,
    owner: Option<String>,
    /// `read` or `write` (fine-grained preset), unless `permissions` is given.
    access: Option<String>,
    permissions: Option<Value>,
    expires_at: Option<DateTime<Utc>>,
    login: Option<String>,
}

async fn add_token(
    State(shared): State<Arc<Shared>>,
    Lenient(body): Lenient<NewToken>,
) -> Response {
    let access = match body.access.as_deref().map(Access::parse) {
        None => Access::Write,
        Some(Some(a)) => a,
        Some(None) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "access must be read, write or admin",
            );
        }
    };
    let mut spec = TokenSpec::new(&body.token, body.owner.as_deref().unwrap_or(""), access);
    spec.owner = body.owner;
    if let Some(p) = &body.permissions {
        match Permissions::from_json(p) {
            Some(p) => spec.permissions = p,
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "permissions must map names to read/write/admin",
                );
            }
        }
    }
    spec.expires_at = body.expires_at;
    spec.login = body.login;
    let credential = personal_credential(&spec, &shared.login);
    let mut inner = shared.lock();
    inner.revoked.remove(&spec.token);
    inner.credentials.insert(spec.token, credential);
    done()
}

/// A body naming one token.
#[derive(Deserialize)]
struct TokenName {
    token: String,
}

async fn revoke_token(
    State(shared): State<Arc<Shared>>,
    Lenient(body): Lenient<TokenName>,
) -> Response {
    shared.lock().revoked.insert(body.token);
    done()
}

async fn restore_token(
    State(shared): State<Arc<Shared>>,
    Lenient(body): Lenient<TokenName>,
) -> Response {
    shared.lock().revoked.remove(&body.token);
    done()
}

/// `POST /_fake/tokens/expiry` body.
#[derive(Deserialize)]
struct Expiry {
    token: String,
    expires_at: Option<DateTime<Utc>>,
}

async fn token_expiry(
    State(shared): State<Arc<Shared>>,
    Lenient(body): Lenient<Expiry>,
) -> Response {
    match shared.lock().credentials.get_mut(&body.token) {
        Some(c) => {
            c.expires_at = body.expires_at;
            done()
        }
        None => problem(StatusCode::NOT_FOUND, "no such token"),
    }
}

fn set_installation(shared: &Shared, id: u64, revoked: bool) -> Response {
    match shared.lock().installations.get_mut(&id) {
        Some(i) => {
            i.revoked = revoked;
            done()
        }
        None => problem(StatusCode::NOT_FOUND, "no such installation"),
    }
}

async fn revoke_installation(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    set_installation(&shared, id, true)
}

async fn restore_installation(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    set_installation(&shared, id, false)
}

/// `POST /_fake/installation-token-ttl` body.
#[derive(Deserialize)]
struct Ttl {
    seconds: u64,
}

async fn token_ttl(State(shared): State<Arc<Shared>>, Lenient(body): Lenient<Ttl>) -> Response {
    shared.lock().token_ttl = Duration::from_secs(body.seconds);
    done()
}

/// `POST /_fake/link-base` body.
#[derive(Deserialize)]
struct LinkBase {
    base: Option<String>,
}

async fn link_base(
    State(shared): State<Arc<Shared>>,
    Lenient(body): Lenient<LinkBase>,
) -> Response {
    shared.lock().link_base = body.base.map(|b| b.trim_end_matches('/').to_owned());
    done()
}

/// `POST /_fake/users` body.
#[derive(Deserialize)]
struct NewUser {
    login: String,
}

async fn add_user(State(shared): State<Arc<Shared>>, Lenient(body): Lenient<NewUser>) -> Response {
    shared.lock().add_user(&body.login);
    done()
}

async fn list_users(State(shared): State<Arc<Shared>>) -> Response {
    let users: Vec<Value> = shared
        .lock()
        .users
        .values()
        .map(|u| Value::String(u.clone()))
        .collect();
    json_response(StatusCode::OK, &Value::Array(users))
}

/// `GET /_fake/git/{owner}/{repo}`: refs, and every file on each ref with SHA and size.
async fn git_view(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
) -> Response {
    let inner = shared.lock();
    let Some(repo) = inner
        .repos
        .get(&format!("{owner}/{repo}").to_ascii_lowercase())
    else {
        return problem(StatusCode::NOT_FOUND, "no such repository");
    };
    let mut files = serde_json::Map::new();
    for (name, sha) in &repo.git.refs {
        let listing: serde_json::Map<String, Value> = repo
            .git
            .files(sha)
            .into_iter()
            .map(|(path, bytes)| {
                (
                    path,
                    json!({"sha": crate::git::blob_sha(&bytes), "size": bytes.len()}),
                )
            })
            .collect();
        files.insert(name.clone(), Value::Object(listing));
    }
    json_response(
        StatusCode::OK,
        &json!({"refs": repo.git.refs, "files": files}),
    )
}

/// `GET /_fake/git/{owner}/{repo}/file` query.
#[derive(Deserialize)]
struct FileQuery {
    #[serde(rename = "ref")]
    reference: String,
    path: String,
}

/// `GET /_fake/git/{owner}/{repo}/file?ref=R&path=P`: the raw bytes of one file.
async fn git_file(
    State(shared): State<Arc<Shared>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<FileQuery>,
) -> Response {
    let inner = shared.lock();
    let found = inner
        .repos
        .get(&format!("{owner}/{repo}").to_ascii_lowercase())
        .and_then(|r| {
            let commit = r.git.resolve(&query.reference)?;
            r.git.files(&commit).remove(&query.path)
        });
    match found {
        Some(bytes) => {
            let mut response = Response::new(Body::from(bytes.to_vec()));
            response.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("application/octet-stream"),
            );
            response
        }
        None => problem(StatusCode::NOT_FOUND, "no such file"),
    }
}
