//! GitHub's official OpenAPI description of the operations the fake serves, compiled
//! into JSON Schema validators for request bodies, query parameters and responses.
//!
//! The fixture `openapi/security-advisories.json` is the subset of `@octokit/openapi`
//! (pinned in `scripts/update-openapi-fixture`) under
//! `/repos/{owner}/{repo}/security-advisories`, plus the App, installation, user and Git
//! Data paths the script lists, with OpenAPI 3.0 `nullable` already rewritten into JSON
//! Schema by that script.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

/// The fixture, embedded so the fake needs no files at run time.
pub const FIXTURE: &str = include_str!("../openapi/security-advisories.json");

/// The path prefix every operation in the fixture lives under.
const PREFIX: &str = "/repos/{owner}/{repo}/security-advisories";

/// One operation the fake serves: the repository security-advisory API, GitHub App
/// authentication, users, and the Git Data API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// `GET /repos/{owner}/{repo}/security-advisories`
    List,
    /// `POST /repos/{owner}/{repo}/security-advisories`
    Create,
    /// `POST /repos/{owner}/{repo}/security-advisories/reports`
    Report,
    /// `GET /repos/{owner}/{repo}/security-advisories/{ghsa_id}`
    Get,
    /// `PATCH /repos/{owner}/{repo}/security-advisories/{ghsa_id}`
    Update,
    /// `POST /repos/{owner}/{repo}/security-advisories/{ghsa_id}/cve`
    RequestCve,
    /// `POST /repos/{owner}/{repo}/security-advisories/{ghsa_id}/forks`
    CreateFork,
    /// `GET /app` (App JWT)
    GetApp,
    /// `GET /app/installations` (App JWT)
    ListInstallations,
    /// `POST /app/installations/{installation_id}/access_tokens` (App JWT)
    CreateInstallationToken,
    /// `GET /orgs/{org}/installation` (App JWT)
    GetOrgInstallation,
    /// `GET /repos/{owner}/{repo}/installation` (App JWT)
    GetRepoInstallation,
    /// `GET /users/{username}/installation` (App JWT)
    GetUserInstallation,
    /// `GET /users/{username}`
    GetUser,
    /// `POST /repos/{owner}/{repo}/git/blobs`
    CreateBlob,
    /// `GET /repos/{owner}/{repo}/git/blobs/{file_sha}`
    GetBlob,
    /// `POST /repos/{owner}/{repo}/git/trees`
    CreateTree,
    /// `GET /repos/{owner}/{repo}/git/trees/{tree_sha}`
    GetTree,
    /// `POST /repos/{owner}/{repo}/git/commits`
    CreateCommit,
    /// `GET /repos/{owner}/{repo}/git/commits/{commit_sha}`
    GetCommit,
    /// `POST /repos/{owner}/{repo}/git/refs`
    CreateRef,
    /// `PATCH /repos/{owner}/{repo}/git/refs/{ref}`
    UpdateRef,
    /// `DELETE /repos/{owner}/{repo}/git/refs/{ref}`
    DeleteRef,
    /// `GET /repos/{owner}/{repo}/git/ref/{ref}`
    GetRef,
    /// `GET /repos/{owner}/{repo}/git/matching-refs/{ref}`
    ListMatchingRefs,
    /// `GET /repos/{owner}/{repo}/contents/{path}`
    GetContent,
}

impl Operation {
    /// Every operation, in a fixed order (literal paths before templated ones).
    pub const ALL: [Operation; 26] = [
        Operation::List,
        Operation::Create,
        Operation::Report,
        Operation::Get,
        Operation::Update,
        Operation::RequestCve,
        Operation::CreateFork,
        Operation::GetApp,
        Operation::ListInstallations,
        Operation::CreateInstallationToken,
        Operation::GetOrgInstallation,
        Operation::GetRepoInstallation,
        Operation::GetUserInstallation,
        Operation::GetUser,
        Operation::CreateBlob,
        Operation::GetBlob,
        Operation::CreateTree,
        Operation::GetTree,
        Operation::CreateCommit,
        Operation::GetCommit,
        Operation::CreateRef,
        Operation::UpdateRef,
        Operation::DeleteRef,
        Operation::GetRef,
        Operation::ListMatchingRefs,
        Operation::GetContent,
    ];

