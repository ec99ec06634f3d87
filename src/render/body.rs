//! Report text as Markdown a maintainer reads on GitHub: paragraphs that wrap, the
//! reporter's code blocks, tables and patches kept as such, and nothing from the mail able
//! to link, ping, reference, embed or carry HTML.
//!
//! The text is cut into blocks, the way a reader sees them:
//!
//! - **fenced code** the reporter wrote (```` ``` ```` or `~~~`): a backtick fence longer
//!   than any backtick run inside, so nothing inside can close it, and the info string only
//!   when it is a plain language word. Inside a fence nothing is Markdown, HTML, a mention
//!   or a reference. Content holding `<!--` (which must never reach a description outside
//!   our own markers) is shown in an escaped `<pre>` instead.
//! - **patches** (`diff --git`, or `---`/`+++` headers): a `diff` fence.
//! - **preformatted text** (most lines indented, as in stack traces, or an aligned table
//!   with a `---+---` rule, as [`crate::mail::html`] writes HTML tables): a plain fence, so
//!   columns stay aligned.
//! - **tables** in GFM syntax: rebuilt cell by cell, each cell escaped.
//! - **paragraphs**: every character Markdown or HTML could act on escaped (`&`, `<`, `>`
//!   as character references, the rest with a backslash), line-start markers (`#`, `-`,
//!   `1.`) made literal, and the patterns GitHub turns into links or notifications broken
//!   with a zero-width space the way bots on GitHub write them (`@&#8203;login`):
//!   mentions and emails after `@`, references after `#` and `GH-`, URLs after `://`
//!   and `www`. Short lines keep their line break; long ones (hard-wrapped mail) flow.

use super::markdown::{escape_pre, github_len, is_disguising, pre_block, push_visible_escape};

/// A zero-width space as a character reference: invisible, and breaks every pattern
/// GitHub links or notifies on.
const ZWSP_REF: &str = "&#8203;";

/// A line at least this long, in characters, was probably wrapped by the mail client:
/// it flows into the next one instead of keeping its line break.
const WRAPPED_LINE_CHARS: usize = 60;

/// `text` as safe Markdown within `budget` characters (counted as by [`github_len`]);
/// returns the Markdown and whether all of `text` fitted. Cuts happen between lines,
/// never inside a construct: an open fence is always closed.
pub fn report_markdown(text: &str, budget: usize) -> (String, bool) {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = String::new();
    let mut used = 0;
    for block in blocks(&lines) {
        let rendered = block.render();
        let whole = rendered.len_total();
        if used + whole <= budget {
            used += whole;
            rendered.push_into(&mut out, usize::MAX);
            continue;
        }
        let room = budget.saturating_sub(used);
        rendered.push_into(&mut out, room);
        return (out, false);
    }
    (out, true)
}

/// A text attachment as a code block: a `diff` fence for patches, a plain fence otherwise
/// (an escaped `<pre>` when the text holds `<!--`).
pub fn attachment_block(text: &str, is_patch: bool) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    let info = if is_patch || looks_like_patch(&lines) {
        Some("diff")
    } else {
        None
    };
    let mut out = String::new();
    code(&lines, info).push_into(&mut out, usize::MAX);
    out
}

