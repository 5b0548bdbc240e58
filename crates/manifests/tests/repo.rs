//! The repository's own manifests pass every check, both as kustomize renders them (when kubectl is
//! installed) and as raw files. A missing or empty manifest directory fails: it must never pass
//! vacuously.

use std::path::{Path, PathBuf};

use manifests::{Render, check_all, load_repo};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assert_clean(render: &Render) {
    let m = load_repo(&repo_root(), render).unwrap_or_else(|e| panic!("loading the repo's manifests: {e}"));
    for kind in [
        "Deployment",
        "Service",
        "Gateway",
        "HTTPRoute",
        "VirtualService",
        "DestinationRule",
    ] {
        assert!(
            m.objects.iter().any(|o| o.kind == kind),
            "no {kind} in the repo's manifests ({render:?})"
        );
    }
    let findings = check_all(&m);
    let text: String = findings.iter().map(|f| format!("\n  {f}")).collect();
    assert!(
        findings.is_empty(),
        "{} finding(s) in the repo's manifests ({render:?}):{text}",
        findings.len()
    );
}

#[test]
fn the_raw_manifest_files_pass_every_check() {
    assert_clean(&Render::Never);
}

#[test]
fn the_kustomize_rendering_passes_every_check() {
    // Without kubectl this is the raw-file check again; `make test` machines have kubectl.
    assert_clean(&Render::Auto);
}

/// Copies `src` into `dst` recursively.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let p = e.expect("dir entry").path();
        let to = dst.join(p.file_name().expect("file name"));
        if p.is_dir() {
            copy_tree(&p, &to)
        } else {
            std::fs::copy(&p, &to).map(drop).expect("copy")
        }
    }
}

/// Replaces the first `needle` in any YAML file under `dir`, returning the file changed.
fn plant(dir: &Path, needle: &str, replacement: &str) -> PathBuf {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p)
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p)
            }
        }
    }
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        if text.contains(needle) {
            std::fs::write(&f, text.replacen(needle, replacement, 1)).expect("write");
            return f;
        }
    }
    panic!("no `{needle}` under {}", dir.display());
}

#[test]
fn faults_planted_in_a_copy_of_the_real_manifests_are_found() {
    // Proves the checks read the real layout (kustomize namespaces, file names), not only fixtures.
    let tmp = tempfile::tempdir().expect("tempdir");
    for d in ["manifests", "gateway"] {
        copy_tree(&repo_root().join(d), &tmp.path().join(d));
    }
    plant(&tmp.path().join("manifests/istio"), "subset: v2", "subset: v9");
    plant(
        &tmp.path().join("manifests/base"),
        "appProtocol: grpc",
        "appProtocol: http",
    );
    for render in [Render::Never, Render::Auto] {
        let m = load_repo(tmp.path(), &render).unwrap_or_else(|e| panic!("{e}"));
        let findings = check_all(&m);
        let text: String = findings.iter().map(|f| format!("\n  {f}")).collect();
        for check in ["virtual_service_subsets", "grpc_ports"] {
            assert!(
                findings.iter().any(|f| f.check == check),
                "{render:?}: {check} did not fire:{text}"
            );
        }
    }
}

#[test]
fn missing_or_empty_manifest_directories_are_errors_not_passes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = load_repo(tmp.path(), &Render::Never)
        .expect_err("nothing to load")
        .to_string();
    assert!(err.contains("manifests/base") && err.contains("not found"), "{err}");
    for d in ["manifests/base", "manifests/istio", "gateway"] {
        std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
    }
    std::fs::write(tmp.path().join("manifests/base/kustomization.yaml"), "resources: []\n").expect("write");
    let err = load_repo(tmp.path(), &Render::Never)
        .expect_err("no objects")
        .to_string();
    assert!(err.contains("holds no Kubernetes objects"), "{err}");
}
