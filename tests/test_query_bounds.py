"""Both warehouse backends bound a caller's query: a deadline, a memory cap and
result-size caps that fail the query (never shorten it), a few analyst slots
(one more is refused at once), and a cancel that stops a running query. On
embedded chDB, analyst queries run on sessions that are never the sinks' or the
read API's. Real engines throughout; the server backend through
clickhouse-connect's chDB interface (a fresh client per case: its one engine
handle serializes calls, which a real server's HTTP requests do not).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import pytest

from producers.api.sql_answers import rows_document
from warehouse import QueryLimits, WarehouseBusy, WarehouseError, guard
from warehouse.limits import (MEMORY_LIMIT_EXCEEDED, QUERY_WAS_CANCELLED, TIMEOUT_EXCEEDED, TOO_MANY_ROWS_OR_BYTES,
                              settings_clause)

LIMITS = QueryLimits(timeout_s=1, max_memory_bytes=100 << 20, max_result_rows=1_000_000,
                     max_result_bytes=16 << 20, concurrency=2)
SLEEPER = "SELECT sum(sleepEachRow(0.00001)) FROM numbers(100000000000)"  # ~0.65 s a block, no CPU


# ----- pure


def test_the_rows_document_is_built_from_compact_lines_split_anywhere():
    output = b'["n", "s"]\n[1, "a"]\n[2, "b\\nc"]\n'
    for cut in range(len(output) + 1):
        document = json.loads(b"".join(rows_document([output[:cut], output[cut:]])))
        assert document == {"columns": ["n", "s"], "rows": [[1, "a"], [2, "b\nc"]]}
    assert json.loads(b"".join(rows_document([b'["n"]\n']))) == {"columns": ["n"], "rows": []}
    assert json.loads(b"".join(rows_document([]))) == {"columns": [], "rows": []}


def test_limits_become_settings_and_name_what_was_exceeded():
    assert settings_clause(LIMITS.for_analysts()) == (
        "max_execution_time = 1, max_memory_usage = 104857600, max_result_rows = 1000000, "
        "max_result_bytes = 16777216, result_overflow_mode = 'throw'")
    assert LIMITS.exceeded(TIMEOUT_EXCEEDED) == ("SLUICE_SQL_TIMEOUT_S", "the query ran past its deadline of 1 s")
    assert LIMITS.exceeded(MEMORY_LIMIT_EXCEEDED)[0] == "SLUICE_SQL_MAX_MEMORY_BYTES"
    assert LIMITS.exceeded(TOO_MANY_ROWS_OR_BYTES, "max rows: 1.00 million")[0] == "SLUICE_SQL_MAX_RESULT_ROWS"
    assert LIMITS.exceeded(TOO_MANY_ROWS_OR_BYTES, "max bytes: 16 MiB")[0] == "SLUICE_SQL_MAX_RESULT_BYTES"
    assert LIMITS.exceeded(60) is None and LIMITS.exceeded(None) is None


# ----- both backends


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bounds")


@pytest.fixture(scope="module")
def embedded(folder):
    from warehouse.embedded import ChdbWarehouse

    with ChdbWarehouse(folder, "default", limits=LIMITS) as wh:
        wh.command("CREATE TABLE IF NOT EXISTS default.t (n UInt64) ENGINE = MergeTree ORDER BY n")
        yield wh


@pytest.fixture(params=["embedded", "server"])
def backend(request, embedded, folder):
    """A function giving the backend: the one embedded warehouse, or a fresh server
    warehouse per call (see the module's doc: a failed query leaves its handle unusable)."""
    if request.param == "embedded":
        yield lambda: embedded
        return
    import clickhouse_connect

    from warehouse.server import ServerWarehouse

    opened = []

    def fresh() -> ServerWarehouse:
        client = clickhouse_connect.get_client(interface="chdb", path=str(folder))
        opened.append(ServerWarehouse("", "default", client=client, limits=LIMITS))
        return opened[-1]

    yield fresh
    for server in opened:
        server.close()


def _fails(call, code: int) -> float:
    """Seconds until `call` raised WarehouseError `code`."""
    started = time.monotonic()
    with pytest.raises(WarehouseError) as caught:
        call()
    assert caught.value.code == code, caught.value
    return time.monotonic() - started


def test_a_query_past_its_deadline_fails_naming_it(backend):
    took = _fails(lambda: backend().readonly_query(SLEEPER), TIMEOUT_EXCEEDED)
    assert took < LIMITS.timeout_s + 5, took  # the engine looks between blocks (0.65 s here); not hours


def test_a_streamed_query_past_its_deadline_fails_too(backend):
    took = _fails(lambda: list(backend().readonly_stream(SLEEPER, "CSVWithNames")), TIMEOUT_EXCEEDED)
    assert took < LIMITS.timeout_s + 5, took


def test_a_query_over_its_memory_cap_fails(backend):
    _fails(lambda: backend().readonly_query("SELECT length(range(50000000))"), MEMORY_LIMIT_EXCEEDED)


def test_a_result_over_its_caps_fails_rather_than_shortens(backend):
    received = []

    def read_all() -> None:
        received.extend(backend().readonly_stream("SELECT number FROM numbers(1200000)", "CSVWithNames"))

    _fails(read_all, TOO_MANY_ROWS_OR_BYTES)
    assert sum(chunk.count(b"\n") for chunk in received) < 1_000_001  # what came before the error, at most the cap
    wide = "SELECT number, concat(toString(number), repeat('x', 100)) FROM numbers(250000)"  # ~27 MB
    _fails(lambda: list(backend().readonly_stream(wide, "CSVWithNames")), TOO_MANY_ROWS_OR_BYTES)
    assert backend().readonly_query("SELECT count() FROM numbers(5000000)").rows == [(5000000,)]  # caps are on output


def test_the_caller_cannot_lift_a_limit_even_past_our_lexer(backend, monkeypatch):
    # Our lexer refuses SETTINGS; out of the way, an inner SETTINGS still binds only its subquery.
    monkeypatch.setattr(guard, "check_readonly", lambda sql: sql)
    _fails(lambda: backend().readonly_query(f"SELECT * FROM ({SLEEPER} SETTINGS max_execution_time = 0)"),
           TIMEOUT_EXCEEDED)
    unlimited = "SELECT * FROM (SELECT number FROM numbers(1200000) SETTINGS max_result_rows = 0, readonly = 0)"
    _fails(lambda: list(backend().readonly_stream(unlimited, "CSVWithNames")), TOO_MANY_ROWS_OR_BYTES)


def test_an_empty_result_still_names_its_columns(backend):
    chunks = backend().readonly_stream("SELECT number AS n, 'x' AS s FROM numbers(10) WHERE n > 10",
                                     "JSONCompactEachRowWithNames")
    assert b"".join(chunks) == b'["n", "s"]\n'


def test_one_analyst_query_past_the_slots_is_refused_at_once(backend):
    wh = backend()
    held = [wh.readonly_stream("SELECT 1", "CSVWithNames") for _ in range(LIMITS.concurrency)]
    started = time.monotonic()
    with pytest.raises(WarehouseBusy):
        wh.readonly_stream("SELECT 1", "CSVWithNames")
    with pytest.raises(WarehouseBusy):
        wh.readonly_query("SELECT 1")
    assert time.monotonic() - started < 0.5
    held[0].close()  # a closed stream frees its slot ...
    assert list(held[1]) == [b'"1"\n1\n']  # ... and so does one read to its end
    again = [wh.readonly_stream("SELECT 2", "CSVWithNames") for _ in range(LIMITS.concurrency)]
    for stream in again:
        stream.close()


def test_a_cancelled_stream_stops_in_the_engine(embedded):
    stream = embedded.readonly_stream(SLEEPER.replace("sum(", "sum(0 * "), "CSVWithNames")
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_error_code(lambda: next(stream))))
    reader.start()
    _wait_running(embedded, "sum(0 * ")
    started = time.monotonic()
    stream.cancel()  # from this thread, while the reader blocks in next()
    reader.join(timeout=5)
    assert outcome == [QUERY_WAS_CANCELLED] and time.monotonic() - started < LIMITS.timeout_s
    assert _running(embedded, "sum(0 * ") == 0
    stream.close()


