//! The triage shield: signals about a report and a fingerprint to find near-duplicates,
//! shown to maintainers. Signals, never verdicts: nothing here closes, drops, moves or
//! leaves unanswered a report. Pure.
//!
//! **Fingerprint.** The report's text is normalised (lower case, quoted lines and the
//! signature dropped, words only) and cut into word pairs; attachments count by their
//! SHA-256. A MinHash of [`MINHASH_SLOTS`] slots over that set estimates the Jaccard
//! similarity of two reports by the share of equal slots. The hash is written out here
//! (FNV-1a and a SplitMix64 mix per slot) rather than taken from `std` or a crate, because
//! fingerprints live in the journal: they must hash the same in every release and on
//! every machine, which `std`'s hasher does not promise.

use sha2::{Digest, Sha256};

use crate::mail::Report;

/// Slots of a MinHash: 64 gives a similarity within about ±0.06.
pub const MINHASH_SLOTS: usize = 64;

/// Reports at least this similar are shown as probable duplicates.
pub const NEAR_DUPLICATE: f64 = 0.5;

/// What identifies a report's content for duplicate detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// SHA-256 (hex) of the normalised words and the attachments' digests: equal for
    /// the same content however it was wrapped or quoted.
    pub exact: String,
    /// The MinHash slots.
    pub minhash: Vec<u32>,
}

impl Fingerprint {
    /// Estimated share of shared word pairs with `other`, 1.0 for the same content.
    pub fn similarity(&self, other: &Fingerprint) -> f64 {
        if self.exact == other.exact {
            return 1.0;
        }
        if self.minhash.len() != other.minhash.len() || self.minhash.is_empty() {
            return 0.0;
        }
        let same = self
            .minhash
            .iter()
            .zip(&other.minhash)
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / self.minhash.len() as f64
    }

