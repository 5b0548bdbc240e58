//! The gateway's HTTP/2 channel and the journeys over gRPC: reflection, GetProduct, the weighted
//! split, premium routing and AgentSync.

use std::error::Error as StdError;
use std::time::Duration;

use proto::product::product_service_client::ProductServiceClient;
use proto::product::{AgentPing, GetProductRequest};
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::VerifyOptions;

pub(super) fn status(what: &str, s: &tonic::Status) -> String {
    let mut m = format!("{what}: {:?}: {}", s.code(), s.message());
    if let Some(src) = s.source() {
        m.push_str(": ");
        m.push_str(&crate::error_chain(src));
    }
    m
}

/// One HTTP/2 connection to the gateway.
pub(super) async fn channel(o: &VerifyOptions) -> Result<Channel, String> {
    o.gateway
        .endpoint(false)
        .map_err(|e| format!("{e:#}"))?
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot connect to the gateway at {}: {}",
                o.gateway.target,
                crate::error_chain(&e)
            )
        })
}

pub(super) async fn reflection_list(o: &VerifyOptions) -> Result<String, String> {
    let mut client = ServerReflectionClient::new(channel(o).await?);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .map_err(|s| status("ServerReflectionInfo", &s))?
        .into_inner();
    let msg = stream
        .message()
        .await
        .map_err(|s| status("ServerReflectionInfo", &s))?
        .ok_or("the reflection stream ended without an answer")?;
    let names: Vec<String> = match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => l.service.into_iter().map(|s| s.name).collect(),
        other => return Err(format!("unexpected reflection answer: {other:?}")),
    };
    if names.iter().any(|n| n == "product.ProductService") {
        Ok(format!("{} services: {}", names.len(), names.join(", ")))
    } else {
        Err(format!("product.ProductService missing from {names:?}"))
    }
}

fn product_request(premium: bool) -> tonic::Request<GetProductRequest> {
    let mut req = tonic::Request::new(GetProductRequest {
        product_id: "123".into(),
    });
    if premium {
        req.metadata_mut()
            .insert("user-type", tonic::metadata::MetadataValue::from_static("premium"));
    }
    req
}

/// (version, pod) of one GetProduct "123".
async fn served(client: &mut ProductServiceClient<Channel>, premium: bool) -> Result<(String, String), String> {
    let p = client
        .get_product(product_request(premium))
        .await
        .map_err(|s| status("GetProduct", &s))?
        .into_inner();
    let sb = p.served_by.ok_or("GetProduct answered without served_by")?;
    Ok((sb.version, sb.pod))
}

pub(super) async fn get_product_once(o: &VerifyOptions) -> Result<String, String> {
    let mut client = ProductServiceClient::new(channel(o).await?);
    let (version, pod) = served(&mut client, false).await?;
    if version.is_empty() || pod.is_empty() {
        return Err(format!("served_by incomplete: version {version:?}, pod {pod:?}"));
    }
    Ok(format!("served by product {version} · pod {pod}"))
}

pub(super) async fn weighted_split(o: &VerifyOptions) -> Result<String, String> {
    if o.n == 0 {
        return Err("-n must be at least 1".into());
    }
    // One channel to one endpoint: one HTTP/2 connection, so the split is the gateway's, per request.
    let mut client = ProductServiceClient::new(channel(o).await?);
    let (mut v1, mut v2) = (0usize, 0usize);
    for _ in 0..o.n {
        match served(&mut client, false).await?.0.as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => return Err(format!("a product version that is neither v1 nor v2: {other:?}")),
        }
    }
    let (n, p) = (o.n as f64, o.v2_share);
    let expected = n * p;
    let bound = 4.0 * (n * p * (1.0 - p)).sqrt();
    let detail = format!(
        "n={} v1={v1} v2={v2} ({:.1}% v2, expected {:.1}% ± {:.1} calls)",
        o.n,
        100.0 * v2 as f64 / n,
        100.0 * p,
        bound
    );
    if (v2 as f64 - expected).abs() <= bound {
        Ok(detail)
    } else {
        Err(format!("split outside the 4σ bound: {detail}"))
    }
}

pub(super) async fn premium(o: &VerifyOptions) -> Result<String, String> {
    const CALLS: usize = 50;
    let mut client = ProductServiceClient::new(channel(o).await?);
    let mut pods = std::collections::BTreeSet::new();
    for i in 0..CALLS {
        let (version, pod) = served(&mut client, true).await?;
        if version != "v2" {
            return Err(format!(
                "call {} of {CALLS} with user-type: premium went to {version} ({pod})",
                i + 1
            ));
        }
        pods.insert(pod);
    }
    Ok(format!(
        "{CALLS}/{CALLS} on v2 ({})",
        pods.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// One AgentSync stream of `pings` pings; returns the (version, pod) of its pongs.
async fn agent_stream(
    client: &mut ProductServiceClient<Channel>,
    agent_version: &str,
    pings: u64,
) -> Result<Vec<(String, String)>, String> {
    let msgs: Vec<AgentPing> = (1..=pings)
        .map(|seq| AgentPing {
            seq,
            message: format!("verify ping {seq}"),
            sent_at: None,
        })
        .collect();
    let mut req = tonic::Request::new(tokio_stream::iter(msgs));
    let md = req.metadata_mut();
    md.insert(
        "agent-version",
        agent_version.parse().map_err(|_| "agent-version is not ASCII")?,
    );
    md.insert(
        "agent-id",
        tonic::metadata::MetadataValue::from_static("localmesh-verify"),
    );
    let mut stream = client
        .agent_sync(req)
        .await
        .map_err(|s| status("AgentSync", &s))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(pong) = stream.message().await.map_err(|s| status("AgentSync", &s))? {
        let sb = pong.served_by.ok_or("a pong without served_by")?;
        out.push((sb.version, sb.pod));
        if out.len() as u64 == pings {
            break;
        }
    }
    if out.len() as u64 != pings {
        return Err(format!("{pings} pings, {} pongs", out.len()));
    }
    Ok(out)
}

pub(super) async fn agent_sync(o: &VerifyOptions) -> Result<String, String> {
    const PINGS: u64 = 5;
    let mut client = ProductServiceClient::new(channel(o).await?);
    let mut details = Vec::new();
    for (agent_version, want) in [("v1.3", "v1"), ("v2.1", "v2")] {
        let pongs = agent_stream(&mut client, agent_version, PINGS)
            .await
            .map_err(|e| format!("agent-version {agent_version}: {e}"))?;
        if let Some((v, p)) = pongs.iter().find(|(v, _)| v != want) {
            return Err(format!(
                "agent-version {agent_version}: a pong from {v} ({p}), want only {want}"
            ));
        }
        let first = &pongs[0].1;
        if let Some((_, p)) = pongs.iter().find(|(_, p)| p != first) {
            return Err(format!(
                "agent-version {agent_version}: one stream answered by {first} and {p}"
            ));
        }
        details.push(format!("{agent_version} → {want} ({first}, {PINGS} pongs)"));
    }
    Ok(details.join("; "))
}
