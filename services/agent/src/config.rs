//! What the agent is told: every flag has an environment variable, and a bad
//! value stops startup (clap exits with code 2) naming the flag. As for the
//! suite's other variables, an empty value means unset.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use service_runtime::{Caller, backend_url};
use tonic::transport::Uri;

/// The longest `agent-version` / `agent-id` the product service accepts.
pub const MAX_LABEL_CHARS: usize = 128;
pub const DEFAULT_TARGET: &str = "http://product-service:50051";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Parser)]
#[command(
    name = "agent",
    version,
    about = "Long-lived AgentSync client: one bidi stream to ProductService, a ping every interval, reconnects with backoff"
)]
pub struct Settings {
    /// ProductService URL: http:// for plaintext, https:// for TLS.
    #[arg(long, env = "AGENT_TARGET", value_name = "URL", default_value = DEFAULT_TARGET, value_parser = parse_target)]
    pub target: Uri,

    /// This agent's version, sent as the `agent-version` metadata (e.g. v1.2).
    #[arg(long, env = "AGENT_VERSION", value_name = "VERSION", value_parser = parse_agent_version)]
    pub agent_version: String,

    /// Sent as the `agent-id` metadata; POD_NAME, else the host name, when unset.
    #[arg(long, env = "AGENT_ID", value_name = "ID", value_parser = parse_agent_id)]
    pub agent_id: Option<String>,

    /// Time between pings, such as 5s, 250ms or 1m (a bare number means seconds).
    #[arg(long = "interval", env = "PING_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = parse_interval)]
    pub interval: Duration,

    /// PEM file with the CA certificate(s) that sign the server's certificate
    /// (https:// only). Without it: SSL_CERT_FILE, else the system CA bundle.
    #[arg(long, env = "AGENT_CACERT", value_name = "FILE", value_parser = parse_path)]
    pub cacert: Option<PathBuf>,

    /// Host name for the TLS server name (SNI and certificate check) and the
    /// HTTP/2 :authority, when they differ from the target's host
    /// (e.g. sit-gateway.tcex.com.vn while connecting to 127.0.0.1:8443).
    #[arg(long, env = "AGENT_AUTHORITY", value_name = "HOST[:PORT]", value_parser = parse_authority)]
    pub authority: Option<String>,

    /// Stop cleanly after this many pongs; 0 runs until SIGTERM or SIGINT.
    #[arg(long, env = "AGENT_PINGS", value_name = "N", default_value = "0", value_parser = parse_pings)]
    pub pings: u64,

    /// Serve Prometheus `/metrics` on this port (all addresses), e.g. 9464 in
    /// a pod so probes and scrapes have something to ask; unset: no server.
    #[arg(long, env = "METRICS_PORT", value_name = "PORT")]
    pub metrics_port: Option<u16>,
}

impl Settings {
    /// The process's flags and variables; on a bad value clap prints what is
    /// wrong and exits with code 2.
    pub fn from_args() -> Self {
        Self::parse().normalized()
    }

    /// `from_args` for given arguments (the first is the program name).
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args).map(Self::normalized)
    }

    /// Empty optional values (an `AGENT_ID=` in a manifest) mean unset.
    fn normalized(mut self) -> Self {
        self.agent_id = self.agent_id.filter(|v| !v.is_empty());
        self.cacert = self.cacert.filter(|p| !p.as_os_str().is_empty());
        self.authority = self.authority.filter(|v| !v.is_empty());
        self
    }

    /// Settings for a test or tool: `target`, `agent_version`, and the
    /// defaults for everything else (environment variables are not read).
    pub fn new(target: Uri, agent_version: &str) -> Self {
        Self {
            target,
            agent_version: agent_version.to_owned(),
            agent_id: None,
            interval: DEFAULT_INTERVAL,
            cacert: None,
            authority: None,
            pings: 0,
            metrics_port: None,
        }
    }

    /// `--agent-id`, else `POD_NAME`, else the host name.
    pub fn resolved_agent_id(&self) -> Result<String, String> {
        if let Some(id) = &self.agent_id {
            return Ok(id.clone());
        }
        let (source, raw) = match std::env::var("POD_NAME") {
            Ok(pod) if !pod.trim().is_empty() => ("POD_NAME", pod),
            _ => (
                "the host name",
                gethostname::gethostname().to_string_lossy().into_owned(),
            ),
        };
        label(&raw).map_err(|why| format!("no --agent-id / AGENT_ID given and {source} {raw:?} cannot be used: {why}"))
    }

    pub fn is_tls(&self) -> bool {
        self.target.scheme_str() == Some("https")
    }
}

/// An `agent-version` / `agent-id` value: 1 to 128 visible ASCII characters,
/// so it travels as gRPC metadata and the server accepts it.
fn label(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > MAX_LABEL_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "expected 1 to {MAX_LABEL_CHARS} visible ASCII characters (letters, digits, '.', '-', ...; no spaces)"
        ));
    }
    Ok(raw.to_owned())
}

fn parse_agent_version(raw: &str) -> Result<String, String> {
    label(raw).map_err(|why| format!("{why}, e.g. v1.2; set by --agent-version or AGENT_VERSION"))
}

