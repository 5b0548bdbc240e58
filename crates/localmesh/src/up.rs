//! `localmesh up`: the pods as child processes, each with sidecar listeners for its upstreams, the
//! TLS gateway, the admin port, the console, and where spans go (an OTLP receiver and the
//! in-memory store, or the user's collector), until SIGINT/SIGTERM.
//!
//! Its stdout is for a person or for a program ([`Output`]): on a terminal it prints the
//! addresses, the commands to try and a line per kind of difference from the cluster, and
//! localmesh's JSON log lines go to [`log_file`]; otherwise the JSON log lines are its stdout.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::admin::{self, Shared};
use crate::model::Protocol;
use crate::pods::{self, PodOptions, Supervisor};
use crate::proxy::{self, ObserveOptions, Proxy, Running};
use crate::stats::Window;
use crate::trace::Sink;
use crate::trace::receive;
use crate::trace::store::{Limits, Store};

/// What `localmesh up` writes on stdout: `--output`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// `human` when stdout is a terminal, else `json`.
    #[default]
    Auto,
    /// For a person: the addresses, the commands to try and a line per kind of finding not
    /// emulated; the JSON log lines go to `<data-dir>/logs/localmesh.log`, warnings and errors
    /// also to stderr.
    Human,
    /// Every JSON log line, the instructions among them once ready: for scripts and tests.
    Json,
}

impl Output {
    /// Whether a person reads stdout: `human`, or `auto` with stdout a terminal.
    pub fn is_human(self, stdout_is_terminal: bool) -> bool {
        match self {
            Output::Auto => stdout_is_terminal,
            Output::Human => true,
            Output::Json => false,
        }
    }
}

/// localmesh's own JSON log when a person reads stdout: `<data-dir>/logs/localmesh.log`, beside
/// the pods' logs and rotated as they are.
pub fn log_file(data_dir: &Path) -> PathBuf {
    pods::log_dir(data_dir).join("localmesh.log")
}

/// The message of the error that stops `localmesh up`, which `main` also prints plainly on stderr.
pub const FAILED: &str = "localmesh up failed";

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub gateway_port: u16,
    pub http_port: Option<u16>,
    pub admin_port: u16,
    /// The console (Jaeger's port, 16686, by default).
    pub console_port: u16,
    /// The OTLP/gRPC receiver the pods export to (when spans stay local).
    pub otlp_port: u16,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: when set, every span goes there instead.
    pub export: Option<String>,
    pub limits: Limits,
    /// The largest OTLP export request the receiver takes.
    pub otlp_max_message: usize,
    pub span_queue: usize,
    pub tap_buffer: usize,
    pub ready_timeout: Duration,
    /// Every listener's connection bounds.
    pub connections: proxy::listen::Limits,
    /// How the pods' logs are rotated.
    pub logs: crate::logs::Rotation,
    /// Set when a person reads stdout ([`Output::is_human`]): localmesh's JSON log lines go to
    /// this file ([`log_file`]), and stdout gets a start line, the instructions and [`summary`]
    /// of what is not emulated instead.
    ///
    /// [`summary`]: crate::unsupported::summary
    pub human_log: Option<PathBuf>,
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port} ({what}): {e}"))
}

