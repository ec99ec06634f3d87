//! Encrypted reports end to end: real mail encrypted (and signed) by GnuPG, delivered
//! through the real mailbox, decrypted by the daemon with its `[pgp]` key; the reply to
//! a reporter who sent their key is PGP/MIME that GnuPG opens with that key; a message
//! for another key is quarantined and its sender told it could not be read.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::stack::{SECURITY_ADDRESS, Stack};

const PASSPHRASE: &str = "bridge passphrase";
const SECRET_TEXT: &str = "Flask's session cookie can be forged when the secret key is empty.";

/// One GnuPG home (a keyring of one party) in a temporary folder.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path, name: &str) -> Gpg {
        let home = dir.join(format!("gnupg-{name}"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Gpg { home }
    }

    /// Runs gpg in this home with `args`, feeding `input`; its stdout.
    fn run(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("gpg")
            .args([
                "--batch",
                "--pinentry-mode",
                "loopback",
                "--trust-model",
                "always",
            ])
            .args(args)
            .env("GNUPGHOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs (scripts/install-deps installs gnupg)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// An ed25519 key with a cv25519 encryption subkey for `uid`; its fingerprint.
    fn generate(&self, uid: &str, passphrase: &str) -> String {
        let p = ["--passphrase", passphrase];
        self.run(
            &[
                &p[..],
                &["--quick-gen-key", uid, "ed25519", "sign", "never"],
            ]
            .concat(),
            b"",
        );
        let fpr = self.fingerprint(uid);
        self.run(
            &[
                &p[..],
                &["--quick-add-key", &fpr, "cv25519", "encr", "never"],
            ]
            .concat(),
            b"",
        );
        fpr
    }

    fn fingerprint(&self, uid: &str) -> String {
        let out = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid], b"")).unwrap();
        out.lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned()
    }

    fn export(&self, uid: &str) -> Vec<u8> {
        self.run(&["--armor", "--export", uid], b"")
    }

    fn import(&self, key: &[u8]) {
        self.run(&["--import"], key);
    }

    /// `data` encrypted to `to`, signed by `signer` when given; armoured.
    fn encrypt(&self, data: &[u8], to: &str, signer: Option<&str>) -> String {
        let mut args = vec!["--passphrase", "", "--armor", "--encrypt", "-r", to];
        if let Some(s) = signer {
            args.extend(["--sign", "-u", s]);
        }
        String::from_utf8(self.run(&args, data)).unwrap()
    }
}

impl Drop for Gpg {
    /// Stops the gpg-agent this home started (only that one: it is found by its home).
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.home)
            .status();
    }
}

/// Our key (protected by a passphrase) in its own home, the reporter's in theirs (with
/// our public key), and a stranger's key the reporter also knows.
struct Parties {
    ours: Gpg,
    reporter: Gpg,
    our_fingerprint: String,
    reporter_fingerprint: String,
}

fn parties(stack: &Stack) -> Parties {
    let ours = Gpg::new(stack.dir.path(), "ours");
    let our_fingerprint = ours.generate(&format!("Security <{SECURITY_ADDRESS}>"), PASSPHRASE);
    let reporter = Gpg::new(stack.dir.path(), "reporter");
    let reporter_fingerprint = reporter.generate("Alice Reporter <alice@example.net>", "");
    reporter.generate("Somebody Else <else@example.org>", "");
    reporter.import(&ours.export(SECURITY_ADDRESS));
    Parties {
        ours,
        reporter,
        our_fingerprint,
        reporter_fingerprint,
    }
}

/// Writes the daemon's config with `[pgp]`: our secret key and its passphrase in files.
fn configure(stack: &Stack, parties: &Parties, key_url: Option<&str>) {
    let secret = parties.ours.run(
        &[
            "--passphrase",
            PASSPHRASE,
            "--armor",
            "--export-secret-keys",
            SECURITY_ADDRESS,
        ],
        b"",
    );
    let key_file = stack.dir.join("pgp-secret.asc");
    std::fs::write(&key_file, secret).unwrap();
    let pass_file = stack.dir.join("pgp-passphrase");
    std::fs::write(&pass_file, PASSPHRASE).unwrap();
    let url = key_url.map_or(String::new(), |u| format!("key_url = \"{u}\"\n"));
    stack.write_config(|text| {
        format!(
            "{text}\n[pgp]\nsecret_key_file = \"{}\"\npassphrase_file = \"{}\"\n{url}",
            key_file.display(),
            pass_file.display()
        )
    });
}

