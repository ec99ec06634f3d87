//! Decide what a parsed message is: a new report, or noise that must never become an
//! advisory nor get a reply. Also decides whether a reply may be sent. Pure.

use crate::mail::{Address, Report};

/// Why a message is noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoiseReason {
    /// `Auto-Submitted` other than `no` (out-of-office, auto-generated).
    AutoSubmitted(String),
    /// A bounce or delivery status notification.
    Bounce,
    /// Mailing-list traffic or bulk mail (`List-Id`, `List-Unsubscribe`, `Precedence`).
    Bulk(String),
    /// Our own mail coming back.
    OwnMail,
}

impl std::fmt::Display for NoiseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseReason::AutoSubmitted(v) => write!(f, "auto-submitted ({v})"),
            NoiseReason::Bounce => f.write_str("bounce or delivery status notification"),
            NoiseReason::Bulk(why) => write!(f, "bulk or list mail ({why})"),
            NoiseReason::OwnMail => f.write_str("our own mail looping back"),
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A report to turn into an advisory.
    Report,
    /// Noise to file under the ignored folder, with the reason.
    Noise(NoiseReason),
}

/// What classification needs to know about us.
#[derive(Debug, Clone)]
pub struct Context {
    /// Our own addresses, lower-cased (the security@ address, the login).
    pub own_addresses: Vec<String>,
}

/// Why no reply is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuppressReason {
    /// Replies are switched off in the config.
    Disabled,
    /// The message is noise.
    Noise(NoiseReason),
    /// No usable address to reply to (null sender, missing From, `MAILER-DAEMON` and
    /// similar role addresses).
    NoReplyAddress(String),
    /// The reply would go to our own address.
    OwnAddress,
}

impl std::fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuppressReason::Disabled => f.write_str("replies are disabled"),
            SuppressReason::Noise(n) => write!(f, "{n}"),
            SuppressReason::NoReplyAddress(why) => write!(f, "no reply address ({why})"),
            SuppressReason::OwnAddress => f.write_str("reply would go to our own address"),
        }
    }
}

/// Whether to reply, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyDecision {
    /// Send the acknowledgement to this address (`Reply-To`, else `From`).
    Send(Address),
    /// Send nothing, for this reason.
    Suppress(SuppressReason),
}

/// Classifies a parsed message.
pub fn classify(report: &Report, ctx: &Context) -> Classification {
    let _ = (report, ctx);
    unimplemented!("classify::classify")
}

/// Decides whether an acknowledgement may be sent for a report, and to whom.
pub fn reply_decision(report: &Report, ctx: &Context) -> ReplyDecision {
    let _ = (report, ctx);
    unimplemented!("classify::reply_decision")
}
