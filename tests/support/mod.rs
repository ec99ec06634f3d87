//! Test harness: real servers on loopback (a private Dovecot, an SMTP sink), child
//! processes with their output in a log file, and waiting for a condition.
//!
//! Every server lives in its own directory (usually inside a [`TestDir`]), binds
//! 127.0.0.1 on a free port and is stopped by its PID when its handle is dropped, so
//! tests run in parallel. The servers come from `scripts/dovecot-instance` and
//! `scripts/smtp-sink`; `scripts/install-deps` installs what they need.
//!
//! `tests/tests.rs` declares it once for every scenario module; not every module uses
//! every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite};

/// The project's `scripts/` folder.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The `advisory-bridge` binary cargo built for this test run.
pub fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_advisory-bridge"))
}

/// Runs one of the project's scripts and returns its stdout; panics with its output when
/// it fails, because a test cannot go on without its servers.
pub fn run_script(script: &str, args: &[&OsStr]) -> String {
    let path = scripts_dir().join(script);
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    if !out.status.success() {
        panic!(
            "{} {:?} failed ({}); run scripts/install-deps if Dovecot or aiosmtpd is missing\n\
             stdout:\n{}\nstderr:\n{}",
            path.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a `KEY=VALUE` file as written by the scripts.
pub fn read_env_file(path: &Path) -> HashMap<String, String> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// A temporary directory that other users can traverse (mode 0755): Dovecot's login and
/// mail processes do not run as the test's user. Removed on drop unless
/// `ADVISORY_BRIDGE_KEEP_TEST_DIRS` is set, which helps when reading server logs.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// Creates a fresh directory under the system's temporary directory.
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("advisory-bridge-test-")
            .tempdir()
            .expect("the system temporary directory is writable");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("we own the directory we just created");
        let path = dir.path().to_owned();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("ADVISORY_BRIDGE_KEEP_TEST_DIRS").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping test directory {}", dir.keep().display());
        }
    }
}

