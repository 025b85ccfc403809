//! Polling for changed files: the one reload mechanism behind TLS certificates and JWKS files.
//!
//! A file counts as changed when its modification time, size or content hash differs from the
//! last look. Polling (rather than inotify) works the same on every platform, in containers and
//! with Kubernetes' symlink-swapped secret volumes; the files are small, so reading them every
//! few seconds costs nothing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often watched files are polled unless configured otherwise.
pub(crate) const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A fingerprint of the files at `paths`: modification time, size and content of each.
///
/// Not a security measure (the hash is SipHash with fixed keys); it only tells "changed".
pub(crate) fn fingerprint(paths: &[PathBuf]) -> io::Result<u64> {
    let mut hasher = DefaultHasher::new();
    for path in paths {
        fingerprint_one(path, &mut hasher)?;
    }
    Ok(hasher.finish())
}

fn fingerprint_one(path: &Path, hasher: &mut DefaultHasher) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    meta.modified().ok().hash(hasher);
    meta.len().hash(hasher);
    std::fs::read(path)?.hash(hasher);
    Ok(())
}

/// Spawns a task on the current tokio runtime that calls `check` on `target` every
/// `interval(target)` (on the blocking pool, since it reads files), until `target` is dropped.
///
/// Returns `false`, spawning nothing, outside a tokio runtime.
pub(crate) fn spawn_poller<T>(
    target: &Arc<T>,
    interval: fn(&T) -> Option<Duration>,
    check: fn(&Arc<T>),
) -> bool
where
    T: Send + Sync + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let weak: Weak<T> = Arc::downgrade(target);
    runtime.spawn(async move {
        loop {
            let Some(period) = weak.upgrade().and_then(|t| interval(&t)) else {
                return;
            };
            tokio::time::sleep(period).await;
            let Some(target) = weak.upgrade() else {
                return;
            };
            // A panic in `check` ends only that blocking task; keep polling.
            let _ = tokio::task::spawn_blocking(move || check(&target)).await;
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_changes_with_content() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("ferry-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("a.pem");
        std::fs::write(&file, b"one")?;
        let first = fingerprint(std::slice::from_ref(&file))?;
        assert_eq!(first, fingerprint(std::slice::from_ref(&file))?);
        std::fs::write(&file, b"two")?;
        assert_ne!(first, fingerprint(std::slice::from_ref(&file))?);
        assert!(fingerprint(&[dir.join("missing")]).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
