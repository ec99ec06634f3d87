//! The only code that talks SMTP: send one acknowledgement with `lettre` over rustls.

use std::time::Duration;

use lettre::message::header::{ContentDisposition, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, TlsParameters};

use crate::smtp::{Connector, Failure, Pool, Security};

use crate::config::{Secret, TlsMode};
use crate::failure::{Classify, FailureKind};
use crate::mail::clean::single_line;
use crate::render::ReplyMessage;
use crate::render::outgoing::{clean_id, references};

/// A failed send.
#[derive(Debug, thiserror::Error)]
#[error("SMTP{}: {message}", if recipient.is_empty() { String::new() } else { format!(" send to {recipient}") })]
pub struct SendError {
    /// The reply's recipient; empty for a failure that concerns no one message.
    pub recipient: String,
    /// What the server or the network said.
    pub message: String,
    /// 4xx and network trouble are transient, 5xx permanent.
    pub kind: FailureKind,
}

impl Classify for SendError {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

/// Settings for [`Mailer::new`].
#[derive(Debug, Clone)]
pub struct MailerSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA file.
    pub ca_file: Option<std::path::PathBuf>,
    /// AUTH credentials, if any.
    pub credentials: Option<(String, Secret)>,
    /// Timeout for the whole exchange.
    pub timeout: Duration,
    /// Our OpenPGP key, when replies to a reporter who sent theirs are encrypted and
    /// signed (`[pgp] encrypt_replies`).
    pub pgp: Option<std::sync::Arc<crate::openpgp::Keys>>,
}

/// The header that marks mail we sent, so that classification recognises our own reply
/// when it loops back into the watched mailbox.
pub const LOOP_HEADER: &str = "X-Advisory-Bridge";

/// SMTP reply codes that mean our own login is wrong or missing, not that the recipient
/// is: retrying after ops fixed the configuration will work.
const AUTH_CODES: &[&str] = &["530", "534", "535", "538"];

/// How long an idle pooled SMTP connection stays open: long enough to carry a burst of
/// replies, short enough to end well before servers drop idle clients (often 60 s+).
pub const SMTP_IDLE: Duration = Duration::from_secs(20);

