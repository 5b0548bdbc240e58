//! gRPC status codes as the proxies classify them (tonic's [`Code`] is the one code type).

use tonic::Code;

/// Whether a `grpc-status` value is an upstream (server) error, as Envoy tags spans with `error`
/// (`addGrpcResponseTags` in envoy `source/common/tracing/http_tracer_impl.cc`): UNKNOWN,
/// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS. The
/// others (NOT_FOUND, INVALID_ARGUMENT, ...) are the client's doing. The graph, `stat` and `top`
/// count failures by the same rule.
pub fn is_upstream_error(status: &str) -> bool {
    matches!(
        parse_status(status),
        Some(
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        )
    )
}

/// A status code by its canonical name (`UNAVAILABLE`, ...), as Istio's validator accepts a
/// fault's `abort.grpcStatus` (`SupportedGRPCStatus` in istio `pkg/config/validation`): exact,
/// upper case, no fallback.
pub use telemetry::grpc::code_from_name;
/// The canonical name of a code.
pub use telemetry::grpc::name_of;

/// A `grpc-status` value as a code; `None` for anything but 0 to 16 (never a silent UNKNOWN).
pub fn parse_status(value: &str) -> Option<Code> {
    value.trim().parse::<i32>().ok().and_then(from_number)
}

/// A status number as a code; `None` outside 0 to 16 (tonic's `from_i32` would say UNKNOWN).
pub fn from_number(n: i32) -> Option<Code> {
    (0..=16).contains(&n).then(|| Code::from_i32(n))
}

/// The gRPC status for an HTTP status, as Envoy maps its local replies and HTTP answers to gRPC
/// callers (`Grpc::Utility::httpToGrpcStatus` in envoy `source/common/grpc/status.cc`).
pub fn from_http(status: u16) -> Code {
    match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
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

    #[test]
    fn codes_by_name_and_by_http_status() {
        assert_eq!(code_from_name("UNAVAILABLE"), Some(Code::Unavailable));
        assert_eq!(
            code_from_name("unavailable"),
            None,
            "Istio accepts the canonical names only"
        );
        assert_eq!(code_from_name("NOPE"), None);
        for n in 0..=16 {
            let c = Code::from_i32(n);
            assert_eq!(code_from_name(name_of(c)), Some(c));
        }
        assert_eq!(from_http(404), Code::Unimplemented);
        assert_eq!(from_http(503), Code::Unavailable);
        assert_eq!(parse_status("14"), Some(Code::Unavailable));
        assert_eq!(parse_status("17"), None);
    }
}
