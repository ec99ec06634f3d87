//! The test harness itself, against the real servers: if these fail, the scenario tests
//! cannot be trusted. Each test has its own directory, servers and ports, so they run in
//! parallel.

use crate::support;

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use support::{
    Dovecot, ImapTls, Process, SinkAuth, SinkTls, SmtpSink, SmtpSinkOptions, TestDir, block_on,
    header_value, wait_for,
};

fn report(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice Reporter <alice@example.net>\r\n\
         To: security@example.org\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{subject}@example.net>\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Werkzeug's debugger PIN can be guessed.\r\n"
    )
    .into_bytes()
}

/// A lettre transport to the sink, trusting the sink's test CA the way the daemon trusts
/// a configured `ca_file`.
fn transport(
    sink: &SmtpSink,
    credentials: Option<(&str, &str)>,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let params = || {
        let ca_file = sink.ca_file().expect("a TLS sink has a test CA");
        let ca = std::fs::read(ca_file).expect("the sink made its test CA");
        TlsParameters::builder("localhost".to_owned())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&ca).expect("the test CA is PEM"))
            .build_rustls()
            .expect("rustls accepts the test CA")
    };
    let tls = match sink.options().tls {
        SinkTls::Starttls => Tls::Required(params()),
        SinkTls::Implicit => Tls::Wrapper(params()),
        SinkTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(sink.port())
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(user.to_owned(), password.to_owned()));
    }
    builder.build()
}

fn reply(subject: &str) -> Message {
    Message::builder()
        .from(
            "Security Team <security@example.org>"
                .parse::<Mailbox>()
                .expect("valid address"),
        )
        .to("Alice Reporter <alice@example.net>"
            .parse::<Mailbox>()
            .expect("valid address"))
        .subject(subject)
        // Complete, as every message the sink accepts must be (its strict parse).
        .message_id(Some("<infra-test@example.org>".into()))
        .header(lettre::message::header::MIME_VERSION_1_0)
        .body(String::from("Thanks, we are on it.\r\n"))
        .expect("a simple message builds")
}

