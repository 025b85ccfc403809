"""Shared pieces of Ferry's Python gRPC interop peers (interop_server.py, interop_client.py).

* ``load_protos()`` compiles ../proto/grpc/testing/*.proto with grpc_tools.protoc into a fresh
  temporary directory (removed at exit) and imports the generated modules. Nothing generated is
  ever written next to the sources.

* ``WireTap`` is a transparent TCP relay that reads the HTTP/2 frames passing through it without
  changing a byte. grpcio hides the gRPC message header from applications: neither a grpcio
  server nor a grpcio client can tell whether a message arrived with the compressed flag set, and
  C-core strips ``grpc-encoding`` from the metadata it hands over. The interop cases about
  compression are all about that flag, so both peers route their connections through a tap and
  read the flag of every length-prefixed message from the frames themselves.

  The tap only parses what it needs: the client connection preface, the 9-byte frame headers,
  DATA payloads (minus padding) reassembled per stream into gRPC messages (1 flag byte, 4-byte
  big-endian length, body), HEADERS and RST_STREAM. It never decodes HPACK, so it does not know
  method paths; callers correlate by order (the client makes one call at a time) or by message
  content (the server hashes the exact request bytes grpcio handed it and looks for the same
  bytes, decompressed if needed, among what the tap saw).
"""

import atexit
import collections
import hashlib
import itertools
import os
import shutil
import socket
import sys
import tempfile
import threading
import types
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(os.path.dirname(HERE), "proto")
PROTO_FILES = (
    "grpc/testing/empty.proto",
    "grpc/testing/messages.proto",
    "grpc/testing/test.proto",
)


