//! Parse raw message bytes into a [`Report`]: the headers we act on, readable text, and
//! attachments, within hard limits. Pure: no I/O.

pub mod clean;
pub mod html;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

use self::clean::single_line;

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
    /// Whether it came encrypted (set by `pipeline::parse` when `[pgp]` is configured).
    pub encryption: crate::openpgp::Encryption,
    /// The sender's public key, armoured, when the message carries one (an `Autocrypt:`
    /// header or an attached key) and `[pgp]` is configured: replies are encrypted to it.
    pub sender_key: Option<String>,
}

/// Parses raw RFC 5322 bytes into a [`Report`], enforcing `limits`.
///
/// The size limit is checked before any parsing, so an oversized message costs nothing.
/// Part count and nesting depth count every MIME part, including those inside attached
/// messages; the top-level message is depth 0 and every multipart or attached message
/// adds one level for what it contains.
///
/// Never panics on any input.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<Report, ParseError> {
    if raw.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            size: raw.len(),
            limit: limits.max_message_bytes,
        });
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Malformed("the message is empty".into()));
    }
    // mail-parser is fuzzed and documented never to panic, but it contains debug
    // assertions; a report must become a quarantine entry, never a crash of the daemon.
    let parsed = std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .map_err(|_| ParseError::Malformed("the MIME structure could not be parsed".into()))?;
    let Some(msg) = parsed else {
        return Err(ParseError::Malformed(
            "no header fields found; the bytes are not an email message".into(),
        ));
    };
    if msg.parts.is_empty() {
        return Err(ParseError::Malformed("the message has no parts".into()));
    }

    let mut seen_parts = 0;
    check_structure(&msg, 0, 0, &mut seen_parts, limits)?;
    let attachments = collect_attachments(&msg, raw, limits)?;

    let message_id = msg.message_id().and_then(normalise_id);
    let report_id = ReportId(sha256_hex(match &message_id {
        Some(id) => id.as_bytes(),
        None => raw,
    }));

    let (text, text_from_html) = body_text(&msg);

    let root_headers = raw_headers(&msg, raw);
    let signals = signal_headers(&msg, &root_headers);
    let delivered_to = root_headers
        .iter()
        .filter(|(name, _)| {
            ["delivered-to", "x-original-to", "envelope-to"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
        })
        .flat_map(|(_, value)| value.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|a| clean_email(&a))
        .collect();

    let recipients = msg
        .all_to()
        .chain(msg.all_cc())
        .flat_map(|list| list.iter())
        .filter_map(convert_addr)
        .collect();

    Ok(Report {
        report_id,
        message_id,
        from: msg.from().and_then(|a| a.iter().find_map(convert_addr)),
        reply_to: msg.reply_to().and_then(|a| a.iter().find_map(convert_addr)),
        recipients,
        delivered_to,
        subject: msg
            .subject()
            .map(|s| {
                // Cut before cleaning too, so a megabyte of subject costs nothing more.
                let head = cut_bytes(s.to_owned(), 4 * MAX_SUBJECT_BYTES);
                cut_bytes(single_line(&head), MAX_SUBJECT_BYTES)
            })
            .unwrap_or_default(),
        date: msg
            .date()
            .filter(|d| d.is_valid())
            .and_then(|d| DateTime::<Utc>::from_timestamp(d.to_timestamp(), 0)),
        in_reply_to: id_list(msg.in_reply_to()),
        references: id_list(msg.references()),
        signals,
        text,
        text_from_html,
        attachments,
        raw_size: raw.len(),
        encryption: Default::default(),
        sender_key: None,
    })
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Normalises a message id: no angle brackets, no white space or control characters.
/// Returns `None` when nothing is left.
pub fn normalise_id(id: &str) -> Option<String> {
    if id.len() > 4 * MAX_ID_BYTES {
        return None;
    }
    let id: String = id
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    let id = id.trim_start_matches('<').trim_end_matches('>');
    (!id.is_empty() && id.len() <= MAX_ID_BYTES).then(|| id.to_owned())
}

/// Longest message id kept; longer ones are nobody's in good faith (RFC 5322 lines are
/// at most 998 characters, ids in practice under 100).
pub const MAX_ID_BYTES: usize = 250;
/// Most ids kept from one `References` or `In-Reply-To` header: the first (the thread's
/// start) and the newest, as RFC 5322 section 3.6.4 allows when shortening.
pub const MAX_REFERENCED_IDS: usize = 100;
/// Longest subject kept, in bytes; the rest of a longer one is cut.
pub const MAX_SUBJECT_BYTES: usize = 2048;

fn id_list(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    let mut ids: Vec<String> = ids.into_iter().filter_map(normalise_id).collect();
    if ids.len() > MAX_REFERENCED_IDS {
        let newest = ids.split_off(ids.len() - (MAX_REFERENCED_IDS - 1));
        ids.truncate(1);
        ids.extend(newest);
    }
    ids
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut_bytes(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A hash of what a message says (subject, text, attachments), independent of its
/// headers' form: two messages with one Message-ID and the same hash are copies of one
/// report; a different hash is a different report reusing the id.
pub fn content_hash(report: &Report) -> String {
    let mut h = Sha256::new();
    h.update(report.subject.as_bytes());
    h.update([0]);
    h.update(report.text.as_bytes());
    for a in &report.attachments {
        h.update([0]);
        h.update(a.sha256.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Walks the MIME tree, counting parts and levels, so limits hold for nested messages too.
fn check_structure(
    msg: &mail_parser::Message<'_>,
    part_id: usize,
    depth: usize,
    seen: &mut usize,
    limits: &Limits,
) -> Result<(), ParseError> {
    *seen += 1;
    if *seen > limits.max_parts {
        return Err(ParseError::TooManyParts {
            limit: limits.max_parts,
        });
    }
    if depth > limits.max_depth {
        return Err(ParseError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let Some(part) = msg.parts.get(part_id) else {
        return Ok(());
    };
    match &part.body {
        PartType::Multipart(children) => {
            for &child in children {
                // A part never contains itself; guard anyway so hostile input cannot loop.
                if child as usize != part_id {
                    check_structure(msg, child as usize, depth + 1, seen, limits)?;
                }
            }
        }
        PartType::Message(nested) if !nested.parts.is_empty() => {
            check_structure(nested, 0, depth + 1, seen, limits)?;
        }
        _ => {}
    }
    Ok(())
}

/// The report text: every text body part, HTML ones turned into text, in order.
fn body_text(msg: &mail_parser::Message<'_>) -> (String, bool) {
    let mut pieces = Vec::new();
    let mut from_html = false;
    for &id in &msg.text_body {
        match msg.parts.get(id as usize).map(|p| &p.body) {
            Some(PartType::Text(t)) => pieces.push(t.to_string()),
            Some(PartType::Html(h)) => {
                from_html = true;
                pieces.push(html::html_to_text(h));
            }
            _ => {}
        }
    }
    if pieces.is_empty() {
        // Some clients send only an HTML alternative that mail-parser did not copy over.
        for &id in &msg.html_body {
            if let Some(PartType::Html(h)) = msg.parts.get(id as usize).map(|p| &p.body) {
                from_html = true;
                pieces.push(html::html_to_text(h));
            }
        }
    }
    let text = pieces
        .iter()
        .map(|p| p.replace("\r\n", "\n").trim_end().to_owned())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    let from_html = from_html && !text.is_empty();
    (text, from_html)
}

/// MIME types other than `text/*` whose content is normally text.
const TEXTUAL_TYPES: &[&str] = &[
    "application/x-patch",
    "application/x-diff",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-sh",
    "application/x-shellscript",
    "application/x-python",
    "application/x-python-code",
    "application/x-yaml",
    "application/yaml",
    "application/toml",
    "application/x-log",
];

/// File extensions whose content is normally text, whatever MIME type the client chose.
const TEXTUAL_EXTENSIONS: &[&str] = &[
    "patch", "diff", "log", "txt", "md", "rst", "py", "pyi", "js", "ts", "json", "yaml", "yml",
    "toml", "cfg", "ini", "sh", "html", "htm", "xml", "csv", "rs", "c", "h", "go", "rb", "php",
    "java", "sql", "jinja", "j2", "tmpl", "http", "har",
];

fn collect_attachments(
    msg: &mail_parser::Message<'_>,
    raw: &[u8],
    limits: &Limits,
) -> Result<Vec<Attachment>, ParseError> {
    if msg.attachments.len() > limits.max_attachments {
        return Err(ParseError::TooManyAttachments {
            limit: limits.max_attachments,
        });
    }
    let mut out = Vec::with_capacity(msg.attachments.len());
    for &id in &msg.attachments {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        let content_type = part
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            })
            .map(|t| single_line(&t).to_ascii_lowercase());
        let filename = part
            .attachment_name()
            .map(single_line)
            .map(|n| clean::truncate_chars(&n, 255).to_owned())
            .filter(|n| !n.is_empty());
        let attachment = match &part.body {
            PartType::Multipart(_) => continue,
            PartType::Message(nested) => {
                let data = nested_message_bytes(part, nested, raw);
                let filename = filename.or_else(|| {
                    let subject = nested.subject().map(single_line).unwrap_or_default();
                    let subject = clean::truncate_chars(&subject, 200);
                    Some(if subject.is_empty() {
                        "attached-message.eml".to_owned()
                    } else {
                        format!("{subject}.eml")
                    })
                });
                Attachment {
                    filename,
                    content_type: "message/rfc822".into(),
                    sha256: sha256_hex(&data),
                    data,
                    is_text: false,
                }
            }
            PartType::Text(t) | PartType::Html(t) => {
                // MIME text travels with CRLF line breaks; keep it in local form (LF) so a
                // patch applies and a log reads as sent.
                let data = t.replace("\r\n", "\n").into_bytes();
                Attachment {
                    filename,
                    content_type: content_type.unwrap_or_else(|| "text/plain".into()),
                    sha256: sha256_hex(&data),
                    is_text: !data.contains(&0),
                    data,
                }
            }
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                let content_type =
                    content_type.unwrap_or_else(|| "application/octet-stream".into());
                let textual = TEXTUAL_TYPES.contains(&content_type.as_str())
                    || filename
                        .as_deref()
                        .and_then(|n| n.rsplit_once('.'))
                        .is_some_and(|(_, ext)| {
                            TEXTUAL_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
                        });
                let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
                let (data, is_text) = binary_data(b, textual, charset);
                Attachment {
                    filename,
                    content_type,
                    sha256: sha256_hex(&data),
                    data,
                    is_text,
                }
            }
        };
        out.push(attachment);
    }
    Ok(out)
}

/// Decodes a textual-looking binary part with its declared charset, or checks it is UTF-8.
fn binary_data(bytes: &[u8], textual: bool, charset: Option<&str>) -> (Vec<u8>, bool) {
    if !textual || bytes.contains(&0) {
        return (bytes.to_vec(), false);
    }
    let decoder = charset
        .filter(|c| !c.eq_ignore_ascii_case("utf-8") && !c.eq_ignore_ascii_case("us-ascii"))
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()));
    match decoder {
        Some(decode) => (decode(bytes).into_bytes(), true),
        None => (bytes.to_vec(), std::str::from_utf8(bytes).is_ok()),
    }
}

/// The bytes of an attached message as it was sent. mail-parser keeps the whole enclosing
/// buffer for an unencoded attached message, so cut it out of `raw` (the buffer the
/// top-level part offsets refer to); an encoded one was decoded into its own buffer.
fn nested_message_bytes(
    part: &mail_parser::MessagePart<'_>,
    nested: &mail_parser::Message<'_>,
    raw: &[u8],
) -> Vec<u8> {
    if part.encoding == mail_parser::Encoding::None
        && let Some(bytes) = raw.get(part.offset_body as usize..part.offset_end as usize)
    {
        return trim_trailing_newline(bytes).to_vec();
    }
    nested.raw_message.to_vec()
}

fn trim_trailing_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Top-level header names and their raw values (still folded), in order.
fn raw_headers<'a>(
    msg: &'a mail_parser::Message<'_>,
    raw: &'a [u8],
) -> Vec<(&'a str, Cow<'a, str>)> {
    msg.parts[0]
        .headers
        .iter()
        .filter_map(|h| {
            let bytes = raw.get(h.offset_start as usize..h.offset_end as usize)?;
            Some((h.name.as_str(), String::from_utf8_lossy(bytes)))
        })
        .collect()
}

fn signal_headers(
    msg: &mail_parser::Message<'_>,
    headers: &[(&str, Cow<'_, str>)],
) -> SignalHeaders {
    let first = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| single_line(v))
    };
    let return_path = first("return-path").map(|v| {
        let v = v.trim();
        let inner = v
            .strip_prefix('<')
            .map_or(v, |r| r.split('>').next().unwrap_or(""));
        inner.trim().to_owned()
    });
    let spam_score = first("x-spam-score")
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok())
        })
        .or_else(|| {
            first("x-spam-status").and_then(|v| {
                let lower = v.to_ascii_lowercase();
                let rest = &lower[lower.find("score=")? + 6..];
                let num: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+'))
                    .collect();
                num.parse::<f64>().ok()
            })
        })
        .filter(|s| s.is_finite());
    SignalHeaders {
        auto_submitted: first("auto-submitted").map(|v| v.to_lowercase()),
        precedence: first("precedence").map(|v| v.to_lowercase()),
        list_id: first("list-id"),
        list_unsubscribe: first("list-unsubscribe").is_some(),
        return_path,
        is_delivery_report: msg.root_part().is_content_type("multipart", "report"),
        spam_flag: first("x-spam-flag").map(|v| v.to_uppercase()),
        spam_score,
        authentication_results: headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("authentication-results"))
            .map(|(_, v)| single_line(v))
            .collect(),
        own_marker: first("x-advisory-bridge"),
    }
}

