"""``bp classify FILE...``: validate FHIR BP Observations and print their categories.

One JSON object per line and per Observation found (an Observation, a Bundle or NDJSON
per file; ``-`` reads standard input)::

    {"id": ..., "patient": ..., "effective": ISO 8601, "systolic": ..., "diastolic": ...,
     "category": ..., "anomaly": bool, "detected_by": [...], "rule_anomaly": bool,
     "anomaly_types": [...], "source": FILE}

(plus ``model_probability`` and ``model_version`` when a model is served; an
``entered-in-error`` Observation prints ``status`` and the key of the reading it
``retracts``) and, for a rejected resource or file, ``{"id": ... (when known), "source": FILE,
"error": reason}``. Exit status 0 when everything parsed, 1 when anything was rejected,
2 when a file cannot be read (nothing is printed then). The answer is the consumer's:
both score through ``bp_core.scoring``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only; run() does the real imports
    from bp_core.rules import Thresholds

HELP = "validate FHIR blood-pressure Observations (files or '-') and print their AHA category and anomaly flags"

STDIN = "-"
STDIN_SOURCE = "<stdin>"


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
    model = None if args.no_model else served_model(settings)
    rejected = False
    out = sys.stdout
    for source, payload in payloads:
        for record in classify_payload(payload, source, thresholds, model, settings.model_threshold):
            rejected = rejected or "error" in record
            out.write(orjson.dumps(record).decode())
            out.write("\n")
    out.flush()
    return 1 if rejected else 0


def served_model(settings):
    """The model the consumer would serve (``bp_core.model.serving.ServedModel``), or None.

    A local SQLite store that does not exist yet means no model: it is not created just
    to find that out.
    """
    from pathlib import Path

    from bp_core.model.serving import ModelProvider

    uri = settings.mlflow_tracking_uri
    if settings.model_path is None and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return None
    provider = ModelProvider(settings)
    provider.start()
    return provider.current


def classify_payload(payload: bytes, source: str, thresholds: "Thresholds", model=None,
                     model_threshold: float = 0.5) -> list[dict]:
    """The output records of one file's content, in document order, scored as the
    consumer scores a batch (``bp_core.scoring.score_readings``).

    Args:
        payload: the file's bytes (an Observation, a Bundle or NDJSON).
        source: the name shown in each record's ``source``.
        thresholds: the clinical anomaly thresholds.
        model: the served model, or None (rules only).
        model_threshold: probability at or above which the model flags an anomaly.
    Returns:
        One dict per Observation (or per rejected payload), ready for JSON.
    """
    from bp_core.fhir.ids import reading_key
    from bp_core.fhir.parse import parse_payload
    from bp_core.reading import Reading
    from bp_core.scoring import DETECTED_BY, score_readings

    results = parse_payload(payload)
    scored = score_readings([r for r in results if isinstance(r, Reading) and not r.retracts], thresholds, model,
                            model_threshold)
    scores = iter(range(len(scored)))
    records = []
    for result in results:
        if not isinstance(result, Reading):
            record = {"id": result.observation_id} if result.observation_id else {}
            record.update(source=source, error=result.reason)
            records.append(record)
            continue
        if result.retracts:  # withdraws an earlier reading: nothing to score
            records.append({"id": result.observation_id, "patient": result.patient_id, "status": result.status,
                            "retracts": reading_key(result), "source": source})
            continue
        i = next(scores)
        rule_hit, model_hit = scored.rule_anomaly[i], scored.model_anomaly[i]
        record = {
            "id": result.observation_id,
            "patient": result.patient_id,
            "effective": result.effective.isoformat(),
            "systolic": _number(result.systolic_mm_hg),
            "diastolic": _number(result.diastolic_mm_hg),
            "category": scored.categories[i],
            "anomaly": rule_hit or model_hit,
            "detected_by": list(DETECTED_BY[rule_hit + 2 * model_hit]),
            "rule_anomaly": rule_hit,
            "anomaly_types": list(scored.anomaly_types[i]),
            "source": source,
        }
        if model is not None:
            record.update(model_probability=scored.model_probability[i], model_version=model.version)
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
