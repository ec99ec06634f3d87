//! `source::ImapSource` against a real Dovecot on loopback: every TLS mode, login
//! failures, folders, listing and fetching, filing away, IDLE and polling.

use crate::support;

use std::time::Duration;

use advisory_bridge::config::{Secret, TlsMode};
use advisory_bridge::failure::FailureKind;
use advisory_bridge::source::{
    FetchOutcome, ImapError, ImapSettings, ImapSource, MailboxState, ServerCapabilities, Wake,
};
use futures::TryStreamExt;
use support::{Dovecot, TestDir};

const FOLDERS: &[&str] = &["Processed", "Ignored", "Quarantine"];

/// A generous bound for things Dovecot does in about half a second.
const NEWS_DEADLINE: Duration = Duration::from_secs(10);

struct Server {
    // Field order matters: Dovecot stops before its directory is removed.
    dovecot: Dovecot,
    _dir: TestDir,
}

fn start() -> Server {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    Server { dovecot, _dir: dir }
}

impl Server {
    fn settings(&self, tls: TlsMode) -> ImapSettings {
        let user = self.dovecot.security();
        ImapSettings {
            host: "127.0.0.1".into(),
            port: match tls {
                TlsMode::Implicit => self.dovecot.imaps_port(),
                TlsMode::Starttls | TlsMode::None => self.dovecot.imap_port(),
            },
            tls,
            ca_file: Some(self.dovecot.ca_file()),
            username: user.user,
            password: Secret::new(user.password),
            timeout: Duration::from_secs(30),
        }
    }

    async fn connect(&self) -> (ImapSource, MailboxState) {
        connect_with(&self.settings(TlsMode::Implicit)).await
    }

    /// Puts a message into the watched INBOX through another connection.
    async fn deliver(&self, raw: &[u8]) {
        self.dovecot.security_imap().append("INBOX", raw).await;
    }

    async fn folder(&self, folder: &str) -> Vec<Vec<u8>> {
        self.dovecot.security_imap().folder_messages(folder).await
    }

    /// The flags of the message with `uid` in INBOX, read by another connection.
    async fn flags(&self, uid: u32) -> Vec<String> {
        let mut session = self.dovecot.security_imap().connect().await;
        session
            .examine("INBOX")
            .await
            .expect("INBOX can be examined");
        let flags: Vec<Vec<String>> = session
            .uid_fetch(uid.to_string(), "FLAGS")
            .await
            .expect("FETCH FLAGS is accepted")
            .map_ok(|f| f.flags().map(|flag| format!("{flag:?}")).collect())
            .try_collect()
            .await
            .expect("FETCH answers are readable");
        let _ = session.logout().await;
        flags.into_iter().next().unwrap_or_default()
    }
}

async fn connect_with(settings: &ImapSettings) -> (ImapSource, MailboxState) {
    ImapSource::connect(settings, "INBOX", FOLDERS)
        .await
        .unwrap_or_else(|e| panic!("connect failed: {e}"))
}

fn report(tag: &str) -> Vec<u8> {
    format!(
        "From: Alice Reporter <alice@example.net>\r\n\
         To: security@example.org\r\n\
         Subject: XSS in the debugger ({tag})\r\n\
         Message-ID: <{tag}@example.net>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Werkzeug's debugger PIN can be guessed. \u{2014} Alice\r\n\
         .\r\n\
         Trailing line without CRLF"
    )
    .into_bytes()
}

async fn only_uid(source: &mut ImapSource) -> u32 {
    let uids = source.list_uids().await.expect("UID SEARCH works");
    assert_eq!(uids.len(), 1, "expected one message, found UIDs {uids:?}");
    uids[0]
}

fn assert_permanent(error: &ImapError) {
    assert_eq!(error.kind, FailureKind::Permanent, "{error}");
}

