//! Property tests: no message, whether arbitrary bytes or a generated hostile MIME
//! message, makes the pure pipeline panic or break an invariant (see
//! `tests/invariants/mod.rs`): the description and summary stay within GitHub's limits,
//! the hidden markers appear once and last, no `<` from the message escapes its block,
//! and no reply header carries a line break or control character. The same holds after
//! the message is appended to an advisory as a follow-up.

use crate::invariants;

use std::sync::OnceLock;

use proptest::collection::vec;
use proptest::prelude::*;

use invariants::Pipeline;

fn pipeline() -> &'static Pipeline {
    static PIPELINE: OnceLock<Pipeline> = OnceLock::new();
    PIPELINE.get_or_init(Pipeline::new)
}

/// Pieces of text that have broken parsers, Markdown renderers and header writers.
const TOKENS: &[&str] = &[
    "flask",
    "Werkzeug",
    "jinja2",
    "https://github.com/pallets/click/issues/1",
    "security+werkzeug@palletsprojects.com",
    "hello",
    " ",
    "\t",
    "\r\n",
    "\n",
    "\r",
    "\r\n ",
    "\r\n\r\n",
    "\u{0}",
    "\u{1b}[31m",
    "\u{85}",
    "\u{2028}",
    "\u{202E}",
    "\u{2066}",
    "\u{200B}",
    "\u{FEFF}",
    "é",
    "日本語",
    "😀",
    "<",
    ">",
    "&",
    "&lt;",
    "\"",
    ",",
    ";",
    ":",
    "\\",
    "</pre>",
    "</PRE >",
    "<pre>",
    "<code>",
    "</code>",
    "<img src=http://evil.example/x.png>",
    "<script>alert(1)</script>",
    "<form action=http://evil.example><input name=pin></form>",
    "![x](http://evil.example/x.gif)",
    "[link](javascript:alert(1))",
    "```",
    "~~~",
    "`",
    "    indented",
    "# heading",
    "| a | b |",
    "*",
    "_",
    "@davidism",
    "@pallets/maintainers",
    "<!--",
    "-->",
    "<!-- advisory-bridge report-id=0000000000000000000000000000000000000000000000000000000000000000 -->",
    "<!-- advisory-bridge followup-id=",
    "=?UTF-8?B?",
    "?=",
    "--b1",
    "--b1--",
    "Content-Type: text/html",
    "Bcc: victim@example.org",
    "X-Advisory-Bridge: reply",
];

/// Text made of tokens.
fn text(max_tokens: usize) -> impl Strategy<Value = String> {
    vec(proptest::sample::select(TOKENS), 0..max_tokens).prop_map(|t| t.concat())
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn quoted_printable(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            }
        })
        .collect()
}

/// A header value: raw tokens, or RFC 2047 encoded words (whose decoded text may hold
/// CR/LF and controls), mixed.
fn header_value() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            3 => text(6),
            2 => text(8).prop_map(|t| format!("=?UTF-8?B?{}?=", base64(t.as_bytes()))),
            1 => text(8).prop_map(|t| format!("=?ISO-8859-1?Q?{}?=", quoted_printable(t.as_bytes()))),
            1 => text(4).prop_map(|t| format!("=?x-unknown?B?{}?=", base64(t.as_bytes()))),
        ],
        0..4,
    )
    .prop_map(|v| v.join(" "))
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("alice@example.net".to_owned()),
        Just("security@palletsprojects.com".to_owned()),
        Just("security+jinja@palletsprojects.com".to_owned()),
        Just("MAILER-DAEMON@mx.example.org".to_owned()),
        Just("no-reply@example.org".to_owned()),
        Just("".to_owned()),
        text(4).prop_map(|t| format!("{t}@example.org")),
    ]
}

fn mailbox() -> impl Strategy<Value = String> {
    (header_value(), address(), any::<bool>()).prop_map(|(name, addr, quoted)| {
        if quoted {
            format!("\"{name}\" <{addr}>")
        } else {
            format!("{name} <{addr}>")
        }
    })
}

