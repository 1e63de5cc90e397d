"""The rules and the schema validator catch what they are for: each is shown a manifest with
the fault it guards against (the faults deploy/ had before `make deploy-check`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.deploy import rules
from tests.deploy.manifests import KUBERNETES_VERSION, Obj, validator_module


def deployment(name: str = "ingest", replicas: int = 2) -> Obj:
    container = {
        "name": name,
        "image": "ghcr.io/pulsestock/pulsestock:0.1.0",
        "ports": [{"name": "grpc", "containerPort": 50051}],
        "readinessProbe": {"grpc": {"port": 50051}},
        "livenessProbe": {"grpc": {"port": 50051}},
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    init = copy.deepcopy(container) | {"name": "migrate"}
    for probe in ("ports", "readinessProbe", "livenessProbe"):
        del init[probe]
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "initContainers": [init],
                    "containers": [container],
                },
            },
        },
    }


def pdb(name: str = "ingest", **budget: Any) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": name}}, **budget},
    }


def main(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def init(obj: Obj) -> Obj:
    return obj["spec"]["template"]["spec"]["initContainers"][0]  # type: ignore[no-any-return]


def test_a_sound_deployment_breaks_no_rule() -> None:
    objects = [deployment(), pdb(maxUnavailable=1)]
    for rule in (rules.resources, rules.grpc_probes, rules.hardened, rules.pinned_images):
        assert rule(objects) == [], rule.__name__
    assert rules.disruption_budgets(objects) == []
    validator_module().validate(objects[0], KUBERNETES_VERSION, strict=True)


def test_an_init_container_without_requests_or_limits_is_found() -> None:
    bad = deployment()
    del init(bad)["resources"]
    found = rules.resources([bad])
    assert found == [
        "Deployment/default/ingest init container migrate: no requests for cpu, memory",
        "Deployment/default/ingest init container migrate: no limits for cpu, memory",
    ]


def test_missing_or_misdirected_grpc_probes_are_found() -> None:
    bad = deployment()
    del main(bad)["livenessProbe"]
    main(bad)["readinessProbe"] = {"grpc": {"port": 9999}}
    assert len(rules.grpc_probes([bad])) == 2
    unnamed = deployment()
    main(unnamed)["ports"] = [{"containerPort": 50051}]
    assert rules.grpc_probes([unnamed]) == [
        "Deployment/default/ingest container ingest: no port named grpc"
    ]


def test_the_console_needs_http_probes_on_its_http_port() -> None:
    console = deployment()
    main(console)["command"] = ["python", "-m", "pulsestock.console"]
    main(console)["ports"] = [{"name": "http", "containerPort": 8090}]
    for probe in ("readinessProbe", "livenessProbe"):
        main(console)[probe] = {"httpGet": {"path": "/healthz", "port": "http"}}
    assert rules.grpc_probes([console]) == []
    main(console)["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": 9999}}
    del main(console)["readinessProbe"]
    assert len(rules.grpc_probes([console])) == 2
    # A gRPC service serving HTTP too is still checked over gRPC.
    main(console)["command"] = ["python", "-m", "pulsestock.ingest"]
    assert rules.grpc_probes([console]) == [
        "Deployment/default/ingest container ingest: no port named grpc"
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("readOnlyRootFilesystem", False),
        ("allowPrivilegeEscalation", True),
        ("privileged", True),
        ("capabilities", {"drop": ["NET_RAW"]}),
        ("runAsNonRoot", False),
    ],
)
def test_a_weakened_security_context_is_found(field: str, value: Any) -> None:
    bad = deployment()
    init(bad)["securityContext"][field] = value
    found = rules.hardened([bad])
    assert len(found) == 1
    assert "init container migrate" in found[0]


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("ghcr.io/pulsestock/pulsestock:0.1.0", True),
        ("ghcr.io/pulsestock/pulsestock:v1.2.3-rc.1", True),
        ("registry:5000/pulsestock@sha256:" + "ab" * 32, True),
        ("ghcr.io/pulsestock/pulsestock:dev", False),
        ("ghcr.io/pulsestock/pulsestock:latest", False),
        ("ghcr.io/pulsestock/pulsestock", False),
        ("registry:5000/pulsestock", False),
        ("pulsestock", False),
        ("ghcr.io/pulsestock/pulsestock:1.2", False),
    ],
)
def test_only_a_version_or_a_digest_is_pinned(image: str, pinned: bool) -> None:
    assert rules.image_is_pinned(image) is pinned


@pytest.mark.parametrize(
    ("replicas", "budget", "blocks"),
    [
        (1, {"minAvailable": 1}, True),  # deploy/overlays/dev before: every drain refused
        (1, {"minAvailable": "50%"}, True),  # rounds up to 1
        (1, {"maxUnavailable": 1}, False),
        (2, {"minAvailable": 1}, False),
        (2, {"maxUnavailable": 0}, True),
        (3, {"maxUnavailable": "10%"}, False),  # rounds up to 1
    ],
)
def test_a_budget_that_blocks_drains_is_found(
    replicas: int, budget: dict[str, Any], blocks: bool
) -> None:
    found = rules.disruption_budgets([deployment(replicas=replicas), pdb(**budget)])
    assert bool(found) is blocks, found


def test_a_budget_is_judged_at_the_autoscalers_fewest_replicas() -> None:
    scaled = deployment(replicas=3)
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ingest"},
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "ingest"},
            "minReplicas": 1,
            "maxReplicas": 4,
        },
    }
    assert rules.disruption_budgets([scaled, pdb(minAvailable=1), hpa]) != []
    assert rules.autoscalers([scaled, hpa]) == [
        "Deployment/default/ingest: sets replicas although "
        "HorizontalPodAutoscaler/default/ingest scales it"
    ]


def test_a_deployment_without_a_budget_and_a_stray_budget_are_found() -> None:
    found = rules.disruption_budgets([deployment(), pdb("signal", maxUnavailable=1)])
    assert found == [
        "Deployment/default/ingest: 0 PodDisruptionBudgets select its pods",
        "PodDisruptionBudget/default/signal: selects no workload",
    ]


def test_credentials_outside_secrets_are_found() -> None:
    bad = deployment()
    main(bad)["env"] = [
        {"name": "SHOPIFY_WEBHOOK_SECRET", "value": "hunter2"},
        {
            "name": "AMAZON_WEBHOOK_TOKEN",
            "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}},
        },
        {"name": "TIKTOK_SHOP_APP_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "LOG_LEVEL", "value": "info"},
    ]
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"DATABASE_URL": "x"}}
    found = rules.secrets_from_secrets([bad, config])
    assert [f.split(": ")[1] for f in found] == [
        "SHOPIFY_WEBHOOK_SECRET does not come from a Secret",
        "AMAZON_WEBHOOK_TOKEN does not come from a Secret",
        "holds DATABASE_URL, a credential",
    ]
    assert rules.receives_secrets(
        [bad], "ingest", ["TIKTOK_SHOP_APP_KEY", "AMAZON_WEBHOOK_TOKEN"]
    ) == ["ingest: AMAZON_WEBHOOK_TOKEN does not come from a Secret"]


def test_an_unset_or_wrong_peer_address_is_found() -> None:
    caller = deployment("fulfillment")
    main(caller)["env"] = [{"name": "INVENTORY_SYNC_ADDR", "value": "inventory-sync:50055"}]
    service = {
        "kind": "Service",
        "metadata": {"name": "inventory-sync"},
        "spec": {"ports": [{"name": "grpc", "port": 50054}]},
    }
    calls = {"fulfillment": {"inventory-sync": 50054, "forecast": 50053}}
    assert rules.peer_addresses([caller, service], calls) == [
        "Deployment/default/fulfillment: INVENTORY_SYNC_ADDR=inventory-sync:50055 is not the "
        "inventory-sync Service's port 50054",
        "Deployment/default/fulfillment: FORECAST_ADDR is not set",
    ]


def test_the_schema_validation_is_strict() -> None:
    """An unknown field (here a misspelt `resources`) is an error, not silently dropped."""
    kv = validator_module()
    bad = deployment()
    main(bad)["resource"] = main(bad).pop("resources")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)
    wrong_type = deployment()
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def policy(name: str, spec: Obj) -> Obj:
    return {"kind": "NetworkPolicy", "metadata": {"name": name}, "spec": spec}


def test_network_policy_reachability() -> None:
    a = rules.Endpoint("default", {"app": "a"}, {"grpc": 50051})
    b = rules.Endpoint("default", {"app": "b"}, {"grpc": 50052})
    other_namespace = rules.Endpoint("other", {"app": "a"})
    deny = policy("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert rules.allowed([], a, b, 50052)  # no policy: open
    assert not rules.allowed([deny], a, b, 50052)
    a_to_b = policy(
        "a-to-b",
        {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
        },
    )
    b_from_a = policy(
        "b-from-a",
        {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                    "ports": [{"port": "grpc"}],
                }
            ],
        },
    )
    allow = [deny, a_to_b, b_from_a]
    assert rules.allowed(allow, a, b, 50052)
    assert not rules.allowed(allow, a, b, 8080)  # not the named port
    assert not rules.allowed(allow, b, a, 50051)  # one way only
    assert not rules.allowed(
        [deny, b_from_a], other_namespace, b, 50052
    )  # podSelector: own namespace
    assert rules.default_deny([a_to_b]) == [
        "namespace default: no default-deny NetworkPolicy for ingress and egress"
    ]
    assert rules.default_deny(allow) == []
