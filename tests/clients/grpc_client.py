#!/usr/bin/env python3
"""An independent gRPC client (Python grpcio) for floodgate: no generated code, no proto file.

Usage: grpc_client.py HOST:PORT EXPECTED_DIGEST_OF_42

1. Asks grpc.health.v1.Health (grpcio-health-checking) for the server and for
   floodgate.v1.ComputeService: both SERVING; an unknown service is NOT_FOUND.
2. Discovers the services by server reflection (grpcio-reflection, which speaks v1alpha),
   builds the request and response classes from the descriptors it is sent, and checks
   floodgate.v1.ComputeService is listed with its eight methods.
3. Calls Fast(42) and Intensive(42) through those classes: 1764, and the digest the REST API
   gave for 42; the request ID sent as `x-request-id` metadata comes back in the body and the
   initial metadata.
4. Fast(2,000,000) is INVALID_ARGUMENT with rich error details (grpc-status-details-bin).
5. SubmitJob then WatchJob: a stream of statuses ending in JOB_STATUS_SUCCEEDED with result
   and digest.

Prints one JSON line with what it saw; exits non-zero with the reason on any mismatch.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "floodgate.v1.ComputeService"


def main():
    target, expected_digest = sys.argv[1], int(sys.argv[2])
    seen = {}
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", SERVICE]:
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status
            check(status == health_pb2.HealthCheckResponse.SERVING, f"health {name!r}: {status}")
        try:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
            fail("an unknown service was not refused")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.NOT_FOUND, f"unknown service: {e.code()}")
        seen["health"] = "SERVING"

        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = list(reflection.get_services())
        check(SERVICE in services, f"reflection lists {services}")
        check("grpc.health.v1.Health" in services, f"reflection lists {services}")
        pool = descriptor_pool.DescriptorPool(reflection)
        service = pool.FindServiceByName(SERVICE)
        methods = sorted(m.name for m in service.methods)
        check(
            methods == ["CancelJob", "Fast", "GetJob", "Intensive", "RetryJob", "SubmitJob", "SubmitJobs", "WatchJob"],
            f"methods {methods}",
        )
        seen["services"] = services

        def call(method_name, fields, stream=False, metadata=None):
            method = service.methods_by_name[method_name]
            request_class = GetMessageClass(method.input_type)
            response_class = GetMessageClass(method.output_type)
            kind = channel.unary_stream if stream else channel.unary_unary
            stub = kind(
                f"/{SERVICE}/{method_name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            if stream:
                return stub(request_class(**fields), timeout=30, metadata=metadata)
            return stub.with_call(request_class(**fields), timeout=30, metadata=metadata)

        fast, fast_call = call("Fast", {"number": 42}, metadata=[("x-request-id", "py-grpc-1")])
        check(fast.result == 1764 and fast.job_id == 0, f"Fast: {fast}")
        check(fast.request_id == "py-grpc-1", f"request id in the body: {fast.request_id}")
        initial = dict(fast_call.initial_metadata())
        check(initial.get("x-request-id") == "py-grpc-1", f"request id echoed: {initial}")
        intensive, _ = call("Intensive", {"number": 42})
        check(intensive.result == 1764, f"Intensive: {intensive}")
        check(intensive.digest == expected_digest, f"digest {intensive.digest} != {expected_digest}")
        seen["fast"] = fast.result
        seen["digest"] = intensive.digest

        try:
            call("Fast", {"number": 2_000_000})
            fail("2,000,000 was accepted")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"invalid input: {e.code()}")
            trailers = dict(e.trailing_metadata() or ())
            check("grpc-status-details-bin" in trailers, f"no rich details: {trailers}")
            seen["invalid"] = e.code().name

        job, _ = call("SubmitJob", {"number": 7, "rounds": 1000})
        statuses = []
        final = None
        for update in call("WatchJob", {"id": job.id}, stream=True):
            statuses.append(update.status)
            final = update
        succeeded = service.file.enum_types_by_name["JobStatus"].values_by_name[
            "JOB_STATUS_SUCCEEDED"
        ].number
        check(final is not None and final.status == succeeded, f"watched {statuses}")
        check(final.result == 49, f"job result {final.result}")
        seen["watched"] = statuses
    print(json.dumps(seen))


def check(ok, reason):
    if not ok:
        fail(reason)


def fail(reason):
    print(json.dumps({"error": reason}))
    sys.exit(1)


if __name__ == "__main__":
    main()
