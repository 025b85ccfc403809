//! Generates the built-in health and reflection services (`src/services/`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // grpc.reflection.v1alpha is v1 under an older package name: derive it rather than keep a
    // second copy of the file.
    let v1 = std::fs::read_to_string("proto/grpc/reflection/v1/reflection.proto")?;
    let generated = PathBuf::from(std::env::var("OUT_DIR")?).join("proto");
    let v1alpha = generated.join("grpc/reflection/v1alpha/reflection.proto");
    std::fs::create_dir_all(v1alpha.parent().ok_or("no parent")?)?;
    let text = v1.replace("grpc.reflection.v1", "grpc.reflection.v1alpha");
    // Rewriting an unchanged file would make cargo rerun this script on every build.
    if std::fs::read_to_string(&v1alpha).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(&v1alpha, text)?;
    }

    ferry_build::configure().compile(
        &[
            "grpc/health/v1/health.proto",
            "grpc/reflection/v1/reflection.proto",
            "grpc/reflection/v1alpha/reflection.proto",
        ],
        &[PathBuf::from("proto"), generated],
    )?;
    Ok(())
}
