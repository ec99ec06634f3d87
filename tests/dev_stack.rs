//! `scripts/dev-stack`, the one-command local stack README starts with: it finds its
//! binaries in cargo's real target directory (here one named by `CARGO_TARGET_DIR`, as on
//! a machine with a shared target dir), starts Dovecot, the SMTP sink and the fake
//! GitHub, takes a message, and stops everything it started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(str::to_owned))
        .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The PIDs `dev-stack` names in its output (`dovecot     pid 123  ...`).
fn named_pids(text: &str) -> Vec<u32> {
    text.split(" pid ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// `dev-stack status` as it is now, before anything is started.
fn stack_status(root: &Path) -> (bool, String) {
    let out = Command::new(root.join("scripts/dev-stack"))
        .arg("status")
        .current_dir(root)
        .output()
        .expect("dev-stack runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn dev_stack_follows_cargo_target_dir_and_stops_what_it_started() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = root.join("dev/run");
    let (_, status) = stack_status(&root);
    if named_pids(&status).into_iter().any(alive) {
        eprintln!(
            "a dev stack of someone's is running in {}: not touched",
            run.display()
        );
        return;
    }
    // Another target directory that holds the suite's own debug build (through a link),
    // so `dev-stack` must ask cargo where the builds are, and nothing is rebuilt.
    let debug = Path::new(env!("CARGO_BIN_EXE_advisory-bridge"))
        .parent()
        .expect("the binary's folder")
        .to_owned();
    let target = tempfile::tempdir().expect("a temporary target dir");
    std::os::unix::fs::symlink(&debug, target.path().join("debug")).expect("link");
    let stack = |args: &[&str]| {
        let out = Command::new(root.join("scripts/dev-stack"))
            .args(args)
            .env("CARGO_TARGET_DIR", target.path())
            .env("DEV_STACK_PROFILE", "dev")
            .current_dir(&root)
            .output()
            .expect("dev-stack runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, up) = stack(&["up"]);
    let started = named_pids(&up);
    let result = std::panic::catch_unwind(|| {
        assert!(ok, "dev-stack up failed:\n{up}");
        assert_eq!(
            started.len(),
            3,
            "Dovecot, the sink and the fake GitHub:\n{up}"
        );
        assert!(up.contains("fake-github pid"), "{up}");
        assert!(
            std::fs::read_to_string(run.join("config.toml"))
                .is_ok_and(|c| c.contains("api_url = \"http://127.0.0.1:")),
            "a config for the daemon"
        );
        let fixture = root.join("tests/fixtures/plain-werkzeug.eml");
        let (ok, sent) = stack(&["send", fixture.to_str().expect("UTF-8 path")]);
        assert!(ok && sent.contains("APPENDUID"), "{sent}");
    });
    let (ok, down) = stack(&["down"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert!(ok, "dev-stack down failed:\n{down}");
    assert!(
        !started.iter().any(|p| alive(*p)),
        "dev-stack down left processes running: {started:?}"
    );
}
