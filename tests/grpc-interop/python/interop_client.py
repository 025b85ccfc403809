"""A gRPC interop test client on Python's grpcio, the reference peer for Ferry's interop server.

Usage:
    interop_client.py --server_host H --server_port P --test_case NAME
                      [--use_tls false] [--server_host_override NAME]
                      [--wiretap true|false] [--rpc_timeout SECONDS]

NAME is one of the cases below, a comma-separated list of them, or ``all`` (every case, in this
order): empty_unary, large_unary, client_compressed_unary, server_compressed_unary,
client_streaming, client_compressed_streaming, server_streaming, server_compressed_streaming,
ping_pong, empty_stream, custom_metadata, status_code_and_message, special_status_message,
unimplemented_method, unimplemented_service, cancel_after_begin, cancel_after_first_response,
timeout_on_sleeping_server.

Prints one line per case, ``PASS <case>`` or ``FAIL <case>: <reason>``; exits 1 if any case
failed, 2 on bad arguments. If a case cannot connect at all, the remaining cases are reported
failed ("not run") without waiting again. Every case gets a fresh channel (and so a fresh connection). Sizes,
requests and assertions follow gRPC's interop test descriptions; where the descriptions leave a
check optional ("clients are free to ...") this client does it: response bodies must be zeros of
the exact size and of type COMPRESSABLE.

How compression is checked
--------------------------
grpcio does not expose the compressed flag of individual messages (nor ``grpc-encoding``), so by
default the client connects through a WireTap (interop_common.py): a local byte-for-byte relay
that reads the HTTP/2 DATA frames and records the flag byte of every gRPC message. Since each
case makes one call at a time on its own connection, the messages the tap saw since the call
began are that call's. With it:

* server_compressed_unary / server_compressed_streaming assert that a response asked to be
  compressed carries the compressed flag and one asked not to be does not (the descriptions make
  this optional "if supported by the implementation"; here it is enforced).
* client_compressed_* also check the client itself: each request went out with the intended flag.
  grpcio can only compress a whole call, so for the one uncompressed message inside the
  compressed stream of client_compressed_streaming the client sets C-core's per-message
  ``no_compress`` write flag by wrapping grpcio's internal ``cygrpc.SendMessageOperation``
  (grpc._channel.cygrpc). If a future grpcio defeats that, the tap notices and the case fails
  with a "client self-check" reason rather than blaming the server.

``--wiretap false`` connects directly and skips every flag check (the cases then only check what
grpcio can see). The tap sets ``grpc.default_authority`` to the real server's host:port, so the
server sees the same ``:authority`` as without it.

The compression probe
---------------------
client_compressed_unary and client_compressed_streaming first send an *uncompressed* message
with ``expect_compressed = true``. The descriptions present it as a probe of whether the server
implements the CompressedRequest feature, but their assertions are unconditional: "First call
fails with INVALID_ARGUMENT". A server is therefore NOT allowed to skip the check; this client
fails the case if the probe gets any other status (e.g. OK from a server that ignores
``expect_compressed``). The streaming procedure text once said the opposite ("if the call fails
with INVALID_ARGUMENT, the test fails") which the descriptions have since corrected; this client
follows the assertion list.

Cancellation and timeouts
-------------------------
* cancel_after_begin starts StreamingInputCall with a request stream that sends nothing, waits
  until the tap has seen the call's HEADERS frame leave the client (so the server really sees a
  stream that is then reset; at most 2 s, without the tap it cancels at once), cancels, and
  asserts the call ended CANCELLED.
* cancel_after_first_response sends the first ping_pong request, reads one response (31415
  bytes), cancels while the request stream is still open, asserts CANCELLED.
* timeout_on_sleeping_server sends one request (27182-byte payload, no response parameters) on
  FullDuplexCall with a 1 ms deadline and never half-closes; asserts DEADLINE_EXCEEDED. With so
  short a deadline grpcio usually gives up before any response could come, so this checks the
  client's deadline handling and that the server does not answer something else first.
"""

import argparse
import queue
import sys
import threading
import time
import traceback

import grpc
import grpc._channel as grpc_channel_internals

from interop_common import C2S, S2C, WireTap, load_protos

CASES = (
    "empty_unary",
    "large_unary",
    "client_compressed_unary",
    "server_compressed_unary",
    "client_streaming",
    "client_compressed_streaming",
    "server_streaming",
    "server_compressed_streaming",
    "ping_pong",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
)

