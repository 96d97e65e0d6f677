//! Where the JSON results go (`--json`): checked before the run, so a bad path costs no run,
//! and written after it without destroying what the path names.
//!
//! - `-` (and `/dev/stdout`) is standard output; the human summary then goes to stderr.
//! - A regular file, or a new path, is replaced atomically: the results go to a temporary file
//!   in the same directory, are fsync'd, and the temporary file is renamed over the path. A
//!   symlink to a regular file stays a symlink; the file it points to is replaced.
//! - Anything else (a character device, a FIFO, a socket, a descriptor under `/dev/fd` or
//!   `/proc`, `/dev/stderr`, or a symlink to one of them) is written through, appending, never
//!   replaced.

use super::CliError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where `--json` goes, as checked before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonOut {
    /// Standard output (`-`, `/dev/stdout`).
    Stdout,
    /// A regular file or a new path, replaced atomically: `path` as given, `target` the file
    /// it resolves to (itself unless it is a symlink).
    Replace {
        /// The path given to `--json`.
        path: PathBuf,
        /// The file replaced: `path` with symlinks resolved.
        target: PathBuf,
    },
    /// A device, FIFO or other special file, written through.
    Through(PathBuf),
}

impl JsonOut {
    /// Whether the results go to standard output (so the summary must not).
    pub(super) fn is_stdout(&self) -> bool {
        *self == Self::Stdout
    }
}

/// The `--json` path refused before the run, with why (exit 2).
fn refuse(path: &Path, reason: String) -> CliError {
    CliError::OutputPath {
        flag: "--json",
        path: path.to_owned(),
        reason,
    }
}

/// Checks the `--json` path before the run: it is not a directory, its directory exists and a
/// file can be created in it (for paths replaced atomically).
pub(super) fn check_json(path: &Path) -> Result<JsonOut, CliError> {
    let text = path.as_os_str();
    if text == "-" || text == "/dev/stdout" || text == "/dev/fd/1" || text == "/proc/self/fd/1" {
        return Ok(JsonOut::Stdout);
    }
    if text.is_empty() {
        return Err(refuse(
            path,
            "is empty (give a file path, or - for stdout)".into(),
        ));
    }
    // Another process's or this one's descriptors: never replaced.
    let special = path.starts_with("/proc")
        || path.starts_with("/dev/fd")
        || text == "/dev/stderr"
        || text == "/dev/stdin";
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(refuse(
            path,
            "is a directory (give a file path in it)".into(),
        )),
        Ok(m) if m.is_file() && !special => {
            let target = if fs::symlink_metadata(path).is_ok_and(|l| l.is_symlink()) {
                fs::canonicalize(path).map_err(|e| refuse(path, format!("cannot resolve: {e}")))?
            } else {
                path.to_owned()
            };
            probe_dir(path, &target)?;
            Ok(JsonOut::Replace {
                path: path.to_owned(),
                target,
            })
        }
        Ok(_) => Ok(JsonOut::Through(path.to_owned())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            if special || fs::symlink_metadata(path).is_ok() {
                // A dangling symlink: the file is created where it points.
                return Ok(JsonOut::Through(path.to_owned()));
            }
            probe_dir(path, path)?;
            Ok(JsonOut::Replace {
                path: path.to_owned(),
                target: path.to_owned(),
            })
        }
        Err(e) => Err(refuse(path, format!("cannot be checked: {e}"))),
    }
}

/// Opens the path of a log written during the run (`--hdr-log`, `--csv`) before the run:
/// created, or emptied if it exists (a FIFO or device is written through). Refused (exit 2,
/// naming it) when it is empty or `-`, a directory, or in a directory that is missing or
/// takes no new file.
pub(super) fn open_log(flag: &'static str, path: &Path) -> Result<File, CliError> {
    let refuse = |reason: String| CliError::OutputPath {
        flag,
        path: path.to_owned(),
        reason,
    };
    let text = path.as_os_str();
    if text.is_empty() || text == "-" {
        return Err(refuse(
            "give a file path (this log is written during the run, not to stdout)".into(),
        ));
    }
    if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(refuse("is a directory (give a file path in it)".into()));
    }
    let dir = dir_of(path);
    if fs::symlink_metadata(path).is_err() && !dir.is_dir() {
        return Err(refuse(format!(
            "the directory `{}` does not exist (create it first)",
            dir.display()
        )));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| refuse(format!("cannot be opened for writing: {e}")))
}

