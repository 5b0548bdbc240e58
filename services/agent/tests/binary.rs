//! The `agent` binary: exit codes, its JSON log lines, and SIGTERM.

mod common;

use std::{process::Stdio, time::Duration};

use common::{AGENT_ENV, LIMIT};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    time::timeout,
};

fn agent() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
    for var in AGENT_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = timeout(LIMIT, cmd.output())
        .await
        .expect("agent exits in time")
        .expect("agent runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Arguments, environment, and what stderr must mention.
struct BadCase {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    wanted: &'static [&'static str],
}

#[tokio::test]
async fn bad_values_exit_2_naming_the_flag() {
    const V: [&str; 2] = ["--agent-version", "v1.2"];
    let cases = [
        BadCase {
            args: &[V[0], V[1], "--interval", "5 parsecs"],
            env: &[],
            wanted: &["--interval", "5 parsecs"],
        },
        BadCase {
            args: &V,
            env: &[("PING_INTERVAL", "soon")],
            wanted: &["--interval", "PING_INTERVAL", "soon"],
        },
        BadCase {
            args: &[V[0], V[1], "--interval", "0"],
            env: &[],
            wanted: &["--interval", "greater than zero"],
        },
        BadCase {
            args: &[],
            env: &[],
            wanted: &["--agent-version"],
        },
        BadCase {
            args: &[V[0], V[1], "--target", "product:50051"],
            env: &[],
            wanted: &["--target"],
        },
        BadCase {
            args: &[V[0], V[1], "--pings", "many"],
            env: &[],
            wanted: &["--pings"],
        },
        BadCase {
            args: &[
                V[0],
                V[1],
                "--target",
                "https://127.0.0.1:1",
                "--cacert",
                "/nonexistent/ca.pem",
            ],
            env: &[],
            wanted: &["--cacert", "/nonexistent/ca.pem"],
        },
    ];
    for BadCase { args, env, wanted } in cases {
        let mut cmd = agent();
        cmd.args(args).envs(env.iter().copied());
        let (code, _, stderr) = output(cmd).await;
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{args:?} {env:?}: stderr lacks {w:?}: {stderr}");
        }
    }
}

#[tokio::test]
async fn three_pings_then_exit_0() {
    let server = common::start("v1", "product-v1-bin").await;
    let mut cmd = agent();
    cmd.args([
        "--target",
        &server.url(),
        "--agent-version",
        "v1.2",
        "--agent-id",
        "bin-agent",
        "--pings",
        "3",
    ])
    .env("PING_INTERVAL", "50ms");
    let (code, stdout, stderr) = output(cmd).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");

    let pong_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("Received pong from server=v1/product-v1-bin seq="))
        .collect();
    assert_eq!(pong_lines.len(), 3, "{stdout}");
    for line in &pong_lines {
        assert!(line.starts_with('{') && line.ends_with('}'), "a JSON line: {line}");
        for field in [
            r#""server_version":"v1""#,
            r#""server_pod":"product-v1-bin""#,
            r#""rtt_ms":"#,
            r#""service":"agent""#,
            r#""version":"v1.2""#,
            r#""agent_id":"bin-agent""#,
            r#""trace_id":"#,
        ] {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
    for message in ["Stream opened", "Sent ping seq=1", "Agent stopped"] {
        assert!(stdout.contains(message), "{message:?} in {stdout}");
    }
    server.shutdown().await.expect("server stops");
}

#[tokio::test]
async fn sigterm_exits_0() {
    let server = common::start("v1", "product-v1-sig").await;
    let mut cmd = agent();
    cmd.args([
        "--target",
        &server.url(),
        "--agent-version",
        "v1.2",
        "--interval",
        "100ms",
        "--pings",
        "0",
        "--metrics-port",
        "0",
    ]);
    let mut child = cmd.spawn().expect("agent starts");
    let pid = child.id().expect("pid") as libc::pid_t;
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // Port 0: the agent logs the address it bound, so no port is guessed.
    let mut seen = Vec::new();
    let mut metrics_addr = None;
    timeout(LIMIT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains("\"metrics listening\"")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            {
                metrics_addr = v["metrics"].as_str().map(str::to_owned);
            }
            let pong = line.contains("Received pong from server=v1/product-v1-sig");
            seen.push(line);
            if pong {
                return;
            }
        }
        panic!("stdout ended before a pong: {seen:#?}");
    })
    .await
    .expect("a pong in time");
    let metrics_addr = metrics_addr.unwrap_or_else(|| panic!("no \"metrics listening\" line in {seen:#?}"));
    let metrics_port: u16 = metrics_addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");

    // Probes and scrapes see the pongs by the version and pod that served them.
    let text = testkit::scrape(("127.0.0.1", metrics_port)).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with(r#"agent_pongs_total{server_pod="product-v1-sig",server_version="v1"}"#)),
        "{text}"
    );
    assert!(text.contains("agent_last_pong_timestamp_seconds "), "{text}");

    // SAFETY: kill(2) on the child we spawned and still own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    let status = timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within 5 s")
        .expect("wait");
    let rest = rest.await.unwrap_or_default().join("\n");
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("SIGTERM received"), "{rest}");
    assert!(rest.contains("Agent stopped"), "{rest}");
    // The stream ended from the agent's side, so the server drains at once.
    timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("no stream left open")
        .expect("server stops");
}
