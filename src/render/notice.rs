//! Notices that keep a reporter informed when their advisory changes on GitHub
//! (published, CVE assigned, closed, withdrawn): one template per event, sent in the
//! report's thread. Pure.

use std::path::Path;

use crate::journal::AdvisoryState;
use crate::mail::{Address, ReportId};
use crate::render::message_id::{self, Kind};
use crate::render::outgoing::{Outgoing, compose};
use crate::render::{ReplyMessage, TemplateError};

/// A change on GitHub a reporter hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The advisory was published.
    Published,
    /// A CVE id was assigned (before publication).
    CveAssigned,
    /// The advisory was closed without publication.
    Closed,
    /// A published advisory was withdrawn.
    Withdrawn,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 4] = [
        Event::Published,
        Event::CveAssigned,
        Event::Closed,
        Event::Withdrawn,
    ];

    /// The name stored in the journal and used in file names and Message-IDs.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Published => "published",
            Event::CveAssigned => "cve",
            Event::Closed => "closed",
            Event::Withdrawn => "withdrawn",
        }
    }

    fn builtin(self) -> &'static str {
        match self {
            Event::Published => include_str!("notice-published.txt.j2"),
            Event::CveAssigned => include_str!("notice-cve.txt.j2"),
            Event::Closed => include_str!("notice-closed.txt.j2"),
            Event::Withdrawn => include_str!("notice-withdrawn.txt.j2"),
        }
    }
}

/// The events a change from (`old_state`, `old_cve`) to (`new_state`, `new_cve`) means.
/// A publication that brings its CVE along is one notice, not two.
pub fn transitions(
    old_state: AdvisoryState,
    old_cve: Option<&str>,
    new_state: AdvisoryState,
    new_cve: Option<&str>,
) -> Vec<Event> {
    let mut events = Vec::new();
    if new_state != old_state {
        match new_state {
            AdvisoryState::Published => events.push(Event::Published),
            AdvisoryState::Closed => events.push(Event::Closed),
            AdvisoryState::Withdrawn => events.push(Event::Withdrawn),
            AdvisoryState::Draft | AdvisoryState::Triage => {}
        }
    }
    if new_cve.is_some() && old_cve.is_none() && !events.contains(&Event::Published) {
        events.push(Event::CveAssigned);
    }
    events
}

/// The notice templates, loaded and checked once at start.
pub struct NoticeTemplates {
    env: minijinja::Environment<'static>,
}

/// What a notice is about.
#[derive(Debug, Clone)]
pub struct NoticeContext<'a> {
    /// The original report.
    pub report_id: &'a ReportId,
    /// Its subject.
    pub subject: &'a str,
    /// Its `Message-ID`, and our acknowledgement's, for threading.
    pub thread: Vec<String>,
    /// `GHSA-…`.
    pub ghsa_id: &'a str,
    /// The advisory page.
    pub advisory_url: &'a str,
    /// `owner/name`.
    pub repository: &'a str,
    /// The CVE id, when there is one.
    pub cve_id: Option<&'a str>,
    /// The policy URL.
    pub policy_url: &'a str,
    /// Who "we" are.
    pub project_name: &'a str,
}

impl NoticeTemplates {
    /// Loads the built-in templates, each replaced by `DIR/notice-<event>.txt.j2` when
    /// `dir` is set and holds that file; renders each once with sample values.
    pub fn load(dir: Option<&Path>) -> Result<NoticeTemplates, TemplateError> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        for event in Event::ALL {
            let name = format!("notice-{}.txt.j2", event.as_str());
            let source = match dir.map(|d| d.join(&name)).filter(|p| p.exists()) {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|source| TemplateError::Read { path, source })?,
                None => event.builtin().to_owned(),
            };
            env.add_template_owned(name.clone(), source)
                .map_err(|e| TemplateError::Render {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
        }
        let templates = NoticeTemplates { env };
        let id = ReportId("0".repeat(64));
        for event in Event::ALL {
            templates.body(
                event,
                &NoticeContext {
                    report_id: &id,
                    subject: "Sample",
                    thread: Vec::new(),
                    ghsa_id: "GHSA-xxxx-xxxx-xxxx",
                    advisory_url: "https://github.com/o/n/security/advisories/GHSA-xxxx-xxxx-xxxx",
                    repository: "o/n",
                    cve_id: Some("CVE-2026-0001"),
                    policy_url: "https://example.org/security",
                    project_name: "the maintainers",
                },
            )?;
        }
        Ok(templates)
    }