fn parse_agent_id(raw: &str) -> Result<String, String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    label(raw).map_err(|why| format!("{why}; set by --agent-id or AGENT_ID"))
}

fn parse_interval(raw: &str) -> Result<Duration, String> {
    if raw.trim().is_empty() {
        return Ok(DEFAULT_INTERVAL);
    }
    match service_runtime::env::parse_duration(raw) {
        // A bare "0" parses as zero seconds; a ticker needs a period.
        Ok(d) if d.is_zero() => Err("must be greater than zero; set by --interval or PING_INTERVAL".into()),
        Ok(d) => Ok(d),
        Err(why) => Err(format!("{why}; set by --interval or PING_INTERVAL")),
    }
}

/// The suite's rule for backends ([`service_runtime::backend_url`]): the agent runs outside the
/// mesh, so https:// too. A path or query would be ignored by gRPC, so it is refused.
fn parse_target(raw: &str) -> Result<Uri, String> {
    const SET_BY: &str = "set by --target or AGENT_TARGET";
    let raw = if raw.trim().is_empty() {
        DEFAULT_TARGET
    } else {
        raw.trim()
    };
    let uri = backend_url(raw, Caller::OutsideMesh, DEFAULT_TARGET).map_err(|why| format!("{why}; {SET_BY}"))?;
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "a path or query is not allowed: expected http://HOST:PORT or https://HOST:PORT; {SET_BY}"
        ));
    }
    Ok(uri)
}

fn parse_authority(raw: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a host name, optionally with :PORT, e.g. sit-gateway.tcex.com.vn; set by --authority or AGENT_AUTHORITY";
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    let uri: Uri = format!("https://{raw}/")
        .parse()
        .map_err(|e| format!("{e}; {EXPECTED}"))?;
    let host = match uri.authority() {
        Some(a) if a.as_str() == raw && !a.as_str().contains('@') => a.host(),
        _ => return Err(EXPECTED.into()),
    };
    // Brackets of an IPv6 literal are URI syntax, not part of the name.
    let name = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(name)
        .map_err(|_| format!("{name:?} is not a valid TLS server name; {EXPECTED}"))?;
    Ok(raw.to_owned())
}

fn parse_pings(raw: &str) -> Result<u64, String> {
    if raw.trim().is_empty() {
        return Ok(0);
    }
    raw.trim()
        .parse()
        .map_err(|_| "expected a whole number of pongs, 0 for no limit; set by --pings or AGENT_PINGS".to_string())
}

fn parse_path(raw: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

/// The host part of a validated `--authority`, the TLS server name.
pub(crate) fn authority_host(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        Settings::try_from_args(std::iter::once("agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let s = Settings::new(Uri::from_static("http://product-service:50051"), "v1.2");
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.pings, 0);
        assert!(!s.is_tls());
        assert_eq!(s.resolved_agent_id().map(|id| id.is_empty()), Ok(false));
    }

    #[test]
    fn flags() {
        let s = parse(&[
            "--target=https://127.0.0.1:8443",
            "--agent-version=v1.2",
            "--agent-id=agent-7",
            "--interval=250ms",
            "--authority=sit-gateway.tcex.com.vn",
            "--pings=3",
        ])
        .unwrap();
        assert!(s.is_tls());
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.resolved_agent_id().unwrap(), "agent-7");
        assert_eq!(s.authority.as_deref(), Some("sit-gateway.tcex.com.vn"));
        assert_eq!(s.pings, 3);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (&["--agent-version=v1", "--interval=5 parsecs"][..], "--interval"),
            (&["--agent-version=v1", "--interval=0"][..], "--interval"),
            (&["--agent-version=v1", "--target=ftp://x:1"][..], "--target"),
            (&["--agent-version=v1", "--target=http://x:1/path"][..], "--target"),
            (&["--agent-version=v1 beta"][..], "--agent-version"),
            (&["--agent-version=v1", "--authority=a b"][..], "--authority"),
            (&["--agent-version=v1", "--authority=user@host"][..], "--authority"),
            (&["--agent-version=v1", "--pings=-1"][..], "--pings"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn empty_means_unset() {
        let s = parse(&[
            "--agent-version=v1",
            "--agent-id=",
            "--cacert=",
            "--authority=",
            "--interval=",
            "--target=",
            "--pings=",
        ])
        .unwrap();
        assert_eq!((s.agent_id, s.cacert, s.authority), (None, None, None));
        assert_eq!((s.interval, s.pings), (DEFAULT_INTERVAL, 0));
        assert_eq!(s.target, Uri::from_static(DEFAULT_TARGET));
        assert!(parse(&["--agent-version="]).is_err(), "the version is required");
    }

    #[test]
    fn authority_hosts() {
        assert_eq!(
            parse_authority("sit-gateway.tcex.com.vn:443").unwrap(),
            "sit-gateway.tcex.com.vn:443"
        );
        assert_eq!(authority_host("sit-gateway.tcex.com.vn:443"), "sit-gateway.tcex.com.vn");
        assert_eq!(authority_host("sit-gateway.tcex.com.vn"), "sit-gateway.tcex.com.vn");
        assert_eq!(authority_host("[::1]:8443"), "::1");
        assert!(parse_authority("[::1]:8443").is_ok());
    }
}
