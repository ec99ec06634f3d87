//! The only code that talks IMAP: connect over rustls, select the mailbox, list and fetch
//! messages, wait for new ones (IDLE or polling), and file finished ones away.

mod errors;
mod transport;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{Response, Status};
use async_imap::types::UnsolicitedResponse;

use crate::config::{Secret, TlsMode};
use crate::failure::{Classify, FailureKind};
use errors::{already_exists, breaks_session, from_imap, permanent, server_text, transient};
use transport::{BoxedTransport, Endpoint};
pub use wire::{Listed, Namespace, SpecialUse};

/// A failed IMAP operation. Connection trouble is transient; a refused login or a
/// missing mailbox is permanent for the session but the daemon keeps retrying.
#[derive(Debug, thiserror::Error)]
#[error("IMAP {operation}: {message}")]
pub struct ImapError {
    /// What we were doing, e.g. `login`.
    pub operation: &'static str,
    /// What the server or the network said; never contains the password.
    pub message: String,
    /// Retry or not.
    pub kind: FailureKind,
}

impl Classify for ImapError {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

/// Settings for [`ImapSource::connect`].
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA file.
    pub ca_file: Option<std::path::PathBuf>,
    /// Login.
    pub username: String,
    /// Password.
    pub password: Secret,
    /// Timeout for one command.
    pub timeout: Duration,
}

/// The selected mailbox's identity: a change of `uidvalidity` means old UIDs are void.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxState {
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UIDNEXT, when the server said it.
    pub uidnext: Option<u32>,
    /// Number of messages.
    pub exists: u32,
}

/// One fetched message.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Its UID.
    pub uid: u32,
    /// Its full raw bytes (fetched with `BODY.PEEK[]`, so `\Seen` is not set).
    pub raw: Vec<u8>,
    /// The server's `INTERNALDATE`, when given.
    pub internal_date: Option<chrono::DateTime<chrono::Utc>>,
    /// Its flags and keywords, as the server wrote them.
    pub flags: Vec<String>,
}

/// What ended a wait for new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The server announced a change (IDLE) or a poll is due.
    Changed,
    /// The timeout passed without news.
    Timeout,
    /// The caller's interrupt fired (mail to copy, shutdown); the session is intact.
    Interrupted,
}

/// How long one IDLE may last: RFC 2177 asks clients to re-issue IDLE at least every 29
/// minutes, because servers may log an idle client out after 30.
pub const IDLE_MAX: Duration = Duration::from_secs(28 * 60);

type ImapSession = async_imap::Session<BoxedTransport>;

/// The optional IMAP extensions this client makes use of to wait and to move, as the
/// server announced them after login (see [`ServerFeatures`] for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerCapabilities {
    /// `IDLE` (RFC 2177): the server pushes news, so no polling is needed.
    pub idle: bool,
    /// `MOVE` (RFC 6851): filing a message away is one atomic command.
    pub move_command: bool,
    /// `UIDPLUS` (RFC 4315): `UID EXPUNGE` removes exactly our message after a copy.
    pub uidplus: bool,
}

/// What else the server offers that decides how we claim and name folders: announced
/// after login, and, for `keywords`, the selected mailbox's `PERMANENTFLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerFeatures {
    /// `CONDSTORE` (RFC 7162): the claim keyword is stored only if nobody changed the
    /// message since we looked (`UNCHANGEDSINCE`).
    pub condstore: bool,
    /// `NAMESPACE` (RFC 2342): the personal prefix and delimiter come from the server.
    pub namespace: bool,
    /// `SPECIAL-USE` (RFC 6154): the server names its `\Sent` and `\Junk` folders
    /// (some servers mark them in `LIST` without announcing it; those marks count too).
    pub special_use: bool,
    /// `ACL` (RFC 4314): `MYRIGHTS` tells whether we may create a folder.
    pub acl: bool,
    /// `ID` (RFC 2971): the server says its name and version.
    pub id: bool,
    /// The selected mailbox's `PERMANENTFLAGS` contain `\*`: claim keywords can be kept.
    pub keywords: bool,
}

/// The names of the capabilities in use, for logs and `check`, e.g.
/// `IDLE MOVE UIDPLUS CONDSTORE keywords`.
pub fn describe(capabilities: ServerCapabilities, features: ServerFeatures) -> String {
    {
        let all = [
            (capabilities.idle, "IDLE"),
            (capabilities.move_command, "MOVE"),
            (capabilities.uidplus, "UIDPLUS"),
            (features.condstore, "CONDSTORE"),
            (features.namespace, "NAMESPACE"),
            (features.special_use, "SPECIAL-USE"),
            (features.id, "ID"),
            (features.keywords, "keywords"),
        ];
        let used: Vec<&str> = all.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if used.is_empty() {
            "none".into()
        } else {
            used.join(" ")
        }
    }
}

/// How a claim is made on this server, from what it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode {
    /// A claim keyword stored with `UNCHANGEDSINCE`: safe for several instances.
    Conditional,
    /// A claim keyword stored plainly: two instances can both claim one message in a
    /// narrow window (the advisory marker and stable reply ids cover it).
    Plain,
    /// No keyword at all (the server keeps no custom keywords): only the move claims, so
    /// only one instance may watch the mailbox.
    MoveOnly,
}

