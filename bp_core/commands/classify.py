"""``bp classify FILE...``: validate FHIR BP Observations and print their categories.

One JSON object per line and per Observation found (an Observation, a Bundle or NDJSON
per file; ``-`` reads standard input)::

    {"id": ..., "patient": ..., "effective": ISO 8601, "systolic": ..., "diastolic": ...,
     "category": ..., "rule_anomaly": bool, "anomaly_types": [...], "source": FILE}

and, for a rejected resource or file, ``{"id": ... (when known), "source": FILE,
"error": reason}``. Exit status 0 when everything parsed, 1 when anything was rejected,
2 when a file cannot be read (nothing is printed then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover - typing only; run() does the real imports
    from bp_core.reading import Reading
    from bp_core.rules import Thresholds

HELP = "validate FHIR blood-pressure Observations (files or '-') and print their AHA category and anomaly flags"

STDIN = "-"
STDIN_SOURCE = "<stdin>"

# Takes the valid readings of one file, returns P(anomaly) for each, in order.
Scorer = Callable[[Sequence["Reading"]], Sequence[float]]


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="a FHIR Observation, Bundle or NDJSON file; '-' for standard input")
    parser.add_argument("--no-model", action="store_true",
                        help="rules only: do not look for a promoted model (BP_MODEL_PATH or the MLflow champion)")


def run(args, settings) -> int:
    import sys

    import orjson

    from bp_core.rules import Thresholds

    thresholds = Thresholds.from_settings(settings)
    # Read everything first: an unreadable file is a usage error before any output.
    payloads = [(_source_name(name), _read(name)) for name in args.files]
    scorer = None if args.no_model else served_model_scorer(settings)
    rejected = False
    out = sys.stdout
    for source, payload in payloads:
        for record in classify_payload(payload, source, thresholds, scorer=scorer):
            rejected = rejected or "error" in record
            out.write(orjson.dumps(record).decode())
            out.write("\n")
    out.flush()
    return 1 if rejected else 0


def served_model_scorer(settings) -> "Scorer | None":
    """A scorer from the model the consumer would serve, or None when there is none.

    A local SQLite store that does not exist yet means no model: it is not created just
    to find that out.
    """
    from pathlib import Path

    uri = settings.mlflow_tracking_uri
    if settings.model_path is None and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None
    import numpy as np

    from bp_core.features import feature_matrix
    from bp_core.model.serving import ModelProvider

    provider = ModelProvider(settings)
    provider.start()
    model = provider.current
    if model is None:
        return None

    def score(readings):
        systolic = np.array([r.systolic_mm_hg for r in readings], dtype=np.float64)
        diastolic = np.array([r.diastolic_mm_hg for r in readings], dtype=np.float64)
        return model.predict_proba(feature_matrix(systolic, diastolic)).tolist()

    return score


def classify_payload(payload: bytes, source: str, thresholds: "Thresholds",
                     scorer: Scorer | None = None) -> list[dict]:
    """The output records of one file's content, in document order.

    Args:
        payload: the file's bytes (an Observation, a Bundle or NDJSON).
        source: the name shown in each record's ``source``.
        thresholds: the clinical anomaly thresholds.
        scorer: optional model hook; when given, each valid record also gets
            ``model_probability`` (P(anomaly) from the model).
    Returns:
        One dict per Observation (or per rejected payload), ready for JSON.
    """
    from bp_core.fhir.parse import parse_payload
    from bp_core.reading import Reading
    from bp_core.rules import anomaly_types, category

    results = parse_payload(payload)
    readings = [result for result in results if isinstance(result, Reading)]
    probabilities = iter(scorer(readings)) if scorer is not None and readings else None
    records = []
    for result in results:
        if not isinstance(result, Reading):
            record = {"id": result.observation_id} if result.observation_id else {}
            record.update(source=source, error=result.reason)
            records.append(record)
            continue
        systolic, diastolic = result.systolic_mm_hg, result.diastolic_mm_hg
        types = anomaly_types(systolic, diastolic, thresholds)
        record = {
            "id": result.observation_id,
            "patient": result.patient_id,
            "effective": result.effective.isoformat(),
            "systolic": _number(systolic),
            "diastolic": _number(diastolic),
            "category": category(systolic, diastolic),
            "rule_anomaly": bool(types),
            "anomaly_types": types,
            "source": source,
        }
        if probabilities is not None:
            record["model_probability"] = float(next(probabilities))
        records.append(record)
    return records


def _source_name(name: str) -> str:
    return STDIN_SOURCE if name == STDIN else name


def _read(name: str) -> bytes:
    """The bytes of a file, or of standard input for ``-``.

    Raises:
        UsageError: the file cannot be read (missing, a directory, no permission).
    """
    import sys

    from bp_core.errors import UsageError

    if name == STDIN:
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from exc


def _number(value: float) -> int | float:
    """Whole mmHg as a JSON integer (107, not 107.0); decimals kept."""
    return int(value) if value.is_integer() else value
