//! Helpers shared by the agent's integration tests: in-process product
//! servers (plaintext through `product::spawn`, TLS built here), test
//! certificates, and agent settings.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use agent::Settings;
use product::{Config, Handle, catalog::Catalog, service::ProductApi};
use proto::product::product_service_server::ProductServiceServer;
use telemetry::GrpcMetrics;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    codegen::{Service, http},
    server::NamedService,
    transport::{Identity, Server, ServerTlsConfig, Uri, server::TcpIncoming},
};

pub const AGENT_VERSION: &str = "v1.2";
pub const AGENT_ID: &str = "agent-test-1";
pub const GATEWAY_HOST: &str = "sit-gateway.tcex.com.vn";

/// Fails the test instead of hanging it.
pub const LIMIT: Duration = Duration::from_secs(20);

pub async fn start(version: &str, pod: &str) -> Handle {
    start_with(Config::for_test(version, pod)).await
}

pub async fn start_with(cfg: Config) -> Handle {
    let metrics = GrpcMetrics::new(&telemetry::metrics::Registry::new()).expect("metrics");
    product::spawn(cfg, metrics).await.expect("server starts")
}

/// Settings for `target`: 50 ms pings, a fixed agent id, until stopped.
pub fn settings(target: &str) -> Settings {
    let mut s = Settings::new(target.parse::<Uri>().expect("target URL"), AGENT_VERSION);
    s.agent_id = Some(AGENT_ID.into());
    s.interval = Duration::from_millis(50);
    s
}

/// The environment variables the agent reads, for a child process that
/// must see only its flags.
pub const AGENT_ENV: &[&str] = &[
    "AGENT_TARGET",
    "AGENT_VERSION",
    "AGENT_ID",
    "PING_INTERVAL",
    "AGENT_CACERT",
    "AGENT_AUTHORITY",
    "AGENT_PINGS",
    "METRICS_PORT",
    "SERVICE_VERSION",
    "POD_NAME",
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
    "SSL_CERT_FILE",
];

/// A test CA and a server certificate it signed for `GATEWAY_HOST` only.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// `ca_pem` in a file, removed on drop.
    pub ca_file: PathBuf,
}

impl TestPki {
    pub fn new(tag: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "agent test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params = CertificateParams::new(vec![GATEWAY_HOST.to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, GATEWAY_HOST);
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");

        let ca_file = std::env::temp_dir().join(format!("agent-test-ca-{}-{tag}.pem", std::process::id()));
        std::fs::write(&ca_file, ca_cert.pem()).expect("write the CA file");
        Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_file,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// ProductService over TLS on 127.0.0.1, recording the :authority of each call.
pub struct TlsServer {
    pub addr: SocketAddr,
    pub authorities: Arc<Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TlsServer {
    pub async fn start(pki: &TestPki, pod: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = Config::for_test("v1", pod).identity;
        let api = ProductApi::new(Arc::new(Catalog::embedded()), &identity, Default::default());
        let authorities = Arc::new(Mutex::new(Vec::new()));
        let service = RecordAuthority {
            inner: ProductServiceServer::new(api),
            seen: authorities.clone(),
        };

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let server = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&pki.cert_pem, &pki.key_pem)))
            .expect("server TLS config")
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = rx.await;
            });
        let task = tokio::spawn(server);
        Self {
            addr,
            authorities,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// Passes calls through and notes the request URI's authority (HTTP/2 :authority).
#[derive(Clone)]
struct RecordAuthority<S> {
    inner: S,
    seen: Arc<Mutex<Vec<String>>>,
}

impl<S: NamedService> NamedService for RecordAuthority<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for RecordAuthority<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(authority);
        }
        self.inner.call(req)
    }
}
