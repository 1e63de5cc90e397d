"""Replenishment's pure domain: the newsvendor fixture of FULFILLMENT.md, the per-option
review (windows, position, dual sourcing, MOQ and case pack, reasons) and its invariants."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import (
    LeadTimeOption,
    MasterDataError,
    SkuEconomics,
    TransferLane,
    Warehouse,
    validate_delivery,
)
from pulsestock.fulfillment.domain.newsvendor import (
    LeftoverCost,
    choose_quantity,
    critical_ratio,
    newsvendor_normal,
)
from pulsestock.fulfillment.domain.replenishment import (
    REVIEW_LEVELS,
    ReviewSettings,
    StockPosition,
    review,
)
from scipy import stats


class RateOutlook:
    """Demand of `rate(t)` units in hour t, Poisson-like spread (normal approximation)."""

    def __init__(self, rates: Sequence[float], *, scale_spread: float = 0.0) -> None:
        self.rates = np.asarray(rates, dtype=np.float64)
        self.scale_spread = scale_spread  # comonotone log-normal size uncertainty

    def window_quantiles(
        self, start: int, end: int, levels: Sequence[float]
    ) -> NDArray[np.float64]:
        padded = np.concatenate(
            [self.rates, np.full(max(end - self.rates.size, 0), self.rates[-1])]
        )
        mean = float(padded[start:end].sum())
        z = stats.norm.ppf(np.asarray(levels))
        values = mean * np.exp(self.scale_spread * z) + np.sqrt(max(mean, 0.0)) * z
        return np.maximum.accumulate(np.maximum(values, 0.0))


ECON = SkuEconomics("SKU-1", price=24.0, unit_cost=8.0, salvage=2.0, holding_per_unit_day=0.02)
AIR = LeadTimeOption("factory", "air", 120, 24, 8.0, moq=50, case_pack=10)
DOMESTIC = LeadTimeOption("3pl", "domestic", 24, 6, 11.0, moq=10, case_pack=1)
SEA = LeadTimeOption("factory", "sea", 720, 96, 6.0, moq=200, case_pack=50)


def test_newsvendor_fixture_from_fulfillment_md() -> None:
    level, cost = newsvendor_normal(120.0, 10.0, underage=18.0, overage=2.0)
    assert level == pytest.approx(132.8155, abs=1e-4)
    assert cost == pytest.approx(35.0997, abs=1e-4)
    assert critical_ratio(18.0, 2.0) == pytest.approx(0.9)


def test_the_quantile_solver_finds_the_fixture_with_linear_costs() -> None:
    """Linear overage (no tail to absorb leftovers): the expected-cost minimiser over a
    dense set of normal quantiles lands on the critical-ratio quantile."""
    levels = np.linspace(0.0005, 0.9995, 2000)
    need = stats.norm.ppf(levels, 120, 10)
    leftover = LeftoverCost(2.0, 0.0, np.zeros(levels.size), 1.0, 0.0)
    choice = choose_quantity(need, list(levels), 18.0, leftover)
    assert choice.quantity in (132.0, 133.0)
    assert choice.expected_lost_margin + choice.expected_leftover_cost == pytest.approx(
        35.1, abs=0.3
    )


def test_master_data_errors_name_the_field() -> None:
    with pytest.raises(MasterDataError) as bad_lead:
        LeadTimeOption("s", "air", -1, 0, 8.0)
    assert bad_lead.value.field == "lead_time_hours.mean"
    with pytest.raises(MasterDataError) as bad_cost:
        LeadTimeOption("s", "air", 10, 0, -2.0)
    assert bad_cost.value.field == "unit_cost"
    with pytest.raises(MasterDataError) as bad_salvage:
        SkuEconomics("x", price=10, unit_cost=8, salvage=10, holding_per_unit_day=0.1)
    assert bad_salvage.value.field == "salvage"
    with pytest.raises(MasterDataError) as bad_kind:
        Warehouse("w", "eu", kind="cave")
    assert bad_kind.value.field == "kind"
    with pytest.raises(MasterDataError) as bad_lane:
        TransferLane("a", "a", 1, 1)
    assert bad_lane.value.field == "to"
    with pytest.raises(MasterDataError) as unknown:
        validate_delivery(
            (LeadTimeOption("s", "air", 10, 0, 8.0, delivers_to=("nowhere",)),), ("w",)
        )
    assert unknown.value.field == "options[0].delivers_to"


def test_far_future_orders_do_not_count_as_here() -> None:
    position = StockPosition(on_hand=10, committed=4, on_order=((30, 100), (500, 1000)))
    assert position.available_by(24) == 6
    assert position.available_by(100) == 106


def test_backorders_come_before_demand_still_to_come() -> None:
    # 10 on hand, 4 held, 30 owed: the 6 free and the 100 landing at hour 30 fill the owed
    # 30 first; an order landing at 40 finds 24 still owed unless the 100 came before it.
    position = StockPosition(on_hand=10, committed=4, on_order=((30, 100),), backordered=30)
    assert position.available_by(24) == -24
    assert position.available_by(100) == 76
    assert position.landing_between(24, 48) == 100 - 24
    assert position.landing_between(40, 48) == 0  # the 100 landed before: nothing owed
    owing = StockPosition(on_hand=0, backordered=15)
    assert owing.landing_between(24, 48) == -15  # an order landing then must fill them too

    outlook = RateOutlook([0.5] * 2000)
    clear = review(ECON, [DOMESTIC], outlook, StockPosition(on_hand=0), now=0).decisions[0]
    owed = review(ECON, [DOMESTIC], outlook, owing, now=0).decisions[0]
    assert owed.quantity >= clear.quantity + 15 - DOMESTIC.case_pack


def test_a_steady_seller_orders_about_a_review_period_after_the_lead_time() -> None:
    outlook = RateOutlook([0.5] * 2000)
    position = StockPosition(on_hand=0)
    rec = review(ECON, [DOMESTIC], outlook, position, now=0)
    decision = rec.decisions[0]
    # need over [0, 48): 24 units; the cheap tail makes leftovers cheap: order the high end
    assert decision.window == (24, 48)
    assert 12 <= decision.quantity <= 30
    assert "covers [24, 48)" in decision.reason


def test_nothing_is_ordered_when_the_pulse_is_over_before_arrival() -> None:
    rates = [30.0] * 20 + [0.0] * 2000  # a pulse that ends in 20 hours, nothing after
    rec = review(ECON, [DOMESTIC, AIR], RateOutlook(rates), StockPosition(on_hand=0), now=0)
    assert rec.orders == []
    assert all(d.quantity == 0 for d in rec.decisions)


def test_dual_sourcing_fast_tops_up_until_the_slow_option_lands() -> None:
    """A long pulse: air (cheap, 120 h) still needed when it lands; domestic covers the
    hours before air can land."""
    rates = [20.0] * 400 + [0.2] * 2000
    rec = review(
        ECON,
        [AIR, DOMESTIC],
        RateOutlook(rates),
        StockPosition(on_hand=0),
        now=0,
        settings=ReviewSettings(review_hours=24),
    )
    by_mode = {d.option.mode: d for d in rec.decisions}
    assert by_mode["air"].quantity > 0
    assert by_mode["domestic"].quantity > 0
    assert by_mode["domestic"].window == (24, 48)
    assert by_mode["air"].window == (120, 144)
    assert by_mode["air"].quantity % AIR.case_pack == 0


def test_the_slow_option_waits_when_stock_will_not_be_needed_when_it_lands() -> None:
    """Sea lands in 720 h; a pulse over by then leaves nothing for it: the rule's threshold
    (c_air - c_sea) / (c_air - salvage) is not met, and the reason says so."""
    rates = [15.0] * 200 + [0.0] * 3000
    rec = review(ECON, [SEA, AIR], RateOutlook(rates), StockPosition(on_hand=0), now=0)
    sea = next(d for d in rec.decisions if d.option.mode == "sea")
    assert sea.quantity == 0
    assert "not needed when it lands" in sea.reason


def test_a_dominated_option_never_orders() -> None:
    slow_and_dear = LeadTimeOption("x", "slow-dear", 200, 0, 12.0)
    rec = review(
        ECON, [slow_and_dear, DOMESTIC], RateOutlook([5.0] * 3000), StockPosition(0), now=0
    )
    dear = rec.decisions[0]
    assert dear.quantity == 0
    assert "dominated by 3pl/domestic" in dear.reason


def test_with_nothing_after_the_window_the_order_is_the_critical_ratio_quantile() -> None:
    """A pulse that ends with the window: leftovers are dead stock, so the order is about
    the (price - c) / (price - salvage) = 13 / 22 quantile of the need (FULFILLMENT.md)."""
    rates = [10.0] * 48 + [0.0] * 3000
    decision = review(
        ECON, [DOMESTIC], RateOutlook(rates, scale_spread=0.8), StockPosition(0), now=0
    ).decisions[0]
    need = dict(zip(decision.levels, decision.need_quantiles, strict=True))
    assert need[0.55] <= decision.quantity <= need[0.65]
    sure = review(ECON, [DOMESTIC], RateOutlook(rates), StockPosition(0), now=0).decisions[0]
    assert decision.expected_leftover_cost > sure.expected_leftover_cost


options_strategy = st.builds(
    LeadTimeOption,
    supplier=st.just("s"),
    mode=st.sampled_from(["air", "sea", "domestic"]),
    lead_time_mean_hours=st.floats(1, 800),
    lead_time_sd_hours=st.floats(0, 50),
    unit_cost=st.floats(3, 20),
    moq=st.integers(0, 300),
    case_pack=st.integers(1, 48),
)


@settings(max_examples=60, deadline=None)
@given(
    options=st.lists(options_strategy, min_size=1, max_size=3),
    rate=st.floats(0, 40),
    pulse_hours=st.integers(0, 600),
    spread=st.floats(0, 1.2),
    on_hand=st.floats(0, 500),
    review_hours=st.sampled_from([1, 24]),
)
def test_never_a_negative_or_sub_moq_quantity(
    options: list[LeadTimeOption],
    rate: float,
    pulse_hours: int,
    spread: float,
    on_hand: float,
    review_hours: int,
) -> None:
    rates = [rate] * pulse_hours + [0.1] * 3000
    rec = review(
        ECON,
        options,
        RateOutlook(rates, scale_spread=spread),
        StockPosition(on_hand),
        now=0,
        settings=ReviewSettings(review_hours=review_hours),
    )
    for decision in rec.decisions:
        assert decision.quantity >= 0
        if decision.quantity > 0:
            assert decision.quantity >= decision.option.moq
            assert decision.quantity % decision.option.case_pack == 0
        assert decision.reason


@settings(max_examples=40, deadline=None)
@given(
    options=st.lists(options_strategy, min_size=1, max_size=3),
    rate=st.floats(0, 100),
    on_hand=st.floats(0, 100),
)
def test_zero_demand_after_arrival_orders_nothing(
    options: list[LeadTimeOption], rate: float, on_hand: float
) -> None:
    earliest = min(o.arrival_hours for o in options)
    rates = [rate] * earliest + [0.0] * 5000
    rec = review(ECON, options, RateOutlook(rates, scale_spread=0.5), StockPosition(on_hand), 0)
    assert rec.orders == []


@settings(max_examples=40, deadline=None)
@given(
    rate=st.floats(0.05, 40),
    pulse_hours=st.integers(0, 300),
    spread=st.floats(0, 1.2),
    salvage_low=st.floats(0, 3.9),
    raise_by=st.floats(0, 3.9),
    review_hours=st.sampled_from([1, 24]),
)
def test_a_higher_salvage_never_lowers_the_quantity(
    rate: float,
    pulse_hours: int,
    spread: float,
    salvage_low: float,
    raise_by: float,
    review_hours: int,
) -> None:
    salvage_high = min(salvage_low + raise_by, 7.9)
    rates = [rate] * pulse_hours + [0.2] * 3000
    outlook = RateOutlook(rates, scale_spread=spread)
    option = LeadTimeOption("s", "domestic", 24, 0, 8.0, moq=10, case_pack=5)
    quantities = []
    for salvage in (salvage_low, salvage_high):
        economics = SkuEconomics("x", 24.0, 8.0, salvage, 0.02)
        rec = review(
            economics,
            [option],
            outlook,
            StockPosition(0),
            0,
            settings=ReviewSettings(review_hours=review_hours),
        )
        quantities.append(rec.decisions[0].quantity)
    assert quantities[1] >= quantities[0]


def test_review_levels_are_the_ones_reported() -> None:
    rec = review(ECON, [DOMESTIC], RateOutlook([2.0] * 3000), StockPosition(0), now=0)
    decision = rec.decisions[0]
    assert decision.levels == REVIEW_LEVELS
    assert len(decision.need_quantiles) == len(REVIEW_LEVELS)
    assert list(decision.need_quantiles) == sorted(decision.need_quantiles)
