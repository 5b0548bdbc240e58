//! What localmesh reads but does not emulate. Each finding names the file, kind, name and field, and
//! is reported once at startup, so a local run never silently differs from the cluster: as a JSON
//! log line each, and for a person as [`summary`], a line per kind of difference ([`groups`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use manifests::{Manifests, Object, Resource, Source};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEmulated {
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
    pub field: String,
    /// What the cluster does that localmesh does not, and what happens locally instead.
    pub message: String,
}

impl NotEmulated {
    pub(crate) fn new(o: &Object, field: impl Into<String>, message: impl Into<String>) -> Self {
        NotEmulated {
            source: o.source.clone(),
            object: o.id(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl NotEmulated {
    /// The object's kind (`AuthorizationPolicy`), the first word of [`NotEmulated::object`].
    pub fn kind(&self) -> &str {
        self.object.split_once(' ').map_or(self.object.as_str(), |(k, _)| k)
    }
}

impl fmt::Display for NotEmulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: field `{}`: {}",
            self.source, self.object, self.field, self.message
        )
    }
}

/// Whole kinds and object-level fields localmesh ignores. Field-level findings inside the kinds it
/// does emulate (connectionPool keys, route filters, ...) are added by [`crate::build()`].
pub fn scan(m: &Manifests) -> Vec<NotEmulated> {
    let mut out = Vec::new();
    for o in &m.objects {
        let mut note = |field: &str, message: &str| out.push(NotEmulated::new(o, field, message));
        match &o.resource {
            Resource::PeerAuthentication(pa) => {
                let mode = pa.spec.mtls.as_ref().and_then(|m| m.mode.as_deref()).unwrap_or("UNSET");
                note(
                    "spec.mtls.mode",
                    &format!("{mode}: no mTLS locally; local hops are plaintext on 127.0.0.1"),
                );
            }
            Resource::AuthorizationPolicy(_) => note(
                "spec",
                "not enforced locally: there are no mTLS identities, every local caller is allowed",
            ),
            Resource::ServiceEntry(_) => note(
                "spec.hosts",
                "no DNS capture locally: the hosts are reachable only through localmesh's proxy, routed by the VirtualServices naming them",
            ),
            Resource::StatefulSet(_) => note(
                "spec",
                "StatefulSets are not started locally (the order service uses its embedded SQLite)",
            ),
            Resource::PodDisruptionBudget(_) => note("spec", "no disruptions locally"),
            Resource::ReferenceGrant(_) => note("spec", "not checked locally: cross-namespace backendRefs are allowed"),
            Resource::Gateway(g)
                if g.spec
                    .infrastructure
                    .as_ref()
                    .is_some_and(|i| i.parameters_ref.is_some()) =>
            {
                note(
                    "spec.infrastructure.parametersRef",
                    "the gateway's Deployment/Service options do not apply: localmesh is one local process",
                )
            }
            Resource::Other(_) if o.kind == crate::build::MESH_CONFIG_KIND => note(
                "spec",
                "only spec.meshConfig.defaultHttpRetryPolicy applies locally (the retries of routes without their own)",
            ),
            Resource::Other(_) => note("kind", "kind not emulated locally"),
            _ => {}
        }
    }
    out
}

/// A kind of difference that spans kinds or fields, named for a person, in the order a summary
/// shows them (the cluster's security first). Findings no topic covers are grouped by their kind.
struct Topic {
    name: &'static str,
    /// What happens locally instead, in a few words.
    what: &'static str,
    /// Whether a finding (kind, field) is of this topic.
    covers: fn(&str, &str) -> bool,
}

const TOPICS: &[Topic] = &[
    Topic {
        name: "mTLS",
        what: "PeerAuthentication and DestinationRule tls modes do not apply: local hops are plaintext on 127.0.0.1",
        covers: |kind, field| {
            kind == "PeerAuthentication" || (kind == "DestinationRule" && field.ends_with("tls.mode"))
        },
    },
    Topic {
        name: "AuthorizationPolicy",
        what: "not enforced: every local caller is allowed",
        covers: |kind, _| kind == "AuthorizationPolicy",
    },
    Topic {
        name: "ServiceEntry",
        what: "no DNS capture: the external hosts are reached through localmesh's proxy only",
        covers: |kind, _| kind == "ServiceEntry",
    },
    Topic {
        name: "Connection pools",
        what: "DestinationRule connectionPool settings localmesh does not apply",
        covers: |_, field| field.contains("connectionPool"),
    },
    Topic {
        name: "Env from Secrets and ConfigMaps",
        what: "`valueFrom` variables are left unset: the services use their defaults",
        covers: |_, field| field.ends_with(".valueFrom"),
    },
    Topic {
        name: "Telemetry",
        what: "providers, custom tags, matches and filters do not apply: spans go to the console (or OTEL_EXPORTER_OTLP_ENDPOINT)",
        covers: |kind, _| kind == "Telemetry",
    },
];

/// One line of the summary: the findings of one kind of difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// `mTLS`, `AuthorizationPolicy`, ... or, for a finding no topic covers, the object's kind.
    pub name: String,
    /// The objects with a finding in the group (`Kind namespace/name`).
    pub objects: usize,
    /// The findings in the group.
    pub findings: usize,
    /// What happens locally instead.
    pub what: String,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.objects == 1 { "" } else { "s" };
        write!(f, "{} ({} object{s}): {}", self.name, self.objects, self.what)
    }
}

