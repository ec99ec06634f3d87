//! Turn an HTML mail body into readable plain text that keeps link targets visible.
//!
//! mail-parser has an HTML-to-text conversion, but it drops `href`s, and routing looks for
//! GitHub URLs in the text, and maintainers need to see where a link really points (the
//! visible text of a link can lie). So links become `text (url)`. Images become
//! `[image: alt]` without their source. `<pre>` becomes a Markdown code fence and a table
//! of two or more columns aligned text in one, so both stay readable as code blocks in the
//! advisory (see `render::body`). Scripts, styles and the head are dropped. This is
//! a forgiving scanner, not a validating parser: any input gives some text, never a panic.

/// Converts an HTML document or fragment to plain text.
pub fn html_to_text(html: &str) -> String {
    let mut conv = Converter::default();
    conv.run(html);
    conv.finish()
}

#[derive(Default)]
struct Converter {
    out: String,
    /// Open `<a href>` elements: the target and where their text starts in `out`.
    links: Vec<(Option<String>, usize)>,
    pre_depth: usize,
    /// Where the outermost open `<pre>` starts in `out`.
    pre_start: usize,
    pending_space: bool,
    /// Open tables, innermost last.
    tables: Vec<Table>,
}

/// A table being read: where it starts in `out`, its rows so far, and where the open
/// cell's text starts.
struct Table {
    start: usize,
    rows: Vec<Vec<String>>,
    cell_start: Option<usize>,
}

/// A column of an aligned table is wrapped at this many characters.
const COLUMN_MAX_CHARS: usize = 40;

/// Elements whose content is never shown.
const SKIPPED: &[&str] = &["script", "style", "head", "title", "template", "noscript"];
/// Elements that start and end on a line of their own.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "tr",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "section",
    "article",
    "header",
    "footer",
    "pre",
    "hr",
    "form",
    "center",
    "address",
    "figure",
    "main",
    "nav",
    "aside",
    "tbody",
    "thead",
    "tfoot",
];

