//! Commands whose tagged status async-imap 0.12 does not check, run by hand.
//!
//! async-imap ends the response stream of `FETCH`, `STORE`, `EXPUNGE` and `LIST` at the
//! tagged reply whatever its status, so a `NO` or `BAD` reads as "no data". Here the
//! command is sent with `run_command`, every response read with `read_response`, and
//! the tagged reply turned into [`async_imap::error::Error::No`] / `Bad` carrying the
//! server's code and text (rendered as async-imap renders them, so `errors::server_text`
//! reads both). `NAMESPACE`, which imap-proto cannot parse, is exchanged on the raw
//! transport between two commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_imap::error::Error;
use async_imap::imap_proto::rfc4314::AclRight;
use async_imap::imap_proto::{AttributeValue, MailboxDatum, NameAttribute, Response, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ImapSession;

/// What one `FETCH` (or `STORE`) response said about one message.
#[derive(Debug, Default, Clone)]
pub(crate) struct FetchData {
    /// `UID`.
    pub uid: Option<u32>,
    /// `FLAGS`, as the server wrote them.
    pub flags: Vec<String>,
    /// `MODSEQ` (CONDSTORE).
    pub modseq: Option<u64>,
    /// `RFC822.SIZE`.
    pub size: Option<u32>,
    /// `BODY[]`.
    pub body: Option<Vec<u8>>,
    /// `INTERNALDATE`.
    pub internal_date: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// One `LIST` answer.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The folder's name.
    pub name: String,
    /// Its hierarchy delimiter, `None` for a flat name space.
    pub delimiter: Option<String>,
    /// The special use the server gave it (RFC 6154), among those we file into.
    pub special: Option<SpecialUse>,
    /// `\Noinferiors`: no folder can be created under it.
    pub no_inferiors: bool,
}

/// The RFC 6154 special uses the daemon files into when no folder is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialUse {
    /// `\Sent`: copies of the mail we send.
    Sent,
    /// `\Junk`: mail the receiving server flagged as spam.
    Junk,
}

/// Sends `command` and reads until its tagged reply: every `FETCH` response is collected,
/// `EXISTS`/`RECENT` set `news`, a `BYE` or a closed connection is an error, and a tagged
/// `NO`/`BAD` becomes [`Error::No`]/[`Error::Bad`] with the server's words.
pub(crate) async fn fetches(
    session: &mut ImapSession,
    command: &str,
    news: &Arc<AtomicBool>,
) -> Result<Vec<FetchData>, Error> {
    let mut found = Vec::new();
    tagged(session, command, news, |response| {
        if let Response::Fetch(_, attributes) = response {
            found.push(fetch_data(attributes));
        }
    })
    .await?;
    Ok(found)
}

/// `LIST "" pattern` with its tagged status checked.
pub(crate) async fn list(
    session: &mut ImapSession,
    pattern: &str,
    news: &Arc<AtomicBool>,
) -> Result<Vec<Listed>, Error> {
    let mut found = Vec::new();
    let command = format!("LIST \"\" {}", quote(pattern));
    tagged(session, &command, news, |response| {
        if let Response::MailboxData(MailboxDatum::List(data)) = response {
            let has = |wanted: &NameAttribute<'_>| data.name_attributes.iter().any(|f| f == wanted);
            let special = if has(&NameAttribute::Sent) {
                Some(SpecialUse::Sent)
            } else if has(&NameAttribute::Junk) {
                Some(SpecialUse::Junk)
            } else {
                None
            };
            found.push(Listed {
                name: data.name.to_string(),
                delimiter: data.delimiter.as_ref().map(|d| d.to_string()),
                special,
                no_inferiors: has(&NameAttribute::NoInferiors),
            });
        }
    })
    .await?;
    Ok(found)
}

