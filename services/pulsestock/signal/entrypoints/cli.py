"""signal's commands in the `pulsestock` CLI: `pulsestock detect` (found through the
`pulsestock.commands` entry point, so the shared CLI does not import signal)."""

from __future__ import annotations

import argparse
import csv
import sys

from pulsestock.config import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    detect = commands.add_parser("detect", help="run the pulse detector over a CSV time series")
    detect.add_argument("--input", required=True, help="CSV with a header row")
    detect.add_argument("--timestamp-col", help="the time column (rows must be in time order)")
    detect.add_argument("--value-col", help="the value column (default: the second column)")
    detect.add_argument("--kind", choices=("rate", "cumulative"), default="rate")
    detect.add_argument("--output", help="where to write the scored rows (default: stdout)")
    detect.set_defaults(run=cmd_detect)


def cmd_detect(args: argparse.Namespace) -> int:
    """Run signal's pulse detector over a time series, as a stream (each row sees only the
    rows before it), and write every row with its `score` and `alert`."""
    # Imported here, not at the top: every `pulsestock` command registers this module's
    # parser, and only `detect` needs the detector.
    from pulsestock.signal.domain.detector import PulseDetector

    with open(args.input, newline="") as source:
        reader = csv.DictReader(source)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if not columns:
        raise ConfigError(f"{args.input} has no header row")
    value_col = args.value_col or (columns[1] if len(columns) > 1 else columns[0])
    for name in (value_col, args.timestamp_col):
        if name and name not in columns:
            raise ConfigError(
                f"column {name!r} is not in {args.input} (columns: {', '.join(columns)})"
            )
    detector = PulseDetector()
    previous: float | None = None
    output = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        writer = csv.DictWriter(output, fieldnames=[*columns, "score", "alert"])
        writer.writeheader()
        for line, row in enumerate(rows, start=2):
            try:
                value = float(row[value_col] or 0)
            except ValueError:
                raise ConfigError(
                    f"{args.input}:{line}: {row[value_col]!r} is not a number"
                ) from None
            if args.kind == "cumulative":
                rate = None if previous is None else max(0.0, value - previous)
                previous = value
            else:
                rate = value
            if rate is None:  # a counter's first row has no increment yet
                writer.writerow({**row, "score": "0.0000", "alert": 0})
                continue
            step = detector.update(rate)
            writer.writerow({**row, "score": f"{step.score:.4f}", "alert": int(step.alert)})
    finally:
        if output is not sys.stdout:
            output.close()
    return 0
