"""A chunk's frames → frames bodies for `POST /v2/thing/{id}/data`, each under the body limit.

Frames are grouped per thing and merged per event time (one frame per
timestamp, its metrics together; a later row's value wins), sorted by time, and packed greedily into bodies
of at most `max_body` bytes. The packing depends only on the frames and the
limit, so the same chunk always gives the same batches: what makes a batch's
Idempotency-Key (file fingerprint + position + number) name the same body on a re-send.
Pure and synchronous.
"""

from __future__ import annotations

import dataclasses

import orjson

_OPEN, _CLOSE = b'{"frames":[', b"]}"


@dataclasses.dataclass(frozen=True)
class Batch:
    """One request: a thing's frames (each encoded), its values count, its Idempotency-Key."""

    key: str
    thing_id: str
    frames: tuple[bytes, ...]
    frame_values: tuple[int, ...]

    @property
    def values(self) -> int:
        return sum(self.frame_values)

    @property
    def body(self) -> bytes:
        return _OPEN + b",".join(self.frames) + _CLOSE

    def halves(self) -> tuple["Batch", "Batch"]:
        """The two halves of a batch of two frames or more, under keys derived from this one's."""
        mid = len(self.frames) // 2
        return (Batch(f"{self.key}.0", self.thing_id, self.frames[:mid], self.frame_values[:mid]),
                Batch(f"{self.key}.1", self.thing_id, self.frames[mid:], self.frame_values[mid:]))


def body_size(frames: list[bytes]) -> int:
    return len(_OPEN) + sum(len(f) for f in frames) + max(0, len(frames) - 1) + len(_CLOSE)


def make_batches(frames_in: list[tuple[str, int, dict]], max_body: int, key_prefix: str,
                 ) -> tuple[list[Batch], list[tuple[str, int, str]]]:
    """(batches numbered in order under `key_prefix`-n, frames too large for any body: (thing, ts, reason))."""
    things: dict[str, dict[int, dict[str, object]]] = {}
    for thing, ts, metrics in frames_in:
        at = things.setdefault(thing, {})
        if ts in at:
            at[ts] = {**at[ts], **metrics}  # a later row wins, as in the table
        else:
            at[ts] = metrics
    batches: list[Batch] = []
    too_large: list[tuple[str, int, str]] = []
    for thing in sorted(things):
        frames: list[bytes] = []
        counts: list[int] = []
        size = len(_OPEN) + len(_CLOSE) - 1

        def close() -> None:
            if frames:
                batches.append(Batch(f"{key_prefix}-{len(batches)}", thing, tuple(frames), tuple(counts)))

        for ts, metrics in sorted(things[thing].items()):
            frame = orjson.dumps({"timestamp": ts, "metrics": metrics})
            if len(_OPEN) + len(frame) + len(_CLOSE) > max_body:
                too_large.append((thing, ts, f"one frame of {len(frame)} bytes exceeds the body limit"))
                continue
            if size + 1 + len(frame) > max_body:
                close()
                frames, counts, size = [], [], len(_OPEN) + len(_CLOSE) - 1
            frames.append(frame)
            counts.append(len(metrics))
            size += 1 + len(frame)
        close()
    return batches, too_large
