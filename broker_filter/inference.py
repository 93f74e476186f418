"""The inferencer: a model bundle behind :class:`broker_filter.model.serving.Scorer`, fed micro-batches.

Everything that makes scoring fast (period estimation batched on the device, length
bucketing, pinned host memory with non-blocking copies, mixed precision on CUDA) lives in
the Scorer, which runs the same preprocessing as training (:mod:`broker_filter.model.features`); this
module only maps the daemon's score requests onto it and back. Periods come from the
caller (the pipeline's :class:`~broker_filter.periods.PeriodMemo`), which uses
:meth:`Inferencer.estimate_periods` for the curves it has to search.

Two alerts of one object may sit in one batch, each with its own as-of light curve, so each
request is scored under a unique id (its position in the batch) and the scores are mapped
back to requests by that id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from broker_filter.model.lightcurve import LightCurve
from broker_filter.model.scores import ObjectScore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceResult:
    """``scores[i]`` for request i (None if the model found no chunk to score); wall seconds."""

    scores: list[ObjectScore | None]
    seconds: float


class Inferencer:
    """Loads a bundle (the packaged default when ``bundle_path`` is empty) and scores requests."""

    def __init__(self, bundle_path: str | None = None, device: str = "auto", mixed_precision: bool = True) -> None:
        import torch

        from broker_filter.model.bundle import ModelBundle, resolve_device
        from broker_filter.model.serving import Scorer

        self.device = resolve_device(device)
        self.bundle = ModelBundle.load(bundle_path or None, device=self.device)
        self.scorer = Scorer(self.bundle, device=str(self.device), mixed_precision=mixed_precision and self.device.type == "cuda")
        log.info(
            "model bundle %s (version %s) on %s%s",
            self.bundle.bundle_id,
            self.bundle.version,
            self.device,
            f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "",
        )

    def close(self) -> None:
        """Stop the scorer's preprocessing threads."""
        self.scorer.close()

    @property
    def n_min(self) -> int:
        return self.bundle.preprocess.n_min

    @property
    def model_bands(self) -> tuple[str, ...] | None:
        return self.bundle.preprocess.bands

    def estimate_periods(self, lcs: Sequence[LightCurve]) -> np.ndarray:
        """The scorer's batched period search (CUDA when the bundle is there) on ``lcs``."""
        return self.scorer.estimate_periods(lcs)

    def score(self, requests: Sequence[Sequence[LightCurve]], periods: np.ndarray | None = None) -> InferenceResult:
        """Score each request (one object's light curves, one per band) as one object.

        ``periods``: one per light curve, requests flattened in order (NaN: the scorer
        searches that curve's whole length); the seconds counted include that search.
        """
        started = time.perf_counter()
        renamed = [LightCurve(str(i), lc.band, lc.time, lc.mag, lc.mag_err) for i, curves in enumerate(requests) for lc in curves]
        by_request = {int(score.object_id): score for score in self.scorer.score(renamed, periods)} if renamed else {}
        return InferenceResult([by_request.get(i) for i in range(len(requests))], time.perf_counter() - started)
