"""Our own rules for rendered manifests, beyond the Kubernetes schemas. Each rule takes the
rendered objects and returns its violations as sentences (empty: the rule holds)."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pulsestock.services import companion_names

from tests.deploy.manifests import Obj, containers, ident, namespace, of_kind, pod_template

# A release version (1.2.3, v1.2.3, 1.2.3-rc.1) or a digest: never `latest`, a branch or `dev`.
VERSION_TAG = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Environment variables that carry a credential: they come from a Secret, never a literal.
SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|_KEY$|CIPHER|CLIENT_ID|^DATABASE_URL$)")


def resources(objects: list[Obj]) -> list[str]:
    """Every container, init containers included, requests and limits CPU and memory (a
    namespace with a ResourceQuota rejects a pod with one container lacking them)."""
    found = []
    for obj in objects:
        for container, init in containers(obj):
            where = f"{ident(obj)} {'init ' if init else ''}container {container['name']}"
            res = container.get("resources", {})
            for section in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in res.get(section, {})]
                if missing:
                    found.append(f"{where}: no {section} for {', '.join(missing)}")
    return found


def ours(container: Obj) -> bool:
    """A pulsestock container (our image), not an engine's (NATS, PostgreSQL)."""
    image = str(container.get("image", ""))
    return image == "pulsestock" or image.split("@")[0].split(":")[0].endswith("/pulsestock")


def http_only(container: Obj) -> bool:
    """A process of ours that serves no gRPC (a companion such as the console)."""
    module = container.get("command", [""])[-1].removeprefix("pulsestock.").replace("_", "-")
    return module in companion_names()


def grpc_probes(objects: list[Obj]) -> list[str]:
    """Every main container of ours names its gRPC port `grpc`, and its readiness and liveness
    probes are gRPC health checks on that port (a companion serving only HTTP, such as the
    console: HTTP checks on its `http` port); an engine's container has both probes, of
    whatever kind it serves."""
    found = []
    for obj in objects:
        for container, init in containers(obj):
            if init:
                continue
            where = f"{ident(obj)} container {container['name']}"
            if not ours(container):
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        found.append(f"{where}: no {probe}")
                continue
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if "grpc" not in ports and "http" in ports and http_only(container):
                for probe in ("readinessProbe", "livenessProbe"):
                    port = container.get(probe, {}).get("httpGet", {}).get("port")
                    if port not in ("http", ports["http"]):
                        found.append(f"{where}: {probe} is not an HTTP check on its http port")
                continue
            if "grpc" not in ports:
                found.append(f"{where}: no port named grpc")
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                port = container.get(probe, {}).get("grpc", {}).get("port")
                if port != ports["grpc"]:
                    found.append(f"{where}: {probe} is not a gRPC check on port {ports['grpc']}")
    return found


