"""forecast's commands in the `pulsestock` CLI (found through the `pulsestock.commands` entry
point, so the shared CLI does not import forecast)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """No commands yet."""
