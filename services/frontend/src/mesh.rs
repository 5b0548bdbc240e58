//! The last `MESH_HISTORY` product calls and who answered them, so `/mesh`
//! can show the canary split (80/20 by default in the mesh) as it happens.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// How many of the most recent calls the table lists.
pub const RECENT_ROWS: usize = 20;

/// One call from the frontend to product-service.
#[derive(Debug, Clone, Serialize)]
pub struct ProductCall {
    /// UTC wall clock, `HH:MM:SS.mmm`.
    pub time: String,
    pub method: &'static str,
    /// The product id, or `page N` for a list.
    pub target: String,
    /// The answering pod's `x-version`; `none` when no pod answered.
    pub version: String,
    pub pod: String,
    /// The gRPC code, `OK` on success.
    pub code: &'static str,
    /// Milliseconds with one decimal: local calls take well under one.
    pub latency_ms: f64,
    pub request_id: String,
}

/// Label used when a call got no answer from any pod (refused, timed out).
pub const NO_ANSWER: &str = "none";

pub struct MeshHistory {
    capacity: usize,
    calls: Mutex<VecDeque<ProductCall>>,
}

impl MeshHistory {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            calls: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    pub fn record(&self, call: ProductCall) {
        // The deque is plain data: a panic elsewhere while it was locked
        // cannot leave it half-updated, so a poisoned lock is still usable.
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.len() == self.capacity {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    pub fn snapshot(&self) -> Vec<ProductCall> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.iter().cloned().collect()
    }

    pub fn view(&self) -> MeshView {
        MeshView::build(&self.snapshot(), self.capacity)
    }
}

/// A share of the remembered calls.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Share {
    pub label: String,
    pub version: String,
    pub count: usize,
    pub percent: f64,
    /// `80.0%`.
    pub percent_text: String,
    pub color: &'static str,
}

/// Everything `/mesh` draws.
#[derive(Debug, Clone, Serialize)]
pub struct MeshView {
    pub total: usize,
    pub capacity: usize,
    pub errors: usize,
    pub versions: Vec<Share>,
    pub pods: Vec<Share>,
    /// Newest first.
    pub recent: Vec<ProductCall>,
    pub chart: Chart,
}

impl MeshView {
    pub fn build(calls: &[ProductCall], capacity: usize) -> Self {
        let total = calls.len();
        let mut by_version: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_pod: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for c in calls {
            *by_version.entry(c.version.as_str()).or_default() += 1;
            *by_pod.entry((c.pod.as_str(), c.version.as_str())).or_default() += 1;
        }
        let share = |label: String, version: &str, count: usize| {
            let percent = if total == 0 {
                0.0
            } else {
                count as f64 * 100.0 / total as f64
            };
            Share {
                label,
                version: version.to_owned(),
                count,
                percent,
                percent_text: format!("{percent:.1}%"),
                color: version_color(version),
            }
        };
        let versions: Vec<Share> = by_version.into_iter().map(|(v, n)| share(v.to_owned(), v, n)).collect();
        let mut pods: Vec<Share> = by_pod
            .into_iter()
            .map(|((pod, v), n)| share(pod.to_owned(), v, n))
            .collect();
        // Pods of one version together, in version order, busiest first.
        pods.sort_by(|a, b| a.version.cmp(&b.version).then(b.count.cmp(&a.count)));
        let chart = Chart::build(&versions, &pods);
        Self {
            total,
            capacity,
            errors: calls.iter().filter(|c| c.code != "OK").count(),
            versions,
            pods,
            recent: calls.iter().rev().take(RECENT_ROWS).cloned().collect(),
            chart,
        }
    }
}

/// A version's colour, stable across pages and reloads: v1 blue, v2
/// orange, v3 green, ...; grey for calls that no pod answered.
pub fn version_color(version: &str) -> &'static str {
    const PALETTE: &[&str] = &["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04"];
    if version == NO_ANSWER {
        return "#9ca3af";
    }
    let n: usize = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    PALETTE[n.saturating_sub(1) % PALETTE.len()]
}

/// The geometry of the server-rendered SVG: a stacked bar of the version
/// split, then one horizontal bar per version and per pod. Computed here so
/// the template only draws, and so it is testable without a browser.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub label_width: u32,
    pub bar_width: u32,
    pub split: Vec<Segment>,
    pub split_y: u32,
    pub headings: Vec<Heading>,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub x: f64,
    pub width: f64,
    pub color: &'static str,
    pub label: String,
    /// Only wide segments carry their label inside.
    pub show_label: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Heading {
    pub y: u32,
    pub text: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub y: u32,
    pub label: String,
    /// The label cut to fit the label column; the full one is the tooltip.
    pub short: String,
    pub width: f64,
    pub color: &'static str,
    pub value: String,
}