fn auth() -> SinkAuth {
    SinkAuth {
        user: "bridge".into(),
        password: "correct horse".into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_appended_over_imaps_reads_back_byte_for_byte() {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    let imap = dovecot.security_imap();

    assert!(imap.folder_messages("INBOX").await.is_empty());
    let raw = report("debugger-pin");
    imap.append("INBOX", &raw).await;

    assert_eq!(imap.folder_messages("INBOX").await, vec![raw.clone()]);
    let security = dovecot.security();
    assert_eq!(
        dovecot
            .folder_messages(&security.user, &security.password, "INBOX")
            .await,
        vec![raw]
    );
    assert!(
        dovecot
            .reporter_imap()
            .folder_messages("INBOX")
            .await
            .is_empty(),
        "the reporter's mailbox is separate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plain_port_offers_starttls_and_allows_plaintext_login() {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    let security = dovecot.security();
    let raw = report("plain-port");
    dovecot
        .imap(&security, ImapTls::Starttls)
        .append("INBOX", &raw)
        .await;

    let plain = dovecot.imap(&security, ImapTls::None);
    assert_ne!(plain.port, dovecot.imaps_port());
    assert_eq!(plain.folder_messages("INBOX").await, vec![raw]);

    let mut session = plain.connect().await;
    let capabilities = session.capabilities().await.expect("CAPABILITY works");
    for wanted in ["IDLE", "MOVE", "UIDPLUS"] {
        assert!(capabilities.has_str(wanted), "Dovecot lacks {wanted}");
    }
    session.logout().await.expect("LOGOUT works");
}

#[tokio::test(flavor = "multi_thread")]
async fn folders_can_be_created_and_a_missing_folder_reads_as_empty() {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    let imap = dovecot.security_imap();

    assert!(imap.folder_messages("Quarantine").await.is_empty());
    assert!(!imap.folders().await.contains(&"Quarantine".to_owned()));

    imap.create_folder("Quarantine").await;
    imap.create_folder("Quarantine").await;
    let raw = report("quarantined");
    imap.append("Quarantine", &raw).await;

    assert!(imap.folders().await.contains(&"Quarantine".to_owned()));
    assert_eq!(imap.folder_messages("Quarantine").await, vec![raw]);
    assert!(imap.folder_messages("INBOX").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_dovecot_keeps_its_ports_users_and_mail() {
    let dir = TestDir::new();
    let mut dovecot = Dovecot::start(&dir.join("dovecot"));
    let (imap_port, imaps_port) = (dovecot.imap_port(), dovecot.imaps_port());
    let old_pid = dovecot.pid().expect("it runs");
    let raw = report("before-restart");
    dovecot.security_imap().append("INBOX", &raw).await;

    dovecot.restart();

    assert_ne!(dovecot.pid(), Some(old_pid));
    assert!(!support::pid_alive(old_pid), "the old master is gone");
    assert_eq!(
        (dovecot.imap_port(), dovecot.imaps_port()),
        (imap_port, imaps_port)
    );
    assert_eq!(
        dovecot.security_imap().folder_messages("INBOX").await,
        vec![raw]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_dovecots_run_side_by_side_and_dropping_one_stops_it() {
    let dir = TestDir::new();
    let first = Dovecot::start(&dir.join("first"));
    let second = Dovecot::start(&dir.join("second"));
    let ports = [first.imap_port(), first.imaps_port()];
    assert!(!ports.contains(&second.imap_port()));
    assert!(!ports.contains(&second.imaps_port()));

    let raw = report("only-in-first");
    first.security_imap().append("INBOX", &raw).await;
    assert_eq!(
        first.security_imap().folder_messages("INBOX").await,
        vec![raw]
    );
    assert!(
        second
            .security_imap()
            .folder_messages("INBOX")
            .await
            .is_empty()
    );

    let pid = second.pid().expect("it runs");
    drop(second);
    assert!(!support::pid_alive(pid));
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", ports[0]))
            .await
            .is_ok(),
        "the first one still serves"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_keeps_a_message_sent_over_starttls_with_auth() {
    let dir = TestDir::new();
    let sink = SmtpSink::start(
        &dir.join("sink"),
        SmtpSinkOptions {
            tls: SinkTls::Starttls,
            auth: Some(auth()),
            ..SmtpSinkOptions::default()
        },
    );

    transport(&sink, Some(("bridge", "correct horse")))
        .send(reply("Re: first report"))
        .await
        .expect("the sink accepts an authenticated message");

    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    let raw = &messages[0];
    assert_eq!(
        header_value(raw, "X-Sink-Mail-From").as_deref(),
        Some("<security@example.org>")
    );
    assert_eq!(
        header_value(raw, "X-Sink-Rcpt-To").as_deref(),
        Some("alice@example.net")
    );
    assert_eq!(
        header_value(raw, "Subject").as_deref(),
        Some("Re: first report")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_refuses_wrong_credentials_and_keeps_nothing() {
    let dir = TestDir::new();
    let sink = SmtpSink::start(
        &dir.join("sink"),
        SmtpSinkOptions {
            tls: SinkTls::Implicit,
            auth: Some(auth()),
            ..SmtpSinkOptions::default()
        },
    );

    let err = transport(&sink, Some(("bridge", "wrong")))
        .send(reply("Re: nope"))
        .await
        .expect_err("wrong credentials are refused");
    assert!(err.is_permanent(), "{err}");

    transport(&sink, Some(("bridge", "correct horse")))
        .send(reply("Re: yes"))
        .await
        .expect("implicit TLS with the right credentials works");
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header_value(&messages[0], "Subject").as_deref(),
        Some("Re: yes")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_names_every_way_a_message_fails_the_strict_parse() {
    let dir = TestDir::new();
    let sink = SmtpSink::start(&dir.join("sink"), SmtpSinkOptions::default());
    let envelope = lettre::address::Envelope::new(
        Some("security@example.org".parse().unwrap()),
        vec!["alice@example.net".parse().unwrap()],
    )
    .unwrap();
    let bad = "From: Security Team <security@example.org>\r\n\
               To: alice@\r\n\
               Subject: R\u{e9}ponse\r\n\
               Date: yesterday\r\n\
               Content-Type: text/plain; charset=utf-8\r\n\
               \r\n\
               Thanks.\r\n";
    transport(&sink, None)
        .send_raw(&envelope, bad.as_bytes())
        .await
        .expect("the sink keeps even an invalid message");

    let invalid = sink.invalid();
    for problem in [
        "0 MIME-Version headers instead of one",
        "0 Message-ID headers instead of one",
        "Date 'yesterday' is not a date",
        "To does not parse",
        "Subject holds raw 8-bit bytes",
    ] {
        assert!(invalid.contains(problem), "no `{problem}` in:\n{invalid}");
    }
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink.messages()));
    assert!(read.is_err(), "reading an invalid message fails the test");
    // Forgiven here, or dropping the sink would fail this test too.
    std::fs::remove_file(sink.dir().join("invalid")).unwrap();
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fault_file_makes_the_sink_refuse_recipients_with_its_code() {
    let dir = TestDir::new();
    let sink = SmtpSink::start(&dir.join("sink"), SmtpSinkOptions::default());
    let smtp = transport(&sink, None);

    sink.set_fault(Some("451 Try again later"));
    let err = smtp.send(reply("Re: one")).await.expect_err("451 refuses");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("Try again later"), "{err}");

    sink.set_fault(Some("550 No such user"));
    let err = smtp.send(reply("Re: two")).await.expect_err("550 refuses");
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("No such user"), "{err}");
    assert!(sink.messages().is_empty());

    sink.set_fault(None);
    smtp.send(reply("Re: three")).await.expect("accepted again");
    let subjects: Vec<_> = sink
        .messages()
        .iter()
        .map(|m| header_value(m, "Subject"))
        .collect();
    assert_eq!(subjects, vec![Some("Re: three".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_keeps_arrival_order_and_delivers_copies_to_the_reporter() {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    let sink = SmtpSink::start(
        &dir.join("sink"),
        SmtpSinkOptions {
            deliver_maildir: Some(dovecot.reporter().maildir),
            ..SmtpSinkOptions::default()
        },
    );
    let smtp = transport(&sink, None);
    for n in 1..=3 {
        smtp.send(reply(&format!("Re: report {n}")))
            .await
            .expect("accepted");
    }

    let subjects: Vec<_> = sink
        .messages()
        .iter()
        .map(|m| header_value(m, "Subject").unwrap_or_default())
        .collect();
    assert_eq!(subjects, ["Re: report 1", "Re: report 2", "Re: report 3"]);

    let copies = dovecot.reporter_imap().folder_messages("INBOX").await;
    assert_eq!(copies.len(), 3, "{}", dovecot.log());
    let mut copy_subjects: Vec<_> = copies
        .iter()
        .map(|m| header_value(m, "Subject").unwrap_or_default())
        .collect();
    copy_subjects.sort();
    assert_eq!(copy_subjects, subjects);
}

#[test]
fn blocking_tests_can_use_the_imap_helpers_and_wait_for() {
    let dir = TestDir::new();
    let dovecot = Dovecot::start(&dir.join("dovecot"));
    let imap = dovecot.security_imap();
    let raw = report("blocking");

    let writer = {
        let imap = imap.clone();
        let raw = raw.clone();
        std::thread::spawn(move || block_on(imap.append("INBOX", &raw)))
    };
    wait_for(Duration::from_secs(30), "the message in INBOX", || {
        block_on(imap.folder_messages("INBOX")) == vec![raw.clone()]
    });
    writer.join().expect("the append thread finished");
}

#[test]
#[should_panic(expected = "waiting for a condition that never holds")]
fn wait_for_names_what_it_waited_for() {
    wait_for(
        Duration::from_millis(200),
        "a condition that never holds",
        || false,
    );
}

#[test]
fn a_process_logs_its_output_and_stops_on_sigterm_or_sigkill() {
    let dir = TestDir::new();
    let mut process = Process::spawn(
        "/bin/sh",
        [
            "-c",
            "echo \"hello $GREETING\"; echo oops >&2; trap 'echo bye; exit 3' TERM; while :; do sleep 0.05; done",
        ],
        &[("GREETING", "world")],
        &dir.join("sh.log"),
    );
    wait_for(Duration::from_secs(30), "the greeting", || {
        process.log().contains("hello world")
    });
    assert!(process.is_running());
    let status = process.terminate();
    assert_eq!(status.code(), Some(3));
    assert!(process.log().contains("oops"));
    assert!(process.log().contains("bye"));

    let mut sleeper = Process::spawn("/bin/sleep", ["600"], &[], &dir.join("sleep.log"));
    let pid = sleeper.pid();
    sleeper.kill();
    assert!(!sleeper.is_running());
    assert!(!support::pid_alive(pid));
}
