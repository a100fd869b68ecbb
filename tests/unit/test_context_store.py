"""bp_core.context.store: windows, late and old readings, replays, removals, status changes, the codec."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bp_core.context import OUTCOMES, PatientStore, decode_state, encode_state
from bp_core.context.store import MAX_READINGS, WINDOW_MS, _HEADER
from bp_core.errors import StateFormatError
from bp_core.reading import Reading

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z


def apply(store: PatientStore, rows, patient: str = "p1"):
    """Apply (observation id, effective ms, systolic, diastolic[, status]) rows of one patient."""
    rows = [row if len(row) == 5 else (*row, "final") for row in rows]
    return store.apply_columns([patient] * len(rows), [r[0] for r in rows], [r[1] for r in rows],
                               [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows])


def series(n: int, *, start: int = T0, every: int = 4 * HOUR, systolic=120.0, diastolic=80.0, prefix: str = "o"):
    values_s = systolic if isinstance(systolic, list) else [systolic] * n
    values_d = diastolic if isinstance(diastolic, list) else [diastolic] * n
    return [(f"{prefix}{i}", start + i * every, values_s[i], values_d[i]) for i in range(n)]


def outcomes(result) -> list[str]:
    return [OUTCOMES[code] for code in result.context.outcome.tolist()]


# --------------------------------------------------------------------------- baseline and window


def test_no_baseline_before_five_previous_readings_then_their_mean():
    store = PatientStore()
    result = apply(store, series(7, systolic=[110, 120, 130, 140, 150, 160, 170],
                                 diastolic=[70, 72, 74, 76, 78, 80, 82]))
    context = result.context
    assert np.isnan(context.baseline_systolic[:5]).all() and np.isnan(context.baseline_diastolic[:5]).all()
    assert context.baseline_readings.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert context.baseline_systolic[5] == pytest.approx(130.0) and context.baseline_diastolic[5] == pytest.approx(74.0)
    assert context.baseline_systolic[6] == pytest.approx(135.0)
    # The home average includes the reading itself; the first reading's is the reading.
    assert context.home_average_systolic.tolist() == pytest.approx([110, 115, 120, 125, 130, 135, 140])
    assert context.home_average_readings.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert context.home_average_diastolic[6] == pytest.approx(76.0)
    assert math.isnan(context.arv_systolic[0]) and context.arv_systolic[1:].tolist() == pytest.approx([10.0] * 6)
    assert math.isnan(context.seconds_since_previous[0])
    assert context.seconds_since_previous[1:].tolist() == [4 * 3600.0] * 6
    assert outcomes(result) == ["new"] * 7 and result.changed == {"p1"} and result.status_changes == []


def test_arv_is_the_mean_absolute_step_over_the_window_and_the_reading():
    result = apply(PatientStore(), series(4, systolic=[120, 130, 125, 135]))
    assert result.context.arv_systolic.tolist() == pytest.approx([math.nan, 10.0, 7.5, 25 / 3], nan_ok=True)


def test_a_reading_exactly_seven_days_older_is_out_of_the_window():
    store = PatientStore()
    apply(store, [("a", T0, 100.0, 60.0)] + series(4, start=T0 + 3 * DAY, every=HOUR, systolic=120.0, prefix="b"))
    exactly = apply(store, [("c", T0 + WINDOW_MS, 130.0, 80.0)]).context
    assert exactly.baseline_readings[0] == 4 and math.isnan(exactly.baseline_systolic[0])
    assert exactly.home_average_systolic[0] == pytest.approx((4 * 120 + 130) / 5)

    store = PatientStore()
    apply(store, [("a", T0, 100.0, 60.0)] + series(4, start=T0 + 3 * DAY, every=HOUR, systolic=120.0, prefix="b"))
    just_inside = apply(store, [("c", T0 + WINDOW_MS - 1, 130.0, 80.0)]).context
    assert just_inside.baseline_readings[0] == 5
    assert just_inside.baseline_systolic[0] == pytest.approx((100 + 4 * 120) / 5)


def test_a_gap_longer_than_the_window_starts_afresh_but_keeps_the_time_since_previous():
    store = PatientStore()
    apply(store, series(10))
    context = apply(store, [("late", T0 + 9 * 4 * HOUR + 10 * DAY, 150.0, 90.0)]).context
    assert context.baseline_readings[0] == 0 and context.home_average_readings[0] == 1
    assert context.seconds_since_previous[0] == 10 * 86_400.0
    assert store.state("p1").count == 1


def test_patients_are_independent_and_interleave():
    store = PatientStore()
    result = store.apply_columns(["a", "b"] * 6, [f"o{i}" for i in range(12)], [T0 + i * HOUR for i in range(12)],
                                 [120.0, 160.0] * 6, [80.0, 100.0] * 6)
    assert result.context.baseline_systolic[10:].tolist() == [120.0, 160.0]
    assert result.changed == {"a", "b"} and len(store) == 2


def test_values_are_kept_to_a_tenth_of_a_mmhg():
    context = apply(PatientStore(), [("a", T0, 120.04, 80.06), ("b", T0 + HOUR, 121.0, 80.0)]).context
    assert context.home_average_systolic[0] == pytest.approx(120.0)
    assert context.home_average_diastolic[0] == pytest.approx(80.1)


# --------------------------------------------------------------------------- late and old readings


def test_a_late_reading_is_placed_by_effective_time():
    store = PatientStore()
    first = apply(store, series(8, systolic=[120, 122, 124, 126, 128, 130, 132, 134]))
    late = apply(store, [("late", T0 + 5 * 4 * HOUR + HOUR, 150.0, 90.0)])
    assert outcomes(late) == ["late"] and late.changed == {"p1"}
    context = late.context
    assert context.baseline_readings[0] == 6 and context.baseline_systolic[0] == pytest.approx(125.0)
    assert context.seconds_since_previous[0] == 3600.0
    assert context.arv_systolic[0] == pytest.approx((5 * 2 + 20) / 6)
    # The next reading in order sees it; readings already applied keep their context.
    following = apply(store, [("next", T0 + 8 * 4 * HOUR, 120.0, 80.0)]).context
    assert following.baseline_readings[0] == 9
    assert following.baseline_systolic[0] == pytest.approx((sum([120, 122, 124, 126, 128, 130, 132, 134]) + 150) / 9)
    assert following.arv_systolic[0] == pytest.approx((5 * 2 + 20 + 18 + 2 + 14) / 9)
    replay = apply(store, [series(8, systolic=[120, 122, 124, 126, 128, 130, 132, 134])[7]])
    assert replay.context.baseline_systolic[0] == first.context.baseline_systolic[7]


def test_a_reading_older_than_the_window_does_not_move_the_state():
    store = PatientStore()
    apply(store, series(50))
    before = store.encode("p1")
    newest = T0 + 49 * 4 * HOUR
    result = apply(store, [("old", newest - WINDOW_MS, 200.0, 120.0)])
    assert outcomes(result) == ["too_old"] and result.changed == set()
    assert result.context.baseline_readings[0] == 0 and math.isnan(result.context.baseline_systolic[0])
    assert result.context.home_average_systolic[0] == 200.0
    assert store.encode("p1") == before
    assert outcomes(apply(store, [("recent", newest - WINDOW_MS + 1, 200.0, 120.0)])) == ["late"]


def test_late_and_in_order_arrival_end_in_the_same_state():
    rows = series(60, every=3 * HOUR, systolic=[100.0 + (i * 37) % 41 for i in range(60)])
    in_order = PatientStore()
    apply(in_order, rows)
    shuffled = PatientStore()
    late = rows[:]
    random.Random(4).shuffle(late)
    apply(shuffled, late)
    assert _held(in_order) == _held(shuffled)
    a, b = in_order.state("p1"), shuffled.state("p1")
    assert (a.sum_systolic, a.sum_diastolic, a.steps) == (b.sum_systolic, b.sum_diastolic, b.steps)


def _held(store: PatientStore, patient: str = "p1") -> list[tuple]:
    return [record[:4] for record in store.state(patient).readings()]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40 * HOUR), st.integers(80, 200)), min_size=1, max_size=150),
       st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_running_sums_of_what_is_held(steps, rng):
    rows, t = [], T0
    for i, (gap, systolic) in enumerate(steps):
        t += gap
        rows.append((f"o{i}", t, float(systolic), float(systolic) / 2))
    in_order, shuffled = PatientStore(), PatientStore()
    apply(in_order, rows)
    rng.shuffle(rows)
    apply(shuffled, rows)
    for store in (in_order, shuffled):
        state = store.state("p1")
        held = state.readings()
        times = [r[0] for r in held]
        assert times == sorted(times) and len(held) == state.count <= MAX_READINGS
        assert times[-1] - times[0] < WINDOW_MS
        assert state.sum_systolic == sum(r[2] for r in held) and state.sum_diastolic == sum(r[3] for r in held)
        assert state.steps == sum(abs(held[i + 1][2] - held[i][2]) for i in range(len(held) - 1))
    assert _held(in_order) == _held(shuffled)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30 * HOUR), st.integers(80, 200), st.integers(50, 79)), min_size=1,
                max_size=160))
def test_in_order_context_matches_the_definition(steps):
    rows, t = [], T0
    for i, (gap, systolic, diastolic) in enumerate(steps):
        t += gap
        rows.append((f"o{i}", t, float(systolic), float(diastolic)))
    context = apply(PatientStore(), rows).context
    for i, (_, effective, systolic, diastolic) in enumerate(rows):
        window = [row for row in rows[:i] if row[1] > effective - WINDOW_MS][-(MAX_READINGS - 1):]
        assert context.baseline_readings[i] == len(window)
        if len(window) >= 5:
            assert context.baseline_systolic[i] == pytest.approx(np.mean([r[2] for r in window]))
            assert context.baseline_diastolic[i] == pytest.approx(np.mean([r[3] for r in window]))
        else:
            assert math.isnan(context.baseline_systolic[i])
        values = [r[2] for r in window] + [systolic]
        assert context.home_average_systolic[i] == pytest.approx(np.mean(values))
        if window:
            assert context.arv_systolic[i] == pytest.approx(np.mean(np.abs(np.diff(values))))
        previous = rows[i - 1][1] if i else None
        assert (math.isnan(context.seconds_since_previous[i]) if previous is None
                else context.seconds_since_previous[i] == (effective - previous) // 1000)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12 * DAY), st.integers(80, 200)), min_size=1, max_size=140,
                unique_by=lambda row: row[0]))
def test_any_reading_in_any_order_gets_the_context_of_what_is_held_before_it(arrivals):
    """A reference model of the rules, reading by reading: what the state holds, and each
    reading's window within it."""
    store, held = PatientStore(), []   # held: (effective, systolic) in time order
    for i, (offset, systolic) in enumerate(arrivals):
        t = T0 + offset
        context = apply(store, [(f"o{i}", t, float(systolic), 70.0)]).context
        latest = held[-1][0] if held else None
        if latest is not None and (t <= latest - WINDOW_MS or (len(held) >= MAX_READINGS and t < held[0][0])):
            assert OUTCOMES[context.outcome[0]] == "too_old" and context.baseline_readings[0] == 0
            continue
        before = [row for row in held if row[0] < t]
        window = [row for row in before if row[0] > t - WINDOW_MS]
        assert OUTCOMES[context.outcome[0]] == ("new" if latest is None or t > latest else "late")
        assert context.baseline_readings[0] == len(window)
        values = [s for _, s in window] + [systolic]
        assert context.home_average_systolic[0] == pytest.approx(np.mean(values))
        assert (math.isnan(context.arv_systolic[0]) if not window
                else context.arv_systolic[0] == pytest.approx(np.mean(np.abs(np.diff(values)))))
        assert (math.isnan(context.seconds_since_previous[0]) if not before
                else context.seconds_since_previous[0] == (t - before[-1][0]) // 1000)
        held = sorted(held + [(t, systolic)])
        held = [row for row in held if row[0] > held[-1][0] - WINDOW_MS][-MAX_READINGS:]
        assert [(r[0], r[2] / 10) for r in store.state("p1").readings()] == held


# --------------------------------------------------------------------------- replays, updates, removals


def test_a_replay_gets_the_context_of_the_first_time_and_counts_once():
    store = PatientStore()
    rows = series(20, systolic=[100.0 + 3 * i for i in range(20)])
    first = apply(store, rows)
    held = store.encode("p1")
    apply(store, series(5, start=T0 + 20 * 4 * HOUR, systolic=180.0, prefix="after"))  # the past moves on
    replay = apply(store, rows[12:])
    assert outcomes(replay) == ["replayed"] * 8 and replay.changed == set() and replay.status_changes == []
    for name in ("baseline_systolic", "baseline_readings", "home_average_systolic", "arv_systolic",
                 "seconds_since_previous"):
        np.testing.assert_array_equal(getattr(replay.context, name), getattr(first.context, name)[12:])
    restored = PatientStore()
    restored.load("p1", held)
    again = apply(restored, rows[15:])
    np.testing.assert_array_equal(again.context.baseline_systolic, first.context.baseline_systolic[15:])
    assert restored.encode("p1") == held


def test_crash_restore_replay_gives_what_one_uninterrupted_run_gives():
    rows = series(40, every=2 * HOUR, systolic=[110.0 + (i * 13) % 30 for i in range(40)])
    uninterrupted = apply(PatientStore(), rows).context
    before_crash = PatientStore()
    apply(before_crash, rows[:25])       # applied and written to the changelog ...
    changelog = [(b"p1", before_crash.encode("p1"))]
    after = PatientStore()
    after.restore(changelog)
    resumed = apply(after, rows[18:]).context  # ... but committed only up to 18: 18-24 replayed
    for name in ("baseline_systolic", "home_average_systolic", "arv_systolic", "seconds_since_previous"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(uninterrupted, name)[18:])
    assert [OUTCOMES[c] for c in resumed.outcome[:7]] == ["replayed"] * 7


def test_amended_values_replace_the_reading():
    store = PatientStore()
    apply(store, series(6, systolic=120.0))
    result = apply(store, [("o2", T0 + 2 * 4 * HOUR, 150.0, 80.0, "amended")])
    assert outcomes(result) == ["replaced"] and result.changed == {"p1"}
    assert store.state("p1").count == 6 and store.state("p1").sum_systolic == 10 * (5 * 120 + 150)
    assert result.context.baseline_readings[0] == 2
    moved = apply(store, [("o2", T0 + 10 * 4 * HOUR, 130.0, 80.0, "corrected")])  # a new time, later than all
    assert outcomes(moved) == ["replaced"] and moved.context.baseline_readings[0] == 5
    assert T0 + 2 * 4 * HOUR not in [r[0] for r in store.state("p1").readings()]
    assert store.state("p1").count == 6 and store.state("p1").sum_systolic == 10 * (5 * 120 + 130)
    same = apply(store, [("o2", T0 + 10 * 4 * HOUR, 130.0, 80.0, "amended")])
    assert outcomes(same) == ["replayed"] and same.changed == set()


def test_entered_in_error_removes_the_reading_and_says_whether_it_was_known():
    store = PatientStore()
    apply(store, series(6, systolic=[120, 130, 140, 150, 160, 170]))
    result = apply(store, [("o3", T0, 0.0, 0.0, "entered-in-error"), ("nope", T0, 0.0, 0.0, "entered-in-error")])
    assert outcomes(result) == ["removed", "not_found"] and result.changed == {"p1"}
    assert math.isnan(result.context.home_average_systolic[0]) and result.context.home_average_readings[0] == 0
    state = store.state("p1")
    assert [r[2] for r in state.readings()] == [1200, 1300, 1400, 1600, 1700]
    assert state.steps == 100 + 100 + 200 + 100
    unknown = apply(store, [("x", T0, 0.0, 0.0, "entered-in-error")], patient="stranger")
    assert outcomes(unknown) == ["not_found"] and unknown.changed == set() and "stranger" not in store


def test_removing_every_reading_forgets_the_patient_with_a_tombstone():
    store = PatientStore()
    apply(store, series(2))
    result = apply(store, [("o0", T0, 0, 0, "entered-in-error"), ("o1", T0, 0, 0, "entered-in-error")])
    assert result.changed == {"p1"} and "p1" not in store and store.encode("p1") is None


# --------------------------------------------------------------------------- sustained hypertension


def test_sustained_hypertension_is_reported_when_it_starts_and_ends_only():
    store = PatientStore()
    high = apply(store, series(20, every=6 * HOUR, systolic=140.0, diastolic=80.0))
    assert [c.change for c in high.status_changes] == ["started"]
    started = high.status_changes[0]
    assert started.observation_id == "o11" and started.home_average_readings == 12
    assert started.home_average_systolic == 140.0 and started.home_average_diastolic == 80.0
    assert started.effective == started.episode_start == datetime(2025, 1, 3, 18, tzinfo=timezone.utc)
    assert started.status == "sustained_hypertension" and started.episode_start_ms == T0 + 11 * 6 * HOUR
    assert store.patients_in_sustained_hypertension == 1
    assert apply(store, series(3, start=T0 + 20 * 6 * HOUR, every=6 * HOUR, systolic=138.0,
                               prefix="more")).status_changes == []
    low = apply(store, series(30, start=T0 + 23 * 6 * HOUR, every=6 * HOUR, systolic=118.0, prefix="low"))
    assert [c.change for c in low.status_changes] == ["ended"]
    ended = low.status_changes[0]
    assert ended.episode_start == started.episode_start and ended.effective > ended.episode_start
    assert ended.home_average_systolic < 135 and store.patients_in_sustained_hypertension == 0


def test_diastolic_alone_and_too_few_readings():
    store = PatientStore()
    assert apply(store, series(11, systolic=125.0, diastolic=90.0)).status_changes == []
    assert [c.change for c in apply(store, series(1, start=T0 + 11 * 4 * HOUR, systolic=125.0, diastolic=90.0,
                                                  prefix="x")).status_changes] == ["started"]


def test_a_replay_of_the_reading_that_started_it_reports_the_same_change_again():
    store = PatientStore()
    rows = series(14, systolic=150.0)
    first = apply(store, rows).status_changes
    again = apply(store, rows[10:]).status_changes
    assert again == first and store.patients_in_sustained_hypertension == 1


def test_removing_readings_can_end_an_episode():
    store = PatientStore()
    apply(store, series(12, systolic=150.0))
    result = apply(store, [("o5", T0, 0, 0, "entered-in-error")])
    assert [c.change for c in result.status_changes] == ["ended"]
    assert result.status_changes[0].home_average_readings == 11


# --------------------------------------------------------------------------- memory bound


def test_at_most_max_readings_per_patient():
    store = PatientStore()
    result = apply(store, series(MAX_READINGS + 72, every=60_000))
    assert store.state("p1").count == MAX_READINGS
    assert result.context.baseline_readings.max() == MAX_READINGS - 1
    assert len(store.encode("p1")) == _HEADER.size + MAX_READINGS * 37
    late = apply(store, [("older", T0 + 10 * 60_000, 120.0, 80.0)])  # older than the oldest of a full window
    assert outcomes(late) == ["too_old"] and store.state("p1").count == MAX_READINGS


def test_seven_days_at_most_per_patient():
    store = PatientStore()
    apply(store, series(200, every=4 * HOUR))
    held = store.state("p1").readings()
    assert len(held) == 42 and held[-1][0] - held[0][0] == 41 * 4 * HOUR


# --------------------------------------------------------------------------- changelog codec


def _fields(state) -> tuple:
    return (bytes(state.records), state.count, state.sum_systolic, state.sum_diastolic, state.steps,
            state.first_effective, state.last_effective, state.last_systolic, state.in_episode,
            state.episode_start, state.last_change)


def test_encode_decode_round_trip():
    store = PatientStore()
    apply(store, series(30, systolic=[140.0 + (i % 7) for i in range(30)]))
    state = store.state("p1")
    value = encode_state(state)
    assert value[0] == 1 and len(value) == _HEADER.size + 30 * 37
    assert _fields(decode_state(value)) == _fields(state)
    assert decode_state(value).in_episode and state.last_change is not None


def test_decode_refuses_other_versions_and_damaged_values():
    value = bytearray(encode_state(_one_patient_state()))
    value[0] = 2
    with pytest.raises(StateFormatError, match="version 2"):
        decode_state(bytes(value))
    with pytest.raises(StateFormatError, match="inconsistent"):
        decode_state(encode_state(_one_patient_state())[:-5])
    with pytest.raises(StateFormatError):
        decode_state(b"")


def _one_patient_state():
    store = PatientStore()
    apply(store, series(3))
    return store.state("p1")


def test_load_none_forgets_and_restore_takes_the_last_value_per_key():
    source = PatientStore()
    apply(source, series(13, systolic=150.0), patient="a")
    apply(source, series(3), patient="b")
    store = PatientStore()
    read = store.restore([(b"a", source.encode("a")), ("b", source.encode("b")), (b"c", source.encode("b")),
                          (b"c", None), (b"b", source.encode("a"))])
    assert read == 5 and set(store._patients) == {"a", "b"}
    assert store.state("b").count == 13 and store.patients_in_sustained_hypertension == 2
    store.load("a", None)
    assert "a" not in store and store.patients_in_sustained_hypertension == 1
    store.load("b", source.encode("b"))
    assert store.patients_in_sustained_hypertension == 0


# --------------------------------------------------------------------------- readings API


def test_apply_takes_readings():
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    readings = [Reading(f"o{i}", "p1", start + timedelta(hours=4 * i), 120.0 + i, 80.0) for i in range(6)]
    by_readings = PatientStore().apply(readings).context
    by_columns = apply(PatientStore(), series(6, systolic=[120.0 + i for i in range(6)])).context
    np.testing.assert_array_equal(by_readings.home_average_systolic, by_columns.home_average_systolic)
    assert by_readings.baseline_systolic[5] == pytest.approx(122.0)


def test_an_empty_batch():
    result = PatientStore().apply([])
    assert len(result.context) == 0 and result.changed == set() and result.status_changes == []
