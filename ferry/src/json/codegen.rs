//! The pieces `ferry-build`'s generated JSON code is made of (re-exported as
//! `ferry::codegen::json`; not a stable API).
//!
//! A *codec* (`Str`, `Int64`, `Enum<E>`, `Msg`, …) says how one protobuf value is written and
//! read; [`Ser`] writes a value with a codec; [`Place`] reads a field into its slot in the struct
//! with a *shape* (`Singular`, `Optional`, `Repeated`, `MapOf`), so generated code never has to
//! name a field's Rust type. The scalar rules are the reflection path's (prost-reflect's
//! serializer and deserializer), so both produce and accept the same JSON.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::str::FromStr;

use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, Serializer};

pub use super::typed::ProtoJson;
pub use serde;

/// Writes and reads values of `T` in the JSON mapping.
pub trait Codec<T> {
    /// Writes `value`.
    fn write<S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error>;
    /// Reads a value; JSON `null` is an error unless the type gives it a meaning.
    fn read<'de, D: Deserializer<'de>>(deserializer: D) -> Result<T, D::Error>;
    /// What `null` means for a field of this type: `None` = unset.
    fn from_null() -> Option<T> {
        None
    }
}

/// `value` written with codec `C`.
pub struct Ser<'a, C, T: ?Sized>(&'a T, PhantomData<C>);

impl<'a, C, T: ?Sized> Ser<'a, C, T> {
    /// Wraps `value`.
    pub fn new(value: &'a T) -> Self {
        Ser(value, PhantomData)
    }
}

impl<C: Codec<T>, T> serde::Serialize for Ser<'_, C, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        C::write(self.0, serializer)
    }
}

/// A value read with codec `C`.
struct De<C, T>(T, PhantomData<C>);

impl<'de, C: Codec<T>, T> serde::Deserialize<'de> for De<C, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        C::read(deserializer).map(|v| De(v, PhantomData))
    }
}

// ---- scalar codecs ------------------------------------------------------------------------

/// `bool`.
pub struct Bool;
/// `int32`, `sint32`, `sfixed32`.
pub struct Int32;
/// `uint32`, `fixed32`.
pub struct UInt32;
/// `int64`, `sint64`, `sfixed64`: written as a decimal string.
pub struct Int64;
/// `uint64`, `fixed64`: written as a decimal string.
pub struct UInt64;
/// `float`.
pub struct Float;
/// `double`.
pub struct Double;
/// `string`.
pub struct Str;
/// `bytes`: standard base64 with padding; reads standard or URL-safe, padded or not.
pub struct Bytes;
/// Any message, well-known type or wrapper (through [`ProtoJson`]).
pub struct Msg;
/// An enum, by the value names `E` lists.
pub struct Enum<E>(PhantomData<E>);
/// `google.protobuf.NullValue`: always `null`.
pub struct NullEnum;

/// The value names of one protobuf enum; `ferry-build` generates one per enum a package uses.
pub trait EnumNames {
    /// The name of value `number`, if it has one.
    fn name(number: i32) -> Option<&'static str>;
    /// The number of the value called `name`.
    fn number(name: &str) -> Option<i32>;
}

macro_rules! number_visitor {
    ($name:ident, $t:ty, $what:literal, { $($body:tt)* }) => {
        struct $name;
        impl Visitor<'_> for $name {
            type Value = $t;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str($what)
            }
            $($body)*
        }
    };
}

fn integral<E: de::Error>(v: f64, min: f64, max: f64) -> Result<f64, E> {
    if v.fract() != 0.0 {
        return Err(E::custom("expected integer value"));
    }
    if v < min || v > max {
        return Err(E::custom("float value out of range"));
    }
    Ok(v)
}

number_visitor!(Int32Visitor, i32, "a 32-bit signed integer", {
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
        v.parse().map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
        v.try_into().map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
        v.try_into().map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i32, E> {
        integral(v, i32::MIN as f64, i32::MAX as f64).map(|v| v as i32)
    }
});

number_visitor!(
    UInt32Visitor,
    u32,
    "a 32-bit unsigned integer or decimal string",
    {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
            v.try_into().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
            v.try_into().map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u32, E> {
            integral(v, u32::MIN as f64, u32::MAX as f64).map(|v| v as u32)
        }
    }
);

number_visitor!(
    Int64Visitor,
    i64,
    "a 64-bit signed integer or decimal string",
    {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            v.try_into().map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            integral(v, i64::MIN as f64, i64::MAX as f64).map(|v| v as i64)
        }
    }
);

number_visitor!(
    UInt64Visitor,
    u64,
    "a 64-bit unsigned integer or decimal string",
    {
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse().map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            v.try_into().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            integral(v, u64::MIN as f64, u64::MAX as f64).map(|v| v as u64)
        }
    }
);