/// True while `pid` runs; a zombie (exited but not reaped, which happens to daemons whose
/// parent is an init that does not reap) counts as gone.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, None | Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Sends a signal (`TERM`, `KILL`, ...) to a process by PID.
pub fn send_signal(pid: u32, signal: &str) {
    // `kill` from procps keeps the harness free of a libc dependency.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Sends SIGTERM to `pid` and waits until it is gone; SIGKILL after `grace`. Returns
/// false when the process had to be killed.
pub fn stop_pid(pid: u32, grace: Duration) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    send_signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !pid_alive(pid) {
        return true;
    }
    send_signal(pid, "KILL");
    while pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `condition` every 50 ms until it holds; panics with `what` once `deadline` has
/// passed. Use generous deadlines: they only bound a failing test.
pub fn wait_for(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] for conditions that need `.await`, such as reading a folder over IMAP.
pub async fn wait_for_async<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a future to completion on its own runtime in its own thread, so that blocking
/// tests (and [`wait_for`] conditions) can use the async IMAP helpers.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime can always be built")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A TLS client configuration (ring provider) trusting only the CA in `ca_file`.
pub fn rustls_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .unwrap_or_else(|e| panic!("cannot read test CA {}: {e}", ca_file.display()))
    {
        let cert = cert.unwrap_or_else(|e| panic!("bad PEM in {}: {e}", ca_file.display()));
        roots
            .add(cert)
            .unwrap_or_else(|e| panic!("bad CA certificate in {}: {e}", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------
// Dovecot

/// One mail account on a test Dovecot.
#[derive(Debug, Clone)]
pub struct MailUser {
    /// Login name (`security` or `reporter`).
    pub user: String,
    /// Its password.
    pub password: String,
    /// A file holding the password, for a daemon config's `password_file`.
    pub password_file: PathBuf,
    /// Its Maildir (INBOX), e.g. for delivering into it directly; empty on Cyrus.
    pub maildir: PathBuf,
}

/// Which IMAP server a test runs, and with which options of its instance script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `scripts/dovecot-instance start DIR ARGS` (`--capabilities "..."`,
    /// `--namespace-prefix P --separator S`); no arguments is the default Dovecot.
    Dovecot(Vec<String>),
    /// `scripts/cyrus-instance start DIR --namespace debian|alt [--idlepoll N]`.
    Cyrus {
        /// `debian` (`INBOX.` and `.`) or `alt` (`""` and `/`).
        namespace: &'static str,
        /// How often IDLE reports new mail; the script's default (60 s) when `None`.
        idlepoll: Option<u32>,
    },
    /// `scripts/courier-instance start DIR [--idle-timeout N]` (root only).
    Courier {
        /// How often IDLE looks for new mail; the script's default (60 s) when `None`.
        idle_timeout: Option<u32>,
    },
}

impl ServerKind {
    /// Dovecot as it is configured by default.
    pub fn dovecot() -> ServerKind {
        ServerKind::Dovecot(Vec::new())
    }

    fn script_and_args(&self) -> (&'static str, Vec<String>) {
        match self {
            ServerKind::Dovecot(args) => ("dovecot-instance", args.clone()),
            ServerKind::Cyrus {
                namespace,
                idlepoll,
            } => {
                let mut args = vec!["--namespace".to_owned(), namespace.to_string()];
                if let Some(n) = idlepoll {
                    args.extend(["--idlepoll".to_owned(), n.to_string()]);
                }
                ("cyrus-instance", args)
            }
            ServerKind::Courier { idle_timeout } => {
                let mut args = Vec::new();
                if let Some(n) = idle_timeout {
                    args.extend(["--idle-timeout".to_owned(), n.to_string()]);
                }
                ("courier-instance", args)
            }
        }
    }
}

/// The Dovecot harness is the general one started with [`ServerKind::dovecot`].
pub type Dovecot = ImapServer;

/// A private IMAP server on 127.0.0.1 (Dovecot, Cyrus or Courier), started by its
/// `scripts/*-instance` script and stopped by PID on drop.
///
/// It has two users, [`ImapServer::security`] (the watched mailbox) and
/// [`ImapServer::reporter`]; the plain port offers STARTTLS and also allows plaintext
/// login, the IMAPS port speaks TLS from the first byte. Certificates are signed by a test
/// CA ([`ImapServer::ca_file`]).
pub struct ImapServer {
    dir: PathBuf,
    kind: ServerKind,
    env: HashMap<String, String>,
    pid: Option<u32>,
    /// Courier's pid-namespace init (`DIR/ns-init.pid`), read at start: `Stack` removes
    /// DIR before its server is dropped.
    ns_init: Option<u32>,
}

impl ImapServer {
    /// Starts a default Dovecot living in `dir` (created when missing) and waits until it
    /// accepts connections.
    pub fn start(dir: &Path) -> ImapServer {
        ImapServer::start_kind(dir, ServerKind::dovecot())
    }

    /// Starts a server of `kind` living in `dir` and waits until it accepts connections.
    pub fn start_kind(dir: &Path, kind: ServerKind) -> ImapServer {
        let mut server = ImapServer {
            dir: dir.to_owned(),
            kind,
            env: HashMap::new(),
            pid: None,
            ns_init: None,
        };
        server.start_again();
        server
    }

    /// What this server is.
    pub fn kind(&self) -> &ServerKind {
        &self.kind
    }

    fn start_again(&mut self) {
        let (script, args) = self.kind.script_and_args();
        let mut all: Vec<&OsStr> = vec![OsStr::new("start"), self.dir.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        run_script(script, &all);
        self.env = read_env_file(&self.dir.join("env"));
        let pid = self
            .var("PID")
            .parse()
            .expect("the script writes a numeric PID");
        self.pid = Some(pid);
        self.ns_init = fs::read_to_string(self.dir.join("ns-init.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
    }

    /// The server's name for a folder the daemon's config names simply: under the
    /// personal namespace prefix (`INBOX.Processed` on Courier), `INBOX` as is.
    pub fn folder_name(&self, name: &str) -> String {
        let prefix = self
            .env
            .get("NAMESPACE_PREFIX")
            .cloned()
            .unwrap_or_default();
        if name.eq_ignore_ascii_case("INBOX") || name.starts_with(&prefix) {
            name.to_owned()
        } else {
            format!("{prefix}{name}")
        }
    }

    /// The hierarchy delimiter the server reports.
    pub fn delimiter(&self) -> String {
        self.env
            .get("DELIMITER")
            .cloned()
            .unwrap_or_else(|| ".".into())
    }

    /// Stops the server and starts it again on the same ports with the same users and
    /// mail, e.g. to see a client reconnect.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Stops the server (SIGTERM to the master, waiting until it is gone). Idempotent.
    /// For Courier the pid namespace's init (`DIR/ns-init.pid`) gets SIGTERM first: it
    /// ends the servers, and `unshare` (`PID`) exits with it; `unshare` itself waits out
    /// a SIGTERM.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            if let Some(init) = self.ns_init.take() {
                stop_pid(init, Duration::from_secs(20));
            }
            stop_pid(pid, Duration::from_secs(20));
        }
    }

    /// True while the master process runs.
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{} has no {key}", self.dir.join("env").display()))
    }

    /// The directory the instance lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plain IMAP port (STARTTLS offered, plaintext login allowed).
    pub fn imap_port(&self) -> u16 {
        self.var("IMAP_PORT")
            .parse()
            .expect("the script writes a numeric port")
    }

    /// The implicit-TLS IMAPS port.
    pub fn imaps_port(&self) -> u16 {
        self.var("IMAPS_PORT")
            .parse()
            .expect("the script writes a numeric port")
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("CA_FILE"))
    }

    /// The master process's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Dovecot's log, to show in a failing test's message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.var("LOG")).unwrap_or_default()
    }

    fn user(&self, prefix: &str) -> MailUser {
        MailUser {
            user: self.var(&format!("{prefix}_USER")).to_owned(),
            password: self.var(&format!("{prefix}_PASSWORD")).to_owned(),
            password_file: PathBuf::from(self.var(&format!("{prefix}_PASSWORD_FILE"))),
            // Cyrus keeps mail in its own store: no Maildir to name.
            maildir: self
                .env
                .get(&format!("{prefix}_MAILDIR"))
                .map(PathBuf::from)
                .unwrap_or_default(),
        }
    }

    /// The `security` user: the mailbox the daemon watches.
    pub fn security(&self) -> MailUser {
        self.user("SECURITY")
    }

    /// The `reporter` user: where copies of the daemon's replies can be delivered.
    pub fn reporter(&self) -> MailUser {
        self.user("REPORTER")
    }

    /// An IMAP client for `user` over `tls` (the IMAPS port for `Implicit`, the plain
    /// port otherwise).
    pub fn imap(&self, user: &MailUser, tls: ImapTls) -> ImapAccount {
        ImapAccount {
            port: match tls {
                ImapTls::Implicit => self.imaps_port(),
                ImapTls::Starttls | ImapTls::None => self.imap_port(),
            },
            tls,
            ca_file: self.ca_file(),
            user: user.user.clone(),
            password: user.password.clone(),
        }
    }

    /// The `security` user over IMAPS: what most tests need.
    pub fn security_imap(&self) -> ImapAccount {
        self.imap(&self.security(), ImapTls::Implicit)
    }

    /// The `reporter` user over IMAPS.
    pub fn reporter_imap(&self) -> ImapAccount {
        self.imap(&self.reporter(), ImapTls::Implicit)
    }

    fn login(&self, user: &str, password: &str) -> ImapAccount {
        ImapAccount {
            port: self.imaps_port(),
            tls: ImapTls::Implicit,
            ca_file: self.ca_file(),
            user: user.to_owned(),
            password: password.to_owned(),
        }
    }

    /// Appends `raw` to `mailbox` of `user` over IMAPS; see [`ImapAccount::append`].
    pub async fn append(&self, user: &str, password: &str, mailbox: &str, raw: &[u8]) {
        self.login(user, password).append(mailbox, raw).await
    }

    /// The messages in `folder` of `user` over IMAPS, empty when it does not exist; see
    /// [`ImapAccount::folder_messages`].
    pub async fn folder_messages(&self, user: &str, password: &str, folder: &str) -> Vec<Vec<u8>> {
        self.login(user, password).folder_messages(folder).await
    }

    /// Creates `folder` for `user` over IMAPS; see [`ImapAccount::create_folder`].
    pub async fn create_folder(&self, user: &str, password: &str, folder: &str) {
        self.login(user, password).create_folder(folder).await
    }
}

