//! A private PostgreSQL cluster for end-to-end tests: `scripts/postgres-instance` in a
//! test directory (initdb, 127.0.0.1, a free port, SCRAM password, TLS with a test CA),
//! stopped by its postmaster's PID on drop.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{pid_alive, read_env_file, run_script, send_signal};

/// A running private cluster.
pub struct PostgresServer {
    dir: PathBuf,
    env: HashMap<String, String>,
    pid: Option<u32>,
}

impl PostgresServer {
    /// Starts a cluster living in `dir` (created on first start) and waits until it
    /// accepts connections.
    pub fn start(dir: &Path) -> PostgresServer {
        let mut server = PostgresServer {
            dir: dir.to_owned(),
            env: HashMap::new(),
            pid: None,
        };
        server.start_again();
        server
    }

    /// Starts it again after [`PostgresServer::stop`] or [`PostgresServer::kill`]: same
    /// port, same data.
    pub fn start_again(&mut self) {
        run_script(
            "postgres-instance",
            &[OsStr::new("start"), self.dir.as_os_str()],
        );
        self.env = read_env_file(&self.dir.join("env"));
        self.pid = Some(self.var("PID").parse().expect("a numeric PID"));
    }

    /// A fast shutdown (SIGINT to the postmaster by PID: clients are disconnected),
    /// waiting until it is gone. Idempotent.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            send_signal(pid, "INT");
            let deadline = Instant::now() + Duration::from_secs(30);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(pid) {
                send_signal(pid, "KILL");
            }
        }
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{} has no {key}", self.dir.join("env").display()))
    }

    /// `postgres://USER@127.0.0.1:PORT/DATABASE` (no password).
    pub fn url(&self) -> &str {
        self.var("URL")
    }

    /// The file holding the user's password.
    pub fn password_file(&self) -> PathBuf {
        PathBuf::from(self.var("PASSWORD_FILE"))
    }

    /// The test CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.var("CA_FILE"))
    }

    /// The `[journal]` section pointing a daemon at this cluster over TLS.
    pub fn journal_section(&self, lease_secs: u64) -> String {
        format!(
            "\n[journal]\nurl = \"{}\"\npassword_file = \"{}\"\ntls = \"require\"\nca_file = \"{}\"\nlease_secs = {lease_secs}\n",
            self.url(),
            self.password_file().display(),
            self.ca_file().display()
        )
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.var("LOG")).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
