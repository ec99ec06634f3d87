//! Typed configuration: one TOML file, defaults in one place, validation whose errors
//! name the file and the key.
//!
//! Every default here is repeated, with the same words, in `config.example.toml`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod resolved;
pub use resolved::{Resolved, from_address, own_addresses};

/// Everything that can be wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected keys and types.
    #[error("invalid config file {path}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A key has a value that makes no sense.
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The dotted key, e.g. `imap.tls`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A secret value (password, token) whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing to the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS before login (IMAP 143, submission 587).
    Starttls,
    /// No TLS at all: refused unless the host is a loopback address.
    None,
}

/// Where a secret comes from: a file (e.g. a systemd credential) or an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// Path of a file holding the secret; surrounding white space is trimmed.
    pub file: Option<PathBuf>,
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
}

/// `[imap]`: the mailbox we watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// Server host name (also the name checked in its certificate).
    pub host: String,
    /// Server port; default 993 for `implicit`, 143 otherwise.
    pub port: Option<u16>,
    /// `implicit` (default), `starttls` or `none` (loopback only).
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    /// Extra CA certificate(s), PEM, trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Login name.
    pub username: String,
    /// Password file (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// The folder reports arrive in; default `INBOX`.
    #[serde(default = "default_mailbox")]
    pub mailbox: String,
    /// Where handled messages go; default `Processed`.
    #[serde(default = "default_processed")]
    pub processed_folder: String,
    /// Where noise (auto-replies, bounces, lists) goes; default `Ignored`.
    #[serde(default = "default_ignored")]
    pub ignored_folder: String,
    /// Where messages that could not be handled go; default `Quarantine`.
    #[serde(default = "default_quarantine")]
    pub quarantine_folder: String,
    /// Where a copy of every reply we send is appended (marked read), so the people
    /// sharing the mailbox see the whole conversation. When absent, the folder the server
    /// marks `\Sent` (SPECIAL-USE), and no copies on a server that marks none.
    pub sent_folder: Option<String>,
    /// Where mail the receiving server flagged as spam goes. When absent, the folder the
    /// server marks `\Junk` (SPECIAL-USE), else `ignored_folder`.
    pub junk_folder: Option<String>,
    /// Where messages over a per-sender limit wait for a person; default `Held`.
    /// Moving one back to the inbox releases it.
    #[serde(default = "default_held")]
    pub held_folder: String,
    /// Parent of the per-instance claim folders; default `Processing`. Each instance
    /// first moves new mail into its child `<instance_name>` (joined with the server's
    /// delimiter, e.g. `Processing.mail1` or `Processing/mail1`) and works only
    /// there, so two instances on one mailbox never handle the same message.
    #[serde(default = "default_processing")]
    pub processing_folder: String,
    /// This instance's name in its claim folder; default the machine's host name.
    /// Letters, digits, `-` and `_` only.
    pub instance_name: Option<String>,
    /// Use IDLE when the server offers it; default true. False means polling.
    #[serde(default = "default_true")]
    pub idle: bool,
    /// Seconds between polls when IDLE is off or not offered; default 60.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Longest an IDLE lasts before the daemon asks the server for news itself (`NOOP`);
    /// default 15. Servers that announce new mail late during IDLE (Courier without FAM,
    /// Cyrus without idled: every 60 s) are thereby still handled within this bound. 0
    /// trusts IDLE alone.
    #[serde(default = "default_idle_recheck")]
    pub idle_recheck_secs: u64,
    /// Seconds before an IMAP command without an answer counts as failed; default 60.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// `[smtp]`: how replies leave.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Server host name.
    pub host: String,
    /// Server port; default 465 for `implicit`, 587 for `starttls`, 25 for `none`.
    pub port: Option<u16>,
    /// `implicit` (default), `starttls` or `none` (loopback only).
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    /// Extra CA certificate(s), PEM, trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Login name; no AUTH when absent.
    pub username: Option<String>,
    /// Password file (e.g. a systemd credential).
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// The address replies come from, normally the security@ address itself.
    pub from_address: String,
    /// Display name on replies; default `Security Team`.
    #[serde(default = "default_from_name")]
    pub from_name: String,
    /// Seconds before an SMTP exchange without an answer counts as failed; default 60.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// How a report is filed on GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GithubMode {
    /// A draft repository security advisory (maintainers see it under Security).
    #[default]
    Draft,
    /// A private vulnerability report, landing in the repository's triage list.
    Triage,
}

/// `[github]`: where advisories are created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    /// REST API base URL; default `https://api.github.com`.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Token file (a fine-grained token with "Repository security advisories: write").
    pub token_file: Option<PathBuf>,
    /// Name of an environment variable holding the token.
    pub token_env: Option<String>,
    /// Seconds before a GitHub request without an answer counts as failed; default 30.
    #[serde(default = "default_github_timeout")]
    pub timeout_secs: u64,
    /// `draft` (default): each report becomes a draft advisory. `triage`: it is filed
    /// as a private vulnerability report instead (the repository's triage list; needs
    /// private vulnerability reporting enabled on the repository).
    #[serde(default)]
    pub mode: GithubMode,
    /// Least time between two content-creating requests (create, update), in
    /// milliseconds; GitHub asks for at least a second. Default 1000.
    #[serde(default = "default_mutation_interval")]
    pub min_mutation_interval_ms: u64,
    /// GitHub App authentication: the App's id. With `private_key_file`, each owner's
    /// repositories are reached through the App's installation on that owner. Default:
    /// none (tokens).
    pub app_id: Option<u64>,
    /// The App's private key (PEM), e.g. a systemd credential. Default: none.
    pub private_key_file: Option<PathBuf>,
    /// A token per repository owner, for organisations a single fine-grained token
    /// cannot cover (such a token is limited to one owner). An owner without an entry
    /// uses `token_file`/`token_env`. Default: none.
    #[serde(default)]
    pub credentials: Vec<CredentialsConfig>,
}

/// `[[github.credentials]]`: the token for one repository owner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The organisation or user, e.g. `pallets-eco`.
    pub owner: String,
    /// Token file for that owner's repositories.
    pub token_file: Option<PathBuf>,
    /// Name of an environment variable holding that token.
    pub token_env: Option<String>,
}

