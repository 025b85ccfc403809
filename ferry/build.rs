//! Generates the built-in health and reflection services (their streaming methods are served
//! by hand in `src/health.rs` and `src/reflection.rs`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_build::configure().streaming_warnings(false).compile(
        &[
            "proto/grpc/health/v1/health.proto",
            "proto/grpc/reflection/v1/reflection.proto",
            "proto/grpc/reflection/v1alpha/reflection.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