    fn body(&self, event: Event, ctx: &NoticeContext<'_>) -> Result<String, TemplateError> {
        let name = format!("notice-{}.txt.j2", event.as_str());
        let fail = |e: minijinja::Error| TemplateError::Render {
            name: name.clone(),
            message: e.to_string(),
        };
        self.env
            .get_template(&name)
            .map_err(fail)?
            .render(minijinja::context! {
                ghsa_id => ctx.ghsa_id,
                advisory_url => ctx.advisory_url,
                repository => ctx.repository,
                cve_id => ctx.cve_id,
                policy_url => ctx.policy_url,
                project_name => ctx.project_name,
                subject => ctx.subject,
            })
            .map_err(fail)
    }

    /// The notice for `event`, threaded under the report, with a stable `Message-ID`
    /// (`advisory-bridge.<report id>.<event>@domain`) so a rare resend folds.
    pub fn render(
        &self,
        event: Event,
        ctx: &NoticeContext<'_>,
        to: &Address,
        from: &Address,
    ) -> Result<ReplyMessage, TemplateError> {
        let body = self.body(event, ctx)?;
        // The thread is the report and our reply to it; the notice answers the latest.
        let (answered, before) = match ctx.thread.split_last() {
            Some((last, rest)) => (Some(last.as_str()), rest),
            None => (None, &[][..]),
        };
        Ok(compose(Outgoing {
            to,
            from,
            subject: ctx.subject,
            ghsa: ctx.ghsa_id,
            message_id: message_id::make(ctx.report_id, Kind::Notice(event), from),
            in_reply_to: answered,
            references: before,
            body,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_on_github_means_one_event() {
        assert_eq!(
            transitions(
                AdvisoryState::Draft,
                None,
                AdvisoryState::Published,
                Some("CVE-1")
            ),
            vec![Event::Published]
        );
        assert_eq!(
            transitions(
                AdvisoryState::Draft,
                None,
                AdvisoryState::Draft,
                Some("CVE-1")
            ),
            vec![Event::CveAssigned]
        );
        assert_eq!(
            transitions(AdvisoryState::Draft, None, AdvisoryState::Closed, None),
            vec![Event::Closed]
        );
        assert_eq!(
            transitions(
                AdvisoryState::Published,
                Some("CVE-1"),
                AdvisoryState::Withdrawn,
                Some("CVE-1")
            ),
            vec![Event::Withdrawn]
        );
        assert!(transitions(AdvisoryState::Draft, None, AdvisoryState::Draft, None).is_empty());
        assert!(
            transitions(
                AdvisoryState::Published,
                Some("CVE-1"),
                AdvisoryState::Published,
                Some("CVE-1")
            )
            .is_empty()
        );
    }

    #[test]
    fn the_built_in_notices_render_and_thread() {
        let t = NoticeTemplates::load(None).unwrap();
        let id = ReportId("ab".repeat(32));
        let ctx = NoticeContext {
            report_id: &id,
            subject: "Re: XSS in werkzeug",
            thread: vec!["report@example.net".into(), "ack@example.org".into()],
            ghsa_id: "GHSA-2345-6789-cfgh",
            advisory_url: "https://github.com/pallets/werkzeug/security/advisories/GHSA-2345-6789-cfgh",
            repository: "pallets/werkzeug",
            cve_id: Some("CVE-2026-1234"),
            policy_url: "https://palletsprojects.com/security",
            project_name: "the Pallets maintainers",
        };
        let to = Address {
            name: None,
            email: "rita@example.net".into(),
        };
        let from = Address {
            name: Some("Pallets Security".into()),
            email: "security@palletsprojects.com".into(),
        };
        let m = t.render(Event::Published, &ctx, &to, &from).unwrap();
        assert!(m.body.contains("CVE-2026-1234"));
        assert!(m.body.contains("has been\npublished"));
        assert_eq!(m.subject, "Re: XSS in werkzeug [GHSA-2345-6789-cfgh]");
        assert_eq!(m.in_reply_to.as_deref(), Some("ack@example.org"));
        assert!(m.message_id.ends_with(".published@palletsprojects.com"));
        let closed = t.render(Event::Closed, &ctx, &to, &from).unwrap();
        assert!(closed.body.contains("reply to this email"));
    }
}
