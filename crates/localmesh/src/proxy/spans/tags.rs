//! The tags of a proxy's spans: the request's values, made once per recorded request, and each
//! span's outcome, written out in the order Envoy writes them only when read.

use std::borrow::Cow;
use std::sync::Arc;

use super::{Outcome, RequestInfo};
use crate::trace::span::{LazyTags, ValueRef};

/// Envoy's `max_path_tag_length` default: `http.url` is cut at 256 characters.
const MAX_PATH_TAG: usize = 256;

/// The request values the tags carry, in [`RequestTags`]' text.
#[derive(Debug, Clone, Copy)]
enum Field {
    RequestId,
    /// `<scheme>://<authority><path>`, cut at [`MAX_PATH_TAG`].
    Url,
    Method,
    Peer,
    DownstreamCluster,
    UserAgent,
    ClientTraceId,
    GrpcPath,
    GrpcAuthority,
    GrpcContentType,
    GrpcTimeout,
}

const FIELDS: usize = 11;

/// The tags every span of one request shares, made once per recorded request: the values back to
/// back in one string (one allocation instead of one per value).
#[derive(Debug, Default)]
pub(crate) struct RequestTags {
    text: String,
    /// Where each field's value starts and ends in `text`; `None` when the request has none.
    ranges: [Option<(u32, u32)>; FIELDS],
    protocol: &'static str,
    grpc: bool,
}

impl RequestTags {
    pub(super) fn new(r: &RequestInfo<'_>) -> Self {
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        let mut t = RequestTags {
            text: String::with_capacity(256),
            protocol: r.protocol,
            grpc: r.grpc,
            ..RequestTags::default()
        };
        t.push(Field::RequestId, &[r.request_id]);
        t.push(Field::Url, &[r.scheme, "://", r.authority, r.path]);
        t.push(Field::Method, &[r.method]);
        t.push(Field::Peer, &[r.peer]);
        if let Some(v) = header("x-envoy-downstream-service-cluster") {
            t.push(Field::DownstreamCluster, &[v]);
        }
        if let Some(v) = header("user-agent") {
            t.push(Field::UserAgent, &[v]);
        }
        if let Some(v) = header("x-client-trace-id") {
            t.push(Field::ClientTraceId, &[v]);
        }
        if r.grpc {
            t.push(Field::GrpcPath, &[r.path]);
            t.push(Field::GrpcAuthority, &[r.authority]);
            t.push(Field::GrpcContentType, &[header("content-type").unwrap_or_default()]);
            if let Some(v) = header("grpc-timeout") {
                t.push(Field::GrpcTimeout, &[v]);
            }
        }
        t
    }

    fn push(&mut self, f: Field, parts: &[&str]) {
        let start = self.text.len();
        for p in parts {
            self.text.push_str(p);
        }
        if let Field::Url = f {
            let mut cut = start + MAX_PATH_TAG;
            if self.text.len() > cut {
                while !self.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                self.text.truncate(cut);
            }
        }
        if let (Ok(a), Ok(b)) = (u32::try_from(start), u32::try_from(self.text.len())) {
            self.ranges[f as usize] = Some((a, b));
        }
    }

    fn get(&self, f: Field) -> Option<&str> {
        let (a, b) = self.ranges[f as usize]?;
        self.text.get(a as usize..b as usize)
    }
}

/// gRPC status codes as tag values, without an allocation for the common ones.
const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];

fn shared(s: &str, table: &[&'static str]) -> Cow<'static, str> {
    match table.iter().find(|t| **t == s) {
        Some(t) => Cow::Borrowed(t),
        None => Cow::Owned(s.to_string()),
    }
}

/// One proxy span's tags, written out as Envoy writes them only when read.
#[derive(Debug)]
pub(super) struct ProxyTags {
    request: Arc<RequestTags>,
    upstream_cluster: Option<Arc<str>>,
    status: u16,
    grpc_status: Option<Cow<'static, str>>,
    grpc_message: Option<Box<str>>,
    flags: Cow<'static, str>,
    request_bytes: u64,
    response_bytes: u64,
}

impl ProxyTags {
    pub(super) fn new(request: &Arc<RequestTags>, cluster: Option<&Arc<str>>, o: &Outcome<'_>) -> Self {
        ProxyTags {
            request: request.clone(),
            upstream_cluster: cluster.cloned(),
            status: o.status,
            grpc_status: o.grpc_status.map(|g| shared(g, &GRPC_CODES)),
            grpc_message: o.grpc_message.map(Box::from),
            flags: shared(
                o.flags,
                &["-", "UC", "UT", "UF", "UR", "UH", "UO", "NR", "FI", "DC", "URX"],
            ),
            request_bytes: o.request_bytes,
            response_bytes: o.response_bytes,
        }
    }
}

impl LazyTags for ProxyTags {
    fn visit(&self, f: &mut dyn FnMut(&str, ValueRef<'_>)) {
        let outcome = Outcome {
            status: self.status,
            grpc_status: self.grpc_status.as_deref(),
            grpc_message: self.grpc_message.as_deref(),
            flags: &self.flags,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        };
        visit_tags(&self.request, self.upstream_cluster.as_deref(), &outcome, f);
    }
}

/// A proxy span's tags, in the order Envoy writes them.
pub(super) fn visit_tags(
    r: &RequestTags,
    cluster: Option<&str>,
    o: &Outcome<'_>,
    f: &mut dyn FnMut(&str, ValueRef<'_>),
) {
    let mut put = |k: &str, v: &str| f(k, ValueRef::Str(v));
    put("guid:x-request-id", r.get(Field::RequestId).unwrap_or_default());
    put("http.url", r.get(Field::Url).unwrap_or_default());
    put("http.method", r.get(Field::Method).unwrap_or_default());
    put("downstream_cluster", r.get(Field::DownstreamCluster).unwrap_or("-"));
    put("user_agent", r.get(Field::UserAgent).unwrap_or("-"));
    put("http.protocol", r.protocol);
    put("peer.address", r.get(Field::Peer).unwrap_or_default());
    if let Some(id) = r.get(Field::ClientTraceId) {
        put("guid:x-client-trace-id", id);
    }
    if r.grpc {
        put("grpc.path", r.get(Field::GrpcPath).unwrap_or_default());
        put("grpc.authority", r.get(Field::GrpcAuthority).unwrap_or_default());
        put("grpc.content_type", r.get(Field::GrpcContentType).unwrap_or_default());
        if let Some(to) = r.get(Field::GrpcTimeout) {
            put("grpc.timeout", to);
        }
    }
    // Envoy writes sizes and the status as strings.
    let mut n = itoa::Buffer::new();
    put("request_size", n.format(o.request_bytes));
    put("response_size", n.format(o.response_bytes));
    if let Some(c) = cluster {
        put("upstream_cluster", c);
        put("upstream_cluster.name", c);
    }
    put("http.status_code", n.format(o.status));
    put("response_flags", o.flags);
    if let Some(code) = o.grpc_status {
        put("grpc.status_code", code);
        if let Some(m) = o.grpc_message {
            put("grpc.message", m);
        }
    }
    if is_error(o) {
        put("error", "true");
    }
}

pub(super) fn is_error(o: &Outcome<'_>) -> bool {
    o.status == 0 || o.status >= 500 || o.grpc_status.is_some_and(crate::grpc::is_upstream_error)
}
