"""``bp produce`` errors: one line on stderr, the right exit status, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bp_core.cli import main

BP = str(Path(sys.executable).with_name("bp"))


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv", [["--count", "-1"], ["--rate", "0"], ["--frobnicate"], ["--duration", "x"],
                                  ["--scenario", "moon"]])
def test_bad_arguments_in_process(capsys, argv):
    assert _exit_code(["produce", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_scenario_is_one_line_listing_the_valid_ones():
    done = subprocess.run([BP, "produce", "--scenario", "moon"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "--scenario" in line and all(name in line for name in ("baseline", "cuff-offset", "older-cohort"))


def test_bad_argument_subprocess():
    done = subprocess.run([BP, "produce", "--rate", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--rate" in done.stderr


def test_unreachable_broker_fails_fast_with_one_line():
    env = {**os.environ, "BP_KAFKA_BOOTSTRAP": "127.0.0.1:1", "BP_TOPIC": "bp-unreachable-test"}
    done = subprocess.run([BP, "produce", "--count", "5"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Kafka at 127.0.0.1:1" in lines[0]
