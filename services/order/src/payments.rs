//! The payment provider hop: `POST {PAYMENT_URL}/v1/charges` with an
//! `Idempotency-Key` derived from the order, so every attempt for one order
//! (retries, racing duplicates) is the same charge at the provider.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tonic::metadata::MetadataMap;
use tracing::{Instrument, field::Empty};

use crate::store::Order;

/// What a charge attempt established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Paid {
        charge_id: String,
    },
    /// Definitely not charged: declined, or the request was refused.
    Failed {
        reason: String,
    },
    /// An answer that settles nothing (5xx, 429), or none (refused, reset):
    /// the charge may or may not exist. Only a retry with the same key tells.
    Unknown {
        why: String,
    },
    /// No (complete) answer within the attempt's time: unknown too.
    TimedOut {
        why: String,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Paid { .. } => "paid",
            Self::Failed { .. } => "failed",
            Self::Unknown { .. } | Self::TimedOut { .. } => "unknown",
        }
    }
}

#[derive(Clone)]
pub struct Payments {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    detail: String,
}

/// The provider's key for an order's charge: stable for the order's life.
pub fn idempotency_key(order_id: &str) -> String {
    format!("order-{order_id}")
}

impl Payments {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// PAYMENT_TIMEOUT_MS: the most one attempt is given.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One attempt, bounded by `timeout` (PAYMENT_TIMEOUT_MS, or less when
    /// the caller's deadline is closer).
    pub async fn charge(&self, order: &Order, incoming: &MetadataMap, timeout: Duration) -> Outcome {
        let url = format!("{}/v1/charges", self.base);
        let span = tracing::info_span!(
            "POST /v1/charges",
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %url,
            http.response.status_code = Empty,
            order_id = %order.id,
        );
        let mut headers = reqwest::header::HeaderMap::new();
        {
            let _in = span.enter();
            telemetry::propagation::inject_http(&mut headers);
        }
        if let Some(rid) = incoming
            .get(telemetry::propagation::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| reqwest::header::HeaderValue::from_str(v).ok())
        {
            headers.insert(telemetry::propagation::REQUEST_ID, rid);
        }
        let body = json!({
            "order_id": order.id,
            "amount": format_micros(order.total_micros),
            "currency": order.currency,
            "customer_id": order.customer_id,
        });
        let sent = self
            .http
            .post(&url)
            .headers(headers)
            .header("Idempotency-Key", idempotency_key(&order.id))
            .timeout(timeout)
            .json(&body)
            .send()
            .instrument(span.clone())
            .await;
        let res = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::TimedOut {
                    why: format!("no answer within {} ms", timeout.as_millis()),
                };
            }
            Err(e) => {
                return Outcome::Unknown {
                    why: telemetry::error_chain(&e),
                };
            }
        };
        let status = res.status();
        span.record("http.response.status_code", status.as_u16());
        let answer: Answer = match res.bytes().instrument(span).await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(e) if e.is_timeout() => {
                return Outcome::TimedOut {
                    why: format!("no complete answer within {} ms", timeout.as_millis()),
                };
            }
            Err(e) => {
                return Outcome::Unknown {
                    why: telemetry::error_chain(&e),
                };
            }
        };
        classify(status.as_u16(), answer)
    }
}

fn classify(status: u16, a: Answer) -> Outcome {
    match status {
        200 | 201 if a.status == "succeeded" && !a.id.is_empty() => Outcome::Paid { charge_id: a.id },
        200 | 201 => Outcome::Unknown {
            why: format!("HTTP {status} with charge status {:?}", a.status),
        },
        402 => Outcome::Failed {
            reason: describe(&a, "card_declined"),
        },
        // Retryable by HTTP's rules: the outcome is open.
        408 | 429 | 500..=599 => Outcome::Unknown {
            why: format!("HTTP {status}: {}", describe(&a, "error")),
        },
        // Any other answer is a refusal: nothing was charged under this key.
        _ => Outcome::Failed {
            reason: format!(
                "payment provider refused the charge (HTTP {status}): {}",
                describe(&a, "error")
            ),
        },
    }
}

fn describe(a: &Answer, default: &str) -> String {
    let code = if a.error.is_empty() { default } else { &a.error };
    if a.detail.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", a.detail)
    }
}

/// 19_990_000 → "19.99": the provider's decimal amount.
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let mut frac = format!("{:06}", m % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac}", m / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(v: serde_json::Value) -> Answer {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(201, answer(json!({"id": "ch_1", "status": "succeeded"}))),
            Outcome::Paid {
                charge_id: "ch_1".into()
            }
        );
        assert_eq!(
            classify(402, answer(json!({"error": "card_declined", "detail": "no funds"}))),
            Outcome::Failed {
                reason: "card_declined: no funds".into()
            }
        );
        assert!(matches!(classify(503, Answer::default()), Outcome::Unknown { .. }));
        assert!(matches!(classify(429, Answer::default()), Outcome::Unknown { .. }));
        assert!(matches!(
            classify(200, answer(json!({"id": "x", "status": "pending"}))),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(classify(400, Answer::default()), Outcome::Failed { .. }));
    }

    #[test]
    fn amounts() {
        assert_eq!(format_micros(19_990_000), "19.99");
        assert_eq!(format_micros(349_000_000), "349.00");
        assert_eq!(format_micros(1_500), "0.0015");
    }
}
