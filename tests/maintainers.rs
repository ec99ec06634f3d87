//! What maintainers hear: one mail per new draft (GitHub notifies no one of drafts made
//! through its API), their answers filed rather than turned into reports, and the
//! reporter invited to the draft when they asked for credit and are who they say.

use crate::support;

use support::stack::{Stack, report};

/// The header `name` of a raw message, unfolded.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainers_get_one_mail_per_new_draft_and_their_answers_are_filed() {
    let mut stack = Stack::start().await;
    stack.write_config(|text| format!("{text}\n[maintainers]\nnotify = [\"team@example.org\"]\n"));
    stack
        .deliver(&report(
            "mt-1",
            "Werkzeug: debugger PIN leak",
            "the details",
        ))
        .await;
    let once = stack.drain();
    let ghsa = stack.github.advisories("pallets/werkzeug")[0]["ghsa_id"]
        .as_str()
        .expect("a GHSA id")
        .to_owned();
    let sent = stack.replies();
    let to_team: Vec<&Vec<u8>> = sent
        .iter()
        .filter(|m| header(m, "To").is_some_and(|t| t.contains("team@example.org")))
        .collect();
    assert_eq!(
        to_team.len(),
        1,
        "one mail to the maintainers: {}",
        once.log()
    );
    let mail = to_team[0];
    let subject = header(mail, "Subject").expect("a subject");
    assert!(
        subject.contains(&ghsa) && subject.contains("pallets/werkzeug"),
        "{subject}"
    );
    let body = String::from_utf8_lossy(mail);
    assert!(body.contains("/security/advisories/"), "{body}");
    assert!(!body.contains("the details"), "no report text by default");
    assert_eq!(sent.len(), 2, "the reporter's acknowledgement and this one");

    // A maintainer answers it: filed, no second advisory, no reply.
    let ours = header(mail, "Message-ID").expect("our id");
    let answer = format!(
        "From: Team <team@example.org>\r\nTo: security@palletsprojects.com\r\n\
         Subject: Re: {subject}\r\nMessage-ID: <answer-1@example.org>\r\n\
         In-Reply-To: {ours}\r\nReferences: {ours}\r\n\
         Date: Tue, 24 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nI'll look at it.\r\n"
    );
    stack.deliver(answer.as_bytes()).await;
    let again = stack.drain();
    assert_eq!(stack.folder("Ignored").await.len(), 1, "{}", again.log());
    assert_eq!(stack.all_advisories().len(), 1);
    assert_eq!(stack.replies().len(), 2, "{}", again.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_reporter_with_a_github_login_is_invited_to_the_draft() {
    let mut stack = Stack::start().await;
    stack.github.add_user("danaok");
    stack.write_config(|text| {
        format!(
            "{}\n[authentication]\ntrusted_authserv_ids = [\"mx.palletsprojects.com\"]\n",
            text.replace("[advisory]\n", "[advisory]\ninvite_reporter = true\n")
        )
    });
    let raw = String::from_utf8(report(
        "inv-1",
        "Click: shell injection",
        "the details\r\n\r\n-- \r\nDana (@danaok on GitHub)",
    ))
    .unwrap()
    .replacen(
        "MIME-Version",
        "Authentication-Results: mx.palletsprojects.com; dmarc=pass header.from=example.net\r\nMIME-Version",
        1,
    );
    stack.deliver(raw.as_bytes()).await;
    let once = stack.drain();
    let advisory = &stack.github.advisories("pallets/click")[0];
    let logins: Vec<&str> = advisory["collaborating_users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["login"].as_str())
        .collect();
    assert_eq!(logins, ["danaok"], "{}", once.log());
    let ack = String::from_utf8_lossy(&stack.replies()[0]).into_owned();
    assert!(
        ack.contains("We have added your GitHub account, danaok,"),
        "{ack}"
    );
}
