//! Reading manifests: YAML files (multi-document), directories (recursively), or the output of
//! `kubectl kustomize`. Documents are split here rather than by the YAML crate so that document
//! numbers and start lines in errors count empty documents the way a reader of the file does.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::LoadError;
use crate::model::{Manifests, Object, ObjectMeta, Resource, Source};

/// Whether to render kustomizations with `kubectl kustomize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Render {
    /// Use `kubectl` when it is on `PATH`, else read the files.
    Auto,
    /// Always read the files; kustomizations are ignored.
    Never,
    /// Use this kubectl binary.
    Kubectl(PathBuf),
}

/// The IstioOperator that `make istio` installs Istio with, relative to the repository root.
pub const MESH_CONFIG_FILE: &str = "observability/istio/istio-operator.yaml";

/// Loads the repository's manifests under `root`: with kubectl, every overlay under
/// `manifests/overlays/` rendered (`kind` first), then `manifests/base`, `manifests/istio` and
/// `gateway/` (rendered when they are kustomizations; objects already loaded from an overlay win).
/// Without kubectl, the files of those three directories.
/// Each of these must exist and hold at least one object: a missing directory is an error, so a test
/// over the repo cannot pass vacuously. The IstioOperator [`MESH_CONFIG_FILE`] joins them when
/// present (the mesh's settings, such as the default retry policy).
pub fn load_repo(root: &Path, render: &Render) -> Result<Manifests, LoadError> {
    let kubectl = kubectl(render);
    let mut targets = Vec::new();
    if kubectl.is_some() {
        targets = overlays(&root.join("manifests/overlays"));
    }
    targets.extend(["manifests/base", "manifests/istio", "gateway"].map(|d| root.join(d)));
    let mut all = Manifests::default();
    for dir in targets {
        let objects = match &kubectl {
            Some(k) if is_kustomization(&dir) => render_kustomization(k, &dir)?,
            _ => load_dir(&dir)?,
        };
        if objects.is_empty() {
            return Err(LoadError::Missing {
                path: dir,
                message: "holds no Kubernetes objects".into(),
            });
        }
        // The overlay comes first, so its (patched) copy of a base object is the one kept.
        all.extend(objects);
    }
    // The mesh's own settings (`istioctl install -f`): routes without retries take its
    // `meshConfig.defaultHttpRetryPolicy`. Optional: without it Istio's defaults apply.
    let operator = root.join(MESH_CONFIG_FILE);
    if operator.is_file() {
        all.extend(load_file(&operator, None)?);
    }
    // Findings read better with repo-relative paths.
    for o in &mut all.objects {
        if let Ok(rel) = o.source.file.strip_prefix(root) {
            o.source.file = rel.to_path_buf();
        }
    }
    Ok(all)
}

/// Loads files and directories (recursively) without rendering.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Manifests, LoadError> {
    let mut all = Manifests::default();
    for p in paths {
        let p = p.as_ref();
        let objects = if p.is_dir() { load_dir(p)? } else { load_file(p, None)? };
        all.extend(objects);
    }
    Ok(all)
}

/// Loads the given YAML files.
pub fn load_files<P: AsRef<Path>>(files: &[P]) -> Result<Manifests, LoadError> {
    let mut all = Manifests::default();
    for f in files {
        all.extend(load_file(f.as_ref(), None)?);
    }
    Ok(all)
}

/// Parses one multi-document YAML text; `file` is only used to name the source.
pub fn load_str(text: &str, file: &Path) -> Result<Vec<Object>, LoadError> {
    parse_documents(text, file, false, None)
}

/// Every kustomization under `manifests/overlays`, `kind` first: it is the one `make deploy` applies,
/// so its copy of an object shared with other overlays is the one checked.
fn overlays(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| is_kustomization(p))
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| (p.file_name().is_none_or(|n| n != "kind"), p.clone()));
    found
}

fn kubectl(render: &Render) -> Option<PathBuf> {
    match render {
        Render::Never => None,
        Render::Kubectl(p) => Some(p.clone()),
        Render::Auto => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        }),
    }
}