def test_the_server_backend_stops_a_tagged_query_with_kill(backend, embedded):
    """The server path's cancel is a KILL QUERY by the query's tag, sent as another request;
    here from a second warehouse, since the chDB interface's one handle would wait."""
    if backend() is embedded:
        pytest.skip("the server backend's path")
    stream = backend().readonly_stream(SLEEPER.replace("sum(", "sum(1 * "), "JSONEachRow")
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(_error_code(lambda: next(stream))))
    reader.start()
    _wait_running(embedded, "sum(1 * ")
    tag = embedded.query("SELECT Settings['log_comment'] FROM system.processes WHERE query LIKE '%sum(1 * %' "
                         "AND query NOT LIKE '%system.processes%'").rows[0][0]
    assert tag.startswith("sluice-sql:")
    from warehouse.server import ServerWarehouse

    with ServerWarehouse("", "default", client=_chdb_client(embedded), limits=LIMITS) as other:
        other._kill(tag)
    reader.join(timeout=5)
    assert outcome == [QUERY_WAS_CANCELLED]
    stream.close()


def test_sinks_and_reads_do_not_wait_behind_analyst_queries(folder):
    from warehouse.embedded import ChdbWarehouse

    with ChdbWarehouse(folder, "default", limits=dataclasses.replace(LIMITS, timeout_s=20)) as wh:
        wh.insert("t", {"n": [0]})  # the first insert of a table looks it up: before the clock
        held = [wh.readonly_stream(SLEEPER, "CSVWithNames") for _ in range(LIMITS.concurrency)]
        readers = [threading.Thread(target=_error_code, args=(lambda s=s: next(s),)) for s in held]
        for reader in readers:
            reader.start()
        _wait_running(wh, "sleepEachRow", LIMITS.concurrency)  # every analyst slot busy in the engine
        started = time.monotonic()
        wh.insert("t", {"n": [1, 2, 3]})
        assert wh.query("SELECT count() FROM t WHERE n BETWEEN 1 AND 3").rows[0][0] >= 3
        took = time.monotonic() - started
        assert all(reader.is_alive() for reader in readers)  # the analyst queries still run
        for stream in held:
            stream.cancel()
        for reader in readers:
            reader.join(timeout=5)
        assert took < 0.5, took


