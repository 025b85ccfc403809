//! End-to-end checks of the code `ferry-build` generates for `fixture.proto`: messages survive
//! prost and the network unchanged, two services share one server, and calls the server does not
//! know (including the streaming method the generator leaves out) answer `UNIMPLEMENTED`.

use std::collections::HashMap;

use bytes::Bytes;
use codegen_fixture::pb::{
    self, AuditClient, AuditEntry, AuditServer, Color, InventoryClient, InventoryServer, Item, item,
};
use ferry::{Channel, Code, Request, Response, ServerHandle, Status};
use prost::Message;

/// Metadata key the echo handlers copy from the request into the response.
const ECHO_KEY: &str = "x-fixture";

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

/// An `Item` with every field set to a non-default value, labelled with `label`.
fn full_item(label: item::Label) -> Item {
    Item {
        id: "item-42".into(),
        color: Color::Green as i32,
        dimensions: Some(dimensions(2.5, 7.25)),
        label: Some(label),
        parts: HashMap::from([
            ("lid".to_owned(), dimensions(1.0, 0.5)),
            ("base".to_owned(), dimensions(3.0, 0.25)),
        ]),
        names: HashMap::from([(-7, "minus seven".to_owned()), (1, "one".to_owned())]),
        counts: vec![0, -1, i64::MAX, i64::MIN],
        tags: vec!["fragile".into(), String::new(), "ünïcødé".into()],
        units: vec![unit("m", 1.0), unit("in", 0.0254)],
        palette: vec![
            Color::Red as i32,
            Color::Blue as i32,
            Color::Unspecified as i32,
        ],
        payload: vec![0, 1, 2, 0xfe, 0xff],
        // Zero is the interesting case for `optional`: it must survive as `Some(0)`.
        quantity: Some(0),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        axis: item::dimensions::Axis::Width as i32,
        fragile: true,
        delta: -12_345,
        serial: u64::MAX,
        weight: 1.5,
    }
}

/// One fully populated item per arm of the `label` oneof: scalar, message and enum.
fn every_label() -> Vec<item::Label> {
    vec![
        item::Label::Text("handle with care".into()),
        item::Label::Unit(unit("ft", 0.3048)),
        item::Label::Tint(Color::Blue as i32),
    ]
}

fn full_entry() -> AuditEntry {
    let history: Vec<Item> = every_label().into_iter().map(full_item).collect();
    AuditEntry {
        at: Some(prost_types::Timestamp {
            seconds: -62_135_596_800,
            nanos: 1,
        }),
        before: Some(full_item(item::Label::Text("before".into()))),
        by_id: history
            .iter()
            .enumerate()
            .map(|(i, it)| (format!("id-{i}"), it.clone()))
            .collect(),
        history,
    }
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let encoded = message.encode_to_vec();
    let decoded = M::decode(encoded.as_slice()).expect("a message prost encoded must decode");
    assert_eq!(&decoded, message);
    assert_ne!(
        decoded,
        M::default(),
        "the fixture message should not be all defaults"
    );
}

#[test]
fn fully_populated_messages_round_trip_through_prost() {
    for label in every_label() {
        round_trip(&full_item(label));
    }
    round_trip(&full_entry());
    round_trip(&dimensions(1.0, 2.0));

    // `optional` keeps presence: `Some(0)` and `None` encode differently.
    let mut absent = full_item(item::Label::Text(String::new()));
    absent.quantity = None;
    let present = full_item(item::Label::Text(String::new()));
    assert_ne!(absent.encode_to_vec(), present.encode_to_vec());
    assert_eq!(
        Item::decode(&absent.encode_to_vec()[..]).unwrap().quantity,
        None
    );
    assert_eq!(
        Item::decode(&present.encode_to_vec()[..]).unwrap().quantity,
        Some(0)
    );

    // Enum accessors are generated for top-level and nested enums and open for unknown values.
    let item = full_item(item::Label::Tint(Color::Red as i32));
    assert_eq!(item.color(), Color::Green);
    assert_eq!(item.axis(), item::dimensions::Axis::Width);
    assert_eq!(Color::from_str_name("COLOR_BLUE"), Some(Color::Blue));
    assert_eq!(item::dimensions::Axis::Height.as_str_name(), "AXIS_HEIGHT");
}

