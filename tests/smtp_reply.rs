//! `reply::Mailer` against a real SMTP server on loopback (aiosmtpd, `scripts/smtp-sink`):
//! what the reporter receives, over each TLS mode, and how refusals are classified.

use crate::support;

use std::time::Duration;

use advisory_bridge::config::{Secret, TlsMode};
use advisory_bridge::failure::FailureKind;
use advisory_bridge::mail::Address;
use advisory_bridge::render::ReplyMessage;
use advisory_bridge::reply::{Mailer, MailerSettings};
use mail_parser::MessageParser;
use support::{SinkAuth, SinkTls, SmtpSink, SmtpSinkOptions, TestDir, header_value};

const SMTP_USER: &str = "bridge";
const SMTP_PASSWORD: &str = "Sink-Password-2718";

struct Sink {
    sink: SmtpSink,
    _dir: TestDir,
}

fn start(tls: SinkTls, auth: bool) -> Sink {
    let dir = TestDir::new();
    let sink = SmtpSink::start(
        &dir.join("smtp"),
        SmtpSinkOptions {
            tls,
            auth: auth.then(|| SinkAuth {
                user: SMTP_USER.into(),
                password: SMTP_PASSWORD.into(),
            }),
            deliver_maildir: None,
        },
    );
    Sink { sink, _dir: dir }
}

impl Sink {
    fn settings(&self, host: &str) -> MailerSettings {
        let tls = match self.sink.options().tls {
            SinkTls::Starttls => TlsMode::Starttls,
            SinkTls::Implicit => TlsMode::Implicit,
            SinkTls::None => TlsMode::None,
        };
        MailerSettings {
            host: host.into(),
            port: self.sink.port(),
            tls,
            ca_file: self.sink.ca_file(),
            credentials: self
                .sink
                .options()
                .auth
                .as_ref()
                .map(|a| (a.user.clone(), Secret::new(a.password.clone()))),
            timeout: Duration::from_secs(30),
            pgp: None,
        }
    }

    fn mailer(&self) -> Mailer {
        Mailer::new(&self.settings("127.0.0.1")).expect("the settings are valid")
    }

    fn only_message(&self) -> Vec<u8> {
        let messages = self.sink.messages();
        assert_eq!(
            messages.len(),
            1,
            "expected one message; sink log:\n{}",
            self.sink.log()
        );
        messages.into_iter().next().expect("checked above")
    }
}

fn reply() -> ReplyMessage {
    ReplyMessage {
        to: Address {
            name: Some("Alice Reporter".into()),
            email: "alice@example.net".into(),
        },
        from: Address {
            name: Some("Pallets Security".into()),
            email: "security@example.org".into(),
        },
        subject: "Re: XSS in the debugger [GHSA-abcd-efgh-ijkl]".into(),
        message_id: "ack.report-1234@example.org".into(),
        in_reply_to: Some("report-1@example.net".into()),
        references: vec!["thread-0@example.net".into(), "report-1@example.net".into()],
        body: "Hello Alice,\n\nthank you \u{2014} we track this as GHSA-abcd-efgh-ijkl.\n".into(),
        encrypt_to: None,
    }
}

/// Everything the reporter's client needs to thread, recognise and show the reply.
fn assert_is_the_reply(raw: &[u8], expected: &ReplyMessage) {
    assert_eq!(
        header_value(raw, "X-Sink-Mail-From").as_deref(),
        Some("<security@example.org>")
    );
    assert_eq!(
        header_value(raw, "X-Sink-Rcpt-To").as_deref(),
        Some("alice@example.net"),
        "the envelope must name exactly the reporter"
    );
    let message = MessageParser::default()
        .parse(raw)
        .expect("the sink stored a parseable message");
    assert_eq!(message.message_id(), Some(expected.message_id.as_str()));
    assert_eq!(
        message.in_reply_to().as_text(),
        expected.in_reply_to.as_deref()
    );
    let references: Vec<&str> = message
        .references()
        .as_text_list()
        .map(|list| list.iter().map(|r| r.as_ref()).collect())
        .or_else(|| message.references().as_text().map(|r| vec![r]))
        .unwrap_or_default();
    let expected_references: Vec<&str> = expected.references.iter().map(String::as_str).collect();
    assert_eq!(references, expected_references);
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        message
            .header_raw("X-Auto-Response-Suppress")
            .map(str::trim),
        Some("All")
    );
    assert_eq!(
        message.header_raw("X-Advisory-Bridge").map(str::trim),
        Some("reply")
    );
    assert_eq!(message.header_raw("Precedence"), None);
    assert!(message.date().is_some(), "a Date header is set");
    let from = message.from().and_then(|f| f.first()).expect("From is set");
    assert_eq!(from.address(), Some("security@example.org"));
    assert_eq!(from.name(), expected.from.name.as_deref());
    let to = message.to().and_then(|t| t.first()).expect("To is set");
    assert_eq!(to.address(), Some("alice@example.net"));
    assert_eq!(to.name(), expected.to.name.as_deref());
    assert_eq!(message.subject(), Some(expected.subject.as_str()));
    // The transfer encoding may add a final line break; the text is the same.
    let body = message.body_text(0).expect("a text body");
    assert_eq!(
        body.replace("\r\n", "\n").trim_end(),
        expected.body.trim_end()
    );
}