/// `MYRIGHTS mailbox` (RFC 4314): the rights the logged-in user has on it, as letters.
pub(crate) async fn my_rights(
    session: &mut ImapSession,
    mailbox: &str,
    news: &Arc<AtomicBool>,
) -> Result<Vec<AclRight>, Error> {
    let mut rights = Vec::new();
    let command = format!("MYRIGHTS {}", quote(mailbox));
    tagged(session, &command, news, |response| {
        if let Response::MyRights(answer) = response {
            rights.clone_from(&answer.rights);
        }
    })
    .await?;
    Ok(rights)
}

/// Runs a command that returns nothing we read, checking its tagged status.
pub(crate) async fn simple(
    session: &mut ImapSession,
    command: &str,
    news: &Arc<AtomicBool>,
) -> Result<(), Error> {
    tagged(session, command, news, |_| {}).await
}

async fn tagged(
    session: &mut ImapSession,
    command: &str,
    news: &Arc<AtomicBool>,
    mut on_data: impl FnMut(&Response<'_>),
) -> Result<(), Error> {
    let id = session.run_command(command).await?;
    loop {
        let Some(response) = session.read_response().await? else {
            return Err(Error::ConnectionLost);
        };
        match response.parsed() {
            Response::Done {
                tag,
                status,
                outcome,
            } if *tag == id => {
                let (code, info) = (&outcome.code, outcome.information.as_deref());
                return match status {
                    Status::Ok => Ok(()),
                    Status::No => Err(Error::No(format!("code: {code:?}, info: {info:?}"))),
                    Status::Bad => Err(Error::Bad(format!("code: {code:?}, info: {info:?}"))),
                    other => Err(Error::Io(std::io::Error::other(format!(
                        "unexpected tagged status {other:?}: {info:?}"
                    )))),
                };
            }
            Response::Data {
                status: Status::Bye,
                ..
            } => return Err(Error::ConnectionLost),
            Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) => {
                news.store(true, Ordering::Relaxed);
            }
            other => on_data(other),
        }
    }
}

fn fetch_data(attributes: &[AttributeValue<'_>]) -> FetchData {
    let mut data = FetchData::default();
    for attribute in attributes {
        match attribute {
            AttributeValue::Uid(uid) => data.uid = Some(*uid),
            AttributeValue::Flags(flags) => {
                data.flags = flags.iter().map(|f| f.to_string()).collect();
            }
            AttributeValue::ModSeq(m) => data.modseq = Some(*m),
            AttributeValue::Rfc822Size(s) => data.size = Some(*s),
            AttributeValue::BodySection {
                section: None,
                data: Some(body),
                ..
            } => data.body = Some(body.to_vec()),
            AttributeValue::Rfc822(Some(body)) => data.body = Some(body.to_vec()),
            AttributeValue::InternalDate(date) => {
                data.internal_date =
                    chrono::DateTime::parse_from_str(date, "%d-%b-%Y %H:%M:%S %z").ok();
            }
            _ => {}
        }
    }
    data
}

/// An IMAP quoted string (names with line breaks are refused by the config already).
pub(crate) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The personal namespace (RFC 2342): the prefix of the user's own folders and their
/// hierarchy delimiter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    /// E.g. `INBOX.` on Courier and Debian's Cyrus, empty on Dovecot's default.
    pub prefix: String,
    /// E.g. `.` or `/`; `None` for a server without hierarchy.
    pub delimiter: Option<char>,
}

/// Most bytes we read of a `NAMESPACE` answer.
const MAX_NAMESPACE_ANSWER: usize = 64 * 1024;

