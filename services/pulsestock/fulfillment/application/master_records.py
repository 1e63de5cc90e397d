"""Master data over the wire: warehouses, suppliers and SKU economics, validated by the
domain's value objects and appended to one stream (`masterdata-all`, so every change is in
the log in order, and a change is checked against exactly the state it follows). Each process
keeps the fold in memory and reads only the events after the version it has (master data
changes rarely; reviews read it often).

A record is checked against the others it names: an option delivering to, a lane leading to,
or a SKU landing in an unknown warehouse, and a SKU naming an unknown supplier, are field
violations; nothing is stored then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message
from pulsestock.errors import FieldViolation, InvalidArgument
from pulsestock.eventstore import EventStore, NewEvent
from pulsestock.eventstore.events import WrongExpectedVersion
from pulsestock.fulfillment.domain.master_data import (
    LeadTimeOption,
    MasterDataError,
    SkuEconomics,
    TransferLane,
    Warehouse,
)
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.routing import Candidate, channel_key
from pulsestock.v1 import fulfillment_events_pb2 as ev
from pulsestock.v1.common_pb2 import Channel

M = TypeVar("M", bound=Message)
STREAM = "masterdata-all"
CONFLICT_RETRIES = 5


def _violation(prefix: str, error: MasterDataError) -> InvalidArgument:
    return InvalidArgument([FieldViolation(f"{prefix}.{error.field}", error.message)])


def _check_id(violations: list[FieldViolation], field_name: str, value: str) -> None:
    if not valid_id(value):
        violations.append(FieldViolation(field_name, ID_RULE))


def candidate_of(
    profile: ev.WarehouseProfile, available: Mapping[str, int] = MappingProxyType({})
) -> Candidate:
    """A warehouse as the routing rule takes it, with its available units per SKU."""
    channels = tuple(channel_key(c) for c in profile.channels)
    return Candidate(
        profile.warehouse_id, profile.region, profile.kind or "own", channels, available
    )


def options_of(profile: ev.SupplierProfile) -> list[LeadTimeOption]:
    """The supplier's options as the domain sees them (the profile was validated)."""
    return [
        LeadTimeOption(
            supplier=profile.supplier_id,
            mode=option.mode,
            lead_time_mean_hours=option.lead_time_hours.mean,
            lead_time_sd_hours=option.lead_time_hours.sd,
            unit_cost=option.unit_cost,
            moq=int(option.moq),
            case_pack=int(option.case_pack) or 1,
            delivers_to=tuple(option.delivers_to),
        )
        for option in profile.options
    ]


def economics_of(profile: ev.SkuEconomics) -> SkuEconomics:
    return SkuEconomics(
        sku=profile.sku,
        price=profile.price,
        unit_cost=profile.unit_cost,
        salvage=profile.salvage,
        holding_per_unit_day=profile.holding_per_unit_day,
        target_service_level=profile.target_service_level or 0.95,
    )


