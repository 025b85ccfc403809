//! [`ProtoJson`] for the well-known types: the `prost_types` messages, and the Rust types prost
//! maps the wrappers (`google.protobuf.Int64Value` → `i64`, …) and `Empty` (`()`) to.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};

use super::codegen::{self as j, Codec, Key};
use super::typed::ProtoJson;

macro_rules! wrapper {
    ($t:ty, $codec:ty, $name:literal) => {
        impl ProtoJson for $t {
            const TYPE_NAME: &'static str = $name;
            fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$codec as Codec<$t>>::write(self, s)
            }
            fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$codec as Codec<$t>>::read(d)
            }
        }
    };
}

wrapper!(bool, j::Bool, "google.protobuf.BoolValue");
wrapper!(i32, j::Int32, "google.protobuf.Int32Value");
wrapper!(u32, j::UInt32, "google.protobuf.UInt32Value");
wrapper!(i64, j::Int64, "google.protobuf.Int64Value");
wrapper!(u64, j::UInt64, "google.protobuf.UInt64Value");
wrapper!(f32, j::Float, "google.protobuf.FloatValue");
wrapper!(f64, j::Double, "google.protobuf.DoubleValue");
wrapper!(String, j::Str, "google.protobuf.StringValue");
wrapper!(Vec<u8>, j::Bytes, "google.protobuf.BytesValue");
wrapper!(bytes::Bytes, j::Bytes, "google.protobuf.BytesValue");

/// `google.protobuf.Empty`: `{}`.
impl ProtoJson for () {
    const TYPE_NAME: &'static str = "google.protobuf.Empty";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EmptyVisitor;
        impl<'de> Visitor<'de> for EmptyVisitor {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an empty map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                if map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {
                    return Err(de::Error::custom("unexpected value in map"));
                }
                Ok(())
            }
        }
        d.deserialize_map(EmptyVisitor)
    }
}

const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

fn check_timestamp(t: &prost_types::Timestamp) -> Result<(), &'static str> {
    if t.seconds < MIN_TIMESTAMP_SECONDS || MAX_TIMESTAMP_SECONDS < t.seconds {
        Err("timestamp out of range")
    } else {
        Ok(())
    }
}

fn check_duration(d: &prost_types::Duration) -> Result<(), &'static str> {
    if d.seconds.unsigned_abs() > MAX_DURATION_SECONDS
        || d.nanos.unsigned_abs() > MAX_DURATION_NANOS
    {
        Err("duration out of range")
    } else {
        Ok(())
    }
}

/// A string read by `parse`.
fn read_str<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<T>(&'static str, fn(&str) -> Result<T, String>);
    impl<T> Visitor<'_> for StrVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.1)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(StrVisitor(what, parse))
}

impl ProtoJson for prost_types::Timestamp {
    const TYPE_NAME: &'static str = "google.protobuf.Timestamp";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        check_timestamp(self).map_err(S::Error::custom)?;
        s.collect_str(self)
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a rfc3339 timestamp string", |v| {
            validate_strict_rfc3339(v)?;
            let t: prost_types::Timestamp = v.parse().map_err(|e| format!("{e}"))?;
            check_timestamp(&t)?;
            Ok(t)
        })
    }
}

impl ProtoJson for prost_types::Duration {
    const TYPE_NAME: &'static str = "google.protobuf.Duration";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        check_duration(self).map_err(S::Error::custom)?;
        s.collect_str(self)
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a duration string", |v| {
            let duration: prost_types::Duration = v.parse().map_err(|e| format!("{e}"))?;
            check_duration(&duration)?;
            Ok(duration)
        })
    }
}

impl ProtoJson for prost_types::FieldMask {
    const TYPE_NAME: &'static str = "google.protobuf.FieldMask";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::new();
        for path in &self.paths {
            if !out.is_empty() {
                out.push(',');
            }
            for (i, part) in path.split('.').enumerate() {
                if i > 0 {
                    out.push('.');
                }
                snake_to_camel(&mut out, part).map_err(|()| {
                    S::Error::custom("cannot roundtrip field name through camelcase")
                })?;
            }
        }
        s.serialize_str(&out)
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a field mask string", |v| {
            let paths = v
                .split(',')
                .filter(|path| !path.is_empty())
                .map(|path| {
                    let mut out = String::new();
                    for (i, part) in path.split('.').enumerate() {
                        if i > 0 {
                            out.push('.');
                        }
                        camel_to_snake(&mut out, part)?;
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>, ()>>()
                .map_err(|()| "invalid field mask".to_owned())?;
            Ok(prost_types::FieldMask { paths })
        })
    }
}