number_visitor!(DoubleVisitor, f64, "a 64-bit floating point value", {
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match f64::from_str(v) {
            Ok(value) => Ok(value),
            Err(_) if v == "Infinity" => Ok(f64::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f64::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f64::NAN),
            Err(err) => Err(E::custom(err)),
        }
    }
});

number_visitor!(FloatVisitor, f32, "a 32-bit floating point value", {
    fn visit_f32<E: de::Error>(self, v: f32) -> Result<f32, E> {
        Ok(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
        if v < (f32::MIN as f64) || v > (f32::MAX as f64) {
            Err(E::custom("float value out of range"))
        } else {
            Ok(v as f32)
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
        Ok(v as f32)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
        match f32::from_str(v) {
            Ok(value) => Ok(value),
            Err(_) if v == "Infinity" => Ok(f32::INFINITY),
            Err(_) if v == "-Infinity" => Ok(f32::NEG_INFINITY),
            Err(_) if v == "NaN" => Ok(f32::NAN),
            Err(err) => Err(E::custom(err)),
        }
    }
});

struct BoolVisitor;

impl Visitor<'_> for BoolVisitor {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }
}

struct StringVisitor;

impl Visitor<'_> for StringVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a base64-encoded string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        decode_base64(v).map_err(E::custom)
    }
}

/// Base64 as the JSON mapping reads it: standard or URL-safe alphabet, padded or not.
pub(crate) fn decode_base64(v: &str) -> Result<Vec<u8>, String> {
    use base64::alphabet;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let mut buf = Vec::new();
    match STANDARD.decode_vec(v, &mut buf) {
        Ok(()) => Ok(buf),
        Err(base64::DecodeError::InvalidByte(_, b'-' | b'_')) => {
            buf.clear();
            URL_SAFE
                .decode_vec(v, &mut buf)
                .map(|()| buf)
                .map_err(|e| format!("invalid base64: {e}"))
        }
        Err(e) => Err(format!("invalid base64: {e}")),
    }
}

/// Standard base64 with padding, as the JSON mapping writes `bytes`.
pub(crate) struct Base64<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Base64<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        base64::display::Base64Display::new(self.0, &base64::prelude::BASE64_STANDARD).fmt(f)
    }
}

impl Codec<bool> for Bool {
    fn write<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

impl Codec<i32> for Int32 {
    fn write<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        d.deserialize_any(Int32Visitor)
    }
}

impl Codec<u32> for UInt32 {
    fn write<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        d.deserialize_any(UInt32Visitor)
    }
}

impl Codec<i64> for Int64 {
    fn write<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(Int64Visitor)
    }
}

impl Codec<u64> for UInt64 {
    fn write<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(UInt64Visitor)
    }
}

impl Codec<f32> for Float {
    fn write<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f32(*v)
        } else if *v == f32::INFINITY {
            s.serialize_str("Infinity")
        } else if *v == f32::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_str("NaN")
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        d.deserialize_any(FloatVisitor)
    }
}

impl Codec<f64> for Double {
    fn write<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if *v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if *v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_str("NaN")
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(DoubleVisitor)
    }
}

impl Codec<String> for Str {
    fn write<S: Serializer>(v: &String, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_string(StringVisitor)
    }
}

impl Codec<Vec<u8>> for Bytes {
    fn write<S: Serializer>(v: &Vec<u8>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64(v))
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(BytesVisitor)
    }
}

impl Codec<bytes::Bytes> for Bytes {
    fn write<S: Serializer>(v: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Base64(v))
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        d.deserialize_str(BytesVisitor).map(bytes::Bytes::from)
    }
}

impl<T: ProtoJson> Codec<T> for Msg {
    fn write<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.write_json(s)
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::read_json(d)
    }
    fn from_null() -> Option<T> {
        T::from_null()
    }
}

struct EnumVisitor<E>(PhantomData<E>);

impl<E: EnumNames> Visitor<'_> for EnumVisitor<E> {
    type Value = i32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or integer")
    }
    fn visit_str<Er: de::Error>(self, v: &str) -> Result<i32, Er> {
        E::number(v).ok_or_else(|| Er::custom(format!("unrecognized enum value '{v}'")))
    }
    fn visit_i64<Er: de::Error>(self, v: i64) -> Result<i32, Er> {
        v.try_into().map_err(Er::custom)
    }
    fn visit_u64<Er: de::Error>(self, v: u64) -> Result<i32, Er> {
        v.try_into().map_err(Er::custom)
    }
}

