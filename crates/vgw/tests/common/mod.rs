//! Test harness: a real `vgw serve` in a temporary state directory, and the CLI run against it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn vgw_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vgw")
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    extra: Vec<String>,
}

impl Daemon {
    /// Starts a daemon in a fresh directory.
    pub fn start() -> (tempfile::TempDir, Self) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let daemon = Self::start_in(tmp.path(), &[]);
        (tmp, daemon)
    }

    /// Starts a daemon with its socket and state in `dir`, plus extra `serve` flags.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let mut d = Self {
            child: None,
            dir: dir.to_path_buf(),
            socket: dir.join("api.sock"),
            state_dir: dir.join("state"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// (Re)starts the process and waits, at most 15 s, for the socket to answer.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.join("serve.log")).expect("log file");
        let child = Command::new(vgw_bin())
            .arg("serve")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--api-socket")
            .arg(&self.socket)
            .args(["--dataplane", "off"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vgw serve");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "vgw serve did not open {} within 15 s; log: {}",
            self.socket.display(),
            self.log()
        );
    }

    /// The daemon's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL, no cleanup: a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Runs the CLI against this daemon.
    pub fn vgw(&self, args: &[&str]) -> Output {
        Command::new(vgw_bin())
            .args(args)
            .env("VGW_API_SOCKET", &self.socket)
            .env_remove("VGW_API_URL")
            .output()
            .expect("run vgw")
    }

    /// Runs the CLI, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vgw(args);
        assert!(
            out.status.success(),
            "vgw {:?} failed ({}):\n{}\n{}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs the CLI with JSON output and parses it.
    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("vgw {args:?}: not JSON ({e}): {text}"))
    }

    /// A raw HTTP/1.1 request over the socket; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http_unix(&self.socket, method, path, body, &[])
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole answer.
pub fn http_unix(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    http_exchange(&mut stream, method, path, body, headers)
}

/// The request/response exchange on any stream.
pub fn http_exchange<S: Read + Write>(
    stream: &mut S,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let _ = stream.write_all(req.as_bytes());
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            decode_chunked(body)
        } else {
            body.to_string()
        },
    )
}

fn decode_chunked(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