/// One block of report text.
enum Block<'a> {
    /// Code: the reporter's fence, a patch, or preformatted text; with an info string.
    Code(Vec<&'a str>, Option<String>),
    /// A GFM table: header, alignments, rows.
    Table(Vec<String>, Vec<Align>, Vec<Vec<String>>),
    /// Ordinary text.
    Paragraph(Vec<&'a str>),
}

#[derive(Clone, Copy)]
enum Align {
    None,
    Left,
    Center,
    Right,
}

/// A block rendered as an opening, lines that may be cut between, and a closing.
struct Rendered {
    open: String,
    lines: Vec<String>,
    close: String,
}

impl Rendered {
    fn len_total(&self) -> usize {
        github_len(&self.open)
            + self.lines.iter().map(|l| github_len(l)).sum::<usize>()
            + github_len(&self.close)
    }

    /// Appends as many whole lines as fit in `room` with the opening and closing, or
    /// nothing when not even one does.
    fn push_into(&self, out: &mut String, room: usize) {
        let fixed = github_len(&self.open) + github_len(&self.close);
        let mut used = fixed;
        let mut n = 0;
        for line in &self.lines {
            let len = github_len(line);
            if used + len > room {
                break;
            }
            used += len;
            n += 1;
        }
        // A line too long for what is left (a whole paragraph on one line) is cut inside,
        // where no escape is split.
        let partial = self
            .lines
            .get(n)
            .map(|l| cut_line(l, room.saturating_sub(used)))
            .filter(|p| p.chars().count() >= MIN_PARTIAL_LINE);
        if n == 0 && partial.is_none() {
            return;
        }
        out.push_str(&self.open);
        for (i, line) in self.lines[..n].iter().enumerate() {
            // A paragraph cut after a hard break would end in a stray backslash.
            let body = line.trim_end_matches('\n');
            let odd = (body.len() - body.trim_end_matches('\\').len()) % 2 == 1;
            if i + 1 == n && n < self.lines.len() && partial.is_none() && odd {
                out.push_str(&body[..body.len() - 1]);
                out.push('\n');
            } else {
                out.push_str(line);
            }
        }
        if let Some(p) = partial {
            out.push_str(&p);
            out.push('\n');
        }
        out.push_str(&self.close);
    }
}

/// A cut inside a line keeps at least this many characters, or the line is left out.
const MIN_PARTIAL_LINE: usize = 40;

/// The longest prefix of rendered `line` within `room - 1` characters (one is kept for
/// the line break) that splits no character reference and no backslash escape.
fn cut_line(line: &str, room: usize) -> String {
    let line = line.trim_end_matches('\n');
    let mut end = 0;
    let mut used = 0;
    for (i, c) in line.char_indices() {
        used += c.len_utf16();
        if used + 1 > room {
            break;
        }
        end = i + c.len_utf8();
    }
    let mut prefix = &line[..end];
    // Inside `&…;`: back up to before the `&`.
    if let Some(amp) = prefix.rfind('&')
        && !prefix[amp..].contains(';')
    {
        prefix = &prefix[..amp];
    }
    // An odd run of trailing backslashes is half an escape.
    let slashes = prefix.len() - prefix.trim_end_matches('\\').len();
    if slashes % 2 == 1 {
        prefix = &prefix[..prefix.len() - 1];
    }
    prefix.to_owned()
}

impl Block<'_> {
    fn render(&self) -> Rendered {
        match self {
            Block::Code(lines, info) => code(lines, info.as_deref()),
            Block::Table(header, aligns, rows) => table(header, aligns, rows),
            Block::Paragraph(lines) => paragraph(lines),
        }
    }
}

/// Splits lines into blocks; blank lines separate them and are dropped.
fn blocks<'a>(lines: &[&'a str]) -> Vec<Block<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            i += 1;
            continue;
        }
        if let Some((fence_char, len, indent, info)) = fence_open(line) {
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !fence_closes(lines[i], fence_char, len) {
                body.push(strip_indent(lines[i], indent));
                i += 1;
            }
            i += 1; // the closing fence, or past the end
            out.push(Block::Code(body, info));
            continue;
        }
        if starts_patch(lines, i) {
            let start = i;
            while i < lines.len() && continues_patch(lines, i) {
                i += 1;
            }
            out.push(Block::Code(lines[start..i].to_vec(), Some("diff".into())));
            continue;
        }
        if let Some(table) = table_at(lines, &mut i) {
            out.push(table);
            continue;
        }
        let start = i;
        while i < lines.len()
            && !lines[i].trim().is_empty()
            && (i == start
                || (fence_open(lines[i]).is_none()
                    && !starts_patch(lines, i)
                    && !is_delimiter_row_after(lines, i)))
        {
            i += 1;
        }
        let block = &lines[start..i];
        if is_preformatted(block) {
            // The indentation every line shares is the mail's, not the code's.
            let common = block
                .iter()
                .map(|l| l.len() - l.trim_start_matches(' ').len())
                .min()
                .unwrap_or(0);
            out.push(Block::Code(
                block.iter().map(|l| &l[common..]).collect(),
                None,
            ));
        } else {
            out.push(Block::Paragraph(block.to_vec()));
        }
    }
    out
}

