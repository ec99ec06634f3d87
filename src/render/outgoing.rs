//! Every message we send (acknowledgement, follow-up note, notices) is built here, by one
//! set of rules: the subject cut and tagged once, `References` capped, only header-safe
//! ids, and our own `Message-ID`s made by [`super::message_id`]. Pure.

use crate::config::ReplyConfig;
use crate::mail::clean::{single_line, truncate_chars};
use crate::mail::{Address, Report};

use super::advisory::strip_subject;
use super::message_id::{self, Kind};

/// The advisory a reply refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvisoryRef {
    /// `GHSA-xxxx-xxxx-xxxx`.
    pub ghsa_id: String,
    /// The advisory's page (visible to maintainers and, once added, the reporter).
    pub html_url: String,
    /// `owner/name`.
    pub repository: String,
}

/// A reply ready for SMTP: every header value already single-line and safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMessage {
    /// Recipient.
    pub to: Address,
    /// Sender (our security@ address and display name).
    pub from: Address,
    /// `Re: <subject> [GHSA-…]`.
    pub subject: String,
    /// Stable `Message-ID` without angle brackets, derived from the report id.
    pub message_id: String,
    /// The report's `Message-ID`, if it had one.
    pub in_reply_to: Option<String>,
    /// The report's `References` followed by its `Message-ID`.
    pub references: Vec<String>,
    /// Plain-text body.
    pub body: String,
    /// The recipient's armoured OpenPGP key: when set (and `[pgp]` is), the message
    /// goes out encrypted to it and to us, and signed.
    pub encrypt_to: Option<String>,
}

/// Why the reply template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template file could not be read.
    #[error("cannot read reply template {path}: {source}")]
    Read {
        /// The template file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template is not valid minijinja or failed to render.
    #[error("reply template {name}: {message}")]
    Render {
        /// The template's name or path.
        name: String,
        /// minijinja's message.
        message: String,
    },
}

/// The reply templates, loaded once at start so a broken template fails `check`.
pub struct Templates {
    env: minijinja::Environment<'static>,
    name: String,
    followup_name: String,
}

/// The built-in acknowledgement, used when `[reply] template` is not set.
const BUILTIN_TEMPLATE: &str = include_str!("reply.txt.j2");
const BUILTIN_NAME: &str = "built-in reply.txt.j2";
/// The built-in note to follow-ups, used when `[reply] followup_template` is not set.
const BUILTIN_FOLLOWUP_TEMPLATE: &str = include_str!("followup-reply.txt.j2");
const BUILTIN_FOLLOWUP_NAME: &str = "built-in followup-reply.txt.j2";

/// Reads a configured template file, or takes the built-in one.
fn template_source(
    path: Option<&std::path::Path>,
    builtin_name: &str,
    builtin: &str,
) -> Result<(String, String), TemplateError> {
    match path {
        Some(path) => Ok((
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
                path: path.to_owned(),
                source,
            })?,
        )),
        None => Ok((builtin_name.to_owned(), builtin.to_owned())),
    }
}

impl Templates {
    /// Loads the configured template, or the built-in one when none is configured.
    ///
    /// Undefined variables are errors, not empty strings, and the template is rendered
    /// once with sample values here, so a typo fails at start (and in `check`) rather
    /// than when the first reporter is waiting for an answer. No auto-escaping: the
    /// result is plain text.
    pub fn load(settings: &ReplyConfig) -> Result<Templates, TemplateError> {
        let (name, source) =
            template_source(settings.template.as_deref(), BUILTIN_NAME, BUILTIN_TEMPLATE)?;
        let (followup_name, followup_source) = template_source(
            settings.followup_template.as_deref(),
            BUILTIN_FOLLOWUP_NAME,
            BUILTIN_FOLLOWUP_TEMPLATE,
        )?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_template_owned(name.clone(), source)
            .map_err(|e| render_error(&name, &e))?;
        env.add_template_owned(followup_name.clone(), followup_source)
            .map_err(|e| render_error(&followup_name, &e))?;
        let templates = Templates {
            env,
            name,
            followup_name,
        };
        let sample = ReplyVars {
            reporter_name: "Ada Reporter".into(),
            collaborator: "ada-reporter".into(),
            missing: "the affected version".into(),
            ghsa_id: "GHSA-xxxx-xxxx-xxxx".into(),
            advisory_url: "https://github.com/owner/name/security/advisories/GHSA-xxxx-xxxx-xxxx"
                .into(),
            repository: "owner/name".into(),
            policy_url: settings.policy_url.clone(),
            project_name: settings.project_name.clone(),
            subject: "Sample subject".into(),
        };
        templates.render(&templates.name, &sample)?;
        templates.render(&templates.followup_name, &sample)?;
        Ok(templates)
    }

