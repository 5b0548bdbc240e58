//! Request bodies over the frontend's limit (`MAX_BODY_BYTES`, 2 MiB by default): 413 naming the
//! limit, as the API's JSON error and as the form route's error page, seen by real clients
//! (reqwest and curl) of a real frontend over real product, order and payment servers.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::{Value, json};

const TEN_MIB: usize = 10 << 20;

/// A well-formed order whose customer id alone is 10 MiB.
fn huge_order() -> Vec<u8> {
    let mut body = br#"{"customer_id":""#.to_vec();
    body.resize(body.len() + TEN_MIB, b'x');
    body.extend_from_slice(br#"","items":[{"product_id":"123","quantity":1}]}"#);
    body
}

fn camera_order() -> Value {
    json!({"customer_id": "cust-limits", "items": [{"product_id": "123", "quantity": 1}]})
}

/// The JSON error of a body over `limit` (e.g. "2 MiB").
fn assert_too_large(body: &Value, limit: &str) {
    assert_error(body, "frontend");
    assert_eq!(body["error"], "payload too large", "{body}");
    assert_eq!(body["code"], "RESOURCE_EXHAUSTED", "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(limit) && detail.contains("MAX_BODY_BYTES"),
        "the detail names the limit ({limit}) and its setting: {body}"
    );
}

#[tokio::test]
async fn a_10_mib_order_is_413_json_naming_the_limit_and_a_normal_order_still_works() {
    let shop = Shop::start().await;

    let res = http()
        .post(shop.url("/api/orders"))
        .header("content-type", "application/json")
        .body(huge_order())
        .send()
        .await
        .expect("the frontend answers before the client gives up");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 413, "{body}");
    assert_too_large(&body, "2 MiB");

    // The same connection pool, the same server: a normal order is placed.
    let res = http()
        .post(shop.url("/api/orders"))
        .json(&camera_order())
        .send()
        .await
        .unwrap();
    let (status, order) = json_of(res).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["status"], "PAID", "{order}");
}

/// `curl --data-binary @file`, with a Content-Length and (for a chunked upload) without one:
/// the status curl prints and the JSON body it saved.
async fn curl_post(url: &str, file: &std::path::Path, extra: &[&str]) -> (String, Value) {
    let out_file = file.with_extension("out");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code}", "-H", "content-type: application/json"])
        .args(extra)
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs (it is installed with the workspace tools)");
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed ({code}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).expect("curl saved the body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (code, body)
}

#[tokio::test]
async fn curl_posting_10_mib_gets_the_413_json_with_or_without_a_content_length() {
    let shop = Shop::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("order.json");
    std::fs::write(&file, huge_order()).unwrap();

    let (code, body) = curl_post(&shop.url("/api/orders"), &file, &[]).await;
    assert_eq!(code, "413", "{body}");
    assert_too_large(&body, "2 MiB");

    let (code, body) = curl_post(&shop.url("/api/orders"), &file, &["-H", "transfer-encoding: chunked"]).await;
    assert_eq!(code, "413", "chunked: {body}");
    assert_too_large(&body, "2 MiB");

    let small = dir.path().join("small.json");
    std::fs::write(&small, camera_order().to_string()).unwrap();
    let (code, order) = curl_post(&shop.url("/api/orders"), &small, &[]).await;
    assert_eq!(code, "201", "{order}");
    assert_eq!(order["status"], "PAID", "{order}");
}

#[tokio::test]
async fn the_order_form_over_the_limit_is_the_413_error_page() {
    let shop = Shop::start().await;
    let huge = "x".repeat(TEN_MIB);
    let form = [("product_id", "1"), ("quantity", "1"), ("customer_id", huge.as_str())];
    let res = http().post(shop.url("/orders")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 413);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let html = res.text().await.unwrap();
    assert!(html.contains("Payload too large"), "{html}");
    assert!(html.contains("2 MiB") && html.contains("MAX_BODY_BYTES"), "{html}");
    assert_no_grpc_dump(&html);

    // The form itself still works.
    let form = [("product_id", "1"), ("quantity", "1"), ("customer_id", "form-limits")];
    let res = http().post(shop.url("/orders")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), 303);
}

#[tokio::test]
async fn max_body_bytes_sets_the_limit_named_in_the_413() {
    let shop = Shop::start().await;
    let mut cfg = frontend::Config::for_test(shop.product.url(), shop.order.url());
    cfg.max_body_bytes = 1 << 10;
    let fe = start_frontend(cfg).await;
    let url = format!("{}/api/orders", fe.url());

    let mut body = camera_order();
    body["customer_id"] = json!("c".repeat(2048));
    let res = http().post(&url).json(&body).send().await.unwrap();
    let (status, err) = json_of(res).await;
    assert_eq!(status, 413, "{err}");
    assert_too_large(&err, "1 KiB");

    // Under the limit: placed as usual.
    let res = http().post(&url).json(&camera_order()).send().await.unwrap();
    let (status, order) = json_of(res).await;
    assert_eq!(status, 201, "{order}");
}

/// One HTTP/1.1 request written whole (headers, then all of `body`, then nothing: `stall` keeps
/// the connection open without sending the rest of a larger `content-length`), then the answer
/// read to the end: as a client that does not read before it has sent (Python's http.client,
/// many scripts) sees it. The status and body, or why the exchange failed.
async fn send_then_read(
    addr: std::net::SocketAddr,
    content_length: usize,
    body: &[u8],
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {content_length}\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("sending the headers: {e}"))?;
    tcp.write_all(body)
        .await
        .map_err(|e| format!("sending the body: {e}"))?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn a_client_that_sends_all_10_mib_before_reading_still_reads_the_413() {
    let fe = start_frontend(frontend::Config::for_test(refused_addr().await, refused_addr().await)).await;
    let body = huge_order();
    for attempt in 0..3 {
        let (status, text) = send_then_read(fe.addr, body.len(), &body)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(status, 413, "{text}");
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert_too_large(&json, "2 MiB");
    }
}

#[tokio::test]
async fn a_client_that_stalls_past_the_limit_gets_the_413_after_linger_timeout_ms() {
    let mut cfg = frontend::Config::for_test(refused_addr().await, refused_addr().await);
    cfg.linger_timeout = std::time::Duration::from_millis(500);
    let fe = start_frontend(cfg).await;
    // 3 MiB of a declared 10 MiB, then nothing more.
    let body = huge_order();
    let started = std::time::Instant::now();
    let (status, text) = send_then_read(fe.addr, body.len(), &body[..3 << 20])
        .await
        .expect("the answer comes once the frontend stops waiting for the rest");
    let waited = started.elapsed();
    assert_eq!(status, 413, "{text}");
    assert!(
        waited >= std::time::Duration::from_millis(400) && waited < std::time::Duration::from_secs(5),
        "answered after LINGER_TIMEOUT_MS (500 ms), not before and not much later: {waited:?}"
    );
}