/// Runs until SIGINT/SIGTERM, then stops every pod (bounded drain) and returns.
pub async fn run(opts: UpOptions) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mesh = crate::load(&opts.root)?;
    for n in &mesh.not_emulated {
        tracing::info!(finding = %n, "not emulated locally");
    }
    let summary = crate::unsupported::summary(&mesh.not_emulated, &lint_command(&opts.root));
    if let Some(log) = &opts.human_log {
        let pods: u32 = mesh.workloads.iter().map(|w| w.replicas).sum();
        say(&format!(
            "Starting {pods} pods of {} Deployments, each given {}s to become ready (localmesh's log: {})",
            mesh.workloads.len(),
            opts.ready_timeout.as_secs(),
            log.display()
        ));
    }
    let ca = proxy::ensure_local_ca(&opts.root.join("gateway/certs"))?;
    let endpoints = Arc::new(proxy::Endpoints::new());
    let mesh_arc = Arc::new(mesh.clone());

    // Spans: to the user's collector, or into the store, with a receiver for the pods' spans.
    let mut running: Vec<Running> = Vec::new();
    let (sink, receiver) = match &opts.export {
        Some(url) => (Sink::Otlp(url.clone()), None),
        None => {
            let store = Arc::new(Store::new(opts.limits));
            let tcp = bind(opts.otlp_port, "OTLP receiver, --otlp-port").await?;
            let (addr, task) = receive::serve_receiver(store.clone(), tcp, opts.otlp_max_message)?;
            (Sink::Store(store), Some((addr, task)))
        }
    };
    let proxy = Proxy::with_limits(
        mesh,
        endpoints.clone(),
        ObserveOptions {
            sink,
            queue: opts.span_queue,
            tap_buffer: opts.tap_buffer,
        },
        opts.connections,
    )?;

    let pod_opts = PodOptions {
        bin_dir: opts.bin_dir.clone(),
        data_dir: opts.data_dir.clone(),
        node: node_name(),
        otlp_endpoint: receiver.as_ref().map(|(a, _)| format!("http://{a}")),
    };
    for w in &mesh_arc.workloads {
        let binary = opts.bin_dir.join(&w.binary);
        if !binary.is_file() {
            anyhow::bail!(
                "deployment {}: binary {} not found (build it with `cargo build --release --workspace`, or pass --bin-dir)",
                w.key,
                binary.display()
            );
        }
    }
    let sup = Arc::new(Supervisor::new(
        endpoints.clone(),
        opts.logs,
        pod_opts,
        Some(proxy.clone()),
    ));
    sup.apply(mesh_arc.clone());

    let mut stop = Box::pin(stop_signal()?);
    let ready = tokio::select! {
        r = sup.wait_ready(opts.ready_timeout) => r,
        () = &mut stop => Err("interrupted before every pod was ready".to_string()),
    };
    if let Err(e) = ready {
        tracing::error!(error = %e, "{FAILED}");
        sup.shutdown().await;
        anyhow::bail!("{e}");
    }

    let started = async {
        let https = mesh_arc
            .listeners
            .iter()
            .find(|l| l.protocol == Protocol::Https && l.tls.is_some())
            .ok_or_else(|| anyhow::anyhow!("no HTTPS listener with TLS in gateway/"))?;
        let mut https = https.clone();
        if let Some(tls) = https.tls.as_mut() {
            tls.cert_file = ca.cert.clone();
            tls.key_file = ca.key.clone();
        }
        let tls = proxy::server_config(&https)?;
        let mut out = vec![proxy.serve_gateway(https, bind(opts.gateway_port, "gateway").await?, Some(tls))?];
        if let Some(port) = opts.http_port
            && let Some(l) = mesh_arc.listeners.iter().find(|l| l.protocol == Protocol::Http)
        {
            out.push(proxy.serve_gateway(l.clone(), bind(port, "gateway http").await?, None)?);
        }
        let admin = bind(opts.admin_port, "admin, --admin-port").await?;
        let console = match bind(opts.console_port, "console, --console-port").await {
            Ok(c) => c,
            // Exporting to a Jaeger on this machine: its UI holds 16686, so the console (still
            // showing the graph) moves aside instead of failing the start.
            Err(e) if opts.export.is_some() => {
                let c = bind(0, "console").await?;
                tracing::warn!(error = %e, console = %c.local_addr()?, "the console's port is taken; using a free one");
                c
            }
            Err(e) => return Err(e),
        };
        Ok::<_, anyhow::Error>((out, admin, console))
    }
    .await;
    let (gw, admin, console) = match started {
        Ok(v) => v,
        Err(e) => {
            sup.shutdown().await;
            return Err(e);
        }
    };
    let admin_addr = admin.local_addr()?;
    let console_addr = console.local_addr()?;
    let gw_addr = gw[0].addr;
    running.extend(gw);

    let window = Arc::new(Window::default());
    let sampler = {
        let (w, p) = (window.clone(), proxy.clone());
        tokio::spawn(w.run(move || p.registry().gather()))
    };
    // Routing changes in the files are pushed while it runs, as istiod pushes them.
    let pushed = crate::push::Pushed::new(mesh_arc.clone());
    let _watching = crate::push::watch(opts.root.clone(), proxy.clone(), pushed.clone())?;
    // Deployments follow their YAML: scaled, rolled out, started and stopped as pushed.
    let following = sup.follow(pushed.subscribe());
    let shared = Shared::new(
        proxy.clone(),
        pushed,
        sup.status_handle(),
        window,
        admin_addr,
        opts.export.clone(),
    )?;
    let admin_task = admin::serve(shared.clone(), admin);
    let console_task = crate::console::serve(shared, console);

    let pods: Vec<String> = sup.status().keys().cloned().collect();
    tracing::info!(
        gateway = %gw_addr,
        admin = %admin_addr,
        console = %console_addr,
        otlp = %receiver.as_ref().map_or_else(|| "-".to_string(), |(a, _)| a.to_string()),
        spans = %opts.export.as_deref().unwrap_or("console"),
        pods = ?pods,
        "localmesh is ready"
    );
    let text = instructions(&opts, &ca.ca_cert, gw_addr, admin_addr, console_addr, &sup);
    if opts.human_log.is_some() {
        say(&format!("{text}\n{}", summary.trim_end()));
    } else {
        println!("{text}");
    }

    stop.await;
    tracing::info!("stopping: SIGTERM to every pod, bounded drain");
    if opts.human_log.is_some() {
        say("\nStopping: SIGTERM to every pod, bounded drain");
    }
    sup.shutdown().await;
    following.abort();
    for t in [admin_task, console_task, sampler] {
        t.abort();
    }
    if let Some((_, t)) = receiver {
        t.abort();
    }
    drop(running);
    tracing::info!("stopped");
    if opts.human_log.is_some() {
        say("Stopped.");
    }
    Ok(())
}

