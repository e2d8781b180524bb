//! File watching for hot reload.
//!
//! The watcher watches the *directories* holding the configuration file and the modules and
//! certificates it references, not the files: an editor or a deploy that saves by writing a temporary file
//! and renaming it over the old one replaces the inode, which a watch on the file itself
//! would lose. Events for other files in those directories are ignored. Bursts (an editor's
//! write + chmod + rename, a `cp` of a large module in several writes) are coalesced: the
//! reload starts once the files have been quiet for [`DEBOUNCE`]. A change that leaves every
//! watched file's bytes as they were (a `touch`) does not reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::ControlPlane;
use crate::load::base_dir;

/// Quiet time after the last change before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The files a configuration depends on, as absolute paths.
fn watched_files(plane: &ControlPlane) -> Vec<PathBuf> {
    let config = plane.config();
    let base = base_dir(plane.path());
    let mut files = vec![plane.path().to_path_buf()];
    files.extend(config.filters.iter().map(|f| base.join(&f.module)));
    files.extend(config.balancers.iter().map(|b| base.join(&b.module)));
    // Certificates, keys and authorities: a renewed certificate written in place reloads too.
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            files.push(base.join(&tls.certificate_chain));
            files.push(base.join(&tls.private_key));
            files.extend(tls.client_ca_certificates.iter().map(|p| base.join(p)));
            for sni in &tls.sni {
                files.push(base.join(&sni.certificate_chain));
                files.push(base.join(&sni.private_key));
            }
        }
    }
    for c in &config.clusters {
        if let Some(tls) = &c.tls {
            for p in [
                &tls.ca_certificates,
                &tls.certificate_chain,
                &tls.private_key,
            ]
            .into_iter()
            .flatten()
            {
                files.push(base.join(p));
            }
        }
    }
    if let Some(ca) = config
        .tracing
        .tls
        .as_ref()
        .and_then(|t| t.ca_certificates.as_ref())
    {
        files.push(base.join(ca));
    }
    files.iter().map(|f| absolute(f)).collect()
}

/// Whether an event on `path` may have changed a watched file: the file itself, or the
/// `..data` link a Kubernetes secret or config-map volume swaps to replace all its files at
/// once (the files are symbolic links through it, so no event names them).
fn relevant(watched: &HashSet<PathBuf>, path: &Path) -> bool {
    watched.contains(path)
        || path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."))
            && path
                .parent()
                .is_some_and(|dir| watched.iter().any(|f| f.parent() == Some(dir)))
}

/// `path` made absolute through its directory (the file itself may be mid-rename).
fn absolute(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// A digest of the bytes of `files` (missing files count as empty).
fn fingerprint(files: &[PathBuf]) -> [u8; 32] {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
    }
    h.finalize().into()
}

pub(crate) async fn run(plane: Arc<ControlPlane>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = match notify::recommended_watcher(
        move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && !matches!(event.kind, EventKind::Access(_))
            {
                for p in event.paths {
                    let _ = tx.send(p);
                }
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch files; reload with SIGHUP or the admin API");
            return;
        }
    };
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut files = watched_files(&plane);
    let mut last = fingerprint(&files);
    loop {
        // Watch every directory the current configuration needs (a reload may add some).
        let watched_before = dirs.len();
        for f in &files {
            if let Some(dir) = f.parent()
                && !dirs.contains(dir)
            {
                match watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        dirs.insert(dir.to_path_buf());
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch"),
                }
            }
        }
        if dirs.len() != watched_before {
            tracing::info!(files = ?files, "watching for changes");
        }
        let watched: HashSet<PathBuf> = files.iter().cloned().collect();
        // Wait for a change to one of our files, then for quiet.
        loop {
            let Some(p) = rx.recv().await else { return };
            if relevant(&watched, &p) {
                break;
            }
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let now = fingerprint(&files);
        if now == last {
            tracing::debug!("watched files changed on disk but their contents did not");
            continue;
        }
        // Failures are logged and counted by `reload`; the old configuration keeps serving
        // and the next change is tried again.
        let _ = plane.reload("file change").await;
        files = watched_files(&plane);
        last = fingerprint(&files);
    }
}
