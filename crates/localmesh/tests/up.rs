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