def test_the_read_apis_queries_have_the_deadline_and_memory_cap_too(backend):
    _fails(lambda: backend().query(SLEEPER), TIMEOUT_EXCEEDED)
    _fails(lambda: backend().query("SELECT length(range(50000000))"), MEMORY_LIMIT_EXCEEDED)


def test_a_read_past_its_deadline_leaves_no_trace_in_the_next(embedded):
    # chDB hands a failed ArrowTable query's partial output to its session's next query:
    # the session is dropped, so every later read answers its own rows.
    _fails(lambda: embedded.query(SLEEPER), TIMEOUT_EXCEEDED)
    _fails(lambda: embedded.query("SELECT length(range(50000000))"), MEMORY_LIMIT_EXCEEDED)
    for n in range(6):
        assert embedded.query(f"SELECT {n} AS n").rows == [(n,)]


def _chdb_client(embedded):
    import clickhouse_connect

    return clickhouse_connect.get_client(interface="chdb", path=str(embedded.path))


def _error_code(call) -> int | None:
    try:
        call()
    except WarehouseError as exc:
        return exc.code
    return None


def _running(wh, marker: str) -> int:
    return wh.query(f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
                    "AND query NOT LIKE '%system.processes%'").rows[0][0]


def _wait_running(wh, marker: str, count: int = 1) -> None:
    deadline = time.monotonic() + 10
    while _running(wh, marker) < count:
        assert time.monotonic() < deadline, f"{marker} never ran"
        time.sleep(0.05)

