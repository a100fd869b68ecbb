"""The pure half of ``make demo``'s summary: computed and formatted from plain dicts
(``build_summary``, ``format_summary``, ``parse_prometheus``, ``tally_alerts``,
``throughput``, ``lag_by_partition``...), unit-tested without any service. ``demo.py``
gathers the dicts from the services."""

from __future__ import annotations

import json
import math
import re

from bp_core.rules import (ANOMALY_TYPES, CATEGORIES, CATEGORY_LABELS,  # categories: by risk, hypotension last
                           DROP_FROM_BASELINE, RISE_FROM_BASELINE)

# Hold-out metrics shown for the champion, next to the rules-only figures of the same run.
MODEL_METRICS = ("pr_auc", "roc_auc", "recall", "crisis_recall", "hypotension_recall")
CONTEXT_TYPES = (RISE_FROM_BASELINE, DROP_FROM_BASELINE)
THRESHOLD_TYPES = tuple(t for t in ANOMALY_TYPES if t not in CONTEXT_TYPES)


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


def version_label(version) -> str:
    return f"v{version}" if version else "the rules alone"


def _decision_lines(title: str, challenger: dict, champion_before) -> list[str]:
    """A gate decision: what, why, on which evidence."""
    decision = challenger.get("decision") or "not evaluated"
    line = f"{title} v{challenger['version']}: {decision}"
    if decision == "rejected":
        line += f" by the gate (champion stays {version_label(challenger.get('champion_version') or champion_before)})"
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
                f"{version_label(evidence.get('champion_version'))} while it served")
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
        add(f"The consumer serves now: {version_label(summary['serving'])}")
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