/// The directory `target` is in (`.` for a bare file name).
fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The temporary file beside `target` its new contents are written to first.
fn temp_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into());
    dir_of(target).join(format!(".{name}.sockstorm-{}.tmp", std::process::id()))
}

/// Checks that `target`'s directory exists and takes a new file (creates and removes the
/// temporary file the write will use).
fn probe_dir(path: &Path, target: &Path) -> Result<(), CliError> {
    let dir = dir_of(target);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(refuse(
                path,
                format!("`{}` is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(refuse(
                path,
                format!(
                    "the directory `{}` does not exist (create it first)",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(refuse(
                path,
                format!("cannot check the directory `{}`: {e}", dir.display()),
            ))
        }
    }
    let tmp = temp_for(target);
    match OpenOptions::new().write(true).create_new(true).open(&tmp) {
        Ok(_) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(refuse(
            path,
            format!(
                "cannot create a file in the directory `{}`: {e}",
                dir.display()
            ),
        )),
    }
}

/// Writes `doc` (pretty, with a final newline) to `out`. A write through waits for a FIFO's
/// reader and a device's room until `give_up` says to stop (a signal after the run), so it
/// never hangs past one.
pub(super) fn write_json(
    out: &JsonOut,
    doc: &serde_json::Value,
    give_up: &dyn Fn() -> bool,
) -> Result<(), CliError> {
    let path = match out {
        JsonOut::Stdout => Path::new("-"),
        JsonOut::Replace { path, .. } | JsonOut::Through(path) => path.as_path(),
    };
    let written = serde_json::to_vec_pretty(doc)
        .map_err(io::Error::from)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            write_bytes(out, &bytes, give_up)
        });
    written.map_err(|source| CliError::Output {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `out` as [`write_json`] writes a document (the HTML report goes the same
/// way): to stdout, replaced atomically, or written through until `give_up`.
pub(super) fn write_bytes(
    out: &JsonOut,
    bytes: &[u8],
    give_up: &dyn Fn() -> bool,
) -> io::Result<()> {
    match out {
        JsonOut::Stdout => {
            let mut o = io::stdout().lock();
            o.write_all(bytes).and_then(|()| o.flush())
        }
        JsonOut::Replace { target, .. } => replace(target, bytes),
        JsonOut::Through(path) => write_through(path, bytes, give_up),
    }
}

/// Atomic replace: temporary file beside `target`, fsync'd, renamed over it, directory fsync'd.
fn replace(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_for(target);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the directory is: best effort.
    if let Ok(d) = File::open(dir_of(target)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes through a device or FIFO (non-blocking, so a missing reader or a full pipe is waited
/// for in steps that look at `give_up`).
fn write_through(path: &Path, bytes: &[u8], give_up: &dyn Fn() -> bool) -> io::Result<()> {
    let gave_up = || io::Error::new(io::ErrorKind::Interrupted, "stopped by a signal");
    let started = Instant::now();
    let mut told = false;
    let mut f = loop {
        match OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => break f,
            // A FIFO with no reader.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if give_up() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "no process opened the FIFO for reading",
                    ));
                }
                if !told && started.elapsed() > Duration::from_secs(1) {
                    told = true;
                    eprintln!(
                        "sockstorm: waiting for a reader of `{}` (a signal gives up)",
                        path.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        match f.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if give_up() {
                    return Err(gave_up());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("sockstorm-output-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn stdout_new_file_and_refusals() {
        assert_eq!(check_json(Path::new("-")).unwrap(), JsonOut::Stdout);
        assert_eq!(
            check_json(Path::new("/dev/stdout")).unwrap(),
            JsonOut::Stdout
        );
        let d = dir("check");
        let new = d.join("r.json");
        assert_eq!(
            check_json(&new).unwrap(),
            JsonOut::Replace {
                path: new.clone(),
                target: new.clone()
            }
        );
        assert!(!temp_for(&new).exists(), "the probe cleans up");
        let e = check_json(&d).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_json(&d.join("missing/r.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(e.contains("missing/r.json"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_symlink_to_a_file_keeps_the_link_and_replaces_the_file() {
        let d = dir("link");
        let file = d.join("real.json");
        fs::write(&file, "old").unwrap();
        let link = d.join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let out = check_json(&link).unwrap();
        write_json(&out, &serde_json::json!("new"), &|| false).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&file).unwrap(), "\"new\"\n");
        let left: Vec<_> = fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file left");
        let _ = fs::remove_dir_all(&d);
    }
}
