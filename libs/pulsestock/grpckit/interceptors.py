"""One server interceptor: a span per call, request-scoped log fields, an access log line, and
the mapping of exceptions to status codes (domain errors to their codes; anything else to
INTERNAL with a reference, never a traceback to the caller)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from pulsestock import errors
from pulsestock.eventstore.store import CONNECTION_LOST
from pulsestock.metrics import GRPC_SERVER_DURATION
from pulsestock.telemetry import continue_trace, get_logger

log = get_logger("pulsestock.grpc")

_DATABASE_DOWN = (*CONNECTION_LOST, asyncpg.TooManyConnectionsError)


def status_for(error: BaseException, reference: str) -> grpc.Status:
    """The rich status (google.rpc.Status) a caller receives for an exception."""
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        return rpc_status.to_status(
            status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error), details=[detail])
        )
    code, message = _code_and_message(error, reference)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message))


def _code_and_message(error: BaseException, reference: str) -> tuple[int, str]:
    if isinstance(error, errors.PreconditionFailed):
        return code_pb2.FAILED_PRECONDITION, str(error)
    if isinstance(error, errors.NotFound):
        return code_pb2.NOT_FOUND, str(error)
    if isinstance(error, errors.Conflict):
        return code_pb2.ABORTED, str(error)
    if isinstance(error, errors.Unavailable):
        return code_pb2.UNAVAILABLE, str(error)
    if isinstance(error, NotImplementedError):
        return code_pb2.UNIMPLEMENTED, "method not implemented"
    if isinstance(error, _DATABASE_DOWN):
        return code_pb2.UNAVAILABLE, f"storage unavailable, retry (reference {reference})"
    return code_pb2.INTERNAL, f"internal error (reference {reference})"


class ServerKitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each method's handler once (cached by method): per-call state (metadata, the
    trace context) is read inside the call, not baked into a handler built per call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = _wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, method), **codecs
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary(handler.stream_unary, method), **codecs
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream(handler.unary_stream, method), **codecs
        )
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream(handler.stream_stream, method), **codecs
    )


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class _Call:
    """The span, log context and access log of one call."""

    def __init__(self, method: str, metadata: dict[str, str]) -> None:
        self.method = method
        self.metadata = metadata
        self.started = time.perf_counter()

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Log fields and a server span (continuing the caller's trace) around the call."""
        with (
            structlog.contextvars.bound_contextvars(rpc_method=self.method),
            continue_trace(self.method, self.metadata, SpanKind.SERVER),
        ):
            yield

    def reference(self) -> str:
        """What the caller quotes and the log line carries: the trace id, or (no trace being
        recorded) an id of this failure's own."""
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else uuid.uuid4().hex

    async def fail(self, error: BaseException, context: grpc.aio.ServicerContext) -> None:
        span = trace.get_current_span()
        reference = self.reference()
        status = status_for(error, reference)
        # A refusal the service chose (errors.Unavailable: "another replica owns this SKU") is
        # in the access log with its code. The database being down is one line per call (an
        # outage under load would otherwise log a traceback per call); only what nobody
        # chose gets a traceback.
        if isinstance(error, _DATABASE_DOWN):
            span.record_exception(error)
            log.warning(
                "storage unavailable",
                method=self.method,
                reference=reference,
                error=f"{error.__class__.__name__}: {error}".splitlines()[0],
            )
        elif not isinstance(error, errors.DomainError) and status.code in (
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNAVAILABLE,
        ):
            span.record_exception(error)
            log.exception("unhandled error", method=self.method, reference=reference)
        span.set_status(StatusCode.ERROR, status.details)
        self.access_log(status.code)
        await context.abort_with_status(status)

    def access_log(self, code: grpc.StatusCode) -> None:
        # Health probes arrive every few seconds per pod: keep them out of the info log.
        seconds = time.perf_counter() - self.started
        emit = log.debug if self.method.startswith("/grpc.health.") else log.info
        emit("rpc", method=self.method, code=code.name, duration_ms=round(seconds * 1000, 3))
        GRPC_SERVER_DURATION.record(seconds, {"rpc_method": self.method, "rpc_code": code.name})


def _wrap_unary(behaviour: Any, method: str) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, _metadata(context))
        with call.scope():
            try:
                response = await behaviour(request, context)
            except (grpc.aio.AbortError, grpc.aio.BaseError):
                raise  # the servicer already set a status
            except Exception as error:
                await call.fail(error, context)
            call.access_log(grpc.StatusCode.OK)
            return response

    return wrapper


def _wrap_stream(behaviour: Any, method: str) -> Any:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, _metadata(context))
        with call.scope():
            try:
                async for response in behaviour(request, context):
                    yield response
            except (grpc.aio.AbortError, grpc.aio.BaseError):
                raise
            except Exception as error:
                await call.fail(error, context)
            call.access_log(grpc.StatusCode.OK)

    return wrapper