def hardened(objects: list[Obj]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped,
    for every container."""
    found = []
    for obj in objects:
        template = pod_template(obj)
        if template is None:
            continue
        pod_context = template.get("spec", {}).get("securityContext", {})
        for container, init in containers(obj):
            where = f"{ident(obj)} {'init ' if init else ''}container {container['name']}"
            context = container.get("securityContext", {})
            if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
                found.append(f"{where}: runAsNonRoot is not true")
            if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
                found.append(f"{where}: runs as user 0")
            if context.get("readOnlyRootFilesystem") is not True:
                found.append(f"{where}: root filesystem is writable")
            if context.get("allowPrivilegeEscalation") is not False:
                found.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("privileged") is True:
                found.append(f"{where}: privileged")
            if "ALL" not in context.get("capabilities", {}).get("drop", []):
                found.append(f"{where}: capabilities are not all dropped")
    return found


def image_is_pinned(image: str) -> bool:
    if DIGEST.search(image):
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (the colon, if any, was a registry port)
        return False
    return bool(VERSION_TAG.match(tag))


def pinned_images(objects: list[Obj]) -> list[str]:
    """Every image is a release version or a digest: what runs is what was tested."""
    return [
        f"{ident(obj)} container {container['name']}: image {container.get('image')!r} "
        "is not pinned to a version or a digest"
        for obj in objects
        for container, _ in containers(obj)
        if not image_is_pinned(str(container.get("image", "")))
    ]


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against labels; empty selects all."""
    selector = selector or {}
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(obj: Obj) -> dict[str, str]:
    template = pod_template(obj)
    return dict((template or {}).get("metadata", {}).get("labels", {}))


def least_replicas(workload: Obj, objects: list[Obj]) -> int:
    """The fewest replicas the workload runs: its HPA's minReplicas when one scales it."""
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (
            namespace(hpa) == namespace(workload)
            and target["kind"] == workload["kind"]
            and target["name"] == workload["metadata"]["name"]
        ):
            return int(hpa["spec"].get("minReplicas", 1))
    return int(workload["spec"].get("replicas", 1))


def _scaled(value: int | str, replicas: int) -> int:
    """An int-or-percent of a PDB against the replica count (Kubernetes rounds up)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * replicas / 100)
    return int(value)


def disruption_budgets(objects: list[Obj]) -> list[str]:
    """Exactly one PodDisruptionBudget per Deployment or StatefulSet, and none that blocks a
    node drain at the workload's fewest replicas; no budget that selects nothing."""
    found = []
    pdbs = of_kind(objects, "PodDisruptionBudget")
    used: set[str] = set()
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        labels = pod_labels(workload)
        mine = [
            pdb
            for pdb in pdbs
            if namespace(pdb) == namespace(workload) and selects(pdb["spec"]["selector"], labels)
        ]
        used.update(ident(pdb) for pdb in mine)
        if len(mine) != 1:
            found.append(f"{ident(workload)}: {len(mine)} PodDisruptionBudgets select its pods")
            continue
        spec, replicas = mine[0]["spec"], least_replicas(workload, objects)
        if "maxUnavailable" in spec:
            allowed = _scaled(spec["maxUnavailable"], replicas)
        else:
            allowed = replicas - _scaled(spec.get("minAvailable", 1), replicas)
        if allowed < 1:
            found.append(
                f"{ident(workload)}: {ident(mine[0])} allows no eviction at {replicas} "
                "replica(s), so it blocks every node drain"
            )
    found.extend(f"{ident(pdb)}: selects no workload" for pdb in pdbs if ident(pdb) not in used)
    return found


def secrets_from_secrets(objects: list[Obj]) -> list[str]:
    """A credential reaches a container from a Secret only: never as a literal value, never
    through a ConfigMap."""
    found = []
    for obj in objects:
        for container, _ in containers(obj):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and "secretKeyRef" not in env.get(
                    "valueFrom", {}
                ):
                    found.append(
                        f"{ident(obj)} container {container['name']}: {env['name']} "
                        "does not come from a Secret"
                    )
    for config in of_kind(objects, "ConfigMap"):
        found.extend(
            f"{ident(config)}: holds {key}, a credential"
            for key in config.get("data", {})
            if SECRET_NAME.search(key)
        )
    return found


def secret_env(container: Obj) -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret, key) for the container's secretKeyRef variables."""
    return {
        env["name"]: (ref["name"], ref["key"])
        for env in container.get("env", [])
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }


