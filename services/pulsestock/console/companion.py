"""How `pulsestock dev up` (`make run`) starts the console beside the services: entry point
`pulsestock.companions` -> `companion`."""

from __future__ import annotations

from collections.abc import Mapping

from pulsestock.config import Env
from pulsestock.services import Companion


def companion(environ: Mapping[str, str]) -> Companion:
    from pulsestock.console.bootstrap import ConsoleSettings

    settings = ConsoleSettings.from_env(Env(environ))
    return Companion(
        name="console",
        module="pulsestock.console",
        url=settings.url,
        health_url=f"{settings.url}/healthz",
    )