impl Converter {
    fn run(&mut self, html: &str) {
        let mut rest = html;
        while !rest.is_empty() {
            let Some(lt) = rest.find('<') else {
                self.text(rest);
                break;
            };
            self.text(&rest[..lt]);
            rest = &rest[lt..];
            if let Some(after) = rest.strip_prefix("<!--") {
                rest = after.find("-->").map_or("", |end| &after[end + 3..]);
                continue;
            }
            let next = rest[1..].chars().next();
            let is_tag = matches!(next, Some(c) if c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?');
            if !is_tag {
                // A lone `<`, as in `a < b`: it is text.
                self.text("<");
                rest = &rest[1..];
                continue;
            }
            let (tag, after) = scan_tag(&rest[1..]);
            rest = after;
            let Some(tag) = tag else { continue };
            if !tag.closing && SKIPPED.contains(&tag.name.as_str()) {
                rest = skip_element(rest, &tag.name);
                continue;
            }
            self.tag(&tag);
        }
    }

    fn tag(&mut self, tag: &Tag) {
        let name = tag.name.as_str();
        match (name, tag.closing) {
            ("br", _) => self.newline(1),
            ("li", false) => {
                self.newline(1);
                self.out.push_str("- ");
                self.pending_space = false;
            }
            ("table", false) => {
                self.newline(2);
                self.tables.push(Table {
                    start: self.out.len(),
                    rows: Vec::new(),
                    cell_start: None,
                });
            }
            ("table", true) => {
                self.end_cell();
                if let Some(table) = self.tables.pop() {
                    self.out.truncate(table.start);
                    self.out.push_str(&aligned(&table.rows));
                }
                self.newline(2);
            }
            ("tr", _) if !self.tables.is_empty() => {
                self.end_cell();
                if !tag.closing
                    && let Some(t) = self.tables.last_mut()
                {
                    t.rows.push(Vec::new());
                }
            }
            ("td" | "th", closing) if !self.tables.is_empty() => {
                self.end_cell();
                if !closing {
                    self.pending_space = false;
                    let at = self.out.len();
                    if let Some(t) = self.tables.last_mut() {
                        t.cell_start = Some(at);
                    }
                }
            }
            ("td" | "th", false) => self.pending_space = true,
            ("img", false) => {
                let alt = tag
                    .attr("alt")
                    .map(|a| decode_entities(a).trim().to_owned());
                self.word(&match alt {
                    Some(a) if !a.is_empty() => format!("[image: {a}]"),
                    _ => "[image]".to_owned(),
                });
            }
            ("a", false) => {
                let href = tag
                    .attr("href")
                    .map(|h| decode_entities(h).trim().to_owned());
                self.links.push((href, self.out.len()));
            }
            ("a", true) => {
                if let Some((Some(href), start)) = self.links.pop() {
                    self.close_link(&href, start);
                }
            }
            ("pre", false) => {
                self.newline(2);
                if self.pre_depth == 0 {
                    self.pre_start = self.out.len();
                }
                self.pre_depth += 1;
            }
            ("pre", true) if self.pre_depth > 0 => {
                self.pre_depth -= 1;
                if self.pre_depth == 0 {
                    // A code block in Markdown's terms, so it stays one.
                    let body = self.out.split_off(self.pre_start);
                    let body = body.trim_matches('\n');
                    if !body.trim().is_empty() {
                        self.out.push_str(&fenced(body));
                    }
                }
                self.newline(2);
            }
            (n, _) if BLOCKS.contains(&n) => self.newline(2),
            _ => {}
        }
    }

    /// Ends the open cell of the innermost table: its text, on one line, joins the row.
    fn end_cell(&mut self) {
        let Some(table) = self.tables.last_mut() else {
            return;
        };
        let Some(start) = table.cell_start.take() else {
            return;
        };
        let start = start.min(self.out.len());
        let text = self.out.split_off(start);
        let cell = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if table.rows.is_empty() {
            table.rows.push(Vec::new());
        }
        table.rows.last_mut().expect("a row").push(cell);
        self.pending_space = false;
    }

    /// Shows where a link points unless its text already says so.
    fn close_link(&mut self, href: &str, start: usize) {
        let shown_href = href.strip_prefix("mailto:").unwrap_or(href);
        let lower = href.to_ascii_lowercase();
        let worth_showing = lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("mailto:")
            || lower.starts_with("ftp://");
        if !worth_showing {
            return;
        }
        let text = self.out.get(start..).unwrap_or("").trim();
        if text == shown_href || text == href {
            return;
        }
        self.pending_space = true;
        if text.is_empty() {
            self.word(shown_href);
        } else {
            self.word(&format!("({shown_href})"));
        }
    }

    fn text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if self.pre_depth > 0 {
            self.flush_space();
            self.out.push_str(&decoded);
            return;
        }
        for (i, piece) in decoded
            .split(|c: char| c.is_whitespace() && c != '\u{A0}')
            .enumerate()
        {
            if i > 0 {
                self.pending_space = true;
            }
            if !piece.is_empty() {
                self.word(piece);
            }
        }
    }

    fn word(&mut self, w: &str) {
        self.flush_space();
        self.out.push_str(w);
    }

    fn flush_space(&mut self) {
        if self.pending_space && !self.out.is_empty() && !self.out.ends_with(['\n', ' ']) {
            self.out.push(' ');
        }
        self.pending_space = false;
    }

    fn newline(&mut self, count: usize) {
        self.pending_space = false;
        while self.out.ends_with(' ') {
            self.out.pop();
        }
        if self.out.is_empty() {
            return;
        }
        let have = self.out.len() - self.out.trim_end_matches('\n').len();
        for _ in have..count {
            self.out.push('\n');
        }
    }