def main_container(objects: list[Obj], deployment: str) -> Obj | None:
    for obj in of_kind(objects, "Deployment"):
        if obj["metadata"]["name"] == deployment:
            return obj["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]
    return None


def receives_secrets(objects: list[Obj], deployment: str, names: list[str]) -> list[str]:
    """The Deployment's main container gets each of `names` from a Secret."""
    container = main_container(objects, deployment)
    if container is None:
        return [f"no Deployment {deployment}"]
    given = secret_env(container)
    return [
        f"{deployment}: {name} does not come from a Secret" for name in names if name not in given
    ]


def service_ports(objects: list[Obj]) -> dict[tuple[str, str], set[int]]:
    return {
        (namespace(svc), svc["metadata"]["name"]): {p["port"] for p in svc["spec"]["ports"]}
        for svc in of_kind(objects, "Service")
    }


def peer_addresses(objects: list[Obj], calls: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Each caller's `<PEER>_ADDR` is set and names a Service of the render on the peer's port
    (unset, the code falls back to 127.0.0.1, which in a pod is the pod itself)."""
    found = []
    services = service_ports(objects)
    for caller, peers in calls.items():
        for obj in of_kind(objects, "Deployment"):
            if obj["metadata"]["name"] != caller:
                continue
            env = {
                e["name"]: e.get("value")
                for e in obj["spec"]["template"]["spec"]["containers"][0].get("env", [])
            }
            for peer, port in peers.items():
                var = f"{peer.upper().replace('-', '_')}_ADDR"
                value = env.get(var)
                if value is None:
                    found.append(f"{ident(obj)}: {var} is not set")
                    continue
                host, _, given = value.removeprefix("dns:///").rpartition(":")
                short = host.split(".")[0]
                if given != str(port) or port not in services.get((namespace(obj), short), set()):
                    found.append(
                        f"{ident(obj)}: {var}={value} is not the {peer} Service's port {port}"
                    )
    return found


def autoscalers(objects: list[Obj]) -> list[str]:
    """Each HPA scales a Deployment of the render whose containers request the CPU it measures,
    and that Deployment leaves `replicas` to the HPA (an apply would otherwise reset it)."""
    found = []
    deployments = {(namespace(d), d["metadata"]["name"]): d for d in of_kind(objects, "Deployment")}
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = deployments.get((namespace(hpa), target["name"]))
        if target["kind"] != "Deployment" or workload is None:
            found.append(
                f"{ident(hpa)}: scales {target['kind']}/{target['name']}, not in the render"
            )
            continue
        if "replicas" in workload["spec"]:
            found.append(f"{ident(workload)}: sets replicas although {ident(hpa)} scales it")
        measures_cpu = any(
            m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
            for m in hpa["spec"].get("metrics", [])
        )
        if measures_cpu:
            for container, _ in containers(workload):
                if "cpu" not in container.get("resources", {}).get("requests", {}):
                    found.append(
                        f"{ident(workload)} container {container['name']}: "
                        f"no CPU request for {ident(hpa)}"
                    )
    return found


# --- NetworkPolicy reachability -------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A pod (labels, namespace, named ports) or an address outside the cluster (`ip`)."""

    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)
    ip: str | None = None

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def workload_endpoint(obj: Obj) -> Endpoint:
    ports = {
        p["name"]: p["containerPort"]
        for container, init in containers(obj)
        if not init
        for p in container.get("ports", [])
        if "name" in p
    }
    return Endpoint(namespace(obj), pod_labels(obj), ports)


def _peer_matches(peer: Obj, other: Endpoint, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False  # pod addresses are not modelled: our policies select pods by label
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector"), other.labels)


def _port_matches(rule_ports: list[Obj], port: int, protocol: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        given: Any = entry.get("port")
        if given is None:
            return True
        if isinstance(given, str):
            if destination.ports.get(given) == port:
                return True
        elif int(given) <= port <= int(entry.get("endPort", given)):
            return True
    return False


def _types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _side_allows(
    policies: list[Obj],
    direction: str,
    subject: Endpoint,
    other: Endpoint,
    port: int,
    protocol: str,
    destination: Endpoint,
) -> bool:
    if subject.ip is not None:
        return True  # outside the cluster: no policy of ours applies there
    relevant = [
        p
        for p in policies
        if namespace(p) == subject.namespace
        and direction in _types(p)
        and selects(p["spec"].get("podSelector"), subject.labels)
    ]
    if not relevant:
        return True  # a pod no policy selects is not isolated in that direction
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in relevant:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key, [])
            if (
                not peers or any(_peer_matches(peer, other, namespace(policy)) for peer in peers)
            ) and (_port_matches(rule.get("ports", []), port, protocol, destination)):
                return True
    return False


def allowed(
    policies: list[Obj], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the NetworkPolicies let `source` open `port` on `destination`: the source's
    egress and the destination's ingress must both allow it."""
    return _side_allows(
        policies, "Egress", source, destination, port, protocol, destination
    ) and _side_allows(policies, "Ingress", destination, source, port, protocol, destination)


def default_deny(objects: list[Obj]) -> list[str]:
    """With any NetworkPolicy in the render, each namespace of it has one that selects every
    pod and allows nothing, in both directions."""
    policies = of_kind(objects, "NetworkPolicy")
    found = []
    for ns in sorted({namespace(p) for p in policies}):
        if not any(
            namespace(p) == ns
            and not p["spec"].get("podSelector")
            and {"Ingress", "Egress"} <= set(_types(p))
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ):
            found.append(f"namespace {ns}: no default-deny NetworkPolicy for ingress and egress")
    return found