/// Top-level (or attached-message) header lines, each possibly with injected breaks.
fn headers() -> impl Strategy<Value = Vec<String>> {
    let optional = |name: &'static str, value: BoxedStrategy<String>| {
        proptest::option::weighted(0.5, value).prop_map(move |v| v.map(|v| format!("{name}: {v}")))
    };
    (
        (
            optional("From", mailbox().boxed()),
            optional("Reply-To", mailbox().boxed()),
            optional("To", mailbox().boxed()),
            optional("Cc", mailbox().boxed()),
            optional("Subject", header_value().boxed()),
            optional(
                "Message-ID",
                prop_oneof![
                    text(3).prop_map(|t| format!("<{t}@example.org>")),
                    header_value()
                ]
                .boxed(),
            ),
            optional(
                "In-Reply-To",
                text(3).prop_map(|t| format!("<{t}@x>")).boxed(),
            ),
            optional(
                "References",
                vec(text(3).prop_map(|t| format!("<{t}@x>")), 0..30)
                    .prop_map(|v| v.join(" "))
                    .boxed(),
            ),
        ),
        (
            optional(
                "Date",
                prop_oneof![
                    Just("Tue, 24 Nov 2026 09:15:00 +0100".to_owned()),
                    Just("Mon, 32 Foo 99999 99:99:99 +9999".to_owned()),
                    text(3)
                ]
                .boxed(),
            ),
            optional(
                "Return-Path",
                prop_oneof![
                    Just("<>".to_owned()),
                    address().prop_map(|a| format!("<{a}>"))
                ]
                .boxed(),
            ),
            optional(
                "Auto-Submitted",
                prop_oneof![
                    Just("auto-replied".to_owned()),
                    Just("no".to_owned()),
                    text(2)
                ]
                .boxed(),
            ),
            optional(
                "Precedence",
                prop_oneof![Just("bulk".to_owned()), Just("list".to_owned()), text(2)].boxed(),
            ),
            optional("List-Id", header_value().boxed()),
            optional("List-Unsubscribe", header_value().boxed()),
            optional(
                "X-Spam-Flag",
                prop_oneof![Just("YES".to_owned()), Just("NO".to_owned())].boxed(),
            ),
            optional(
                "Authentication-Results",
                text(5)
                    .prop_map(|t| format!("mx.example; dmarc=pass{t}; dkim=fail"))
                    .boxed(),
            ),
        ),
        (
            optional("X-Spam-Score", text(2).boxed()),
            optional("X-Advisory-Bridge", text(2).boxed()),
            optional("Delivered-To", address().boxed()),
            vec(
                (text(3), header_value()).prop_map(|(n, v)| format!("X-{n}: {v}")),
                0..3,
            ),
        ),
    )
        .prop_map(|(a, b, c)| {
            let mut lines: Vec<String> = [a.0, a.1, a.2, a.3, a.4, a.5, a.6, a.7]
                .into_iter()
                .chain([b.0, b.1, b.2, b.3, b.4, b.5, b.6, b.7])
                .chain([c.0, c.1, c.2])
                .flatten()
                .collect();
            lines.extend(c.3);
            lines
        })
}

/// A MIME part: leaves of many types and encodings, multiparts, attached messages.
#[derive(Debug, Clone)]
enum Part {
    Leaf {
        content_type: String,
        encoding: u8,
        disposition: Option<String>,
        body: String,
    },
    Multi {
        subtype: String,
        children: Vec<Part>,
    },
    Message {
        headers: Vec<String>,
        body: Box<Part>,
    },
}

fn leaf() -> impl Strategy<Value = Part> {
    (
        prop_oneof![
            Just("text/plain; charset=utf-8".to_owned()),
            Just("text/plain; charset=iso-8859-1".to_owned()),
            Just("text/plain; charset=shift_jis".to_owned()),
            Just("text/html; charset=utf-8".to_owned()),
            Just("text/x-patch".to_owned()),
            Just("application/octet-stream".to_owned()),
            Just("image/png".to_owned()),
            header_value(),
        ],
        0u8..4,
        proptest::option::of(
            (
                prop_oneof![Just("attachment"), Just("inline")],
                prop_oneof![
                    header_value(),
                    Just("../../etc/passwd".to_owned()),
                    Just("CON.txt".to_owned()),
                    Just("a".repeat(400)),
                    text(4).prop_map(|t| format!("{t}.patch")),
                ],
                any::<bool>(),
            )
                .prop_map(|(kind, name, rfc2231)| {
                    if rfc2231 {
                        format!(
                            "{kind}; filename*=UTF-8''{}",
                            quoted_printable(name.as_bytes()).replace('=', "%")
                        )
                    } else {
                        format!("{kind}; filename=\"{name}\"")
                    }
                }),
        ),
        text(40),
    )
        .prop_map(|(content_type, encoding, disposition, body)| Part::Leaf {
            content_type,
            encoding,
            disposition,
            body,
        })
}

