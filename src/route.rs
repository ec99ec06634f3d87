//! Decide which configured repository a report is about, and record why. Pure.

use crate::config::RepositoryConfig;
use crate::mail::Report;

/// The evidence that chose the repository, strongest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteReason {
    /// The report was sent to `security+TAG@`.
    PlusAddress(String),
    /// The report links to the repository on GitHub.
    GitHubUrl(String),
    /// The subject names an alias of the repository.
    SubjectAlias(String),
    /// The body names an alias of the repository.
    BodyAlias(String),
    /// Nothing named a configured repository.
    Default,
}

impl std::fmt::Display for RouteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteReason::PlusAddress(tag) => write!(f, "sent to the +{tag} address"),
            RouteReason::GitHubUrl(url) => write!(f, "the report links to {url}"),
            RouteReason::SubjectAlias(a) => write!(f, "the subject names \"{a}\""),
            RouteReason::BodyAlias(a) => write!(f, "the report text names \"{a}\""),
            RouteReason::Default => f.write_str("no project named; the default repository"),
        }
    }
}

/// The chosen repository and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `owner/name`, exactly as configured.
    pub repository: String,
    /// The evidence.
    pub reason: RouteReason,
}

/// Chooses the repository for a report.
///
/// `mailbox_address` is our security@ address (plus-tags are read from recipient and
/// delivery addresses with the same local part and domain); `default_repository` is used
/// when nothing matches.
///
/// Evidence, strongest first; the first kind that names a configured repository decides:
/// 1. a plus-address `LOCAL+TAG@DOMAIN` in the delivery headers, then in `To`/`Cc`,
///    whose `LOCAL` and `DOMAIN` are the mailbox's (case-insensitive) and whose `TAG` is
///    an alias;
/// 2. a GitHub URL of a configured repository (`https://github.com/OWNER/NAME`, also
///    `http`, `www.`, a trailing path or `.git`), first in the subject, then in the text,
///    the first such URL deciding;
/// 3. an alias in the subject as a whole word (case-insensitive; letters, digits, `-` and
///    `_` make up words, so `flask` does not match inside `flask-sqlalchemy`); when
///    several match, the longest alias wins, then the earliest;
/// 4. aliases in the text as whole words: the repository whose aliases are named most
///    often wins, ties going to the one named first; the reason shows its alias named
///    first. "Most often" because reports tend to mention the framework they run in
///    once or twice in passing and the affected project throughout;
/// 5. otherwise the default repository.
pub fn route(
    report: &Report,
    repositories: &[RepositoryConfig],
    default_repository: &str,
    mailbox_address: &str,
) -> Route {
    if let Some(route) = by_plus_address(report, repositories, mailbox_address) {
        return route;
    }
    for haystack in [&report.subject, &report.text] {
        if let Some(route) = by_github_url(haystack, repositories) {
            return route;
        }
    }
    if let Some((repo, alias)) = best_subject_alias(&report.subject, repositories) {
        return Route {
            repository: repo.name.clone(),
            reason: RouteReason::SubjectAlias(alias),
        };
    }
    if let Some((repo, alias)) = best_body_alias(&report.text, repositories) {
        return Route {
            repository: repo.name.clone(),
            reason: RouteReason::BodyAlias(alias),
        };
    }
    let repository = repositories
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(default_repository))
        .map_or_else(|| default_repository.to_owned(), |r| r.name.clone());
    Route {
        repository,
        reason: RouteReason::Default,
    }
}

fn by_plus_address(
    report: &Report,
    repositories: &[RepositoryConfig],
    mailbox_address: &str,
) -> Option<Route> {
    let (mbox_local, mbox_domain) = mailbox_address.trim().rsplit_once('@')?;
    let mbox_local = mbox_local.split('+').next().unwrap_or(mbox_local);
    let candidates = report
        .delivered_to
        .iter()
        .map(String::as_str)
        .chain(report.recipients.iter().map(|a| a.email.as_str()));
    for address in candidates {
        let Some((local, domain)) = address.trim().rsplit_once('@') else {
            continue;
        };
        let Some((base, tag)) = local.split_once('+') else {
            continue;
        };
        if !base.eq_ignore_ascii_case(mbox_local) || !domain.eq_ignore_ascii_case(mbox_domain) {
            continue;
        }
        let tag = tag.to_lowercase();
        if let Some(repo) = repositories.iter().find(|r| r.all_aliases().contains(&tag)) {
            return Some(Route {
                repository: repo.name.clone(),
                reason: RouteReason::PlusAddress(tag),
            });
        }
    }
    None
}

fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// The first GitHub URL in `haystack` that names a configured repository.
fn by_github_url(haystack: &str, repositories: &[RepositoryConfig]) -> Option<Route> {
    // ASCII lower-casing keeps byte offsets, so positions map back to `haystack`.
    let lower = haystack.to_ascii_lowercase();
    let needle = "github.com/";
    let mut from = 0;
    while let Some(found) = lower[from..].find(needle) {
        let at = from + found;
        from = at + needle.len();
        let host_start = if lower[..at].ends_with("www.") {
            at - 4
        } else {
            at
        };
        if lower[..host_start]
            .chars()
            .next_back()
            .is_some_and(|c| is_url_char(c) || c == '@')
        {
            continue; // e.g. `notgithub.com/` or `gist.github.com/`
        }
        let start = ["https://", "http://"]
            .iter()
            .find(|scheme| lower[..host_start].ends_with(*scheme))
            .map_or(host_start, |scheme| host_start - scheme.len());
        let path = &lower[from..];
        let owner_len = path.find(|c: char| !is_url_char(c)).unwrap_or(path.len());
        let owner = &path[..owner_len];
        let Some(rest) = path[owner_len..].strip_prefix('/') else {
            continue;
        };
        let name_len = rest.find(|c: char| !is_url_char(c)).unwrap_or(rest.len());
        let raw_name = &rest[..name_len];
        let name = raw_name.trim_end_matches('.');
        let name = name.strip_suffix(".git").unwrap_or(name);
        if owner.is_empty() || name.is_empty() {
            continue;
        }
        let full = format!("{owner}/{name}");
        if let Some(repo) = repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(&full))
        {
            let end = from + owner_len + 1 + name.len();
            return Some(Route {
                repository: repo.name.clone(),
                reason: RouteReason::GitHubUrl(haystack[start..end].to_owned()),
            });
        }
    }
    None
}

/// Characters that continue a word, so an alias must not touch them to match.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

/// Positions (in `lower`) where `alias` occurs as a whole word.
fn whole_word_matches(lower: &str, alias: &str) -> Vec<usize> {
    if alias.is_empty() {
        return Vec::new();
    }
    lower
        .match_indices(alias)
        .filter(|(i, _)| {
            let before = lower[..*i].chars().next_back();
            let after = lower[i + alias.len()..].chars().next();
            !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Every (repository, alias, positions) with at least one whole-word match.
fn alias_matches<'a>(
    text: &str,
    repositories: &'a [RepositoryConfig],
) -> Vec<(&'a RepositoryConfig, String, Vec<usize>)> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for repo in repositories {
        for alias in repo.all_aliases() {
            let positions = whole_word_matches(&lower, &alias);
            if !positions.is_empty() {
                found.push((repo, alias, positions));
            }
        }
    }
    found
}

fn best_subject_alias<'a>(
    subject: &str,
    repositories: &'a [RepositoryConfig],
) -> Option<(&'a RepositoryConfig, String)> {
    alias_matches(subject, repositories)
        .into_iter()
        .min_by_key(|(_, alias, pos)| (std::cmp::Reverse(alias.chars().count()), pos[0]))
        .map(|(repo, alias, _)| (repo, alias))
}

