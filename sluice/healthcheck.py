"""`python -m sluice.healthcheck URL`: the health check of a Sluice service in a container.

The image is python:3.11-slim, without curl or wget, so the check is Python's own
urllib. Healthy (exit 0): URL answers 2xx and, for a Prometheus page (the
processor's and sink's `/metrics`), no loop of the service reports down
(`sluice_component_up` 0). Otherwise exit 1, the reason on stderr (what
`docker inspect` shows). The edge's `/readyz` answers 503 naming what is not ready:
a loop of its own, its catalog view, or no processor taking the raw requests.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.request

DOWN = re.compile(rb'^sluice_component_up\{component="([^"]*)"\} 0(?:\.0)?$', re.MULTILINE)


def problem(url: str, timeout: float = 5) -> str | None:
    """Why the service at `url` is not healthy, or None if it is. Blocks up to `timeout` s."""
    # No proxy from the environment: the check asks the container itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}{_not_ready(exc.read())}"
    except (OSError, ValueError) as exc:  # refused, timed out, not a URL
        return f"{url}: {exc}"
    down = sorted(name.decode() for name in DOWN.findall(body))
    return f"{url}: loops down: {', '.join(down)}" if down else None


def _not_ready(body: bytes) -> str:
    """`: name (reason), ...` of the components a /readyz answer says are not ok, else ''."""
    try:
        components = json.loads(body)["components"]
        failing = [f"{name} ({status.get('reason') or status['state']})"
                   for name, status in components.items() if not status["ok"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""
    return f": {', '.join(failing)}" if failing else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sluice.healthcheck URL", file=sys.stderr)
        return 2
    reason = problem(args[0])
    if reason:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