/// A PGP/MIME message from Alice: `armour` is the encrypted entity.
fn pgp_mime(id: &str, subject: &str, armour: &str) -> Vec<u8> {
    format!(
        "From: Alice Reporter <alice@example.net>\r\n\
         To: {SECURITY_ADDRESS}\r\n\
         Subject: {subject}\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
         boundary=\"enc\"\r\n\
         \r\n\
         This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
         --enc\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --enc\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
         \r\n\
         {}\r\n\
         --enc--\r\n",
        armour.replace('\n', "\r\n").replace("\r\r\n", "\r\n")
    )
    .into_bytes()
}

/// The inner entity Alice encrypts: her text and her public key attached.
fn inner_entity(text: &str, key: &[u8]) -> Vec<u8> {
    format!(
        "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\
         \r\n\
         --inner\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {text}\r\n\
         --inner\r\n\
         Content-Type: application/pgp-keys; name=\"alice.asc\"\r\n\
         Content-Disposition: attachment; filename=\"alice.asc\"\r\n\
         \r\n\
         {}\r\n\
         --inner--\r\n",
        String::from_utf8_lossy(key).replace('\n', "\r\n")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_signed_report_is_filed_decrypted_and_answered_encrypted_to_the_reporter() {
    let mut stack = Stack::start().await;
    let parties = parties(&stack);
    configure(&stack, &parties, None);
    let alice_key = parties.reporter.export("alice@example.net");
    let armour = parties.reporter.encrypt(
        &inner_entity(SECRET_TEXT, &alice_key),
        SECURITY_ADDRESS,
        Some("alice@example.net"),
    );
    let raw = pgp_mime("enc-1", "Encrypted report", &armour);
    stack.deliver(&raw).await;
    let once = stack.drain();

    let advisories = stack.all_advisories();
    assert_eq!(advisories.len(), 1, "{}", once.log());
    let description = advisories[0].1["description"].as_str().unwrap();
    assert!(description.contains(SECRET_TEXT), "{description}");
    assert!(
        description.contains("encrypted (PGP/MIME)"),
        "{description}"
    );
    assert!(
        description.contains(&format!(
            "signed, verified with key {}",
            parties.reporter_fingerprint
        )),
        "{description}"
    );
    assert!(
        !once.log().contains("secret key is empty"),
        "plaintext in the log"
    );

    // The reply is PGP/MIME that Alice opens with her key.
    let replies = stack.replies();
    assert_eq!(replies.len(), 1);
    let reply = String::from_utf8_lossy(&replies[0]).into_owned();
    assert!(reply.contains("multipart/encrypted"), "{reply}");
    let ghsa = advisories[0].1["ghsa_id"].as_str().unwrap();
    assert!(
        !reply.contains("Thank you"),
        "the text is encrypted: {reply}"
    );
    let start = reply.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = reply.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let plain = parties
        .reporter
        .run(&["--decrypt"], &reply.as_bytes()[start..end]);
    let plain = String::from_utf8_lossy(&plain);
    assert!(plain.contains(ghsa), "{plain}");
    assert!(plain.contains("Content-Type: text/plain"), "{plain}");

    // The spool keeps the bytes as they arrived: encrypted.
    let spooled: Vec<Vec<u8>> = walk(&stack.state_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        spooled.iter().any(|s| s == &raw),
        "the raw message is spooled"
    );
    assert!(
        spooled
            .iter()
            .all(|s| !String::from_utf8_lossy(s).contains("secret key is empty")),
        "no plaintext in the spool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_encrypted_to_another_key_is_quarantined_and_its_sender_told_it_was_unreadable() {
    let mut stack = Stack::start().await;
    let parties = parties(&stack);
    let url = "https://palletsprojects.com/security.asc";
    configure(&stack, &parties, Some(url));
    let armour = parties.reporter.encrypt(
        SECRET_TEXT.as_bytes(),
        "else@example.org",
        Some("alice@example.net"),
    );
    stack
        .deliver(&pgp_mime("enc-2", "Encrypted, but not for you", &armour))
        .await;
    let once = stack.drain();

    assert!(stack.all_advisories().is_empty(), "{}", once.log());
    assert_eq!(stack.folder("Quarantine").await.len(), 1, "{}", once.log());
    assert!(
        once.log().contains("not encrypted to our key"),
        "{}",
        once.log()
    );
    let replies = stack.replies();
    assert_eq!(replies.len(), 1, "{}", once.log());
    let reply = mail_parser::MessageParser::default()
        .parse(&replies[0])
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .expect("a plain-text reply");
    assert!(reply.contains("nobody has read it"), "{reply}");
    assert!(reply.contains(url), "{reply}");
    assert!(reply.contains(&parties.our_fingerprint), "{reply}");
    assert!(!reply.contains("secret key is empty"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgp_export_prints_our_public_key_and_a_security_txt_snippet() {
    let stack = Stack::start().await;
    let parties = parties(&stack);
    configure(&stack, &parties, None);
    let out = Command::new(env!("CARGO_BIN_EXE_advisory-bridge"))
        .args([
            "--config",
            stack.config_path.to_str().unwrap(),
            "pgp",
            "export",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE"), "{text}");
    assert!(
        text.contains(&format!("Contact: mailto:{SECURITY_ADDRESS}")),
        "{text}"
    );
    assert!(
        text.contains("Encryption: (publish the key above and put its URL here)"),
        "{text}"
    );
    assert!(text.contains("Policy: "), "{text}");
    // What it prints is the key GnuPG knows as ours.
    let probe = Gpg::new(stack.dir.path(), "probe");
    probe.import(text.as_bytes());
    assert_eq!(probe.fingerprint(SECURITY_ADDRESS), parties.our_fingerprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_unlocks_the_key_and_names_a_wrong_passphrase() {
    let mut stack = Stack::start().await;
    let parties = parties(&stack);
    configure(&stack, &parties, None);
    let mut ok = stack.daemon(&["check"]);
    assert!(ok.wait(Duration::from_secs(60)).success(), "{}", ok.log());
    assert!(
        ok.log()
            .contains(&format!("ok      OpenPGP key {}", parties.our_fingerprint)),
        "{}",
        ok.log()
    );
    std::fs::write(stack.dir.join("pgp-passphrase"), "not the passphrase").unwrap();
    let mut failed = stack.daemon(&["check"]);
    assert!(
        !failed.wait(Duration::from_secs(60)).success(),
        "{}",
        failed.log()
    );
    let out = failed.log();
    assert!(
        out.contains("FAILED  OpenPGP key") && out.contains("pgp.secret_key_file"),
        "{out}"
    );
    assert!(
        !out.contains("not the passphrase"),
        "the passphrase in the output: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_an_encryption_subkey_is_refused_with_the_fix() {
    let stack = Stack::start().await;
    let signer = Gpg::new(stack.dir.path(), "sign-only");
    let uid = format!("Security <{SECURITY_ADDRESS}>");
    signer.run(
        &[
            "--passphrase",
            "",
            "--quick-gen-key",
            &uid,
            "ed25519",
            "sign",
            "never",
        ],
        b"",
    );
    let secret = signer.run(
        &[
            "--passphrase",
            "",
            "--armor",
            "--export-secret-keys",
            SECURITY_ADDRESS,
        ],
        b"",
    );
    let key_file = stack.dir.join("sign-only.asc");
    std::fs::write(&key_file, secret).unwrap();
    stack.write_config(|text| {
        format!(
            "{text}\n[pgp]\nsecret_key_file = \"{}\"\n",
            key_file.display()
        )
    });
    let out = Command::new(env!("CARGO_BIN_EXE_advisory-bridge"))
        .args([
            "--config",
            stack.config_path.to_str().unwrap(),
            "pgp",
            "export",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no encryption subkey"), "{err}");
    assert!(err.contains("--quick-add-key"), "{err}");
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
