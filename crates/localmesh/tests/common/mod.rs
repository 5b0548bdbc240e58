//! Shared by the tests that start `localmesh up` with the real binaries.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HOST: &str = "sit-gateway.tcex.com.vn";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A TLS client that trusts the CA in the PEM file `ca` and offers `alpn`.
pub fn tls_client(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let ca = std::fs::read(ca).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
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

/// A running `localmesh up` on ephemeral ports, stopped with SIGTERM (then SIGKILL) when dropped,
/// even after a failed assert.
pub struct Up {
    child: Child,
    /// Its JSON log lines after "localmesh is ready".
    pub lines: Receiver<serde_json::Value>,
    /// Every (pod name, pid) started before it was ready (a pod restarted meanwhile appears twice).
    pub pods: Vec<(String, i32)>,
    /// The gateway, admin and console ports it bound (read from the ready line, so no port is
    /// guessed).
    pub gateway: u16,
    pub admin: u16,
    pub console: u16,
    /// The repository root it serves (the CA is under `gateway/certs`).
    pub root: PathBuf,
    /// What it printed for a person (not the JSON log lines).
    text: Arc<Mutex<String>>,
}

impl Up {
    /// Starts it with the real service binaries and waits for "localmesh is ready".
    pub fn start(data: &Path) -> Up {
        Up::start_with(data, &root(), &[])
    }

    /// [`Up::start`] over the manifests under `root`, with extra environment (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; without it, spans stay in localmesh's store).
    pub fn start_with(data: &Path, root: &Path, env: &[(&str, &str)]) -> Up {
        Up::start_on(data, root, env, &[])
    }

    /// [`Up::start_with`] with some ports (or other flags) set: `("--gateway-port", "8443")`.
    pub fn start_on(data: &Path, root: &Path, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Up {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_localmesh"));
        cmd.args(["up", "--root"])
            .arg(root)
            .arg("--bin-dir")
            .arg(bin_dir())
            .arg("--data-dir")
            .arg(data);
        for port in ["--gateway-port", "--admin-port", "--console-port", "--otlp-port"] {
            if !flags.iter().any(|(f, _)| *f == port) {
                cmd.args([port, "0"]);
            }
        }
        for (f, v) in flags {
            cmd.args([f, v]);
        }
        cmd.args(["--ready-timeout-secs", "20"])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("localmesh up starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        let text = Arc::new(Mutex::new(String::new()));
        let printed = text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        let mut t = printed.lock().expect("lock");
                        t.push_str(&line);
                        t.push('\n');
                    }
                }
            }
        });
        let mut up = Up {
            child,
            lines,
            text,
            pods: Vec::new(),
            gateway: 0,
            admin: 0,
            console: 0,
            root: root.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(25);
        loop {
            let v = up
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("localmesh printed 'localmesh is ready' within 25 s");
            if v["message"] == "pod started" {
                let name = v["pod_name"].as_str().expect("pod_name").to_string();
                up.pods.push((name, v["pid"].as_i64().expect("pid") as i32));
            }
            if v["message"] == "localmesh is ready" {
                up.gateway = port_of(&v["gateway"]);
                up.admin = port_of(&v["admin"]);
                up.console = port_of(&v["console"]);
                return up;
            }
        }
    }

    /// Its printed instructions once they hold `needle` (waits up to 5 s for them).
    pub fn printed(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.text.lock().expect("lock").clone();
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "localmesh up printed {needle:?}: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident anonymous memory now (heap and stacks, not the pages of its binary, which
    /// grow with the code a test happens to run), in KiB (`RssAnon`).
    pub fn anon_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("RssAnon")
    }

    /// SIGTERM; waits up to 20 s for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        // SAFETY: signalling the localmesh process this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "localmesh exits after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: signalling the localmesh process this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of the repository's `gateway/`, `manifests/` and `observability/istio/` under `dir` (without the local CA: the
/// copy makes its own), with each `(file, from, to)` replacement applied (each `from` must be in
/// its file): a test's own variant of the manifests, served by [`Up::start_with`].
pub fn repo_copy(dir: &Path, edits: &[(&str, &str, &str)]) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            let target = to.join(e.file_name());
            if e.file_name() == "certs" {
                continue;
            }
            if e.file_type().expect("type").is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).expect("copy");
            }
        }
    }
    // The IstioOperator too: its meshConfig (the default retry policy) applies locally.
    for d in ["gateway", "manifests", "observability/istio"] {
        copy(&root().join(d), &dir.join(d));
    }
    for (file, from, to) in edits {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).expect("manifest to edit");
        assert!(text.contains(from), "{file} does not contain {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    }
    dir.to_path_buf()
}

