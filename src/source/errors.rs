//! Turning what async-imap and the network report into [`ImapError`]s with the right
//! [`FailureKind`] and a message a person can act on.

use super::ImapError;
use crate::failure::FailureKind;

/// A failure worth retrying: network trouble, timeouts, the server going away.
pub(crate) fn transient(operation: &'static str, message: impl Into<String>) -> ImapError {
    ImapError {
        operation,
        message: message.into(),
        kind: FailureKind::TRANSIENT,
    }
}

/// A failure that retrying the same step cannot fix.
pub(crate) fn permanent(operation: &'static str, message: impl Into<String>) -> ImapError {
    ImapError {
        operation,
        message: message.into(),
        kind: FailureKind::Permanent,
    }
}

/// Response codes (RFC 5530 and RFC 3501) after which retrying the same command cannot
/// help; every other `NO` (`UNAVAILABLE`, `INUSE`, `LIMIT`, `SERVERBUG`, none at all) may
/// pass.
const PERMANENT_CODES: &[&str] = &[
    "[TRYCREATE]",
    "[NONEXISTENT]",
    "[NOPERM]",
    "[AUTHENTICATIONFAILED]",
    "[AUTHORIZATIONFAILED]",
    "[EXPIRED]",
    "[PRIVACYREQUIRED]",
    "[CANNOT]",
    "[ALREADYEXISTS]",
    "[CLIENTBUG]",
];

/// Codes that say the server cannot do it *now*; checked before falling back to the
/// operation's default.
const TRANSIENT_CODES: &[&str] = &[
    "[UNAVAILABLE]",
    "[INUSE]",
    "[LIMIT]",
    "[SERVERBUG]",
    "[OVERQUOTA]",
    "[EXPUNGEISSUED]",
];

/// Operations whose `NO` without a response code still means "not like this, not ever":
/// Dovecot refuses `SELECT` of a missing mailbox with no code at all.
const PERMANENT_BY_DEFAULT: &[&str] = &["select", "create folder"];

/// The text of a tagged `NO`/`BAD` as async-imap renders it, made readable. async-imap
/// formats it in two ways, depending on the command:
/// `code: Some(TryCreate), info: Some("Mailbox doesn't exist: X")` and
/// `outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: X") }`;
/// both become `[TRYCREATE] Mailbox doesn't exist: X` or `Mailbox doesn't exist: X`.
pub(crate) fn server_text(rendered: &str) -> String {
    let code = rendered
        .find("code: Some(")
        .map(|at| &rendered[at + "code: Some(".len()..])
        .and_then(|rest| rest.split_once("), info"))
        .map(|(code, _)| format!("[{}] ", code.to_ascii_uppercase()));
    let info = ["info: Some(\"", "information: Some(\""]
        .iter()
        .find_map(|start| rendered.find(start).map(|at| &rendered[at + start.len()..]))
        .and_then(|rest| rest.rsplit_once("\")"))
        .map(|(info, _)| info.replace("\\\"", "\"").replace("\\\\", "\\"));
    match (code, info) {
        (code, Some(info)) => format!("{}{info}", code.unwrap_or_default()),
        (Some(code), None) => code.trim_end().to_owned(),
        (None, None) => rendered.to_owned(),
    }
}

/// True when the server's answer carries one of the [`PERMANENT_CODES`].
pub(crate) fn has_permanent_code(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    PERMANENT_CODES.iter().any(|code| upper.contains(code))
}

/// True when the server's answer carries one of the [`TRANSIENT_CODES`].
pub(crate) fn has_transient_code(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    TRANSIENT_CODES.iter().any(|code| upper.contains(code))
}

/// True when the server said the thing we tried to create is already there.
pub(crate) fn already_exists(error: &async_imap::error::Error) -> bool {
    match error {
        async_imap::error::Error::No(text) => {
            let text = text.to_ascii_uppercase();
            text.contains("ALREADYEXISTS") || text.contains("ALREADY EXISTS")
        }
        _ => false,
    }
}

/// True when the connection can no longer be used after this error.
pub(crate) fn breaks_session(error: &async_imap::error::Error) -> bool {
    use async_imap::error::Error as E;
    !matches!(error, E::No(_) | E::Bad(_) | E::Validate(_) | E::Append)
}

/// Classifies an error from a command on a logged-in session.
pub(crate) fn from_imap(operation: &'static str, error: async_imap::error::Error) -> ImapError {
    use async_imap::error::Error as E;
    match error {
        E::Io(e) => transient(operation, format!("connection failed: {e}")),
        E::ConnectionLost => transient(operation, "the server closed the connection"),
        E::Parse(e) => transient(operation, format!("unreadable answer from the server: {e}")),
        E::No(text) => {
            let text = server_text(&text);
            let permanent_refusal = has_permanent_code(&text)
                || (!has_transient_code(&text) && PERMANENT_BY_DEFAULT.contains(&operation));
            if permanent_refusal {
                permanent(operation, format!("the server refused: {text}"))
            } else {
                transient(operation, format!("the server refused for now: {text}"))
            }
        }
        E::Bad(text) => permanent(
            operation,
            format!(
                "the server rejected the command as invalid: {}",
                server_text(&text)
            ),
        ),
        E::Validate(e) => permanent(operation, format!("cannot be sent to the server: {e}")),
        E::Append => permanent(operation, "the server refused the message"),
        other => transient(operation, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_no_becomes_the_servers_words() {
        assert_eq!(
            server_text(r#"code: Some(TryCreate), info: Some("Mailbox doesn't exist: Archive")"#),
            "[TRYCREATE] Mailbox doesn't exist: Archive"
        );
        assert_eq!(
            server_text(
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(
            server_text(r#"code: None, info: Some("say \"hi\"")"#),
            r#"say "hi""#
        );
        assert_eq!(
            server_text(
                r#"outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: R") }"#
            ),
            "Mailbox doesn't exist: R"
        );
        assert_eq!(server_text("something else"), "something else");
    }

    #[test]
    fn a_missing_mailbox_is_permanent_and_a_busy_one_is_not() {
        let missing = from_imap(
            "select",
            async_imap::error::Error::No(
                r#"code: None, info: Some("[NONEXISTENT] Mailbox doesn't exist: X")"#.into(),
            ),
        );
        assert_eq!(missing.kind, FailureKind::Permanent);
        let no_code = from_imap(
            "select",
            async_imap::error::Error::No(
                r#"outcome: Outcome { code: None, information: Some("Mailbox doesn't exist: X") }"#
                    .into(),
            ),
        );
        assert_eq!(no_code.kind, FailureKind::Permanent);
        let busy = from_imap(
            "select",
            async_imap::error::Error::No(
                r#"code: None, info: Some("[INUSE] Mailbox is locked")"#.into(),
            ),
        );
        assert!(busy.kind.is_transient());
        let lost = from_imap("fetch", async_imap::error::Error::ConnectionLost);
        assert!(lost.kind.is_transient());
        assert!(breaks_session(&async_imap::error::Error::ConnectionLost));
        assert!(!breaks_session(
            &async_imap::error::Error::No(String::new())
        ));
    }

    #[test]
    fn an_existing_folder_is_recognised() {
        assert!(already_exists(&async_imap::error::Error::No(
            r#"code: None, info: Some("[ALREADYEXISTS] Mailbox already exists")"#.into()
        )));
        assert!(!already_exists(&async_imap::error::Error::No(
            r#"code: None, info: Some("[NOPERM] Permission denied")"#.into()
        )));
    }
}