/// The findings grouped by kind of difference: the [`TOPICS`] first, in their order, then the other
/// kinds by name. The order does not depend on the findings' order (files, then build notes).
pub fn groups(findings: &[NotEmulated]) -> Vec<Group> {
    // (topic index, or TOPICS.len() and the kind) -> (objects, findings, messages, fields)
    type Acc<'a> = (BTreeSet<&'a str>, usize, BTreeSet<&'a str>, BTreeSet<&'a str>);
    let mut by: BTreeMap<(usize, &str), Acc<'_>> = BTreeMap::new();
    for n in findings {
        let kind = n.kind();
        let key = match TOPICS.iter().position(|t| (t.covers)(kind, &n.field)) {
            Some(i) => (i, ""),
            None => (TOPICS.len(), kind),
        };
        let acc = by.entry(key).or_default();
        acc.0.insert(&n.object);
        acc.1 += 1;
        acc.2.insert(&n.message);
        acc.3.insert(&n.field);
    }
    by.into_iter()
        .map(|((i, kind), (objects, count, messages, fields))| {
            let (name, what) = match TOPICS.get(i) {
                Some(t) => (t.name.to_string(), t.what.to_string()),
                // One message says it all; several (different fields) are named by field.
                None => match messages.iter().next() {
                    Some(m) if messages.len() == 1 => (kind.to_string(), (*m).to_string()),
                    _ => {
                        let mut what = fields.iter().take(3).copied().collect::<Vec<_>>().join(", ");
                        if fields.len() > 3 {
                            what.push_str(", ...");
                        }
                        (kind.to_string(), format!("not emulated: {what}"))
                    }
                },
            };
            Group {
                name,
                objects: objects.len(),
                findings: count,
                what,
            }
        })
        .collect()
}