/// `[reply]`: the acknowledgement sent to reporters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    /// Send acknowledgements at all; default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A minijinja template file for the reply body; the built-in text when absent.
    pub template: Option<PathBuf>,
    /// A minijinja template file for the note answering a follow-up; built-in when absent.
    pub followup_template: Option<PathBuf>,
    /// Answer follow-ups with a short note, at most once a day per thread; default true.
    #[serde(default = "default_true")]
    pub followup_replies: bool,
    /// The security policy reporters are pointed to.
    #[serde(default = "default_policy_url")]
    pub policy_url: String,
    /// Name of the project family in the reply, e.g. `Pallets`; default `the maintainers`.
    #[serde(default = "default_project_name")]
    pub project_name: String,
}

impl Default for ReplyConfig {
    fn default() -> Self {
        ReplyConfig {
            enabled: true,
            template: None,
            followup_template: None,
            followup_replies: true,
            policy_url: default_policy_url(),
            project_name: default_project_name(),
        }
    }
}

/// `[advisory]`: what goes into the advisory description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryConfig {
    /// Show the reporter's email address in the description (which becomes public on
    /// publication); default false: display name only.
    #[serde(default)]
    pub include_reporter_email: bool,
    /// Text attachments up to this many bytes are shown inline; default 32768.
    #[serde(default = "default_inline_max")]
    pub inline_attachment_max_bytes: usize,
    /// The key (64 hex digits) that authenticates the hidden markers tying advisories
    /// to reports; default `<state_dir>/marker.key`, created on first start. Keep it
    /// with the state directory: without it, advisories made with it are not adopted.
    pub marker_key_file: Option<PathBuf>,
    /// Add the GitHub login a reporter states (and GitHub knows) to the draft's
    /// `collaborating_users`, so they can open it; never for a sender whose
    /// authentication failed. Default false.
    #[serde(default)]
    pub invite_reporter: bool,
}

impl Default for AdvisoryConfig {
    fn default() -> Self {
        AdvisoryConfig {
            include_reporter_email: false,
            inline_attachment_max_bytes: default_inline_max(),
            marker_key_file: None,
            invite_reporter: false,
        }
    }
}

/// `[limits]`: hard bounds on what a message may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message accepted, in bytes; default 26214400 (25 MiB).
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Most MIME parts in one message; default 256.
    #[serde(default = "default_max_parts")]
    pub max_parts: usize,
    /// Deepest nesting of multiparts and attached messages; default 8.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Most attachments in one message; default 64.
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
    /// Most advisories created for one sender address in 24 hours; past it, reports
    /// wait in the held folder. Default 10.
    #[serde(default = "default_max_advisories_per_sender")]
    pub max_advisories_per_sender_per_day: u32,
    /// Most replies sent to one sender address in 24 hours; past it, no reply. Default 10.
    #[serde(default = "default_max_replies_per_sender")]
    pub max_replies_per_sender_per_day: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: default_max_message(),
            max_parts: default_max_parts(),
            max_depth: default_max_depth(),
            max_attachments: default_max_attachments(),
            max_advisories_per_sender_per_day: default_max_advisories_per_sender(),
            max_replies_per_sender_per_day: default_max_replies_per_sender(),
        }
    }
}

/// `[retry]`: pacing of retries after transient failures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay after a transient failure, in seconds; default 5.
    #[serde(default = "default_retry_initial")]
    pub initial_delay_secs: u64,
    /// Longest delay between two attempts, in seconds; default 900 (15 minutes).
    #[serde(default = "default_retry_max")]
    pub max_delay_secs: u64,
    /// Longest delay a server may ask for (`Retry-After`, a rate-limit reset) before we
    /// try again anyway, in seconds; default 3600 (one hour).
    #[serde(default = "default_max_server_delay")]
    pub max_server_delay_secs: u64,
    /// While our own credentials are refused (a misconfiguration), how often one
    /// waiting message tries again, in seconds; its success ends the pause. Default 60.
    #[serde(default = "default_pause_probe")]
    pub pause_probe_secs: u64,
}

fn default_pause_probe() -> u64 {
    60
}

fn default_max_server_delay() -> u64 {
    3600
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_delay_secs: default_retry_initial(),
            max_delay_secs: default_retry_max(),
            max_server_delay_secs: default_max_server_delay(),
            pause_probe_secs: default_pause_probe(),
        }
    }
}

/// One `[[repository]]`: a place reports can be routed to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// `owner/name` on GitHub.
    pub name: String,
    /// Words that identify it in a subject, body or plus-address (case-insensitive);
    /// the repository's own name is always one.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Package ecosystem as GitHub names it (`pip`, `npm`, `cargo`, ...); default `pip`.
    #[serde(default = "default_ecosystem")]
    pub ecosystem: String,
    /// Package name in that ecosystem; default the repository's name.
    pub package: Option<String>,
}

impl RepositoryConfig {
    /// The repository part of `owner/name`.
    pub fn repo_name(&self) -> &str {
        self.name.split_once('/').map_or(&self.name, |(_, n)| n)
    }

    /// The owner part of `owner/name`.
    pub fn owner(&self) -> &str {
        self.name.split_once('/').map_or("", |(o, _)| o)
    }

    /// The package name, defaulting to the repository's name.
    pub fn package_name(&self) -> &str {
        self.package.as_deref().unwrap_or_else(|| self.repo_name())
    }

    /// All lower-cased words that identify this repository: its name and its aliases.
    pub fn all_aliases(&self) -> Vec<String> {
        let mut all = vec![self.repo_name().to_lowercase()];
        for a in &self.aliases {
            let a = a.to_lowercase();
            if !all.contains(&a) {
                all.push(a);
            }
        }
        all
    }
}

/// `[authentication]`: whose `Authentication-Results` headers count.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationConfig {
    /// The authserv-ids of the servers that receive mail for the mailbox; headers from
    /// any other id are ignored. Default: none (no header is trusted, replies are sent).
    #[serde(default)]
    pub trusted_authserv_ids: Vec<String>,
}

/// `[spam]`: the receiving server's spam verdict.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpamConfig {
    /// Treat a message whose `X-Spam-Score` (or `X-Spam-Status: ... score=`) is at least
    /// this as spam. `X-Spam-Flag: YES` always counts. Default: none (scores ignored).
    pub score_threshold: Option<f64>,
}

/// `[notify]`: telling reporters when their advisory changes on GitHub.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Seconds between two looks at the advisories we created; default 300.
    #[serde(default = "default_notify_interval")]
    pub interval_secs: u64,
    /// Tell the reporter when the advisory is published; default true.
    #[serde(default = "default_true")]
    pub published: bool,
    /// Tell the reporter when a CVE id is assigned before publication; default true.
    #[serde(default = "default_true")]
    pub cve_assigned: bool,
    /// Tell the reporter when the advisory is closed; default true.
    #[serde(default = "default_true")]
    pub closed: bool,
    /// Tell the reporter when a published advisory is withdrawn; default true.
    #[serde(default = "default_true")]
    pub withdrawn: bool,
    /// A folder whose `notice-published.txt.j2`, `notice-cve.txt.j2`,
    /// `notice-closed.txt.j2` and `notice-withdrawn.txt.j2` replace the built-in
    /// notices; default none.
    pub template_dir: Option<PathBuf>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            interval_secs: default_notify_interval(),
            published: true,
            cve_assigned: true,
            closed: true,
            withdrawn: true,
            template_dir: None,
        }
    }
}

