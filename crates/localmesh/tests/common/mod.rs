//! Shared by the tests that start `localmesh up` with the real binaries.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HOST: &str = "sit-gateway.tcex.com.vn";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put localmesh, and so the service binaries of `cargo build --workspace`.
pub fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_localmesh"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    for b in ["product", "order", "payment", "frontend"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: run `cargo build --workspace` first (localmesh up starts the real binaries)",
            dir.join(b).display()
        );
    }
    dir
}

/// The port of an address such as `127.0.0.1:8443` in the ready line.
pub fn port_of(v: &serde_json::Value) -> u16 {
    v.as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// Starts `localmesh up` on ephemeral ports and waits for "localmesh is ready"; returns the child,
/// every (pod name, pid) it started (a pod restarted during start-up appears twice), and the
/// gateway and admin ports it bound (read from the ready line, so no port is guessed).
pub fn start_up(data: &Path) -> (Child, Vec<(String, i32)>, u16, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(["up", "--root"])
        .arg(root())
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--data-dir")
        .arg(data)
        .args(["--gateway-port", "0", "--admin-port", "0"])
        .args(["--ready-timeout-secs", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("localmesh starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    let (gw, admin) = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("localmesh printed 'localmesh is ready' within 25 s");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if v["message"] == "pod started" {
                let name = v["pod_name"].as_str().expect("pod_name").to_string();
                pids.push((name, v["pid"].as_i64().expect("pid") as i32));
            }
            if v["message"] == "localmesh is ready" {
                break (port_of(&v["gateway"]), port_of(&v["admin"]));
            }
        }
    };
    (child, pids, gw, admin)
}

/// SIGTERM to the localmesh this test started; waits up to 20 s for its exit.
pub fn stop(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: signalling the localmesh process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "localmesh exits after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Plain HTTP/1.1 GET to the admin port.
pub async fn admin_get(port: u16, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("admin");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
