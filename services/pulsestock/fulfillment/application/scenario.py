"""Simulator scenarios: the JSON file (scenarios/scenario.schema.json documents it), checked
with errors that name the offending path, and the demand and heat it generates per seed.

Generated demand per SKU, hour by hour: baseline_per_day/24 times a diurnal profile, plus
each pulse's excess, baseline x (peak_multiplier - 1) x size x shape(t - onset), where the
shape rises as sin^2 over rise_hours to 1 and halves every decay_half_life_hours; counts are
Poisson around gamma-mixed rates: the baseline's negative binomial with size `dispersion`
(intermittent), the pulse's with size 6 (many buyers: nearly Poisson).
A pulse's realised size varies by seed (log-normal, `size_log_sd`). Heat, the content
signal (views an hour), is VIEWS_PER_ORDER times the pulse's expected excess
`heat_lead_hours` ahead, divided by a per-pulse conversion error (log-normal,
`heat_noise`: the policy does not know the true conversion) and hourly noise, over a
noisy background. `warmup_days` of baseline-only history precede the start so
history-based policies have their averages.
Replayed demand reads `csv` (timestamp,orders[,heat][,region]); rows before `start` are
history; every seed replays the same demand (only lead times vary).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pulsestock.fulfillment.domain.master_data import (
    LeadTimeOption,
    MasterDataError,
    SkuEconomics,
    TransferLane,
    Warehouse,
)

Series = NDArray[np.float64]
# Heat is reach (views an hour); a typical pulse converts one order per this many views,
# the forecast service's default conversion prior.
VIEWS_PER_ORDER = 1000.0
PULSE_DISPERSION = 6.0


class ScenarioError(ValueError):
    """A scenario file that cannot be simulated; `path` locates the value (e.g.
    `suppliers[0].options[1].unit_cost`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@dataclass(frozen=True)
class Pulse:
    onset_hour: float
    peak_multiplier: float
    rise_hours: float
    decay_half_life_hours: float
    heat_lead_hours: float
    size_log_sd: float = 0.4

    def shape(self, hours: Series) -> Series:
        """0 before onset, sin^2 rise to 1 at onset + rise, then halving every half-life."""
        tau = hours - self.onset_hour
        rise = np.sin(np.clip(tau / max(self.rise_hours, 1e-9), 0.0, 1.0) * math.pi / 2) ** 2
        decay = 0.5 ** (np.maximum(tau - self.rise_hours, 0.0) / self.decay_half_life_hours)
        return np.where(tau < 0, 0.0, np.where(tau < self.rise_hours, rise, decay))

    @property
    def peak_hour(self) -> int:
        return round(self.onset_hour + self.rise_hours)

    @property
    def end_hour(self) -> int:
        """When the expected demand falls back under twice the baseline."""
        excess = self.peak_multiplier - 1
        after = self.decay_half_life_hours * math.log2(excess) if excess > 1 else 0.0
        return math.ceil(self.onset_hour + self.rise_hours + after)

    @property
    def peak_window(self) -> tuple[int, int]:
        """Hours the expected excess is at least half its peak."""
        start = self.onset_hour + self.rise_hours / 2  # sin^2 reaches 1/2 half-way up
        return math.floor(start), math.ceil(self.peak_hour + self.decay_half_life_hours)


@dataclass(frozen=True)
class DemandSpec:
    sku: str
    baseline_per_day: float = 0.0
    dispersion: float = 1.0
    region_share: dict[str, float] | None = None
    channel_share: dict[str, float] | None = None
    pulses: tuple[Pulse, ...] = ()
    heat_noise: float = 0.35
    replay: tuple[Series, Series, Series, Series] | None = None  # history, heat hist, demand, heat


@dataclass(frozen=True)
class SkuSpec:
    economics: SkuEconomics
    initial_stock: dict[str, float]


@dataclass(frozen=True)
class Scenario:
    name: str
    start: datetime
    hours: int
    warmup_days: int
    regions: tuple[str, ...]
    warehouses: tuple[Warehouse, ...]
    transfer_lanes: tuple[TransferLane, ...]
    options: tuple[LeadTimeOption, ...]
    skus: tuple[SkuSpec, ...]
    demand: dict[str, DemandSpec]

    @property
    def warmup_hours(self) -> int:
        return self.warmup_days * 24


@dataclass(frozen=True)
class SkuWorld:
    """One seed's realised demand and heat of one SKU: warm-up history then the run."""

    history: Series  # warm-up demand (hours before start)
    history_heat: Series
    demand: Series  # per simulated hour
    heat: Series
    pulse_windows: tuple[tuple[int, int, int], ...]  # (onset, peak, end) hours
    peak_windows: tuple[tuple[int, int], ...]


# --- reading -----------------------------------------------------------------------------


def _get(obj: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise ScenarioError(f"{path}.{key}".lstrip("."), "is required")
    value = obj[key]
    if kind in (float, int) or kind == (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"{path}.{key}".lstrip("."), f"must be a number (got {value!r})")
        if not math.isfinite(float(value)):
            raise ScenarioError(f"{path}.{key}".lstrip("."), "must be finite")
        return value
    if not isinstance(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ScenarioError(f"{path}.{key}".lstrip("."), f"must be a {name} (got {value!r})")
    return value


def _number(obj: dict[str, Any], key: str, path: str, *, minimum: float | None = None,
            positive: bool = False, default: float | None = None) -> float:  # fmt: skip
    if key not in obj and default is not None:
        return default
    value = float(_get(obj, key, path, float))
    where = f"{path}.{key}".lstrip(".")
    if positive and value <= 0:
        raise ScenarioError(where, f"must be positive (got {value})")
    if minimum is not None and value < minimum:
        raise ScenarioError(where, f"must be at least {minimum} (got {value})")
    return value


def _integer(
    obj: dict[str, Any], key: str, path: str, *, minimum: int, default: int | None = None
) -> int:
    if key not in obj and default is not None:
        return default
    value = _get(obj, key, path, int)
    where = f"{path}.{key}".lstrip(".")
    if float(value) != int(value):
        raise ScenarioError(where, f"must be a whole number (got {value})")
    if int(value) < minimum:
        raise ScenarioError(where, f"must be at least {minimum} (got {value})")
    return int(value)


def _list(obj: dict[str, Any], key: str, path: str, *, required: bool = True) -> list[Any]:
    if key not in obj and not required:
        return []
    value = _get(obj, key, path, list)
    return list(value)


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(path, f"must be an object (got {value!r})")
    return value


def _master(path: str, build: Any) -> Any:
    try:
        return build()
    except MasterDataError as error:
        raise ScenarioError(f"{path}.{error.field}", error.message) from None


# The channels as the routing rule and the master data name them.
CHANNELS = ("tiktok_shop", "shopify", "amazon")


def _channels(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ScenarioError(path, "must be a list of channels")
    for index, channel in enumerate(value):
        if channel not in CHANNELS:
            raise ScenarioError(f"{path}[{index}]", f"must be one of {', '.join(CHANNELS)}")
    return tuple(value)


def _shares(value: Any, path: str, allowed: set[str] | None) -> dict[str, float] | None:
    if value is None:
        return None
    shares = _object(value, path)
    for key, share in shares.items():
        if allowed is not None and key not in allowed:
            raise ScenarioError(f"{path}.{key}", f"is not one of {', '.join(sorted(allowed))}")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or share < 0:
            raise ScenarioError(f"{path}.{key}", "must be a non-negative number")
    total = sum(float(s) for s in shares.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ScenarioError(path, f"shares must sum to 1 (got {total:g})")
    return {key: float(share) for key, share in shares.items()}


def parse_scenario(raw: Any, *, name: str = "scenario", base_dir: Path | None = None) -> Scenario:
    """Check a decoded scenario document and build it; ScenarioError names what is wrong."""
    doc = _object(raw, "")
    start_text = _get(doc, "start", "", str)
    try:
        start = datetime.fromisoformat(start_text.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError("start", f"must be an ISO 8601 time (got {start_text!r})") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    hours = _integer(doc, "hours", "", minimum=24)
    warmup_days = _integer(doc, "warmup_days", "", minimum=28, default=120)
    regions = tuple(str(r) for r in _list(doc, "regions", ""))
    if not regions:
        raise ScenarioError("regions", "must name at least one region")
    warehouses: list[Warehouse] = []
    for index, item in enumerate(_list(doc, "warehouses", "")):
        path = f"warehouses[{index}]"
        entry = _object(item, path)
        region = _get(entry, "region", path, str)
        if region not in regions:
            raise ScenarioError(f"{path}.region", f"unknown region {region!r}")
        warehouses.append(
            _master(
                path,
                lambda e=entry, r=region, p=path: Warehouse(
                    _get(e, "id", p, str),
                    r,
                    str(e.get("kind", "own")),
                    _channels(e.get("channels", []), f"{p}.channels"),
                ),
            )
        )
    if not warehouses:
        raise ScenarioError("warehouses", "must list at least one warehouse")
    ids = [w.id for w in warehouses]
    if len(set(ids)) != len(ids):
        raise ScenarioError("warehouses", "warehouse ids must be unique")
    lanes: list[TransferLane] = []
    for index, item in enumerate(_list(doc, "transfer_lanes", "", required=False)):
        path = f"transfer_lanes[{index}]"
        entry = _object(item, path)
        for key in ("from", "to"):
            if _get(entry, key, path, str) not in ids:
                raise ScenarioError(f"{path}.{key}", f"unknown warehouse {entry[key]!r}")
        lanes.append(
            _master(
                path,
                lambda e=entry, p=path: TransferLane(
                    e["from"],
                    e["to"],
                    _number(e, "lead_time_hours", p, minimum=0),
                    _number(e, "cost_per_unit", p, minimum=0),
                ),
            )
        )
    options: list[LeadTimeOption] = []
    for s_index, item in enumerate(_list(doc, "suppliers", "")):
        s_path = f"suppliers[{s_index}]"
        supplier = _object(item, s_path)
        supplier_id = _get(supplier, "id", s_path, str)
        for o_index, raw_option in enumerate(_list(supplier, "options", s_path)):
            path = f"{s_path}.options[{o_index}]"
            entry = _object(raw_option, path)
            lead = _object(_get(entry, "lead_time_hours", path, dict), f"{path}.lead_time_hours")
            targets = tuple(str(t) for t in entry.get("delivers_to", ids))
            for t_index, target in enumerate(targets):
                if target not in ids:
                    raise ScenarioError(
                        f"{path}.delivers_to[{t_index}]", f"unknown warehouse {target!r}"
                    )
            options.append(
                _master(
                    path,
                    lambda e=entry, lt=lead, p=path, sid=supplier_id, tg=targets: LeadTimeOption(
                        sid,
                        _get(e, "mode", p, str),
                        _number(lt, "mean", f"{p}.lead_time_hours", minimum=0),
                        _number(lt, "sd", f"{p}.lead_time_hours", minimum=0, default=0.0),
                        _number(e, "unit_cost", p, minimum=0),
                        _integer(e, "moq", p, minimum=0, default=0),
                        _integer(e, "case_pack", p, minimum=1, default=1),
                        tg,
                    ),
                )
            )
    if not options:
        raise ScenarioError("suppliers", "must offer at least one lead-time option")
    skus: list[SkuSpec] = []
    for index, item in enumerate(_list(doc, "skus", "")):
        path = f"skus[{index}]"
        entry = _object(item, path)
        economics = _master(
            path,
            lambda e=entry, p=path: SkuEconomics(
                _get(e, "sku", p, str),
                _number(e, "price", p, minimum=0),
                _number(e, "unit_cost", p, minimum=0),
                _number(e, "salvage", p, minimum=0),
                _number(e, "holding_per_unit_day", p, minimum=0),
                _number(e, "target_service_level", p, default=0.95),
            ),
        )
        for o_index, option in enumerate(options):
            if option.unit_cost <= economics.salvage:
                raise ScenarioError(
                    f"{path}.salvage", f"must be below every option's unit cost (option {o_index})"
                )
        stock = _object(entry.get("initial_stock", {}), f"{path}.initial_stock")
        for warehouse, units in stock.items():
            if warehouse not in ids:
                raise ScenarioError(f"{path}.initial_stock.{warehouse}", "unknown warehouse")
            if isinstance(units, bool) or not isinstance(units, (int, float)) or units < 0:
                raise ScenarioError(
                    f"{path}.initial_stock.{warehouse}", "must be a non-negative number"
                )
        skus.append(SkuSpec(economics, {k: float(v) for k, v in stock.items()}))
    if not skus:
        raise ScenarioError("skus", "must list at least one SKU")
    names = [s.economics.sku for s in skus]
    if len(set(names)) != len(names):
        raise ScenarioError("skus", "SKU ids must be unique")
    demand: dict[str, DemandSpec] = {}
    for index, item in enumerate(_list(doc, "demand", "")):
        path = f"demand[{index}]"
        entry = _object(item, path)
        sku = _get(entry, "sku", path, str)
        if sku not in names:
            raise ScenarioError(f"{path}.sku", f"unknown SKU {sku!r}")
        if sku in demand:
            raise ScenarioError(f"{path}.sku", f"demand for {sku!r} is given twice")
        demand[sku] = _demand(entry, path, sku, set(regions), start, hours, base_dir)
    for sku in names:
        if sku not in demand:
            raise ScenarioError("demand", f"no demand for SKU {sku!r}")
    return Scenario(
        name,
        start,
        hours,
        warmup_days,
        regions,
        tuple(warehouses),
        tuple(lanes),
        tuple(options),
        tuple(skus),
        demand,
    )


def _demand(
    entry: dict[str, Any],
    path: str,
    sku: str,
    regions: set[str],
    start: datetime,
    hours: int,
    base_dir: Path | None,
) -> DemandSpec:
    if "csv" in entry:
        if "baseline_per_day" in entry or "pulses" in entry:
            raise ScenarioError(path, "give either csv or baseline_per_day/pulses, not both")
        csv_path = Path(_get(entry, "csv", path, str))
        if not csv_path.is_absolute() and base_dir is not None:
            csv_path = base_dir / csv_path
        return DemandSpec(sku, replay=_read_csv(csv_path, f"{path}.csv", start, hours))
    baseline = _number(entry, "baseline_per_day", path, minimum=0)
    pulses: list[Pulse] = []
    for index, item in enumerate(_list(entry, "pulses", path, required=False)):
        p_path = f"{path}.pulses[{index}]"
        pulse = _object(item, p_path)
        multiplier = _number(pulse, "peak_multiplier", p_path, minimum=1)
        pulses.append(
            Pulse(
                _number(pulse, "onset_hour", p_path, minimum=0),
                multiplier,
                _number(pulse, "rise_hours", p_path, positive=True),
                _number(pulse, "decay_half_life_hours", p_path, positive=True),
                _number(pulse, "heat_lead_hours", p_path, minimum=0),
                _number(pulse, "size_log_sd", p_path, minimum=0, default=0.4),
            )
        )
        if pulses[-1].onset_hour >= hours:
            raise ScenarioError(f"{p_path}.onset_hour", f"must fall inside the {hours} hours")
    return DemandSpec(
        sku,
        baseline,
        _number(entry, "dispersion", path, positive=True, default=1.0),
        _shares(entry.get("region_share"), f"{path}.region_share", regions),
        _shares(entry.get("channel_share"), f"{path}.channel_share", set(CHANNELS)),
        tuple(pulses),
        _number(entry, "heat_noise", path, minimum=0, default=0.35),
    )


def _read_csv(
    path: Path, where: str, start: datetime, hours: int
) -> tuple[Series, Series, Series, Series]:
    if not path.exists():
        raise ScenarioError(where, f"file {str(path)!r} does not exist")
    with path.open(newline="") as source:
        reader = csv.DictReader(source)
        columns = set(reader.fieldnames or [])
        if not {"timestamp", "orders"} <= columns:
            raise ScenarioError(where, "the CSV needs columns timestamp,orders[,heat][,region]")
        rows = list(reader)
    offsets: list[int] = []
    orders: list[float] = []
    heats: list[float] = []
    for line, row in enumerate(rows, start=2):
        try:
            stamp = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            count = float(row["orders"])
            heat = float(row["heat"]) if row.get("heat") not in (None, "") else 0.0
        except ValueError as error:
            raise ScenarioError(f"{where} line {line}", str(error)) from None
        if count < 0 or heat < 0:
            raise ScenarioError(f"{where} line {line}", "orders and heat must be non-negative")
        offsets.append(math.floor((stamp - start).total_seconds() / 3600))
        orders.append(count)
        heats.append(heat)
    first = min(min(offsets, default=0), 0)
    size = hours - first
    demand, heat_series = np.zeros(size), np.zeros(size)
    for offset, count, heat in zip(offsets, orders, heats, strict=True):
        if offset < hours:
            demand[offset - first] += count
            heat_series[offset - first] += heat
    cut = -first
    return demand[:cut], heat_series[:cut], demand[cut:], heat_series[cut:]


def load_scenario(path: str | Path) -> Scenario:
    file = Path(path)
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ScenarioError("", f"scenario file {str(file)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise ScenarioError("", f"{file} is not valid JSON: {error}") from None
    return parse_scenario(raw, name=file.stem, base_dir=file.parent)


# --- generating ----------------------------------------------------------------------------


def _diurnal(hours: Series) -> Series:
    """Mean-one daily profile: quiet at night, busiest in the evening (hour 20)."""
    return 1.0 + 0.5 * np.cos(2 * math.pi * (hours - 20) / 24)


def realise(scenario: Scenario, sku_index: int, seed: int) -> SkuWorld:
    """The demand and heat one seed draws for one SKU; the same for every policy."""
    spec = scenario.demand[scenario.skus[sku_index].economics.sku]
    rng = np.random.default_rng([seed, sku_index, 7])
    hours = scenario.hours
    if spec.replay is not None:
        history, history_heat, demand, heat = spec.replay
        windows = _replay_pulse_windows(np.concatenate([history, demand]), history.size)
        return SkuWorld(
            history, history_heat, demand, heat, windows, tuple((o, e) for o, _, e in windows)
        )
    warm = scenario.warmup_hours
    clock = np.arange(-warm, hours, dtype=np.float64) + scenario.start.hour
    base = spec.baseline_per_day / 24.0
    multiplier = _diurnal(clock)
    heat_excess = np.zeros(clock.size)
    sim_hours = np.arange(-warm, hours, dtype=np.float64)
    for pulse in spec.pulses:
        size = float(np.exp(rng.normal(-(pulse.size_log_sd**2) / 2, pulse.size_log_sd)))
        conversion_error = float(np.exp(rng.normal(0.0, spec.heat_noise)))
        excess = (pulse.peak_multiplier - 1) * size
        multiplier = multiplier + excess * pulse.shape(sim_hours)
        ahead = pulse.shape(sim_hours + pulse.heat_lead_hours)
        heat_excess += base * excess * ahead / conversion_error
    baseline_rate = base * _diurnal(clock)
    pulse_rate = base * (multiplier - _diurnal(clock))
    # Intermittent baseline (NB size `dispersion`); a pulse's many buyers are nearer Poisson
    # (NB size PULSE_DISPERSION, the forecast service's fitted pulse dispersion).
    mixed = baseline_rate * rng.gamma(spec.dispersion, 1.0 / spec.dispersion, size=clock.size)
    mixed += pulse_rate * rng.gamma(PULSE_DISPERSION, 1.0 / PULSE_DISPERSION, size=clock.size)
    counts = rng.poisson(mixed).astype(np.float64)
    background = base * np.exp(rng.normal(0.0, 0.3, size=clock.size))
    heat = VIEWS_PER_ORDER * (
        background + heat_excess * np.exp(rng.normal(0.0, 0.2, size=clock.size))
    )
    windows = tuple(
        (int(p.onset_hour), p.peak_hour, min(p.end_hour, hours - 1)) for p in spec.pulses
    )
    peaks = tuple(p.peak_window for p in spec.pulses)
    return SkuWorld(counts[:warm], heat[:warm], counts[warm:], heat[warm:], windows, peaks)


def _replay_pulse_windows(series: Series, offset: int) -> tuple[tuple[int, int, int], ...]:
    """Pulses in replayed demand: runs where the day around an hour sells more than three
    times the median day (a marker for the metrics only; policies never see it)."""
    day = np.convolve(series, np.ones(24), mode="same")
    median = max(float(np.median(day)), 1.0)
    hot = day > 3 * median
    windows: list[tuple[int, int, int]] = []
    index = offset
    while index < series.size:
        if hot[index]:
            end = index
            while end + 1 < series.size and hot[end + 1]:
                end += 1
            peak = index + int(np.argmax(series[index : end + 1]))
            windows.append((index - offset, peak - offset, end - offset))
            index = end + 1
        else:
            index += 1
    return tuple(windows)