impl GithubConfig {
    /// The web root whose pages match `api_url`: `https://github.com` for
    /// `api.github.com`, the host itself for GitHub Enterprise Server (`/api/v3`
    /// removed), without a trailing slash.
    pub fn web_url(&self) -> String {
        let url = self.api_url.trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("https://api.github.com") {
            return format!("https://github.com{rest}");
        }
        url.strip_suffix("/api/v3").unwrap_or(url).to_owned()
    }
}

/// `[attachments]`: a private repository per organisation that holds each report's
/// attachments, so maintainers open them from the advisory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentsConfig {
    /// `owner/name` of the private repository for every owner without one of its own in
    /// `repositories`; default none (attachments stay in `state_dir` only).
    pub repository: Option<String>,
    /// One private repository per owner (`pallets-eco/security-intake`): a report's
    /// attachments go to the one whose owner is the advisory's; default none.
    #[serde(default)]
    pub repositories: Vec<String>,
}

impl AttachmentsConfig {
    /// The repository that receives the attachments of reports on `owner`'s
    /// repositories, if any.
    pub fn repository_for(&self, owner: &str) -> Option<&str> {
        self.repositories
            .iter()
            .find(|r| {
                r.split_once('/')
                    .is_some_and(|(o, _)| o.eq_ignore_ascii_case(owner))
            })
            .or(self.repository.as_ref())
            .map(String::as_str)
    }

    /// Every configured repository.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.repository
            .iter()
            .chain(&self.repositories)
            .map(String::as_str)
    }
}

/// `[maintainers]`: mail to the maintainers about new drafts, and a reminder digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainersConfig {
    /// Addresses told of every new draft, one mail per draft threaded per report;
    /// default none (no mail).
    #[serde(default)]
    pub notify: Vec<String>,
    /// Put the report text in that mail; default false (summary and links only, as the
    /// text may hold an exploit).
    #[serde(default)]
    pub include_report: bool,
    /// How often the digest of untouched drafts goes out (`"1d"`, `"12h"`); default
    /// `"1d"`.
    #[serde(default = "default_digest_interval", with = "humantime_serde")]
    pub digest_interval: std::time::Duration,
    /// A draft not updated on GitHub for this many days is listed in the digest;
    /// default 7.
    #[serde(default = "default_remind_after_days")]
    pub remind_after_days: u32,
}

impl Default for MaintainersConfig {
    fn default() -> Self {
        MaintainersConfig {
            notify: Vec::new(),
            include_report: false,
            digest_interval: default_digest_interval(),
            remind_after_days: default_remind_after_days(),
        }
    }
}

fn default_digest_interval() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}
fn default_remind_after_days() -> u32 {
    7
}

/// How the PostgreSQL journal's connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalTls {
    /// TLS (PostgreSQL's SSLRequest), certificate and host name verified (default).
    #[default]
    Require,
    /// No TLS: refused unless the host is a loopback address.
    None,
}

/// `[journal]`: where the journal lives. Default: SQLite in `state_dir`, for one
/// instance. With `url`, a PostgreSQL database that several instances share and that
/// coordinates them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// `postgres://USER@HOST[:PORT]/DATABASE`; default none (SQLite). The password goes
    /// in `password_file` or `password_env`, never in the URL.
    pub url: Option<String>,
    /// File holding the database password; default none.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the database password; default none.
    pub password_env: Option<String>,
    /// `require` (default) or `none` (loopback only).
    #[serde(default)]
    pub tls: JournalTls,
    /// Extra CA certificate(s) (PEM) trusted for the database, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How long a claim on a report (and an instance's registration) lasts without being
    /// renewed; a live instance renews every third of it. When an instance dies, another
    /// takes over its claimed mail once this has run out. Default 60, at least 2.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            url: None,
            password_file: None,
            password_env: None,
            tls: JournalTls::default(),
            ca_file: None,
            lease_secs: default_lease_secs(),
        }
    }
}

fn default_lease_secs() -> u64 {
    60
}

/// `[metrics]`: the loopback HTTP endpoint for `/metrics` and `/healthz`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `127.0.0.1:9464`-style address; no endpoint when absent.
    pub listen: Option<String>,
}

/// `[pgp]`: our OpenPGP key, for encrypted reports and encrypted replies. Optional:
/// without it, encrypted mail is filed as it arrives and replies go out plain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgpConfig {
    /// Our armoured secret key (`gpg --armor --export-secret-keys`); a secret, found as
    /// a systemd credential like the others. Required in `[pgp]`.
    pub secret_key_file: PathBuf,
    /// File holding the key's passphrase; default none (an unprotected key).
    pub passphrase_file: Option<PathBuf>,
    /// Environment variable holding the key's passphrase; default none.
    pub passphrase_env: Option<String>,
    /// Where reporters find our public key (the URL in `security.txt`'s `Encryption:`);
    /// named in the reply to a message we could not decrypt. Default none: that reply
    /// carries the key itself.
    pub key_url: Option<String>,
    /// Encrypt (and sign) replies and notices to a reporter whose message carries their
    /// key (an `Autocrypt:` header or an attached public key). Default true.
    #[serde(default = "default_true")]
    pub encrypt_replies: bool,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Journal, spool and stored attachments live here; default `/var/lib/advisory-bridge`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `owner/name` of the repository for reports that name none of the configured ones.
    pub default_repository: String,
    /// The mailbox.
    pub imap: ImapConfig,
    /// The outgoing mail server.
    pub smtp: SmtpConfig,
    /// GitHub.
    pub github: GithubConfig,
    /// The acknowledgement.
    #[serde(default)]
    pub reply: ReplyConfig,
    /// The advisory description.
    #[serde(default)]
    pub advisory: AdvisoryConfig,
    /// Bounds on messages.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Retry pacing.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Sender authentication.
    #[serde(default)]
    pub authentication: AuthenticationConfig,
    /// Spam verdicts.
    #[serde(default)]
    pub spam: SpamConfig,
    /// Notices to reporters.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Monitoring endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where the journal lives: SQLite (default) or a shared PostgreSQL database.
    #[serde(default)]
    pub journal: JournalConfig,
    /// Attachments on GitHub.
    #[serde(default)]
    pub attachments: AttachmentsConfig,
    /// Mail to the maintainers.
    #[serde(default)]
    pub maintainers: MaintainersConfig,
    /// Our OpenPGP key; none by default.
    #[serde(default)]
    pub pgp: Option<PgpConfig>,
    /// The repositories reports are routed to.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepositoryConfig>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub path: PathBuf,
    /// Where secret files written as systemd credentials
    /// (`/run/credentials/<unit>/NAME`) are found outside the running unit: `NAME` in
    /// `$CREDENTIALS_DIRECTORY` when set, else here (`--credentials-dir`; default
    /// [`DEFAULT_CREDENTIALS_DIR`]).
    #[serde(skip)]
    pub credentials_dir: Option<PathBuf>,
}