/// Runs one command on the source's session under its timeout: `run!(source, "search",
/// |s| s.uid_search("ALL").await)` is a future of `Result<_, ImapError>`.
///
/// A macro rather than a method taking an async closure: rustc cannot yet prove the
/// future of such a method `Send` ("implementation of `AsyncFnOnce` is not general
/// enough"), and the daemon needs to spawn these futures.
macro_rules! run {
    ($source:expr, $operation:expr, |$s:ident| $body:expr) => {
        async {
            let source: &mut ImapSource = $source;
            let operation: &'static str = $operation;
            match source.session.take() {
                None => Err(source.lost(operation)),
                Some(mut session) => {
                    let outcome = {
                        let $s = &mut session;
                        tokio::time::timeout(source.timeout, command(async { $body })).await
                    };
                    source.settle(operation, session, outcome)
                }
            }
        }
    };
}

/// Fixes the error type of a command's future, so `?` inside [`run!`] bodies infers.
fn command<T>(
    future: impl Future<Output = Result<T, async_imap::error::Error>>,
) -> impl Future<Output = Result<T, async_imap::error::Error>> {
    future
}

/// An IMAP UID set for `uids` (`4:6,9`): ascending, with runs as ranges. Empty for none.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// A logged-in IMAP session with the watched mailbox selected.
///
/// After a transient error (network, timeout, the server going away) the connection is
/// dropped and every later call fails with a transient error too: the caller connects
/// again. A `NO` from the server leaves the session usable.
pub struct ImapSource {
    /// `None` once the connection broke.
    session: Option<ImapSession>,
    /// `host:port`, for messages.
    server: String,
    /// The selected mailbox.
    mailbox: String,
    /// The limit for one command.
    timeout: Duration,
    capabilities: ServerCapabilities,
    features: ServerFeatures,
    /// The personal namespace every configured folder name is resolved against.
    namespace: Namespace,
    /// Set when a command we read by hand (see `wire`) saw `EXISTS` or `RECENT`.
    news: Arc<AtomicBool>,
    /// What the server said about itself: `ID` name and version, or the greeting.
    identity: Option<String>,
    /// The folders the server marked `\Sent` and `\Junk`, from the last full `LIST`.
    special: SpecialFolders,
}

