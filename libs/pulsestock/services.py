"""The installed services, found through entry points rather than imported by name, so the
shared libraries never depend on a service (the import graph runs services -> libs only).

Each service declares, in pyproject.toml:
- `[project.entry-points."pulsestock.services"]`: its name -> a function that builds its
  ServiceDefinition (which carries its default ports, migrations and roles);
- `[project.entry-points."pulsestock.commands"]`: optionally, a function that adds its own
  subcommands to the `pulsestock` CLI;
- `[project.entry-points."pulsestock.companions"]`: a process that is no gRPC service (the
  console) -> a function that, given the environment, says how `dev up` starts it and where
  it answers once ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, cast

from pulsestock.config import ConfigError

if TYPE_CHECKING:  # the runtime (grpc, asyncpg, nats) is imported by building a service
    import argparse
    from collections.abc import Callable

    from pulsestock.runtime import ServiceDefinition

    Build = Callable[[], ServiceDefinition]
    RegisterCommands = Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]

SERVICES_GROUP = "pulsestock.services"
COMMANDS_GROUP = "pulsestock.commands"
COMPANIONS_GROUP = "pulsestock.companions"


@dataclass(frozen=True)
class Companion:
    """A process `dev up` starts beside the services once they serve: `python -m module`;
    ready when GET `health_url` answers 200; `url` is what people open."""

    name: str
    module: str
    url: str
    health_url: str


def companion_names() -> list[str]:
    """Every installed companion's name, without importing it."""
    return sorted(entry.name for entry in entry_points(group=COMPANIONS_GROUP))


def companions(environ: Mapping[str, str]) -> list[Companion]:
    """Every installed companion, as the given environment configures it."""
    entries = sorted(entry_points(group=COMPANIONS_GROUP), key=lambda entry: entry.name)
    return [entry.load()(environ) for entry in entries]


def _service_entries() -> dict[str, EntryPoint]:
    entries = {entry.name: entry for entry in entry_points(group=SERVICES_GROUP)}
    if not entries:
        # A checkout whose package metadata predates the entry points (or no install at all).
        raise ConfigError(
            f"no services installed (entry point group {SERVICES_GROUP!r} is empty):"
            " run `make setup` or `pip install -e .`"
        )
    return entries


def service_names() -> list[str]:
    """Every installed service's name, without importing any service."""
    return sorted(_service_entries())


def builder_of(service: str) -> Build:
    entries = _service_entries()
    entry = entries.get(service)
    if entry is None:
        raise ConfigError(f"unknown service {service!r}; one of {', '.join(sorted(entries))}")
    return cast("Build", entry.load())


def definition_of(service: str) -> ServiceDefinition:
    definition = builder_of(service)()
    if definition.name != service:
        raise ConfigError(f"the entry point {service!r} builds a service named {definition.name!r}")
    return definition


def all_definitions(names: list[str] | None = None) -> list[ServiceDefinition]:
    """The named services' definitions (default: all), in the order of their gRPC ports: the
    order `pulsestock dev up` starts and lists them."""
    definitions = [definition_of(name) for name in names or service_names()]
    return sorted(definitions, key=lambda definition: definition.grpc_port)


def command_registrars() -> list[RegisterCommands]:
    """Each service's function adding its own subcommands to the `pulsestock` CLI."""
    entries = sorted(entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name)
    return [cast("RegisterCommands", entry.load()) for entry in entries]
