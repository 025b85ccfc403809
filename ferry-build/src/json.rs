//! Generates the canonical proto3 JSON mapping for every message: `ferry::json::ProtoJson`,
//! `serde::Serialize` and `serde::Deserialize` impls written against the structs prost
//! generates, so JSON goes straight into and out of them with no reflection.
//!
//! The generated code names no field's Rust type: it writes each field with a codec
//! (`j::Ser::<j::Int64, _>::new(&self.count)`) and reads it into its slot
//! (`j::Place::<j::Singular<j::Int64>, _>::new(&mut self.count)`), so fields whose types live in
//! other packages, are boxed, or are well-known types need no path resolution. Only the
//! message's own path, its oneof enums (same package) and per-package enum name tables are
//! named.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;

use heck::{ToLowerCamelCase, ToSnakeCase, ToUpperCamelCase};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};

/// One message, as the generator needs it.
struct MessageInfo {
    desc: DescriptorProto,
    package: String,
    /// Full proto name without the leading dot, e.g. `fixture.v1.Item.Dimensions`.
    full_name: String,
    /// Rust path from the package module, e.g. `item::Dimensions`.
    rust_path: String,
    /// The module prost puts this message's nested types and oneofs in, e.g. `item::dimensions`.
    rust_module: String,
    proto3: bool,
}

/// Every message and enum of a descriptor set, by full name with the leading dot.
pub(crate) struct Registry {
    messages: BTreeMap<String, MessageInfo>,
    enums: HashMap<String, EnumDescriptorProto>,
    /// Files whose code prost generates (their messages get JSON impls).
    generated_files: HashSet<String>,
    /// Per message: the files it came from, so only generated files' messages are emitted.
    file_of: HashMap<String, String>,
}

fn sanitize(ident: String) -> String {
    match ident.as_str() {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{ident}"),
        _ => ident,
    }
}

/// prost's field and module names.
fn to_snake(s: &str) -> String {
    sanitize(s.to_snake_case())
}

/// prost's type and variant names.
fn to_upper_camel(s: &str) -> String {
    sanitize(s.to_upper_camel_case())
}

impl Registry {
    pub(crate) fn new(fds: &FileDescriptorSet, generated: &FileDescriptorSet) -> Registry {
        let mut registry = Registry {
            messages: BTreeMap::new(),
            enums: HashMap::new(),
            // prost maps `google.protobuf` to `prost_types` (whose JSON Ferry provides).
            generated_files: generated
                .file
                .iter()
                .map(|f| f.name().to_owned())
                .filter(|name| !name.starts_with("google/protobuf/"))
                .collect(),
            file_of: HashMap::new(),
        };
        for file in &fds.file {
            let package = file.package().to_owned();
            let proto3 = file.syntax() == "proto3";
            let prefix = if package.is_empty() {
                String::new()
            } else {
                format!(".{package}")
            };
            for e in &file.enum_type {
                registry
                    .enums
                    .insert(format!("{prefix}.{}", e.name()), e.clone());
            }
            for m in &file.message_type {
                registry.add_message(m, &prefix, "", &package, proto3, file.name());
            }
        }
        registry
    }

    fn add_message(
        &mut self,
        desc: &DescriptorProto,
        prefix: &str,
        module: &str,
        package: &str,
        proto3: bool,
        file: &str,
    ) {
        let full = format!("{prefix}.{}", desc.name());
        let rust_path = format!("{module}{}", to_upper_camel(desc.name()));
        let rust_module = format!("{module}{}", to_snake(desc.name()));
        for e in &desc.enum_type {
            self.enums.insert(format!("{full}.{}", e.name()), e.clone());
        }
        for nested in &desc.nested_type {
            self.add_message(
                nested,
                &full,
                &format!("{rust_module}::"),
                package,
                proto3,
                file,
            );
        }
        self.file_of.insert(full.clone(), file.to_owned());
        self.messages.insert(
            full.clone(),
            MessageInfo {
                desc: desc.clone(),
                package: package.to_owned(),
                full_name: full.trim_start_matches('.').to_owned(),
                rust_path,
                rust_module,
                proto3,
            },
        );
    }