fn default_tls() -> TlsMode {
    TlsMode::Implicit
}
fn default_mailbox() -> String {
    "INBOX".into()
}
fn default_processed() -> String {
    "Processed".into()
}
fn default_ignored() -> String {
    "Ignored".into()
}
fn default_quarantine() -> String {
    "Quarantine".into()
}
fn default_notify_interval() -> u64 {
    300
}
fn default_held() -> String {
    "Held".into()
}
fn default_processing() -> String {
    "Processing".into()
}
fn default_true() -> bool {
    true
}
fn default_idle_recheck() -> u64 {
    15
}

fn default_poll_interval() -> u64 {
    60
}
fn default_timeout() -> u64 {
    60
}
fn default_github_timeout() -> u64 {
    30
}
fn default_mutation_interval() -> u64 {
    1000
}
fn default_from_name() -> String {
    "Security Team".into()
}
fn default_api_url() -> String {
    "https://api.github.com".into()
}
fn default_policy_url() -> String {
    "https://palletsprojects.com/security".into()
}
fn default_project_name() -> String {
    "the maintainers".into()
}
fn default_inline_max() -> usize {
    32 * 1024
}
fn default_max_message() -> usize {
    25 * 1024 * 1024
}
fn default_max_parts() -> usize {
    256
}
fn default_max_depth() -> usize {
    8
}
fn default_max_attachments() -> usize {
    64
}
fn default_max_advisories_per_sender() -> u32 {
    10
}
fn default_max_replies_per_sender() -> u32 {
    10
}
fn default_retry_initial() -> u64 {
    5
}
fn default_retry_max() -> u64 {
    900
}
fn default_ecosystem() -> String {
    "pip".into()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/advisory-bridge")
}

/// Where the Debian package keeps the service's secrets, which systemd hands to the
/// unit as credentials (`LoadCredential=`).
pub const DEFAULT_CREDENTIALS_DIR: &str = "/etc/advisory-bridge/credentials";

/// GitHub's ecosystem names accepted in `vulnerabilities[].package.ecosystem`.
pub const ECOSYSTEMS: &[&str] = &[
    "rubygems", "npm", "pip", "maven", "nuget", "composer", "go", "rust", "erlang", "actions",
    "pub", "other", "swift",
];

/// The machine's host name, or `advisory-bridge` when it cannot be read.
/// The machine's name for the default instance name: `uname(2)` (the systemd unit hides
/// most of `/proc`, so reading `/proc/sys/kernel/hostname` would fail there), then
/// `/etc/hostname`; reduced to letters, digits, `-` and `_`.
fn host_name() -> String {
    let uname = rustix::system::uname();
    let from_kernel = uname.nodename().to_string_lossy().trim().to_owned();
    let raw = if from_kernel.is_empty() || from_kernel == "(none)" {
        std::fs::read_to_string("/etc/hostname").unwrap_or_default()
    } else {
        from_kernel
    };
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "advisory-bridge".into()
    } else {
        name
    }
}

impl ImapConfig {
    /// This instance's name: configured, or the host name.
    pub fn instance(&self) -> String {
        self.instance_name.clone().unwrap_or_else(host_name)
    }

    /// The folder this instance claims new mail into before working on it, as written
    /// with `.`; the daemon asks the server for its delimiter and namespace and uses
    /// `source::Namespace::child` instead.
    pub fn claim_folder(&self) -> String {
        format!("{}.{}", self.processing_folder, self.instance())
    }

    /// The port to use: the configured one or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            TlsMode::Starttls | TlsMode::None => 143,
        })
    }
}

