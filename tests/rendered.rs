//! Every description and follow-up the pure pipeline writes for the fixtures, rendered by
//! GitHub's own Markdown renderer (`cmark-gfm` with the table, autolink and strikethrough
//! extensions, raw HTML passed through as GitHub's sanitiser receives it) and checked on
//! the HTML: no link, image or raw HTML from the report, no mention or reference outside
//! code, only the few tags we write ourselves.

use crate::invariants;

use std::io::Write;
use std::process::{Command, Stdio};

use invariants::Pipeline;

/// The tags GFM makes of Markdown we write, and the HTML we write ourselves.
const ALLOWED_TAGS: &[&str] = &[
    "p",
    "pre",
    "code",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "h2",
    "h3",
    "h4",
    "strong",
    "em",
    "blockquote",
    "details",
    "summary",
    "ul",
    "li",
    "hr",
    "br",
];

/// `markdown` as GitHub renders it, before its sanitiser.
pub(crate) fn render(markdown: &str) -> String {
    let mut child = Command::new("cmark-gfm")
        .args([
            "-e",
            "table",
            "-e",
            "autolink",
            "-e",
            "strikethrough",
            "--unsafe",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run cmark-gfm ({e}); run scripts/install-deps"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(markdown.as_bytes())
        .expect("cmark-gfm reads the description");
    let out = child.wait_with_output().expect("cmark-gfm finishes");
    assert!(out.status.success(), "cmark-gfm failed: {out:?}");
    String::from_utf8(out.stdout).expect("cmark-gfm writes UTF-8")
}

/// The names of the tags in `html` (opening and closing), and the comments in it.
fn tags(html: &str) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut comments = 0;
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if rest.starts_with("!--") {
            comments += 1;
            continue;
        }
        let name: String = rest
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        names.push(name.to_ascii_lowercase());
    }
    (names, comments)
}

/// The text GitHub's mention and reference filters look at: everything outside `pre`
/// and `code` elements, tags removed.
fn filtered_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    loop {
        let next = ["<pre", "<code"]
            .iter()
            .filter_map(|open| rest.find(open).map(|at| (at, *open)))
            .min();
        let Some((at, open)) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at]);
        let close = if open == "<pre" { "</pre>" } else { "</code>" };
        let end = rest[at..].find(close).expect("closed element") + at;
        rest = &rest[end + close.len()..];
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in out.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

fn assert_safe(name: &str, what: &str, markdown: &str) {
    let html = render(markdown);
    let (names, comments) = tags(&html);
    assert!(
        comments <= 2,
        "{name} {what}: only our markers are comments:\n{html}"
    );
    for tag in &names {
        assert!(
            ALLOWED_TAGS.contains(&tag.as_str()),
            "{name} {what}: `<{tag}>` in the rendered HTML:\n{html}"
        );
    }
    let text = filtered_text(&html);
    // What GitHub would link or back-reference in text: URLs, `www.` hosts, `#123`,
    // `GH-123` (`org/repo#1` is a `#1`).
    assert!(
        !text.contains("://"),
        "{name} {what}: a URL outside code:\n{text}"
    );
    let lower = text.to_ascii_lowercase();
    for (at, pattern) in [("www.", 0), ("#", 1), ("gh-", 3)]
        .iter()
        .flat_map(|(p, len)| lower.match_indices(p).map(move |(at, _)| (at, (*p, *len))))
    {
        let (p, len) = pattern;
        let before = lower[..at].chars().next_back();
        let next = lower[at + len..].chars().next();
        let linkable = match p {
            "www." => !before.is_some_and(char::is_alphanumeric),
            _ => next.is_some_and(|c| c.is_ascii_digit()),
        };
        assert!(
            !linkable,
            "{name} {what}: `{p}` would link near {:?}",
            &text[at.saturating_sub(20)..(at + 20).min(text.len())]
        );
    }
    for (at, _) in text.match_indices('@') {
        let next = text[at + 1..].chars().next();
        assert!(
            !next.is_some_and(|c| c.is_ascii_alphanumeric()),
            "{name} {what}: a mention outside code: {:?}",
            &text[at.saturating_sub(20)..(at + 20).min(text.len())]
        );
    }
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut all = Vec::new();
    for dir in [
        root.to_owned(),
        format!("{root}/hostile"),
        format!("{root}/triage"),
    ] {
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("fixture").path();
            if path.extension().is_some_and(|e| e == "eml") {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                all.push((name, std::fs::read(&path).expect("fixture bytes")));
            }
        }
    }
    all.sort();
    assert!(all.len() > 20, "the fixtures are found: {}", all.len());
    all
}

