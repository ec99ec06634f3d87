//! The configuration resolved once at start: secrets read, adapter settings built, our
//! own addresses and the instance's claim folder worked out, so no other code reads the
//! raw file's fields to derive them again.

use std::sync::Arc;
use std::time::Duration;

use super::{Config, ConfigError};
use crate::github::GitHubSettings;
use crate::mail::{Address, Limits};
use crate::reply::MailerSettings;
use crate::source::ImapSettings;

/// Everything the daemon's parts need from the config, built once.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file as parsed and validated (settings of the pure stages).
    pub config: Arc<Config>,
    /// IMAP, with the password read.
    pub imap: ImapSettings,
    /// SMTP, with the password read.
    pub smtp: MailerSettings,
    /// GitHub, with the token read.
    pub github: GitHubSettings,
    /// Our address and display name as the sender of replies.
    pub from: Address,
    /// Addresses that are ours (loop detection): the sender address and the IMAP login
    /// when it is an address.
    pub own_addresses: Vec<String>,
    /// This instance's name (claim keyword and folder).
    pub instance: String,
    /// The folder this instance claims new mail into.
    pub claim_folder: String,
    /// The message limits for parsing.
    pub limits: Limits,
    /// Our OpenPGP key, unlocked, when `[pgp]` is set.
    pub pgp: Option<Arc<crate::openpgp::Keys>>,
}

impl Resolved {
    /// Reads every secret and derives the rest; fails naming the key whose secret is
    /// missing.
    pub fn new(config: Config) -> Result<Resolved, ConfigError> {
        let imap = ImapSettings {
            host: config.imap.host.clone(),
            port: config.imap.port(),
            tls: config.imap.tls,
            ca_file: config.imap.ca_file.clone(),
            username: config.imap.username.clone(),
            password: config.imap_password()?,
            timeout: Duration::from_secs(config.imap.timeout_secs),
        };
        let credentials = match (&config.smtp.username, config.smtp_password()?) {
            (Some(user), Some(pw)) => Some((user.clone(), pw)),
            _ => None,
        };
        let pgp = config.pgp_keys()?.map(Arc::new);
        let smtp = MailerSettings {
            host: config.smtp.host.clone(),
            port: config.smtp.port(),
            tls: config.smtp.tls,
            ca_file: config.smtp.ca_file.clone(),
            credentials,
            timeout: Duration::from_secs(config.smtp.timeout_secs),
            pgp: pgp
                .clone()
                .filter(|_| config.pgp.as_ref().is_some_and(|p| p.encrypt_replies)),
        };
        let github = GitHubSettings {
            api_url: config.github.api_url.clone(),
            token: config.github_token()?,
            owner_tokens: config.github_owner_tokens()?,
            app: config.github_app()?,
            timeout: Duration::from_secs(config.github.timeout_secs),
            min_mutation_interval: Duration::from_millis(config.github.min_mutation_interval_ms),
        };
        let instance = config.imap.instance();
        let claim_folder = config.imap.claim_folder();
        Ok(Resolved {
            from: from_address(&config),
            own_addresses: own_addresses(&config),
            limits: Limits::from(&config.limits),
            imap,
            smtp,
            github,
            instance,
            claim_folder,
            pgp,
            config: Arc::new(config),
        })
    }
}

/// Our address and display name as the sender of replies.
pub fn from_address(config: &Config) -> Address {
    Address {
        name: Some(config.smtp.from_name.clone()),
        email: config.smtp.from_address.trim().to_owned(),
    }
}

/// Our own addresses, for loop detection.
pub fn own_addresses(config: &Config) -> Vec<String> {
    let mut own = vec![config.own_address()];
    let login = config.imap.username.trim().to_lowercase();
    if login.contains('@') && !own.contains(&login) {
        own.push(login);
    }
    own
}
