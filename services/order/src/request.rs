//! CreateOrder input: validation with messages that name the field, and the
//! normalised form whose hash tells a retry from a reuse of the key.

use proto::order::{CreateOrderRequest, ListOrdersRequest};
use sha2::{Digest, Sha256};
use tonic::Status;

pub const MAX_ID_CHARS: usize = 128;
pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: i32 = 1000;
pub const DEFAULT_PAGE_SIZE: i32 = 10;
pub const MAX_PAGE_SIZE: i32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
}

/// A CreateOrder request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub idempotency_key: String,
    pub customer_id: String,
    pub items: Vec<Item>,
}

impl NewOrder {
    pub fn validate(r: &CreateOrderRequest) -> Result<Self, Status> {
        text("idempotency_key", &r.idempotency_key).map_err(Status::invalid_argument)?;
        text("customer_id", &r.customer_id).map_err(Status::invalid_argument)?;
        if r.items.is_empty() || r.items.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!(
                "items has {} lines; an order has 1 to {MAX_ITEMS}",
                r.items.len()
            )));
        }
        let mut items = Vec::with_capacity(r.items.len());
        for (i, it) in r.items.iter().enumerate() {
            proto::validate::product_id(&format!("items[{i}].product_id"), &it.product_id)
                .map_err(Status::invalid_argument)?;
            if !(1..=MAX_QUANTITY).contains(&it.quantity) {
                return Err(Status::invalid_argument(format!(
                    "items[{i}].quantity {} is out of range: use 1 to {MAX_QUANTITY}",
                    it.quantity
                )));
            }
            items.push(Item {
                product_id: it.product_id.clone(),
                quantity: i64::from(it.quantity),
            });
        }
        Ok(Self {
            idempotency_key: r.idempotency_key.clone(),
            customer_id: r.customer_id.clone(),
            items,
        })
    }

    /// SHA-256 (hex) of the normalised request: the customer and the lines
    /// sorted, so a retry that lists the same lines in another order is the
    /// same request. Each part is length-prefixed, so no two different
    /// requests encode alike. The key itself is not part of it.
    pub fn hash(&self) -> String {
        let mut items: Vec<&Item> = self.items.iter().collect();
        items.sort_by(|a, b| (&a.product_id, a.quantity).cmp(&(&b.product_id, b.quantity)));
        let mut h = Sha256::new();
        h.update(b"order-request-v1\n");
        let mut part = |s: &str| {
            h.update((s.len() as u64).to_be_bytes());
            h.update(s.as_bytes());
        };
        part(&self.customer_id);
        for it in items {
            part(&it.product_id);
            part(&it.quantity.to_string());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The page a ListOrders request asks for: (page_size, page_number).
pub fn page(r: &ListOrdersRequest) -> Result<(i32, i32), Status> {
    text("customer_id", &r.customer_id).map_err(Status::invalid_argument)?;
    let size = match r.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        n => {
            return Err(Status::invalid_argument(format!(
                "page_size {n} is out of range: use 1 to {MAX_PAGE_SIZE}, or 0 for the default of {DEFAULT_PAGE_SIZE}"
            )));
        }
    };
    let number = r.page_number.unwrap_or(1);
    if number < 1 {
        return Err(Status::invalid_argument(format!(
            "page_number {number} is out of range: pages are numbered from 1"
        )));
    }
    Ok((size, number))
}

/// 1 to 128 printable characters, not blank.
pub fn text(field: &str, v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} is required: 1 to {MAX_ID_CHARS} printable characters"));
    }
    let n = v.chars().count();
    if n > MAX_ID_CHARS {
        return Err(format!(
            "{field} is {n} characters long; at most {MAX_ID_CHARS} are allowed"
        ));
    }
    if let Some(c) = v.chars().find(|c| c.is_control()) {
        return Err(format!("{field} contains the non-printable character {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proto::order::OrderItem;

    use super::*;

    fn req(items: &[(&str, i32)]) -> CreateOrderRequest {
        CreateOrderRequest {
            idempotency_key: "k".into(),
            customer_id: "c".into(),
            items: items
                .iter()
                .map(|(p, q)| OrderItem {
                    product_id: (*p).into(),
                    quantity: *q,
                })
                .collect(),
        }
    }

    #[test]
    fn the_hash_ignores_line_order_but_not_content() {
        let h = |items: &[(&str, i32)]| NewOrder::validate(&req(items)).unwrap().hash();
        assert_eq!(h(&[("1", 2), ("3", 1)]), h(&[("3", 1), ("1", 2)]));
        assert_ne!(h(&[("1", 2)]), h(&[("1", 3)]));
        assert_ne!(h(&[("1", 2)]), h(&[("12", 2)]));
        assert_ne!(h(&[("1", 2), ("1", 2)]), h(&[("1", 2)]));
        let mut other = req(&[("1", 2)]);
        other.customer_id = "d".into();
        assert_ne!(NewOrder::validate(&other).unwrap().hash(), h(&[("1", 2)]));
        assert_eq!(h(&[("1", 2)]).len(), 64);
    }

    #[test]
    fn texts() {
        assert!(text("customer_id", "c-1").is_ok());
        assert!(text("customer_id", "   ").unwrap_err().contains("required"));
        assert!(
            text("customer_id", &"x".repeat(129))
                .unwrap_err()
                .contains("at most 128")
        );
        assert!(text("customer_id", "a\nb").unwrap_err().contains("non-printable"));
    }
}