    fn finish(self) -> String {
        let mut text = String::with_capacity(self.out.len());
        let mut blank_run = 0;
        for line in self.out.lines() {
            let line = line.trim_end();
            if line.trim().is_empty() {
                blank_run += 1;
                if blank_run > 1 {
                    continue;
                }
            } else {
                blank_run = 0;
            }
            text.push_str(line);
            text.push('\n');
        }
        text.trim_matches('\n').to_owned()
    }
}

/// `body` in a Markdown code fence longer than any backtick run inside.
fn fenced(body: &str) -> String {
    let fence = code_fence(body);
    format!("{fence}\n{body}\n{fence}")
}

/// A backtick fence longer than any run of backticks in `text` (at least three), so
/// nothing inside can close it.
pub(crate) fn code_fence(text: &str) -> String {
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

/// A table's rows as text: a layout table of one column as its cells, one per line;
/// otherwise columns padded to line up, ` | ` between them, a `-+-` rule under the first
/// row, long cells wrapped within their column, all in a code fence so it stays aligned.
fn aligned(rows: &[Vec<String>]) -> String {
    let rows: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r.iter().any(|c| !c.is_empty()))
        .collect();
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    if columns <= 1 {
        return rows
            .iter()
            .filter_map(|r| r.first())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
    }
    let wrapped: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| {
            (0..columns)
                .map(|i| wrap(r.get(i).map_or("", String::as_str), COLUMN_MAX_CHARS))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            wrapped
                .iter()
                .flat_map(|r| r[i].iter().map(|l| l.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, row) in wrapped.iter().enumerate() {
        let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for line in 0..height {
            let cells: Vec<String> = (0..columns)
                .map(|i| {
                    let text = row[i].get(line).map_or("", String::as_str);
                    format!("{text:<width$}", width = widths[i])
                })
                .collect();
            out.push_str(cells.join(" | ").trim_end());
            out.push('\n');
        }
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat((*w).max(1))).collect();
            out.push_str(&rule.join("-+-"));
            out.push('\n');
        }
    }
    fenced(out.trim_end_matches('\n'))
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word is
/// cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

struct Tag {
    name: String,
    closing: bool,
    attrs: Vec<(String, String)>,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Scans a tag starting just after `<`; returns it (None for `<!…>`/`<?…>`) and the rest
/// of the input after `>` (or nothing when the tag never closes).
fn scan_tag(s: &str) -> (Option<Tag>, &str) {
    if s.starts_with('!') || s.starts_with('?') {
        return (None, s.find('>').map_or("", |i| &s[i + 1..]));
    }
    let closing = s.starts_with('/');
    let body = if closing { &s[1..] } else { s };
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == ':'))
        .unwrap_or(body.len());
    let name = body[..name_len].to_ascii_lowercase();
    let mut rest = &body[name_len..];
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
        if rest.is_empty() {
            break;
        }
        if let Some(after) = rest.strip_prefix('>') {
            rest = after;
            break;
        }
        let n_len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '>' | '/'))
            .unwrap_or(rest.len())
            .max(1.min(rest.len()));
        let n_len = next_boundary(rest, n_len);
        let attr_name = rest[..n_len].to_ascii_lowercase();
        rest = rest[n_len..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            if let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') {
                let inner = &after[1..];
                let end = inner.find(q).unwrap_or(inner.len());
                value = inner[..end].to_owned();
                rest = inner.get(end + 1..).unwrap_or("");
            } else {
                let end = after
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(after.len());
                value = after[..end].to_owned();
                rest = &after[end..];
            }
        }
        attrs.push((attr_name, value));
    }
    (
        Some(Tag {
            name,
            closing,
            attrs,
        }),
        rest,
    )
}

/// Rounds `i` up to a character boundary of `s`.
fn next_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
}

/// Skips past the end tag of an element whose content is hidden. Scans forward without
/// copying, so many hidden elements cost linear time, not quadratic.
fn skip_element<'a>(s: &'a str, name: &str) -> &'a str {
    let mut from = 0;
    while let Some(i) = s[from..].find("</") {
        let rest = &s[from + i + 2..];
        if rest
            .as_bytes()
            .get(..name.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(name.as_bytes()))
        {
            return rest.find('>').map_or("", |j| &rest[j + 1..]);
        }
        from += i + 2;
    }
    ""
}

