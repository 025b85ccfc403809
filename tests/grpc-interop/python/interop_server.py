"""A gRPC interop test server on Python's grpcio, the reference peer for Ferry's interop client.

Usage:
    interop_server.py --port N [--host ADDR] [--use_tls false] [--wiretap true|false]

Serves grpc.testing.TestService (from ../proto, compiled at start into a temporary directory) on
plaintext HTTP/2, on every interface (only on ``--host`` if given, e.g. 127.0.0.1). ``--port 0``
picks a free port. Once it accepts calls it prints exactly one line, ``listening on PORT``, and it
exits (status 0) on SIGTERM or SIGINT.

What each method does (the "server features" of gRPC's interop test descriptions):

* EmptyCall: answers Empty.
* UnaryCall: answers a payload of ``response_size`` zero bytes. ``response_type`` other than
  COMPRESSABLE, or a negative size, is INVALID_ARGUMENT.
* CacheableUnaryCall: answers the current time in nanoseconds (ASCII) as the payload and sends
  ``cache-control: max-age=60, public`` in the response headers.
* StreamingOutputCall: one response per ResponseParameters, each after sleeping ``interval_us``.
* StreamingInputCall: after the client half-closes, the sum of all payload body sizes.
* FullDuplexCall: answers each request as it arrives (one response per ResponseParameters).
* HalfDuplexCall: collects every request, then answers them in order after the half-close.
* UnimplementedCall and grpc.testing.UnimplementedService are not registered, so grpcio answers
  UNIMPLEMENTED.

On every method:

* Echo metadata: every ``x-grpc-test-echo-initial`` value of the request is sent back in the
  response headers, every ``x-grpc-test-echo-trailing-bin`` value in the trailers (also when the
  call ends with an error status).
* Echo status: a request whose ``response_status`` has a non-zero code ends the call with that
  code and exactly that message, before any response of that request is sent. A code grpcio does
  not know (above 16) becomes UNKNOWN with the same message.
* Compressed responses: ``response_compressed`` (unary) and ``ResponseParameters.compressed``
  (streaming) set to true make that message go out gzip-compressed with the compressed flag set;
  set to false, it goes out uncompressed, flag clear. In StreamingOutputCall the whole request is
  known up front. In FullDuplexCall and HalfDuplexCall grpcio must choose the call's encoding
  before the first response, so the first request decides: if none of its ResponseParameters asks
  for compression, later ones asking for it are sent uncompressed.
* Compressed requests (``expect_compressed``): grpcio does not tell a handler whether a request
  message arrived compressed, so by default the server listens behind a WireTap (see
  interop_common.py) and the handler looks up, by the exact request bytes, the compressed flag the
  tap saw on the wire (matched within the call's own connection, which the tap identifies by the
  peer port grpcio reports). ``expect_compressed.value == true`` on a message that arrived with the
  flag clear is INVALID_ARGUMENT ("expected a compressed request ..."). With ``--wiretap false``
  the server listens directly and cannot check this: such requests are accepted, and a client's
  compression probe will then fail. (``expect_compressed = false`` is never checked: a compressed
  message is fine then too, as in gRPC's own servers.)
* ``fill_username`` and ``fill_oauth_scope`` stay empty (no authentication on plaintext);
  ``fill_server_id`` gives "ferry-interop-python"; the response's ``hostname`` is always filled.
"""

import argparse
import signal
import socket
import sys
import threading
import time
from concurrent import futures

import grpc

from interop_common import WireTap, load_protos, status_code_from_number

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
SERVER_ID = "ferry-interop-python"


def peer_port(ctx):
    """The client port in grpcio's peer string ("ipv4:127.0.0.1:40000", "ipv6:[::1]:40000")."""
    try:
        return int(ctx.peer().rsplit(":", 1)[1])
    except (ValueError, IndexError, TypeError):
        return None


class Received:
    """A decoded request together with the exact bytes grpcio handed over (decompressed)."""

    __slots__ = ("msg", "raw")

    def __init__(self, msg, raw):
        self.msg = msg
        self.raw = raw


