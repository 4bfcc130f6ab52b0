//! Starts a moto server (the AWS API emulator) on a free 127.0.0.1 port for a test, and stops it.
//!
//! moto is located through its `moto_server` script: `$RIVULET_MOTO_SERVER`, else `moto_server` on
//! `PATH`. When it cannot be found, tests that need it are skipped — unless `RIVULET_REQUIRE_MOTO=1`
//! or `CI` is set, in which case they fail: CI must never pass by skipping.
//!
//! The server is not started through that script but through `moto_server.py` next to this file,
//! run by the Python interpreter installed beside `moto_server` (the same virtualenv). It patches
//! moto's Kinesis resharding to behave like the real service (see the script's header).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server, stopped on drop.
pub(crate) struct MotoServer {
    child: Child,
    port: u16,
}

fn required() -> bool {
    std::env::var("RIVULET_REQUIRE_MOTO").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// The launcher that patches moto before running its server.
const LAUNCHER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/integration/support/moto_server.py"
);

fn find_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RIVULET_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("moto_server"))
        .find(|p| p.is_file())
}

/// The Python interpreter installed beside the `moto_server` script (the one that has moto), else
/// `python3` from `PATH`.
fn python_for(moto_server: &Path) -> PathBuf {
    moto_server
        .parent()
        .into_iter()
        .flat_map(|dir| [dir.join("python"), dir.join("python3")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Sends one HTTP request to 127.0.0.1:`port` and returns the status code.
pub(crate) fn http_status(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}

impl MotoServer {
    /// Starts a server, or returns `None` (test skipped) when moto is not installed and not required.
    pub(crate) fn start() -> Option<Self> {
        let Some(bin) = find_binary() else {
            assert!(
                !required(),
                "moto_server not found (set RIVULET_MOTO_SERVER or put it on PATH); it is required here"
            );
            eprintln!("skipping: moto_server not found");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let python = python_for(&bin);
        let child = Command::new(&python)
            .args([LAUNCHER, "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {LAUNCHER}: {e}", python.display()));
        let mut server = MotoServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(port, "GET", "/moto-api/").is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "{} {LAUNCHER} exited before answering ({status})",
                    python.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(server)
    }

    /// The endpoint URL to give AWS clients.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Wipes all emulated state.
    pub(crate) fn reset(&self) {
        let status = http_status(self.port, "POST", "/moto-api/reset").expect("reset moto");
        assert_eq!(status, 200, "moto reset answered {status}");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn moto_starts_answers_and_stops() {
    let Some(server) = MotoServer::start() else {
        return;
    };
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    server.reset();
    let port = server.port();
    drop(server);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        http_status(port, "GET", "/moto-api/").is_err(),
        "moto_server still answers after the helper stopped it"
    );
}