    /// The MinHash as stored: little-endian `u32`s.
    pub fn minhash_bytes(&self) -> Vec<u8> {
        self.minhash.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A fingerprint read back from the journal; `None` when the bytes are not one.
    pub fn from_stored(exact: String, bytes: &[u8]) -> Option<Fingerprint> {
        (bytes.len() == MINHASH_SLOTS * 4).then(|| Fingerprint {
            exact,
            minhash: bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}

/// An earlier report this one probably repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    /// Its advisory.
    pub ghsa_id: String,
    /// Its repository, `owner/name`.
    pub repository: String,
    /// Its advisory's page.
    pub url: String,
    /// How similar, 0 to 1.
    pub similarity: f64,
}

/// The words of `text` that say something: lower case, without quoted lines (`>`) and
/// without the signature (after a `-- ` line).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line == "-- " || line == "--" {
            break;
        }
        if line.trim_start().starts_with('>') {
            continue;
        }
        out.extend(
            line.split(|c: char| !c.is_alphanumeric() && c != '_')
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase),
        );
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The report's fingerprint; `None` when it has neither words nor attachments.
pub fn fingerprint(report: &Report) -> Option<Fingerprint> {
    let words = words(&report.text);
    let mut elements: Vec<u64> = words
        .windows(2)
        .map(|pair| fnv1a(format!("{} {}", pair[0], pair[1]).as_bytes()))
        .collect();
    if words.len() == 1 {
        elements.push(fnv1a(words[0].as_bytes()));
    }
    let mut digests: Vec<&str> = report
        .attachments
        .iter()
        .map(|a| a.sha256.as_str())
        .collect();
    digests.sort_unstable();
    elements.extend(digests.iter().map(|d| fnv1a(d.as_bytes())));
    if elements.is_empty() {
        return None;
    }
    let mut exact = Sha256::new();
    exact.update(words.join(" ").as_bytes());
    for d in &digests {
        exact.update(b"\n");
        exact.update(d.as_bytes());
    }
    let minhash = (0..MINHASH_SLOTS as u64)
        .map(|slot| {
            let seed = splitmix(slot.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xadb1_d9e5);
            elements
                .iter()
                .map(|e| (splitmix(e ^ seed) >> 32) as u32)
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect();
    Some(Fingerprint {
        exact: hex::encode(exact.finalize()),
        minhash,
    })
}

/// The most similar of `earlier` (fingerprint and what it is) at or over
/// [`NEAR_DUPLICATE`].
pub fn best_match<'a, T>(
    fingerprint: &Fingerprint,
    earlier: impl IntoIterator<Item = (&'a Fingerprint, T)>,
) -> Option<(f64, T)> {
    earlier
        .into_iter()
        .map(|(f, what)| (fingerprint.similarity(f), what))
        .filter(|(s, _)| *s >= NEAR_DUPLICATE)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// What a report shows of the things that help triage it, each found with a reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// Why we think it has a proof of concept (a code block, a script or patch), in
    /// our words only (never text from the report).
    pub proof_of_concept: Option<String>,
    /// The affected version it names.
    pub version: Option<String>,
    /// A CVSS vector: `Ok` when valid (CVSS 3.0, 3.1 or 4.0, as GitHub takes), `Err`
    /// with the vector and why not.
    pub cvss: Option<Result<String, String>>,
    /// CWE ids it names (`CWE-79`), at most five.
    pub cwe_ids: Vec<String>,
    /// A file or module path it names.
    pub file: Option<String>,
}

impl Signals {
    /// What would help that the report lacks, as a phrase for the acknowledgement
    /// ("the affected version and steps or code to reproduce it"), or `None`.
    pub fn missing(&self) -> Option<String> {
        let mut want = Vec::new();
        if self.version.is_none() {
            want.push("the affected version");
        }
        if self.proof_of_concept.is_none() {
            want.push("steps or code to reproduce it");
        }
        (!want.is_empty()).then(|| want.join(" and "))
    }

    /// One word per signal found, for the journal and `status` (`poc version cvss cwe
    /// file`).
    pub fn summary(&self) -> String {
        let mut s = Vec::new();
        if self.proof_of_concept.is_some() {
            s.push("poc");
        }
        if self.version.is_some() {
            s.push("version");
        }
        match &self.cvss {
            Some(Ok(_)) => s.push("cvss"),
            Some(Err(_)) => s.push("cvss-invalid"),
            None => {}
        }
        if !self.cwe_ids.is_empty() {
            s.push("cwe");
        }
        if self.file.is_some() {
            s.push("file");
        }
        s.join(" ")
    }
}

/// Extensions of attachments that are code or a patch.
const CODE_EXTENSIONS: &[&str] = &[
    "py", "js", "ts", "sh", "html", "htm", "patch", "diff", "rb", "php", "go", "rs", "c", "h",
    "java", "sql", "har", "pcap", "ipynb", "xml", "json", "yaml", "yml", "toml",
];

/// Whether the text holds a fenced block of code: a fence whose content is not an aligned
/// table (the `---+---` rule `mail::html` writes for an HTML table).
fn fenced_code(lines: &[&str]) -> bool {
    let is_fence = |l: &str| {
        let t = l.trim_start();
        t.starts_with("```") || t.starts_with("~~~")
    };
    let mut i = 0;
    while i < lines.len() {
        if !is_fence(lines[i]) {
            i += 1;
            continue;
        }
        let start = i + 1;
        i = start;
        while i < lines.len() && !is_fence(lines[i]) {
            i += 1;
        }
        let body = &lines[start..i.min(lines.len())];
        let ruled = body.iter().any(|l| {
            let t = l.trim();
            t.contains("-+-") && t.chars().all(|c| c == '-' || c == '+')
        });
        if !body.is_empty() && !ruled {
            return true;
        }
        i += 1;
    }
    false
}

/// Looks for the signals in the report's text and attachments.
pub fn signals(report: &Report) -> Signals {
    let text = &report.text;
    let mut s = Signals::default();

    let lines: Vec<&str> = text.lines().collect();
    let fence = fenced_code(&lines);
    let indented = lines.windows(2).any(|w| {
        w.iter()
            .all(|l| l.starts_with("    ") || l.starts_with('\t'))
    });
    let prompt = lines.iter().any(|l| {
        let t = l.trim_start();
        t.starts_with(">>> ") || t.starts_with("$ ") || t.starts_with("curl ")
    });
    let patch = lines
        .iter()
        .any(|l| l.starts_with("diff --git ") || l.starts_with("@@ -"));
    let attachment = report.attachments.iter().position(|a| {
        a.filename
            .as_deref()
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(_, e)| CODE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            || a.content_type.contains("patch")
            || a.content_type.contains("diff")
            || a.content_type.contains("python")
            || a.content_type.contains("javascript")
    });
    s.proof_of_concept = if let Some(i) = attachment {
        Some(format!("attachment {} is code or a patch", i + 1))
    } else if patch {
        Some("the text holds a patch".into())
    } else if fence || indented {
        Some("the text holds a code block".into())
    } else if prompt {
        Some("the text shows commands to run".into())
    } else {
        None
    };

    let tokens: Vec<&str> = text.split_whitespace().collect();
    s.version = tokens.iter().enumerate().find_map(|(i, t)| {
        let t = t.trim_matches(|c: char| !c.is_alphanumeric() && c != '.');
        let t = t.trim_end_matches('.');
        let bare = t.strip_prefix('v').unwrap_or(t);
        let dotted = |v: &str| {
            let parts: Vec<&str> = v.split('.').collect();
            parts.len() >= 2
                && parts.len() <= 4
                && parts.iter().all(|p| !p.is_empty() && p.len() <= 6)
                && parts[0].chars().all(|c| c.is_ascii_digit())
                && parts[1].chars().all(|c| c.is_ascii_digit())
        };
        let after_word = i > 0 && {
            let prev = tokens[i - 1].to_lowercase();
            let prev = prev.trim_matches(|c: char| !c.is_alphanumeric());
            matches!(prev, "version" | "versions" | "v" | "release" | "on" | "in")
                || prev.ends_with("version")
        };
        (dotted(bare) && (after_word || bare.matches('.').count() >= 2 || t.starts_with('v')))
            .then(|| bare.to_owned())
    });

    s.cvss = text.split_whitespace().find_map(|t| {
        let at = t.find("CVSS:")?;
        let vector = t[at..]
            .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_owned();
        Some(match vector.parse::<cvss::Cvss>() {
            Ok(cvss::Cvss::CvssV30(_) | cvss::Cvss::CvssV31(_) | cvss::Cvss::CvssV40(_)) => {
                Ok(vector)
            }
            Ok(_) => Err(format!("{vector}: GitHub takes CVSS 3.x or 4.0 only")),
            Err(e) => Err(format!("{vector}: {e}")),
        })
    });

    let upper = text.to_ascii_uppercase();
    for (at, _) in upper.match_indices("CWE-") {
        let digits: String = upper[at + 4..]
            .chars()
            .take_while(char::is_ascii_digit)
            .take(6)
            .collect();
        let id = format!("CWE-{digits}");
        if !digits.is_empty() && !s.cwe_ids.contains(&id) && s.cwe_ids.len() < 5 {
            s.cwe_ids.push(id);
        }
    }

    s.file = tokens.iter().find_map(|t| {
        let t =
            t.trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | '(' | ')' | ',' | ':' | ';'));
        let t = t.trim_end_matches('.');
        let looks = !t.contains("://")
            && t.len() <= 120
            && t.rsplit_once('.').is_some_and(|(stem, ext)| {
                !stem.is_empty()
                    && (stem.contains('/') || matches!(ext, "py" | "js" | "ts" | "rs" | "html"))
                    && matches!(
                        ext,
                        "py" | "js"
                            | "ts"
                            | "rs"
                            | "html"
                            | "c"
                            | "h"
                            | "go"
                            | "rb"
                            | "php"
                            | "pyi"
                    )
            });
        looks.then(|| t.to_owned())
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::fixture;

    fn with_text(text: &str) -> Report {
        let mut r = fixture("no-project.eml");
        r.text = text.into();
        r.attachments.clear();
        r
    }

    #[test]
    fn the_same_report_reworded_is_a_near_duplicate_and_another_one_is_not() {
        let a = with_text(
            "The safe_join function in werkzeug.security does not reject Windows paths \
             such as ..\\secret.txt, so send_from_directory serves any file. Steps: call \
             safe_join(\"C:/app\", \"..\\\\secret.txt\") on Windows and it returns a path \
             outside the directory.",
        );
        let b = with_text(
            "Hi! I found that the safe_join function in werkzeug.security does not reject \
             Windows paths such as ..\\secret.txt, so send_from_directory serves any file. \
             To reproduce: call safe_join(\"C:/app\", \"..\\\\secret.txt\") on Windows and it \
             returns a path outside the directory. Thanks",
        );
        let c = with_text(
            "The debugger PIN in werkzeug can be guessed because the machine id is read \
             from a world-readable file; an attacker on the same host can compute it.",
        );
        let (fa, fb, fc) = (
            fingerprint(&a).unwrap(),
            fingerprint(&b).unwrap(),
            fingerprint(&c).unwrap(),
        );
        assert!(
            fa.similarity(&fb) >= NEAR_DUPLICATE,
            "{}",
            fa.similarity(&fb)
        );
        assert!(fa.similarity(&fc) < 0.2, "{}", fa.similarity(&fc));
        let rewrapped = with_text(&a.text.replace(", so", ",\n> quoted\nso"));
        assert_eq!(fingerprint(&rewrapped).unwrap().exact, fa.exact);
        assert_eq!(
            Fingerprint::from_stored(fa.exact.clone(), &fa.minhash_bytes()),
            Some(fa.clone())
        );
        assert!(fingerprint(&with_text("  \n-- \nsig")).is_none());
    }

    #[test]
    fn the_triage_fixtures_are_told_apart() {
        let f = |name: &str| fingerprint(&fixture(&format!("triage/{name}"))).unwrap();
        let (a, b, c) = (f("dup-a.eml"), f("dup-b.eml"), f("unrelated.eml"));
        assert!(a.similarity(&b) >= NEAR_DUPLICATE, "{}", a.similarity(&b));
        assert!(a.similarity(&c) < 0.2, "{}", a.similarity(&c));
        assert!(best_match(&b, [(&a, "a"), (&c, "c")]).is_some_and(|(_, w)| w == "a"));
        assert!(best_match(&c, [(&a, "a"), (&b, "b")]).is_none());
    }

    #[test]
    fn the_fingerprint_hash_never_changes_between_releases() {
        // Stored in journals: a change here would make every earlier report unmatched.
        let f = fingerprint(&with_text("path traversal in safe_join")).unwrap();
        assert_eq!(
            &f.minhash[..4],
            &[1_063_946_743, 1_504_033_588, 1_449_570_237, 89_976_016]
        );
    }

    #[test]
    fn signals_are_found_with_their_reason() {
        let s = signals(&with_text(
            "Flask 3.0.2 is affected. CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N, CWE-22 \
             and cwe-23, in src/flask/helpers.py.\n\n```python\nprint(1)\n```",
        ));
        assert_eq!(s.version.as_deref(), Some("3.0.2"));
        assert_eq!(
            s.cvss,
            Some(Ok("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N".into()))
        );
        assert_eq!(s.cwe_ids, ["CWE-22", "CWE-23"]);
        assert_eq!(s.file.as_deref(), Some("src/flask/helpers.py"));
        assert_eq!(
            s.proof_of_concept.as_deref(),
            Some("the text holds a code block")
        );
        assert_eq!(s.missing(), None);
        assert_eq!(s.summary(), "poc version cvss cwe file");

        let s = signals(&with_text("CVSS:4.0/AV:N/AC:L/XX:Y is bad; see the site."));
        assert!(
            matches!(&s.cvss, Some(Err(e)) if e.starts_with("CVSS:4.0/AV:N/AC:L/XX:Y")),
            "{s:?}"
        );
        assert_eq!(
            s.missing().as_deref(),
            Some("the affected version and steps or code to reproduce it")
        );
    }
}
