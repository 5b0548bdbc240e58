//! `localmesh verify`: the documented journeys through the public gateway only (so it works
//! against `localmesh up` and a cluster alike), printed as a pass/fail table.

mod grpc;
mod http;
pub use http::{HttpsAnswer, https};
mod frontend;
mod jaeger;
pub use jaeger::check_order_trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gateway_client::GatewayTarget;
use crate::model::RouteAction;

use frontend::{frontend_home, order_journey};
use grpc::{agent_sync, get_product_once, premium, reflection_list, weighted_split};
use jaeger::order_trace;

/// The v2 share of the gateway's default `product.ProductService` route (80/20) when no `--root`
/// is given to read it from.
pub const DEFAULT_V2_SHARE: f64 = 0.2;

/// How long one journey may take before it is reported as failed.
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The gateway: its address, the CA that signed its certificate (PEM), `:authority` and SNI.
    pub gateway: GatewayTarget,
    /// GetProduct calls for the split check.
    pub n: usize,
    /// The expected share of product v2 in the weighted split.
    pub v2_share: f64,
    /// Jaeger's query API (the local console, or the cluster's Jaeger through a port-forward).
    pub jaeger: String,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

/// `localmesh verify`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub gateway: GatewayTarget,
    /// GetProduct calls over one connection for the weighted-split check.
    #[arg(short = 'n', default_value_t = 1000)]
    pub n: usize,
    /// Read the expected v1/v2 weights from this repository's manifests instead of using 80/20.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Jaeger's query API, where the order's trace is looked up: localmesh's console, or the
    /// cluster's Jaeger (`kubectl -n istio-system port-forward svc/tracing 16686:80`).
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    pub jaeger: String,
}

/// Runs `localmesh verify`: prints the table, exit 0 only when every journey passed.
pub fn main(args: VerifyArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let v2_share = match &args.root {
        None => DEFAULT_V2_SHARE,
        Some(root) => match v2_share_from(root, &args.gateway.authority) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("localmesh verify: cannot read the weights from {}: {e}", root.display());
                return ExitCode::from(2);
            }
        },
    };
    let opts = VerifyOptions {
        gateway: args.gateway,
        n: args.n,
        v2_share,
        jaeger: args.jaeger.trim_end_matches('/').to_string(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("localmesh: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = rt.block_on(run(&opts));
    print!("{}", render(&rows));
    let failed = rows.iter().filter(|r| !r.pass).count();
    if failed == 0 {
        println!("all {} journeys passed", rows.len());
        ExitCode::SUCCESS
    } else {
        println!("{failed} of {} journeys failed", rows.len());
        ExitCode::FAILURE
    }
}

/// The v2 share of the gateway's GetProduct route as compiled from `root`'s manifests.
pub fn v2_share_from(root: &Path, authority: &str) -> Result<f64, String> {
    let mesh = crate::load(root).map_err(|e| e.to_string())?;
    let req = crate::Request::grpc("/product.ProductService/GetProduct");
    let (_, route) = crate::select::gateway(&mesh, 443, authority, &req)
        .map_err(|_| format!("no gateway route for GetProduct on {authority}:443"))?;
    let RouteAction::Forward(backends) = &route.action else {
        return Err("the GetProduct route redirects".into());
    };
    let total = crate::select::total_weight(backends);
    let v2: u32 = backends
        .iter()
        .filter(|b| b.service.name.ends_with("-v2") || b.subset.as_deref() == Some("v2"))
        .map(|b| b.weight)
        .sum();
    if total == 0 {
        return Err("the GetProduct route has no weight".into());
    }
    Ok(f64::from(v2) / f64::from(total))
}

/// Runs every journey, in order; never panics on a gateway that misbehaves or is absent.
pub async fn run(opts: &VerifyOptions) -> Vec<Row> {
    let mut rows = Vec::new();
    macro_rules! journey {
        ($name:expr, $fut:expr) => {{
            let r = match tokio::time::timeout(JOURNEY_TIMEOUT, $fut).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {}s", JOURNEY_TIMEOUT.as_secs())),
            };
            rows.push(match r {
                Ok(detail) => Row {
                    name: $name,
                    pass: true,
                    detail,
                },
                Err(detail) => Row {
                    name: $name,
                    pass: false,
                    detail,
                },
            });
        }};
    }
    journey!("reflection list", reflection_list(opts));
    journey!("GetProduct 123", get_product_once(opts));
    journey!("weighted split", weighted_split(opts));
    journey!("premium to v2", premium(opts));
    journey!("AgentSync by agent-version", agent_sync(opts));
    journey!("frontend home", frontend_home(opts));
    let mut request_id = None;
    journey!("order via frontend", async {
        let (detail, id) = order_journey(opts).await?;
        request_id = id;
        Ok(detail)
    });
    journey!("order trace in Jaeger", async {
        match &request_id {
            Some(id) => order_trace(opts, id).await,
            None => Err("no order was placed, or its answer carried no x-request-id".to_string()),
        }
    });
    rows
}

/// The table, one row per journey.
pub fn render(rows: &[Row]) -> String {
    let w = rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max("JOURNEY".len());
    let mut out = format!("{:<w$}  {:<6}  DETAIL\n", "JOURNEY", "RESULT");
    for r in rows {
        let res = if r.pass { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "{:<w$}  {:<6}  {}\n",
            r.name,
            res,
            r.detail.replace('\n', " ")
        ));
    }
    out
}