impl SmtpConfig {
    /// The port to use: the configured one or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 465,
            TlsMode::Starttls => 587,
            TlsMode::None => 25,
        })
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in error messages and to
    /// resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.path = path.to_owned();
        config.resolve_relative_paths();
        config.validate()?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file's folder, not to wherever the
    /// daemon happened to be started.
    fn resolve_relative_paths(&mut self) {
        let base = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        for c in &mut self.github.credentials {
            if let Some(p) = &mut c.token_file {
                fix(p);
            }
        }
        if let Some(pgp) = &mut self.pgp {
            fix(&mut pgp.secret_key_file);
        }
        for p in [
            &mut self.imap.ca_file,
            &mut self.imap.password_file,
            &mut self.smtp.ca_file,
            &mut self.smtp.password_file,
            &mut self.journal.ca_file,
            &mut self.journal.password_file,
            &mut self.github.token_file,
            &mut self.github.private_key_file,
            &mut self.advisory.marker_key_file,
            self.pgp
                .as_mut()
                .map(|p| &mut p.passphrase_file)
                .unwrap_or(&mut None),
            &mut self.reply.template,
            &mut self.reply.followup_template,
            &mut self.notify.template_dir,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Checks everything that serde cannot: cross-field rules and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.journal.url {
            let parsed = parse_journal_url(self, url)?;
            if self.journal.tls == JournalTls::None {
                let loopback = parsed.get_hosts().iter().all(|h| match h {
                    postgres::config::Host::Tcp(h) => is_loopback_host(h),
                    postgres::config::Host::Unix(_) => true,
                });
                if !loopback {
                    return Err(self.invalid(
                        "journal.tls",
                        "\"none\" is allowed only for a loopback host; use \"require\"",
                    ));
                }
            }
        }
        check_secret(
            self,
            "journal.password_file",
            &self.journal.password_file,
            &self.journal.password_env,
            false,
        )?;
        if self.journal.lease_secs < 2 {
            return Err(self.invalid("journal.lease_secs", "must be at least 2"));
        }
        check_tls(self, "imap", &self.imap.host, self.imap.tls)?;
        check_tls(self, "smtp", &self.smtp.host, self.smtp.tls)?;
        check_secret(
            self,
            "imap.password_file",
            &self.imap.password_file,
            &self.imap.password_env,
            true,
        )?;
        check_secret(
            self,
            "smtp.password_file",
            &self.smtp.password_file,
            &self.smtp.password_env,
            self.smtp.username.is_some(),
        )?;
        for c in &self.github.credentials {
            if c.owner.trim().is_empty() || c.owner.contains('/') {
                return Err(self.invalid(
                    "github.credentials.owner",
                    format!(
                        "`{}` is not an owner; write e.g. owner = \"pallets-eco\"",
                        c.owner
                    ),
                ));
            }
            check_secret(
                self,
                "github.credentials.token_file",
                &c.token_file,
                &c.token_env,
                true,
            )?;
        }
        let app = match (self.github.app_id, &self.github.private_key_file) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            _ => {
                return Err(self.invalid(
                    "github.app_id",
                    "GitHub App authentication needs both github.app_id and github.private_key_file",
                ));
            }
        };
        let uncovered: Vec<&str> = self
            .repositories
            .iter()
            .map(|r| r.owner())
            .filter(|o| {
                !self
                    .github
                    .credentials
                    .iter()
                    .any(|c| c.owner.eq_ignore_ascii_case(o))
            })
            .collect();
        check_secret(
            self,
            "github.token_file",
            &self.github.token_file,
            &self.github.token_env,
            !app && !uncovered.is_empty(),
        )?;
        if let Some(pgp) = &self.pgp {
            check_secret(
                self,
                "pgp.passphrase_file",
                &pgp.passphrase_file,
                &pgp.passphrase_env,
                false,
            )?;
        }
        if self.imap.username.trim().is_empty() {
            return Err(self.invalid("imap.username", "must not be empty"));
        }
        for r in self.attachments.all() {
            if !valid_repo_name(r) {
                return Err(self.invalid(
                    "attachments.repository",
                    format!("`{r}` is not owner/name; write e.g. \"pallets/security-intake\""),
                ));
            }
        }
        for a in &self.maintainers.notify {
            if a.parse::<lettre::Address>().is_err() {
                return Err(self.invalid(
                    "maintainers.notify",
                    format!(
                        "`{a}` is not an email address; write e.g. \"security-team@example.org\""
                    ),
                ));
            }
        }
        if self.maintainers.digest_interval < std::time::Duration::from_secs(60) {
            return Err(self.invalid("maintainers.digest_interval", "must be at least 1m"));
        }
        if !self.smtp.from_address.contains('@') || has_line_break(&self.smtp.from_address) {
            return Err(self.invalid(
                "smtp.from_address",
                "must be one email address such as security@example.org",
            ));
        }
        if has_line_break(&self.smtp.from_name) {
            return Err(self.invalid("smtp.from_name", "must be a single line"));
        }
        if !(self.github.api_url.starts_with("https://")
            || self.github.api_url.starts_with("http://"))
        {
            return Err(self.invalid("github.api_url", "must be an http(s) URL"));
        }
        if self.github.api_url.starts_with("http://") && !url_host_is_loopback(&self.github.api_url)
        {
            return Err(self.invalid(
                "github.api_url",
                "plain http is only allowed for a loopback host; use https",
            ));
        }
        for (key, v) in [
            ("imap.timeout_secs", self.imap.timeout_secs),
            ("imap.poll_interval_secs", self.imap.poll_interval_secs),
            ("smtp.timeout_secs", self.smtp.timeout_secs),
            ("github.timeout_secs", self.github.timeout_secs),
            ("retry.initial_delay_secs", self.retry.initial_delay_secs),
            ("notify.interval_secs", self.notify.interval_secs),
        ] {
            if v == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if self.retry.max_delay_secs < self.retry.initial_delay_secs {
            return Err(self.invalid(
                "retry.max_delay_secs",
                "must not be smaller than retry.initial_delay_secs",
            ));
        }
        let sent = self.imap.sent_folder.clone().unwrap_or_default();
        let junk = self.imap.junk_folder.clone().unwrap_or_default();
        let mut folders = vec![
            ("imap.mailbox", &self.imap.mailbox),
            ("imap.processed_folder", &self.imap.processed_folder),
            ("imap.ignored_folder", &self.imap.ignored_folder),
            ("imap.quarantine_folder", &self.imap.quarantine_folder),
            ("imap.processing_folder", &self.imap.processing_folder),
            ("imap.held_folder", &self.imap.held_folder),
        ];
        if self.imap.sent_folder.is_some() {
            folders.push(("imap.sent_folder", &sent));
        }
        if self.imap.junk_folder.is_some() {
            folders.push(("imap.junk_folder", &junk));
        }
        for (i, (key, name)) in folders.iter().enumerate() {
            if name.trim().is_empty() || has_line_break(name) {
                return Err(self.invalid(key, "must be a folder name"));
            }
            if folders[..i].iter().any(|(_, other)| other == name) {
                return Err(self.invalid(key, format!("folder `{name}` is used twice")));
            }
        }
        if let Some(name) = &self.imap.instance_name {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(self.invalid(
                    "imap.instance_name",
                    "must be 1 to 64 letters, digits, `-` or `_`",
                ));
            }
        }
        for (key, v) in [
            ("limits.max_message_bytes", self.limits.max_message_bytes),
            ("limits.max_parts", self.limits.max_parts),
            ("limits.max_depth", self.limits.max_depth),
            ("limits.max_attachments", self.limits.max_attachments),
        ] {
            if v == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        for (key, v) in [
            (
                "limits.max_advisories_per_sender_per_day",
                self.limits.max_advisories_per_sender_per_day,
            ),
            (
                "limits.max_replies_per_sender_per_day",
                self.limits.max_replies_per_sender_per_day,
            ),
        ] {
            if v == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        if self.repositories.is_empty() {
            return Err(self.invalid(
                "repository",
                "configure at least one [[repository]] with name = \"owner/name\"",
            ));
        }
        let mut seen_alias: Vec<(String, String)> = Vec::new();
        for (i, repo) in self.repositories.iter().enumerate() {
            let key = format!("repository[{i}].name");
            if !valid_repo_name(&repo.name) {
                return Err(self.invalid(&key, format!("`{}` is not owner/name", repo.name)));
            }
            if self.repositories[..i]
                .iter()
                .any(|r| r.name.eq_ignore_ascii_case(&repo.name))
            {
                return Err(self.invalid(&key, format!("`{}` is listed twice", repo.name)));
            }
            if !ECOSYSTEMS.contains(&repo.ecosystem.as_str()) {
                return Err(self.invalid(
                    &format!("repository[{i}].ecosystem"),
                    format!(
                        "`{}` is not one of GitHub's ecosystems ({})",
                        repo.ecosystem,
                        ECOSYSTEMS.join(", ")
                    ),
                ));
            }
            for alias in repo.all_aliases() {
                if alias.trim().is_empty() || alias.contains(char::is_whitespace) {
                    return Err(self.invalid(
                        &format!("repository[{i}].aliases"),
                        format!("alias `{alias}` must be one word"),
                    ));
                }
                if let Some((_, other)) = seen_alias.iter().find(|(a, _)| *a == alias) {
                    return Err(self.invalid(
                        &format!("repository[{i}].aliases"),
                        format!("alias `{alias}` is also used by {other}"),
                    ));
                }
                seen_alias.push((alias, repo.name.clone()));
            }
        }
        if !self
            .repositories
            .iter()
            .any(|r| r.name.eq_ignore_ascii_case(&self.default_repository))
        {
            return Err(self.invalid(
                "default_repository",
                format!(
                    "`{}` is not one of the configured [[repository]] entries",
                    self.default_repository
                ),
            ));
        }
        if let Some(listen) = &self.metrics.listen {
            let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
                self.invalid("metrics.listen", "must be an address like 127.0.0.1:9464")
            })?;
            if !addr.ip().is_loopback() {
                return Err(self.invalid(
                    "metrics.listen",
                    "must be a loopback address; put a reverse proxy in front for more",
                ));
            }
        }
        Ok(())
    }

    /// The configured repository with this `owner/name` (case-insensitive).
    pub fn repository(&self, name: &str) -> Option<&RepositoryConfig> {
        self.repositories
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// The PostgreSQL journal to connect to, with its password and TLS; `None` for the
    /// SQLite journal (no `[journal] url`).
    pub fn journal_target(&self) -> Result<Option<crate::journal::PgTarget>, ConfigError> {
        let Some(url) = &self.journal.url else {
            return Ok(None);
        };
        let mut config = parse_journal_url(self, url)?;
        if self.journal.password_file.is_some() || self.journal.password_env.is_some() {
            let password = self.read_secret(
                "journal.password_file",
                &self.journal.password_file,
                &self.journal.password_env,
            )?;
            config.password(password.expose());
        }
        config.application_name("advisory-bridge");
        config.connect_timeout(std::time::Duration::from_secs(10));
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        let tls = match self.journal.tls {
            JournalTls::None => {
                config.ssl_mode(postgres::config::SslMode::Disable);
                None
            }
            JournalTls::Require => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Some(
                    crate::tls::client_config(self.journal.ca_file.as_deref())
                        .map_err(|e| self.invalid("journal.ca_file", e.to_string()))?,
                )
            }
        };
        Ok(Some(crate::journal::PgTarget {
            config,
            tls,
            display: url.clone(),
        }))
    }

    /// Reads the IMAP password from its file or environment variable.
    pub fn imap_password(&self) -> Result<Secret, ConfigError> {
        self.read_secret(
            "imap.password_file",
            &self.imap.password_file,
            &self.imap.password_env,
        )
    }

    /// Reads the SMTP password, if SMTP AUTH is configured.
    pub fn smtp_password(&self) -> Result<Option<Secret>, ConfigError> {
        if self.smtp.username.is_none() {
            return Ok(None);
        }
        self.read_secret(
            "smtp.password_file",
            &self.smtp.password_file,
            &self.smtp.password_env,
        )
        .map(Some)
    }

    /// Reads the default GitHub token from its file or environment variable; `None`
    /// when every owner has its own credentials and no default is set.
    pub fn github_token(&self) -> Result<Option<Secret>, ConfigError> {
        if self.github.token_file.is_none() && self.github.token_env.is_none() {
            return Ok(None);
        }
        self.read_secret(
            "github.token_file",
            &self.github.token_file,
            &self.github.token_env,
        )
        .map(Some)
    }

    /// Reads the GitHub App's id and private key, when App authentication is set.
    pub fn github_app(&self) -> Result<Option<(u64, Secret)>, ConfigError> {
        let (Some(id), Some(file)) = (self.github.app_id, &self.github.private_key_file) else {
            return Ok(None);
        };
        let file = &self.secret_path(file);
        let pem = std::fs::read_to_string(file).map_err(|e| {
            self.invalid(
                "github.private_key_file",
                format!("cannot read the App's private key {}: {e}", file.display()),
            )
        })?;
        if !pem.contains("PRIVATE KEY-----") {
            return Err(self.invalid(
                "github.private_key_file",
                format!(
                    "{} is not a PEM private key; download one from the App's settings",
                    file.display()
                ),
            ));
        }
        Ok(Some((id, Secret::new(pem))))
    }

    /// Reads every owner's token: `(owner, token)`.
    pub fn github_owner_tokens(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
        self.github
            .credentials
            .iter()
            .map(|c| {
                self.read_secret("github.credentials.token_file", &c.token_file, &c.token_env)
                    .map(|t| (c.owner.to_ascii_lowercase(), t))
            })
            .collect()
    }

    /// Where a secret file is read from: the path as written when it exists; a systemd
    /// credential path (`/run/credentials/<unit>/NAME`) outside the running unit is
    /// `$CREDENTIALS_DIRECTORY/NAME` when that is set, else `NAME` in the credentials
    /// directory (`--credentials-dir`, default [`DEFAULT_CREDENTIALS_DIR`]), so `check`
    /// works from a shell before the service ever ran.
    pub fn secret_path(&self, file: &Path) -> PathBuf {
        let Ok(rest) = file.strip_prefix("/run/credentials") else {
            return file.to_owned();
        };
        if file.exists() {
            return file.to_owned();
        }
        // `<unit>/NAME`: the name is what follows the unit's directory.
        let mut parts = rest.components();
        parts.next();
        let name = parts.as_path();
        if name.as_os_str().is_empty() {
            return file.to_owned();
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(PathBuf::from)
            .or_else(|| self.credentials_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CREDENTIALS_DIR));
        dir.join(name)
    }

    fn read_secret(
        &self,
        key: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Secret, ConfigError> {
        if let Some(file) = file {
            let file = &self.secret_path(file);
            let text = std::fs::read_to_string(file).map_err(|e| {
                self.invalid(
                    key,
                    format!("cannot read secret file {}: {e}", file.display()),
                )
            })?;
            let value = text.trim();
            if value.is_empty() {
                return Err(self.invalid(key, format!("secret file {} is empty", file.display())));
            }
            return Ok(Secret::new(value));
        }
        if let Some(var) = env {
            let env_key = key.replace("_file", "_env");
            let value = std::env::var(var).map_err(|_| {
                self.invalid(&env_key, format!("environment variable {var} is not set"))
            })?;
            let value = value.trim();
            if value.is_empty() {
                return Err(self.invalid(&env_key, format!("environment variable {var} is empty")));
            }
            return Ok(Secret::new(value));
        }
        Err(self.invalid(key, "no secret configured"))
    }

    /// Reads and unlocks our OpenPGP key, when `[pgp]` is set; fails naming the key
    /// whose file or passphrase is wrong.
    pub fn pgp_keys(&self) -> Result<Option<crate::openpgp::Keys>, ConfigError> {
        let Some(pgp) = &self.pgp else {
            return Ok(None);
        };
        let file = self.secret_path(&pgp.secret_key_file);
        let armoured = std::fs::read_to_string(&file).map_err(|e| {
            self.invalid(
                "pgp.secret_key_file",
                format!("cannot read the secret key {}: {e}", file.display()),
            )
        })?;
        let passphrase = match (&pgp.passphrase_file, &pgp.passphrase_env) {
            (None, None) => None,
            (file, env) => Some(self.read_secret("pgp.passphrase_file", file, env)?),
        };
        crate::openpgp::Keys::from_armored(&armoured, passphrase.as_ref())
            .map(Some)
            .map_err(|e| self.invalid("pgp.secret_key_file", format!("{}: {e}", file.display())))
    }

    /// The file of the key that authenticates advisory markers.
    pub fn marker_key_path(&self) -> PathBuf {
        match &self.advisory.marker_key_file {
            // A systemd credential, found outside the unit as the other secrets are.
            Some(file) => self.secret_path(file),
            None => self.state_dir.join("marker.key"),
        }
    }

    /// The address part of `smtp.from_address`, lower-cased: our own address.
    pub fn own_address(&self) -> String {
        self.smtp.from_address.trim().to_lowercase()
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

fn valid_repo_name(name: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(name.split_once('/'), Some((o, n)) if ok(o) && ok(n))
}

/// True when `host` is a loopback IP address or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn url_host_is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority
            .split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or("").to_owned()
    };
    is_loopback_host(&host)
}

