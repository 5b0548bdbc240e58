//! `localmesh top`: the busiest paths right now, as `linkerd viz top` shows them. It reads the
//! admin's `/tap` stream and aggregates by (source, destination, method, path) itself: count,
//! best, worst and last latency, success rate. On a terminal it redraws in place; otherwise it
//! collects for `--duration` and prints once, so it can be piped or scripted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use serde::Serialize;
use tokio::time::Instant;

use super::client::Admin;
use super::table::{Align, render};
use super::tap::{FilterArgs, TapLine, parse_line};
use super::{AdminArg, Error, clean, ms, out, percent};
use crate::tap::TapEvent;

/// How long `top` collects when it prints once and no `--duration` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Redrawing faster than this only flickers.
const MIN_REFRESH: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Rows shown, busiest first (also the length of the --json array).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000).map(|n| n as usize))]
    pub max_rows: usize,
    /// Distinct (source, destination, method, path) kept; requests on further ones are counted
    /// as untracked, so a long run over many distinct paths stays bounded.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_paths: usize,
    /// How often the terminal view redraws, e.g. 1s, 500ms (at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_refresh)]
    pub refresh: Duration,
    /// How long to collect, e.g. 30s. Default: until Ctrl-C on a terminal; 10s when stdout is not
    /// a terminal or with --json, which then print once at the end.
    #[arg(long, value_name = "DURATION", value_parser = service_runtime::env::parse_duration)]
    pub duration: Option<Duration>,
    /// Print the rows once, as a JSON array, instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_refresh(raw: &str) -> Result<Duration, String> {
    let d = service_runtime::env::parse_duration(raw)?;
    if d < MIN_REFRESH {
        return Err(format!("must be at least {}ms", MIN_REFRESH.as_millis()));
    }
    Ok(d)
}

/// Success as the graph and `stat` count it (Envoy's view): a response below 500 (0 is none at
/// all) whose gRPC status, if any, is not an upstream error ([`crate::grpc::is_upstream_error`]).
pub fn is_success(status: u16, grpc_status: Option<&str>) -> bool {
    let grpc_failed = grpc_status.is_some_and(crate::grpc::is_upstream_error);
    status != 0 && status < 500 && !grpc_failed
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    destination: String,
    method: String,
    path: String,
}

#[derive(Debug, Clone)]
struct Tally {
    count: u64,
    successes: u64,
    best: f64,
    worst: f64,
    last: f64,
}

/// One row of `top`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRow {
    pub source: String,
    pub destination: String,
    pub method: String,
    pub path: String,
    pub count: u64,
    pub best_ms: f64,
    pub worst_ms: f64,
    pub last_ms: f64,
    /// 0 to 1.
    pub success_rate: f64,
}

/// The aggregation over everything read so far.
#[derive(Debug)]
pub struct Top {
    paths: HashMap<Key, Tally>,
    max_paths: usize,
    /// Events read.
    pub requests: u64,
    /// Requests the admin could not send (its buffer overflowed), from its lagged notices.
    pub lagged: u64,
    /// Requests on paths beyond `max_paths`.
    pub untracked: u64,
    /// Lines that were neither an event nor a notice.
    pub skipped: u64,
}

impl Top {
    pub fn new(max_paths: usize) -> Self {
        Top {
            paths: HashMap::new(),
            max_paths,
            requests: 0,
            lagged: 0,
            untracked: 0,
            skipped: 0,
        }
    }

    pub fn add_line(&mut self, text: &str) {
        match parse_line(text) {
            Ok(TapLine::Event(e)) => self.add(&e),
            Ok(TapLine::Lagged { lagged, .. }) => self.lagged += lagged,
            Err(_) => self.skipped += 1,
        }
    }

    pub fn add(&mut self, e: &TapEvent) {
        self.requests += 1;
        let key = Key {
            source: e.source.clone(),
            destination: e.destination.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
        };
        let ok = is_success(e.status, e.grpc_status.as_deref());
        let ms = e.latency_ms;
        if let Some(t) = self.paths.get_mut(&key) {
            t.count += 1;
            t.successes += u64::from(ok);
            t.best = t.best.min(ms);
            t.worst = t.worst.max(ms);
            t.last = ms;
        } else if self.paths.len() < self.max_paths {
            self.paths.insert(
                key,
                Tally {
                    count: 1,
                    successes: u64::from(ok),
                    best: ms,
                    worst: ms,
                    last: ms,
                },
            );
        } else {
            self.untracked += 1;
        }
    }

