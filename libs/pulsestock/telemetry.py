"""Logs, traces and metrics, configured the same way in every process.

structlog writes JSON (console rendering on a TTY) with the current trace and span ids;
OpenTelemetry exports over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set. nats-py has no
OpenTelemetry instrumentation, so trace context crosses NATS in W3C `traceparent` headers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured_service: str | None = None


def _add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


def configure_logging(service: str, level: str = "info", log_format: str = "auto") -> None:
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_ids,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def configure_telemetry(service: str, otlp_endpoint: str | None, *, force: bool = False) -> None:
    """Install the SDK's tracer and meter providers, named after the service, when there is
    somewhere to send what they record (or when forced, e.g. by tests). Without them the API's
    no-op providers remain: recording spans nobody exports costs ~10 % of a request's CPU,
    and trace context still passes through (a no-op span carries its parent's context)."""
    global _configured_service
    if _configured_service is not None or not (otlp_endpoint or force):
        return
    _configured_service = service
    resource = Resource.create({"service.name": service, "service.namespace": "pulsestock"})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if otlp_endpoint:
        # Imported lazily: the OTLP exporter pulls in a gRPC client only when it is used.
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
        )
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def tracing_enabled() -> bool:
    """Whether spans are recorded (an SDK provider is installed)."""
    return _configured_service is not None


@contextmanager
def continue_trace(
    name: str, headers: Mapping[str, str] | None, kind: trace.SpanKind
) -> Iterator[None]:
    """Run a block as a span that continues the trace in `headers`. When nothing records
    spans, only attach the caller's context (so it still propagates onward): a no-op span
    costs a surprising share of a small message's handling."""
    if not tracing_enabled() and not (headers and "traceparent" in headers):
        yield  # nothing to record, nothing to pass on
        return
    parent = extract_trace_context(headers)
    if tracing_enabled():
        with trace.get_tracer("pulsestock").start_as_current_span(name, context=parent, kind=kind):
            yield
        return
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


def inject_trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`) of the current span to outgoing headers."""
    propagate.inject(headers)
    return headers


def extract_trace_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