/// For a person (`localmesh up` on a terminal): a header naming `lint` (the command that lists
/// every finding with its file and field) and a line per [`Group`].
pub fn summary(findings: &[NotEmulated], lint: &str) -> String {
    if findings.is_empty() {
        return "Everything the manifests set is emulated locally.\n".to_string();
    }
    let groups = groups(findings);
    let mut s = String::new();
    let n = findings.len();
    let plural = if n == 1 { "" } else { "s" };
    let _ = writeln!(
        s,
        "Not emulated locally, by kind ({n} finding{plural}; `{lint}` lists each with its file and field):"
    );
    for g in &groups {
        let _ = writeln!(s, "  {g}");
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn finding(object: &str, field: &str, message: &str) -> NotEmulated {
        NotEmulated {
            source: Source {
                file: PathBuf::from("x.yaml"),
                document: 1,
                line: 1,
                rendered: false,
                origin: None,
            },
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn lines(g: &[Group]) -> Vec<String> {
        g.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn findings_are_grouped_a_line_per_kind_of_difference_in_a_fixed_order() {
        let findings = [
            finding("StatefulSet default/db", "spec", "not started"),
            finding(
                "DestinationRule default/a",
                "spec.trafficPolicy.tls.mode",
                "ISTIO_MUTUAL: plaintext",
            ),
            finding("AuthorizationPolicy default/x", "spec", "not enforced"),
            finding(
                "DestinationRule default/a",
                "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
                "no",
            ),
            finding(
                "PeerAuthentication default/default",
                "spec.mtls.mode",
                "STRICT: plaintext",
            ),
            finding("AuthorizationPolicy default/y", "spec", "not enforced"),
            finding(
                "HTTPRoute default/r",
                "spec.rules[0].filters[0].type",
                "URLRewrite filters are not emulated",
            ),
            finding(
                "DestinationRule default/b",
                "spec.trafficPolicy.tls.mode",
                "ISTIO_MUTUAL: plaintext",
            ),
            finding(
                "HTTPRoute default/r",
                "spec.rules[1].retry.backoff",
                "retries go at once",
            ),
            finding("Gateway gw/g", "spec.infrastructure.parametersRef", "one local process"),
        ];
        let want = [
            format!("mTLS (3 objects): {}", TOPICS[0].what),
            format!("AuthorizationPolicy (2 objects): {}", TOPICS[1].what),
            format!("Connection pools (1 object): {}", TOPICS[3].what),
            "Gateway (1 object): one local process".to_string(),
            "HTTPRoute (1 object): not emulated: spec.rules[0].filters[0].type, spec.rules[1].retry.backoff"
                .to_string(),
            "StatefulSet (1 object): not started".to_string(),
        ];
        assert_eq!(lines(&groups(&findings)), want);
        // The order is the topics' and then the kinds' names, whatever the findings' order.
        let mut reversed = findings.to_vec();
        reversed.reverse();
        assert_eq!(lines(&groups(&reversed)), want);
        let counts: Vec<usize> = groups(&findings).iter().map(|g| g.findings).collect();
        assert_eq!(counts, [3, 2, 1, 1, 2, 1]);
    }

    #[test]
    fn the_repos_findings_make_one_summary_line_per_kind() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mesh = crate::load(&root).expect("the repo's manifests");
        let findings = &mesh.not_emulated;
        let text = summary(findings, "localmesh lint");
        let mut shown = text.lines();
        let header = shown.next().expect("header");
        assert!(
            header.contains(&format!("({} findings; `localmesh lint`", findings.len())),
            "{header}"
        );
        let shown: Vec<&str> = shown.collect();
        let names: Vec<&str> = shown
            .iter()
            .map(|l| l.trim_start().split(" (").next().expect("name"))
            .collect();
        // A line per kind of difference, each once, far fewer than the findings.
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "{text}");
        assert!(shown.len() < findings.len(), "{text}");
        // Every finding is in exactly one line, and the security differences come first.
        assert_eq!(
            groups(findings).iter().map(|g| g.findings).sum::<usize>(),
            findings.len()
        );
        assert_eq!(names[..2], ["mTLS", "AuthorizationPolicy"], "{text}");
        let policies: BTreeSet<&str> = findings
            .iter()
            .filter(|n| n.kind() == "AuthorizationPolicy")
            .map(|n| n.object.as_str())
            .collect();
        assert!(
            shown[1].contains(&format!("AuthorizationPolicy ({} objects)", policies.len())),
            "{text}"
        );
    }
}
