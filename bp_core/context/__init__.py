"""Patient context: each reading judged against the patient's own last 7 days.

``store`` holds the per-partition state (``PatientStore``: apply a batch, encode and
load a patient's state for the changelog, restore in bulk); ``history`` computes the
same context for a whole data set or file with the same store. Pure: no I/O.
"""

from bp_core.context.history import context_of_frame, context_of_readings
from bp_core.context.store import (MAX_READINGS, MIN_BASELINE_READINGS, OUTCOMES, SUSTAINED_HYPERTENSION,
                                   WINDOW_MS, ApplyResult, ContextColumns, PatientStore, StatusChange,
                                   decode_state, encode_state)

__all__ = [
    "MAX_READINGS", "MIN_BASELINE_READINGS", "OUTCOMES", "SUSTAINED_HYPERTENSION", "WINDOW_MS",
    "ApplyResult", "ContextColumns", "PatientStore", "StatusChange", "context_of_frame", "context_of_readings",
    "decode_state", "encode_state",
]
