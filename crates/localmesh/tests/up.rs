//! `localmesh up` end to end: the real binaries as child processes, the TLS gateway, the admin port,
//! and a SIGTERM that leaves no child behind.

use std::path::Path;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use proto::product::GetProductRequest;
use proto::product::product_service_client::ProductServiceClient;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tonic::transport::Channel;

mod common;

use common::HOST;

async fn get(client: &mut ProductServiceClient<Channel>, premium: bool) -> (String, String) {
    let mut req = tonic::Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    if premium {
        req.metadata_mut()
            .insert("user-type", "premium".parse().expect("ascii"));
    }
    let s = client
        .get_product(req)
        .await
        .expect("GetProduct through the gateway")
        .into_inner()
        .served_by
        .expect("served_by");
    (s.version, s.pod)
}

/// GET over HTTPS (HTTP/1.1) through the gateway; returns (status, body).
async fn https_get(port: u16, ca: &Path, path: &str) -> (u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("ca.crt") {
        roots.add(c.expect("cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(HOST).expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", format!("{HOST}:{port}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_suite_through_the_tls_gateway_and_stops_cleanly() {
    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = common::Up::start(data.path());
    let (pids, gw, admin) = (up.pods.clone(), up.gateway, up.admin);
    let pods: std::collections::BTreeSet<_> = pids.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(pods.len(), 7, "every replica started: {pids:?}");

    let ca = root.join("gateway/certs/ca.crt");
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, gw).await);
    let (_, pod) = get(&mut client, false).await;
    assert!(pod.starts_with("product-v"), "{pod}");
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..100 {
        versions.insert(get(&mut client, false).await.0);
    }
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), ["v1", "v2"]);
    for _ in 0..5 {
        assert_eq!(get(&mut client, true).await.0, "v2", "premium goes to v2");
    }

    let (status, body) = https_get(gw, &ca, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("frontend-"), "the served-by badge names a frontend pod");

    let (status, _) = https_get(gw, &ca, "/api/products/123").await;
    assert_eq!(status, 200, "frontend → sidecar → product");

    let stats = common::admin_get(admin, "/stats/prometheus").await;
    assert!(stats.contains("istio_requests_total"), "{stats}");
    let clusters = common::admin_get(admin, "/clusters").await;
    assert_eq!(clusters.matches("healthy").count(), 7, "{clusters}");

    let status = up.stop();
    assert!(status.success(), "exit 0 after SIGTERM: {status}");
    for (_, pid) in pids {
        // SAFETY: signal 0 only checks that the pid exists.
        let r = unsafe { libc::kill(pid, 0) };
        let gone = r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        assert!(gone, "child {pid} is gone after localmesh stopped");
    }
}