fn best_body_alias<'a>(
    text: &str,
    repositories: &'a [RepositoryConfig],
) -> Option<(&'a RepositoryConfig, String)> {
    // Count per repository (all its aliases together), so `jinja` and `jinja2` add up.
    let matches = alias_matches(text, repositories);
    let mut per_repo: Vec<(&RepositoryConfig, usize, usize, String)> = Vec::new();
    for (repo, alias, pos) in matches {
        match per_repo.iter_mut().find(|(r, ..)| std::ptr::eq(*r, repo)) {
            Some(entry) => {
                entry.1 += pos.len();
                if pos[0] < entry.2 {
                    entry.2 = pos[0];
                    entry.3 = alias;
                }
            }
            None => per_repo.push((repo, pos.len(), pos[0], alias)),
        }
    }
    per_repo
        .into_iter()
        .min_by_key(|(_, count, first, _)| (std::cmp::Reverse(*count), *first))
        .map(|(repo, _, _, alias)| (repo, alias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{Address, Limits, parse};

    const MAILBOX: &str = "security@palletsprojects.com";
    const DEFAULT: &str = "pallets/flask";

    fn repo(name: &str, aliases: &[&str]) -> RepositoryConfig {
        RepositoryConfig {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            ecosystem: "pip".into(),
            package: None,
        }
    }

    fn repos() -> Vec<RepositoryConfig> {
        vec![
            repo("pallets/flask", &[]),
            repo("pallets/werkzeug", &[]),
            repo("pallets/jinja", &["jinja2"]),
            repo("pallets/click", &[]),
            repo("pallets/markupsafe", &[]),
            repo("pallets-eco/flask-sqlalchemy", &["Flask-SQLAlchemy"]),
        ]
    }

    fn fixture(name: &str) -> Report {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_parts: 64,
            max_depth: 8,
            max_attachments: 16,
        };
        parse(&raw, &limits).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn report(subject: &str, text: &str) -> Report {
        let mut r = fixture("no-project.eml");
        r.subject = subject.into();
        r.text = text.into();
        r
    }

    fn route_of(r: &Report) -> Route {
        route(r, &repos(), DEFAULT, MAILBOX)
    }

    fn to(repository: &str, reason: RouteReason) -> Route {
        Route {
            repository: repository.into(),
            reason,
        }
    }

    #[test]
    fn a_plus_address_beats_everything_else() {
        assert_eq!(
            route_of(&fixture("plus-address.eml")),
            to(
                "pallets/werkzeug",
                RouteReason::PlusAddress("werkzeug".into())
            )
        );
    }

    #[test]
    fn a_plus_address_is_found_among_recipients_and_matches_aliases_case_insensitively() {
        let mut r = report("Jinja bug", "https://github.com/pallets/click");
        r.recipients.push(Address {
            name: None,
            email: "Security+Flask-SQLAlchemy@PalletsProjects.com".into(),
        });
        assert_eq!(
            route_of(&r),
            to(
                "pallets-eco/flask-sqlalchemy",
                RouteReason::PlusAddress("flask-sqlalchemy".into())
            )
        );
    }

    #[test]
    fn a_plus_address_of_another_mailbox_or_an_unknown_tag_is_no_evidence() {
        let mut r = report("Possible problem", "nothing named");
        r.delivered_to = vec![
            "security+click@example.org".into(),
            "other+click@palletsprojects.com".into(),
            "security+unknown@palletsprojects.com".into(),
        ];
        assert_eq!(route_of(&r), to("pallets/flask", RouteReason::Default));
    }

    #[test]
    fn a_link_to_a_configured_repository_routes_there() {
        assert_eq!(
            route_of(&fixture("github-link.eml")),
            to(
                "pallets/jinja",
                RouteReason::GitHubUrl("https://github.com/pallets/jinja".into())
            )
        );
    }

    #[test]
    fn github_url_variants_are_recognised() {
        for (text, url) in [
            (
                "see https://www.github.com/Pallets/Click/blob/main/x.py",
                "https://www.github.com/Pallets/Click",
            ),
            (
                "clone http://github.com/pallets/click.git now",
                "http://github.com/pallets/click",
            ),
            ("(github.com/pallets/click).", "github.com/pallets/click"),
            (
                "at https://github.com/pallets/click.",
                "https://github.com/pallets/click",
            ),
        ] {
            assert_eq!(
                route_of(&report("x", text)),
                to("pallets/click", RouteReason::GitHubUrl(url.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn lookalike_or_unconfigured_github_urls_are_ignored() {
        for text in [
            "https://notgithub.com/pallets/click",
            "https://gist.github.com/pallets/click",
            "https://github.com/evil/click",
            "https://github.com/pallets/clickjacking",
            "https://github.com/pallets",
        ] {
            let reason = route_of(&report("x", text)).reason;
            assert!(
                !matches!(reason, RouteReason::GitHubUrl(_)),
                "{text}: {reason:?}"
            );
        }
    }

    #[test]
    fn the_first_configured_url_wins_and_the_subject_comes_first() {
        let r = report(
            "About https://github.com/pallets/werkzeug",
            "https://github.com/other/thing https://github.com/pallets/click",
        );
        assert_eq!(route_of(&r).repository, "pallets/werkzeug");
        let r = report(
            "x",
            "https://github.com/other/thing https://github.com/pallets/click",
        );
        assert_eq!(route_of(&r).repository, "pallets/click");
    }

    #[test]
    fn an_alias_in_the_subject_routes_there() {
        assert_eq!(
            route_of(&fixture("subject-alias.eml")),
            to("pallets/click", RouteReason::SubjectAlias("click".into()))
        );
        assert_eq!(
            route_of(&fixture("plain-werkzeug.eml")),
            to(
                "pallets/werkzeug",
                RouteReason::SubjectAlias("werkzeug".into())
            )
        );
        assert_eq!(
            route_of(&fixture("shift-jis.eml")),
            to("pallets/jinja", RouteReason::SubjectAlias("jinja2".into()))
        );
    }

    #[test]
    fn a_subject_alias_must_be_a_whole_word() {
        let r = report("Flask-SQLAlchemy leaks the engine URL", "");
        assert_eq!(
            route_of(&r),
            to(
                "pallets-eco/flask-sqlalchemy",
                RouteReason::SubjectAlias("flask-sqlalchemy".into())
            )
        );
        assert_eq!(
            route_of(&report("clicking a link", "")).reason,
            RouteReason::Default
        );
        assert_eq!(
            route_of(&report("flasks and flasky", "")).reason,
            RouteReason::Default
        );
    }

    #[test]
    fn the_longest_subject_alias_wins() {
        let r = report("Flask app using flask-sqlalchemy", "");
        assert_eq!(route_of(&r).repository, "pallets-eco/flask-sqlalchemy");
    }

    #[test]
    fn the_alias_named_most_often_in_the_body_wins() {
        let r = report(
            "Security issue",
            "My Flask app uses the werkzeug router. In werkzeug.routing the converter ... werkzeug",
        );
        assert_eq!(
            route_of(&r),
            to(
                "pallets/werkzeug",
                RouteReason::BodyAlias("werkzeug".into())
            )
        );
    }

    #[test]
    fn a_body_tie_goes_to_the_alias_named_first() {
        let r = report("Security issue", "MarkupSafe, used by Jinja, ...");
        assert_eq!(
            route_of(&r),
            to(
                "pallets/markupsafe",
                RouteReason::BodyAlias("markupsafe".into())
            )
        );
    }

    #[test]
    fn an_html_report_naming_flask_in_its_body_routes_to_flask() {
        assert_eq!(
            route_of(&fixture("html-latin1.eml")),
            to("pallets/flask", RouteReason::BodyAlias("flask".into()))
        );
    }

    #[test]
    fn a_report_naming_no_project_goes_to_the_default_with_its_configured_spelling() {
        let r = fixture("no-project.eml");
        assert_eq!(route_of(&r), to("pallets/flask", RouteReason::Default));
        assert_eq!(
            route(&r, &repos(), "Pallets/Flask", MAILBOX),
            to("pallets/flask", RouteReason::Default)
        );
    }

    #[test]
    fn a_patch_report_names_markupsafe_in_its_subject() {
        assert_eq!(
            route_of(&fixture("patch-and-binary.eml")),
            to(
                "pallets/markupsafe",
                RouteReason::SubjectAlias("markupsafe".into())
            )
        );
    }
}