fn is_kustomization(dir: &Path) -> bool {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

fn render_kustomization(kubectl: &Path, dir: &Path) -> Result<Vec<Object>, LoadError> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| LoadError::Render {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(LoadError::Render {
            dir: dir.to_path_buf(),
            message,
        });
    }
    let text = String::from_utf8(out.stdout).map_err(|e| LoadError::Render {
        dir: dir.to_path_buf(),
        message: format!("output is not UTF-8: {e}"),
    })?;
    parse_documents(&text, dir, true, None)
}

/// Reads every `.yaml`/`.yml` under `dir` in path order, skipping kustomize's own files.
fn load_dir(dir: &Path) -> Result<Vec<Object>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Missing {
            path: dir.to_path_buf(),
            message: "directory not found".into(),
        });
    }
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    files.sort();
    let mut objects = Vec::new();
    for f in files {
        // A kustomization's `namespace:` applies to every object under it, so raw reading honours it
        // too; otherwise raw and rendered loads would disagree on where objects live.
        let ns = kustomize_namespace(dir, &f);
        objects.extend(load_file(&f, ns.as_deref())?);
    }
    Ok(objects)
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read_err = |source| LoadError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !name.starts_with("kustomization.") {
            out.push(path);
        }
    }
    Ok(())
}

/// The `namespace:` of the nearest kustomization between `file` and `root`, if any.
fn kustomize_namespace(root: &Path, file: &Path) -> Option<String> {
    let mut dir = file.parent();
    while let Some(d) = dir {
        for name in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
            let text = std::fs::read_to_string(d.join(name)).ok();
            if let Some(v) = text.and_then(|t| serde_saphyr::from_str::<Value>(&t).ok()) {
                return v.get("namespace").and_then(Value::as_str).map(str::to_string);
            }
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    None
}

fn load_file(path: &Path, namespace: Option<&str>) -> Result<Vec<Object>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_documents(&text, path, false, namespace)
}

/// Splits a YAML stream on `---` lines, returning `(1-based start line, text)` per document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            docs.push((i + 2, String::new()));
            // `--- {inline: doc}` keeps its content.
            let rest = line[3..].trim();
            if let Some((_, cur)) = docs.last_mut()
                && !rest.is_empty()
                && !rest.starts_with('#')
            {
                cur.push_str(rest);
                cur.push('\n');
            }
        } else if line == "..." {
            continue;
        } else if let Some((_, cur)) = docs.last_mut() {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

fn parse_documents(text: &str, file: &Path, rendered: bool, namespace: Option<&str>) -> Result<Vec<Object>, LoadError> {
    let mut objects = Vec::new();
    let docs = split_documents(text);
    // A leading `---` leaves an empty first chunk; count documents from the first real one.
    let skip = usize::from(docs.len() > 1 && docs[0].1.trim().is_empty());
    for (index, (line, doc)) in docs.into_iter().skip(skip).enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            document: index + 1,
            line,
            rendered,
            origin: None,
        };
        let value: Value = serde_saphyr::from_str(&doc).map_err(|e| LoadError::Yaml {
            location: source.to_string(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        if let Some(o) = decode_object(value, source, namespace)? {
            objects.push(o);
        }
    }
    Ok(objects)
}

/// Builds an object from one document. Documents without `apiVersion`/`kind` (values files, kustomize
/// configuration) are not Kubernetes objects and are skipped.
fn decode_object(value: Value, mut source: Source, namespace: Option<&str>) -> Result<Option<Object>, LoadError> {
    let (Some(api_version), Some(kind)) = (
        value.get("apiVersion").and_then(Value::as_str).map(str::to_string),
        value.get("kind").and_then(Value::as_str).map(str::to_string),
    ) else {
        if value.is_object() {
            return Ok(None);
        }
        return Err(LoadError::Header {
            location: source.to_string(),
            message: "document is not a mapping".into(),
        });
    };
    if matches!(kind.as_str(), "Kustomization" | "Component") {
        return Ok(None);
    }
    let raw_meta = value.get("metadata").cloned().unwrap_or(Value::Null);
    let mut metadata: ObjectMeta = if raw_meta.is_null() {
        ObjectMeta::default()
    } else {
        typed(raw_meta, &source, &kind, "?", "metadata.")?
    };
    if let Some(ns) = namespace {
        metadata.namespace = Some(ns.to_string());
    }
    source.origin = metadata
        .annotations
        .get("config.kubernetes.io/origin")
        .and_then(|o| origin_path(o));
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let name = metadata.name.clone();
    // A macro, not a closure: each arm decodes into a different type.
    macro_rules! t {
        ($v:expr) => {
            typed($v, &source, &kind, &name, "")
        };
    }
    let resource = match (group, kind.as_str()) {
        ("apps", "Deployment") => Resource::Deployment(t!(value)?),
        ("apps", "StatefulSet") => Resource::StatefulSet(t!(value)?),
        ("", "Service") => Resource::Service(t!(value)?),
        ("", "ServiceAccount") => Resource::ServiceAccount,
        ("", "ConfigMap") => Resource::ConfigMap(t!(value)?),
        ("", "Secret") => Resource::Secret(t!(value)?),
        ("", "Namespace") => Resource::Namespace,
        ("policy", "PodDisruptionBudget") => Resource::PodDisruptionBudget(t!(value)?),
        ("gateway.networking.k8s.io", "Gateway") => Resource::Gateway(t!(value)?),
        ("gateway.networking.k8s.io", "HTTPRoute") => Resource::HTTPRoute(t!(value)?),
        ("gateway.networking.k8s.io", "ReferenceGrant") => Resource::ReferenceGrant(t!(value)?),
        ("networking.istio.io", "VirtualService") => Resource::VirtualService(t!(value)?),
        ("networking.istio.io", "DestinationRule") => Resource::DestinationRule(t!(value)?),
        ("networking.istio.io", "ServiceEntry") => Resource::ServiceEntry(t!(value)?),
        ("security.istio.io", "AuthorizationPolicy") => Resource::AuthorizationPolicy(t!(value)?),
        ("security.istio.io", "PeerAuthentication") => Resource::PeerAuthentication(t!(value)?),
        ("telemetry.istio.io", "Telemetry") => Resource::Telemetry(t!(value)?),
        _ => Resource::Other(value),
    };
    Ok(Some(Object {
        source,
        api_version,
        kind,
        metadata,
        resource,
    }))
}

/// Decodes `value` as `T`, naming the failing field path on error.
fn typed<T: DeserializeOwned>(
    value: Value,
    source: &Source,
    kind: &str,
    name: &str,
    prefix: &str,
) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| LoadError::Field {
        location: source.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        field: format!("{prefix}{}", e.path()),
        message: e.into_inner().to_string(),
    })
}

