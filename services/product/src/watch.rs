//! `WatchPrices`: a price feed. Prices follow a slow wave around the list
//! price and stock drifts, both pure functions of time, so every watcher and
//! every pod of a version report the same figures at the same moment.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::{
    common::{Money, ServedBy},
    product::{PriceUpdate, WatchPricesRequest},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::{
    catalog::Item,
    service::{BoxStream, ProductApi},
};

pub const DEFAULT_INTERVAL_MS: u32 = 1000;
pub const MIN_INTERVAL_MS: u32 = 50;
pub const MAX_INTERVAL_MS: u32 = 60_000;

pub(crate) fn start(api: &ProductApi, req: WatchPricesRequest) -> Result<BoxStream<PriceUpdate>, Status> {
    let interval_ms = match req.interval_ms {
        0 => DEFAULT_INTERVAL_MS,
        n if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&n) => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "interval_ms {n} is out of range: use {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}, or 0 for {DEFAULT_INTERVAL_MS}"
            )));
        }
    };
    let items: Vec<Item> = if req.product_ids.is_empty() {
        api.catalog.items().to_vec()
    } else {
        req.product_ids
            .iter()
            .enumerate()
            .map(|(i, id)| api.lookup(&format!("product_ids[{i}]"), id).cloned())
            .collect::<Result<_, _>>()?
    };
    let currency = api.catalog.currency.clone();
    let served_by = api.served_by.clone();
    let (tx, rx) = mpsc::channel(items.len().max(1) * 2);
    tracing::info!(products = items.len(), interval_ms, "price watch opened");
    tokio::spawn(
        async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms.into()));
            let mut sequence = 0u64;
            'feed: loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = ticker.tick() => {}
                }
                let now = SystemTime::now();
                for item in &items {
                    sequence += 1;
                    let update = update(item, &currency, now, sequence, &served_by);
                    if tx.send(Ok(update)).await.is_err() {
                        break 'feed;
                    }
                }
            }
            tracing::info!(updates = sequence, "price watch closed");
        }
        .in_current_span(),
    );
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn update(item: &Item, currency: &str, now: SystemTime, sequence: u64, served_by: &ServedBy) -> PriceUpdate {
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    // A per-product phase so products do not move in lockstep.
    let phase = item.id.bytes().map(f64::from).sum::<f64>();
    let wave = (t / 30.0 + phase).sin();
    let price = (item.price_micros as f64 * (1.0 + 0.05 * wave)).round() as i64;
    let stock = (f64::from(item.stock) * (0.8 + 0.2 * (t / 45.0 + phase).cos()))
        .round()
        .max(0.0) as i32;
    PriceUpdate {
        product_id: item.id.clone(),
        price: Some(Money::from_micros(currency, price)),
        stock,
        sequence,
        at: Some(now.into()),
        served_by: Some(served_by.clone()),
    }
}
