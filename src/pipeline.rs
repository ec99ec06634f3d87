//! The pure part of handling one message: raw bytes to a [`Report`], and a report to what
//! we would do with it ([`Prepared`]). No I/O: `preview`, the engine, the invariant tests
//! and the fuzz target all call exactly these two functions, so they cannot drift apart.

use chrono::{DateTime, Utc};

use crate::auth;
use crate::classify::{self, Classification, ReplyDecision, SuppressReason};
use crate::config::{Config, own_addresses};
use crate::mail::{self, Limits, ParseError, Report};
use crate::openpgp::{self, Encryption, Format, Keys, Opened, Signature};
use crate::render::{self, AdvisoryContext, AdvisoryDraft, MarkerKey};
use crate::route::{self, Route};

/// Everything one message's trip through the pure stages produces: what `preview`
/// prints and what the engine acts on.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Report or noise (after the spam-score threshold).
    pub classification: Classification,
    /// The chosen repository.
    pub route: Route,
    /// The advisory to create.
    pub draft: AdvisoryDraft,
    /// Whether and to whom to reply (after the reply switch and the DMARC gate).
    pub reply: ReplyDecision,
}

/// Parses raw bytes into a report and drops the `Authentication-Results` headers that
/// no trusted server wrote, so nothing downstream can be fooled by them.
///
/// With our OpenPGP key (`[pgp]`), an encrypted message is decrypted first: a PGP/MIME
/// message's decrypted entity replaces its body under the outer headers, inline blocks
/// and encrypted attachments are replaced by their plaintext, and the result goes
/// through the same parse and limits as plain mail. One our key cannot open becomes a
/// report with no text or attachments, marked [`Encryption::Unreadable`].
pub fn parse(config: &Config, keys: Option<&Keys>, raw: &[u8]) -> Result<Report, ParseError> {
    let limits = Limits::from(&config.limits);
    let mut report = match keys {
        Some(keys) if raw.len() <= limits.max_message_bytes => {
            // Whatever rPGP makes of hostile key or signature data, the message becomes a
            // quarantine entry, never a crash of the daemon.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                open(raw, keys, &limits)
            })) {
                Ok(report) => report?,
                Err(_) => unreadable(
                    mail::parse(raw, &limits)?,
                    Format::PgpMime,
                    "its OpenPGP data could not be parsed".into(),
                ),
            }
        }
        _ => mail::parse(raw, &limits)?,
    };
    let trusted = &config.authentication.trusted_authserv_ids;
    report.signals.authentication_results =
        auth::trusted(&report.signals.authentication_results, trusted)
            .into_iter()
            .cloned()
            .collect();
    Ok(report)
}

/// Decrypts what our key can and parses the result (see [`parse`]).
fn open(raw: &[u8], keys: &Keys, limits: &Limits) -> Result<Report, ParseError> {
    let max = limits.max_message_bytes;
    let mut report = match openpgp::open(raw, keys, max) {
        Opened::Decrypted {
            raw: inner,
            signature,
        } => {
            let mut r = mail::parse(&inner, limits)?;
            r.raw_size = raw.len();
            r.encryption = Encryption::Decrypted {
                format: Format::PgpMime,
                signature,
            };
            r
        }
        Opened::Unreadable(reason) => {
            unreadable(mail::parse(raw, limits)?, Format::PgpMime, reason)
        }
        Opened::NotPgpMime => {
            let mut r = mail::parse(raw, limits)?;
            let carried = openpgp::carried_keys(raw, &r.attachments);
            match openpgp::open_inline(&mut r.text, keys, max, &carried) {
                Err(reason) => unreadable(r, Format::Inline, reason),
                Ok(signature) => {
                    let mut any = false;
                    for a in &mut r.attachments {
                        if let Some(plain) =
                            openpgp::open_attachment(a.filename.as_deref(), &a.data, keys, max)
                        {
                            any = true;
                            a.sha256 = mail::sha256_hex(&plain);
                            a.is_text = std::str::from_utf8(&plain).is_ok() && !plain.contains(&0);
                            a.data = plain;
                            a.filename = a.filename.as_deref().map(openpgp::decrypted_name);
                        }
                    }
                    if signature.is_some() || any {
                        r.encryption = Encryption::Decrypted {
                            format: Format::Inline,
                            signature: signature.unwrap_or(Signature::Unsigned),
                        };
                    }
                    r
                }
            }
        }
    };
    report.sender_key = openpgp::sender_key(raw, &report.attachments);
    Ok(report)
}

/// A report our key could not open: its outer headers only, nothing it says.
fn unreadable(mut report: Report, format: Format, reason: String) -> Report {
    report.text.clear();
    report.text_from_html = false;
    report.attachments.clear();
    report.encryption = Encryption::Unreadable { format, reason };
    report
}

/// Our own addresses as classification needs them.
pub fn classify_context(config: &Config) -> classify::Context {
    classify::Context {
        own_addresses: own_addresses(config),
    }
}

