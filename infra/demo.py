"""The Python half of ``make demo`` (``infra/demo.sh`` drives it step by step).

``python infra/demo.py COMMAND`` with one command per step the shell script cannot do
well by itself:

    services          exit 0 when Kafka and Elasticsearch answer at the configured addresses
    malformed         send a handful of deliberately malformed messages (they end in the DLQ)
    scrape            save the consumer's Prometheus counters to a JSON file
    wait              wait until the consumer group has committed the topic's end offsets
    summary           gather what Elasticsearch, the archive, the DLQ, MLflow and the
                      consumer's metrics hold, and print the summary

The computation and the formatting of the summary are pure functions of plain dicts
(``build_summary``, ``format_summary``, ``parse_prometheus``, ``throughput``,
``lag_by_partition``), unit-tested without any service; the ``gather_*`` functions only
read the services. Every error is one line on stderr with exit status 1 (``BP_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

from bp_core.rules import CATEGORIES, CATEGORY_LABELS  # in order of risk, hypotension last
from bp_core.settings import Settings

# Hold-out metrics shown for the champion, next to the rules-only figures of the same run.
MODEL_METRICS = ("pr_auc", "roc_auc", "recall", "crisis_recall", "hypotension_recall")


class DemoError(Exception):
    """A demo step failed; the message is the one line the user sees."""


# ---------------------------------------------------------------------------- pure logic

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name: value summed over its label sets}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        name = match.group(1)
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        values[name] = values.get(name, 0.0) + value
    return values


def throughput(before: dict[str, float] | None, after: dict[str, float]) -> dict:
    """Messages and batch-processing seconds between two scrapes of the consumer's metrics.

    ``bp_batch_seconds_sum`` is the time spent processing and committing batches (idle
    polling excluded), so messages / seconds is the consumer's processing throughput.
    """
    before = before or {}
    messages = after.get("bp_messages_consumed_total", 0.0) - before.get("bp_messages_consumed_total", 0.0)
    seconds = after.get("bp_batch_seconds_sum", 0.0) - before.get("bp_batch_seconds_sum", 0.0)
    return {"messages": int(round(messages)), "seconds": seconds,
            "per_second": messages / seconds if seconds > 0 else None}


def lag_by_partition(end: dict[int, int], committed: dict[int, int | None], beginning: dict[int, int]) -> dict[int, int]:
    """Messages not yet committed, per partition (a partition never committed starts at its beginning)."""
    lag = {}
    for partition, end_offset in end.items():
        position = committed.get(partition)
        if position is None:
            position = beginning.get(partition, 0)
        lag[partition] = max(end_offset - position, 0)
    return lag


def _count(mapping: dict | None) -> int:
    return int(sum((mapping or {}).values()))


def build_summary(facts: dict) -> dict:
    """Everything the summary shows, computed from the gathered facts (plain dicts).

    ``facts`` keys: ``topic``, ``es_index``, ``archive_dir``, ``topic_messages``,
    ``anomaly_total``, ``anomaly_categories`` {category: n}, ``anomaly_layers``
    {"rules": n, "model": n} (a document flagged by both counts in both),
    ``normal_categories`` {category: n}, ``dlq`` {"count", "first_reason"},
    ``champion`` {"version", "metrics", "rules_metrics"} or None, ``challenger``
    {"version", "decision", "reason"} or None, ``throughput`` (see ``throughput``),
    ``demo`` {"produced", "malformed", "e2e_seconds"}, ``consumer`` {"pid", "log",
    "reused", "metrics_port"}, ``previous_champion`` (version before this demo or None).
    """
    anomaly_categories = dict(facts.get("anomaly_categories") or {})
    normal_categories = dict(facts.get("normal_categories") or {})
    anomalies = int(facts.get("anomaly_total", _count(anomaly_categories)))
    normals = _count(normal_categories)
    dlq = dict(facts.get("dlq") or {})
    rejects = int(dlq.get("count", 0))
    readings = anomalies + normals
    categories = []
    known = list(CATEGORIES) + sorted((set(anomaly_categories) | set(normal_categories)) - set(CATEGORIES))
    for category in known:
        a, n = int(anomaly_categories.get(category, 0)), int(normal_categories.get(category, 0))
        if a or n or category in CATEGORIES:
            categories.append({"category": category, "label": CATEGORY_LABELS.get(category, category),
                               "total": a + n, "anomalies": a, "normals": n,
                               "share": (a + n) / readings if readings else 0.0})
    layers = dict(facts.get("anomaly_layers") or {})
    rules, model = int(layers.get("rules", 0)), int(layers.get("model", 0))
    both = max(rules + model - anomalies, 0)
    topic_messages = facts.get("topic_messages")
    accounted = anomalies + normals + rejects
    return {
        "topic": facts.get("topic"),
        "es_index": facts.get("es_index"),
        "archive_dir": facts.get("archive_dir"),
        "topic_messages": topic_messages,
        "readings": readings,
        "categories": categories,
        "anomalies": anomalies,
        "layers": {"rules_only": rules - both, "model_only": model - both, "both": both},
        "normals": normals,
        "rejects": rejects,
        "first_reject_reason": dlq.get("first_reason"),
        "accounted": accounted,
        # With Bundles a message may hold several readings, so "more than the messages" is fine.
        "consistent": topic_messages is None or accounted >= topic_messages,
        "champion": facts.get("champion"),
        "challenger": facts.get("challenger"),
        "previous_champion": facts.get("previous_champion"),
        "throughput": facts.get("throughput") or {},
        "demo": facts.get("demo") or {},
        "consumer": facts.get("consumer") or {},
        "paths": facts.get("paths") or {},
    }


def _pct(value: float) -> str:
    return f"{100 * value:5.1f} %"


def _metric(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def format_summary(summary: dict) -> str:
    """The summary as the lines printed at the end of ``make demo``."""
    out: list[str] = []
    add = out.append
    demo, consumer, paths = summary["demo"], summary["consumer"], summary["paths"]
    add("")
    add("================================ bp-monitor demo ================================")
    if summary["topic_messages"] is not None:
        add(f"Topic {summary['topic']}: {summary['topic_messages']:,} messages in total; this demo sent "
            f"{demo.get('produced', 0):,} readings + {demo.get('malformed', 0)} malformed messages.")
        add("  (Totals are for the whole topic: messages of earlier runs on it are counted too.)")
    else:
        add(f"Topic {summary['topic']}")
    add("")
    add(f"Readings by AHA category ({summary['readings']:,} valid readings)")
    add(f"  {'category':<24}{'readings':>9}{'share':>9}{'anomalies':>11}{'normals':>9}")
    for row in summary["categories"]:
        add(f"  {row['label']:<24}{row['total']:>9,}{_pct(row['share']):>9}{row['anomalies']:>11,}{row['normals']:>9,}")
    layers = summary["layers"]
    add("")
    add(f"Anomalies indexed in Elasticsearch ({summary['es_index']}): {summary['anomalies']:,}")
    add(f"  detected by rules only {layers['rules_only']:,}, model only {layers['model_only']:,}, "
        f"both {layers['both']:,}")
    add(f"Normal readings archived ({summary['archive_dir']}): {summary['normals']:,}")
    reason = summary["first_reject_reason"]
    add(f"Rejected to the DLQ ({summary['topic']}.dlq): {summary['rejects']:,}"
        + (f"; first reason: {reason}" if reason else ""))
    if summary["topic_messages"] is not None:
        if summary["consistent"]:
            add(f"  all {summary['topic_messages']:,} messages accounted for "
                f"(anomalies + normals + rejects = {summary['accounted']:,})")
        else:
            add(f"  WARNING: only {summary['accounted']:,} of {summary['topic_messages']:,} messages accounted for")
    add("")
    champion = summary["champion"]
    if champion:
        add(f"Champion model: {champion.get('name', 'bp-anomaly-classifier')} v{champion['version']} "
            f"(MLflow run {champion.get('run_id', '?')})")
        add(f"  {'hold-out metric':<22}{'model':>10}{'rules only':>12}")
        metrics, rules = champion.get("metrics") or {}, champion.get("rules_metrics") or {}
        for key in MODEL_METRICS:
            add(f"  {key:<22}{_metric(metrics.get(key)):>10}{_metric(rules.get(key)):>12}")
    else:
        add("Champion model: none (the consumer runs rules-only)")
    challenger = summary["challenger"]
    if challenger:
        decision = challenger.get("decision") or "not evaluated"
        line = f"This demo's challenger v{challenger['version']}: {decision}"
        if decision == "rejected":
            line += f" by the gate (champion stays v{champion['version'] if champion else '?'})"
        add(line)
        if challenger.get("reason"):
            add(f"  reason: {challenger['reason']}")
    add("")
    tp = summary["throughput"]
    if tp.get("per_second"):
        add(f"Consumer throughput: {tp['messages']:,} messages in {tp['seconds']:.2f} s of batch processing "
            f"= {tp['per_second']:,.0f} msg/s")
        add("  (a few small demo batches, first-batch warm-up included; `make bench` measures sustained throughput)")
    if demo.get("e2e_seconds"):
        add(f"End to end (first message produced -> last offset committed): {demo['e2e_seconds']:.1f} s")
    if consumer:
        state = "reused from an earlier demo" if consumer.get("reused") else "started by this demo"
        add(f"Consumer: pid {consumer.get('pid')} ({state}), still running; log {consumer.get('log')}")
    add("")
    add("Open the UIs")
    airflow_home = paths.get("airflow_home", ".airflow-demo")
    add(f"  Airflow:    source infra/airflow_env.sh {airflow_home} && airflow standalone")
    add("              -> http://localhost:8080, user admin, password in "
        f"{airflow_home}/simple_auth_manager_passwords.json.generated")
    add(f"  MLflow:     .venv/bin/mlflow ui --backend-store-uri {paths.get('mlflow_uri', 'sqlite:///data/mlflow/mlflow.db')}"
        " --port 5000   -> http://localhost:5000")
    add("  Kibana:     needs Docker (it cannot run on the local stack): make stack-down, then")
    add("              docker compose -p bp-data -f kafka-docker-compose.yml up -d   -> http://localhost:5601")
    add(f"  Prometheus: curl -s localhost:{consumer.get('metrics_port', 9108)}/metrics")
    add(f"  Anomalies:  curl -s 'localhost:9200/{summary['es_index']}/_search?size=3&pretty'")
    add("")
    add("The stack (Kafka, Elasticsearch) and the consumer stay up. Stop everything: make stack-down"
        + (f" (the consumer alone: kill $(cat {consumer['pid_file']}))" if consumer.get("pid_file") else ""))
    add("=" * 81)
    return "\n".join(out)


# ---------------------------------------------------------------------------- gathering

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


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return parse_prometheus(response.read().decode())


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
    es = _es(settings)
    try:
        if not es.indices.exists(index=settings.es_index):
            return {"anomaly_total": 0, "anomaly_categories": {}, "anomaly_layers": {}}
        es.indices.refresh(index=settings.es_index)
        body = es.search(index=settings.es_index, size=0, track_total_hits=True,
                         query={"term": {"source.topic": settings.topic}},
                         aggs={"category": {"terms": {"field": "category", "size": 20}},
                               "layer": {"terms": {"field": "detected_by", "size": 5}}})
    finally:
        es.close()
    aggs = body["aggregations"]
    return {
        "anomaly_total": int(body["hits"]["total"]["value"]),
        "anomaly_categories": {b["key"]: int(b["doc_count"]) for b in aggs["category"]["buckets"]},
        "anomaly_layers": {b["key"]: int(b["doc_count"]) for b in aggs["layer"]["buckets"]},
    }


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
        tags = get_version_tags(client, settings.model_name, challenger_version)
        facts["challenger"] = {"version": challenger_version, "decision": tags.get("promotion.decision"),
                               "reason": tags.get("promotion.reason")}
    return facts


def challenger_version(settings: Settings) -> str | None:
    from bp_core.model.registry import client_for, get_alias_version

    return get_alias_version(client_for(settings.mlflow_tracking_uri), settings.model_name, "challenger")


def gather(settings: Settings, args) -> dict:
    beginning, end = _offsets(settings, settings.topic)
    facts: dict = {
        "topic": settings.topic, "es_index": settings.es_index, "archive_dir": str(settings.archive_dir),
        "topic_messages": sum(end[p] - beginning[p] for p in end),
    }
    facts.update(gather_elasticsearch(settings))
    facts.update(gather_archive(settings))
    facts.update(gather_dlq(settings))
    facts.update(gather_models(settings, args.challenger))
    before = json.loads(Path(args.metrics_before).read_text()) if args.metrics_before else None
    try:
        facts["throughput"] = throughput(before, scrape(args.metrics_port))
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
    sub.add_parser("challenger", help="print the version the 'challenger' alias points to")
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
    return parser


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
        elif args.command == "challenger":
            print(challenger_version(settings) or "")
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
