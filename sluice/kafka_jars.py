"""The Kafka broker's jars, resolved once from Maven Central.

The pom (``sluice/kafka/pom.xml``) pins the Kafka version; Maven copies its runtime jars
into ``<cache>/kafka-<version>/libs`` of the download cache (sluice.download_cache:
``~/.cache/sluice`` by default), shared by every clone and CI run.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from sluice.download_cache import fill_once

log = logging.getLogger(__name__)

KAFKA_RESOURCES = Path(__file__).resolve().parent / "kafka"
POM_PATH = KAFKA_RESOURCES / "pom.xml"

# Written into the libs dir only after mvn succeeded; holds the pom's hash so
# an interrupted download or an edited pom triggers a fresh resolve.
_JARS_MARKER = ".sluice-jars-complete"


class LocalKafkaError(RuntimeError):
    """Raised when the local broker cannot be prepared, started or reached."""


def kafka_version(pom: Path = POM_PATH) -> str:
    """Return the ``kafka.version`` property pinned in ``pom``.

    The pom is the single source of truth for the version. Raises
    LocalKafkaError if the property is missing.
    """
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise LocalKafkaError(f"{pom} does not define the kafka.version property")
    return node.text.strip()


def require_tool(name: str, install_hint: str) -> str:
    """Return the absolute path of executable ``name`` or raise LocalKafkaError."""
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(f"`{name}` was not found on PATH; {install_hint}")
    return path


def require_java() -> str:
    return require_tool(
        "java",
        "install a Java 17+ runtime, e.g. `apt-get install openjdk-17-jre-headless` "
        "or `brew install openjdk@17`.",
    )


def _require_mvn() -> str:
    return require_tool(
        "mvn",
        "install Apache Maven (used once to fetch the Kafka jars), e.g. "
        "`apt-get install maven` or `brew install maven`.",
    )


def _pom_digest(pom: Path) -> str:
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _jars_complete(libs: Path, digest: str) -> bool:
    marker = libs / _JARS_MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def ensure_jars(cache_dir: Path) -> Path:
    """Make sure the Kafka broker jars are in ``cache_dir`` and return the libs dir.

    The jars land in ``<cache_dir>/kafka-<version>/libs``. Maven runs only when
    that folder is missing, was left incomplete by an interrupted run, or was
    resolved from a different pom. Concurrent callers (parallel CI jobs, xdist
    workers) are serialised with a file lock so they do not download into the
    same folder at once.

    Blocks while Maven runs (~45 MB from Maven Central on a cold ~/.m2: a few
    seconds on a fast link, minutes on a slow one; ~2 s when ~/.m2 is warm;
    instant once cached) and while another process holds the lock.
    Raises LocalKafkaError if `mvn` is missing or Maven fails.
    """
    version = kafka_version()
    base = Path(cache_dir).expanduser() / f"kafka-{version}"
    libs = base / "libs"
    digest = _pom_digest(POM_PATH)

    def resolve() -> None:
        _resolve_jars(libs)
        (libs / _JARS_MARKER).write_text(digest + "\n")

    fill_once(base, lambda: _jars_complete(libs, digest), resolve)
    return libs


def _resolve_jars(libs: Path) -> None:
    """Run Maven to copy every runtime jar into a fresh ``libs`` folder."""
    mvn = _require_mvn()
    # Start clean: leftovers from an older pom would end up on the classpath.
    shutil.rmtree(libs, ignore_errors=True)
    cmd = [
        mvn, "-q", "-B", "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-f", str(POM_PATH),
    ]
    log.info("resolving Kafka jars into %s (first run only)", libs)
    started = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise LocalKafkaError(
            f"Maven could not resolve the Kafka jars (exit {proc.returncode}):\n"
            f"  {' '.join(cmd)}\n{tail}"
        )
    if not any(libs.glob("kafka_*.jar")):
        raise LocalKafkaError(f"Maven succeeded but no kafka_*.jar appeared in {libs}")
    log.info("Kafka jars resolved in %.1fs", time.monotonic() - started)
