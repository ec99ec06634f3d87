//! The only code that talks IMAP: connect over rustls, select the mailbox, list and fetch
//! messages, wait for new ones (IDLE or polling), and file finished ones away.

use std::time::Duration;

use crate::config::{Secret, TlsMode};
use crate::failure::{Classify, FailureKind};

/// A failed IMAP operation. Connection trouble is transient; a refused login or a
/// missing mailbox is permanent for the session but the daemon keeps retrying.
#[derive(Debug, thiserror::Error)]
#[error("IMAP {operation}: {message}")]
pub struct ImapError {
    /// What we were doing, e.g. `login`.
    pub operation: &'static str,
    /// What the server or the network said; never contains the password.
    pub message: String,
    /// Retry or not.
    pub kind: FailureKind,
}

impl Classify for ImapError {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

/// Settings for [`ImapSource::connect`].
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA file.
    pub ca_file: Option<std::path::PathBuf>,
    /// Login.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Timeout for one command.
    pub timeout: Duration,
}

/// The selected mailbox's identity: a change of `uidvalidity` means old UIDs are void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxState {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT, when the server said it.
    pub uidnext: Option<u32>,
    /// Number of messages.
    pub exists: u32,
}

/// One fetched message.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its UID.
    pub uid: u32,
    /// Its full raw bytes (fetched with `BODY.PEEK[]`, so `\Seen` is not set).
    pub raw: Vec<u8>,
    /// The server's `INTERNALDATE`, when given.
    pub internal_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// What ended a wait for new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server announced a change (IDLE) or a poll is due.
    Changed,
    /// The timeout passed without news.
    Timeout,
}

/// A logged-in IMAP session with the watched mailbox selected.
pub struct ImapSource {
    _private: (),
}

impl ImapSource {
    /// Connects, (STARTTLS,) logs in, creates `folders` that are missing, and selects
    /// `mailbox`.
    pub async fn connect(
        settings: &ImapSettings,
        mailbox: &str,
        folders: &[&str],
    ) -> Result<(ImapSource, MailboxState), ImapError> {
        let _ = (settings, mailbox, folders);
        unimplemented!("source::ImapSource::connect")
    }

    /// The UIDs of all messages in the selected mailbox, ascending.
    pub async fn list_uids(&mut self) -> Result<Vec<u32>, ImapError> {
        unimplemented!("source::ImapSource::list_uids")
    }

    /// Fetches one message by UID without marking it seen; `None` if it is gone, or if
    /// it is larger than `max_bytes` (checked with `RFC822.SIZE` before the body is read).
    pub async fn fetch(&mut self, uid: u32, max_bytes: usize) -> Result<FetchOutcome, ImapError> {
        let _ = (uid, max_bytes);
        unimplemented!("source::ImapSource::fetch")
    }

    /// Moves a message to `folder` (UID MOVE, or COPY + \Deleted + UID EXPUNGE).
    pub async fn move_to(&mut self, uid: u32, folder: &str) -> Result<(), ImapError> {
        let _ = (uid, folder);
        unimplemented!("source::ImapSource::move_to")
    }

    /// Waits for new mail: IDLE (re-issued before 29 minutes) when offered and `idle` is
    /// true, else sleeps `poll_interval`; returns after `max_wait` at the latest.
    pub async fn wait(
        &mut self,
        idle: bool,
        poll_interval: Duration,
        max_wait: Duration,
    ) -> Result<Wake, ImapError> {
        let _ = (idle, poll_interval, max_wait);
        unimplemented!("source::ImapSource::wait")
    }

    /// Logs out politely.
    pub async fn logout(self) -> Result<(), ImapError> {
        unimplemented!("source::ImapSource::logout")
    }
}

/// The result of [`ImapSource::fetch`].
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The message.
    Message(Fetched),
    /// Gone (another client moved or expunged it).
    Gone,
    /// Larger than the limit; the body was not read.
    TooLarge {
        /// Its `RFC822.SIZE`.
        size: usize,
    },
}
