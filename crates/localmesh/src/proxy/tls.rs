//! The gateway's certificates: the listener's PEM files, a local CA made with rcgen, and a rustls
//! server config that refuses a ClientHello whose SNI is not the listener's hostname.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::model::Listener;

/// The gateway listener's hostname in the repo's manifests.
pub const GATEWAY_HOST: &str = "sit-gateway.tcex.com.vn";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating the local CA: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("listener {0} has no TLS certificate")]
    NoTls(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn pem_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A certificate chain and its private key, read from PEM files.
pub fn load_pem(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_pem = fs::read(cert_file).map_err(io_err(cert_file))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert_file, e))?;
    if certs.is_empty() {
        return Err(pem_err(cert_file, "no CERTIFICATE block"));
    }
    let key_pem = fs::read(key_file).map_err(io_err(key_file))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(key_file, e))?;
    Ok((certs, key))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a listener's certificate (its Secret's local files) as a rustls [`CertifiedKey`].
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let (certs, key) = load_pem(cert_file, key_file)?;
    let signer = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// The rustls config of a TLS listener: TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, and only the
/// listener's hostname as SNI (any other name, or none, fails the handshake).
pub fn server_config(listener: &Listener) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let tls = listener
        .tls
        .as_ref()
        .ok_or_else(|| TlsError::NoTls(format!("{}/{}", listener.gateway, listener.name)))?;
    server_config_from(listener.hostname.as_deref(), &tls.cert_file, &tls.key_file)
}

/// [`server_config`] for explicit files; `hostname: None` accepts every SNI.
pub fn server_config_from(
    hostname: Option<&str>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = load_certified_key(cert_file, key_file)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            hostname: hostname.map(str::to_ascii_lowercase),
            key,
        }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct SniResolver {
    hostname: Option<String>,
    key: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(want) = &self.hostname else {
            return Some(self.key.clone());
        };
        let sni = hello.server_name()?.to_ascii_lowercase();
        let ok = match want.strip_prefix("*.") {
            Some(suffix) => sni.len() > suffix.len() + 1 && sni.ends_with(&format!(".{suffix}")),
            None => &sni == want,
        };
        if ok {
            Some(self.key.clone())
        } else {
            tracing::debug!(sni, listener_host = %want, "TLS handshake refused: SNI does not match the listener");
            None
        }
    }
}

/// The local CA and the gateway's certificate, as files.
#[derive(Debug, Clone)]
pub struct LocalCa {
    /// `ca.crt`: what clients trust.
    pub ca_cert: PathBuf,
    /// `tls.crt`: the server certificate (the listener's `cert_file`).
    pub cert: PathBuf,
    /// `tls.key`.
    pub key: PathBuf,
    /// Whether this call created them (false: they were there and are kept).
    pub created: bool,
}

/// Makes sure `dir` holds `ca.crt`, `tls.crt` and `tls.key`: a local CA and a server certificate for
/// [`GATEWAY_HOST`] (and `localhost`) signed by it. Existing files are kept, so a CA a person has
/// trusted stays valid across runs.
pub fn ensure_local_ca(dir: &Path) -> Result<LocalCa, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    let out = LocalCa {
        ca_cert: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        created: false,
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Several `localmesh up` may start at once on a fresh checkout (tests, two terminals): the
    // lock makes exactly one of them create the CA, and the others see its finished files.
    let lock_path = dir.join(".lock");
    let lock = fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    if out.ca_cert.is_file() && out.cert.is_file() && out.key.is_file() {
        return Ok(out);
    }

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "localmesh local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec![GATEWAY_HOST.to_string(), "localhost".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, GATEWAY_HOST);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    // The key first and the CA last, each renamed into place whole: a reader that finds all
    // three files never sees a half-written one.
    write_atomic(&out.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&out.cert, cert.pem().as_bytes(), 0o644)?;
    write_atomic(&out.ca_cert, ca_cert.pem().as_bytes(), 0o644)?;
    Ok(LocalCa { created: true, ..out })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}
