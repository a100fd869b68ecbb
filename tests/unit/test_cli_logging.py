"""The CLI's logging: kafka-python's slow-task warning is dropped unless ``--verbose``,
every other warning of its network code still shows."""

from __future__ import annotations

import logging

from bp_core.cli import configure_logging

SLOW_TASK = ("Task <kafka.net.selector.Task object at 0x7f9bc61bbfd0> ran for 0.127s (>0.100s threshold). "
             "It is blocking the event loop -- likely a tight sync loop inside a coroutine. "
             "Other pollers will time out.")


def emitted(caplog, verbose: bool) -> list[str]:
    configure_logging(verbose)
    caplog.clear()
    selector = logging.getLogger("kafka.net.selector")
    selector.warning(SLOW_TASK)
    selector.warning("Task %s left RUNNING after step; demoting to UNSCHEDULED", "<task>")
    return [record.getMessage() for record in caplog.records if record.name == "kafka.net.selector"]


def test_the_slow_task_warning_is_dropped_and_other_warnings_are_not(caplog):
    assert emitted(caplog, verbose=False) == ["Task <task> left RUNNING after step; demoting to UNSCHEDULED"]


def test_verbose_shows_the_slow_task_warning_again(caplog):
    emitted(caplog, verbose=False)
    assert SLOW_TASK in emitted(caplog, verbose=True)
    configure_logging(False)