fn snake_to_camel(dst: &mut String, src: &str) -> Result<(), ()> {
    let mut upper_next = false;
    for ch in src.chars() {
        if ch.is_ascii_uppercase() {
            return Err(());
        }
        if upper_next {
            let upper = ch.to_ascii_uppercase();
            if upper == ch {
                return Err(());
            }
            dst.push(upper);
            upper_next = false;
        } else if ch == '_' {
            upper_next = true;
        } else {
            dst.push(ch);
        }
    }
    Ok(())
}

fn camel_to_snake(dst: &mut String, part: &str) -> Result<(), ()> {
    for ch in part.chars() {
        if ch.is_ascii_uppercase() {
            dst.push('_');
            dst.push(ch.to_ascii_lowercase());
        } else if ch == '_' {
            return Err(());
        } else {
            dst.push(ch);
        }
    }
    Ok(())
}

impl ProtoJson for prost_types::Value {
    const TYPE_NAME: &'static str = "google.protobuf.Value";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use prost_types::value::Kind;
        match &self.kind {
            None | Some(Kind::NullValue(_)) => s.serialize_none(),
            Some(Kind::BoolValue(v)) => s.serialize_bool(*v),
            Some(Kind::NumberValue(v)) if v.is_finite() => s.serialize_f64(*v),
            Some(Kind::NumberValue(_)) => Err(S::Error::custom(
                "cannot serialize non-finite double in google.protobuf.Value",
            )),
            Some(Kind::StringValue(v)) => s.serialize_str(v),
            Some(Kind::ListValue(v)) => v.write_json(s),
            Some(Kind::StructValue(v)) => v.write_json(s),
        }
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn from_null() -> Option<Self> {
        Some(null_value())
    }
}

fn null_value() -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NullValue(0)),
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = prost_types::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::BoolValue(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::NumberValue(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::StringValue(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(kind(prost_types::value::Kind::StringValue(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(null_value())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(null_value())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ListVisitor
            .visit_seq(seq)
            .map(|l| kind(prost_types::value::Kind::ListValue(l)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        StructVisitor
            .visit_map(map)
            .map(|s| kind(prost_types::value::Kind::StructValue(s)))
    }
}

fn kind(kind: prost_types::value::Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(kind) }
}

/// A `Value` element or member (where `null` is a null value, not "unset").
struct Element(prost_types::Value);

impl<'de> serde::Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(Element)
    }
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = prost_types::ListValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Element(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(prost_types::ListValue { values })
    }
}

struct StructVisitor;

impl<'de> Visitor<'de> for StructVisitor {
    type Value = prost_types::Struct;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let Element(value) = map.next_value()?;
            fields.insert(key.as_str().to_owned(), value);
        }
        Ok(prost_types::Struct { fields })
    }
}

impl ProtoJson for prost_types::ListValue {
    const TYPE_NAME: &'static str = "google.protobuf.ListValue";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.values.len()))?;
        for value in &self.values {
            seq.serialize_element(&j::Ser::<j::Msg, _>::new(value))?;
        }
        seq.end()
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ListVisitor)
    }
}

impl ProtoJson for prost_types::Struct {
    const TYPE_NAME: &'static str = "google.protobuf.Struct";
    fn write_json<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (key, value) in &self.fields {
            map.serialize_entry(key, &j::Ser::<j::Msg, _>::new(value))?;
        }
        map.end()
    }
    fn read_json<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(StructVisitor)
    }
}

/// `google.protobuf.Any` needs a descriptor pool to find its payload's type, which generated
/// code does not carry: methods whose messages hold one keep the reflection path
/// (`ferry-build` generates no [`JsonCodec`](super::JsonCodec) for them).
impl ProtoJson for prost_types::Any {
    const TYPE_NAME: &'static str = "google.protobuf.Any";
    fn write_json<S: Serializer>(&self, _s: S) -> Result<S::Ok, S::Error> {
        j::unsupported::<S>(Self::TYPE_NAME)
    }
    fn read_json<'de, D: Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        Err(de::Error::custom(
            "google.protobuf.Any has no generated JSON mapping; use the reflection path",
        ))
    }
}