def keeping_raw(message_class):
    def deserialize(raw):
        return Received(message_class.FromString(raw), raw)

    return deserialize


class TestService:
    def __init__(self, pb, tap):
        self.pb = pb
        self.m = pb.messages
        self.tap = tap

    # ---- shared behaviour ----

    def _start(self, ctx, compress=None, send_headers=True):
        """Echoes metadata, picks the call's compression; sends headers if there is an echo.

        Returns True if the response headers went out."""
        initial, trailing = [], []
        for item in ctx.invocation_metadata() or ():
            if item.key == ECHO_INITIAL:
                initial.append((ECHO_INITIAL, item.value))
            elif item.key == ECHO_TRAILING:
                trailing.append((ECHO_TRAILING, item.value))
        if trailing:
            ctx.set_trailing_metadata(trailing)
        if compress:
            ctx.set_compression(grpc.Compression.Gzip)
        if initial and send_headers:
            ctx.send_initial_metadata(initial)
            return True
        return False

    def _check_compressed(self, received, expect, ctx):
        """INVALID_ARGUMENT if ``expect`` (a BoolValue field) demands compression it did not get."""
        if not received.msg.HasField(expect) or not getattr(received.msg, expect).value:
            return
        if self.tap is None:
            return  # --wiretap false: cannot be observed with grpcio alone
        compressed = self.tap.take_request(received.raw, upstream_port=peer_port(ctx))
        if compressed is None:
            ctx.abort(grpc.StatusCode.INTERNAL,
                      "interop server: the wiretap did not see this request message")
        if not compressed:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      "expected a compressed request (expect_compressed is true), "
                      "but the message arrived without the compressed flag")

    @staticmethod
    def _echo_status(msg, ctx):
        if msg.HasField("response_status") and msg.response_status.code != 0:
            code = status_code_from_number(msg.response_status.code) or grpc.StatusCode.UNKNOWN
            ctx.abort(code, msg.response_status.message)

    def _payload(self, response_type, size, ctx):
        if response_type != self.m.COMPRESSABLE:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"unsupported response_type {response_type}")
        if size < 0:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"negative response size {size}")
        return self.m.Payload(type=self.m.COMPRESSABLE, body=bytes(size))

    def _responses(self, request, ctx):
        """Yields the responses one StreamingOutputCallRequest asks for."""
        self._echo_status(request, ctx)
        for params in request.response_parameters:
            if params.interval_us > 0:
                time.sleep(params.interval_us / 1e6)
            payload = self._payload(request.response_type, params.size, ctx)
            if not (params.HasField("compressed") and params.compressed.value):
                ctx.disable_next_message_compression()
            yield self.m.StreamingOutputCallResponse(payload=payload)

    @staticmethod
    def _wants_compression(request):
        return any(p.HasField("compressed") and p.compressed.value
                   for p in request.response_parameters)

    # ---- the methods ----

    def EmptyCall(self, request, ctx):
        self._start(ctx)
        return self.pb.empty.Empty()

    def UnaryCall(self, received, ctx):
        req = received.msg
        compress = req.HasField("response_compressed") and req.response_compressed.value
        self._start(ctx, compress=compress)
        self._check_compressed(received, "expect_compressed", ctx)
        self._echo_status(req, ctx)
        if not compress:
            ctx.disable_next_message_compression()
        response = self.m.SimpleResponse(
            payload=self._payload(req.response_type, req.response_size, ctx),
            hostname=socket.gethostname(),
        )
        if req.fill_server_id:
            response.server_id = SERVER_ID
        return response

    def CacheableUnaryCall(self, received, ctx):
        self._start(ctx, send_headers=False)
        initial = [(i.key, i.value) for i in (ctx.invocation_metadata() or ())
                   if i.key == ECHO_INITIAL]
        ctx.send_initial_metadata([("cache-control", "max-age=60, public"), *initial])
        body = str(time.time_ns()).encode("ascii")
        return self.m.SimpleResponse(payload=self.m.Payload(type=self.m.COMPRESSABLE, body=body),
                                     hostname=socket.gethostname())

    def StreamingOutputCall(self, request, ctx):
        self._start(ctx, compress=self._wants_compression(request))
        yield from self._responses(request, ctx)

    def StreamingInputCall(self, request_iterator, ctx):
        self._start(ctx)
        total = 0
        for received in request_iterator:
            self._check_compressed(received, "expect_compressed", ctx)
            total += len(received.msg.payload.body)
        return self.m.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, ctx):
        started = False
        for request in request_iterator:
            if not started:
                self._start(ctx, compress=self._wants_compression(request))
                started = True
            yield from self._responses(request, ctx)
        if not started:
            self._start(ctx)

    def HalfDuplexCall(self, request_iterator, ctx):
        requests = list(request_iterator)
        self._start(ctx, compress=bool(requests) and self._wants_compression(requests[0]))
        for request in requests:
            yield from self._responses(request, ctx)


