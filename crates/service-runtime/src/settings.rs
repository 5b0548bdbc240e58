//! The one way a service reads its settings: a clap `Parser` whose every flag has an environment
//! variable (named as its value, so errors and `--help` show the variable), with the settings
//! every service has, [`ServiceSettings`], flattened in. A bad value makes clap print the flag,
//! the variable and the reason, and exit with code 2.

use std::{ffi::OsString, net::IpAddr, time::Duration};

use clap::{Arg, Args, Parser};

use crate::env;

/// `BIND_ADDR`, `PORT`, `METRICS_PORT` and `SHUTDOWN_GRACE_SECS`, for `#[command(flatten)]` in a
/// service's settings, which gives `PORT` its own default with [`default_port`].
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ServiceSettings {
    /// The address both ports are bound on.
    #[arg(long, env = "BIND_ADDR", value_name = "BIND_ADDR", default_value = "0.0.0.0", value_parser = env::ip_addr)]
    pub bind_addr: IpAddr,

    /// The service's port (gRPC or HTTP); 0 lets the kernel choose.
    #[arg(long, env = "PORT", value_name = "PORT", value_parser = env::port)]
    pub port: u16,

    /// The port of `/metrics`; 0 lets the kernel choose.
    #[arg(long, env = "METRICS_PORT", value_name = "METRICS_PORT", default_value_t = 9464, value_parser = env::port)]
    pub metrics_port: u16,

    /// This pod's version, its `version` label: a 'v', then letters, digits, '.' or '-'.
    #[arg(long = "service-version", env = "SERVICE_VERSION", value_name = "SERVICE_VERSION", default_value = "v1",
          value_parser = version_label)]
    pub service_version: String,

    /// The pod's name (the Downward API's metadata.name); the host name when unset.
    #[arg(long = "pod-name", env = "POD_NAME", value_name = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The pod's namespace (metadata.namespace).
    #[arg(
        long = "pod-namespace",
        env = "POD_NAMESPACE",
        value_name = "POD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,

    /// The node the pod runs on (spec.nodeName); the host name when unset.
    #[arg(long = "node-name", env = "NODE_NAME", value_name = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The node's zone (topology.kubernetes.io/zone); none when unset.
    #[arg(long = "zone", env = "ZONE", value_name = "ZONE")]
    pub zone: Option<String>,

    /// Seconds the calls in flight get to finish after SIGTERM, from 0 to 3600.
    #[arg(
        long = "shutdown-grace-secs",
        env = "SHUTDOWN_GRACE_SECS",
        value_name = "SHUTDOWN_GRACE_SECS",
        default_value = "10",
        value_parser = env::seconds_up_to(3600)
    )]
    pub shutdown_grace: Duration,
}

impl ServiceSettings {
    /// Who answers, for `service`: what every `ServedBy` and `x-served-by` names.
    pub fn identity(&self, service: &str) -> telemetry::Identity {
        let host = || gethostname::gethostname().to_string_lossy().into_owned();
        telemetry::Identity {
            service: service.to_owned(),
            version: self.service_version.clone(),
            pod: self.pod_name.clone().unwrap_or_else(host),
            node: self.node_name.clone().unwrap_or_else(host),
            zone: self.zone.clone().unwrap_or_default(),
            namespace: self.namespace.clone(),
        }
    }
}

fn version_label(raw: &str) -> Result<String, String> {
    telemetry::validate_version(raw).map_err(|e| e.reason)?;
    Ok(raw.to_owned())
}

/// The default `PRODUCT_SERVICE_ADDR`: the product Service in the mesh.
pub const DEFAULT_PRODUCT_ADDR: &str = "http://product-service:50051";

/// `PRODUCT_SERVICE_ADDR`, for `#[command(flatten)]` in the settings of each service that calls
/// ProductService (frontend, order).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ProductServiceAddr {
    /// ProductService: plaintext http://, the sidecars add mTLS.
    #[arg(long = "product-service-addr", env = "PRODUCT_SERVICE_ADDR", value_name = "PRODUCT_SERVICE_ADDR",
          default_value = DEFAULT_PRODUCT_ADDR, value_parser = in_mesh_backend)]
    pub product_addr: String,
}

/// A backend address by the suite's rule for backends inside the mesh ([`crate::backend_url`]).
pub fn in_mesh_backend(raw: &str) -> Result<String, String> {
    crate::backend_url(raw, crate::Caller::InMesh, DEFAULT_PRODUCT_ADDR)?;
    Ok(raw.to_owned())
}

/// `DATA_DIR`, for `#[command(flatten)]` in the settings of each service with a SQLite file
/// (order, payment).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DataDir {
    /// The directory of the service's SQLite file when its own path or URL is unset.
    #[arg(
        long = "data-dir",
        env = "DATA_DIR",
        value_name = "DATA_DIR",
        default_value = ".data"
    )]
    pub data_dir: std::path::PathBuf,
}

/// A service's own `PORT` default, for `#[command(mut_arg("port", default_port("50051")))]` on
/// its settings: the flag is declared once here, the default differs per service.
pub fn default_port(port: &'static str) -> impl FnOnce(Arg) -> Arg {
    move |arg| arg.required(false).default_value(port)
}

/// The process's flags and environment as `S`. On a bad value clap prints what is wrong and
/// exits with code 2; `--help` lists every variable with its default.
pub fn parse<S: Parser>() -> S {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] for given arguments (the first is the program name) and this process's environment.
pub fn try_parse_from<S, I, T>(args: I) -> Result<S, clap::Error>
where
    S: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cmd = S::command().mut_args(empty_env_is_unset);
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    S::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
}

/// The suite's rule: a variable set to an empty value (`ZONE=` in a manifest) means unset, so the
/// flag's default applies. clap would hand the empty value to the parser instead.
fn empty_env_is_unset(arg: Arg) -> Arg {
    let empty = arg
        .get_env()
        .and_then(std::env::var_os)
        .is_some_and(|v| v.to_str().is_some_and(|s| s.trim().is_empty()));
    if empty { arg.env(None::<&'static str>) } else { arg }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "svc", mut_arg("port", default_port("8080")))]
    struct Svc {
        #[command(flatten)]
        service: ServiceSettings,
    }

    #[test]
    fn defaults_and_flags() {
        let s: Svc = try_parse_from(["svc", "--metrics-port=0"]).unwrap();
        assert_eq!(s.service.port, 8080);
        assert_eq!(s.service.metrics_port, 0);
        let e = try_parse_from::<Svc, _, _>(["svc", "--port=http"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("PORT") && msg.contains("expected a number from 0 to 65535"),
            "{msg}"
        );
    }

    #[test]
    fn help_names_every_variable() {
        use clap::CommandFactory as _;
        let help = Svc::command().render_long_help().to_string();
        for var in [
            "BIND_ADDR",
            "PORT",
            "METRICS_PORT",
            "SHUTDOWN_GRACE_SECS",
            "8080",
            "9464",
        ] {
            assert!(help.contains(var), "{var} missing from {help}");
        }
    }
}