    fn is_map_entry(&self, type_name: &str) -> Option<&DescriptorProto> {
        self.messages
            .get(type_name)
            .map(|m| &m.desc)
            .filter(|d| d.options.as_ref().is_some_and(|o| o.map_entry()))
    }

    /// Whether the JSON of message `type_name` can hold a `google.protobuf.Any` (which needs a
    /// descriptor pool, so its methods keep the reflection path).
    pub(crate) fn holds_any(&self, type_name: &str) -> bool {
        fn walk<'a>(r: &'a Registry, name: &'a str, seen: &mut HashSet<&'a str>) -> bool {
            if name == ".google.protobuf.Any" {
                return true;
            }
            if !seen.insert(name) {
                return false;
            }
            let Some(message) = r.messages.get(name) else {
                return false;
            };
            message.desc.field.iter().any(|f| {
                matches!(f.r#type(), Type::Message | Type::Group) && walk(r, f.type_name(), seen)
            })
        }
        let name = if type_name.starts_with('.') {
            type_name.to_owned()
        } else {
            format!(".{type_name}")
        };
        walk(self, &name, &mut HashSet::new())
    }

    /// The JSON impls of every message of `package` that prost generates.
    pub(crate) fn generate_package(&self, package: &str, buf: &mut String) {
        let mut enums = BTreeSet::new();
        let mut code = String::new();
        for (full, message) in &self.messages {
            let generated = self
                .file_of
                .get(full)
                .is_some_and(|f| self.generated_files.contains(f));
            if message.package != package
                || !generated
                || message.desc.options.as_ref().is_some_and(|o| o.map_entry())
            {
                continue;
            }
            self.generate_message(message, package, &mut enums, &mut code);
        }
        if code.is_empty() {
            return;
        }
        buf.push_str("\n// ---- canonical proto3 JSON, generated by ferry-build ----\n");
        buf.push_str(&code);
        let module = enum_module(package);
        let _ = writeln!(
            buf,
            "#[doc(hidden)]\n#[allow(non_camel_case_types)]\nmod {module} {{"
        );
        for name in &enums {
            let Some(desc) = self.enums.get(name) else {
                continue;
            };
            let ident = enum_ident(name);
            let mut seen = HashSet::new();
            let _ = write!(
                buf,
                "    pub struct {ident};\n    impl ::ferry::codegen::json::EnumNames for {ident} {{\n        \
                 fn name(number: i32) -> ::core::option::Option<&'static str> {{\n            match number {{\n"
            );
            for v in &desc.value {
                if seen.insert(v.number()) {
                    let _ = writeln!(
                        buf,
                        "                {} => ::core::option::Option::Some({:?}),",
                        v.number(),
                        v.name()
                    );
                }
            }
            let _ = write!(
                buf,
                "                _ => ::core::option::Option::None,\n            }}\n        }}\n        \
                 fn number(name: &str) -> ::core::option::Option<i32> {{\n            match name {{\n"
            );
            for v in &desc.value {
                let _ = writeln!(
                    buf,
                    "                {:?} => ::core::option::Option::Some({}),",
                    v.name(),
                    v.number()
                );
            }
            buf.push_str(
                "                _ => ::core::option::Option::None,\n            }\n        }\n    }\n",
            );
        }
        buf.push_str("}\n");
    }

