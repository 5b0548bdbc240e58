//! HTTPS/1.1 through the gateway, as a browser reaches the frontend.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use super::VerifyOptions;

/// An answer to [`https`].
#[derive(Debug, Clone)]
pub struct HttpsAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTPS/1.1 request through the gateway, with SNI and Host = the authority.
pub async fn https(
    o: &VerifyOptions,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpsAnswer, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&o.gateway.cacert)
        .map_err(|e| format!("cannot read {}: {e}", o.gateway.cacert.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", o.gateway.cacert.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", o.gateway.cacert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(o.gateway.authority.clone())
        .map_err(|e| format!("authority {}: {e}", o.gateway.authority))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&o.gateway.target),
    )
    .await
    .map_err(|_| format!("cannot connect to the gateway at {}: timed out", o.gateway.target))?
    .map_err(|e| format!("cannot connect to the gateway at {}: {e}", o.gateway.target))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS handshake with {} as {}: {e}",
                o.gateway.target, o.gateway.authority
            )
        })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {}", crate::error_chain(&e)))?;
    tokio::spawn(conn);
    let port = o.gateway.target.rsplit_once(':').map(|(_, p)| p).unwrap_or("443");
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{}:{port}", o.gateway.authority));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 20 s"))?
        .map_err(|e| format!("{method} {path}: {}", crate::error_chain(&e)))?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{method} {path}: body: {}", crate::error_chain(&e)))?
        .to_bytes();
    Ok(HttpsAnswer {
        status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub(super) fn snippet(s: &str) -> String {
    let s: String = s.chars().take(200).collect();
    s.replace('\n', " ")
}
