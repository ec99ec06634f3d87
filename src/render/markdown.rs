//! Neutralise untrusted text for an advisory description (GitHub Flavored Markdown).
//!
//! Two shapes, both built on HTML escaping, because the hidden report marker
//! (`<!-- advisory-bridge … -->`) must never appear in report content and escaping `<`
//! is what guarantees that:
//!
//! - [`pre_block`] for text that must show as code but holds `<!--` (see
//!   [`super::body`], which renders report text), and our digest list: a `<pre>` HTML block with `&`, `<`
//!   and `>` escaped. CommonMark ends such a block (HTML block type 1) only at a line
//!   containing `</pre>`, `</script>`, `</style>` or `</textarea>`; none can occur in the
//!   escaped content, so the content cannot leave the block whatever it holds. Inside,
//!   nothing is Markdown: no emphasis, links, images, tables or fences. GitHub's
//!   sanitiser sees text and entities only, so no raw HTML either, and its mention and
//!   issue-reference filters skip `pre`, so `@user` and `@org/team` ping no one. It reads
//!   like a code block, keeps indentation and blank lines, and, unlike a fenced code
//!   block (which shows `&lt;` literally), shows `<` as `<`.
//! - [`inline_code`] for short values (names, file names, table cells): one line inside
//!   `<code>`, every ASCII punctuation character written as a character reference, so
//!   no `|` can split a table cell, no Markdown syntax is recognised, and mentions are
//!   inert inside `code`.
//!
//! Both make invisible characters that can disguise text (bidi controls, zero-width
//! characters, C0/C1 controls) visible as `\u{…}`.

use crate::mail::clean::is_bidi_control;

/// True for characters shown as a `\u{…}` escape rather than as themselves.
pub(super) fn is_disguising(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || is_bidi_control(c)
        || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// Writes `c` as a visible `\u{…}` escape.
pub(super) fn push_visible_escape(out: &mut String, c: char) {
    out.push_str(&format!("\\u{{{:04X}}}", c as u32));
}

/// Escapes text for the inside of a `<pre>` block; returns the escaped text and whether
/// all of `text` fitted into `budget` characters (counted as by [`github_len`]).
pub fn escape_pre(text: &str, budget: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(budget) + 16);
    let mut used = 0;
    for c in text.chars() {
        let before = out.len();
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if is_disguising(c) => push_visible_escape(&mut out, c),
            c => out.push(c),
        }
        used += github_len(&out[before..]);
        if used > budget {
            out.truncate(before);
            return (out, false);
        }
    }
    (out, true)
}

/// A `<pre>` block holding already escaped text (from [`escape_pre`]), set off by blank
/// lines so it starts an HTML block wherever it is placed.
pub fn pre_block(escaped: &str) -> String {
    let body = escaped.trim_end_matches('\n');
    format!("\n<pre>\n{body}\n</pre>\n\n")
}

/// Opens the folded block of full attachment digests: our own HTML, never report text.
pub const DIGESTS_OPEN: &str = "<details>\n<summary>Full SHA-256 digests</summary>\n";

/// Closes [`DIGESTS_OPEN`].
pub const DIGESTS_CLOSE: &str = "</details>\n";

/// A zero-width space as a character reference: invisible, not a Markdown character, and
/// a line-break opportunity.
const ZWSP_REF: &str = "&#8203;";

/// After this many characters without a space, [`inline_code`] offers a line break.
const WRAP_RUN: usize = 24;

/// Longest value [`inline_code`] shows, in characters; longer ones end in `…`. Keeps a
/// hostile 100 KB subject or file name from eating the description's room.
pub const INLINE_MAX_CHARS: usize = 200;

