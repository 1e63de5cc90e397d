"""Every span of the process in memory, and log lines as structlog leaves them."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pulsestock import telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The SDK's providers with an in-memory exporter, for one test. Services run in this
    process share the global tracer provider, so it sees every span of every service.
    OpenTelemetry's globals can be set once per process: put back what was there after."""
    saved = (
        trace._TRACER_PROVIDER,
        trace._TRACER_PROVIDER_SET_ONCE._done,
        metrics_internal._METER_PROVIDER,
        metrics_internal._METER_PROVIDER_SET_ONCE._done,
        telemetry._configured_service,
    )
    exporter = InMemorySpanExporter()
    telemetry.configure_telemetry("pulsestock-tests", None, span_exporter=exporter)
    assert telemetry.tracing_enabled()
    installed_tracer, installed_meter = trace.get_tracer_provider(), metrics.get_meter_provider()
    try:
        yield exporter
    finally:
        (
            trace._TRACER_PROVIDER,
            trace._TRACER_PROVIDER_SET_ONCE._done,
            metrics_internal._METER_PROVIDER,
            metrics_internal._METER_PROVIDER_SET_ONCE._done,
            telemetry._configured_service,
        ) = saved
        if isinstance(installed_tracer, TracerProvider):
            installed_tracer.shutdown()
        if isinstance(installed_meter, MeterProvider):
            installed_meter.shutdown()
    assert not telemetry.tracing_enabled()


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Log lines (event dicts) after the processors the services log with, for one test."""
    saved = structlog.get_config()
    capture = structlog.testing.LogCapture()
    structlog.configure(
        processors=[*telemetry.log_processors(), capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
    try:
        yield capture.entries
    finally:
        structlog.configure(**saved)