/// A line or more for the person at the terminal, out at once (stdout is line-buffered there, and
/// a pipe's reader waits for nothing).
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// localmesh as the user started it (`target/release/localmesh` under `make run`): it is rarely on
/// PATH.
fn me() -> String {
    std::env::args().next().unwrap_or_else(|| "localmesh".into())
}

/// The `localmesh lint` that lists every finding of this run's manifests.
fn lint_command(root: &Path) -> String {
    if root == Path::new(".") {
        format!("{} lint", me())
    } else {
        format!("{} lint --root {}", me(), root.display())
    }
}

/// Warnings and errors for the person at the terminal (`--output human`), whose JSON log lines go
/// to a file: each line handed to it (one event per write, as tracing's formatter writes them)
/// is printed on stderr as `localmesh: warning: <message> (<field>: <value>, ...)`. The error
/// that stops localmesh ([`FAILED`]) is left out: `main` prints it.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PlainStderr {
    type Writer = PlainLine;

    fn make_writer(&'a self) -> PlainLine {
        PlainLine(Vec::new())
    }
}

/// One event's JSON line, printed plainly on stderr when dropped ([`PlainStderr`]).
#[derive(Debug)]
pub struct PlainLine(Vec<u8>);

impl std::io::Write for PlainLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PlainLine {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.0).lines() {
            if let Some(text) = plain(line) {
                eprintln!("{text}");
            }
        }
    }
}

