//! The only code that talks SMTP: send one acknowledgement with `lettre` over rustls.
//!
//! The reply is built here from a [`ReplyMessage`] whose fields the renderer already made
//! single-line; [`Mailer::send`] cleans them once more, because header injection into
//! mail we send in the organisation's name must be impossible whatever a caller passes.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{Secret, TlsMode};
use crate::failure::{Classify, FailureKind};
use crate::render::ReplyMessage;

/// A failed send.
#[derive(Debug, thiserror::Error)]
#[error("SMTP send to {recipient}: {message}")]
pub struct SendError {
    /// The reply's recipient.
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
}

/// Sends replies.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// `Auto-Submitted: auto-replied` (RFC 3834): tells well-behaved responders not to answer.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".into())
    }
}

/// `X-Auto-Response-Suppress: All`: the same request, in Microsoft Exchange's words.
#[derive(Clone)]
struct AutoResponseSuppress;

impl Header for AutoResponseSuppress {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Auto-Response-Suppress")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoResponseSuppress)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "All".into())
    }
}

/// `X-Advisory-Bridge: reply`: lets the classifier recognise our own mail coming back.
#[derive(Clone)]
struct OwnMarker;

impl Header for OwnMarker {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Advisory-Bridge")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(OwnMarker)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "reply".into())
    }
}

/// Removes everything that could end a header line or hide text: CR, LF, other C0/C1
/// controls and Unicode bidi controls.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A message id fit to stand between angle brackets: visible ASCII without brackets or
/// white space.
fn clean_id(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    ok.then(|| format!("<{id}>"))
}

fn mailbox(name: Option<&str>, email: &str) -> Result<Mailbox, String> {
    let address: Address = clean(email)
        .parse()
        .map_err(|e| format!("`{}` is not a usable address: {e}", clean(email)))?;
    let name = name.map(clean).filter(|n| !n.is_empty());
    Ok(Mailbox::new(name, address))
}

impl Mailer {
    /// Builds a mailer; does not connect.
    pub fn new(settings: &MailerSettings) -> Result<Mailer, SendError> {
        let server = format!("{}:{}", settings.host, settings.port);
        let config_error = |message: String| SendError {
            recipient: "-".into(),
            message: format!("{server}: {message}"),
            kind: FailureKind::Permanent,
        };
        let tls_parameters = || -> Result<TlsParameters, SendError> {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    config_error(format!("cannot read smtp.ca_file {}: {e}", path.display()))
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    config_error(format!(
                        "smtp.ca_file {} holds no PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| config_error(format!("cannot set up TLS: {e}")))
        };
        let tls = match settings.tls {
            TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
            TlsMode::Starttls => Tls::Required(tls_parameters()?),
            TlsMode::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some((user, password)) = &settings.credentials {
            builder = builder
                .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Mailer {
            transport: builder.build(),
            server,
            timeout: settings.timeout,
        })
    }

    /// Builds the RFC 5322 message for a reply; public so `preview` and tests can see
    /// exactly what would be sent.
    pub fn build(message: &ReplyMessage) -> Result<Message, SendError> {
        let permanent = |m: String| SendError {
            recipient: clean(&message.to.email),
            message: m,
            kind: FailureKind::Permanent,
        };
        let from = mailbox(message.from.name.as_deref(), &message.from.email).map_err(permanent)?;
        let to = mailbox(message.to.name.as_deref(), &message.to.email).map_err(permanent)?;
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(clean(&message.subject))
            .date_now()
            .header(AutoSubmitted)
            .header(AutoResponseSuppress)
            .header(OwnMarker)
            .header(ContentType::TEXT_PLAIN);
        builder = builder
            .message_id(Some(clean_id(&message.message_id).ok_or_else(|| {
                permanent("the reply's Message-ID is not usable".into())
            })?));
        if let Some(id) = message.in_reply_to.as_deref().and_then(clean_id) {
            builder = builder.in_reply_to(id);
        }
        let references: Vec<String> = message
            .references
            .iter()
            .filter_map(|id| clean_id(id))
            .collect();
        if !references.is_empty() {
            builder = builder.references(references.join(" "));
        }
        builder
            .body(message.body.clone())
            .map_err(|e| permanent(format!("cannot build the reply: {e}")))
    }

    /// Sends one reply, with `Auto-Submitted: auto-replied`, `In-Reply-To`, `References`
    /// and the stable `Message-ID` from `message`, to its one recipient.
    pub async fn send(&self, message: &ReplyMessage) -> Result<(), SendError> {
        let email = Mailer::build(message)?;
        let recipient = clean(&message.to.email);
        // lettre's timeout bounds each read and write; this bounds the whole exchange.
        let overall = self.timeout.saturating_mul(4);
        match tokio::time::timeout(overall, self.transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(recipient, &e)),
            Err(_) => Err(SendError {
                recipient,
                message: format!(
                    "{}: no answer within {} s (smtp.timeout_secs); will retry",
                    self.server,
                    overall.as_secs()
                ),
                kind: FailureKind::TRANSIENT,
            }),
        }
    }

    fn error(&self, recipient: String, e: &lettre::transport::smtp::Error) -> SendError {
        let kind = if e.is_permanent() {
            FailureKind::Permanent
        } else {
            FailureKind::TRANSIENT
        };
        let mut message = format!("{}: {e}", self.server);
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(&format!(": {text}"));
            }
            source = cause.source();
        }
        SendError {
            recipient,
            message,
            kind,
        }
    }

    /// Connects, upgrades to TLS and authenticates, then quits (for `check`).
    pub async fn check(&self) -> Result<(), SendError> {
        let overall = self.timeout.saturating_mul(2);
        match tokio::time::timeout(overall, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(SendError {
                recipient: "-".into(),
                message: format!("{}: the server did not accept the connection", self.server),
                kind: FailureKind::TRANSIENT,
            }),
            Ok(Err(e)) => Err(self.error("-".into(), &e)),
            Err(_) => Err(SendError {
                recipient: "-".into(),
                message: format!("{}: no answer within {} s", self.server, overall.as_secs()),
                kind: FailureKind::TRANSIENT,
            }),
        }
    }
}