    fn render(&self, name: &str, vars: &ReplyVars) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|e| render_error(name, &e))?;
        template
            .render(minijinja::context! {
                reporter_name => vars.reporter_name,
                collaborator => vars.collaborator,
                missing => vars.missing,
                ghsa_id => vars.ghsa_id,
                advisory_url => vars.advisory_url,
                repository => vars.repository,
                policy_url => vars.policy_url,
                project_name => vars.project_name,
                subject => vars.subject,
            })
            .map_err(|e| render_error(name, &e))
    }
}

/// The values a reply template can use.
struct ReplyVars {
    reporter_name: String,
    collaborator: String,
    missing: String,
    ghsa_id: String,
    advisory_url: String,
    repository: String,
    policy_url: String,
    project_name: String,
    subject: String,
}

fn render_error(name: &str, e: &minijinja::Error) -> TemplateError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    TemplateError::Render {
        name: name.to_owned(),
        message,
    }
}

/// Most `References` entries kept, as mail clients do: the thread's first message and
/// the most recent ones.
const MAX_REFERENCES: usize = 20;
/// Longest subject text kept in the reply's subject, in characters.
const REPLY_SUBJECT_CHARS: usize = 160;

/// Renders the acknowledgement for a report.
///
/// The body never quotes the report; only the subject and the reporter's display name
/// come from the message, both single-line. Threading: `In-Reply-To` is the report's
/// `Message-ID`, `References` the report's references plus its id (deduplicated, at most
/// 20, keeping the first); ids that are not plain visible ASCII are left
/// out so no header can be bent. The reply's own `Message-ID` is derived from the report
/// id, so a resent acknowledgement is recognisably the same message. A subject already
/// ending in the advisory's `[GHSA-…]` tag (an answer to one of our replies) is not
/// tagged twice.
pub fn reply(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    reply_inviting(report, to, advisory, from, settings, templates, None)
}

/// [`reply`] telling the reporter that GitHub account `collaborator` was added to the
/// draft (`[advisory] invite_reporter`), so they can open it.
pub fn reply_inviting(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
    collaborator: Option<&str>,
) -> Result<ReplyMessage, TemplateError> {
    reply_with(
        &templates.name,
        report,
        to,
        advisory,
        from,
        settings,
        templates,
        collaborator,
        crate::triage::signals(report).missing(),
    )
}