#[test]
fn only_methods_marked_no_side_effects_are_listed_as_safe() {
    assert_eq!(
        AuditClient::SIDE_EFFECT_FREE_METHODS,
        ["/fixture.v1.Audit/Now"]
    );
    assert!(InventoryClient::SIDE_EFFECT_FREE_METHODS.is_empty());
}

#[test]
fn descriptor_set_describes_both_services_and_the_import() {
    let fds = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET must be an encoded FileDescriptorSet");
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"google/protobuf/timestamp.proto"),
        "{names:?}"
    );
    let fixture = fds
        .file
        .iter()
        .find(|f| f.name() == "fixture/v1/fixture.proto")
        .expect("the fixture file is in the set");
    let services: Vec<(&str, Vec<&str>)> = fixture
        .service
        .iter()
        .map(|s| (s.name(), s.method.iter().map(|m| m.name()).collect()))
        .collect();
    assert_eq!(
        services,
        vec![
            ("Inventory", vec!["PutItem", "Match", "Watch"]),
            ("Audit", vec!["Record", "Now"]),
            ("Shaper", vec!["Echo", "Wrap"]),
        ]
    );
    assert_eq!(InventoryClient::SERVICE_NAME, "fixture.v1.Inventory");
    assert_eq!(AuditClient::SERVICE_NAME, "fixture.v1.Audit");
}

/// The fixed time `Audit.Now` answers with.
const NOW: prost_types::Timestamp = prost_types::Timestamp {
    seconds: 1_234_567_890,
    nanos: 42,
};

/// Echoes every request back, with the `x-fixture` metadata copied into the response.
#[derive(Debug, Default)]
struct Echo;

fn echo<T>(request: Request<T>) -> Result<Response<T>, Status> {
    let mut metadata = ferry::Metadata::new();
    if let Some(value) = request.metadata().get(ECHO_KEY) {
        metadata.insert(ECHO_KEY, value);
    }
    Ok(Response::from_parts(metadata, request.into_inner()))
}

impl pb::Inventory for Echo {
    async fn put_item(&self, request: Request<Item>) -> Result<Response<Item>, Status> {
        assert_eq!(request.method(), "/fixture.v1.Inventory/PutItem");
        echo(request)
    }

    async fn r#match(
        &self,
        request: Request<item::Dimensions>,
    ) -> Result<Response<item::Dimensions>, Status> {
        assert_eq!(request.method(), "/fixture.v1.Inventory/Match");
        echo(request)
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<ferry::ResponseStream<Item>>, Status> {
        assert_eq!(request.method(), "/fixture.v1.Inventory/Watch");
        let prefix = request.into_inner().prefix;
        let items = (0..3).map(move |i| {
            Ok(Item {
                id: format!("{prefix}{i}"),
                ..Item::default()
            })
        });
        Ok(Response::new(ferry::ResponseStream::new(
            futures_util::stream::iter(items),
        )))
    }
}

impl pb::Audit for Echo {
    async fn record(&self, request: Request<AuditEntry>) -> Result<Response<AuditEntry>, Status> {
        assert_eq!(request.method(), "/fixture.v1.Audit/Record");
        echo(request)
    }

    // `google.protobuf.Empty` maps to `()`.
    async fn now(&self, request: Request<()>) -> Result<Response<prost_types::Timestamp>, Status> {
        assert_eq!(request.method(), "/fixture.v1.Audit/Now");
        Ok(Response::new(NOW))
    }
}

/// Serves both generated services on one server bound to an ephemeral port.
async fn serve_both() -> (ServerHandle, Channel) {
    let handle = ferry::Server::builder()
        .add_service(InventoryServer::new(Echo))
        .add_service(AuditServer::new(Echo))
        .bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let channel = Channel::connect(format!("ferry://{}", handle.local_addr()))
        .await
        .expect("connect to the fixture server");
    (handle, channel)
}