/// An opening code fence: its character, length, indentation and a safe info string.
fn fence_open(line: &str) -> Option<(char, usize, usize, Option<String>)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let c = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(c).len();
    if len < 3 {
        return None;
    }
    let info = rest[len..].trim();
    if c == '`' && info.contains('`') {
        return None;
    }
    let word = info.split_whitespace().next().unwrap_or("");
    let plain = !word.is_empty()
        && word.len() <= 30
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'));
    Some((c, len, indent, plain.then(|| word.to_owned())))
}

fn fence_closes(line: &str, c: char, len: usize) -> bool {
    let t = line.trim();
    line.len() - line.trim_start_matches(' ').len() <= 3
        && t.len() >= len
        && t.chars().all(|x| x == c)
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(indent)..]
}

fn starts_patch(lines: &[&str], i: usize) -> bool {
    let line = lines[i];
    line.starts_with("diff --git ")
        || (line.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")))
}

fn looks_like_patch(lines: &[&str]) -> bool {
    (0..lines.len().min(40)).any(|i| starts_patch(lines, i))
}

fn is_patch_line(line: &str) -> bool {
    const HEADERS: [&str; 10] = [
        "diff ",
        "index ",
        "new file",
        "deleted file",
        "similarity",
        "rename ",
        "old mode",
        "new mode",
        "Binary files",
        "--- ",
    ];
    line.starts_with([' ', '+', '-', '@', '\\']) || HEADERS.iter().any(|h| line.starts_with(h))
}

/// Whether line `i` still belongs to a patch: a patch line, or a blank line (a context
/// line whose space a mail client dropped) followed by one.
fn continues_patch(lines: &[&str], i: usize) -> bool {
    let line = lines[i];
    if line.is_empty() {
        return lines
            .get(i + 1)
            .is_some_and(|n| !n.is_empty() && n.starts_with([' ', '+', '-', '@']));
    }
    is_patch_line(line)
}

/// Text laid out in columns: most lines indented (a stack trace, unfenced code), or a
/// `---+---` rule under a header (an aligned table, as [`crate::mail::html`] writes them).
fn is_preformatted(block: &[&str]) -> bool {
    if block.len() < 2 {
        return false;
    }
    let indented = block
        .iter()
        .filter(|l| l.starts_with("  ") || l.starts_with('\t'))
        .count();
    let ruled = block.iter().any(|l| {
        let t = l.trim();
        t.len() >= 3 && t.contains("-+-") && t.chars().all(|c| c == '-' || c == '+')
    });
    ruled || indented * 2 > block.len()
}

/// The cells of a table row: outer pipes dropped, split at unescaped `|`, `\|` read as a
/// pipe, trimmed.
fn cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = if t.ends_with('|') && !t.ends_with("\\|") {
        &t[..t.len() - 1]
    } else {
        t
    };
    let mut out = vec![String::new()];
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().expect("a cell").push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("a cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn delimiter(line: &str) -> Option<Vec<Align>> {
    if !line.contains('-') {
        return None;
    }
    cells(line)
        .iter()
        .map(|c| {
            let left = c.starts_with(':');
            let right = c.ends_with(':');
            let dashes = c.trim_matches(':');
            (!dashes.is_empty() && dashes.chars().all(|d| d == '-')).then_some(
                match (left, right) {
                    (true, true) => Align::Center,
                    (true, false) => Align::Left,
                    (false, true) => Align::Right,
                    (false, false) => Align::None,
                },
            )
        })
        .collect()
}

/// Whether line `i` is a header row whose next line is a matching delimiter row.
fn is_delimiter_row_after(lines: &[&str], i: usize) -> bool {
    lines[i].contains('|')
        && lines
            .get(i + 1)
            .and_then(|n| delimiter(n))
            .is_some_and(|a| a.len() == cells(lines[i]).len())
}

fn table_at<'a>(lines: &[&'a str], i: &mut usize) -> Option<Block<'a>> {
    if !is_delimiter_row_after(lines, *i) {
        return None;
    }
    let header = cells(lines[*i]);
    let aligns = delimiter(lines[*i + 1])?;
    *i += 2;
    let mut rows = Vec::new();
    while *i < lines.len() && lines[*i].contains('|') && !lines[*i].trim().is_empty() {
        let mut row = cells(lines[*i]);
        row.resize(header.len(), String::new());
        rows.push(row);
        *i += 1;
    }
    Some(Block::Table(header, aligns, rows))
}

