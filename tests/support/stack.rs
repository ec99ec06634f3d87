//! The whole local stack for end-to-end tests: a private IMAP server (Dovecot by
//! default, or Cyrus or Courier: [`Stack::start_on`]) holding the security@
//! mailbox, an SMTP sink receiving replies (STARTTLS + AUTH), the fake GitHub, a config
//! file pointing the real `advisory-bridge` binary at them, and helpers to drive it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fake_github::{FakeGitHub, FakeHandle, FakeOptions};
use serde_json::Value;

use super::{
    ImapAccount, ImapServer, Process, ServerKind, SinkAuth, SinkTls, SmtpSink, SmtpSinkOptions,
    TestDir, daemon_binary, wait_for_async,
};

/// The repositories every end-to-end test configures (see `tests/fixtures/README.md`).
pub const REPOSITORIES: &[&str] = &[
    "pallets/flask",
    "pallets/werkzeug",
    "pallets/jinja",
    "pallets/click",
    "pallets/markupsafe",
    "pallets-eco/flask-sqlalchemy",
];

/// Our security@ address.
pub const SECURITY_ADDRESS: &str = "security@palletsprojects.com";

/// How long a test waits for something the daemon should do "within a second or two":
/// generous, because it only bounds a failing test on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running stack. Servers stop when it is dropped.
pub struct Stack {
    /// The IMAP server.
    pub imap: ImapServer,
    /// The SMTP server replies go to.
    pub smtp: SmtpSink,
    /// The fake GitHub.
    pub github: FakeHandle,
    /// The daemon's config file.
    pub config_path: PathBuf,
    /// The daemon's state directory.
    pub state_dir: PathBuf,
    token_file: PathBuf,
    daemons: usize,
    /// Everything lives here. Declared last so it is deleted last: the servers stop, and
    /// the SMTP sink's verdict on every message is read ([`SmtpSink::assert_all_valid`]),
    /// while their files still exist.
    pub dir: TestDir,
}

impl Stack {
    /// Starts Dovecot, the SMTP sink and the fake GitHub, and writes a config.
    pub async fn start() -> Stack {
        Stack::start_on(ServerKind::dovecot()).await
    }

    /// Starts an IMAP server of `kind`, the SMTP sink and the fake GitHub, and writes a
    /// config with the default folder names.
    pub async fn start_on(kind: ServerKind) -> Stack {
        Stack::start_with(kind, |options| options).await
    }

    /// [`Stack::start_on`] with the fake GitHub's options changed by `github` (Apps,
    /// installations, tokens per owner).
    pub async fn start_with(
        kind: ServerKind,
        github: impl FnOnce(FakeOptions) -> FakeOptions,
    ) -> Stack {
        let dir = TestDir::new();
        let imap = ImapServer::start_kind(&dir.join("imap"), kind);
        let smtp = SmtpSink::start(
            &dir.join("smtp"),
            SmtpSinkOptions {
                tls: SinkTls::Starttls,
                auth: Some(SinkAuth {
                    user: "bridge".into(),
                    password: "smtp-secret".into(),
                }),
                deliver_maildir: None,
            },
        );
        let token = "ghp_testtoken0123456789";
        let github = FakeGitHub::start(github(FakeOptions {
            token: token.into(),
            repos: REPOSITORIES.iter().map(|r| r.to_string()).collect(),
            ..FakeOptions::default()
        }))
        .await
        .expect("the fake GitHub starts");
        let token_file = dir.join("github-token");
        fs::write(&token_file, token).expect("write the token file");
        // Kept outside the state directory, as README advises for instances that share
        // a mailbox or must survive losing their state: recovery tests wipe state_dir.
        fs::write(dir.join("marker.key"), format!("{}\n", "5e".repeat(32)))
            .expect("write the marker key");
        let stack = Stack {
            config_path: dir.join("config.toml"),
            state_dir: dir.join("state"),
            dir,
            imap,
            smtp,
            github,
            token_file,
            daemons: 0,
        };
        stack.write_config(|text| text);
        stack
    }

    /// The config the tests start from; `edit` may change it (e.g. `str::replace`).
    pub fn write_config(&self, edit: impl FnOnce(String) -> String) {
        let security = self.imap.security();
        let text = format!(
            r#"state_dir = "{state}"
default_repository = "pallets/flask"

[imap]
host = "127.0.0.1"
port = {imaps}
tls = "implicit"
ca_file = "{imap_ca}"
username = "{imap_user}"
password_file = "{imap_pw}"
poll_interval_secs = 1
timeout_secs = 20

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "starttls"
ca_file = "{smtp_ca}"
username = "bridge"
password_env = "TEST_SMTP_PASSWORD"
from_address = "{from}"
from_name = "Pallets Security"
timeout_secs = 20

[github]
api_url = "{github}"
token_file = "{token}"
timeout_secs = 3
min_mutation_interval_ms = 100

[reply]
project_name = "the Pallets maintainers"

[advisory]
marker_key_file = "{marker_key}"

[limits]
# Tests send many reports from one address; the flood limits have their own test.
max_advisories_per_sender_per_day = 1000
max_replies_per_sender_per_day = 1000

[notify]
interval_secs = 1

[retry]
initial_delay_secs = 1
max_delay_secs = 2

[[repository]]
name = "pallets/flask"

[[repository]]
name = "pallets/werkzeug"

[[repository]]
name = "pallets/jinja"
aliases = ["jinja2"]
package = "jinja2"

[[repository]]
name = "pallets/click"

[[repository]]
name = "pallets/markupsafe"

[[repository]]
name = "pallets-eco/flask-sqlalchemy"
"#,
            state = self.state_dir.display(),
            imaps = self.imap.imaps_port(),
            imap_ca = self.imap.ca_file().display(),
            imap_user = security.user,
            imap_pw = security.password_file.display(),
            smtp_port = self.smtp.port(),
            smtp_ca = self.smtp.ca_file().expect("the sink speaks TLS").display(),
            from = SECURITY_ADDRESS,
            github = self.github.url(),
            token = self.token_file.display(),
            marker_key = self.dir.join("marker.key").display(),
        );
        fs::write(&self.config_path, edit(text)).expect("write the daemon config");
    }

