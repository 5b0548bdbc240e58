//! Match compilation shared by HTTPRoute and VirtualService: paths, headers, query parameters.

use manifests::Object;
use manifests::model::gateway_api::{HttpHeaderMatch, HttpPathMatch};
use manifests::model::istio::StringMatch as IstioMatch;

use super::Ctx;
use crate::model::{FullRegex, HeaderMatch, PathMatch, StringMatch};

fn regex(cx: &mut Ctx, o: &Object, field: &str, source: &str) -> Option<FullRegex> {
    FullRegex::new(source).map_err(|e| cx.err(o, field, e)).ok()
}

/// Gateway API path match; `type` defaults to `PathPrefix` and `value` to `/`.
pub(super) fn gateway_path(cx: &mut Ctx, o: &Object, field: &str, p: &HttpPathMatch) -> Option<PathMatch> {
    let value = p.value.as_deref().unwrap_or("/");
    let vfield = format!("{field}.value");
    if !value.starts_with('/') {
        cx.err(o, vfield, format!("`{value}` must start with `/`"));
        return None;
    }
    match p.type_.as_deref().unwrap_or("PathPrefix") {
        "Exact" => Some(PathMatch::Exact(value.to_string())),
        "PathPrefix" => {
            // `/a/` and `/a` are the same prefix element-wise; keep `/` itself.
            let trimmed = value.trim_end_matches('/');
            Some(PathMatch::SegmentPrefix(
                if trimmed.is_empty() { "/" } else { trimmed }.to_string(),
            ))
        }
        "RegularExpression" => regex(cx, o, &vfield, value).map(PathMatch::Regex),
        other => {
            cx.err(o, format!("{field}.type"), format!("unknown path match type `{other}`"));
            None
        }
    }
}

/// Gateway API header or query-parameter match; `type` defaults to `Exact`.
pub(super) fn gateway_value(
    cx: &mut Ctx,
    o: &Object,
    field: &str,
    h: &HttpHeaderMatch,
    lower: bool,
) -> Option<HeaderMatch> {
    let value = match h.type_.as_deref().unwrap_or("Exact") {
        "Exact" => StringMatch::Exact(h.value.clone()),
        "RegularExpression" => StringMatch::Regex(regex(cx, o, &format!("{field}.value"), &h.value)?),
        other => {
            cx.err(o, format!("{field}.type"), format!("unknown match type `{other}`"));
            return None;
        }
    };
    // Header names are case-insensitive; query parameter names are not.
    let name = if lower {
        h.name.to_ascii_lowercase()
    } else {
        h.name.clone()
    };
    Some(HeaderMatch { name, value })
}

/// Istio `StringMatch`: exactly one of `exact`, `prefix`, `regex`.
pub(super) fn istio_string(cx: &mut Ctx, o: &Object, field: &str, m: &IstioMatch) -> Option<StringMatch> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), None, None) => Some(StringMatch::Exact(e.clone())),
        (None, Some(p), None) => Some(StringMatch::Prefix(p.clone())),
        (None, None, Some(r)) => regex(cx, o, &format!("{field}.regex"), r).map(StringMatch::Regex),
        _ => {
            cx.err(o, field, "set exactly one of exact, prefix, regex");
            None
        }
    }
}

/// Istio `uri` match: a `prefix` is a raw string prefix, unlike the Gateway API's.
pub(super) fn istio_uri(cx: &mut Ctx, o: &Object, field: &str, m: &IstioMatch) -> Option<PathMatch> {
    Some(match istio_string(cx, o, field, m)? {
        StringMatch::Exact(e) => PathMatch::Exact(e),
        StringMatch::Prefix(p) => PathMatch::Prefix(p),
        StringMatch::Regex(r) => PathMatch::Regex(r),
    })
}