impl Drop for ImapServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for ImapServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapServer")
            .field("kind", &self.kind)
            .field("dir", &self.dir)
            .field("pid", &self.pid)
            .finish()
    }
}

/// How the test's IMAP client protects its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    /// TLS from the first byte, on the IMAPS port.
    Implicit,
    /// STARTTLS on the plain port.
    Starttls,
    /// Plaintext on the plain port (allowed on loopback).
    None,
}

/// Anything an IMAP session can run over: TCP or TLS over TCP.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + fmt::Debug> ImapStream for T {}

/// A logged-in IMAP session of the test's own client.
pub type ImapSession = async_imap::Session<Box<dyn ImapStream>>;

/// The test's own IMAP client for one user: independent of the daemon's IMAP code, so
/// tests can put mail in and look at folders.
#[derive(Debug, Clone)]
pub struct ImapAccount {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Connection protection.
    pub tls: ImapTls,
    /// The CA to trust.
    pub ca_file: PathBuf,
    /// Login name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl ImapAccount {
    async fn tls_wrap(&self, tcp: tokio::net::TcpStream) -> Box<dyn ImapStream> {
        let connector = tokio_rustls::TlsConnector::from(rustls_config(&self.ca_file));
        let name = rustls_pki_types::ServerName::try_from("localhost")
            .expect("localhost is a valid server name");
        let tls = connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake with 127.0.0.1:{} failed: {e}", self.port));
        Box::new(tls)
    }