    /// The HTTP method and path template, as the OpenAPI description spells them.
    pub fn method_and_template(self) -> (&'static str, String) {
        let git = "/repos/{owner}/{repo}/git";
        let (method, template): (&str, String) = match self {
            Operation::List => ("get", PREFIX.to_owned()),
            Operation::Create => ("post", PREFIX.to_owned()),
            Operation::Report => ("post", format!("{PREFIX}/reports")),
            Operation::Get => ("get", format!("{PREFIX}/{{ghsa_id}}")),
            Operation::Update => ("patch", format!("{PREFIX}/{{ghsa_id}}")),
            Operation::RequestCve => ("post", format!("{PREFIX}/{{ghsa_id}}/cve")),
            Operation::CreateFork => ("post", format!("{PREFIX}/{{ghsa_id}}/forks")),
            Operation::GetApp => ("get", "/app".into()),
            Operation::ListInstallations => ("get", "/app/installations".into()),
            Operation::CreateInstallationToken => (
                "post",
                "/app/installations/{installation_id}/access_tokens".into(),
            ),
            Operation::GetOrgInstallation => ("get", "/orgs/{org}/installation".into()),
            Operation::GetRepoInstallation => ("get", "/repos/{owner}/{repo}/installation".into()),
            Operation::GetUserInstallation => ("get", "/users/{username}/installation".into()),
            Operation::GetUser => ("get", "/users/{username}".into()),
            Operation::CreateBlob => ("post", format!("{git}/blobs")),
            Operation::GetBlob => ("get", format!("{git}/blobs/{{file_sha}}")),
            Operation::CreateTree => ("post", format!("{git}/trees")),
            Operation::GetTree => ("get", format!("{git}/trees/{{tree_sha}}")),
            Operation::CreateCommit => ("post", format!("{git}/commits")),
            Operation::GetCommit => ("get", format!("{git}/commits/{{commit_sha}}")),
            Operation::CreateRef => ("post", format!("{git}/refs")),
            Operation::UpdateRef => ("patch", format!("{git}/refs/{{ref}}")),
            Operation::DeleteRef => ("delete", format!("{git}/refs/{{ref}}")),
            Operation::GetRef => ("get", format!("{git}/ref/{{ref}}")),
            Operation::ListMatchingRefs => ("get", format!("{git}/matching-refs/{{ref}}")),
            Operation::GetContent => ("get", "/repos/{owner}/{repo}/contents/{path}".into()),
        };
        (method, template)
    }

    /// True for the operations on one repository (`/repos/{owner}/{repo}/...`).
    pub fn is_repository_operation(self) -> bool {
        self.method_and_template()
            .1
            .starts_with("/repos/{owner}/{repo}/")
    }

    /// True for the operations GitHub only accepts with an App's JWT.
    pub fn needs_app_jwt(self) -> bool {
        matches!(
            self,
            Operation::GetApp
                | Operation::ListInstallations
                | Operation::CreateInstallationToken
                | Operation::GetOrgInstallation
                | Operation::GetRepoInstallation
                | Operation::GetUserInstallation
        )
    }
}

/// A request path matched to an operation, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The operation.
    pub operation: Operation,
    /// `{owner}` (empty for operations outside `/repos/`).
    pub owner: String,
    /// `{repo}` (empty for operations outside `/repos/`).
    pub repo: String,
    /// `{ghsa_id}`, for the operations on one advisory.
    pub ghsa_id: Option<String>,
    /// Every path parameter by its template name, percent-decoded (`ref` and `path`
    /// may contain `/`).
    pub params: BTreeMap<String, String>,
}

