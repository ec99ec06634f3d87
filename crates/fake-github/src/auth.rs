//! Credentials the fake accepts: plain tokens (scoped per owner, fine-grained PAT style),
//! GitHub Apps with their installations and RS256 App JWTs, and the permission each
//! operation needs.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{Value, json};

use crate::spec::Operation;

/// A permission level, as GitHub spells it in `permissions` objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// `read`
    Read,
    /// `write` (implies read)
    Write,
    /// `admin` (implies write)
    Admin,
}

impl Access {
    /// GitHub's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }

    /// Parses GitHub's spelling.
    pub fn parse(text: &str) -> Option<Access> {
        match text {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "admin" => Some(Access::Admin),
            _ => None,
        }
    }
}

/// A set of permissions by GitHub's names (`repository_advisories`, `contents`,
/// `metadata`, ...), as an installation or a fine-grained token holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(pub BTreeMap<String, Access>);

impl Permissions {
    /// No permissions at all.
    pub fn new() -> Permissions {
        Permissions::default()
    }

    /// Adds (or replaces) one permission.
    pub fn with(mut self, name: &str, access: Access) -> Permissions {
        self.0.insert(name.to_owned(), access);
        self
    }

    /// What advisory-bridge needs: `repository_advisories: write`, `contents: write`,
    /// `metadata: read`.
    pub fn advisory_bridge() -> Permissions {
        Permissions::new()
            .with("repository_advisories", Access::Write)
            .with("contents", Access::Write)
            .with("metadata", Access::Read)
    }

    /// Read-only: `repository_advisories: read`, `contents: read`, `metadata: read`.
    pub fn read_only() -> Permissions {
        Permissions::new()
            .with("repository_advisories", Access::Read)
            .with("contents", Access::Read)
            .with("metadata", Access::Read)
    }

    /// The level held for `name`, if any.
    pub fn get(&self, name: &str) -> Option<Access> {
        self.0.get(name).copied()
    }

    /// True when `name` is held at `needed` or higher.
    pub fn allows(&self, name: &str, needed: Access) -> bool {
        self.get(name).is_some_and(|held| held >= needed)
    }

    /// The raw `permissions` object GitHub returns (`{"contents": "write", ...}`).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.as_str().to_owned())))
                .collect(),
        )
    }

    /// Parses a `permissions` object; `None` when a level is not read/write/admin.
    pub fn from_json(value: &Value) -> Option<Permissions> {
        let mut out = Permissions::new();
        for (name, level) in value.as_object()? {
            out.0.insert(name.clone(), Access::parse(level.as_str()?)?);
        }
        Some(out)
    }
}

/// A plain token (classic or fine-grained PAT style) the fake accepts besides
/// [`crate::FakeOptions::token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The secret, as sent in `Authorization: Bearer ...` or `token ...`.
    pub token: String,
    /// The only owner (user or organisation) whose repositories it sees; `None`: all.
    /// Repositories of other owners answer 404, as GitHub does.
    pub owner: Option<String>,
    /// What it may do; a write it lacks answers 403.
    pub permissions: Permissions,
    /// When it stops working (401 `Bad credentials` afterwards); `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its user's login (advisory `author`); `None`: [`crate::FakeOptions::login`].
    pub login: Option<String>,
}

impl TokenSpec {
    /// A fine-grained token for one owner: [`Access::Read`] gives
    /// [`Permissions::read_only`], [`Access::Write`] or higher
    /// [`Permissions::advisory_bridge`].
    pub fn new(token: &str, owner: &str, access: Access) -> TokenSpec {
        TokenSpec {
            token: token.to_owned(),
            owner: Some(owner.to_owned()),
            permissions: if access == Access::Read {
                Permissions::read_only()
            } else {
                Permissions::advisory_bridge()
            },
            expires_at: None,
            login: None,
        }
    }
}

/// Whether an installation's account is a user or an organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    /// A personal account (`/users/{username}/installation`).
    User,
    /// An organisation (`/orgs/{org}/installation`).
    Organization,
}

impl AccountType {
    /// GitHub's spelling (`User`, `Organization`).
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::User => "User",
            AccountType::Organization => "Organization",
        }
    }
}

