"""The whole local stack as child processes: broker, edge, processor, sink.

Started in dependency order and stopped in reverse (edge first, broker last),
so in-flight requests drain before the broker goes away. Children run in their
own sessions and die with the parent if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from catalog import keys
from config import Settings
from sluice.local_kafka import LocalKafka
from sluice.topics_admin import ensure_topics


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


def die_with_parent() -> None:
    """preexec_fn for children: Linux delivers them SIGTERM when the parent process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def terminate(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; blocks until it has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def admin_key(settings: Settings) -> str:
    """SLUICE_ADMIN_KEY, else the key saved on first start, else a new saved one."""
    if settings.admin_key:
        return settings.admin_key
    path = settings.state_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    secret = keys.new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@dataclasses.dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker: LocalKafka | None = None
        self.children: list[Child] = []

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self, timeout: float = 180) -> None:
        """Start every part and wait until each is ready; raises StackError (after stopping what started)."""
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        settings = self.settings
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            self.broker = LocalKafka(settings.state_dir, port=settings.local_kafka_port)
            bootstrap = self.broker.start()
        self.settings = settings = dataclasses.replace(
            settings, kafka_bootstrap=bootstrap, admin_key=admin_key(settings))
        ensure_topics(bootstrap, settings)
        self._spawn("edge")
        self._spawn("processor")
        if not settings.embedded_warehouse:
            self._spawn("sink")
        self._wait_ready(deadline)

    def _wait_ready(self, deadline: float) -> None:
        ready_file = self.settings.state_dir / "run" / "processor.ready"
        while time.monotonic() < deadline:
            self.check_alive()
            if self._edge_ready() and ready_file.exists():
                return
            time.sleep(0.25)
        raise StackError("the stack did not become ready in time; see the logs in "
                         f"{self.settings.state_dir / 'logs'}")

    def restart(self, service: str, sig: int = signal.SIGTERM, timeout: float = 120) -> None:
        """Stop one service with `sig` (SIGKILL simulates a crash), start it again, wait until ready."""
        child = next(c for c in self.children if c.name == service)
        child.process.send_signal(sig)
        child.process.wait(timeout)
        self.children.remove(child)
        self._spawn(service)
        self._wait_ready(time.monotonic() + timeout)

    def _spawn(self, service: str) -> None:
        logs = self.settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if service == "processor":
            (self.settings.state_dir / "run" / "processor.ready").unlink(missing_ok=True)
        log_path = logs / f"{service}.log"
        env = {**os.environ, **self.settings.to_env()}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", service],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        self.children.append(Child(service, process, log_path))

    def check_alive(self) -> None:
        """Raise StackError with the log's tail if any child has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace")[-3000:]
                raise StackError(f"{child.name} exited with code {code}; its log ({child.log}) ends:\n{tail}")

    def _edge_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self) -> int:
        """Block until a child exits on its own or a signal arrives; returns an exit code."""
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.append(1))
        while not stop:
            for child in self.children:
                if child.process.poll() is not None:
                    print(f"sluice: {child.name} exited unexpectedly (code {child.process.returncode}); "
                          f"see {child.log}", file=sys.stderr)
                    return 1
            time.sleep(0.3)
        return 0

    def stop(self, timeout: float = 20) -> None:
        """Stop children in reverse order, then the broker; idempotent."""
        for child in reversed(self.children):
            terminate(child.process, timeout)
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
