"""Versioned SQL migrations, per service schema, applied once each under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
EVENT_STORE_MIGRATIONS = Path(__file__).with_name("sql")


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(component: str, directory: Path) -> list[Migration]:
    """Read `NNNN_name.sql` files in version order; any other file name is an error."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path} is not named NNNN_snake_case.sql")
        migrations.append(
            Migration(component, int(match.group(1)), match.group(2), path.read_text())
        )
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}")
    return migrations


def event_store_migrations() -> list[Migration]:
    return load_migrations("eventstore", EVENT_STORE_MIGRATIONS)


async def apply_migrations(
    conn: asyncpg.Connection, schema: str, migrations: list[Migration]
) -> list[Migration]:
    """Create the schema if needed and apply what is missing, all in one transaction.

    Several processes may start at once (the dev stack starts every service together), so a
    transaction-scoped advisory lock per schema serialises them. A changed, already-applied
    migration is refused: history is never rewritten.
    """
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"invalid schema name {schema!r}")
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrate:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET LOCAL search_path TO {schema}")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component  text NOT NULL,
                   version    int  NOT NULL,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                   PRIMARY KEY (component, version))"""
        )
        done = {
            (row["component"], row["version"]): row["checksum"]
            for row in await conn.fetch(
                "SELECT component, version, checksum FROM schema_migrations"
            )
        }
        for migration in migrations:
            key = (migration.component, migration.version)
            if key in done:
                if done[key] != migration.checksum:
                    raise RuntimeError(
                        f"migration {migration.component}/{migration.version:04d}_"
                        f"{migration.name} changed after it was applied to {schema}"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, name, checksum)"
                " VALUES ($1, $2, $3, $4)",
                migration.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied.append(migration)
    return applied
