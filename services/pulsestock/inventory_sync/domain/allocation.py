"""How much each channel may show, from the SKU's available stock and its allocation policy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pulsestock.v1.common_pb2 import Channel
from pulsestock.v1.inventory_sync_events_pb2 import AllocationPolicyKind

CHANNELS: tuple[int, ...] = (
    Channel.CHANNEL_TIKTOK_SHOP,
    Channel.CHANNEL_SHOPIFY,
    Channel.CHANNEL_AMAZON,
)


@dataclass(frozen=True)
class AllocationPolicy:
    kind: int = AllocationPolicyKind.ALLOCATION_POLICY_KIND_SHARED_POOL
    buffers: dict[int, int] = field(default_factory=dict)
    shares: dict[int, float] = field(default_factory=dict)
    slow_channel_cap: int = 0


def channel_quantities(
    available: int,
    policy: AllocationPolicy,
    hot_channel: int | None,
    reachable: Mapping[int, int] | None = None,
) -> dict[int, int]:
    """Quantities per channel; never negative, never above `available`, nor above the units
    in warehouses that fulfil the channel (`reachable`; default: every unit), since the
    ledger reserves an order only where its channel may ship from.

    Channels are allowed to overlap (a shared pool shows the same units everywhere): the
    ledger's reservation, not the listing, decides who gets the last unit, and buffers keep
    slow-syncing channels from promising what is about to go.
    """
    available = max(0, available)

    def reach(channel: int) -> int:
        return available if reachable is None else max(0, min(available, reachable[channel]))

    def pooled(channel: int) -> int:
        return max(0, reach(channel) - policy.buffers.get(channel, 0))

    if policy.kind == AllocationPolicyKind.ALLOCATION_POLICY_KIND_FIXED_SHARES:
        return {
            c: min(reach(c), math.floor(available * policy.shares.get(c, 0.0))) for c in CHANNELS
        }
    if (
        policy.kind == AllocationPolicyKind.ALLOCATION_POLICY_KIND_PULSE_PRIORITY
        and hot_channel is not None
    ):
        return {
            c: reach(c) if c == hot_channel else min(pooled(c), policy.slow_channel_cap)
            for c in CHANNELS
        }
    return {c: pooled(c) for c in CHANNELS}
