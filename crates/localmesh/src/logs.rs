//! Pod logs kept as the kubelet keeps container logs: each pod's stdout and stderr go through one
//! pipe to localmesh, which appends them to `<data-dir>/logs/<pod>.log` and rotates that file by
//! size with a bounded number of files (the kubelet's `containerLogMaxSize`, 10Mi, and
//! `containerLogMaxFiles`, 5). A rotation renames `<pod>.log` to `<pod>.log.1`, `.1` to `.2`, and
//! so on; the oldest beyond `--log-max-files` (the current file included) is deleted. The newest
//! lines are always in `<pod>.log`.
//!
//! Lines are kept whole: the pipe is read in chunks of up to [`LINE_MAX`] bytes and written up to
//! their last newline, and a file takes the whole lines that fit before it is rotated, so only a
//! line longer than `LINE_MAX` (as containerd cuts lines longer than its
//! `max_container_log_line_size`, 16 KiB) or than `--log-max-size` is ever split. No file grows
//! past `--log-max-size` while renames succeed. Files are created `0640` and the log directory
//! `0750`: logs carry request ids, customer ids and errors.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::builder::TypedValueParser as _;

/// The kubelet's `containerLogMaxSize` default, 10Mi.
pub const DEFAULT_MAX_SIZE: usize = 10 << 20;
/// The kubelet's `containerLogMaxFiles` default.
pub const DEFAULT_MAX_FILES: usize = 5;
/// The smallest `--log-max-size`: a few log lines.
pub const MIN_MAX_SIZE: usize = 1 << 10;
/// The longest line kept whole (containerd's `max_container_log_line_size`).
pub const LINE_MAX: usize = 16 << 10;
/// Log files: owner read-write, group read.
pub const FILE_MODE: u32 = 0o640;
/// The log directory: owner all, group read and list.
pub const DIR_MODE: u32 = 0o750;
/// A log that cannot be written or rotated is reported at most this often (per pod).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How pod logs are rotated: `localmesh up --log-max-size --log-max-files`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Rotation {
    /// A pod's log is rotated before it would grow past this size, e.g. 10MiB (bytes, or KiB,
    /// MiB, GiB; at least 1KiB): the kubelet's `containerLogMaxSize`.
    #[arg(long = "log-max-size", default_value = "10MiB", value_parser = parse_max_size)]
    pub max_size: usize,
    /// Log files kept per pod, the current one included (at least 2): the kubelet's
    /// `containerLogMaxFiles`. The oldest beyond it is deleted.
    #[arg(long = "log-max-files", default_value_t = DEFAULT_MAX_FILES, value_parser = clap::value_parser!(u64).range(2..=1000).map(|n| n as usize))]
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

/// `--log-max-size`: a size ([`crate::size::parse`]) of at least [`MIN_MAX_SIZE`].
pub fn parse_max_size(s: &str) -> Result<usize, String> {
    let bytes = crate::size::parse(s)?;
    if bytes < MIN_MAX_SIZE {
        return Err(format!("{s} is below the minimum of 1KiB"));
    }
    Ok(bytes)
}

/// A size as the flag takes it: `10MiB`, `64KiB`, else bytes (`1500`).
pub fn size_text(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 30 && b.is_multiple_of(1 << 30) => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{}KiB", b >> 10),
        b => b.to_string(),
    }
}

/// The `n`th rotated file of `path`: `<pod>.log.<n>`, `.1` the newest.
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An error naming the file or directory it is about.
fn at(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error {
    let context = format!("{what} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// Creates `dir` (and its parents) `0750`, and makes an existing one `0750`.
fn log_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(at(dir, "creating the log directory"))?;
    // The umask may have taken bits away, and a directory from an older run may be 0755.
    if fs::metadata(dir)?.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE)).map_err(at(dir, "chmod 0750"))?;
    }
    Ok(())
}

/// Opens (or creates) a log file for appending, `0640`.
fn open_current(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(at(path, "opening the log"))?;
    if file.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(at(path, "chmod 0640"))?;
    }
    Ok(file)
}

/// JSON log lines in a file of their own, rotated as pod logs are: the access log
/// (`localmesh up --access-log`), or localmesh's own log when a person reads its stdout
/// (`--output human`, [`crate::up::log_file`]). Each JSON line is one write, so a line never
/// straddles two files.
#[derive(Debug)]
pub struct AccessLog(Mutex<LogFile>);

/// The tracing target of the access-log lines.
pub const ACCESS_TARGET: &str = "localmesh::access";

impl AccessLog {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        LogFile::open(path, rotation).map(|f| AccessLog(Mutex::new(f)))
    }
}

impl io::Write for &AccessLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::lock(&self.0).write(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Owned, for a writer thread ([`telemetry::log_writer`]): unbuffered, so each line stays one
/// write and never straddles two files.
impl io::Write for AccessLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One pod's log: the current file and its rotated predecessors.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    rotation: Rotation,
    file: File,
    /// Bytes in the current file.
    size: u64,
    last_warning: Option<Instant>,
}

