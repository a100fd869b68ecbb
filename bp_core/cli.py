"""The ``bp`` command: one sub-command per module in ``bp_core.commands``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args, settings) -> int``. Command modules stay light to import; heavy imports
(Kafka, MLflow, scikit-learn) happen inside ``run``.

Errors never surface as tracebacks: a usage error is one line on stderr and exit 2, a
``BPError`` one line and exit 1 (set ``BP_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bp_core import __version__
from bp_core.errors import BPError, UsageError
from bp_core.settings import Settings

# name -> module under bp_core.commands
COMMANDS = {
    "setup": "setup",
    "produce": "produce",
    "consume": "consume",
    "classify": "classify",
    "generate": "generate",
    "train": "train",
    "promote": "promote",
    "dlq": "dlq",
    "drift": "drift",
}


# Packages of the ``airflow`` extra (pyproject.toml): absent from the slim consumer image.
_AIRFLOW_EXTRA = {"airflow", "mlflow", "faker", "pyarrow", "matplotlib"}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="bp", description="bp-monitor: real-time blood-pressure surveillance on FHIR.")
    parser.add_argument("--version", action="version", version=f"bp-monitor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"bp_core.commands.{module_name}")
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "elastic_transport", "urllib3", "mlflow", "alembic", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    selector = logging.getLogger("kafka.net.selector")
    if verbose:
        selector.removeFilter(_drop_slow_task_warnings)
    else:
        selector.addFilter(_drop_slow_task_warnings)


def _drop_slow_task_warnings(record: logging.LogRecord) -> bool:
    """False for kafka-python's "Task ... ran for 0.13s (>0.100s threshold). It is blocking
    the event loop" warning, a diagnostic for kafka-python's own developers: one step of its
    network thread took over 0.1 s (seen here now and then, at start-up and under load).
    That delays its other work by a fraction of a second against timeouts of seconds
    (kafka-python's defaults: a heartbeat every 3 s, a 45 s session), so it says nothing an
    operator can act on; ``--verbose`` shows it."""
    return not (record.levelno == logging.WARNING and "threshold). It is blocking the event loop" in record.getMessage())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args.verbose)
    try:
        settings = Settings.from_env()
        return int(args._run(args, settings) or 0)
    except UsageError as exc:
        print(f"bp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BPError as exc:
        if os.environ.get("BP_DEBUG"):
            raise
        print(f"bp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in _AIRFLOW_EXTRA:
            # The consumer image holds what `bp consume` needs, not the tools around it.
            print(f"bp {args.command}: error: needs the {exc.name.split('.')[0]} package: "
                  f"install bp-monitor[airflow] (pip install -c requirements.lock '.[airflow]')", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print(f"bp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly, as Unix tools do.
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            return 0


if __name__ == "__main__":
    sys.exit(main())