def load_protos():
    """Generates the grpc.testing stubs into a temporary directory and imports them.

    Returns a namespace with ``empty`` (empty_pb2), ``messages`` (messages_pb2) and ``services``
    (test_pb2_grpc).
    """
    from grpc_tools import protoc

    out_dir = tempfile.mkdtemp(prefix="ferry-grpc-interop-")
    atexit.register(shutil.rmtree, out_dir, True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *PROTO_FILES,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + ", ".join(PROTO_FILES))

    # The generated modules live in the Python package `grpc.testing` (the proto package is
    # grpc.testing and the files sit under grpc/testing/), but `grpc` is grpcio's own regular
    # package, which has no `testing` subpackage. Adding the generated grpc/ directory to its
    # search path lets `grpc.testing` resolve to the generated files (as a namespace package)
    # without touching grpcio itself.
    import grpc

    grpc.__path__.append(os.path.join(out_dir, "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

    return types.SimpleNamespace(empty=empty_pb2, messages=messages_pb2, services=test_pb2_grpc)


def status_code_from_number(number):
    """The grpc.StatusCode for a numeric code, or None if grpcio has no such code."""
    import grpc

    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return None


# --------------------------------------------------------------------------------------------
# The wiretap
# --------------------------------------------------------------------------------------------

C2S = "client->server"
S2C = "server->client"

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM = 0x0, 0x1, 0x3
_FLAG_END_STREAM, _FLAG_PADDED, _FLAG_PRIORITY = 0x1, 0x8, 0x20


class TapEvent:
    """One thing the tap saw. ``kind`` is "headers", "message", "rst" or "end"."""

    __slots__ = ("seq", "conn", "direction", "kind", "stream", "compressed", "length",
                 "digest", "code", "consumed")

    def __init__(self, conn, direction, kind, stream, compressed=None, length=None,
                 digest=None, code=None):
        self.seq = 0
        self.conn = conn
        self.direction = direction
        self.kind = kind
        self.stream = stream
        self.compressed = compressed  # messages: the gRPC compressed flag (bit 0 of byte 0)
        self.length = length  # messages: the length from the prefix (as sent, compressed or not)
        self.digest = digest  # messages: sha256 of the uncompressed body, None if undecodable
        self.code = code  # rst: the HTTP/2 error code
        self.consumed = False

    def __repr__(self):
        extra = ""
        if self.kind == "message":
            extra = f" compressed={self.compressed} length={self.length}"
        elif self.kind == "rst":
            extra = f" code={self.code}"
        return f"<{self.kind} conn={self.conn} {self.direction} stream={self.stream}{extra}>"


def _decompressed(body):
    """The body of a compressed gRPC message, trying gzip, zlib ("deflate") and raw deflate."""
    for wbits in (16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS):
        try:
            return zlib.decompress(body, wbits)
        except zlib.error:
            continue
    return None


class _FrameParser:
    """Follows one direction of one HTTP/2 connection; never raises into the relay."""

    def __init__(self, tap, conn, direction):
        self.tap = tap
        self.conn = conn
        self.direction = direction
        self.buf = bytearray()
        self.awaiting_preface = direction == C2S
        self.streams = {}
        self.broken = False

    def feed(self, data):
        if self.broken:
            return
        try:
            self._feed(data)
        except Exception as e:  # a tap bug must not break the connection it watches
            self.broken = True
            print(f"wiretap: stopped parsing {self.direction} of connection {self.conn}: {e!r}",
                  file=sys.stderr, flush=True)

    def _feed(self, data):
        self.buf += data
        if self.awaiting_preface:
            if len(self.buf) < len(_PREFACE):
                if not _PREFACE.startswith(bytes(self.buf)):
                    raise ValueError("not an HTTP/2 prior-knowledge connection")
                return
            if bytes(self.buf[: len(_PREFACE)]) != _PREFACE:
                raise ValueError("not an HTTP/2 prior-knowledge connection")
            del self.buf[: len(_PREFACE)]
            self.awaiting_preface = False
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                return
            ftype, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9 : 9 + length])
            del self.buf[: 9 + length]
            self._frame(ftype, flags, stream, payload)

    def _frame(self, ftype, flags, stream, payload):
        if ftype == _DATA:
            if flags & _FLAG_PADDED:
                pad = payload[0]
                payload = payload[1 : len(payload) - pad]
            grpc_bytes = self.streams.setdefault(stream, bytearray())
            grpc_bytes += payload
            self._messages(stream, grpc_bytes)
            if flags & _FLAG_END_STREAM:
                self.streams.pop(stream, None)
                self.tap._record(TapEvent(self.conn, self.direction, "end", stream))
        elif ftype == _HEADERS:
            self.tap._record(TapEvent(self.conn, self.direction, "headers", stream))
            if flags & _FLAG_END_STREAM:
                self.streams.pop(stream, None)
                self.tap._record(TapEvent(self.conn, self.direction, "end", stream))
        elif ftype == _RST_STREAM:
            self.streams.pop(stream, None)
            code = int.from_bytes(payload[:4], "big")
            self.tap._record(TapEvent(self.conn, self.direction, "rst", stream, code=code))

    def _messages(self, stream, grpc_bytes):
        while len(grpc_bytes) >= 5:
            length = int.from_bytes(grpc_bytes[1:5], "big")
            if len(grpc_bytes) < 5 + length:
                return
            compressed = bool(grpc_bytes[0] & 1)
            body = bytes(grpc_bytes[5 : 5 + length])
            del grpc_bytes[: 5 + length]
            plain = _decompressed(body) if compressed else body
            digest = hashlib.sha256(plain).hexdigest() if plain is not None else None
            self.tap._record(TapEvent(self.conn, self.direction, "message", stream,
                                      compressed=compressed, length=length, digest=digest))


