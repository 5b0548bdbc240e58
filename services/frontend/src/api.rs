//! The JSON API for curl: `/api/products`, `/api/products/{id}`,
//! `POST /api/orders`, `/api/orders/{id}`. Errors are always the JSON of
//! [`crate::errors::ErrorBody`], even when axum itself rejects the input
//! ([`Checked`]: 400, or 413 for a body over `MAX_BODY_BYTES`).

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use proto::order::{CreateOrderRequest, OrderItem};
use serde::Deserialize;

use crate::{
    errors::{ApiError, AppError},
    extract::Checked,
    input,
    state::AppState,
    views::{OrderView, ProductListView, ProductView},
};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    page_size: Option<String>,
}

pub async fn list_products(
    State(s): State<AppState>,
    headers: HeaderMap,
    Checked(Query(q)): Checked<Query<ListQuery>>,
) -> Result<Json<ProductListView>, ApiError> {
    let page_size = input::page_size(q.page_size.as_deref())?;
    let page = input::page(q.page.as_deref())?;
    let reply = s.backends.list_products(&headers, page_size, page).await?;
    Ok(Json(reply.message.into()))
}

pub async fn get_product(
    State(s): State<AppState>,
    headers: HeaderMap,
    Checked(Path(id)): Checked<Path<String>>,
) -> Result<Json<ProductView>, ApiError> {
    let reply = s.backends.get_product(&headers, &id).await?;
    Ok(Json(reply.message.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    #[serde(default)]
    idempotency_key: Option<String>,
    customer_id: String,
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    product_id: String,
    quantity: i32,
}

/// 201 with the order and its `Location`. A repeated idempotency key
/// answers the order it already made.
pub async fn create_order(
    State(s): State<AppState>,
    headers: HeaderMap,
    Checked(Json(body)): Checked<Json<CreateOrder>>,
) -> Result<Response, ApiError> {
    let req = CreateOrderRequest {
        idempotency_key: input::idempotency_key(body.idempotency_key.as_deref(), &headers)?,
        customer_id: body.customer_id,
        items: body
            .items
            .into_iter()
            .map(|i| OrderItem {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect(),
    };
    let reply = s.backends.create_order(&headers, req).await?;
    let order = OrderView::from(reply.message);
    let location = format!("/api/orders/{}", input::path_segment(&order.id));
    let mut res = (StatusCode::CREATED, Json(order)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

pub async fn get_order(
    State(s): State<AppState>,
    headers: HeaderMap,
    Checked(Path(id)): Checked<Path<String>>,
) -> Result<Json<OrderView>, ApiError> {
    let reply = s.backends.get_order(&headers, &id).await?;
    Ok(Json(reply.message.into()))
}

/// Unknown paths under `/api` answer JSON, like the rest of the API.
pub fn not_found(path: &str) -> Response {
    ApiError(AppError::not_found(format!("no API route at {path}"))).into_response()
}
