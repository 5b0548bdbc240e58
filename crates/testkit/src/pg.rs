//! A throwaway PostgreSQL cluster: its own data directory under /tmp, its own
//! port on 127.0.0.1, trust authentication, fsync off. Dropping it stops the
//! server and removes the directory.
//!
//! `initdb` and the server refuse to run as root, so when the tests run as
//! root every server-side command runs as the `postgres` user (`runuser`),
//! in a directory that user owns. The data directory is copied from a
//! template made once per machine by `initdb` (0.7 s each time otherwise),
//! and a watchdog process stops the server if the test process dies without
//! dropping the cluster (a killed test must not leave servers behind).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context as _, anyhow, bail};

/// Bumped when the template's initdb options change, so an old template is not reused.
const TEMPLATE_FORMAT: u32 = 1;
const SERVER_USER: &str = "postgres";
const START_ATTEMPTS: usize = 3;

pub struct PgCluster {
    bin: PathBuf,
    /// Removed on drop, after the server has stopped.
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    watchdog: Mutex<Option<Child>>,
    databases: AtomicU32,
}

impl PgCluster {
    /// Starts a cluster on a free port. Fails (never skips) when PostgreSQL
    /// is not installed, saying how to install it.
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres = is_root();
        let major = major_version(&bin)?;
        let template = ensure_template(&bin, major, as_postgres)?;

        let dir = tempfile::Builder::new()
            .prefix("testkit-pg.")
            .tempdir_in("/tmp")
            .context("cannot create a directory under /tmp for the cluster")?;
        if as_postgres {
            chown_to_postgres(dir.path())?;
        }
        let data = dir.path().join("data");
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .output()
            .context("cannot run cp")?;
        check(&out, "copying the template cluster")?;

        let mut cluster = Self {
            bin,
            dir,
            port: 0,
            as_postgres,
            watchdog: Mutex::new(None),
            databases: AtomicU32::new(0),
        };
        // The free port can be taken between the probe and the bind: retry.
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            cluster.port = crate::free_port().context("no free port on 127.0.0.1")?;
            match cluster.start_server() {
                Ok(()) => {
                    cluster.arm_watchdog();
                    return Ok(cluster);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `postgres` database of the cluster (trust auth, no password).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` (lower-case letters, digits and `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            bail!("database name {name:?}: use 1 to 63 lower-case letters, digits and '_', not starting with a digit");
        }
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .context("cannot run createdb")?;
        check(&out, &format!("createdb {name}"))?;
        Ok(self.database_url(name))
    }

    /// A new database with a name not used before in this cluster.
    pub fn fresh_database(&self) -> anyhow::Result<String> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        self.create_database(&format!("test_{n}"))
    }

    /// Stops the server, keeping the data: clients are disconnected at once
    /// and see the database go away. `-m fast`, not `immediate`: with
    /// synchronous_commit off, an immediate stop loses the last commits.
    pub fn stop_server(&self) -> anyhow::Result<()> {
        let out = self.pg_ctl(&["-m", "fast", "-w", "stop"])?;
        check(&out, "pg_ctl stop")
    }

    /// Starts the server again on the same port with the same data.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        let log = log.to_string_lossy();
        let out = self.pg_ctl(&["-l", &log, "-w", "-t", "30", "-o", &opts, "start"])?;
        check(&out, "pg_ctl start").map_err(|e| anyhow!("{e:#}\nserver log:\n{}", self.log_tail()))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let data = self.data_dir();
        let mut all = vec!["-D", data.to_str().context("non-UTF-8 data directory")?];
        all.extend_from_slice(args);
        server_command(&self.bin.join("pg_ctl"), &all, self.as_postgres)
            .output()
            .context("cannot run pg_ctl")
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A detached shell that stops the server and removes the directory
    /// once this process is gone. Best effort: without it a killed test
    /// leaves a server running, which is what it prevents.
    fn arm_watchdog(&self) {
        let data = self.data_dir();
        let stop = format!(
            "{}{} -D {} -m immediate stop",
            if self.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            data.display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: a test runner that kills the test's group
        // must not take the watchdog with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if let Ok(child) = cmd.spawn()
            && let Ok(mut w) = self.watchdog.lock()
        {
            *w = Some(child);
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watchdog.lock()
            && let Some(mut child) = w.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Already stopped (stop_server) is fine; the directory goes with `dir`.
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }
}

/// `PG_BIN_DIR` when set, else the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    find_bin_dir_in(
        std::env::var_os("PG_BIN_DIR").map(PathBuf::from),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bin_dir_in(explicit: Option<PathBuf>, root: &Path) -> anyhow::Result<PathBuf> {
    const HINT: &str = "run `make tools`, which installs PostgreSQL (Debian package postgresql)";
    if let Some(dir) = explicit {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir);
        }
        bail!("PG_BIN_DIR={} holds no initdb and pg_ctl; {HINT}", dir.display());
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin; {HINT}")
    })
}

