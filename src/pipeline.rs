//! The pure part of handling one message: raw bytes to a [`Report`], and a report to what
//! we would do with it ([`Prepared`]). No I/O: `preview`, the engine, the invariant tests
//! and the fuzz target all call exactly these two functions, so they cannot drift apart.

use chrono::{DateTime, Utc};

use crate::auth;
use crate::classify::{self, Classification, ReplyDecision, SuppressReason};
use crate::config::{Config, own_addresses};
use crate::mail::{self, Limits, ParseError, Report};
use crate::render::{self, AdvisoryContext, AdvisoryDraft, MarkerKey};
use crate::route::{self, Route};

/// Everything one message's trip through the pure stages produces: what `preview`
/// prints and what the engine acts on.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Report or noise (after the spam-score threshold).
    pub classification: Classification,
    /// The chosen repository.
    pub route: Route,
    /// The advisory to create.
    pub draft: AdvisoryDraft,
    /// Whether and to whom to reply (after the reply switch and the DMARC gate).
    pub reply: ReplyDecision,
}

/// Parses raw bytes into a report and drops the `Authentication-Results` headers that
/// no trusted server wrote, so nothing downstream can be fooled by them.
pub fn parse(config: &Config, raw: &[u8]) -> Result<Report, ParseError> {
    let mut report = mail::parse(raw, &Limits::from(&config.limits))?;
    let trusted = &config.authentication.trusted_authserv_ids;
    report.signals.authentication_results =
        auth::trusted(&report.signals.authentication_results, trusted)
            .into_iter()
            .cloned()
            .collect();
    Ok(report)
}

/// Our own addresses as classification needs them.
pub fn classify_context(config: &Config) -> classify::Context {
    classify::Context {
        own_addresses: own_addresses(config),
    }
}

/// Runs parse's output through classify (with the spam-score threshold), route, render
/// (the marker authenticated with `marker`) and the reply decision (with the reply
/// switch and the DMARC gate).
pub fn prepare(
    config: &Config,
    marker: &MarkerKey,
    report: &Report,
    received_at: DateTime<Utc>,
) -> Prepared {
    prepare_with(config, marker, report, received_at, None)
}

/// [`prepare`] with the earlier report this one probably repeats, which the engine finds
/// in the journal, shown in the draft.
pub fn prepare_with(
    config: &Config,
    marker: &MarkerKey,
    report: &Report,
    received_at: DateTime<Utc>,
    duplicate: Option<&crate::triage::Duplicate>,
) -> Prepared {
    let ctx = classify_context(config);
    let mut classification = classify::classify(report, &ctx);
    if classification == Classification::Report
        && let (Some(threshold), Some(score)) =
            (config.spam.score_threshold, report.signals.spam_score)
        && score >= threshold
    {
        classification = Classification::Noise(classify::NoiseReason::Spam(format!(
            "spam score {score} is at least spam.score_threshold = {threshold}"
        )));
    }
    let route = route::route(
        report,
        &config.repositories,
        &config.default_repository,
        &config.smtp.from_address,
    );
    let repository = config
        .repository(&route.repository)
        .expect("route only returns configured repositories");
    let web_url = config.github.web_url();
    let draft = render::advisory(
        report,
        &AdvisoryContext {
            route: &route,
            repository,
            settings: &config.advisory,
            received_at,
            marker,
            attachments: config
                .attachments
                .repository_for(repository.owner())
                .map(|r| render::AttachmentsTarget {
                    repository: r,
                    web_url: &web_url,
                }),
            duplicate,
        },
    );
    let verdict = auth::verdict(
        &report.signals.authentication_results,
        &config.authentication.trusted_authserv_ids,
    );
    let reply = if !config.reply.enabled {
        ReplyDecision::Suppress(SuppressReason::Disabled)
    } else if let auth::Verdict::Failed { server, reason } = verdict {
        ReplyDecision::Suppress(SuppressReason::Unauthenticated(format!(
            "{reason} at {server}"
        )))
    } else {
        classify::reply_decision(report, &ctx)
    };
    Prepared {
        classification,
        route,
        draft,
        reply,
    }
}
