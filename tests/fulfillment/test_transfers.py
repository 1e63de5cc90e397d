"""Pre-positioning transfers' pure rule: who serves which demand and what a unit short costs
there, the deadline a transfer must land by, the marginal rule on one or several lanes, and
its invariants (Hypothesis)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pulsestock.fulfillment.application.transfers import lands_in_time
from pulsestock.fulfillment.domain.master_data import SkuEconomics, TransferLane
from pulsestock.fulfillment.domain.newsvendor import level_weights
from pulsestock.fulfillment.domain.transfers import (
    SLOWER_DELIVERY_MARGIN_SHARE_PER_DAY,
    DemandBucket,
    Site,
    TransferSettings,
    demand_sites,
    landing_deadline,
    plan_transfers,
)
from pulsestock.routing import Candidate
from pulsestock.v1.fulfillment_events_pb2 import TransferPlanned
from scipy import stats

ECON = SkuEconomics("SERUM", price=30.0, unit_cost=10.0, salvage=2.0, holding_per_unit_day=0.02)
MARGIN = 20.0
SETTINGS = TransferSettings(coverage_hours=48)


class PulseOutlook:
    """A pulse peaking at hour `peak` over a baseline; comonotone log-normal size spread."""

    def __init__(self, peak_rate: float, peak: int = 24, base: float = 0.5, spread: float = 0.4):
        self.peak_rate, self.peak, self.base, self.spread = peak_rate, peak, base, spread

    def rate(self, hour: int) -> float:
        return self.base + self.peak_rate * math.exp(-abs(hour - self.peak) / 12.0)

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float]
    ) -> NDArray[np.float64]:
        mean = sum(self.rate(h) for h in range(start, end))
        z = stats.norm.ppf(np.asarray(levels))
        values = np.maximum(mean * np.exp(self.spread * z - self.spread**2 / 2), 0.0)
        return np.asarray(values, dtype=np.float64)


WAREHOUSES = [
    Candidate("own-east", "us-east", "own", ("shopify",)),
    Candidate("fbt-east", "us-east", "fbt", ("tiktok_shop",)),
    Candidate("own-west", "us-west", "own", ("shopify",)),
]


def test_fbt_is_the_only_home_of_tiktok_demand_and_a_region_is_a_slower_fallback() -> None:
    buckets = [
        DemandBucket("tiktok_shop", "us-east", 60.0),
        DemandBucket("tiktok_shop", "us-west", 20.0),
        DemandBucket("shopify", "us-east", 15.0),
        DemandBucket("shopify", "us-west", 5.0),
        DemandBucket("amazon", "us-east", 100.0),  # no warehouse serves amazon
    ]
    sites = demand_sites(ECON, buckets, WAREHOUSES, {"own-east": 100})
    assert sites["fbt-east"].share == pytest.approx(80 / 200)
    assert sites["fbt-east"].unit_value == pytest.approx(MARGIN)  # a short unit is a lost sale
    assert sites["own-east"].share == pytest.approx(15 / 200)
    # East's Shopify buyers fall back to the west: 48 h later.
    assert sites["own-east"].unit_value == pytest.approx(
        MARGIN * SLOWER_DELIVERY_MARGIN_SHARE_PER_DAY * 2
    )
    assert sites["own-east"].available == 100
    assert sites["own-west"].share == pytest.approx(5 / 200)
    assert sites["fbt-east"].available == 0


def sites_for_tiktok(own: int, fbt: int = 0) -> dict[str, Site]:
    return {
        "own-east": Site("own-east", own, share=0.1, unit_value=2.0),
        "fbt-east": Site("fbt-east", fbt, share=0.9, unit_value=MARGIN),
    }


def test_a_tiktok_pulse_moves_stock_into_fbt_before_the_peak() -> None:
    lane = TransferLane("own-east", "fbt-east", lead_time_hours=12, cost_per_unit=1.5)
    outlook = PulseOutlook(peak_rate=20.0, peak=24)
    plan = plan_transfers(sites_for_tiktok(2000), [lane], outlook, 24, SETTINGS)
    (proposal,) = plan.proposals
    assert proposal.window == (12, 60)
    # Most of the FBT demand it can serve in [12, 60), and not the whole own stock.
    median = 0.9 * float(outlook.window_quantiles(12, 60, [0.5])[0])
    assert 0.8 * median < proposal.quantity < 2000
    assert proposal.expected_net_value > 0
    assert proposal.expected_lost_sales_avoided > proposal.transfer_cost
    assert proposal.transfer_cost == pytest.approx(1.5 * proposal.quantity)
    assert "lands at +12 h" in proposal.reason
    assert plan.considered[0].quantity == proposal.quantity


def test_a_lane_landing_after_the_peak_proposes_nothing() -> None:
    slow = TransferLane("own-east", "fbt-east", lead_time_hours=30, cost_per_unit=0.1)
    plan = plan_transfers(sites_for_tiktok(2000), [slow], PulseOutlook(20.0, 24), 24, SETTINGS)
    assert plan.proposals == ()
    assert "after the +24 h" in plan.considered[0].reason


def test_stock_already_at_the_destination_counts() -> None:
    lane = TransferLane("own-east", "fbt-east", lead_time_hours=12, cost_per_unit=1.5)
    outlook = PulseOutlook(peak_rate=20.0, peak=24)
    empty = plan_transfers(sites_for_tiktok(5000), [lane], outlook, 24, SETTINGS)
    stocked = plan_transfers(sites_for_tiktok(5000, fbt=400), [lane], outlook, 24, SETTINGS)
    assert stocked.proposals[0].quantity < empty.proposals[0].quantity
    flooded = plan_transfers(sites_for_tiktok(5000, fbt=10**6), [lane], outlook, 24, SETTINGS)
    assert flooded.proposals == ()


def test_the_best_lane_moves_first_and_a_source_never_gives_twice() -> None:
    sites = {
        "own-east": Site("own-east", 300, share=0.0, unit_value=0.0),
        "own-west": Site("own-west", 300, share=0.0, unit_value=0.0),
        "fbt-east": Site("fbt-east", 0, share=1.0, unit_value=MARGIN),
    }
    cheap = TransferLane("own-east", "fbt-east", 6, 0.5)
    dear = TransferLane("own-west", "fbt-east", 6, 3.0)
    plan = plan_transfers(sites, [dear, cheap], PulseOutlook(20.0, 24), 24, SETTINGS)
    moved = {p.lane.source: p.quantity for p in plan.proposals}
    assert moved["own-east"] == 300  # every cheap unit goes before a dear one
    assert moved.get("own-west", 0) > 0  # the pulse needs more than east has


def test_the_deadline_is_the_peak_ahead_or_half_of_a_decaying_pulse() -> None:
    rising = [1.0, 5.0, 9.0, 7.0, 3.0] + [1.0] * 30
    assert landing_deadline(rising, pulse_on=True)[0] == 2
    assert landing_deadline(rising, pulse_on=False)[0] == 35  # no pulse: the outlook's end
    # Past its peak: excess over the last day's 1.0 of 8, 4, 2, 1, 1 (16 in all): half of it
    # in the first hour already.
    decaying = [9.0, 5.0, 3.0, 2.0, 2.0] + [1.0] * 30
    hour, why = landing_deadline(decaying, pulse_on=True)
    assert hour == 0
    assert "past its peak" in why
    slow = [10.0 - 0.1 * h for h in range(60)] + [4.0] * 24
    hour, _ = landing_deadline(slow, pulse_on=True)
    excess = [max(m - 4.0, 0.0) for m in slow]
    assert sum(excess[: hour + 1]) >= sum(excess) / 2 > sum(excess[:hour])


def test_a_plan_left_too_long_no_longer_lands_in_time() -> None:
    planned = TransferPlanned(lead_time_hours=6)
    planned.land_by.FromDatetime(datetime(2026, 12, 4, 18, tzinfo=UTC))
    assert lands_in_time(planned, datetime(2026, 12, 4, 12, tzinfo=UTC))
    assert not lands_in_time(planned, datetime(2026, 12, 4, 12, 1, tzinfo=UTC))
    assert lands_in_time(TransferPlanned(lead_time_hours=6), datetime(2030, 1, 1, tzinfo=UTC))


# -- invariants ------------------------------------------------------------------------

site_values = st.floats(0.0, 50.0, allow_nan=False)
shares = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Site], list[TransferLane], PulseOutlook, int]:
    ids = ["a", "b", "c"]
    sites = {
        w: Site(w, draw(st.integers(0, 3000)), draw(shares) / 3, draw(site_values)) for w in ids
    }
    lanes = []
    for source in ids:
        for destination in ids:
            if source != destination and draw(st.booleans()):
                lanes.append(
                    TransferLane(
                        source,
                        destination,
                        draw(st.floats(0.0, 96.0, allow_nan=False)),
                        draw(st.floats(0.0, 25.0, allow_nan=False)),
                    )
                )
    outlook = PulseOutlook(
        draw(st.floats(0.0, 100.0, allow_nan=False)),
        draw(st.integers(0, 96)),
        draw(st.floats(0.0, 5.0, allow_nan=False)),
        draw(st.floats(0.0, 1.5, allow_nan=False)),
    )
    return sites, lanes, outlook, draw(st.integers(0, 120))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_never_more_than_the_source_has_nor_worth_less_than_its_cost(
    scenario: tuple[dict[str, Site], list[TransferLane], PulseOutlook, int],
) -> None:
    sites, lanes, outlook, latest = scenario
    plan = plan_transfers(sites, lanes, outlook, latest, SETTINGS)
    given_by: dict[str, int] = {}
    for proposal in plan.proposals:
        assert proposal.quantity > 0
        given_by[proposal.lane.source] = given_by.get(proposal.lane.source, 0) + proposal.quantity
        value = proposal.expected_lost_sales_avoided - proposal.expected_source_loss
        assert value > proposal.transfer_cost - 1e-9
        assert proposal.arrival <= latest
        assert proposal.transfer_cost == pytest.approx(
            proposal.quantity * proposal.lane.cost_per_unit
        )
    for source, units in given_by.items():
        assert units <= sites[source].available
    assert len(plan.considered) == len(lanes)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_zero_demand_at_a_destination_draws_nothing_there(
    scenario: tuple[dict[str, Site], list[TransferLane], PulseOutlook, int],
) -> None:
    sites, lanes, outlook, latest = scenario
    sites["a"] = Site("a", sites["a"].available, share=0.0, unit_value=sites["a"].unit_value)
    plan = plan_transfers(sites, lanes, outlook, latest, SETTINGS)
    assert all(p.lane.destination != "a" for p in plan.proposals)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 3000),
    st.integers(0, 500),
    shares,
    site_values,
    st.floats(0.0, 25.0, allow_nan=False),
    st.floats(0.0, 25.0, allow_nan=False),
    st.floats(0.0, 1.5, allow_nan=False),
)
def test_a_dearer_lane_never_moves_more(
    own: int,
    fbt: int,
    source_share: float,
    source_value: float,
    cost: float,
    extra: float,
    spread: float,
) -> None:
    sites = {
        "own": Site("own", own, source_share * 0.5, source_value),
        "fbt": Site("fbt", fbt, 0.5, MARGIN),
    }
    outlook = PulseOutlook(30.0, 24, spread=spread)

    def moved(per_unit: float) -> int:
        plan = plan_transfers(
            sites, [TransferLane("own", "fbt", 10, per_unit)], outlook, 24, SETTINGS
        )
        return sum(p.quantity for p in plan.proposals)

    assert moved(cost + extra) <= moved(cost)


def test_each_unit_moves_while_its_gain_is_positive() -> None:
    """Brute force on one lane: the rule's quantity is the last k whose marginal gain
    P(need_d > k - 1) * v_d - P(D_s > S_s - k) * v_s - c is positive."""
    sites = {
        "own": Site("own", 400, share=0.3, unit_value=6.0),
        "fbt": Site("fbt", 25, share=0.7, unit_value=MARGIN),
    }
    outlook = PulseOutlook(15.0, 30)
    lane = TransferLane("own", "fbt", 8, 2.0)
    plan = plan_transfers(sites, [lane], outlook, 30, SETTINGS)
    levels = SETTINGS.levels
    weights = level_weights(levels)
    end = 8 + SETTINGS.coverage_hours
    total = outlook.window_quantiles(0, end, levels)
    after = outlook.window_quantiles(8, end, levels)
    need = np.maximum(np.minimum(0.7 * total - 25, 0.7 * after), 0.0)
    source = 0.3 * total
    expected = 0
    for k in range(1, 401):
        gain = weights[need > k - 1].sum() * MARGIN - weights[source > 400 - k].sum() * 6.0 - 2.0
        if gain <= 0:
            break
        expected = k
    assert expected > 0
    assert plan.proposals[0].quantity == expected