fn check_tls(config: &Config, section: &str, host: &str, tls: TlsMode) -> Result<(), ConfigError> {
    if host.trim().is_empty() {
        return Err(config.invalid(&format!("{section}.host"), "must not be empty"));
    }
    if tls == TlsMode::None && !is_loopback_host(host) {
        return Err(config.invalid(
            &format!("{section}.tls"),
            format!(
                "\"none\" sends passwords in the clear and is only allowed for a loopback \
                 host, not `{host}`; use \"implicit\" or \"starttls\""
            ),
        ));
    }
    Ok(())
}

/// Parses `[journal] url`, refusing one that carries a password or no host, user or
/// database.
fn parse_journal_url(config: &Config, url: &str) -> Result<postgres::Config, ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(config.invalid(
            "journal.url",
            "must start with postgres:// (leave it out for the SQLite journal in state_dir)",
        ));
    }
    let parsed: postgres::Config = url.parse().map_err(|e| {
        config.invalid(
            "journal.url",
            format!("is not a PostgreSQL URL ({e}); write postgres://USER@HOST:PORT/DATABASE"),
        )
    })?;
    if parsed.get_password().is_some() {
        return Err(config.invalid(
            "journal.url",
            "holds a password; remove it and put it in journal.password_file or journal.password_env",
        ));
    }
    if parsed.get_hosts().is_empty() || parsed.get_user().is_none() || parsed.get_dbname().is_none()
    {
        return Err(config.invalid(
            "journal.url",
            "needs a host, a user and a database: postgres://USER@HOST:PORT/DATABASE",
        ));
    }
    Ok(parsed)
}