    /// The `max` busiest, by count, then by the key so equal counts keep their order between
    /// redraws.
    pub fn rows(&self, max: usize) -> Vec<TopRow> {
        let mut all: Vec<(&Key, &Tally)> = self.paths.iter().collect();
        all.sort_by(|(ka, a), (kb, b)| {
            b.count.cmp(&a.count).then_with(|| {
                (&ka.source, &ka.destination, &ka.method, &ka.path).cmp(&(
                    &kb.source,
                    &kb.destination,
                    &kb.method,
                    &kb.path,
                ))
            })
        });
        all.into_iter()
            .take(max)
            .map(|(k, t)| TopRow {
                source: k.source.clone(),
                destination: k.destination.clone(),
                method: k.method.clone(),
                path: k.path.clone(),
                count: t.count,
                best_ms: t.best,
                worst_ms: t.worst,
                last_ms: t.last,
                success_rate: t.successes as f64 / t.count as f64,
            })
            .collect()
    }
}

/// The table; Service names lose the `.svc.cluster.local` every one of them carries.
pub fn table(rows: &[TopRow]) -> String {
    use Align::{Left, Right};
    let columns = [
        ("SOURCE", Left),
        ("DESTINATION", Left),
        ("METHOD", Left),
        ("PATH", Left),
        ("COUNT", Right),
        ("BEST", Right),
        ("WORST", Right),
        ("LAST", Right),
        ("SUCCESS", Right),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let dest = r
                .destination
                .strip_suffix(".svc.cluster.local")
                .unwrap_or(&r.destination);
            vec![
                clean(&r.source),
                clean(dest),
                clean(&r.method),
                clean(&r.path),
                r.count.to_string(),
                ms(Some(r.best_ms)),
                ms(Some(r.worst_ms)),
                ms(Some(r.last_ms)),
                percent(Some(r.success_rate)),
            ]
        })
        .collect();
    render(&columns, &cells)
}

/// What the counts leave out, for the heading or stderr.
fn caveats(top: &Top) -> Vec<String> {
    let mut c = Vec::new();
    if top.lagged > 0 {
        c.push(format!("{} requests not shown (tap fell behind)", top.lagged));
    }
    if top.untracked > 0 {
        c.push(format!("{} requests on paths beyond --max-paths", top.untracked));
    }
    if top.skipped > 0 {
        c.push(format!("{} lines that were not tap events skipped", top.skipped));
    }
    c
}

/// A whole screen: clear, home, a heading, the table.
fn frame(top: &Top, addr: &str, elapsed: Duration, max_rows: usize, ended: bool) -> String {
    let mut f = String::from("\x1b[H\x1b[2J");
    let _ = write!(
        f,
        "localmesh top · {} · {} requests in {}s",
        clean(addr),
        top.requests,
        elapsed.as_secs()
    );
    for c in caveats(top) {
        let _ = write!(f, " · {c}");
    }
    f.push_str(if ended {
        " · the admin port ended the stream\n\n"
    } else {
        " · Ctrl-C to quit\n\n"
    });
    f.push_str(&table(&top.rows(max_rows)));
    f
}

pub fn main(args: TopArgs) -> ExitCode {
    super::run("top", run(args))
}

