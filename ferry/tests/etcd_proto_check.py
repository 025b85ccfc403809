#!/usr/bin/env python3
"""Checks that Ferry's own etcd protos (ferry/proto/etcd/...) are wire-compatible with a real etcd.

It starts a throwaway single-member etcd on free loopback ports in a temporary directory,
generates Python stubs from Ferry's .proto files (not etcd's) with grpc_tools.protoc, and
drives KV, Lease and Watch through them, checking what etcd answers. Every check prints
`ok: ...`; the first failure prints `FAIL: ...` (with the end of etcd's log) and exits 1.
etcd is always stopped.

    /work/main/.venv/bin/python ferry/tests/etcd_proto_check.py [--etcd /usr/bin/etcd] [-v]

Needs etcd 3.4+ (FERRY_ETCD or --etcd, else `etcd` on PATH) and grpcio, grpcio-tools,
protobuf in the running Python.
"""

import argparse
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"
PROTOS = ["etcd/mvccpb/kv.proto", "etcd/etcdserverpb/rpc.proto"]
TIMEOUT = 5.0  # seconds for any single answer from etcd
# Small, so that one revision of 40 x 24 KiB prev_kv'd deletes (960 KiB, above the 64 KiB +
# 512 KiB etcd's watch server allows itself) needs fragments; large enough for every request
# this script sends.
MAX_REQUEST_BYTES = 64 * 1024
PROGRESS_INTERVAL = "1s"

VERBOSE = False


class CheckFailed(Exception):
    pass


def ok(what):
    print(f"ok: {what}", flush=True)


def note(what):
    if VERBOSE:
        print(f"   {what}", flush=True)


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def expect_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")


def expect_rpc_error(fn, code, fragment, what):
    """Calls fn() and expects it to fail with `code` and a message containing `fragment`."""
    try:
        fn()
    except grpc.RpcError as e:
        expect_eq(e.code(), code, f"{what}: status code")
        expect(
            fragment in (e.details() or ""),
            f"{what}: message {e.details()!r} lacks {fragment!r}",
        )
        return e.details()
    raise CheckFailed(f"{what}: succeeded, expected {code}")