/// One HTTP/2 connection to the TLS gateway on `port`, trusting the CA under `root`, with the
/// gateway's host as SNI and `:authority`.
pub async fn gateway_channel(root: &Path, port: u16) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Uri};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(root.join("gateway/certs/ca.crt")).expect("ca.crt"),
        ))
        .domain_name(HOST);
    tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("url")
        .origin(Uri::from_static("https://sit-gateway.tcex.com.vn"))
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect to the gateway")
}

/// Plain HTTP/1.1 GET to a local server that may not be up yet: `None` on any failure.
pub async fn try_get(port: u16, path: &str) -> Option<String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .ok()?
        .to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
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

/// A third-party client from `make tools` (`<venv>/bin/<name>`, the venv at `$SUITE_VENV` or
/// `<root>/.venv`); a missing one fails the test saying how to get it.
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = match std::env::var_os("SUITE_VENV") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => root().join(".venv"),
    };
    let path = venv.join("bin").join(name);
    assert!(
        path.is_file(),
        "third-party test client {} is missing: run `make tools` in the workspace root",
        path.display()
    );
    path
}

/// `n` premium WatchPrices streams spread over `channels`, each open end to end (its first
/// update read), then quiet for a minute: a flood of idle streams from one client.
pub async fn idle_premium_streams(
    channels: &[tonic::transport::Channel],
    n: usize,
) -> Vec<tonic::Streaming<proto::product::PriceUpdate>> {
    use proto::product::WatchPricesRequest;
    use proto::product::product_service_client::ProductServiceClient;
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let channel = channels[i % channels.len()].clone();
        opening.spawn(async move {
            let mut req = tonic::Request::new(WatchPricesRequest {
                product_ids: vec!["123".into()],
                interval_ms: 60_000,
            });
            req.metadata_mut()
                .insert("user-type", "premium".parse().expect("ascii"));
            let mut stream = ProductServiceClient::new(channel).watch_prices(req).await?.into_inner();
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        });
    }
    opening
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("a premium WatchPrices stream opens"))
        .collect()
}

/// Edits `rel` under `root` in one atomic replace (a new file renamed over it, as one
/// `kubectl apply` is one change), so that one push sees every change. Each `(anchor, from, to)`
/// replaces the first `from` after the first `anchor` (`""`: from the start); each must be there.
pub fn edit(root: &Path, rel: &str, changes: &[(&str, &str, &str)]) {
    let path = root.join(rel);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (anchor, from, to) in changes {
        let at = text.find(anchor).unwrap_or_else(|| panic!("{anchor:?} in {rel}"));
        let i = at
            + text[at..]
                .find(from)
                .unwrap_or_else(|| panic!("{from:?} after {anchor:?} in {rel}"));
        text.replace_range(i..i + from.len(), to);
    }
    apply(&path, &text);
}

/// Writes `text` to `path` as one change: a new file (not `.yaml`, so not loaded) renamed over
/// it, as one `kubectl apply` is one change to what istiod and the controllers see.
pub fn apply(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `/config_dump` of the admin port.
pub async fn config_dump(admin: u16) -> serde_json::Value {
    serde_json::from_str(&admin_get(admin, "/config_dump").await).expect("/config_dump is JSON")
}

/// The pods of `deployment` (`product-v1`) on `/config_dump`, by name.
pub async fn pods_of(admin: u16, deployment: &str) -> Vec<(String, serde_json::Value)> {
    let dump = config_dump(admin).await;
    let want = format!("default/{deployment}");
    dump["pods"]
        .as_object()
        .expect("pods")
        .iter()
        .filter(|(_, p)| p["deployment"] == want.as_str())
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect()
}

/// The versions that answer `n` plain GetProduct calls through `client`: (v1, v2).
pub async fn split(
    client: &mut proto::product::product_service_client::ProductServiceClient<tonic::transport::Channel>,
    n: usize,
) -> (usize, usize) {
    let mut v = (0, 0);
    for _ in 0..n {
        let reply = client
            .get_product(proto::product::GetProductRequest {
                product_id: "123".into(),
            })
            .await
            .expect("GetProduct through the gateway");
        match reply.into_inner().served_by.expect("served_by").version.as_str() {
            "v1" => v.0 += 1,
            _ => v.1 += 1,
        }
    }
    v
}