/// A registered GitHub App.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// The App ID (the JWT's `iss`).
    pub id: u64,
    /// URL name, e.g. `advisory-bridge`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// The login owning the App.
    pub owner: String,
    /// The App's RSA key as PEM: a public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC
    /// KEY`) or the private key itself (`BEGIN PRIVATE KEY` / `BEGIN RSA PRIVATE KEY`,
    /// what `openssl genrsa` writes and GitHub hands out); only its public half is used.
    pub key_pem: String,
}

impl AppSpec {
    /// An App named `advisory-bridge` owned by `advisory-bridge`.
    pub fn new(id: u64, key_pem: &str) -> AppSpec {
        AppSpec {
            id,
            slug: "advisory-bridge".into(),
            name: "advisory-bridge".into(),
            owner: "advisory-bridge".into(),
            key_pem: key_pem.to_owned(),
        }
    }
}

/// An installation of an App on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationSpec {
    /// Installation ID.
    pub id: u64,
    /// The App installed.
    pub app_id: u64,
    /// The account (user or organisation login) whose repositories it sees.
    pub account: String,
    /// User or organisation.
    pub account_type: AccountType,
    /// What its tokens may do (returned raw as `permissions`).
    pub permissions: Permissions,
    /// Names (without owner) of the repositories it was given (`repository_selection:
    /// selected`); `None`: all of the account's (`all`).
    pub repositories: Option<Vec<String>>,
}

impl InstallationSpec {
    /// An installation on organisation `account` with [`Permissions::advisory_bridge`]
    /// and all repositories.
    pub fn new(id: u64, app_id: u64, account: &str) -> InstallationSpec {
        InstallationSpec {
            id,
            app_id,
            account: account.to_owned(),
            account_type: AccountType::Organization,
            permissions: Permissions::advisory_bridge(),
            repositories: None,
        }
    }
}

/// Parses an App key PEM into its public key.
pub(crate) fn public_key(pem: &str) -> Option<RsaPublicKey> {
    use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
    use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
    let pem = pem.trim();
    RsaPublicKey::from_public_key_pem(pem)
        .ok()
        .or_else(|| RsaPublicKey::from_pkcs1_pem(pem).ok())
        .or_else(|| {
            rsa::RsaPrivateKey::from_pkcs8_pem(pem)
                .ok()
                .map(|k| k.to_public_key())
        })
        .or_else(|| {
            rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .ok()
                .map(|k| k.to_public_key())
        })
}

/// GitHub's 401 message for a JWT it cannot use at all.
pub(crate) const JWT_UNDECODABLE: &str = "A JSON web token could not be decoded";
/// GitHub's 401 message for an `exp` in the past.
pub(crate) const JWT_EXPIRED: &str = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
/// GitHub's 401 message for an `exp` more than 10 minutes ahead.
pub(crate) const JWT_TOO_LONG: &str = "'Expiration time' claim ('exp') is too far in the future";
/// GitHub's 401 message for an `iat` in the future (beyond the drift allowance).
pub(crate) const JWT_BAD_IAT: &str = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";

/// The longest lifetime GitHub accepts for an App JWT: `exp` at most this far ahead.
pub const JWT_MAX_LIFETIME_SECS: i64 = 600;
/// How far in the future `iat` may be (clock drift between the App and GitHub).
pub const JWT_IAT_DRIFT_SECS: i64 = 60;

/// True for a string shaped like a JWT (three base64url parts, JSON header).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// Checks an App JWT: RS256 signature by a registered App's key, `iss` (number or
/// numeric string), `exp` in the future but at most 10 minutes ahead, `iat` not in the
/// future beyond the drift allowance. Returns the App ID or GitHub's 401 message.
pub(crate) fn verify_app_jwt(
    token: &str,
    key_of: impl Fn(u64) -> Option<RsaPublicKey>,
    now: i64,
) -> Result<u64, &'static str> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JWT_UNDECODABLE);
    };
    let decode_json = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    };
    let header_json = decode_json(header).ok_or(JWT_UNDECODABLE)?;
    if header_json.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(JWT_UNDECODABLE);
    }
    let claims_json = decode_json(claims).ok_or(JWT_UNDECODABLE)?;
    let app_id = match claims_json.get("iss") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or(JWT_UNDECODABLE)?;
    let key = key_of(app_id).ok_or(JWT_UNDECODABLE)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
        .ok_or(JWT_UNDECODABLE)?;
    let signed = &token[..header.len() + 1 + claims.len()];
    VerifyingKey::<Sha256>::new(key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| JWT_UNDECODABLE)?;
    let exp = claims_json
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JWT_EXPIRED)?;
    let iat = claims_json
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(JWT_BAD_IAT)?;
    if exp <= now {
        return Err(JWT_EXPIRED);
    }
    if exp - now > JWT_MAX_LIFETIME_SECS {
        return Err(JWT_TOO_LONG);
    }
    if iat > now + JWT_IAT_DRIFT_SECS {
        return Err(JWT_BAD_IAT);
    }
    Ok(app_id)
}

