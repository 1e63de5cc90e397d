"""forecast's commands in the `pulsestock` CLI (found through the `pulsestock.commands` entry
point, so the shared CLI does not import forecast): `pulsestock forecast` writes the forecast
from each chosen origin of a CSV series, `pulsestock backtest` scores ours and every
reference model from the same origins (application/backtest.py).

The bucket is the file's own regular spacing: any fixed step (5 minutes, hourly, daily,
weekly, ...) or calendar months given as each month's first day. Each origin's forecast
sees only the rows at or before it, so cutting the file right after an origin leaves that
origin's rows unchanged. A bad file stops the command with one line naming its line number
(the header is line 1) and exit code 2; output is written to a temporary file and renamed,
so a failed run leaves no partial file.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pulsestock.config import ConfigError

if TYPE_CHECKING:
    from pulsestock.forecast.application.backtest import SeriesBacktest

DEFAULT_MIN_HISTORY = 14
DEFAULT_QUANTILES = "0.1,0.5,0.9"
SEED = 0  # the simulated paths' seed: the same file always gives the same numbers
# Names of the spacings baselines.SEASONS knows a season for.
NAMED_SPACINGS = {
    timedelta(minutes=5): "5min",
    timedelta(hours=1): "hourly",
    timedelta(days=1): "daily",
    timedelta(weeks=1): "weekly",
}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    forecast = commands.add_parser(
        "forecast",
        help="forecast a CSV demand series from each chosen origin",
        description="Forecast a CSV demand series from each chosen origin; writes"
        " origin,target,step,mean and one column per quantile level.",
    )
    _series_arguments(forecast, default_origins="last")
    forecast.add_argument("--output", required=True, help="the CSV to write")
    forecast.set_defaults(run=cmd_forecast)

    backtest = commands.add_parser(
        "backtest",
        help="score our forecast and every baseline on rolling origins of a CSV series",
        description="Rolling-origin backtest of a CSV demand series: pinball loss, CRPS,"
        " 80 % coverage, RMSSE/MASE and cumulative log ratio of ours and every reference"
        " model, with ours-minus-baseline bootstrap intervals, as JSON.",
    )
    _series_arguments(backtest, default_origins="all")
    backtest.add_argument("--output", required=True, help="the JSON report to write")
    backtest.set_defaults(run=cmd_backtest)


def _series_arguments(parser: argparse.ArgumentParser, *, default_origins: str) -> None:
    parser.add_argument("--input", required=True, help="CSV with a header row, oldest row first")
    parser.add_argument("--timestamp-col", help="ISO 8601 times or dates (default: 1st column)")
    parser.add_argument("--value-col", help="demand per bucket or counter (default: 2nd column)")
    parser.add_argument("--heat-col", help="optional reach/heat column aligned with the demand")
    parser.add_argument(
        "--kind",
        choices=("rate", "cumulative"),
        default="rate",
        help="rate: demand per bucket; cumulative: a running total (demand = its increments)",
    )
    parser.add_argument("--horizon", type=int, required=True, help="buckets to forecast")
    parser.add_argument(
        "--origins",
        default=default_origins,
        help="all | every:K (every K-th bucket from the first with --min-history) | last |"
        f" comma-separated timestamps of rows (default: {default_origins})",
    )
    parser.add_argument(
        "--min-history",
        type=int,
        default=DEFAULT_MIN_HISTORY,
        help=f"buckets an origin needs up to it (default {DEFAULT_MIN_HISTORY})",
    )
    parser.add_argument(
        "--quantiles",
        default=DEFAULT_QUANTILES,
        help=f"levels in (0, 1), comma-separated (default {DEFAULT_QUANTILES})",
    )


# --- reading the file ----------------------------------------------------------------------


@dataclass(frozen=True)
class Bucketing:
    """The file's spacing: how far one bucket is from the next."""

    name: str  # "daily", "monthly", ... ("every <step>" when it has no common name)
    step: timedelta | None  # None: calendar months
    wall_clock: bool  # whole days: step on the calendar, not in elapsed time

    @property
    def season(self) -> int | None:
        from pulsestock.forecast.domain.baselines import SEASONS

        return SEASONS.get(self.name)

    def gap(self, earlier: datetime, later: datetime) -> timedelta:
        if self.wall_clock:
            return later.replace(tzinfo=None) - earlier.replace(tzinfo=None)
        return later - earlier

    def follows(self, earlier: datetime, later: datetime) -> bool:
        """Whether `later` is the bucket right after `earlier` (on the wall clock for whole
        days and months, so a local-time daily series keeps its spacing across DST)."""
        if self.step is None:
            expected = self.after(earlier, 1)
            return expected.replace(tzinfo=None) == later.replace(tzinfo=None)
        return self.gap(earlier, later) == self.step

    def after(self, moment: datetime, steps: int) -> datetime:
        if self.step is None:
            months = moment.year * 12 + moment.month - 1 + steps
            return moment.replace(year=months // 12, month=months % 12 + 1)
        return moment + self.step * steps


@dataclass(frozen=True)
class DemandSeries:
    """Demand per bucket, oldest first, with each bucket's timestamp and file line."""

    path: str
    time_col: str
    value_col: str
    times: list[datetime]
    lines: list[int]
    demand: list[float]
    heat: list[float] | None
    bucketing: Bucketing
    date_only: bool
    separator: str

    def label(self, moment: datetime) -> str:
        if self.date_only:
            return moment.date().isoformat()
        return moment.isoformat(sep=self.separator)


def _parse_time(text: str) -> tuple[datetime, bool] | None:
    """An ISO 8601 date or date-time (and whether it was a date alone); None if neither."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day), True
        return datetime.fromisoformat(text), False
    except ValueError:
        return None


def _bucketing(first: datetime, second: datetime) -> Bucketing | None:
    """The spacing the first two rows set; None when they are not in increasing order."""
    if second <= first:
        return None
    months = (second.year - first.year) * 12 + second.month - first.month
    if (
        months == 1
        and first.day == second.day == 1
        and first.time() == second.time() == datetime.min.time()
    ):
        return Bucketing("monthly", None, True)
    wall = second.replace(tzinfo=None) - first.replace(tzinfo=None)
    calendar = wall > timedelta(0) and wall % timedelta(days=1) == timedelta(0)
    step = wall if calendar else second - first
    name = NAMED_SPACINGS.get(step, f"every {step}")
    return Bucketing(name, step, calendar)


def _number(text: str | None, where: str, what: str) -> float:
    if text is None or not text.strip():
        raise ConfigError(f"{where}: {what} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} {text!r} is not a number") from None
    if math.isnan(value):
        raise ConfigError(f"{where}: {what} is NaN")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {what} {text!r} is not finite")
    return value


def read_series(args: argparse.Namespace) -> DemandSeries:
    """The file's demand per bucket, checked row by row: the first problem stops it."""
    path = args.input
    try:
        with open(path, newline="", encoding="utf-8-sig") as source:  # a BOM is not a name
            reader = csv.DictReader(source)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a readable CSV file ({error})") from None
    if not columns:
        raise ConfigError(f"{path}:1: no header row")
    time_col = args.timestamp_col or columns[0]
    value_col = args.value_col or (columns[1] if len(columns) > 1 else "")
    for flag, name in (
        ("--timestamp-col", time_col),
        ("--value-col", value_col),
        ("--heat-col", args.heat_col),
    ):
        if name is not None and name not in columns:
            shown = repr(name) if name else "(a second column)"
            raise ConfigError(
                f"{path}:1: {flag} column {shown} is not in the header"
                f" (columns: {', '.join(columns)})"
            )
    cumulative = args.kind == "cumulative"
    times: list[datetime] = []
    lines: list[int] = []
    values: list[float] = []
    heat: list[float] = []
    bucketing: Bucketing | None = None
    date_only = True
    first_text = ""
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        if None in row or any(row.get(c) is None for c in columns):
            raise ConfigError(
                f"{where}: the row has {_cells(row)} cells, the header {len(columns)}"
            )
        raw = row[time_col] or ""
        parsed = _parse_time(raw)
        if parsed is None:
            raise ConfigError(f"{where}: timestamp {raw!r} is not an ISO 8601 date or time")
        moment, is_date = parsed
        date_only = date_only and is_date
        if times:
            previous = times[-1]
            if (moment.tzinfo is None) != (previous.tzinfo is None):
                raise ConfigError(f"{where}: timestamp {raw!r} mixes zoned and naive times")
            if moment == previous:
                raise ConfigError(f"{where}: timestamp {raw!r} repeats the previous row's")
            if moment < previous:
                raise ConfigError(f"{where}: timestamp {raw!r} is before the previous row's")
            if bucketing is None:
                bucketing = _bucketing(previous, moment)
                assert bucketing is not None  # increasing, checked above
            elif not bucketing.follows(previous, moment):
                expected = bucketing.after(previous, 1)
                raise ConfigError(
                    f"{where}: timestamp {raw!r} breaks the file's {bucketing.name} spacing"
                    f" (expected {expected.isoformat()}; rows must be evenly spaced, no gaps)"
                )
        else:
            first_text = raw.strip()
        value = _number(row[value_col], where, f"{value_col!r}")
        if cumulative:
            if values and value < values[-1]:
                raise ConfigError(
                    f"{where}: cumulative {value_col!r} decreases from {values[-1]:g} to"
                    f" {value:g} (a running total never decreases)"
                )
        elif value < 0:
            raise ConfigError(f"{where}: {value_col!r} is negative ({value:g}); demand is >= 0")
        if args.heat_col:
            level = _number(row[args.heat_col], where, f"{args.heat_col!r}")
            if level < 0:
                raise ConfigError(f"{where}: {args.heat_col!r} is negative ({level:g})")
            heat.append(level)
        times.append(moment)
        lines.append(line)
        values.append(value)
    if cumulative:  # demand is each row's increment; the first row only sets the start
        values = [b - a for a, b in pairwise(values)]
        times, lines, heat = times[1:], lines[1:], heat[1:]
    if len(values) < args.min_history or bucketing is None:
        buckets = "buckets (increments)" if cumulative else "rows"
        raise ConfigError(
            f"{path}:{(lines[-1] if lines else 1)}: the file ends after {len(values)} data"
            f" {buckets}; --min-history needs {max(args.min_history, 2)}"
        )
    separator = " " if len(first_text) > 10 and first_text[10] == " " else "T"
    return DemandSeries(
        path,
        time_col,
        value_col,
        times,
        lines,
        values,
        heat if args.heat_col else None,
        bucketing,
        date_only,
        separator,
    )


def _cells(row: dict[str | Any, Any]) -> int:
    extra = row.get(None) or []
    return sum(1 for k, v in row.items() if k is not None and v is not None) + len(extra)


# --- the options ---------------------------------------------------------------------------


def _levels(text: str) -> tuple[float, ...]:
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--quantiles {text!r}: not a comma-separated list of numbers") from None
    if not levels or any(not 0.0 < level < 1.0 for level in levels):
        raise ConfigError(f"--quantiles {text!r}: every level must lie strictly between 0 and 1")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"--quantiles {text!r}: a level is repeated")
    return tuple(sorted(levels))  # columns ascend, so each row's quantiles do too