#[tokio::test]
async fn implicit_tls_logs_in_creates_the_folders_and_selects_the_inbox() {
    let server = start();
    let (source, state) = server.connect().await;
    assert!(state.uidvalidity > 0);
    assert_eq!(state.exists, 0);
    assert_eq!(
        source.capabilities(),
        ServerCapabilities {
            idle: true,
            move_command: true,
            uidplus: true
        }
    );
    let folders = server.dovecot.security_imap().folders().await;
    for folder in FOLDERS {
        assert!(
            folders.iter().any(|f| f == folder),
            "{folder} missing in {folders:?}"
        );
    }
    source.logout().await.expect("logout works");

    // A second start finds the folders there and keeps the mailbox identity.
    let (source, again) = server.connect().await;
    assert_eq!(again.uidvalidity, state.uidvalidity);
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn starttls_upgrades_the_plain_port_and_checks_the_host_name() {
    let server = start();
    let mut settings = server.settings(TlsMode::Starttls);
    settings.host = "localhost".into();
    let (mut source, _) = connect_with(&settings).await;
    server.deliver(&report("starttls")).await;
    only_uid(&mut source).await;
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn plaintext_works_on_loopback() {
    let server = start();
    let (mut source, state) = connect_with(&server.settings(TlsMode::None)).await;
    assert!(state.uidvalidity > 0);
    assert!(source.list_uids().await.unwrap().is_empty());
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_with_advice() {
    let server = start();
    let mut settings = server.settings(TlsMode::Implicit);
    settings.ca_file = None;
    let error = ImapSource::connect(&settings, "INBOX", FOLDERS)
        .await
        .expect_err("the test CA is not among the system roots");
    assert!(error.message.contains("imap.ca_file"), "{error}");
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_never_shown() {
    let server = start();
    let mut settings = server.settings(TlsMode::Implicit);
    let password = "Wrong-Password-4711";
    settings.password = Secret::new(password);
    let error = ImapSource::connect(&settings, "INBOX", FOLDERS)
        .await
        .expect_err("Dovecot refuses a wrong password");
    assert_permanent(&error);
    assert_eq!(error.operation, "login");
    assert!(
        error
            .message
            .contains("check imap.username and the password"),
        "{error}"
    );
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(password), "{shown}");
    }
}

#[tokio::test]
async fn a_missing_mailbox_is_permanent_and_named() {
    let server = start();
    let error = ImapSource::connect(&server.settings(TlsMode::Implicit), "Reports", FOLDERS)
        .await
        .expect_err("there is no folder Reports");
    assert_permanent(&error);
    assert!(error.message.contains("`Reports`"), "{error}");
    assert!(error.message.contains("imap.mailbox"), "{error}");
}

#[tokio::test]
async fn a_delivered_message_is_listed_and_fetched_byte_for_byte_without_being_marked_seen() {
    let server = start();
    let (mut source, _) = server.connect().await;
    let raw = report("fetch");
    server.deliver(&raw).await;
    let uid = only_uid(&mut source).await;

    let fetched = match source.fetch(uid, 1024 * 1024).await.expect("fetch works") {
        FetchOutcome::Message(fetched) => fetched,
        other => panic!("expected the message, got {other:?}"),
    };
    assert_eq!(fetched.uid, uid);
    assert_eq!(
        fetched.raw, raw,
        "the fetched bytes differ from the delivered ones"
    );
    let received = fetched.internal_date.expect("Dovecot sends INTERNALDATE");
    assert!((chrono::Utc::now() - received).num_minutes().abs() < 60);
    let flags = server.flags(uid).await;
    assert!(!flags.iter().any(|f| f.contains("Seen")), "{flags:?}");

    assert!(matches!(
        source.fetch(uid + 1000, 1024).await.expect("fetch works"),
        FetchOutcome::Gone
    ));
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn a_message_over_the_limit_is_reported_too_large() {
    let server = start();
    let (mut source, _) = server.connect().await;
    let raw = report("large");
    server.deliver(&raw).await;
    let uid = only_uid(&mut source).await;
    match source.fetch(uid, raw.len() - 1).await.expect("fetch works") {
        FetchOutcome::TooLarge { size } => assert_eq!(size, raw.len()),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Exactly at the limit is fine.
    assert!(matches!(
        source.fetch(uid, raw.len()).await.expect("fetch works"),
        FetchOutcome::Message(_)
    ));
}

#[tokio::test]
async fn move_to_files_a_message_into_processed() {
    let server = start();
    let (mut source, _) = server.connect().await;
    let raw = report("move");
    server.deliver(&raw).await;
    let uid = only_uid(&mut source).await;
    source
        .move_to(uid, "Processed")
        .await
        .expect("UID MOVE works");
    assert!(source.list_uids().await.unwrap().is_empty());
    assert_eq!(server.folder("Processed").await, vec![raw]);
    assert!(matches!(
        source.fetch(uid, 1024 * 1024).await.unwrap(),
        FetchOutcome::Gone
    ));
}

#[tokio::test]
async fn without_move_a_copy_and_expunge_files_the_message() {
    let server = start();
    let (mut source, _) = server.connect().await;
    for (i, uidplus) in [true, false].into_iter().enumerate() {
        source.limit_capabilities(ServerCapabilities {
            idle: true,
            move_command: false,
            uidplus,
        });
        let raw = report(&format!("copy-{i}"));
        server.deliver(&raw).await;
        let uid = only_uid(&mut source).await;
        source
            .move_to(uid, "Quarantine")
            .await
            .unwrap_or_else(|e| panic!("COPY fallback (UIDPLUS {uidplus}) failed: {e}"));
        assert!(source.list_uids().await.unwrap().is_empty());
        let filed = server.folder("Quarantine").await;
        assert_eq!(filed.last(), Some(&raw));
        assert_eq!(filed.len(), i + 1);
    }
}

#[tokio::test]
async fn moving_into_a_missing_folder_is_permanent_and_names_it() {
    let server = start();
    let (mut source, _) = server.connect().await;
    server.deliver(&report("nofolder")).await;
    let uid = only_uid(&mut source).await;
    let error = source
        .move_to(uid, "Nowhere")
        .await
        .expect_err("there is no folder Nowhere");
    assert_permanent(&error);
    assert!(error.message.contains("`Nowhere`"), "{error}");
    // A refusal leaves the session usable.
    assert!(source.is_connected());
    assert_eq!(source.list_uids().await.unwrap(), vec![uid]);
}

#[tokio::test]
async fn set_flag_marks_a_message_in_place() {
    let server = start();
    let (mut source, _) = server.connect().await;
    server.deliver(&report("flag")).await;
    let uid = only_uid(&mut source).await;
    source
        .set_flag(uid, "\\Flagged")
        .await
        .expect("STORE works");
    source
        .set_flag(uid, "$Processed")
        .await
        .expect("keywords work");
    let flags = server.flags(uid).await;
    assert!(flags.iter().any(|f| f.contains("Flagged")), "{flags:?}");
    assert!(flags.iter().any(|f| f.contains("$Processed")), "{flags:?}");
    assert_eq!(source.list_uids().await.unwrap(), vec![uid]);

    let error = source
        .set_flag(uid, "x) UID EXPUNGE 1:* (")
        .await
        .expect_err("not a flag");
    assert_permanent(&error);
}

#[tokio::test]
async fn idle_wakes_up_when_another_client_delivers() {
    let server = start();
    let (mut source, _) = server.connect().await;
    assert!(source.list_uids().await.unwrap().is_empty());
    let account = server.dovecot.security_imap();
    let raw = report("idle");
    let deliver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        account.append("INBOX", &raw).await;
    });
    // Polling would sleep 600 s and return Timeout: only IDLE can say Changed here.
    let wake = source
        .wait(
            true,
            Duration::from_secs(600),
            NEWS_DEADLINE,
            std::future::pending(),
        )
        .await
        .expect("IDLE works");
    deliver.await.expect("the delivery task ran");
    assert_eq!(wake, Wake::Changed);
    // DONE was sent: the session answers commands again.
    only_uid(&mut source).await;
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn mail_that_arrives_between_listing_and_idle_is_not_missed() {
    let server = start();
    let (mut source, _) = server.connect().await;
    assert!(source.list_uids().await.unwrap().is_empty());
    server.deliver(&report("between")).await;
    let wake = source
        .wait(
            true,
            Duration::from_secs(600),
            NEWS_DEADLINE,
            std::future::pending(),
        )
        .await
        .expect("IDLE works");
    assert_eq!(wake, Wake::Changed);
    only_uid(&mut source).await;
}

#[tokio::test]
async fn idle_times_out_when_nothing_arrives_and_the_session_stays_usable() {
    let server = start();
    let (mut source, _) = server.connect().await;
    assert!(source.list_uids().await.unwrap().is_empty());
    let wake = source
        .wait(
            true,
            Duration::from_secs(600),
            Duration::from_millis(700),
            std::future::pending(),
        )
        .await
        .expect("IDLE works");
    assert_eq!(wake, Wake::Timeout);
    server.deliver(&report("after-idle")).await;
    only_uid(&mut source).await;
    // Twice in a row, to be sure DONE left the connection in order.
    let wake = source
        .wait(
            true,
            Duration::from_secs(600),
            Duration::from_millis(300),
            std::future::pending(),
        )
        .await
        .expect("IDLE works again");
    assert_eq!(wake, Wake::Timeout);
    source.logout().await.expect("logout works");
}

#[tokio::test]
async fn polling_wakes_after_the_interval_and_times_out_when_max_wait_is_shorter() {
    let server = start();
    let (mut source, _) = server.connect().await;
    assert!(source.list_uids().await.unwrap().is_empty());
    let wake = source
        .wait(
            false,
            Duration::from_millis(200),
            NEWS_DEADLINE,
            std::future::pending(),
        )
        .await
        .unwrap();
    assert_eq!(wake, Wake::Changed);
    let wake = source
        .wait(
            false,
            Duration::from_secs(600),
            Duration::from_millis(200),
            std::future::pending(),
        )
        .await
        .unwrap();
    assert_eq!(wake, Wake::Timeout);

    // A server without IDLE (as far as we use it) is polled even when IDLE is wanted.
    source.limit_capabilities(ServerCapabilities {
        idle: false,
        move_command: true,
        uidplus: true,
    });
    let wake = source
        .wait(
            true,
            Duration::from_millis(200),
            NEWS_DEADLINE,
            std::future::pending(),
        )
        .await
        .unwrap();
    assert_eq!(wake, Wake::Changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_going_away_during_idle_is_a_transient_error() {
    let mut server = start();
    let (mut source, _) = server.connect().await;
    assert!(source.list_uids().await.unwrap().is_empty());
    let waiting = tokio::spawn(async move {
        let outcome = source
            .wait(
                true,
                Duration::from_secs(600),
                Duration::from_secs(120),
                std::future::pending(),
            )
            .await;
        (source, outcome)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.dovecot.stop());
    let (mut source, outcome) = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the wait ends when the server goes away")
        .expect("the waiting task did not panic");
    let error = outcome.expect_err("a stopped server cannot keep an IDLE going");
    assert!(error.kind.is_transient(), "{error}");
    assert!(!source.is_connected());
    let later = source
        .list_uids()
        .await
        .expect_err("the connection is gone");
    assert!(later.kind.is_transient(), "{later}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error() {
    let server = start();
    let mut settings = server.settings(TlsMode::Implicit);
    // Bind and release a port so that nothing listens on it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    settings.port = free.local_addr().unwrap().port();
    drop(free);
    let error = ImapSource::connect(&settings, "INBOX", FOLDERS)
        .await
        .expect_err("nothing listens there");
    assert!(error.kind.is_transient(), "{error}");
    assert!(
        error.message.contains(&settings.port.to_string()),
        "{error}"
    );
}

/// A fake server that speaks just enough IMAP to greet and list capabilities without
/// STARTTLS; it records every line the client sends.
#[tokio::test]
async fn starttls_mode_refuses_to_log_in_when_the_server_does_not_offer_it() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let (read, mut write) = socket.into_split();
        write
            .write_all(b"* OK IMAP4rev1 fake server ready\r\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(read).lines();
        let mut received = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let tag = line.split(' ').next().unwrap_or("*").to_owned();
            if line.to_ascii_uppercase().contains("CAPABILITY") {
                write
                    .write_all(
                        format!("* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n").as_bytes(),
                    )
                    .await
                    .unwrap();
            } else {
                write
                    .write_all(format!("{tag} OK whatever\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            received.push(line);
        }
        received
    });
    let settings = ImapSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::Starttls,
        ca_file: None,
        username: "security".into(),
        password: Secret::new("do-not-send-me"),
        timeout: Duration::from_secs(10),
    };
    let error = ImapSource::connect(&settings, "INBOX", FOLDERS)
        .await
        .expect_err("no STARTTLS, no login");
    assert_permanent(&error);
    assert!(error.message.contains("STARTTLS"), "{error}");
    let received = tokio::time::timeout(Duration::from_secs(10), fake)
        .await
        .expect("the client hung up")
        .unwrap();
    assert!(
        !received
            .iter()
            .any(|l| l.to_ascii_uppercase().contains("LOGIN") || l.contains("do-not-send-me")),
        "{received:?}"
    );
}
