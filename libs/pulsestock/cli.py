"""The `pulsestock` command: `dev up`, `migrate`, `events tail`, `serve`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from pulsestock.config import SERVICE_NAMES, ConfigError, Env, service_schema


def _database_url() -> str:
    url = Env().url("DATABASE_URL", ("postgres", "postgresql"))
    if url is None:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user@host:5432/db)")
    return url


def cmd_dev_up(args: argparse.Namespace) -> int:
    from pulsestock.devstack.supervisor import dev_up

    return dev_up(Path(args.data_dir), args.services or None)


def cmd_migrate(args: argparse.Namespace) -> int:
    from pulsestock.devstack.supervisor import migrate_all

    migrate_all(_database_url(), args.services or list(SERVICE_NAMES))
    print(f"migrated: {', '.join(args.services or SERVICE_NAMES)}")
    return 0


def cmd_events_tail(args: argparse.Namespace) -> int:
    from pulsestock.eventstore.store import EventStore, Wakeup, connect_pool, notify_channel

    async def tail() -> None:
        url = _database_url()
        schema = service_schema(args.service)
        pool = await connect_pool(url, schema, max_size=2, application_name="pulsestock-tail")
        store = EventStore(pool, schema)
        position = args.after if args.after >= 0 else max(0, await store.head_position() - 20)
        try:
            async with Wakeup(
                url if args.follow else None, notify_channel(schema, "events")
            ) as wake:
                while True:
                    events = await store.read_all(position, 500)
                    for event in events:
                        print(json.dumps(event.as_readable(), default=str), flush=True)
                    if events:
                        position = events[-1].global_position
                        continue
                    if not args.follow:
                        return
                    await wake.wait(1.0)
        finally:
            await pool.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail())
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    """Run signal's pulse detector over a time series, as a stream (each row sees only the
    rows before it), and write every row with its `score` and `alert`."""
    import csv

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


def cmd_serve(args: argparse.Namespace) -> int:
    from pulsestock.runtime import main
    from pulsestock.services import definition_of

    main(lambda: definition_of(args.service))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pulsestock", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="the local development stack")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser("up", help="start PostgreSQL, NATS and every service")
    up.add_argument("--data-dir", default=".pulsestock", help="where data lives (./.pulsestock)")
    up.add_argument("--services", nargs="*", choices=SERVICE_NAMES, help="only these services")
    up.set_defaults(run=cmd_dev_up)

    migrate = commands.add_parser("migrate", help="apply SQL migrations to DATABASE_URL")
    migrate.add_argument("--services", nargs="*", choices=SERVICE_NAMES)
    migrate.set_defaults(run=cmd_migrate)

    events = commands.add_parser("events", help="read a service's event log")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    tail = event_commands.add_parser("tail", help="print events in readable form (JSON lines)")
    tail.add_argument("--service", default="inventory-sync", choices=SERVICE_NAMES)
    tail.add_argument("--after", type=int, default=-1, help="global position (default: last 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.set_defaults(run=cmd_events_tail)

    detect = commands.add_parser("detect", help="run the pulse detector over a CSV time series")
    detect.add_argument("--input", required=True, help="CSV with a header row")
    detect.add_argument("--timestamp-col", help="the time column (rows must be in time order)")
    detect.add_argument("--value-col", help="the value column (default: the second column)")
    detect.add_argument("--kind", choices=("rate", "cumulative"), default="rate")
    detect.add_argument("--output", help="where to write the scored rows (default: stdout)")
    detect.set_defaults(run=cmd_detect)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICE_NAMES)
    serve.set_defaults(run=cmd_serve)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.run(args)
    except ConfigError as error:
        print(f"pulsestock: configuration error: {error}", file=sys.stderr)
        code = 2
    raise SystemExit(code)
