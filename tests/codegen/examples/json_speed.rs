//! How fast the generated JSON codecs transcode compared with the reflection path, for what the
//! HTTP/JSON server does per call: JSON request → protobuf, protobuf reply → JSON.
//!
//! ```text
//! cargo run --release -p codegen-fixture --example json_speed
//! ```

use std::collections::HashMap;
use std::time::Instant;

use codegen_fixture::pb::{self, Color, Item, item};
use ferry::ServiceHandler;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

fn item() -> Item {
    Item {
        id: "item-42".into(),
        color: Color::Green as i32,
        dimensions: Some(item::Dimensions {
            width: 2.5,
            height: 7.0,
            unit: Some(item::dimensions::Unit {
                symbol: "cm".into(),
                meters: 0.01,
            }),
            longest: 2,
        }),
        label: Some(item::Label::Text("fragile".into())),
        parts: HashMap::new(),
        names: HashMap::from([(1, "one".to_owned())]),
        counts: vec![1, 2, 3],
        tags: vec!["a".into(), "b".into()],
        units: Vec::new(),
        palette: vec![1, 2],
        payload: vec![1, 2, 3, 4],
        quantity: Some(3),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        axis: 1,
        fragile: true,
        delta: -3,
        serial: 99,
        weight: 1.5,
    }
}

fn time(name: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{name:<40} {:>8.0} ns/op", ns);
}

struct Never;

impl pb::Inventory for Never {
    async fn put_item(
        &self,
        r: ferry::Request<Item>,
    ) -> Result<ferry::Response<Item>, ferry::Status> {
        Ok(ferry::Response::new(r.into_inner()))
    }
    async fn r#match(
        &self,
        r: ferry::Request<item::Dimensions>,
    ) -> Result<ferry::Response<item::Dimensions>, ferry::Status> {
        Ok(ferry::Response::new(r.into_inner()))
    }
    async fn watch(
        &self,
        _r: ferry::Request<pb::WatchRequest>,
    ) -> Result<ferry::Response<ferry::ResponseStream<Item>>, ferry::Status> {
        Err(ferry::Status::unimplemented("watch"))
    }
}

fn main() {
    let n = 200_000;
    let message = item();
    let proto = message.encode_to_vec();
    let json = ferry::json::encode(&message).unwrap();
    println!(
        "message: {} bytes protobuf, {} bytes JSON",
        proto.len(),
        json.len()
    );
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let desc = pool.get_message_by_name("fixture.v1.Item").unwrap();
    let codec = pb::InventoryServer::new(Never)
        .json_codec("PutItem")
        .unwrap();

    time("reflection: JSON -> protobuf", n, || {
        let mut de = serde_json::Deserializer::from_slice(&json);
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let m = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options).unwrap();
        std::hint::black_box(m.encode_to_vec());
    });
    time("generated: JSON -> protobuf", n, || {
        std::hint::black_box((codec.decode_request)(&json, true).unwrap());
    });
    time("reflection: protobuf -> JSON", n, || {
        let m = DynamicMessage::decode(desc.clone(), proto.as_slice()).unwrap();
        std::hint::black_box(ferry::json::to_vec(&m, &SerializeOptions::new()).unwrap());
    });
    time("generated: protobuf -> JSON", n, || {
        std::hint::black_box((codec.encode_response)(&proto).unwrap());
    });
}
