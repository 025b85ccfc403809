//! A proto-like rendering of services, methods, messages and enums.

use std::fmt::Write;

use prost_reflect::{
    EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor,
};

use crate::descriptors::Symbol;

/// Renders `symbol` as `.proto` source, with the comments the descriptors carry.
pub fn render(symbol: &Symbol) -> String {
    let mut out = String::new();
    match symbol {
        Symbol::Service(s) => service(&mut out, s),
        Symbol::Method(m) => {
            let _ = writeln!(out, "// in service {}", m.parent_service().full_name());
            method(&mut out, m, "");
        }
        Symbol::Message(m) => message(&mut out, m, ""),
        Symbol::Enum(e) => enumeration(&mut out, e, ""),
    }
    out
}

/// The comment attached to the element at `path` in `file`, if any.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim_end();
    (!text.trim().is_empty()).then(|| text.to_owned())
}

fn write_comment(out: &mut String, text: Option<String>, indent: &str) {
    if let Some(text) = text {
        for line in text.lines() {
            let _ = writeln!(out, "{indent}//{line}");
        }
    }
}

fn service(out: &mut String, s: &ServiceDescriptor) {
    write_comment(out, comment(&s.parent_file(), s.path()), "");
    let _ = writeln!(out, "service {} {{  // {}", s.name(), s.full_name());
    for m in s.methods() {
        method(out, &m, "  ");
    }
    out.push_str("}\n");
}

fn method(out: &mut String, m: &MethodDescriptor, indent: &str) {
    write_comment(out, comment(&m.parent_file(), m.path()), indent);
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let _ = writeln!(
        out,
        "{indent}rpc {}({}.{}) returns ({}.{});",
        m.name(),
        stream(m.is_client_streaming()),
        m.input().full_name(),
        stream(m.is_server_streaming()),
        m.output().full_name(),
    );
}

/// The type of a field as `.proto` source writes it.
pub fn field_type(f: &FieldDescriptor) -> String {
    if f.is_map()
        && let Kind::Message(entry) = f.kind()
    {
        let key = entry.map_entry_key_field();
        let value = entry.map_entry_value_field();
        return format!(
            "map<{}, {}>",
            kind_name(&key.kind()),
            kind_name(&value.kind())
        );
    }
    kind_name(&f.kind())
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
    }
}

fn field(out: &mut String, f: &FieldDescriptor, indent: &str) {
    write_comment(out, comment(&f.parent_file(), f.path()), indent);
    let label = if f.is_map() {
        ""
    } else if f.is_list() {
        "repeated "
    } else if f.field_descriptor_proto().proto3_optional() {
        "optional "
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{indent}{label}{} {} = {};",
        field_type(f),
        f.name(),
        f.number()
    );
}

fn message(out: &mut String, m: &MessageDescriptor, indent: &str) {
    write_comment(out, comment(&m.parent_file(), m.path()), indent);
    let _ = writeln!(out, "{indent}message {} {{  // {}", m.name(), m.full_name());
    let inner = format!("{indent}  ");
    // Fields in declaration order; a oneof is printed whole where its first field stands.
    let mut printed_oneofs = std::collections::HashSet::new();
    for f in m.fields() {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            None => field(out, &f, &inner),
            Some(oneof) => {
                if !printed_oneofs.insert(oneof.name().to_owned()) {
                    continue;
                }
                write_comment(out, comment(&oneof.parent_file(), oneof.path()), &inner);
                let _ = writeln!(out, "{inner}oneof {} {{", oneof.name());
                for member in oneof.fields() {
                    field(out, &member, &format!("{inner}  "));
                }
                let _ = writeln!(out, "{inner}}}");
            }
        }
    }
    for nested in m.child_messages().filter(|n| !n.is_map_entry()) {
        message(out, &nested, &inner);
    }
    for e in m.child_enums() {
        enumeration(out, &e, &inner);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn enumeration(out: &mut String, e: &EnumDescriptor, indent: &str) {
    write_comment(out, comment(&e.parent_file(), e.path()), indent);
    let _ = writeln!(out, "{indent}enum {} {{  // {}", e.name(), e.full_name());
    for v in e.values() {
        write_comment(
            out,
            comment(&v.parent_file(), v.path()),
            &format!("{indent}  "),
        );
        let _ = writeln!(out, "{indent}  {} = {};", v.name(), v.number());
    }
    let _ = writeln!(out, "{indent}}}");
}
