//! The one distinction retry logic needs: may this step succeed if we try again later?

use std::time::Duration;

/// Whether a failed step should be retried, and when at the earliest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying: network trouble, 5xx, 429, SMTP 4xx, IMAP disconnects.
    /// `retry_after` is the delay the other side asked for, if it said one.
    Transient {
        /// The earliest retry the remote side asked for (`Retry-After`, rate-limit reset).
        retry_after: Option<Duration>,
    },
    /// Our own configuration is wrong (SMTP login refused): retrying the same message
    /// cannot help until ops fix it, but neither is it the message's fault. Work of
    /// that kind pauses, the message waits, and a later probe resumes it by itself.
    Misconfigured,
    /// Retrying cannot help (GitHub 422, SMTP 5xx for the recipient, unparseable mail):
    /// record the reason and quarantine.
    Permanent,
}

impl FailureKind {
    /// A transient failure with no advice from the remote side on when to retry.
    pub const TRANSIENT: FailureKind = FailureKind::Transient { retry_after: None };

    /// True when the failure is worth retrying.
    pub fn is_transient(self) -> bool {
        matches!(self, FailureKind::Transient { .. })
    }
}

/// Implemented by every error that crosses a stage boundary, so the daemon decides
/// retry-or-quarantine in one place.
pub trait Classify {
    /// How the daemon should treat this failure.
    fn kind(&self) -> FailureKind;
}