#[test]
fn every_description_renders_without_links_images_raw_html_or_mentions() {
    let pipeline = Pipeline::new();
    let mut rendered = 0;
    for (name, raw) in fixtures() {
        let Ok(outcome) = pipeline.check(&raw) else {
            continue;
        };
        assert_safe(&name, "description", &outcome.draft.description);
        assert_safe(&name, "follow-up", &outcome.followup.description);
        rendered += 1;
    }
    assert!(rendered > 15, "most fixtures render: {rendered}");
}

#[test]
fn an_address_in_the_metadata_table_is_not_autolinked() {
    // The case GFM gets wrong inside a `<code>` tag in a table cell: the entities decode
    // to an email address in ordinary text, and the autolink extension links it.
    let raw = b"From: Victim <victim@evil.test>\r\n\
        To: security@palletsprojects.com\r\n\
        Subject: mail victim@evil.test or see www.evil.test\r\n\
        Message-ID: <autolink-1@evil.test>\r\n\
        Content-Type: text/plain\r\n\r\nbody\r\n";
    let outcome = Pipeline::new().check(raw).expect("parses");
    let html = render(&outcome.draft.description);
    assert!(!html.contains("<a "), "no link:\n{html}");
    assert!(html.contains("<td><code>"), "the table is there:\n{html}");
}

/// The report, as rendered HTML, from the description of fixture `name`.
fn rendered_report(name: &str) -> String {
    let raw = std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let outcome = Pipeline::new().check(&raw).expect("parses");
    let html = render(&outcome.draft.description);
    let at = html.find("<h2>Report</h2>").expect("a report section");
    html[at..].to_owned()
}

#[test]
fn long_paragraphs_wrap_and_the_reporters_code_and_table_stay_code_and_table() {
    let html = rendered_report("long-paragraphs.eml");
    // Each paragraph is one `<p>`, so GitHub wraps it; the one-line paragraph of over
    // 500 characters is not a `<pre>` running off the edge.
    let long = html
        .split("<p>")
        .find(|p| p.starts_with("When a Flask application"))
        .expect("the first paragraph is a paragraph");
    assert!(long.len() > 500 && !long.contains("<pre"), "{long}");
    assert!(
        html.contains("<pre lang=\"python\"><code>from flask import Flask")
            || html.contains("<pre><code class=\"language-python\">from flask import Flask"),
        "the fenced Python stays code:\n{html}"
    );
    assert!(
        html.contains("@app.route(&quot;/files/&lt;path:name&gt;&quot;)"),
        "code shows `<` as `<`:\n{html}"
    );
    assert!(
        html.contains("<th>Platform</th>") && html.contains("<td>macOS (APFS)</td>"),
        "the table stays a table:\n{html}"
    );
    // Shown as text, neither linked nor pinging.
    assert!(!html.contains("<a "), "{html}");
    for shown in [
        "https:\u{200B}//blog.example.net",
        "@\u{200B}davidism",
        "#\u{200B}1234",
    ] {
        assert!(html.contains(shown), "{shown:?} in:\n{html}");
    }
}

#[test]
fn an_outlook_html_report_keeps_its_paragraphs_and_its_table_aligned() {
    let html = rendered_report("outlook-html.eml");
    assert!(
        html.contains("<p>We found that Jinja's sandbox"),
        "a paragraph:\n{html}"
    );
    let table = "Version | Sandbox escape | Notes\n\
                 --------+----------------+--------------------------------------\n\
                 3.1.4   | yes            | reproduced with the attached template\n";
    assert!(
        html.contains(&format!("<pre><code>{table}")),
        "the HTML table is aligned text in a code block:\n{html}"
    );
    assert!(!html.contains("<a "), "{html}");
}

#[test]
fn a_patch_attachment_is_shown_as_a_diff() {
    let html = rendered_report("patch-and-binary.eml");
    assert!(
        html.contains("<pre lang=\"diff\"><code>diff --git")
            || html.contains("<pre><code class=\"language-diff\">diff --git"),
        "{html}"
    );
    assert!(
        html.contains("<p>Hi, escape() does not escape single quotes"),
        "{html}"
    );
}
