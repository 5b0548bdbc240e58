//! What the API answers and the templates draw, made from the backends'
//! protobuf messages. One set of types serves both, so a page never shows
//! something the JSON does not.

use proto::{
    common::{Money, PageInfo, ServedBy},
    order::{Order, OrderLine, OrderStatus},
    product::{ListProductsResponse, Product, Rating},
};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ServedByView {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub node: String,
    pub zone: String,
    pub namespace: String,
}

impl From<ServedBy> for ServedByView {
    fn from(s: ServedBy) -> Self {
        Self {
            service: s.service,
            version: s.version,
            pod: s.pod,
            node: s.node,
            zone: s.zone,
            namespace: s.namespace,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MoneyView {
    pub currency_code: String,
    pub units: i64,
    pub nanos: i32,
    /// For people: `$249.00`.
    pub display: String,
}

impl From<Money> for MoneyView {
    fn from(m: Money) -> Self {
        Self {
            display: format_money(&m),
            currency_code: m.currency_code,
            units: m.units,
            nanos: m.nanos,
        }
    }
}

/// Exact decimal rendering from units and nanos (no floating point): at
/// least two decimals, more only when the amount has them.
pub fn format_money(m: &Money) -> String {
    let negative = m.units < 0 || m.nanos < 0;
    let units = m.units.unsigned_abs();
    let nanos = m.nanos.unsigned_abs();
    let mut frac = format!("{nanos:09}");
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    let symbol = match m.currency_code.as_str() {
        "USD" => "$".to_owned(),
        "EUR" => "€".to_owned(),
        "GBP" => "£".to_owned(),
        "" => String::new(),
        other => format!("{other} "),
    };
    let sign = if negative { "-" } else { "" };
    format!("{sign}{symbol}{units}.{frac}")
}

#[derive(Debug, Clone, Serialize)]
pub struct RatingView {
    pub average: f64,
    pub count: i32,
}

impl From<Rating> for RatingView {
    fn from(r: Rating) -> Self {
        Self {
            average: r.average,
            count: r.count,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub price: Option<MoneyView>,
    pub stock: i32,
    pub categories: Vec<String>,
    /// Only v2 (and later) rates products.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rating: Option<RatingView>,
    /// Set on single products; a list names its server once, at the top.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<ServedByView>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            price: p.price.map(Into::into),
            stock: p.stock,
            categories: p.categories,
            rating: p.rating.map(Into::into),
            served_by: p.served_by.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PageView {
    pub page_size: i32,
    pub page_number: i32,
    pub total_pages: i32,
    pub has_next_page: bool,
}

impl From<PageInfo> for PageView {
    fn from(p: PageInfo) -> Self {
        Self {
            page_size: p.page_size,
            page_number: p.page_number,
            total_pages: p.total_pages,
            has_next_page: p.has_next_page,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductListView {
    pub products: Vec<ProductView>,
    pub total_count: i32,
    pub page: Option<PageView>,
    pub served_by: Option<ServedByView>,
}

impl From<ListProductsResponse> for ProductListView {
    fn from(r: ListProductsResponse) -> Self {
        Self {
            products: r.products.into_iter().map(Into::into).collect(),
            total_count: r.total_count,
            page: r.page.map(Into::into),
            served_by: r.served_by.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderLineView {
    pub product_id: String,
    pub product_name: String,
    pub quantity: i32,
    pub unit_price: Option<MoneyView>,
    pub line_total: Option<MoneyView>,
    /// The product version and pod that priced this line.
    pub priced_by: Option<ServedByView>,
}

impl From<OrderLine> for OrderLineView {
    fn from(l: OrderLine) -> Self {
        Self {
            product_id: l.product_id,
            product_name: l.product_name,
            quantity: l.quantity,
            unit_price: l.unit_price.map(Into::into),
            line_total: l.line_total.map(Into::into),
            priced_by: l.priced_by.map(Into::into),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub id: String,
    pub customer_id: String,
    /// `PENDING`, `PAID` or `PAYMENT_FAILED`, as in order.proto.
    pub status: String,
    pub lines: Vec<OrderLineView>,
    pub total: Option<MoneyView>,
    /// RFC 3339.
    pub created_at: Option<String>,
    pub payment_reference: String,
    pub failure_reason: String,
    pub idempotency_key: String,
    pub served_by: Option<ServedByView>,
}

impl From<Order> for OrderView {
    fn from(o: Order) -> Self {
        let status = OrderStatus::try_from(o.status)
            .map(|s| s.as_str_name().to_owned())
            // A newer order service may add states; show the number rather than guess.
            .unwrap_or_else(|_| format!("STATUS_{}", o.status));
        Self {
            id: o.id,
            customer_id: o.customer_id,
            status,
            lines: o.lines.into_iter().map(Into::into).collect(),
            total: o.total.map(Into::into),
            created_at: o.created_at.map(|t| t.to_string()),
            payment_reference: o.payment_reference,
            failure_reason: o.failure_reason,
            idempotency_key: o.idempotency_key,
            served_by: o.served_by.map(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(code: &str, units: i64, nanos: i32) -> String {
        format_money(&Money {
            currency_code: code.into(),
            units,
            nanos,
        })
    }

    #[test]
    fn money_is_exact() {
        assert_eq!(money("USD", 249, 0), "$249.00");
        assert_eq!(money("USD", 89, 500_000_000), "$89.50");
        assert_eq!(money("USD", 0, 990_000_000), "$0.99");
        assert_eq!(money("EUR", 1, 995_000_000), "€1.995");
        assert_eq!(money("JPY", 1200, 0), "JPY 1200.00");
        assert_eq!(money("USD", -3, -500_000_000), "-$3.50");
    }

    #[test]
    fn order_status_names_follow_the_proto() {
        let o = Order {
            status: OrderStatus::PaymentFailed as i32,
            ..Default::default()
        };
        assert_eq!(OrderView::from(o).status, "PAYMENT_FAILED");
        let o = Order {
            status: 42,
            ..Default::default()
        };
        assert_eq!(OrderView::from(o).status, "STATUS_42");
    }
}
