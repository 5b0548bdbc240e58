//! The HTML pages: `/`, `/products/{id}`, `POST /orders`, `/orders/{id}`,
//! `/mesh`, and the friendly error page any of them can end in. What axum
//! refuses ([`Checked`]: 400, or 413 for a body over `MAX_BODY_BYTES`) is
//! shown on that page too.

use axum::{
    Form,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::{Html, IntoResponse, Redirect, Response},
};
use minijinja::context;
use proto::order::{CreateOrderRequest, OrderItem};
use serde::Deserialize;

use crate::{
    errors::{ApiError, AppError},
    extract::Checked,
    input,
    state::{AppState, request_id},
    views::{OrderView, ProductListView, ProductView},
};

/// Products per page on `/`: the whole embedded catalog (21) fits on one.
const HOME_PAGE_SIZE: i32 = 24;

#[derive(Debug, Deserialize)]
pub struct HomeQuery {
    page: Option<String>,
}

pub async fn home(
    State(s): State<AppState>,
    headers: HeaderMap,
    query: Result<Checked<Query<HomeQuery>>, ApiError>,
) -> Response {
    let result = async {
        let Checked(Query(q)) = query?;
        let page = input::page(q.page.as_deref())?;
        let reply = s.backends.list_products(&headers, HOME_PAGE_SIZE, page).await?;
        let list = ProductListView::from(reply.message);
        s.templates.render(
            "home.html",
            context! {
                frontend => &s.frontend,
                nav => "products",
                request_id => request_id(&headers),
                list => list,
            },
        )
    }
    .await;
    page_or_error(&s, &headers, result)
}

pub async fn product(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Checked<Path<String>>, ApiError>,
) -> Response {
    let result = async {
        let Checked(Path(id)) = id?;
        let reply = s.backends.get_product(&headers, &id).await?;
        let product = ProductView::from(reply.message);
        s.templates.render(
            "product.html",
            context! {
                frontend => &s.frontend,
                nav => "products",
                request_id => request_id(&headers),
                product => product,
                idempotency_key => uuid::Uuid::new_v4().to_string(),
            },
        )
    }
    .await;
    page_or_error(&s, &headers, result)
}

/// The product page's order form. Every field is a string so that a bad
/// value gets a message naming the field instead of a generic rejection.
#[derive(Debug, Deserialize)]
pub struct OrderForm {
    product_id: String,
    quantity: String,
    customer_id: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

pub async fn place_order(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: Result<Checked<Form<OrderForm>>, ApiError>,
) -> Response {
    let result = async {
        let Checked(Form(f)) = form?;
        let quantity = input::quantity(&f.quantity)?;
        let idempotency_key = input::idempotency_key(f.idempotency_key.as_deref(), &headers)?;
        let req = CreateOrderRequest {
            idempotency_key,
            customer_id: f.customer_id.trim().to_owned(),
            items: vec![OrderItem {
                product_id: f.product_id,
                quantity,
            }],
        };
        let reply = s.backends.create_order(&headers, req).await?;
        Ok(reply.message.id)
    }
    .await;
    match result {
        // 303: the browser GETs the order page, and a reload there does not
        // resubmit the form.
        Ok(id) => Redirect::to(&format!("/orders/{}", input::path_segment(&id))).into_response(),
        Err(e) => error_page(&s, &headers, &e),
    }
}

pub async fn order(
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Checked<Path<String>>, ApiError>,
) -> Response {
    let result = async {
        let Checked(Path(id)) = id?;
        let reply = s.backends.get_order(&headers, &id).await?;
        s.templates.render(
            "order.html",
            context! {
                frontend => &s.frontend,
                nav => "",
                request_id => request_id(&headers),
                order => OrderView::from(reply.message),
            },
        )
    }
    .await;
    page_or_error(&s, &headers, result)
}

pub async fn mesh(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let result = s.templates.render(
        "mesh.html",
        context! {
            frontend => &s.frontend,
            nav => "mesh",
            request_id => request_id(&headers),
            mesh => s.mesh.view(),
        },
    );
    page_or_error(&s, &headers, result)
}

/// Unknown paths outside `/api` get the HTML error page.
pub fn not_found(s: &AppState, headers: &HeaderMap, path: &str) -> Response {
    error_page(s, headers, &AppError::not_found(format!("no page at {path}")))
}

fn page_or_error(s: &AppState, headers: &HeaderMap, result: Result<String, AppError>) -> Response {
    match result {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(s, headers, &e),
    }
}

/// The friendly error page: which hop failed, what to check, the request id.
pub fn error_page(s: &AppState, headers: &HeaderMap, e: &AppError) -> Response {
    let status = e.http_status();
    let body = e.body();
    let html = s.templates.render(
        "error.html",
        context! {
            frontend => &s.frontend,
            nav => "",
            request_id => request_id(headers),
            status => status.as_u16(),
            summary => body.error,
            hop => body.hop,
            code => body.code,
            detail => body.detail,
            advice => e.advice(),
        },
    );
    match html {
        Ok(html) => (status, Html(html)).into_response(),
        // The error page itself failed: still say what happened, plainly.
        Err(_) => (status, format!("{}\n{}\n", e.advice(), e.detail)).into_response(),
    }
}