async fn run(args: TopArgs) -> Result<(), Error> {
    let interactive = !args.json && std::io::stdout().is_terminal();
    let duration = args.duration.or((!interactive).then_some(DEFAULT_DURATION));
    let admin = Admin::new(args.admin.admin);
    let mut lines = admin.lines(&args.filter.tap_path(None)).await?;
    let started = Instant::now();
    let mut top = Top::new(args.max_paths);
    let mut tick = tokio::time::interval(args.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let done = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(done);
    let ctrl_c = super::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ended = false;
    // A broken stream still leaves counts worth printing; the error is returned after them.
    let mut failure = None;
    loop {
        tokio::select! {
            next = lines.next() => match next {
                Ok(Some(text)) => top.add_line(&text),
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            },
            _ = tick.tick(), if interactive => {
                out(&frame(&top, admin.addr(), started.elapsed(), args.max_rows, false))?;
            }
            () = &mut done => break,
            () = &mut ctrl_c => break,
        }
    }
    if interactive {
        out(&frame(&top, admin.addr(), started.elapsed(), args.max_rows, ended))?;
    } else {
        let rows = top.rows(args.max_rows);
        if args.json {
            let text = serde_json::to_string_pretty(&rows).map_err(|e| Error::Failed(e.to_string()))?;
            out(&(text + "\n"))?;
        } else {
            out(&table(&rows))?;
        }
        if top.requests == 0 {
            super::note(&format!(
                "localmesh top: no requests in {}s",
                started.elapsed().as_secs_f64().round()
            ));
        }
        for c in caveats(&top) {
            super::note(&format!("localmesh top: {c}"));
        }
        if ended {
            super::note(&format!(
                "localmesh top: the admin port at {} ended the stream",
                admin.addr()
            ));
        }
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::super::tap::tests::event;
    use super::*;

    #[test]
    fn success_follows_the_stats_rule() {
        assert!(is_success(200, None));
        assert!(is_success(404, None));
        assert!(is_success(200, Some("0")));
        assert!(is_success(200, Some("5")), "NOT_FOUND is the caller's problem");
        assert!(is_success(200, Some("3")));
        for g in ["2", "4", "8", "12", "13", "14", "15"] {
            assert!(!is_success(200, Some(g)), "grpc {g}");
        }
        assert!(!is_success(500, None));
        assert!(!is_success(503, Some("0")));
        assert!(!is_success(0, None), "no response at all");
    }

    #[test]
    fn paths_aggregate_and_sort_by_count() {
        let mut top = Top::new(100);
        for (ms, grpc) in [(5.0, "0"), (1.5, "0"), (9.0, "14"), (2.0, "0")] {
            top.add(&event("/product.ProductService/GetProduct", "p", 200, Some(grpc), ms));
        }
        top.add(&event("/product.ProductService/ListProducts", "p", 200, Some("0"), 7.0));
        let mut other_source = event("/product.ProductService/GetProduct", "p", 500, None, 3.0);
        other_source.source = "frontend-0".into();
        top.add(&other_source);
        top.add_line(r#"{"lagged": 4, "message": "m"}"#);
        top.add_line("garbage");

        let rows = top.rows(10);
        assert_eq!(rows.len(), 3);
        let first = &rows[0];
        assert_eq!(
            (
                first.path.as_str(),
                first.count,
                first.best_ms,
                first.worst_ms,
                first.last_ms,
                first.success_rate
            ),
            ("/product.ProductService/GetProduct", 4, 1.5, 9.0, 2.0, 0.75)
        );
        // Equal counts: by source, then path.
        assert_eq!(rows[1].source, "frontend-0");
        assert_eq!(rows[1].success_rate, 0.0);
        assert_eq!(rows[2].path, "/product.ProductService/ListProducts");
        assert_eq!(top.rows(1).len(), 1);
        assert_eq!((top.requests, top.lagged, top.skipped), (6, 4, 1));
    }

    #[test]
    fn paths_beyond_the_cap_are_counted_not_kept() {
        let mut top = Top::new(1);
        top.add(&event("/a", "p", 200, None, 1.0));
        top.add(&event("/b", "p", 200, None, 1.0));
        top.add(&event("/a", "p", 200, None, 1.0));
        assert_eq!(top.rows(10).len(), 1);
        assert_eq!((top.requests, top.untracked), (3, 1));
        assert!(caveats(&top)[0].contains("--max-paths"));
    }

    #[test]
    fn the_table_and_the_screen() {
        let mut top = Top::new(10);
        top.add(&event("/product.ProductService/GetProduct", "p", 200, Some("0"), 3.0));
        top.add(&event("/product.ProductService/GetProduct", "p", 200, Some("14"), 12.0));
        assert_eq!(
            table(&top.rows(10)),
            "SOURCE                     DESTINATION               METHOD   PATH                                 COUNT    BEST   WORST   LAST   SUCCESS\n\
             public-api-gateway-istio   product-service.default   POST     /product.ProductService/GetProduct       2   3.0ms    12ms   12ms    50.00%\n"
        );
        let f = frame(&top, "127.0.0.1:15000", Duration::from_secs(3), 10, false);
        assert!(
            f.starts_with("\x1b[H\x1b[2Jlocalmesh top · 127.0.0.1:15000 · 2 requests in 3s · Ctrl-C to quit\n\nSOURCE"),
            "{f:?}"
        );
        assert!(parse_refresh("50ms").is_err());
        assert_eq!(parse_refresh("500ms"), Ok(Duration::from_millis(500)));
    }
}
