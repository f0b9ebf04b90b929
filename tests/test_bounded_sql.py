"""Analyst SQL is bounded and never stalls ingest, measured on the real stack.

A stack of its own with a short deadline. While heavy analyst queries run side by
side (one holding its session asleep, one burning CPU, re-sent as each ends), the
freshness of ingest (a reading's 202 to it being visible through latest-event)
stays within its no-query figure + 1 s; each heavy query gets its deadline error;
one over the concurrency bound is refused at once; a query whose client goes
away leaves system.processes within seconds; a huge `rows` result leaves the
edge's memory where it was.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import eventually, session_settings, stack_with_battery

DEADLINE_S = 4
SLEEPER = "SELECT sum(sleepEachRow(0.00001)) FROM numbers(100000000000)"  # ~0.65 s a block, no CPU
BURNER = "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 1000 = 7"  # every core it gets
READINGS = 8  # freshness samples per phase
MAX_ROWS = 4_000_000


@pytest.fixture(scope="module")
def bounded(kafka_bootstrap, tmp_path_factory):
    with stack_with_battery(session_settings(kafka_bootstrap, tmp_path_factory.mktemp("bounded"),
                                             sql_timeout_s=DEADLINE_S, sql_concurrency=2,
                                             sql_max_result_rows=MAX_ROWS)) as running:
        yield running


def _freshness(api: httpx.Client, thing: str, ts: int) -> float:
    """Seconds from the 202 of one reading at `ts` until latest-event shows it."""
    body = {"frames": [{"timestamp": ts, "metrics": {"status": 1, "moduleSoC": 50.0}}]}
    assert api.post(f"/v2/thing/{thing}/data", json=body).status_code == 202
    accepted = time.monotonic()
    while api.get(f"/v2/things/{thing}/latest-event").json()["timestamp"] != ts:
        assert time.monotonic() - accepted < 30, "the reading did not land within 30 s"
        time.sleep(0.05)
    return time.monotonic() - accepted


def _heavy_load(url: str, key: str, sql: str, stop: threading.Event, answers: list) -> None:
    """Send `sql` again each time it is answered, until `stop`; keep (status, code, seconds) of each."""
    with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=60) as client:
        while not stop.is_set():
            started = time.monotonic()
            reply = client.post("/v2/admin/sql", json={"sql": sql})
            code = reply.json()["error"]["code"] if reply.status_code != 200 else None
            answers.append((reply.status_code, code, time.monotonic() - started, reply.json()))
            if reply.status_code == 429:
                time.sleep(0.2)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _third_query(api: httpx.Client) -> tuple[httpx.Response, float] | None:
    """A small query's 429 and how long it took, once both slots are busy (None until then)."""
    started = time.monotonic()
    reply = api.post("/v2/admin/sql", json={"sql": "SELECT 1"})
    return (reply, time.monotonic() - started) if reply.status_code == 429 else None


def _running(api: httpx.Client, marker: str) -> int:
    """Analyst queries in the engine whose text holds `marker` (this probe itself left out)."""
    reply = api.post("/v2/admin/sql", json={"sql": f"SELECT count() FROM system.processes WHERE query LIKE "
                                                   f"'%{marker}%' AND query NOT LIKE '%system.processes%'"})
    assert reply.status_code == 200, reply.text
    return reply.json()["rows"][0][0]


def test_ingest_stays_fresh_while_heavy_queries_run_and_each_meets_its_deadline(bounded):
    stack, api, thing = bounded
    ts = 1718884800000
    _freshness(api, thing, ts)  # warm: the first reading of a thing meets cold caches
    quiet = [_freshness(api, thing, ts + i) for i in range(1, READINGS + 1)]

    stop, answers = threading.Event(), {SLEEPER: [], BURNER: []}
    load = [threading.Thread(target=_heavy_load, args=(stack.url, stack.settings.admin_key, sql, stop, answers[sql]))
            for sql in (SLEEPER, BURNER)]
    for thread in load:
        thread.start()
    try:
        # A third analyst query finds both slots taken: refused at once, not queued.
        refused, waited = eventually(lambda: _third_query(api), timeout=10, interval=0.1)
        assert refused.json()["error"]["code"] == "TOO_MANY_QUERIES", refused.text
        assert refused.headers["Retry-After"] == "1" and waited < 0.5, waited
        loaded = [_freshness(api, thing, ts + 100 + i) for i in range(READINGS)]
    finally:
        stop.set()
        for thread in load:
            thread.join(timeout=DEADLINE_S + 30)
    print(f"\nfreshness s, quiet: p50 {statistics.median(quiet):.2f} max {max(quiet):.2f}; "
          f"two heavy queries: p50 {statistics.median(loaded):.2f} max {max(loaded):.2f}")
    assert statistics.median(loaded) <= statistics.median(quiet) + 1.0, (quiet, loaded)
    assert max(loaded) <= max(quiet) + 1.0, (quiet, loaded)

    # Every heavy query ended at its deadline with an answer that names it.
    for sql, replies in answers.items():
        ended = [r for r in replies if r[0] != 429]
        assert ended, sql
        for status, code, seconds, body in ended:
            assert (status, code) == (422, "QUERY_TIMEOUT"), body
            assert body["error"]["details"]["setting"] == "SLUICE_SQL_TIMEOUT_S"
            assert f"deadline of {DEADLINE_S} s" in body["error"]["message"]
            assert seconds < DEADLINE_S + 3, seconds
    assert eventually(lambda: _running(api, "sleepEachRow") + _running(api, "sipHash64") == 0, timeout=5) is True


