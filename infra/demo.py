"""The Python half of ``make demo`` (``infra/demo.sh`` drives it step by step).

``python infra/demo.py COMMAND`` with one command per step the shell script cannot do
well by itself:

    services          exit 0 when Kafka and Elasticsearch answer at the configured addresses
    models            print the 'champion' and 'challenger' versions
    ready             wait until the consumer serves the champion and shadows the challenger
    malformed         send a handful of deliberately malformed messages (they end in the DLQ)
    scrape            save the consumer's Prometheus counters to a JSON file
    wait              wait until the consumer group has committed the topic's end offsets
    evidence          wait until MLflow holds the shadow evidence the consumer gathered
    fresh-data        simulate a labelled data set of a world, ending now (--drift)
    summary           gather what Elasticsearch, the archive, the DLQ, the alerts topic,
                      MLflow and the consumer's metrics hold, and print the summary

The summary is computed and formatted by the pure functions of ``demo_summary.py``; the
``gather_*`` and ``wait_*`` functions here only read the services. Every error is one line on
stderr with exit status 1 (``BP_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from bp_core.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_summary import (  # noqa: E402  (beside this file)
    CONTEXT_TYPES, MODEL_METRICS, THRESHOLD_TYPES, build_summary, format_summary, lag_by_partition, model_state,
    parse_prometheus, prometheus_samples, serving_version, shadow_readings, tally_alerts, throughput, version_label,
)


class DemoError(Exception):
    """A demo step failed; the message is the one line the user sees."""


def _es(settings: Settings):
    from bp_core.clients import elasticsearch

    return elasticsearch(settings)


def services_up(settings: Settings) -> list[str]:
    """The services that do NOT answer (empty when both do)."""
    import socket

    missing = []
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            pass
    except OSError:
        missing.append(f"Kafka ({settings.kafka_bootstrap})")
    try:
        with urllib.request.urlopen(f"{settings.es_url.rstrip('/')}/_cluster/health", timeout=3):
            pass
    except Exception:
        missing.append(f"Elasticsearch ({settings.es_url})")
    return missing


def malformed_messages() -> list[tuple[bytes, bytes]]:
    """(key, value) pairs the consumer must reject, each for a different reason."""
    component = lambda code, value: {  # noqa: E731
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "valueQuantity": {"value": value, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
    observation = {
        "resourceType": "Observation", "id": "demo-missing-diastolic", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/demo-1"}, "effectiveDateTime": "2026-03-01T08:30:00+00:00",
        "component": [component("8480-6", 128)],
    }
    impossible = dict(observation, id="demo-impossible",
                      component=[component("8480-6", 80), component("8462-4", 95)])
    patient = {"resourceType": "Patient", "id": "demo-1", "birthDate": "1960-01-01"}
    return [
        (b"demo-1", b"this is not JSON {"),
        (b"demo-1", json.dumps(patient).encode()),
        (b"demo-1", json.dumps(observation).encode()),
        (b"demo-1", json.dumps(impossible).encode()),
    ]


def send_malformed(settings: Settings) -> int:
    from bp_core.clients import kafka_producer

    producer = kafka_producer(settings, "bp-demo", acks="all", linger_ms=5)
    try:
        futures = [producer.send(settings.topic, key=k, value=v) for k, v in malformed_messages()]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)
    return len(futures)


def scrape_text(port: int, host: str = "127.0.0.1") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    return parse_prometheus(scrape_text(port, host))


def _offsets(settings: Settings, topic: str):
    """(beginning, end) offsets by partition of a topic."""
    from kafka import TopicPartition

    from bp_core.clients import kafka_consumer

    consumer = kafka_consumer(settings, "bp-demo")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise DemoError(f"topic {topic} does not exist")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        return {tp.partition: o for tp, o in begin.items()}, {tp.partition: o for tp, o in end.items()}
    finally:
        consumer.close()


def _committed(admin, settings: Settings) -> dict[int, int | None]:
    offsets = admin.list_group_offsets({settings.consumer_group: None}).get(settings.consumer_group) or {}
    return {tp.partition: (om.offset if om.offset >= 0 else None)
            for tp, om in offsets.items() if tp.topic == settings.topic}


def wait_caught_up(settings: Settings, *, timeout: float, consumer_pid: int | None, consumer_log: str) -> float:
    """Wait until the group's committed offsets reach the topic's end offsets; returns the seconds waited."""
    from bp_core.clients import kafka_admin

    started = time.monotonic()
    beginning, end = _offsets(settings, settings.topic)
    admin = kafka_admin(settings, "bp-demo")
    try:
        while True:
            lag = lag_by_partition(end, _committed(admin, settings), beginning)
            if not any(lag.values()):
                return time.monotonic() - started
            if consumer_pid and not _alive(consumer_pid):
                raise DemoError(f"the consumer (pid {consumer_pid}) exited; see {consumer_log}")
            if time.monotonic() - started > timeout:
                raise DemoError(f"the consumer has not processed {sum(lag.values())} messages after "
                                f"{timeout:.0f} s; see {consumer_log}")
            time.sleep(0.5)
    finally:
        admin.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather_elasticsearch(settings: Settings) -> dict:
    """The topic's anomalies: by category, layer and type; the context; Kibana's time range."""
    from bp_core.kibana import DEFAULT_TIME_FROM, DEFAULT_TIME_TO, TIME_FIELD

    time_range = {"from": DEFAULT_TIME_FROM, "to": DEFAULT_TIME_TO}
    es = _es(settings)
    try:
        if not es.indices.exists(index=settings.es_index):
            return {"anomaly_total": 0, "anomaly_categories": {}, "anomaly_layers": {}, "anomaly_types": {},
                    "context": {}, "time_range": {**time_range, "in_range": 0}}
        es.indices.refresh(index=settings.es_index)
        body = es.search(index=settings.es_index, size=0, track_total_hits=True,
                         query={"term": {"source.topic": settings.topic}},
                         aggs={"category": {"terms": {"field": "category", "size": 20}},
                               "layer": {"terms": {"field": "detected_by", "size": 5}},
                               "type": {"terms": {"field": "anomaly_types", "size": 20}},
                               "with_baseline": {"filter": {"range": {"baseline_readings": {"gte": 1}}}},
                               "context_only": {"filter": {"bool": {
                                   "filter": [{"terms": {"anomaly_types": list(CONTEXT_TYPES)}}],
                                   "must_not": [{"terms": {"anomaly_types": list(THRESHOLD_TYPES)}}]}}},
                               # the dashboard's saved range, as Kibana queries it
                               "in_range": {"filter": {"range": {TIME_FIELD: {"gte": DEFAULT_TIME_FROM,
                                                                              "lte": DEFAULT_TIME_TO}}}},
                               "oldest": {"min": {"field": TIME_FIELD}},
                               "newest": {"max": {"field": TIME_FIELD}}})
    finally:
        es.close()
    aggs = body["aggregations"]
    return {
        "anomaly_total": int(body["hits"]["total"]["value"]),
        "anomaly_categories": {b["key"]: int(b["doc_count"]) for b in aggs["category"]["buckets"]},
        "anomaly_layers": {b["key"]: int(b["doc_count"]) for b in aggs["layer"]["buckets"]},
        "anomaly_types": {b["key"]: int(b["doc_count"]) for b in aggs["type"]["buckets"]},
        "context": {"with_baseline": int(aggs["with_baseline"]["doc_count"]),
                    "context_only": int(aggs["context_only"]["doc_count"])},
        "time_range": {**time_range, "in_range": int(aggs["in_range"]["doc_count"]),
                       "oldest": aggs["oldest"].get("value_as_string"),
                       "newest": aggs["newest"].get("value_as_string")},
    }


def gather_alerts(settings: Settings) -> dict:
    """``tally_alerts`` of the alerts topic, read to its end (empty when it does not exist)."""
    from bp_core.dead_letters.reader import TopicMissing, group_less_consumer, read_range, topic_partitions

    if not settings.alerts_topic:
        return {}
    consumer = group_less_consumer(settings.kafka_bootstrap, "bp-demo-alerts")
    try:
        try:
            partitions = topic_partitions(consumer, settings.alerts_topic, timeout_s=5)
        except TopicMissing:
            return {"alerts": {**tally_alerts([]), "topic": settings.alerts_topic}}
        consumer.assign(partitions)
        starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        tally = tally_alerts((r.key, r.value) for r in read_range(consumer, starts, ends, timeout_s=60))
    except TimeoutError as exc:
        raise DemoError(f"could not read {settings.alerts_topic} to its end: {exc}") from exc
    finally:
        consumer.close()
    return {"alerts": {**tally, "topic": settings.alerts_topic}}


def gather_archive(settings: Settings) -> dict:
    from bp_core.sinks.archive import read_archive

    categories: dict[str, int] = {}
    for record in read_archive(settings.archive_dir, settings.topic):
        category = record.get("category", "unknown")
        categories[category] = categories.get(category, 0) + 1
    return {"normal_categories": categories}


def gather_dlq(settings: Settings) -> dict:
    """Records of ``<topic>.dlq`` that came from the topic, and the first one's reason."""
    from bp_core.dead_letters.reader import TopicMissing, read_dead_letters

    count, first_reason = 0, None
    try:
        for letter in read_dead_letters(settings.kafka_bootstrap, settings.dlq_topic, timeout_s=60):
            if (letter.source_topic or settings.topic) != settings.topic:
                continue
            count += 1
            if first_reason is None:
                first_reason = letter.reason or None
    except TopicMissing:
        pass
    except TimeoutError as exc:
        raise DemoError(f"could not read {settings.dlq_topic} to its end: {exc}") from exc
    return {"dlq": {"count": count, "first_reason": first_reason}}


