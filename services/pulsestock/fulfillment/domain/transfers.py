"""Pre-positioning transfers: move a SKU's stock between our warehouses ahead of a pulse, unit
by unit while the next unit is worth more where it goes than where it is, by more than the
lane's cost. Pure: the forecast, the stock and the demand shares come in.

Where demand lands. The SKU's demand D (the forecast's quantiles over a window) is split
between warehouses by `share`: the part of recent orders (by channel and buyer region)
that the routing rule (pulsestock.routing) would send to that warehouse first when every
warehouse is stocked (FBT first for TikTok Shop, the buyer's region otherwise, only
warehouses that serve the channel). A warehouse's demand is share x D, quantile by quantile
(comonotone: a big pulse is big everywhere).

What a unit short costs there (`unit_value`), per channel and region, then averaged over the
warehouse's demand by weight:
- the unit margin (price - unit cost) when no other warehouse can serve that demand (FBT
  for TikTok Shop when our own warehouses do not list the channel): the sale is lost;
- otherwise the sale ships from the next warehouse the rule picks, later: its cost is
  `SLOWER_DELIVERY_MARGIN_SHARE_PER_DAY` of the margin per extra day of delivery. That rate
  is an assumption, not a measurement (the master data has no conversion-by-delivery-time
  figure): 5 % a day prices the routing rule's 48 extra hours (72 h vs 24 h) at a tenth of
  the margin, so a transfer for delivery speed alone pays only when its lane costs less than
  that; a lost sale (the whole margin) always counts ten times more than a slow one.

The rule. A lane s -> d lands after its lead time (`arrival`) and can serve d's demand in
[arrival, arrival + coverage). Only a lane landing by `latest_arrival` is considered
(`landing_deadline`): the pulse's peak while the forecast has it ahead; once the forecast
has the pulse decaying (its peak is now or behind: the production forecast's power-law
pulse always is, from its first hour), the hour by which half of the pulse's remaining
excess demand is expected, the peak's counterpart for a pulse already past it (landing
later serves less than half of what is left); the outlook's end when no pulse is on.
Moving the k-th unit gains

    P(need_d > k - 1) * value_d - P(D_s > S_s - k) * value_s - cost_per_unit

where need_d = min(D_d[0, end) - S_d, D_d[arrival, end)) is what d's own available stock S_d
leaves uncovered of the demand a transfer landing at `arrival` can serve (with lost sales,
d's stock may be gone before the transfer lands), and D_s[0, end) is the source's demand
over the same horizon from now (the unit leaves at once). Units move while the gain is
positive, the best lane's next units first; a source never gives more than it has available
(on hand - reserved). Quantiles become a discrete distribution (newsvendor.level_weights),
so the gain is a step function of k and units move in runs between its steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import SkuEconomics, TransferLane
from pulsestock.fulfillment.domain.newsvendor import level_weights
from pulsestock.fulfillment.domain.replenishment import REVIEW_LEVELS
from pulsestock.routing import Candidate, route

Array = NDArray[np.float64]
# See the module docstring: the margin share a sale loses per extra day of delivery.
SLOWER_DELIVERY_MARGIN_SHARE_PER_DAY = 0.05
# A warehouse assumed stocked when asking the routing rule who serves a demand first.
_STOCKED = 1 << 40
_UNBOUNDED = 1 << 62  # a run of units the probability never leaves


class DemandOutlook(Protocol):
    """The SKU's demand quantiles over [start, end) hours after the outlook's first hour."""

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float]
    ) -> Sequence[float] | Array: ...


@dataclass(frozen=True)
class DemandBucket:
    """Recent demand of one channel and buyer region (a decayed unit count)."""

    channel: str
    region: str
    weight: float


@dataclass(frozen=True)
class Site:
    """A warehouse as the transfer rule sees it."""

    warehouse_id: str
    available: int  # on hand - reserved
    share: float = 0.0  # of the SKU's demand it serves first
    unit_value: float = 0.0  # what a unit short there costs

    def __post_init__(self) -> None:
        if self.available < 0:
            raise ValueError("available must not be negative")
        if not 0.0 <= self.share <= 1.0 + 1e-9:
            raise ValueError("share must lie in [0, 1]")
        if not (math.isfinite(self.unit_value) and self.unit_value >= 0):
            raise ValueError("unit_value must be a non-negative number")


@dataclass(frozen=True)
class TransferSettings:
    coverage_hours: int = 7 * 24
    levels: tuple[float, ...] = REVIEW_LEVELS

    def __post_init__(self) -> None:
        if self.coverage_hours < 1:
            raise ValueError("coverage_hours must be at least 1")
        level_weights(self.levels)  # strictly increasing levels, or ValueError


@dataclass(frozen=True)
class TransferProposal:
    lane: TransferLane
    quantity: int
    arrival: int  # hours after the outlook's first hour
    window: tuple[int, int]  # [arrival, end): the destination demand it can serve
    levels: tuple[float, ...]
    destination_need: tuple[float, ...]
    source_need: tuple[float, ...]
    expected_lost_sales_avoided: float
    expected_source_loss: float
    transfer_cost: float
    reason: str

    @property
    def expected_net_value(self) -> float:
        return self.expected_lost_sales_avoided - self.expected_source_loss - self.transfer_cost


@dataclass(frozen=True)
class LaneConsidered:
    lane: TransferLane
    quantity: int
    reason: str


@dataclass(frozen=True)
class TransferPlan:
    proposals: tuple[TransferProposal, ...]
    considered: tuple[LaneConsidered, ...]


def arrival_hours(lane: TransferLane) -> int:
    """The bucket a transfer sent now lands in."""
    return max(0, math.ceil(lane.lead_time_hours))


def landing_deadline(means: Sequence[float], pulse_on: bool) -> tuple[int, str]:
    """The hour (after the forecast's first) a transfer must land by, and why (see the module
    docstring). `means` are the forecast's hourly expected demand over the outlook; the
    pulse's excess is measured over the outlook's last day (the baseline it returns to)."""
    horizon = len(means)
    if not pulse_on or horizon == 0:
        return horizon, f"the outlook's end (+{horizon} h): no pulse is on"
    expected = np.asarray(means, dtype=np.float64)
    peak = int(np.argmax(expected))
    if peak > 0:
        return peak, f"the pulse's expected peak (+{peak} h)"
    tail = float(expected[-24:].mean())
    excess = np.cumsum(np.maximum(expected - tail, 0.0))
    if excess[-1] <= 0:
        return 0, "the pulse's peak (now)"
    half = int(np.searchsorted(excess, excess[-1] / 2))
    return half, (
        f"the pulse is past its peak: half of its remaining excess demand is expected by +{half} h"
    )


def unit_margin(economics: SkuEconomics) -> float:
    return max(economics.price - economics.unit_cost, 0.0)


def demand_sites(
    economics: SkuEconomics,
    buckets: Sequence[DemandBucket],
    warehouses: Sequence[Candidate],
    available: Mapping[str, int],
) -> dict[str, Site]:
    """Each warehouse's share of the SKU's demand and the value of a unit short there (see
    the module docstring); `warehouses` as the routing rule takes them (their stock is
    ignored: who serves a demand first is asked with every warehouse stocked)."""
    margin = unit_margin(economics)
    stocked = [
        Candidate(w.warehouse_id, w.region, w.kind, w.channels, {economics.sku: _STOCKED})
        for w in warehouses
    ]
    total = sum(max(b.weight, 0.0) for b in buckets)
    weight: dict[str, float] = {}
    valued: dict[str, float] = {}
    for bucket in buckets:
        if bucket.weight <= 0 or total <= 0:
            continue
        first = _first_choice(economics.sku, bucket, stocked)
        if first is None:
            continue  # no warehouse serves the channel: no transfer can help
        chosen, hours = first
        rest = [w for w in stocked if w.warehouse_id != chosen]
        fallback = _first_choice(economics.sku, bucket, rest)
        if fallback is None:
            value = margin
        else:
            extra_days = max(fallback[1] - hours, 0.0) / 24.0
            value = min(margin, margin * SLOWER_DELIVERY_MARGIN_SHARE_PER_DAY * extra_days)
        weight[chosen] = weight.get(chosen, 0.0) + bucket.weight
        valued[chosen] = valued.get(chosen, 0.0) + bucket.weight * value
    sites: dict[str, Site] = {}
    for w in warehouses:
        share = weight.get(w.warehouse_id, 0.0)
        sites[w.warehouse_id] = Site(
            w.warehouse_id,
            max(int(available.get(w.warehouse_id, 0)), 0),
            min(share / total, 1.0) if total > 0 else 0.0,
            valued[w.warehouse_id] / share if share > 0 else 0.0,
        )
    return sites


def _first_choice(
    sku: str, bucket: DemandBucket, warehouses: Sequence[Candidate]
) -> tuple[str, float] | None:
    decided = route({sku: 1}, bucket.channel, bucket.region, warehouses)
    if not decided.allocations:
        return None
    first = decided.allocations[0]
    return first.warehouse_id, first.delivery_hours


class _Distribution:
    """Quantile values at levels, read as a discrete distribution."""

    def __init__(self, values: Array, weights: Array) -> None:
        self.values = values
        self.weights = weights

    def exceeds(self, x: float) -> float:
        """P(X > x)."""
        return float(self.weights[self.values > x].sum())

    def run_up(self, x: int) -> int:
        """From integer x upwards, how many integers keep P(X > .) as it is at x."""
        above = self.values[self.values > x]
        return math.ceil(float(above.min())) - x if above.size else _UNBOUNDED

    def run_down(self, y: int) -> int:
        """From integer y downwards, how many integers keep P(X > .) as it is at y."""
        below = self.values[self.values <= y]
        return y - (math.ceil(float(below.max())) - 1) if below.size else y + 1


@dataclass
class _LaneState:
    lane: TransferLane
    arrival: int
    end: int
    destination: _Distribution
    source: _Distribution
    moved: int = 0
    avoided: float = 0.0
    source_loss: float = 0.0


def plan_transfers(
    sites: Mapping[str, Site],
    lanes: Sequence[TransferLane],
    outlook: DemandOutlook,
    latest_arrival: int,
    settings: TransferSettings = TransferSettings(),
) -> TransferPlan:
    """The transfers worth making now (see the module docstring), and why each lane moves
    what it moves or nothing."""
    levels = settings.levels
    weights = level_weights(levels)
    considered: dict[int, str] = {}
    live: list[_LaneState] = []
    totals: dict[tuple[int, int], Array] = {}

    def total(start: int, end: int) -> Array:
        key = (start, end)
        if key not in totals:
            quantiles = np.asarray(outlook.window_quantiles(start, end, levels), dtype=np.float64)
            totals[key] = np.maximum.accumulate(np.maximum(quantiles, 0.0))
        return totals[key]

    for index, lane in enumerate(lanes):
        source = sites.get(lane.source)
        destination = sites.get(lane.destination)
        arrival = arrival_hours(lane)
        if source is None or destination is None:
            considered[index] = "a warehouse of the lane has no stock record or master data"
        elif arrival > latest_arrival:
            considered[index] = (
                f"lands at +{arrival} h, after the +{latest_arrival} h it must land by"
            )
        elif destination.share <= 0 or destination.unit_value <= 0:
            considered[index] = f"no demand {lane.destination} serves first is worth a unit there"
        elif source.available <= 0:
            considered[index] = f"{lane.source} has nothing available"
        else:
            end = arrival + settings.coverage_hours
            all_demand = destination.share * total(0, end)
            after = destination.share * total(arrival, end)
            need = np.maximum(np.minimum(all_demand - destination.available, after), 0.0)
            live.append(
                _LaneState(
                    lane,
                    arrival,
                    end,
                    _Distribution(need, weights),
                    _Distribution(source.share * total(0, end), weights),
                )
            )
            considered[index] = "no unit is worth more at the destination than its cost"

    moved_in: dict[str, int] = {}
    moved_out: dict[str, int] = {}
    while True:
        best: tuple[float, int] | None = None
        for position, state in enumerate(live):
            left = sites[state.lane.source].available - moved_out.get(state.lane.source, 0)
            if left <= 0:
                continue
            gain = _gain(state, sites, moved_in, moved_out)
            if gain > 0 and (best is None or gain > best[0]):
                best = (gain, position)
        if best is None:
            break
        state = live[best[1]]
        lane = state.lane
        source, destination = sites[lane.source], sites[lane.destination]
        inside = moved_in.get(lane.destination, 0)
        out = moved_out.get(lane.source, 0)
        remaining_after = source.available - out - 1  # the source's stock if one more moves
        units = min(
            state.destination.run_up(inside),
            state.source.run_down(remaining_after),
            source.available - out,
        )
        state.moved += units
        state.avoided += units * state.destination.exceeds(inside) * destination.unit_value
        state.source_loss += units * state.source.exceeds(remaining_after) * source.unit_value
        moved_in[lane.destination] = inside + units
        moved_out[lane.source] = out + units

    proposals: list[TransferProposal] = []
    by_lane = {id(state.lane): state for state in live}
    for index, lane in enumerate(lanes):
        found = by_lane.get(id(lane))
        if found is None or found.moved == 0:
            continue
        cost = found.moved * lane.cost_per_unit
        reason = (
            f"moves {found.moved} from {lane.source} to {lane.destination}: lands at"
            f" +{found.arrival} h (by +{latest_arrival} h), serves [{found.arrival},"
            f" {found.end}) h; expected lost sales avoided {found.avoided:.2f} - the source's"
            f" expected loss {found.source_loss:.2f} > transfer cost {cost:.2f}"
        )
        considered[index] = reason
        proposals.append(
            TransferProposal(
                lane=lane,
                quantity=found.moved,
                arrival=found.arrival,
                window=(found.arrival, found.end),
                levels=tuple(levels),
                destination_need=tuple(float(v) for v in found.destination.values),
                source_need=tuple(float(v) for v in found.source.values),
                expected_lost_sales_avoided=found.avoided,
                expected_source_loss=found.source_loss,
                transfer_cost=cost,
                reason=reason,
            )
        )
    return TransferPlan(
        tuple(proposals),
        tuple(
            LaneConsidered(
                lane, by_lane[id(lane)].moved if id(lane) in by_lane else 0, considered[index]
            )
            for index, lane in enumerate(lanes)
        ),
    )


def _gain(
    state: _LaneState,
    sites: Mapping[str, Site],
    moved_in: Mapping[str, int],
    moved_out: Mapping[str, int],
) -> float:
    """What the lane's next unit gains: used at the destination, not missed at the source,
    less its cost."""
    lane = state.lane
    source, destination = sites[lane.source], sites[lane.destination]
    used_there = state.destination.exceeds(moved_in.get(lane.destination, 0))
    remaining_after = source.available - moved_out.get(lane.source, 0) - 1
    missed_here = state.source.exceeds(remaining_after)
    return (
        used_there * destination.unit_value - missed_here * source.unit_value - lane.cost_per_unit
    )
