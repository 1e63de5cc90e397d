"""Embedded PostgreSQL and NATS JetStream for `make run` and the tests: no system services."""

from pulsestock.devstack.servers import EmbeddedNats, EmbeddedPostgres, free_port, wait_until

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "free_port", "wait_until"]
