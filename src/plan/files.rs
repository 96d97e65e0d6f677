//! Reading the files a plan names (`@FILE` messages and bodies, `{{line FILE}}` lists, the
//! scenario file) with a limit that fits each use: only regular files (a device or FIFO
//! could be read forever: `--message @/dev/zero` once grew to 24 GB), and never more than
//! the limit, even if the file grows while it is read.

use crate::certs::os_reason;
use std::io::Read;
use std::path::Path;

/// A message or request body read from a file (`--message @FILE`, `--auth-body @FILE`).
pub const MESSAGE_FILE_MAX: u64 = 16 * 1024 * 1024;
/// A `{{line FILE}}` list.
pub const LINES_FILE_MAX: u64 = 1024 * 1024 * 1024;
/// A scenario file.
pub const SCENARIO_FILE_MAX: u64 = 16 * 1024 * 1024;

/// `limit` bytes, readable (`16 MiB`).
fn size(limit: u64) -> String {
    match limit {
        l if l >= 1 << 30 && l % (1 << 30) == 0 => format!("{} GiB", l >> 30),
        l if l >= 1 << 20 && l % (1 << 20) == 0 => format!("{} MiB", l >> 20),
        l => format!("{l} bytes"),
    }
}

/// The contents of `path`, a regular file of at most `limit` bytes; the error names the
/// problem and the limit.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| os_reason(&e))?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file ({}): give a file",
            if meta.is_dir() {
                "a directory"
            } else {
                "a device, FIFO or socket"
            }
        ));
    }
    if meta.len() > limit {
        return Err(format!(
            "{} bytes, over the {} limit for this input",
            meta.len(),
            size(limit)
        ));
    }
    let f = std::fs::File::open(path).map_err(|e| os_reason(&e))?;
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| os_reason(&e))?;
    if out.len() as u64 > limit {
        return Err(format!(
            "grew over the {} limit for this input while it was read",
            size(limit)
        ));
    }
    Ok(out)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, String> {
    String::from_utf8(read_limited(path, limit)?).map_err(|_| "not UTF-8 text".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_directories_and_oversized_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("sockstorm-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("m.txt");
        std::fs::write(&f, "hello").unwrap();
        assert_eq!(read_limited(&f, 5).unwrap(), b"hello");
        assert!(read_limited(&f, 4)
            .unwrap_err()
            .contains("over the 4 bytes limit"));
        assert!(read_limited(&dir, 5).unwrap_err().contains("a directory"));
        // /dev/zero is only looked at (metadata), never opened.
        let e = read_limited(Path::new("/dev/zero"), MESSAGE_FILE_MAX).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(read_limited(&fifo, 5).unwrap_err().contains("FIFO"));
        }
        assert!(read_limited(&dir.join("nope"), 5)
            .unwrap_err()
            .contains("No such file"));
        assert_eq!(size(16 << 20), "16 MiB");
        assert_eq!(size(1 << 30), "1 GiB");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
