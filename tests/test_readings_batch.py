"""Readings.batch (the Arrow batch built from the per-metric runs) against the
dict path (schemas.frames.readings_batch of the expanded lists)."""

from __future__ import annotations

import pyarrow as pa

from processors.columns import Readings
from schemas import frames


def mixed() -> Readings:
    readings = Readings()
    values = [
        ("mdef_a", "Double", [(1, 1.5, 0, ""), (2, 2.5, 0, "")]),
        ("mdef_b", "Long", [(1, 7.0, 7, ""), (3, -2.0, -2, "")]),
        ("mdef_c", "Boolean", [(4, 1.0, 1, "")]),
        ("mdef_d", "String", [(5, 0.0, 0, "on"), (6, 0.0, 0, "")]),
        ("mdef_e", "Double", [(6, 9.0, 0, "")]),
        ("mdef_f", "Long", [(7, 3.0, 3, "")]),
        ("mdef_g", "String", [(8, 0.0, 0, "héllo")]),
    ]
    for metric_id, data_type, rows in values:
        metric = readings.metric(metric_id, data_type)
        for row in rows:
            metric.add(*row)
    readings.metric("mdef_a", "Double").add(9, 3.5)  # a later value of the first metric
    return readings


def test_the_direct_batch_equals_the_dict_paths_for_mixed_types():
    readings = mixed()
    direct = readings.batch()
    via_lists = frames.readings_batch(dict(readings.columns()))  # a plain dict: the list path
    assert direct.schema == frames.READINGS
    direct.validate(full=True)
    assert direct.equals(via_lists)
    assert direct.to_pylist() == via_lists.to_pylist()
    assert direct.column(0).to_pylist()[:3] == via_lists.column(0).to_pylist()[:3]


def test_the_dictionaries_hold_each_value_once():
    direct = mixed().batch()
    metric_id, data_type = direct.column(1), direct.column(2)
    assert metric_id.dictionary.to_pylist() == [f"mdef_{c}" for c in "abcdefg"]
    assert data_type.dictionary.to_pylist() == ["Double", "Long", "Boolean", "String"]  # by type, not by metric
    assert data_type.to_pylist() == ["Double"] * 3 + ["Long"] * 2 + ["Boolean"] + ["String"] * 2 + ["Double"] \
        + ["Long"] + ["String"]


def test_columns_hand_the_batch_their_readings_and_a_plain_dict_still_works():
    readings = mixed()
    columns = readings.columns()
    assert columns == dict(columns) and isinstance(columns, dict)
    assert frames.readings_batch(columns).equals(frames.readings_batch(dict(columns)))
    assert frames.readings_batch(readings).equals(readings.batch())  # the rulebooks' path: built from the metrics
    assert dict(readings) == columns  # read as a mapping, the same lists
    assert readings.rows == len(columns["ts"]) == 11


def test_only_double_metrics_get_zero_longs_and_empty_strings():
    readings = Readings()
    for i in range(3):
        metric = readings.metric(f"mdef_{i}", "Double")
        for ts in range(4):
            metric.add(1_749_945_600_000 + ts, ts * 0.5 + i)
    direct = readings.batch()
    direct.validate(full=True)
    assert direct.equals(frames.readings_batch(dict(readings.columns())))
    assert direct.column(4).to_pylist() == [0] * 12
    assert direct.column(5).to_pylist() == [""] * 12


def test_no_readings_make_an_empty_batch():
    direct = Readings().batch()
    assert direct.num_rows == 0 and direct.schema == frames.READINGS


def test_the_direct_batch_round_trips_through_a_frame_batch():
    readings = mixed()
    batch = {"request_id": "req_1", "org_id": "org_1", "thing_id": "thg_1", "type_version_id": "tver_1",
             "version": 1, "frames": 9, "readings": readings, "locations": []}
    decoded = frames.decode(frames.encode(batch))
    assert decoded["readings"].equals(frames.readings_batch(dict(readings.columns())))
    assert isinstance(decoded["readings"].column(1), pa.DictionaryArray)