def gather_models(settings: Settings, challenger_version: str | None) -> dict:
    from bp_core.model.registry import client_for, get_alias_version, get_version_tags

    client = client_for(settings.mlflow_tracking_uri)
    facts: dict = {"champion": None, "challenger": None}
    champion = get_alias_version(client, settings.model_name, "champion")
    if champion:
        run_id = client.get_model_version(settings.model_name, champion).run_id
        metrics = client.get_run(run_id).data.metrics if run_id else {}
        facts["champion"] = {
            "name": settings.model_name, "version": champion, "run_id": run_id,
            "metrics": {k: metrics.get(k) for k in MODEL_METRICS},
            "rules_metrics": {k: metrics.get(f"rules_{k}") for k in MODEL_METRICS},
        }
    if challenger_version:
        facts["challenger"] = decision_of(get_version_tags(client, settings.model_name, challenger_version),
                                          challenger_version)
    return facts


def decision_of(tags: dict, version: str) -> dict:
    """What the gate decided about ``version``, from its ``promotion.*`` tags."""
    decision = {"version": version, "decision": tags.get("promotion.decision"), "reason": tags.get("promotion.reason")}
    try:
        record = json.loads(tags.get("promotion.record") or "{}")
    except ValueError:
        record = {}
    if record:
        decision.update({"champion_version": record.get("champion_version"), "evidence": record.get("evidence"),
                         "min_shadow_readings": (record.get("parameters") or {}).get("min_shadow_readings"),
                         "holdout_scenario": record.get("holdout_scenario")})
    return decision


