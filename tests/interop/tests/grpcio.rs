//! Python grpcio (the reference gRPC implementation) calls Ferry's calculator.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with grpcio installed: `$FERRY_PYTHON`, else the project's `.venv`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FERRY_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with grpcio: run scripts/install-test-deps (or set FERRY_PYTHON)"
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_drives_the_calculator() {
    let server = interop_tests::start_ferry().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("ferry-grpcio-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let mut command = Command::new(python());
    command
        .arg(root.join("python/grpcio_client.py"))
        .arg(server.local_addr().to_string())
        .arg(root.join("../../examples/calculator/proto"))
        .arg(root.join("../../ferry-build/proto"))
        .arg(&out);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run the grpcio client");
    let _ = std::fs::remove_dir_all(&out);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "grpcio client failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for check in [
        "ok: Divide(1, 0) is INVALID_ARGUMENT",
        "ok: a slow call is DEADLINE_EXCEEDED",
        "ok: binary metadata is echoed back",
        "ok: the calculator is SERVING",
        "ok: reflection serves calculator.proto",
        "all grpcio checks passed",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in\n{stdout}");
    }
    server.shutdown().await.unwrap();
}