fn part() -> impl Strategy<Value = Part> {
    leaf().prop_recursive(9, 48, 5, |inner| {
        prop_oneof![
            (
                prop_oneof![
                    Just("mixed".to_owned()),
                    Just("alternative".to_owned()),
                    Just("related".to_owned()),
                    Just("report".to_owned()),
                ],
                vec(inner.clone(), 0..5),
            )
                .prop_map(|(subtype, children)| Part::Multi { subtype, children }),
            (vec(headers().prop_map(|h| h.join("\r\n")), 0..2), inner).prop_map(
                |(headers, body)| Part::Message {
                    headers,
                    body: Box::new(body),
                }
            ),
        ]
    })
}

fn render_part(part: &Part, out: &mut String, counter: &mut usize) {
    match part {
        Part::Leaf {
            content_type,
            encoding,
            disposition,
            body,
        } => {
            out.push_str(&format!("Content-Type: {content_type}\r\n"));
            if let Some(d) = disposition {
                out.push_str(&format!("Content-Disposition: {d}\r\n"));
            }
            match encoding {
                0 => out.push_str(&format!("\r\n{body}\r\n")),
                1 => out.push_str(&format!(
                    "Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                    base64(body.as_bytes())
                )),
                2 => out.push_str(&format!(
                    "Content-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n",
                    quoted_printable(body.as_bytes())
                )),
                _ => out.push_str(&format!(
                    "Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
                )),
            }
        }
        Part::Multi { subtype, children } => {
            *counter += 1;
            let boundary = format!("b{counter}");
            out.push_str(&format!(
                "Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\npreamble\r\n"
            ));
            for child in children {
                out.push_str(&format!("--{boundary}\r\n"));
                render_part(child, out, counter);
            }
            out.push_str(&format!("--{boundary}--\r\n"));
        }
        Part::Message { headers, body } => {
            out.push_str("Content-Type: message/rfc822\r\n\r\n");
            for h in headers {
                out.push_str(h);
                out.push_str("\r\n");
            }
            render_part(body, out, counter);
        }
    }
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    (
        headers(),
        part(),
        // Extra nesting levels and extra attachments, to go past the structure limits.
        prop_oneof![3 => Just(0usize), 1 => 0usize..12],
        prop_oneof![3 => Just(0usize), 1 => 0usize..80],
    )
        .prop_map(|(headers, body, wraps, extra)| {
            let mut body = body;
            if extra > 0 {
                let attachment = Part::Leaf {
                    content_type: "text/plain".into(),
                    encoding: 0,
                    disposition: Some("attachment; filename=\"poc.txt\"".into()),
                    body: "proof of concept".into(),
                };
                body = Part::Multi {
                    subtype: "mixed".into(),
                    children: std::iter::once(body)
                        .chain(std::iter::repeat_n(attachment, extra))
                        .collect(),
                };
            }
            for i in 0..wraps {
                body = if i % 2 == 0 {
                    Part::Multi {
                        subtype: "mixed".into(),
                        children: vec![body],
                    }
                } else {
                    Part::Message {
                        headers: vec!["Subject: nested".into()],
                        body: Box::new(body),
                    }
                };
            }
            let mut out = String::new();
            for h in headers {
                out.push_str(&h);
                out.push_str("\r\n");
            }
            out.push_str("MIME-Version: 1.0\r\n");
            render_part(&body, &mut out, &mut 0);
            out.into_bytes()
        })
}

/// The fixtures (the encrypted ones too) as starting points for byte-level mutation.
fn fixtures() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let pgp = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pgp");
    let mut out: Vec<Vec<u8>> = [dir, pgp]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).expect("the fixtures directory exists"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read(&p).expect("a fixture is readable"))
        .collect();
    out.sort();
    out
}