def current_models(settings: Settings) -> tuple[str | None, str | None]:
    """(champion, challenger) versions in the registry."""
    from bp_core.model.registry import CHALLENGER, CHAMPION, client_for, get_alias_version

    client = client_for(settings.mlflow_tracking_uri)
    return (get_alias_version(client, settings.model_name, CHAMPION),
            get_alias_version(client, settings.model_name, CHALLENGER))


def wait_ready(settings: Settings, *, port: int, log_path: str, champion: str | None, challenger: str | None,
               timeout: float) -> float:
    """Wait until the consumer serves ``champion`` (None: the rules) and, when ``challenger``
    differs, scores it in shadow: the readings streamed next are judged by those two.

    Returns the seconds waited.
    """
    started = time.monotonic()
    shadowed = challenger if challenger and challenger != champion else None
    while True:
        try:
            serving = serving_version(prometheus_samples(scrape_text(port)))
        except OSError:
            serving = "?"
        try:
            with open(log_path, errors="replace") as log:
                shadow = model_state(log, settings.model_name)
        except OSError:
            shadow = None
        if serving == champion and (shadowed is None or shadow == shadowed):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise DemoError(f"after {timeout:.0f} s the consumer serves {version_label(serving)} and shadows "
                            f"{version_label(shadow)}, not {version_label(champion)} and {version_label(shadowed)}; see {log_path}")
        time.sleep(0.5)