def _check_options(args: argparse.Namespace) -> tuple[float, ...]:
    if args.horizon <= 0:
        raise ConfigError(f"--horizon {args.horizon}: must be a positive number of buckets")
    if args.min_history < 2:
        raise ConfigError(f"--min-history {args.min_history}: must be at least 2")
    return _levels(args.quantiles)


def _origins(
    series: DemandSeries, spec: str, horizon: int, min_history: int, *, scored: bool
) -> list[int]:
    """Indices of the chosen origins. A backtest (`scored`) keeps only origins whose whole
    horizon is in the file; `every:K` counts from the first origin with enough history, so
    a longer file keeps a shorter one's origins."""
    first = min_history
    last = len(series.demand) - 1 - (horizon if scored else 0)
    spec = spec.strip()
    need = f"the --min-history {min_history} buckets up to it"
    if scored:
        need += f" and the next {horizon} buckets after it in the file"
    if spec in ("all", "last") or spec.startswith("every:"):
        every = 1
        if spec.startswith("every:"):
            try:
                every = int(spec.removeprefix("every:"))
            except ValueError:
                every = 0
            if every < 1:
                raise ConfigError(f"--origins {spec!r}: K in every:K must be a positive integer")
        chosen = list(range(first - 1, last + 1, every))
        if spec == "last":
            chosen = chosen[-1:]
        if not chosen:
            raise ConfigError(
                f"{series.path}: no origin has {need}: it has {len(series.demand)} buckets"
            )
        return chosen
    index = {moment: i for i, moment in enumerate(series.times)}
    chosen = []
    for text in spec.split(","):
        parsed = _parse_time(text)
        if parsed is None:
            raise ConfigError(f"--origins: {text.strip()!r} is not an ISO 8601 date or time")
        position = index.get(parsed[0])
        if position is None:
            raise ConfigError(
                f"--origins: {text.strip()!r} is not the timestamp of a demand bucket in"
                f" {series.path}"
            )
        if not first - 1 <= position <= last:
            raise ConfigError(
                f"--origins: {text.strip()!r} (line {series.lines[position]}) does not have {need}"
            )
        chosen.append(position)
    return sorted(set(chosen))


