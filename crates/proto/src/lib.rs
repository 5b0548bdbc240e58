//! Generated code for the suite's protobuf packages, plus the encoded
//! descriptor set that the reflection services serve.

pub mod common {
    tonic::include_proto!("common");
}

pub mod order {
    tonic::include_proto!("order");
}

pub mod product {
    tonic::include_proto!("product");
}

/// Every file of `proto/` with its imports, for `grpc.reflection.v1` and `v1alpha`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/suite_descriptor.bin"));

impl From<&telemetry::Identity> for common::ServedBy {
    fn from(id: &telemetry::Identity) -> Self {
        Self {
            service: id.service.clone(),
            version: id.version.clone(),
            pod: id.pod.clone(),
            node: id.node.clone(),
            zone: id.zone.clone(),
            namespace: id.namespace.clone(),
        }
    }
}

impl common::Money {
    /// An amount given in millionths of a unit (micros), as catalogs store it.
    pub fn from_micros(currency_code: &str, micros: i64) -> Self {
        Self {
            currency_code: currency_code.to_owned(),
            units: micros / 1_000_000,
            nanos: ((micros % 1_000_000) * 1_000) as i32,
        }
    }

    pub fn to_micros(&self) -> i64 {
        self.units * 1_000_000 + i64::from(self.nanos) / 1_000
    }
}

/// Input rules shared by every service that takes a product id.
pub mod validate {
    pub const MAX_PRODUCT_ID_CHARS: usize = 64;

    /// Why `id` is not an acceptable product id, naming `field`.
    pub fn product_id(field: &str, id: &str) -> Result<(), String> {
        if id.is_empty() {
            return Err(format!("{field} is required and must not be empty"));
        }
        let chars = id.chars().count();
        if chars > MAX_PRODUCT_ID_CHARS {
            return Err(format!(
                "{field} is {chars} characters long; at most {MAX_PRODUCT_ID_CHARS} are allowed"
            ));
        }
        if let Some(c) = id.chars().find(|c| c.is_control() || (c.is_whitespace() && *c != ' ')) {
            return Err(format!("{field} contains the non-printable character {:?}", c));
        }
        if id.trim() != id {
            return Err(format!("{field} {id:?} has leading or trailing spaces"));
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn product_ids() {
            assert!(product_id("product_id", "123").is_ok());
            assert!(product_id("product_id", &"x".repeat(64)).is_ok());
            for (bad, why) in [
                ("", "must not be empty"),
                (&"x".repeat(65) as &str, "at most 64"),
                ("12\u{7}3", "non-printable"),
                ("a\tb", "non-printable"),
                (" 1", "leading or trailing"),
            ] {
                let e = product_id("items[0].product_id", bad).unwrap_err();
                assert!(e.starts_with("items[0].product_id") && e.contains(why), "{bad:?}: {e}");
            }
        }
    }
}
