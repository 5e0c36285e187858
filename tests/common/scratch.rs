//! Scratch folders for tests that write files: unique per call (process id and a counter), and
//! removed when dropped, except while a test panics (what it wrote stays for a look).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A fresh, empty folder `cads-<tag>-<pid>-<n>` under the system temp folder.
    pub fn new(tag: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "cads-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("scratch folder {}: {e}", path.display()));
        ScratchDir(path)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A file path in a scratch folder of its own, removed with it.
pub struct ScratchFile {
    path: PathBuf,
    _dir: ScratchDir,
}

impl ScratchFile {
    pub fn new(tag: &str, name: &str) -> ScratchFile {
        let dir = ScratchDir::new(tag);
        ScratchFile {
            path: dir.join(name),
            _dir: dir,
        }
    }
}

impl std::ops::Deref for ScratchFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}
