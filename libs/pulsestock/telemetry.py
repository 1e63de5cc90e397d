"""Logs, traces and metrics, configured the same way in every process.

structlog writes JSON (console rendering on a TTY) with the current trace and span ids;
OpenTelemetry exports over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set (a test may
install an exporter of its own). nats-py has no OpenTelemetry instrumentation, so trace
context crosses NATS in W3C `traceparent` headers. Work done in another task than the
caller's (a batch writer, a group commit) carries the caller's context with it
(`capture_context`, `batch_span`): a task's own context is whoever happened to start it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

_configured_service: str | None = None
_metrics_configured = False


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


def log_processors() -> list[Any]:
    """structlog's processors up to the renderer: request-scoped fields, level, time, and
    the current trace and span ids."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.format_exc_info,
    ]


def configure_logging(service: str, level: str = "info", log_format: str = "auto") -> None:
    use_console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*log_processors(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def configure_telemetry(
    service: str,
    otlp_endpoint: str | None,
    *,
    force: bool = False,
    span_exporter: SpanExporter | None = None,
    prometheus: bool = False,
) -> None:
    """Install the SDK's tracer and meter providers, named after the service, when there is
    somewhere to send what they record (or when forced, e.g. by tests). Without them the API's
    no-op providers remain: recording spans nobody exports costs ~10 % of a request's CPU,
    and trace context still passes through (a no-op span carries its parent's context).

    `span_exporter` (e.g. the SDK's InMemorySpanExporter in a test) receives every span as it
    ends, beside OTLP when an endpoint is given too. `prometheus` installs a meter provider
    whose metrics `pulsestock.metrics.serve_metrics` serves, whether or not spans are
    recorded."""
    global _configured_service, _metrics_configured
    resource = Resource.create({"service.name": service, "service.namespace": "pulsestock"})
    tracing = bool(otlp_endpoint or force or span_exporter)
    if tracing and _configured_service is None:
        _configured_service = service
        tracer_provider = TracerProvider(resource=resource)
        if otlp_endpoint:
            # Imported lazily: the OTLP exporter pulls in a gRPC client only when it is used.
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint))
            )
        if span_exporter is not None:
            tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        trace.set_tracer_provider(tracer_provider)
    # Metrics: for Prometheus alone spans stay unrecorded (their cost).
    if (tracing or prometheus) and not _metrics_configured:
        _metrics_configured = True
        readers: list[MetricReader] = []
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint))
            )
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


def inject_trace_headers(
    headers: dict[str, str], context: otel_context.Context | None = None
) -> dict[str, str]:
    """Add `traceparent` (and `tracestate`) of the current span (or of `context`) to
    outgoing headers."""
    propagate.inject(headers, context=context)
    return headers


def extract_trace_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


def capture_context() -> otel_context.Context:
    """The caller's trace context, to hand on with work another task does for it (a command
    queued for a batch writer). One contextvar read: cheap enough for every command."""
    return otel_context.get_current()


@contextmanager
def use_context(context: otel_context.Context | None) -> Iterator[None]:
    """Make `context` current for a block (nothing to do for None)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def begin_trace(
    name: str, headers: Mapping[str, str] | None, kind: trace.SpanKind
) -> tuple[trace.Span | None, otel_context.Context | None]:
    """Start a span continuing the trace in `headers` without entering it, for work whose
    span outlives a `with` block (a message of a batch, settled after the batch). Returns the
    span (None when nothing records; the caller ends it) and the context to do the work in
    (None when there is no trace to carry on)."""
    if tracing_enabled():
        span = trace.get_tracer("pulsestock").start_span(
            name, context=extract_trace_context(headers), kind=kind
        )
        return span, trace.set_span_in_context(span)
    if headers and "traceparent" in headers:
        return None, extract_trace_context(headers)
    return None, None


@contextmanager
def batch_span(
    name: str, contexts: Sequence[otel_context.Context], attributes: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Run work done for several callers at once (one group commit) as one span: a child of
    the first caller that has a trace, linked to every caller's span, so each caller's trace
    leads to the batch that served it. When nothing records spans, the first caller's
    context is made current, so what the batch sends on carries a trace on. Either way the
    batch never runs in whatever context its task happened to inherit."""
    if not tracing_enabled():
        first = next((c for c in contexts if _has_trace(c)), otel_context.Context())
        with use_context(first):
            yield
        return
    traced = [c for c in contexts if _has_trace(c)]
    parent = traced[0] if traced else otel_context.Context()
    links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in traced]
    with trace.get_tracer("pulsestock").start_as_current_span(
        name, context=parent, links=links, attributes=dict(attributes or {})
    ):
        yield


def _has_trace(context: otel_context.Context) -> bool:
    return trace.get_current_span(context).get_span_context().is_valid


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
