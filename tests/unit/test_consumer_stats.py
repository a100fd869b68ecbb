"""The consumer's one-line totals: the rate counts from the first batch, and the summary
at exit stops counting at the last batch written, so an idle wait before exiting (the
``--exit-when-idle`` seconds) does not show as a slower consumer."""

from __future__ import annotations

from bp_core.consumer.stats import ConsumerStats


def rate(line: str) -> float:
    return float(line.split("rate=")[1].split("/s")[0])


def test_the_rate_counts_from_the_first_batch_until_the_given_time():
    stats = ConsumerStats(messages=100_000, started=1000.0, first_batch_at=1056.0, last_batch_at=1058.0)
    assert rate(stats.line(until=stats.last_batch_at)) == 50_000
    assert rate(stats.line(until=1060.0)) == 25_000  # the 2 idle seconds after it count


def test_before_any_batch_the_rate_counts_from_start_up():
    stats = ConsumerStats(started=1000.0)
    assert rate(stats.line(until=1010.0)) == 0
    assert "messages=0 " in stats.line(until=1010.0)


def test_the_times_line_names_every_stage():
    line = ConsumerStats(poll_s=1.5, index_s=0.25).times()
    assert "poll=1.50s" in line and "elasticsearch=0.25s" in line and "dlq=0.00s" in line
