"""Stats pushed over HTTP (issue 16, item 3): `POST /v1/stats` takes what a stats file would
hold, parses all of it and applies it through `StatsIntake`.

    POST /v1/stats
    Content-Type: text/csv                      (or application/x-ndjson, application/jsonl)
    X-Pulsestock-Timestamp: 1796407260          (Unix seconds, when the request was signed)
    X-Pulsestock-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)>

The body is CSV (header first) or JSON Lines, in the file source's column mapping
(`file_source.ColumnMapping`); its last line needs no newline. Answers:

- 200 `{"accepted": n, "rejected": m, "errors": [{"line": k, "reason": "..."}, ...]}`: every
  row is one accepted sample or one error (the first `MAX_ERRORS_LISTED` errors are listed,
  `errors_omitted` counts the rest);
- 401 a missing or wrong signature, or a timestamp more than 5 minutes old or ahead (a copy
  replayed inside that window sends samples ingest already has: they count as accepted and
  change nothing); nothing is applied;
- 413 a body over 10 MiB; 415 another content type; 503 no secret configured
  (COLLECT_WEBHOOK_SECRET) or ingest unreachable (send again); 500 anything else, with a
  generic message (the details are logged, never sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import timedelta
from typing import Any

import grpc
from aiohttp import web
from pulsestock.clock import Clock, utc_now
from pulsestock.collect.application.stats_intake import StatsIntake
from pulsestock.collect.domain.file_source import (
    ColumnMapping,
    ParseResult,
    parse_csv,
    parse_jsonl,
    split_lines,
)
from pulsestock.telemetry import get_logger

log = get_logger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ERRORS_LISTED = 1000
TOLERANCE = timedelta(seconds=300)
LINGER_SECONDS = 1.0
TIMESTAMP_HEADER = "X-Pulsestock-Timestamp"
SIGNATURE_HEADER = "X-Pulsestock-Signature"
CSV_TYPES = frozenset({"text/csv"})
JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})
DEFAULT_MAPPING = ColumnMapping()  # frozen: one shared default is safe
UNSUPPORTED_TYPE = "Content-Type must be text/csv, application/x-ndjson or application/jsonl"


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The X-Pulsestock-Signature value for `body` sent with X-Pulsestock-Timestamp
    `timestamp` (Unix seconds; signed as the header's text)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={digest.hexdigest()}"


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class StatsWebhook:
    def __init__(
        self,
        intake: StatsIntake,
        secret: str | None,
        mapping: ColumnMapping = DEFAULT_MAPPING,
        clock: Clock = utc_now,
        tolerance: timedelta = TOLERANCE,
    ) -> None:
        self.intake = intake
        self.secret = secret
        self.mapping = mapping
        self.clock = clock
        self.tolerance = tolerance

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/healthz", healthz)
        app.router.add_post("/v1/stats", self.stats)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(await self._stats(request))
        except _Refused as refusal:
            log.warning("stats webhook refused", status=refusal.status, reason=refusal.reason)
            return web.json_response({"error": refusal.reason}, status=refusal.status)
        except grpc.aio.AioRpcError as error:
            log.warning("stats webhook: ingest failed", code=error.code().name, error=str(error))
            return web.json_response({"error": "ingest is unavailable: send again"}, status=503)
        except Exception:
            log.exception("stats webhook failed")
            return web.json_response({"error": "internal error"}, status=500)

    async def _stats(self, request: web.Request) -> dict[str, Any]:
        if not self.secret:
            raise _Refused(503, "stats webhook is not configured (COLLECT_WEBHOOK_SECRET)")
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise _Refused(413, f"body is larger than {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body without a length
            raise _Refused(413, f"body is larger than {MAX_BODY_BYTES} bytes") from None
        self._authenticate(request, body)
        parsed = await asyncio.to_thread(self._parse, request.content_type, body)
        report = await self.intake.apply(parsed)
        listed = report.errors[:MAX_ERRORS_LISTED]
        answer: dict[str, Any] = {
            "accepted": report.accepted,
            "rejected": report.rejected,
            "errors": [{"line": e.line_number, "reason": e.reason} for e in listed],
        }
        if report.rejected > len(listed):
            answer["errors_omitted"] = report.rejected - len(listed)
        log.info("stats webhook applied", accepted=report.accepted, rejected=report.rejected)
        return answer

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        assert self.secret is not None
        stamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        given = request.headers.get(SIGNATURE_HEADER, "").strip()
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            raise _Refused(401, f"missing or malformed {TIMESTAMP_HEADER}")
        expected = sign(self.secret, stamp, body)
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise _Refused(401, "bad or missing signature")
        skew = abs(self.clock().timestamp() - int(stamp))
        if skew > self.tolerance.total_seconds():
            raise _Refused(401, "timestamp is too old or in the future (a replay or a bad clock)")

    def _parse(self, content_type: str, body: bytes) -> ParseResult:
        text = body.decode("utf-8", "surrogateescape")
        if text and not text.endswith("\n"):
            text += "\n"  # the whole body counts: its last line is complete
        if content_type in CSV_TYPES:
            return parse_csv(split_lines(text), self.mapping)
        if content_type in JSONL_TYPES:
            return parse_jsonl(split_lines(text), self.mapping)
        raise _Refused(415, UNSUPPORTED_TYPE)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve_webhooks(
    intake: StatsIntake,
    secret: str | None,
    mapping: ColumnMapping,
    host: str,
    port: int,
    stop: asyncio.Event,
    clock: Clock = utc_now,
) -> None:
    """Serve the stats webhook on host:port until `stop`."""
    if not secret:
        log.info("stats webhook answers 503: COLLECT_WEBHOOK_SECRET is not set")
    # A refused body is not read; aiohttp then reads and drops what the client still sends
    # before closing (10 s by default, holding up a stop): a second is enough on a LAN.
    app = StatsWebhook(intake, secret, mapping, clock).app()
    runner = web.AppRunner(app, access_log=None, lingering_time=LINGER_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
