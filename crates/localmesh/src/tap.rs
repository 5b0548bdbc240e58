//! Live requests for `localmesh tap` and `localmesh top` (as `linkerd viz tap` shows them): every
//! finished request is published while someone listens, and costs nothing otherwise.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// `--tap-buffer`: events a slow listener may fall behind by before it misses some (it is told
/// how many).
pub const DEFAULT_BUFFER: usize = 4096;

/// One finished request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TapEvent {
    /// RFC 3339, milliseconds, UTC.
    pub time: String,
    /// `gateway` or `sidecar`.
    pub proxy: String,
    /// The caller: the gateway's workload, or the pod whose sidecar this is.
    pub source: String,
    /// The route that matched (`HTTPRoute gateway/product-grpc spec.rules[2].matches[0]`), `-` without.
    pub route: String,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// The Service it went to (`-` for a local reply before any).
    pub destination: String,
    pub upstream_pod: String,
    pub upstream_version: String,
    pub status: u16,
    pub grpc_status: Option<String>,
    pub response_flags: String,
    pub latency_ms: f64,
    pub request_id: String,
    pub trace_id: String,
    /// The request's headers, for `--header` filters; never sent to listeners.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

/// Which events a listener wants; every part that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// A path prefix.
    pub path: Option<String>,
    /// The `:authority` (a prefix, so `product-service` matches `product-service:50051`).
    pub authority: Option<String>,
    /// `name: value` pairs the request must carry (names case-insensitive).
    pub headers: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, e: &TapEvent) -> bool {
        self.path.as_ref().is_none_or(|p| e.path.starts_with(p.as_str()))
            && self
                .authority
                .as_ref()
                .is_none_or(|a| e.authority.starts_with(a.as_str()))
            && self
                .headers
                .iter()
                .all(|(n, v)| e.headers.iter().any(|(hn, hv)| hn.eq_ignore_ascii_case(n) && hv == v))
    }

    /// `path`, `authority` and repeated `header=name:value` query parameters; the error names the
    /// parameter.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (k, v) in pairs {
            match k.as_str() {
                "path" if !v.is_empty() => f.path = Some(v.clone()),
                "authority" if !v.is_empty() => f.authority = Some(v.clone()),
                "header" => {
                    let (n, val) = v
                        .split_once(':')
                        .ok_or_else(|| format!("parameter 'header': expected name:value, got {v:?}"))?;
                    f.headers.push((n.trim().to_string(), val.trim().to_string()));
                }
                _ => {}
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
pub struct Tap {
    tx: broadcast::Sender<Arc<TapEvent>>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap::new(DEFAULT_BUFFER)
    }
}

impl Tap {
    /// A tap whose listeners may fall `buffer` events behind (at least one).
    pub fn new(buffer: usize) -> Self {
        Tap {
            tx: broadcast::channel(buffer.max(1)).0,
        }
    }

    /// Whether anyone listens (so an event is worth building).
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn publish(&self, e: TapEvent) {
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TapEvent>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, authority: &str, headers: &[(&str, &str)]) -> TapEvent {
        TapEvent {
            time: String::new(),
            proxy: "gateway".into(),
            source: "public-api-gateway-istio".into(),
            route: "-".into(),
            method: "POST".into(),
            authority: authority.into(),
            path: path.into(),
            destination: "-".into(),
            upstream_pod: "-".into(),
            upstream_version: "-".into(),
            status: 200,
            grpc_status: None,
            response_flags: "-".into(),
            latency_ms: 1.0,
            request_id: String::new(),
            trace_id: String::new(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn filters_match_path_prefix_authority_and_headers() {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let f = Filter::from_query(&pairs(&[
            ("path", "/product.ProductService/"),
            ("header", "user-type: premium"),
        ]))
        .unwrap();
        let e = event("/product.ProductService/GetProduct", "sit", &[("User-Type", "premium")]);
        assert!(f.matches(&e));
        assert!(!f.matches(&event("/product.ProductService/GetProduct", "sit", &[])));
        assert!(!f.matches(&event(
            "/order.OrderService/GetOrder",
            "sit",
            &[("user-type", "premium")]
        )));
        let e = Filter::from_query(&pairs(&[("header", "nocolon")])).unwrap_err();
        assert!(e.contains("'header'"), "{e}");
    }

    #[tokio::test]
    async fn events_reach_listeners_only_while_they_listen() {
        let tap = Tap::default();
        assert!(!tap.active());
        let mut rx = tap.subscribe();
        assert!(tap.active());
        tap.publish(event("/a", "h", &[]));
        assert_eq!(rx.recv().await.unwrap().path, "/a");
        drop(rx);
        assert!(!tap.active());
    }
}