/// The `path:` line of a `config.kubernetes.io/origin` annotation.
fn origin_path(annotation: &str) -> Option<String> {
    annotation
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(|p| p.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_counted_like_an_editor_does() {
        let text = "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n---\n# c\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b}\n";
        let objs = load_str(text, Path::new("x.yaml")).expect("valid");
        let got: Vec<_> = objs
            .iter()
            .map(|o| (o.name().to_string(), o.source.document, o.source.line))
            .collect();
        assert_eq!(got, vec![("a".into(), 1, 2), ("b".into(), 3, 7)]);
    }

    #[test]
    fn a_type_error_names_file_document_kind_name_and_field() {
        let text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {}\n  template:\n    spec:\n      containers:\n      - name: c\n        ports: [{containerPort: eighty}]\n";
        let err = load_str(text, Path::new("dir/web.yaml"))
            .expect_err("bad port")
            .to_string();
        for part in [
            "dir/web.yaml doc 2 (line 5)",
            "Deployment/web",
            "spec.template.spec.containers[0].ports[0].containerPort",
        ] {
            assert!(err.contains(part), "{err:?} lacks {part:?}");
        }
    }

    #[test]
    fn a_syntax_error_names_the_document() {
        let err = load_str("a: 1\n---\nb: [x\n", Path::new("f.yaml"))
            .expect_err("bad yaml")
            .to_string();
        assert!(err.starts_with("f.yaml doc 2 (line 3): not valid YAML"), "{err}");
    }

    #[test]
    fn non_objects_and_kustomizations_are_skipped_and_unknown_kinds_kept() {
        let text = "replicas: 3\n---\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: classic}\n";
        let objs = load_str(text, Path::new("f.yaml")).expect("valid");
        assert_eq!(objs.len(), 1);
        assert!(
            matches!(objs[0].resource, Resource::Other(_)),
            "Istio's classic Gateway is not the Gateway API one"
        );
    }
}
