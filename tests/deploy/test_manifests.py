"""deploy/ rendered by kustomize for the base and every overlay: every object valid against the
Kubernetes schemas (strict), and our own rules (tests/deploy/rules.py) hold."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable

import pytest

from tests.deploy import rules
from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    ROOT,
    TARGETS,
    Obj,
    of_kind,
    render,
    validator_module,
)

# What ingest needs to verify the channels' webhooks (without them, each answers 503).
WEBHOOK_SECRETS = [
    "TIKTOK_SHOP_APP_KEY",
    "TIKTOK_SHOP_APP_SECRET",
    "SHOPIFY_WEBHOOK_SECRET",
    "AMAZON_WEBHOOK_TOKEN",
]
SOURCES = [*(ROOT / "services").rglob("*.py"), *(ROOT / "libs").rglob("*.py")]


def peer_calls() -> dict[str, dict[str, int]]:
    """caller -> {peer: gRPC port}, read from the code: every `peer_address(env, "<peer>",
    <port>)` in a service's bootstrap."""
    calls: dict[str, dict[str, int]] = {}
    for bootstrap in (ROOT / "services" / "pulsestock").glob("*/bootstrap.py"):
        caller = bootstrap.parent.name.replace("_", "-")
        for peer, port in re.findall(
            r'peer_address\(\s*env,\s*"([a-z-]+)",\s*(\d+)', bootstrap.read_text()
        ):
            calls.setdefault(caller, {})[peer] = int(port)
    return calls


@pytest.fixture(params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


# Custom resources of the operators a component uses: kubernetes-validate has no schema for
# them; test_cloudnativepg_cluster checks what we rely on instead.
CUSTOM_RESOURCES = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
}


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    kv = validator_module()
    assert rendered, "kustomize rendered nothing"
    failures = []
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kv.validate(obj, KUBERNETES_VERSION, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError) as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error}")
    assert failures == []


RULES: list[Callable[[list[Obj]], list[str]]] = [
    rules.resources,
    rules.grpc_probes,
    rules.hardened,
    rules.pinned_images,
    rules.disruption_budgets,
    rules.secrets_from_secrets,
    rules.autoscalers,
    rules.default_deny,
]


@pytest.mark.parametrize("rule", RULES, ids=[rule.__name__ for rule in RULES])
def test_rule_holds(rendered: list[Obj], rule: Callable[[list[Obj]], list[str]]) -> None:
    assert of_kind(rendered, "Deployment"), "no Deployment rendered"
    assert rule(rendered) == []


def test_ingest_receives_the_webhook_secrets(rendered: list[Obj]) -> None:
    assert rules.receives_secrets(rendered, "ingest", WEBHOOK_SECRETS) == []


def test_every_secret_variable_is_one_the_code_reads(rendered: list[Obj]) -> None:
    """A misspelt variable would leave its channel silently unconfigured."""
    code = "\n".join(path.read_text() for path in SOURCES)
    names = {
        name
        for deployment in of_kind(rendered, "Deployment")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for name in rules.secret_env(container)
    }
    assert names >= set(WEBHOOK_SECRETS)
    assert sorted(name for name in names if f'"{name}"' not in code) == []


def test_peers_are_addressed_by_their_services(rendered: list[Obj]) -> None:
    calls = peer_calls()
    assert calls.get("fulfillment", {}).get("inventory-sync") == 50054  # the scan finds calls
    assert rules.peer_addresses(rendered, calls) == []


def test_the_base_image_is_the_project_release() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {
        container["image"]
        for obj in render("base")
        for container in obj.get("spec", {})
        .get("template", {})
        .get("spec", {})
        .get("containers", [])
    }
    assert images == {f"ghcr.io/pulsestock/pulsestock:{version}"}


def test_dev_runs_one_replica_of_each_and_drains() -> None:
    """The dev overlay's single replicas: the case where `minAvailable: 1` blocked drains."""
    objects = render("overlays/dev")
    assert {d["spec"]["replicas"] for d in of_kind(objects, "Deployment")} == {1}
    assert rules.disruption_budgets(objects) == []


