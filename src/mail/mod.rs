//! Parse raw message bytes into a [`Report`]: the headers we act on, readable text, and
//! attachments, within hard limits. Pure: no I/O.

use chrono::{DateTime, Utc};

/// Bounds a message must stay within; see `[limits]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most MIME parts.
    pub max_parts: usize,
    /// Deepest nesting of multiparts and attached messages.
    pub max_depth: usize,
    /// Most attachments.
    pub max_attachments: usize,
}

impl From<&crate::config::LimitsConfig> for Limits {
    fn from(c: &crate::config::LimitsConfig) -> Self {
        Limits {
            max_message_bytes: c.max_message_bytes,
            max_parts: c.max_parts,
            max_depth: c.max_depth,
            max_attachments: c.max_attachments,
        }
    }
}

/// Why a message could not be turned into a report. Always permanent: the same bytes
/// will fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message is larger than `limits.max_message_bytes`.
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More MIME parts than `limits.max_parts`.
    #[error("message has more than {limit} MIME parts")]
    TooManyParts {
        /// The configured limit.
        limit: usize,
    },
    /// Nested deeper than `limits.max_depth`.
    #[error("message nests multiparts or attached messages deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// More attachments than `limits.max_attachments`.
    #[error("message has more than {limit} attachments")]
    TooManyAttachments {
        /// The configured limit.
        limit: usize,
    },
    /// The bytes are not a message at all.
    #[error("not a parseable email message: {0}")]
    Malformed(String),
}

impl crate::failure::Classify for ParseError {
    fn kind(&self) -> crate::failure::FailureKind {
        crate::failure::FailureKind::Permanent
    }
}

/// A stable identity for one report: lowercase hex of SHA-256 over the normalised
/// `Message-ID`, or over the raw bytes when there is none. Safe to show publicly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub String);

impl std::fmt::Display for ReportId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox: optional display name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Display name, decoded, single line; `None` when absent or empty.
    pub name: Option<String>,
    /// The address, as given (no CR/LF, no angle brackets).
    pub email: String,
}

/// The headers that classification and reply suppression look at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalHeaders {
    /// `Auto-Submitted` value, lower-cased (e.g. `auto-replied`).
    pub auto_submitted: Option<String>,
    /// `Precedence` value, lower-cased (e.g. `bulk`).
    pub precedence: Option<String>,
    /// `List-Id` present.
    pub list_id: Option<String>,
    /// `List-Unsubscribe` present.
    pub list_unsubscribe: bool,
    /// `Return-Path` as delivered: `Some("")` for the null sender `<>`.
    pub return_path: Option<String>,
    /// Top-level `multipart/report` (delivery status notifications and the like).
    pub is_delivery_report: bool,
    /// `X-Spam-Flag` value, upper-cased.
    pub spam_flag: Option<String>,
    /// `X-Spam-Score` (or `X-Spam-Status` score=) value when numeric.
    pub spam_score: Option<f64>,
    /// Every `Authentication-Results` header, unfolded, in order.
    pub authentication_results: Vec<String>,
    /// `X-Advisory-Bridge` header our own mail carries, when present.
    pub own_marker: Option<String>,
}

/// One attachment, as found in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name given by the sender, decoded, with control characters removed; shown
    /// to maintainers only after escaping, never used as a path.
    pub filename: Option<String>,
    /// MIME type, lower-cased, e.g. `text/x-diff`.
    pub content_type: String,
    /// Decoded content.
    pub data: Vec<u8>,
    /// Lowercase hex SHA-256 of `data`.
    pub sha256: String,
    /// True when `data` is text (by type or by content) and valid UTF-8 after decoding.
    pub is_text: bool,
}

/// A parsed message: everything later stages need, nothing they must not see.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Identity used for idempotency and the hidden marker.
    pub report_id: ReportId,
    /// Normalised `Message-ID` without angle brackets, if the message had one.
    pub message_id: Option<String>,
    /// `From`.
    pub from: Option<Address>,
    /// `Reply-To` (first address).
    pub reply_to: Option<Address>,
    /// `To` and `Cc` addresses.
    pub recipients: Vec<Address>,
    /// `Delivered-To`, `X-Original-To` and `Envelope-To` addresses, in header order.
    pub delivered_to: Vec<String>,
    /// Decoded subject, single line (CR/LF and other controls removed); may be empty.
    pub subject: String,
    /// `Date`, if present and valid.
    pub date: Option<DateTime<Utc>>,
    /// `In-Reply-To` message ids, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// `References` message ids, without angle brackets.
    pub references: Vec<String>,
    /// Headers that decide noise and reply suppression.
    pub signals: SignalHeaders,
    /// The report text: the plain-text body, or the HTML body turned into text.
    pub text: String,
    /// True when `text` was made from an HTML body.
    pub text_from_html: bool,
    /// Attachments in message order (including attached messages as `message/rfc822`).
    pub attachments: Vec<Attachment>,
    /// Size of the raw message in bytes.
    pub raw_size: usize,
}

/// Parses raw RFC 5322 bytes into a [`Report`], enforcing `limits`.
///
/// Never panics on any input.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<Report, ParseError> {
    let _ = (raw, limits);
    unimplemented!("mail::parse")
}
