"""Per-patient state against the real broker and Elasticsearch (issue 24): restored after
kill -9, moving with partitions between members, never counting a replay twice.

The reference for "no state lost or counted twice" is the pure store
(``bp_core.context.PatientStore``) fed the topic's readings in Kafka order, as one
consumer that never stopped would see them: every reading's context in Elasticsearch or
the archive, and every patient's latest changelog value, must equal what it gives.
Each test has its own topic (3 partitions), group (so its own changelog), index, folders
and MLflow store (rules only: no model).
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from kafka.errors import TopicAlreadyExistsError

from bp_core.consumer.service import ConsumerOptions, ConsumerService
from bp_core.consumer.state import changelog_topic
from bp_core.context import PatientStore
from bp_core.fhir.parse import parse_common_form
from bp_core.sinks.archive import read_archive
from tests.integration.helpers import (
    committed_total, patient_stream, read_to_end, reading, send, start_consumer, wait_for,
)
from tests.stack_fixtures import create_topic

CONTEXT_FIELDS = ("baseline_systolic", "baseline_diastolic", "baseline_readings", "home_average_systolic",
                  "home_average_diastolic", "home_average_readings", "arv_systolic")
# Effective times: recent enough to be inside any retention, never in the future.
START = (datetime.now(timezone.utc) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def settings(settings, mlflow_store_template):
    shutil.copyfile(mlflow_store_template, settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    return settings


# ---------------------------------------------------------------------------- helpers


def consume(settings, **options) -> ConsumerService:
    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=2.0, **options))
    assert service.run() == 0
    return service


def _plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def expected(settings) -> tuple[dict[str, tuple], PatientStore]:
    """Each reading's context as one consumer that never stopped gives it: the topic's
    readings in Kafka order (per partition) through one pure store; and that store."""
    readings = [parse_common_form(r.value) for r in read_to_end(settings.kafka_bootstrap, settings.topic)]
    assert all(readings), "every test message is a reading in the common form"
    store = PatientStore()
    context = store.apply(readings).context
    return ({r.observation_id: tuple(_plain(getattr(context, name)[i]) for name in CONTEXT_FIELDS)
             for i, r in enumerate(readings)}, store)


def stored(es, settings) -> tuple[dict[str, tuple], Counter]:
    """The context each reading was stored with (Elasticsearch document or archive line),
    and how many times each reading is stored."""
    found: dict[str, tuple] = {}
    times: Counter = Counter()
    if es.indices.exists(index=settings.es_index):
        es.indices.refresh(index=settings.es_index)
        hits = es.search(index=settings.es_index, size=10_000, source=["observation_id", *CONTEXT_FIELDS])
        for hit in hits["hits"]["hits"]:
            found[hit["_source"]["observation_id"]] = tuple(hit["_source"][name] for name in CONTEXT_FIELDS)
            times[hit["_source"]["observation_id"]] += 1
    for line in read_archive(settings.archive_dir, settings.topic):
        found[line["observation_id"]] = tuple(line[name] for name in CONTEXT_FIELDS)
        times[line["observation_id"]] += 1
    return found, times


def changelog(settings) -> dict[str, bytes | None]:
    """The latest changelog value of each patient (what a restore loads)."""
    return {r.key.decode(): r.value
            for r in read_to_end(settings.kafka_bootstrap, changelog_topic(settings.consumer_group))}


def assert_one_consumer_would_agree(es, settings) -> None:
    """Every reading stored once, with the context one consumer gives it; every patient's
    latest changelog value the state that consumer ends with."""
    want, store = expected(settings)
    got, times = stored(es, settings)
    assert times == Counter(want.keys()), "every reading stored exactly once"
    wrong = {key: (got[key], want[key]) for key in want if got[key] != want[key]}
    assert not wrong, f"{len(wrong)} reading(s) stored with another context (stored, expected): " \
                      f"{dict(list(wrong.items())[:5])}"
    states = changelog(settings)
    assert len(states) == len(store), "one changelog key per patient"
    assert all(states[patient] == store.encode(patient) for patient in states), "changelog state differs"


def changelog_described(kafka_admin, name: str) -> tuple[str, int]:
    from kafka.admin import ConfigResource, ConfigResourceType

    configs = kafka_admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None})],
                                           config_filter="all")
    (description,) = kafka_admin.describe_topics([name])
    return configs["topic"][name]["cleanup.policy"]["value"], len(description["partitions"])


# ---------------------------------------------------------------------------- tests


def test_after_kill_9_the_state_is_restored_and_a_replay_counts_nothing_twice(settings, es, kafka_admin, tmp_path):
    usual = [(110, 70), (112, 72), (108, 69), (111, 71), (109, 70), (110, 68)]
    send(settings.kafka_bootstrap, settings.topic,
         [reading(f"b-{i}", "pat-b", values, START + timedelta(hours=4 * i)) for i, values in enumerate(usual)])
    log_path = tmp_path / "consumer.log"
    # Killed (SIGKILL) at its second batch, written everywhere (the changelog included) but
    # not committed: the next consumer restores the state and reads that batch again.
    doomed = start_consumer(settings, "--batch-size", "60", log_path=log_path, BP_CRASH_AT="consumer.before-commit:2")
    try:
        wait_for(lambda: committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == 6
                 or doomed.poll() is not None, timeout=120, interval=0.5, what="the baseline's readings committed")
        messages = patient_stream(20, 24, seed=7, start=START, late_every=37)  # 3 days: all inside the window
        send(settings.kafka_bootstrap, settings.topic, messages)
        assert doomed.wait(timeout=120) == -signal.SIGKILL, log_path.read_text()[-3000:]
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == 6
    assert len(changelog(settings)) > 1, "the uncommitted batch's state changes are in the changelog"
    assert changelog_described(kafka_admin, changelog_topic(settings.consumer_group)) == ("compact", 3), \
        "a compacted changelog named after the group, with the source topic's partition count"

    # Inside 90-140 / 60-90, so an anomaly only against the patient's own baseline.
    send(settings.kafka_bootstrap, settings.topic, [reading("b-rise", "pat-b", (132, 76), START + timedelta(hours=24))])
    consume(settings, batch_size=60)

    es.indices.refresh(index=settings.es_index)
    documents = {hit["_source"]["observation_id"]: hit["_source"]
                 for hit in es.search(index=settings.es_index, size=10_000)["hits"]["hits"]}
    rise = documents["b-rise"]
    assert rise["anomaly_types"] == ["rise_from_baseline"] and rise["rule_anomaly"] is True
    assert rise["baseline_readings"] == 6
    assert rise["baseline_systolic"] == pytest.approx(sum(s for s, _ in usual) / 6)
    assert rise["baseline_diastolic"] == pytest.approx(sum(d for _, d in usual) / 6)
    assert rise["home_average_readings"] == 7
    assert rise["home_average_systolic"] == pytest.approx((sum(s for s, _ in usual) + 132) / 7)
    archived = {line["observation_id"]: line for line in read_archive(settings.archive_dir, settings.topic)}
    assert [archived[f"b-{i}"]["baseline_readings"] for i in range(6)] == [0, 1, 2, 3, 4, 5]
    assert [archived[f"b-{i}"]["baseline_systolic"] for i in range(5)] == [None] * 5, "fewer than 5: no baseline"
    assert archived["b-5"]["baseline_systolic"] == pytest.approx(sum(s for s, _ in usual[:5]) / 5)
    # The batch read twice counted once: every later reading's count is one consumer's.
    assert_one_consumer_would_agree(es, settings)
    before = stored(es, settings)

    consume(settings, batch_size=60, from_beginning=True)  # every reading again: all replays

    assert stored(es, settings) == before
    assert_one_consumer_would_agree(es, settings)


def test_late_readings_are_placed_by_effective_time_and_a_new_patient_has_no_baseline(settings, es):
    day = timedelta(days=1)
    messages = [reading(f"l-{n}", "pat-late", (120, 80), START + n * day) for n in (0, 1, 2, 4, 5)]
    messages += [reading("l-3", "pat-late", (100, 70), START + 3 * day),           # late: between days 2 and 4
                 reading("l-6", "pat-late", (120, 80), START + 6 * day),
                 reading("l-old", "pat-late", (150, 95), START - 2 * day)]          # 8 days older than day 6
    # A new patient: four readings, so the fifth has only four before it (no baseline) and
    # its jump is no context anomaly; the sixth has a baseline of five.
    messages += [reading(f"n-{n}", "pat-new", (110, 70), START + n * day) for n in range(4)]
    messages += [reading("n-4", "pat-new", (138, 86), START + 4 * day),
                 reading("n-5", "pat-new", (138, 86), START + 5 * day)]
    send(settings.kafka_bootstrap, settings.topic, messages)

    consume(settings)

    got, _ = stored(es, settings)
    fields = {name: i for i, name in enumerate(CONTEXT_FIELDS)}

    def field(obs_id, name):
        return got[obs_id][fields[name]]

    # l-3 sees days 0, 1, 2 before it (not 4 and 5, read earlier but later in time).
    assert (field("l-3", "baseline_readings"), field("l-3", "home_average_readings")) == (3, 4)
    assert field("l-3", "home_average_systolic") == pytest.approx((3 * 120 + 100) / 4)
    # l-6 sees days 0 to 5, the late one included: placed by effective time.
    assert field("l-6", "baseline_readings") == 6
    assert field("l-6", "baseline_systolic") == pytest.approx((5 * 120 + 100) / 6)
    # Older than the window of the latest reading: judged without history, state untouched.
    assert (field("l-old", "baseline_readings"), field("l-old", "home_average_readings")) == (0, 1)
    assert field("l-old", "baseline_systolic") is None
    documents = {hit["_source"]["observation_id"]: hit["_source"]
                 for hit in es.search(index=settings.es_index, size=100)["hits"]["hits"]}
    assert "rise_from_baseline" not in documents["l-old"]["anomaly_types"]

    assert [field(f"n-{n}", "baseline_readings") for n in range(6)] == [0, 1, 2, 3, 4, 5]
    assert field("n-4", "baseline_systolic") is None and "n-4" not in documents, \
        "four previous readings: no baseline, no context anomaly (138/86 is inside 90-140 / 60-90)"
    assert field("n-5", "baseline_systolic") == pytest.approx((4 * 110 + 138) / 5)
    assert_one_consumer_would_agree(es, settings)


def flags(settings) -> list[dict]:
    return [resource for resource in (orjson.loads(r.value) for r in read_to_end(settings.kafka_bootstrap,
                                                                                   settings.alerts_topic))
            if resource["resourceType"] == "Flag"]


def in_sustained_hypertension(service: ConsumerService) -> float:
    """The consumer's gauge of patients in sustained hypertension, as its last batch left it."""
    return service.metrics.registry.get_sample_value("bp_patients_sustained_hypertension")


