"""The gRPC edge over a real connection: health, reflection, error mapping, drain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from pulsestock.devstack.servers import free_port
from pulsestock.errors import Validator
from pulsestock.eventstore import NO_STREAM, EventStore, NewEvent
from pulsestock.grpckit import GrpcServer, insecure_channel
from pulsestock.grpckit.reflection import V1ServerReflectionRequest, V1ServerReflectionResponse
from pulsestock.inventory_sync.domain.sku import check_sku
from pulsestock.v1 import inventory_sync_events_pb2 as ev
from pulsestock.v1 import inventory_sync_pb2 as pb
from pulsestock.v1 import inventory_sync_pb2_grpc

SERVICE = "pulsestock.v1.InventorySyncService"


class ProbeServicer(inventory_sync_pb2_grpc.InventorySyncServiceServicer):
    """One real RPC through the kit: validates its request, reads the log. Every other RPC
    keeps the generated UNIMPLEMENTED behaviour."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def GetStock(
        self, request: pb.GetStockRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStockResponse:
        validator = Validator()
        check_sku(validator, request.sku)
        validator.raise_if_invalid()
        events = await self.store.read_stream(f"sku-{request.sku}")
        return pb.GetStockResponse(sku=request.sku, stream_version=len(events))


@pytest.fixture
async def server(store: EventStore) -> AsyncIterator[GrpcServer]:
    def register(s: grpc.aio.Server) -> list[str]:
        servicer = ProbeServicer(store)  # type: ignore[abstract]
        inventory_sync_pb2_grpc.add_InventorySyncServiceServicer_to_server(servicer, s)
        return [SERVICE]

    grpc_server = GrpcServer("127.0.0.1", free_port(), register)
    await grpc_server.start()
    yield grpc_server
    await grpc_server.server.stop(0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with insecure_channel(f"127.0.0.1:{server.port}", [SERVICE]) as ch:
        yield ch


async def test_health_reports_serving_for_the_server_and_each_service(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


async def reflect_v1alpha(channel: grpc.aio.Channel, **request: Any) -> Any:
    """One request to a client that speaks only v1alpha (grpcio-reflection's own stub)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))
    async for reply in call:
        return reply
    raise AssertionError("no reflection reply")


async def reflect_v1(channel: grpc.aio.Channel, **request: Any) -> Any:
    """One request to a client that speaks only v1: its own method path and message classes."""
    method = channel.stream_stream(
        f"/{REFLECTION_V1}/ServerReflectionInfo",
        request_serializer=V1ServerReflectionRequest.SerializeToString,
        response_deserializer=V1ServerReflectionResponse.FromString,
    )
    async for reply in method(iter([V1ServerReflectionRequest(**request)]), timeout=5):
        return reply
    raise AssertionError("no reflection reply")


@pytest.mark.parametrize("reflect", [reflect_v1, reflect_v1alpha], ids=["v1", "v1alpha"])
async def test_reflection_lists_the_services(channel: grpc.aio.Channel, reflect: Any) -> None:
    reply = await reflect(channel, list_services="")
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", REFLECTION_V1, REFLECTION_V1ALPHA} <= names


@pytest.mark.parametrize("reflect", [reflect_v1, reflect_v1alpha], ids=["v1", "v1alpha"])
async def test_reflection_describes_the_services(channel: grpc.aio.Channel, reflect: Any) -> None:
    """What `grpcurl describe` does after listing: the file that declares a symbol."""
    for symbol, package in ((SERVICE, "pulsestock.v1"), (REFLECTION_V1, "grpc.reflection.v1")):
        reply = await reflect(channel, file_containing_symbol=symbol)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        declaring = [f for f in files if any(f"{f.package}.{s.name}" == symbol for s in f.service)]
        assert [f.package for f in declaring] == [package]
    reply = await reflect(channel, file_containing_symbol="no.such.Service")
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_bad_request_yields_invalid_argument_with_field_violations(
    channel: grpc.aio.Channel,
) -> None:
    stub = inventory_sync_pb2_grpc.InventorySyncServiceStub(channel)
    for bad_sku, expected in (("", "is required"), ("no spaces!", "letters, digits")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetStock(pb.GetStockRequest(sku=bad_sku), timeout=5)
        error = caught.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(error)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == ["sku"]
        assert expected in bad_request.field_violations[0].description
        assert "Traceback" not in (error.details() or "")


async def test_a_valid_query_reads_the_ledger(channel: grpc.aio.Channel, store: EventStore) -> None:
    await store.append(
        "sku-ABC",
        NO_STREAM,
        [NewEvent.of(ev.StockReceived(sku="ABC", warehouse_id="W1", quantity=9))],
    )
    stub = inventory_sync_pb2_grpc.InventorySyncServiceStub(channel)
    reply = await stub.GetStock(pb.GetStockRequest(sku="ABC"), timeout=5)
    assert (reply.sku, reply.stream_version) == ("ABC", 1)


async def test_unbuilt_rpc_is_unimplemented(channel: grpc.aio.Channel) -> None:
    stub = inventory_sync_pb2_grpc.InventorySyncServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Reserve(pb.ReserveRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_database_down_is_unavailable_without_a_traceback(
    channel: grpc.aio.Channel, pool: asyncpg.Pool
) -> None:
    await pool.close()
    stub = inventory_sync_pb2_grpc.InventorySyncServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetStock(pb.GetStockRequest(sku="ABC"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "reference" in (caught.value.details() or "")
    assert "Traceback" not in (caught.value.details() or "")


async def test_drain_flips_health_to_not_serving(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await server.health.enter_graceful_shutdown()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
