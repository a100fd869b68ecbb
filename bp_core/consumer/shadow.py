"""Shadow scoring in the consumer: the 'challenger' scores every batch too, never routes.

While a ``challenger`` exists that is not the serving champion, each batch's readings
are scored by it on the features it expects, and the rules' flags, the champion's and
the challenger's probabilities go to a ``bp_core.model.shadow.ShadowRecorder``, which
keeps the live evidence the promotion gate reads (MLflow metrics on the challenger's
run, Prometheus on ``/metrics``). The challenger is followed with the same background
refresh as the champion, and one that cannot be loaded is simply absent: a batch never
waits for it.
"""

from __future__ import annotations

import logging

import numpy as np

from bp_core.scoring import ScoredBatch, model_probabilities

log = logging.getLogger("bp_core.consumer")


class ShadowScoring:
    """The challenger's provider and the evidence recorder of one consumer."""

    def __init__(self, settings, *, refresh_seconds: float, registry) -> None:
        from bp_core.model.registry import CHALLENGER
        from bp_core.model.serving import ModelProvider
        from bp_core.model.shadow import ShadowRecorder

        self.provider = ModelProvider(settings, refresh_seconds=refresh_seconds, background=True, alias=CHALLENGER)
        self.recorder = ShadowRecorder(settings, registry=registry)
        self.scored = 0   # readings shadow-scored by this process

    def start(self) -> None:
        self.provider.start()
        self.recorder.start()

    def refresh(self) -> None:
        """Between batches: take up a challenger that moved (no I/O: the refresh runs apart)."""
        if self.provider.maybe_refresh():
            current = self.provider.current
            log.info("shadow scoring with %s", f"challenger version {current.version}" if current else "no challenger")

    def score(self, scored: ScoredBatch, champion) -> None:
        """Score a batch with the challenger when there is one that is not ``champion``."""
        challenger = self.provider.current
        if challenger is None or champion is None or challenger.version == champion.version or not len(scored):
            return
        try:
            probabilities = model_probabilities(challenger, scored.systolic, scored.diastolic, scored.context)
        except Exception as exc:  # a challenger that cannot score never holds up the batch
            log.warning("challenger version %s could not score a batch: %s: %s", challenger.version,
                        type(exc).__name__, exc)
            return
        self.recorder.record(challenger.version, champion.version, np.asarray(scored.rule_anomaly, dtype=bool),
                             np.asarray(scored.model_probability, dtype=np.float64), probabilities)
        self.scored += len(scored)

    def close(self) -> None:
        self.recorder.close()
        self.provider.close()
