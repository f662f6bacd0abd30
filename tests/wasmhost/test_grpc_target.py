"""How the host reads the upstream bytes a plugin passes to ``proxy_grpc_call``: Envoy's rule, never a crash."""

from __future__ import annotations

import random

from envoy.config.core.v3 import grpc_service_pb2

from wasmhost._hostcalls_grpc import GrpcTarget, GrpcTargetError, resolve_grpc_target


def known(name: str) -> bool:
    return name == "grpc"


def test_a_known_cluster_name_is_used_as_is() -> None:
    assert resolve_grpc_target(b"grpc", known) == GrpcTarget("grpc")


def test_a_service_wins_over_a_name_and_keeps_metadata_lowercased_in_order() -> None:
    service = grpc_service_pb2.GrpcService()
    service.envoy_grpc.cluster_name = "grpc"
    service.initial_metadata.add(key="B-Key", value="2")
    service.initial_metadata.add(key="a-key", value="1")
    target = resolve_grpc_target(service.SerializeToString(), known)
    assert target == GrpcTarget("grpc", "", ((b"b-key", b"2"), (b"a-key", b"1")))


def test_hostile_bytes_always_get_an_answer() -> None:
    """Mutations of a valid service and random bytes: a target or a refusal, never an exception."""
    rng = random.Random(20260101)
    service = grpc_service_pb2.GrpcService()
    service.envoy_grpc.cluster_name = "grpc"
    service.initial_metadata.add(key="x", value="y")
    valid = service.SerializeToString()
    answers: set[str] = set()
    for index in range(3000):
        if index % 2:
            mutated = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        else:
            data = rng.randbytes(rng.randint(0, 40))
        result = resolve_grpc_target(data, known)
        assert isinstance(result, GrpcTarget | GrpcTargetError)
        answers.add(type(result).__name__ if isinstance(result, GrpcTarget) else result.status)
    assert answers == {"GrpcTarget", "parse_failure", "bad_argument"}
    assert isinstance(resolve_grpc_target(b"\x0a\x7f" * 200, known), GrpcTargetError)  # deep nesting
