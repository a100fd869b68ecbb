"""Per-patient state in the consumer, kept the Kafka Streams way.

The topic's key is the patient id, so a patient's readings and state live with one
partition. This member keeps one ``PatientStore`` per assigned partition; every state
change goes to a compacted changelog topic named after the consumer group
(``<group>-patient-context-changelog``, as Kafka Streams names changelogs after the
application id), partition for partition, and is acknowledged before the offset of the
message that caused it is committed. On assignment (a start, a rebalance, a restart on
another host) a partition's store is restored from its changelog partition, up to its
end, before the partition's first batch is scored. A message replayed after a crash finds
its reading in the state (by observation id) and never counts twice.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from bp_core.context import ContextColumns, PatientStore, StatusChange
from bp_core.context.store import OUTCOMES
from bp_core.errors import TopicMissing

log = logging.getLogger("bp_core.consumer")

CHANGELOG_SUFFIX = "patient-context-changelog"
# Compacted: the latest state per patient is kept. Small segments and a low dirty ratio
# let the log cleaner compact often, so a restore reads about one record per patient.
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.ms": "600000", "segment.bytes": "33554432",
                    "min.cleanable.dirty.ratio": "0.1"}
REMOVED = OUTCOMES.index("removed")


def changelog_topic(group: str) -> str:
    """The changelog topic of a consumer group's patient state."""
    return f"{group}-{CHANGELOG_SUFFIX}"


class PatientContext:
    """The stores of the partitions this member owns, and their changelog.

    ``reader`` opens a consumer of no group (``bp_core.clients.kafka_consumer``) to
    restore from; ``topic`` is the changelog topic.
    """

    def __init__(self, topic: str, reader) -> None:
        self.topic = topic
        self._reader = reader
        self.stores: dict[int, PatientStore] = {}
        self.restore_seconds = 0.0     # the last restore's duration

    @property
    def in_sustained_hypertension(self) -> int:
        """Patients of the owned partitions in a sustained-hypertension episode."""
        return sum(store.patients_in_sustained_hypertension for store in self.stores.values())

    @property
    def patients(self) -> int:
        return sum(len(store) for store in self.stores.values())

    # ------------------------------------------------------------------ assignment

    def assigned(self, partitions: Sequence[int]) -> None:
        """Restore the stores of newly assigned partitions (already restored ones are kept)."""
        self.restore([p for p in partitions if p not in self.stores])

    def revoked(self, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.stores.pop(partition, None)

    def restore(self, partitions: Sequence[int]) -> None:
        """(Re)build these partitions' stores from their changelog partitions, to the end.

        Raises:
            StateFormatError: a record is not a state this version can read.
            TopicMissing: the changelog has fewer partitions than the source topic.
            KafkaError: the changelog cannot be read (the caller's batch is read again).
        """
        if not partitions:
            return
        from kafka import TopicPartition

        started = time.monotonic()
        consumer = self._reader()
        try:
            missing = sorted(set(partitions) - (consumer.partitions_for_topic(self.topic) or set()))
            if missing:
                raise TopicMissing(
                    f"the patient-state changelog {self.topic} has no partition {', '.join(map(str, missing))}: it "
                    f"needs the source topic's partition count. If partitions were added to the source topic, "
                    f"patients moved between partitions and their state cannot follow: delete {self.topic} to "
                    f"start the state afresh (it is rebuilt from the readings that follow)")
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            stores = {tp.partition: PatientStore() for tp in tps}
            pending = {tp for tp in tps if ends[tp] > consumer.position(tp)}
            records = 0
            while pending:
                for tp, batch in consumer.poll(timeout_ms=1000).items():
                    records += stores[tp.partition].restore((r.key, r.value) for r in batch)
                    if consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            consumer.close()
        self.stores.update(stores)
        self.restore_seconds = time.monotonic() - started
        log.info("patient state of partition(s) %s restored: %d patients from %d changelog records in %.2fs",
                 sorted(partitions), sum(len(stores[p]) for p in partitions), records, self.restore_seconds)

    # ------------------------------------------------------------------ a batch

    def apply(self, readings: Sequence, partitions: Sequence[int]
              ) -> tuple[ContextColumns, list[StatusChange], list[tuple[int, bytes, bytes | None]]]:
        """Apply a batch's readings (retractions too), each with its source partition, in
        Kafka order. Returns their context (aligned with ``readings``), the status
        changes, and the changelog records (partition, patient id, state or None)."""
        n = len(readings)
        by_partition: dict[int, list[int]] = {}
        for index, partition in enumerate(partitions):
            by_partition.setdefault(partition, []).append(index)
        if len(by_partition) == 1:
            ((partition, _),) = by_partition.items()
            return self._apply_one(partition, readings)
        columns = {name: None for name in ContextColumns.__dataclass_fields__}
        changes: list[StatusChange] = []
        records: list = []
        for partition, indices in by_partition.items():
            context, part_changes, part_records = self._apply_one(partition, [readings[i] for i in indices])
            where = np.asarray(indices)
            for name in columns:
                part = getattr(context, name)
                if columns[name] is None:
                    columns[name] = np.empty(n, dtype=part.dtype)
                columns[name][where] = part
            changes += part_changes
            records += part_records
        return ContextColumns(**columns), changes, records

    def _apply_one(self, partition: int, readings: Sequence):
        store = self.stores.get(partition)
        if store is None:  # assigned without the callback having run (never in a group): restore now
            self.restore([partition])
            store = self.stores[partition]
        result = store.apply_columns(
            [r.patient_id for r in readings], [r.observation_id for r in readings],
            [round(r.effective.timestamp() * 1000) if r.effective is not None else 0 for r in readings],
            [r.systolic_mm_hg for r in readings], [r.diastolic_mm_hg for r in readings],
            [r.status for r in readings])
        records = [(partition, patient.encode(), store.encode(patient)) for patient in result.changed]
        return result.context, result.status_changes, records
