//! Make untrusted header text safe to carry around: one line, no control characters, no
//! Unicode bidi controls. Used for subjects, display names, file names and signal headers.

/// True for Unicode characters that reorder text without being visible (bidi embeddings,
/// overrides, isolates and marks). Shown to maintainers, they can make `evil.exe` read
/// as `exe.live`; in a header they can disguise a reply's subject.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// True for characters that end a line in some software (CR, LF, NEL, LS, PS, VT, FF).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\r' | '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Returns `s` as one line: line breaks and tabs become spaces, other C0/C1 control
/// characters, bidi controls and byte-order marks are removed, runs of white space are
/// collapsed and the ends trimmed. The result can never split a mail header.
pub fn single_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if is_line_break(c) || c == '\t' || c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if c.is_control() || is_bidi_control(c) || c == '\u{FEFF}' {
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// Cuts `s` to at most `max` characters, on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_controls_cannot_survive() {
        let s = single_line("Hello\r\nBcc: victim@example.org\u{0}\u{85}x\u{2028}y\u{1b}[31m");
        assert_eq!(s, "Hello Bcc: victim@example.org x y[31m");
        assert!(!s.contains(['\r', '\n']));
    }

    #[test]
    fn bidi_overrides_are_removed() {
        assert_eq!(single_line("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(single_line("\u{2066}a\u{2069} \u{200F}b"), "a b");
    }

    #[test]
    fn white_space_is_collapsed_and_trimmed() {
        assert_eq!(single_line("  a \t\t b  "), "a b");
        assert_eq!(single_line(""), "");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("日本語", 5), "日本語");
    }
}
