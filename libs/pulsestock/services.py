"""The five services, by name: where their code lives and how to build their definitions."""

from __future__ import annotations

import importlib

from pulsestock.config import SERVICE_NAMES, schema_name
from pulsestock.runtime import ServiceDefinition


def module_of(service: str) -> str:
    return f"pulsestock.{schema_name(service)}"


def definition_of(service: str) -> ServiceDefinition:
    bootstrap = importlib.import_module(f"{module_of(service)}.bootstrap")
    definition: ServiceDefinition = bootstrap.build()
    return definition


def all_definitions() -> list[ServiceDefinition]:
    return [definition_of(name) for name in SERVICE_NAMES]
