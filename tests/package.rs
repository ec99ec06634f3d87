//! The Debian package as `cargo deb` builds it (README "Deploy"): built from the debug
//! binary this test run already has, unpacked with `dpkg-deb` into a scratch root, its
//! files, owners, modes, conffiles and maintainer scripts checked, and the unpacked
//! binary run against the test stack; and the unit's hardening score.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::stack::Stack;
use crate::support::{TestDir, daemon_binary};

/// Runs `command`, panics with its output unless it succeeds, returns its stdout.
fn run(command: &mut Command) -> String {
    let out: Output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}); scripts/install-deps installs cargo-deb\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `out` with `cargo deb`, without building anything: the
/// binary is the one cargo built for this test run (its target directory, dev profile).
fn build_package(out: &Path) -> PathBuf {
    let binary = daemon_binary();
    let target_dir = binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in TARGET/debug/");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["deb", "--no-build", "--profile", "dev", "--fast", "--quiet"])
        .arg("--output")
        .arg(out));
    let debs: Vec<PathBuf> = fs::read_dir(out)
        .expect("cargo deb made its output directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one package: {debs:?}");
    debs.into_iter().next().unwrap()
}

/// `dpkg-deb -c`: each path (without the leading `.`) with its mode string and owner.
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "a dpkg-deb -c line: {line}");
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            (
                path.to_owned(),
                (fields[0].to_owned(), fields[1].to_owned()),
            )
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs a maintainer script as dpkg would for `args`, with its absolute paths moved under
/// `root` and every command it would run on the system (`install`, `systemctl`,
/// `deb-systemd-helper`, `deb-systemd-invoke`) replaced by one that logs its arguments;
/// systemd counts as running, the unit as never installed before. Returns the log.
fn run_maintainer_script(script: &str, root: &Path, args: &[&str]) -> String {
    let bin = root.join("stub-bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    let log = root.join("calls.log");
    for name in [
        "install",
        "systemctl",
        "deb-systemd-helper",
        "deb-systemd-invoke",
    ] {
        // A fresh install: the unit was never installed; was-enabled says yes by default.
        let exit = if name == "deb-systemd-helper" {
            "case \"$*\" in *debian-installed*) exit 1;; esac\n"
        } else {
            ""
        };
        let stub = bin.join(name);
        fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{exit}exit 0\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let root_text = root.display().to_string();
    let moved = script
        .replace("/run/systemd/", &format!("{root_text}/run/systemd/"))
        .replace("/etc/", &format!("{root_text}/etc/"))
        .replace(
            "/usr/bin/deb-systemd-helper",
            &format!("{root_text}/stub-bin/deb-systemd-helper"),
        );
    let path = root.join("script");
    fs::write(&path, moved).unwrap();
    let path_var = format!("{}:/usr/bin:/bin", bin.display());
    run(Command::new("sh")
        .arg(&path)
        .args(args)
        .env("PATH", path_var));
    fs::read_to_string(&log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_the_binary_unit_and_config_and_starts_nothing() {
    let scratch = TestDir::new();
    let deb = build_package(&scratch.join("out"));

    // Every file belongs to root, with the modes README "Deploy" promises.
    let files = contents(&deb);
    for (path, (_, owner)) in &files {
        assert_eq!(owner, "0/0", "{path} is owned by root:root");
    }
    let expect = [
        ("/usr/bin/advisory-bridge", "-rwxr-xr-x"),
        (
            "/usr/lib/systemd/system/advisory-bridge.service",
            "-rw-r--r--",
        ),
        ("/etc/advisory-bridge/config.toml", "-rw-r--r--"),
        ("/usr/share/doc/advisory-bridge/README.md", "-rw-r--r--"),
        (
            "/usr/share/doc/advisory-bridge/config.example.toml",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/advisory-bridge/copyright", "-rw-r--r--"),
    ];
    for (path, want) in expect {
        let (got, _) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} is in the package: {files:#?}"));
        assert_eq!(got, want, "the mode of {path}");
    }
    assert!(
        !files.keys().any(|p| p.starts_with("/var")),
        "systemd makes the state directory (StateDirectory=), not the package: {files:#?}"
    );

    let root = scratch.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let control = scratch.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));

    assert_eq!(
        fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/advisory-bridge/config.toml\n",
        "the config, and only it, is a conffile: an upgrade keeps ops' edits"
    );
    let example = fs::read(repo.join("config.example.toml")).unwrap();
    assert_eq!(
        fs::read(root.join("etc/advisory-bridge/config.toml")).unwrap(),
        example
    );
    assert_eq!(
        fs::read(root.join("usr/share/doc/advisory-bridge/config.example.toml")).unwrap(),
        example
    );
    assert_eq!(mode(&root.join("usr/bin/advisory-bridge")), 0o755);
    assert_eq!(mode(&root.join("etc/advisory-bridge/config.toml")), 0o644);

    // The packaged unit is the repository's, and runs the packaged binary.
    let unit_path = root.join("usr/lib/systemd/system/advisory-bridge.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    assert_eq!(
        unit,
        fs::read_to_string(repo.join("systemd/advisory-bridge.service")).unwrap()
    );
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart=");
    assert_eq!(
        exec_start.split_whitespace().next(),
        Some("/usr/bin/advisory-bridge"),
        "{exec_start}"
    );
    assert!(
        exec_start.contains("--config /etc/advisory-bridge/config.toml"),
        "{exec_start}"
    );

    // Installing makes the credentials folder, 0700 root, and neither enables nor starts
    // the service: it cannot work with the example config.
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    let calls = run_maintainer_script(&postinst, &scratch.join("install"), &["configure"]);
    assert!(
        calls.lines().any(|l| l
            == format!(
                "install -d -m 0700 -o root -g root {}/etc/advisory-bridge/credentials",
                scratch.join("install").display()
            )),
        "{calls}"
    );
    assert!(
        !calls.lines().any(|l| l.starts_with("deb-systemd-invoke")
            || l.starts_with("deb-systemd-helper enable")
            || l.starts_with("systemctl enable")
            || l.starts_with("systemctl start")),
        "a fresh install starts and enables nothing:\n{calls}"
    );
    assert!(
        calls.contains("systemctl --system daemon-reload"),
        "systemd learns of the unit:\n{calls}"
    );
    // An upgrade restarts only a service that runs (try-restart).
    let calls = run_maintainer_script(
        &postinst,
        &scratch.join("upgrade"),
        &["configure", "0.0.1-1"],
    );
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("deb-systemd-invoke") && !l.contains("try-restart")),
        "{calls}"
    );

    // The unpacked binary is the one this run built, and reaches every server.
    let binary = root.join("usr/bin/advisory-bridge");
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(version, run(Command::new(daemon_binary()).arg("--version")));
    assert!(version.starts_with("advisory-bridge "), "{version}");

    let mut stack = Stack::start().await;
    let mut check = stack.daemon_from(&binary, &["check"], "info");
    let status = check.wait(Duration::from_secs(120));
    let log = check.log();
    assert!(status.success(), "check failed: {status:?}\n{log}");
    for line in ["ok      IMAP", "ok      SMTP", "ok      GitHub pallets:"] {
        assert!(log.contains(line), "no `{line}` in:\n{log}");
    }
}

/// Whether `address` is in `cidr` (`ADDRESS/PREFIX`, IPv4 or IPv6).
fn in_network(address: IpAddr, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').expect("ADDRESS/PREFIX");
    let net: IpAddr = net.parse().expect("an IP address");
    let prefix: u32 = prefix.parse().expect("a prefix length");
    let (a, n, bits) = match (address, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a).into(), u32::from(n).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (bits - prefix)
    };
    let mask = mask
        & if bits == 32 {
            u32::MAX.into()
        } else {
            u128::MAX
        };
    a & mask == n & mask
}

