"""A service's refusal or failure, as the page shows it: which service, the status code's
name and what the service said (with its field violations) — never a traceback."""

from __future__ import annotations

from dataclasses import dataclass

# What a status means for the operator, beside the service's own words.
HINTS = {
    "UNAVAILABLE": "the service cannot be reached right now; the page retries on its next load",
    "DEADLINE_EXCEEDED": "the service did not answer in time",
    "NOT_FOUND": "nothing of that name is known",
    "FAILED_PRECONDITION": "refused in the current state",
    "INVALID_ARGUMENT": "the request was refused as malformed",
    "PERMISSION_DENIED": "the console's credentials were refused",
    "UNAUTHENTICATED": "the console's credentials were refused",
    "UNIMPLEMENTED": "the service is an older version without this call",
}


@dataclass(frozen=True)
class ServiceError(Exception):
    service: str  # e.g. "fulfillment"
    code: str  # the gRPC status code's name, e.g. "FAILED_PRECONDITION"
    details: str  # what the service said
    violations: tuple[tuple[str, str], ...] = ()  # (field, description)

    def __str__(self) -> str:
        return f"{self.service}: {self.code}: {self.details}"

    @property
    def hint(self) -> str:
        return HINTS.get(self.code, "")

    @property
    def http_status(self) -> int:
        """The answer to a POST this refused."""
        return {
            "NOT_FOUND": 404,
            "INVALID_ARGUMENT": 400,
            "FAILED_PRECONDITION": 409,
            "ABORTED": 409,
            "ALREADY_EXISTS": 409,
        }.get(self.code, 502)
