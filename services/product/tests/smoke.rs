mod common;

use proto::product::GetProductRequest;

#[tokio::test]
async fn get_product_123_names_version_and_pod() {
    let h = common::start("v2", "product-v2-abc-1").await;
    let mut c = common::client(&h).await;
    let res = c.get_product(GetProductRequest { product_id: "123".into() }).await.unwrap();
    assert_eq!(res.metadata().get("x-served-by").unwrap(), "product-v2-abc-1");
    let p = res.into_inner();
    assert_eq!(p.id, "123");
    assert_eq!(p.served_by.unwrap().version, "v2");
    assert!(p.rating.is_some());
    h.shutdown().await.unwrap();
}