#[test]
fn the_unit_scores_at_most_1_0_and_still_lets_the_daemon_reach_any_server() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/advisory-bridge.service");
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let score: f64 = out
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for advisory-bridge.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{out}"));
    assert!(score <= 1.0, "exposure {score} > 1.0:\n{out}");

    // The IP allow list keeps every unicast address the daemon may need: loopback (the
    // metrics port, test servers), link-local (AWS's DNS), private and public servers.
    let text = fs::read_to_string(&unit).unwrap();
    assert!(text.lines().any(|l| l == "IPAddressDeny=any"), "{text}");
    let allowed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("IPAddressAllow="))
        .flat_map(str::split_whitespace)
        .collect();
    let reachable = |a: &str| {
        let a: IpAddr = a.parse().unwrap();
        allowed.iter().any(|cidr| in_network(a, cidr))
    };
    for address in [
        "127.0.0.1",
        "::1",
        "169.254.169.253",
        "fe80::1",
        "10.1.2.3",
        "192.168.0.1",
        "140.82.112.3",
        "2606:50c0:8000::153",
        "fd00::1",
        "8.8.8.8",
        "223.255.255.255",
    ] {
        assert!(reachable(address), "{address} is denied by {allowed:?}");
    }
    for address in ["224.0.0.251", "255.255.255.255", "ff02::fb"] {
        assert!(!reachable(address), "{address} (not unicast) is allowed");
    }
}
