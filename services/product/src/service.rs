//! `product.ProductService`: the unary RPCs here, the streams in `watch` and `agents`.

use std::{pin::Pin, sync::Arc};

use futures_util::Stream;
use proto::{
    common::{Money, PageInfo, ServedBy},
    product::{
        AgentPing, AgentPong, GetProductRequest, ListProductsRequest, ListProductsResponse, PriceUpdate, Product,
        Rating, WatchPricesRequest, product_service_server::ProductService,
    },
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    agents,
    catalog::{Catalog, Item},
    faults::Faults,
    watch,
};

pub const DEFAULT_PAGE_SIZE: i32 = 10;
pub const MAX_PAGE_SIZE: i32 = 100;

pub struct ProductApi {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) served_by: ServedBy,
    faults: Faults,
    ratings: bool,
}

impl ProductApi {
    pub fn new(catalog: Arc<Catalog>, identity: &telemetry::Identity, faults: Faults) -> Self {
        Self {
            catalog,
            served_by: identity.into(),
            faults,
            // v1 is the original release; every later version shows ratings.
            ratings: identity.version != "v1",
        }
    }

    fn product(&self, item: &Item, served_by: Option<ServedBy>) -> Product {
        Product {
            id: item.id.clone(),
            name: item.name.clone(),
            description: item.description.clone(),
            price: Some(Money::from_micros(&self.catalog.currency, item.price_micros)),
            stock: item.stock,
            categories: item.categories.clone(),
            rating: if self.ratings {
                item.rating.map(|r| Rating {
                    average: r.average,
                    count: r.count,
                })
            } else {
                None
            },
            served_by,
        }
    }

    /// The catalog entry for `id`, or the status a caller should see.
    pub(crate) fn lookup(&self, field: &str, id: &str) -> Result<&Item, Status> {
        proto::validate::product_id(field, id).map_err(Status::invalid_argument)?;
        self.catalog
            .get(id)
            .ok_or_else(|| Status::not_found(format!("{field}: no product with id {id:?}")))
    }
}

/// The response stream type of both streaming RPCs.
pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ProductService for ProductApi {
    async fn get_product(&self, req: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        self.faults.apply().await?;
        let item = self.lookup("product_id", &req.get_ref().product_id)?;
        Ok(Response::new(self.product(item, Some(self.served_by.clone()))))
    }

    async fn list_products(&self, req: Request<ListProductsRequest>) -> Result<Response<ListProductsResponse>, Status> {
        self.faults.apply().await?;
        let r = req.get_ref();
        let page_size = match r.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "page_size {n} is out of range: use 1 to {MAX_PAGE_SIZE}, or 0 for the default of {DEFAULT_PAGE_SIZE}"
                )));
            }
        };
        let page_number = r.page_number.unwrap_or(1);
        if page_number < 1 {
            return Err(Status::invalid_argument(format!(
                "page_number {page_number} is out of range: pages are numbered from 1"
            )));
        }
        let total = self.catalog.len();
        let size = page_size as usize;
        let start = (page_number as usize - 1).saturating_mul(size);
        let products = self
            .catalog
            .items()
            .iter()
            .skip(start)
            .take(size)
            .map(|i| self.product(i, None))
            .collect();
        let total_pages = total.div_ceil(size);
        Ok(Response::new(ListProductsResponse {
            products,
            total_count: total as i32,
            page: Some(PageInfo {
                page_size,
                page_number,
                total_pages: total_pages as i32,
                has_next_page: (page_number as usize) < total_pages,
            }),
            served_by: Some(self.served_by.clone()),
        }))
    }

    type WatchPricesStream = BoxStream<PriceUpdate>;

    async fn watch_prices(
        &self,
        req: Request<WatchPricesRequest>,
    ) -> Result<Response<Self::WatchPricesStream>, Status> {
        watch::start(self, req.into_inner()).map(Response::new)
    }

    type AgentSyncStream = BoxStream<AgentPong>;

    async fn agent_sync(&self, req: Request<Streaming<AgentPing>>) -> Result<Response<Self::AgentSyncStream>, Status> {
        agents::start(self.served_by.clone(), req).map(Response::new)
    }
}
