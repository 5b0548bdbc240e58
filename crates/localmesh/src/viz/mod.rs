//! `localmesh stat`, `top` and `tap`: live numbers in the terminal, as `linkerd viz stat/top/tap`
//! give them, read from a running `localmesh up` through its admin port (`/api/stat`, `/tap`).
//!
//! These commands are clients only: the admin port owns the numbers (crate::stats) and the event
//! stream (crate::tap), so `stat` prints what `/api/stat` computed and `top` aggregates `/tap`'s
//! lines itself, as `linkerd viz top` does over its tap.

pub mod client;
pub mod stat;
pub mod table;
pub mod tap;
pub mod top;

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

/// Where `localmesh up` serves its admin port unless `--admin-port` moved it.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

/// `--admin`, shared by the three commands.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArg {
    /// The admin port of a running `localmesh up` (its --admin-port), as HOST:PORT.
    #[arg(long = "admin", value_name = "HOST:PORT", default_value = DEFAULT_ADMIN, value_parser = parse_admin)]
    pub admin: String,
}

/// `HOST:PORT` (an `http://` prefix and a trailing `/` are forgiven, since the address is often
/// copied from a URL).
pub fn parse_admin(raw: &str) -> Result<String, String> {
    let a = raw.trim();
    let a = a.strip_prefix("http://").unwrap_or(a);
    let a = a.strip_suffix('/').unwrap_or(a);
    let (host, port) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("{raw:?} is not HOST:PORT (e.g. {DEFAULT_ADMIN})"))?;
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!("{raw:?} is not HOST:PORT (e.g. {DEFAULT_ADMIN})"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(a.to_string()),
        _ => Err(format!("{raw:?}: the port must be a number from 1 to 65535")),
    }
}

/// How a command prints: `-o table|wide|json` (`--json` is `-o json`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Wide,
    Json,
}

impl Format {
    pub fn resolve(json: bool, output: Option<Format>) -> Format {
        if json { Format::Json } else { output.unwrap_or_default() }
    }
}

/// Why a command stopped early.
#[derive(Debug)]
pub enum Error {
    /// Nothing answers at the address: `localmesh up` is not running, or runs elsewhere.
    Unreachable { addr: String, reason: String },
    /// The admin answered 400: the request's parameters (the user's flags) are wrong.
    Rejected(String),
    /// Any other failure talking to the admin port.
    Failed(String),
    /// stdout was closed (`localmesh tap | head`): a normal end, not an error to print.
    StdoutClosed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unreachable { addr, reason } => write!(
                f,
                "cannot reach the admin port at {addr} ({reason}); is `localmesh up` running? \
                 If it serves its admin port elsewhere, point --admin HOST:PORT at it"
            ),
            Error::Rejected(msg) => write!(f, "the admin port refused the request: {msg}"),
            Error::Failed(msg) => f.write_str(msg),
            Error::StdoutClosed => f.write_str("stdout closed"),
        }
    }
}

impl Error {
    /// 2 for bad usage (the admin's 400 is a flag it refused, such as `-t 11m`), 1 for a failed or
    /// unreachable admin port.
    fn exit_code(&self) -> ExitCode {
        match self {
            Error::Rejected(_) => ExitCode::from(2),
            Error::Unreachable { .. } | Error::Failed(_) => ExitCode::FAILURE,
            Error::StdoutClosed => ExitCode::SUCCESS,
        }
    }
}

/// Runs one command on a single-threaded runtime (a client waiting on one socket needs no more)
/// and turns its error into a message on stderr and the exit code.
pub fn run<F: Future<Output = Result<(), Error>>>(command: &str, fut: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            note(&format!("localmesh {command}: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            note(&format!("localmesh {command}: {e}"));
            e.exit_code()
        }
    }
}

/// Writes to stdout and flushes (tap lines must show as they come); a closed pipe ends the
/// command quietly instead of panicking as `print!` would.
pub fn out(text: &str) -> Result<(), Error> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes()).and_then(|()| o.flush()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Error::StdoutClosed
        } else {
            Error::Failed(format!("cannot write to stdout: {e}"))
        }
    })
}

/// Resolves on Ctrl-C; never, when the handler cannot be installed (the command then ends by
/// its other means: `--max`, `--duration`, the stream's end, or a kill).
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A line on stderr. Unlike `eprintln!`, a closed stderr (`2>&1 | head`) is not a panic: the
/// note is lost, the command goes on.
pub fn note(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

/// Text from the network made safe for a terminal: control characters (an ANSI escape in a path
/// would otherwise drive the terminal, and `top` redraws it every second) are shown escaped.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Milliseconds as `stat` and `top` print them: one decimal below 10 ms (local hops are often
/// sub-millisecond), whole milliseconds above; `-` for none.
pub fn ms(v: Option<f64>) -> String {
    match v {
        // 9.96 would print as 10.0ms with one decimal: switch where the rounding does.
        Some(v) if v.is_finite() && v < 9.95 => format!("{v:.1}ms"),
        Some(v) if v.is_finite() => format!("{v:.0}ms"),
        _ => "-".into(),
    }
}

/// A 0..1 share as `98.75%`, `-` for none.
pub fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.2}%", v * 100.0),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_need_a_host_and_a_port() {
        assert_eq!(parse_admin("127.0.0.1:15000").unwrap(), "127.0.0.1:15000");
        assert_eq!(parse_admin("http://localhost:15001/").unwrap(), "localhost:15001");
        assert_eq!(parse_admin("[::1]:15000").unwrap(), "[::1]:15000");
        assert!(parse_admin("15000").is_err());
        assert!(parse_admin(":15000").is_err());
        assert!(parse_admin("localhost:0").is_err());
        assert!(parse_admin("localhost:http").unwrap_err().contains("port"));
    }

    #[test]
    fn numbers_print_as_linkerd_prints_them() {
        assert_eq!(ms(Some(0.84)), "0.8ms");
        assert_eq!(ms(Some(42.6)), "43ms");
        assert_eq!(ms(Some(9.96)), "10ms");
        assert_eq!(ms(None), "-");
        assert_eq!(percent(Some(0.9875)), "98.75%");
        assert_eq!(percent(Some(1.0)), "100.00%");
        assert_eq!(percent(None), "-");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("/a\u{1b}[2Jb"), "/a\\u{1b}[2Jb");
        assert_eq!(
            clean("/product.ProductService/GetProduct"),
            "/product.ProductService/GetProduct"
        );
    }

    #[test]
    fn a_refused_flag_is_bad_usage_and_an_unreachable_port_a_failure() {
        assert_eq!(Error::Rejected("x".into()).exit_code(), ExitCode::from(2));
        let e = Error::Unreachable {
            addr: "127.0.0.1:1".into(),
            reason: "refused".into(),
        };
        assert_eq!(e.exit_code(), ExitCode::FAILURE);
        let msg = e.to_string();
        assert!(msg.contains("127.0.0.1:1") && msg.contains("localmesh up") && msg.contains("--admin"));
    }
}