/// Decodes character references with the full HTML5 table (`&zwnj;`, `&bull;`,
/// `&oacute;`, numeric ones); a no-break space reads as a space.
fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    html_escape::decode_html_entities(s).replace('\u{A0}', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_html5_entity_is_decoded() {
        let t = html_to_text(
            "<p>&bull; Se&ntilde;or &oacute;&zwnj;k &#x263A; &#9731; &amp;c&nbsp;x &unknown;</p>",
        );
        assert_eq!(
            t,
            "\u{2022} Se\u{F1}or \u{F3}\u{200C}k \u{263A} \u{2603} &c x &unknown;"
        );
    }

    #[test]
    fn links_keep_their_target_visible() {
        let t = html_to_text(
            r#"<p>See <a href="https://github.com/pallets/jinja/issues/1">this issue</a>.</p>"#,
        );
        assert_eq!(
            t,
            "See this issue (https://github.com/pallets/jinja/issues/1)."
        );
    }

    #[test]
    fn a_link_whose_text_is_its_url_is_not_repeated() {
        let t = html_to_text(r#"<a href="https://example.org/x">https://example.org/x</a>"#);
        assert_eq!(t, "https://example.org/x");
    }

    #[test]
    fn scripts_styles_and_comments_vanish_and_images_lose_their_source() {
        let t = html_to_text(
            "<html><head><title>T</title><style>p{}</style></head><body>\
             <script>alert(1)</script><!-- hidden --><p>Hi <img src=\"http://evil/x.png\" alt=\"poc\"></p></body></html>",
        );
        assert_eq!(t, "Hi [image: poc]");
        assert!(!t.contains("evil"));
    }

    #[test]
    fn blocks_become_paragraphs_and_entities_are_decoded() {
        let t = html_to_text(
            "<div>caf&eacute; &amp; &lt;tag&gt;</div><p>two<br>lines</p><ul><li>a</li><li>b</li></ul>",
        );
        assert_eq!(t, "café & <tag>\n\ntwo\nlines\n\n- a\n- b");
    }

    #[test]
    fn preformatted_text_keeps_its_layout() {
        let t = html_to_text("<pre>def f():\n    return 1</pre>");
        assert_eq!(t, "```\ndef f():\n    return 1\n```");
    }

    #[test]
    fn tables_become_aligned_columns_and_layout_tables_plain_text() {
        let t = html_to_text(
            "<p>Versions:</p><table><tr><th>Version</th><th>Affected</th></tr>\
             <tr><td>2.3.0</td><td><b>yes</b>, all</td></tr><tr><td>3.0</td><td>no</td></tr></table>\
             <p>after</p>",
        );
        assert_eq!(
            t,
            "Versions:\n\n```\nVersion | Affected\n--------+---------\n2.3.0   | yes, all\n\
             3.0     | no\n```\n\nafter"
        );
        let t = html_to_text("<table><tr><td>Hi,</td></tr><tr><td>the report</td></tr></table>");
        assert_eq!(t, "Hi,\nthe report");
        let long = "word ".repeat(20);
        let t = html_to_text(&format!(
            "<table><tr><td>a</td><td>{long}</td></tr></table>"
        ));
        assert!(t.lines().all(|l| l.chars().count() <= 50), "{t}");
    }

    #[test]
    fn broken_markup_still_gives_text() {
        for input in [
            "<",
            "<a",
            "<a href=\"x",
            "a < b",
            "<!-- never closed",
            "<p <p>>",
            "&#xFFFFFFFF;",
            "<é>",
            "<a b=é>x",
        ] {
            let _ = html_to_text(input);
        }
        assert_eq!(html_to_text("a < b"), "a < b");
        assert_eq!(
            html_to_text("<STYLE>x</Style>shown<script>never closed"),
            "shown"
        );
    }
}
