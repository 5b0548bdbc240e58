//! The payment provider hop: `POST {PAYMENT_URL}/v1/charges` with an
//! `Idempotency-Key` derived from the order, so every attempt for one order
//! (retries, racing duplicates, the settler) is the same charge at the
//! provider; and `GET {PAYMENT_URL}/v1/charges?idempotency_key=…`, the
//! settler's question what became of that charge.

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

/// What the provider holds under an order's key ([`Payments::lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A succeeded charge.
    Paid { charge_id: String },
    /// A declined (failed) charge: the customer was not charged.
    Declined { reason: String },
    /// 404: the provider has no charge under the key; charging is safe.
    NoRecord,
    /// No answer, or one that settles nothing (5xx, a charge still in
    /// progress, another key's charge, an unreadable body).
    Unknown { why: String },
}

impl Lookup {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Paid { .. } => "paid",
            Self::Declined { .. } => "declined",
            Self::NoRecord => "no_record",
            Self::Unknown { .. } => "unknown",
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
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    failure_code: String,
    #[serde(default)]
    failure_message: String,
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
        let headers = outgoing_headers(&span, incoming);
        let body = json!({
            "order_id": order.id,
            "amount": format_micros(order.total_micros),
            "currency": order.currency,
            "customer_id": order.customer_id,
        });
        let req = self
            .http
            .post(&url)
            .headers(headers)
            .header("Idempotency-Key", idempotency_key(&order.id))
            .json(&body);
        match exchange(req, &span, timeout).await {
            Ok((status, b)) => classify(status, serde_json::from_slice(&b).unwrap_or_default()),
            Err(Unanswered::TimedOut(why)) => Outcome::TimedOut { why },
            Err(Unanswered::Failed(why)) => Outcome::Unknown { why },
        }
    }

    /// What the provider holds under the order's key: `GET
    /// {PAYMENT_URL}/v1/charges?idempotency_key=order-{id}`, bounded by
    /// `timeout`. It answers 200 with the charge as `POST /v1/charges`
    /// answered it (a 402 with the declined charge is read the same way),
    /// or 404 when it has no charge under the key.
    pub async fn lookup(&self, order: &Order, incoming: &MetadataMap, timeout: Duration) -> Lookup {
        let key = idempotency_key(&order.id);
        let url =
            match reqwest::Url::parse_with_params(&format!("{}/v1/charges", self.base), [("idempotency_key", &key)]) {
                Ok(u) => u,
                Err(e) => {
                    return Lookup::Unknown {
                        why: format!("cannot make the lookup URL: {}", telemetry::error_chain(&e)),
                    };
                }
            };
        let span = tracing::info_span!(
            "GET /v1/charges",
            otel.kind = "client",
            http.request.method = "GET",
            url.full = %url,
            http.response.status_code = Empty,
            order_id = %order.id,
        );
        let headers = outgoing_headers(&span, incoming);
        match exchange(self.http.get(url).headers(headers), &span, timeout).await {
            Ok((status, b)) => classify_lookup(status, &key, &b),
            // A lookup that gets no answer leaves the order as it is: unknown either way.
            Err(Unanswered::TimedOut(why) | Unanswered::Failed(why)) => Lookup::Unknown { why },
        }
    }
}

/// Why a request to the provider has no answer to read.
enum Unanswered {
    /// Nothing (or not all of the answer) within the time it was given.
    TimedOut(String),
    /// The connection failed or broke.
    Failed(String),
}