impl Matched {
    /// A path parameter, or `""` when the template has none of that name.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Decodes `%XX` escapes; malformed escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Matches path segments against a template; the parameters `ref` and `path` in last
/// position take every remaining segment.
fn match_template(template: &str, segments: &[&str]) -> Option<BTreeMap<String, String>> {
    let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let mut params = BTreeMap::new();
    for (i, part) in parts.iter().enumerate() {
        let name = part.strip_prefix('{').and_then(|p| p.strip_suffix('}'));
        let last = i == parts.len() - 1;
        match name {
            Some(name) if last && (name == "ref" || name == "path") => {
                let rest = segments.get(i..).filter(|r| !r.is_empty())?;
                if rest.iter().any(|s| s.is_empty()) {
                    return None;
                }
                let joined: Vec<String> = rest.iter().map(|s| percent_decode(s)).collect();
                params.insert(name.to_owned(), joined.join("/"));
                return Some(params);
            }
            Some(name) => {
                let value = segments.get(i).filter(|s| !s.is_empty())?;
                params.insert(name.to_owned(), percent_decode(value));
            }
            None => {
                if segments.get(i) != Some(part) {
                    return None;
                }
            }
        }
    }
    (segments.len() == parts.len()).then_some(params)
}

/// Finds the operation for a method and a concrete path such as
/// `/repos/pallets/flask/security-advisories/GHSA-...`. Paths the fake does not serve,
/// and methods the description does not define for a path, give `None`.
pub fn match_operation(method: &str, path: &str) -> Option<Matched> {
    let trimmed = path.strip_prefix('/')?.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').collect();
    let method = method.to_ascii_lowercase();
    for operation in Operation::ALL {
        let (op_method, template) = operation.method_and_template();
        if op_method != method {
            continue;
        }
        let Some(params) = match_template(&template, &segments) else {
            continue;
        };
        let ghsa_id = params.get("ghsa_id").cloned();
        if ghsa_id.as_deref() == Some("reports") {
            continue;
        }
        return Some(Matched {
            operation,
            owner: params.get("owner").cloned().unwrap_or_default(),
            repo: params.get("repo").cloned().unwrap_or_default(),
            ghsa_id,
            params,
        });
    }
    None
}

/// One schema violation, as the fake reports it in a 422 `errors[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending value without the leading `/` (`summary`,
    /// `vulnerabilities/0/package/ecosystem`), or the missing property's name.
    pub field: String,
    /// GitHub's error code: `missing_field` or `invalid`.
    pub code: &'static str,
    /// The validator's explanation.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.field, self.code, self.message)
    }
}

/// Why the spec could not answer a validation question.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The embedded fixture is not what `scripts/update-openapi-fixture` writes.
    #[error(
        "the OpenAPI fixture is malformed at {at}: {reason}; regenerate it with scripts/update-openapi-fixture"
    )]
    Fixture {
        /// Where in the fixture.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// The description defines no response schema for this status.
    #[error("the OpenAPI description documents no JSON response {status} for {operation:?}")]
    UndocumentedStatus {
        /// The operation.
        operation: Operation,
        /// The status.
        status: u16,
    },
    /// The operation has no such query parameter.
    #[error("{operation:?} has no query parameter {name:?}")]
    UnknownParameter {
        /// The operation.
        operation: Operation,
        /// The parameter.
        name: String,
    },
}

/// The compiled validators of one operation.
struct CompiledOperation {
    documentation_url: String,
    request: Option<Validator>,
    query: BTreeMap<String, Validator>,
    /// Response validators, compiled on first use: the fake itself never checks its
    /// answers (tests do), and compiling every response schema up front costs some
    /// 200 MB of validators for schemas most runs never look at.
    responses: BTreeMap<u16, OnceLock<Option<Validator>>>,
    /// Where the operation sits in the document, for compiling responses later.
    method: &'static str,
    template: String,
}

/// The compiled OpenAPI subset.
pub struct Spec {
    operations: BTreeMap<Operation, CompiledOperation>,
    /// The document, kept as text and parsed again only when a response schema is first
    /// needed.
    source: String,
    document: OnceLock<Value>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("operations", &self.operations.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The compiled embedded fixture, built once per process.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        // The fixture is part of this crate and checked by its tests; a broken one is a
        // build defect, not a run-time condition.
        Spec::parse(FIXTURE).expect("the embedded OpenAPI fixture compiles (see crate tests)")
    })
}

fn compile(schema: &Value, at: &str) -> Result<Validator, SpecError> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| SpecError::Fixture {
            at: at.to_owned(),
            reason: format!("schema does not compile: {e}"),
        })
}