/// `value` as one line of inline code that no Markdown, HTML or table syntax in it can
/// affect. Line breaks become spaces; values over [`INLINE_MAX_CHARS`] are cut.
pub fn inline_code(value: &str) -> String {
    let mut out = String::from("<code>");
    let mut last_space = false;
    let mut run = 0;
    let value = value.trim();
    let cut = value.chars().count() > INLINE_MAX_CHARS;
    for c in value.chars().take(if cut {
        INLINE_MAX_CHARS - 1
    } else {
        INLINE_MAX_CHARS
    }) {
        if c == '\n' || c == '\r' || c == '\t' {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = c == ' ';
        run = if last_space { 0 } else { run + 1 };
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_ascii_punctuation() => out.push_str(&format!("&#{};", c as u32)),
            c if is_disguising(c) => push_visible_escape(&mut out, c),
            c => out.push(c),
        }
        // GFM autolinks emails and `www.` in the decoded text even inside `<code>`: a
        // zero-width space after `@`, `.` and `:` breaks every such pattern, and one in
        // each long unbroken run lets a table cell wrap.
        if matches!(c, '@' | '.' | ':') || run >= WRAP_RUN {
            out.push_str(ZWSP_REF);
            run = 0;
        }
    }
    if cut {
        out.push('…');
    }
    out.push_str("</code>");
    out
}

/// Length as GitHub may count it, erring high: UTF-16 code units (characters outside
/// the Basic Multilingual Plane count twice).
pub fn github_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_content_cannot_close_its_block_or_carry_html() {
        let (escaped, complete) = escape_pre("</pre>\n<img src=x onerror=alert(1)>\n& done", 1000);
        assert!(complete);
        assert_eq!(
            escaped,
            "&lt;/pre&gt;\n&lt;img src=x onerror=alert(1)&gt;\n&amp; done"
        );
        let block = pre_block(&escaped);
        assert_eq!(block.matches("</pre>").count(), 1);
        assert!(block.ends_with("</pre>\n\n"));
    }

    #[test]
    fn invisible_characters_become_visible_escapes() {
        let (escaped, _) = escape_pre("a\u{202E}b\u{200B}c\u{0}d\u{1b}\te", 1000);
        assert_eq!(escaped, "a\\u{202E}b\\u{200B}c\\u{0000}d\\u{001B}\te");
    }

    #[test]
    fn escaping_stops_at_the_budget_on_a_character_boundary() {
        let (escaped, complete) = escape_pre("日本語<tag>", 5);
        assert!(!complete);
        assert_eq!(escaped, "日本語");
        let (escaped, complete) = escape_pre("ab", 2);
        assert!(complete);
        assert_eq!(escaped, "ab");
    }

    #[test]
    fn inline_code_neutralises_tables_markup_and_mentions() {
        let s = inline_code("a|b *c* @team <b>x</b>\r\n`tick` [l](http://x)");
        assert_eq!(
            s,
            "<code>a&#124;b &#42;c&#42; &#64;&#8203;team &lt;b&gt;x&lt;&#47;b&gt; &#96;tick&#96; \
             &#91;l&#93;&#40;http&#58;&#8203;&#47;&#47;x&#41;</code>"
        );
        assert!(!s[6..s.len() - 7].contains(['|', '<', '>', '`', '*', '@', '[', '\n']));
    }

    #[test]
    fn long_unbroken_inline_values_may_wrap() {
        let s = inline_code(&"a".repeat(60));
        assert_eq!(s.matches(ZWSP_REF).count(), 2, "{s}");
    }

    #[test]
    fn long_inline_values_are_cut() {
        let s = inline_code(&"a".repeat(10_000));
        assert_eq!(s.matches('a').count(), INLINE_MAX_CHARS - 1);
        assert!(s.ends_with("…</code>"));
        assert_eq!(
            inline_code(&"a".repeat(INLINE_MAX_CHARS))
                .matches('a')
                .count(),
            INLINE_MAX_CHARS
        );
    }

    #[test]
    fn github_length_counts_astral_characters_twice() {
        assert_eq!(github_len("aé日"), 3);
        assert_eq!(github_len("😀"), 2);
    }
}
