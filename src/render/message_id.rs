//! The one scheme for the `Message-ID`s we send, both ways: [`make`] writes every id we
//! send (acknowledgements, follow-up notes, notices) and [`parse`] reads any of them back,
//! so a reply to any of our messages leads to its report even without the journal.
//!
//! Shape: `advisory-bridge.<report id>@<domain>` for a reply to a message (the id of the
//! message answered), `advisory-bridge.<report id>.<event>@<domain>` for a notice about
//! the report's advisory. The report id is 64 lower-case hex digits; the domain is the
//! one of our sender address, reduced to letters, digits, `.` and `-`.

use crate::mail::{Address, ReportId};

use super::notice::Event;

/// Every id we make starts with this.
const PREFIX: &str = "advisory-bridge.";

/// What one of our messages was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The acknowledgement of a report or the note answering a follow-up.
    Reply,
    /// A notice about a change of the report's advisory on GitHub.
    Notice(Event),
    /// The mail telling the maintainers of the report's new draft.
    Maintainers,
}

/// One of our `Message-ID`s, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurId {
    /// The report (or follow-up) the message answered.
    pub report: ReportId,
    /// What the message was.
    pub kind: Kind,
}

/// The domain of our ids: the sender address's, restricted to what a `msg-id` domain
/// may hold, or `localhost`.
pub fn domain(from: &Address) -> String {
    let domain: String = from
        .email
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
        .collect::<String>()
        .to_ascii_lowercase();
    if domain.is_empty() {
        "localhost".to_owned()
    } else {
        domain
    }
}

/// The `Message-ID` (without angle brackets) of our message of `kind` about `report`.
pub fn make(report: &ReportId, kind: Kind, from: &Address) -> String {
    let domain = domain(from);
    match kind {
        Kind::Reply => format!("{PREFIX}{report}@{domain}"),
        Kind::Notice(event) => format!("{PREFIX}{report}.{}@{domain}", event.as_str()),
        Kind::Maintainers => format!("{PREFIX}{report}.{MAINTAINERS}@{domain}"),
    }
}

/// The `Message-ID` kind suffix of mail to the maintainers.
const MAINTAINERS: &str = "maintainers";

/// The local part of digest ids after [`PREFIX`].
const DIGEST: &str = "digest.";

/// The `Message-ID` of the maintainers' digest for period `period` (the number of
/// digest intervals since the Unix epoch): the same on every attempt in that period.
pub fn digest(period: u64, from: &Address) -> String {
    format!("{PREFIX}{DIGEST}{period}@{}", domain(from))
}

/// Whether `message_id` is one of our mails to the maintainers (a new-draft mail or a
/// digest): a message answering one is a maintainer's reply, not a report.
pub fn is_to_maintainers(message_id: &str) -> bool {
    let id = message_id.trim_start_matches('<').trim_end_matches('>');
    id.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.starts_with(DIGEST)
            || matches!(
                parse(id),
                Some(OurId {
                    kind: Kind::Maintainers,
                    ..
                })
            )
    })
}

/// Reads one of our ids back; `None` for any other id.
pub fn parse(message_id: &str) -> Option<OurId> {
    let rest = message_id.strip_prefix(PREFIX)?;
    let (local, _domain) = rest.split_once('@')?;
    let (hex, kind) = match local.split_once('.') {
        None => (local, Kind::Reply),
        Some((hex, MAINTAINERS)) => (hex, Kind::Maintainers),
        Some((hex, event)) => (
            hex,
            Kind::Notice(Event::ALL.into_iter().find(|e| e.as_str() == event)?),
        ),
    };
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| OurId {
        report: ReportId(hex.to_ascii_lowercase()),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> Address {
        Address {
            name: None,
            email: "Security@Pallets\r\nProjects.com".into(),
        }
    }

    #[test]
    fn every_id_we_make_parses_back_to_its_report_and_kind() {
        let report = ReportId("ab".repeat(32));
        let mut kinds = vec![Kind::Reply, Kind::Maintainers];
        kinds.extend(Event::ALL.map(Kind::Notice));
        for kind in kinds {
            let id = make(&report, kind, &us());
            assert!(id.ends_with("@palletsprojects.com"), "{id}");
            assert_eq!(
                parse(&id),
                Some(OurId {
                    report: report.clone(),
                    kind
                }),
                "{id}"
            );
        }
    }

    #[test]
    fn mail_to_the_maintainers_is_told_apart() {
        let report = ReportId("ab".repeat(32));
        assert!(is_to_maintainers(&make(&report, Kind::Maintainers, &us())));
        assert!(is_to_maintainers(&format!("<{}>", digest(7, &us()))));
        assert!(!is_to_maintainers(&make(&report, Kind::Reply, &us())));
        assert!(!is_to_maintainers("digest.7@palletsprojects.com"));
    }

    #[test]
    fn other_ids_are_not_ours() {
        for id in [
            "abc@example.org",
            "advisory-bridge.1234@example.org",
            &format!("advisory-bridge.{}.unknown@x", "a".repeat(64)),
            &format!("advisory-bridge.{}", "a".repeat(64)),
        ] {
            assert_eq!(parse(id), None, "{id}");
        }
    }
}
