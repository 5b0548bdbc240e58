//! Demonstration faults for the unary RPCs, like Istio's fault injection but
//! inside the workload: a fixed delay, then an abort for a share of calls.

use std::time::Duration;

use service_runtime::env;
use tonic::{Code, Status};

/// `FAULT_DELAY_MS`, `FAULT_ABORT_PERCENT` and `FAULT_ABORT_CODE`, part of the service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Default, clap::Args)]
pub struct Faults {
    /// Added to every unary call, in milliseconds, from 0 to 600000.
    #[arg(
        long = "fault-delay-ms",
        env = "FAULT_DELAY_MS",
        value_name = "FAULT_DELAY_MS",
        default_value = "0",
        value_parser = env::millis_in(0..=600_000)
    )]
    pub delay: Duration,
    /// The share of unary calls that fail, 0 to 100.
    #[arg(
        long = "fault-abort-percent",
        env = "FAULT_ABORT_PERCENT",
        value_name = "FAULT_ABORT_PERCENT",
        default_value = "0",
        value_parser = env::number_in(0.0..=100.0)
    )]
    pub abort_percent: f64,
    /// The code they fail with: a number from 1 to 16 or a name; UNAVAILABLE when unset.
    #[arg(
        long = "fault-abort-code",
        env = "FAULT_ABORT_CODE",
        value_name = "FAULT_ABORT_CODE",
        value_parser = parse_code
    )]
    pub abort_code: Option<Code>,
}

impl Faults {
    pub fn is_active(&self) -> bool {
        !self.delay.is_zero() || self.abort_percent > 0.0
    }

    /// Sleeps the delay, then fails the call with the configured share.
    pub async fn apply(&self) -> Result<(), Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.abort_percent > 0.0 && rand::random::<f64>() * 100.0 < self.abort_percent {
            let code = self.abort_code.unwrap_or(Code::Unavailable);
            return Err(Status::new(
                code,
                format!("fault injected: FAULT_ABORT_PERCENT={}", self.abort_percent),
            ));
        }
        Ok(())
    }
}

/// "14", "UNAVAILABLE", "unavailable" and "Unavailable" all name code 14.
pub fn parse_code(raw: &str) -> Result<Code, String> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i32>() {
        if (1..=16).contains(&n) {
            return Ok(Code::from_i32(n));
        }
        return Err("expected a gRPC error code from 1 to 16, or its name such as UNAVAILABLE".into());
    }
    let wanted: String = raw
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    (1..=16)
        .map(Code::from_i32)
        .find(|c| {
            let name = telemetry::grpc::name_of(*c).replace('_', "").to_ascii_lowercase();
            name == wanted || (wanted == "canceled" && *c == Code::Cancelled)
        })
        .ok_or_else(|| format!("unknown gRPC code {raw:?}: use a number from 1 to 16 or a name such as UNAVAILABLE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_number_and_name() {
        assert_eq!(parse_code("14"), Ok(Code::Unavailable));
        assert_eq!(parse_code("UNAVAILABLE"), Ok(Code::Unavailable));
        assert_eq!(parse_code("resource_exhausted"), Ok(Code::ResourceExhausted));
        assert_eq!(parse_code("DeadlineExceeded"), Ok(Code::DeadlineExceeded));
        assert!(parse_code("0").is_err());
        assert!(parse_code("SLOW").unwrap_err().contains("SLOW"));
    }

    #[tokio::test]
    async fn full_abort_always_fails_with_the_code() {
        let f = Faults {
            delay: Duration::ZERO,
            abort_percent: 100.0,
            abort_code: Some(Code::Internal),
        };
        assert_eq!(f.apply().await.unwrap_err().code(), Code::Internal);
        assert!(Faults::default().apply().await.is_ok());
    }
}