@pytest.mark.parametrize("fmt", ["rows", "csv"])
def test_a_query_whose_client_goes_away_stops_in_the_engine(bounded, fmt):
    stack, api, _ = bounded
    marker = f"abandoned_{fmt}"
    # A result that comes slowly: the aggregate answers nothing before its end; the csv rows trickle.
    sql = (f"SELECT sum(sleepEachRow(0.00001)) AS {marker} FROM numbers(100000000000)" if fmt == "rows" else
           f"SELECT number AS {marker}, sleepEachRow(0.00001) FROM numbers(100000000)")
    body = httpx.Request("POST", f"{stack.url}/v2/admin/sql", json={"sql": sql, "format": fmt},
                         headers={"X-Api-Key": stack.settings.admin_key})
    client = socket.create_connection((stack.settings.http_host, stack.settings.http_port))
    head = f"POST /v2/admin/sql HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in body.headers.items() if k.lower() != "host") + "\r\n"
    client.sendall(head.encode() + body.read())
    try:
        eventually(lambda: _running(api, marker), timeout=10, interval=0.1)
        if fmt == "csv":
            assert client.recv(4096).startswith(b"HTTP/1.1 200")  # streaming has begun
    finally:
        client.close()
    gone = time.monotonic()
    # Well before its deadline (DEADLINE_S from its start), which would end it anyway.
    eventually(lambda: _running(api, marker) == 0, timeout=2.5, interval=0.1)
    print(f"\n{fmt}: the abandoned query left system.processes {time.monotonic() - gone:.2f} s after its client")


def test_a_huge_rows_result_is_refused_without_growing_the_edge(bounded):
    stack, api, _ = bounded
    edge = next(child for child in stack.children if child.name == "edge").process.pid
    before, peak, done = _rss_kib(edge), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib(edge))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        huge = api.post("/v2/admin/sql", json={"sql": "SELECT number, toString(number) AS s FROM numbers(10000000)"})
        streamed = 0
        with httpx.stream("POST", f"{stack.url}/v2/admin/sql", headers={"X-Api-Key": stack.settings.admin_key},
                          json={"sql": "SELECT number, toString(number) AS s FROM numbers(3000000)",
                                "format": "csv"}, timeout=60) as reply:
            assert reply.status_code == 200
            for chunk in reply.iter_raw():
                streamed += len(chunk)
    finally:
        done.set()
        sampler.join()
    assert huge.status_code == 422, huge.text
    error = huge.json()["error"]
    assert error["code"] == "RESULT_TOO_LARGE" and error["details"]["setting"] == "SLUICE_SQL_ROWS_MAX_BYTES"
    assert streamed > 3_000_000 * 8  # the whole csv came through
    grew_mib = (peak[0] - before) / 1024
    print(f"\nedge RSS {before // 1024} MiB before, peak {peak[0] // 1024} MiB: +{grew_mib:.0f} MiB for a "
          f"10 M-row `rows` query and a 3 M-row csv stream")
    assert grew_mib < 100, grew_mib
    assert api.post("/v2/admin/sql", json={"sql": "SELECT 1 AS one"}).json() == {"columns": ["one"], "rows": [[1]]}


def test_a_result_past_its_row_cap_is_cut_short_and_says_so(bounded):
    stack, api, _ = bounded
    query = f"SELECT number FROM numbers({MAX_ROWS + 1_000_000})"
    tail = b""
    with httpx.stream("POST", f"{stack.url}/v2/admin/sql", json={"sql": query, "format": "csv"},
                      headers={"X-Api-Key": stack.settings.admin_key}, timeout=60) as reply:
        assert reply.status_code == 200  # the first rows were on their way before the cap was passed
        with pytest.raises(httpx.RemoteProtocolError):  # the body never ends properly ...
            for chunk in reply.iter_raw():
                tail = (tail + chunk)[-4096:]
    error = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])["error"]  # ... and its last line says why
    assert error["code"] == "RESULT_TOO_LARGE" and error["details"]["setting"] == "SLUICE_SQL_MAX_RESULT_ROWS"

    cli = subprocess.run([sys.executable, "-m", "sluice.cli", "sql", "--format", "csv", query],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
                         env={**os.environ, **stack.settings.to_env()})
    assert cli.returncode == 1
    assert (f"cut short: the result passes {MAX_ROWS} rows (SLUICE_SQL_MAX_RESULT_ROWS)"
            in cli.stderr.decode()), cli.stderr

    assert api.post("/v2/admin/sql", json={"sql": "SELECT 1 AS one WHERE 0"}).json() == {"columns": ["one"],
                                                                                        "rows": []}
