"""Reading the warehouse of a stopped stack directly (chDB has one owner at a time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def optimized(settings, thing: str) -> tuple[int, int]:
    """(count(), uniqExact) after OPTIMIZE … FINAL, in a process of its own (chDB: one owner at a time)."""
    table = f"{settings.database}.readings"
    script = f"""
from config import Settings
from warehouse import open_warehouse
w = open_warehouse(Settings.from_env())
w.command("OPTIMIZE TABLE {table} FINAL")
print(list(w.query("SELECT count(), uniqExact(metric_id, ts) FROM {table} WHERE thing_id = '{thing}'").rows[0]))
w.close()
"""
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, **settings.to_env()}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))