def _prepare(
    args: argparse.Namespace, *, scored: bool
) -> tuple[DemandSeries, list[int], tuple[float, ...]]:
    levels = _check_options(args)
    series = read_series(args)
    origins = _origins(series, args.origins, args.horizon, args.min_history, scored=scored)
    return series, origins, levels


def _write_atomically(path: str, write: Callable[[Any], None]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`: a failure
    leaves no partial output."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"--output {path}: folder {folder} does not exist")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", newline="") as out:
            write(out)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _format(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# --- the commands --------------------------------------------------------------------------


def cmd_forecast(args: argparse.Namespace) -> int:
    """Write `origin,target,step,mean,q...` for every chosen origin and step 1..horizon
    (step k is k buckets after the origin)."""
    series, origins, levels = _prepare(args, scored=False)
    # Imported here, not at the top: every `pulsestock` command registers this parser (and
    # after the file's checks, so a bad file is refused at once).
    from pulsestock.forecast.domain.demand import forecast_history

    rows: list[list[str]] = []
    for origin in origins:
        heat = None if series.heat is None else series.heat[: origin + 1]
        fitted = forecast_history(
            series.demand[: origin + 1], heat=heat, horizon_hint=args.horizon, seed=SEED
        )
        means = fitted.mean(args.horizon)
        quantiles = fitted.step_quantiles(args.horizon, levels)
        at = series.times[origin]
        for step in range(1, args.horizon + 1):
            rows.append(
                [
                    series.label(at),
                    series.label(series.bucketing.after(at, step)),
                    str(step),
                    _format(float(means[step - 1])),
                    *(_format(float(v)) for v in quantiles[step - 1]),
                ]
            )
    header = ["origin", "target", "step", "mean", *(f"q{level:g}" for level in levels)]

    def write(out: Any) -> None:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)

    _write_atomically(args.output, write)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    """Write the rolling-origin backtest of ours and every reference model as JSON."""
    series, origins, levels = _prepare(args, scored=True)
    import json

    from pulsestock.forecast.application.backtest import backtest_series, report

    result: SeriesBacktest = backtest_series(
        series.demand,
        horizon=args.horizon,
        origins=origins,
        levels=levels,
        heat=series.heat,
        season=series.bucketing.season,
        seed=SEED,
    )
    document = {
        "input": {
            "file": args.input,
            "timestamp_col": series.time_col,
            "value_col": series.value_col,
            "kind": args.kind,
            "bucket": series.bucketing.name,
            "buckets": len(series.demand),
            "first": series.label(series.times[0]),
            "last": series.label(series.times[-1]),
            "heat_col": args.heat_col,
        },
        "min_history": args.min_history,
        "levels": list(levels),
        "first_origin": series.label(series.times[origins[0]]),
        "last_origin": series.label(series.times[origins[-1]]),
        **report(result).as_dict(),
    }

    def write(out: Any) -> None:
        json.dump(document, out, indent=2, allow_nan=False)
        out.write("\n")

    _write_atomically(args.output, write)
    return 0