def prefix_end(prefix: bytes) -> bytes:
    """The range_end covering every key that starts with `prefix`."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # all-0xff prefix: everything from `prefix` on


# --------------------------------------------------------------------------------------------
# etcd and stubs
# --------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    def __init__(self, binary, workdir: Path):
        self.dir = workdir / "etcd"
        self.dir.mkdir()
        self.log_path = self.dir / "etcd.log"
        client, peer = free_port(), free_port()
        while peer == client:
            peer = free_port()
        self.endpoint = f"127.0.0.1:{client}"
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            binary,
            "--name=ferry-proto-check",
            f"--data-dir={self.dir / 'data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=ferry-proto-check={peer_url}",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
            f"--experimental-watch-progress-notify-interval={PROGRESS_INTERVAL}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        self.log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to this script is ours to forward
            )
        except OSError as e:
            self.log.close()
            raise CheckFailed(f"cannot start {binary!r}: {e} (need etcd 3.4+; --etcd PATH)")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def tail(self, lines=25):
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def generate_stubs(out: Path):
    from grpc_tools import protoc
    import grpc_tools

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise CheckFailed(f"grpc_tools.protoc failed on {PROTOS} under {PROTO_ROOT}")
    # Regular packages, so no unrelated `etcd` package elsewhere on sys.path can shadow ours.
    for d in [out / "etcd", out / "etcd" / "mvccpb", out / "etcd" / "etcdserverpb"]:
        (d / "__init__.py").touch()
    sys.path.insert(0, str(out))
    global pb, pbg, kvpb
    from etcd.etcdserverpb import rpc_pb2 as pb
    from etcd.etcdserverpb import rpc_pb2_grpc as pbg
    from etcd.mvccpb import kv_pb2 as kvpb


_END = object()


class Bidi:
    """A bidirectional stream: send() requests, recv() responses with a timeout."""

    def __init__(self, method):
        self._requests = queue.Queue()
        self._responses = queue.Queue()
        self.call = method(iter(self._requests.get, _END))
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self):
        try:
            for r in self.call:
                self._responses.put(r)
            self._responses.put(_END)
        except grpc.RpcError as e:
            self._responses.put(e)

    def send(self, request):
        self._requests.put(request)

    def recv(self, timeout=TIMEOUT, what="a response"):
        try:
            item = self._responses.get(timeout=timeout)
        except queue.Empty:
            raise CheckFailed(f"no {what} within {timeout}s") from None
        if item is _END:
            raise CheckFailed(f"the stream ended while waiting for {what}")
        if isinstance(item, grpc.RpcError):
            raise CheckFailed(f"the stream failed while waiting for {what}: {item}")
        return item

    def quiet(self, seconds):
        """Nothing arrives for `seconds`."""
        try:
            item = self._responses.get(timeout=seconds)
        except queue.Empty:
            return
        raise CheckFailed(f"expected silence, got {item}")

    def close(self):
        self._requests.put(_END)
        self.call.cancel()
        self._pump.join(timeout=TIMEOUT)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


class Checks:
    def __init__(self, endpoint):
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = pbg.KVStub(self.channel)
        self.lease = pbg.LeaseStub(self.channel)
        self.watch = pbg.WatchStub(self.channel)
        self.cluster = None  # (cluster_id, member_id) of the first header seen
        self.root = b"/ferry-check/"

    # helpers ---------------------------------------------------------------------------------

    def header(self, h, what):
        """Every response carries a header naming one cluster and member, and a revision."""
        expect(h.revision > 0, f"{what}: header.revision is {h.revision}")
        expect(h.raft_term > 0, f"{what}: header.raft_term is {h.raft_term}")
        ids = (h.cluster_id, h.member_id)
        expect(all(ids), f"{what}: header ids {ids}")
        if self.cluster is None:
            self.cluster = ids
        expect_eq(ids, self.cluster, f"{what}: header cluster/member")
        return h.revision

    def put(self, key, value, **kw):
        r = self.kv.Put(pb.PutRequest(key=key, value=value, **kw), timeout=TIMEOUT)
        self.header(r.header, f"put {key!r}")
        return r

    def get(self, key, prefix=False, **kw):
        if prefix:
            kw["range_end"] = prefix_end(key)
        r = self.kv.Range(pb.RangeRequest(key=key, **kw), timeout=TIMEOUT)
        self.header(r.header, f"range {key!r}")
        return r

    def revision(self):
        return self.get(b"\0", range_end=b"\0", count_only=True).header.revision

    def watch_events(self, stream, watch_id, count, what):
        """Collects `count` events for `watch_id`, checking revision order and headers."""
        events, responses = [], 0
        while len(events) < count:
            r = stream.recv(what=f"{what} (have {len(events)} of {count} events)")
            if r.watch_id != watch_id:
                continue
            responses += 1
            expect(not r.created and not r.canceled, f"{what}: unexpected {r}")
            for e in r.events:
                expect(
                    e.kv.mod_revision <= r.header.revision,
                    f"{what}: event at {e.kv.mod_revision} after header {r.header.revision}",
                )
            events.extend(r.events)
        revs = [e.kv.mod_revision for e in events]
        expect_eq(revs, sorted(revs), f"{what}: event revisions in order")
        expect_eq(len(events), count, f"{what}: event count")
        return events, responses

    # checks ----------------------------------------------------------------------------------

    def stubs(self):
        services = {
            "KV": ["Range", "Put", "DeleteRange", "Txn", "Compact"],
            "Watch": ["Watch"],
            "Lease": ["LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "LeaseTimeToLive"],
        }
        for name, methods in services.items():
            s = pb.DESCRIPTOR.services_by_name[name]
            expect_eq(s.full_name, f"etcdserverpb.{name}", "service name")
            expect_eq([m.name for m in s.methods], methods, f"{name} methods")
        streaming = {
            (m.containing_service.name, m.name)
            for s in pb.DESCRIPTOR.services_by_name.values()
            for m in s.methods
            if m.client_streaming or m.server_streaming
        }
        expect_eq(streaming, {("Watch", "Watch"), ("Lease", "LeaseKeepAlive")}, "bidi methods")
        expect_eq(kvpb.DESCRIPTOR.package, "mvccpb", "kv.proto package")
        ok("stubs generated from Ferry's protos: etcdserverpb.{KV,Watch,Lease}, mvccpb")

    def put_range(self):
        p = self.root + b"svc/demo.v1.Demo/"
        outside = [p[:-1] + b"0x", p[:-1] + b"."]  # sort just after / before the prefix
        for k in outside:
            self.put(k, b"outside")
        revs = {}
        for name in [b"127.0.0.1:3", b"127.0.0.1:1", b"127.0.0.1:2"]:
            revs[p + name] = self.put(p + name, name).header.revision
        last = max(revs.values())

        r = self.get(p, prefix=True)
        expect_eq([kv.key for kv in r.kvs], sorted(revs), "prefix range keys, in key order")
        expect_eq(r.count, 3, "prefix range count")
        expect(not r.more, "prefix range: more")
        expect_eq(r.header.revision, last, "range header revision = latest write")
        for kv in r.kvs:
            expect_eq(kv.value, kv.key[len(p):], "value")
            expect_eq((kv.create_revision, kv.mod_revision), (revs[kv.key],) * 2, "revisions")
            expect_eq((kv.version, kv.lease), (1, 0), "version, lease")

        r = self.get(p, prefix=True, limit=2)
        expect_eq((len(r.kvs), r.more, r.count), (2, True, 3), "limit 2: kvs, more, count")
        r = self.get(p, prefix=True, keys_only=True)
        expect_eq([kv.value for kv in r.kvs], [b""] * 3, "keys_only values")
        r = self.get(p, prefix=True, count_only=True)
        expect_eq((len(r.kvs), r.count), (0, 3), "count_only")
        r = self.get(p, prefix=True, serializable=True)
        expect_eq(r.count, 3, "serializable range count")
        one = p + b"127.0.0.1:1"
        r = self.get(one)
        expect_eq([kv.key for kv in r.kvs], [one], "single-key range")

        r = self.put(one, b"moved", prev_kv=True)
        expect_eq(r.prev_kv.value, b"127.0.0.1:1", "put prev_kv")
        expect_eq(r.header.revision, last + 1, "a put bumps the revision by one")
        kv = self.get(one).kvs[0]
        expect_eq((kv.value, kv.version), (b"moved", 2), "updated value and version")
        expect_eq((kv.create_revision, kv.mod_revision), (revs[one], last + 1), "revisions")
        old = self.get(one, revision=last).kvs[0]
        expect_eq(old.value, b"127.0.0.1:1", "range at an older revision")
        r = self.put(one, b"", ignore_value=True, prev_kv=True)
        expect_eq((self.get(one).kvs[0].value, r.prev_kv.value), (b"moved", b"moved"), "ignore_value")
        expect_rpc_error(
            lambda: self.put(p + b"absent", b"", ignore_value=True),
            grpc.StatusCode.INVALID_ARGUMENT,
            "key not found",
            "ignore_value on a missing key",
        )
        expect_rpc_error(
            lambda: self.get(p, revision=self.revision() + 100),
            grpc.StatusCode.OUT_OF_RANGE,
            "future revision",
            "range at a future revision",
        )
        ok("Put/Range: prefix (range_end), limit/more/count, keys_only, count_only, serializable, "
           "revision, prev_kv, ignore_value; header.revision = last write")

    def delete_range(self):
        p = self.root + b"del/"
        for i in range(4):
            self.put(p + b"k%d" % i, b"v%d" % i)
        r = self.kv.DeleteRange(pb.DeleteRangeRequest(key=p + b"k0", prev_kv=True), timeout=TIMEOUT)
        rev = self.header(r.header, "delete one")
        expect_eq((r.deleted, [kv.value for kv in r.prev_kvs]), (1, [b"v0"]), "delete one")
        r = self.kv.DeleteRange(pb.DeleteRangeRequest(key=p + b"k0"), timeout=TIMEOUT)
        expect_eq((r.deleted, r.header.revision), (0, rev), "deleting nothing keeps the revision")
        r = self.kv.DeleteRange(
            pb.DeleteRangeRequest(key=p, range_end=prefix_end(p)), timeout=TIMEOUT
        )
        expect_eq((r.deleted, r.header.revision, len(r.prev_kvs)), (3, rev + 1, 0),
                  "a prefix delete is one revision; no prev_kvs unless asked")
        expect_eq(self.get(p, prefix=True).count, 0, "prefix empty after delete")
        ok("DeleteRange: single key with prev_kv, nothing (same revision), whole prefix (one revision)")

    def txn(self):
        key = self.root + b"txn/instance"

        def register(value):
            absent = pb.Compare(
                key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL, create_revision=0
            )
            return self.kv.Txn(
                pb.TxnRequest(
                    compare=[absent],
                    success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value))],
                    failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))],
                ),
                timeout=TIMEOUT,
            )

        r = register(b"first")
        self.header(r.header, "txn")
        expect(r.succeeded, "create-if-absent on a new key succeeds")
        expect_eq(r.responses[0].WhichOneof("response"), "response_put", "success response kind")
        rev = r.header.revision
        r = register(b"second")
        expect(not r.succeeded, "create-if-absent on an existing key fails")
        expect_eq(r.responses[0].WhichOneof("response"), "response_range", "failure response kind")
        kv = r.responses[0].response_range.kvs[0]
        expect_eq((kv.value, kv.create_revision), (b"first", rev), "failure branch read")
        expect_eq(r.header.revision, rev, "a read-only txn keeps the revision")

        # Compare-and-swap on the value, and on mod_revision, with a range_end compare too.
        cas = pb.TxnRequest(
            compare=[
                pb.Compare(key=key, target=pb.Compare.VALUE, result=pb.Compare.EQUAL, value=b"first"),
                pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.LESS, mod_revision=rev + 1),
                pb.Compare(key=self.root + b"txn/", range_end=prefix_end(self.root + b"txn/"),
                           target=pb.Compare.VERSION, result=pb.Compare.GREATER, version=0),
            ],
            success=[
                pb.RequestOp(request_put=pb.PutRequest(key=key, value=b"swapped")),
                pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key + b"-x")),
            ],
        )
        r = self.kv.Txn(cas, timeout=TIMEOUT)
        expect(r.succeeded, "compare-and-swap succeeds")
        expect_eq([x.WhichOneof("response") for x in r.responses],
                  ["response_put", "response_delete_range"], "responses in request order")
        expect_eq(r.header.revision, rev + 1, "a txn with writes is one revision")
        expect(not self.kv.Txn(cas, timeout=TIMEOUT).succeeded, "the same swap again fails")
        ok("Txn: create-if-absent (create_revision == 0) put/range branches, value/mod/range compares")

    def lease_grant(self):
        r = self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=10), timeout=TIMEOUT)
        self.header(r.header, "lease grant")
        expect(r.ID != 0 and r.TTL == 10 and r.error == "", f"grant: {r}")
        lease = r.ID
        key = self.root + b"lease/instance"
        self.put(key, b"addr", lease=lease)
        expect_eq(self.get(key).kvs[0].lease, lease, "the key carries the lease id")
        t = self.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease, keys=True), timeout=TIMEOUT)
        self.header(t.header, "time to live")
        expect(0 < t.TTL <= 10, f"time to live TTL {t.TTL}")
        expect_eq((t.ID, t.grantedTTL, list(t.keys)), (lease, 10, [key]), "time to live")

        chosen = 0x0FE22E7C0FFEE
        r = self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=5, ID=chosen), timeout=TIMEOUT)
        expect_eq(r.ID, chosen, "a client-chosen lease id")
        expect_rpc_error(
            lambda: self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=5, ID=chosen), timeout=TIMEOUT),
            grpc.StatusCode.FAILED_PRECONDITION,
            "lease already exists",
            "granting an existing id",
        )
        r = self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=1), timeout=TIMEOUT)
        note(f"asked TTL 1, granted TTL {r.TTL}")
        expect(r.TTL >= 1, "granted TTL")
        self.min_ttl = r.TTL
        self.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=r.ID), timeout=TIMEOUT)
        self.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=chosen), timeout=TIMEOUT)
        self.lease_id, self.lease_key = lease, key
        ok(f"LeaseGrant/Put with lease/LeaseTimeToLive(keys): id, TTL, grantedTTL, keys; chosen id; "
           f"TTL 1 granted as {self.min_ttl}")

    def keep_alive_and_revoke(self):
        lease, key = self.lease_id, self.lease_key
        other = self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=7), timeout=TIMEOUT).ID
        ka = Bidi(self.lease.LeaseKeepAlive)
        try:
            for round in range(3):
                # Two leases on one stream: one answer per request, in request order.
                ka.send(pb.LeaseKeepAliveRequest(ID=lease))
                ka.send(pb.LeaseKeepAliveRequest(ID=other))
                a, b = ka.recv(what="keep-alive answer"), ka.recv(what="keep-alive answer")
                self.header(a.header, "keep-alive")
                expect_eq([(a.ID, a.TTL), (b.ID, b.TTL)], [(lease, 10), (other, 7)],
                          f"round {round}: keep-alive answers")
                time.sleep(1.1)
            t = self.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease), timeout=TIMEOUT)
            expect(t.TTL >= 8, f"kept alive: {t.TTL}s left of 10")
            ok("LeaseKeepAlive (bidi): 3 rounds, two leases on one stream, answers in order, TTL renewed")

            r = self.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease), timeout=TIMEOUT)
            self.header(r.header, "revoke")
            expect_eq(self.get(key).count, 0, "the key goes with its revoked lease")
            t = self.lease.LeaseTimeToLive(pb.LeaseTimeToLiveRequest(ID=lease, keys=True), timeout=TIMEOUT)
            expect_eq((t.ID, t.TTL, list(t.keys)), (lease, -1, []), "time to live of a revoked lease")
            ka.send(pb.LeaseKeepAliveRequest(ID=lease))
            a = ka.recv(what="keep-alive answer for a revoked lease")
            expect_eq((a.ID, a.TTL), (lease, 0), "keep-alive of a gone lease answers TTL 0")
            note(f"keep-alive of a revoked lease: {a}".replace("\n", " "))
            ka.send(pb.LeaseKeepAliveRequest(ID=other))
            b = ka.recv(what="keep-alive answer after a TTL 0 one")
            expect_eq((b.ID, b.TTL), (other, 7), "the stream stays usable after TTL 0")
            expect_rpc_error(
                lambda: self.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lease), timeout=TIMEOUT),
                grpc.StatusCode.NOT_FOUND,
                "requested lease not found",
                "revoking a gone lease",
            )
            expect_rpc_error(
                lambda: self.put(key, b"x", lease=lease),
                grpc.StatusCode.NOT_FOUND,
                "requested lease not found",
                "put with a gone lease",
            )
            ok("LeaseRevoke: key deleted, TimeToLive TTL -1, KeepAlive answers TTL 0 on an open "
               "stream, revoke/put with the gone lease -> NOT_FOUND")
        finally:
            ka.close()
            self.lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=other), timeout=TIMEOUT)

    def watch_history_and_live(self):
        p = self.root + b"watch/svc/"
        k = p + b"10.0.0.1:80"
        rev0 = self.revision()
        self.put(k, b"v1")  # rev0 + 1
        self.put(k, b"v2")  # rev0 + 2
        self.kv.DeleteRange(pb.DeleteRangeRequest(key=k), timeout=TIMEOUT)  # rev0 + 3
        self.put(self.root + b"watch/other", b"x")  # rev0 + 4, outside the prefix

        w = Bidi(self.watch.Watch)
        try:
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=p, range_end=prefix_end(p), start_revision=rev0 + 1, prev_kv=True)))
            c = w.recv(what="created")
            self.header(c.header, "watch created")
            expect(c.created and not c.canceled and not c.events, f"created response: {c}")
            wid = c.watch_id
            note(f"first server-chosen watch_id on a stream: {wid}; created header.revision "
                 f"{c.header.revision} (store at {rev0 + 4})")
            events, _ = self.watch_events(w, wid, 3, "history replay")
            got = [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision, e.kv.version,
                    e.prev_kv.value if e.HasField("prev_kv") else None) for e in events]
            want = [
                (kvpb.Event.PUT, k, b"v1", rev0 + 1, 1, None),
                (kvpb.Event.PUT, k, b"v2", rev0 + 2, 2, b"v1"),
                (kvpb.Event.DELETE, k, b"", rev0 + 3, 0, b"v2"),
            ]
            expect_eq(got, want, "replayed events (type, key, value, mod_revision, version, prev)")
            ok("Watch (bidi) from a past start_revision on a prefix: created=true first, then "
               "PUT, PUT(prev_kv), DELETE(prev_kv) in revision order; keys outside skipped")

            r = self.put(p + b"live", b"1")
            events, _ = self.watch_events(w, wid, 1, "live event")
            expect_eq((events[0].type, events[0].kv.mod_revision), (kvpb.Event.PUT, r.header.revision),
                      "live PUT at the put's revision")

            # A second watcher on the same stream, with a chosen id and a NOPUT filter.
            single = p + b"filtered"
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=single, watch_id=42, filters=[pb.WatchCreateRequest.NOPUT])))
            c = w.recv(what="created for watch_id 42")
            expect_eq((c.created, c.watch_id), (True, 42), "client-chosen watch_id")
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=single, watch_id=42)))
            c = w.recv(what="answer to a duplicate watch_id")
            note(f"duplicate watch_id answer: {c}".replace("\n", " "))
            # Refused creations come back created+canceled with watch_id -1 (not the asked id),
            # so a client must pair create answers with its create requests by order.
            expect(c.watch_id == -1 and c.created and c.canceled and "duplicate" in c.cancel_reason,
                   f"duplicate watch_id is refused as created+canceled, watch_id -1: {c}")
            self.put(single, b"a")
            self.kv.DeleteRange(pb.DeleteRangeRequest(key=single), timeout=TIMEOUT)
            seen = {}
            while sum(len(v) for v in seen.values()) < 3:  # 2 for the prefix, 1 for 42
                r = w.recv(what="events for both watchers")
                seen.setdefault(r.watch_id, []).extend(e.type for e in r.events)
            expect_eq(seen, {wid: [kvpb.Event.PUT, kvpb.Event.DELETE], 42: [kvpb.Event.DELETE]},
                      "events demultiplexed by watch_id, NOPUT filtered")
            ok("Watch: live events, second watcher with chosen watch_id=42 and NOPUT filter on the "
               "same stream; a duplicate id is refused (created+canceled, watch_id -1, cancel_reason)")

            # Ask for progress: an event-less answer carrying the current revision.
            now = self.revision()
            w.send(pb.WatchRequest(progress_request=pb.WatchProgressRequest()))
            r = w.recv(what="progress answer")
            note(f"progress answer: watch_id={r.watch_id} revision={r.header.revision}")
            expect(not r.events and not r.created and not r.canceled, f"progress answer: {r}")
            expect_eq(r.header.revision, now, "progress header.revision = store revision")
            ok(f"Watch progress_request: event-less answer, header.revision = current "
               f"(watch_id {r.watch_id})")

            # Cancel both watchers.
            for cancel in (wid, 42):
                w.send(pb.WatchRequest(cancel_request=pb.WatchCancelRequest(watch_id=cancel)))
                r = w.recv(what=f"cancel answer for {cancel}")
                expect_eq((r.watch_id, r.canceled, r.compact_revision, len(r.events)),
                          (cancel, True, 0, 0), "cancel answer")
            self.put(p + b"after-cancel", b"x")
            w.quiet(1.0)
            ok("WatchCancelRequest: canceled=true for the id, no further events")
        finally:
            w.close()

    def watch_progress_notify(self):
        p = self.root + b"quiet/"
        w = Bidi(self.watch.Watch)
        try:
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=p, range_end=prefix_end(p), progress_notify=True)))
            c = w.recv(what="created")
            expect(c.created, "created")
            self.put(self.root + b"elsewhere", b"x")
            now = self.revision()
            deadline = time.monotonic() + 4 * TIMEOUT
            while True:
                r = w.recv(timeout=max(0.1, deadline - time.monotonic()), what="progress notification")
                expect(not r.events, f"no events on an idle prefix: {r}")
                if r.header.revision >= now:
                    break
            expect_eq(r.watch_id, c.watch_id, "progress notification watch_id")
            ok(f"Watch progress_notify: periodic event-less answer for the watcher (interval "
               f"{PROGRESS_INTERVAL} here), header.revision advanced to {r.header.revision} by "
               f"writes elsewhere")
        finally:
            w.close()

    def lease_expiry(self):
        key = self.root + b"expiry/instance"
        g = self.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=1), timeout=TIMEOUT)
        put = self.put(key, b"x", lease=g.ID)
        w = Bidi(self.watch.Watch)
        try:
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=key, start_revision=put.header.revision + 1, prev_kv=True)))
            c = w.recv(what="created")
            start = time.monotonic()
            events, _ = self.watch_events(w, c.watch_id, 1, "expiry DELETE")
            took = time.monotonic() - start
            e = events[0]
            expect_eq((e.type, e.kv.key, e.prev_kv.lease), (kvpb.Event.DELETE, key, g.ID),
                      "expiry is a DELETE event")
            expect(took < g.TTL + 3, f"expired after {took:.1f}s with TTL {g.TTL}")
            ka = Bidi(self.lease.LeaseKeepAlive)
            try:
                ka.send(pb.LeaseKeepAliveRequest(ID=g.ID))
                a = ka.recv(what="keep-alive for an expired lease")
                expect_eq((a.ID, a.TTL), (g.ID, 0), "keep-alive of an expired lease: TTL 0")
            finally:
                ka.close()
            ok(f"lease expiry: granted TTL {g.TTL}s, key deleted as a DELETE event after "
               f"{took:.1f}s, then KeepAlive answers TTL 0")
        finally:
            w.close()

    def fragment(self):
        p = self.root + b"big/"
        # etcd splits when a response exceeds max-request-bytes plus a 512 KiB gRPC allowance.
        n, size = 40, 24 * 1024
        for i in range(n):
            self.put(p + b"%02d" % i, bytes([65 + i % 26]) * size)
        w = Bidi(self.watch.Watch)
        try:
            for wid, frag in ((1, True), (2, False)):
                w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                    key=p, range_end=prefix_end(p), prev_kv=True, watch_id=wid, fragment=frag)))
                expect(w.recv(what="created").created, "created")
            d = self.kv.DeleteRange(pb.DeleteRangeRequest(key=p, range_end=prefix_end(p)), timeout=TIMEOUT)
            expect_eq(d.deleted, n, "deleted")
            parts = {1: [], 2: []}
            while sum(len(es) for got in parts.values() for _, es in got) < 2 * n:
                r = w.recv(what="fragmented delete events")
                parts[r.watch_id].append((r.fragment, list(r.events)))
            flags = [f for f, _ in parts[1]]
            expect(len(parts[1]) > 1, "the fragmenting watcher got several responses")
            expect_eq(flags, [True] * (len(flags) - 1) + [False], "fragment=true on all but the last")
            expect_eq(len(parts[2]), 1, "the other watcher got one whole response")
            for wid in (1, 2):
                events = [e for _, es in parts[wid] for e in es]
                expect_eq({e.kv.mod_revision for e in events}, {d.header.revision}, "one revision")
                expect_eq(len({e.kv.key for e in events}), n, "every key once")
            ok(f"Watch fragment: {n} x {size // 1024} KiB prev_kv deletes at one revision arrive as "
               f"{len(flags)} responses (fragment=true until the last) vs 1 without fragment "
               f"(--max-request-bytes={MAX_REQUEST_BYTES})")
        finally:
            w.close()

    def compaction(self):
        p = self.root + b"compact/"
        old = self.put(p + b"k", b"old").header.revision
        self.put(p + b"k", b"new")
        now = self.revision()
        r = self.kv.Compact(pb.CompactionRequest(revision=now, physical=True), timeout=TIMEOUT)
        self.header(r.header, "compact")
        expect_rpc_error(lambda: self.get(p, prefix=True, revision=old),
                         grpc.StatusCode.OUT_OF_RANGE, "required revision has been compacted",
                         "range at a compacted revision")
        expect_rpc_error(lambda: self.kv.Compact(pb.CompactionRequest(revision=old), timeout=TIMEOUT),
                         grpc.StatusCode.OUT_OF_RANGE, "required revision has been compacted",
                         "compacting again below the compaction")
        expect_eq(self.get(p, prefix=True, revision=now).kvs[0].value, b"new", "range at the compaction")
        w = Bidi(self.watch.Watch)
        try:
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=p, range_end=prefix_end(p), start_revision=old)))
            first = w.recv(what="answer to a watch from a compacted revision")
            seq = [first]
            if first.created and not first.canceled:
                seq.append(w.recv(what="cancellation after created"))
            last = seq[-1]
            note("compacted watch answers: " + " | ".join(
                f"created={r.created} canceled={r.canceled} compact_revision={r.compact_revision} "
                f"cancel_reason={r.cancel_reason!r} watch_id={r.watch_id}" for r in seq))
            expect(last.canceled, f"the watcher is cancelled: {last}")
            expect_eq(last.compact_revision, now, "compact_revision = the compaction revision")
            expect_eq(last.watch_id, first.watch_id, "same watch_id")
            # Watching again from compact_revision works.
            w.send(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=p, range_end=prefix_end(p), start_revision=last.compact_revision)))
            c = w.recv(what="created from compact_revision")
            expect(c.created and not c.canceled, f"created: {c}")
            events, _ = self.watch_events(w, c.watch_id, 1, "event at the compaction revision")
            expect_eq((events[0].kv.value, events[0].kv.mod_revision), (b"new", now), "event")
            ok(f"Compact + Watch from a compacted revision: " +
               ("created, then " if len(seq) > 1 else "") +
               f"canceled=true with compact_revision={now}; Range there -> OUT_OF_RANGE; "
               f"re-watch from compact_revision works")
        finally:
            w.close()


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--etcd", default=os.environ.get("FERRY_ETCD") or shutil.which("etcd") or "etcd")
    ap.add_argument("-v", "--verbose", action="store_true", help="print what etcd answered")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    VERBOSE = args.verbose

    # SIGTERM/SIGHUP become exceptions so the `finally` below stops etcd.
    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    work = Path(tempfile.mkdtemp(prefix="ferry-etcd-proto-"))
    etcd = None
    failed = True
    try:
        generate_stubs(work / "stubs")
        etcd = Etcd(args.etcd, work)
        version = subprocess.run([args.etcd, "--version"], capture_output=True, text=True).stdout
        print(f"etcd {version.splitlines()[0].split()[-1]} at {etcd.endpoint} (pid {etcd.proc.pid})",
              flush=True)
        checks = Checks(etcd.endpoint)
        deadline = time.monotonic() + 20
        while True:
            try:
                checks.kv.Range(pb.RangeRequest(key=b"probe"), timeout=1)
                break
            except grpc.RpcError:
                if etcd.proc.poll() is not None or time.monotonic() > deadline:
                    raise CheckFailed("etcd did not come up") from None
                time.sleep(0.2)
        for check in [
            checks.stubs,
            checks.put_range,
            checks.delete_range,
            checks.txn,
            checks.lease_grant,
            checks.keep_alive_and_revoke,
            checks.watch_history_and_live,
            checks.watch_progress_notify,
            checks.lease_expiry,
            checks.fragment,
            checks.compaction,
        ]:
            check()
        checks.channel.close()
        failed = False
        print("all etcd wire checks passed", flush=True)
    except CheckFailed as e:
        print(f"FAIL: {e}", file=sys.stderr, flush=True)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e})", file=sys.stderr, flush=True)
    finally:
        if etcd is not None:
            if failed:
                print(f"--- end of etcd's log ---\n{etcd.tail()}", file=sys.stderr, flush=True)
            etcd.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
