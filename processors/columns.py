"""The readings columns of one frame batch (schemas.frames.READINGS), gathered metric by metric.

Every rulebook adds its coerced values here and hands the Readings to the frame batch as
its `readings`: schemas.frames builds the Arrow batch from it (`batch`), with no per-row
Python lists. Read as a mapping (`readings["ts"]`, as tests and the list path do), it gives
the six columns as lists, built on each read.
Values are kept per metric: a metric's id and data type are stored once, not once
a value, and a Double metric keeps only times and numbers, because by the frames
contract its `value_long` is 0 and its `value_string` empty (schemas/README.md).
A Double reading, the common case, is two appends.

Rows come out metric by metric (in order of each metric's first value), each
metric's values in the order they were added, so of two values of one metric
at one time the later is still the later one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa

from schemas.frames import READINGS

_TS = READINGS.field("ts").type


class MetricReadings:
    """One metric's readings in a frame batch."""

    __slots__ = ("metric_id", "data_type", "ts", "value", "value_long", "value_string")

    def __init__(self, metric_id: str, data_type: str):
        self.metric_id, self.data_type = metric_id, data_type
        self.ts: list[int] = []
        self.value: list[float] = []
        self.value_long: list[int] = []
        self.value_string: list[str] = []

    def add(self, ts: int, value: float, value_long: int = 0, value_string: str = "") -> None:
        """One coerced value (catalog.coercion's triple) at event time `ts`."""
        self.ts.append(ts)
        self.value.append(value)
        self.value_long.append(value_long)
        self.value_string.append(value_string)


class _DoubleReadings(MetricReadings):
    """A Double metric's readings: coercion gives it no long or string part."""

    __slots__ = ()

    def add(self, ts: int, value: float, value_long: int = 0, value_string: str = "") -> None:
        self.ts.append(ts)
        self.value.append(value)


class Readings(Mapping):
    """A frame batch's readings columns, built one metric value at a time."""

    __slots__ = ("_metrics",)

    def __init__(self) -> None:
        self._metrics: dict[str, MetricReadings] = {}

    def metric(self, metric_id: str, data_type: str) -> MetricReadings:
        """The metric's readings, made on first use. Keep it for the request: callers
        that look it up once per metric name save a dict lookup per value."""
        found = self._metrics.get(metric_id)
        if found is None:
            kind = _DoubleReadings if data_type == "Double" else MetricReadings
            found = self._metrics[metric_id] = kind(metric_id, data_type)
        return found

    @property
    def rows(self) -> int:
        """How many readings: one row each."""
        return sum(len(metric.ts) for metric in self._metrics.values())

    def __getitem__(self, name: str) -> list:
        return self.columns()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(READINGS.names)

    def __len__(self) -> int:
        return len(READINGS.names)

    def columns(self) -> dict[str, list]:
        """The six columns by name, as lists (the frames writer uses `batch` instead)."""
        ts: list[int] = []
        metric_id: list[str] = []
        data_type: list[str] = []
        value: list[float] = []
        value_long: list[int] = []
        value_string: list[str] = []
        for metric in self._metrics.values():
            count = len(metric.ts)
            ts += metric.ts
            metric_id += [metric.metric_id] * count
            data_type += [metric.data_type] * count
            value += metric.value
            if type(metric) is _DoubleReadings:
                value_long += [0] * count
                value_string += [""] * count
            else:
                value_long += metric.value_long
                value_string += metric.value_string
        return {"ts": ts, "metric_id": metric_id, "data_type": data_type, "value": value,
                "value_long": value_long, "value_string": value_string}

    def batch(self) -> pa.RecordBatch:
        """The readings as an Arrow record batch (schemas.frames.READINGS), built from the
        metrics without a Python value per row for the repeated columns: metric_id and
        data_type are dictionary indices (one dictionary entry per metric id, one per data
        type: ClickHouse refuses duplicates in a LowCardinality dictionary), and a batch
        of Double metrics only gets zero longs and empty strings from buffers.

        Raises pyarrow's errors (TypeError, ArrowInvalid) for values of the wrong type.
        """
        metrics = list(self._metrics.values())
        counts = np.fromiter((len(m.ts) for m in metrics), dtype=np.int64, count=len(metrics))
        rows = int(counts.sum())
        types: dict[str, int] = {}
        type_of = [types.setdefault(m.data_type, len(types)) for m in metrics]
        metric_codes = np.repeat(np.arange(len(metrics), dtype=np.int32), counts)
        type_codes = np.repeat(np.array(type_of, dtype=np.int32), counts)
        ts = pa.array(np.fromiter(itertools.chain.from_iterable(m.ts for m in metrics), dtype=np.int64, count=rows))
        value = pa.array(list(itertools.chain.from_iterable(m.value for m in metrics)), pa.float64())
        if all(type(m) is _DoubleReadings for m in metrics):
            value_long = pa.array(np.zeros(rows, dtype=np.int64))
            value_string = pa.StringArray.from_buffers(rows, pa.py_buffer(np.zeros(rows + 1, dtype=np.int32)),
                                                       pa.py_buffer(b""))
        else:
            value_long = pa.array(list(itertools.chain.from_iterable(
                itertools.repeat(0, len(m.ts)) if type(m) is _DoubleReadings else m.value_long for m in metrics)),
                pa.int64())
            value_string = pa.array(list(itertools.chain.from_iterable(
                itertools.repeat("", len(m.ts)) if type(m) is _DoubleReadings else m.value_string for m in metrics)),
                pa.string())
        return pa.RecordBatch.from_arrays([
            ts.view(_TS),
            pa.DictionaryArray.from_arrays(pa.array(metric_codes), pa.array([m.metric_id for m in metrics], pa.string())),
            pa.DictionaryArray.from_arrays(pa.array(type_codes), pa.array(list(types), pa.string())),
            value, value_long, value_string,
        ], schema=READINGS)