const CHART_WIDTH: u32 = 900;
const LABEL_WIDTH: u32 = 240;
/// Leaves 150 px right of the bars for "100.0% · 200 calls".
const BAR_AREA: u32 = 500;
const ROW_HEIGHT: u32 = 30;
const SPLIT_HEIGHT: u32 = 36;
const HEADING_HEIGHT: u32 = 34;
/// What fits in `LABEL_WIDTH` at 13 px.
const LABEL_CHARS: usize = 32;

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

impl Chart {
    fn build(versions: &[Share], pods: &[Share]) -> Self {
        let bar = f64::from(BAR_AREA);
        let mut x = f64::from(LABEL_WIDTH);
        let split = versions
            .iter()
            .map(|s| {
                let width = bar * s.percent / 100.0;
                let seg = Segment {
                    x,
                    width,
                    color: s.color,
                    label: format!("{} {}", s.label, s.percent_text),
                    show_label: width >= 90.0,
                };
                x += width;
                seg
            })
            .collect();
        let split_y = 8;
        let mut y = split_y + SPLIT_HEIGHT + 16;
        let mut headings = Vec::new();
        let mut rows = Vec::new();
        for (text, shares) in [("by version", versions), ("by pod", pods)] {
            headings.push(Heading {
                y: y + HEADING_HEIGHT / 2 + 4,
                text,
            });
            y += HEADING_HEIGHT;
            for s in shares {
                let label = if text == "by pod" {
                    format!("{} ({})", s.label, s.version)
                } else {
                    s.label.clone()
                };
                rows.push(Row {
                    y,
                    short: shorten(&label, LABEL_CHARS),
                    label,
                    // A sliver stays visible for a share that rounds to nothing.
                    width: (bar * s.percent / 100.0).max(2.0),
                    color: s.color,
                    value: format!("{} · {} calls", s.percent_text, s.count),
                });
                y += ROW_HEIGHT;
            }
        }
        Self {
            width: CHART_WIDTH,
            height: y + 8,
            label_width: LABEL_WIDTH,
            bar_width: BAR_AREA,
            split,
            split_y,
            headings,
            rows,
        }
    }
}

/// `HH:MM:SS.mmm` in UTC; the table only needs to order calls and match
/// them with logs, and a date would add nothing within 200 calls.
pub fn clock(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(version: &str, pod: &str) -> ProductCall {
        ProductCall {
            time: "00:00:00.000".into(),
            method: "GetProduct",
            target: "1".into(),
            version: version.into(),
            pod: pod.into(),
            code: "OK",
            latency_ms: 1.0,
            request_id: "r".into(),
        }
    }

    #[test]
    fn shares_by_version_and_pod() {
        let h = MeshHistory::new(10);
        for i in 0..8 {
            h.record(call("v1", if i % 2 == 0 { "p1-a" } else { "p1-b" }));
        }
        h.record(call("v2", "p2-a"));
        h.record(call("v2", "p2-a"));
        let v = h.view();
        assert_eq!(v.total, 10);
        let versions: Vec<_> = v.versions.iter().map(|s| (s.label.as_str(), s.count)).collect();
        assert_eq!(versions, [("v1", 8), ("v2", 2)]);
        assert_eq!(v.versions[0].percent_text, "80.0%");
        assert_eq!(v.pods.len(), 3);
        assert_eq!(v.pods[2].label, "p2-a");
        assert_eq!(v.chart.split.len(), 2);
        assert!((v.chart.split[0].width - 400.0).abs() < 1e-9);
        assert_eq!(v.chart.rows.len(), 5);
    }

    #[test]
    fn only_the_last_calls_are_remembered() {
        let h = MeshHistory::new(3);
        for v in ["v1", "v1", "v1", "v2", "v2"] {
            h.record(call(v, "p"));
        }
        let v = h.view();
        assert_eq!(v.total, 3);
        assert_eq!(v.versions[0].count, 1);
        assert_eq!(v.recent[0].version, "v2");
    }

    #[test]
    fn empty_history_draws_an_empty_chart() {
        let v = MeshHistory::new(5).view();
        assert_eq!(v.total, 0);
        assert!(v.chart.split.is_empty() && v.chart.rows.is_empty());
    }

    #[test]
    fn colours_and_clock() {
        assert_eq!(version_color("v1"), "#2563eb");
        assert_eq!(version_color("v2"), "#ea580c");
        assert_eq!(version_color("v2.1-canary"), "#ea580c");
        assert_eq!(version_color(NO_ANSWER), "#9ca3af");
        assert_eq!(clock(UNIX_EPOCH + Duration::from_millis(3_723_004)), "01:02:03.004");
    }
}