#[tokio::test]
async fn a_reply_over_starttls_with_auth_arrives_threaded_and_marked_auto_replied() {
    let sink = start(SinkTls::Starttls, true);
    let message = reply();
    sink.mailer()
        .send(&message)
        .await
        .expect("the sink accepts it");
    assert_is_the_reply(&sink.only_message(), &message);
}

#[tokio::test]
async fn a_reply_over_implicit_tls_arrives_and_the_host_name_is_checked() {
    let sink = start(SinkTls::Implicit, true);
    let mailer = Mailer::new(&sink.settings("localhost")).unwrap();
    let message = reply();
    mailer.send(&message).await.expect("the sink accepts it");
    assert_is_the_reply(&sink.only_message(), &message);
}

#[tokio::test]
async fn a_reply_without_tls_goes_to_a_loopback_server() {
    let sink = start(SinkTls::None, false);
    let message = reply();
    sink.mailer()
        .send(&message)
        .await
        .expect("the sink accepts it");
    assert_is_the_reply(&sink.only_message(), &message);
}

#[tokio::test]
async fn line_breaks_in_the_subject_cannot_add_headers_or_recipients() {
    let sink = start(SinkTls::Starttls, true);
    let mut message = reply();
    message.subject =
        "Re: hi\r\nBcc: victim@example.com\r\nX-Injected: yes\r\n\r\nfake body".into();
    message.to.name = Some("Alice\r\nCc: other@example.com".into());
    message.in_reply_to = Some("report-1@example.net>\r\nX-Injected: yes".into());
    sink.mailer()
        .send(&message)
        .await
        .expect("the sink accepts it");
    let raw = sink.only_message();
    assert_eq!(
        header_value(&raw, "X-Sink-Rcpt-To").as_deref(),
        Some("alice@example.net")
    );
    let parsed = MessageParser::default().parse(&raw).unwrap();
    for header in ["Bcc", "Cc", "X-Injected"] {
        assert_eq!(parsed.header_raw(header), None, "{header} was injected");
    }
    assert_eq!(
        parsed.subject(),
        Some("Re: hi Bcc: victim@example.com X-Injected: yes fake body")
    );
    assert_eq!(
        parsed
            .body_text(0)
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        message.body.trim_end()
    );
}

#[tokio::test]
async fn a_temporary_refusal_is_transient_and_shows_the_servers_words() {
    let sink = start(SinkTls::Starttls, true);
    sink.sink.set_fault(Some("451 4.3.0 Try again later"));
    let error = sink.mailer().send(&reply()).await.expect_err("451");
    assert!(error.kind.is_transient(), "{error}");
    assert!(error.message.contains("Try again later"), "{error}");
    assert_eq!(error.recipient, "alice@example.net");
    assert!(sink.sink.messages().is_empty());

    // Once the server takes mail again, the same reply goes through.
    sink.sink.set_fault(None);
    sink.mailer().send(&reply()).await.expect("accepted now");
    sink.only_message();
}

#[tokio::test]
async fn a_permanent_refusal_of_the_recipient_is_permanent() {
    let sink = start(SinkTls::Starttls, true);
    sink.sink.set_fault(Some("550 5.1.1 No such user here"));
    let error = sink.mailer().send(&reply()).await.expect_err("550");
    assert_eq!(error.kind, FailureKind::Permanent, "{error}");
    assert!(error.message.contains("No such user here"), "{error}");
    assert!(sink.sink.messages().is_empty());
}