/// Sends `NAMESPACE` on the raw transport (imap-proto cannot parse its answer, and an
/// unparsable answer would wedge async-imap's stream) and reads up to its tagged reply.
/// Only safe between commands in the authenticated state, where the server sends nothing
/// unasked. `Ok(None)` when the server refused it or sent no personal namespace.
pub(crate) async fn namespace(session: &mut ImapSession) -> std::io::Result<Option<Namespace>> {
    const TAG: &str = "abns1";
    let stream = session.get_mut();
    stream
        .write_all(format!("{TAG} NAMESPACE\r\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection during NAMESPACE",
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_NAMESPACE_ANSWER {
            return Err(std::io::Error::other("NAMESPACE answer too long"));
        }
        let text = String::from_utf8_lossy(&answer);
        if text.ends_with("\r\n")
            && text
                .lines()
                .any(|l| l.starts_with(&format!("{TAG} ")) || l.starts_with("* BYE"))
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let ok = text.lines().any(|l| l.starts_with(&format!("{TAG} OK")));
    if !ok {
        return Ok(None);
    }
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("* NAMESPACE "))
        .and_then(parse_personal_namespace))
}

/// The first personal namespace of a `NAMESPACE` answer's data, e.g. of
/// `(("INBOX." ".")) NIL NIL`.
pub(crate) fn parse_personal_namespace(data: &str) -> Option<Namespace> {
    let rest = data.trim_start().strip_prefix("((")?;
    let (prefix, rest) = quoted(rest)?;
    let rest = rest.trim_start();
    let delimiter = if rest.starts_with("NIL") {
        None
    } else {
        let (d, _) = quoted(rest)?;
        d.chars().next()
    };
    Some(Namespace { prefix, delimiter })
}