def wait_evidence(settings: Settings, *, port: int, challenger: str, champion: str | None, timeout: float) -> int:
    """Wait until MLflow holds the shadow evidence the consumer gathered for ``challenger``
    beside ``champion`` (it publishes every 30 s), up to what the gate needs.

    Returns the readings published.
    """
    from bp_core.model.registry import client_for
    from bp_core.model.shadow import read_evidence

    client = client_for(settings.mlflow_tracking_uri)
    scored = shadow_readings(prometheus_samples(scrape_text(port)), challenger, champion)
    target = min(scored, settings.gate_min_shadow_readings)
    started = time.monotonic()
    while True:
        published = read_evidence(client, settings.model_name, challenger, champion).readings
        if published >= target:
            return published
        if time.monotonic() - started > timeout:
            raise DemoError(f"the consumer scored {scored:,} readings with v{challenger} in shadow, but after "
                            f"{timeout:.0f} s MLflow holds {published:,} of them")
        time.sleep(1.0)


def fresh_data(settings: Settings, *, scenario: str, patients: int, readings: int) -> Path:
    """A labelled data set of the world ``scenario``, ending now: what a drift-triggered
    ``bp_train_model`` simulates (same generator, seed rule and folder naming)."""
    from datetime import datetime, timezone

    from bp_core.simulation.datasets import generate_dataset

    when = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    out_dir = settings.data_dir / "training" / f"{when:%Y-%m-%dT%H%M}-drift"
    return Path(generate_dataset(out_dir, patients=patients, readings=readings,
                                 seed=int(f"{when:%Y%m%d%H%M}") % 2**31, end=when, scenario=scenario))


def drift_facts(settings: Settings, args) -> dict | None:
    """The ``--drift`` part's facts: the files demo.sh left, and the drift challenger's decision."""
    if not args.drift_report:
        return None
    from bp_core.model.registry import client_for, get_version_tags

    report = json.loads(Path(args.drift_report).read_text())
    data = json.loads(Path(args.drift_data).read_text()) if args.drift_data else {}
    challenger = None
    if args.drift_challenger:
        client = client_for(settings.mlflow_tracking_uri)
        challenger = decision_of(get_version_tags(client, settings.model_name, args.drift_challenger),
                                 args.drift_challenger)
    return {"scenario": args.drift_scenario, "switched_at": args.drift_switched_at, "since": args.drift_since,
            "detect_readings": args.drift_detect, "shadow_readings": args.drift_shadow, "report": report,
            "signalled": args.drift_signalled, "data": data, "challenger": challenger,
            "seconds": args.drift_seconds}


def gather(settings: Settings, args) -> dict:
    beginning, end = _offsets(settings, settings.topic)
    facts: dict = {
        "topic": settings.topic, "es_index": settings.es_index, "archive_dir": str(settings.archive_dir),
        "topic_messages": sum(end[p] - beginning[p] for p in end),
    }
    facts.update(gather_elasticsearch(settings))
    facts.update(gather_archive(settings))
    facts.update(gather_dlq(settings))
    facts.update(gather_alerts(settings))
    facts.update(gather_models(settings, args.challenger))
    facts["drift"] = drift_facts(settings, args)
    before = json.loads(Path(args.metrics_before).read_text()) if args.metrics_before else None
    try:
        text = scrape_text(args.metrics_port)
        facts["throughput"] = throughput(before, parse_prometheus(text))
        facts["serving"] = serving_version(prometheus_samples(text))
    except OSError:
        facts["throughput"] = {}
    facts["demo"] = {"produced": args.produced, "malformed": args.malformed, "e2e_seconds": args.e2e_seconds}
    facts["consumer"] = {"pid": args.consumer_pid, "log": args.consumer_log, "reused": args.consumer_reused,
                         "metrics_port": args.metrics_port, "pid_file": args.consumer_pid_file}
    facts["paths"] = {"airflow_home": args.airflow_home, "mlflow_uri": settings.mlflow_tracking_uri}
    return facts


