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
//!
//! Tools that read `.proto` files at run time instead of generating code (the `ferry` CLI)
//! call [`compile_descriptor_set`]: the same compiler and bundled imports, an encoded
//! `FileDescriptorSet` out.

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

/// Compiles `protos` (searching `includes` for them and their imports) into an encoded
/// `FileDescriptorSet`, without generating code: what tools that read `.proto` files at run
/// time (the `ferry` CLI's `--proto`) load into a descriptor pool.
///
/// The set holds every file the protos import too, with source info (comments), and keeps
/// custom options such as `google.api.http` byte for byte. As in a build,
/// `google/api/annotations.proto` and `google/api/http.proto` are importable without vendoring
/// them, and so are the `google/protobuf/*` well-known types. It is the set [`Builder::compile`]
/// writes to [`DESCRIPTOR_FILE`].
///
/// ```no_run
/// let encoded = ferry_build::compile_descriptor_set(
///     &["proto/calculator/v1/calculator.proto"],
///     &["proto"],
/// )?;
/// # Ok::<(), ferry_build::Error>(())
/// ```
pub fn compile_descriptor_set(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<Vec<u8>, Error> {
    Ok(compile(protos, includes)?.encode_file_descriptor_set())
}

/// Compiles `protos` with protox: `includes` first, then the bundled protos, then the
/// well-known types.
fn compile(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<protox::Compiler, Error> {
    use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};
    let mut resolver = ChainFileResolver::new();
    for include in includes {
        resolver.add(IncludeFileResolver::new(include.as_ref().to_owned()));
    }
    resolver.add(BundledProtos);
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(protos)
        .map_err(|e| Error(format!("{e:?}")))?;
    Ok(compiler)
}

/// Serves [`BUNDLED_PROTOS`] from memory.
struct BundledProtos;

impl protox::file::FileResolver for BundledProtos {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match BUNDLED_PROTOS.iter().find(|(file, _)| *file == name) {
            Some((file, text)) => protox::file::File::from_source(file, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
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

/// Protos every build (and [`compile_descriptor_set`]) can import without vendoring them.
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
        let compiler = compile(protos, includes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(name: &str, files: &[(&str, &str)]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ferry-build-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Scratch(dir)
    }

    #[test]
    fn descriptor_sets_import_the_bundled_protos_and_keep_custom_options() {
        let dir = scratch(
            "bundled",
            &[(
                "demo/v1/demo.proto",
                r#"syntax = "proto3";
package demo.v1;
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";
// Says hello.
service Demo {
  rpc Hello(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option (google.api.http) = { get: "/v1/hello-route" };
  }
}
"#,
            )],
        );
        let encoded =
            compile_descriptor_set(&[dir.0.join("demo/v1/demo.proto")], &[&dir.0]).unwrap();
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(&encoded[..]).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for name in [
            "demo/v1/demo.proto",
            "google/api/annotations.proto",
            "google/api/http.proto",
            "google/protobuf/empty.proto",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        // The typed set drops the `google.api.http` extension; the encoded one keeps it.
        let route = b"/v1/hello-route";
        assert!(encoded.windows(route.len()).any(|w| w == route));
        let demo = set
            .file
            .iter()
            .find(|f| f.name() == "demo/v1/demo.proto")
            .unwrap();
        assert!(demo.source_code_info.is_some(), "comments are kept");
    }

    #[test]
    fn compile_errors_name_the_file() {
        let dir = scratch(
            "broken",
            &[(
                "broken.proto",
                "syntax = \"proto3\";\nimport \"nowhere.proto\";\n",
            )],
        );
        let error = compile_descriptor_set(&[dir.0.join("broken.proto")], &[&dir.0]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("nowhere.proto"), "{text}");
        let missing = compile_descriptor_set(&[dir.0.join("absent.proto")], &[&dir.0]);
        assert!(missing.is_err());
    }
}