#[tokio::test]
async fn a_wrong_smtp_password_waits_for_ops_and_is_never_shown() {
    let sink = start(SinkTls::Starttls, true);
    let mut settings = sink.settings("127.0.0.1");
    let password = "Not-The-Password-1618";
    settings.credentials = Some((SMTP_USER.into(), Secret::new(password)));
    let mailer = Mailer::new(&settings).unwrap();
    for error in [
        mailer.send(&reply()).await.expect_err("535"),
        mailer.check().await.expect_err("535"),
    ] {
        // Our login is wrong, not the reporter's address: wait until ops fixed it.
        assert_eq!(error.kind, FailureKind::Misconfigured, "{error}");
        assert!(error.message.contains("smtp.username"), "{error}");
        assert!(!error.to_string().contains(password), "{error}");
        assert!(!format!("{error:?}").contains(password), "{error:?}");
    }
    assert!(sink.sink.messages().is_empty());
}

#[tokio::test]
async fn check_logs_in_and_sends_nothing() {
    let sink = start(SinkTls::Starttls, true);
    sink.mailer().check().await.expect("STARTTLS and AUTH work");
    let sink_implicit = start(SinkTls::Implicit, false);
    sink_implicit.mailer().check().await.expect("SMTPS works");
    assert!(sink.sink.messages().is_empty());
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_with_advice() {
    let sink = start(SinkTls::Implicit, false);
    let mut settings = sink.settings("127.0.0.1");
    settings.ca_file = None;
    let error = Mailer::new(&settings)
        .unwrap()
        .send(&reply())
        .await
        .expect_err("the test CA is not trusted");
    assert!(error.kind.is_transient(), "{error}");
    assert!(error.message.contains("smtp.ca_file"), "{error}");
    assert!(sink.sink.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_transient() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mailer = Mailer::new(&MailerSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        ca_file: None,
        credentials: None,
        timeout: Duration::from_secs(10),
        pgp: None,
    })
    .unwrap();
    let error = mailer.send(&reply()).await.expect_err("nothing listens");
    assert!(error.kind.is_transient(), "{error}");
}

#[tokio::test]
async fn an_address_lettre_cannot_parse_is_permanent_and_nothing_is_sent() {
    let sink = start(SinkTls::None, false);
    let mut message = reply();
    message.to.email = "alice@example.net, bob@example.com".into();
    let error = sink
        .mailer()
        .send(&message)
        .await
        .expect_err("two addresses");
    assert_eq!(error.kind, FailureKind::Permanent, "{error}");
    assert!(sink.sink.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_says_plainly_when_tls_meets_a_plain_text_port() {
    let mut stack = support::stack::Stack::start().await;
    let (imaps, imap) = (stack.imap.imaps_port(), stack.imap.imap_port());
    stack.write_config(|text| {
        text.replacen(&format!("port = {imaps}"), &format!("port = {imap}"), 1)
            .replacen("tls = \"starttls\"", "tls = \"implicit\"", 1)
    });
    let mut check = stack.daemon(&["check"]);
    let status = check.wait(Duration::from_secs(120));
    let out = check.log();
    assert_eq!(status.code(), Some(1), "{out}");
    let line = |what: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("FAILED  {what}")))
            .unwrap_or_else(|| panic!("no {what} line:\n{out}"))
            .to_owned()
    };
    let imap_line = line("IMAP");
    assert!(
        imap_line.contains("does not speak TLS") && imap_line.contains("imap.tls"),
        "{imap_line}"
    );
    assert!(
        !imap_line.contains("ca_file"),
        "not a CA problem: {imap_line}"
    );
    let smtp_line = line("SMTP");
    assert!(
        smtp_line.contains("does not speak TLS") && smtp_line.contains("smtp.tls"),
        "{smtp_line}"
    );
    assert!(!smtp_line.contains("connection check of"), "{smtp_line}");
    for l in [&imap_line, &smtp_line] {
        let parts: Vec<&str> = l.split(": ").collect();
        assert!(
            parts.windows(2).all(|w| w[0] != w[1]),
            "no phrase repeated: {l}"
        );
    }
    assert_eq!(
        out.matches("error:").count(),
        0,
        "check reports, it does not die:\n{out}"
    );
}