/// The server's own `\Sent` and `\Junk` folders (RFC 6154), as it names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialFolders {
    /// The folder marked `\Sent`.
    pub sent: Option<String>,
    /// The folder marked `\Junk`.
    pub junk: Option<String>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource")
            .field("server", &self.server)
            .field("mailbox", &self.mailbox)
            .field("connected", &self.session.is_some())
            .field("capabilities", &self.capabilities)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl ImapSource {
    /// Connects, (STARTTLS,) logs in, creates `folders` that are missing, and selects
    /// `mailbox`.
    ///
    /// Folder names go to the server as given, so names outside ASCII must already be in
    /// IMAP's modified UTF-7. Every network step is bounded by `settings.timeout`.
    pub async fn connect(
        settings: &ImapSettings,
        mailbox: &str,
        folders: &[&str],
    ) -> Result<(ImapSource, MailboxState), ImapError> {
        let mut source = ImapSource::open(settings).await?;
        let state = source.prepare(mailbox, folders).await?;
        Ok((source, state))
    }

    /// Connects, (STARTTLS,) logs in and learns what the server offers (capabilities,
    /// namespace, delimiter, identity), selecting nothing and creating nothing.
    pub async fn open(settings: &ImapSettings) -> Result<ImapSource, ImapError> {
        let server = format!("{}:{}", settings.host, settings.port);
        let endpoint = Endpoint {
            host: &settings.host,
            port: settings.port,
            tls: settings.tls,
            ca_file: settings.ca_file.as_deref(),
            timeout: settings.timeout,
        };
        let (stream, greeted) = transport::open(&endpoint).await?;
        let mut client = async_imap::Client::new(stream);
        let greeting = if greeted {
            None
        } else {
            read_greeting(&mut client, &server, settings.timeout).await?
        };
        let session = login(client, settings, &server).await?;
        let mut source = ImapSource {
            session: Some(session),
            server,
            mailbox: "INBOX".to_owned(),
            timeout: settings.timeout,
            capabilities: ServerCapabilities::default(),
            features: ServerFeatures::default(),
            namespace: Namespace::default(),
            news: Arc::new(AtomicBool::new(false)),
            identity: greeting,
            special: SpecialFolders::default(),
        };
        let announced = run!(&mut source, "capability", |s| s.capabilities().await).await?;
        source.capabilities = ServerCapabilities {
            idle: announced.has_str("IDLE"),
            move_command: announced.has_str("MOVE"),
            uidplus: announced.has_str("UIDPLUS"),
        };
        source.features = ServerFeatures {
            condstore: announced.has_str("CONDSTORE"),
            namespace: announced.has_str("NAMESPACE"),
            special_use: announced.has_str("SPECIAL-USE"),
            acl: announced.has_str("ACL"),
            id: announced.has_str("ID"),
            keywords: false,
        };
        source.discover_namespace().await?;
        if source.features.id {
            source.identify().await;
        }
        Ok(source)
    }

    /// Creates the missing `folders`, selects `mailbox` (names resolved against the
    /// namespace) and says what the session will use.
    pub async fn prepare(
        &mut self,
        mailbox: &str,
        folders: &[&str],
    ) -> Result<MailboxState, ImapError> {
        self.mailbox = self.namespace.resolve(mailbox);
        self.create_missing(folders).await?;
        let state = self.select().await?;
        tracing::debug!(
            server = %self.server,
            mailbox = %self.mailbox,
            uidvalidity = state.uidvalidity,
            exists = state.exists,
            capabilities = %describe(self.capabilities, self.features),
            prefix = %self.namespace.prefix,
            delimiter = ?self.namespace.delimiter,
            "IMAP session ready"
        );
        Ok(state)
    }

    /// The personal namespace: from `NAMESPACE` when offered, the delimiter from
    /// `LIST "" ""` when that gave none.
    async fn discover_namespace(&mut self) -> Result<(), ImapError> {
        if self.features.namespace {
            let limit = self.timeout;
            let session = self
                .session
                .as_mut()
                .ok_or_else(|| transient("namespace", "not connected"))?;
            match tokio::time::timeout(limit, wire::namespace(session)).await {
                Ok(Ok(Some(namespace))) => self.namespace = namespace,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    self.session = None;
                    return Err(transient("namespace", format!("connection failed: {e}")));
                }
                Err(_) => {
                    self.session = None;
                    return Err(self.timed_out("namespace"));
                }
            }
        }
        if self.namespace.delimiter.is_none() {
            let news = self.news.clone();
            let root = run!(self, "list delimiter", |s| wire::list(s, "", &news).await).await?;
            self.namespace.delimiter = root
                .iter()
                .find_map(|l| l.delimiter.as_deref().and_then(|d| d.chars().next()));
        }
        Ok(())
    }

    /// Asks the server's name and version (`ID`); a refusal only leaves it unknown.
    async fn identify(&mut self) {
        let version = env!("CARGO_PKG_VERSION");
        let answer = run!(self, "id", |s| s
            .id([
                ("name", Some("advisory-bridge")),
                ("version", Some(version))
            ])
            .await)
        .await;
        if let Ok(Some(fields)) = answer {
            let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
            let name = format!("{} {}", get("name"), get("version"))
                .trim()
                .to_owned();
            if !name.is_empty() {
                self.identity = Some(name);
            }
        }
    }

    /// What the server said about itself: its `ID` name and version, else its greeting.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The personal namespace prefix and delimiter configured names are resolved against.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The server's name for a configured folder (see [`Namespace::resolve`]).
    pub fn resolve(&self, folder: &str) -> String {
        self.namespace.resolve(folder)
    }

    /// How claims are made on this server (after a mailbox was selected).
    pub fn claim_mode(&self) -> ClaimMode {
        match (self.features.keywords, self.features.condstore) {
            (false, _) => ClaimMode::MoveOnly,
            (true, true) => ClaimMode::Conditional,
            (true, false) => ClaimMode::Plain,
        }
    }

    /// Every folder the user has, as the server names them.
    pub async fn folder_names(&mut self) -> Result<Vec<String>, ImapError> {
        Ok(self.folders().await?.into_iter().map(|l| l.name).collect())
    }

    /// Every folder the user has, with its attributes; remembers the special-use ones.
    pub async fn folders(&mut self) -> Result<Vec<Listed>, ImapError> {
        let news = self.news.clone();
        let listed = run!(self, "list folders", |s| wire::list(s, "*", &news).await).await?;
        let marked = |use_: SpecialUse| {
            listed
                .iter()
                .find(|l| l.special == Some(use_))
                .map(|l| l.name.clone())
        };
        self.special = SpecialFolders {
            sent: marked(SpecialUse::Sent),
            junk: marked(SpecialUse::Junk),
        };
        Ok(listed)
    }

    /// The folders the server marked `\Sent` and `\Junk` (known after [`Self::prepare`]
    /// or [`Self::folders`]).
    pub fn special_folders(&self) -> &SpecialFolders {
        &self.special
    }

    /// Whether the server's `ACL` rights let us create a folder under `parent`: `None`
    /// when the server offers no `ACL` or would not say.
    pub async fn may_create_under(&mut self, parent: &str) -> Result<Option<bool>, ImapError> {
        use async_imap::imap_proto::rfc4314::AclRight;
        if !self.features.acl {
            return Ok(None);
        }
        let news = self.news.clone();
        let answer = run!(self, "myrights", |s| wire::my_rights(s, parent, &news)
            .await)
        .await;
        match answer {
            Ok(rights) if rights.is_empty() => Ok(None),
            Ok(rights) => {
                Ok(Some(rights.iter().any(|r| {
                    matches!(r, AclRight::CreateMailbox | AclRight::OldCreate)
                })))
            }
            // A NO (no ACL on that name, say) leaves the session usable and says nothing.
            Err(e) if !e.kind.is_transient() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The extensions the server offers that this client uses.
    pub fn capabilities(&self) -> ServerCapabilities {
        self.capabilities
    }

    /// What else the server offers (CONDSTORE, NAMESPACE, keywords, ...).
    pub fn features(&self) -> ServerFeatures {
        self.features
    }

    /// Every extension in use, as one line for logs and `check`.
    pub fn describe(&self) -> String {
        describe(self.capabilities, self.features)
    }

    /// Stops using extensions the server announces but that ops want off (a server whose
    /// IDLE never pushes, a MOVE that misbehaves): keeps only those also in `allowed`.
    pub fn limit_capabilities(&mut self, allowed: ServerCapabilities) {
        self.capabilities = ServerCapabilities {
            idle: self.capabilities.idle && allowed.idle,
            move_command: self.capabilities.move_command && allowed.move_command,
            uidplus: self.capabilities.uidplus && allowed.uidplus,
        };
    }

    /// False once the connection broke; the caller should connect again.
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    async fn create_missing(&mut self, folders: &[&str]) -> Result<(), ImapError> {
        let existing = self.folder_names().await?;
        for folder in folders {
            let folder = self.namespace.resolve(folder);
            let folder = folder.as_str();
            if folder.eq_ignore_ascii_case("INBOX") || existing.iter().any(|e| e == folder) {
                continue;
            }
            run!(self, "create folder", |s| match s.create(folder).await {
                // Another client (or a second instance) created it since our LIST.
                Err(e) if already_exists(&e) => Ok(()),
                other => other,
            })
            .await
            .map_err(|mut e| {
                e.message = format!("cannot create folder `{folder}`: {}", e.message);
                e
            })?;
            tracing::info!(folder, server = %self.server, "created IMAP folder");
        }
        Ok(())
    }

    async fn select(&mut self) -> Result<MailboxState, ImapError> {
        let mailbox = self.mailbox.clone();
        let selected = run!(self, "select", |s| s.select(&mailbox).await)
            .await
            .map_err(|mut e| {
                e.message = if e.kind.is_transient() {
                    format!("mailbox `{mailbox}`: {}", e.message)
                } else {
                    format!(
                        "mailbox `{mailbox}` cannot be opened: {}; check imap.mailbox",
                        e.message
                    )
                };
                e
            })?;
        self.discard_pending_changes();
        // A server that sends no PERMANENTFLAGS allows what FLAGS lists (RFC 3501), which
        // never includes `\*`: no keywords then.
        self.features.keywords = selected
            .permanent_flags
            .iter()
            .any(|f| matches!(f, async_imap::types::Flag::MayCreate));
        let uidvalidity = selected.uid_validity.ok_or_else(|| {
            permanent(
                "select",
                format!(
                    "{} reported no UIDVALIDITY for mailbox `{mailbox}`, so UIDs cannot be \
                     trusted across sessions",
                    self.server
                ),
            )
        })?;
        Ok(MailboxState {
            uidvalidity,
            uidnext: selected.uid_next,
            exists: selected.exists,
        })
    }

    /// Selects another folder (creating nothing) and makes it the one that
    /// [`ImapSource::list_uids`], [`ImapSource::fetch`], [`ImapSource::move_to`] and
    /// [`ImapSource::wait`] work on.
    pub async fn select_folder(&mut self, folder: &str) -> Result<MailboxState, ImapError> {
        self.mailbox = self.namespace.resolve(folder);
        self.select().await
    }

    /// Folders whose names start with `prefix`, with how many messages each holds (for
    /// the start-up check of claim folders other instances left behind).
    pub async fn folders_with_prefix(
        &mut self,
        prefix: &str,
    ) -> Result<Vec<(String, u32)>, ImapError> {
        let prefix = self.namespace.resolve(prefix);
        let names = self.folder_names().await?;
        let mut found = Vec::new();
        for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
            let status = run!(self, "status", |s| s.status(&name, "(MESSAGES)").await).await?;
            found.push((name, status.exists));
        }
        Ok(found)
    }

    /// Appends a message to `folder` marked `\Seen` (our copy of a reply we sent).
    pub async fn append(&mut self, folder: &str, raw: &[u8]) -> Result<(), ImapError> {
        let folder = &self.namespace.resolve(folder);
        run!(self, "append", |s| s
            .append(folder, Some("(\\Seen)"), None, raw)
            .await)
        .await
        .map_err(|mut e| {
            e.message = format!("to folder `{folder}`: {}", e.message);
            e
        })
    }

    /// The UIDs of all messages in the selected mailbox, ascending.
    pub async fn list_uids(&mut self) -> Result<Vec<u32>, ImapError> {
        // Dovecot (like most servers) makes newly arrived messages visible only when a
        // command ends, after that command's results: without the NOOP, a SEARCH would miss
        // what arrived since the previous command.
        let found = run!(self, "search", |s| {
            s.noop().await?;
            s.uid_search("ALL").await
        })
        .await?;
        // Every EXISTS the server sent so far came before the SEARCH result, so this list
        // already covers it: a wait that follows must not wake up for it again.
        self.discard_pending_changes();
        let mut uids: Vec<u32> = found.into_iter().collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Fetches one message by UID without marking it seen: [`FetchOutcome::Gone`] if no
    /// such message exists (any more), [`FetchOutcome::TooLarge`] if it is larger than
    /// `max_bytes` (checked with `RFC822.SIZE` before the body is read).
    pub async fn fetch(&mut self, uid: u32, max_bytes: usize) -> Result<FetchOutcome, ImapError> {
        let Some(&size) = self.sizes(&[uid]).await?.get(&uid) else {
            return Ok(FetchOutcome::Gone);
        };
        self.fetch_sized(uid, size, max_bytes).await
    }

    /// The sizes (`RFC822.SIZE`) of several messages in one command; a UID missing from
    /// the answer is gone.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<HashMap<u32, u32>, ImapError> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        let news = self.news.clone();
        let set = uid_set(uids);
        let command = format!("UID FETCH {set} (UID RFC822.SIZE)");
        let fetched = run!(self, "fetch size", |s| wire::fetches(s, &command, &news)
            .await)
        .await
        .map_err(|e| self.about_uids(&set, e))?;
        let mut sizes = HashMap::new();
        let mut unsized_ = Vec::new();
        for f in fetched {
            let Some(uid) = f.uid else { continue };
            match f.size {
                Some(size) => {
                    sizes.insert(uid, size);
                }
                // A flag change by another client can add a FETCH without a size.
                None => unsized_.push(uid),
            }
        }
        if let Some(uid) = unsized_.into_iter().find(|u| !sizes.contains_key(u)) {
            return Err(transient(
                "fetch size",
                format!("{} did not say the size of UID {uid}", self.server),
            ));
        }
        Ok(sizes)
    }

    /// [`ImapSource::fetch`] for a message whose size is known (from [`ImapSource::sizes`]).
    pub async fn fetch_sized(
        &mut self,
        uid: u32,
        size: u32,
        max_bytes: usize,
    ) -> Result<FetchOutcome, ImapError> {
        let news = self.news.clone();
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > max_bytes {
            return Ok(FetchOutcome::TooLarge { size });
        }
        let command = format!("UID FETCH {uid} (UID FLAGS BODY.PEEK[] INTERNALDATE)");
        let fetched: Vec<Option<Fetched>> =
            run!(self, "fetch", |s| wire::fetches(s, &command, &news).await)
                .await
                .map_err(|e| self.about_uid(uid, e))?
                .into_iter()
                .filter(|f| f.uid == Some(uid))
                .map(|f| {
                    let internal_date = f.internal_date.map(|d| d.with_timezone(&chrono::Utc));
                    let flags = f.flags;
                    f.body.map(|raw| Fetched {
                        uid,
                        raw,
                        internal_date,
                        flags,
                    })
                })
                .collect();
        // Expunged between the two commands: Dovecot answers with no FETCH at all, others
        // may send one without the body.
        Ok(match fetched.into_iter().flatten().next() {
            Some(message) => FetchOutcome::Message(message),
            None => FetchOutcome::Gone,
        })
    }

    /// Moves a message to `folder` (UID MOVE, or COPY + \Deleted + UID EXPUNGE).
    ///
    /// Without `MOVE` a crash between the copy and the expunge leaves the message in both
    /// folders; moving it again is harmless. Without `UIDPLUS` either, the last resort is a
    /// plain `EXPUNGE`, which also removes messages other clients marked `\Deleted`.
    pub async fn move_to(&mut self, uid: u32, folder: &str) -> Result<(), ImapError> {
        self.move_all(&[uid], folder).await
    }

    /// Moves several messages to `folder` in one command ([`ImapSource::move_to`]).
    pub async fn move_all(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let folder = &self.namespace.resolve(folder);
        let uid_set = uid_set(uids);
        let in_folder = |mut e: ImapError| {
            e.message = format!("UID {uid_set} to folder `{folder}`: {}", e.message);
            e
        };
        if self.capabilities.move_command {
            return run!(self, "move", |s| s.uid_mv(&uid_set, folder).await)
                .await
                .map_err(in_folder);
        }
        run!(self, "copy", |s| s.uid_copy(&uid_set, folder).await)
            .await
            .map_err(in_folder)?;
        self.store_flag(&uid_set, "\\Deleted").await?;
        let news = self.news.clone();
        let command = if self.capabilities.uidplus {
            format!("UID EXPUNGE {uid_set}")
        } else {
            "EXPUNGE".to_owned()
        };
        run!(self, "expunge", |s| wire::simple(s, &command, &news).await)
            .await
            .map_err(in_folder)
    }

    /// Adds a flag (`\Seen`, `\Flagged` or a keyword such as `$Processed`) to a message
    /// and leaves it where it is.
    pub async fn set_flag(&mut self, uid: u32, flag: &str) -> Result<(), ImapError> {
        self.set_flag_all(&[uid], flag).await
    }

    /// [`ImapSource::set_flag`] for several messages in one command.
    pub async fn set_flag_all(&mut self, uids: &[u32], flag: &str) -> Result<(), ImapError> {
        let is_atom = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_graphic()
                        && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
                })
        };
        let valid = match flag.strip_prefix('\\') {
            Some(system) => is_atom(system),
            None => is_atom(flag),
        };
        if !valid {
            return Err(permanent(
                "store",
                format!("`{flag}` is not an IMAP flag; use e.g. \\Seen or $Keyword"),
            ));
        }
        if uids.is_empty() {
            return Ok(());
        }
        self.store_flag(&uid_set(uids), flag).await
    }

    /// Claims a message for this instance, atomically across clients: a conditional
    /// `UID STORE (UNCHANGEDSINCE <modseq>)` (RFC 7162) sets `keyword` only if nobody
    /// changed the message since we looked, so of two instances racing for it exactly
    /// one wins. Every claim keyword starts with `prefix`; a message already carrying
    /// another instance's keyword is theirs. True when the message is ours.
    ///
    /// Servers without CONDSTORE get a plain store. Where two claims still land (the
    /// store is not atomic across sessions on every server), the smallest keyword wins;
    /// an instance that looked before the other's claim was visible can still go ahead
    /// too, a narrow window the advisory marker and the reply's stable Message-ID cover.
    /// Servers that keep no custom keywords ([`ClaimMode::MoveOnly`]) get no store at all:
    /// true at once, and the caller's move is the claim. A `NO`/`BAD` to the flag fetch or
    /// the store is an error, never "theirs".
    pub async fn claim(
        &mut self,
        uid: u32,
        prefix: &str,
        keyword: &str,
    ) -> Result<bool, ImapError> {
        Ok(!self.claim_all(&[uid], prefix, keyword).await?.is_empty())
    }

    /// [`ImapSource::claim`] for several messages in three commands whatever their
    /// number: their flags and MODSEQs, one conditional store on those nobody claimed yet,
    /// their flags again. The store's `UNCHANGEDSINCE` is the highest MODSEQ seen: a
    /// mailbox's MODSEQs only grow, so a message another client changed after we looked
    /// has a higher one and is left alone, exactly as with one message. Returns the UIDs
    /// that are ours, ascending; gone and other instances' messages are simply absent.
    pub async fn claim_all(
        &mut self,
        uids: &[u32],
        prefix: &str,
        keyword: &str,
    ) -> Result<Vec<u32>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        if self.claim_mode() == ClaimMode::MoveOnly {
            return Ok(uids.to_vec());
        }
        let states = self.claim_states(uids, prefix).await?;
        let unclaimed: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| states.get(u).is_some_and(|(claims, _)| claims.is_empty()))
            .collect();
        if unclaimed.is_empty() {
            let mut ours: Vec<u32> = states
                .into_iter()
                .filter(|(_, (claims, _))| Self::winner(claims) == Some(keyword))
                .map(|(uid, _)| uid)
                .collect();
            ours.sort_unstable();
            return Ok(ours);
        }
        let highest = unclaimed
            .iter()
            .filter_map(|u| states.get(u).and_then(|(_, m)| *m))
            .max();
        let set = uid_set(&unclaimed);
        let query = match highest {
            Some(m) if self.features.condstore => {
                format!("(UNCHANGEDSINCE {m}) +FLAGS.SILENT ({keyword})")
            }
            _ => format!("+FLAGS.SILENT ({keyword})"),
        };
        let command = format!("UID STORE {set} {query}");
        let news = self.news.clone();
        run!(self, "claim", |s| wire::simple(s, &command, &news).await)
            .await
            .map_err(|e| self.about_uids(&set, e))?;
        let mut ours: Vec<u32> = self
            .claim_states(uids, prefix)
            .await?
            .into_iter()
            .filter(|(_, (claims, _))| Self::winner(claims) == Some(keyword))
            .map(|(uid, _)| uid)
            .collect();
        ours.sort_unstable();
        Ok(ours)
    }

    /// The claim keywords and MODSEQ (where the server has CONDSTORE) of several
    /// messages, in one command; gone ones are absent.
    async fn claim_states(
        &mut self,
        uids: &[u32],
        prefix: &str,
    ) -> Result<HashMap<u32, (Vec<String>, Option<u64>)>, ImapError> {
        let set = uid_set(uids);
        let command = if self.features.condstore {
            format!("UID FETCH {set} (UID FLAGS MODSEQ)")
        } else {
            format!("UID FETCH {set} (UID FLAGS)")
        };
        let news = self.news.clone();
        let found = run!(self, "fetch flags", |s| wire::fetches(s, &command, &news)
            .await)
        .await
        .map_err(|e| self.about_uids(&set, e))?;
        let mut states = HashMap::new();
        for f in found {
            let Some(uid) = f.uid else { continue };
            // Another client's flag change can add a FETCH without MODSEQ: keep the
            // fullest answer.
            let claims: Vec<String> = f
                .flags
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect();
            let entry = states.entry(uid).or_insert((Vec::new(), None));
            if !claims.is_empty() {
                entry.0 = claims;
            }
            if f.modseq.is_some() {
                entry.1 = f.modseq;
            }
        }
        Ok(states)
    }

    /// Of several claims on one message (a server whose conditional store is not atomic
    /// across sessions, as Dovecot's Maildir is not always), the smallest keyword wins,
    /// so every instance reads the same winner off the same flags.
    fn winner(claims: &[String]) -> Option<&str> {
        claims.iter().map(String::as_str).min()
    }

    async fn store_flag(&mut self, uid_set: &str, flag: &str) -> Result<(), ImapError> {
        let command = format!("UID STORE {uid_set} +FLAGS.SILENT ({flag})");
        let news = self.news.clone();
        run!(self, "store", |s| wire::simple(s, &command, &news).await).await
    }

    /// Waits for new mail: IDLE (re-issued before 29 minutes) when offered and `idle` is
    /// true, else sleeps `poll_interval`; returns after `max_wait` at the latest.
    ///
    /// Returns [`Wake::Changed`] at once when the server announced new mail during an
    /// earlier command (after the last [`ImapSource::list_uids`]). An IDLE lasts at most
    /// [`IDLE_MAX`]; the caller simply waits again. When polling, `Changed` means the poll
    /// interval passed and the caller should list again.
    pub async fn wait(
        &mut self,
        idle: bool,
        poll_interval: Duration,
        max_wait: Duration,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Wake, ImapError> {
        let Some(session) = &self.session else {
            return Err(self.lost("wait"));
        };
        if self.news.swap(false, Ordering::Relaxed) | has_new_mail(&session.unsolicited_responses) {
            return Ok(Wake::Changed);
        }
        if idle && self.capabilities.idle {
            return self.idle(max_wait, interrupt).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll_interval.min(max_wait)) => {}
            _ = interrupt => return Ok(Wake::Interrupted),
        }
        Ok(if poll_interval <= max_wait {
            Wake::Changed
        } else {
            Wake::Timeout
        })
    }

    async fn idle(
        &mut self,
        max_wait: Duration,
        interrupt: impl Future<Output = ()>,
    ) -> Result<Wake, ImapError> {
        let session = self.session.take().ok_or_else(|| self.lost("IDLE"))?;
        let pending = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        // From here on, an error drops the handle and with it the connection: after a
        // failed IDLE or DONE nobody knows what state the server is in.
        self.step("IDLE", handle.init()).await?;
        // News that arrived while the server was still answering the IDLE command went to
        // the queue rather than to the IDLE stream.
        let wake = if has_new_mail(&pending) {
            Wake::Changed
        } else {
            let limit = max_wait.min(IDLE_MAX);
            let (idling, stop) = handle.wait_with_timeout(limit);
            tokio::pin!(idling);
            // async-imap restarts its own timer on every keepalive (`* OK Still here`),
            // so the outer timeout is what bounds the wait. An interrupt stops the IDLE
            // the way async-imap means it to: dropping the stop source ends the wait with
            // `ManualInterrupt`, and DONE follows as usual.
            let mut interrupted = false;
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(limit, &mut idling) => outcome,
                _ = interrupt => {
                    interrupted = true;
                    drop(stop);
                    tokio::time::timeout(self.timeout, &mut idling).await
                }
            };
            match outcome {
                Err(_) | Ok(Ok(IdleResponse::Timeout)) => Wake::Timeout,
                Ok(Ok(IdleResponse::NewData(data))) => {
                    if let Response::Data {
                        status: Status::Bye,
                        outcome,
                        ..
                    } = data.parsed()
                    {
                        return Err(transient(
                            "IDLE",
                            format!(
                                "{} ended the session: {}",
                                self.server,
                                outcome.information.as_deref().unwrap_or("BYE")
                            ),
                        ));
                    }
                    Wake::Changed
                }
                Ok(Ok(IdleResponse::ManualInterrupt)) if interrupted => Wake::Interrupted,
                Ok(Ok(IdleResponse::ManualInterrupt)) => {
                    return Err(transient(
                        "IDLE",
                        format!("{} closed the connection", self.server),
                    ));
                }
                Ok(Err(e)) => return Err(from_imap("IDLE", e)),
            }
        };
        let session = self.step("IDLE", handle.done()).await?;
        self.session = Some(session);
        Ok(wake)
    }

    /// Logs out politely.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        if self.session.is_none() {
            return Ok(());
        }
        run!(&mut self, "logout", |s| s.logout().await).await
    }

    /// Keeps the session after success and after a refusal (`NO`, `BAD`); drops it after
    /// anything else, which leaves the connection in an unknown state. See [`run!`].
    fn settle<T>(
        &mut self,
        operation: &'static str,
        session: ImapSession,
        outcome: Result<Result<T, async_imap::error::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, ImapError> {
        match outcome {
            Ok(Ok(value)) => {
                self.session = Some(session);
                Ok(value)
            }
            Ok(Err(e)) => {
                if !breaks_session(&e) {
                    self.session = Some(session);
                }
                Err(from_imap(operation, e))
            }
            Err(_) => Err(self.timed_out(operation)),
        }
    }

    /// Awaits one network step that is not a plain command (IDLE, DONE) under the timeout.
    async fn step<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T, async_imap::error::Error>>,
    ) -> Result<T, ImapError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(result) => result.map_err(|e| from_imap(operation, e)),
            Err(_) => Err(self.timed_out(operation)),
        }
    }

    /// Asks the server for news without waiting (`NOOP`): true when it announced new mail
    /// now or during an earlier command. For servers that push news late during IDLE.
    pub async fn poll_news(&mut self) -> Result<bool, ImapError> {
        let news = self.news.clone();
        run!(self, "noop", |s| wire::simple(s, "NOOP", &news).await).await?;
        let Some(session) = &self.session else {
            return Err(self.lost("noop"));
        };
        Ok(self.news.swap(false, Ordering::Relaxed) | has_new_mail(&session.unsolicited_responses))
    }

    /// Names the messages in an error about them.
    fn about_uids(&self, set: &str, mut e: ImapError) -> ImapError {
        let what = if set.contains([',', ':']) {
            "UIDs"
        } else {
            "UID"
        };
        e.message = format!("{what} {set} in `{}`: {}", self.mailbox, e.message);
        e
    }

    /// Names the message in an error about it.
    fn about_uid(&self, uid: u32, mut e: ImapError) -> ImapError {
        e.message = format!("UID {uid} in `{}`: {}", self.mailbox, e.message);
        e
    }

    fn discard_pending_changes(&self) {
        self.news.store(false, Ordering::Relaxed);
        if let Some(session) = &self.session {
            while session.unsolicited_responses.try_recv().is_ok() {}
        }
    }

    fn lost(&self, operation: &'static str) -> ImapError {
        transient(
            operation,
            format!(
                "the connection to {} broke earlier; connect again",
                self.server
            ),
        )
    }

    fn timed_out(&self, operation: &'static str) -> ImapError {
        transient(
            operation,
            format!(
                "{} did not answer within {} s; the connection is dropped",
                self.server,
                self.timeout.as_secs()
            ),
        )
    }
}

