//! `localmesh tap`: requests as they pass the gateway and the sidecars, one line each, as
//! `linkerd viz tap` shows them, from the admin port's `/tap` stream. The filters are the admin's
//! (it drops what does not match before sending), so only the wanted events cross the socket.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::client::{Admin, query};
use super::{AdminArg, Error, Format, clean, ms, out};
use crate::tap::TapEvent;

/// `--path`, `--authority`, `--header`: which requests `tap` and `top` see.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only requests whose path starts with PREFIX, e.g. /product.ProductService/.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only requests whose :authority starts with PREFIX, e.g. product-service.
    #[arg(long, value_name = "PREFIX")]
    pub authority: Option<String>,
    /// Only requests carrying this header, NAME:VALUE (the name case-insensitive); repeatable,
    /// all must match.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<String>,
}

impl FilterArgs {
    /// The `/tap` request for these filters and an optional `max`.
    pub fn tap_path(&self, max: Option<u64>) -> String {
        let max = max.map(|m| m.to_string());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(p) = &self.path {
            pairs.push(("path", p));
        }
        if let Some(a) = &self.authority {
            pairs.push(("authority", a));
        }
        pairs.extend(self.headers.iter().map(|h| ("header", h.as_str())));
        if let Some(m) = &max {
            pairs.push(("max", m));
        }
        format!("/tap{}", query(&pairs))
    }
}

/// `name:value`, trimmed as the admin trims it; a name is required.
fn parse_header(raw: &str) -> Result<String, String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("{raw:?} has no colon: expected NAME:VALUE, e.g. user-type:premium"))?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{raw:?}: expected NAME:VALUE with a header name before the colon"
        ));
    }
    Ok(format!("{name}:{}", value.trim()))
}

#[derive(clap::Args, Debug, Clone)]
pub struct TapArgs {
    #[command(flatten)]
    pub admin: AdminArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Stop after N lines (the admin ends the stream there; a lagged notice counts as one line);
    /// without it, tap runs until Ctrl-C.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max: Option<u64>,
    /// Print the admin's JSON lines as they come (lagged notices included); the same as -o json.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Output format: table (one line per request, the default), wide (adds the request and
    /// trace ids) or json.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// A line of the `/tap` stream.
#[derive(Debug, Clone, PartialEq)]
pub enum TapLine {
    Event(Box<TapEvent>),
    /// The admin's broadcast buffer overflowed: `lagged` requests were not sent.
    Lagged {
        lagged: u64,
        message: String,
    },
}

pub fn parse_line(line: &str) -> Result<TapLine, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if let Some(n) = v.get("lagged") {
        let lagged = n.as_u64().unwrap_or(0);
        let message = v.get("message").and_then(|m| m.as_str()).map_or_else(
            || format!("tap fell behind; {lagged} requests not shown"),
            str::to_string,
        );
        return Ok(TapLine::Lagged { lagged, message });
    }
    serde_json::from_value(v)
        .map(|e| TapLine::Event(Box::new(e)))
        .map_err(|e| e.to_string())
}

/// One request as a line: time (UTC), proxy, source, [route], method authority+path → upstream
/// pod (version), status, gRPC status, response flags, latency; `wide` adds the ids to find it
/// in the logs and the console.
pub fn line(e: &TapEvent, wide: bool) -> String {
    // The date is the same on every line; the time of day tells requests apart.
    let time = e.time.split_once('T').map_or(e.time.as_str(), |(_, t)| t);
    let mut l = format!("{} {} {}", clean(time), clean(&e.proxy), clean(&e.source));
    if !e.route.is_empty() && e.route != "-" {
        let _ = write!(l, " [{}]", clean(&e.route));
    }
    let _ = write!(l, " {} {}{} → ", clean(&e.method), clean(&e.authority), clean(&e.path));
    if !e.upstream_pod.is_empty() && e.upstream_pod != "-" {
        let _ = write!(l, "{} ({})", clean(&e.upstream_pod), clean(&e.upstream_version));
    } else if !e.destination.is_empty() && e.destination != "-" {
        let _ = write!(l, "{} (no pod)", clean(&e.destination));
    } else {
        l.push('-');
    }
    let _ = write!(l, " status={}", e.status);
    if let Some(g) = &e.grpc_status {
        let _ = write!(l, " grpc={}", clean(g));
    }
    if !e.response_flags.is_empty() && e.response_flags != "-" {
        let _ = write!(l, " flags={}", clean(&e.response_flags));
    }
    let _ = write!(l, " {}", ms(Some(e.latency_ms)));
    if wide {
        let _ = write!(l, " id={} trace={}", clean(&e.request_id), clean(&e.trace_id));
    }
    l
}

pub fn main(args: TapArgs) -> ExitCode {
    super::run("tap", run(args))
}

