"""A table's engine or sorting key changed in place, which no ALTER can do: a migration step.

`rebuild` looks at the table in system.tables. Unless its engine and sorting key
already are the wanted ones, it creates the new table beside it (`<table>_rebuilt`),
copies every row, and exchanges the two atomically (EXCHANGE TABLES, which needs
the Atomic database engine, ClickHouse's default), so readers and writers always
find one whole table under the name. Rows a writer still put in the old table
between the copy and the exchange are copied after it, then the old table is
dropped.

A plain list of statements cannot say "only if the table is still the old one",
hence a step that looks before it acts. It is safe to run again after a failure at
any point: a new table left from a run that stopped before its exchange is dropped
and the copy made afresh; an old table left from a run that stopped after it has
its late rows copied and is dropped; a table already rebuilt is left alone.
Blocks on every statement; raises what `run` and `ask` raise.
"""

from __future__ import annotations

from collections.abc import Callable

Run = Callable[[str], None]  # runs one statement
Ask = Callable[[str], list[tuple]]  # runs one query, answers its rows


def rebuild(db: str, table: str, create: Callable[[str], str], engine: str, sorting_key: str, run: Run,
            ask: Ask) -> bool:
    """Give `db.table` the `engine` and `sorting_key` of the table `create(name)` makes; True if it did.

    `sorting_key` is spelled as system.tables spells it (`a, b, c`). The two tables
    have the same columns.
    """
    side = f"{table}_rebuilt"
    rebuilt = _shape(db, table, ask) != (engine, sorting_key)
    if rebuilt:
        run(f"DROP TABLE IF EXISTS {db}.{side}")
        run(create(side))
        run(f"INSERT INTO {db}.{side} ({_columns(db, side, ask)}) SELECT {_columns(db, side, ask)} "
            f"FROM {db}.{table} SETTINGS async_insert = 0")
        run(f"EXCHANGE TABLES {db}.{table} AND {db}.{side}")
    if _shape(db, side, ask) is not None:  # the old table, exchanged out (now or by a run that stopped)
        columns = _columns(db, table, ask)
        run(f"INSERT INTO {db}.{table} ({columns}) SELECT {columns} FROM {db}.{side} "
            f"WHERE ({sorting_key}) NOT IN (SELECT {sorting_key} FROM {db}.{table}) SETTINGS async_insert = 0")
        run(f"DROP TABLE {db}.{side}")
    return rebuilt


def _shape(db: str, table: str, ask: Ask) -> tuple[str, str] | None:
    rows = ask(f"SELECT engine, sorting_key FROM system.tables WHERE database = '{db}' AND name = '{table}'")
    return tuple(rows[0]) if rows else None


def _columns(db: str, table: str, ask: Ask) -> str:
    rows = ask(f"SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table}' ORDER BY position")
    return ", ".join(name for (name,) in rows)
