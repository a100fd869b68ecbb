"""The consumer speaks FHIR back, against the real stack: RiskAssessments on the alerts
topic, corrections of earlier readings, ids that cannot collide, sane times."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment

from bp_core.consumer.service import ConsumerOptions, ConsumerService
from bp_core.sinks.archive import read_archive
from tests.integration.helpers import dumps, es_count, observation, read_all, send, start_consumer

HIGH, NORMAL = (165, 100), (118, 76)


def consume(settings) -> ConsumerService:
    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=2.0, batch_size=300))
    assert service.run() == 0
    return service


def alerts(settings) -> list[dict]:
    return [orjson.loads(r.value) for r in read_all(settings.kafka_bootstrap, settings.alerts_topic)]


def message(obs_id: str, patient: str, values: tuple, **fields) -> tuple[bytes, bytes]:
    return patient.encode(), dumps({**observation(obs_id, patient, *values), **fields})


def documents(es, settings) -> dict[str, dict]:
    es.indices.refresh(index=settings.es_index)
    hits = es.search(index=settings.es_index, size=1000)["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def test_every_anomaly_has_one_risk_assessment_id_across_a_kill_9(settings, tmp_path):
    messages = [message(f"o-{i}", f"pat-{i % 7}", HIGH if i % 7 < 3 else NORMAL) for i in range(1200)]
    messages += [(b"pat-x", b"not json")] * 5
    send(settings.kafka_bootstrap, settings.topic, messages)
    log_path = tmp_path / "consumer.log"
    doomed = start_consumer(settings, "--batch-size", "200", log_path=log_path, BP_CRASH_AT="consumer.before-commit:3")
    assert doomed.wait(timeout=120) == -signal.SIGKILL, log_path.read_text()[-3000:]

    consume(settings)

    resources = alerts(settings)
    assessments = [r for r in resources if r["resourceType"] == "RiskAssessment"]
    anomalies = {f"o-{i}" for i in range(1200) if i % 7 < 3}
    by_id = {r["id"]: r for r in assessments}  # a replay republishes the same resource (at least once)
    assert len(by_id) == len(anomalies), "exactly one RiskAssessment id per anomaly"
    assert {r["basis"][0]["reference"].rsplit("/", 1)[1] for r in by_id.values()} == anomalies
    for resource in by_id.values():
        RiskAssessment.model_validate(resource)
        assert resource["status"] == "final" and resource["subject"]["reference"].startswith("Patient/pat-")
    devices = [r for r in resources if r["resourceType"] == "Device"]
    assert devices and all(Device.model_validate(d) for d in devices)
    assert {d["id"] for d in devices} == {r["performer"]["reference"].split("/")[1] for r in by_id.values()}


def test_a_retraction_removes_the_anomaly_and_publishes_its_entered_in_error_alert(settings, es):
    send(settings.kafka_bootstrap, settings.topic, [message("r-1", "pat-1", HIGH), message("r-2", "pat-2", HIGH)])
    consume(settings)
    [first] = [r for r in alerts(settings) if r["resourceType"] == "RiskAssessment" and "r-1" in r["basis"][0]["reference"]]

    send(settings.kafka_bootstrap, settings.topic, [message("r-1", "pat-1", HIGH, status="entered-in-error"),
                                                    message("never", "pat-1", HIGH, status="entered-in-error")])
    consume(settings)

    assert list(documents(es, settings)) == ["Patient/pat-2/Observation/r-2"]
    withdrawn = [r for r in alerts(settings) if r["id"] == first["id"] and r["status"] == "entered-in-error"]
    assert len(withdrawn) == 1
    RiskAssessment.model_validate(withdrawn[0])
    [dead] = read_all(settings.kafka_bootstrap, settings.dlq_topic)
    assert b"no such reading was seen" in dict(dead.headers)["bp.error.reason"]


def test_an_amendment_replaces_the_earlier_reading(settings, es):
    send(settings.kafka_bootstrap, settings.topic, [message("a-1", "pat-1", HIGH), message("a-2", "pat-1", HIGH)])
    consume(settings)
    send(settings.kafka_bootstrap, settings.topic, [message("a-1", "pat-1", (182, 104), status="amended"),
                                                    message("a-2", "pat-1", NORMAL, status="corrected")])
    consume(settings)

    docs = documents(es, settings)
    assert list(docs) == ["Patient/pat-1/Observation/a-1"]
    assert (docs["Patient/pat-1/Observation/a-1"]["systolic"], docs["Patient/pat-1/Observation/a-1"]["status"]) == \
        (182.0, "amended")
    archived = read_archive(settings.archive_dir, settings.topic)
    assert [(r["observation_id"], r["status"]) for r in archived] == [("a-2", "corrected")]
    assessments = [r for r in alerts(settings) if r["resourceType"] == "RiskAssessment"]
    assert Counter(r["status"] for r in assessments if "a-2" in r["basis"][0]["reference"]) == \
        Counter({"final": 1, "entered-in-error": 1})


def test_two_patients_with_the_same_observation_id_keep_two_documents(settings, es):
    send(settings.kafka_bootstrap, settings.topic, [message("same", "pat-1", HIGH), message("same", "pat-2", HIGH)])
    consume(settings)
    assert sorted(documents(es, settings)) == ["Patient/pat-1/Observation/same", "Patient/pat-2/Observation/same"]


def test_a_reading_from_the_future_is_dead_lettered_with_its_reason(settings, es):
    ahead = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    send(settings.kafka_bootstrap, settings.topic, [message("f-1", "pat-1", HIGH, effectiveDateTime=ahead),
                                                    message("f-2", "pat-1", HIGH)])
    consume(settings)
    assert es_count(es, settings.es_index) == 1
    [dead] = read_all(settings.kafka_bootstrap, settings.dlq_topic)
    assert b"f-1: effective time in the future" in dict(dead.headers)["bp.error.reason"]
