//! `localmesh up`: the pods as child processes, each with sidecar listeners for its upstreams, the
//! TLS gateway, the admin port, the console, and where spans go (an OTLP receiver and the
//! in-memory store, or the user's collector), until SIGINT/SIGTERM.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
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
        tracing::error!(error = %e, "localmesh up failed");
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
    println!(
        "{}",
        instructions(&opts, &ca.ca_cert, gw_addr, admin_addr, console_addr, &sup)
    );

    stop.await;
    tracing::info!("stopping: SIGTERM to every pod, bounded drain");
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
    Ok(())
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
    // As the user started it (`target/release/localmesh` under `make run`): it is rarely on PATH.
    let me = std::env::args().next().unwrap_or_else(|| "localmesh".into());
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