ECHO_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
ECHO_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


CONNECT_FAILURE = "could not connect to"


class Failure(Exception):
    pass


def check(condition, reason):
    if not condition:
        raise Failure(reason)


# ---- per-message "do not compress" for client-sent messages ---------------------------------


class UncompressedBytes(bytes):
    """Serialized request bytes the client must send without compression."""


class _SendFlagShim:
    """Stands in for grpc._channel's ``cygrpc`` module; only SendMessageOperation differs."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def SendMessageOperation(self, message, flags):
        if isinstance(message, UncompressedBytes):
            return self._real.SendMessageOperation(
                bytes(message), flags | self._real.WriteFlag.no_compress)
        return self._real.SendMessageOperation(message, flags)


if not isinstance(grpc_channel_internals.cygrpc, _SendFlagShim):
    grpc_channel_internals.cygrpc = _SendFlagShim(grpc_channel_internals.cygrpc)


class Uncompressed:
    """Wraps a request message that must go out uncompressed inside a compressed call."""

    def __init__(self, message):
        self.message = message


def serialize_with_flags(message):
    if isinstance(message, Uncompressed):
        return UncompressedBytes(message.message.SerializeToString())
    return message.SerializeToString()


# ---- the cases ---------------------------------------------------------------------------------


class Cases:
    def __init__(self, pb, channel, tap, timeout):
        self.pb = pb
        self.m = pb.messages
        self.channel = channel
        self.stub = pb.services.TestServiceStub(channel)
        self.tap = tap
        self.timeout = timeout

    # helpers

    def payload(self, size):
        return self.m.Payload(body=bytes(size))

    def check_payload(self, payload, size, what="response"):
        check(payload.type == self.m.COMPRESSABLE,
              f"{what} payload type is {payload.type}, expected COMPRESSABLE")
        check(len(payload.body) == size,
              f"{what} payload body is {len(payload.body)} bytes, expected {size}")
        check(payload.body.count(0) == size, f"{what} payload body is not all zeros")

    def large_request(self, **fields):
        return self.m.SimpleRequest(response_size=314159, payload=self.payload(271828), **fields)

    def flags(self, mark, direction):
        """Compressed flags of the messages the tap saw since ``mark`` (None without a tap)."""
        if self.tap is None:
            return None
        return [e.compressed for e in self.tap.events(since=mark, kind="message",
                                                      direction=direction)]

    def mark(self):
        return self.tap.mark() if self.tap is not None else 0

    def expect_flags(self, mark, direction, expected, who):
        seen = self.flags(mark, direction)
        if seen is None:
            return
        words = lambda fs: "[" + ", ".join("compressed" if f else "uncompressed" for f in fs) + "]"
        if who == "client":
            check(seen == expected,
                  f"client self-check: requests went out {words(seen)}, meant {words(expected)}")
        else:
            check(seen == expected,
                  f"server sent responses {words(seen)} on the wire, expected {words(expected)}")

    @staticmethod
    def expect_status(error, code, what):
        check(isinstance(error, grpc.RpcError), f"{what}: expected {code.name}, call succeeded")
        check(error.code() == code,
              f"{what}: expected {code.name}, got {error.code().name}: {error.details()!r}")

    def queue_requests(self):
        """A request iterator fed through a queue; put None to half-close."""
        q = queue.Queue()

        def requests():
            while True:
                item = q.get()
                if item is None:
                    return
                yield item

        return q, requests()

    # the cases

    def empty_unary(self):
        response = self.stub.EmptyCall(self.pb.empty.Empty(), timeout=self.timeout)
        check(isinstance(response, self.pb.empty.Empty), f"response is {type(response)}")

    def large_unary(self):
        response = self.stub.UnaryCall(self.large_request(), timeout=self.timeout)
        self.check_payload(response.payload, 314159)

    def client_compressed_unary(self):
        probe = self.large_request(expect_compressed=self.m.BoolValue(value=True))
        mark = self.mark()
        try:
            self.stub.UnaryCall(probe, timeout=self.timeout, compression=grpc.Compression.NoCompression)
            error = None
        except grpc.RpcError as e:
            error = e
        self.expect_flags(mark, C2S, [False], "client")
        self.expect_status(error, grpc.StatusCode.INVALID_ARGUMENT,
                           "uncompressed probe with expect_compressed=true")

        mark = self.mark()
        response = self.stub.UnaryCall(probe, timeout=self.timeout, compression=grpc.Compression.Gzip)
        self.expect_flags(mark, C2S, [True], "client")
        self.check_payload(response.payload, 314159, "compressed call's")

        plain = self.large_request(expect_compressed=self.m.BoolValue(value=False))
        mark = self.mark()
        response = self.stub.UnaryCall(plain, timeout=self.timeout, compression=grpc.Compression.NoCompression)
        self.expect_flags(mark, C2S, [False], "client")
        self.check_payload(response.payload, 314159, "uncompressed call's")

    def server_compressed_unary(self):
        for compressed in (True, False):
            request = self.large_request(response_compressed=self.m.BoolValue(value=compressed))
            mark = self.mark()
            response = self.stub.UnaryCall(request, timeout=self.timeout)
            self.check_payload(response.payload, 314159,
                               f"response_compressed={str(compressed).lower()}")
            self.expect_flags(mark, S2C, [compressed], "server")

    def client_streaming(self):
        sizes = (27182, 8, 1828, 45904)
        requests = [self.m.StreamingInputCallRequest(payload=self.payload(n)) for n in sizes]
        response = self.stub.StreamingInputCall(iter(requests), timeout=self.timeout)
        check(response.aggregated_payload_size == 74922,
              f"aggregated_payload_size is {response.aggregated_payload_size}, expected 74922")

    def client_compressed_streaming(self):
        first = self.m.StreamingInputCallRequest(payload=self.payload(27182),
                                                 expect_compressed=self.m.BoolValue(value=True))
        mark = self.mark()
        try:
            self.stub.StreamingInputCall(iter([first]), timeout=self.timeout,
                                         compression=grpc.Compression.NoCompression)
            error = None
        except grpc.RpcError as e:
            error = e
        self.expect_flags(mark, C2S, [False], "client")
        self.expect_status(error, grpc.StatusCode.INVALID_ARGUMENT,
                           "uncompressed probe with expect_compressed=true")

        second = self.m.StreamingInputCallRequest(payload=self.payload(45904),
                                                  expect_compressed=self.m.BoolValue(value=False))
        call = self.channel.stream_unary(
            "/grpc.testing.TestService/StreamingInputCall",
            request_serializer=serialize_with_flags,
            response_deserializer=self.m.StreamingInputCallResponse.FromString,
        )
        mark = self.mark()
        response = call(iter([first, Uncompressed(second)]), timeout=self.timeout,
                        compression=grpc.Compression.Gzip)
        self.expect_flags(mark, C2S, [True, False], "client")
        check(response.aggregated_payload_size == 73086,
              f"aggregated_payload_size is {response.aggregated_payload_size}, expected 73086")

    def server_streaming(self):
        sizes = (31415, 9, 2653, 58979)
        request = self.m.StreamingOutputCallRequest(
            response_parameters=[self.m.ResponseParameters(size=n) for n in sizes])
        responses = list(self.stub.StreamingOutputCall(request, timeout=self.timeout))
        check(len(responses) == len(sizes), f"{len(responses)} responses, expected {len(sizes)}")
        for i, (response, size) in enumerate(zip(responses, sizes)):
            self.check_payload(response.payload, size, f"response #{i + 1}")

    def server_compressed_streaming(self):
        wanted = ((31415, True), (92653, False))
        request = self.m.StreamingOutputCallRequest(response_parameters=[
            self.m.ResponseParameters(size=n, compressed=self.m.BoolValue(value=c))
            for n, c in wanted])
        mark = self.mark()
        responses = list(self.stub.StreamingOutputCall(request, timeout=self.timeout))
        check(len(responses) == 2, f"{len(responses)} responses, expected 2")
        for i, (response, (size, _)) in enumerate(zip(responses, wanted)):
            self.check_payload(response.payload, size, f"response #{i + 1}")
        self.expect_flags(mark, S2C, [c for _, c in wanted], "server")

    def ping_pong(self):
        steps = ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904))
        q, requests = self.queue_requests()
        call = self.stub.FullDuplexCall(requests, timeout=self.timeout)
        try:
            for i, (response_size, request_size) in enumerate(steps):
                q.put(self.m.StreamingOutputCallRequest(
                    response_parameters=[self.m.ResponseParameters(size=response_size)],
                    payload=self.payload(request_size)))
                try:
                    response = next(call)
                except StopIteration:
                    raise Failure(f"the response stream ended after {i} responses, expected 4")
                self.check_payload(response.payload, response_size, f"response #{i + 1}")
            q.put(None)
            extra = list(call)
            check(not extra, f"{len(extra)} responses after the half-close, expected none")
            check(call.code() == grpc.StatusCode.OK, f"call ended {call.code().name}")
        finally:
            q.put(None)
            call.cancel()

    def empty_stream(self):
        call = self.stub.FullDuplexCall(iter(()), timeout=self.timeout)
        responses = list(call)
        check(not responses, f"{len(responses)} responses, expected none")
        check(call.code() == grpc.StatusCode.OK, f"call ended {call.code().name}")

    def check_echoed(self, call, what):
        initial = [v for k, v in (call.initial_metadata() or ()) if k == ECHO_INITIAL[0]]
        trailing = [v for k, v in (call.trailing_metadata() or ()) if k == ECHO_TRAILING[0]]
        check(initial == [ECHO_INITIAL[1]],
              f"{what}: initial metadata {ECHO_INITIAL[0]} is {initial}, "
              f"expected [{ECHO_INITIAL[1]!r}]")
        check(trailing == [ECHO_TRAILING[1]],
              f"{what}: trailing metadata {ECHO_TRAILING[0]} is {trailing}, "
              f"expected [{ECHO_TRAILING[1]!r}]")

    def custom_metadata(self):
        metadata = (ECHO_INITIAL, ECHO_TRAILING)
        response, call = self.stub.UnaryCall.with_call(self.large_request(), metadata=metadata,
                                                        timeout=self.timeout)
        self.check_payload(response.payload, 314159, "UnaryCall")
        self.check_echoed(call, "UnaryCall")

        request = self.m.StreamingOutputCallRequest(
            response_parameters=[self.m.ResponseParameters(size=314159)],
            payload=self.payload(271828))
        call = self.stub.FullDuplexCall(iter([request]), metadata=metadata, timeout=self.timeout)
        responses = list(call)
        check(len(responses) == 1, f"FullDuplexCall: {len(responses)} responses, expected 1")
        self.check_payload(responses[0].payload, 314159, "FullDuplexCall")
        self.check_echoed(call, "FullDuplexCall")

    def expect_echoed_status(self, message, with_stream):
        status = self.m.EchoStatus(code=2, message=message)
        try:
            self.stub.UnaryCall(self.m.SimpleRequest(response_status=status), timeout=self.timeout)
            raise Failure("UnaryCall succeeded, expected status 2 (UNKNOWN)")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.UNKNOWN,
                  f"UnaryCall: status {e.code().name}, expected UNKNOWN")
            check(e.details() == message,
                  f"UnaryCall: status message {e.details()!r}, expected {message!r}")
        if not with_stream:
            return
        call = self.stub.FullDuplexCall(
            iter([self.m.StreamingOutputCallRequest(response_status=status)]),
            timeout=self.timeout)
        try:
            responses = list(call)
            raise Failure(f"FullDuplexCall ended OK after {len(responses)} responses, "
                          "expected status 2 (UNKNOWN)")
        except grpc.RpcError:
            pass
        check(call.code() == grpc.StatusCode.UNKNOWN,
              f"FullDuplexCall: status {call.code().name}, expected UNKNOWN")
        check(call.details() == message,
              f"FullDuplexCall: status message {call.details()!r}, expected {message!r}")

    def status_code_and_message(self):
        self.expect_echoed_status("test status message", with_stream=True)

    def special_status_message(self):
        self.expect_echoed_status(SPECIAL_MESSAGE, with_stream=False)

    def unimplemented_method(self):
        try:
            self.stub.UnimplementedCall(self.pb.empty.Empty(), timeout=self.timeout)
            error = None
        except grpc.RpcError as e:
            error = e
        self.expect_status(error, grpc.StatusCode.UNIMPLEMENTED, "TestService/UnimplementedCall")

    def unimplemented_service(self):
        stub = self.pb.services.UnimplementedServiceStub(self.channel)
        try:
            stub.UnimplementedCall(self.pb.empty.Empty(), timeout=self.timeout)
            error = None
        except grpc.RpcError as e:
            error = e
        self.expect_status(error, grpc.StatusCode.UNIMPLEMENTED,
                           "UnimplementedService/UnimplementedCall")

    def cancel_after_begin(self):
        release = threading.Event()

        def nothing():
            release.wait()
            return
            yield  # a generator that sends no message

        mark = self.mark()
        future = self.stub.StreamingInputCall.future(nothing(), timeout=self.timeout)
        try:
            if self.tap is not None:
                self.tap.wait_for(lambda e: e.kind == "headers" and e.direction == C2S,
                                  since=mark, timeout=2.0)
            future.cancel()
        finally:
            release.set()
        check(future.code() == grpc.StatusCode.CANCELLED,
              f"call ended {future.code().name}, expected CANCELLED")

    def cancel_after_first_response(self):
        q, requests = self.queue_requests()
        call = self.stub.FullDuplexCall(requests, timeout=self.timeout)
        try:
            q.put(self.m.StreamingOutputCallRequest(
                response_parameters=[self.m.ResponseParameters(size=31415)],
                payload=self.payload(27182)))
            try:
                response = next(call)
            except StopIteration:
                raise Failure("the response stream ended before the first response")
            self.check_payload(response.payload, 31415, "first response")
            call.cancel()
            try:
                for _ in call:
                    pass
            except grpc.RpcError:
                pass
            check(call.code() == grpc.StatusCode.CANCELLED,
                  f"call ended {call.code().name}, expected CANCELLED")
        finally:
            q.put(None)

    def timeout_on_sleeping_server(self):
        q, requests = self.queue_requests()
        call = self.stub.FullDuplexCall(requests, timeout=0.001)
        try:
            q.put(self.m.StreamingOutputCallRequest(payload=self.payload(27182)))
            try:
                responses = list(call)
                raise Failure(f"call ended OK with {len(responses)} responses, "
                              "expected DEADLINE_EXCEEDED")
            except grpc.RpcError:
                pass
            check(call.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
                  f"call ended {call.code().name}: {call.details()!r}, expected DEADLINE_EXCEEDED")
        finally:
            q.put(None)


# ---- running -------------------------------------------------------------------------------------


def parse_bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def host_port(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_case(name, pb, target, authority, tap, timeout, server):
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"{CONNECT_FAILURE} {server} within {timeout:g} s"
        try:
            getattr(Cases(pb, channel, tap, timeout), name)()
        except Failure as e:
            return str(e)
        except grpc.RpcError as e:
            return f"unexpected RPC error {e.code().name}: {e.details()!r}"
        except Exception as e:  # a bug in the case itself; report it instead of dying
            traceback.print_exc(file=sys.stderr)
            return f"client error {e!r}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server_host", default="localhost")
    parser.add_argument("--server_port", type=int, required=True)
    parser.add_argument("--test_case", default="all",
                        help="a case name, several separated by commas, or 'all'")
    parser.add_argument("--use_tls", type=parse_bool, default=False,
                        help="accepted for compatibility; only false is supported")
    parser.add_argument("--server_host_override", default=None,
                        help="host name to put in :authority instead of --server_host")
    parser.add_argument("--wiretap", type=parse_bool, default=True,
                        help="check compressed flags through a local relay (default true)")
    parser.add_argument("--rpc_timeout", type=float, default=10.0,
                        help="deadline of each call, in seconds (default 10)")
    args = parser.parse_args()
    if args.use_tls:
        parser.error("--use_tls true is not supported: this client speaks plaintext HTTP/2 only")
    names = list(CASES) if args.test_case == "all" else args.test_case.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown test case(s) {', '.join(unknown)}; known: all, {', '.join(CASES)}")

    pb = load_protos()
    host = args.server_host.strip("[]")
    authority = host_port(args.server_host_override or host, args.server_port)
    tap = None
    if args.wiretap:
        tap = WireTap(host, args.server_port)
        target = f"127.0.0.1:{tap.port}"
    else:
        target = host_port(host, args.server_port)
        authority = authority if args.server_host_override else None

    failed = 0
    unreachable = None
    for name in names:
        started = time.monotonic()
        if unreachable:
            reason = f"not run: {unreachable}"
        else:
            reason = run_case(name, pb, target, authority, tap, args.rpc_timeout,
                              host_port(host, args.server_port))
            if reason is not None and reason.startswith(CONNECT_FAILURE):
                unreachable = f"{reason} earlier"
        if reason is None:
            print(f"PASS {name}", flush=True)
        else:
            failed += 1
            print(f"FAIL {name}: {reason}", flush=True)
        print(f"  ({name} took {time.monotonic() - started:.2f} s)", file=sys.stderr, flush=True)
    if tap is not None:
        tap.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
