"""fulfillment's commands in the `pulsestock` CLI (found through the `pulsestock.commands` entry
point, so the shared CLI does not import fulfillment)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_POLICIES = "pulsestock,pulsestock-blind,weekly-rop,min-max,ddmrp,base-stock,oracle"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="compare replenishment policies on a scenario, hour by hour with lost sales",
    )
    simulate.add_argument("--scenario", required=True, help="scenario JSON (see scenarios/)")
    simulate.add_argument("--seeds", type=int, default=20, help="number of seeds (default 20)")
    simulate.add_argument(
        "--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})"
    )
    simulate.add_argument(
        "--oracle",
        choices=("milp", "lp"),
        default="lp",
        help="the oracle: lp (default: MOQ and case pack relaxed, orders at any hour; an upper "
        "bound, 0.05 s a seed) or milp (the hindsight optimum respecting MOQ and case pack, "
        "HiGHS; 2-15 s a seed on 90 days)",
    )
    simulate.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes running seeds (default 0: one per CPU); results do not depend on it",
    )
    simulate.add_argument(
        "--network",
        action="store_true",
        help="also simulate each warehouse's stock (demand split by channel and region, served "
        "by the routing rule, pre-positioning transfers by the transfer rule) and report "
        "pulsestock with transfers minus without, paired over the seeds",
    )
    simulate.add_argument("--output", help="write results.json here")
    simulate.add_argument("--plot", help="write a self-contained HTML page here")
    simulate.set_defaults(run=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the simulator (the fulfillment and forecast domain code on a simulated clock)."""
    # Imported here: every `pulsestock` command registers this parser, only `simulate`
    # needs numpy, scipy and the domain.
    from pulsestock.fulfillment.application.report import html_page, table
    from pulsestock.fulfillment.application.scenario import ScenarioError, load_scenario
    from pulsestock.fulfillment.application.simulator import simulate, summarise

    if args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    if args.workers < 0:
        print("error: --workers must not be negative", file=sys.stderr)
        return 2
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    try:
        scenario = load_scenario(args.scenario)
        result = simulate(
            scenario,
            list(range(args.seeds)),
            policies,
            trace_seed=0,
            workers=args.workers or None,
            oracle=args.oracle,
        )
    except ScenarioError as error:
        print(f"error: invalid scenario {args.scenario}: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = summarise(result)
    print(table(summary))
    if args.network:
        from pulsestock.fulfillment.application.network import compare_network

        summary["network"] = compare_network(
            scenario,
            list(range(args.seeds)),
            "pulsestock",
            ("lost_units", "fill_rate", "profit", "transfer_units", "slow_delivery_share"),
        )
        print(_network_table(summary["network"]))
    if args.output:
        Path(args.output).write_text(json.dumps(_finite(summary), indent=2) + "\n")
    if args.plot:
        Path(args.plot).write_text(html_page(summary, result.trace, policies))
    return 0


def _network_table(network: dict[str, Any]) -> str:
    lines = [
        f"network ({network['policy']}, {len(network['seeds'])} seeds): with transfers minus"
        " without, mean [95 % CI]"
    ]
    for metric, difference in network["differences"].items():
        low, high = difference["ci95"]
        lines.append(f"  {metric:<22} {difference['mean']:>12.3f}  [{low:.3f}, {high:.3f}]")
    return "\n".join(lines)


def _finite(value: object) -> object:
    """NaN (e.g. a share of a non-positive oracle profit) as JSON null."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
