"""Errors any service's domain or application layer raises; the gRPC kit maps them to statuses.

They carry no transport detail, so pure domain code can raise them and stay free of grpc.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of the errors a caller can act on (never an internal fault)."""


class InvalidArgument(DomainError):
    """The request itself is malformed: maps to INVALID_ARGUMENT with field violations."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class PreconditionFailed(DomainError):
    """A business rule refuses the command in the current state: FAILED_PRECONDITION."""


class NotFound(DomainError):
    """NOT_FOUND."""


class Conflict(DomainError):
    """A concurrent write won (optimistic concurrency): ABORTED, safe to retry."""


class Unavailable(DomainError):
    """A dependency is down or this replica does not own the partition: UNAVAILABLE, retry."""


class Validator:
    """Collects every field violation of a request, then raises them all at once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def check(self, condition: bool, field: str, description: str) -> bool:
        if not condition:
            self.violations.append(FieldViolation(field, description))
        return condition

    def raise_if_invalid(self) -> None:
        if self.violations:
            raise InvalidArgument(list(self.violations))