/// Runs parse's output through classify (with the spam-score threshold), route, render
/// (the marker authenticated with `marker`) and the reply decision (with the reply
/// switch and the DMARC gate).
pub fn prepare(
    config: &Config,
    marker: &MarkerKey,
    report: &Report,
    received_at: DateTime<Utc>,
) -> Prepared {
    prepare_with(config, marker, report, received_at, None)
}

/// [`prepare`] with the earlier report this one probably repeats, which the engine finds
/// in the journal, shown in the draft.
pub fn prepare_with(
    config: &Config,
    marker: &MarkerKey,
    report: &Report,
    received_at: DateTime<Utc>,
    duplicate: Option<&crate::triage::Duplicate>,
) -> Prepared {
    let ctx = classify_context(config);
    let mut classification = classify::classify(report, &ctx);
    if classification == Classification::Report
        && let (Some(threshold), Some(score)) =
            (config.spam.score_threshold, report.signals.spam_score)
        && score >= threshold
    {
        classification = Classification::Noise(classify::NoiseReason::Spam(format!(
            "spam score {score} is at least spam.score_threshold = {threshold}"
        )));
    }
    let route = route::route(
        report,
        &config.repositories,
        &config.default_repository,
        &config.smtp.from_address,
    );
    let repository = config
        .repository(&route.repository)
        .expect("route only returns configured repositories");
    let web_url = config.github.web_url();
    let draft = render::advisory(
        report,
        &AdvisoryContext {
            route: &route,
            repository,
            settings: &config.advisory,
            received_at,
            marker,
            attachments: config
                .attachments
                .repository_for(repository.owner())
                .map(|r| render::AttachmentsTarget {
                    repository: r,
                    web_url: &web_url,
                }),
            duplicate,
        },
    );
    let verdict = auth::verdict(
        &report.signals.authentication_results,
        &config.authentication.trusted_authserv_ids,
    );
    let reply = if !config.reply.enabled {
        ReplyDecision::Suppress(SuppressReason::Disabled)
    } else if let auth::Verdict::Failed { server, reason } = verdict {
        ReplyDecision::Suppress(SuppressReason::Unauthenticated(format!(
            "{reason} at {server}"
        )))
    } else {
        classify::reply_decision(report, &ctx)
    };
    Prepared {
        classification,
        route,
        draft,
        reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> Config {
        Config::parse(
            r#"
default_repository = "pallets/flask"
[imap]
host = "127.0.0.1"
username = "security"
password_env = "UNUSED"
[smtp]
host = "127.0.0.1"
from_address = "security@palletsprojects.com"
[github]
token_env = "UNUSED"
[authentication]
trusted_authserv_ids = ["mx.palletsprojects.com"]
[[repository]]
name = "pallets/flask"
"#,
            std::path::Path::new("/nonexistent/config.toml"),
        )
        .unwrap()
    }

    fn pgp_file(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/pgp/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn keys() -> Keys {
        let armoured = String::from_utf8(pgp_file("security.secret.asc")).unwrap();
        Keys::from_armored(&armoured, Some(&Secret::new("correct horse"))).unwrap()
    }

    fn open_fixture(name: &str) -> Report {
        parse(&config(), Some(&keys()), &pgp_file(name)).unwrap()
    }

    const SECRET: &str = "The session cookie of Flask can be forged when SECRET_KEY is empty.";

    fn alice_fingerprint() -> String {
        let key = openpgp::parse_public_key(&pgp_file("alice.public.asc")).unwrap();
        hex::encode_upper(pgp::types::KeyDetails::fingerprint(&key).as_bytes())
    }

    fn assert_decrypted(r: &Report, marker: &str, format: Format) {
        assert!(r.text.contains(SECRET), "{}", r.text);
        assert!(r.text.contains(marker), "{}", r.text);
        assert_eq!(
            r.encryption,
            Encryption::Decrypted {
                format,
                signature: Signature::Verified(alice_fingerprint()),
            }
        );
        assert_eq!(r.from.as_ref().unwrap().email, "alice@example.net");
        assert!(
            r.sender_key.is_some(),
            "the reporter's key is kept for the reply"
        );
        assert_eq!(r.signals.authentication_results.len(), 1);
    }

    #[test]
    fn a_public_key_is_not_taken_for_our_secret_key() {
        let err = Keys::from_armored(
            &String::from_utf8(pgp_file("alice.public.asc")).unwrap(),
            None,
        )
        .unwrap_err();
        assert!(err.contains("not an armoured OpenPGP secret key"), "{err}");
    }

    #[test]
    fn a_wrong_passphrase_fails_at_load() {
        let armoured = String::from_utf8(pgp_file("security.secret.asc")).unwrap();
        let err = Keys::from_armored(&armoured, Some(&Secret::new("wrong"))).unwrap_err();
        assert!(err.contains("passphrase"), "{err}");
    }

    #[test]
    fn standard_pgp_mime_is_decrypted_under_the_outer_headers() {
        let r = open_fixture("pgp-mime-signed.eml");
        assert_decrypted(&r, "PGP/MIME standard.", Format::PgpMime);
        assert_eq!(r.subject, "Encrypted report");
        assert_eq!(r.message_id.as_deref(), Some("pgp-mime@mail.example.net"));
        assert_eq!(r.attachments.len(), 1, "the attached public key");
        assert_eq!(r.attachments[0].content_type, "application/pgp-keys");
        assert_eq!(r.raw_size, pgp_file("pgp-mime-signed.eml").len());
    }

    #[test]
    fn a_signed_then_encrypted_entity_is_verified_and_its_signature_part_dropped() {
        let r = open_fixture("nested-signed.eml");
        assert_decrypted(&r, "Signed, then encrypted.", Format::PgpMime);
        assert!(
            r.attachments
                .iter()
                .all(|a| a.content_type != "application/pgp-signature"),
            "{:?}",
            r.attachments
        );
    }

    #[test]
    fn an_encrypted_attachment_is_replaced_by_its_plaintext() {
        let keys = keys();
        let armour = keys
            .encrypt_to(b"print('proof of concept')\n", None)
            .unwrap();
        let raw = format!(
            "From: a@example.org\r\nMessage-ID: <att@x>\r\nSubject: poc\r\n\
             Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
             --m\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
             --m\r\nContent-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"poc.py.asc\"\r\n\r\n{armour}\r\n--m--\r\n"
        );
        let r = parse(&config(), Some(&keys), raw.as_bytes()).unwrap();
        assert_eq!(r.text, "See the attachment.");
        let a = &r.attachments[0];
        assert_eq!(a.filename.as_deref(), Some("poc.py"));
        assert_eq!(a.data, b"print('proof of concept')\n");
        assert!(a.is_text);
        assert_eq!(a.sha256, mail::sha256_hex(&a.data));
        assert!(matches!(
            r.encryption,
            Encryption::Decrypted {
                format: Format::Inline,
                ..
            }
        ));
    }

    #[test]
    fn exchanges_mixed_up_multipart_is_decrypted() {
        let r = open_fixture("exchange-mixed-up.eml");
        assert_decrypted(&r, "Exchange shape.", Format::PgpMime);
    }

    #[test]
    fn a_footer_after_the_armour_is_ignored() {
        let r = open_fixture("google-footer.eml");
        assert_decrypted(&r, "Google footer.", Format::PgpMime);
        assert!(!r.text.contains("Google Groups"), "{}", r.text);
    }

    #[test]
    fn an_inline_block_is_replaced_by_its_plaintext_and_autocrypt_verifies_it() {
        let r = open_fixture("inline-autocrypt.eml");
        assert_decrypted(&r, "Inline.", Format::Inline);
        assert!(r.text.starts_with("Hello,"), "{}", r.text);
        assert!(r.text.trim_end().ends_with("Alice"), "{}", r.text);
        assert!(!r.text.contains("BEGIN PGP"), "{}", r.text);
    }

    #[test]
    fn a_message_for_another_key_is_unreadable_and_says_nothing() {
        let r = open_fixture("wrong-key.eml");
        let Encryption::Unreadable { format, reason } = &r.encryption else {
            panic!("{:?}", r.encryption);
        };
        assert_eq!(*format, Format::PgpMime);
        assert!(reason.contains("not encrypted to our key"), "{reason}");
        assert!(r.text.is_empty());
        assert!(r.attachments.is_empty());
        assert_eq!(r.subject, "Encrypted to someone else");
    }

    #[test]
    fn without_a_key_encrypted_mail_is_parsed_as_today() {
        let raw = pgp_file("pgp-mime-signed.eml");
        let r = parse(&config(), None, &raw).unwrap();
        assert_eq!(
            r,
            mail::parse(&raw, &Limits::from(&config().limits)).unwrap()
        );
        assert_eq!(r.encryption, Encryption::Plain);
        assert_eq!(r.sender_key, None);
    }

    #[test]
    fn corrupt_ciphertext_is_unreadable_not_a_panic() {
        let raw = String::from_utf8(pgp_file("pgp-mime-signed.eml")).unwrap();
        let start = raw.find("-----BEGIN PGP MESSAGE-----").unwrap() + 40;
        let mut bytes = raw.into_bytes();
        for b in &mut bytes[start..start + 60] {
            if b.is_ascii_alphanumeric() {
                *b = if *b == b'A' { b'B' } else { b'A' };
            }
        }
        let r = parse(&config(), Some(&keys()), &bytes).unwrap();
        assert!(
            matches!(r.encryption, Encryption::Unreadable { .. }),
            "{:?}",
            r.encryption
        );
        assert!(r.text.is_empty());
    }
}