# ---------------------------------------------------------------------------- command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infra/demo.py", description="steps of `make demo`")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("services", help="exit 0 when Kafka and Elasticsearch answer")
    sub.add_parser("malformed", help="send the malformed demo messages")
    sub.add_parser("models", help="print the 'champion' and 'challenger' versions ('-' for none)")
    p = sub.add_parser("ready", help="wait until the consumer serves the champion and shadows the challenger")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True, help="the consumer's log")
    p.add_argument("--champion", type=_version_arg, default=None)
    p.add_argument("--challenger", type=_version_arg, default=None)
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("evidence", help="wait until MLflow holds the consumer's shadow evidence")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--challenger", required=True)
    p.add_argument("--champion", type=_version_arg, default=None)
    p.add_argument("--timeout", type=float, default=90.0)
    p = sub.add_parser("fresh-data", help="simulate a labelled data set of a world, ending now")
    p.add_argument("--scenario", required=True)
    p.add_argument("--patients", type=int, required=True)
    p.add_argument("--readings", type=int, required=True)
    p.add_argument("--json", required=True, help="write what was made to this file")
    p = sub.add_parser("scrape", help="save the consumer's metrics as JSON")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("wait", help="wait until the consumer group is caught up")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--consumer-pid", type=int)
    p.add_argument("--consumer-log", default="the consumer log")
    p = sub.add_parser("summary", help="print the summary")
    p.add_argument("--challenger")
    p.add_argument("--metrics-port", type=int, default=9108)
    p.add_argument("--metrics-before")
    p.add_argument("--produced", type=int, default=0)
    p.add_argument("--malformed", type=int, default=0)
    p.add_argument("--e2e-seconds", type=float)
    p.add_argument("--consumer-pid", type=int)
    p.add_argument("--consumer-pid-file")
    p.add_argument("--consumer-log")
    p.add_argument("--consumer-reused", action="store_true")
    p.add_argument("--airflow-home", default=".airflow-demo")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--drift-report", help="`bp drift --json` of the --drift part")
    p.add_argument("--drift-data", help="the fresh data set's JSON (fresh-data --json)")
    p.add_argument("--drift-challenger", help="the version trained after the drift")
    p.add_argument("--drift-scenario")
    p.add_argument("--drift-switched-at")
    p.add_argument("--drift-since")
    p.add_argument("--drift-detect", type=int, default=0, help="readings streamed before the drift check")
    p.add_argument("--drift-shadow", type=int, default=0, help="readings streamed after retraining")
    p.add_argument("--drift-signalled", action="store_true", help="bp_monitor_drift updated bp_drift_detected")
    p.add_argument("--drift-seconds", type=float, default=0.0)
    return parser


def _version_arg(text: str) -> str | None:
    return None if text in ("", "-", "none") else text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for noisy in ("kafka", "mlflow", "alembic", "elastic_transport", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        settings = Settings.from_env()
        if args.command == "services":
            missing = services_up(settings)
            if missing:
                print(f"not reachable: {', '.join(missing)}", file=sys.stderr)
                return 1
        elif args.command == "malformed":
            print(send_malformed(settings))
        elif args.command == "models":
            champion, challenger = current_models(settings)
            print(champion or "-", challenger or "-")
        elif args.command == "ready":
            seconds = wait_ready(settings, port=args.port, log_path=args.log, champion=args.champion,
                                 challenger=args.challenger, timeout=args.timeout)
            print(f"{seconds:.1f}")
        elif args.command == "evidence":
            print(wait_evidence(settings, port=args.port, challenger=args.challenger, champion=args.champion,
                                timeout=args.timeout))
        elif args.command == "fresh-data":
            path = fresh_data(settings, scenario=args.scenario, patients=args.patients, readings=args.readings)
            Path(args.json).write_text(json.dumps({"path": str(path), "scenario": args.scenario,
                                                   "patients": args.patients, "readings": args.readings}))
            print(path)
        elif args.command == "scrape":
            Path(args.out).write_text(json.dumps(scrape(args.port)))
        elif args.command == "wait":
            seconds = wait_caught_up(settings, timeout=args.timeout, consumer_pid=args.consumer_pid,
                                     consumer_log=args.consumer_log)
            print(f"{seconds:.1f}")
        elif args.command == "summary":
            summary = build_summary(gather(settings, args))
            if args.json:
                Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
            print(format_summary(summary))
            if not summary["consistent"]:
                return 1
        return 0
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # one line for the terminal; the traceback on demand
        if os.environ.get("BP_DEBUG"):
            raise
        print(f"demo: error: {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
