//! The only code that talks SMTP: send one acknowledgement with `lettre` over rustls.

use std::time::Duration;

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
    _private: (),
}

impl Mailer {
    /// Builds a mailer; does not connect.
    pub fn new(settings: &MailerSettings) -> Result<Mailer, SendError> {
        let _ = settings;
        unimplemented!("reply::Mailer::new")
    }

    /// Sends one reply, with `Auto-Submitted: auto-replied`, `In-Reply-To`, `References`
    /// and the stable `Message-ID` from `message`.
    pub async fn send(&self, message: &ReplyMessage) -> Result<(), SendError> {
        let _ = message;
        unimplemented!("reply::Mailer::send")
    }

    /// Connects, upgrades to TLS and authenticates, then quits (for `check`).
    pub async fn check(&self) -> Result<(), SendError> {
        unimplemented!("reply::Mailer::check")
    }
}
