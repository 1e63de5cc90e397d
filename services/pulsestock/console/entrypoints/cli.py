"""`pulsestock console`: the operator's web page in the foreground (prints its address)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    console = commands.add_parser(
        "console",
        help="the operator's web page over the services' gRPC APIs and events"
        " (http://127.0.0.1:8090 unless CONSOLE_HOST / CONSOLE_PORT say otherwise)",
    )
    console.set_defaults(run=cmd_console)


def cmd_console(args: argparse.Namespace) -> int:
    from pulsestock.console.bootstrap import main

    return main()
