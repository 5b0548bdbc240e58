//! Headless Chromium for page tests: the DOM as rendered, and screenshots kept under `target/`
//! for a person to look at. Chromium comes from `make tools` (Debian's package); a missing one
//! fails the test saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Chromium's binary: `CHROMIUM` when set, else `chromium` on the PATH.
pub fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("chromium is not installed (needed for the headless browser test): `make tools` installs it")
        })
}

/// Runs headless Chromium with a fresh profile and returns its stdout. The flags keep it off the
/// network (this machine's is closed) and quiet.
pub async fn run(args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finishes within 90 s")
        .expect("chromium starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The page's DOM after Chromium rendered it.
pub async fn dom(url: &str) -> String {
    run(&["--dump-dom".to_owned(), url.to_owned()]).await
}

/// `<workspace>/target/<dir>`, created; screenshots stay there after the run.
pub fn screenshot_dir(dir: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target").join(dir);
    std::fs::create_dir_all(&path).expect("screenshot directory");
    path
}

/// Screenshots `url` to `dir/name` and returns the PNG, which must be larger than `min_bytes`
/// (a blank 1280x900 page compresses to a few KB; a rendered one is far more).
pub async fn screenshot(url: &str, dir: &Path, name: &str, min_bytes: usize) -> Vec<u8> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    run(&[format!("--screenshot={}", path.display()), url.to_owned()]).await;
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is not a PNG");
    assert!(
        png.len() > min_bytes,
        "{name} is only {} bytes: a blank page?",
        png.len()
    );
    png
}
