//! Directories for the files a test writes (configurations, modules, certificates), removed
//! with everything in them when the test lets go of them, so that runs leave nothing behind.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};

/// A new, empty directory under the system's temporary directory, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A directory whose name starts `rustygate-<name>-` (so a failing test's files can be
    /// told apart while it runs) and is unique to this call.
    pub fn new(name: &str) -> Scratch {
        let unique = RandomState::new().hash_one(std::time::SystemTime::now());
        let path = std::env::temp_dir().join(format!(
            "rustygate-{name}-{}-{unique:x}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("a scratch directory");
        Scratch { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `file` in the directory.
    pub fn join(&self, file: impl AsRef<Path>) -> PathBuf {
        self.path.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
