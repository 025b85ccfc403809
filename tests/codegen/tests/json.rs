//! The generated JSON codecs against the reflection path (`ferry::json::to_vec` over a
//! prost-reflect `DynamicMessage`, with Ferry's whole-number rule): for every field shape of the
//! fixture the output is byte for byte the same, each side parses the other's output back to
//! the same message, both accept the same alternative spellings and refuse the same mistakes.

use std::collections::{BTreeMap, HashMap};

use codegen_fixture::pb::{self, AuditEntry, Color, Item, Shapes, item, shapes};
use ferry::ServiceHandler;
use ferry::json::ProtoJson;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use prost_types::value::Kind;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors")
}

/// The reflection path's JSON for `message`.
fn reflected<T: ProtoJson + Message>(message: &T) -> Vec<u8> {
    let desc = pool().get_message_by_name(T::TYPE_NAME).expect("type");
    let dynamic = DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).expect("decode");
    ferry::json::to_vec(&dynamic, &SerializeOptions::new()).expect("reflection JSON")
}

/// The reflection path's parse of `json`, as the typed message.
fn reflection_parse<T: ProtoJson + Message + Default>(json: &[u8]) -> Result<T, String> {
    let desc = pool().get_message_by_name(T::TYPE_NAME).expect("type");
    let mut de = serde_json::Deserializer::from_slice(json);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic = DynamicMessage::deserialize_with_options(desc, &mut de, &options)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| e.to_string())?;
    T::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| e.to_string())
}

/// Same bytes out, and each side reads the other's output back to `message` (compared by
/// its JSON, so NaN compares equal).
fn agree<T: ProtoJson + Message + Default + PartialEq + std::fmt::Debug>(message: &T) {
    let typed = ferry::json::encode(message).expect("typed JSON");
    let reflection = reflected(message);
    assert_eq!(
        String::from_utf8_lossy(&typed),
        String::from_utf8_lossy(&reflection),
        "typed and reflection JSON differ"
    );
    let typed_back: T = ferry::json::decode(&reflection).expect("typed parse of reflection JSON");
    assert_eq!(ferry::json::encode(&typed_back).unwrap(), typed);
    let reflection_back: T = reflection_parse(&typed).expect("reflection parse of typed JSON");
    assert_eq!(ferry::json::encode(&reflection_back).unwrap(), typed);
    if typed.windows(3).all(|w| w != b"NaN") {
        assert_eq!(&typed_back, message);
        assert_eq!(&reflection_back, message);
    }
}

fn unit(symbol: &str, meters: f64) -> item::dimensions::Unit {
    item::dimensions::Unit {
        symbol: symbol.into(),
        meters,
    }
}

fn dimensions(width: f64, height: f64) -> item::Dimensions {
    item::Dimensions {
        width,
        height,
        unit: Some(unit("cm", 0.01)),
        longest: item::dimensions::Axis::Height as i32,
    }
}

/// An item with every field set; maps have one entry so hash order cannot matter.
fn item(label: item::Label) -> Item {
    Item {
        id: "item-42 \"quoted\" ünïcødé \u{1}".into(),
        color: Color::Green as i32,
        dimensions: Some(dimensions(2.5, 7.0)),
        label: Some(label),
        parts: HashMap::from([("lid".to_owned(), dimensions(1.0, 0.5))]),
        names: HashMap::from([(-7, "minus seven".to_owned())]),
        counts: vec![0, -1, i64::MAX, i64::MIN],
        tags: vec!["fragile".into(), String::new()],
        units: vec![unit("m", 1.0), unit("in", 0.0254)],
        palette: vec![Color::Red as i32, 42, Color::Unspecified as i32],
        payload: vec![0, 1, 2, 0xfb, 0xfe, 0xff],
        quantity: Some(0),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        axis: item::dimensions::Axis::Width as i32,
        fragile: true,
        delta: -17,
        serial: u64::MAX,
        weight: 0.1,
    }
}

fn value(kind: Kind) -> prost_types::Value {
    prost_types::Value { kind: Some(kind) }
}

