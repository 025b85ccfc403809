fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_build::compile_protos(&["grpc/testing/test.proto"], &["proto"])?;
    Ok(())
}
