//! Which earlier report a message continues: the evidence a follow-up carries
//! (`In-Reply-To`, `References`, our reply's `Message-ID`, a GHSA id in the subject).
//! Pure: the daemon looks the candidates up in the journal (and on GitHub).

use crate::mail::{Report, ReportId};

/// The alphabet GitHub uses in the three groups of a GHSA id.
const GHSA_ALPHABET: &str = "23456789cfghjmpqrvwx";

/// The message ids a message refers to, most specific first: `In-Reply-To`, then
/// `References` from the newest to the oldest.
pub fn referenced_ids(report: &Report) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    report
        .in_reply_to
        .iter()
        .chain(report.references.iter().rev())
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// The report one of our messages (a reply or a notice) was about, read from its
/// `Message-ID` (see `render::message_id`). Works without the journal, which is what
/// lets a follow-up find its advisory after the journal is lost.
pub fn report_of_our_reply(message_id: &str) -> Option<ReportId> {
    crate::render::message_id::parse(message_id).map(|ours| ours.report)
}

/// Every GHSA id in `text`, normalised to GitHub's spelling (`GHSA-` then lower case).
pub fn ghsa_ids(text: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut found = Vec::new();
    let mut start = 0;
    while let Some(pos) = lower[start..].find("ghsa-") {
        let at = start + pos;
        start = at + 5;
        // Not the tail of a longer word.
        if at > 0 && bytes[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let Some(candidate) = lower.get(at + 5..at + 19) else {
            continue;
        };
        let groups: Vec<&str> = candidate.split('-').collect();
        let well_formed = groups.len() == 3
            && groups
                .iter()
                .all(|g| g.len() == 4 && g.chars().all(|c| GHSA_ALPHABET.contains(c)));
        let ends = bytes
            .get(at + 19)
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        if well_formed && ends {
            let id = format!("GHSA-{candidate}");
            if !found.contains(&id) {
                found.push(id);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ghsa_id_in_a_reply_subject_is_found_in_any_case() {
        assert_eq!(
            ghsa_ids("Re: XSS in werkzeug [GHSA-2345-6789-CFGH]"),
            vec!["GHSA-2345-6789-cfgh"]
        );
        assert!(ghsa_ids("GHSA-abcd-efgh-ijkl uses letters GitHub never uses").is_empty());
        assert!(ghsa_ids("xGHSA-2345-6789-cfgh").is_empty());
        assert!(ghsa_ids("GHSA-2345-6789-cfghh").is_empty());
    }

    #[test]
    fn our_reply_ids_name_the_report_they_answered() {
        let hex = "ab".repeat(32);
        assert_eq!(
            report_of_our_reply(&format!("advisory-bridge.{hex}@palletsprojects.com")),
            Some(ReportId(hex))
        );
        assert_eq!(report_of_our_reply("advisory-bridge.xyz@example.org"), None);
        assert_eq!(report_of_our_reply("someone-else@example.org"), None);
    }
}
