//! The one rule for a backend's address: `PRODUCT_SERVICE_ADDR` and `ORDER_SERVICE_ADDR`
//! (frontend, order), `PAYMENT_URL` (order) and the agent's `AGENT_TARGET`.

use http::Uri;

/// Where the caller runs, which decides who encrypts its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A workload in the mesh (frontend, order): its sidecar adds mTLS, and originates TLS to
    /// destinations outside the mesh (the payment provider). A connection the app encrypted
    /// itself is opaque to the sidecar: no routing by header, retries, per-request metrics or
    /// traces, and the 80/20 split would not apply.
    InMesh,
    /// A client outside the mesh (the agent, through the gateway): TLS is its own job.
    OutsideMesh,
}

/// `raw` when it is an absolute URL with a host: `http://`, or `https://` for a caller outside
/// the mesh only (see [`Caller`]). A bare `host:port` is refused here because tonic and reqwest
/// need the scheme and would otherwise fail only at the first call. `example` is a valid value,
/// shown in the reason.
pub fn backend_url(raw: &str, caller: Caller, example: &str) -> Result<Uri, String> {
    let schemes = match caller {
        Caller::InMesh => "an http:// URL",
        Caller::OutsideMesh => "an http:// or https:// URL",
    };
    let expected = || format!("expected {schemes} with a host and port, such as {example}");
    let uri: Uri = raw.parse().map_err(|e| format!("{} ({e})", expected()))?;
    let has_host = uri.host().is_some_and(|h| !h.is_empty());
    match (uri.scheme_str(), caller) {
        (Some("http"), _) | (Some("https"), Caller::OutsideMesh) if has_host => Ok(uri),
        (Some("https"), Caller::InMesh) => Err(format!(
            "expected a plaintext http:// URL such as {example}: in the mesh the sidecars add mTLS"
        )),
        _ => Err(expected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "http://product-service:50051";

    #[test]
    fn in_the_mesh_plaintext_only() {
        for ok in [
            "http://product-service:50051",
            "http://10.0.0.1:8080",
            "http://api.payment-provider.com",
        ] {
            assert!(backend_url(ok, Caller::InMesh, EXAMPLE).is_ok(), "{ok}");
        }
        for bad in ["product-service:50051", "ftp://x:1", "http://", "not a url", ""] {
            let why = backend_url(bad, Caller::InMesh, EXAMPLE).unwrap_err();
            assert!(why.contains("http://"), "{bad}: {why}");
        }
        let why = backend_url("https://x:443", Caller::InMesh, EXAMPLE).unwrap_err();
        assert!(why.contains("mTLS"), "{why}");
    }

    #[test]
    fn outside_the_mesh_tls_too() {
        assert!(backend_url("https://127.0.0.1:8443", Caller::OutsideMesh, EXAMPLE).is_ok());
        assert!(backend_url("http://product-service:50051", Caller::OutsideMesh, EXAMPLE).is_ok());
        for bad in ["product:50051", "ftp://x:1", "https://"] {
            assert!(backend_url(bad, Caller::OutsideMesh, EXAMPLE).is_err(), "{bad}");
        }
    }
}