impl<E: EnumNames> Codec<i32> for Enum<E> {
    fn write<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match E::name(*v) {
            Some(name) => s.serialize_str(name),
            None => s.serialize_i32(*v),
        }
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        d.deserialize_any(EnumVisitor::<E>(PhantomData))
    }
}

struct NullVisitor;

impl Visitor<'_> for NullVisitor {
    type Value = i32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
        if v == "NULL_VALUE" {
            Ok(0)
        } else {
            Err(E::custom("expected null"))
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
        Ok(0)
    }
}

impl Codec<i32> for NullEnum {
    fn write<S: Serializer>(_: &i32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
        d.deserialize_any(NullVisitor)
    }
    fn from_null() -> Option<i32> {
        Some(0)
    }
}

// ---- repeated and map fields --------------------------------------------------------------

/// A `repeated` field of values written with `C`.
pub struct Repeated<C>(PhantomData<C>);

/// A `map<K, V>` field: keys with `K` (a [`MapKey`] codec), values with `V`.
pub struct MapOf<K, V>(PhantomData<(K, V)>);

impl<C: Codec<T>, T> Codec<Vec<T>> for Repeated<C> {
    fn write<S: Serializer>(v: &Vec<T>, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for item in v {
            seq.serialize_element(&Ser::<C, T>::new(item))?;
        }
        seq.end()
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_any(ListVisitor::<C, T>(PhantomData))
    }
}

struct ListVisitor<C, T>(PhantomData<(C, T)>);

impl<'de, C: Codec<T>, T> Visitor<'de> for ListVisitor<C, T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(De(item, _)) = seq.next_element::<De<C, T>>()? {
            out.push(item);
        }
        Ok(out)
    }
}

/// How map keys of type `K` are written (always as JSON strings) and read.
pub trait MapKey<K> {
    /// Writes `key` as a string.
    fn write<S: Serializer>(key: &K, serializer: S) -> Result<S::Ok, S::Error>;
    /// Reads a key from its string.
    fn parse(text: &str) -> Result<K, String>;
}

/// `string` keys.
pub struct KeyStr;
/// `bool` keys: `"true"`, `"false"`.
pub struct KeyBool;
/// Integer keys, as decimal strings.
pub struct KeyInt;

impl MapKey<String> for KeyStr {
    fn write<S: Serializer>(key: &String, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(key)
    }
    fn parse(text: &str) -> Result<String, String> {
        Ok(text.to_owned())
    }
}

impl MapKey<bool> for KeyBool {
    fn write<S: Serializer>(key: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(key)
    }
    fn parse(text: &str) -> Result<bool, String> {
        bool::from_str(text).map_err(|e| e.to_string())
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl MapKey<$t> for KeyInt {
            fn write<S: Serializer>(key: &$t, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(key)
            }
            fn parse(text: &str) -> Result<$t, String> {
                <$t>::from_str(text).map_err(|e| e.to_string())
            }
        }
    )*};
}
int_keys!(i32, i64, u32, u64);

struct KeySer<'a, KC, K>(&'a K, PhantomData<KC>);

impl<KC: MapKey<K>, K> serde::Serialize for KeySer<'_, KC, K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        KC::write(self.0, serializer)
    }
}

impl<KC, VC, K, V> Codec<HashMap<K, V>> for MapOf<KC, VC>
where
    KC: MapKey<K>,
    VC: Codec<V>,
    K: Ord + Hash + Eq,
{
    /// Entries are written sorted by key, so equal maps always render alike.
    fn write<S: Serializer>(v: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&K, &V)> = v.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (key, value) in entries {
            map.serialize_entry(
                &KeySer::<KC, K>(key, PhantomData),
                &Ser::<VC, V>::new(value),
            )?;
        }
        map.end()
    }
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<K, V>, D::Error> {
        d.deserialize_any(MapVisitor::<KC, VC, K, V>(PhantomData))
    }
}

struct MapVisitor<KC, VC, K, V>(PhantomData<(KC, VC, K, V)>);

impl<'de, KC, VC, K, V> Visitor<'de> for MapVisitor<KC, VC, K, V>
where
    KC: MapKey<K>,
    VC: Codec<V>,
    K: Hash + Eq,
{
    type Value = HashMap<K, V>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HashMap<K, V>, A::Error> {
        let mut out = HashMap::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = KC::parse(key.as_str()).map_err(de::Error::custom)?;
            let De(value, _) = map.next_value::<De<VC, V>>()?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

// ---- reading fields into their slots ------------------------------------------------------

/// A plain proto3 field: `null` leaves it at its default.
pub struct Singular<C>(PhantomData<C>);
/// A field with presence (`optional`, a message, a wrapper, a oneof arm): `null` unsets it.
pub struct Optional<C>(PhantomData<C>);

/// Reads a field's JSON value into `slot`, as shape `K` says.
pub struct Place<'a, K, T>(&'a mut T, PhantomData<K>);

impl<'a, K, T> Place<'a, K, T> {
    /// The seed that fills `slot`.
    pub fn new(slot: &'a mut T) -> Self {
        Place(slot, PhantomData)
    }
}

/// `Option<T>` read from a JSON value that may be `null`.
struct Nullable<C, T>(PhantomData<(C, T)>);

impl<'de, C: Codec<T>, T> Visitor<'de> for Nullable<C, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(C::from_null())
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(C::from_null())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        C::read(d).map(Some)
    }
}

