"""bp_core.context.history: a data set's or a file's context, by the consumer's store, in row order."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import numpy as np

from bp_core.context import PatientStore, context_of_frame, context_of_readings
from bp_core.context.history import apply_in_time_order, effective_ms
from bp_core.reading import Reading
from tests.unit._frames import readings_frame

COLUMNS = ("baseline_systolic", "baseline_diastolic", "baseline_readings", "home_average_systolic",
           "home_average_diastolic", "home_average_readings", "arv_systolic", "seconds_since_previous", "outcome")


def _equal(a, b) -> None:
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_a_frame_in_any_row_order_gets_each_row_its_context():
    frame = readings_frame(patients=12, readings=1500, seed=5)
    ordered = context_of_frame(frame)  # the fixture's rows are in time order already
    expected = PatientStore().apply_columns(
        frame["patient_id"].tolist(), frame["observation_id"].tolist(), effective_ms(frame).tolist(),
        frame["systolic_mm_hg"].astype(float).tolist(), frame["diastolic_mm_hg"].astype(float).tolist()).context
    _equal(ordered, expected)
    assert (ordered.baseline_readings > 5).mean() > 0.9

    shuffled = frame.sample(frac=1.0, random_state=3)
    context = context_of_frame(shuffled)
    _equal(context, expected.take(shuffled.index.to_numpy()))


def test_a_file_has_only_its_own_history_taken_in_time_order():
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)
    readings = [Reading(f"o{i}", "p" if i % 3 else "q", start + timedelta(hours=i), 120.0 + i, 80.0)
                for i in range(24)]
    in_file_order = readings[:]
    random.Random(2).shuffle(in_file_order)
    context = context_of_readings(in_file_order)
    expected = PatientStore().apply(readings).context
    position = {r.observation_id: i for i, r in enumerate(readings)}
    _equal(context, expected.take(np.array([position[r.observation_id] for r in in_file_order])))
    first_of_p = in_file_order.index(readings[1])
    assert context.baseline_readings[first_of_p] == 0 and np.isnan(context.baseline_systolic[first_of_p])


def test_status_changes_of_a_file():
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)
    readings = [Reading(f"o{i}", "p", start + timedelta(hours=6 * i), 150.0, 95.0) for i in range(14)]
    result = apply_in_time_order(readings[::-1])
    assert [(c.change, c.observation_id) for c in result.status_changes] == [("started", "o11")]
