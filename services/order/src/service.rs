//! `order.OrderService`. CreateOrder: validate, price every line with
//! ProductService, store the order and its lines in one transaction under
//! its idempotency key, charge the payment provider, record the outcome.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proto::{
    common::{Money, PageInfo, ServedBy},
    order::{
        CreateOrderRequest, GetOrderRequest, ListOrdersRequest, ListOrdersResponse, Order as OrderMsg, OrderLine,
        OrderStatus, order_service_server::OrderService,
    },
};
use telemetry::prometheus::{IntCounterVec, Opts, Registry};
use tonic::{
    Request, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use crate::{
    deadline::{self, Budget, CallerDeadline},
    health::DbState,
    payments::{Outcome, Payments},
    pricing::Pricing,
    request::{self, NewOrder},
    store::{Inserted, Line, Order, Settlement, Status as OrderState, Store},
};

pub struct OrderApi {
    store: Store,
    db_state: Arc<DbState>,
    pricing: Pricing,
    payments: Payments,
    served_by: ServedBy,
    product_timeout: Duration,
    payment_outcomes: IntCounterVec,
}

impl OrderApi {
    pub fn new(
        store: Store,
        db_state: Arc<DbState>,
        pricing: Pricing,
        payments: Payments,
        identity: &telemetry::Identity,
        product_timeout: Duration,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        let payment_outcomes = IntCounterVec::new(
            Opts::new(
                "order_payment_attempts_total",
                "Charge attempts at the payment provider by outcome: paid, failed, unknown.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(payment_outcomes.clone()))?;
        Ok(Self {
            store,
            db_state,
            pricing,
            payments,
            served_by: identity.into(),
            product_timeout,
            payment_outcomes,
        })
    }

    /// `order_payment_attempts_total`, which the settler's charges count in too.
    pub fn payment_attempts(&self) -> IntCounterVec {
        self.payment_outcomes.clone()
    }

    fn db_error(&self, e: sqlx::Error) -> Status {
        let label = self.store.label();
        match e {
            // The query itself failed: a bug or a schema problem, not an outage.
            sqlx::Error::Database(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => {
                tracing::error!(error = %e, "order database query failed");
                Status::internal(format!("order database ({label}): {e}"))
            }
            _ => Status::unavailable(format!("order database ({label}) is unreachable: {e}")),
        }
    }

    fn ensure_ready(&self) -> Result<(), Status> {
        if self.db_state.is_migrated() {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "order database ({}) is not ready: {}",
            self.store.label(),
            self.db_state.last_error()
        )))
    }

    /// An order already stored under the request's key: the same request
    /// resumes it (charging it if still PENDING), another one is refused.
    async fn resume(
        &self,
        existing: Order,
        hash: &str,
        incoming: &MetadataMap,
        caller: Option<CallerDeadline>,
    ) -> Result<OrderMsg, Status> {
        if existing.request_hash != hash {
            return Err(Status::already_exists(format!(
                "idempotency_key {:?} was already used for a different order (another customer or other items); \
                 use a new key for a new order, or resend exactly the same request to get the order it made",
                existing.idempotency_key
            )));
        }
        if existing.status == OrderState::Pending {
            return self.charge(existing, incoming, caller).await;
        }
        Ok(self.message(existing))
    }

    /// Charges a PENDING order and records the outcome. An unknown outcome
    /// (timeout, provider down) leaves it PENDING: the retry with the same
    /// idempotency key comes back here and sends the same payment key.
    async fn charge(
        &self,
        order: Order,
        incoming: &MetadataMap,
        caller: Option<CallerDeadline>,
    ) -> Result<OrderMsg, Status> {
        let budget = Budget::new(Instant::now(), self.payments.timeout(), caller);
        let outcome = if budget.given.is_zero() {
            Outcome::TimedOut {
                why: "the caller's deadline left no time to charge".into(),
            }
        } else {
            self.payments.charge(&order, incoming, budget.given).await
        };
        self.payment_outcomes.with_label_values(&[outcome.label()]).inc();
        let settlement = match outcome {
            Outcome::Paid { charge_id } => Settlement::Paid { charge_id },
            Outcome::Failed { reason } => Settlement::Failed { reason },
            // The caller's deadline is up: DEADLINE_EXCEEDED now, before
            // tonic's timers end the call as CANCELLED.
            Outcome::TimedOut { why } if budget.caller.is_some() => {
                tracing::warn!(order_id = %order.id, %why, "the caller's deadline ran out at the payment provider; the order stays PENDING");
                let hop = format!("payment ({})", self.payments.base());
                let then = format!("{UNSETTLED}. {}", pending_note(&order));
                return Err(with_order_id(&order, deadline::exceeded(&hop, &budget, &then)));
            }
            Outcome::Unknown { why } | Outcome::TimedOut { why } => {
                tracing::warn!(order_id = %order.id, %why, "payment outcome unknown; the order stays PENDING");
                return Err(self.retry_later(
                    &order,
                    format!("payment ({}): {why}; {UNSETTLED}", self.payments.base()),
                ));
            }
        };
        match self.store.settle(&order.id, &settlement, now_ms()).await {
            // false: a concurrent retry settled it first, with the same charge.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, ?settlement, "charged but not recorded; the order stays PENDING");
                let status = self.db_error(e);
                return Err(self.retry_later(
                    &order,
                    format!("the payment outcome could not be recorded: {}", status.message()),
                ));
            }
        }
        match self.store.get(&order.id).await {
            Ok(Some(o)) => Ok(self.message(o)),
            Ok(None) => Err(Status::internal(format!("order {} vanished after payment", order.id))),
            Err(e) => Err(self.db_error(e)),
        }
    }

    /// UNAVAILABLE for a PENDING order, telling the caller how to finish it;
    /// the order id travels in the `x-order-id` metadata too.
    fn retry_later(&self, order: &Order, why: String) -> Status {
        with_order_id(order, Status::unavailable(format!("{why}. {}", pending_note(order))))
    }

    fn message(&self, o: Order) -> OrderMsg {
        let money = |micros| Some(Money::from_micros(&o.currency, micros));
        let status = match o.status {
            OrderState::Pending => OrderStatus::Pending,
            OrderState::Paid => OrderStatus::Paid,
            OrderState::PaymentFailed => OrderStatus::PaymentFailed,
        };
        OrderMsg {
            lines: o
                .lines
                .iter()
                .map(|l: &Line| OrderLine {
                    product_id: l.product_id.clone(),
                    product_name: l.product_name.clone(),
                    quantity: l.quantity as i32,
                    unit_price: money(l.unit_price_micros),
                    line_total: money(l.line_total_micros),
                    priced_by: Some(l.priced_by.clone()),
                })
                .collect(),
            total: money(o.total_micros),
            created_at: Some(prost_types::Timestamp {
                seconds: o.created_at_ms.div_euclid(1000),
                nanos: (o.created_at_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            id: o.id,
            customer_id: o.customer_id,
            status: status as i32,
            payment_reference: o.payment_reference,
            failure_reason: o.failure_reason,
            idempotency_key: o.idempotency_key,
            served_by: Some(self.served_by.clone()),
        }
    }
}

/// What an unknown payment outcome means for the charge.
const UNSETTLED: &str = "the charge may or may not have been made";

/// How the caller finishes a PENDING order.
fn pending_note(order: &Order) -> String {
    format!(
        "Order {} is stored as PENDING and the customer is charged at most once: \
         retry CreateOrder with the same idempotency_key {:?} to finish it",
        order.id, order.idempotency_key
    )
}

/// `status` with the order's id in the `x-order-id` metadata.
fn with_order_id(order: &Order, mut status: Status) -> Status {
    if let Ok(v) = MetadataValue::try_from(order.id.as_str()) {
        status.metadata_mut().insert("x-order-id", v);
    }
    status
}

/// The new order from the request and its prices; lines keep the request's order.
fn build_order(
    new: &NewOrder,
    hash: String,
    priced: &std::collections::HashMap<String, crate::pricing::Priced>,
) -> Result<Order, Status> {
    let mut currency: Option<&str> = None;
    let mut lines = Vec::with_capacity(new.items.len());
    let mut total: i64 = 0;
    for (i, it) in new.items.iter().enumerate() {
        let p = priced
            .get(&it.product_id)
            .ok_or_else(|| Status::internal(format!("items[{i}] was not priced")))?;
        match currency {
            None => currency = Some(&p.currency),
            Some(c) if c != p.currency => {
                return Err(Status::failed_precondition(format!(
                    "items[{i}].product_id {:?} is priced in {} but items[0] in {c}; an order has one currency",
                    it.product_id, p.currency
                )));
            }
            Some(_) => {}
        }
        let line_total = p
            .unit_price_micros
            .checked_mul(it.quantity)
            .ok_or_else(|| Status::invalid_argument(format!("items[{i}]: the line total is too large")))?;
        total = total
            .checked_add(line_total)
            .ok_or_else(|| Status::invalid_argument("the order total is too large"))?;
        lines.push(Line {
            line_no: i as i64,
            product_id: it.product_id.clone(),
            product_name: p.name.clone(),
            quantity: it.quantity,
            unit_price_micros: p.unit_price_micros,
            line_total_micros: line_total,
            priced_by: p.priced_by.clone(),
        });
    }
    Ok(Order {
        id: uuid::Uuid::new_v4().to_string(),
        idempotency_key: new.idempotency_key.clone(),
        request_hash: hash,
        customer_id: new.customer_id.clone(),
        status: OrderState::Pending,
        currency: currency.unwrap_or("USD").to_owned(),
        total_micros: total,
        payment_reference: String::new(),
        failure_reason: String::new(),
        created_at_ms: now_ms(),
        lines,
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The calls themselves; the trait below bounds each by its caller's deadline.
impl OrderApi {
    async fn create(
        &self,
        req: Request<CreateOrderRequest>,
        started: Instant,
        caller: Option<CallerDeadline>,
    ) -> Result<OrderMsg, Status> {
        let incoming = req.metadata().clone();
        let new = NewOrder::validate(req.get_ref())?;
        self.ensure_ready()?;
        let hash = new.hash();

        // A retry finds its order here without calling ProductService again.
        // Correctness does not rest on this read: the UNIQUE key below does.
        if let Some(existing) = self
            .store
            .find_by_key(&new.idempotency_key)
            .await
            .map_err(|e| self.db_error(e))?
        {
            return self.resume(existing, &hash, &incoming, caller).await;
        }

        let product_budget = Budget::new(started, self.product_timeout, caller);
        let priced = self.pricing.price(&new.items, &incoming, &product_budget).await?;
        let order = build_order(&new, hash.clone(), &priced)?;

        match self.store.insert(&order).await.map_err(|e| self.db_error(e))? {
            Inserted::Created => {
                tracing::info!(order_id = %order.id, customer_id = %order.customer_id, total_micros = order.total_micros, "order stored");
                self.charge(order, &incoming, caller).await
            }
            Inserted::KeyTaken => {
                // A concurrent call with the same key committed first: its order is the one.
                let existing = self
                    .store
                    .find_by_key(&new.idempotency_key)
                    .await
                    .map_err(|e| self.db_error(e))?
                    .ok_or_else(|| Status::aborted("the idempotency key was taken and released; retry"))?;
                self.resume(existing, &hash, &incoming, caller).await
            }
        }
    }

    async fn get(&self, req: Request<GetOrderRequest>) -> Result<OrderMsg, Status> {
        let id = &req.get_ref().id;
        request::identifier("id", id, request::MAX_ID_CHARS).map_err(Status::invalid_argument)?;
        self.ensure_ready()?;
        match self.store.get(id).await.map_err(|e| self.db_error(e))? {
            Some(o) => Ok(self.message(o)),
            None => Err(Status::not_found(format!("no order with id {id:?}"))),
        }
    }

    async fn list(&self, req: Request<ListOrdersRequest>) -> Result<ListOrdersResponse, Status> {
        let r = req.get_ref();
        let (page_size, page_number) = request::page(r)?;
        self.ensure_ready()?;
        let total = self.store.count(&r.customer_id).await.map_err(|e| self.db_error(e))?;
        let offset = i64::from(page_number - 1) * i64::from(page_size);
        let orders = self
            .store
            .list(&r.customer_id, i64::from(page_size), offset)
            .await
            .map_err(|e| self.db_error(e))?;
        let total_pages = (total + i64::from(page_size) - 1) / i64::from(page_size);
        Ok(ListOrdersResponse {
            orders: orders.into_iter().map(|o| self.message(o)).collect(),
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            page: Some(PageInfo {
                page_size,
                page_number,
                total_pages: i32::try_from(total_pages).unwrap_or(i32::MAX),
                has_next_page: i64::from(page_number) < total_pages,
            }),
            served_by: Some(self.served_by.clone()),
        })
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn create_order(&self, req: Request<CreateOrderRequest>) -> Result<Response<OrderMsg>, Status> {
        let started = Instant::now();
        let caller = CallerDeadline::from_metadata(req.metadata(), started);
        let unfinished = "the order was finished; if it was stored, retry CreateOrder with the same \
                          idempotency_key to finish it (the customer is charged at most once)";
        deadline::within(caller, unfinished, self.create(req, started, caller))
            .await
            .map(Response::new)
    }

    async fn get_order(&self, req: Request<GetOrderRequest>) -> Result<Response<OrderMsg>, Status> {
        let caller = CallerDeadline::from_metadata(req.metadata(), Instant::now());
        deadline::within(caller, "the order was read", self.get(req))
            .await
            .map(Response::new)
    }

    async fn list_orders(&self, req: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let caller = CallerDeadline::from_metadata(req.metadata(), Instant::now());
        deadline::within(caller, "the orders were read", self.list(req))
            .await
            .map(Response::new)
    }
}