/// A JSON log line as a person reads it: `localmesh: warning: <message> (<field>: <value>, ...)`,
/// without the timestamp, target, identity and trace ids; `None` for [`FAILED`]. A line that is
/// not a JSON object is shown as it is.
pub fn plain(line: &str) -> Option<String> {
    const LEFT_OUT: &[&str] = &[
        "timestamp",
        "level",
        "target",
        "message",
        "service",
        "version",
        "pod",
        "trace_id",
        "span_id",
    ];
    let Ok(serde_json::Value::Object(v)) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(format!("localmesh: {line}"));
    };
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or_default();
    if message == FAILED {
        return None;
    }
    let level = match v.get("level").and_then(|l| l.as_str()) {
        Some("ERROR") => "error",
        Some("WARN") => "warning",
        Some(other) => other,
        None => "log",
    };
    let fields: Vec<String> = v
        .iter()
        .filter(|(k, _)| !LEFT_OUT.contains(&k.as_str()))
        .map(|(k, val)| match val {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect();
    Some(if fields.is_empty() {
        format!("localmesh: {level}: {message}")
    } else {
        format!("localmesh: {level}: {message} ({})", fields.join(", "))
    })
}

fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn instructions(
    opts: &UpOptions,
    ca: &std::path::Path,
    gw: SocketAddr,
    admin: SocketAddr,
    console: SocketAddr,
    sup: &Supervisor,
) -> String {
    let host = proxy::GATEWAY_HOST;
    let port = gw.port();
    let ca = ca.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nlocalmesh is up: the TLS gateway on {gw} ({host}), admin on http://{admin}"
    );
    match &opts.export {
        None => {
            let _ = writeln!(
                s,
                "Console (traces, the service graph, Jaeger's query API): http://{console}/"
            );
        }
        Some(url) => {
            let _ = writeln!(
                s,
                "Spans go to {url} (OTEL_EXPORTER_OTLP_ENDPOINT); the console http://{console}/ shows the graph"
            );
        }
    }
    if let Some(log) = &opts.human_log {
        let _ = writeln!(
            s,
            "localmesh's log: {} (JSON lines; warnings and errors are shown here too; --output json puts every line on stdout)",
            log.display()
        );
    }
    let _ = writeln!(
        s,
        "Pods (logs in {}/, rotated at {}, {} files each):",
        pods::log_dir(&opts.data_dir).display(),
        crate::logs::size_text(opts.logs.max_size),
        opts.logs.max_files
    );
    for (name, st) in sup.status() {
        let addr = st.addr.map_or_else(|| "-".into(), |a| a.to_string());
        let pid = st.pid.map_or_else(|| "-".into(), |p| p.to_string());
        let _ = writeln!(s, "  {name:<36} {addr:<16} pid {pid}");
    }
    let agent = opts.bin_dir.join("agent").display().to_string();
    // grpcurl takes every flag before the address.
    let g = format!("grpcurl -cacert {ca} -authority {host}");
    let at = format!("127.0.0.1:{port}");
    let buf =
        format!("buf curl --protocol grpc --cacert {ca} --servername {host} -H 'Host: {host}' --reflect-header '*'");
    let me = me();
    let admin_flag = if admin.port() == 15000 {
        String::new()
    } else {
        format!(" --admin {admin}")
    };
    let _ = writeln!(
        s,
        r#"
Try (the gateway only speaks TLS on {port}, so grpcurl's -plaintext fails there: use -cacert):
  {g} {at} list
  {g} -d '{{"product_id": "123"}}' {at} product.ProductService/GetProduct
  {g} -H 'user-type: premium' -d '{{"product_id": "123"}}' {at} product.ProductService/GetProduct
  {g} -d '{{"page_size": 10, "page_number": 1}}' {at} product.ProductService/ListProducts
  {buf} -d '{{"product_id": "123"}}' https://{at}/product.ProductService/GetProduct
  curl --cacert {ca} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}/api/products/123
An agent on a long-lived AgentSync stream, routed by its version:
  {agent} --target https://{at} --cacert {ca} --authority {host} --agent-version v1.2 --interval 2s
For a browser, add this line to /etc/hosts and trust {ca}:
  127.0.0.1 {host}
  then open https://{host}:{port}/
Watch the flows:
  http://{console}/traces     recent traces, a waterfall per trace
  http://{console}/graph      the versioned service graph (the 80/20 split)
  {me} stat{admin_flag}       success rate, requests/s and latency per workload and version
  {me} top{admin_flag}        the busiest paths, live
  {me} tap{admin_flag}        requests as they pass
Admin: curl http://{admin}/stats/prometheus | grep istio_requests_total
       curl http://{admin}/clusters
       curl http://{admin}/config_dump
Ctrl-C stops everything (SIGTERM to every pod, bounded drain)."#
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_reads_stdout_on_a_terminal_unless_json_is_asked_for() {
        assert!(Output::Auto.is_human(true));
        assert!(!Output::Auto.is_human(false));
        assert!(Output::Human.is_human(false));
        assert!(!Output::Json.is_human(true));
    }

    #[test]
    fn warnings_are_shown_plainly_and_the_final_error_once() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"ERROR","target":"localmesh::push","message":"configuration refused; the running configuration stays","error":"bad.yaml: field `spec`","config_version":3,"service":"localmesh","version":"v1","pod":"vm"}"#;
        assert_eq!(
            plain(line).as_deref(),
            Some(
                "localmesh: error: configuration refused; the running configuration stays (error: bad.yaml: field `spec`, config_version: 3)"
            )
        );
        let warn = r#"{"level":"WARN","message":"pod not running; restarting","pod_name":"product-v1-x"}"#;
        assert_eq!(
            plain(warn).as_deref(),
            Some("localmesh: warning: pod not running; restarting (pod_name: product-v1-x)")
        );
        let failed = format!(r#"{{"level":"ERROR","message":"{FAILED}","error":"x"}}"#);
        assert_eq!(plain(&failed), None, "main prints it");
    }
}
