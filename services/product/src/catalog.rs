//! The product catalog: the embedded default or a JSON file (`CATALOG_PATH`).
//! Every check runs while the JSON is parsed, so a bad entry is reported with
//! the line and column where it stands.

use std::{collections::HashMap, path::Path};

use serde::{Deserialize, Deserializer, de};

const EMBEDDED: &str = include_str!("../data/catalog.json");

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Millionths of a currency unit, so sums stay exact.
    pub price_micros: i64,
    pub stock: i32,
    pub categories: Vec<String>,
    pub rating: Option<Rating>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    pub average: f64,
    pub count: i32,
}

#[derive(Debug)]
pub struct Catalog {
    pub currency: String,
    items: Vec<Item>,
    index: HashMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid catalog {path}: line {line}, column {column}: {reason}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        reason: String,
    },
}

impl Catalog {
    pub fn embedded() -> Self {
        // The embedded file is checked by a unit test; failing here is a build defect.
        Self::parse("<embedded catalog>", EMBEDDED).expect("embedded catalog is valid")
    }

    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, CatalogError> {
        let invalid = |line, column, reason: String| CatalogError::Invalid {
            path: path.to_owned(),
            line,
            column,
            reason,
        };
        let file: File =
            serde_json::from_str(text).map_err(|e| invalid(e.line(), e.column(), strip_position(&e.to_string())))?;
        if file.products.is_empty() {
            return Err(invalid(1, 1, "products must list at least one product".into()));
        }
        let mut items = Vec::with_capacity(file.products.len());
        let mut index = HashMap::new();
        for (n, raw) in file.products.iter().enumerate() {
            // Each entry is parsed from its own slice of the text, so errors
            // point at the entry's line rather than the end of the list.
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            let line = text[..offset].matches('\n').count() + 1;
            let column = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
            let entry: RawItem = serde_json::from_str(raw.get()).map_err(|e| {
                let col = if e.line() == 1 {
                    column + e.column() - 1
                } else {
                    e.column()
                };
                invalid(
                    line + e.line() - 1,
                    col,
                    format!("products[{n}]: {}", strip_position(&e.to_string())),
                )
            })?;
            let item = check(entry, n).map_err(|why| invalid(line, column, why))?;
            if let Some(first) = index.insert(item.id.clone(), n) {
                return Err(invalid(
                    line,
                    column,
                    format!("products[{n}].id {:?} repeats products[{first}].id", item.id),
                ));
            }
            items.push(item);
        }
        Ok(Self {
            currency: file.currency,
            items,
            index,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Item> {
        self.index.get(id).map(|&i| &self.items[i])
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

// serde_json appends " at line L column C"; the error type reports both itself.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File<'a> {
    #[serde(deserialize_with = "currency")]
    currency: String,
    #[serde(borrow)]
    products: Vec<&'a serde_json::value::RawValue>,
}

fn currency<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let c = String::deserialize(d)?;
    if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) {
        Ok(c)
    } else {
        Err(de::Error::custom(format!(
            "currency {c:?} must be a three-letter ISO 4217 code such as USD"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    price: String,
    stock: i32,
    #[serde(default)]
    categories: Vec<String>,
    rating: Option<Rating>,
}

fn check(raw: RawItem, n: usize) -> Result<Item, String> {
    proto::validate::product_id(&format!("products[{n}].id"), &raw.id)?;
    if raw.name.trim().is_empty() {
        return Err(format!("products[{n}].name must not be empty"));
    }
    let price_micros = parse_price(&raw.price).map_err(|why| format!("products[{n}].price {:?}: {why}", raw.price))?;
    if raw.stock < 0 {
        return Err(format!("products[{n}].stock {} must not be negative", raw.stock));
    }
    if let Some(r) = raw.rating
        && (!(0.0..=5.0).contains(&r.average) || r.count < 0)
    {
        return Err(format!(
            "products[{n}].rating: average must be 0 to 5 and count not negative"
        ));
    }
    Ok(Item {
        id: raw.id,
        name: raw.name,
        description: raw.description,
        price_micros,
        stock: raw.stock,
        categories: raw.categories,
        rating: raw.rating,
    })
}

/// "19.99" → 19_990_000 micros. Decimal text, so no float rounding.
pub fn parse_price(s: &str) -> Result<i64, &'static str> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a decimal amount such as \"19.99\"");
    }
    if frac.len() > 6 {
        return Err("at most 6 decimal places");
    }
    let units: i64 = whole.parse().map_err(|_| "amount too large")?;
    if units > 1_000_000_000 {
        return Err("amount too large");
    }
    let frac_micros: i64 = format!("{frac:0<6}").parse().map_err(|_| "bad fraction")?;
    Ok(units * 1_000_000 + frac_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_the_seed_ids() {
        let c = Catalog::parse("embedded", EMBEDDED).unwrap();
        for id in (1..=20).map(|i| i.to_string()).chain(["123".to_string()]) {
            assert!(c.get(&id).is_some(), "missing product {id}");
        }
        assert_eq!(c.get("123").unwrap().name, "Vintage Film Camera");
    }

    #[test]
    fn prices_are_exact() {
        assert_eq!(parse_price("19.99"), Ok(19_990_000));
        assert_eq!(parse_price("5"), Ok(5_000_000));
        assert_eq!(parse_price("0.000001"), Ok(1));
        for bad in ["", "-1", "1.2.3", "abc", "1.0000001", ".5"] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_entries_are_reported_with_their_line() {
        let text = r#"{
  "currency": "USD",
  "products": [
    {"id": "1", "name": "A", "price": "1.00", "stock": 1},
    {"id": "1", "name": "B", "price": "2.00", "stock": 1}
  ]
}"#;
        let e = Catalog::parse("c.json", text).unwrap_err().to_string();
        assert!(e.starts_with("invalid catalog c.json: line 5,"), "{e}");
        assert!(e.contains("repeats products[0].id"), "{e}");

        let e = Catalog::parse("c.json", "{\"currency\": \"USD\",\n \"products\": [\n {\"id\": \"1\", \"name\": \"A\", \"price\": \"cheap\", \"stock\": 1}]}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("products[0].price \"cheap\""), "{e}");

        let e = Catalog::parse("c.json", "{\"currency\": \"USD\", \"products\": [}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");

        let e = Catalog::parse("c.json", "{\"currency\": \"USD\", \"products\": [], \"extra\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");

        let e = Catalog::parse("c.json", "{\"currency\": \"USD\", \"products\": []}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one product"), "{e}");

        let e = Catalog::parse(
            "c.json",
            "{\"currency\": \"USD\",\n\"products\": [\n\n  {\"id\": \"1\", \"nme\": \"A\"}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("invalid catalog c.json: line 4,") && e.contains("unknown field `nme`"),
            "{e}"
        );
    }
}
