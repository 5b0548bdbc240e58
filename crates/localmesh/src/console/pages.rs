//! The console's HTML: server-rendered pages with inline CSS and SVG, no scripts, readable with
//! any browser (and by `curl`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::ListFilter;
use crate::proxy::Endpoint;
use crate::stats::Graph;
use crate::trace::jaeger::trace_id_text;
use crate::trace::span::{Span, Value};
use crate::trace::store::{StoreStats, Summary, Trace};

/// HTML-escapes text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:baseline}
header b{font-size:16px}header a{color:#cfd6e6;text-decoration:none}header a.on{color:#fff;border-bottom:2px solid #6fa8ff}
main{padding:16px 20px}h1{font-size:18px;margin:4px 0 12px}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:5px 8px;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
th{font-weight:600;color:#4a5568;background:#eef0f4}tr.err td{background:#fff1f1}
a{color:#1f5fbf}.muted{color:#6b7385}.chip{display:inline-block;padding:0 6px;margin:1px 2px;border-radius:9px;font-size:12px;background:#e8eefc}
.chip.err{background:#fdd}.num{text-align:right;font-variant-numeric:tabular-nums}
form{background:#fff;padding:10px;margin-bottom:12px;display:flex;gap:12px;flex-wrap:wrap;align-items:end;border:1px solid #e3e6ec}
label{display:flex;flex-direction:column;font-size:12px;color:#4a5568}input,select{font-size:14px;padding:3px}
.bar{position:relative;height:14px;background:#f0f2f6;min-width:240px}.bar i{position:absolute;top:2px;height:10px;border-radius:2px}
.warn{background:#fff6d6;border:1px solid #e8d48a;padding:8px;margin-bottom:12px}
details summary{cursor:pointer}code{font-size:12px}.tags td{border:0;padding:1px 8px;font-size:12px}
"#;

fn page(title: &str, active: &str, body: &str) -> String {
    let nav = |href: &str, name: &str| {
        let on = if name == active { " class=on" } else { "" };
        format!("<a href=\"{href}\"{on}>{name}</a>")
    };
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{} · localmesh</title>\
         <meta name=viewport content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><b>localmesh console</b>{}{}</header><main>{body}</main></body></html>",
        esc(title),
        nav("/traces", "Traces"),
        nav("/graph", "Graph"),
    )
}

/// The pods behind the graph and their health as `/clusters` writes it: an ejected pod reads
/// `/failed_outlier_check`, one that is not ready `/failed_eds_health`.
pub fn pods(rows: &[(Arc<Endpoint>, &'static str)]) -> String {
    let mut b = String::from(
        "<h2>Pods</h2><table><tr><th>pod</th><th>workload</th><th>version</th><th>address</th>\
         <th>health</th><th>requests open</th></tr>",
    );
    for (ep, health) in rows {
        let shown = match *health {
            "healthy" => "healthy".to_string(),
            h if h.contains("outlier") => format!("<b>ejected</b> ({h})"),
            h => format!("not ready ({h})"),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{shown}</td><td>{}</td></tr>",
            esc(&ep.pod),
            esc(&ep.workload.to_string()),
            esc(ep.version()),
            ep.addr,
            ep.in_flight()
        );
    }
    b.push_str("</table>");
    b
}

/// A page with one message (errors, not found).
pub fn message(title: &str, text: &str) -> String {
    page(title, "", &format!("<h1>{}</h1><p>{}</p>", esc(title), esc(text)))
}

/// What `/traces` shows when spans are exported instead of kept.
pub fn exported(to: &Option<String>) -> String {
    let to = to.as_deref().unwrap_or("OTEL_EXPORTER_OTLP_ENDPOINT");
    message(
        "Traces are exported",
        &format!(
            "localmesh up runs with OTEL_EXPORTER_OTLP_ENDPOINT set, so every span goes to {to}: open your Jaeger there. \
             This console keeps no traces; the graph still works."
        ),
    )
}

fn ms(nanos: u64) -> String {
    let ms = nanos as f64 / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn clock(unix_nanos: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(unix_nanos);
    let s = humantime::format_rfc3339_millis(t).to_string();
    // 2026-12-01T12:00:00.123Z → 12:00:00.123
    s.get(11..23).unwrap_or(&s).to_string()
}

/// A stable colour per service name, never a red (red marks errors).
fn colour(service: &str) -> String {
    let h = service
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("hsl({},62%,48%)", 30 + h % 290)
}

pub fn traces(list: &[Summary], f: &ListFilter, services: &[String], problems: &[String], st: StoreStats) -> String {
    let mut b = String::from("<h1>Recent traces</h1>");
    for p in problems {
        let _ = write!(b, "<div class=warn>{}</div>", esc(p));
    }
    let _ = write!(
        b,
        "<form method=get action=/traces><label>Service<select name=service><option value=\"\">any</option>"
    );
    for s in services {
        let sel = if f.service.as_deref() == Some(s.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option{sel}>{}</option>", esc(s));
    }
    let _ = write!(
        b,
        "</select></label><label>Operation<input name=operation value=\"{}\" size=28></label>\
         <label>Min duration<input name=minDuration value=\"{}\" placeholder=\"e.g. 50ms\" size=8></label>\
         <label>Limit<input name=limit value=\"{}\" size=4></label>\
         <label><span>Errors only</span><input type=checkbox name=errors{}></label><button>Find traces</button></form>",
        esc(f.operation.as_deref().unwrap_or("")),
        esc(f.min_duration.as_deref().unwrap_or("")),
        f.limit,
        if f.errors_only { " checked" } else { "" },
    );
    let _ = write!(
        b,
        "<p class=muted>{} traces ({} spans, {:.1} MiB) kept; {} dropped to stay within bounds. Showing the newest {}.</p>",
        st.traces,
        st.spans,
        st.bytes as f64 / (1 << 20) as f64,
        st.evicted_traces,
        list.len()
    );
    if list.is_empty() {
        b.push_str(
            "<p>No trace matches. Place an order through the gateway (see README: Placing an order) and reload.</p>",
        );
        return page("Traces", "Traces", &b);
    }
    let longest = list.iter().map(|t| t.duration_nanos).max().unwrap_or(1).max(1);
    b.push_str("<table><tr><th>Started</th><th>Root</th><th>Services</th><th class=num>Spans</th><th class=num>Errors</th><th class=num>Duration</th><th></th></tr>");
    for t in list {
        let id = trace_id_text(t.id);
        let chips: String = t
            .services
            .iter()
            .map(|(s, n)| {
                format!(
                    "<span class=chip style=\"border-left:4px solid {}\">{} ({n})</span>",
                    colour(s),
                    esc(s)
                )
            })
            .collect();
        let width = (t.duration_nanos as f64 / longest as f64 * 100.0).max(0.5);
        let _ = write!(
            b,
            "<tr{}><td><a href=\"/traces/{id}\">{}</a></td><td><a href=\"/traces/{id}\">{}: {}</a>{}{}</td><td>{chips}</td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td><div class=bar><i style=\"left:0;width:{width:.1}%;background:{}\"></i></div></td></tr>",
            if t.errors > 0 { " class=err" } else { "" },
            clock(t.start_unix_nanos),
            esc(&t.root_service),
            esc(&t.root_operation),
            t.root_request
                .as_ref()
                .map(|r| format!("<br><span class=muted>{}</span>", esc(r)))
                .unwrap_or_default(),
            if t.orphans > 0 {
                format!(" <span class=\"chip err\">{} without parent</span>", t.orphans)
            } else {
                String::new()
            },
            t.spans,
            t.errors,
            ms(t.duration_nanos),
            colour(&t.root_service),
        );
    }
    b.push_str("</table>");
    page("Traces", "Traces", &b)
}

/// The version and pod a span names: Istio's tags on proxy spans, the resource on app spans.
fn version_pod(s: &Span) -> (String, String) {
    let text = |v: Option<&Value>| v.map(|v| v.as_text().into_owned());
    let version = s
        .tag_text("istio.canonical_revision")
        .or_else(|| text(s.process.tag("service.version")))
        .unwrap_or_default();
    let pod = text(s.process.tag("k8s.pod.name")).unwrap_or_default();
    (version, pod)
}

fn status(s: &Span) -> String {
    let code = |k: &str| s.tag_text(k);
    match (
        code("http.status_code").or_else(|| code("http.response.status_code")),
        code("grpc.status_code").or_else(|| code("rpc.grpc.status_code")),
    ) {
        (Some(h), Some(g)) => format!("{h} · grpc {g}"),
        (Some(h), None) => h,
        (None, Some(g)) => format!("grpc {g}"),
        (None, None) => String::new(),
    }
}

/// The waterfall: spans as a tree (children under their parent, by start), each with a bar on
/// the trace's time axis and its tags.
pub fn trace(t: &Trace) -> String {
    let sum = t.summary();
    let id = trace_id_text(t.id);
    let start = sum.start_unix_nanos;
    let total = sum.duration_nanos.max(1);
    let ids: HashSet<_> = t.spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<_, Vec<&Span>> = HashMap::new();
    let mut roots = Vec::new();
    for s in &t.spans {
        match s.parent.filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    let mut rows: Vec<(usize, &Span)> = Vec::new();
    let mut stack: Vec<(usize, &Span)> = roots.iter().rev().map(|s| (0, *s)).collect();
    while let Some((depth, s)) = stack.pop() {
        rows.push((depth, s));
        if let Some(kids) = children.get(&s.span_id) {
            for k in kids.iter().rev() {
                stack.push((depth + 1, *k));
            }
        }
    }
    let mut b = format!(
        "<h1>{}: {}</h1><p class=muted>Trace <code>{id}</code> · started {} · {} · {} spans · {} services · {} errors · <a href=\"/api/traces/{id}\">JSON</a></p>",
        esc(&sum.root_service),
        esc(&sum.root_operation),
        clock(start),
        ms(sum.duration_nanos),
        sum.spans,
        sum.services.len(),
        sum.errors,
    );
    if sum.orphans > 0 {
        let _ = write!(
            b,
            "<div class=warn>{} span(s) name a parent that is not in this trace (yet): they are shown at the top level.</div>",
            sum.orphans
        );
    }
    b.push_str("<table><tr><th>Service · operation</th><th>Version</th><th>Pod</th><th>Kind</th><th>Status</th><th class=num>Duration</th><th>Timeline</th></tr>");
    for (depth, s) in rows {
        let (version, pod) = version_pod(s);
        let left = s.start_unix_nanos.saturating_sub(start) as f64 / total as f64 * 100.0;
        let width = (s.duration_nanos as f64 / total as f64 * 100.0).max(0.3);
        let mut tags = String::new();
        let mut all: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in s.all_tags() {
            all.insert(k.to_string(), v.as_text().into_owned());
        }
        for (k, v) in &all {
            let _ = write!(tags, "<tr><td><code>{}</code></td><td>{}</td></tr>", esc(k), esc(v));
        }
        let mut process = String::new();
        for (k, v) in &s.process.tags {
            let _ = write!(
                process,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(k),
                esc(&v.as_text())
            );
        }
        let _ = write!(
            b,
            "<tr{}><td style=\"padding-left:{}px\"><details><summary><span class=chip style=\"border-left:4px solid {}\">{}</span> {}</summary>\
             <table class=tags>{tags}<tr><td colspan=2 class=muted>process</td></tr>{process}\
             <tr><td><code>spanID</code></td><td>{}</td></tr></table></details></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td>\
             <td><div class=bar><i style=\"left:{left:.2}%;width:{width:.2}%;background:{}\"></i></div></td></tr>",
            if s.is_error() { " class=err" } else { "" },
            8 + depth * 18,
            colour(&s.process.service),
            esc(&s.process.service),
            esc(&s.name),
            s.span_id,
            esc(&version),
            esc(&pod),
            s.kind.as_tag().unwrap_or("-"),
            esc(&status(s)),
            ms(s.duration_nanos),
            if s.is_error() {
                "#d64545".to_string()
            } else {
                colour(&s.process.service)
            },
        );
    }
    b.push_str("</table>");
    page(&format!("Trace {id}"), "Traces", &b)
}

/// The versioned service graph as SVG: nodes in columns by distance from the callers nobody
/// calls (the gateway first), edges labelled with requests/s, error % and p99.
pub fn graph(g: &Graph, window: Duration, problem: Option<&str>, pods: &str) -> String {
    let mut b = format!(
        "<meta http-equiv=refresh content=5><h1>Service graph</h1><p class=muted>Requests over the last {}s \
         (istio_requests_total and istio_request_duration_milliseconds, reporter=source); refreshes every 5 s. \
         Window: <a href=\"/graph?window=30s\">30s</a> <a href=\"/graph?window=1m\">1m</a> <a href=\"/graph?window=5m\">5m</a> \
         <a href=\"/graph?window=10m\">10m</a> · <a href=\"/api/graph?window={}s\">JSON</a></p>",
        g.window_seconds.round(),
        window.as_secs(),
    );
    if let Some(p) = problem {
        let _ = write!(b, "<div class=warn>{}</div>", esc(p));
    }
    if g.edges.is_empty() {
        b.push_str("<p>No traffic in this window yet: send some requests through the gateway.</p>");
        b.push_str(pods);
        return page("Graph", "Graph", &b);
    }
    // Columns: the longest call chain from a node nobody calls (the gateway first), the same for
    // every version of an app; rows top-down, each node near the mean row of its callers.
    let mut depth: HashMap<&str, usize> = g.nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    for _ in 0..g.nodes.len() {
        for e in &g.edges {
            let d = depth.get(e.source.as_str()).copied().unwrap_or(0) + 1;
            if e.source != e.target && d < g.nodes.len() && depth.get(e.target.as_str()).is_some_and(|&t| t < d) {
                depth.insert(e.target.as_str(), d);
            }
        }
    }
    let mut app_depth: HashMap<&str, usize> = HashMap::new();
    for n in &g.nodes {
        let d = app_depth.entry(n.app.as_str()).or_default();
        *d = (*d).max(depth[n.id.as_str()]);
    }
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for n in &g.nodes {
        columns
            .entry(app_depth[n.app.as_str()])
            .or_default()
            .push(n.id.as_str());
    }
    let (cw, rh, nw, nh) = (300.0, 100.0, 210.0, 44.0);
    let mut row_of: HashMap<&str, f64> = HashMap::new();
    let mut pos: HashMap<&str, (f64, f64)> = HashMap::new();
    for (c, ids) in &mut columns {
        let mean_caller_row = |id: &str| {
            let rows: Vec<f64> = g
                .edges
                .iter()
                .filter(|e| e.target == id)
                .filter_map(|e| row_of.get(e.source.as_str()).copied())
                .collect();
            if rows.is_empty() {
                0.0
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        ids.sort_by(|a, b| mean_caller_row(a).total_cmp(&mean_caller_row(b)).then(a.cmp(b)));
        for (r, id) in ids.iter().enumerate() {
            row_of.insert(id, r as f64);
            pos.insert(id, (20.0 + *c as f64 * cw, 30.0 + r as f64 * rh));
        }
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1);
    let width = 40.0 + columns.len() as f64 * cw;
    let height = 60.0 + rows as f64 * rh;
    let _ = write!(
        b,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" style=\"background:#fff;border:1px solid #e3e6ec\">\
         <defs><marker id=\"arr\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerUnits=\"userSpaceOnUse\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#7b8497\"/></marker></defs>"
    );
    // An edge's share of its caller's requests to the same app (all versions): the 80/20 split
    // shows on the product edges.
    let app_of: HashMap<&str, &str> = g.nodes.iter().map(|n| (n.id.as_str(), n.app.as_str())).collect();
    let key = |e: &crate::stats::Edge| (e.source.clone(), app_of.get(e.target.as_str()).copied().unwrap_or(""));
    let mut out_of: HashMap<(String, &str), u64> = HashMap::new();
    for e in &g.edges {
        *out_of.entry(key(e)).or_default() += e.requests;
    }
    let share = |e: &crate::stats::Edge| e.requests as f64 / out_of.get(&key(e)).copied().unwrap_or(1).max(1) as f64;
    for e in &g.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(e.source.as_str()), pos.get(e.target.as_str())) else {
            continue;
        };
        let (ax, ay, bx, by) = (x1 + nw, y1 + nh / 2.0, x2, y2 + nh / 2.0);
        let colour = if e.error_rate >= 0.05 {
            "#d64545"
        } else if e.error_rate > 0.0 {
            "#e0a030"
        } else {
            "#3c9a5f"
        };
        let stroke = (1.0 + e.rps.max(0.0).ln_1p()).min(6.0);
        let mx = (ax + bx) / 2.0;
        // The label sits at 70 % of the curve, near its target, so labels of edges leaving one
        // node do not overlap.
        let t: f64 = 0.7;
        let (u, w) = (1.0 - t, t);
        let lx = u * u * u * ax + 3.0 * u * u * w * mx + 3.0 * u * w * w * mx + w * w * w * bx;
        let ly = u * u * u * ay + 3.0 * u * u * w * ay + 3.0 * u * w * w * by + w * w * w * by;
        let _ = write!(
            b,
            "<path d=\"M{ax:.0},{ay:.0} C{mx:.0},{ay:.0} {mx:.0},{by:.0} {bx:.0},{by:.0}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{stroke:.1}\" marker-end=\"url(#arr)\"/>\
             <text x=\"{lx:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#1d2433\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">\
             <title>{} → {}: {:.2} requests/s, {:.1} % errors, p99 {}</title>{:.1} rps · {:.0}%</text>",
            ly - 5.0,
            esc(&e.source),
            esc(&e.target),
            e.rps,
            e.error_rate * 100.0,
            e.p99_ms.map_or("-".into(), |p| format!("{p:.1} ms")),
            e.rps,
            share(e) * 100.0,
        );
    }
    for n in &g.nodes {
        let Some(&(x, y)) = pos.get(n.id.as_str()) else {
            continue;
        };
        let _ = write!(
            b,
            "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{nw}\" height=\"{nh}\" rx=\"6\" fill=\"#f4f7ff\" stroke=\"{}\" stroke-width=\"2\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"600\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#4a5568\">{}</text>",
            colour(&n.app),
            x + nw / 2.0,
            y + 18.0,
            esc(&n.app),
            x + nw / 2.0,
            y + 34.0,
            esc(if n.version == "unknown" { "" } else { &n.version }),
        );
    }
    b.push_str("</svg><p class=muted>Edge labels: requests/s and the share of the caller's requests to that app (the split between versions); green: no errors, amber: some, red: 5 % or more. Hover for error % and p99.</p>\
        <h1 style=\"margin-top:18px\">Edges</h1><table><tr><th>From</th><th>To</th><th class=num>Requests</th><th class=num>Requests/s</th><th class=num>Share of the app's calls</th><th class=num>Error %</th><th class=num>p99</th></tr>");
    for e in &g.edges {
        let share = share(e);
        let _ = write!(
            b,
            "<tr{}><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{:.2}</td><td class=num>{:.1}%</td><td class=num>{:.2}%</td><td class=num>{}</td></tr>",
            if e.error_rate > 0.0 { " class=err" } else { "" },
            esc(&e.source),
            esc(&e.target),
            e.requests,
            e.rps,
            share * 100.0,
            e.error_rate * 100.0,
            e.p99_ms.map_or("-".into(), |p| format!("{p:.1} ms")),
        );
    }
    b.push_str("</table>");
    b.push_str(pods);
    page("Graph", "Graph", &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