/// A code block of `lines`: a backtick fence longer than any backtick run inside.
fn code(lines: &[&str], info: Option<&str>) -> Rendered {
    let mut content: Vec<String> = lines.iter().map(|l| visible(l)).collect();
    while content.last().is_some_and(|l| l.trim().is_empty()) {
        content.pop();
    }
    if content.iter().any(|l| l.contains("<!--")) {
        // Only our markers may be HTML comments in a description: escape instead.
        let (escaped, _) = escape_pre(&lines.join("\n"), usize::MAX);
        let block = pre_block(&escaped);
        let inner = block
            .trim_start_matches('\n')
            .strip_prefix("<pre>\n")
            .and_then(|b| b.strip_suffix("</pre>\n\n"))
            .unwrap_or("");
        return Rendered {
            open: "<pre>\n".into(),
            lines: inner.lines().map(|l| format!("{l}\n")).collect(),
            close: "</pre>\n\n".into(),
        };
    }
    let fence = crate::mail::html::code_fence(&content.join("\n"));
    Rendered {
        open: format!("{fence}{}\n", info.unwrap_or("")),
        lines: content.into_iter().map(|l| format!("{l}\n")).collect(),
        close: format!("{fence}\n\n"),
    }
}

/// `line` with characters that can disguise text shown as `\u{…}`.
fn visible(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if is_disguising(c) {
            push_visible_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

fn table(header: &[String], aligns: &[Align], rows: &[Vec<String>]) -> Rendered {
    let row = |cells: &[String]| {
        let mut s = String::from("|");
        for c in cells {
            s.push(' ');
            s.push_str(&escape_inline(c, false));
            s.push_str(" |");
        }
        s.push('\n');
        s
    };
    let mut open = row(header);
    open.push('|');
    for a in aligns {
        open.push_str(match a {
            Align::None => " --- |",
            Align::Left => " :-- |",
            Align::Center => " :-: |",
            Align::Right => " --: |",
        });
    }
    open.push('\n');
    Rendered {
        open,
        lines: rows.iter().map(|r| row(r)).collect(),
        close: "\n".into(),
    }
}

fn paragraph(lines: &[&str]) -> Rendered {
    let mut out = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let mut s = escape_inline(trimmed, true);
        let last = n + 1 == lines.len();
        let flows = trimmed.chars().count() >= WRAPPED_LINE_CHARS || line.ends_with(' ');
        if !last && !flows {
            s.push('\\');
        }
        s.push('\n');
        out.push(s);
    }
    Rendered {
        open: String::new(),
        lines: out,
        close: "\n".into(),
    }
}

/// Escapes one line of text so that Markdown reads it as exactly these characters, with
/// nothing GitHub could link, ping or back-reference. `line_start` makes block markers at
/// its start (`-`, `+`, `=`, `1.`) literal too.
fn escape_inline(text: &str, line_start: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    // `1.` / `1)` at the start of a line would begin an ordered list.
    let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    let list_number = line_start && digits > 0 && matches!(chars.get(digits), Some('.' | ')'));
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '~' | '|' | '$' | '!' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '#' => {
                out.push_str("\\#");
                if next.is_some_and(|n| n.is_alphanumeric()) {
                    out.push_str(ZWSP_REF);
                }
            }
            '@' => {
                out.push('@');
                out.push_str(ZWSP_REF);
            }
            ':' => {
                out.push(':');
                if next == Some('/') {
                    out.push_str(ZWSP_REF);
                }
            }
            '-' | '+' | '=' if i == 0 && line_start => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if list_number && i == digits => {
                out.push('\\');
                out.push(c);
            }
            '-' if next.is_some_and(|n| n.is_ascii_digit())
                && i >= 2
                && chars[i - 2..i]
                    .iter()
                    .collect::<String>()
                    .eq_ignore_ascii_case("gh")
                && (i == 2 || !chars[i - 3].is_alphanumeric()) =>
            {
                out.push('-');
                out.push_str(ZWSP_REF);
            }
            '.' if i >= 3
                && chars[i - 3..i]
                    .iter()
                    .collect::<String>()
                    .eq_ignore_ascii_case("www")
                && (i == 3 || !chars[i - 4].is_alphanumeric()) =>
            {
                out.push_str(ZWSP_REF);
                out.push('.');
            }
            c if is_disguising(c) => push_visible_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(text: &str) -> String {
        report_markdown(text, usize::MAX).0
    }

    #[test]
    fn paragraphs_flow_and_short_lines_keep_their_break() {
        let long = "word ".repeat(14);
        let out = md(&format!("{long}\n{long}\n\nHi,\nDana"));
        assert_eq!(
            out,
            format!("{}\n{}\n\nHi,\\\nDana\n\n", long.trim(), long.trim())
        );
    }

    #[test]
    fn markdown_and_html_in_text_are_literal() {
        let out = md("# title\n- item\n1. one\n*em* _u_ [l](x) ![i](y) <b>&amp; `c` | a ~s~ $x$");
        assert_eq!(
            out,
            "\\# title\\\n\\- item\\\n1\\. one\\\n\\*em\\* \\_u\\_ \\[l\\](x) \\!\\[i\\](y) \
             &lt;b&gt;&amp;amp; \\`c\\` \\| a \\~s\\~ \\$x\\$\n\n"
        );
    }

    #[test]
    fn mentions_references_emails_and_urls_are_broken() {
        let out =
            md("@dana @pallets/team #123 GH-4 pallets/flask#5 a@b.test https://x.test www.y.test");
        assert_eq!(
            out,
            "@&#8203;dana @&#8203;pallets/team \\#&#8203;123 GH-&#8203;4 pallets/flask\\#&#8203;5 \
             a@&#8203;b.test https:&#8203;//x.test www&#8203;.y.test\n\n"
        );
    }

    #[test]
    fn the_reporters_fences_stay_code_with_a_longer_fence() {
        let out = md("See:\n\n````python\nprint('@x')\n```\n````\n\nend");
        assert_eq!(out, "See:\n\n````python\nprint('@x')\n```\n````\n\nend\n\n");
        // An info string that is not a plain word is dropped; an unclosed fence ends the text.
        assert_eq!(md("~~~ {.py onload=x}\na"), "```\na\n```\n\n");
    }

    #[test]
    fn a_fence_holding_an_html_comment_becomes_escaped_pre() {
        let out = md("```\n<!-- advisory-bridge x -->\n```");
        assert_eq!(out, "<pre>\n&lt;!-- advisory-bridge x --&gt;\n</pre>\n\n");
    }

    #[test]
    fn patches_get_a_diff_fence() {
        let out = md("Fix:\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\nThanks");
        assert!(
            out.contains(
                "```diff\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n```\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("Thanks\n\n"));
    }

    #[test]
    fn tables_are_rebuilt_cell_by_cell() {
        let out = md("| Version | Fixed |\n|:--|--:|\n| 1.0 \\| 1.1 | @x |\n| 2 |");
        assert_eq!(
            out,
            "| Version | Fixed |\n| :-- | --: |\n| 1.0 \\| 1.1 | @&#8203;x |\n| 2 |  |\n\n"
        );
    }

    #[test]
    fn stack_traces_and_aligned_tables_are_preformatted() {
        let out = md("Traceback (most recent call last):\n  File \"x.py\", line 1\n    boom()\n");
        assert!(out.starts_with("```\nTraceback"), "{out}");
        let out = md("a   | b\n----+---\n1   | 2");
        assert!(out.starts_with("```\na   | b\n"), "{out}");
    }

    #[test]
    fn a_cut_falls_between_lines_and_closes_the_fence() {
        let text = format!("```\n{}```", "line\n".repeat(100));
        let (out, complete) = report_markdown(&text, 50);
        assert!(!complete);
        assert!(
            out.starts_with("```\nline\n") && out.ends_with("```\n\n"),
            "{out}"
        );
        assert!(github_len(&out) <= 50);
        let (out, complete) = report_markdown("short\nlines\nhere", 9);
        assert!(!complete);
        assert_eq!(out, "short\n\n");
    }

    #[test]
    fn invisible_characters_become_visible_everywhere() {
        assert_eq!(md("a\u{202E}b"), "a\\u{202E}b\n\n");
        assert_eq!(md("```\na\u{200B}b\n```"), "```\na\\u{200B}b\n```\n\n");
    }
}
