//! `localmesh up`: the pods as child processes, a sidecar listener per (caller, upstream host), the
//! TLS gateway and an admin port, until SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::model::Protocol;
use crate::pods::{self, PodOptions, Supervisor};
use crate::proxy::{self, Proxy, Running, SidecarSource};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub data_dir: PathBuf,
    pub gateway_port: u16,
    pub http_port: Option<u16>,
    pub admin_port: u16,
    pub ready_timeout: Duration,
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
    let summary = format!("{mesh}");
    let endpoints = Arc::new(proxy::Endpoints::new());
    let mesh_arc = Arc::new(mesh.clone());
    let proxy = Proxy::new(mesh, endpoints.clone())?;

    // East-west: one sidecar listener per (caller Deployment, upstream host), routing every
    // request as if its :authority were that host.
    let mut running: Vec<Running> = Vec::new();
    let mut sidecars = BTreeMap::new();
    for (wi, host) in pods::upstreams(&mesh_arc) {
        let w = &mesh_arc.workloads[wi];
        let source = SidecarSource {
            namespace: w.key.namespace.clone(),
            app: w.labels.get("app").cloned().unwrap_or_else(|| w.key.name.clone()),
            workload: w.key.name.clone(),
        };
        let r = proxy.serve_sidecar_for_host(source, &host, bind(0, "sidecar").await?)?;
        tracing::info!(caller = %w.key, upstream = %host, addr = %r.addr, "sidecar listener");
        sidecars.insert((wi, host), r.addr);
        running.push(r);
    }

    let node = node_name();
    let specs = pods::specs(
        &mesh_arc,
        &PodOptions {
            bin_dir: opts.bin_dir.clone(),
            data_dir: opts.data_dir.clone(),
            node,
            sidecars,
        },
    );
    for s in &specs {
        if !s.binary.is_file() {
            anyhow::bail!(
                "pod {}: binary {} not found (build it with `cargo build --release --workspace`, or pass --bin-dir)",
                s.name,
                s.binary.display()
            );
        }
    }
    let sup = Supervisor::start(mesh_arc.clone(), specs, endpoints.clone());

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
        let admin = bind(opts.admin_port, "admin").await?;
        Ok::<_, anyhow::Error>((out, admin))
    }
    .await;
    let (gw, admin) = match started {
        Ok(v) => v,
        Err(e) => {
            sup.shutdown().await;
            return Err(e);
        }
    };
    let admin_addr = admin.local_addr()?;
    let gw_addr = gw[0].addr;
    running.extend(gw);
    let admin_task = tokio::spawn(serve_admin(
        admin,
        proxy.clone(),
        Arc::new(summary),
        sup.status_handle(),
    ));

    let pods: Vec<String> = sup.status().keys().cloned().collect();
    tracing::info!(gateway = %gw_addr, admin = %admin_addr, pods = ?pods, "localmesh is ready");
    println!("{}", instructions(&opts, &ca.ca_cert, gw_addr, admin_addr, &sup));

    stop.await;
    tracing::info!("stopping: SIGTERM to every pod, bounded drain");
    sup.shutdown().await;
    admin_task.abort();
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

fn instructions(opts: &UpOptions, ca: &std::path::Path, gw: SocketAddr, admin: SocketAddr, sup: &Supervisor) -> String {
    let host = proxy::GATEWAY_HOST;
    let port = gw.port();
    let ca = ca.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nlocalmesh is up: the TLS gateway on {gw} ({host}), admin on http://{admin}"
    );
    let _ = writeln!(s, "Pods (logs in {}/):", pods::log_dir(&opts.data_dir).display());
    let status = sup.status();
    for spec in sup.specs() {
        let st = status.get(&spec.name);
        let addr = st.and_then(|s| s.addr).map_or_else(|| "-".into(), |a| a.to_string());
        let pid = st.and_then(|s| s.pid).map_or_else(|| "-".into(), |p| p.to_string());
        let _ = writeln!(s, "  {:<36} {addr:<16} pid {pid}", spec.name);
    }
    let agent = opts.bin_dir.join("agent").display().to_string();
    // grpcurl takes every flag before the address.
    let g = format!("grpcurl -cacert {ca} -authority {host}");
    let at = format!("127.0.0.1:{port}");
    let buf =
        format!("buf curl --protocol grpc --cacert {ca} --servername {host} -H 'Host: {host}' --reflect-header '*'");
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
Admin: curl http://{admin}/stats/prometheus | grep istio_requests_total
       curl http://{admin}/clusters
       curl http://{admin}/config_dump
Ctrl-C stops everything (SIGTERM to every pod, bounded drain)."#
    );
    s
}

type Status = Arc<std::sync::Mutex<BTreeMap<String, pods::PodStatus>>>;

async fn serve_admin(tcp: TcpListener, proxy: Arc<Proxy>, summary: Arc<String>, status: Status) {
    loop {
        let Ok((stream, _)) = tcp.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (proxy, summary, status) = (proxy.clone(), summary.clone(), status.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let r = admin(&req, &proxy, &summary, &status);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn admin(req: &Request<Incoming>, proxy: &Proxy, summary: &str, status: &Status) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/stats/prometheus" => {
            let mut body = String::new();
            let enc = prometheus::TextEncoder::new();
            match enc.encode_utf8(&proxy.registry().gather(), &mut body) {
                Ok(()) => text(StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
            }
        }
        "/clusters" => {
            let mut body = String::new();
            for ep in proxy.endpoints().all() {
                let health = if ep.is_healthy() { "healthy" } else { "unhealthy" };
                let _ = writeln!(
                    body,
                    "{}::{}::pod::{}::version::{}::health_flags::{health}::rq_active::{}",
                    ep.workload,
                    ep.addr,
                    ep.pod,
                    ep.version(),
                    ep.in_flight()
                );
            }
            text(StatusCode::OK, "text/plain", body)
        }
        "/config_dump" => {
            let pods: serde_json::Map<String, serde_json::Value> = crate::lock(status)
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        serde_json::json!({
                            "pid": s.pid,
                            "addr": s.addr.map(|a| a.to_string()),
                            "ready": s.ready,
                            "restarts": s.restarts,
                            "last_exit": s.last_exit,
                        }),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "routing": summary.lines().collect::<Vec<_>>(),
                "pods": pods,
            });
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&body).unwrap_or_default(),
            )
        }
        "/" => text(
            StatusCode::OK,
            "text/plain",
            "/stats/prometheus\n/clusters\n/config_dump\n".into(),
        ),
        p => text(StatusCode::NOT_FOUND, "text/plain", format!("no admin page {p}\n")),
    }
}