    /// Connects and logs in; panics with the server's answer when that fails.
    pub async fn connect(&self) -> ImapSession {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to IMAP on 127.0.0.1:{}: {e}", self.port));
        let stream: Box<dyn ImapStream> = match self.tls {
            ImapTls::Implicit => self.tls_wrap(tcp).await,
            ImapTls::None => Box::new(tcp),
            ImapTls::Starttls => {
                let mut client = async_imap::Client::new(tcp);
                client
                    .read_response()
                    .await
                    .expect("IMAP greeting is readable")
                    .expect("the server greets before closing");
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .unwrap_or_else(|e| panic!("STARTTLS refused: {e}"));
                self.tls_wrap(client.into_inner()).await
            }
        };
        let mut client = async_imap::Client::new(stream);
        if self.tls != ImapTls::Starttls {
            client
                .read_response()
                .await
                .expect("IMAP greeting is readable")
                .expect("the server greets before closing");
        }
        client
            .login(&self.user, &self.password)
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("IMAP login as {} failed: {e}", self.user))
    }

    /// Appends a raw message to `mailbox` (which must exist; INBOX always does).
    pub async fn append(&self, mailbox: &str, raw: &[u8]) {
        let mut session = self.connect().await;
        session
            .append(mailbox, None, None, raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND to {mailbox} as {} failed: {e}", self.user));
        let _ = session.logout().await;
    }

    /// Creates a folder; an existing folder is fine.
    pub async fn create_folder(&self, folder: &str) {
        let mut session = self.connect().await;
        if !folder_exists(&mut session, folder).await {
            session
                .create(folder)
                .await
                .unwrap_or_else(|e| panic!("CREATE {folder} as {} failed: {e}", self.user));
        }
        let _ = session.logout().await;
    }

    /// The names of all folders of the user.
    pub async fn folders(&self) -> Vec<String> {
        let mut session = self.connect().await;
        let names: Vec<String> = session
            .list(Some(""), Some("*"))
            .await
            .expect("LIST is accepted")
            .map_ok(|name| name.name().to_owned())
            .try_collect()
            .await
            .expect("LIST answers are readable");
        let _ = session.logout().await;
        names
    }

    /// Moves the oldest message of `from` to `to` (UID MOVE), as a person does in a mail
    /// client: the server keeps the message's arrival time.
    pub async fn move_first(&self, from: &str, to: &str) {
        let mut session = self.connect().await;
        session
            .select(from)
            .await
            .unwrap_or_else(|e| panic!("SELECT {from} as {} failed: {e}", self.user));
        let uids = session.uid_search("ALL").await.expect("SEARCH is accepted");
        let first = uids.into_iter().min().expect("a message to move");
        session
            .uid_mv(first.to_string(), to)
            .await
            .unwrap_or_else(|e| panic!("MOVE to {to} failed: {e}"));
        let _ = session.logout().await;
    }

    /// Every message in `folder`, raw, in UID order; empty when the folder does not exist.
    /// Reads with `BODY.PEEK[]`, so flags stay as they were.
    pub async fn folder_messages(&self, folder: &str) -> Vec<Vec<u8>> {
        let mut session = self.connect().await;
        if !folder_exists(&mut session, folder).await {
            let _ = session.logout().await;
            return Vec::new();
        }
        let mailbox = session
            .examine(folder)
            .await
            .unwrap_or_else(|e| panic!("EXAMINE {folder} as {} failed: {e}", self.user));
        let mut messages = Vec::new();
        if mailbox.exists > 0 {
            let mut fetched: Vec<(u32, Vec<u8>)> = session
                .uid_fetch("1:*", "BODY.PEEK[]")
                .await
                .unwrap_or_else(|e| panic!("FETCH in {folder} failed: {e}"))
                .map_ok(|fetch| {
                    (
                        fetch.uid.unwrap_or(0),
                        fetch.body().unwrap_or_default().to_vec(),
                    )
                })
                .try_collect()
                .await
                .unwrap_or_else(|e| panic!("FETCH answers in {folder} unreadable: {e}"));
            fetched.sort_by_key(|(uid, _)| *uid);
            messages = fetched.into_iter().map(|(_, body)| body).collect();
        }
        let _ = session.logout().await;
        messages
    }
}

