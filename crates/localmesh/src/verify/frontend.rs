//! The journeys through the frontend: its home page, and placing an order that is read back over
//! gRPC.

use proto::order::GetOrderRequest;
use proto::order::order_service_client::OrderServiceClient;

use super::VerifyOptions;
use super::grpc::{channel, status};
use super::http::{HttpsAnswer, https, snippet};

pub(super) async fn frontend_home(o: &VerifyOptions) -> Result<String, String> {
    let HttpsAnswer { status: code, body, .. } = https(o, "GET", "/", &[], "").await?;
    if code != 200 {
        return Err(format!("GET / answered {code}: {}", snippet(&body)));
    }
    let Some(at) = body.find("served by product") else {
        return Err("GET / has no \"served by product\" badge".into());
    };
    let badge: String = body[at..].chars().take_while(|&c| c != '<').collect();
    Ok(format!("200, {}", badge.trim()))
}

/// Places an order (and again with the same key); returns the detail and the first answer's
/// `x-request-id` (the id the gateway used, echoed by the frontend).
pub(super) async fn order_journey(o: &VerifyOptions) -> Result<(String, Option<String>), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = format!("localmesh-verify-{}-{nanos}", std::process::id());
    let body = r#"{"customer_id":"localmesh-verify","items":[{"product_id":"123","quantity":1}]}"#;
    let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
    let place = async || -> Result<(String, Option<String>), String> {
        let a = https(o, "POST", "/api/orders", &headers, body).await?;
        let (code, resp) = (a.status, a.body);
        if !(200..300).contains(&code) {
            return Err(format!("POST /api/orders answered {code}: {}", snippet(&resp)));
        }
        let v: serde_json::Value =
            serde_json::from_str(&resp).map_err(|e| format!("POST /api/orders: not JSON ({e}): {}", snippet(&resp)))?;
        let request_id = a
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match v["id"].as_str() {
            Some(id) if !id.is_empty() => Ok((id.to_owned(), request_id)),
            _ => Err(format!("POST /api/orders: no id in {}", snippet(&resp))),
        }
    };
    let (id, request_id) = place().await?;
    let mut client = OrderServiceClient::new(channel(o).await?);
    let order = client
        .get_order(GetOrderRequest { id: id.clone() })
        .await
        .map_err(|s| status(&format!("GetOrder {id}"), &s))?
        .into_inner();
    if order.id != id {
        return Err(format!("GetOrder {id} returned order {}", order.id));
    }
    let (again, _) = place().await.map_err(|e| format!("retry with the same key: {e}"))?;
    if again != id {
        return Err(format!("retry with key {key} gave order {again}, first was {id}"));
    }
    let by = order
        .served_by
        .map(|s| format!(" (GetOrder served by {} {})", s.version, s.pod))
        .unwrap_or_default();
    Ok((
        format!("order {id} placed, read back over gRPC, retry gave the same id{by}"),
        request_id,
    ))
}