/// Empties the queue of unsolicited responses; true when it announced new messages.
fn has_new_mail(queue: &async_channel::Receiver<UnsolicitedResponse>) -> bool {
    let mut new_mail = false;
    while let Ok(response) = queue.try_recv() {
        new_mail |= matches!(
            response,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    new_mail
}

async fn read_greeting(
    client: &mut async_imap::Client<BoxedTransport>,
    server: &str,
    limit: Duration,
) -> Result<Option<String>, ImapError> {
    let greeting = tokio::time::timeout(limit, client.read_response())
        .await
        .map_err(|_| {
            transient(
                "connect",
                format!("{server} sent no greeting within {} s", limit.as_secs()),
            )
        })?
        .map_err(|e| {
            transient(
                "connect",
                format!("reading the greeting of {server} failed: {e}"),
            )
        })?
        .ok_or_else(|| {
            transient(
                "connect",
                format!("{server} closed the connection before greeting"),
            )
        })?;
    match greeting.parsed() {
        Response::Data {
            status: Status::Ok,
            outcome,
        } => Ok(outcome.information.as_deref().map(str::to_owned)),
        Response::Data {
            status: Status::Bye,
            outcome,
            ..
        } => Err(transient(
            "connect",
            format!(
                "{server} refused the connection: {}",
                outcome.information.as_deref().unwrap_or("BYE")
            ),
        )),
        other => Err(transient(
            "connect",
            format!("{server} sent an unexpected greeting: {other:?}"),
        )),
    }
}

async fn login(
    client: async_imap::Client<BoxedTransport>,
    settings: &ImapSettings,
    server: &str,
) -> Result<ImapSession, ImapError> {
    use async_imap::error::Error as E;
    let password = settings.password.expose();
    let attempt =
        tokio::time::timeout(settings.timeout, client.login(&settings.username, password))
            .await
            .map_err(|_| {
                transient(
                    "login",
                    format!(
                        "{server} did not answer the login within {} s",
                        settings.timeout.as_secs()
                    ),
                )
            })?;
    let error = match attempt {
        Ok(session) => return Ok(session),
        Err((error, _client)) => error,
    };
    let user = &settings.username;
    let error = match error {
        E::No(text) | E::Bad(text) => {
            let text = server_text(&text);
            let upper = text.to_ascii_uppercase();
            if upper.contains("[UNAVAILABLE]") || upper.contains("[INUSE]") {
                transient(
                    "login",
                    format!("{server} cannot log in `{user}` right now: {text}"),
                )
            } else if upper.contains("[PRIVACYREQUIRED]") {
                permanent(
                    "login",
                    format!(
                        "{server} refuses logins without TLS: {text}; use tls = \"implicit\" \
                         or \"starttls\""
                    ),
                )
            } else {
                permanent(
                    "login",
                    format!(
                        "{server} refused the login as `{user}`: {text}; check imap.username \
                         and the password"
                    ),
                )
            }
        }
        E::Validate(_) => permanent(
            "login",
            "the user name or the password contains a line break; check imap.username and \
             the password",
        ),
        other => from_imap("login", other),
    };
    Err(redact(error, password))
}

/// Makes sure a message never repeats the password, whatever the server echoed.
fn redact(mut error: ImapError, password: &str) -> ImapError {
    if !password.is_empty() && error.message.contains(password) {
        error.message = error.message.replace(password, "[redacted]");
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_name_runs_as_ranges() {
        assert_eq!(uid_set(&[]), "");
        assert_eq!(uid_set(&[7]), "7");
        assert_eq!(uid_set(&[9, 4, 5, 6, 6, 12, 13]), "4:6,9,12:13");
    }

    fn assert_send<T: Send>(_: &T) {}

    /// The daemon runs the source inside spawned tasks, so its futures must be `Send`.
    #[allow(dead_code)]
    fn source_futures_are_send(source: &mut ImapSource, settings: &ImapSettings) {
        assert_send(&ImapSource::connect(settings, "INBOX", &[]));
        assert_send(&source.wait(true, Duration::ZERO, Duration::ZERO, std::future::pending()));
        assert_send(&source.fetch(1, 1));
        assert_send(&source.move_to(1, "Processed"));
        assert_send(&source.list_uids());
    }

    #[test]
    fn a_password_echoed_by_the_server_is_redacted() {
        let error = redact(
            permanent("login", "bad credentials hunter2 for user"),
            "hunter2",
        );
        assert!(!error.message.contains("hunter2"), "{}", error.message);
    }
}

/// The result of [`ImapSource::fetch`].
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The message.
    Message(Fetched),
    /// Gone (another client moved or expunged it).
    Gone,
    /// Larger than the limit; the body was not read.
    TooLarge {
        /// Its `RFC822.SIZE`.
        size: usize,
    },
}
