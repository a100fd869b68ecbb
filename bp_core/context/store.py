"""Per-patient state of one source partition: each reading judged against the patient's last 7 days.

``PatientStore.apply`` takes a batch of readings in Kafka order and gives, for each, its
context (``ContextColumns``: baseline from at least 5 previous readings in the 7 days
before it, 7-day home average, ARV, time since the previous reading), the
sustained-hypertension changes it caused (``StatusChange``) and the patients whose state
changed (``encode`` them for the changelog). Late readings are placed by effective time;
a replayed reading gets back the context it was first given; ``entered-in-error``
removes one. Per patient: 7 days and at most ``MAX_READINGS``, 37 bytes a reading.
Definitions, rules and sources: docs/patient-context.md and
docs/internals.md#the-patient-store.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from hashlib import blake2b
from typing import Iterable, Sequence

import numpy as np

from bp_core.errors import StateFormatError

WINDOW_MS = 7 * 86_400_000
MAX_READINGS = 128
MIN_BASELINE_READINGS = 5
SUSTAINED_HYPERTENSION = "sustained_hypertension"
SUSTAINED_MIN_READINGS = 12
SUSTAINED_SYSTOLIC_MM_HG = 135.0
SUSTAINED_DIASTOLIC_MM_HG = 85.0
STARTED, ENDED = "started", "ended"

# What the store did with each reading (``ContextColumns.outcome`` holds the index).
NEW, LATE, TOO_OLD, REPLAYED, REPLACED, REMOVED, NOT_FOUND = range(7)
OUTCOMES: tuple[str, ...] = ("new", "late", "too_old", "replayed", "replaced", "removed", "not_found")
ENTERED_IN_ERROR = "entered-in-error"
FINAL = "final"  # a final reading later than the latest cannot be a replay or an update: no id lookup

FORMAT_VERSION = 1

# One reading: effective ms, observation-id digest, systolic and diastolic (0.1 mmHg), and
# the context it was given: readings in its window, their systolic and diastolic sums,
# the sum of |systolic steps| over the window and itself, whole seconds since the previous
# reading (-1: none).
_RECORD = struct.Struct("<q8shhBiiii")
_REC = _RECORD.size                      # 37 bytes
_HEAD_OF_RECORD = struct.Struct("<q8shh")  # the reading alone: time, id, values
_NO_PREVIOUS = -1
_NO_CONTEXT = 255                        # ``window`` of a removal's output row: no context
_RECORD_DTYPE = np.dtype([("effective", "<i8"), ("id", "S8"), ("systolic", "<i2"), ("diastolic", "<i2"),
                          ("window", "u1"), ("window_systolic", "<i4"), ("window_diastolic", "<i4"),
                          ("steps", "<i4"), ("gap", "<i4")])
assert _RECORD_DTYPE.itemsize == _REC

# Changelog value: version, flags, readings, the window's sums, the current or last
# episode's start, the last status change (kind, window end, cause, sums, readings),
# then the records.
_HEADER = struct.Struct("<BBHqqqqBq8sqqH")
_IN_EPISODE = 1

_SUSTAINED_SYSTOLIC = round(SUSTAINED_SYSTOLIC_MM_HG * 10)
_SUSTAINED_DIASTOLIC = round(SUSTAINED_DIASTOLIC_MM_HG * 10)
_CHANGE_KINDS = (None, STARTED, ENDED)


def _tenths(value: float) -> int:
    return int(value * 10.0 + 0.5)  # values are positive: round half up to 0.1 mmHg


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A patient entering or leaving ``sustained_hypertension``.

    ``effective`` is the end of the window that decided it (the patient's latest
    reading); ``episode_start`` identifies the episode (the same in its ``started`` and
    ``ended`` changes): downstream ids can be built from ``(patient_id, episode_start)``.
    A replay of the reading that caused a patient's last change reports it again,
    identical, so a change lost in a crash is still delivered at least once.
    """

    patient_id: str
    change: str                     # STARTED or ENDED
    effective: datetime
    episode_start: datetime
    home_average_systolic: float
    home_average_diastolic: float
    home_average_readings: int
    observation_id: str             # the reading that caused it
    status: str = SUSTAINED_HYPERTENSION

    @property
    def episode_start_ms(self) -> int:
        """The episode's start in epoch milliseconds (for deterministic ids)."""
        return round(self.episode_start.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ContextColumns:
    """The context of a batch of readings, one entry per reading in every column.

    Floats are NaN where a value does not exist (no baseline with fewer than
    ``MIN_BASELINE_READINGS`` previous readings, no ARV or previous reading for a first
    reading, nothing at all for a removal); counts are 0 then.
    """

    baseline_systolic: np.ndarray       # float64, mmHg
    baseline_diastolic: np.ndarray      # float64, mmHg
    baseline_readings: np.ndarray       # int64: previous readings in the window (the baseline's count when >= 5)
    home_average_systolic: np.ndarray   # float64: window + this reading
    home_average_diastolic: np.ndarray  # float64
    home_average_readings: np.ndarray   # int64
    arv_systolic: np.ndarray            # float64, mmHg
    seconds_since_previous: np.ndarray  # float64, whole seconds
    outcome: np.ndarray                 # uint8, index into OUTCOMES

    def __len__(self) -> int:
        return len(self.outcome)

    @classmethod
    def absent(cls, n: int) -> "ContextColumns":
        """Columns for ``n`` readings judged without history (state turned off)."""
        nan = np.full(n, np.nan)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(nan, nan.copy(), zeros, nan.copy(), nan.copy(), zeros.copy(), nan.copy(), nan.copy(),
                   np.full(n, NEW, dtype=np.uint8))

    @classmethod
    def from_records(cls, rows: bytes | bytearray, outcome: np.ndarray) -> "ContextColumns":
        """Columns from packed output rows (the state's record layout), vectorised."""
        table = np.frombuffer(rows, dtype=_RECORD_DTYPE)
        window = table["window"].astype(np.int64)
        known = window != _NO_CONTEXT
        window = np.where(known, window, 0)
        home_readings = np.where(known, window + 1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            has_baseline = window >= MIN_BASELINE_READINGS
            baseline_systolic = np.where(has_baseline, table["window_systolic"] / (10.0 * window), np.nan)
            baseline_diastolic = np.where(has_baseline, table["window_diastolic"] / (10.0 * window), np.nan)
            home_systolic = np.where(known, (table["window_systolic"] + table["systolic"]) / (10.0 * home_readings),
                                     np.nan)
            home_diastolic = np.where(known, (table["window_diastolic"] + table["diastolic"]) / (10.0 * home_readings),
                                      np.nan)
            arv = np.where(known & (window > 0), table["steps"] / (10.0 * window), np.nan)
        gap = table["gap"]
        seconds = np.where(known & (gap >= 0), gap.astype(np.float64), np.nan)
        return cls(baseline_systolic, baseline_diastolic, window, home_systolic, home_diastolic,
                   home_readings.astype(np.int64), arv, seconds, np.asarray(outcome, dtype=np.uint8))

    def take(self, order: np.ndarray) -> "ContextColumns":
        """The rows in another order (``order`` indexes these rows)."""
        return ContextColumns(*(getattr(self, name)[order] for name in self.__dataclass_fields__))


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying a batch gave: per-reading context, status changes, patients changed."""

    context: ContextColumns
    status_changes: list[StatusChange]
    changed: set[str]


# --------------------------------------------------------------------------- one patient


class PatientState:
    """One patient's readings of the last 7 days (packed records, oldest first) and status."""

    __slots__ = ("records", "count", "sum_systolic", "sum_diastolic", "steps", "first_effective",
                 "last_effective", "last_systolic", "in_episode", "episode_start", "last_change")

    def __init__(self) -> None:
        self.records = bytearray()
        self.count = 0
        self.sum_systolic = 0         # over the records, 0.1 mmHg
        self.sum_diastolic = 0
        self.steps = 0                # sum of |systolic steps| between consecutive records
        self.first_effective = 0      # ms, valid when count > 0
        self.last_effective = 0
        self.last_systolic = 0
        self.in_episode = False
        self.episode_start = 0        # ms: the current (or last) episode's start
        # (kind index, window end ms, cause digest, sum systolic, sum diastolic, readings)
        self.last_change: tuple[int, int, bytes, int, int, int] | None = None

    def readings(self) -> list[tuple[int, bytes, int, int, int, int, int, int, int]]:
        """The records unpacked, oldest first (tests, slow paths)."""
        return list(_RECORD.iter_unpack(self.records))

    def _find(self, digest: bytes) -> int:
        """Index of the record with this observation digest, or -1."""
        records = self.records
        position = records.find(digest)
        while position != -1:
            if position % _REC == 8:
                return position // _REC
            position = records.find(digest, position + 1)
        return -1

    def _remove(self, index: int) -> None:
        """Remove record ``index``, keeping the sums and the steps right."""
        rows = self.readings()
        _, _, systolic, diastolic, *_ = rows[index]
        self.sum_systolic -= systolic
        self.sum_diastolic -= diastolic
        before = rows[index - 1][2] if index > 0 else None
        after = rows[index + 1][2] if index + 1 < len(rows) else None
        if before is not None:
            self.steps -= abs(systolic - before)
        if after is not None:
            self.steps -= abs(after - systolic)
        if before is not None and after is not None:
            self.steps += abs(after - before)
        del self.records[index * _REC:(index + 1) * _REC]
        self.count -= 1
        self._refresh_ends()

    def _refresh_ends(self) -> None:
        if self.count:
            self.first_effective = _HEAD_OF_RECORD.unpack_from(self.records, 0)[0]
            self.last_effective, _, self.last_systolic, _ = _HEAD_OF_RECORD.unpack_from(
                self.records, (self.count - 1) * _REC)
        else:
            self.steps = 0


# --------------------------------------------------------------------------- the store


class PatientStore:
    """The state of the patients of one source partition, keyed by patient id.

    How the consumer uses it: one store per assigned partition; per batch, ``apply``
    the partition's readings in Kafka order, score with ``ApplyResult.context``, and
    write ``encode(patient)`` for each patient of ``ApplyResult.changed`` to the
    changelog (key: the patient id, UTF-8; a None value is a tombstone) before
    committing the batch's offsets; on assignment, ``restore`` the changelog partition
    into a fresh store before the first batch. Not thread-safe: used by one thread.
    """

    def __init__(self) -> None:
        self._patients: dict[str, PatientState] = {}
        self._in_episode = 0

    def __len__(self) -> int:
        return len(self._patients)

    def __contains__(self, patient_id: str) -> bool:
        return patient_id in self._patients

    @property
    def patients_in_sustained_hypertension(self) -> int:
        """How many patients of this store are in a sustained-hypertension episode (a gauge)."""
        return self._in_episode

    def state(self, patient_id: str) -> PatientState | None:
        """A patient's state, or None (read-only use: tests, diagnostics)."""
        return self._patients.get(patient_id)

    # ------------------------------------------------------------------- applying

    def apply(self, readings: Sequence) -> ApplyResult:
        """Apply a batch of ``bp_core.reading.Reading`` in Kafka order.

        Returns:
            An ``ApplyResult``: ``context`` aligned with ``readings``, the status changes
            in the order they happened, the ids of the patients whose state changed.
        """
        return self.apply_columns(
            [r.patient_id for r in readings], [r.observation_id for r in readings],
            [round(r.effective.timestamp() * 1000) for r in readings],
            [r.systolic_mm_hg for r in readings], [r.diastolic_mm_hg for r in readings],
            [r.status for r in readings])

    def apply_columns(self, patient_ids: Sequence[str], observation_ids: Sequence[str],
                      effective_ms: Sequence[int], systolic: Sequence[float], diastolic: Sequence[float],
                      statuses: Sequence[str] | None = None) -> ApplyResult:
        """``apply`` on columns (lists or arrays of equal length), in the order given.

        ``effective_ms`` is epoch milliseconds (UTC); ``statuses`` are FHIR Observation
        statuses (None: all ``final``). Values of an ``entered-in-error`` row are ignored.
        """
        patients = self._patients
        rows = bytearray()
        outcome = bytearray()
        changes: list[StatusChange] = []
        changed: set[str] = set()
        append = self._append
        if statuses is None:
            statuses = (FINAL,) * len(patient_ids)
        for patient_id, observation_id, effective, s, d, status in zip(
                patient_ids, observation_ids, effective_ms, systolic, diastolic, statuses):
            # The state keeps an 8-byte BLAKE2b digest of each observation id: stable across
            # processes (``hash`` is not); two of one patient's <= 128 readings collide
            # with a probability under 1e-15.
            digest = blake2b(observation_id.encode(), digest_size=8).digest()
            state = patients.get(patient_id)
            if state is None:
                if status == ENTERED_IN_ERROR:
                    rows += _no_context_row(effective, digest)
                    outcome.append(NOT_FOUND)
                    continue
                state = patients[patient_id] = PatientState()
            elif effective <= state.last_effective or status != FINAL:
                row, code, moved = self._apply_slow(state, patient_id, observation_id, digest, effective, s, d,
                                                    status, changes)
                rows += row
                outcome.append(code)
                if moved:
                    changed.add(patient_id)
                    if not state.count:
                        del patients[patient_id]  # every reading removed: the changelog gets a tombstone
                continue
            rows += append(state, patient_id, observation_id, digest, effective, int(s * 10.0 + 0.5),
                           int(d * 10.0 + 0.5), changes)  # _tenths, inlined
            outcome.append(NEW)
            changed.add(patient_id)
        return ApplyResult(ContextColumns.from_records(rows, np.frombuffer(outcome, dtype=np.uint8)), changes, changed)

    def _append(self, state: PatientState, patient_id: str, observation_id: str, digest: bytes, effective: int,
                s10: int, d10: int, changes: list[StatusChange]) -> bytes:
        """Add a reading later than the patient's latest (the common case); return its record.

        Written for speed (locals, one ``del`` for the readings that leave the window):
        it runs once per reading.
        """
        records = state.records
        count = state.count
        sum_s = state.sum_systolic
        sum_d = state.sum_diastolic
        if count:
            gap = (effective - state.last_effective) // 1000
            steps = state.steps
            first = state.first_effective
            cutoff = effective - WINDOW_MS
            dropped = 0
            while count and (first <= cutoff or count >= MAX_READINGS):  # the oldest leaves the window
                _, _, old_s, old_d = _HEAD_OF_RECORD.unpack_from(records, dropped)
                sum_s -= old_s
                sum_d -= old_d
                count -= 1
                dropped += _REC
                if count:
                    first, _, following, _ = _HEAD_OF_RECORD.unpack_from(records, dropped)
                    steps -= abs(following - old_s)
            if dropped:
                del records[:dropped]
            steps = steps + abs(s10 - state.last_systolic) if count else 0
            state.first_effective = first if count else effective
        else:
            gap, steps = _NO_PREVIOUS, 0
            state.first_effective = effective
        record = _RECORD.pack(effective, digest, s10, d10, count, sum_s, sum_d, steps, gap)
        records += record
        count += 1
        sum_s += s10
        sum_d += d10
        state.count = count
        state.sum_systolic = sum_s
        state.sum_diastolic = sum_d
        state.steps = steps
        state.last_effective = effective
        state.last_systolic = s10
        if (count >= SUSTAINED_MIN_READINGS and (sum_s >= _SUSTAINED_SYSTOLIC * count
                                                 or sum_d >= _SUSTAINED_DIASTOLIC * count)) is not state.in_episode:
            changes.append(self._status_changed(state, patient_id, observation_id, digest))
        return record

    def _apply_slow(self, state: PatientState, patient_id: str, observation_id: str, digest: bytes, effective: int,
                    s: float, d: float, status: str, changes: list[StatusChange]) -> tuple[bytes, int, bool]:
        """A reading not later than the patient's latest, or not ``final``: a replay, an
        update, a removal or a late reading. Returns (output row, outcome, whether the
        state changed)."""
        index = state._find(digest)
        if status == ENTERED_IN_ERROR:
            if index < 0:
                return _no_context_row(effective, digest), NOT_FOUND, False
            state._remove(index)
            self._evaluate(state, patient_id, observation_id, digest, changes)
            return _no_context_row(effective, digest), REMOVED, True
        s10, d10 = _tenths(s), _tenths(d)
        code = LATE
        if index >= 0:
            held = bytes(state.records[index * _REC:(index + 1) * _REC])
            if _HEAD_OF_RECORD.unpack_from(held, 0) == (effective, digest, s10, d10):
                self._report_again(state, patient_id, observation_id, digest, changes)
                return held, REPLAYED, False
            state._remove(index)  # evaluated once the new version is in
            code = REPLACED
        if not state.count or effective > state.last_effective:
            record = self._append(state, patient_id, observation_id, digest, effective, s10, d10, changes)
            return record, NEW if code == LATE else code, True
        if effective <= state.last_effective - WINDOW_MS or (
                state.count >= MAX_READINGS and effective < state.first_effective):
            # Too old to move the state; an update to it still took the old version out.
            if code == REPLACED:
                self._evaluate(state, patient_id, observation_id, digest, changes)
            return _RECORD.pack(effective, digest, s10, d10, 0, 0, 0, 0, _NO_PREVIOUS), TOO_OLD, code == REPLACED
        record = self._insert_late(state, effective, digest, s10, d10)
        self._evaluate(state, patient_id, observation_id, digest, changes)
        return record, code, True

    @staticmethod
    def _insert_late(state: PatientState, effective: int, digest: bytes, s10: int, d10: int) -> bytes:
        """Place a reading not later than the latest among the records; return its record.

        Every reading held is less than 7 days older than the latest, and this one is not
        later: its window is every reading held before it, whose sums are the state's
        minus those of the readings after it (usually few: the work grows with lateness).
        """
        records, count = state.records, state.count
        head = _HEAD_OF_RECORD.unpack_from
        position = count   # after every reading up to its time (ties: after them)
        while position and head(records, (position - 1) * _REC)[0] > effective:
            position -= 1
        # Its predecessor (when it has one), then the readings later than it.
        later = [head(records, i * _REC) for i in range(max(position - 1, 0), count)]
        sum_s = state.sum_systolic - sum(row[2] for row in later[1 if position else 0:])
        sum_d = state.sum_diastolic - sum(row[3] for row in later[1 if position else 0:])
        steps = state.steps - sum(abs(later[i + 1][2] - later[i][2]) for i in range(len(later) - 1))
        before = later[0][2] if position else None
        after = later[1 if position else 0][2] if position < count else None
        if position:
            steps += abs(s10 - before)
            gap = (effective - later[0][0]) // 1000
        else:
            gap = _NO_PREVIOUS
        record = _RECORD.pack(effective, digest, s10, d10, position, sum_s, sum_d, steps, gap)
        if before is not None:
            state.steps += abs(s10 - before)
        if after is not None:
            state.steps += abs(after - s10)
        if before is not None and after is not None:
            state.steps -= abs(after - before)
        records[position * _REC:position * _REC] = record
        state.count += 1
        state.sum_systolic += s10
        state.sum_diastolic += d10
        state._refresh_ends()
        if state.count > MAX_READINGS:
            state._remove(0)
        return record

    # ------------------------------------------------------------------- status

    def _evaluate(self, state: PatientState, patient_id: str, observation_id: str, digest: bytes,
                  changes: list[StatusChange]) -> None:
        count = state.count
        now = count >= SUSTAINED_MIN_READINGS and (state.sum_systolic >= _SUSTAINED_SYSTOLIC * count
                                                   or state.sum_diastolic >= _SUSTAINED_DIASTOLIC * count)
        if now is not state.in_episode:
            changes.append(self._status_changed(state, patient_id, observation_id, digest))

    def _status_changed(self, state: PatientState, patient_id: str, observation_id: str,
                        digest: bytes) -> StatusChange:
        state.in_episode = not state.in_episode
        if state.in_episode:
            state.episode_start = state.last_effective
            self._in_episode += 1
        else:
            self._in_episode -= 1
        state.last_change = (STARTED_INDEX if state.in_episode else ENDED_INDEX, state.last_effective, digest,
                             state.sum_systolic, state.sum_diastolic, state.count)
        return _change(patient_id, state.last_change, state.episode_start, observation_id)

    @staticmethod
    def _report_again(state: PatientState, patient_id: str, observation_id: str, digest: bytes,
                      changes: list[StatusChange]) -> None:
        if state.last_change is not None and state.last_change[2] == digest:
            changes.append(_change(patient_id, state.last_change, state.episode_start, observation_id))

    # ------------------------------------------------------------------- changelog

    def encode(self, patient_id: str) -> bytes | None:
        """The patient's state as a changelog value; None (a tombstone) when the store
        holds nothing for them."""
        state = self._patients.get(patient_id)
        return None if state is None else encode_state(state)

    def load(self, patient_id: str, value: bytes | None) -> None:
        """Set a patient's state from a changelog value (None: forget the patient).

        Raises:
            StateFormatError: the value is not a state this version can read.
        """
        previous = self._patients.pop(patient_id, None)
        if previous is not None and previous.in_episode:
            self._in_episode -= 1
        if value is not None:
            state = decode_state(value)
            self._patients[patient_id] = state
            if state.in_episode:
                self._in_episode += 1

    def restore(self, records: Iterable[tuple[bytes | str, bytes | None]]) -> int:
        """Load many changelog records in log order (the last one per key wins).

        Args:
            records: (key, value) pairs; keys are patient ids (UTF-8 bytes or str),
                values changelog values or None (tombstones).
        Returns:
            How many records were read.
        Raises:
            StateFormatError: a value is not a state this version can read.
        """
        patients = self._patients
        read = 0
        for key, value in records:
            read += 1
            patient_id = key.decode() if isinstance(key, (bytes, bytearray)) else key
            if value is None:
                patients.pop(patient_id, None)
            else:
                patients[patient_id] = decode_state(value)
        self._in_episode = sum(1 for state in patients.values() if state.in_episode)
        return read


STARTED_INDEX, ENDED_INDEX = 1, 2


def _change(patient_id: str, last_change: tuple, episode_start: int, observation_id: str) -> StatusChange:
    kind, at, _, sum_s, sum_d, count = last_change
    return StatusChange(patient_id=patient_id, change=_CHANGE_KINDS[kind], effective=_datetime(at),
                        episode_start=_datetime(episode_start), home_average_systolic=sum_s / (10.0 * count),
                        home_average_diastolic=sum_d / (10.0 * count), home_average_readings=count,
                        observation_id=observation_id)


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _no_context_row(effective: int, digest: bytes) -> bytes:
    return _RECORD.pack(effective, digest, 0, 0, _NO_CONTEXT, 0, 0, 0, _NO_PREVIOUS)


# --------------------------------------------------------------------------- codec


def encode_state(state: PatientState) -> bytes:
    """A patient's state as compact bytes (``FORMAT_VERSION``): a 71-byte header, then
    37 bytes per reading."""
    change = state.last_change
    flags = _IN_EPISODE if state.in_episode else 0
    if change is None:
        header = _HEADER.pack(FORMAT_VERSION, flags, state.count, state.sum_systolic, state.sum_diastolic,
                              state.steps, state.episode_start, 0, 0, b"\0" * 8, 0, 0, 0)
    else:
        kind, at, cause, sum_s, sum_d, count = change
        header = _HEADER.pack(FORMAT_VERSION, flags, state.count, state.sum_systolic, state.sum_diastolic,
                              state.steps, state.episode_start, kind, at, cause, sum_s, sum_d, count)
    return header + state.records


def decode_state(value: bytes) -> PatientState:
    """The state ``encode_state`` wrote.

    Raises:
        StateFormatError: another format version, or a truncated or inconsistent value.
    """
    if not value or value[0] != FORMAT_VERSION:
        found = value[0] if value else "empty"
        raise StateFormatError(f"patient state format version {found}, this version reads {FORMAT_VERSION}")
    if len(value) < _HEADER.size:
        raise StateFormatError(f"patient state truncated: {len(value)} bytes, the header alone is {_HEADER.size}")
    (_, flags, count, sum_s, sum_d, steps, episode_start, kind, at, cause, change_s, change_d,
     change_count) = _HEADER.unpack_from(value, 0)
    if len(value) != _HEADER.size + count * _REC or kind not in (0, STARTED_INDEX, ENDED_INDEX):
        raise StateFormatError(f"patient state inconsistent: {len(value)} bytes for {count} readings")
    state = PatientState()
    state.records = bytearray(memoryview(value)[_HEADER.size:])
    state.count = count
    state.sum_systolic, state.sum_diastolic, state.steps = sum_s, sum_d, steps
    state.in_episode = bool(flags & _IN_EPISODE)
    state.episode_start = episode_start
    state.last_change = (kind, at, cause, change_s, change_d, change_count) if kind else None
    if count:
        state._refresh_ends()
    return state
