//! `make kind-load` with both of Docker's image stores, against stand-ins for `docker` and `kind`
//! that record how they were called: the classic store loads with `kind load docker-image`; the
//! containerd store (Docker 29's default) saves each image for its platform and loads the archive,
//! which is what avoids kubernetes-sigs/kind#3795 ("content digest ... not found").

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes an executable script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/usr/bin/env bash\n{body}")).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Runs scripts/cluster/kind-load.sh with Docker's `DriverStatus` set to `driver_status`; returns
/// its exit status, output and the calls the stand-ins saw.
fn kind_load(driver_status: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("calls.log");
    script(
        &dir.path().join("docker"),
        &format!(
            r#"echo "docker $*" >> {log}
case "$1 $2" in
  "info -f") echo '{driver_status}' ;;
  "info ") ;;
  "image inspect")
    if [ "$3" = -f ]; then echo linux/amd64; fi ;;
  "image save")
    while [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done ;;
esac
"#,
            log = log.display()
        ),
    );
    script(
        &dir.path().join("kind"),
        &format!(
            r#"echo "kind $*" >> {log}
[ "$1 $2" = "get clusters" ] && echo mesh-shop
exit 0
"#,
            log = log.display()
        ),
    );
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/cluster/kind-load.sh"))
        .current_dir(repo_root())
        .env(
            "PATH",
            format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default()),
        )
        .env("SERVICES", "product order")
        .output()
        .expect("bash runs");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, calls)
}

#[test]
fn the_classic_store_loads_the_images_with_kind_load_docker_image() {
    let (ok, text, calls) = kind_load("[[Backing Filesystem extfs] [Supports d_type true]]");
    assert!(ok, "{text}\n{calls}");
    assert!(
        calls.contains("kind load docker-image --name mesh-shop mesh-shop/product:dev mesh-shop/order:dev"),
        "{calls}"
    );
    assert!(!calls.contains("image save"), "{calls}");
}

#[test]
fn the_containerd_store_loads_an_archive_saved_for_the_platform() {
    let (ok, text, calls) = kind_load("[[driver-type io.containerd.snapshotter.v1]]");
    assert!(ok, "{text}\n{calls}");
    assert!(
        calls.contains("docker image save --platform linux/amd64 -o ")
            && calls.contains("mesh-shop/product:dev mesh-shop/order:dev"),
        "{calls}"
    );
    assert!(calls.contains("kind load image-archive --name mesh-shop "), "{calls}");
    assert!(!calls.contains("load docker-image"), "{calls}");
}