def test_sustained_hypertension_is_flagged_once_when_it_starts_and_once_when_it_ends_across_restarts(settings, es):
    hours = timedelta(hours=6)
    high = [reading(f"h-{i}", "pat-h", (142, 88), START + i * hours) for i in range(13)]
    send(settings.kafka_bootstrap, settings.topic, high)
    first = consume(settings)
    [started] = flags(settings)
    # The twelfth reading makes the 12 readings the episode needs.
    assert (started["status"], started["period"]) == ("active", {"start": (START + 11 * hours).isoformat()})
    assert in_sustained_hypertension(first) == 1

    # A new process: the episode is restored with the state, so more high readings start nothing.
    send(settings.kafka_bootstrap, settings.topic,
         [reading(f"h-{i}", "pat-h", (144, 90), START + i * hours) for i in range(13, 16)])
    second = consume(settings)
    assert in_sustained_hypertension(second) == 1
    assert flags(settings) == [started]

    # A third: normal readings. 13 x 142/88 and 3 x 144/90, then 110/70: the average is
    # under 85 diastolic at the fourth, under 135 systolic too at the fifth (h-20).
    send(settings.kafka_bootstrap, settings.topic,
         [reading(f"h-{i}", "pat-h", (110, 70), START + i * hours) for i in range(16, 22)])
    third = consume(settings)
    assert in_sustained_hypertension(third) == 0
    resources = flags(settings)
    assert len(resources) == 2, resources
    ended = resources[1]
    assert (ended["id"], ended["status"]) == (started["id"], "inactive")
    assert ended["period"] == {"start": started["period"]["start"],
                               "end": (START + 20 * hours).isoformat()}
    assert_one_consumer_would_agree(es, settings)


