"""The `pulsestock` command: `dev up`, `migrate`, `events tail`, `serve`, `demo`, and the commands
the services add (e.g. signal's `detect`), found through the `pulsestock.commands` entry
points."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

from pulsestock.config import ConfigError, Env, env_prefix, service_schema
from pulsestock.services import all_definitions, builder_of, command_registrars, service_names


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

    database_url = _database_url()
    definitions = all_definitions(args.services or None)
    migrate_all(database_url, definitions)
    print(f"migrated: {', '.join(definition.name for definition in definitions)}")
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


def cmd_serve(args: argparse.Namespace) -> int:
    from pulsestock.runtime import main

    main(builder_of(args.service))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pulsestock.demo import cmd_demo as run_demo

    flags = {name: getattr(args, f"{name.replace('-', '_')}_addr") for name in service_names()}
    return run_demo(flags, args.step_timeout)


def parser() -> argparse.ArgumentParser:
    names = service_names()
    root = argparse.ArgumentParser(prog="pulsestock", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="the local development stack")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_commands.add_parser("up", help="start PostgreSQL, NATS and every service")
    up.add_argument("--data-dir", default=".pulsestock", help="where data lives (./.pulsestock)")
    up.add_argument("--services", nargs="*", choices=names, help="only these services")
    up.set_defaults(run=cmd_dev_up)

    migrate = commands.add_parser("migrate", help="apply SQL migrations to DATABASE_URL")
    migrate.add_argument("--services", nargs="*", choices=names)
    migrate.set_defaults(run=cmd_migrate)

    events = commands.add_parser("events", help="read a service's event log")
    event_commands = events.add_subparsers(dest="events_command", required=True)
    tail = event_commands.add_parser("tail", help="print events in readable form (JSON lines)")
    tail.add_argument("--service", required=True, choices=names)
    tail.add_argument("--after", type=int, default=-1, help="global position (default: last 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.set_defaults(run=cmd_events_tail)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=names)
    serve.set_defaults(run=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="on a running system (`make run`): a pulse into ingest through to a received"
        " purchase order and new channel quantities, for a fresh SKU",
    )
    for name in names:
        demo.add_argument(
            f"--{name}-addr",
            metavar="HOST:PORT",
            help=f"{name}'s gRPC address (default ${env_prefix(name)}_ADDR, else"
            f" 127.0.0.1:${env_prefix(name)}_GRPC_PORT or {name}'s default port)",
        )
    demo.add_argument("--step-timeout", type=float, default=60.0, help="seconds per step (60)")
    demo.set_defaults(run=cmd_demo)

    for register in command_registrars():
        register(commands)
    return root


def main(argv: list[str] | None = None) -> None:
    try:
        args = parser().parse_args(argv)
        code = args.run(args)
    except ConfigError as error:
        print(f"pulsestock: configuration error: {error}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


if __name__ == "__main__":  # `python -m pulsestock.cli`, as `pulsestock dev up` starts services
    main()