fn json_schema_of<'a>(node: &'a Value, at: &str) -> Result<&'a Value, SpecError> {
    node.pointer("/content/application~1json/schema")
        .ok_or_else(|| SpecError::Fixture {
            at: at.to_owned(),
            reason: "no application/json schema".into(),
        })
}

impl Spec {
    /// Compiles every schema of a fixture text.
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| SpecError::Fixture {
            at: "(document)".into(),
            reason: e.to_string(),
        })?;
        let mut operations = BTreeMap::new();
        for operation in Operation::ALL {
            let (method, template) = operation.method_and_template();
            let at = format!("paths.{template}.{method}");
            let op = doc
                .get("paths")
                .and_then(|p| p.get(&template))
                .and_then(|p| p.get(method))
                .ok_or_else(|| SpecError::Fixture {
                    at: at.clone(),
                    reason: "operation missing".into(),
                })?;
            let documentation_url = op
                .pointer("/externalDocs/url")
                .and_then(Value::as_str)
                .unwrap_or("https://docs.github.com/rest")
                .to_owned();
            let request = match op.get("requestBody") {
                Some(body) => Some(compile(
                    json_schema_of(body, &at)?,
                    &format!("{at}.requestBody"),
                )?),
                None => None,
            };
            let mut query = BTreeMap::new();
            for param in op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if param.get("in").and_then(Value::as_str) != Some("query") {
                    continue;
                }
                let name = param.get("name").and_then(Value::as_str).ok_or_else(|| {
                    SpecError::Fixture {
                        at: at.clone(),
                        reason: "parameter without name".into(),
                    }
                })?;
                let schema = param.get("schema").ok_or_else(|| SpecError::Fixture {
                    at: format!("{at}.parameters.{name}"),
                    reason: "parameter without schema".into(),
                })?;
                query.insert(
                    name.to_owned(),
                    compile(schema, &format!("{at}.parameters.{name}"))?,
                );
            }
            let mut responses = BTreeMap::new();
            if let Some(map) = op.get("responses").and_then(Value::as_object) {
                for (status, response) in map {
                    let Ok(code) = status.parse::<u16>() else {
                        continue;
                    };
                    if json_schema_of(response, &at).is_ok() {
                        responses.insert(code, OnceLock::new());
                    }
                }
            }
            operations.insert(
                operation,
                CompiledOperation {
                    documentation_url,
                    request,
                    query,
                    responses,
                    method,
                    template,
                },
            );
        }
        Ok(Spec {
            operations,
            source: text.to_owned(),
            document: OnceLock::new(),
        })
    }

    /// The response validator of an operation and status, compiled on first use.
    fn response_validator(
        &self,
        operation: Operation,
        status: u16,
    ) -> Result<&Validator, SpecError> {
        let op = self.op(operation);
        let slot = op
            .responses
            .get(&status)
            .ok_or(SpecError::UndocumentedStatus { operation, status })?;
        let at = format!("paths.{}.{}.responses.{status}", op.template, op.method);
        slot.get_or_init(|| {
            let doc = self
                .document
                .get_or_init(|| serde_json::from_str(&self.source).unwrap_or(Value::Null));
            let response = doc
                .get("paths")?
                .get(&op.template)?
                .get(op.method)?
                .get("responses")?
                .get(status.to_string())?;
            compile(json_schema_of(response, &at).ok()?, &at).ok()
        })
        .as_ref()
        .ok_or(SpecError::Fixture {
            at,
            reason: "response schema does not compile".into(),
        })
    }

    /// Compiles every response schema now (the crate's tests check the fixture so).
    pub fn compile_all_responses(&self) -> Result<usize, SpecError> {
        let mut count = 0;
        for (operation, op) in &self.operations {
            for status in op.responses.keys() {
                self.response_validator(*operation, *status)?;
                count += 1;
            }
        }
        Ok(count)
    }

    fn op(&self, operation: Operation) -> &CompiledOperation {
        self.operations
            .get(&operation)
            .expect("Spec::parse compiles every Operation::ALL entry")
    }

    /// The documentation link GitHub puts in error bodies for this operation.
    pub fn documentation_url(&self, operation: Operation) -> &str {
        &self.op(operation).documentation_url
    }

    /// True when the description gives the operation a JSON request body.
    pub fn has_request_body(&self, operation: Operation) -> bool {
        self.op(operation).request.is_some()
    }

    /// Validates a request body; an operation without a request body accepts anything.
    pub fn validate_request(&self, operation: Operation, body: &Value) -> Vec<Violation> {
        match &self.op(operation).request {
            Some(validator) => violations(validator, body),
            None => Vec::new(),
        }
    }

    /// Validates one query parameter value (already converted to its JSON type).
    pub fn validate_query(
        &self,
        operation: Operation,
        name: &str,
        value: &Value,
    ) -> Result<Vec<Violation>, SpecError> {
        let validator =
            self.op(operation)
                .query
                .get(name)
                .ok_or_else(|| SpecError::UnknownParameter {
                    operation,
                    name: name.to_owned(),
                })?;
        Ok(violations(validator, value)
            .into_iter()
            .map(|v| Violation {
                field: name.to_owned(),
                ..v
            })
            .collect())
    }

    /// The query parameters the description defines for an operation.
    pub fn query_parameters(&self, operation: Operation) -> impl Iterator<Item = &str> {
        self.op(operation).query.keys().map(String::as_str)
    }

    /// Validates a response body against the schema documented for its status.
    pub fn validate_response(
        &self,
        operation: Operation,
        status: u16,
        body: &Value,
    ) -> Result<Vec<Violation>, SpecError> {
        let validator = self.response_validator(operation, status)?;
        Ok(violations(validator, body))
    }

    /// The statuses with a JSON response schema for an operation.
    pub fn documented_statuses(&self, operation: Operation) -> Vec<u16> {
        self.op(operation).responses.keys().copied().collect()
    }
}

