//! Test support for unit tests: one private PostgreSQL cluster per test process
//! (`scripts/postgres-instance`, stopped and removed when the process ends), and one
//! schema in it per test journal, so tests on the PostgreSQL backend run in parallel.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use super::PgTarget;

/// Where the cluster of this test process listens.
struct Cluster {
    port: u16,
    password: String,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn start_cluster() -> Result<Cluster, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ab-unit-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    // The cluster runs as `postgres` when the tests run as root. The script's reaper
    // stops it and removes the whole directory once this process is gone.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-instance");
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(&dir)
        .arg("--stop-with")
        .arg(std::process::id().to_string())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/postgres-instance failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let env = std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?;
    let vars: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    Ok(Cluster {
        port: vars
            .get("PORT")
            .and_then(|p| p.parse().ok())
            .ok_or("no PORT")?,
        password: vars.get("PASSWORD").ok_or("no PASSWORD")?.to_string(),
    })
}

/// True when the engine tests should run on PostgreSQL
/// (`ADVISORY_BRIDGE_TEST_JOURNAL=postgres`, as `scripts/test` sets for its second run).
pub fn postgres_requested() -> bool {
    std::env::var("ADVISORY_BRIDGE_TEST_JOURNAL").is_ok_and(|v| v == "postgres")
}

/// A journal target in this process's cluster: the schema named after `key` (created
/// when missing), so the same key (a test's state directory) reopens the same journal.
pub fn pg_target(key: &str) -> PgTarget {
    use sha2::Digest;
    let cluster = CLUSTER
        .get_or_init(start_cluster)
        .as_ref()
        .unwrap_or_else(|e| panic!("a private PostgreSQL cluster for the tests: {e}"));
    let schema = format!(
        "t_{}",
        &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..20]
    );
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(cluster.port)
        .user("bridge")
        .password(&cluster.password)
        .dbname("journal")
        .ssl_mode(postgres::config::SslMode::Disable);
    // The synchronous client runs its own runtime: not on a test's runtime thread.
    let (admin, create) = (
        config.clone(),
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
    );
    std::thread::spawn(move || {
        let mut client = admin
            .connect(postgres::NoTls)
            .expect("connect to the test cluster");
        client
            .batch_execute(&create)
            .expect("create the test schema");
    })
    .join()
    .expect("the schema is created");
    config.options(&format!("-c search_path={schema}"));
    PgTarget {
        config,
        tls: None,
        display: format!(
            "postgres://bridge@127.0.0.1:{}/journal ({schema})",
            cluster.port
        ),
    }
}
