"""Order lines as commands carry them (purchase orders, orders to route): one check of
their SKUs and quantities, and their units summed per SKU."""

from __future__ import annotations

from collections.abc import Iterable

from pulsestock.errors import FieldViolation
from pulsestock.ids import ID_RULE, valid_id
from pulsestock.v1.common_pb2 import OrderLine

MAX_LINES = 500
MAX_QUANTITY = 10_000_000


def check_lines(
    lines: Iterable[OrderLine], field_name: str, max_lines: int = MAX_LINES
) -> list[FieldViolation]:
    """Every violation of `lines`: none, or more than `max_lines`; a SKU that is not an
    id; a quantity outside 1..MAX_QUANTITY."""
    violations: list[FieldViolation] = []
    items = list(lines)
    if not items:
        violations.append(FieldViolation(field_name, "at least one line is required"))
    if len(items) > max_lines:
        violations.append(FieldViolation(field_name, f"at most {max_lines} lines"))
    for index, line in enumerate(items[:max_lines]):
        if not valid_id(line.sku):
            violations.append(FieldViolation(f"{field_name}[{index}].sku", ID_RULE))
        if not 0 < line.quantity <= MAX_QUANTITY:
            violations.append(
                FieldViolation(
                    f"{field_name}[{index}].quantity", f"must be between 1 and {MAX_QUANTITY}"
                )
            )
    return violations


def summed(lines: Iterable[OrderLine]) -> dict[str, int]:
    """Units per SKU (a SKU on several lines counts once, with their total)."""
    out: dict[str, int] = {}
    for line in lines:
        out[line.sku] = out.get(line.sku, 0) + int(line.quantity)
    return out
