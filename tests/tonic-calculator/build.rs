//! Generates the tonic server for the calculator proto, compiled in-process with protox (no
//! `protoc`), and writes the descriptor set that tonic-reflection serves.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let includes = ["../../examples/calculator/proto", "../../ferry-build/proto"];
    let fds = protox::compile(["calculator/v1/calculator.proto"], includes)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("calculator_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    let mut to_generate = fds;
    to_generate
        .file
        .retain(|f| !f.name().starts_with("google/"));
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(to_generate)?;
    for include in includes {
        println!("cargo:rerun-if-changed={include}");
    }
    Ok(())
}
