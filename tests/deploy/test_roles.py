"""Services split across Deployments by PULSESTOCK_ROLES (inventory-sync: commands apart from
its projection and channel sync) still run every role of the service, each role named as the
code names it."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pulsestock.runtime import role_name, selected_roles
from pulsestock.services import companion_names, definition_of, service_names

from tests.deploy.manifests import TARGETS, containers, of_kind, render


@pytest.mark.parametrize("target", TARGETS)
def test_every_role_of_every_service_runs_somewhere(target: str) -> None:
    roles: dict[str, set[str]] = defaultdict(set)
    for deployment in of_kind(render(target), "Deployment"):
        for container, init in containers(deployment):
            if init:
                continue
            module = container["command"][-1]  # python -m pulsestock.<service>
            service = module.removeprefix("pulsestock.").replace("_", "-")
            if service in companion_names():
                continue  # no gRPC service, no roles (the console)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            wanted = env.get("PULSESTOCK_ROLES")
            all_roles = {role_name(r) for r in selected_roles(definition_of(service), None)}
            if wanted is None:
                roles[service] |= all_roles
                continue
            named = {name.strip() for name in wanted.split(",")}
            assert named <= all_roles, f"{deployment['metadata']['name']}: {named - all_roles}"
            roles[service] |= named
    for service in service_names():
        expected = {role_name(r) for r in selected_roles(definition_of(service), None)}
        assert roles[service] == expected, service


def test_inventory_sync_commands_and_projections_are_apart() -> None:
    by_name = {d["metadata"]["name"]: d for d in of_kind(render("base"), "Deployment")}
    command = by_name["inventory-sync"]["spec"]["template"]["spec"]["containers"][0]
    reads = by_name["inventory-sync-projections"]["spec"]["template"]["spec"]["containers"][0]
    roles = {
        name: {e["name"]: e.get("value") for e in c["env"]}["PULSESTOCK_ROLES"].split(",")
        for name, c in (("command", command), ("reads", reads))
    }
    assert "writer" in roles["command"]
    assert "read_model" not in roles["command"]
    assert set(roles["reads"]) == {"read_model", "channel_sync"}
