//! The GitHub login a reporter states in a report ("@danaok on GitHub",
//! "github.com/danaok", "GitHub: danaok"), for a prefilled `reporter` credit. Pure; the
//! engine checks the login exists (`GET /users/{login}`) before it is used.

/// The login the report's own text states, if any: the explicit forms first, then a
/// profile link. Quoted lines (`>`) are not the reporter's words and are skipped.
pub fn stated_login(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('>'))
        .collect();
    lines
        .iter()
        .find_map(|l| explicit(l))
        .or_else(|| lines.iter().find_map(|l| profile_link(l)))
}

/// `@login on GitHub`, `@login (GitHub)`, `GitHub: @login`, `GitHub handle/username/
/// user/account/profile: login`, `my GitHub handle is @login`.
fn explicit(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    // `@login on GitHub` / `@login (GitHub)` / `@login at GitHub`.
    for (at, _) in line.match_indices('@') {
        let login = login_at(&line[at + 1..])?;
        let after = lower[at + 1 + login.len()..].trim_start();
        if ["on github", "(github", "at github", "on gh", "(gh)"]
            .iter()
            .any(|p| after.starts_with(p))
            && (at == 0 || !line[..at].ends_with(|c: char| c.is_ascii_alphanumeric()))
        {
            return Some(login);
        }
    }
    // `GitHub: login`, `GitHub handle: @login`, `my GitHub username is login`.
    let start = lower.find("github")?;
    let mut rest = &line[start + "github".len()..];
    let words = [
        "handle",
        "username",
        "user name",
        "user",
        "account",
        "profile",
        "login",
        "id",
    ];
    let trimmed = rest.trim_start();
    for w in words {
        if trimmed.len() >= w.len() && trimmed[..w.len()].eq_ignore_ascii_case(w) {
            rest = &trimmed[w.len()..];
            break;
        }
    }
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix("is "))
        .or_else(|| rest.strip_prefix("IS "))
        .or_else(|| rest.strip_prefix('-'))?;
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('@').unwrap_or(rest);
    if rest.to_ascii_lowercase().starts_with("github.com/") || rest.starts_with("https://") {
        return profile_link(rest);
    }
    login_at(rest)
}

/// `github.com/login` not followed by `/` (that is a repository or a page, not a person).
fn profile_link(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    for (at, _) in lower.match_indices("github.com/") {
        if at > 0
            && !lower[..at].ends_with(['/', ' ', '<', '(', '.', '@'])
            && !lower[..at].ends_with("www.")
        {
            continue;
        }
        let rest = &line[at + "github.com/".len()..];
        let Some(login) = login_at(rest) else {
            continue;
        };
        if rest[login.len()..].starts_with('/')
            || RESERVED.contains(&login.to_ascii_lowercase().as_str())
        {
            continue;
        }
        return Some(login);
    }
    None
}

/// First path segments of github.com that are pages, not accounts.
const RESERVED: &[&str] = &[
    "about",
    "advisories",
    "apps",
    "collections",
    "contact",
    "enterprise",
    "explore",
    "features",
    "issues",
    "login",
    "marketplace",
    "new",
    "notifications",
    "orgs",
    "pricing",
    "pulls",
    "search",
    "security",
    "settings",
    "signup",
    "sponsors",
    "topics",
    "trending",
];

/// A GitHub login at the start of `s`: 1–39 letters, digits or single inner hyphens,
/// ending at a character that cannot be part of one.
fn login_at(s: &str) -> Option<String> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(s.len());
    let login = &s[..end];
    let valid = (1..=39).contains(&login.len())
        && !login.starts_with('-')
        && !login.ends_with('-')
        && !login.contains("--");
    // `@example.com` is an address, not a handle.
    let next = s[end..].chars().next();
    let address =
        next == Some('.') && s[end + 1..].starts_with(|c: char| c.is_ascii_alphanumeric());
    (valid && !address).then(|| login.to_owned())
}

#[cfg(test)]
mod tests {
    use super::stated_login;

    #[test]
    fn the_usual_ways_of_stating_a_login_are_understood() {
        for (text, login) in [
            ("Thanks,\nDana (@danaok on GitHub)", "danaok"),
            ("I am @dana-ok (GitHub).", "dana-ok"),
            ("GitHub: @danaok", "danaok"),
            ("GitHub handle: danaok", "danaok"),
            ("My GitHub username is danaok.", "danaok"),
            ("Dana\nhttps://github.com/danaok", "danaok"),
            ("GitHub profile: https://github.com/danaok", "danaok"),
        ] {
            assert_eq!(stated_login(text).as_deref(), Some(login), "{text}");
        }
    }

    #[test]
    fn repositories_addresses_quotes_and_bad_logins_are_not_logins() {
        for text in [
            "see https://github.com/pallets/click/issues/1",
            "mail dana@github.com",
            "> @danaok on GitHub (quoted, not the sender's words)",
            "GitHub: -bad-",
            "https://github.com/settings",
            "the report body without any handle",
        ] {
            assert_eq!(stated_login(text), None, "{text}");
        }
    }
}
