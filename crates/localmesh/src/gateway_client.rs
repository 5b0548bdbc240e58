//! How the client subcommands (`localmesh verify`, `localmesh load`) reach the TLS gateway: its
//! address, the CA that signed its certificate and its host, as flags and as a gRPC endpoint.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Uri};

/// `--target`, `--cacert` and `--authority`.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayTarget {
    /// The gateway's TLS listener.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub target: String,
    /// The CA that signed the gateway certificate (`localmesh up` makes it).
    #[arg(long, default_value = "gateway/certs/ca.crt")]
    pub cacert: PathBuf,
    /// The gateway host (the Gateway listener's): the TLS server name, `:authority` and Host.
    #[arg(long, default_value = "sit-gateway.tcex.com.vn")]
    pub authority: String,
}

impl GatewayTarget {
    /// An endpoint for `--target` with `:authority` set, not yet connected: TLS checked against
    /// `--cacert` for `--authority`, or h2c with `plaintext`. An error names the flag at fault.
    pub fn endpoint(&self, plaintext: bool) -> anyhow::Result<Endpoint> {
        let scheme = if plaintext { "http" } else { "https" };
        let origin: Uri = format!("{scheme}://{}", self.authority)
            .parse()
            .map_err(|e| anyhow::anyhow!("--authority {}: {e}", self.authority))?;
        let endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.target))
            .map_err(|e| anyhow::anyhow!("--target {}: {e}", self.target))?
            .origin(origin)
            .connect_timeout(Duration::from_secs(5));
        if plaintext {
            return Ok(endpoint);
        }
        let ca = std::fs::read(&self.cacert).map_err(|e| anyhow::anyhow!("--cacert {}: {e}", self.cacert.display()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(self.authority.clone());
        endpoint
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("TLS config: {}", crate::error_chain(&e)))
    }
}
