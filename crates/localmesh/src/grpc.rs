//! gRPC status codes as the proxies classify them (tonic's [`Code`] is the one code type).

use tonic::Code;

/// Whether a `grpc-status` value is an upstream (server) error, as Envoy tags spans with `error`
/// (`addGrpcResponseTags` in envoy `source/common/tracing/http_tracer_impl.cc`): UNKNOWN,
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS. The
/// others (NOT_FOUND, INVALID_ARGUMENT, ...) are the client's doing. The graph, `stat` and `top`
/// count failures by the same rule.
pub fn is_upstream_error(status: &str) -> bool {
    let Ok(n) = status.trim().parse::<i32>() else {
        return false;
    };
    matches!(
        Code::from_i32(n),
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) && (0..=16).contains(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_but_not_client_errors() {
        for c in ["2", "4", "8", "12", "13", "14", "15"] {
            assert!(is_upstream_error(c), "{c}");
        }
        for c in ["0", "1", "3", "5", "6", "7", "9", "10", "11", "16", "-", "", "99"] {
            assert!(!is_upstream_error(c), "{c}");
        }
    }
}
