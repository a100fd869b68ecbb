"""bp_core.simulation.stream without a broker: the stream's clock (never a reading dated
after it is sent) and the blocks that say which patients a block introduces."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bp_core.errors import UsageError
from bp_core.settings import Settings
from bp_core.simulation.stream import DEFAULT_HISTORY, iter_blocks, produce, stream_cohort

NOW = datetime(2026, 3, 2, 15, 30, 12, 345678, tzinfo=timezone.utc)
NOW_S = NOW.replace(microsecond=0)


def _times_ms(cohort, n):
    return cohort.readings_table(n).column("effective").cast("int64").to_numpy()


def test_count_without_rate_ends_at_now():
    cohort = stream_cohort(patients=200, seed=1, rate=None, count=3000, now=NOW)
    times = _times_ms(cohort, 3000)
    assert cohort.interval == timedelta(hours=4)
    assert times.max() < NOW_S.timestamp() * 1000, "nothing in the future"
    assert times.max() > (NOW_S - timedelta(hours=4)).timestamp() * 1000, "the last slot ends now"
    assert cohort.start == NOW_S - 15 * timedelta(hours=4)


def test_rate_stamps_each_reading_before_it_is_due():
    rate, patients = 500.0, 100
    cohort = stream_cohort(patients=patients, seed=1, rate=rate, now=NOW)
    n = 20_000
    times_s = _times_ms(cohort, n) / 1000
    due_s = NOW_S.timestamp() + np.arange(n) / rate        # when the schedule sends reading i
    lag = due_s - times_s
    assert (lag > 0).all(), "stamped before it is sent"
    assert lag.max() <= 2 * patients / rate + 1e-9, "near the wall clock"


def test_endless_without_rate_starts_a_week_ago():
    cohort = stream_cohort(patients=10, seed=1, rate=None, now=NOW)
    assert cohort.start == NOW_S - DEFAULT_HISTORY


def test_explicit_start_and_scenario_are_kept():
    start = datetime(2030, 1, 1, tzinfo=timezone.utc)
    cohort = stream_cohort(patients=10, seed=1, rate=None, count=50, start=start, scenario="cuff-offset", now=NOW)
    assert cohort.start == start and cohort.scenario == "cuff-offset"


@pytest.mark.parametrize("first", [0, 7])
def test_blocks_introduce_each_patient_once_before_its_first_reading(first):
    cohort = stream_cohort(patients=23, seed=2, rate=None, count=100, now=NOW)
    introduced: list[int] = []
    for block in iter_blocks(cohort, first=first, limit=100, block_size=10):
        introduced.extend(block.new_patients)
        keys = {key.decode() for key, _ in block.messages}
        known = {cohort.patient_ids[p] for p in introduced}
        assert keys <= known, "a block's readings are of patients introduced by then"
        assert len(block.effective_ms) == len(block.messages)
    assert sorted(introduced) == list(range(23))


def test_bad_scenario_is_a_usage_error_before_any_connection():
    with pytest.raises(UsageError, match="unknown scenario 'moon'"):
        produce(Settings(kafka_bootstrap="127.0.0.1:1"), count=5, scenario="moon")
