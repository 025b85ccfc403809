"""Drives a Ferry calculator server with Python's grpcio, the reference gRPC peer.

Usage: grpcio_client.py HOST:PORT PROTO_ROOT GOOGLE_API_ROOT OUT_DIR

Generates Python stubs for calculator.proto with grpc_tools, then checks every behaviour below;
prints one "ok: <check>" line per check and exits non-zero on the first failure.
"""

import importlib
import os
import sys

import grpc
from grpc_tools import protoc


def generate_stubs(proto_root, google_api_root, out_dir):
    wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{google_api_root}",
        f"-I{wkt}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "calculator/v1/calculator.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    # No __init__.py files: `google` must stay a namespace package shared with protobuf's.
    sys.path.insert(0, out_dir)


def expect(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def main():
    target, proto_root, google_api_root, out_dir = sys.argv[1:5]
    generate_stubs(proto_root, google_api_root, out_dir)
    pb = importlib.import_module("calculator.v1.calculator_pb2")
    pb_grpc = importlib.import_module("calculator.v1.calculator_pb2_grpc")

    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.CalculatorStub(channel)
        req = pb.CalculateRequest(a=6, b=3)
        expect(stub.Add(req, timeout=5).result == 9, "Add(6, 3) == 9")
        expect(stub.Subtract(req, timeout=5).result == 3, "Subtract(6, 3) == 3")
        expect(stub.Multiply(req, timeout=5).result == 18, "Multiply(6, 3) == 18")
        expect(stub.Divide(req, timeout=5).result == 2, "Divide(6, 3) == 2")

        try:
            stub.Divide(pb.CalculateRequest(a=1, b=0), timeout=5)
            expect(False, "Divide(1, 0) fails")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "Divide(1, 0) is INVALID_ARGUMENT")
            expect("divide 1 by zero" in e.details(), f"the error explains itself: {e.details()!r}")

        try:
            stub.Add(req, timeout=0.2, metadata=[("x-sleep-ms", "3000")])
            expect(False, "a slow call fails")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, "a slow call is DEADLINE_EXCEEDED")

        response, call = stub.Add.with_call(
            req,
            timeout=5,
            metadata=[("x-echo-name", "grpcio"), ("x-echo-blob-bin", b"\x00\xffbytes")],
        )
        received = dict(call.initial_metadata()) | dict(call.trailing_metadata())
        expect(response.result == 9, "a call with metadata succeeds")
        expect(received.get("x-echo-name") == "grpcio", "ASCII metadata is echoed back")
        expect(received.get("x-echo-blob-bin") == b"\x00\xffbytes", "binary metadata is echoed back")

        gz = stub.Multiply(req, timeout=5, compression=grpc.Compression.Gzip)
        expect(gz.result == 18, "a gzip-compressed call works")

        try:
            channel.unary_unary("/calculator.v1.Calculator/Modulo")(b"", timeout=5)
            expect(False, "an unknown method fails")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.UNIMPLEMENTED, "an unknown method is UNIMPLEMENTED")

        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        expect(status == health_pb2.HealthCheckResponse.SERVING, "the server is SERVING")
        status = health.Check(
            health_pb2.HealthCheckRequest(service="calculator.v1.Calculator"), timeout=5
        ).status
        expect(status == health_pb2.HealthCheckResponse.SERVING, "the calculator is SERVING")
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        first = next(watch)
        watch.cancel()
        expect(first.status == health_pb2.HealthCheckResponse.SERVING, "Watch streams SERVING")

        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        expect("calculator.v1.Calculator" in services, f"reflection lists the calculator: {sorted(services)}")
        expect("grpc.health.v1.Health" in services, "reflection lists the health service")
        file = db.FindFileContainingSymbol("calculator.v1.Calculator")
        expect(file.name == "calculator/v1/calculator.proto", "reflection serves calculator.proto")
        methods = [m.name for m in file.service[0].method]
        expect(
            methods == ["Add", "Subtract", "Multiply", "Divide", "Count", "Sum", "RunningSum"],
            f"the descriptor has the methods: {methods}",
        )

    print("all grpcio checks passed", flush=True)


if __name__ == "__main__":
    main()
