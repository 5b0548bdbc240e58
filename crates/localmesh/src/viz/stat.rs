//! `localmesh stat`: one row per Deployment and version with its success rate, requests per
//! second and latency percentiles over a window, as `linkerd viz stat deploy` prints them. The
//! admin port computes the numbers (`/api/stat`, from the exported Istio histogram); this only
//! asks and prints.

use std::process::ExitCode;
use std::time::Duration;

use super::client::{Admin, query};
use super::table::{Align, render};
use super::{AdminArg, Error, Format, ms, out, percent};
use crate::stats::{Stat, StatRow};

#[derive(clap::Args, Debug, Clone)]
pub struct StatArgs {
    /// The window the rates and latencies cover, e.g. 30s, 5m (the admin keeps 10m of history).
    #[arg(short = 't', long, value_name = "DURATION", default_value = "30s", value_parser = parse_window)]
    pub window: Window,
    #[command(flatten)]
    pub admin: AdminArg,
    /// Print the admin's JSON (pretty) instead of a table; the same as -o json.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Output format: table (the default), wide (adds APP and REQUESTS) or json.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// `-t` as typed (sent to the admin as is, so its answer names what the user wrote) and as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub text: String,
    pub duration: Duration,
}

/// The syntax is checked here; the ceiling is the admin's to enforce (it knows how much history
/// it keeps), and its 400 is shown.
fn parse_window(raw: &str) -> Result<Window, String> {
    let duration = service_runtime::env::parse_duration(raw)?;
    Ok(Window {
        text: raw.trim().to_string(),
        duration,
    })
}

pub fn main(args: StatArgs) -> ExitCode {
    super::run("stat", run(args))
}

async fn run(args: StatArgs) -> Result<(), Error> {
    let admin = Admin::new(args.admin.admin);
    let v = admin
        .get_json(&format!("/api/stat{}", query(&[("window", &args.window.text)])))
        .await?;
    match Format::resolve(args.json, args.output) {
        Format::Json => {
            let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Failed(e.to_string()))?;
            out(&(text + "\n"))
        }
        format => {
            let stat: Stat = serde_json::from_value(v).map_err(|e| {
                Error::Failed(format!(
                    "the admin port at {} answered /api/stat with something else than a stat ({e})",
                    admin.addr()
                ))
            })?;
            if stat.rows.is_empty() {
                super::note("localmesh stat: the mesh has no Deployments");
                return Ok(());
            }
            out(&table(&stat.rows, format == Format::Wide))
        }
    }
}

/// `12.3rps`; two decimals below 0.1 so one request in a long window does not read as none.
pub fn rps(v: f64) -> String {
    if v > 0.0 && v < 0.1 {
        format!("{v:.2}rps")
    } else {
        format!("{v:.1}rps")
    }
}

/// The table, in the admin's row order (namespace, then Deployment).
pub fn table(rows: &[StatRow], wide: bool) -> String {
    use Align::{Left, Right};
    let mut columns = vec![
        ("NAMESPACE", Left),
        ("NAME", Left),
        ("VERSION", Left),
        ("MESHED", Right),
        ("SUCCESS", Right),
        ("RPS", Right),
        ("LATENCY_P50", Right),
        ("LATENCY_P95", Right),
        ("LATENCY_P99", Right),
    ];
    if wide {
        columns.extend([("APP", Left), ("REQUESTS", Right)]);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let traffic = r.requests > 0;
            let mut row = vec![
                super::clean(&r.of.namespace),
                super::clean(&r.of.workload),
                super::clean(&r.of.version),
                format!("{}/{}", r.of.ready, r.of.pods),
                percent(r.success_rate),
                if traffic { rps(r.rps) } else { "-".into() },
                ms(r.p50_ms),
                ms(r.p95_ms),
                ms(r.p99_ms),
            ];
            if wide {
                row.extend([super::clean(&r.of.app), r.requests.to_string()]);
            }
            row
        })
        .collect();
    render(&columns, &cells)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::WorkloadInfo;

    fn row(
        workload: &str,
        version: &str,
        requests: u64,
        success: Option<f64>,
        rps: f64,
        p: Option<[f64; 3]>,
    ) -> StatRow {
        StatRow {
            of: WorkloadInfo {
                namespace: "default".into(),
                workload: workload.into(),
                app: "product-service".into(),
                version: version.into(),
                pods: 2,
                ready: if requests > 0 { 2 } else { 1 },
            },
            requests,
            success_rate: success,
            rps,
            p50_ms: p.map(|p| p[0]),
            p95_ms: p.map(|p| p[1]),
            p99_ms: p.map(|p| p[2]),
        }
    }

    #[test]
    fn the_table_reads_like_linkerd_viz_stat() {
        let rows = [
            row("product-v1", "v1", 395, Some(0.9875), 13.17, Some([1.26, 4.8, 9.96])),
            row("product-v2", "v2", 0, None, 0.0, None),
        ];
        assert_eq!(
            table(&rows, false),
            "NAMESPACE   NAME         VERSION   MESHED   SUCCESS       RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99\n\
             default     product-v1   v1           2/2    98.75%   13.2rps         1.3ms         4.8ms          10ms\n\
             default     product-v2   v2           1/2         -         -             -             -             -\n"
        );
        let wide = table(&rows, true);
        let header = wide.lines().next().unwrap();
        assert!(header.ends_with("LATENCY_P99   APP               REQUESTS"), "{header}");
        assert!(
            wide.lines().nth(1).unwrap().ends_with("product-service        395"),
            "{wide}"
        );
    }

    #[test]
    fn rates_keep_a_rare_request_visible() {
        assert_eq!(rps(12.34), "12.3rps");
        assert_eq!(rps(1.0 / 30.0), "0.03rps");
        assert_eq!(rps(0.0), "0.0rps");
    }

    #[test]
    fn the_window_is_checked_for_syntax_only() {
        assert_eq!(parse_window(" 11m").unwrap().text, "11m");
        assert_eq!(parse_window("90").unwrap().duration, Duration::from_secs(90));
        assert!(parse_window("5 parsecs").is_err());
        assert!(parse_window("0s").is_err());
    }
}
