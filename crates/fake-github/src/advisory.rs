//! Builds the JSON objects GitHub returns: repository advisories, simple users, GHSA IDs.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Value, json};

/// The characters GitHub uses in the three groups of a GHSA ID.
pub const GHSA_ALPHABET: &[u8] = b"23456789cfghjmpqrvwx";

/// A fresh `GHSA-xxxx-xxxx-xxxx` identifier.
pub fn new_ghsa_id(rng: &mut impl Rng) -> String {
    let mut id = String::from("GHSA");
    for _ in 0..3 {
        id.push('-');
        for _ in 0..4 {
            let index = rng.random_range(0..GHSA_ALPHABET.len());
            id.push(char::from(GHSA_ALPHABET[index]));
        }
    }
    id
}

/// True for a well-formed GHSA ID.
pub fn is_ghsa_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("GHSA-") else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    groups.len() == 3
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|b| GHSA_ALPHABET.contains(&b)))
}

/// GitHub's timestamp format: RFC 3339, whole seconds, `Z`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A `simple-user` object for `login`.
pub fn simple_user(api_url: &str, login: &str, id: u64) -> Value {
    // An App's bot user (`slug[bot]`): GitHub escapes the brackets in its URLs.
    let bot = login.strip_suffix("[bot]");
    let escaped = login.replace('[', "%5B").replace(']', "%5D");
    let user_url = format!("{api_url}/users/{escaped}");
    let mut user = json!({
        "name": null,
        "email": null,
        "login": login,
        "id": id,
        "node_id": format!("U_fake{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": user_url,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{user_url}/followers"),
        "following_url": format!("{user_url}/following{{/other_user}}"),
        "gists_url": format!("{user_url}/gists{{/gist_id}}"),
        "starred_url": format!("{user_url}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{user_url}/subscriptions"),
        "organizations_url": format!("{user_url}/orgs"),
        "repos_url": format!("{user_url}/repos"),
        "events_url": format!("{user_url}/events{{/privacy}}"),
        "received_events_url": format!("{user_url}/received_events"),
        "type": "User",
        "site_admin": false,
        "user_view_type": "public",
    });
    if let Some(slug) = bot {
        user["type"] = json!("Bot");
        user["html_url"] = json!(format!("https://github.com/apps/{slug}"));
    }
    user
}

/// A stable made-up user id for a login the fake only knows by name (credits).
pub fn user_id_for(login: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in login.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    1_000_000 + hash % 1_000_000_000
}

/// Where a new advisory comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A maintainer (our token) created a draft.
    Maintainer,
    /// Someone privately reported a vulnerability (state `triage`).
    PrivateReport,
}

/// Everything the advisory object needs besides the request body.
pub struct NewAdvisory<'a> {
    /// The fake's base URL (the `url` fields point back at it).
    pub api_url: &'a str,
    /// `owner/name` as configured.
    pub full_name: &'a str,
    /// The new ID.
    pub ghsa_id: &'a str,
    /// The token's user.
    pub author: Value,
    /// Creation time.
    pub now: DateTime<Utc>,
    /// Maintainer draft or private report.
    pub origin: Origin,
}

/// The full `repository-advisory` object for a validated create or report body.
pub fn build(new: NewAdvisory<'_>, body: &Value) -> Value {
    let now = timestamp(new.now);
    let (state, submission) = match new.origin {
        Origin::Maintainer => ("draft", Value::Null),
        Origin::PrivateReport => ("triage", json!({"accepted": false})),
    };
    let mut advisory = json!({
        "ghsa_id": new.ghsa_id,
        "cve_id": null,
        "url": format!("{}/repos/{}/security-advisories/{}", new.api_url, new.full_name, new.ghsa_id),
        "html_url": format!("https://github.com/{}/security/advisories/{}", new.full_name, new.ghsa_id),
        "summary": body.get("summary").cloned().unwrap_or(Value::Null),
        "description": body.get("description").cloned().unwrap_or(Value::Null),
        "severity": null,
        "author": new.author,
        "publisher": null,
        "identifiers": [],
        "state": state,
        "created_at": now,
        "updated_at": now,
        "published_at": null,
        "closed_at": null,
        "withdrawn_at": null,
        "submission": submission,
        "vulnerabilities": [],
        "cvss": null,
        "cvss_severities": {"cvss_v3": null, "cvss_v4": null},
        "cwes": [],
        "cwe_ids": [],
        "credits": [],
        "credits_detailed": [],
        "collaborating_users": null,
        "collaborating_teams": null,
        "private_fork": null,
    });
    apply_fields(&mut advisory, new.api_url, body);
    refresh_identifiers(&mut advisory);
    advisory
}