async fn folder_exists(session: &mut ImapSession, folder: &str) -> bool {
    let pattern = format!("\"{}\"", folder.replace('\\', "\\\\").replace('"', "\\\""));
    let names: Vec<String> = session
        .list(Some(""), Some(&pattern))
        .await
        .expect("LIST is accepted")
        .map_ok(|name| name.name().to_owned())
        .try_collect()
        .await
        .expect("LIST answers are readable");
    names.iter().any(|n| n == folder)
}

// ---------------------------------------------------------------------------------------
// SMTP sink

/// How the SMTP sink protects connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SinkTls {
    /// STARTTLS offered and required before MAIL.
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// Plaintext.
    #[default]
    None,
}

/// Credentials the sink requires (AUTH PLAIN or LOGIN).
#[derive(Debug, Clone)]
pub struct SinkAuth {
    /// Login name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// What kind of SMTP server the sink plays.
#[derive(Debug, Clone, Default)]
pub struct SmtpSinkOptions {
    /// Connection protection.
    pub tls: SinkTls,
    /// Required credentials; none means no AUTH.
    pub auth: Option<SinkAuth>,
    /// Also deliver a copy of each message into this Maildir (e.g.
    /// [`MailUser::maildir`] of Dovecot's reporter).
    pub deliver_maildir: Option<PathBuf>,
}

/// An SMTP server on 127.0.0.1 (`scripts/smtp-sink`, aiosmtpd) that keeps every message
/// it accepts; stopped by its PID on drop.
pub struct SmtpSink {
    dir: PathBuf,
    port: u16,
    pid: Option<u32>,
    options: SmtpSinkOptions,
}

impl SmtpSink {
    /// Starts a sink living in `dir` and waits until it accepts connections. With TLS,
    /// its certificate is signed by a test CA made in `dir/certs` ([`SmtpSink::ca_file`]).
    pub fn start(dir: &Path, options: SmtpSinkOptions) -> SmtpSink {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let tls = match options.tls {
            SinkTls::Starttls => "starttls",
            SinkTls::Implicit => "implicit",
            SinkTls::None => "none",
        };
        let mut args: Vec<std::ffi::OsString> =
            vec!["start".into(), dir.into(), "--tls".into(), tls.into()];
        if let Some(auth) = &options.auth {
            let file = dir.join("auth-password");
            fs::write(&file, &auth.password)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
            args.extend(["--auth-user".into(), auth.user.clone().into()]);
            args.extend(["--auth-password-file".into(), file.into()]);
        }
        if let Some(maildir) = &options.deliver_maildir {
            args.extend(["--deliver-maildir".into(), maildir.into()]);
        }
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let out = run_script("smtp-sink", &args);
        let port = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("smtp-sink printed `{}` instead of its port", out.trim()));
        let pid_text = fs::read_to_string(dir.join("pid")).expect("smtp-sink writes DIR/pid");
        let pid = pid_text
            .trim()
            .parse()
            .expect("smtp-sink writes a numeric PID");
        SmtpSink {
            dir: dir.to_owned(),
            port,
            pid: Some(pid),
            options,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The test CA that signed the sink's certificate; `None` without TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        (self.options.tls != SinkTls::None).then(|| self.dir.join("certs").join("ca.pem"))
    }

