//! Generates tonic's client and server for the calculator, as a real peer to test against.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(
        ["calculator/v1/calculator.proto"],
        ["../../examples/calculator/proto", "../../ferry-build/proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=../../examples/calculator/proto");
    Ok(())
}
