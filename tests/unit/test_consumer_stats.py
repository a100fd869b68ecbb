"""The consumer's one-line totals: the rate counts from the first batch, and the summary
at exit stops counting at the last batch written, so an idle wait before exiting (the
``--exit-when-idle`` seconds) does not show as a slower consumer."""

from __future__ import annotations

import time

from bp_core.consumer.service import ConsumerStats


def rate(line: str) -> float:
    return float(line.split("rate=")[1].split("/s")[0])


def test_the_rate_counts_from_the_first_batch_until_the_given_time():
    now = time.monotonic()
    stats = ConsumerStats(messages=100_000, started=now - 60, first_batch_at=now - 4.0, last_batch_at=now - 2.0)
    assert rate(stats.line(until=stats.last_batch_at)) == 50_000
    assert 10_000 < rate(stats.line()) <= 25_000  # until now: the 2 idle seconds (and more) count


def test_before_any_batch_the_rate_counts_from_start_up():
    stats = ConsumerStats(started=time.monotonic() - 10)
    assert rate(stats.line()) == 0
    assert "messages=0 " in stats.line(until=None)