    /// The directory the sink lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options it was started with.
    pub fn options(&self) -> &SmtpSinkOptions {
        &self.options
    }

    /// Every message accepted so far, raw, in arrival order, each starting with the
    /// `X-Sink-Mail-From:` and `X-Sink-Rcpt-To:` lines that record the envelope. Panics
    /// when one failed the sink's strict parse ([`SmtpSink::assert_all_valid`]).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.assert_all_valid();
        let new = self.dir.join("new");
        let mut names: Vec<PathBuf> = match fs::read_dir(&new) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return Vec::new(),
        };
        names.sort();
        names
            .iter()
            .filter_map(|path| fs::read(path).ok())
            .collect()
    }

    /// Makes every following RCPT TO get `reply` (e.g. `451 Try again later`, `550 No
    /// such user`) instead of being accepted; `None` accepts again.
    pub fn set_fault(&self, reply: Option<&str>) {
        let path = self.dir.join("fault");
        match reply {
            Some(reply) => {
                let tmp = self.dir.join("fault.tmp");
                fs::write(&tmp, format!("{reply}\n"))
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
                fs::rename(&tmp, &path)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            }
            None => {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// The sink's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Why messages the sink accepted fail Python's `email.policy.strict` and the
    /// headers every message must carry (`scripts/smtp-sink`), one line each; empty when
    /// all passed.
    pub fn invalid(&self) -> String {
        fs::read_to_string(self.dir.join("invalid")).unwrap_or_default()
    }

    /// Panics, naming each message and its problems, when any message the sink accepted
    /// failed its strict parse. Called by [`SmtpSink::messages`] and on drop, so the test
    /// that sent such a message fails.
    pub fn assert_all_valid(&self) {
        let invalid = self.invalid();
        assert!(
            invalid.is_empty(),
            "the SMTP sink in {} received messages that fail email.policy.strict:\n{invalid}",
            self.dir.display()
        );
    }

    /// Stops the sink and waits until it is gone. Idempotent.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            stop_pid(pid, Duration::from_secs(10));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            self.assert_all_valid();
        }
    }
}

/// The value of a header in the first lines of a raw message (no unfolding): enough for
/// the sink's `X-Sink-*` envelope lines and simple checks.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    text.split("\r\n")
        .flat_map(|l| l.split('\n'))
        .take_while(|line| !line.is_empty())
        .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
        .map(|line| line[prefix.len()..].trim().to_owned())
}

// ---------------------------------------------------------------------------------------
// Processes

/// A child process whose stdout and stderr go to one log file; killed on drop.
pub struct Process {
    child: Child,
    name: String,
    log_path: PathBuf,
}

impl Process {
    /// Starts `program` with `args` and extra environment `env`, writing its output to
    /// `log_path`.
    pub fn spawn<I, S>(
        program: impl AsRef<Path>,
        args: I,
        env: &[(&str, &str)],
        log_path: &Path,
    ) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let log = fs::File::create(log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("a file handle can be duplicated");
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Process {
            child,
            name: program.display().to_string(),
            log_path: log_path.to_owned(),
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its exit status when it has exited, `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot poll {}: {e}", self.name))
    }

    /// True while it runs.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Kills it with SIGKILL, as a crash or power loss would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for it to exit (SIGKILL and a panic after 30 s); returns
    /// how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        send_signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "{} did not exit within 30 s of SIGTERM; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit by itself (e.g. `once`), up to `deadline`.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= end {
                self.kill();
                panic!(
                    "{} did not exit within {deadline:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
pub mod postgres;
pub mod proxy;
pub mod refusing;
pub mod stack;
