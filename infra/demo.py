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

The computation and the formatting of the summary are pure functions of plain dicts
(``build_summary``, ``format_summary``, ``parse_prometheus``, ``tally_alerts``,
``throughput``, ``lag_by_partition``...), unit-tested without any service; the
``gather_*`` and ``wait_*`` functions only read the services. Every error is one line on
stderr with exit status 1 (``BP_DEBUG=1`` shows the traceback).
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

from bp_core.rules import (ANOMALY_TYPES, CATEGORIES, CATEGORY_LABELS,  # categories: by risk, hypotension last
                           DROP_FROM_BASELINE, RISE_FROM_BASELINE)
from bp_core.settings import Settings

# Hold-out metrics shown for the champion, next to the rules-only figures of the same run.
MODEL_METRICS = ("pr_auc", "roc_auc", "recall", "crisis_recall", "hypotension_recall")
CONTEXT_TYPES = (RISE_FROM_BASELINE, DROP_FROM_BASELINE)
THRESHOLD_TYPES = tuple(t for t in ANOMALY_TYPES if t not in CONTEXT_TYPES)


class DemoError(Exception):
    """A demo step failed; the message is the one line the user sees."""


# ---------------------------------------------------------------------------- pure logic

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition -> (metric name, labels, value) of each sample."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        samples.append((match.group(1), dict(_LABEL.findall(match.group(2) or "")), value))
    return samples


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {metric name: value summed over its label sets}."""
    values: dict[str, float] = {}
    for name, _labels, value in prometheus_samples(text):
        values[name] = values.get(name, 0.0) + value
    return values


def serving_version(samples: list) -> str | None:
    """The model version the consumer serves (``bp_model_info``); None when rules-only or unknown."""
    for name, labels, value in samples:
        if name == "bp_model_info" and value == 1 and labels.get("version") not in (None, "rules-only"):
            return labels["version"]
    return None


def shadow_readings(samples: list, challenger: str, champion: str | None) -> int:
    """Readings this consumer process shadow-scored with ``challenger`` beside ``champion``."""
    for name, labels, value in samples:
        if (name == "bp_shadow_readings_total" and labels.get("challenger_version") == challenger
                and labels.get("champion_version") == (champion or "rules")):
            return int(value)
    return 0


def model_state(log_lines, model_name: str, alias: str = "challenger") -> str | None:
    """The version the consumer's provider of ``alias`` holds, from its log: the last
    "loaded NAME version N (NAME@alias)" of the last process that started ("starting
    with {...}"), unless "no NAME@alias any more" follows it."""
    loaded, dropped = f"({model_name}@{alias})", f"no {model_name}@{alias} any more"
    version = None
    for line in log_lines:
        if "starting with {" in line or dropped in line:  # a (re)started consumer holds nothing yet
            version = None
        elif loaded in line:
            match = re.search(r"version (\S+) \(" + re.escape(model_name) + "@", line)
            version = match.group(1) if match else version
    return version


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


def tally_alerts(messages) -> dict:
    """What the alerts topic holds, from its (key, value) messages in topic order.

    Returns ``{"messages", "by_type": {type: {status: n}}, "risk_assessments"`` (distinct
    ids of status final: one per reading and assessing model version; a replay republishes
    the same id)``, "flags": {"active", "inactive"}, "sustained_patients"`` (patients whose
    latest Flag is active: a patient's Flags share its key, so its partition keeps their
    order)``, "example"`` (a RiskAssessment to show: the last one scored by a model that
    names a context anomaly, else the last one scored by a model, else the last one)``}``.
    """
    by_type: dict[str, dict[str, int]] = {}
    final_ids: set[str] = set()
    latest_flag: dict[str, str] = {}
    best: dict[int, dict] = {}
    total = 0
    for key, value in messages:
        total += 1
        try:
            resource = json.loads(value)
        except (TypeError, ValueError):
            unreadable = by_type.setdefault("unreadable", {})
            unreadable[""] = unreadable.get("", 0) + 1
            continue
        kind, status = resource.get("resourceType", "?"), resource.get("status", "")
        counts = by_type.setdefault(kind, {})
        counts[status] = counts.get(status, 0) + 1
        if kind == "Flag":
            patient = (resource.get("subject") or {}).get("reference") or (key or b"").decode(errors="replace")
            latest_flag[patient] = status
        elif kind == "RiskAssessment" and status == "final":
            final_ids.add(resource.get("id"))
            predictions = resource.get("prediction") or []
            scored = any("probabilityDecimal" in p for p in predictions)
            codes = {c.get("code") for p in predictions for c in (p.get("outcome") or {}).get("coding") or []}
            rank = 2 if scored and codes & set(CONTEXT_TYPES) else 1 if scored else 0
            best[rank] = resource
    flags = by_type.get("Flag", {})
    return {
        "messages": total,
        "by_type": by_type,
        "risk_assessments": len(final_ids),
        "flags": {"active": flags.get("active", 0), "inactive": flags.get("inactive", 0)},
        "sustained_patients": sum(1 for status in latest_flag.values() if status == "active"),
        "example": best[max(best)] if best else None,
    }


def alert_lines(resource: dict) -> list[str]:
    """A RiskAssessment in a few lines (ids and references only: no resource holds a name)."""
    predictions = resource.get("prediction") or [{}]
    first = predictions[0]
    types = [c.get("code") for p in predictions[1:] for c in (p.get("outcome") or {}).get("coding") or []]
    risk = [c.get("code") for c in (first.get("qualitativeRisk") or {}).get("coding") or []]
    method = [c.get("code") for c in (resource.get("method") or {}).get("coding") or []]
    probability = first.get("probabilityDecimal")
    basis = ", ".join(b.get("reference", "?") for b in resource.get("basis") or [])
    return [
        f"RiskAssessment {resource.get('id')} ({resource.get('status')}): "
        f"{(resource.get('subject') or {}).get('reference')}, basis {basis}, at {resource.get('occurrenceDateTime')}",
        f"  outcome: {', '.join(types) or 'anomaly'}; "
        + (f"P(anomaly) {probability:.4f}; " if probability is not None else "no model probability; ")
        + f"qualitativeRisk {', '.join(risk) or '-'}; method {', '.join(method) or '-'}, "
        f"performer {(resource.get('performer') or {}).get('reference')}",
        f"  rationale: {first.get('rationale', '-')}",
    ]


def build_summary(facts: dict) -> dict:
    """Everything the summary shows, computed from the gathered facts (plain dicts).

    ``facts`` keys: ``topic``, ``es_index``, ``archive_dir``, ``topic_messages``,
    ``anomaly_total``, ``anomaly_categories`` {category: n}, ``anomaly_layers``
    {"rules": n, "model": n} (a document flagged by both counts in both),
    ``normal_categories`` {category: n}, ``dlq`` {"count", "first_reason"},
    ``champion`` {"version", "metrics", "rules_metrics"} or None, ``challenger``
    {"version", "decision", "reason"} or None, ``throughput`` (see ``throughput``),
    ``demo`` {"produced", "malformed", "e2e_seconds"}, ``consumer`` {"pid", "log",
    "reused", "metrics_port"}, ``previous_champion`` (version before this demo or None);
    the second wave's: ``anomaly_types`` {type: n}, ``context`` {"with_baseline",
    "context_only"} (anomalies with a baseline; rises/drops that crossed no threshold),
    ``time_range`` {"from", "to", "in_range", "oldest", "newest"} (anomalies in Kibana's
    default time range), ``alerts`` (``tally_alerts`` plus "topic"), ``serving`` (the
    version the consumer serves now, None: rules only), ``drift`` (the ``--drift`` part,
    see ``drift_facts``) or None. A challenger's dict may also hold "evidence" (the shadow
    evidence its decision used), "min_shadow_readings" and "holdout_scenario".
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
    types = dict(facts.get("anomaly_types") or {})
    context_facts = dict(facts.get("context") or {})
    alerts = dict(facts.get("alerts") or {})
    context = {"rises": int(types.get(RISE_FROM_BASELINE, 0)), "drops": int(types.get(DROP_FROM_BASELINE, 0)),
               "with_baseline": int(context_facts.get("with_baseline", 0)),
               "context_only": int(context_facts.get("context_only", 0)),
               "sustained_patients": alerts.get("sustained_patients")}
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
        "anomaly_types": types,
        "context": context,
        "alerts": alerts,
        "time_range": facts.get("time_range") or {},
        "serving": facts.get("serving"),
        "drift": facts.get("drift"),
    }


MEASURED = ("systolic_mm_hg", "diastolic_mm_hg")  # the features that are the cuff's own readings


def drift_findings(report: dict) -> dict:
    """What ``bp drift --json`` found: drifted comparisons per segment (``overall`` for the
    whole window), and the fleets whose measured pressures drifted (the cuff's own values:
    what a miscalibrated fleet moves) with ``(feature, score, threshold)``."""
    drifted: dict[str, int] = {}
    measured: dict[str, list] = {}
    segments = {"overall": report.get("features") or {},
                **{fleet: segment.get("features") or {} for fleet, segment in (report.get("segments") or {}).items()}}
    for segment, features in segments.items():
        count = sum(1 for c in features.values() if c.get("drift"))
        if count:
            drifted[segment] = count
        moved = [(name, features[name].get("score"), features[name].get("threshold"))
                 for name in MEASURED if (features.get(name) or {}).get("drift")]
        if moved and segment != "overall":
            measured[segment] = moved
    return {"drifted": drifted, "measured_fleets": measured}


def _drift_lines(drift: dict) -> list[str]:
    """The ``--drift`` part: the switch, what ``bp drift`` found, the loop and its outcome."""
    more = f", then {drift['shadow_readings']:,} more after retraining" if drift.get("shadow_readings") else ""
    lines = [f"Drift loop (--drift, {drift.get('seconds', 0):.0f} s): the stream switched to the "
             f"{drift.get('scenario')} world at {drift.get('switched_at')} ({drift.get('detect_readings', 0):,} "
             f"readings{more})"]
    report = drift.get("report") or {}
    if report:
        window, findings = report.get("window") or {}, drift_findings(report)
        found = "found" if report.get("drift") else "NOT found"
        lines.append(f"  bp drift --since {drift.get('since')}: drift {found} in {window.get('readings', 0):,} readings, "
                     f"against the training data of v{(report.get('reference') or {}).get('model_version')}")
        fleets = findings["measured_fleets"]
        lines.append("    measured pressures drifted in: " + ("; ".join(
            f"{fleet} (" + ", ".join(f"{name} {score:.2f} > {threshold:.2f}" for name, score, threshold in moved) + ")"
            for fleet, moved in sorted(fleets.items())) if fleets else "no fleet"))
        if findings["drifted"]:
            lines.append(f"    {sum(findings['drifted'].values())} drifted comparisons: " + ", ".join(
                f"{segment} {n}" for segment, n in findings["drifted"].items()))
    signalled = "drift recorded in MLflow (experiment bp-drift) and bp_drift_detected updated"
    lines.append(f"  bp_monitor_drift: {signalled if drift.get('signalled') else 'no drift signalled'}")
    data = drift.get("data") or {}
    if data:
        lines.append(f"  bp_train_model on fresh {drift.get('scenario')} data ({data.get('readings', 0):,} readings of "
                     f"{data.get('patients', 0):,} patients, {data.get('path')})")
    if drift.get("challenger"):
        lines += ["  " + line for line in _decision_lines("bp_promote_model: challenger", drift["challenger"], None)]
    return lines


def _minute(timestamp: str | None) -> str:
    """``2026-03-01T07:25:44.000Z`` -> ``2026-03-01 07:25 UTC``."""
    return f"{timestamp[:10]} {timestamp[11:16]} UTC" if timestamp else "-"


def _pct(value: float) -> str:
    return f"{100 * value:5.1f} %"


def _metric(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _version(version) -> str:
    return f"v{version}" if version else "the rules alone"


def _decision_lines(title: str, challenger: dict, champion_before) -> list[str]:
    """A gate decision: what, why, on which evidence."""
    decision = challenger.get("decision") or "not evaluated"
    line = f"{title} v{challenger['version']}: {decision}"
    if decision == "rejected":
        line += f" by the gate (champion stays {_version(challenger.get('champion_version') or champion_before)})"
    elif decision == "deferred":
        line += " (not enough live evidence yet: the hourly bp_promote_model judges it again)"
    lines = [line]
    if challenger.get("reason"):
        lines.append(f"  reason: {challenger['reason']}")
    if challenger.get("holdout_scenario") not in (None, "baseline"):
        lines.append(f"  hold-out simulated in the {challenger['holdout_scenario']} world")
    evidence, needed = challenger.get("evidence"), challenger.get("min_shadow_readings")
    if evidence is not None:
        readings = int(evidence.get("readings") or 0)
        text = (f"  live shadow evidence: {readings:,} readings scored by v{challenger['version']} beside "
                f"{_version(evidence.get('champion_version'))} while it served")
        if needed is not None:
            text += f" (the gate needs {needed:,}: BP_GATE_MIN_SHADOW_READINGS)"
        lines.append(text)
        if readings:
            lines.append(f"    served alert rate: champion {evidence['champion_alerts'] / readings:.1%}, "
                         f"challenger {evidence['challenger_alerts'] / readings:.1%}")
    elif needed == 0:
        lines.append("  live shadow evidence: not required (BP_GATE_MIN_SHADOW_READINGS=0)")
    return lines


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
    span = summary["time_range"]
    if span:
        add(f"Kibana's default time range ({span.get('from')} .. {span.get('to')}): {span.get('in_range', 0):,} of "
            f"{summary['anomalies']:,} anomalies (effective times {_minute(span.get('oldest'))} .. "
            f"{_minute(span.get('newest'))})")
    add("")
    context = summary["context"]
    add("Patient context (each reading against the patient's own previous 7 days)")
    add(f"  anomalies judged against a baseline: {context['with_baseline']:,}; rises from baseline "
        f"{context['rises']:,}, drops {context['drops']:,} ({context['context_only']:,} of them crossed no "
        f"threshold: flagged by the patient's history alone)")
    if context["sustained_patients"] is not None:
        flags = summary["alerts"].get("flags") or {}
        add(f"  patients in sustained hypertension now (7-day home average >= 135/85, >= 12 readings): "
            f"{context['sustained_patients']:,} (Flags: {flags.get('active', 0):,} active, "
            f"{flags.get('inactive', 0):,} inactive)")
    alerts = summary["alerts"]
    if alerts:
        add("")
        add(f"Alerts on {alerts.get('topic')} (FHIR R4, key = patient id): {alerts.get('messages', 0):,} messages")
        kinds = []
        for kind in ("RiskAssessment", "Flag", "Device", *sorted(set(alerts.get("by_type") or {})
                                                                  - {"RiskAssessment", "Flag", "Device"})):
            statuses = (alerts.get("by_type") or {}).get(kind)
            if statuses:
                detail = ", ".join(f"{status} {n:,}" for status, n in sorted(statuses.items()))
                kinds.append(f"{kind} {sum(statuses.values()):,} ({detail})")
        add("  " + ("; ".join(kinds) or "none"))
        if "RiskAssessment" in (alerts.get("by_type") or {}):
            same = alerts.get("risk_assessments") == summary["anomalies"]
            add(f"  {alerts.get('risk_assessments', 0):,} distinct RiskAssessments for {summary['anomalies']:,} anomalies"
                + (" (one each)" if same else " (a reading assessed by several model versions has one each)"))
        if alerts.get("example"):
            first, *more = alert_lines(alerts["example"])
            add(f"  e.g. {first}")
            out.extend(f"       {line}" for line in more)
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
        out.extend(_decision_lines("This demo's challenger", challenger, champion and champion["version"]))
    drift = summary["drift"]
    if drift:
        add("")
        out.extend(_drift_lines(drift))
    if summary["serving"] is not None or consumer:
        add(f"The consumer serves now: {_version(summary['serving'])}")
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
            raise DemoError(f"after {timeout:.0f} s the consumer serves {_version(serving)} and shadows "
                            f"{_version(shadow)}, not {_version(champion)} and {_version(shadowed)}; see {log_path}")
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
