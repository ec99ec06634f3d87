//! Decide what a parsed message is: a new report, or noise that must never become an
//! advisory nor get a reply. Also decides whether a reply may be sent. Pure.

use crate::mail::{Address, Report};

/// Why a message is noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoiseReason {
    /// `Auto-Submitted` other than `no` (out-of-office, auto-generated).
    AutoSubmitted(String),
    /// A bounce or delivery status notification.
    Bounce,
    /// Mailing-list traffic or bulk mail (`List-Id`, `List-Unsubscribe`, `Precedence`).
    Bulk(String),
    /// Our own mail coming back.
    OwnMail,
    /// The receiving server's spam filter flagged it (`X-Spam-Flag: YES`).
    Spam(String),
    /// A maintainer answering our mail to the maintainers (a new-draft mail or a
    /// digest): talk among maintainers, not a report nor a reporter's follow-up.
    MaintainerReply,
}

impl std::fmt::Display for NoiseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoiseReason::AutoSubmitted(v) => write!(f, "auto-submitted ({v})"),
            NoiseReason::Bounce => f.write_str("bounce or delivery status notification"),
            NoiseReason::Bulk(why) => write!(f, "bulk or list mail ({why})"),
            NoiseReason::OwnMail => f.write_str("our own mail looping back"),
            NoiseReason::Spam(why) => write!(f, "spam ({why})"),
            NoiseReason::MaintainerReply => f.write_str("a reply to our mail to the maintainers"),
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// A report to turn into an advisory.
    Report,
    /// Noise to file under the ignored folder, with the reason.
    Noise(NoiseReason),
}

/// What classification needs to know about us.
#[derive(Debug, Clone)]
pub struct Context {
    /// Our own addresses, lower-cased (the security@ address, the login).
    pub own_addresses: Vec<String>,
}

/// Why no reply is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuppressReason {
    /// Replies are switched off in the config.
    Disabled,
    /// The message is noise.
    Noise(NoiseReason),
    /// No usable address to reply to (null sender, missing From, `MAILER-DAEMON` and
    /// similar role addresses).
    NoReplyAddress(String),
    /// The reply would go to our own address.
    OwnAddress,
    /// The trusted receiving server says the sender failed authentication (DMARC, or
    /// SPF and DKIM): the `From` address may be forged, so no mail goes to it.
    Unauthenticated(String),
}

impl std::fmt::Display for SuppressReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuppressReason::Disabled => f.write_str("replies are disabled"),
            SuppressReason::Noise(n) => write!(f, "{n}"),
            SuppressReason::NoReplyAddress(why) => write!(f, "no reply address ({why})"),
            SuppressReason::OwnAddress => f.write_str("reply would go to our own address"),
            SuppressReason::Unauthenticated(why) => {
                write!(f, "sender failed authentication ({why})")
            }
        }
    }
}

/// Whether to reply, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyDecision {
    /// Send the acknowledgement to this address (`Reply-To`, else `From`).
    Send(Address),
    /// Send nothing, for this reason.
    Suppress(SuppressReason),
}

/// Classifies a parsed message.
///
/// Rules, most specific first (the first that matches names the reason):
/// 1. our own mail: `From` is one of our addresses (also with a `+tag`), or the message
///    carries the `X-Advisory-Bridge` header our replies set;
/// 2. a bounce: top-level `multipart/report`, a null `Return-Path: <>`, or a sender whose
///    local part is `MAILER-DAEMON` or `postmaster`;
/// 3. `Auto-Submitted` with any value but `no` (RFC 3834);
/// 4. bulk or list mail: `Precedence: bulk|junk|list`, `List-Id` or `List-Unsubscribe`.
///    When the `List-Id` names one of our own addresses (a security@ address that is
///    itself a mailing list or group, as with Google Groups), the list headers and
///    `Precedence: list` are expected on every report and are not noise;
/// 5. spam: the receiving server set `X-Spam-Flag: YES`. A score alone does not count,
///    because its scale depends on the filter; the message is filed as ignored with the
///    reason, never deleted, so a misjudged report can be found.
pub fn classify(report: &Report, ctx: &Context) -> Classification {
    match noise(report, ctx) {
        Some(reason) => Classification::Noise(reason),
        None => Classification::Report,
    }
}

