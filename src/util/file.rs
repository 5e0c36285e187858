//! Writing output files without losing data: the one implementation behind checkpoints, state
//! files, NIfTI and PNG output.
//!
//! A regular file (or a new path) is written to a temporary file in the same directory, flushed
//! and `sync_all`ed, then renamed over the target, so the name always points at the old or the
//! whole new contents. Anything else is never replaced: a rename over `/dev/full` run as root
//! turned the device node into a PNG. A character device or FIFO (`/dev/stdout`, a named pipe) is
//! written in place, its errors reported (`/dev/full` gives "no space left"); a directory is an
//! error. A symlink to a regular file keeps the link and replaces its target.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Write `path` through `write` so that `path` is either the old file or the whole new one (see
/// the module docs). If `write` or the flush fails, the temporary file is removed and `path` is
/// untouched; the error names `op` and the path.
pub fn write_atomically_with(
    op: &'static str,
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let path = path.as_ref();
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let target: PathBuf = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::canonicalize(path).map_err(io(path))?,
        Ok(m) if m.is_dir() => {
            return Err(Error::BadFile {
                op,
                path: path.display().to_string(),
                problem: "is a directory; expected a file name to write".into(),
            })
        }
        Ok(_) => {
            // A device, FIFO or socket: write in place (no create, no truncate of a node that
            // is not ours), and report every error, including the final flush.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            let mut w = std::io::BufWriter::new(f);
            return write(&mut w).and_then(|()| w.flush()).map_err(io(path));
        }
        Err(_) => path.to_path_buf(),
    };
    let tmp = temp_name(&target);
    let result = (|| {
        // A temp file left by a writer that was killed is replaced; removing it first (rather
        // than truncating through it) means a link planted at that name is never followed.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&target)(e));
    }
    sync_parent_dir(&target);
    Ok(())
}

/// Write `bytes` to `path` (see [`write_atomically_with`]).
pub fn write_atomically(op: &'static str, path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomically_with(op, path, |w| w.write_all(bytes))
}

/// `path.tmp` beside the target: the same directory, hence the same file system, so the rename
/// is atomic; one fixed name, so a crashed writer's leftover is replaced by the next save.
fn temp_name(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Make a rename durable: fsync the directory holding `path`. Best effort: some platforms and
/// file systems (Windows, some network mounts) cannot open or sync a directory; the rename has
/// happened either way.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