def test_production_network_policies_allow_the_architecture_and_nothing_else() -> None:
    objects = render("overlays/production")
    policies = of_kind(objects, "NetworkPolicy")
    pods = {
        d["metadata"]["name"]: rules.workload_endpoint(d) for d in of_kind(objects, "Deployment")
    }
    assert set(pods) >= {"ingest", "signal", "forecast", "inventory-sync", "fulfillment"}
    postgres = rules.Endpoint("db", {"app": "postgres"})
    nats = rules.Endpoint("nats", {"app": "nats"})
    dns = rules.Endpoint("kube-system", {"k8s-app": "kube-dns"})
    ingress = rules.Endpoint("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    outsider = rules.Endpoint("elsewhere", {"app": "curious"})
    channel_api = rules.Endpoint(ip="203.0.113.7")  # a documentation address: a model, no traffic
    private = rules.Endpoint(ip="10.1.2.3")
    ingest = pods["ingest"]

    def can(src: rules.Endpoint, dst: rules.Endpoint, port: int, protocol: str = "TCP") -> bool:
        return rules.allowed(policies, src, dst, port, protocol)

    for name, pod in pods.items():
        assert can(pod, postgres, 5432), name
        assert can(pod, nats, 4222), name
        assert can(pod, dns, 53, "UDP"), name
        assert not can(pod, postgres, 22), name
        assert not can(outsider, pod, pod.ports.get("grpc", pod.ports.get("http", 0))), name
        assert not can(pod, private, 443), name
    for caller, peers in peer_calls().items():
        if caller not in pods:
            continue  # a process without manifests yet: its Deployment brings its policies
        for peer, port in peers.items():
            assert can(pods[caller], pods[peer], port), f"{caller} -> {peer}:{port}"
    # Only the callers the code has: signal never calls inventory-sync.
    assert not can(pods["signal"], pods["inventory-sync"], 50054)
    # Webhooks from the ingress controller, and only to the HTTP port.
    assert can(ingress, ingest, ingest.ports["http"])
    assert not can(ingress, ingest, ingest.ports["grpc"])
    assert not can(outsider, ingest, ingest.ports["http"])
    # The channels' APIs: from ingest and inventory-sync, nowhere else.
    assert can(ingest, channel_api, 443)
    assert can(pods["inventory-sync"], channel_api, 443)
    assert not can(pods["forecast"], channel_api, 443)
    assert not can(ingest, channel_api, 80)
    # People reach the console through the ingress controller; it reaches no channel.
    console = pods["console"]
    assert can(ingress, console, console.ports["http"])
    assert not can(outsider, console, console.ports["http"])
    assert not can(console, channel_api, 443)


def test_production_autoscales_the_stateless_services_only() -> None:
    objects = render("overlays/production")
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert scaled == {"ingest", "signal", "forecast", "fulfillment"}
    inventory = [
        d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "inventory-sync"
    ]
    assert inventory[0]["spec"]["replicas"] >= 2


def test_the_in_cluster_engines_are_replicated_and_durable() -> None:
    objects = render("overlays/production-in-cluster")
    clusters = [o for o in objects if o["kind"] == "Cluster"]
    assert len(clusters) == 1
    spec = clusters[0]["spec"]
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {
        "method": "any",
        "number": 1,
        "dataDurability": "required",
    }
    assert spec["backup"]["barmanObjectStore"]["wal"]
    assert any(o["kind"] == "ScheduledBackup" for o in objects)
    nats = [o for o in of_kind(objects, "StatefulSet") if o["metadata"]["name"] == "nats"]
    assert nats[0]["spec"]["replicas"] == 3
    conf = next(o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] == "nats-config")
    assert "sync_interval: always" in conf["data"]["nats.conf"]
    config = next(
        o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] == "pulsestock-config"
    )
    assert config["data"]["NATS_STREAM_REPLICAS"] == "3"
    assert config["data"]["NATS_URL"] == "nats://nats:4222"
    secret = next(
        o for o in of_kind(objects, "Secret") if o["metadata"]["name"] == "pulsestock-database"
    )
    assert "@pulsestock-db-rw:5432/" in secret["stringData"]["DATABASE_URL"]