/// Shapes with every field set; maps have one entry.
fn shapes(choice: shapes::Choice) -> Shapes {
    let structure = prost_types::Struct {
        fields: BTreeMap::from([
            ("b".to_owned(), value(Kind::BoolValue(true))),
            (
                "l".to_owned(),
                value(Kind::ListValue(prost_types::ListValue {
                    values: vec![value(Kind::NumberValue(1.0)), value(Kind::NullValue(0))],
                })),
            ),
            ("n".to_owned(), value(Kind::NumberValue(-2.5))),
            ("s".to_owned(), value(Kind::StringValue("x".into()))),
        ]),
    };
    Shapes {
        choice: Some(choice),
        elapsed: Some(prost_types::Duration {
            seconds: -1,
            nanos: -250_000_000,
        }),
        attributes: Some(structure.clone()),
        anything: Some(value(Kind::StructValue(structure))),
        list: Some(prost_types::ListValue {
            values: vec![
                value(Kind::StringValue("a".into())),
                value(Kind::NumberValue(3.0)),
            ],
        }),
        mask: Some(prost_types::FieldMask {
            paths: vec!["created_at".into(), "dimensions.unit.symbol".into()],
        }),
        big: Some(i64::MIN),
        ratio: Some(0.0),
        note: Some(String::new()),
        raw: Some(vec![0xff; 5]),
        flag: Some(false),
        small: Some(7),
        fraction: Some(1.5),
        huge: Some(u64::MAX),
        medium: Some(-3),
        nothing: Some(()),
        null_value: 0,
        moments: vec![
            prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            },
            prost_types::Timestamp {
                seconds: -62_135_596_800,
                nanos: 10_000_000,
            },
        ],
        colors_by_id: HashMap::from([(-9_007_199_254_740_993, Color::Blue as i32)]),
        blobs_by_flag: HashMap::from([(true, b"on".to_vec())]),
        values_by_slot: HashMap::from([(4_000_000_000, value(Kind::NullValue(0)))]),
        wrapped: HashMap::from([("w".to_owned(), 5)]),
        r#match: "keyword".into(),
        self_: -1,
        r#async: true,
        maybe: Some(String::new()),
        maybe_color: Some(Color::Unspecified as i32),
        signed: -5_000_000_000,
        fixed_signed: i64::MIN + 1,
        fixed_small: u32::MAX,
        precise: 1e300,
        unsigned_big: 1 << 60,
        samples: vec![0.0, -0.0, 1.0, 0.5, 1e-9, f64::MAX, 123_456_789.0],
        chunks: vec![vec![], vec![1], vec![1, 2], vec![1, 2, 3]],
        values: vec![
            value(Kind::BoolValue(false)),
            value(Kind::StringValue("v".into())),
        ],
        child: Some(Box::new(Shapes {
            choice: Some(shapes::Choice::Type("child".into())),
            child: Some(Box::default()),
            ..Shapes::default()
        })),
        custom: "renamed".into(),
        field_name_1: 1,
        floats: vec![0.1, 2.0, -1.5e-7, 3.4e38],
        wrapped_list: vec![0, 1, -1],
        unsigned_small: 1,
        single: 0.3,
    }
}

#[test]
fn every_field_shape_matches_the_reflection_path() {
    for label in [
        item::Label::Text("label".into()),
        item::Label::Text(String::new()),
        item::Label::Unit(unit("ft", 0.3048)),
        item::Label::Unit(unit("", 0.0)),
        item::Label::Tint(Color::Blue as i32),
        item::Label::Tint(0),
    ] {
        agree(&item(label));
    }
    for choice in [
        shapes::Choice::Blob(vec![1, 2, 3, 4]),
        shapes::Choice::Blob(Vec::new()),
        shapes::Choice::Hue(Color::Red as i32),
        shapes::Choice::Hue(99),
        shapes::Choice::Size(dimensions(0.0, 0.0)),
        shapes::Choice::Type("oneof keyword".into()),
    ] {
        agree(&shapes(choice));
    }
    agree(&AuditEntry {
        at: Some(prost_types::Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_999,
        }),
        before: Some(item(item::Label::Text("before".into()))),
        history: vec![Item::default(), item(item::Label::Tint(1))],
        by_id: HashMap::from([("a".to_owned(), Item::default())]),
    });
    // Defaults everywhere: `{}`.
    agree(&Shapes::default());
    agree(&Item::default());
    assert_eq!(ferry::json::encode(&Shapes::default()).unwrap(), b"{}");
}

#[test]
fn special_numbers_match() {
    let mut s = Shapes {
        precise: f64::NAN,
        samples: vec![f64::INFINITY, f64::NEG_INFINITY, f64::NAN],
        floats: vec![f32::NAN, f32::INFINITY, f32::MIN_POSITIVE],
        single: f32::NEG_INFINITY,
        ..Shapes::default()
    };
    agree(&s);
    s.precise = -0.0;
    s.single = 16_777_217.0;
    agree(&s);
}

