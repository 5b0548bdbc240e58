//! The ProductService hop: one long-lived lazy channel, and per line a
//! GetProduct that carries the caller's trace, request id and routing
//! headers and no more time than the caller has left.

use std::{collections::HashMap, error::Error as _, time::Duration};

use futures_util::future::join_all;
use proto::{
    common::ServedBy,
    product::{GetProductRequest, product_service_client::ProductServiceClient},
};
use tonic::{Code, Request, Status, metadata::MetadataMap, transport::Channel};
use tracing::{Instrument, field::Empty};

use crate::{
    deadline::{self, Budget},
    request::Item,
};

/// What a failed pricing leaves behind.
const NOTHING_DONE: &str = "nothing was stored or charged";

/// What ProductService said about one product.
#[derive(Debug, Clone)]
pub struct Priced {
    pub name: String,
    pub unit_price_micros: i64,
    pub currency: String,
    pub priced_by: ServedBy,
}

#[derive(Clone)]
pub struct Pricing {
    client: ProductServiceClient<Channel>,
    addr: String,
}

impl Pricing {
    /// Connects lazily: the service starts (and reports its own health)
    /// while ProductService is still down.
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .map_err(|e| anyhow::anyhow!("invalid PRODUCT_SERVICE_ADDR {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: ProductServiceClient::new(channel),
            addr: addr.to_owned(),
        })
    }

    /// Prices every distinct product of `items` concurrently, all within
    /// `budget`. The error names the first failing line.
    pub async fn price(
        &self,
        items: &[Item],
        incoming: &MetadataMap,
        budget: &Budget,
    ) -> Result<HashMap<String, Priced>, Status> {
        let mut first_line: Vec<(&str, usize)> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if !first_line.iter().any(|(p, _)| *p == it.product_id) {
                first_line.push((&it.product_id, i));
            }
        }
        let calls = first_line
            .iter()
            .map(|(id, line)| self.get_product(id, *line, incoming, budget));
        let results = join_all(calls).await;
        let mut priced = HashMap::with_capacity(results.len());
        for ((id, _), r) in first_line.iter().zip(results) {
            priced.insert((*id).to_owned(), r?);
        }
        Ok(priced)
    }

    async fn get_product(
        &self,
        id: &str,
        line: usize,
        incoming: &MetadataMap,
        budget: &Budget,
    ) -> Result<Priced, Status> {
        let field = format!("items[{line}].product_id");
        let remaining = budget.remaining();
        if remaining.is_zero() {
            return Err(self.deadline_exceeded(budget));
        }
        let span = tracing::info_span!(
            "product.ProductService/GetProduct",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "product.ProductService",
            rpc.method = "GetProduct",
            rpc.grpc.status_code = Empty,
            server.address = %self.addr,
            product_id = %id,
        );
        let mut req = Request::new(GetProductRequest {
            product_id: id.to_owned(),
        });
        telemetry::propagation::forward_metadata(incoming, req.metadata_mut());
        {
            // The client span is the parent the product server continues.
            let _in = span.enter();
            telemetry::propagation::inject_metadata(req.metadata_mut());
        }
        req.set_timeout(remaining);
        let mut client = self.client.clone();
        // The local timer bounds connecting too, which grpc-timeout does not.
        let res = tokio::time::timeout(remaining, client.get_product(req))
            .instrument(span.clone())
            .await;
        let res = match res {
            Ok(r) => r,
            Err(_) => {
                span.record("rpc.grpc.status_code", Code::DeadlineExceeded as i32);
                return Err(self.deadline_exceeded(budget));
            }
        };
        let code = res.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        span.record("rpc.grpc.status_code", code as i32);
        let p = match res {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                return Err(Status::invalid_argument(format!("{field} {id:?}: no such product")));
            }
            Err(s) if s.code() == Code::InvalidArgument => {
                return Err(Status::invalid_argument(format!(
                    "{field} {id:?}: product-service refused it: {}",
                    s.message()
                )));
            }
            Err(s) if s.code() == Code::DeadlineExceeded => return Err(self.deadline_exceeded(budget)),
            // tonic's client reports its own expired grpc-timeout as CANCELLED.
            Err(s) if s.code() == Code::Cancelled && budget.is_spent() => {
                return Err(self.deadline_exceeded(budget));
            }
            Err(s) => return Err(self.unavailable(&s)),
        };
        let Some(price) = p.price else {
            return Err(Status::failed_precondition(format!(
                "{field} {id:?}: product-service ({}) returned the product without a price",
                self.addr
            )));
        };
        Ok(Priced {
            name: p.name,
            unit_price_micros: price.to_micros(),
            currency: price.currency_code,
            priced_by: p.served_by.unwrap_or_default(),
        })
    }

    fn unavailable(&self, s: &Status) -> Status {
        let mut why = format!("{:?}: {}", s.code(), s.message());
        // tonic nests the same words several times ("tcp connect error: transport error: tcp
        // connect error: ..."): the one chain formatter keeps each cause once.
        if let Some(source) = s.source() {
            let chain = telemetry::error_chain(source);
            if !why.contains(&chain) {
                why.push_str(": ");
                why.push_str(&chain);
            }
        }
        Status::unavailable(format!("product-service ({}): {why}; {NOTHING_DONE}", self.addr))
    }

    fn deadline_exceeded(&self, budget: &Budget) -> Status {
        deadline::exceeded(&format!("product-service ({})", self.addr), budget, NOTHING_DONE)
    }
}
