"""Master data over gRPC through the real service: warehouses, suppliers with lead-time
options and SKU economics are stored and read back; bad values and references to unknown
records are refused with field violations and store nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1 import fulfillment_pb2 as pb
from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.fulfillment_pb2_grpc import FulfillmentServiceStub

from tests.helpers.grpc_errors import field_violations
from tests.helpers.infra import Infra, drop_schema, unique_name
from tests.helpers.service import running_service

pytestmark = pytest.mark.slow


@pytest.fixture
async def api(infra: Infra, nats_url: str) -> AsyncIterator[FulfillmentServiceStub]:
    schema = unique_name("ful")
    async with running_service("fulfillment", infra.database_url, nats_url, schema) as svc:
        yield FulfillmentServiceStub(svc.channel)
    await drop_schema(infra.database_url, schema)


def sea_and_air(delivers_to: str = "wh-east") -> ev.SupplierProfile:
    return ev.SupplierProfile(
        supplier_id="acme",
        options=[
            ev.LeadTimeOptionProfile(
                mode="sea",
                lead_time_hours=ev.LeadTimeHours(mean=720, sd=72),
                unit_cost=4.0,
                moq=500,
                case_pack=50,
                delivers_to=[delivers_to],
            ),
            ev.LeadTimeOptionProfile(
                mode="air",
                lead_time_hours=ev.LeadTimeHours(mean=120, sd=24),
                unit_cost=6.5,
                moq=50,
                case_pack=10,
                delivers_to=[delivers_to],
            ),
        ],
    )


async def refused(call: object) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(caught.value)


async def test_master_data_round_trip_and_refusals(api: FulfillmentServiceStub) -> None:
    # References to records that do not exist yet are refused, naming the field.
    assert await refused(api.SetSupplier(pb.SetSupplierRequest(supplier=sea_and_air()))) == {
        "supplier.options[0].delivers_to": "unknown warehouse 'wh-east'",
        "supplier.options[1].delivers_to": "unknown warehouse 'wh-east'",
    }
    east = ev.WarehouseProfile(
        warehouse_id="wh-east", region="us-east", kind="own", channels=[Channel.CHANNEL_SHOPIFY]
    )
    await api.SetWarehouse(pb.SetWarehouseRequest(warehouse=east))
    fbt = ev.WarehouseProfile(
        warehouse_id="fbt-west",
        region="us-west",
        kind="fbt",
        channels=[Channel.CHANNEL_TIKTOK_SHOP],
        lanes=[
            ev.TransferLaneProfile(to_warehouse_id="wh-east", lead_time_hours=48, cost_per_unit=0.8)
        ],
    )
    await api.SetWarehouse(pb.SetWarehouseRequest(warehouse=fbt))
    await api.SetSupplier(pb.SetSupplierRequest(supplier=sea_and_air()))

    bad_option = sea_and_air()
    bad_option.options[0].lead_time_hours.mean = -5
    bad_option.options[1].unit_cost = -1
    violations = await refused(api.SetSupplier(pb.SetSupplierRequest(supplier=bad_option)))
    assert set(violations) == {
        "supplier.options[0].lead_time_hours.mean",
        "supplier.options[1].unit_cost",
    }
    bad_kind = ev.WarehouseProfile(warehouse_id="wh-x", region="eu", kind="garage")
    assert set(await refused(api.SetWarehouse(pb.SetWarehouseRequest(warehouse=bad_kind)))) == {
        "warehouse.kind"
    }

    economics = ev.SkuEconomics(
        sku="MUG-1",
        price=20,
        unit_cost=5,
        salvage=2,
        holding_per_unit_day=0.02,
        target_service_level=0.9,
        warehouse_id="wh-east",
        supplier_ids=["acme"],
    )
    await api.SetSkuEconomics(pb.SetSkuEconomicsRequest(economics=economics))
    too_much_salvage = ev.SkuEconomics()
    too_much_salvage.CopyFrom(economics)
    too_much_salvage.salvage = 25
    too_much_salvage.warehouse_id = "wh-nowhere"
    too_much_salvage.supplier_ids.append("ghost")
    assert set(
        await refused(api.SetSkuEconomics(pb.SetSkuEconomicsRequest(economics=too_much_salvage)))
    ) == {"economics.salvage", "economics.warehouse_id", "economics.supplier_ids[1]"}

    stored = await api.GetMasterData(pb.GetMasterDataRequest())
    assert [w.warehouse_id for w in stored.warehouses] == ["fbt-west", "wh-east"]
    assert list(stored.suppliers) == [sea_and_air()]  # the refused change stored nothing
    assert list(stored.skus) == [economics]
