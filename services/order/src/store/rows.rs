//! Hand-written row mapping (sqlx without macros), the same for both drivers.

use proto::common::ServedBy;
use sqlx::{Row as _, postgres::PgRow, sqlite::SqliteRow};

use super::model::{Line, Order, Status};

/// Typed column reads that both drivers' rows provide.
pub trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
columns_for!(SqliteRow);
columns_for!(PgRow);

/// Rows of `orders JOIN order_lines`, ordered by order then line, into orders.
pub fn group_orders<R: Columns>(rows: &[R]) -> Result<Vec<Order>, sqlx::Error> {
    let mut out: Vec<Order> = Vec::new();
    for row in rows {
        let id = row.text("id")?;
        if out.last().is_none_or(|o| o.id != id) {
            let status = row.text("status")?;
            out.push(Order {
                id,
                idempotency_key: row.text("idempotency_key")?,
                request_hash: row.text("request_hash")?,
                customer_id: row.text("customer_id")?,
                status: Status::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: "status".into(),
                    source: format!("unknown order status {status:?}").into(),
                })?,
                currency: row.text("currency")?,
                total_micros: row.int("total_micros")?,
                payment_reference: row.text("payment_reference")?,
                failure_reason: row.text("failure_reason")?,
                created_at_ms: row.int("created_at_ms")?,
                lines: Vec::new(),
            });
        }
        let line = Line {
            line_no: row.int("line_no")?,
            product_id: row.text("product_id")?,
            product_name: row.text("product_name")?,
            quantity: row.int("quantity")?,
            unit_price_micros: row.int("unit_price_micros")?,
            line_total_micros: row.int("line_total_micros")?,
            priced_by: ServedBy {
                service: row.text("priced_by_service")?,
                version: row.text("priced_by_version")?,
                pod: row.text("priced_by_pod")?,
                node: row.text("priced_by_node")?,
                zone: row.text("priced_by_zone")?,
                namespace: row.text("priced_by_namespace")?,
            },
        };
        if let Some(o) = out.last_mut() {
            o.lines.push(line);
        }
    }
    Ok(out)
}
