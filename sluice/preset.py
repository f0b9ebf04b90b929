"""`sluice catalog preset NAME`: install a catalog preset (e.g. iso15143-3) in an org.

It goes through the running edge's catalog API (`POST /v2/definitions/presets/NAME`),
as a client would: with `--key`, in that key's org; without, with the platform-admin
key, in the default org. Idempotent: a second run reports that nothing changed.
"""

from __future__ import annotations

import sys

import httpx

from config import Settings


def install(settings: Settings, name: str, url: str | None, key: str | None) -> int:
    from sluice.stack import admin_key

    url = url or f"http://{settings.http_host}:{settings.http_port}"
    try:
        reply = httpx.post(f"{url}/v2/definitions/presets/{name}", headers={"X-Api-Key": key or admin_key(settings)},
                           timeout=60)
    except httpx.HTTPError as exc:
        print(f"sluice catalog preset: the edge at {url} did not answer (is `sluice up` running?): {exc}",
              file=sys.stderr)
        return 1
    body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
    if reply.status_code not in (200, 201):
        message = body.get("error", {}).get("message") or reply.text
        print(f"sluice catalog preset: {reply.status_code} {message}", file=sys.stderr)
        return 1
    print(f"{body['standard']}: thing type {body['thingTypeId']} (version {body['versionId']}), "
          f"{len(body['metrics'])} metrics")
    print(f"created: {', '.join(body['created'])}" if body["created"] else "already installed; nothing changed")
    for metric in body["metrics"]:
        print(f"  {metric['id']}  {metric['name']:<36} {metric['dataType']:<8} {metric['unitLabel'] or '':<6} "
              f"{metric['defaultAggregation']}")
    return 0