/// Sends `req` within `timeout`, in `span` (which records the status), and reads the whole answer.
async fn exchange(
    req: reqwest::RequestBuilder,
    span: &tracing::Span,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Unanswered> {
    let failed = |e: reqwest::Error, what: &str| {
        if e.is_timeout() {
            Unanswered::TimedOut(format!("{what} within {} ms", timeout.as_millis()))
        } else {
            Unanswered::Failed(telemetry::error_chain(&e))
        }
    };
    let res = req
        .timeout(timeout)
        .send()
        .instrument(span.clone())
        .await
        .map_err(|e| failed(e, "no answer"))?;
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    let body = res
        .bytes()
        .instrument(span.clone())
        .await
        .map_err(|e| failed(e, "no complete answer"))?;
    Ok((status, body.to_vec()))
}

/// The trace context of `span`, and the caller's request id.
fn outgoing_headers(span: &tracing::Span, incoming: &MetadataMap) -> reqwest::header::HeaderMap {
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
    headers
}

/// A lookup's answer. Only a definite charge under our own key settles the
/// order, and only a 404 lets the settler charge: anything else is unknown.
fn classify_lookup(status: u16, key: &str, body: &[u8]) -> Lookup {
    if status == 404 {
        return Lookup::NoRecord;
    }
    let a: Answer = serde_json::from_slice(body).unwrap_or_default();
    if matches!(status, 200 | 402) && !a.idempotency_key.is_empty() && a.idempotency_key != key {
        return Lookup::Unknown {
            why: format!(
                "HTTP {status} with the charge of another Idempotency-Key ({:?}, asked for {key:?})",
                a.idempotency_key
            ),
        };
    }
    match (status, a.status.as_str()) {
        (200, "succeeded") if !a.id.is_empty() => Lookup::Paid { charge_id: a.id },
        (200 | 402, "failed" | "declined") | (402, "") => Lookup::Declined {
            reason: decline_reason(&a),
        },
        (200 | 402, other) => Lookup::Unknown {
            why: format!("HTTP {status} without a settled charge (charge status {other:?})"),
        },
        _ => Lookup::Unknown {
            why: format!("HTTP {status}: {}", describe(&a, "error")),
        },
    }
}

/// A declined charge's reason in CreateOrder's words: `card_declined: …`.
fn decline_reason(a: &Answer) -> String {
    let code = [&a.error, &a.failure_code]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("card_declined", String::as_str);
    let detail = [&a.detail, &a.failure_message].into_iter().find(|s| !s.is_empty());
    match detail {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
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
    fn lookups_are_classified() {
        let key = "order-o1";
        let body = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
        // The charge as POST /v1/charges answered it.
        assert_eq!(
            classify_lookup(
                200,
                key,
                &body(json!({"id": "ch_1", "status": "succeeded", "idempotency_key": key}))
            ),
            Lookup::Paid {
                charge_id: "ch_1".into()
            }
        );
        let declined = json!({"id": "ch_2", "status": "failed", "idempotency_key": key,
            "failure_code": "card_declined", "failure_message": "no funds"});
        assert_eq!(
            classify_lookup(200, key, &body(declined.clone())),
            Lookup::Declined {
                reason: "card_declined: no funds".into()
            }
        );
        // The 402 that POST answers for a decline, error and detail first.
        let mut as_posted = declined;
        as_posted["error"] = json!("card_declined");
        as_posted["detail"] = json!("the card was declined");
        assert_eq!(
            classify_lookup(402, key, &body(as_posted)),
            Lookup::Declined {
                reason: "card_declined: the card was declined".into()
            }
        );
        assert_eq!(
            classify_lookup(200, key, &body(json!({"id": "ch_3", "status": "declined"}))),
            Lookup::Declined {
                reason: "card_declined".into()
            }
        );
        // Only a 404 means "no charge under this key".
        assert_eq!(
            classify_lookup(404, key, &body(json!({"error": "not_found"}))),
            Lookup::NoRecord
        );
        assert_eq!(classify_lookup(404, key, b"<html>"), Lookup::NoRecord);
        for (status, b) in [
            (503, body(json!({"error": "provider_unavailable"}))),
            (500, b"oops".to_vec()),
            (429, Vec::new()),
            (400, body(json!({"error": "invalid_request"}))),
            // A list instead of a charge (a provider that ignores the query).
            (
                200,
                body(json!({"count": 1, "charges": [{"id": "ch_9", "status": "succeeded"}]})),
            ),
            (
                200,
                body(json!({"id": "ch_1", "status": "pending", "idempotency_key": key})),
            ),
            (200, body(json!({"id": "", "status": "succeeded"}))),
            (200, b"not json".to_vec()),
            // Another key's charge is not ours, whatever its status.
            (
                200,
                body(json!({"id": "ch_1", "status": "succeeded", "idempotency_key": "order-o2"})),
            ),
            (
                402,
                body(json!({"id": "ch_1", "status": "failed", "idempotency_key": "order-o2"})),
            ),
        ] {
            let got = classify_lookup(status, key, &b);
            assert!(
                matches!(got, Lookup::Unknown { .. }),
                "{status} {}: {got:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(format_micros(19_990_000), "19.99");
        assert_eq!(format_micros(349_000_000), "349.00");
        assert_eq!(format_micros(1_500), "0.0015");
    }
}