fn noise(report: &Report, ctx: &Context) -> Option<NoiseReason> {
    let s = &report.signals;
    if s.own_marker.is_some()
        || report
            .from
            .as_ref()
            .is_some_and(|f| is_own_address(&f.email, ctx))
    {
        return Some(NoiseReason::OwnMail);
    }
    if s.is_delivery_report
        || s.return_path.as_deref() == Some("")
        || report.from.as_ref().is_some_and(|f| {
            let local = local_part(&f.email).to_ascii_lowercase();
            local == "mailer-daemon" || local == "postmaster"
        })
    {
        return Some(NoiseReason::Bounce);
    }
    if let Some(value) = &s.auto_submitted {
        let keyword = value.split(';').next().unwrap_or("").trim();
        if !keyword.eq_ignore_ascii_case("no") {
            return Some(NoiseReason::AutoSubmitted(value.clone()));
        }
    }
    let own_list = s
        .list_id
        .as_deref()
        .is_some_and(|id| names_own_address(id, ctx));
    if let Some(p) = s.precedence.as_deref() {
        let p = p.trim().to_ascii_lowercase();
        if p == "bulk" || p == "junk" || (p == "list" && !own_list) {
            return Some(NoiseReason::Bulk(format!("Precedence: {p}")));
        }
    }
    if !own_list {
        if let Some(id) = &s.list_id {
            return Some(NoiseReason::Bulk(format!("List-Id: {id}")));
        }
        if s.list_unsubscribe {
            return Some(NoiseReason::Bulk("List-Unsubscribe".into()));
        }
    }
    if s.spam_flag.as_deref().is_some_and(|f| f.trim() == "YES") {
        return Some(NoiseReason::Spam("X-Spam-Flag: YES".into()));
    }
    if report
        .in_reply_to
        .iter()
        .chain(&report.references)
        .any(|id| crate::render::message_id::is_to_maintainers(id))
    {
        return Some(NoiseReason::MaintainerReply);
    }
    None
}

/// Decides whether an acknowledgement may be sent for a report, and to whom.
///
/// Never for noise. The reply goes to `Reply-To` when it is a usable address (suppressed
/// with [`SuppressReason::OwnAddress`] when that is ours), else to `From`; it is
/// suppressed when that address is missing or unusable
/// (line breaks, white space, no single `@`, header syntax characters), a role address
/// that must not get automatic mail (`MAILER-DAEMON`, `postmaster`, `noreply`,
/// `no-reply`, `do-not-reply` and the like, RFC 3834), or one of our own addresses.
/// `[reply] enabled` and sender authentication are decided by the caller.
pub fn reply_decision(report: &Report, ctx: &Context) -> ReplyDecision {
    if let Classification::Noise(reason) = classify(report, ctx) {
        return ReplyDecision::Suppress(SuppressReason::Noise(reason));
    }
    if report.signals.return_path.as_deref() == Some("") {
        return ReplyDecision::Suppress(SuppressReason::NoReplyAddress("null return path".into()));
    }
    if let Some(reply_to) = &report.reply_to
        && unusable(&reply_to.email).is_none()
    {
        if is_own_address(&reply_to.email, ctx) {
            // The sender asked for answers to go to us: answering would loop.
            return ReplyDecision::Suppress(SuppressReason::OwnAddress);
        }
        return ReplyDecision::Send(reply_to.clone());
    }
    let Some(from) = &report.from else {
        return ReplyDecision::Suppress(SuppressReason::NoReplyAddress(
            "the message has no From address".into(),
        ));
    };
    if let Some(why) = unusable(&from.email) {
        return ReplyDecision::Suppress(SuppressReason::NoReplyAddress(why));
    }
    if is_own_address(&from.email, ctx) {
        return ReplyDecision::Suppress(SuppressReason::OwnAddress);
    }
    ReplyDecision::Send(from.clone())
}

/// Why an address cannot receive our reply, or `None` when it can.
pub fn unusable(email: &str) -> Option<String> {
    if email.is_empty() {
        return Some("empty address".into());
    }
    if email.len() > 254 {
        return Some("address longer than 254 characters".into());
    }
    if email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>,;:\"()[]\\".contains(c))
    {
        return Some(format!("`{}` is not a plain address", email.escape_debug()));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Some(format!("`{email}` has no @"));
    };
    if local.is_empty() || domain.is_empty() || local.contains('@') {
        return Some(format!("`{email}` is not one address"));
    }
    let role: String = local
        .split('+')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .collect();
    if role == "mailerdaemon"
        || role == "postmaster"
        || role.starts_with("noreply")
        || role.starts_with("donotreply")
        || role.starts_with("dontreply")
    {
        return Some(format!(
            "`{email}` is a role address that must not get automatic replies"
        ));
    }
    // The same rules the mailer applies: an address it would refuse is found here,
    // before an advisory exists, not after (when the report would be quarantined).
    if let Err(e) = email.parse::<lettre::Address>() {
        return Some(format!(
            "`{email}` is not an address mail can be sent to ({e})"
        ));
    }
    None
}