fn nullable<'de, C: Codec<T>, T, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(Nullable::<C, T>(PhantomData))
}

impl<'de, C: Codec<T>, T> DeserializeSeed<'de> for Place<'_, Singular<C>, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(value) = nullable::<C, T, D>(d)? {
            *self.0 = value;
        }
        Ok(())
    }
}

impl<'de, C: Codec<T>, T> DeserializeSeed<'de> for Place<'_, Optional<C>, Option<T>> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(value) = nullable::<C, T, D>(d)? {
            *self.0 = Some(value);
        }
        Ok(())
    }
}

impl<'de, C: Codec<T>, T> DeserializeSeed<'de> for Place<'_, Repeated<C>, Vec<T>> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(values) = nullable::<Repeated<C>, Vec<T>, D>(d)? {
            *self.0 = values;
        }
        Ok(())
    }
}

impl<'de, KC, VC, K, V> DeserializeSeed<'de> for Place<'_, MapOf<KC, VC>, HashMap<K, V>>
where
    KC: MapKey<K>,
    VC: Codec<V>,
    K: Ord + Hash + Eq,
{
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(values) = nullable::<MapOf<KC, VC>, HashMap<K, V>, D>(d)? {
            *self.0 = values;
        }
        Ok(())
    }
}

// ---- messages -----------------------------------------------------------------------------

/// A JSON object key, borrowed from the input when it can be.
pub struct Key<'de>(Cow<'de, str>);

impl Key<'_> {
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A generated message's fields, read one JSON member at a time.
pub trait ReadFields: Default {
    /// Reads the value of member `key` into its field; `Ok(false)` when no field has that JSON
    /// or proto name (the value is then left unread).
    fn read_field<'de, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error>;
}

thread_local! {
    /// Whether JSON members no field has are refused (the default) or skipped; set around one
    /// decode by [`with_unknown_fields`].
    static REJECT_UNKNOWN: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `decode` with unknown JSON members refused (`reject`) or skipped, for every message it
/// reads, nested ones included.
pub fn with_unknown_fields<T>(reject: bool, decode: impl FnOnce() -> T) -> T {
    let before = REJECT_UNKNOWN.with(|flag| flag.replace(reject));
    let result = decode();
    REJECT_UNKNOWN.with(|flag| flag.set(before));
    result
}

/// Reads a generated message from a JSON object, refusing unknown members (or skipping them
/// inside [`with_unknown_fields`]`(false, …)`).
pub fn read_message<'de, T: ReadFields, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct MessageVisitor<T>(PhantomData<T>);
    impl<'de, T: ReadFields> Visitor<'de> for MessageVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            let mut message = T::default();
            while let Some(key) = map.next_key::<Key<'de>>()? {
                if !message.read_field(key.as_str(), &mut map)? {
                    if REJECT_UNKNOWN.with(std::cell::Cell::get) {
                        return Err(de::Error::custom(format!(
                            "unrecognized field name '{}'",
                            key.as_str()
                        )));
                    }
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
            Ok(message)
        }
    }
    d.deserialize_map(MessageVisitor::<T>(PhantomData))
}

/// The error for a second member of one oneof.
pub fn oneof_taken<E: de::Error>(oneof: &str) -> E {
    E::custom(format!("multiple fields provided for oneof '{oneof}'"))
}

/// Writes a message as a JSON object; `fields` writes its members.
pub fn write_message<S, F>(serializer: S, fields: F) -> Result<S::Ok, S::Error>
where
    S: Serializer,
    F: FnOnce(&mut S::SerializeMap) -> Result<(), S::Error>,
{
    let mut map = serializer.serialize_map(None)?;
    fields(&mut map)?;
    map.end()
}

/// A value that cannot be written (e.g. `google.protobuf.Any` without a descriptor pool).
pub fn unsupported<S: Serializer>(what: &str) -> Result<S::Ok, S::Error> {
    Err(ser::Error::custom(format!(
        "{what} has no generated JSON mapping; use the reflection path (ferry::json::to_vec)"
    )))
}
