fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_build::compile_protos(&["calculator/v1/calculator.proto"], &["proto"])?;
    Ok(())
}