def consumed_by(log_path) -> int:
    """The messages a ``bp consume`` process says, at exit, it made durable."""
    return int(re.search(r"stopped: messages=(\d+)", log_path.read_text()).group(1))


def restored_patients(log_text: str) -> int:
    """Patients a member restored from the changelog on assignment, over its restores."""
    return sum(int(n) for n in re.findall(r"restored: (\d+) patients", log_text))


def test_partitions_moving_between_two_and_three_members_lose_and_double_count_nothing(settings, es, tmp_path):
    messages = patient_stream(30, 40, seed=23, start=START, late_every=53)
    logs = {name: tmp_path / f"{name}.log" for name in "ABCD"}
    members: dict[str, object] = {}
    sent = 0

    def flow_until(condition, what: str) -> None:
        """Keep the stream flowing, 40 readings a second, until ``condition`` holds: a
        member comes or goes while readings arrive."""
        nonlocal sent
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            if sent < len(messages):
                send(settings.kafka_bootstrap, settings.topic, messages[sent:sent + 20])
                sent += 20
            time.sleep(0.5)  # the stream's pace, not a wait for something

    def assigned(name: str):
        return lambda: re.search(r"assigned partitions \[\d", logs[name].read_text())

    def exited(name: str):
        return lambda: members[name].poll() is not None

    def join(name: str) -> None:
        members[name] = start_consumer(settings, "--batch-size", "40", log_path=logs[name])
        flow_until(assigned(name), f"member {name} assigned")

    def leave(name: str) -> None:
        members[name].send_signal(signal.SIGTERM)
        flow_until(exited(name), f"member {name} gone")

    try:
        members["A"] = start_consumer(settings, "--batch-size", "40", log_path=logs["A"])
        wait_for(assigned("A"), timeout=90, what="member A assigned")
        flow_until(lambda: sent >= 200, "the first readings")
        join("B")     # two members: B restores its share of what A built
        join("C")     # three, one partition each
        leave("A")    # two again: A's partition and its state move
        leave("B")    # C alone
        join("D")     # two
        flow_until(lambda: sent >= len(messages), "the whole stream")
        wait_for(lambda: committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
                 == len(messages), timeout=120, interval=0.5, what="every message committed")
    finally:
        for proc in members.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: proc.wait(timeout=60) for name, proc in members.items()}
    assert codes == dict.fromkeys("ABCD", 0), {name: logs[name].read_text()[-2000:] for name in codes if codes[name]}

    assert_one_consumer_would_agree(es, settings)
    assert all(consumed_by(logs[name]) > 0 for name in "ABCD"), "every member had its share of the stream"
    assert all(restored_patients(logs[name].read_text()) > 0 for name in "BCD"), "partitions moved with their state"


