//! The reply adapter against a real SMTP server (aiosmtpd on loopback): what arrives is
//! threaded, marked auto-replied, and cannot be bent by hostile header values; server
//! refusals are sorted into transient and permanent.

mod support;

use std::time::Duration;

use advisory_bridge::config::{Secret, TlsMode};
use advisory_bridge::mail::Address;
use advisory_bridge::render::ReplyMessage;
use advisory_bridge::reply::{Mailer, MailerSettings};
use mail_parser::MessageParser;
use support::{SinkAuth, SinkTls, SmtpSink, SmtpSinkOptions, TestDir, header_value};

fn sink(dir: &TestDir, tls: SinkTls) -> SmtpSink {
    SmtpSink::start(
        &dir.join("smtp"),
        SmtpSinkOptions {
            tls,
            auth: Some(SinkAuth {
                user: "bridge".into(),
                password: "s3cret".into(),
            }),
            deliver_maildir: None,
        },
    )
}

fn mailer(sink: &SmtpSink, tls: TlsMode, password: &str) -> Mailer {
    Mailer::new(&MailerSettings {
        host: "127.0.0.1".into(),
        port: sink.port(),
        tls,
        ca_file: sink.ca_file(),
        credentials: Some(("bridge".into(), Secret::new(password))),
        timeout: Duration::from_secs(20),
    })
    .expect("mailer builds")
}

fn message(subject: &str) -> ReplyMessage {
    ReplyMessage {
        to: Address {
            name: Some("Rita Reporter".into()),
            email: "rita@example.net".into(),
        },
        from: Address {
            name: Some("Pallets Security".into()),
            email: "security@palletsprojects.com".into(),
        },
        subject: subject.into(),
        message_id: "advisory-bridge.abc@palletsprojects.com".into(),
        in_reply_to: Some("report-1@example.net".into()),
        references: vec!["earlier@example.net".into(), "report-1@example.net".into()],
        body: "Thank you for your report.\nGHSA-2345-6789-cfgh\n".into(),
    }
}

#[tokio::test]
async fn a_reply_over_starttls_arrives_threaded_and_marked_auto_replied() {
    let dir = TestDir::new();
    let sink = sink(&dir, SinkTls::Starttls);
    let mailer = mailer(&sink, TlsMode::Starttls, "s3cret");
    mailer
        .check()
        .await
        .expect("check connects, upgrades and authenticates");
    mailer
        .send(&message("Re: XSS in the debugger [GHSA-2345-6789-cfgh]"))
        .await
        .expect("sent");
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    let raw = &got[0];
    assert_eq!(
        header_value(raw, "X-Sink-Rcpt-To").as_deref(),
        Some("rita@example.net")
    );
    assert_eq!(
        header_value(raw, "X-Sink-Mail-From").as_deref(),
        Some("<security@palletsprojects.com>")
    );
    let parsed = MessageParser::default().parse(raw).expect("parses");
    assert_eq!(
        parsed.message_id(),
        Some("advisory-bridge.abc@palletsprojects.com")
    );
    assert_eq!(parsed.in_reply_to().as_text(), Some("report-1@example.net"));
    let refs: Vec<String> = parsed
        .references()
        .as_text_list()
        .unwrap_or_default()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(refs, ["earlier@example.net", "report-1@example.net"]);
    assert_eq!(
        header_value(raw, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        header_value(raw, "X-Advisory-Bridge").as_deref(),
        Some("reply")
    );
    assert_eq!(
        parsed.subject(),
        Some("Re: XSS in the debugger [GHSA-2345-6789-cfgh]")
    );
    assert!(
        parsed
            .body_text(0)
            .unwrap_or_default()
            .contains("GHSA-2345-6789-cfgh")
    );
}

#[tokio::test]
async fn a_reply_over_implicit_tls_arrives() {
    let dir = TestDir::new();
    let sink = sink(&dir, SinkTls::Implicit);
    mailer(&sink, TlsMode::Implicit, "s3cret")
        .send(&message("Re: report"))
        .await
        .expect("sent over SMTPS");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn line_breaks_in_a_subject_or_name_cannot_add_a_header() {
    let dir = TestDir::new();
    let sink = sink(&dir, SinkTls::Starttls);
    let mut m = message("Re: hello\r\nBcc: victim@example.org\r\nX-Injected: yes");
    m.to.name = Some("Rita\r\nX-Also-Injected: yes".into());
    mailer(&sink, TlsMode::Starttls, "s3cret")
        .send(&m)
        .await
        .expect("sent");
    let raw = &sink.messages()[0];
    assert_eq!(header_value(raw, "X-Injected"), None);
    assert_eq!(header_value(raw, "X-Also-Injected"), None);
    assert_eq!(header_value(raw, "Bcc"), None);
    assert_eq!(
        header_value(raw, "X-Sink-Rcpt-To").as_deref(),
        Some("rita@example.net"),
        "only the one recipient"
    );
}

#[tokio::test]
async fn a_4xx_is_transient_a_5xx_permanent_and_a_wrong_password_is_not_shown() {
    let dir = TestDir::new();
    let sink = sink(&dir, SinkTls::Starttls);
    let mailer_ok = mailer(&sink, TlsMode::Starttls, "s3cret");
    sink.set_fault(Some("451 4.3.0 Try again later"));
    let e = mailer_ok.send(&message("Re: x")).await.unwrap_err();
    assert!(e.kind.is_transient(), "{e}");
    assert!(e.to_string().contains("Try again later"), "{e}");
    sink.set_fault(Some("550 5.1.1 No such user"));
    let e = mailer_ok.send(&message("Re: x")).await.unwrap_err();
    assert!(!e.kind.is_transient(), "{e}");
    sink.set_fault(None);
    let e = mailer(&sink, TlsMode::Starttls, "wrong-password-77")
        .send(&message("Re: x"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("wrong-password-77"), "{e}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_server_that_is_down_is_a_transient_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mailer = Mailer::new(&MailerSettings {
        host: "127.0.0.1".into(),
        port,
        tls: TlsMode::None,
        ca_file: None,
        credentials: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let e = mailer.send(&message("Re: x")).await.unwrap_err();
    assert!(e.kind.is_transient(), "{e}");
}