impl LogFile {
    /// Opens `path` for appending (creating it and its directory), and deletes rotated files
    /// beyond `rotation.max_files` left by a run with a larger count.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            log_dir(dir)?;
        }
        remove_beyond(path, rotation.max_files);
        let file = open_current(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            rotation,
            file,
            size,
            last_warning: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `data`: the whole lines that fit go into the current file, which is then rotated
    /// for the rest. A line longer than a whole file is split across files. A failed rotation is
    /// reported and the data still appended (no line is lost; the file grows past the limit until
    /// a rotation works).
    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let max = self.rotation.max_size as u64;
        while !data.is_empty() {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if data.len() <= room {
                return self.append(data);
            }
            match data[..room].iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    let (lines, rest) = data.split_at(i + 1);
                    self.append(lines)?;
                    data = rest;
                }
                None if self.size > 0 => {
                    if let Err(e) = self.rotate() {
                        self.report("cannot rotate the log; appending to it past --log-max-size", &e);
                        return self.append(data);
                    }
                }
                // An empty file and a line longer than it: the file takes what fits.
                None => {
                    let (part, rest) = data.split_at(room);
                    self.append(part)?;
                    data = rest;
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).map_err(at(&self.path, "writing the log"))?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// `<pod>.log.<max_files-1>` goes, each `.i` becomes `.i+1`, the current file `.1`, and a new
    /// current file is opened (with a single file, the current one is simply started anew).
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.saturating_sub(1);
        if keep == 0 {
            ignore_missing(fs::remove_file(&self.path)).map_err(at(&self.path, "deleting"))?;
        } else {
            let oldest = rotated(&self.path, keep);
            ignore_missing(fs::remove_file(&oldest)).map_err(at(&oldest, "deleting"))?;
            for i in (1..keep).rev() {
                let from = rotated(&self.path, i);
                ignore_missing(fs::rename(&from, rotated(&self.path, i + 1))).map_err(at(&from, "renaming"))?;
            }
            ignore_missing(fs::rename(&self.path, rotated(&self.path, 1))).map_err(at(&self.path, "renaming"))?;
        }
        self.file = open_current(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// A warning, at most once every [`WARN_EVERY`] for this pod.
    pub fn report(&mut self, what: &str, e: &io::Error) {
        if self.last_warning.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        self.last_warning = Some(Instant::now());
        tracing::warn!(log = %self.path.display(), error = %e, "{what}");
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Deletes `<path>.<n>` for every `n` of at least `max_files` (the current file is one of the
/// `max_files`, so `.1` to `.max_files-1` stay).
fn remove_beyond(path: &Path, max_files: usize) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let file = e.file_name();
        let n = file
            .to_str()
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('.'))
            .and_then(|n| n.parse::<usize>().ok());
        if n.is_some_and(|n| n >= max_files)
            && let Err(err) = fs::remove_file(e.path())
        {
            tracing::warn!(error = %err, path = %e.path().display(), "cannot delete a rotated log beyond --log-max-files");
        }
    }
}

/// The thread copying one child's output into its [`LogFile`].
#[derive(Debug)]
pub struct Pump {
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Pump {
    /// Starts copying `output` (the read end of the pipe that is the child's stdout and stderr)
    /// into `log` on its own thread, until every holder of the write end has closed it.
    pub fn start(output: io::PipeReader, log: Arc<Mutex<LogFile>>, pod: &str) -> io::Result<Pump> {
        let (tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name(format!("log {pod}")).spawn(move || {
            copy_lines(output, &log);
            drop(tx);
        })?;
        Ok(Pump { done })
    }

    /// Waits until everything the child wrote is in its log, at most `within` (a process the
    /// child left running may hold the pipe open: its output keeps being copied meanwhile).
    /// Whether it finished.
    pub async fn finish(self, within: Duration) -> bool {
        tokio::time::timeout(within, self.done).await.is_ok()
    }
}

/// Reads `output` to its end, writing whole lines (or [`LINE_MAX`] bytes of a longer one) to
/// `log`. A write that fails is reported and dropped: the child must never block on its output.
pub fn copy_lines(mut output: impl Read, log: &Mutex<LogFile>) {
    let mut buf = vec![0u8; LINE_MAX];
    let mut filled = 0;
    let write = |data: &[u8]| {
        let mut log = crate::lock(log);
        if let Err(e) = log.write(data) {
            log.report("cannot write the pod's log; dropping its output", &e);
        }
    };
    loop {
        match output.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                let end = if filled == buf.len() {
                    filled
                } else {
                    match buf[..filled].iter().rposition(|&b| b == b'\n') {
                        Some(i) => i + 1,
                        None => continue,
                    }
                };
                write(&buf[..end]);
                buf.copy_within(end..filled, 0);
                filled -= end;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let mut log = crate::lock(log);
                let path = log.path().display().to_string();
                log.report(&format!("cannot read the pod's output for {path}"), &e);
                break;
            }
        }
    }
    if filled > 0 {
        write(&buf[..filled]);
    }
}

#[cfg(test)]
mod tests;