fn major_version(bin: &Path) -> anyhow::Result<u32> {
    let out = Command::new(bin.join("pg_ctl"))
        .arg("--version")
        .output()
        .context("cannot run pg_ctl --version")?;
    check(&out, "pg_ctl --version")?;
    // "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("cannot read the version from {text:?}"))
}

/// The initdb'd data directory that every cluster copies, made once.
fn ensure_template(bin: &Path, major: u32, as_postgres: bool) -> anyhow::Result<PathBuf> {
    let user = if as_postgres {
        SERVER_USER.to_owned()
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }.to_string()
    };
    let template = PathBuf::from(format!("/tmp/testkit-pg-template-{major}-{TEMPLATE_FORMAT}-{user}"));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let building = tempfile::Builder::new()
        .prefix("testkit-pg-template.")
        .tempdir_in("/tmp")
        .context("cannot create a directory under /tmp")?;
    if as_postgres {
        chown_to_postgres(building.path())?;
    }
    let data = building.path().join("data");
    let data_arg = data.to_str().context("non-UTF-8 temp directory")?;
    let out = server_command(
        &bin.join("initdb"),
        &[
            "-D",
            data_arg,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        as_postgres,
    )
    .output()
    .context("cannot run initdb")?;
    check(&out, "initdb")?;
    // Atomic: another test process building at the same time either wins the
    // rename or finds the template complete; a half-written one is never seen.
    if let Err(e) = fs::rename(&data, &template)
        && !template.join("PG_VERSION").is_file()
    {
        return Err(e).with_context(|| format!("cannot move the template to {}", template.display()));
    }
    Ok(template)
}

/// A server-side command, as the `postgres` user when we are root.
fn server_command(program: &Path, args: &[&str], as_postgres: bool) -> Command {
    let mut cmd = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chown_to_postgres(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("chown")
        .arg(format!("{SERVER_USER}:{SERVER_USER}"))
        .arg(path)
        .output()
        .context("cannot run chown")?;
    check(&out, &format!("chown postgres {}", path.display()))
        .context("running as root, the cluster's directory must belong to the postgres user; is there one? (`make tools` installs PostgreSQL)")
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_creates_databases_stops_restarts_and_cleans_up() {
        let pg = PgCluster::start().expect("cluster");
        let dir = pg.dir.path().to_owned();
        assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
        let url = pg.fresh_database().unwrap();
        assert!(url.ends_with("/test_0"), "{url}");
        assert!(pg.create_database("test_0").is_err(), "exists already");
        assert!(
            pg.create_database("Bad-Name")
                .unwrap_err()
                .to_string()
                .contains("lower-case")
        );

        let psql = |db: &str| {
            Command::new(pg.bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &pg.port().to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                ])
                .args(["-Atc", "SELECT current_database()"])
                .output()
                .unwrap()
        };
        assert_eq!(String::from_utf8_lossy(&psql("test_0").stdout).trim(), "test_0");
        pg.stop_server().unwrap();
        assert!(!psql("test_0").status.success(), "stopped");
        pg.start_server().unwrap();
        assert!(psql("test_0").status.success(), "started again with its data");

        drop(pg);
        assert!(!dir.exists(), "{} removed", dir.display());
    }

    #[test]
    fn missing_postgres_fails_saying_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let e = find_bin_dir_in(None, empty.path()).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains("make tools"), "{e}");
        let e = find_bin_dir_in(Some(empty.path().into()), empty.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("PG_BIN_DIR") && e.contains("make tools"), "{e}");
    }

    #[test]
    fn free_ports_are_bindable() {
        let p = crate::free_port().unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    }
}