/// Signs an RS256 JWT with these claims, for tests (and clients of the fake) that need
/// good or deliberately bad App JWTs. `private_key_pem` is PKCS#8 or PKCS#1.
pub fn sign_jwt(private_key_pem: &str, claims: &Value) -> Result<String, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = private_key_pem.trim();
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|e| format!("not an RSA private key PEM: {e}"))?;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = SigningKey::<Sha256>::new(key).sign(signed.as_bytes());
    Ok(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// An App JWT as octocrab makes one: `iat` 60 s ago, `exp` 9 minutes ahead, numeric
/// `iss`.
pub fn app_jwt(private_key_pem: &str, app_id: u64) -> Result<String, String> {
    let now = Utc::now().timestamp();
    sign_jwt(
        private_key_pem,
        &json!({"iat": now - 60, "exp": now + 540, "iss": app_id}),
    )
}

/// The permission an operation needs on the repository, and at which level; `None` for
/// operations outside repositories (and private reports, which only need access).
pub(crate) fn required_permission(operation: Operation) -> Option<(&'static str, Access)> {
    use Operation as O;
    Some(match operation {
        O::List | O::Get => ("repository_advisories", Access::Read),
        O::Create | O::Update | O::RequestCve | O::CreateFork => {
            ("repository_advisories", Access::Write)
        }
        O::Report | O::GetRepoInstallation => ("metadata", Access::Read),
        O::CreateBlob
        | O::CreateTree
        | O::CreateCommit
        | O::CreateRef
        | O::UpdateRef
        | O::DeleteRef => ("contents", Access::Write),
        O::GetBlob
        | O::GetTree
        | O::GetCommit
        | O::GetRef
        | O::ListMatchingRefs
        | O::GetContent => ("contents", Access::Read),
        O::GetApp
        | O::ListInstallations
        | O::CreateInstallationToken
        | O::GetOrgInstallation
        | O::GetUserInstallation
        | O::GetUser => return None,
    })
}

/// The test RSA key pairs shipped with the crate (2048-bit, generated with `openssl
/// genpkey`; for tests only, never for anything real).
pub mod keys {
    /// PKCS#8 private key of the first test App.
    pub const APP_PRIVATE_KEY_PEM: &str = include_str!("../keys/app-private.pem");
    /// SPKI public key matching [`APP_PRIVATE_KEY_PEM`].
    pub const APP_PUBLIC_KEY_PEM: &str = include_str!("../keys/app-public.pem");
    /// A second, unrelated private key (a JWT signed with it is "the wrong key").
    pub const OTHER_PRIVATE_KEY_PEM: &str = include_str!("../keys/other-private.pem");
    /// SPKI public key matching [`OTHER_PRIVATE_KEY_PEM`].
    pub const OTHER_PUBLIC_KEY_PEM: &str = include_str!("../keys/other-public.pem");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_jwt_verifies_with_its_key_only() {
        let now = Utc::now().timestamp();
        let jwt = sign_jwt(
            keys::APP_PRIVATE_KEY_PEM,
            &json!({"iat": now - 60, "exp": now + 540, "iss": "7"}),
        )
        .unwrap();
        assert!(looks_like_jwt(&jwt));
        let good = public_key(keys::APP_PUBLIC_KEY_PEM).unwrap();
        let from_private = public_key(keys::APP_PRIVATE_KEY_PEM).unwrap();
        assert_eq!(good, from_private);
        let other = public_key(keys::OTHER_PUBLIC_KEY_PEM).unwrap();
        assert_eq!(verify_app_jwt(&jwt, |_| Some(good.clone()), now), Ok(7));
        assert_eq!(
            verify_app_jwt(&jwt, |_| Some(other.clone()), now),
            Err(JWT_UNDECODABLE)
        );
        assert_eq!(
            verify_app_jwt(&jwt, |_| Some(good.clone()), now + 600),
            Err(JWT_EXPIRED)
        );
    }
}
