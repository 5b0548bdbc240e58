//! The tonic `Endpoint` for `--target`: TLS with `--cacert`, and the
//! `--authority` override of the TLS server name and the HTTP/2 :authority.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

use crate::config::{Settings, authority_host};

/// TCP connect and TLS handshake, each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PINGs keep an idle stream alive through NATs and proxies and find
/// a dead peer when no pong arrives.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// CA bundles of common distributions, used for https:// without `--cacert`.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

pub fn build(settings: &Settings) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::from(settings.target.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .user_agent(format!("agent/{}", settings.agent_version))
        .context("--agent-version cannot go in a user-agent header")?;

    if settings.is_tls() {
        let (path, pem) = read_ca(settings.cacert.as_deref())?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem))
            .timeout(CONNECT_TIMEOUT);
        if let Some(authority) = &settings.authority {
            tls = tls.domain_name(authority_host(authority));
        }
        endpoint = endpoint
            .tls_config(tls)
            .with_context(|| format!("cannot use the CA certificates of {}", path.display()))?;
    } else if let Some(path) = &settings.cacert {
        tracing::warn!(cacert = %path.display(), "--cacert is ignored: the target is http://, not https://");
    }

    if let Some(authority) = &settings.authority {
        let origin = Uri::builder()
            .scheme(settings.target.scheme_str().unwrap_or("http"))
            .authority(authority.as_str())
            .path_and_query("/")
            .build()
            .with_context(|| format!("--authority {authority:?} is not a valid URI authority"))?;
        endpoint = endpoint.origin(origin);
    }
    Ok(endpoint)
}

/// The PEM CA file: `--cacert`, else `SSL_CERT_FILE`, else the system bundle.
fn read_ca(cacert: Option<&Path>) -> anyhow::Result<(PathBuf, Vec<u8>)> {
    let (path, what) = match cacert {
        Some(p) => (p.to_path_buf(), "--cacert / AGENT_CACERT"),
        None => match std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
            Some(p) => (PathBuf::from(p), "SSL_CERT_FILE"),
            None => match SYSTEM_CA_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
                Some(p) => (p.to_path_buf(), "the system CA bundle"),
                None => bail!(
                    "an https:// target needs CA certificates: give --cacert / AGENT_CACERT (no system CA bundle found in {})",
                    SYSTEM_CA_BUNDLES.join(", ")
                ),
            },
        },
    };
    let pem = std::fs::read(&path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        bail!(
            "{what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok((path, pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_cacert_names_the_file() {
        let mut s = Settings::new(Uri::from_static("https://127.0.0.1:8443"), "v1");
        s.cacert = Some("/nonexistent/ca.pem".into());
        let e = format!("{:#}", build(&s).unwrap_err());
        assert!(e.contains("--cacert") && e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn cacert_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("agent-not-a-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "hello").unwrap();
        let mut s = Settings::new(Uri::from_static("https://127.0.0.1:8443"), "v1");
        s.cacert = Some(path.clone());
        let e = format!("{:#}", build(&s).unwrap_err());
        let _ = std::fs::remove_file(&path);
        assert!(
            e.contains("no PEM certificate") && e.contains(&path.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn plaintext_needs_no_ca() {
        let mut s = Settings::new(Uri::from_static("http://127.0.0.1:50051"), "v1");
        s.authority = Some("product.example".into());
        assert!(build(&s).is_ok());
    }
}