@dataclass
class MasterData:
    warehouses: dict[str, ev.WarehouseProfile] = field(default_factory=dict)
    suppliers: dict[str, ev.SupplierProfile] = field(default_factory=dict)
    skus: dict[str, ev.SkuEconomics] = field(default_factory=dict)
    version: int = 0

    def apply(self, event: Message) -> None:
        self.version += 1
        if isinstance(event, ev.WarehouseSet):
            self.warehouses[event.warehouse.warehouse_id] = event.warehouse
        elif isinstance(event, ev.SupplierSet):
            self.suppliers[event.supplier.supplier_id] = event.supplier
        elif isinstance(event, ev.SkuEconomicsSet):
            self.skus[event.economics.sku] = event.economics

    # -- validation, against what is already known -------------------------------------

    def check_warehouse(self, profile: ev.WarehouseProfile) -> None:
        violations: list[FieldViolation] = []
        _check_id(violations, "warehouse.warehouse_id", profile.warehouse_id)
        for index, channel in enumerate(profile.channels):
            if channel == Channel.CHANNEL_UNSPECIFIED or channel not in Channel.values():
                violations.append(
                    FieldViolation(f"warehouse.channels[{index}]", "is not a known channel")
                )
        for index, lane in enumerate(profile.lanes):
            prefix = f"warehouse.lanes[{index}]"
            if lane.to_warehouse_id not in self.warehouses:
                violations.append(
                    FieldViolation(
                        f"{prefix}.to_warehouse_id", f"unknown warehouse {lane.to_warehouse_id!r}"
                    )
                )
            try:
                TransferLane(
                    profile.warehouse_id,
                    lane.to_warehouse_id,
                    lane.lead_time_hours,
                    lane.cost_per_unit,
                )
            except MasterDataError as error:
                violations.extend(_violation(prefix, error).violations)
        if violations:
            raise InvalidArgument(violations)
        try:
            Warehouse(profile.warehouse_id, profile.region, profile.kind or "own")
        except MasterDataError as error:
            raise _violation("warehouse", error) from None

    def check_supplier(self, profile: ev.SupplierProfile) -> None:
        violations: list[FieldViolation] = []
        _check_id(violations, "supplier.supplier_id", profile.supplier_id)
        if not profile.options:
            violations.append(FieldViolation("supplier.options", "at least one option"))
        for index, option in enumerate(profile.options):
            prefix = f"supplier.options[{index}]"
            if not option.delivers_to:
                violations.append(FieldViolation(f"{prefix}.delivers_to", "at least one warehouse"))
            for target in option.delivers_to:
                if target not in self.warehouses:
                    violations.append(
                        FieldViolation(f"{prefix}.delivers_to", f"unknown warehouse {target!r}")
                    )
            try:
                options_of(
                    ev.SupplierProfile(supplier_id=profile.supplier_id or "-", options=[option])
                )
            except MasterDataError as error:
                violations.extend(_violation(prefix, error).violations)
        if violations:
            raise InvalidArgument(violations)

    def check_economics(self, profile: ev.SkuEconomics) -> None:
        violations: list[FieldViolation] = []
        _check_id(violations, "economics.sku", profile.sku)
        if profile.warehouse_id not in self.warehouses:
            violations.append(
                FieldViolation(
                    "economics.warehouse_id", f"unknown warehouse {profile.warehouse_id!r}"
                )
            )
        for index, supplier in enumerate(profile.supplier_ids):
            if supplier not in self.suppliers:
                violations.append(
                    FieldViolation(
                        f"economics.supplier_ids[{index}]", f"unknown supplier {supplier!r}"
                    )
                )
        try:
            economics_of(profile)
        except MasterDataError as error:
            violations.extend(_violation("economics", error).violations)
        if violations:
            raise InvalidArgument(violations)

    def options_for(self, sku: str) -> list[LeadTimeOption]:
        """The SKU's options that deliver to its warehouse."""
        economics = self.skus[sku]
        return [
            option
            for supplier in economics.supplier_ids
            if supplier in self.suppliers
            for option in options_of(self.suppliers[supplier])
            if economics.warehouse_id in option.delivers_to
        ]


class MasterRecords:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._data = MasterData()

    async def load(self, conn: asyncpg.Connection | None = None) -> MasterData:
        """The fold up to the latest committed change (committed events only, so applying
        them to the cached fold is right whatever the caller's transaction then does)."""
        data = self._data
        for event in await self.store.read_stream(STREAM, data.version + 1, conn=conn):
            if event.stream_version == data.version + 1:
                data.apply(event.decode())
        return data

    async def _set(self, event: Message, check: Callable[[MasterData], None]) -> int:
        """Check the change against the state it follows, then append it at that version."""
        for attempt in range(CONFLICT_RETRIES):
            async with self.store.pool.acquire() as conn, conn.transaction():
                data = await self.load(conn)
                check(data)
                try:
                    return await self.store.append(
                        STREAM, data.version, [NewEvent.of(event)], conn=conn
                    )
                except WrongExpectedVersion:
                    if attempt == CONFLICT_RETRIES - 1:
                        raise
        raise AssertionError("unreachable")

    async def set_warehouse(self, profile: ev.WarehouseProfile) -> int:
        return await self._set(
            ev.WarehouseSet(warehouse=profile), lambda data: data.check_warehouse(profile)
        )

    async def set_supplier(self, profile: ev.SupplierProfile) -> int:
        return await self._set(
            ev.SupplierSet(supplier=profile), lambda data: data.check_supplier(profile)
        )

    async def set_economics(self, profile: ev.SkuEconomics) -> int:
        return await self._set(
            ev.SkuEconomicsSet(economics=profile), lambda data: data.check_economics(profile)
        )


def sorted_profiles(values: Iterable[M], key: str) -> list[M]:
    return sorted(values, key=lambda profile: str(getattr(profile, key)))
