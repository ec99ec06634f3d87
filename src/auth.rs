//! Sender authentication as the receiving server recorded it: `Authentication-Results`
//! headers (RFC 8601) from an `authserv-id` ops trust, and nothing else. Pure.
//!
//! Anyone can write an `Authentication-Results` header into a message, so only headers
//! whose authserv-id is listed in `[authentication] trusted_authserv_ids` count; the
//! topmost of those is the one the receiving server added last.

/// What the trusted receiving server said about the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// DMARC passed, or (without DMARC) SPF or DKIM passed.
    Authenticated {
        /// The authserv-id that said so.
        server: String,
    },
    /// DMARC failed, or (without DMARC) SPF failed and no DKIM signature passed: the
    /// `From` address may be forged.
    Failed {
        /// The authserv-id that said so.
        server: String,
        /// Which checks failed, e.g. `dmarc=fail`.
        reason: String,
    },
    /// No trusted header, or one without a usable result.
    Unknown,
}

/// The authserv-id of one header value: its first token, before any version or `;`.
fn authserv_id(header: &str) -> &str {
    header
        .split(';')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// Only the headers written by a trusted server, in their original order.
pub fn trusted<'a>(headers: &'a [String], trusted_ids: &[String]) -> Vec<&'a String> {
    headers
        .iter()
        .filter(|h| {
            let id = authserv_id(h);
            trusted_ids.iter().any(|t| t.eq_ignore_ascii_case(id))
        })
        .collect()
}

/// The result of each method named in one header value, e.g. `("dkim", "pass")`, in
/// order; comments and properties are skipped.
fn results(header: &str) -> Vec<(String, String)> {
    header
        .split(';')
        .skip(1)
        .filter_map(|part| {
            let token = part.split_whitespace().next()?;
            let (method, result) = token.split_once('=')?;
            let method = method.trim().to_ascii_lowercase();
            let result = result
                .trim()
                .trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_ascii_lowercase();
            matches!(method.as_str(), "dmarc" | "spf" | "dkim").then_some((method, result))
        })
        .collect()
}

/// The verdict of the topmost trusted header.
pub fn verdict(headers: &[String], trusted_ids: &[String]) -> Verdict {
    let Some(header) = trusted(headers, trusted_ids).into_iter().next() else {
        return Verdict::Unknown;
    };
    let server = authserv_id(header).to_owned();
    let results = results(header);
    let of = |m: &str| -> Vec<&str> {
        results
            .iter()
            .filter(|(method, _)| method == m)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    let (dmarc, spf, dkim) = (of("dmarc"), of("spf"), of("dkim"));
    if dmarc.contains(&"pass") {
        return Verdict::Authenticated { server };
    }
    if dmarc.contains(&"fail") {
        return Verdict::Failed {
            server,
            reason: "dmarc=fail".into(),
        };
    }
    if spf.contains(&"pass") || dkim.contains(&"pass") {
        return Verdict::Authenticated { server };
    }
    let spf_failed = spf.iter().any(|r| matches!(*r, "fail" | "softfail"));
    if spf_failed
        && (dkim.is_empty()
            || dkim
                .iter()
                .all(|r| matches!(*r, "fail" | "none" | "neutral" | "policy")))
    {
        let mut reason = format!("spf={}", spf.first().copied().unwrap_or("fail"));
        reason.push_str(&format!(
            " dkim={}",
            dkim.first().copied().unwrap_or("none")
        ));
        return Verdict::Failed { server, reason };
    }
    Verdict::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        vec!["mx.palletsprojects.com".into()]
    }

    #[test]
    fn dmarc_fail_from_our_server_means_the_sender_may_be_forged() {
        let h = vec!["mx.palletsprojects.com; spf=pass smtp.mailfrom=x; dmarc=fail (p=reject) header.from=example.org".to_owned()];
        assert_eq!(
            verdict(&h, &ids()),
            Verdict::Failed {
                server: "mx.palletsprojects.com".into(),
                reason: "dmarc=fail".into()
            }
        );
    }

    #[test]
    fn a_header_the_attacker_wrote_is_ignored() {
        let h = vec![
            "evil.example; dmarc=pass".to_owned(),
            "mx.palletsprojects.com 1; dmarc=fail header.from=paypal.com".to_owned(),
        ];
        assert!(matches!(verdict(&h, &ids()), Verdict::Failed { .. }));
        assert_eq!(trusted(&h, &ids()).len(), 1);
        let only_forged = vec!["evil.example; dmarc=pass".to_owned()];
        assert_eq!(verdict(&only_forged, &ids()), Verdict::Unknown);
    }

    #[test]
    fn without_dmarc_spf_or_dkim_decide() {
        let pass = vec!["mx.palletsprojects.com; spf=fail; dkim=pass header.d=x".to_owned()];
        assert!(matches!(
            verdict(&pass, &ids()),
            Verdict::Authenticated { .. }
        ));
        let fail = vec!["mx.palletsprojects.com; spf=softfail; dkim=none".to_owned()];
        assert!(matches!(verdict(&fail, &ids()), Verdict::Failed { .. }));
        let unknown = vec!["mx.palletsprojects.com; spf=neutral".to_owned()];
        assert_eq!(verdict(&unknown, &ids()), Verdict::Unknown);
    }

    #[test]
    fn nothing_is_trusted_unless_configured() {
        let h = vec!["mx.palletsprojects.com; dmarc=fail".to_owned()];
        assert_eq!(verdict(&h, &[]), Verdict::Unknown);
    }
}