/// True when `email` is one of ours, also with a `+tag` in the local part.
fn is_own_address(email: &str, ctx: &Context) -> bool {
    let email = email.trim().to_lowercase();
    let untagged = match email.rsplit_once('@') {
        Some((local, domain)) => {
            format!("{}@{domain}", local.split('+').next().unwrap_or(local))
        }
        None => email.clone(),
    };
    ctx.own_addresses
        .iter()
        .any(|own| own.eq_ignore_ascii_case(&email) || own.eq_ignore_ascii_case(&untagged))
}

/// True when a `List-Id` names one of our addresses (`<security.example.org>` or
/// `security@example.org`).
fn names_own_address(list_id: &str, ctx: &Context) -> bool {
    let id = list_id.to_lowercase();
    ctx.own_addresses.iter().any(|own| {
        let own = own.to_lowercase();
        id.contains(&own) || id.contains(&own.replacen('@', ".", 1))
    })
}

fn local_part(email: &str) -> &str {
    email.rsplit_once('@').map_or(email, |(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{Limits, parse};

    const LIMITS: Limits = Limits {
        max_message_bytes: 1 << 20,
        max_parts: 64,
        max_depth: 8,
        max_attachments: 16,
    };

    fn ctx() -> Context {
        Context {
            own_addresses: vec!["security@palletsprojects.com".into()],
        }
    }

    fn fixture(name: &str) -> Report {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        parse(&raw, &LIMITS).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn message(headers: &str) -> Report {
        let raw = format!(
            "Message-ID: <t@example.org>\r\nTo: security@palletsprojects.com\r\n\
             Subject: report\r\n{headers}\r\n\r\nThe report.\r\n"
        )
        .replace("\r\n\r\n\r\n", "\r\n\r\n");
        parse(raw.as_bytes(), &LIMITS).expect("test message parses")
    }

    fn addr(email: &str) -> Address {
        Address {
            name: None,
            email: email.into(),
        }
    }

    #[test]
    fn ordinary_reports_are_reports_and_get_a_reply_to_the_sender() {
        for name in [
            "plain-werkzeug.eml",
            "html-latin1.eml",
            "shift-jis.eml",
            "patch-and-binary.eml",
            "plus-address.eml",
            "github-link.eml",
            "subject-alias.eml",
            "no-project.eml",
            "hostile.eml",
        ] {
            let r = fixture(name);
            assert_eq!(classify(&r, &ctx()), Classification::Report, "{name}");
            assert_eq!(
                reply_decision(&r, &ctx()),
                ReplyDecision::Send(r.from.clone().unwrap()),
                "{name}"
            );
        }
    }

    #[test]
    fn an_out_of_office_reply_is_noise_and_never_answered() {
        let r = fixture("auto-reply.eml");
        let expected = NoiseReason::AutoSubmitted("auto-replied".into());
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(expected.clone())
        );
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Suppress(SuppressReason::Noise(expected))
        );
    }

    #[test]
    fn auto_submitted_no_is_a_person_writing() {
        let r = message("From: a@example.org\r\nAuto-Submitted: No");
        assert_eq!(classify(&r, &ctx()), Classification::Report);
        let r = message("From: a@example.org\r\nAuto-Submitted: auto-generated; owner=x");
        assert!(matches!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::AutoSubmitted(_))
        ));
    }

    #[test]
    fn a_bounce_from_the_mailer_daemon_is_noise() {
        let r = fixture("bounce.eml");
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::Bounce)
        );
        for headers in [
            "From: a@example.org\r\nReturn-Path: <>",
            "From: MAILER-DAEMON@mx.example.org",
            "From: Postmaster@example.org",
            "From: a@example.org\r\nContent-Type: multipart/report; boundary=x",
        ] {
            assert_eq!(
                classify(&message(headers), &ctx()),
                Classification::Noise(NoiseReason::Bounce),
                "{headers}"
            );
        }
    }

    #[test]
    fn list_and_bulk_mail_is_noise() {
        for (headers, why) in [
            ("Precedence: bulk", "Precedence: bulk"),
            ("Precedence: JUNK", "Precedence: junk"),
            ("Precedence: list", "Precedence: list"),
            (
                "List-Id: Announce <announce.example.org>",
                "List-Id: Announce <announce.example.org>",
            ),
            (
                "List-Unsubscribe: <mailto:leave@example.org>",
                "List-Unsubscribe",
            ),
        ] {
            let r = message(&format!("From: a@example.org\r\n{headers}"));
            assert_eq!(
                classify(&r, &ctx()),
                Classification::Noise(NoiseReason::Bulk(why.into())),
                "{headers}"
            );
        }
    }

    #[test]
    fn mail_flagged_as_spam_is_noise_but_a_score_alone_is_not() {
        let r = message("From: a@example.org\r\nX-Spam-Flag: YES\r\nX-Spam-Score: 9.1");
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::Spam("X-Spam-Flag: YES".into()))
        );
        let r = message("From: a@example.org\r\nX-Spam-Flag: NO\r\nX-Spam-Score: 9.1");
        assert_eq!(classify(&r, &ctx()), Classification::Report);
    }

    #[test]
    fn a_report_through_our_own_group_list_is_still_a_report() {
        let r = message(
            "From: a@example.org\r\nList-Id: <security.palletsprojects.com>\r\n\
             List-Unsubscribe: <mailto:x@example.org>\r\nPrecedence: list",
        );
        assert_eq!(classify(&r, &ctx()), Classification::Report);
    }

    #[test]
    fn our_own_mail_coming_back_is_noise() {
        let r = message("From: Security Team <Security@PalletsProjects.com>");
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::OwnMail)
        );
        let r = message("From: security+flask@palletsprojects.com");
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::OwnMail)
        );
        let r = message("From: a@example.org\r\nX-Advisory-Bridge: ack");
        assert_eq!(
            classify(&r, &ctx()),
            Classification::Noise(NoiseReason::OwnMail)
        );
    }

    #[test]
    fn the_reply_goes_to_a_valid_reply_to() {
        let r = fixture("forwarded-attachment.eml");
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Send(Address {
                name: Some("Heidi Work".into()),
                email: "heidi.work@example.net".into()
            })
        );
    }

    #[test]
    fn an_address_the_mailer_would_refuse_gets_no_reply_decision() {
        let why = unusable("rita@example..org").expect("refused");
        assert!(why.contains("not an address mail can be sent to"), "{why}");
        assert!(unusable("rita@example.org").is_none());
        assert!(unusable("rita+tag@sub.example.org").is_none());
    }

    #[test]
    fn an_unusable_reply_to_falls_back_to_from() {
        let mut r = message("From: a@example.org");
        r.reply_to = Some(addr("noreply@example.org"));
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Send(addr("a@example.org"))
        );
        r.reply_to = Some(addr("a b@example.org"));
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Send(addr("a@example.org"))
        );
    }

    #[test]
    fn role_and_broken_addresses_get_no_reply() {
        for email in [
            "noreply@example.org",
            "no-reply@github.com",
            "do-not-reply@example.org",
            "DoNotReply@example.org",
            "no_reply+x@example.org",
            "a@example.org\r\nBcc: victim@example.org",
            "a b@example.org",
            "not-an-address",
            "a@b@example.org",
            "@example.org",
            "x@",
        ] {
            let mut r = message("From: placeholder@example.org");
            r.from = Some(addr(email));
            assert!(
                matches!(
                    reply_decision(&r, &ctx()),
                    ReplyDecision::Suppress(SuppressReason::NoReplyAddress(_))
                ),
                "{email:?}"
            );
        }
    }

    #[test]
    fn a_message_without_from_gets_no_reply() {
        let r = message("X-Nothing: here");
        assert!(r.from.is_none());
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Suppress(SuppressReason::NoReplyAddress(
                "the message has no From address".into()
            ))
        );
    }

    #[test]
    fn a_reply_to_pointing_at_us_is_suppressed_rather_than_looping() {
        let mut r = message("From: a@example.org");
        r.reply_to = Some(addr("Security+flask@palletsprojects.com"));
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Suppress(SuppressReason::OwnAddress)
        );
    }

    #[test]
    fn mail_from_our_own_address_is_suppressed_as_our_own_mail() {
        let mut r = message("From: a@example.org");
        r.from = Some(addr("security@palletsprojects.com"));
        assert_eq!(
            reply_decision(&r, &ctx()),
            ReplyDecision::Suppress(SuppressReason::Noise(NoiseReason::OwnMail))
        );
    }
}
