"""SKU codes and the ledger stream that holds each SKU's history."""

from __future__ import annotations

import re

from pulsestock.errors import Validator

SKU_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
STREAM_CATEGORY = "sku"


def check_sku(validator: Validator, value: str, field: str = "sku") -> None:
    if not validator.check(bool(value), field, "is required"):
        return
    validator.check(
        SKU_PATTERN.fullmatch(value) is not None,
        field,
        "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )


def ledger_stream(sku: str) -> str:
    return f"{STREAM_CATEGORY}-{sku}"


def is_ledger_stream(stream_id: str) -> bool:
    return stream_id.startswith(f"{STREAM_CATEGORY}-")


def sku_of_stream(stream_id: str) -> str:
    """`sku-ABC-1` -> `ABC-1`, the inverse of ledger_stream."""
    return stream_id.removeprefix(f"{STREAM_CATEGORY}-")
