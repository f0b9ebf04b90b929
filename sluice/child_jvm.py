"""A JVM the local stack runs as a child process: the Kafka broker, the schema registry.

Both are started and stopped alike: in their own process group (a Ctrl-C aimed at
the parent's terminal does not hit them mid-request; `stop()` decides how they end),
output appended to a log file, SIGTERMed by the kernel if this process dies hard
(PR_SET_PDEATHSIG, from the main thread only) and stopped by atexit on a normal exit.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class ChildJvm:
    """The process side of a local JVM service; subclasses add `start()` and what it serves."""

    label = "JVM"  # how logs name it

    def __init__(self, home: Path, stdout_path: Path) -> None:
        self.home = home
        self.stdout_path = stdout_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the JVM we started is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The JVM's exit code (negative: killed by that signal); None while running or never started.

        Reading it reaps an exited JVM, so a killed child does not linger as a zombie.
        """
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> str:
        raise NotImplementedError

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; blocks until the JVM exited.

        Safe to call more than once or when never started.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s pid %s ignored SIGTERM for %ss; killing", self.label, proc.pid, timeout)
                    signal_group(proc, signal.SIGKILL)
                    proc.wait()
            # Forget the process only once it is gone, so an interrupted stop() is retried by atexit.
            self._proc = None
        atexit.unregister(self.stop)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn_process(self, cmd: list[str]) -> None:
        """Start `cmd` in `home`, its output appended to `stdout_path`."""
        self._stdout = open(self.stdout_path, "ab")
        # PDEATHSIG fires when the forking *thread* ends, so only the main thread may use it;
        # other callers rely on atexit alone.
        use_pdeathsig = sys.platform == "linux" and threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=subprocess.STDOUT, cwd=self.home,
            process_group=0, preexec_fn=die_with_parent_hook() if use_pdeathsig else None)
        atexit.register(self.stop)  # a normal interpreter exit that skipped stop()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing is listening on ``host:port`` (non-blocking check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the JVM, ignore TIME_WAIT leftovers from a child we just stopped.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """Last ``lines`` lines of ``path`` written after byte offset ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no output)\n"
    return "".join(deque(text.splitlines(keepends=True), maxlen=lines)) or "(no output)\n"


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # already gone


_PR_SET_PDEATHSIG = 1


def die_with_parent_hook() -> Callable[[], None]:
    """Build a preexec_fn that makes Linux SIGTERM the child when its parent dies.

    prctl is looked up here, in the parent: the forked child should do as
    little as possible (dlopen there could deadlock on a lock held by one of
    librdkafka's threads). Note the kernel ties PDEATHSIG to the *thread*
    that forked, not the whole process.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal comes.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """A signal handler: SIGTERM behaves like Ctrl-C, so both also abort a start() in progress."""
    raise KeyboardInterrupt
