"""The download cache every clone and CI run of this machine shares: the Kafka broker's jars
(sluice.kafka_jars) and the schema registry's app (sluice.local_registry) land here once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """Where downloads are kept: $SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice or ~/.cache/sluice."""
    override = os.environ.get("SLUICE_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sluice"


def fill_once(folder: Path, complete: Callable[[], bool], fill: Callable[[], None]) -> None:
    """Run `fill` unless `complete()` says `folder` already holds its download.

    Concurrent callers (parallel CI jobs, test workers) are serialised with a file lock in
    `folder`, so they never download into it at once; one that waited finds it complete.
    Blocks while `fill` runs or another process holds the lock; raises what `fill` raises.
    """
    import fcntl  # POSIX only; imported here so the module still imports elsewhere

    if complete():
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete():  # unless another process finished meanwhile
            fill()
