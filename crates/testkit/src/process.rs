//! Service binaries run as an operator would, from a clean environment.

use std::process::Stdio;

use tokio::process::Command;

/// `bin` with only `PATH` from this process's environment, ephemeral ports
/// on 127.0.0.1 (`PORT`, `METRICS_PORT` 0), then `envs`; output piped, and
/// killed if the test drops it.
pub fn service_command(bin: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([("PORT", "0"), ("METRICS_PORT", "0"), ("BIND_ADDR", "127.0.0.1")])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}
