"""What an import has had acknowledged, kept next to its file so a rerun resumes there.

`FILE.sluice-import.json` holds the file's fingerprint (content and batching
parameters), `position` (where the first chunk not yet wholly acknowledged starts),
`rows` (rows before it), the numbers of that chunk's batches already acknowledged,
and the running totals. It is rewritten atomically (write, fsync, rename) after
every acknowledged batch. A checkpoint of another file or other parameters is
refused rather than trusted. Blocking file I/O only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

SUFFIX = ".sluice-import.json"


def fingerprint(path: Path, *params: object) -> str:
    """SHA-256 of the file's bytes and the parameters that decide its batches (hex, 32 chars)."""
    digest = hashlib.sha256(repr(params).encode())
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()[:32]


@dataclasses.dataclass
class Checkpoint:
    path: Path
    fingerprint: str
    position: int = 0
    rows: int = 0
    acknowledged: set[str] = dataclasses.field(default_factory=set)  # batch keys of the chunk at `position`
    totals: dict[str, int] = dataclasses.field(default_factory=dict)
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # rejection reason → values
    complete: bool = False

    @classmethod
    def for_file(cls, data: Path) -> Path:
        return data.with_name(data.name + SUFFIX)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> "Checkpoint":
        """The checkpoint at `path`, or a fresh one; ValueError if it belongs to another file or parameters."""
        if not path.exists():
            return cls(path, fingerprint)
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") != fingerprint:
            raise ValueError(f"{path.name} belongs to another file or other batching parameters; "
                             "use --restart to ignore it")
        return cls(path, fingerprint, saved["position"], saved["rows"], set(saved["acknowledged"]),
                   saved["totals"], saved["reasons"], saved["complete"])

    def save(self) -> None:
        document = {"fingerprint": self.fingerprint, "position": self.position, "rows": self.rows,
                    "acknowledged": sorted(self.acknowledged), "totals": self.totals, "reasons": self.reasons,
                    "complete": self.complete}
        scratch = self.path.with_name(self.path.name + ".tmp")
        with open(scratch, "w") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.path)

    def add(self, name: str, amount: int) -> None:
        self.totals[name] = self.totals.get(name, 0) + amount