/// An address safe to carry: angle brackets gone, control characters turned into spaces
/// (which makes an injected address visibly unusable rather than silently different).
fn clean_email(raw: &str) -> Option<String> {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_control() || clean::is_bidi_control(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let s = s
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn convert_addr(a: &mail_parser::Addr<'_>) -> Option<Address> {
    let email = clean_email(a.address()?)?;
    let name = a.name().map(single_line).filter(|n| !n.is_empty());
    Some(Address { name, email })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 25 * 1024 * 1024,
        max_parts: 256,
        max_depth: 8,
        max_attachments: 64,
    };

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    fn parse_fixture(name: &str) -> Report {
        parse(&fixture(name), &LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn a_plain_report_gives_its_sender_subject_text_and_identity() {
        let r = parse_fixture("plain-werkzeug.eml");
        assert_eq!(
            r.message_id.as_deref(),
            Some("20261124091500.4242@mail.example.net")
        );
        assert_eq!(
            r.report_id.0,
            sha256_hex(b"20261124091500.4242@mail.example.net")
        );
        assert_eq!(r.report_id.0.len(), 64);
        let from = r.from.expect("From");
        assert_eq!(from.email, "alice@example.net");
        assert_eq!(from.name.as_deref(), Some("Alice Reporter"));
        assert_eq!(r.subject, "Path traversal in Werkzeug safe_join on Windows");
        assert_eq!(
            r.date.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-24T08:15:00+00:00")
        );
        assert!(
            r.text.starts_with("Hello,\n\nI found a path traversal"),
            "{}",
            r.text
        );
        assert!(!r.text.contains('\r'));
        assert!(!r.text_from_html);
        assert!(r.attachments.is_empty());
        assert_eq!(r.delivered_to, vec!["security@palletsprojects.com"]);
        assert_eq!(r.recipients[0].email, "security@palletsprojects.com");
        assert_eq!(r.signals.return_path.as_deref(), Some("alice@example.net"));
        assert_eq!(
            r.signals.authentication_results,
            vec![
                "mx.palletsprojects.com; dkim=pass header.d=example.net; spf=pass \
                 smtp.mailfrom=example.net; dmarc=pass header.from=example.net"
            ]
        );
        assert_eq!(r.raw_size, fixture("plain-werkzeug.eml").len());
    }

    #[test]
    fn the_same_message_id_gives_the_same_report_id_however_it_is_written() {
        let a = parse(
            b"Message-ID: <abc@x>\r\nSubject: a\r\n\r\nbody\r\n",
            &LIMITS,
        )
        .unwrap();
        let b = parse(
            b"Message-Id:   < abc@x >  \r\nSubject: b\r\n\r\nother\r\n",
            &LIMITS,
        )
        .unwrap();
        assert_eq!(a.report_id, b.report_id);
        assert_eq!(a.message_id.as_deref(), Some("abc@x"));
    }

    #[test]
    fn without_message_id_the_identity_is_the_hash_of_the_bytes() {
        let raw = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n";
        let r = parse(raw, &LIMITS).unwrap();
        assert_eq!(r.message_id, None);
        assert_eq!(r.report_id.0, sha256_hex(raw));
    }

    #[test]
    fn an_html_only_latin1_report_becomes_readable_text_with_links() {
        let r = parse_fixture("html-latin1.eml");
        assert!(r.text_from_html);
        assert!(
            r.text
                .contains("J'ai trouvé un problème de sécurité dans Flask"),
            "{}",
            r.text
        );
        assert!(
            r.text
                .contains("preuve de concept (https://example.org/poc/flask-session)"),
            "{}",
            r.text
        );
        assert!(r.text.contains("- version 3.0.0"), "{}", r.text);
        assert!(!r.text.contains("color: red"), "{}", r.text);
        assert!(!r.text.contains('<'), "{}", r.text);
        assert_eq!(r.subject, "Problème de sécurité dans la session");
        assert_eq!(r.from.unwrap().name.as_deref(), Some("José Müller"));
        assert_eq!(r.recipients[0].name.as_deref(), Some("Pallets Security"));
    }

    #[test]
    fn a_shift_jis_report_is_decoded() {
        let r = parse_fixture("shift-jis.eml");
        assert_eq!(r.subject, "Jinja2 のサンドボックス回避");
        assert_eq!(r.from.unwrap().name.as_deref(), Some("山田 太郎"));
        assert!(r.text.contains("jinja のサンドボックスで"), "{}", r.text);
        assert_eq!(
            r.date.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-25T01:30:00+00:00")
        );
    }

    #[test]
    fn a_patch_is_a_text_attachment_and_a_png_is_binary() {
        let r = parse_fixture("patch-and-binary.eml");
        assert!(
            r.text.starts_with("Hi, escape() does not escape"),
            "{}",
            r.text
        );
        assert_eq!(r.attachments.len(), 2);
        let patch = &r.attachments[0];
        assert_eq!(patch.filename.as_deref(), Some("fix-escape.patch"));
        assert_eq!(patch.content_type, "text/x-patch");
        assert!(patch.is_text);
        let patch_text = String::from_utf8(patch.data.clone()).unwrap();
        assert!(patch_text.starts_with("diff --git a/src/markupsafe"));
        assert!(
            !patch_text.contains('\r'),
            "MIME line breaks become local ones"
        );
        assert_eq!(patch.sha256, sha256_hex(&patch.data));
        let png = &r.attachments[1];
        assert_eq!(png.filename.as_deref(), Some("alert.png"));
        assert_eq!(png.content_type, "image/png");
        assert!(!png.is_text);
        assert!(png.data.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(png.data.len(), 70);
    }

    #[test]
    fn plus_addresses_are_kept_from_delivery_headers_and_recipients() {
        let r = parse_fixture("plus-address.eml");
        assert_eq!(
            r.delivered_to,
            vec![
                "security+werkzeug@palletsprojects.com",
                "security+werkzeug@palletsprojects.com"
            ]
        );
        assert_eq!(
            r.recipients[0].email,
            "security+werkzeug@palletsprojects.com"
        );
    }

    #[test]
    fn an_out_of_office_reply_carries_its_auto_submitted_signal() {
        let r = parse_fixture("auto-reply.eml");
        assert_eq!(r.signals.auto_submitted.as_deref(), Some("auto-replied"));
        assert_eq!(
            r.in_reply_to,
            vec!["advisory-bridge.0123@palletsprojects.com"]
        );
    }

    #[test]
    fn a_bounce_is_a_delivery_report_with_a_null_return_path() {
        let r = parse_fixture("bounce.eml");
        assert!(r.signals.is_delivery_report);
        assert_eq!(r.signals.return_path.as_deref(), Some(""));
        assert_eq!(
            r.from.unwrap().email,
            "MAILER-DAEMON@mx.palletsprojects.com"
        );
        let returned = r
            .attachments
            .iter()
            .find(|a| a.content_type == "message/rfc822")
            .expect("the returned message is an attachment");
        assert!(
            returned
                .data
                .starts_with(b"Message-ID: <advisory-bridge.abc@palletsprojects.com>")
        );
        assert_eq!(
            returned.filename.as_deref(),
            Some("Re: Report [GHSA-abcd-efgh-ijkl].eml")
        );
    }

    #[test]
    fn a_forwarded_message_is_kept_whole_as_an_eml_attachment() {
        let r = parse_fixture("forwarded-attachment.eml");
        assert_eq!(r.attachments.len(), 1);
        let eml = &r.attachments[0];
        assert_eq!(eml.content_type, "message/rfc822");
        assert_eq!(
            eml.filename.as_deref(),
            Some("Werkzeug debugger PIN bypass.eml")
        );
        let data = String::from_utf8(eml.data.clone()).unwrap();
        assert!(
            data.starts_with("Message-ID: <original-42@example.net>\r\n"),
            "{data}"
        );
        assert!(
            data.trim_end()
                .ends_with("computed from public information."),
            "{data}"
        );
        assert!(!data.contains("--fwd"), "{data}");
        assert_eq!(r.reply_to.unwrap().email, "heidi.work@example.net");
        assert_eq!(r.references, vec!["original-42@example.net"]);
        let emails: Vec<_> = r.recipients.iter().map(|a| a.email.as_str()).collect();
        assert_eq!(
            emails,
            ["security@palletsprojects.com", "grace@example.net"]
        );
        assert!(
            !r.text.contains("debugger PIN can be computed"),
            "{}",
            r.text
        );
    }

    #[test]
    fn hostile_headers_are_flattened_to_one_line_without_bidi_controls() {
        let r = parse_fixture("hostile.eml");
        assert!(
            !r.subject.contains(['\r', '\n', '\u{202E}']),
            "{:?}",
            r.subject
        );
        assert!(
            r.subject
                .starts_with("Flask bug Bcc: victim@example.org Injected body"),
            "{:?}",
            r.subject
        );
        let name = r.from.unwrap().name.unwrap();
        assert_eq!(name, "Mallory X-Injected: yes");
        let att = &r.attachments[0];
        assert_eq!(att.filename.as_deref(), Some("../../etc/evil|`name`.txt"));
        assert!(att.is_text);
        assert!(
            r.text.contains('\u{202E}'),
            "body text is kept as sent; render neutralises it"
        );
    }

    #[test]
    fn the_plain_alternative_is_preferred_and_inline_images_are_attachments() {
        let raw = "Message-ID: <alt@x>\r\nFrom: a@example.org\r\n\
            Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
            --alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain version.\r\n\
            --alt\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
            --rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML <b>version</b></p>\r\n\
            --rel\r\nContent-Type: image/png\r\nContent-ID: <img1>\r\n\
            Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--rel--\r\n--alt--\r\n";
        let r = parse(raw.as_bytes(), &LIMITS).unwrap();
        assert_eq!(r.text, "Plain version.");
        assert!(!r.text_from_html);
        assert_eq!(r.attachments.len(), 1, "{:?}", r.attachments);
        assert_eq!(r.attachments[0].content_type, "image/png");
        assert_eq!(r.attachments[0].data, b"\x89PNG\r\n\x1a\n");
        assert_eq!(r.attachments[0].filename, None);
    }

    #[test]
    fn a_base64_attached_message_is_kept_decoded() {
        let inner = "Subject: inner\r\nFrom: b@example.org\r\n\r\nInner body.\r\n";
        // base64 of `inner`, as a mail client would send it.
        let encoded =
            "U3ViamVjdDogaW5uZXINCkZyb206IGJAZXhhbXBsZS5vcmcNCg0KSW5uZXIgYm9keS4NCg==\r\n";
        let raw = format!(
            "Message-ID: <b64@x>\r\nFrom: a@example.org\r\n\
             Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n\
             --m\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
             --m\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
             {encoded}--m--\r\n"
        );
        let r = parse(raw.as_bytes(), &LIMITS).unwrap();
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].content_type, "message/rfc822");
        assert_eq!(r.attachments[0].filename.as_deref(), Some("inner.eml"));
        assert_eq!(String::from_utf8_lossy(&r.attachments[0].data), inner);
    }

    #[test]
    fn a_message_over_the_size_limit_is_refused_before_parsing() {
        let limits = Limits {
            max_message_bytes: 10,
            ..LIMITS
        };
        assert_eq!(
            parse(b"Subject: 0123456789\r\n\r\n", &limits),
            Err(ParseError::TooLarge {
                size: 23,
                limit: 10
            })
        );
    }

    fn nested_multiparts(levels: usize) -> Vec<u8> {
        let mut m = String::from("Message-ID: <deep@x>\r\nFrom: a@example.org\r\n");
        for i in 0..levels {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        m.push_str("Content-Type: text/plain\r\n\r\nhello\r\n");
        for i in (0..levels).rev() {
            m.push_str(&format!("--b{i}--\r\n"));
        }
        m.into_bytes()
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let limits = Limits {
            max_depth: 3,
            ..LIMITS
        };
        assert!(parse(&nested_multiparts(3), &limits).is_ok());
        assert_eq!(
            parse(&nested_multiparts(4), &limits),
            Err(ParseError::TooDeep { limit: 3 })
        );
    }

    #[test]
    fn nested_attached_messages_count_towards_depth() {
        let limits = Limits {
            max_depth: 1,
            ..LIMITS
        };
        assert_eq!(
            parse(&fixture("forwarded-attachment.eml"), &limits),
            Err(ParseError::TooDeep { limit: 1 })
        );
        let limits = Limits {
            max_depth: 2,
            ..LIMITS
        };
        assert!(parse(&fixture("forwarded-attachment.eml"), &limits).is_ok());
    }

    #[test]
    fn too_many_parts_and_attachments_are_refused() {
        let small = Limits {
            max_parts: 3,
            ..LIMITS
        };
        assert_eq!(
            parse(&fixture("patch-and-binary.eml"), &small),
            Err(ParseError::TooManyParts { limit: 3 })
        );
        let few = Limits {
            max_attachments: 1,
            ..LIMITS
        };
        assert_eq!(
            parse(&fixture("patch-and-binary.eml"), &few),
            Err(ParseError::TooManyAttachments { limit: 1 })
        );
    }

    #[test]
    fn a_deep_multipart_bomb_fails_cleanly() {
        let r = parse(&nested_multiparts(5000), &LIMITS);
        assert_eq!(r, Err(ParseError::TooDeep { limit: 8 }));
    }

    #[test]
    fn bytes_that_are_not_mail_are_malformed_not_a_panic() {
        assert!(matches!(parse(b"", &LIMITS), Err(ParseError::Malformed(_))));
        assert!(matches!(
            parse(b"\r\n\r\n", &LIMITS),
            Err(ParseError::Malformed(_))
        ));
        // Arbitrary garbage must give an error or a report, never a panic.
        let mut seed: u32 = 12345;
        for len in [1usize, 7, 64, 500, 4000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = parse(&bytes, &LIMITS);
        }
    }

    #[test]
    fn truncated_fixtures_never_panic() {
        for name in [
            "patch-and-binary.eml",
            "bounce.eml",
            "forwarded-attachment.eml",
            "hostile.eml",
        ] {
            let raw = fixture(name);
            for cut in (0..raw.len()).step_by(17) {
                let _ = parse(&raw[..cut], &LIMITS);
            }
        }
    }

    #[test]
    fn spam_and_list_signals_are_read() {
        let raw = b"Message-ID: <s@x>\r\nFrom: a@example.org\r\nX-Spam-Flag: yes\r\n\
            X-Spam-Status: Yes, score=7.5 required=5.0\r\nList-Id: <dev.example.org>\r\n\
            List-Unsubscribe: <mailto:u@example.org>\r\nPrecedence: Bulk\r\n\
            X-Advisory-Bridge: ack\r\n\r\nhi\r\n";
        let r = parse(raw, &LIMITS).unwrap();
        assert_eq!(r.signals.spam_flag.as_deref(), Some("YES"));
        assert_eq!(r.signals.spam_score, Some(7.5));
        assert_eq!(r.signals.list_id.as_deref(), Some("<dev.example.org>"));
        assert!(r.signals.list_unsubscribe);
        assert_eq!(r.signals.precedence.as_deref(), Some("bulk"));
        assert_eq!(r.signals.own_marker.as_deref(), Some("ack"));
    }

    #[test]
    fn an_invalid_date_is_absent() {
        let r = parse(
            b"Date: not a date\r\nFrom: a@example.org\r\n\r\nhi\r\n",
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.date, None);
    }
}