/// A leading quoted string and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl Namespace {
    /// The server's name for a configured folder: `INBOX` as is, a name already under the
    /// prefix as is, anything else under the prefix (`Processed` -> `INBOX.Processed`).
    pub fn resolve(&self, name: &str) -> String {
        if name.eq_ignore_ascii_case("INBOX") || self.prefix.is_empty() {
            return name.to_owned();
        }
        let has_prefix = if self.prefix.len() >= 5 && self.prefix[..5].eq_ignore_ascii_case("INBOX")
        {
            name.len() >= self.prefix.len()
                && name[..5].eq_ignore_ascii_case("INBOX")
                && name.get(5..self.prefix.len()) == self.prefix.get(5..)
        } else {
            name.starts_with(&self.prefix)
        };
        if has_prefix {
            name.to_owned()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    /// The server's name of `child` under the (configured) folder `parent`, joined with the
    /// server's delimiter (`.` where the server has none).
    pub fn child(&self, parent: &str, child: &str) -> String {
        format!(
            "{}{}{child}",
            self.resolve(parent),
            self.delimiter.unwrap_or('.')
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    /// A session over an in-memory pipe whose server side answers the command after
    /// LOGIN with `answer(tag)`.
    async fn session_answering(
        answer: fn(&str, &str) -> String,
    ) -> (ImapSession, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let fake = tokio::spawn(async move {
            let (read, mut write) = tokio::io::split(server);
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"* OK fake ready\r\n").await.unwrap();
            while let Ok(Some(line)) = lines.next_line().await {
                let tag = line.split(' ').next().unwrap_or("*").to_owned();
                let reply = if line.contains(" LOGIN ") {
                    format!("{tag} OK logged in\r\n")
                } else {
                    answer(&tag, &line)
                };
                write.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let transport: super::super::BoxedTransport = Box::new(client);
        let mut client = async_imap::Client::new(transport);
        client.read_response().await.unwrap();
        let session = client.login("u", "p").await.map_err(|(e, _)| e).unwrap();
        (session, fake)
    }

    #[tokio::test]
    async fn a_tagged_no_after_fetch_data_is_an_error_with_the_servers_words() {
        let (mut session, fake) = session_answering(|tag, _| {
            format!(
                "* 1 FETCH (UID 7 FLAGS (\\Seen))\r\n{tag} NO [SERVERBUG] MODSEQ unsupported\r\n"
            )
        })
        .await;
        let news = Arc::new(AtomicBool::new(false));
        let error = fetches(&mut session, "UID FETCH 7 (UID FLAGS MODSEQ)", &news)
            .await
            .unwrap_err();
        let rendered = match error {
            Error::No(text) => super::super::errors::server_text(&text),
            other => panic!("not a NO: {other:?}"),
        };
        assert!(rendered.contains("MODSEQ unsupported"), "{rendered}");
        fake.abort();
    }

    #[tokio::test]
    async fn namespace_is_read_on_the_raw_transport_and_the_session_goes_on() {
        let (mut session, fake) = session_answering(|tag, line| {
            if line.ends_with("NAMESPACE") {
                format!("* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n{tag} OK done\r\n")
            } else {
                format!("{tag} OK fine\r\n")
            }
        })
        .await;
        let found = namespace(&mut session).await.unwrap();
        assert_eq!(
            found,
            Some(Namespace {
                prefix: "INBOX.".into(),
                delimiter: Some('.')
            })
        );
        let news = Arc::new(AtomicBool::new(false));
        simple(&mut session, "NOOP", &news).await.unwrap();
        fake.abort();
    }

    #[tokio::test]
    async fn fetch_data_and_news_are_read_up_to_a_tagged_ok() {
        let (mut session, fake) = session_answering(|tag, _| {
            format!(
                "* 3 EXISTS\r\n* 1 FETCH (UID 7 RFC822.SIZE 42 FLAGS (\\Seen $Claim_a))\r\n{tag} OK done\r\n"
            )
        })
        .await;
        let news = Arc::new(AtomicBool::new(false));
        let found = fetches(&mut session, "UID FETCH 7 (UID FLAGS)", &news)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, Some(7));
        assert_eq!(found[0].size, Some(42));
        assert!(
            found[0].flags.iter().any(|f| f == "$Claim_a"),
            "{:?}",
            found[0].flags
        );
        assert!(news.load(Ordering::Relaxed), "EXISTS noted");
        let bad = simple(&mut session, "UID STORE 7 +FLAGS (x)", &news).await;
        assert!(bad.is_ok(), "the pipe answers OK again: {bad:?}");
        fake.abort();
    }

    #[test]
    fn namespace_answers_are_read() {
        assert_eq!(
            parse_personal_namespace(r##"(("INBOX." ".")) NIL (("#shared." ".")("shared." "."))"##),
            Some(Namespace {
                prefix: "INBOX.".into(),
                delimiter: Some('.')
            })
        );
        assert_eq!(
            parse_personal_namespace(r#"(("" "/")) NIL NIL"#),
            Some(Namespace {
                prefix: String::new(),
                delimiter: Some('/')
            })
        );
        assert_eq!(
            parse_personal_namespace(r#"(("" NIL)) NIL NIL"#),
            Some(Namespace {
                prefix: String::new(),
                delimiter: None
            })
        );
        assert_eq!(parse_personal_namespace("NIL NIL NIL"), None);
    }

    #[test]
    fn folder_names_get_the_prefix_once_and_inbox_never() {
        let courier = Namespace {
            prefix: "INBOX.".into(),
            delimiter: Some('.'),
        };
        assert_eq!(courier.resolve("Processed"), "INBOX.Processed");
        assert_eq!(courier.resolve("INBOX.Processed"), "INBOX.Processed");
        assert_eq!(courier.resolve("inbox.Processed"), "inbox.Processed");
        assert_eq!(courier.resolve("INBOX"), "INBOX");
        assert_eq!(courier.resolve("Inbox"), "Inbox");
        assert_eq!(
            courier.child("Processing", "mail1"),
            "INBOX.Processing.mail1"
        );
        let slash = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        assert_eq!(slash.resolve("Processed"), "Processed");
        assert_eq!(slash.child("Processing", "mail1"), "Processing/mail1");
        let dovecot = Namespace {
            prefix: String::new(),
            delimiter: Some('.'),
        };
        assert_eq!(dovecot.child("Processing", "mail1"), "Processing.mail1");
    }
}
