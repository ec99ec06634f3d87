//! A deliberately dumb HTTP/1.1 client and the response-schema check, shared by the
//! integration tests.

#![allow(dead_code)]

use fake_github::{FakeHandle, Operation, spec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One answer.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request; `token` goes out as `Authorization: Bearer`.
pub async fn call(
    fake: &FakeHandle,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let target = target.strip_prefix(&fake.url()).unwrap_or(target);
    let mut stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
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
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body_text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
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
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    Reply {
        status,
        headers,
        body: json,
        raw: body,
    }
}

/// Every answer the fake gave validates against the schema documented for its
/// operation and status; undocumented statuses carry GitHub's basic error shape.
pub fn assert_every_response_follows_the_description(fake: &FakeHandle) {
    let spec = spec();
    for request in fake.requests() {
        let (Some(operation), Some(status), Some(body)) =
            (request.operation, request.status, &request.response)
        else {
            continue;
        };
        // GitHub's description gives this 422 as `oneOf` a validation error and a
        // rule violation whose schema requires nothing, so no body can match exactly
        // one; the fake's body must at least have the validation error's shape.
        if (operation, status) == (Operation::CreateBlob, 422) {
            assert!(
                body["message"].is_string() && body["documentation_url"].is_string(),
                "{body}"
            );
            continue;
        }
        match spec.validate_response(operation, status, body) {
            Ok(violations) => assert!(
                violations.is_empty(),
                "{} {} answered {status} with a body outside the description: {violations:#?}",
                request.method,
                request.path
            ),
            Err(_) => assert!(
                body["message"].is_string() && body["documentation_url"].is_string(),
                "{} {}: undocumented status {status} without GitHub's error shape: {body}",
                request.method,
                request.path
            ),
        }
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: Option<&str>) -> Option<String> {
    link?.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}