/// Validates an RFC 3339 timestamp, requiring upper-case `T` and `Z` as the conformance tests
/// do (the same rule as the reflection path).
fn validate_strict_rfc3339(v: &str) -> Result<(), String> {
    let b = v.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, n: usize| -> bool {
        let ok = b.len() >= *i + n && b[*i..*i + n].iter().all(u8::is_ascii_digit);
        if ok {
            *i += n;
        }
        ok
    };
    let byte = |i: &mut usize, c: u8| -> bool {
        let ok = b.get(*i) == Some(&c);
        if ok {
            *i += 1;
        }
        ok
    };
    let next = |i: usize| match b.get(i) {
        Some(&c) => format!("'{}'", c.escape_ascii()),
        None => "end of string".to_owned(),
    };
    if !(digits(&mut i, 4)
        && byte(&mut i, b'-')
        && digits(&mut i, 2)
        && byte(&mut i, b'-')
        && digits(&mut i, 2))
    {
        return Err("invalid rfc3339 timestamp: invalid date".to_owned());
    }
    if !byte(&mut i, b'T') {
        return Err(format!(
            "invalid rfc3339 timestamp: expected 'T' but found {}",
            next(i)
        ));
    }
    if !(digits(&mut i, 2)
        && byte(&mut i, b':')
        && digits(&mut i, 2)
        && byte(&mut i, b':')
        && digits(&mut i, 2))
    {
        return Err("invalid rfc3339 timestamp: invalid time".to_owned());
    }
    if byte(&mut i, b'.') {
        if !digits(&mut i, 1) {
            return Err("invalid rfc3339 timestamp: empty fractional seconds".to_owned());
        }
        while digits(&mut i, 1) {}
    }
    if byte(&mut i, b'+') || byte(&mut i, b'-') {
        if !(digits(&mut i, 2) && byte(&mut i, b':') && digits(&mut i, 2)) {
            return Err("invalid rfc3339 timestamp: invalid offset".to_owned());
        }
    } else if !byte(&mut i, b'Z') {
        return Err(format!(
            "invalid rfc3339 timestamp: expected 'Z', '+' or '-' but found {}",
            next(i)
        ));
    }
    if i != b.len() {
        return Err(format!(
            "invalid rfc3339 timestamp: expected end of string but found {}",
            next(i)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: ProtoJson + PartialEq + fmt::Debug>(value: T, json: &str) {
        let written = super::super::encode(&value).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), json);
        let read: T = super::super::decode(json.as_bytes()).unwrap();
        assert_eq!(read, value);
    }

    #[test]
    fn well_known_types_round_trip() {
        round(
            prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            },
            r#""2023-11-14T22:13:20.000005Z""#,
        );
        round(
            prost_types::Duration {
                seconds: -3,
                nanos: -500_000_000,
            },
            r#""-3.500s""#,
        );
        round(
            prost_types::FieldMask {
                paths: vec!["a_b.c".into(), "d".into()],
            },
            r#""aB.c,d""#,
        );
        round(7i64, r#""7""#);
        round(2.0f64, "2");
        round(vec![1u8, 2, 3], r#""AQID""#);
        round((), "{}");
        let mut fields = BTreeMap::new();
        fields.insert(
            "n".to_owned(),
            kind(prost_types::value::Kind::NumberValue(1.5)),
        );
        fields.insert("z".to_owned(), null_value());
        round(prost_types::Struct { fields }, r#"{"n":1.5,"z":null}"#);
    }

    #[test]
    fn bad_timestamps_are_refused() {
        for bad in [
            r#""2023-11-14t22:13:20Z""#,
            r#""2023-11-14T22:13:20""#,
            r#""2023-11-14T22:13:20.Z""#,
            r#""10000-01-01T00:00:00Z""#,
        ] {
            assert!(
                super::super::decode::<prost_types::Timestamp>(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        let parsed: prost_types::Timestamp =
            super::super::decode(br#""2023-11-14T23:13:20+01:00""#).unwrap();
        assert_eq!(parsed.seconds, 1_700_000_000);
    }
}
