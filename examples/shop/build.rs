fn main() -> Result<(), Box<dyn std::error::Error>> {
    ferry_build::compile_protos(&["shop/v1/shop.proto"], &["proto"])?;
    Ok(())
}