    /// The codec of a single (non-repeated) value of `field`.
    fn codec(
        &self,
        field: &FieldDescriptorProto,
        package: &str,
        enums: &mut BTreeSet<String>,
    ) -> String {
        let codec = match field.r#type() {
            Type::Double => "j::Double",
            Type::Float => "j::Float",
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => "j::Int64",
            Type::Uint64 | Type::Fixed64 => "j::UInt64",
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => "j::Int32",
            Type::Uint32 | Type::Fixed32 => "j::UInt32",
            Type::Bool => "j::Bool",
            Type::String => "j::Str",
            Type::Bytes => "j::Bytes",
            Type::Message | Type::Group => "j::Msg",
            Type::Enum if field.type_name() == ".google.protobuf.NullValue" => "j::NullEnum",
            Type::Enum => {
                enums.insert(field.type_name().to_owned());
                return format!(
                    "j::Enum<{}::{}>",
                    enum_module(package),
                    enum_ident(field.type_name())
                );
            }
        };
        codec.to_owned()
    }

    fn generate_message(
        &self,
        message: &MessageInfo,
        package: &str,
        enums: &mut BTreeSet<String>,
        out: &mut String,
    ) {
        let desc = &message.desc;
        let path = &message.rust_path;
        let mut fields: Vec<&FieldDescriptorProto> = desc.field.iter().collect();
        fields.sort_by_key(|f| f.number());
        let mut write = String::new();
        let mut read = String::new();
        for field in &fields {
            let rust = to_snake(field.name());
            let json_name = match field.json_name.as_deref() {
                Some(name) if !name.is_empty() => name.to_owned(),
                _ => field.name().to_lower_camel_case(),
            };
            let keys = if json_name == field.name() {
                format!("{json_name:?}")
            } else {
                format!("{json_name:?} | {:?}", field.name())
            };
            let repeated = field.label() == Label::Repeated;
            let real_oneof = field.oneof_index.is_some() && !field.proto3_optional();
            if repeated {
                let codec = match self.is_map_entry(field.type_name()) {
                    Some(entry) => {
                        let key = entry.field.iter().find(|f| f.number() == 1);
                        let value = entry.field.iter().find(|f| f.number() == 2);
                        let (Some(key), Some(value)) = (key, value) else {
                            continue;
                        };
                        let key_codec = match key.r#type() {
                            Type::String => "j::KeyStr",
                            Type::Bool => "j::KeyBool",
                            _ => "j::KeyInt",
                        };
                        format!(
                            "j::MapOf<{key_codec}, {}>",
                            self.codec(value, package, enums)
                        )
                    }
                    None => format!("j::Repeated<{}>", self.codec(field, package, enums)),
                };
                let _ = write!(
                    write,
                    "            if !self.{rust}.is_empty() {{\n                \
                     map.serialize_entry({json_name:?}, &j::Ser::<{codec}, _>::new(&self.{rust}))?;\n            }}\n"
                );
                let _ = writeln!(
                    read,
                    "            {keys} => map.next_value_seed(j::Place::<{codec}, _>::new(&mut self.{rust}))?,"
                );
                continue;
            }
            let codec = self.codec(field, package, enums);
            if real_oneof {
                let Some(oneof) = field
                    .oneof_index
                    .and_then(|i| desc.oneof_decl.get(usize::try_from(i).ok()?))
                else {
                    continue;
                };
                let oneof_rust = to_snake(oneof.name());
                let mut oneof_type = to_upper_camel(oneof.name());
                let conflict = desc
                    .nested_type
                    .iter()
                    .map(|t| t.name())
                    .chain(desc.enum_type.iter().map(|e| e.name()))
                    .any(|t| to_upper_camel(t) == oneof_type);
                if conflict {
                    oneof_type.push_str("OneOf");
                }
                let variant = format!(
                    "{}::{oneof_type}::{}",
                    message.rust_module,
                    to_upper_camel(field.name())
                );
                let _ = write!(
                    write,
                    "            if let ::core::option::Option::Some({variant}(value)) = &self.{oneof_rust} {{\n                \
                     map.serialize_entry({json_name:?}, &j::Ser::<{codec}, _>::new(value))?;\n            }}\n"
                );
                let _ = write!(
                    read,
                    "            {keys} => {{\n                \
                     let mut value: ::core::option::Option<_> = ::core::option::Option::None;\n                \
                     map.next_value_seed(j::Place::<j::Optional<{codec}>, _>::new(&mut value))?;\n                \
                     if let ::core::option::Option::Some(value) = value {{\n                    \
                     if self.{oneof_rust}.is_some() {{\n                        \
                     return ::core::result::Result::Err(j::oneof_taken({:?}));\n                    }}\n                    \
                     self.{oneof_rust} = ::core::option::Option::Some({variant}(value));\n                }}\n            }}\n",
                    oneof.name()
                );
                continue;
            }
            let is_message = matches!(field.r#type(), Type::Message | Type::Group);
            let optional = is_message
                || field.proto3_optional()
                || (!message.proto3 && field.label() == Label::Optional);
            if optional {
                let _ = write!(
                    write,
                    "            if let ::core::option::Option::Some(value) = &self.{rust} {{\n                \
                     map.serialize_entry({json_name:?}, &j::Ser::<{codec}, _>::new(value))?;\n            }}\n"
                );
                let _ = writeln!(
                    read,
                    "            {keys} => map.next_value_seed(j::Place::<j::Optional<{codec}>, _>::new(&mut self.{rust}))?,"
                );
                continue;
            }
            let condition = if field.label() == Label::Required {
                "true".to_owned()
            } else {
                match field.r#type() {
                    Type::String | Type::Bytes => format!("!self.{rust}.is_empty()"),
                    Type::Bool => format!("self.{rust}"),
                    Type::Double | Type::Float => format!("self.{rust} != 0.0"),
                    _ => format!("self.{rust} != 0"),
                }
            };
            let _ = write!(
                write,
                "            if {condition} {{\n                \
                 map.serialize_entry({json_name:?}, &j::Ser::<{codec}, _>::new(&self.{rust}))?;\n            }}\n"
            );
            let _ = writeln!(
                read,
                "            {keys} => map.next_value_seed(j::Place::<j::Singular<{codec}>, _>::new(&mut self.{rust}))?,"
            );
        }
        let full_name = &message.full_name;
        let map_param = if write.is_empty() { "_map" } else { "map" };
        let _ = write!(
            out,
            r#"
impl ::ferry::codegen::json::ProtoJson for {path} {{
    const TYPE_NAME: &'static str = {full_name:?};

    fn write_json<S: ::ferry::codegen::json::serde::Serializer>(
        &self,
        serializer: S,
    ) -> ::core::result::Result<S::Ok, S::Error> {{
        #[allow(unused_imports)]
        use ::ferry::codegen::json::{{self as j, serde::ser::SerializeMap as _}};
        j::write_message(serializer, |{map_param}| {{
{write}            ::core::result::Result::Ok(())
        }})
    }}

    fn read_json<'de, D: ::ferry::codegen::json::serde::Deserializer<'de>>(
        deserializer: D,
    ) -> ::core::result::Result<Self, D::Error> {{
        ::ferry::codegen::json::read_message(deserializer)
    }}
}}

impl ::ferry::codegen::json::ReadFields for {path} {{
    fn read_field<'de, A: ::ferry::codegen::json::serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> ::core::result::Result<bool, A::Error> {{
"#
        );
        if read.is_empty() {
            out.push_str(
                "        let _ = (key, map);\n        ::core::result::Result::Ok(false)\n    }\n}\n",
            );
        } else {
            let _ = write!(
                out,
                "        #[allow(unused_imports)]\n        use ::ferry::codegen::json as j;\n        \
                 match key {{\n{read}            _ => return ::core::result::Result::Ok(false),\n        }}\n        \
                 ::core::result::Result::Ok(true)\n    }}\n}}\n"
            );
        }
        let _ = write!(
            out,
            r#"
impl ::ferry::codegen::json::serde::Serialize for {path} {{
    fn serialize<S: ::ferry::codegen::json::serde::Serializer>(
        &self,
        serializer: S,
    ) -> ::core::result::Result<S::Ok, S::Error> {{
        ::ferry::codegen::json::ProtoJson::write_json(self, serializer)
    }}
}}

impl<'de> ::ferry::codegen::json::serde::Deserialize<'de> for {path} {{
    fn deserialize<D: ::ferry::codegen::json::serde::Deserializer<'de>>(
        deserializer: D,
    ) -> ::core::result::Result<Self, D::Error> {{
        ::ferry::codegen::json::ProtoJson::read_json(deserializer)
    }}
}}
"#
        );
    }
}

/// The module holding a package's enum name tables.
fn enum_module(package: &str) -> String {
    format!("__ferry_json_{}", package.replace('.', "_"))
}

/// The type naming one enum's table, from its full name.
fn enum_ident(full: &str) -> String {
    full.trim_start_matches('.').replace('.', "_")
}
