//! Orders as stored, independent of the database and of the protobuf types.

use proto::common::ServedBy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stored; the charge was not made yet, or its outcome is unknown.
    Pending,
    Paid,
    PaymentFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Paid => "PAID",
            Self::PaymentFailed => "PAYMENT_FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => Self::Pending,
            "PAID" => Self::Paid,
            "PAYMENT_FAILED" => Self::PaymentFailed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line_no: i64,
    pub product_id: String,
    pub product_name: String,
    pub quantity: i64,
    pub unit_price_micros: i64,
    pub line_total_micros: i64,
    pub priced_by: ServedBy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub customer_id: String,
    pub status: Status,
    pub currency: String,
    pub total_micros: i64,
    pub payment_reference: String,
    pub failure_reason: String,
    pub created_at_ms: i64,
    pub lines: Vec<Line>,
}

/// The settled state of an order after a charge attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    Paid { charge_id: String },
    Failed { reason: String },
}
