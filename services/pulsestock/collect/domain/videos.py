"""Which SKUs a collected video features, and what a request to say so must look like. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pulsestock.errors import Validator
from pulsestock.ids import ID_RULE, valid_id

MAX_SKUS_PER_VIDEO = 100  # ingest's RegisterVideo limit


def effective_skus(mapped: Sequence[str] | None, creator_defaults: Sequence[str]) -> list[str]:
    """An operator's mapping wins over the creator's defaults; neither: none (not polled, as
    ingest accepts no video without a SKU)."""
    return sorted(set(mapped if mapped is not None else creator_defaults))


def check_skus(v: Validator, skus: Sequence[str], field: str, *, required: bool) -> None:
    """Each SKU well formed, no more than ingest takes; at least one when `required`."""
    if required:
        v.check(len(skus) > 0, field, "must list at least one SKU")
    v.check(len(skus) <= MAX_SKUS_PER_VIDEO, field, f"at most {MAX_SKUS_PER_VIDEO} SKUs")
    for index, sku in enumerate(skus):
        v.check(valid_id(sku), f"{field}[{index}]", f"malformed SKU: {ID_RULE}")


@dataclass(frozen=True, slots=True)
class Registration:
    """What ingest was last told about a video known from stats files or posts."""

    skus: tuple[str, ...]
    creator_id: str
    published_at: datetime
