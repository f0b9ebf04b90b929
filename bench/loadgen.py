"""`python -m bench.loadgen`: the load client for `POST /v2/thing/{id}/data`, run as its own process.

It keeps `--concurrency` keep-alive connections busy (one request in flight on each), as
fast as the edge answers or paced at `--rate` requests/s, for `--duration` seconds, then
prints one JSON line: requests, ok (202, or 200 with `--sync`), errors by status, metric
values accepted, the measured window and p50/p99 reply latency. Blocks for the duration
plus the time the last replies take.

Every request carries event timestamps no other request of the run uses
(`--ts-base` + a global sequence × frames + frame index), so the harness can find a
request's rows in ClickHouse. With `--samples PATH` each accepted request is written
there as `thing,first_ts,accepted_at_ms,latency_ms` (the client's wall clock when the reply
came, and how long the reply took).

The HTTP/1.1 client is a few lines of asyncio on purpose: on a 2-core machine every
microsecond the client spends is taken from the edge, and a general-purpose client costs
several times more per request. Bodies are assembled from pre-encoded frame fragments.
`--procs N` splits the load over N child processes when one client core is not enough.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from urllib.parse import urlsplit


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


class Bodies:
    """Request bodies of `frames` frames × `metrics` Double metrics named m0, m1, …

    The metric maps are encoded once; a body is the fragments joined around fresh timestamps.
    There are enough distinct maps that no body repeats another's values, so lz4 on the raw
    topic sees what real readings would give it, not an easy repetition.
    """

    def __init__(self, frames: int, metrics: int, variants: int = 4096) -> None:
        rng = random.Random(7)
        self.frames = frames
        self._tails = [
            b',"metrics":{' + b",".join(b'"m%d":%.3f' % (m, rng.uniform(0, 100)) for m in range(metrics)) + b"}}"
            for _ in range(variants)
        ]

    def body(self, first_ts: int) -> bytes:
        tails, count = self._tails, len(self._tails)
        parts = [b'{"timestamp":%d%s' % (ts, tails[ts % count]) for ts in range(first_ts, first_ts + self.frames)]
        return b'{"frames":[' + b",".join(parts) + b"]}"


class Connection:
    """One keep-alive HTTP/1.1 connection; `post` sends a request and reads the whole reply
    (its head, lower-cased, is kept in `reply_head`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reply_head = b""

    def reply_header(self, name: bytes) -> bytes | None:
        """A header of the last reply (`name` lower-case), or None."""
        at = self.reply_head.find(b"\r\n" + name + b":")
        if at < 0:
            return None
        start = at + len(name) + 3
        return self.reply_head[start:self.reply_head.index(b"\r\n", start)].strip()

    async def post(self, head: bytes, body: bytes) -> int:
        """The reply's status code; raises OSError/IncompleteReadError when the connection breaks."""
        if self.writer is None:
            return await self._exchange(head, body)
        try:
            return await self._exchange(head, body)
        except (OSError, asyncio.IncompleteReadError):
            # The server may close a keep-alive connection that idled; that is not the request's failure.
            self.close()
            return await self._exchange(head, body)

    async def _exchange(self, head: bytes, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        self.reply_head = headers = raw.lower()
        at = headers.find(b"\r\ncontent-length:")
        if at < 0:  # every reply of the edge has a length; anything else: start afresh
            self.close()
            return status
        length = int(headers[at + 17:headers.index(b"\r\n", at + 17)])
        await self.reader.readexactly(length)
        if b"\r\nconnection: close" in headers:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Load:
    """One process's share of the load: the schedule, the counters, the samples."""

    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.args = args
        self.things = args.things.split(",")
        self.bodies = Bodies(args.frames, args.metrics)
        self.values_per_request = args.frames * args.metrics
        prefer = b"Prefer: wait=5\r\n" if args.sync else b""
        self.heads = {
            thing: lambda n, thing=thing: (
                b"POST /v2/thing/%s/data HTTP/1.1\r\nHost: %s\r\nX-Api-Key: %s\r\n"
                b"Content-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
                % (thing.encode(), self.host.encode(), args.key.encode(), prefer, n))
            for thing in self.things
        }
        self.ok_status = 200 if args.sync else 202
        self.sequence = 0  # this process's requests so far; global number = sequence × procs + index
        self.limit = math.ceil(args.requests / args.procs) if args.requests else math.inf
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.samples: list[str] = []
        self.requests = 0
        self.ok = 0
        self.last_reply = 0.0

    def next_request(self) -> tuple[str, int, bytes, bytes]:
        number = self.sequence * self.args.procs + self.args.index
        self.sequence += 1
        thing = self.things[number % len(self.things)]
        first_ts = self.args.ts_base + number * self.args.frames
        body = self.bodies.body(first_ts)
        return thing, first_ts, self.heads[thing](len(body)), body

    async def worker(self, start: float, measure_from: float, stop: float, interval: float) -> None:
        connection = Connection(self.host, self.port)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if interval:
                    # Paced: each request takes the next slot of the shared schedule.
                    slot = start + self.sequence * interval
                    if slot >= stop or self.sequence >= self.limit:
                        return
                    thing, first_ts, head, body = self.next_request()
                    if slot > loop.time():
                        await asyncio.sleep(slot - loop.time())
                else:
                    if loop.time() >= stop or self.sequence >= self.limit:
                        return
                    thing, first_ts, head, body = self.next_request()
                sent = loop.time()
                try:
                    status = await connection.post(head, body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    connection.close()
                    status = None
                done = loop.time()
                if sent < measure_from:
                    continue  # warm-up: sent, not counted
                self.requests += 1
                self.last_reply = max(self.last_reply, done)
                if status == self.ok_status:
                    self.ok += 1
                    self.latencies.append((done - sent) * 1000)
                    if self.args.samples:
                        self.samples.append(f"{thing},{first_ts},{int(time.time() * 1000)},"
                                            f"{(done - sent) * 1000:.3f}")
                else:
                    self.statuses[str(status or "connection")] += 1
                    if status is None:
                        await asyncio.sleep(0.05)
        finally:
            connection.close()

    async def run(self) -> dict:
        args = self.args
        loop = asyncio.get_running_loop()
        start, cpu_start = loop.time(), _cpu_s()
        measure_from, stop = start + args.warmup, start + args.warmup + args.duration
        interval = args.procs / args.rate if args.rate else 0.0
        wall_from = time.time() + args.warmup
        await asyncio.gather(*(self.worker(start, measure_from, stop, interval) for _ in range(args.concurrency)))
        elapsed = max(self.last_reply, measure_from) - measure_from
        if args.samples:
            with open(args.samples, "w") as out:
                out.write("\n".join(self.samples) + ("\n" if self.samples else ""))
        return {
            "requests": self.requests, "ok": self.ok, "errors": dict(self.statuses),
            "values": self.ok * self.values_per_request, "elapsed_s": elapsed,
            "started_at": wall_from, "ended_at": wall_from + elapsed,
            "ts_end": args.ts_base + (self.sequence * args.procs + args.index + 1) * args.frames,
            "latencies_ms": self.latencies,
            "cpu_cores": (_cpu_s() - cpu_start) / max(loop.time() - start, 1e-9),
        }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarize(parts: list[dict], values_per_request: int) -> dict:
    """Merge the children's results into the printed line (percentiles over every reply)."""
    latencies = [x for p in parts for x in p["latencies_ms"]]
    errors: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
    elapsed = max(p["elapsed_s"] for p in parts) or 1e-9
    ok = sum(p["ok"] for p in parts)
    return {
        "requests": sum(p["requests"] for p in parts), "ok": ok, "errors": dict(errors),
        "values": ok * values_per_request, "elapsed_s": round(elapsed, 3),
        "requests_per_s": ok / elapsed, "values_per_s": ok * values_per_request / elapsed,
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=0.0),
        "started_at": min(p["started_at"] for p in parts), "ended_at": max(p["ended_at"] for p in parts),
        "ts_end": max(p["ts_end"] for p in parts),
        "client_cpu_cores": round(sum(p["cpu_cores"] for p in parts), 3),
    }


def _run_children(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Start `--procs` copies of this client, each with its index; blocks until all printed."""
    children, outputs = [], []
    for index in range(args.procs):
        extra = ["--index", str(index), "--child"]
        if args.samples:
            extra += ["--samples", f"{args.samples}.{index}"]
        # A file, not a pipe: a child's line (every latency) outgrows a pipe's 64 KiB while the
        # parent waits on another child, and the event loop leaves stdout non-blocking.
        outputs.append(tempfile.TemporaryFile())
        children.append(subprocess.Popen([sys.executable, "-m", "bench.loadgen", *argv, *extra],
                                         stdout=outputs[-1]))
    try:
        parts = []
        for child, output in zip(children, outputs):
            child.wait()
            output.seek(0)
            parts.append(json.loads(output.read()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for output in outputs:
            output.close()
    if args.samples:
        with open(args.samples, "w") as out:
            for index in range(args.procs):
                with open(f"{args.samples}.{index}") as part:
                    out.write(part.read())
    return parts


def launch(url: str, key: str, things: list[str], **options: object) -> subprocess.Popen:
    """Start the client as a child process; options are the flags (frames=100, sync=True, …)."""
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, "--key", key, "--things", ",".join(things)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE)


def collect(process: subprocess.Popen, timeout: float) -> dict:
    """The printed results of a launched client; blocks until it exits (killed after `timeout`)."""
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the load client exited with code {process.returncode}")
    return json.loads(out)


def drive(url: str, key: str, things: list[str], **options: object) -> dict:
    """Run the client to completion and return its results."""
    limit = float(options.get("duration", 10)) + float(options.get("warmup", 0)) + 60
    return collect(launch(url, key, things, **options), timeout=limit)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the edge, e.g. http://127.0.0.1:8080")
    parser.add_argument("--key", required=True, help="an API key with the write scope")
    parser.add_argument("--things", required=True, help="comma-separated thing ids, used round-robin")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=10, help="metrics per frame, named m0…")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (per process)")
    parser.add_argument("--duration", type=float, default=10, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=0, help="seconds of load before measuring")
    parser.add_argument("--requests", type=int, default=0, help="stop after this many requests (0: no limit)")
    parser.add_argument("--rate", type=float, default=0, help="requests/s in total; 0: as fast as possible")
    parser.add_argument("--sync", action="store_true", help="Prefer: wait=5 (200 when ingested)")
    parser.add_argument("--ts-base", type=int, default=0, help="first event timestamp (epoch ms)")
    parser.add_argument("--samples", help="write thing,first_ts,accepted_at_ms,latency_ms per accepted request here")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.ts_base:
        args.ts_base = int(time.time() * 1000) - 86_400_000
    return args


def _loop_factory():
    try:
        import uvloop  # comes with uvicorn[standard]; a cheaper event loop leaves more CPU to the edge

        return uvloop.new_event_loop
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.procs > 1 and not args.child:
        # The children must share one ts base, whatever the default would pick in each.
        parts = _run_children(args, [*argv, "--ts-base", str(args.ts_base)])
    else:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            parts = [runner.run(Load(args).run())]
    if args.child:
        print(json.dumps(parts[0]))
    else:
        print(json.dumps(summarize(parts, args.frames * args.metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
