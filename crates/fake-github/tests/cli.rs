//! The `fake-github` binary as the dev stack runs it: port file, loopback only, SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for_port_file(path: &std::path::Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(port) = text.trim().parse()
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no port file at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_binary_writes_its_port_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("fake-github.port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-github"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t0k",
            "--repo",
            "pallets/flask",
        ])
        .arg("--port-file")
        .arg(&port_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = wait_for_port_file(&port_file);
    assert!(port > 0);

    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /repos/pallets/flask/security-advisories HTTP/1.1\r\nhost: x\r\nauthorization: token t0k\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[]"), "{answer}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("security-advisories"),
        "requests are logged: {log}"
    );
}

#[test]
fn the_binary_refuses_a_non_loopback_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_fake-github"))
        .args(["--listen", "0.0.0.0:0", "--token", "t", "--repo", "o/r"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
