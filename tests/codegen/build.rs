fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The fixture's streaming rpc is there on purpose (generation must leave room for it), so
    // its "not generated yet" warning would only be noise here.
    ferry_build::configure()
        .streaming_warnings(false)
        .compile(&["fixture/v1/fixture.proto"], &["proto"])?;
    Ok(())
}