def handlers(pb, service):
    m, e = pb.messages, pb.empty
    rpc = {
        "EmptyCall": grpc.unary_unary_rpc_method_handler(
            service.EmptyCall, e.Empty.FromString, e.Empty.SerializeToString),
        "UnaryCall": grpc.unary_unary_rpc_method_handler(
            service.UnaryCall, keeping_raw(m.SimpleRequest), m.SimpleResponse.SerializeToString),
        "CacheableUnaryCall": grpc.unary_unary_rpc_method_handler(
            service.CacheableUnaryCall, keeping_raw(m.SimpleRequest),
            m.SimpleResponse.SerializeToString),
        "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
            service.StreamingOutputCall, m.StreamingOutputCallRequest.FromString,
            m.StreamingOutputCallResponse.SerializeToString),
        "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
            service.StreamingInputCall, keeping_raw(m.StreamingInputCallRequest),
            m.StreamingInputCallResponse.SerializeToString),
        "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
            service.FullDuplexCall, m.StreamingOutputCallRequest.FromString,
            m.StreamingOutputCallResponse.SerializeToString),
        "HalfDuplexCall": grpc.stream_stream_rpc_method_handler(
            service.HalfDuplexCall, m.StreamingOutputCallRequest.FromString,
            m.StreamingOutputCallResponse.SerializeToString),
        # UnimplementedCall is left out on purpose.
    }
    return grpc.method_handlers_generic_handler("grpc.testing.TestService", rpc)


def parse_bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on; 0 picks one")
    parser.add_argument("--host", default="",
                        help="address to listen on (default: every interface, IPv4 and IPv6)")
    parser.add_argument("--use_tls", type=parse_bool, default=False,
                        help="accepted for compatibility; only false is supported")
    parser.add_argument("--wiretap", type=parse_bool, default=True,
                        help="observe request compression flags through a relay (default true)")
    args = parser.parse_args()
    if args.use_tls:
        parser.error("--use_tls true is not supported: this server speaks plaintext HTTP/2 only")

    pb = load_protos()
    service = TestService(pb, None)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    server.add_generic_rpc_handlers((handlers(pb, service),))
    tap = None
    if args.wiretap:
        # grpcio listens on a private loopback port; clients talk to the tap in front of it.
        inner_port = server.add_insecure_port("127.0.0.1:0")
        if inner_port == 0:
            raise SystemExit("cannot bind a private loopback port for grpcio")
        tap = WireTap("127.0.0.1", inner_port, listen_host=args.host, listen_port=args.port)
        service.tap = tap
        port = tap.port
    else:
        host = args.host or "[::]"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        port = server.add_insecure_port(f"{host}:{args.port}")
        if port == 0:
            raise SystemExit(f"cannot listen on port {args.port}")
    server.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"listening on {port}", flush=True)
    while not stop.wait(1):
        pass
    server.stop(grace=1).wait()
    if tap is not None:
        tap.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