#[tokio::test]
async fn both_services_round_trip_full_messages_over_one_server() {
    let (server, channel) = serve_both().await;
    let inventory = InventoryClient::new(channel.clone());
    let audit = AuditClient::new(channel);

    for label in every_label() {
        let sent = full_item(label);
        let mut request = Request::new(sent.clone());
        request.metadata_mut().insert(ECHO_KEY, sent.id.clone());
        let response = inventory.put_item(request).await.expect("PutItem");
        assert_eq!(response.metadata().get(ECHO_KEY), Some("item-42"));
        assert_eq!(response.into_inner(), sent);
    }

    let sent = dimensions(0.125, 1e300);
    let got = inventory.r#match(sent.clone()).await.expect("Match");
    assert_eq!(got.into_inner(), sent);

    let sent = full_entry();
    let got = audit.record(sent.clone()).await.expect("Record");
    assert!(
        got.metadata().is_empty(),
        "no metadata was sent, none should come back"
    );
    assert_eq!(got.into_inner(), sent);

    let got = audit.now(()).await.expect("Now");
    assert_eq!(got.into_inner(), NOW);

    // A default (empty) message is valid too: it travels as a zero-length DATA frame.
    let got = audit.record(AuditEntry::default()).await.expect("Record");
    assert_eq!(got.into_inner(), AuditEntry::default());

    server.shutdown().await.expect("graceful shutdown");
}

async fn raw_call(channel: &Channel, method: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let mut request = Request::new(ferry::call::Body::Message(body));
    request.set_method(method);
    channel
        .call(request)
        .await?
        .into_inner()
        .into_message()
        .await
}

#[tokio::test]
async fn the_server_streaming_rpc_streams_over_grpc() {
    let (server, _) = serve_both().await;
    let channel = Channel::connect(format!("grpc://{}", server.local_addr()))
        .await
        .expect("connect over gRPC");
    let inventory = InventoryClient::new(channel);
    let mut items = inventory
        .watch(pb::WatchRequest { prefix: "w".into() })
        .await
        .expect("Watch")
        .into_inner();
    let mut ids = Vec::new();
    while let Some(item) = items.message().await.expect("an item") {
        ids.push(item.id);
    }
    assert_eq!(ids, ["w0", "w1", "w2"]);
    assert!(items.trailers().is_some(), "the stream ended well");
    server.shutdown().await.expect("graceful shutdown");
}

#[tokio::test]
async fn unknown_and_streaming_methods_are_unimplemented() {
    let (server, channel) = serve_both().await;
    let body = Bytes::from(pb::WatchRequest { prefix: "a".into() }.encode_to_vec());
    for method in [
        // A method neither service has.
        "/fixture.v1.Inventory/Delete",
        // A method of the other service, addressed to the wrong one.
        "/fixture.v1.Audit/PutItem",
        // A service the server does not host.
        "/fixture.v1.Warehouse/PutItem",
        // Not a method path at all.
        "PutItem",
    ] {
        let status = raw_call(&channel, method, body.clone())
            .await
            .expect_err(method);
        assert_eq!(status.code(), Code::Unimplemented, "{method}: {status}");
    }

    // The same connection still serves known methods afterwards.
    let known = raw_call(
        &channel,
        "/fixture.v1.Inventory/Match",
        Bytes::from(dimensions(1.0, 2.0).encode_to_vec()),
    )
    .await
    .expect("Match after refused calls");
    assert_eq!(
        item::Dimensions::decode(known).unwrap(),
        dimensions(1.0, 2.0)
    );

    // A body that is not a valid `Item` is the caller's fault.
    let status = raw_call(
        &channel,
        "/fixture.v1.Inventory/PutItem",
        Bytes::from_static(&[0x0a, 0xff]),
    )
    .await
    .expect_err("a truncated message must not decode");
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");

    server.shutdown().await.expect("graceful shutdown");
}