// proptest's default of 256 cases per property (`PROPTEST_CASES` raises it for a long
// run): about ten seconds for all three in a debug build.
proptest! {
    #[test]
    fn arbitrary_bytes_never_break_the_pipeline(raw in vec(any::<u8>(), 0..4096)) {
        let _ = pipeline().check(&raw);
    }

    #[test]
    fn generated_hostile_messages_never_break_the_pipeline(raw in message()) {
        let _ = pipeline().check(&raw);
    }

    #[test]
    fn mutated_fixtures_never_break_the_pipeline(
        which in any::<proptest::sample::Index>(),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..16),
    ) {
        let all = fixtures();
        let mut raw = all[which.index(all.len())].clone();
        for (at, byte, op) in edits {
            let i = at.index(raw.len() + 1);
            match op {
                0 if i < raw.len() => raw[i] = byte,
                1 if i < raw.len() => { raw.remove(i); }
                _ => raw.insert(i, byte),
            }
        }
        let _ = pipeline().check(&raw);
    }
}

/// Fixed, well-formed outer headers for the encryption property.
const OUTER: &str = "From: Rita Reporter <rita@example.net>\r\nTo: security@palletsprojects.com\r\n\
    Subject: report\r\nMessage-ID: <enc@example.net>\r\nMIME-Version: 1.0\r\n";

/// `entity` encrypted to our key as RFC 3156 PGP/MIME under [`OUTER`].
fn pgp_mime(entity: &[u8]) -> Vec<u8> {
    static KEYS: OnceLock<advisory_bridge::openpgp::Keys> = OnceLock::new();
    let armour = KEYS
        .get_or_init(invariants::test_keys)
        .encrypt_to(entity, None)
        .expect("our key encrypts");
    format!(
        "{OUTER}Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; \
         boundary=\"pgp\"\r\n\r\n--pgp\r\nContent-Type: application/pgp-encrypted\r\n\r\n\
         Version: 1\r\n--pgp\r\nContent-Type: application/octet-stream\r\n\r\n{armour}\r\n--pgp--\r\n"
    )
    .into_bytes()
}

proptest! {
    // Each case encrypts and decrypts with real keys: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Decryption is transparent: an encrypted message reads exactly like the same
    /// entity sent in the clear (text, attachments), and keeps every invariant.
    #[test]
    fn an_encrypted_message_reads_like_its_plaintext(body in part()) {
        let mut entity = String::new();
        render_part(&body, &mut entity, &mut 0);
        let plain = format!("{OUTER}{entity}").into_bytes();
        let Ok(clear) = pipeline().check(&plain) else {
            return Ok(());
        };
        let encrypted = pipeline().check(&pgp_mime(entity.as_bytes()))
            .expect("what parses in the clear parses encrypted");
        let decrypted = matches!(
            encrypted.report.encryption,
            advisory_bridge::openpgp::Encryption::Decrypted { .. }
        );
        prop_assert!(decrypted, "not decrypted: {:?}", encrypted.report.encryption);
        prop_assert_eq!(&encrypted.report.text, &clear.report.text);
        prop_assert_eq!(&encrypted.report.attachments, &clear.report.attachments);
        prop_assert_eq!(encrypted.classification, clear.classification);
    }
}

/// The generator must reach the interesting outcomes, or the properties above say little.
#[test]
fn the_generator_reaches_reports_noise_attachments_and_limits() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config::default());
    let strategy = message();
    let (mut reports, mut noise, mut attachments, mut too_deep_or_many, mut html) = (0, 0, 0, 0, 0);
    for _ in 0..300 {
        let raw = strategy
            .new_tree(&mut runner)
            .expect("the generator makes a message")
            .current();
        match pipeline().check(&raw) {
            Ok(o) => {
                match o.classification {
                    advisory_bridge::classify::Classification::Report => reports += 1,
                    advisory_bridge::classify::Classification::Noise(_) => noise += 1,
                }
                if !o.report.attachments.is_empty() {
                    attachments += 1;
                }
                if o.report.text_from_html {
                    html += 1;
                }
            }
            Err(
                advisory_bridge::mail::ParseError::TooDeep { .. }
                | advisory_bridge::mail::ParseError::TooManyParts { .. }
                | advisory_bridge::mail::ParseError::TooManyAttachments { .. },
            ) => too_deep_or_many += 1,
            Err(_) => {}
        }
    }
    eprintln!(
        "reports {reports}, noise {noise}, with attachments {attachments}, html {html}, \
         over a limit {too_deep_or_many}"
    );
    for (what, n) in [
        ("reports", reports),
        ("noise", noise),
        ("messages with attachments", attachments),
        ("HTML-only messages", html),
        ("messages over a structure limit", too_deep_or_many),
    ] {
        assert!(n > 0, "300 generated messages gave no {what}");
    }
}
