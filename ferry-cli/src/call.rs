//! `ferry call`: one call of any kind — unary, server-, client- or bidirectionally streaming —
//! with JSON in and out, through a [`ferry::Channel`] of the target's protocol.

use std::io::{IsTerminal, Read};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use clap::Args;
use ferry::call::{Body, MessageStream, MethodKind, StreamItem};
use ferry::client::Protocol;
use ferry::{Metadata, Request, Status};
use futures_util::StreamExt;
use prost_reflect::MessageDescriptor;

use crate::descriptors::resolve_method;
use crate::error::{CliResult, Failure};
use crate::target::Target;
use crate::{ConnArgs, ProtoArgs, codec};

/// Arguments of `ferry call`.
#[derive(Args)]
pub struct CallArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// package.Service/Method or package.Service.Method
    method: String,
    /// The request as JSON (client-streaming and bidi methods: the request messages, as JSON
    /// documents one after another or a JSON array); read from stdin when absent or `-`
    json: Option<String>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    protos: ProtoArgs,
    /// Print fields that have their default value too
    #[arg(long)]
    emit_defaults: bool,
    /// Print each reply on one line (newline-delimited JSON for streams)
    #[arg(long)]
    compact: bool,
    /// Print response metadata (`< key: value`) and trailers (`<< key: value`) to stderr
    #[arg(short, long)]
    verbose: bool,
}

/// The first error met while reading a request stream locally (bad JSON on stdin), which
/// explains the call's failure better than the status the cancelled call ends with.
type LocalError = Arc<Mutex<Option<Failure>>>;

/// Runs `ferry call`.
pub async fn run(mut args: CallArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    let metadata = crate::metadata(&args.conn.headers)?;
    let source = crate::source(&target, &args.conn, &args.protos).await?;
    let method = resolve_method(&source, &args.method).await?;
    let kind =
        MethodKind::from_streaming(method.is_client_streaming(), method.is_server_streaming());
    let local_error = LocalError::default();
    let body = if kind.client_streams() {
        Body::Stream(request_stream(
            &method.input(),
            args.json.take(),
            &local_error,
        )?)
    } else {
        let text = request_json(args.json.take())?;
        Body::Message(codec::encode(&codec::parse_json(&method.input(), &text)?))
    };
    // A grpc:// target calls over the channel reflection already opened.
    let channel = match (target.protocol, source.reflection_channel()) {
        (Protocol::Grpc, Some(channel)) => channel.clone(),
        _ => target.channel(args.conn.connect_timeout).await?,
    };
    let mut request = Request::new(body);
    request.set_method(crate::method_path(&method));
    request.set_method_kind(kind);
    *request.metadata_mut() = metadata;
    if let Some(timeout) = args.conn.timeout {
        request.set_timeout(timeout);
    }
    let outcome = print_replies(&args, &method.output(), channel.call(request).await).await;
    // A request stream that failed locally cancelled the call: say why.
    let local = local_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (outcome, local) {
        (Err(_), Some(local)) => Err(local),
        (outcome, _) => outcome,
    }
}

/// Prints every reply as it arrives (and metadata with `-v`) until the call ends.
async fn print_replies(
    args: &CallArgs,
    output: &MessageDescriptor,
    response: ferry::call::CallResult,
) -> CliResult {
    let response = response?;
    if args.verbose {
        print_metadata("<", response.metadata());
    }
    let mut trailers = response.trailers().clone();
    let mut replies = response.into_inner().into_stream();
    while let Some(item) = replies.next().await {
        match item? {
            StreamItem::Message(bytes) => print_reply(args, output, bytes)?,
            StreamItem::Trailers(more) => trailers.extend(more),
            StreamItem::Compress(_) => {}
        }
    }
    if args.verbose {
        print_metadata("<<", &trailers);
    }
    Ok(())
}

fn print_reply(args: &CallArgs, output: &MessageDescriptor, bytes: Bytes) -> CliResult {
    let reply = codec::decode(output, bytes)?;
    let value = codec::to_json_value(&reply, args.emit_defaults)?;
    let printed = if args.compact {
        serde_json::to_string(&value)
    } else {
        serde_json::to_string_pretty(&value)
    };
    println!("{}", printed.map_err(|e| Failure::usage(e.to_string()))?);
    Ok(())
}

/// Prints `prefix key: value` lines to stderr; binary values in base64.
fn print_metadata(prefix: &str, metadata: &Metadata) {
    for (key, value) in metadata.iter() {
        if key.ends_with("-bin") {
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            eprintln!("{prefix} {key}: {encoded}");
        } else {
            eprintln!("{prefix} {key}: {}", String::from_utf8_lossy(value));
        }
    }
}

/// Reads the request JSON from the argument, or from stdin for `-` or none (`{}` when none
/// and stdin is a terminal).
pub fn request_json(arg: Option<String>) -> CliResult<String> {
    match arg.as_deref() {
        Some("-") | None => {
            let mut stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                return Ok("{}".to_owned());
            }
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("cannot read the request from stdin: {e}")))?;
            Ok(text)
        }
        Some(_) => Ok(arg.unwrap_or_default()),
    }
}

/// The request messages of a client-streaming or bidi call: parsed from the argument up front,
/// or read from stdin as they come (so a bidi call can be driven line by line). Bad JSON on
/// stdin fails the stream and is kept in `local_error`.
fn request_stream(
    input: &MessageDescriptor,
    arg: Option<String>,
    local_error: &LocalError,
) -> CliResult<MessageStream> {
    if let Some(text) = arg.filter(|text| text != "-") {
        let messages = codec::parse_json_sequence(input, &text)?;
        let items = messages
            .iter()
            .map(|m| Ok(StreamItem::Message(codec::encode(m))))
            .collect::<Vec<_>>();
        return Ok(MessageStream::new(futures_util::stream::iter(items)));
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let input = input.clone();
    // A plain thread: blocked on stdin, it must not hold the runtime open at exit.
    std::thread::spawn(move || read_stdin(&input, &sender));
    let local_error = local_error.clone();
    let items = futures_util::stream::unfold(receiver, move |mut receiver| {
        let local_error = local_error.clone();
        async move {
            let item = match receiver.recv().await? {
                Ok(message) => Ok(StreamItem::Message(message)),
                Err(failure) => {
                    *local_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
                    Err(Status::cancelled("the request stream failed locally"))
                }
            };
            Some((item, receiver))
        }
    });
    Ok(MessageStream::new(items))
}

/// Sends each message read from stdin, encoded, until stdin ends, the JSON is bad (sent as
/// the last item) or the call no longer wants any.
fn read_stdin(
    input: &MessageDescriptor,
    sender: &tokio::sync::mpsc::Sender<Result<Bytes, Failure>>,
) {
    let stdin = std::io::stdin().lock();
    let documents = serde_json::Deserializer::from_reader(stdin).into_iter::<serde_json::Value>();
    for document in documents {
        let values = match document {
            Ok(document) => codec::split_document(input, document),
            Err(e) => {
                let _ = sender.blocking_send(Err(codec::invalid(input, e)));
                return;
            }
        };
        for value in values {
            let item = codec::parse_value(input, value).map(|m| codec::encode(&m));
            let failed = item.is_err();
            if sender.blocking_send(item).is_err() || failed {
                return;
            }
        }
    }
}