fn violations(validator: &Validator, instance: &Value) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as Kind;
    validator
        .iter_errors(instance)
        .map(|e| {
            let pointer = e.instance_path.to_string();
            let pointer = pointer.trim_start_matches('/').to_owned();
            let shown = if pointer.is_empty() {
                "the body".to_owned()
            } else {
                pointer.clone()
            };
            // GitHub's messages name the field and the rule, never the submitted value;
            // the fake does the same, so report text cannot leak into a client's logs.
            let (field, code, message) = match &e.kind {
                Kind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    let field = if pointer.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{pointer}/{name}")
                    };
                    let message = format!("{field} wasn't supplied");
                    (field, "missing_field", message)
                }
                Kind::MaxLength { limit } => {
                    let message = format!("{shown} is too long (maximum is {limit} characters)");
                    (pointer, "invalid", message)
                }
                Kind::MinLength { limit } => {
                    let message = format!("{shown} is too short (minimum is {limit} characters)");
                    (pointer, "invalid", message)
                }
                Kind::Enum { options } => {
                    let message = format!("{shown} is not one of {options}");
                    (pointer, "invalid", message)
                }
                Kind::AdditionalProperties { unexpected } => {
                    let message = format!("{} is not a permitted key", unexpected.join(", "));
                    (pointer, "invalid", message)
                }
                Kind::Type { kind } => {
                    let expected = match kind {
                        jsonschema::error::TypeKind::Single(t) => t.to_string(),
                        jsonschema::error::TypeKind::Multiple(set) => format!("{set:?}"),
                    };
                    let message = format!("{shown} is not of type {expected}");
                    (pointer, "invalid", message)
                }
                Kind::Minimum { limit } => {
                    let message = format!("{shown} is less than the minimum of {limit}");
                    (pointer, "invalid", message)
                }
                Kind::Maximum { limit } => {
                    let message = format!("{shown} is greater than the maximum of {limit}");
                    (pointer, "invalid", message)
                }
                Kind::Format { format } => {
                    let message = format!("{shown} is not a valid {format}");
                    (pointer, "invalid", message)
                }
                _ => {
                    let message = format!("{shown} is invalid");
                    (pointer, "invalid", message)
                }
            };
            Violation {
                field,
                code,
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_in_the_fixture_compiles() {
        let spec = Spec::parse(FIXTURE).unwrap();
        assert_eq!(spec.operations.len(), Operation::ALL.len());
        assert!(spec.compile_all_responses().unwrap() > 50);
        assert!(spec.documented_statuses(Operation::Create).contains(&201));
        assert!(spec.documented_statuses(Operation::Create).contains(&422));
    }

    #[test]
    fn paths_map_to_operations() {
        let m = match_operation("GET", "/repos/pallets/flask/security-advisories").unwrap();
        assert_eq!(m.operation, Operation::List);
        assert_eq!((m.owner.as_str(), m.repo.as_str()), ("pallets", "flask"));
        let m = match_operation(
            "POST",
            "/repos/pallets/flask/security-advisories/GHSA-2222-3333-4444/cve",
        )
        .unwrap();
        assert_eq!(m.operation, Operation::RequestCve);
        assert_eq!(m.ghsa_id.as_deref(), Some("GHSA-2222-3333-4444"));
        assert_eq!(
            match_operation("POST", "/repos/pallets/flask/security-advisories/reports")
                .unwrap()
                .operation,
            Operation::Report
        );
        assert!(match_operation("DELETE", "/repos/pallets/flask/security-advisories").is_none());
        assert!(match_operation("GET", "/repos/pallets/flask/issues").is_none());
    }

    #[test]
    fn a_create_body_over_the_summary_limit_is_rejected_with_the_field_named() {
        let body = json!({
            "summary": "x".repeat(1025),
            "description": "d",
            "vulnerabilities": [],
        });
        let v = spec().validate_request(Operation::Create, &body);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "summary");
        assert_eq!(v[0].code, "invalid");
        assert_eq!(
            v[0].message,
            "summary is too long (maximum is 1024 characters)"
        );
        assert!(!v[0].message.contains("xxx"), "the value is not echoed");
    }

    #[test]
    fn a_create_body_without_vulnerabilities_names_the_missing_field() {
        let body = json!({"summary": "s", "description": "d"});
        let v = spec().validate_request(Operation::Create, &body);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "vulnerabilities");
        assert_eq!(v[0].code, "missing_field");
    }

    #[test]
    fn nullable_fields_accept_null_after_conversion() {
        let body = json!({
            "summary": "s", "description": "d", "vulnerabilities": [],
            "severity": null, "cve_id": null, "cwe_ids": null,
        });
        assert!(spec().validate_request(Operation::Create, &body).is_empty());
        let bad =
            json!({"summary": "s", "description": "d", "vulnerabilities": [], "severity": "dire"});
        assert_eq!(spec().validate_request(Operation::Create, &bad).len(), 1);
    }

    #[test]
    fn query_parameters_follow_the_description() {
        let s = spec();
        assert!(
            s.validate_query(Operation::List, "per_page", &json!(100))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            s.validate_query(Operation::List, "per_page", &json!(101))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.validate_query(Operation::List, "state", &json!("withdrawn"))
                .unwrap()
                .len(),
            1
        );
        assert!(
            s.validate_query(Operation::List, "page", &json!(2))
                .is_err()
        );
    }

    #[test]
    fn the_response_check_catches_an_advisory_missing_a_required_field() {
        let body = json!({"summary": "s", "description": "d",
            "vulnerabilities": [{"package": {"ecosystem": "pip", "name": "flask"}}],
            "cwe_ids": ["CWE-22"], "credits": [{"login": "alice", "type": "finder"}],
            "cvss_vector_string": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:L"});
        let mut advisory = crate::advisory::build(
            crate::advisory::NewAdvisory {
                api_url: "http://127.0.0.1:1",
                full_name: "pallets/flask",
                ghsa_id: "GHSA-2222-3333-4444",
                author: crate::advisory::simple_user("http://127.0.0.1:1", "bot", 1),
                now: chrono::Utc::now(),
                origin: crate::advisory::Origin::Maintainer,
            },
            &body,
        );
        let v = spec()
            .validate_response(Operation::Create, 201, &advisory)
            .unwrap();
        assert!(v.is_empty(), "{v:#?}");
        advisory.as_object_mut().unwrap().remove("cvss");
        advisory["created_at"] = json!("yesterday");
        let v = spec()
            .validate_response(Operation::Create, 201, &advisory)
            .unwrap();
        assert_eq!(v.len(), 2, "{v:#?}");
    }
}
