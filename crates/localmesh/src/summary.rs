//! The human-readable model `localmesh lint` prints: what the local run will do, in manifest terms.

use std::fmt::{self, Display, Formatter, Write};

use crate::duration::show;
use crate::model::{
    Backend, EnvValue, LoadBalancer, Mesh, PathMatch, ProbeCheck, RequestMatch, RetryPolicy, RouteAction, StringMatch,
    TelemetryScope, TrafficPolicy,
};

impl Display for StringMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(e) => write!(f, "={e}"),
            StringMatch::Prefix(p) => write!(f, "^={p}"),
            StringMatch::Regex(r) => write!(f, "~{}", r.source),
        }
    }
}

impl Display for PathMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            PathMatch::Exact(e) => write!(f, "Exact {e}"),
            PathMatch::SegmentPrefix(p) => write!(f, "PathPrefix {p}"),
            PathMatch::Prefix(p) => write!(f, "prefix {p}"),
            PathMatch::Regex(r) => write!(f, "regex {}", r.source),
        }
    }
}

impl Display for RequestMatch {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(p) = &self.path {
            parts.push(p.to_string());
        }
        if let Some(m) = &self.method {
            parts.push(format!("method{m}"));
        }
        if let Some(a) = &self.authority {
            parts.push(format!("authority{a}"));
        }
        if let Some(p) = self.port {
            parts.push(format!("port={p}"));
        }
        parts.extend(self.headers.iter().map(|h| format!("{}{}", h.name, h.value)));
        parts.extend(self.without_headers.iter().map(|h| format!("!{}{}", h.name, h.value)));
        parts.extend(self.query_params.iter().map(|q| format!("?{}{}", q.name, q.value)));
        if parts.is_empty() {
            f.write_str("*")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

fn backends(list: &[Backend]) -> String {
    let total: u32 = list.iter().map(|b| b.weight).sum();
    list.iter()
        .map(|b| {
            if list.len() > 1 {
                format!("{b} ({}/{total})", b.weight)
            } else {
                b.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn retry(r: &RetryPolicy) -> String {
    if !r.is_enabled() {
        return "no retries".into();
    }
    let on: Vec<String> = r.retry_on.iter().map(ToString::to_string).collect();
    let per_try = r.per_try_timeout.map_or(String::new(), |d| format!(" × {}", show(d)));
    format!("retries {}{per_try} on {}", r.attempts, on.join(","))
}

fn policy(p: &TrafficPolicy) -> String {
    let lb = match &p.load_balancer {
        LoadBalancer::RoundRobin => "ROUND_ROBIN".to_string(),
        LoadBalancer::LeastRequest => "LEAST_REQUEST".to_string(),
        LoadBalancer::Random => "RANDOM".to_string(),
        LoadBalancer::HashHeader(h) => format!("consistentHash header {h}"),
    };
    let mut s = lb;
    if let Some(o) = &p.outlier {
        let _ = write!(
            s,
            "; outlier: {} consecutive 5xx, {} gateway errors, eject {} (max {}%)",
            o.consecutive_5xx,
            o.consecutive_gateway,
            show(o.base_ejection),
            o.max_ejection_percent
        );
    }
    let c = &p.pool;
    let limits: Vec<String> = [
        ("maxConnections", c.max_connections),
        ("http1MaxPendingRequests", c.http1_max_pending_requests),
        ("http2MaxRequests", c.http2_max_requests),
        ("maxRetries", c.max_retries),
    ]
    .iter()
    .filter_map(|(n, v)| v.map(|v| format!("{n}={v}")))
    .chain(c.connect_timeout.map(|d| format!("connectTimeout={}", show(d))))
    .collect();
    if !limits.is_empty() {
        let _ = write!(s, "; pool: {}", limits.join(" "));
    }
    s
}

impl Display for Mesh {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "Gateway listeners:")?;
        for l in &self.listeners {
            let host = l.hostname.as_deref().unwrap_or("*");
            write!(f, "  {} {} {:?} :{} host {host}", l.gateway, l.name, l.protocol, l.port)?;
            if let Some(t) = &l.tls {
                write!(
                    f,
                    " tls {} -> {}, {}",
                    t.secret,
                    t.cert_file.display(),
                    t.key_file.display()
                )?;
            }
            writeln!(f)?;
            for r in &l.routes {
                let action = match &r.action {
                    RouteAction::Forward(b) => format!("-> {}", backends(b)),
                    RouteAction::Redirect(rd) => format!(
                        "redirect {} {}",
                        rd.status,
                        rd.scheme.as_deref().unwrap_or("(same scheme)")
                    ),
                };
                let timeout = r
                    .timeout
                    .map_or("no timeout".into(), |d| format!("timeout {}", show(d)));
                writeln!(
                    f,
                    "    [{} {}] {} {action}; {timeout}; {}",
                    r.route.name,
                    r.field,
                    r.matcher,
                    retry(&r.retry)
                )?;
            }
        }
        writeln!(f, "Sidecar routes (VirtualServices):")?;
        for vs in &self.virtual_services {
            writeln!(f, "  {} hosts {}", vs.origin.object, vs.hosts.join(", "))?;
            for r in &vs.routes {
                let matches = if r.matches.is_empty() {
                    "*".to_string()
                } else {
                    r.matches
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                let timeout = r
                    .timeout
                    .map_or("no timeout".into(), |d| format!("timeout {}", show(d)));
                let name = r.name.as_deref().unwrap_or(&r.field);
                write!(
                    f,
                    "    [{name}] {matches} -> {}; {timeout}; {}",
                    backends(&r.backends),
                    retry(&r.retry)
                )?;
                if let Some(fault) = &r.fault {
                    write!(f, "; fault {fault:?}")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f, "Destination rules:")?;
        for dr in &self.destination_rules {
            writeln!(f, "  {} host {}: {}", dr.origin.object, dr.host, policy(&dr.policy))?;
            for (port, p) in &dr.port_policies {
                writeln!(f, "    port {port}: {}", policy(p))?;
            }
            for s in &dr.subsets {
                let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let pods: Vec<&str> = self
                    .workloads
                    .iter()
                    .filter(|w| {
                        w.key.namespace == dr.host.namespace
                            && self.service(&dr.host).is_some_and(|svc| {
                                svc.workloads
                                    .iter()
                                    .any(|&i| self.workloads.get(i).is_some_and(|x| x.key == w.key))
                            })
                            && s.labels.iter().all(|(k, v)| w.labels.get(k) == Some(v))
                    })
                    .map(|w| w.key.name.as_str())
                    .collect();
                writeln!(f, "    subset {} [{}] -> {}", s.name, labels.join(","), pods.join(", "))?;
                for (port, p) in s
                    .port_policies
                    .iter()
                    .filter(|(port, p)| dr.port_policies.get(port) != Some(p))
                {
                    writeln!(f, "      port {port}: {}", policy(p))?;
                }
            }
        }
        writeln!(f, "Services:")?;
        for s in &self.services {
            let ports: Vec<String> = s.ports.iter().map(|p| p.port.to_string()).collect();
            let w: Vec<&str> = s
                .workloads
                .iter()
                .filter_map(|&i| self.workloads.get(i))
                .map(|w| w.key.name.as_str())
                .collect();
            writeln!(
                f,
                "  {} ports {} -> {}",
                s.key,
                ports.join(","),
                if w.is_empty() {
                    "(no local pods)".into()
                } else {
                    w.join(", ")
                }
            )?;
        }
        writeln!(f, "Pods to start:")?;
        for w in &self.workloads {
            let env: Vec<String> = w
                .env
                .iter()
                .map(|e| match &e.value {
                    EnvValue::Literal(v) => format!("{}={v}", e.name),
                    EnvValue::PodName => format!("{}=<pod name>", e.name),
                    EnvValue::PodNamespace => format!("{}=<namespace>", e.name),
                    EnvValue::NodeName => format!("{}=<node>", e.name),
                    EnvValue::Unresolved => format!("{}=<unset>", e.name),
                })
                .collect();
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "  {} ×{} binary {}: {}", w.key, w.replicas, w.binary, env.join(" "))?;
            // A changed template or strategy is a change to push (a rollout), as are the replicas.
            writeln!(
                f,
                "    pod-template-hash {}; labels {}; {}; preStop {}s",
                w.template_hash(),
                labels.join(","),
                w.strategy,
                w.pre_stop.as_secs()
            )?;
            if let Some(r) = &w.readiness {
                let check = match &r.check {
                    ProbeCheck::Grpc(s) if s.is_empty() => "gRPC health".to_string(),
                    ProbeCheck::Grpc(s) => format!("gRPC health {s}"),
                    ProbeCheck::Http(p) => format!("GET {p}"),
                };
                writeln!(
                    f,
                    "    readiness: {check} every {}, out after {} failures",
                    show(r.period),
                    r.failure_threshold
                )?;
            }
        }
        writeln!(f, "Telemetry:")?;
        let access_log = if self.access_log_default { "on" } else { "off" };
        if self.telemetry.is_empty() {
            writeln!(
                f,
                "  no Telemetry resource: 1 % sampled, no spans reported, access log {access_log} (meshConfig), metrics on"
            )?;
        }
        for t in &self.telemetry {
            let scope = match &t.scope {
                TelemetryScope::Mesh => "every proxy".to_string(),
                TelemetryScope::Namespace(ns) => format!("proxies in {ns}"),
                TelemetryScope::Workloads(ns, sel) => {
                    let sel: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("proxies in {ns} with {}", sel.join(","))
                }
            };
            let sampling = t.sampling.map_or("inherited".to_string(), |p| format!("{p} %"));
            let report = match t.report {
                Some(true) => "reported",
                Some(false) => "not reported",
                None => "reporting inherited",
            };
            let on_off = |v: Option<bool>, default: &str| match v {
                Some(true) => "on".to_string(),
                Some(false) => "off".to_string(),
                None => format!("inherited ({default})"),
            };
            writeln!(
                f,
                "  {}: {scope}: sampling {sampling}, spans {report}, access log {}, metrics {}",
                t.origin.object,
                on_off(t.access_log, access_log),
                on_off(t.metrics, "on"),
            )?;
        }
        writeln!(f, "Not emulated locally ({}):", self.not_emulated.len())?;
        for n in &self.not_emulated {
            writeln!(f, "  {n}")?;
        }
        Ok(())
    }
}
