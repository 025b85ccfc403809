fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_build::compile_protos(&["fixture/v1/fixture.proto"], &["proto"])?;
    Ok(())
}
