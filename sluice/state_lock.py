"""One owner per state folder: an OS file lock on `<state>/lock`.

`sluice up` (and a standalone local broker or registry) holds an exclusive
`flock` on the folder's lock file for as long as it runs, and writes its pid and
what it is into the file so a refused second owner can name it. The kernel
drops the lock when the holder's process ends however it ends, so a SIGKILLed
stack never leaves a stale lock behind. The file itself is never removed:
a process that opened it before the removal would lock a file nobody else sees.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_FILE = "lock"


class StateLocked(RuntimeError):
    """Another process holds the state folder; the message names it and its pid."""

    def __init__(self, state_dir: Path, holder: str) -> None:
        super().__init__(f"the state folder {state_dir} is in use by {holder}; stop it first, "
                         "or give this one a state folder of its own (SLUICE_STATE_DIR)")
        self.state_dir = state_dir
        self.holder = holder  # "sluice up (pid 1234)"


class StateLock:
    """An exclusive hold on a state folder, taken without waiting; a context manager."""

    def __init__(self, state_dir: Path, holder: str) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self.holder = holder  # what the file says holds it: "sluice up", "python -m sluice.local_kafka"
        self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> "StateLock":
        """Take the lock, or raise StateLocked at once naming the holder; creates the folder if needed.

        Never blocks beyond the moment a just-started holder needs to write its pid.
        """
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # not "w": truncating before we hold the lock would erase the holder's pid
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise StateLocked(self.path.parent, self._holder()) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n{self.holder}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        """Give the folder up; idempotent."""
        if self._file is None:
            return
        # Emptied while still held: once released, the next holder's pid may already be in it.
        self._file.seek(0)
        self._file.truncate()
        self._file.flush()
        self._file.close()  # closing the last descriptor releases the flock
        self._file = None

    def __enter__(self) -> "StateLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _holder(self, patience: float = 1.0) -> str:
        """'sluice up (pid 1234)' from the lock file; a holder that has only just taken the
        lock gets `patience` seconds to write it."""
        deadline = time.monotonic() + patience
        while True:
            try:
                lines = self.path.read_text().splitlines()
            except OSError:
                lines = []
            if len(lines) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(lines) < 2:
            return "another process (its pid is not recorded)"
        return f"{lines[1]} (pid {lines[0]})"