fn check_secret(
    config: &Config,
    key: &str,
    file: &Option<PathBuf>,
    env: &Option<String>,
    required: bool,
) -> Result<(), ConfigError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(config.invalid(
            key,
            format!(
                "set either {key} or {} , not both",
                key.replace("_file", "_env")
            ),
        )),
        (None, None) if required => Err(config.invalid(
            key,
            format!(
                "set {key} (a file) or {} (an environment variable)",
                key.replace("_file", "_env")
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
default_repository = "pallets/flask"
[imap]
host = "imap.example.org"
username = "security@example.org"
password_env = "IMAP_PW"
[smtp]
host = "smtp.example.org"
from_address = "security@example.org"
[github]
token_env = "GH_TOKEN"
[[repository]]
name = "pallets/flask"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/advisory-bridge/config.toml"))
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.imap.port(), 993);
        assert_eq!(c.smtp.port(), 465);
        assert_eq!(c.imap.mailbox, "INBOX");
        assert_eq!(c.github.api_url, "https://api.github.com");
        assert_eq!(c.limits.max_message_bytes, 25 * 1024 * 1024);
        assert_eq!(c.repositories[0].ecosystem, "pip");
        assert_eq!(c.repositories[0].package_name(), "flask");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/advisory-bridge"));
    }

    #[test]
    fn every_owner_needs_credentials_of_its_own_or_the_default_token() {
        let two = MINIMAL
            .replace("token_env = \"GH_TOKEN\"\n", "")
            .replace(
                "[[repository]]\nname = \"pallets/flask\"",
                "[[github.credentials]]\nowner = \"pallets\"\ntoken_env = \"GH_P\"\n\n[[repository]]\nname = \"pallets/flask\"\n[[repository]]\nname = \"pallets-eco/blinker\"",
            );
        let err = parse(&two).unwrap_err().to_string();
        assert!(err.contains("github.token_file"), "{err}");
        let covered = two.replace(
            "[[repository]]\nname = \"pallets/flask\"",
            "[[github.credentials]]\nowner = \"pallets-eco\"\ntoken_env = \"GH_E\"\n\n[[repository]]\nname = \"pallets/flask\"",
        );
        let c = parse(&covered).unwrap();
        assert_eq!(c.github.credentials.len(), 2);
    }

    #[test]
    fn the_default_instance_name_is_the_machines_name_made_safe() {
        let name = host_name();
        assert!(!name.is_empty());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{name}"
        );
        let expected: String = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        assert_eq!(name, expected, "uname(2), which needs no /proc");
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let text = MINIMAL.replace("[github]", "[github]\ntokne_file = \"x\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("tokne_file"), "{err}");
        assert!(err.contains("config.toml"), "{err}");
    }

    #[test]
    fn plaintext_to_a_remote_host_is_refused() {
        let text = MINIMAL.replace(
            "host = \"imap.example.org\"",
            "host = \"imap.example.org\"\ntls = \"none\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("imap.tls"), "{err}");
        let text = MINIMAL.replace(
            "host = \"imap.example.org\"",
            "host = \"127.0.0.1\"\ntls = \"none\"",
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn the_default_repository_must_be_configured() {
        let text = MINIMAL.replace(
            "default_repository = \"pallets/flask\"",
            "default_repository = \"pallets/jinja\"",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("default_repository"), "{err}");
    }

    #[test]
    fn an_alias_used_twice_is_refused() {
        let text = format!("{MINIMAL}\n[[repository]]\nname = \"pallets-eco/flask\"\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("repository[1]"), "{err}");
    }

    #[test]
    fn pgp_is_optional_and_its_passphrase_comes_from_one_place() {
        assert!(parse(MINIMAL).unwrap().pgp.is_none());
        let with = format!("{MINIMAL}\n[pgp]\nsecret_key_file = \"key.asc\"\n");
        let c = parse(&with).unwrap();
        let pgp = c.pgp.as_ref().unwrap();
        assert!(pgp.encrypt_replies);
        assert_eq!(pgp.key_url, None);
        assert_eq!(
            pgp.secret_key_file,
            Path::new("/etc/advisory-bridge/key.asc")
        );
        let both = format!("{with}passphrase_file = \"p\"\npassphrase_env = \"P\"\n");
        let err = parse(&both).unwrap_err().to_string();
        assert!(err.contains("pgp.passphrase_file"), "{err}");
        let err = c.pgp_keys().unwrap_err().to_string();
        assert!(err.contains("pgp.secret_key_file"), "{err}");
    }

    #[test]
    fn a_journal_url_is_checked_before_anything_connects() {
        let with = |journal: &str| format!("{MINIMAL}\n[journal]\n{journal}\n");
        let c = parse(MINIMAL).unwrap();
        assert!(c.journal.url.is_none(), "SQLite by default");
        assert!(c.journal_target().unwrap().is_none());
        let ok = parse(&with("url = \"postgres://bridge@db.example.org/journal\"")).unwrap();
        let target = ok.journal_target().unwrap().unwrap();
        assert!(target.tls.is_some(), "TLS by default");
        assert_eq!(ok.journal.lease_secs, 60);
        for (journal, key, says) in [
            (
                "url = \"postgres://bridge:hunter2@db.example.org/journal\"",
                "journal.url",
                "holds a password",
            ),
            (
                "url = \"postgres://bridge@db.example.org/journal?password=hunter2\"",
                "journal.url",
                "holds a password",
            ),
            (
                "url = \"mysql://db.example.org/j\"",
                "journal.url",
                "postgres://",
            ),
            (
                "url = \"postgres://db.example.org/journal\"",
                "journal.url",
                "a user",
            ),
            (
                "url = \"postgres://bridge@db.example.org/journal\"\ntls = \"none\"",
                "journal.tls",
                "loopback",
            ),
            (
                "url = \"postgres://bridge@127.0.0.1/journal\"\nlease_secs = 1",
                "journal.lease_secs",
                "at least 2",
            ),
        ] {
            let err = parse(&with(journal)).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{journal}: {err}");
            assert!(
                !err.contains("hunter2"),
                "the password is never shown: {err}"
            );
        }
        parse(&with(
            "url = \"postgres://bridge@127.0.0.1/journal\"\ntls = \"none\"",
        ))
        .unwrap();
    }

    #[test]
    fn the_example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config.example.toml");
        let c = parse(text).unwrap();
        let d = parse(MINIMAL).unwrap();
        assert_eq!(c.journal.url, d.journal.url);
        assert_eq!(c.journal.tls, d.journal.tls);
        assert_eq!(c.journal.lease_secs, d.journal.lease_secs);
        assert_eq!(c.imap.poll_interval_secs, d.imap.poll_interval_secs);
        assert_eq!(c.imap.idle_recheck_secs, d.imap.idle_recheck_secs);
        assert_eq!(c.imap.timeout_secs, d.imap.timeout_secs);
        assert_eq!(c.smtp.timeout_secs, d.smtp.timeout_secs);
        assert_eq!(c.github.timeout_secs, d.github.timeout_secs);
        assert_eq!(c.github.api_url, d.github.api_url);
        assert_eq!(
            c.github.min_mutation_interval_ms,
            d.github.min_mutation_interval_ms
        );
        assert_eq!(c.limits.max_message_bytes, d.limits.max_message_bytes);
        assert_eq!(c.limits.max_parts, d.limits.max_parts);
        assert_eq!(c.limits.max_depth, d.limits.max_depth);
        assert_eq!(c.limits.max_attachments, d.limits.max_attachments);
        assert_eq!(
            c.limits.max_advisories_per_sender_per_day,
            d.limits.max_advisories_per_sender_per_day
        );
        assert_eq!(
            c.limits.max_replies_per_sender_per_day,
            d.limits.max_replies_per_sender_per_day
        );
        assert_eq!(c.imap.held_folder, d.imap.held_folder);
        assert_eq!(c.imap.processing_folder, d.imap.processing_folder);
        assert_eq!(c.retry.initial_delay_secs, d.retry.initial_delay_secs);
        assert_eq!(c.retry.max_delay_secs, d.retry.max_delay_secs);
        assert_eq!(
            c.advisory.inline_attachment_max_bytes,
            d.advisory.inline_attachment_max_bytes
        );
        assert_eq!(c.reply.policy_url, d.reply.policy_url);
        assert_eq!(c.notify.interval_secs, d.notify.interval_secs);
        assert_eq!(c.notify.published, d.notify.published);
        assert_eq!(c.notify.cve_assigned, d.notify.cve_assigned);
        assert_eq!(c.notify.closed, d.notify.closed);
        assert_eq!(c.notify.withdrawn, d.notify.withdrawn);
        assert_eq!(c.state_dir, d.state_dir);
        assert_eq!(
            c.repository("pallets/jinja").unwrap().package_name(),
            "jinja2"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
    }

    #[test]
    fn a_missing_secret_file_names_the_key() {
        let text = MINIMAL.replace("password_env = \"IMAP_PW\"", "password_file = \"nope\"");
        let c = parse(&text).unwrap();
        let err = c.imap_password().unwrap_err().to_string();
        assert!(err.contains("imap.password_file"), "{err}");
        assert!(err.contains("/etc/advisory-bridge/nope"), "{err}");
    }
}