/// The one known difference: prost-reflect writes a non-finite `DoubleValue` / `FloatValue`
/// wrapper as `null` (which reads back as "unset"); the generated codec writes `"NaN"` /
/// `"Infinity"` as the JSON mapping says, and both sides read those back.
#[test]
fn non_finite_wrappers_are_written_as_the_mapping_says() {
    let s = Shapes {
        ratio: Some(f64::NAN),
        fraction: Some(f32::INFINITY),
        ..Shapes::default()
    };
    let typed = ferry::json::encode(&s).unwrap();
    assert_eq!(typed, br#"{"ratio":"NaN","fraction":"Infinity"}"#);
    assert_eq!(reflected(&s), br#"{"ratio":null,"fraction":null}"#);
    let back: Shapes = reflection_parse(&typed).unwrap();
    assert!(back.ratio.is_some_and(f64::is_nan));
    assert_eq!(back.fraction, Some(f32::INFINITY));
    let back: Shapes = ferry::json::decode(&typed).unwrap();
    assert!(back.ratio.is_some_and(f64::is_nan));
}

#[test]
fn maps_with_many_entries_agree_and_come_sorted() {
    let mut s = shapes(shapes::Choice::Hue(1));
    s.colors_by_id = (-5i64..5)
        .map(|k| (k * 1000, k.rem_euclid(4) as i32))
        .collect();
    s.blobs_by_flag = HashMap::from([(true, vec![1]), (false, vec![0])]);
    s.wrapped = ["b", "a", "c", "ab"]
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), i as i64))
        .collect();
    let typed = ferry::json::encode(&s).unwrap();
    let as_tree = |json: &[u8]| serde_json::from_slice::<serde_json::Value>(json).unwrap();
    assert_eq!(as_tree(&typed), as_tree(&reflected(&s)));
    let text = String::from_utf8(typed.clone()).unwrap();
    assert!(
        text.contains(r#""blobsByFlag":{"false":"AA==","true":"AQ=="}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""wrapped":{"a":"1","ab":"3","b":"0","c":"2"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""colorsById":{"-5000":"COLOR_BLUE","-4000":"COLOR_UNSPECIFIED""#),
        "{text}"
    );
    // Deterministic: the same message always renders the same bytes.
    assert_eq!(ferry::json::encode(&s.clone()).unwrap(), typed);
    assert_eq!(ferry::json::decode::<Shapes>(&typed).unwrap(), s);
    assert_eq!(reflection_parse::<Shapes>(&typed).unwrap(), s);
}

/// Both sides read these the same way.
#[test]
fn alternative_spellings_are_read_alike() {
    let inputs = [
        // Proto field names instead of JSON names, and keyword names.
        r#"{"field_name_1": 5, "null_value": null, "colors_by_id": {"1": 2}, "self": 3, "match": "m", "async": true}"#,
        r#"{"customName": "a", "custom": "b"}"#,
        // 64-bit integers as numbers, 32-bit as strings, floats as integers and strings.
        r#"{"signed": -12, "fixedSmall": "4294967295", "precise": "1.5", "single": 2, "unsignedBig": 1e3}"#,
        r#"{"samples": ["NaN", "-Infinity", 1, "2.5"], "floats": ["Infinity", 1e2]}"#,
        // Enums by number (known and unknown) and by name.
        r#"{"hue": 2, "maybeColor": "COLOR_BLUE"}"#,
        r#"{"hue": 1234}"#,
        // Bytes: URL-safe and unpadded base64.
        r#"{"blob": "-_8", "raw": "AQI", "chunks": ["AQ==", "AQI"]}"#,
        // null means unset; for Value it is a null value.
        r#"{"elapsed": null, "anything": null, "big": null, "maybe": null, "type": null}"#,
        r#"{"values": [null, 1, "x", [], {}], "list": [null], "valuesBySlot": {"7": null}}"#,
        // Timestamps with offsets and fractions, durations, masks.
        r#"{"moments": ["2020-01-01T00:00:00+01:00", "1970-01-01T00:00:00.1Z"], "elapsed": "-0.000000001s", "mask": "a.bC,d"}"#,
        r#"{"wrapped": {"k": "9"}, "wrappedList": [1, "2"], "nothing": {}, "child": {"child": {}}}"#,
        // Unicode escapes in keys and values.
        "{\"n\\u006fte\": \"\\u00e9\\ud83d\\ude00\"}",
    ];
    for input in inputs {
        let typed: Shapes = ferry::json::decode(input.as_bytes())
            .unwrap_or_else(|e| panic!("typed refused {input}: {e}"));
        let reflection: Shapes = reflection_parse(input.as_bytes())
            .unwrap_or_else(|e| panic!("reflection refused {input}: {e}"));
        assert_eq!(
            ferry::json::encode(&typed).unwrap(),
            ferry::json::encode(&reflection).unwrap(),
            "{input}"
        );
    }
}