/// Renders the short note that answers a follow-up (same threading and `Message-ID`
/// rules as [`reply`], body from the follow-up template).
pub fn followup_reply(
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
) -> Result<ReplyMessage, TemplateError> {
    reply_with(
        &templates.followup_name,
        report,
        to,
        advisory,
        from,
        settings,
        templates,
        None,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn reply_with(
    template: &str,
    report: &Report,
    to: &Address,
    advisory: &AdvisoryRef,
    from: &Address,
    settings: &ReplyConfig,
    templates: &Templates,
    collaborator: Option<&str>,
    missing: Option<String>,
) -> Result<ReplyMessage, TemplateError> {
    let ghsa = single_line(&advisory.ghsa_id);
    let body = templates.render(
        template,
        &ReplyVars {
            reporter_name: to
                .name
                .as_deref()
                .or(report.from.as_ref().and_then(|f| f.name.as_deref()))
                .map(single_line)
                .unwrap_or_default(),
            collaborator: collaborator.map(single_line).unwrap_or_default(),
            missing: missing.unwrap_or_default(),
            ghsa_id: ghsa.clone(),
            advisory_url: single_line(&advisory.html_url),
            repository: single_line(&advisory.repository),
            policy_url: settings.policy_url.clone(),
            project_name: settings.project_name.clone(),
            subject: single_line(&report.subject),
        },
    )?;
    Ok(compose(Outgoing {
        to,
        from,
        subject: &report.subject,
        ghsa: &ghsa,
        message_id: message_id::make(&report.report_id, Kind::Reply, from),
        in_reply_to: report.message_id.as_deref(),
        references: &report.references,
        body,
    }))
}

/// Renders the note to a reporter whose encrypted message our key could not open: that
/// nobody could read it, nothing was filed, and `where_our_key_is` (the `[pgp] key_url`
/// or the key itself). Threaded like [`reply`]; says nothing of what the message said.
pub fn unreadable_reply(
    report: &Report,
    to: &Address,
    from: &Address,
    settings: &ReplyConfig,
    where_our_key_is: &str,
) -> ReplyMessage {
    let name = to
        .name
        .as_deref()
        .map(single_line)
        .filter(|n| !n.is_empty())
        .map_or_else(|| "Hello,".to_owned(), |n| format!("Hello {n},"));
    let mut body = format!(
        "{name}\n\nthank you for your message to {address}. It was encrypted, but not \
         in a way we can decrypt (it may be encrypted to another key, or damaged on the \
         way), so nobody has read it and nothing was filed.\n\n\
         Please send it again, encrypted to our current OpenPGP key.",
        address = single_line(&from.email),
    );
    if !where_our_key_is.is_empty() {
        body.push_str(&format!(" {where_our_key_is}"));
    }
    body.push_str(&format!(
        "\n\nOur security policy: {}\n\nThis is an automated message.\n",
        settings.policy_url
    ));
    compose(Outgoing {
        to,
        from,
        subject: &report.subject,
        ghsa: "",
        message_id: message_id::make(&report.report_id, Kind::Reply, from),
        in_reply_to: report.message_id.as_deref(),
        references: &report.references,
        body,
    })
}

/// What one outgoing message says and answers, before the shared rules are applied.
pub(crate) struct Outgoing<'a> {
    /// Recipient.
    pub to: &'a Address,
    /// Us.
    pub from: &'a Address,
    /// The subject of the report the thread is about, as the reporter wrote it.
    pub subject: &'a str,
    /// The advisory's id, tagged onto the subject once.
    pub ghsa: &'a str,
    /// Our own id for this message (see [`message_id::make`]).
    pub message_id: String,
    /// The message this one answers.
    pub in_reply_to: Option<&'a str>,
    /// The thread before `in_reply_to`, oldest first.
    pub references: &'a [String],
    /// The text.
    pub body: String,
}

/// Applies the rules every message we send follows: `Re: <subject> [GHSA-…]` with the
/// subject stripped of reply prefixes, cut to [`REPLY_SUBJECT_CHARS`] and not tagged
/// twice; `In-Reply-To` only when header-safe; `References` the thread plus the answered
/// id, header-safe, each once, at most [`MAX_REFERENCES`] keeping the first; addresses on
/// one line.
pub(crate) fn compose(o: Outgoing<'_>) -> ReplyMessage {
    let stripped = untagged(&strip_subject(o.subject), o.ghsa);
    let subject_text = if stripped.is_empty() {
        "Your security report".to_owned()
    } else if stripped.chars().count() > REPLY_SUBJECT_CHARS {
        format!(
            "{}…",
            truncate_chars(&stripped, REPLY_SUBJECT_CHARS - 1).trim_end()
        )
    } else {
        stripped
    };
    let in_reply_to = o.in_reply_to.and_then(clean_id);
    let references = references(
        o.references
            .iter()
            .map(String::as_str)
            .chain(in_reply_to.as_deref()),
    );
    ReplyMessage {
        to: safe_address(o.to),
        from: safe_address(o.from),
        subject: if o.ghsa.is_empty() {
            format!("Re: {subject_text}")
        } else {
            format!("Re: {subject_text} [{}]", o.ghsa)
        },
        message_id: o.message_id,
        in_reply_to,
        references,
        body: o.body,
        encrypt_to: None,
    }
}

/// `subject` without a trailing `[GHSA-…]` tag for `ghsa` (any case), so a report that
/// answers one of our replies (a follow-up) is not tagged twice.
fn untagged(subject: &str, ghsa: &str) -> String {
    let tag = format!("[{ghsa}]").to_ascii_lowercase();
    let lower = subject.to_ascii_lowercase();
    match lower.strip_suffix(&tag) {
        // ASCII lower-casing keeps byte offsets, so the cut is on a character boundary.
        Some(rest) if !ghsa.is_empty() => subject[..rest.len()].trim_end().to_owned(),
        _ => subject.to_owned(),
    }
}

/// Longest message id we put in a header; longer ones are nobody's in good faith.
const MAX_ID_LEN: usize = 250;

/// A message id that can go between angle brackets in a header unchanged: visible ASCII
/// except `<` and `>`, at most 250 bytes.
pub fn header_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// `raw` without surrounding white space and angle brackets, if what is left is
/// [`header_safe_id`]; an id that is not is left out whole, never repaired into another.
pub fn clean_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    header_safe_id(id).then(|| id.to_owned())
}

