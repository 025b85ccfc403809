use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ferry's code goes to OUT_DIR (for `ferry::include_proto!`), tonic's to OUT_DIR/tonic.
    ferry_build::compile_protos(&["echo/v1/echo.proto"], &["proto"])?;
    let tonic_out = PathBuf::from(std::env::var("OUT_DIR")?).join("tonic");
    std::fs::create_dir_all(&tonic_out)?;
    let fds = protox::compile(["echo/v1/echo.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .out_dir(&tonic_out)
        .compile_fds(fds)?;
    Ok(())
}
