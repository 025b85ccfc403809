//! The Python interpreter the interop tests drive, and the scripts they run with it.

use std::path::PathBuf;

use crate::workspace_root;

/// The Python with grpcio installed: `$FERRY_PYTHON`, else the workspace's `.venv`. Fails the
/// test with what to do when neither exists.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FERRY_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with grpcio: run scripts/install-test-deps (or set FERRY_PYTHON)"
    );
    venv
}

/// A script in `tests/support/python/`.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/support/python").join(name)
}
