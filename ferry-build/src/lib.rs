//! Code generation for Ferry services, used from `build.rs`.
//!
//! `.proto` files are compiled in-process with [protox](https://docs.rs/protox), so no `protoc`
//! is needed. For every package this generates the prost messages and, for every service:
//!
//! - a trait named after the service (`Calculator`) with one async method per rpc (unary,
//!   client-, server- or bidirectionally streaming);
//! - `CalculatorServer<T>`, which serves any implementation of that trait;
//! - `CalculatorClient`, a cloneable typed client over a `ferry::Channel`;
//! - for every message, the canonical proto3 JSON mapping (`ferry::json::ProtoJson`, and
//!   `serde::Serialize` / `Deserialize`), and for every unary method a `ferry::json::JsonCodec`
//!   (`ServiceHandler::json_codec`), so HTTP/JSON calls reach the typed handler with no
//!   reflection. Turn it off with [`Builder::json`].
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     ferry_build::compile_protos(&["proto/calculator/v1/calculator.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! Then include the generated package with `ferry::include_proto!("calculator.v1")`.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

mod generator;
mod json;

/// Compiles `protos` (searching `includes` for imports) with default settings.
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile(protos, includes)
}

/// Starts a configurable build.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        build_server: true,
        build_client: true,
        json: true,
    }
}

/// Why generation failed.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Settings for one code-generation run.
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    build_server: bool,
    build_client: bool,
    json: bool,
}

/// Protos every build can import without vendoring them.
const BUNDLED_PROTOS: [(&str, &str); 2] = [
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
];

/// File name of the encoded `FileDescriptorSet` written next to the generated code.
pub const DESCRIPTOR_FILE: &str = "ferry_descriptor.bin";

impl Builder {
    /// Writes generated files to `dir` instead of `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to generate the service traits and `…Server` adapters (default: yes).
    pub fn build_server(mut self, enable: bool) -> Builder {
        self.build_server = enable;
        self
    }

    /// Whether to generate the `…Client` types (default: yes).
    pub fn build_client(mut self, enable: bool) -> Builder {
        self.build_client = enable;
        self
    }

    /// Whether to generate the JSON mapping of every message and the per-method JSON codecs
    /// (default: yes). Without it the HTTP/JSON path transcodes by reflection.
    pub fn json(mut self, enable: bool) -> Builder {
        self.json = enable;
        self
    }

    /// Compiles `protos`, searching `includes` for them and their imports.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        let out_dir = match self.out_dir {
            Some(dir) => dir,
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    Error("OUT_DIR is not set; call ferry-build from build.rs".into())
                })?,
        };
        for include in includes {
            println!("cargo:rerun-if-changed={}", include.as_ref().display());
        }
        // `google/api/annotations.proto` (REST routes) is always importable.
        let bundled = out_dir.join("ferry-include");
        for (name, text) in BUNDLED_PROTOS {
            let path = bundled.join(name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error(format!("cannot create {}: {e}", dir.display())))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| Error(format!("cannot write {}: {e}", path.display())))?;
        }
        let mut search: Vec<PathBuf> = includes.iter().map(|i| i.as_ref().to_owned()).collect();
        search.push(bundled);
        let mut compiler = protox::Compiler::new(&search).map_err(|e| Error(format!("{e:?}")))?;
        compiler.include_imports(true).include_source_info(true);
        compiler
            .open_files(protos)
            .map_err(|e| Error(format!("{e:?}")))?;
        let fds = compiler.file_descriptor_set();
        // The encoded set keeps custom options (such as `google.api.http`), which the typed
        // `prost_types` set cannot hold.
        let encoded = compiler.encode_file_descriptor_set();
        let descriptor_path = out_dir.join(DESCRIPTOR_FILE);
        std::fs::write(&descriptor_path, encoded)
            .map_err(|e| Error(format!("cannot write {}: {e}", descriptor_path.display())))?;
        // The bundled `google.api` files only declare options: describe them, don't generate
        // them. (prost maps well-known `google.protobuf` types to `prost_types` by itself.)
        let mut to_generate = fds.clone();
        to_generate
            .file
            .retain(|f| !f.name().starts_with("google/api/"));
        let generator = generator::ServiceGenerator {
            build_server: self.build_server,
            build_client: self.build_client,
            descriptor_path,
            json: self.json.then(|| json::Registry::new(&fds, &to_generate)),
        };
        prost_build::Config::new()
            .out_dir(&out_dir)
            .service_generator(Box::new(generator))
            .compile_fds(to_generate)
            .map_err(|e| Error(format!("code generation failed: {e}")))
    }
}
