"""Master data replenishment decides with: lead-time options of suppliers, warehouses and a
SKU's economics. Immutable value objects, validated on construction; a bad value raises
`MasterDataError` naming the field, so the gRPC edge can turn it into a field violation."""

from __future__ import annotations

import math
from dataclasses import dataclass

WAREHOUSE_KINDS = ("own", "3pl", "fbt", "fba")


class MasterDataError(ValueError):
    """A master-data value that cannot be: `field` is the offending field's path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise MasterDataError(field, "must be a finite number")
    return value


def _non_negative(field: str, value: float) -> float:
    if _finite(field, value) < 0:
        raise MasterDataError(field, f"must not be negative (got {value})")
    return value


@dataclass(frozen=True)
class LeadTimeOption:
    """One way to get units of a SKU from a supplier into warehouses (sea, air, domestic 3PL):
    the lead time is a distribution (mean and standard deviation, hours)."""

    supplier: str
    mode: str
    lead_time_mean_hours: float
    lead_time_sd_hours: float
    unit_cost: float
    moq: int = 0
    case_pack: int = 1
    delivers_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.supplier:
            raise MasterDataError("supplier", "must not be empty")
        if not self.mode:
            raise MasterDataError("mode", "must not be empty")
        if _non_negative("lead_time_hours.mean", self.lead_time_mean_hours) <= 0:
            raise MasterDataError("lead_time_hours.mean", "must be positive")
        _non_negative("lead_time_hours.sd", self.lead_time_sd_hours)
        if _non_negative("unit_cost", self.unit_cost) <= 0:
            raise MasterDataError("unit_cost", "must be positive")
        if self.moq < 0:
            raise MasterDataError("moq", f"must not be negative (got {self.moq})")
        if self.case_pack < 1:
            raise MasterDataError("case_pack", f"must be at least 1 (got {self.case_pack})")

    @property
    def arrival_hours(self) -> int:
        """The bucket an order placed now is expected to land in (at least the next one)."""
        return max(1, math.ceil(self.lead_time_mean_hours))

    @property
    def label(self) -> str:
        return f"{self.supplier}/{self.mode}"


@dataclass(frozen=True)
class TransferLane:
    source: str
    destination: str
    lead_time_hours: float
    cost_per_unit: float

    def __post_init__(self) -> None:
        if self.source == self.destination:
            raise MasterDataError("to", "a lane must join two different warehouses")
        _non_negative("lead_time_hours", self.lead_time_hours)
        _non_negative("cost_per_unit", self.cost_per_unit)


@dataclass(frozen=True)
class Warehouse:
    id: str
    region: str
    kind: str = "own"
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.id:
            raise MasterDataError("id", "must not be empty")
        if not self.region:
            raise MasterDataError("region", "must not be empty")
        if self.kind not in WAREHOUSE_KINDS:
            raise MasterDataError("kind", f"must be one of {', '.join(WAREHOUSE_KINDS)}")


@dataclass(frozen=True)
class SkuEconomics:
    """What a unit earns and costs: `unit_cost` is the reference purchase cost (each option
    has its own), `salvage` what an unsold unit fetches in the end, holding per unit-day."""

    sku: str
    price: float
    unit_cost: float
    salvage: float
    holding_per_unit_day: float
    target_service_level: float = 0.95

    def __post_init__(self) -> None:
        if not self.sku:
            raise MasterDataError("sku", "must not be empty")
        if _non_negative("price", self.price) <= 0:
            raise MasterDataError("price", "must be positive")
        _non_negative("unit_cost", self.unit_cost)
        _non_negative("salvage", self.salvage)
        _non_negative("holding_per_unit_day", self.holding_per_unit_day)
        if self.salvage >= self.price:
            raise MasterDataError("salvage", "must be below the price")
        if self.salvage > self.unit_cost:
            raise MasterDataError("salvage", "must not exceed the unit cost")
        if not 0.0 < _finite("target_service_level", self.target_service_level) < 1.0:
            raise MasterDataError("target_service_level", "must lie strictly between 0 and 1")

    @property
    def holding_per_unit_hour(self) -> float:
        return self.holding_per_unit_day / 24.0


def validate_delivery(options: tuple[LeadTimeOption, ...], warehouses: tuple[str, ...]) -> None:
    """Every option delivers only to known warehouses."""
    known = set(warehouses)
    for index, option in enumerate(options):
        for target in option.delivers_to:
            if target not in known:
                raise MasterDataError(
                    f"options[{index}].delivers_to", f"unknown warehouse {target!r}"
                )