/// A `References` list from a thread, oldest first: clean ids, each once, at most
/// [`MAX_REFERENCES`] (the first one and the latest ones, as RFC 5322 section 3.6.4
/// allows). Linear in the number of ids.
pub fn references<'a>(thread: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut ids: Vec<String> = thread
        .into_iter()
        .filter_map(clean_id)
        .filter(|id| seen.insert(id.clone()))
        .collect();
    if ids.len() > MAX_REFERENCES {
        let tail = ids.split_off(ids.len() - (MAX_REFERENCES - 1));
        ids.truncate(1);
        ids.extend(tail);
    }
    ids
}

fn safe_address(a: &Address) -> Address {
    Address {
        name: a.name.as_deref().map(single_line).filter(|n| !n.is_empty()),
        email: single_line(&a.email),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::fixture;

    fn ghsa() -> AdvisoryRef {
        AdvisoryRef {
            ghsa_id: "GHSA-abcd-efgh-ijkl".into(),
            html_url: "https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl"
                .into(),
            repository: "pallets/werkzeug".into(),
        }
    }

    fn us() -> Address {
        Address {
            name: Some("Pallets Security".into()),
            email: "security@palletsprojects.com".into(),
        }
    }

    fn pallets() -> ReplyConfig {
        ReplyConfig {
            project_name: "Pallets".into(),
            ..ReplyConfig::default()
        }
    }

    fn reply_to(report: &Report) -> ReplyMessage {
        let settings = pallets();
        let templates = Templates::load(&settings).expect("built-in template loads");
        let to = report.from.clone().unwrap();
        reply(report, &to, &ghsa(), &us(), &settings, &templates).expect("reply renders")
    }

    #[test]
    fn the_acknowledgement_keeps_the_policy_promises_and_is_threaded() {
        let r = fixture("plain-werkzeug.eml");
        let m = reply_to(&r);
        assert_eq!(
            m.subject,
            "Re: Path traversal in Werkzeug safe_join on Windows [GHSA-abcd-efgh-ijkl]"
        );
        assert_eq!(
            m.message_id,
            format!("advisory-bridge.{}@palletsprojects.com", r.report_id)
        );
        assert_eq!(
            m.in_reply_to.as_deref(),
            Some("20261124091500.4242@mail.example.net")
        );
        assert_eq!(m.references, vec!["20261124091500.4242@mail.example.net"]);
        assert_eq!(m.to.email, "alice@example.net");
        assert_eq!(m.from, us());
        let body = &m.body;
        for promise in [
            "Hello Alice Reporter,",
            "Thank you for reporting a security issue to Pallets.",
            "private draft GitHub security advisory,\nGHSA-abcd-efgh-ijkl, in the pallets/werkzeug repository",
            "https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl",
            "volunteers working in their free time",
            "cannot guarantee any specific timeline",
            "work with you to understand the issue and decide on its validity",
            "We will obtain a CVE id as well; please do not request one yourself.",
            "keep the issue private",
            "https://palletsprojects.com/security",
            "reply to this email",
        ] {
            assert!(body.contains(promise), "missing {promise:?} in:\n{body}");
        }
        assert!(!body.contains("safe_join"), "the report is never quoted");
        assert!(!body.contains("{{") && !body.contains("{%"));
    }

    #[test]
    fn a_hostile_subject_cannot_inject_headers_into_the_reply() {
        let m = reply_to(&fixture("hostile.eml"));
        assert!(
            !m.subject.contains(['\r', '\n', '\u{202E}']),
            "{:?}",
            m.subject
        );
        assert!(
            m.subject
                .starts_with("Re: Flask bug Bcc: victim@example.org")
        );
        assert!(m.subject.ends_with(" [GHSA-abcd-efgh-ijkl]"));
        assert!(!m.to.name.unwrap().contains(['\r', '\n']));
        assert!(!m.body.contains("@davidism"));
    }

    #[test]
    fn a_follow_up_subject_already_tagged_is_not_tagged_twice() {
        let mut r = fixture("no-project.eml");
        r.subject = "Re: Re: Session fixation [ghsa-ABCD-efgh-ijkl]".into();
        assert_eq!(
            reply_to(&r).subject,
            "Re: Session fixation [GHSA-abcd-efgh-ijkl]"
        );
        r.subject = "[GHSA-abcd-efgh-ijkl] first, then text".into();
        assert_eq!(
            reply_to(&r).subject,
            "Re: first, then text [GHSA-abcd-efgh-ijkl]",
            "a leading tag goes like any [tag]"
        );
    }

    #[test]
    fn a_long_subject_is_cut_and_a_missing_one_replaced() {
        let mut r = fixture("no-project.eml");
        r.subject = format!("Fwd: {}", "word ".repeat(100));
        let m = reply_to(&r);
        assert!(m.subject.chars().count() < 200, "{}", m.subject);
        assert!(m.subject.contains("…"));
        r.subject = String::new();
        assert_eq!(
            reply_to(&r).subject,
            "Re: Your security report [GHSA-abcd-efgh-ijkl]"
        );
    }

    #[test]
    fn references_are_deduplicated_limited_and_header_safe() {
        let mut r = fixture("no-project.eml");
        r.references = (0..30).map(|i| format!("ref{i}@example.org")).collect();
        r.references.push("noproj-1@example.org".into());
        r.references.push("bad id\r\nX: y".into());
        let m = reply_to(&r);
        assert_eq!(m.references.len(), 20);
        assert_eq!(m.references[0], "ref0@example.org");
        assert_eq!(m.references.last().unwrap(), "noproj-1@example.org");
        assert_eq!(
            m.references
                .iter()
                .filter(|x| *x == "noproj-1@example.org")
                .count(),
            1
        );
        assert!(m.references.iter().all(|id| header_safe_id(id)));
        r.message_id = None;
        assert_eq!(reply_to(&r).in_reply_to, None);
    }

    #[test]
    fn a_custom_template_is_used_and_a_typo_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.j2");
        std::fs::write(
            &good,
            "Dear {{ reporter_name }}: {{ ghsa_id }} <{{ advisory_url }}> & {{ subject }}\n",
        )
        .unwrap();
        let settings = ReplyConfig {
            template: Some(good),
            ..pallets()
        };
        let templates = Templates::load(&settings).unwrap();
        let r = fixture("html-latin1.eml");
        let m = reply(
            &r,
            r.from.as_ref().unwrap(),
            &ghsa(),
            &us(),
            &settings,
            &templates,
        )
        .unwrap();
        assert_eq!(
            m.body,
            "Dear José Müller: GHSA-abcd-efgh-ijkl <https://github.com/pallets/werkzeug/security/advisories/GHSA-abcd-efgh-ijkl> & Problème de sécurité dans la session\n",
            "no HTML escaping in text mail"
        );

        let typo = dir.path().join("typo.j2");
        std::fs::write(&typo, "Hello {{ reporter_nmae }}\n").unwrap();
        let err = Templates::load(&ReplyConfig {
            template: Some(typo.clone()),
            ..pallets()
        })
        .err()
        .expect("undefined variable is an error");
        let msg = err.to_string();
        assert!(
            msg.contains("typo.j2") && msg.contains("undefined"),
            "{msg}"
        );

        let broken = dir.path().join("broken.j2");
        std::fs::write(&broken, "Hello {% if %}\n").unwrap();
        assert!(matches!(
            Templates::load(&ReplyConfig {
                template: Some(broken),
                ..pallets()
            }),
            Err(TemplateError::Render { .. })
        ));

        let missing = dir.path().join("missing.j2");
        assert!(matches!(
            Templates::load(&ReplyConfig {
                template: Some(missing),
                ..pallets()
            }),
            Err(TemplateError::Read { .. })
        ));
    }

    #[test]
    fn long_reference_chains_keep_the_first_and_the_latest() {
        let raw: Vec<String> = (0..30).map(|i| format!("<m{i}@x>")).collect();
        let kept = references(raw.iter().map(String::as_str));
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "m0@x");
        assert_eq!(kept.last().unwrap(), "m29@x");
        assert_eq!(kept[1], "m11@x");
    }

    #[test]
    fn message_ids_lose_brackets_and_broken_ones_are_dropped_not_repaired() {
        assert_eq!(clean_id(" <a@b> ").as_deref(), Some("a@b"));
        assert_eq!(clean_id("<a b\r\n@c>"), None);
        assert_eq!(clean_id("<>"), None);
        assert_eq!(clean_id(&"x".repeat(300)), None);
    }
}
