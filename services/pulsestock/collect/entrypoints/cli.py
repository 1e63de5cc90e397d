"""`pulsestock collect`: the collector in the foreground (the same as `pulsestock serve
collect`), so a seller runs it by the name the README gives."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    collect = commands.add_parser(
        "collect",
        help="poll creators' videos (TikTok Display API), tail stats files, push into ingest",
    )
    collect.set_defaults(run=cmd_collect)


def cmd_collect(args: argparse.Namespace) -> int:
    from pulsestock.collect.bootstrap import build
    from pulsestock.runtime import main

    main(build)
    return 0
