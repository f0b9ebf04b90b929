"""Versioned schema migrations, applied at start-up by Warehouse.migrate() on both backends.

`schema_migrations` records each applied migration (version, name, applied_at).
A migration is a numbered list of statements, or a step that looks at the schema
before it acts (for a change that depends on what is there, e.g.
warehouse.rebuild), and runs once: migrate() runs, in order, every migration
whose version is not recorded, and records it after it succeeded. Migration 1
is the original schema (ddl.statements(): every table and view IF NOT EXISTS,
then the added columns), so a deployment created before this table existed
upgrades in place: migration 1 finds its tables and changes nothing, later
migrations run as on a fresh one. ddl.py holds today's shape of each table, so
on a fresh deployment a later migration that reshapes a table finds it done.

Rules for a new migration: append it with the next number, never edit one that
shipped; make each statement (or step) safe to run again (IF NOT EXISTS, a fill
whose double run the read path tolerates, a step that looks first), because a
migration that fails halfway, or two processes migrating at once on a server,
runs it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warehouse import ddl, rebuild, rollups
from warehouse.rebuild import Ask, Run


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: Callable[[str], list[str]] = lambda database: []  # database -> statements
    step: Callable[[str, Run, Ask], object] | None = None  # (database, run, ask), after the statements


def rebuild_rejects(db: str, run: Run, ask: Ask) -> bool:
    """Migration 3: an older deployment's rejects (a MergeTree, a row per judgement) becomes
    today's (one row per judged item), its rows kept; True if it was rebuilt now."""
    return rebuild.rebuild(db, "rejects", lambda name: ddl.create_table(db, "rejects", name), ddl.REJECTS_ENGINE,
                           ddl.REJECTS_KEY, run, ask)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", ddl.statements),
    Migration(2, "1-minute and 1-hour rollups of readings", rollups.statements),
    Migration(3, "rejects: one row per judged item", step=rebuild_rejects),
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


def apply(database: str, run: Run, ask: Ask) -> list[int]:
    """Run every migration not yet applied; return the versions run now.

    `run` executes one statement, `ask` runs a query and answers its rows (both
    backend-specific). Blocks on every statement; raises what they raise, leaving
    the failed migration unrecorded so the next start runs it again.
    """
    db = ddl.identifier(database)
    for statement in _bookkeeping(db):
        run(statement)
    done = {version for (version,) in ask(applied_sql(db))}
    ran = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements(db):
            run(statement)
        if migration.step is not None:
            migration.step(db, run, ask)
        name = migration.name.replace("\\", "\\\\").replace("'", "\\'")
        run(f"INSERT INTO {db}.schema_migrations (version, name) SETTINGS async_insert = 0 "
            f"VALUES ({migration.version}, '{name}')")
        ran.append(migration.version)
    return ran


def applied_sql(database: str) -> str:
    return f"SELECT DISTINCT version FROM {ddl.identifier(database)}.schema_migrations"
