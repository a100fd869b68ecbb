"""`bp consume`, `bp setup` and `bp dlq` argument errors: one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import pytest

from bp_core.cli import main


@pytest.mark.parametrize("argv, fragment", [
    (["consume", "--batch-size", "-3"], "--batch-size: must be positive, got -3"),
    (["consume", "--exit-when-idle", "soon"], "--exit-when-idle: not a number: 'soon'"),
    (["consume", "--metrics-port", "0"], "--metrics-port: must be positive"),
    (["consume", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["setup", "--partitions", "zero"], "--partitions: invalid int value"),
    (["dlq"], "the following arguments are required: ACTION"),
    (["dlq", "undo"], "invalid choice: 'undo'"),
    (["dlq", "show", "--limit", "0"], "--limit: must be positive, got 0"),
    (["dlq", "replay", "--stage", "store"], "--stage: invalid choice: 'store'"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_setup_rejects_zero_partitions(capsys):
    assert main(["setup", "--partitions", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "bp setup: error: --partitions must be at least 1, got 0\n"
