"""The context of readings that come as a whole (a data set, a file), with the consumer's store.

Training and ``bp classify`` get their context from the same ``PatientStore`` code as the
consumer: the readings go through a fresh store in effective-time order (ties keep their
given order, as Kafka order does on the stream), and the columns come back aligned with
the input. A file or a data set has only its own history: a patient's first readings in
it have no baseline, whatever came before elsewhere.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from bp_core.context.store import ApplyResult, ContextColumns, PatientStore

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from bp_core.reading import Reading


def effective_ms(frame: "pd.DataFrame") -> np.ndarray:
    """A data set's ``effective`` column (tz-aware) as int64 epoch milliseconds."""
    values = frame["effective"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return values.astype("datetime64[ms]").astype(np.int64)


def _in_time_order(times: np.ndarray, apply) -> ApplyResult:
    order = np.argsort(times, kind="stable")
    result = apply(order)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return replace(result, context=result.context.take(inverse))


def context_of_frame(frame: "pd.DataFrame") -> ContextColumns:
    """The context of every reading of a data set (``bp_core.simulation.datasets``), row-aligned.

    Args:
        frame: readings with ``patient_id``, ``observation_id``, ``effective``,
            ``systolic_mm_hg``, ``diastolic_mm_hg`` (and optionally ``status``).
    Returns:
        ``ContextColumns`` in the frame's row order.
    """
    times = effective_ms(frame)
    patients = np.asarray(frame["patient_id"].tolist(), dtype=object)
    observations = np.asarray(frame["observation_id"].tolist(), dtype=object)
    systolic = frame["systolic_mm_hg"].to_numpy(np.float64)
    diastolic = frame["diastolic_mm_hg"].to_numpy(np.float64)
    statuses = np.asarray(frame["status"].tolist(), dtype=object) if "status" in frame.columns else None

    def apply(order: np.ndarray) -> ApplyResult:
        return PatientStore().apply_columns(
            patients[order].tolist(), observations[order].tolist(), times[order].tolist(),
            systolic[order].tolist(), diastolic[order].tolist(),
            None if statuses is None else statuses[order].tolist())

    return _in_time_order(times, apply).context


def apply_in_time_order(readings: Sequence["Reading"]) -> ApplyResult:
    """Readings of one file (any patients) through a fresh store in effective-time order.

    Returns:
        An ``ApplyResult`` whose ``context`` is aligned with ``readings`` (the status
        changes are in effective-time order).
    """
    times = np.fromiter((round(r.effective.timestamp() * 1000) for r in readings), dtype=np.int64,
                        count=len(readings))

    def apply(order: np.ndarray) -> ApplyResult:
        return PatientStore().apply([readings[i] for i in order.tolist()])

    return _in_time_order(times, apply)


def context_of_readings(readings: Sequence["Reading"]) -> ContextColumns:
    """The context columns of a file's readings (``bp classify``), aligned with ``readings``:
    each reading sees the earlier readings of its patient in the same file only."""
    return apply_in_time_order(readings).context