/// A `localmesh up` (the real binaries, every port free) whose stdout is a terminal: a
/// pseudo-terminal, as `make run` in a shell gives it. What it shows there is collected in
/// `screen` (line ends as written, `\n`), its stderr in `stderr`.
struct OnTerminal {
    child: std::process::Child,
    screen: Arc<std::sync::Mutex<Vec<u8>>>,
    stderr: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// Copies `from` into `to` until its end (a terminal's master reads EIO once no one holds it).
fn collect(mut from: impl std::io::Read + Send + 'static, to: Arc<std::sync::Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            to.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
}

impl OnTerminal {
    /// Starts it with `flags`; with `terminal` false, stdout is a pipe instead.
    fn start(data: &Path, flags: &[&str], terminal: bool) -> OnTerminal {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_localmesh"));
        cmd.args(["up", "--root"])
            .arg(common::root())
            .arg("--bin-dir")
            .arg(common::bin_dir())
            .arg("--data-dir")
            .arg(data)
            .args([
                "--gateway-port",
                "0",
                "--admin-port",
                "0",
                "--console-port",
                "0",
                "--otlp-port",
                "0",
            ])
            .args(["--ready-timeout-secs", "20"])
            .args(flags)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        let screen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let child = if terminal {
            let (mut master, mut slave) = (0, 0);
            // SAFETY: openpty writes two new descriptors into the locals; no name, termios or
            // window size is passed.
            let r = unsafe {
                libc::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors are new and owned here alone.
            let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
            for fd in [&master, &slave] {
                // SAFETY: setting close-on-exec on a descriptor owned here, so that neither
                // localmesh's pods nor localmesh itself keep a copy of it (only its stdout).
                unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
            }
            cmd.stdout(Stdio::from(slave));
            let child = cmd.spawn().expect("localmesh up starts");
            // The slave is closed here (the Command held it): the master reads to its end when
            // localmesh has exited.
            drop(cmd);
            collect(std::fs::File::from(master), screen.clone());
            child
        } else {
            cmd.stdout(Stdio::piped());
            let mut child = cmd.spawn().expect("localmesh up starts");
            collect(child.stdout.take().expect("stdout"), screen.clone());
            child
        };
        let mut up = OnTerminal {
            child,
            screen,
            stderr: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        collect(up.child.stderr.take().expect("stderr"), up.stderr.clone());
        up
    }

    /// What it has shown, once it holds `needle` (waits up to 30 s); a terminal's `\r\n` as `\n`.
    fn shown(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = String::from_utf8_lossy(&self.screen.lock().expect("lock")).replace("\r\n", "\n");
            if text.contains(needle) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "localmesh up showed {needle:?}: {text}\nstderr: {}",
                String::from_utf8_lossy(&self.stderr.lock().expect("lock"))
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM; its exit status (within 20 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling the localmesh process this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "localmesh exits after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            // SAFETY: signalling the localmesh process this test started.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_secs(15) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// On a terminal (`make run`), a person sees first where everything is and what to try, then a
/// line per kind of difference from the cluster, naming `localmesh lint` for the detail; the JSON
/// log lines (the findings among them) are in `<data-dir>/logs/localmesh.log`, which it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_up_shows_the_addresses_then_a_line_per_kind_not_emulated_and_logs_to_a_file() {
    let root = common::root();
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = OnTerminal::start(data.path(), &[], true);
    let findings = localmesh::load(&root).expect("the repo's manifests").not_emulated;
    let lint = format!("{} lint --root {}", env!("CARGO_BIN_EXE_localmesh"), root.display());
    let summary = localmesh::unsupported::summary(&findings, &lint);
    let text = up.shown(&summary);

    // Nothing for a program: no JSON line on the terminal.
    assert!(!text.lines().any(|l| l.trim_start().starts_with('{')), "{text}");
    // The addresses and the commands first, then the summary, in that order.
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} is shown: {text}"))
    };
    let order = [
        at("Starting 7 pods"),
        at("localmesh is up: the TLS gateway on 127.0.0.1:"),
        at("Try (the gateway only speaks TLS"),
        at("Ctrl-C stops everything"),
        at("Not emulated locally, by kind"),
    ];
    assert!(order.is_sorted(), "{order:?}: {text}");
    // A line per kind, far fewer than the findings, and the last thing shown.
    let groups = localmesh::unsupported::groups(&findings);
    let tail: Vec<&str> = text[order[4]..].lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(tail.len(), groups.len(), "{text}");
    assert!(groups.len() < findings.len() / 2, "{groups:?}");
    let policies: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter(|n| n.kind() == "AuthorizationPolicy")
        .map(|n| n.object.as_str())
        .collect();
    let line = format!("  AuthorizationPolicy ({} objects): not enforced", policies.len());
    assert!(tail[0].starts_with("  mTLS ("), "{text}");
    assert!(tail[1].starts_with(&line), "{text}");
    assert!(text.contains(&format!("`{lint}` lists each")), "{text}");

    // The JSON log lines are in the file it names, every finding among them.
    let log = data.path().join("logs/localmesh.log");
    assert!(
        text.contains(&format!("localmesh's log: {} (JSON lines", log.display())),
        "{text}"
    );
    // (Its writer thread may be a moment behind the terminal.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let (lines, ready) = loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .expect("localmesh.log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSON line ({e}): {l}")))
            .collect();
        if let Some(ready) = lines.iter().find(|v| v["message"] == "localmesh is ready").cloned() {
            break (lines, ready);
        }
        assert!(std::time::Instant::now() < deadline, "the ready line in the log file");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let logged = lines.iter().filter(|v| v["message"] == "not emulated locally").count();
    assert_eq!(logged, findings.len());
    // And the suite answers through the gateway it named.
    let gw = common::port_of(&ready["gateway"]);
    assert!(text.contains(&format!("the TLS gateway on 127.0.0.1:{gw}")), "{text}");
    let mut client = ProductServiceClient::new(common::gateway_channel(&root, gw).await);
    let (_, pod) = get(&mut client, false).await;
    assert!(pod.starts_with("product-v"), "{pod}");

    let status = up.stop();
    assert!(status.success(), "exit 0 after SIGTERM: {status}");
    assert!(up.shown("Stopped.").ends_with("Stopped.\n"));
    let stderr = String::from_utf8_lossy(&up.stderr.lock().expect("lock")).into_owned();
    assert!(!stderr.contains("{\""), "no JSON on stderr either: {stderr}");
}

/// `--output json` keeps the JSON log lines on a terminal's stdout as in a pipe's, and
/// `--output human` shows the person's text in a pipe too.
#[test]
fn output_json_and_human_choose_what_stdout_shows_whatever_it_is() {
    let data = tempfile::tempdir().expect("tempdir");
    let up = OnTerminal::start(data.path(), &["--output", "json"], true);
    let text = up.shown(r#""message":"not emulated locally""#);
    assert!(text.starts_with('{'), "JSON from the first line: {text}");
    drop(up);
    assert!(
        !data.path().join("logs/localmesh.log").exists(),
        "no log file with --output json"
    );

    let data = tempfile::tempdir().expect("tempdir");
    let up = OnTerminal::start(data.path(), &["--output", "human"], false);
    let text = up.shown("\n");
    assert!(text.starts_with("Starting 7 pods"), "{text}");
    drop(up);
    let log = std::fs::read_to_string(data.path().join("logs/localmesh.log")).expect("localmesh.log");
    assert!(log.contains(r#""message":"not emulated locally""#), "{log}");
}

/// The tokio worker threads of a process (named `tokio-rt-worker`).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tokio-rt-worker")
        .count()
}

/// `--concurrency N` runs the gateway and sidecars on N worker threads, as Envoy's flag does;
/// a value out of range is refused naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_sets_the_proxy_worker_threads() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = common::Up::start_on(data.path(), &common::root(), &[], &[("--concurrency", "1")]);
    let mut client = ProductServiceClient::new(common::gateway_channel(&up.root, up.gateway).await);
    let (version, _) = get(&mut client, false).await;
    assert!(!version.is_empty(), "the gateway answers on one worker thread");
    assert_eq!(worker_threads(up.pid()), 1, "--concurrency 1: one worker thread");
    up.stop();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_localmesh"))
        .args(["up", "--concurrency", "5000"])
        .output()
        .expect("localmesh runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--concurrency"), "{err}");
}
