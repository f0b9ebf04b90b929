"""Versioned schema migrations, applied at start-up by Warehouse.migrate() on both backends.

`schema_migrations` records each applied migration (version, name, applied_at).
A migration is a numbered list of statements that runs once: migrate() runs, in
order, every migration whose version is not recorded, and records it after its
last statement succeeded. Migration 1 is the original schema (ddl.statements():
every table and view IF NOT EXISTS, then the added columns), so a deployment
created before this table existed upgrades in place: migration 1 finds its
tables and changes nothing, later migrations run as on a fresh one.

Rules for a new migration: append it with the next number, never edit one that
shipped; make each statement safe to run again (IF NOT EXISTS, or a fill whose
double run the read path tolerates), because a migration that fails halfway, or
two processes migrating at once on a server, runs it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warehouse import ddl, rollups


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str], list[str]]  # database -> statements


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", ddl.statements),
    Migration(2, "1-minute and 1-hour rollups of readings", rollups.statements),
)

#: Every table and view migrate() creates.
TABLES: tuple[str, ...] = ("schema_migrations",) + ddl.TABLES + rollups.TABLES


def _bookkeeping(db: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version""",
    ]


def apply(database: str, run: Callable[[str], None], applied: Callable[[], set[int]]) -> list[int]:
    """Run every migration not yet applied; return the versions run now.

    `run` executes one statement, `applied` reads the recorded versions (both
    backend-specific). Blocks on every statement; raises what they raise, leaving
    the failed migration unrecorded so the next start runs it again.
    """
    db = ddl.identifier(database)
    for statement in _bookkeeping(db):
        run(statement)
    done = applied()
    ran = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements(db):
            run(statement)
        name = migration.name.replace("\\", "\\\\").replace("'", "\\'")
        run(f"INSERT INTO {db}.schema_migrations (version, name) SETTINGS async_insert = 0 "
            f"VALUES ({migration.version}, '{name}')")
        ran.append(migration.version)
    return ran


def applied_sql(database: str) -> str:
    return f"SELECT DISTINCT version FROM {ddl.identifier(database)}.schema_migrations"