/// Sends replies.
///
/// Connections are pooled ([`crate::smtp::Pool`], with `TCP_NODELAY`): a burst of
/// replies, as when a backlog drains, reuses one authenticated connection instead of
/// paying connect, TLS and AUTH for each; a connection idle for [`SMTP_IDLE`] is closed,
/// and one the server dropped meanwhile is tested (`NOOP`) and replaced before use.
#[derive(Clone)]
pub struct Mailer {
    pool: std::sync::Arc<Pool>,
    /// `host:port`, for messages.
    server: String,
    timeout: Duration,
    /// The SMTP password, only to make sure no message ever repeats it.
    password: Option<Secret>,
    /// Our OpenPGP key, to encrypt and sign replies to reporters who sent theirs.
    pgp: Option<std::sync::Arc<crate::openpgp::Keys>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// Builds a mailer; does not connect.
    pub fn new(settings: &MailerSettings) -> Result<Mailer, SendError> {
        let server = format!("{}:{}", settings.host, settings.port);
        let host = settings.host.trim_start_matches('[').trim_end_matches(']');
        let security = match settings.tls {
            TlsMode::Implicit => {
                // Our own rustls config, for the handshake before SMTP; a bad CA file
                // reads as it does for STARTTLS (the same `tls::root_store` check).
                let config =
                    crate::tls::client_config(settings.ca_file.as_deref()).map_err(|e| {
                        SendError {
                            recipient: format!("(any, through {server})"),
                            message: format!("{e}; check smtp.ca_file"),
                            kind: FailureKind::Permanent,
                        }
                    })?;
                let name =
                    rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                        SendError {
                            recipient: format!("(any, through {server})"),
                            message: format!(
                                "`{host}` is not a valid TLS server name: {e}; check smtp.host"
                            ),
                            kind: FailureKind::Permanent,
                        }
                    })?;
                Security::Implicit(config, name)
            }
            TlsMode::Starttls => Security::Starttls(tls_parameters(host, settings, &server)?),
            TlsMode::None => Security::None,
        };
        let credentials = settings.credentials.as_ref().map(|(user, password)| {
            (
                Credentials::new(user.clone(), password.expose().to_owned()),
                vec![Mechanism::Plain, Mechanism::Login],
            )
        });
        let connector = Connector {
            host: host.to_owned(),
            port: settings.port,
            security,
            credentials,
        };
        Ok(Mailer {
            pool: Pool::new(connector, SMTP_IDLE, 2),
            server,
            timeout: settings.timeout,
            password: settings.credentials.as_ref().map(|(_, p)| p.clone()),
            pgp: settings.pgp.clone(),
        })
    }

    /// Sends one reply, with `Auto-Submitted: auto-replied`, `In-Reply-To`, `References`
    /// and the stable `Message-ID` from `message`.
    ///
    /// Every header value is made single-line again here, whatever the caller did, and the
    /// envelope names exactly one recipient: the reply's `To`.
    ///
    /// Failures: 4xx, network trouble, timeouts and TLS problems are transient; 5xx and an
    /// address that cannot be parsed are permanent, except 530/534/535/538, which say our
    /// own login is wrong: those are `Misconfigured`, so replies wait until ops fix it.
    ///
    /// Returns the exact bytes that were sent, for a copy in the `Sent` folder.
    pub async fn send(&self, message: &ReplyMessage) -> Result<Vec<u8>, SendError> {
        let recipient = printable(&message.to.email);
        let email = build_message(message, self.pgp.as_deref()).map_err(|reason| SendError {
            recipient: recipient.clone(),
            message: reason,
            kind: FailureKind::Permanent,
        })?;
        let bytes = email.formatted();
        let envelope = email.envelope().clone();
        let outcome = tokio::time::timeout(self.timeout, self.pool.send(&envelope, &bytes)).await;
        match outcome {
            Ok(Ok(())) => Ok(bytes),
            Ok(Err(e)) => Err(self.failed(recipient, &e)),
            Err(_) => Err(SendError {
                recipient,
                message: format!(
                    "{} did not complete the exchange within {} s; the reply may or may not \
                     have been accepted",
                    self.server,
                    self.timeout.as_secs()
                ),
                kind: FailureKind::TRANSIENT,
            }),
        }
    }

    /// Connects, upgrades to TLS and authenticates, then quits (for `check`).
    pub async fn check(&self) -> Result<(), SendError> {
        let recipient = String::new();
        match tokio::time::timeout(self.timeout, self.pool.test()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(SendError {
                recipient,
                message: format!("{} did not answer NOOP after login", self.server),
                kind: FailureKind::TRANSIENT,
            }),
            Ok(Err(e)) => Err(self.failed(recipient, &e)),
            Err(_) => Err(SendError {
                recipient,
                message: format!(
                    "{} did not answer within {} s",
                    self.server,
                    self.timeout.as_secs()
                ),
                kind: FailureKind::TRANSIENT,
            }),
        }
    }

    /// Classifies a failure to connect or send.
    fn failed(&self, recipient: String, failure: &Failure) -> SendError {
        match failure {
            Failure::Smtp(e) => self.failure(recipient, e),
            Failure::Io(e) => self.io_failure(recipient, e),
        }
    }

    /// Classifies a failure before SMTP began: the TCP connection or the implicit TLS
    /// handshake, worded like lettre's own.
    fn io_failure(&self, recipient: String, error: &std::io::Error) -> SendError {
        if crate::tls::peer_spoke_plain_text(error) {
            return SendError {
                recipient,
                message: format!(
                    "{} does not speak TLS on this port (it answered in plain text); use its \
                     implicit-TLS port (465) or set smtp.tls = \"starttls\"",
                    self.server
                ),
                kind: FailureKind::Misconfigured,
            };
        }
        let advice = if crate::tls::rustls_error_in(error).is_some() {
            "; if the server's certificate comes from a private CA, set smtp.ca_file"
        } else {
            ""
        };
        SendError {
            recipient,
            message: printable(&format!(
                "{}: Connection error: {error}{advice}",
                self.server
            )),
            kind: FailureKind::TRANSIENT,
        }
    }

    /// Classifies a lettre error and words it with the server's own reply text.
    fn failure(&self, recipient: String, error: &lettre::transport::smtp::Error) -> SendError {
        let code = error.status().map(|c| c.to_string());
        let (kind, advice) = if code.as_deref().is_some_and(|c| AUTH_CODES.contains(&c)) {
            (
                FailureKind::Misconfigured,
                "; check smtp.username and the password",
            )
        } else if error.is_permanent() || error.is_client() {
            (FailureKind::Permanent, "")
        } else if crate::tls::peer_spoke_plain_text(error) {
            let text = format!(
                "{} does not speak TLS on this port (it answered in plain text); use its \
                 implicit-TLS port (465) or set smtp.tls = \"starttls\"",
                self.server
            );
            return SendError {
                recipient,
                message: text,
                kind: FailureKind::Misconfigured,
            };
        } else if involves_tls(error) {
            (
                FailureKind::TRANSIENT,
                "; if the server's certificate comes from a private CA, set smtp.ca_file",
            )
        } else {
            // 4xx, network trouble, timeouts, garbled answers: try again later.
            (FailureKind::TRANSIENT, "")
        };
        let mut text = format!("{}: {}{advice}", self.server, error_chain(error));
        if let Some(password) = &self.password
            && !password.expose().is_empty()
        {
            text = text.replace(password.expose(), "[redacted]");
        }
        SendError {
            recipient,
            message: text,
            kind,
        }
    }
}

