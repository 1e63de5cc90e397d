"""Identifiers that cross service boundaries (videos, creators, sellers, live sessions, SKUs
as the channels send them): one rule, so what one service accepts the next one does too."""

from __future__ import annotations

import re

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
ID_RULE = "must be 1-128 letters, digits or _.:-"


def valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