/// Both sides refuse these.
#[test]
fn mistakes_are_refused_alike() {
    let inputs = [
        r#"{"unknownField": 1}"#,
        r#"{"blob": "AQ==", "hue": 1}"#,
        r#"{"type": "a", "type": "b"}"#,
        r#"{"hue": "COLOR_PURPLE"}"#,
        r#"{"self": 1.5}"#,
        r#"{"self": 3000000000}"#,
        r#"{"unsignedSmall": -1}"#,
        r#"{"single": 1e39}"#,
        r#"{"signed": "1.0"}"#,
        r#"{"custom": 1}"#,
        r#"{"async": "true"}"#,
        r#"{"blob": "not base64!"}"#,
        r#"{"moments": ["2020-01-01 00:00:00Z"]}"#,
        r#"{"moments": ["10000-01-01T00:00:00Z"]}"#,
        r#"{"moments": [null]}"#,
        r#"{"elapsed": "1"}"#,
        r#"{"nothing": {"a": 1}}"#,
        r#"{"colorsById": {"x": "COLOR_RED"}}"#,
        r#"{"blobsByFlag": {"yes": "AA=="}}"#,
        r#"{"samples": [null]}"#,
        r#"{"samples": 1}"#,
        r#"{"child": 1}"#,
        r#"{"mask": "a_b"}"#,
        r#"[]"#,
        r#"{"custom": "a"} x"#,
    ];
    for input in inputs {
        let typed = ferry::json::decode::<Shapes>(input.as_bytes());
        let reflection = reflection_parse::<Shapes>(input.as_bytes());
        assert!(typed.is_err(), "typed accepted {input}: {typed:?}");
        assert!(reflection.is_err(), "reflection accepted {input}");
    }
}

/// `Shaper` for the codec test: echoes.
struct Echo;

impl pb::Shaper for Echo {
    async fn echo(
        &self,
        request: ferry::Request<Shapes>,
    ) -> Result<ferry::Response<Shapes>, ferry::Status> {
        Ok(ferry::Response::new(request.into_inner()))
    }

    async fn wrap(
        &self,
        _request: ferry::Request<prost_types::Any>,
    ) -> Result<ferry::Response<()>, ferry::Status> {
        Ok(ferry::Response::new(()))
    }
}

#[test]
fn generated_services_hand_out_json_codecs() {
    let server = pb::ShaperServer::new(Echo);
    let codec = server.json_codec("Echo").expect("Echo has a codec");
    assert_eq!(codec.request_type, "fixture.v1.Shapes");
    assert_eq!(codec.response_type, "fixture.v1.Shapes");
    // Any needs a descriptor pool: no generated codec, the reflection path serves it.
    assert!(server.json_codec("Wrap").is_none());
    assert!(server.json_codec("Nope").is_none());

    let message = shapes(shapes::Choice::Type("codec".into()));
    let json = ferry::json::encode(&message).unwrap();
    let proto = (codec.decode_request)(&json, true).unwrap();
    assert_eq!(Shapes::decode(proto.clone()).unwrap(), message);
    let back = (codec.encode_response)(&proto).unwrap();
    assert_eq!(back.as_ref(), reflected(&message).as_slice());
    let tree: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!((codec.decode_request_value)(tree, true).unwrap(), proto);
    // An empty body is the default message.
    assert!((codec.decode_request)(b"  ", true).unwrap().is_empty());

    let err = (codec.decode_request)(br#"{"nope": 1}"#, true).unwrap_err();
    assert_eq!(err.code(), ferry::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "invalid JSON for fixture.v1.Shapes: unrecognized field name 'nope' at line 1 column 7"
    );
    // Skipped when the server ignores unknown fields (its default).
    let skipped = (codec.decode_request)(br#"{"nope": {"deep": [1]}}"#, false).unwrap();
    assert!(skipped.is_empty());
    let err = (codec.encode_response)(b"\xff").unwrap_err();
    assert_eq!(err.code(), ferry::Code::Internal);

    // The other generated services too, keyword method included.
    let inventory = pb::InventoryServer::new(NoInventory);
    assert_eq!(
        inventory.json_codec("Match").unwrap().request_type,
        "fixture.v1.Item.Dimensions"
    );
    // Generated messages are serde types as well.
    let text = serde_json::to_string(&unit("m", 1.0)).unwrap();
    assert_eq!(text, r#"{"symbol":"m","meters":1.0}"#);
    let parsed: item::dimensions::Unit = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, unit("m", 1.0));
}

struct NoInventory;

impl pb::Inventory for NoInventory {
    async fn put_item(
        &self,
        request: ferry::Request<Item>,
    ) -> Result<ferry::Response<Item>, ferry::Status> {
        Ok(ferry::Response::new(request.into_inner()))
    }

    async fn r#match(
        &self,
        request: ferry::Request<item::Dimensions>,
    ) -> Result<ferry::Response<item::Dimensions>, ferry::Status> {
        Ok(ferry::Response::new(request.into_inner()))
    }

    async fn watch(
        &self,
        _request: ferry::Request<pb::WatchRequest>,
    ) -> Result<ferry::Response<ferry::ResponseStream<Item>>, ferry::Status> {
        Err(ferry::Status::unimplemented("watch"))
    }
}