def test_a_consumer_started_before_its_topic_exists_keeps_the_state_of_every_partition(settings, es, kafka_admin,
                                                                                        tmp_path):
    later = settings.with_(topic=f"{settings.topic}-later", alerts_topic=f"{settings.topic}-later.alerts")
    log_path = tmp_path / "consumer.log"
    proc = start_consumer(later, "--batch-size", "20", log_path=log_path)
    try:
        wait_for(lambda: "no model to serve" in log_path.read_text() or proc.poll() is not None, timeout=60,
                 what="the consumer subscribed")
        # Made as a producer would, with 3 partitions; a broker that creates topics on first
        # use (the local stack's, with 3) may have made it for the subscription already.
        try:
            create_topic(kafka_admin, later.topic)
        except TopicAlreadyExistsError:
            pass
        day = timedelta(days=1)
        messages = [reading(f"{patient}-{n}", patient, (110, 70), START + n * day)
                    for n in range(6) for patient in (f"pat-{p}" for p in range(9))]
        messages += [reading(f"{patient}-rise", patient, (132, 76), START + 6 * day)
                     for patient in (f"pat-{p}" for p in range(9))]
        send(later.kafka_bootstrap, later.topic, messages)
        wait_for(lambda: committed_total(later.kafka_bootstrap, later.consumer_group, later.topic) == len(messages)
                 or proc.poll() is not None, timeout=120, interval=0.5, what="every message committed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]

    source = len(kafka_admin.describe_topics([later.topic])[0]["partitions"])
    assert changelog_described(kafka_admin, changelog_topic(later.consumer_group)) == ("compact", source)
    assert len(kafka_admin.describe_topics([later.alerts_topic])[0]["partitions"]) == source
    assert_one_consumer_would_agree(es, later)
    es.indices.refresh(index=later.es_index)
    rises = {hit["_source"]["observation_id"]: hit["_source"]["baseline_readings"]
             for hit in es.search(index=later.es_index, size=100)["hits"]["hits"]}
    assert rises == {f"pat-{p}-rise": 6 for p in range(9)}


def test_a_changelog_with_fewer_partitions_than_the_topic_stops_the_consumer_with_its_reason(settings, kafka_admin,
                                                                                              tmp_path):
    # As partitions added to the source topic would leave it (or an earlier version
    # started before its topic existed).
    create_topic(kafka_admin, changelog_topic(settings.consumer_group), partitions=1)
    send(settings.kafka_bootstrap, settings.topic, [reading(f"p-{p}", f"pat-{p}", (120, 80), START) for p in range(9)])
    log_path = tmp_path / "consumer.log"
    proc = start_consumer(settings, "--exit-when-idle", "5", log_path=log_path)
    assert proc.wait(timeout=90) == 1, log_path.read_text()[-3000:]
    output = log_path.read_text()
    assert f"bp consume: error: the patient-state changelog {changelog_topic(settings.consumer_group)} has no " \
           f"partition 1, 2: it needs the source topic's partition count" in output, output[-2000:]
    assert "Traceback" not in output
    assert committed_total(settings.kafka_bootstrap, settings.consumer_group, settings.topic) == 0