/// True when TLS failed: lettre reports a certificate it does not trust as a connection
/// error, with the rustls error inside an `io::Error` in the chain.
fn involves_tls(error: &lettre::transport::smtp::Error) -> bool {
    error.is_tls() || crate::tls::rustls_error_in(error).is_some()
}

/// lettre's message with its causes, which hold the server's reply text.
fn error_chain(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    printable(&text)
}

fn tls_parameters(
    host: &str,
    settings: &MailerSettings,
    server: &str,
) -> Result<TlsParameters, SendError> {
    let failed = |message: String| SendError {
        recipient: format!("(any, through {server})"),
        message,
        kind: FailureKind::Permanent,
    };
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = &settings.ca_file {
        // The same reading and checks as for IMAP, so both say the same about a bad file.
        crate::tls::root_store(Some(path))
            .map_err(|e| failed(format!("{e}; check smtp.ca_file")))?;
        let pem = std::fs::read(path).map_err(|e| {
            failed(format!(
                "cannot read CA file {}: {e}; check smtp.ca_file",
                path.display()
            ))
        })?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| {
            failed(format!(
                "cannot use CA file {}: {e}; check smtp.ca_file",
                path.display()
            ))
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| failed(format!("cannot set up TLS for {server}: {e}")))
}

/// Builds the RFC 5322 message; the error says why the reply cannot be sent at all.
/// The reply as lettre builds it: plain text, or, when the reply names the recipient's
/// key and we have ours, RFC 3156 PGP/MIME (`multipart/encrypted`, the text encrypted to
/// the recipient and to us, and signed). A key that cannot be used falls back to plain
/// text, as for a reporter who sent none.
fn build_message(
    reply: &ReplyMessage,
    pgp: Option<&crate::openpgp::Keys>,
) -> Result<lettre::Message, String> {
    let to = mailbox(&reply.to, "recipient")?;
    let from = mailbox(&reply.from, "sender (smtp.from_address)")?;
    let own_id = clean_id(&reply.message_id).ok_or_else(|| {
        format!(
            "the reply's Message-ID `{}` is unusable",
            printable(&reply.message_id)
        )
    })?;

    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(single_line(&reply.subject))
        .message_id(Some(format!("<{own_id}>")))
        .date_now()
        .header(lettre::message::header::MIME_VERSION_1_0);
    if let Some(id) = reply.in_reply_to.as_deref().and_then(clean_id) {
        builder = builder.in_reply_to(format!("<{id}>"));
    }
    let references: Vec<String> = references(reply.references.iter().map(String::as_str))
        .into_iter()
        .map(|id| format!("<{id}>"))
        .collect();
    if !references.is_empty() {
        builder = builder.references(references.join(" "));
    }
    builder = with_raw_header(builder, "Auto-Submitted", "auto-replied");
    builder = with_raw_header(builder, "X-Auto-Response-Suppress", "All");
    builder = with_raw_header(builder, LOOP_HEADER, "reply");
    let envelope = lettre::address::Envelope::new(Some(from.email), vec![to.email])
        .map_err(|e| format!("cannot build the envelope: {e}"))?;
    let builder = builder.envelope(envelope);
    let body = reply.body.replace('\0', "");
    let encrypted = match (pgp, reply.encrypt_to.as_deref()) {
        (Some(keys), Some(theirs)) => {
            crate::openpgp::parse_public_key(theirs.as_bytes()).and_then(|key| {
                let inner = SinglePart::plain(body.clone()).formatted();
                keys.encrypt_to(&inner, Some(&key)).ok()
            })
        }
        _ => None,
    };
    match encrypted {
        Some(armour) => {
            let version = SinglePart::builder()
                .header(ContentType::parse("application/pgp-encrypted").map_err(|e| e.to_string())?)
                .body(String::from("Version: 1\r\n"));
            let data = SinglePart::builder()
                .header(
                    ContentType::parse("application/octet-stream; name=\"encrypted.asc\"")
                        .map_err(|e| e.to_string())?,
                )
                .header(ContentDisposition::inline_with_name("encrypted.asc"))
                .body(armour);
            builder.multipart(
                MultiPart::encrypted("application/pgp-encrypted".to_owned())
                    .singlepart(version)
                    .singlepart(data),
            )
        }
        None => builder.header(ContentType::TEXT_PLAIN).body(body),
    }
    .map_err(|e| format!("cannot build the reply: {e}"))
}

fn with_raw_header(builder: MessageBuilder, name: &'static str, value: &str) -> MessageBuilder {
    builder.raw_header(HeaderValue::new(
        HeaderName::new_from_ascii_str(name),
        value.to_owned(),
    ))
}

/// A lettre mailbox from our address type; the address must parse, the name is made a
/// single line.
fn mailbox(address: &crate::mail::Address, role: &str) -> Result<Mailbox, String> {
    let email = address.email.trim();
    let parsed: lettre::Address = email.parse().map_err(|e| {
        format!(
            "the {role} address `{}` is not a valid address: {e}",
            printable(email)
        )
    })?;
    let name = address
        .name
        .as_deref()
        .map(single_line)
        .filter(|n| !n.is_empty());
    Ok(Mailbox::new(name, parsed))
}

/// Text safe to show in a log line or an error: no control characters.
fn printable(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Address;

    fn reply() -> ReplyMessage {
        ReplyMessage {
            to: Address {
                name: Some("Rep\r\nBcc: x@evil.example".into()),
                email: "reporter@example.org".into(),
            },
            from: Address {
                name: Some("Security Team".into()),
                email: "security@example.org".into(),
            },
            subject: "Re: XSS\r\nBcc: victim@example.net".into(),
            message_id: "ack-123@example.org".into(),
            in_reply_to: Some("<orig@example.org>".into()),
            references: vec!["<a@x>".into(), "orig@example.org".into()],
            body: "Thanks.\nWe got it.\n".into(),
            encrypt_to: None,
        }
    }

    fn header_lines(message: &lettre::Message) -> Vec<String> {
        let raw = String::from_utf8(message.formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap().to_owned();
        head.split("\r\n").map(str::to_owned).collect()
    }

    fn assert_send<T: Send>(_: &T) {}

    /// The daemon sends from spawned tasks.
    #[allow(dead_code)]
    fn mailer_futures_are_send(mailer: &Mailer, message: &ReplyMessage) {
        assert_send(&mailer.send(message));
        assert_send(&mailer.check());
    }

    #[test]
    fn a_reply_declares_its_mime_version() {
        let lines = header_lines(&build_message(&reply(), None).unwrap());
        assert!(lines.iter().any(|l| l == "MIME-Version: 1.0"), "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("Content-Type: text/plain")),
            "{lines:#?}"
        );
    }

    #[test]
    fn line_breaks_in_a_subject_or_a_name_cannot_add_a_header() {
        let message = build_message(&reply(), None).unwrap();
        let lines = header_lines(&message);
        assert!(
            !lines
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == "Subject: Re: XSS Bcc: victim@example.net"),
            "{lines:#?}"
        );
    }

    #[test]
    fn threading_and_auto_reply_headers_are_set() {
        let lines = header_lines(&build_message(&reply(), None).unwrap());
        for expected in [
            "Message-ID: <ack-123@example.org>",
            "In-Reply-To: <orig@example.org>",
            "References: <a@x> <orig@example.org>",
            "Auto-Submitted: auto-replied",
            "X-Auto-Response-Suppress: All",
            "X-Advisory-Bridge: reply",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "{expected} missing in {lines:#?}"
            );
        }
        assert!(
            !lines
                .iter()
                .any(|l| l.to_ascii_lowercase().starts_with("precedence:"))
        );
    }

    #[test]
    fn the_envelope_has_exactly_the_one_recipient() {
        let message = build_message(&reply(), None).unwrap();
        let envelope = message.envelope();
        assert_eq!(envelope.to().len(), 1);
        assert_eq!(envelope.to()[0].to_string(), "reporter@example.org");
        assert_eq!(envelope.from().unwrap().to_string(), "security@example.org");
    }

    #[test]
    fn an_unparseable_recipient_is_refused() {
        let mut bad = reply();
        bad.to.email = "not an address\r\nRCPT TO:<x@y>".into();
        let err = build_message(&bad, None).unwrap_err();
        assert!(err.contains("recipient"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_reply_to_a_reporter_with_a_key_is_pgp_mime_they_can_decrypt() {
        let file = |n: &str| {
            std::fs::read_to_string(format!(
                "{}/tests/fixtures/pgp/{n}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let ours = crate::openpgp::Keys::from_armored(
            &file("security.secret.asc"),
            Some(&Secret::new("correct horse")),
        )
        .unwrap();
        let mut message = reply();
        message.body = "Thank you, we are looking into it.".into();
        message.encrypt_to = Some(file("alice.public.asc"));
        let bytes = build_message(&message, Some(&ours)).unwrap().formatted();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("multipart/encrypted"), "{text}");
        assert!(
            text.contains("protocol=\"application/pgp-encrypted\""),
            "{text}"
        );
        assert!(!text.contains("looking into it"), "{text}");
        let alice = crate::openpgp::Keys::from_armored(&file("alice.secret.asc"), None).unwrap();
        let crate::openpgp::Opened::Decrypted { raw, .. } =
            crate::openpgp::open(&bytes, &alice, 1 << 20)
        else {
            panic!("alice cannot open it");
        };
        assert!(String::from_utf8_lossy(&raw).contains("looking into it"));
        // Without our key, or without theirs, the reply is plain as before.
        message.encrypt_to = Some("not a key".into());
        let plain = build_message(&message, Some(&ours)).unwrap().formatted();
        assert!(String::from_utf8_lossy(&plain).contains("looking into it"));
    }
}
