//! The pages in a real browser: headless Chromium renders `/` (its DOM must
//! hold the products) and screenshots `/` and `/mesh`. The screenshots are
//! kept under target/ so a person can look at them.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::*;
use tokio::process::Command;

/// Chromium's binary: `CHROMIUM` when set, else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("chromium is not installed (needed for the headless browser test): `make tools` installs it")
        })
}

/// Runs headless Chromium with a fresh profile and returns its stdout.
async fn run_chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Where the screenshots go: target/frontend-screenshots/, kept after the run.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/frontend-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(url: &str, name: &str, min_bytes: usize) -> Vec<u8> {
    let path = screenshot_dir().join(name);
    let _ = std::fs::remove_file(&path);
    run_chromium(&[format!("--screenshot={}", path.display()), url.to_owned()]).await;
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
    // A blank 1280x900 PNG compresses to a few KB; a rendered page is far more.
    assert!(
        png.len() > min_bytes,
        "{name} is only {} bytes: a blank page?",
        png.len()
    );
    png
}

#[tokio::test]
async fn chromium_renders_the_products_and_the_mesh_chart() {
    let v2 = start_product("v2", "product-v2-7c9f8d6b5-x2k4q").await;
    let port = v2.addr.port();
    let fe = frontend_over(&v2).await;
    let home = format!("{}/", fe.url());

    let dom = run_chromium(&["--dump-dom".to_owned(), home.clone()]).await;
    assert!(
        dom.contains("data-product-id=\"123\""),
        "product 123 is not in the DOM: {dom}"
    );
    assert!(dom.contains("Vintage Film Camera") && dom.contains("Espresso Machine"));
    assert!(dom.contains("served by product v2 · pod product-v2-7c9f8d6b5-x2k4q"));
    assert_eq!(
        dom.matches("class=\"card product\"").count(),
        21,
        "every product is rendered"
    );

    screenshot(&home, "home.png", 60_000).await;
    screenshot(&format!("{}/products/123", fe.url()), "product.png", 20_000).await;

    // Traffic for the chart: some calls to v2, then v1 takes over the
    // address (as in a rollout), so the chart has two versions to split.
    for id in 1..=9 {
        assert_eq!(get(&format!("{}/api/products/{id}", fe.url())).await.status(), 200);
    }
    v2.shutdown().await.unwrap();
    let mut cfg = product::Config::for_test("v1", "product-v1-5d8c7b9f4-q7m2z");
    cfg.port = port;
    let v1 = start_product_with(cfg).await;
    for id in 1..=40 {
        get(&format!("{}/api/products/{}", fe.url(), id % 20 + 1)).await;
    }
    let dom = run_chromium(&["--dump-dom".to_owned(), format!("{}/mesh", fe.url())]).await;
    assert!(dom.contains("product-v1-5d8c7b9f4-q7m2z") && dom.contains("product-v2-7c9f8d6b5-x2k4q"));
    assert!(dom.contains("<svg"), "the chart is in the DOM");
    screenshot(&format!("{}/mesh", fe.url()), "mesh.png", 40_000).await;

    // With product-service gone, the page names the hop and what to check.
    v1.shutdown().await.unwrap();
    let dom = run_chromium(&["--dump-dom".to_owned(), home.clone()]).await;
    assert!(dom.contains("product-service is unavailable"), "{dom}");
    screenshot(&home, "error.png", 10_000).await;
}

#[tokio::test]
async fn chromium_renders_an_order_page() {
    let shop = Shop::start().await;
    let res = http()
        .post(shop.url("/api/orders"))
        .header("Idempotency-Key", "browser-order-1")
        .json(&serde_json::json!({
            "customer_id": "browser-customer",
            "items": [{"product_id": "123", "quantity": 1}, {"product_id": "4", "quantity": 2}],
        }))
        .send()
        .await
        .unwrap();
    let (status, order) = json_of(res).await;
    assert_eq!(status, 201, "{order}");
    let url = shop.url(&format!("/orders/{}", order["id"].as_str().unwrap()));

    let dom = run_chromium(&["--dump-dom".to_owned(), url.clone()]).await;
    assert!(dom.contains("Vintage Film Camera") && dom.contains("Cast Iron Skillet"));
    assert!(dom.contains("$428.90"), "the total: {dom}");
    screenshot(&url, "order.png", 20_000).await;
}
