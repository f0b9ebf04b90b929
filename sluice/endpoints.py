"""Where the running stack is: `sluice up` records its endpoints in the state folder, and
the CLI's other commands find them there.

`sluice up` writes `<state>/run/endpoints.json` once every part is ready and removes it
on a clean stop. A client command (status, replay, sql, ...) reads it first: its values
stand in for the environment variables the shell leaves unset, so a variable that is
set still wins. A file whose writer is gone (a stack that was SIGKILLed) is named on
stderr and ignored. Secrets are never recorded: the admin key is named by its file,
and a ClickHouse URL is recorded without its password.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from config import Settings

#: The settings a client needs to reach the stack and read its topics as it writes them.
ENDPOINTS = (
    "KAFKA_BOOTSTRAP_SERVERS", "SLUICE_TOPIC_PREFIX", "SLUICE_PARTITIONS", "SLUICE_INGEST_PARTITIONS",
    "SLUICE_HTTP_HOST", "SLUICE_HTTP_PORT", "SLUICE_CLICKHOUSE_PORT", "SLUICE_PROCESSOR_METRICS_PORT", "SLUICE_SINK_METRICS_PORT",
    "SLUICE_INTEGRATIONS_METRICS_PORT",
    "SLUICE_SCHEMA_REGISTRY_URL", "CLICKHOUSE_URL", "SLUICE_DATABASE", "SLUICE_MAX_BODY_BYTES",
    "SLUICE_KAFKA_PORT", "SLUICE_BROKERS",  # where a local cluster's nodes keep their files (its controller)
)


def endpoints_path(state_dir: Path) -> Path:
    return state_dir / "run" / "endpoints.json"


def record(settings: Settings, admin_key_file: Path | None) -> Path:
    """Write the endpoints of the stack this process runs with `settings` (the ones it really
    uses: the local broker's bootstrap, the registry's URL); atomic, readers never see half a file."""
    env = settings.to_env()
    values = {name: env[name] for name in ENDPOINTS}
    values["CLICKHOUSE_URL"] = _without_password(settings.clickhouse_url)
    body = {
        "pid": os.getpid(),
        "pid_started": process_started(os.getpid()),
        "url": f"http://{settings.http_host}:{settings.http_port}",
        "admin_key_file": str(admin_key_file) if admin_key_file else None,
        "settings": values,
    }
    path = endpoints_path(settings.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def remove(state_dir: Path) -> None:
    endpoints_path(state_dir).unlink(missing_ok=True)


def recorded(state_dir: Path, warn: Callable[[str], None]) -> dict[str, str] | None:
    """The settings recorded by the stack running on `state_dir` (by environment variable name),
    or None: no file, or (said through `warn`) an unreadable one or one whose stack is gone."""
    path = endpoints_path(state_dir)
    try:
        body = json.loads(path.read_text())
        pid, started, values = int(body["pid"]), body["pid_started"], dict(body["settings"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warn(f"sluice: ignoring {path}, which cannot be read ({exc}); using the environment and defaults")
        return None
    if not is_running(pid, started):
        warn(f"sluice: ignoring {path}: the `sluice up` that wrote it (pid {pid}) is gone; "
             "using the environment and defaults")
        return None
    return {name: str(value) for name, value in values.items() if name in ENDPOINTS}


def client_settings(warn: Callable[[str], None] | None = None) -> Settings:
    """Settings for a command that talks to a running stack: the environment, over what the
    stack on the state folder (SLUICE_STATE_DIR, else ./.sluice) recorded, over the defaults."""
    settings = Settings.from_env()
    found = recorded(settings.state_dir, warn or _to_stderr)
    return Settings.from_env(fallback=found) if found else settings


def scrape_host(settings: Settings) -> str:
    """Where a client on this machine reaches the stack's ports: the edge's host, or loopback
    when it listens on every address; an IPv6 literal in brackets, for host:port."""
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def process_started(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, from /proc), or None: no such live process
    (a zombie counts as gone) or no /proc. A pid and its start time name one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    state, started = fields[0], fields[19]  # fields 3 and 22 of proc(5)
    return None if state == "Z" else started


def is_running(pid: int, started: str | None) -> bool:
    """True if the process `pid` that started at `started` still runs (only that pid is
    checked where /proc is missing)."""
    if Path("/proc/self/stat").exists():
        return started is not None and process_started(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