    /// Starts the real binary with `args` after `--config <file>`; its log goes next to
    /// the config.
    pub fn daemon(&mut self, args: &[&str]) -> Process {
        self.daemon_logging(args, "info,advisory_bridge=debug")
    }

    /// [`Stack::daemon`] with `ADVISORY_BRIDGE_LOG` set to `level`.
    pub fn daemon_logging(&mut self, args: &[&str], level: &str) -> Process {
        self.daemon_from(&daemon_binary(), args, level)
    }

    /// [`Stack::daemon_logging`] running `binary` (e.g. the one a package installs)
    /// instead of the one cargo built.
    pub fn daemon_from(&mut self, binary: &Path, args: &[&str], level: &str) -> Process {
        self.daemons += 1;
        let log = self.dir.join(format!("daemon-{}.log", self.daemons));
        let mut all = vec!["--config", self.config_path.to_str().expect("UTF-8 path")];
        all.extend_from_slice(args);
        Process::spawn(
            binary,
            all,
            &[
                ("TEST_SMTP_PASSWORD", "smtp-secret"),
                ("ADVISORY_BRIDGE_LOG", level),
            ],
            &log,
        )
    }

    /// Runs `once` to the end and asserts it succeeded; returns it for its log.
    pub fn drain(&mut self) -> Process {
        let mut once = self.daemon(&["once"]);
        let status = once.wait(Duration::from_secs(180));
        assert!(status.success(), "once failed: {status:?}\n{}", once.log());
        once
    }

    /// The security@ mailbox, as the test's own IMAP client sees it.
    pub fn mailbox(&self) -> ImapAccount {
        self.imap.security_imap()
    }

    /// Delivers a message into the watched INBOX.
    pub async fn deliver(&self, raw: &[u8]) {
        self.mailbox().append("INBOX", raw).await;
    }

    /// Delivers a fixture from `tests/fixtures/`.
    pub async fn deliver_fixture(&self, name: &str) -> Vec<u8> {
        let raw = fixture(name);
        self.deliver(&raw).await;
        raw
    }

    /// The messages in one folder of the security@ mailbox; `name` as the daemon's config
    /// writes it (`Processed`), resolved as the server names it (`INBOX.Processed`).
    pub async fn folder(&self, name: &str) -> Vec<Vec<u8>> {
        let name = self.imap.folder_name(name);
        self.mailbox().folder_messages(&name).await
    }

    /// The claim folder of `instance` as the server names it.
    pub fn claim_folder(&self, instance: &str) -> String {
        self.imap
            .folder_name(&format!("Processing{}{instance}", self.imap.delimiter()))
    }

    /// Every advisory the fake GitHub holds, with its repository.
    pub fn all_advisories(&self) -> Vec<(String, Value)> {
        REPOSITORIES
            .iter()
            .flat_map(|repo| {
                self.github
                    .advisories(repo)
                    .into_iter()
                    .map(move |a| (repo.to_string(), a))
            })
            .collect()
    }

    /// Every reply the SMTP server accepted, raw.
    pub fn replies(&self) -> Vec<Vec<u8>> {
        self.smtp.messages()
    }

    /// Waits until a daemon started on this stack has created its folders: it is ready.
    pub async fn wait_for_daemon_folders(&self) {
        wait_for_async(PATIENCE, "the daemon to create its folders", || async {
            self.mailbox()
                .folders()
                .await
                .iter()
                .any(|f| f == "Processed")
        })
        .await;
    }

    /// Waits until `n` messages are in `folder`.
    pub async fn wait_for_folder(&self, folder: &str, n: usize) {
        wait_for_async(PATIENCE, &format!("{n} message(s) in {folder}"), || async {
            self.folder(folder).await.len() >= n
        })
        .await;
    }
}

/// A fixture's bytes.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A simple report with its own Message-ID.
pub fn report(id: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Rita Reporter <rita@example.net>\r\n\
         To: {SECURITY_ADDRESS}\r\n\
         Subject: {subject}\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         {body}\r\n"
    )
    .into_bytes()
}
