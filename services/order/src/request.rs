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
        identifier("idempotency_key", &r.idempotency_key, MAX_ID_CHARS).map_err(Status::invalid_argument)?;
        identifier("customer_id", &r.customer_id, MAX_ID_CHARS).map_err(Status::invalid_argument)?;
        if r.items.is_empty() || r.items.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!(
                "items has {} lines; an order has 1 to {MAX_ITEMS}",
                r.items.len()
            )));
        }
        let mut items = Vec::with_capacity(r.items.len());
        for (i, it) in r.items.iter().enumerate() {
            let field = format!("items[{i}].product_id");
            identifier(&field, &it.product_id, proto::validate::MAX_PRODUCT_ID_CHARS)
                .and_then(|()| proto::validate::product_id(&field, &it.product_id))
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
    identifier("customer_id", &r.customer_id, MAX_ID_CHARS).map_err(Status::invalid_argument)?;
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

/// The check every caller-supplied identifier passes (the idempotency key,
/// customer and product ids, an order id): present and not blank, at most
/// `max_chars` characters, and none of the characters that make two ids
/// look alike or text display other than it is stored ([`forbidden`]).
/// The error names the field, the character's code point and its position.
pub fn identifier(field: &str, v: &str, max_chars: usize) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err(format!("{field} is required: 1 to {max_chars} printable characters"));
    }
    let n = v.chars().count();
    if n > max_chars {
        return Err(format!(
            "{field} is {n} characters long; at most {max_chars} are allowed"
        ));
    }
    if let Some((i, c, class)) = v.chars().enumerate().find_map(|(i, c)| forbidden(c).map(|k| (i, c, k))) {
        return Err(format!(
            "{field} contains {class} U+{:04X} at character {} of {n}; identifiers may not contain \
             control, bidirectional formatting or zero-width characters",
            u32::from(c),
            i + 1
        ));
    }
    Ok(())
}

/// What kind of character `c` is when identifiers may not hold it.
pub fn forbidden(c: char) -> Option<&'static str> {
    match c {
        // C0, DEL and C1 (`char::is_control`: Unicode's Cc).
        c if c.is_control() => Some("the control character"),
        // Embeddings and overrides (LRE, RLE, PDF, LRO, RLO), isolates (LRI,
        // RLI, FSI, PDI), and the marks (LRM, RLM, ALM): "Trojan Source".
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}' => {
            Some("the bidirectional formatting character")
        }
        // ZWSP, ZWNJ, ZWJ, WORD JOINER, and the BOM (ZERO WIDTH NO-BREAK SPACE).
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => Some("the zero-width character"),
        _ => None,
    }
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
    fn identifiers() {
        assert!(identifier("customer_id", "c-1", MAX_ID_CHARS).is_ok());
        // Letters of any script, spaces inside and emoji are fine.
        assert!(identifier("customer_id", "Zoë Ünal 山田 \u{05D0}\u{05D1} 🙂", MAX_ID_CHARS).is_ok());
        assert!(
            identifier("customer_id", "   ", MAX_ID_CHARS)
                .unwrap_err()
                .contains("customer_id is required")
        );
        assert_eq!(
            identifier("customer_id", &"x".repeat(129), MAX_ID_CHARS).unwrap_err(),
            "customer_id is 129 characters long; at most 128 are allowed"
        );
        assert_eq!(
            identifier("customer_id", "ab\u{202E}cd", MAX_ID_CHARS).unwrap_err(),
            "customer_id contains the bidirectional formatting character U+202E at character 3 of 5; \
             identifiers may not contain control, bidirectional formatting or zero-width characters"
        );
    }

    /// Every character of each forbidden class is refused, by class, with its
    /// code point and position; their neighbours are not.
    #[test]
    fn each_forbidden_class_is_refused_naming_the_code_point_and_position() {
        let control = ['\u{0}', '\t', '\n', '\r', '\u{1B}', '\u{7F}', '\u{85}', '\u{9F}'];
        let bidi = [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
            '\u{200E}', '\u{200F}', '\u{061C}',
        ];
        let zero_width = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];
        for (class, chars) in [
            ("the control character", &control[..]),
            ("the bidirectional formatting character", &bidi[..]),
            ("the zero-width character", &zero_width[..]),
        ] {
            for &c in chars {
                for (v, at) in [(format!("{c}x"), 1), (format!("k-{c}1"), 3), (format!("key{c}"), 4)] {
                    let e = identifier("idempotency_key", &v, MAX_ID_CHARS).unwrap_err();
                    let n = v.chars().count();
                    let want = format!(
                        "idempotency_key contains {class} U+{:04X} at character {at} of {n};",
                        u32::from(c)
                    );
                    assert!(e.starts_with(&want), "{v:?}: {e}");
                }
            }
        }
        for ok in [
            '\u{2029}', '\u{2065}', '\u{206A}', '\u{2061}', '\u{200A}', '\u{2010}', '\u{FEFE}', '\u{A0}',
        ] {
            assert_eq!(forbidden(ok), None, "U+{:04X}", u32::from(ok));
        }
    }

    #[test]
    fn product_ids_pass_the_same_check_then_their_own() {
        let e = NewOrder::validate(&req(&[("1", 1), ("2\u{200B}", 1)])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message()
                .starts_with("items[1].product_id contains the zero-width character U+200B at character 2 of 2;"),
            "{}",
            e.message()
        );
        let e = NewOrder::validate(&req(&[(" 1", 1)])).unwrap_err();
        assert!(e.message().contains("leading or trailing spaces"), "{}", e.message());
        let e = NewOrder::validate(&req(&[(&"9".repeat(65), 1)])).unwrap_err();
        assert!(e.message().contains("at most 64"), "{}", e.message());
    }
}