class WireTap:
    """A byte-for-byte TCP relay to ``upstream`` that records what the HTTP/2 frames carry.

    Every chunk is parsed *before* it is forwarded, so by the time a peer has received a message
    the tap has already recorded it.
    """

    def __init__(self, upstream_host, upstream_port, listen_host="127.0.0.1", listen_port=0,
                 history=20000):
        self.upstream = (upstream_host, upstream_port)
        if listen_host in ("", "::") and socket.has_dualstack_ipv6():
            self._listener = socket.create_server(("", listen_port), family=socket.AF_INET6,
                                                  dualstack_ipv6=True)
        else:
            self._listener = socket.create_server(
                ("0.0.0.0" if listen_host in ("", "::") else listen_host, listen_port))
        self.port = self._listener.getsockname()[1]
        self._events = collections.deque(maxlen=history)
        self._next_seq = 0
        self._cond = threading.Condition()
        self._conn_ids = itertools.count(1)
        self._sockets = set()
        self._conn_by_upstream_port = {}
        self._closed = False
        threading.Thread(target=self._accept_loop, name="wiretap-accept", daemon=True).start()

    # ---- recording and queries ----

    def _record(self, event):
        with self._cond:
            event.seq = self._next_seq
            self._next_seq += 1
            self._events.append(event)
            self._cond.notify_all()

    def mark(self):
        """A position in the record; pass it as ``since`` to see only what came after."""
        with self._cond:
            return self._next_seq

    def events(self, since=0, kind=None, direction=None):
        with self._cond:
            return [e for e in self._events
                    if e.seq >= since and (kind is None or e.kind == kind)
                    and (direction is None or e.direction == direction)]

    def wait_for(self, predicate, since=0, timeout=5.0):
        """The first event at or after ``since`` for which ``predicate`` holds, or None."""
        with self._cond:
            found = [None]

            def ready():
                for e in self._events:
                    if e.seq >= since and predicate(e):
                        found[0] = e
                        return True
                return False

            self._cond.wait_for(ready, timeout)
            return found[0]

    def connection_of(self, upstream_port):
        """The tap's id for the relayed connection whose upstream socket has this local port."""
        with self._cond:
            return self._conn_by_upstream_port.get(upstream_port)

    def take_request(self, raw, upstream_port=None, timeout=2.0):
        """Whether the client->server message with exactly these (uncompressed) bytes arrived
        compressed: True, False, or None if the tap never saw it.

        ``upstream_port`` is the peer port the upstream server saw (grpcio's ``context.peer()``);
        it confines the search to that one relayed connection, so concurrent clients sending
        identical requests are not confused. Within the connection the newest such message not
        taken before wins, so two identical requests sent one after the other (the compression
        probe and the real call) are told apart.
        """
        digest = hashlib.sha256(raw).hexdigest()
        with self._cond:
            conn = self._conn_by_upstream_port.get(upstream_port)
            hit = [None]

            def ready():
                for e in reversed(self._events):
                    if (e.kind == "message" and e.direction == C2S and not e.consumed
                            and e.digest == digest and (conn is None or e.conn == conn)):
                        hit[0] = e
                        return True
                return False

            self._cond.wait_for(ready, timeout)
            if hit[0] is None:
                return None
            hit[0].consumed = True
            return hit[0].compressed

    # ---- relaying ----

    def close(self):
        self._closed = True
        for s in [self._listener, *list(self._sockets)]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept_loop(self):
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(down,), name="wiretap-conn",
                             daemon=True).start()

    def _relay(self, down):
        conn = next(self._conn_ids)
        try:
            up = socket.create_connection(self.upstream, timeout=10)
            up.settimeout(None)
        except OSError as e:
            print(f"wiretap: cannot reach {self.upstream[0]}:{self.upstream[1]}: {e}",
                  file=sys.stderr, flush=True)
            down.close()
            return
        upstream_port = up.getsockname()[1]
        with self._cond:
            self._conn_by_upstream_port[upstream_port] = conn
        for s in (down, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets.add(s)
        pumps = [
            threading.Thread(target=self._pump, args=(down, up, _FrameParser(self, conn, C2S)),
                             daemon=True),
            threading.Thread(target=self._pump, args=(up, down, _FrameParser(self, conn, S2C)),
                             daemon=True),
        ]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join()
        with self._cond:
            if self._conn_by_upstream_port.get(upstream_port) == conn:
                del self._conn_by_upstream_port[upstream_port]
        for s in (down, up):
            self._sockets.discard(s)
            s.close()

    @staticmethod
    def _pump(src, dst, parser):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                parser.feed(data)
                dst.sendall(data)
            # Orderly end of one direction: pass the half-close on.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            # A reset or an error on either side: end both directions.
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