async fn run(args: TapArgs) -> Result<(), Error> {
    let format = Format::resolve(args.json, args.output);
    let admin = Admin::new(args.admin.admin);
    let mut lines = admin.lines(&args.filter.tap_path(args.max)).await?;
    let ctrl_c = super::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = 0u64;
    loop {
        let next = tokio::select! {
            next = lines.next() => next?,
            () = &mut ctrl_c => return Ok(()),
        };
        let Some(text) = next else {
            if args.max.is_none_or(|m| seen < m) {
                super::note(&format!(
                    "localmesh tap: the admin port at {} ended the stream",
                    admin.addr()
                ));
            }
            return Ok(());
        };
        seen += 1;
        show(&text, format)?;
        // The admin ends the stream at max; stopping here too keeps the promise with any server.
        if args.max.is_some_and(|m| seen >= m) {
            return Ok(());
        }
    }
}

fn show(text: &str, format: Format) -> Result<(), Error> {
    if format == Format::Json {
        return out(&format!("{text}\n"));
    }
    match parse_line(text) {
        Ok(TapLine::Event(e)) => out(&(line(&e, format == Format::Wide) + "\n")),
        Ok(TapLine::Lagged { message, .. }) => {
            super::note(&format!("localmesh tap: {}", clean(&message)));
            Ok(())
        }
        Err(e) => {
            super::note(&format!("localmesh tap: skipped a line that is not a tap event ({e})"));
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn event(path: &str, pod: &str, status: u16, grpc: Option<&str>, latency_ms: f64) -> TapEvent {
        TapEvent {
            time: "2026-01-02T10:11:12.345Z".into(),
            proxy: "gateway".into(),
            source: "public-api-gateway-istio".into(),
            route: "HTTPRoute gateway/product-grpc spec.rules[2].matches[0]".into(),
            method: "POST".into(),
            authority: "sit-gateway.tcex.com.vn".into(),
            path: path.into(),
            destination: "product-service.default.svc.cluster.local".into(),
            upstream_pod: pod.into(),
            upstream_version: if pod == "-" { "-".into() } else { "v1".into() },
            status,
            grpc_status: grpc.map(str::to_string),
            response_flags: "-".into(),
            latency_ms,
            request_id: "req-1".into(),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_request_reads_as_one_line() {
        let e = event(
            "/product.ProductService/GetProduct",
            "product-v1-0",
            200,
            Some("0"),
            3.24,
        );
        assert_eq!(
            line(&e, false),
            "10:11:12.345Z gateway public-api-gateway-istio [HTTPRoute gateway/product-grpc spec.rules[2].matches[0]] \
             POST sit-gateway.tcex.com.vn/product.ProductService/GetProduct → product-v1-0 (v1) status=200 grpc=0 3.2ms"
        );
        assert!(line(&e, true).ends_with(" 3.2ms id=req-1 trace=0af7651916cd43dd8448eb211c80319c"));
    }

    #[test]
    fn a_failure_without_a_pod_shows_the_service_and_the_flags() {
        let mut e = event("/product.ProductService/GetProduct", "-", 503, Some("14"), 0.4);
        e.route = "-".into();
        e.response_flags = "UH".into();
        assert_eq!(
            line(&e, false),
            "10:11:12.345Z gateway public-api-gateway-istio POST sit-gateway.tcex.com.vn/product.ProductService/GetProduct \
             → product-service.default.svc.cluster.local (no pod) status=503 grpc=14 flags=UH 0.4ms"
        );
        e.destination = "-".into();
        e.path = "/\u{1b}[2J".into();
        let l = line(&e, false);
        assert!(l.contains("/\\u{1b}[2J → - status=503"), "{l}");
    }

    #[test]
    fn lines_are_events_or_lag_notices() {
        let e = event("/a", "p", 200, None, 1.0);
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(parse_line(&text), Ok(TapLine::Event(Box::new(e))));
        assert_eq!(
            parse_line(r#"{"lagged": 7, "message": "tap fell behind; 7 requests not shown"}"#),
            Ok(TapLine::Lagged {
                lagged: 7,
                message: "tap fell behind; 7 requests not shown".into()
            })
        );
        assert!(parse_line("{\"path\": 1}").is_err());
        assert!(parse_line("not json").is_err());
    }

    #[test]
    fn filters_become_the_admins_query() {
        let f = FilterArgs {
            path: Some("/product.ProductService/".into()),
            authority: None,
            headers: vec![parse_header(" user-type : premium").unwrap(), "x-a:b".into()],
        };
        assert_eq!(
            f.tap_path(Some(3)),
            "/tap?path=/product.ProductService/&header=user-type%3Apremium&header=x-a%3Ab&max=3"
        );
        assert_eq!(FilterArgs::default().tap_path(None), "/tap");
        assert!(parse_header("nocolon").unwrap_err().contains("NAME:VALUE"));
        assert!(parse_header(":v").is_err());
    }
}