/// Applies the writable fields of a create, report or update body to an advisory.
pub fn apply_fields(advisory: &mut Value, api_url: &str, body: &Value) {
    let Some(fields) = body.as_object() else {
        return;
    };
    for (key, value) in fields {
        match key.as_str() {
            "summary" | "description" | "cve_id" => advisory[key] = value.clone(),
            "severity" => {
                advisory["severity"] = value.clone();
                if !value.is_null() {
                    advisory["cvss_severities"] = json!({"cvss_v3": null, "cvss_v4": null});
                }
            }
            "cvss_vector_string" => {
                if let Some(vector) = value.as_str() {
                    let slot = if vector.starts_with("CVSS:4") {
                        "cvss_v4"
                    } else {
                        "cvss_v3"
                    };
                    advisory["cvss_severities"] = json!({"cvss_v3": null, "cvss_v4": null});
                    advisory["cvss_severities"][slot] =
                        json!({"vector_string": vector, "score": null});
                    advisory["cvss"] = json!({"vector_string": vector, "score": null});
                }
            }
            "vulnerabilities" => {
                let list: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        json!({
                            "package": {
                                "ecosystem": v.pointer("/package/ecosystem").cloned().unwrap_or(Value::Null),
                                "name": v.pointer("/package/name").cloned().unwrap_or(Value::Null),
                            },
                            "vulnerable_version_range": v.get("vulnerable_version_range").cloned().unwrap_or(Value::Null),
                            "patched_versions": v.get("patched_versions").cloned().unwrap_or(Value::Null),
                            "vulnerable_functions": v.get("vulnerable_functions").cloned().filter(|f| !f.is_null()).unwrap_or_else(|| json!([])),
                        })
                    })
                    .collect();
                advisory["vulnerabilities"] = Value::Array(list);
            }
            "cwe_ids" => {
                let ids: Vec<Value> = value.as_array().cloned().unwrap_or_default();
                advisory["cwes"] = Value::Array(
                    ids.iter()
                        .map(|id| json!({"cwe_id": id, "name": id}))
                        .collect(),
                );
                advisory["cwe_ids"] = Value::Array(ids);
            }
            "credits" => {
                let credits: Vec<Value> = value.as_array().cloned().unwrap_or_default();
                advisory["credits_detailed"] = Value::Array(
                    credits
                        .iter()
                        .map(|c| {
                            let login = c.get("login").and_then(Value::as_str).unwrap_or("ghost");
                            json!({
                                "user": simple_user(api_url, login, user_id_for(login)),
                                "type": c.get("type").cloned().unwrap_or(Value::Null),
                                "state": "pending",
                            })
                        })
                        .collect(),
                );
                advisory["credits"] = Value::Array(credits);
            }
            "collaborating_users" => {
                advisory["collaborating_users"] = match value.as_array() {
                    Some(logins) => Value::Array(
                        logins
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|l| simple_user(api_url, l, user_id_for(l)))
                            .collect(),
                    ),
                    None => Value::Null,
                }
            }
            _ => {}
        }
    }
    refresh_identifiers(advisory);
}

/// Recomputes `identifiers` from `ghsa_id` and `cve_id`.
pub fn refresh_identifiers(advisory: &mut Value) {
    let mut identifiers = vec![json!({"type": "GHSA", "value": advisory["ghsa_id"].clone()})];
    if let Some(cve) = advisory["cve_id"].as_str() {
        identifiers.push(json!({"type": "CVE", "value": cve}));
    }
    advisory["identifiers"] = Value::Array(identifiers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ghsa_ids_use_githubs_alphabet_and_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let id = new_ghsa_id(&mut rng);
            assert!(is_ghsa_id(&id), "{id}");
        }
        assert!(!is_ghsa_id("GHSA-abcd-2345-6789"));
        assert!(!is_ghsa_id("GHSA-2345-6789"));
    }
}
