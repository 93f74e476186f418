"""The fast scorer the daemon's inferencer calls: same results as ``ModelBundle.score``, quicker.

:meth:`model.bundle.ModelBundle.score` is the simple reference; :class:`Scorer` computes
the same :class:`~model.scores.ObjectScore` list (same preprocessing, same network, same
per-object combination through :mod:`model.scores`) and differs only in how the work is
scheduled:

* periods are estimated once per call, all light curves in one batch on the GPU when
  there is one (:func:`model.period.estimate_periods`), or taken from the caller (the daemon can keep
  an object's period between alerts);
* preprocessing (:func:`model.features.prepare_batch`, the training code itself) runs in
  a thread pool over slices of the light curves (numpy releases the GIL in its array
  loops), overlapping with the device;
* chunks are sorted by length and cut into batches of similar lengths, each truncated to
  its own longest chunk, so that short live light curves do not pay for 200 RNN steps;
* host arrays go through pinned staging buffers with non-blocking copies (two buffers in
  turn, so the next batch is staged while the device works on the last);
* on CUDA the network runs under ``torch.autocast`` (float16 by default: cuDNN's RNN
  kernels take it; about 2x float32 on an H100, docs/BENCHMARKS.md "infer"); the GMM
  energy, a log-sum-exp of Mahalanobis distances, always runs in float32;
* everything runs under ``torch.inference_mode`` and results come back to the host once.

CUDA graphs and ``torch.compile`` were left out: on an H100 the device part of a served
batch is under a tenth of its time; preprocessing, period estimation and the per-object
combination on the host are the rest (docs/BENCHMARKS.md, "infer").
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from model.bundle import ModelBundle, resolve_device
from model.lightcurve import LightCurve
from model.features import PreparedBatch, prepare_batch, resolve_periods
from model.gmm import energy
from model.scores import ObjectScore, combine_chunks, object_scores

#: Light curves per preprocessing task: large enough that numpy's per-call overhead is
#: small, small enough that several threads share a batch.
PREPARE_SLICE = 2048


@dataclass(frozen=True)
class ChunkResults:
    """Per-chunk outputs in the PreparedBatch's order: ``log_probs`` (N, K) and ``energy`` (N,), float64."""

    log_probs: np.ndarray
    energy: np.ndarray


class Scorer:
    """Scores light curves with a bundle on a device (``"auto"``: CUDA when present, else CPU).

    ``mixed_precision`` runs the network in float16 on CUDA (ignored on CPU, where float32
    is faster for these RNNs). ``max_batch``: chunks per forward pass (device memory).
    ``workers``: preprocessing threads (default: one per core, at most 16).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device = "auto",
        mixed_precision: bool = True,
        *,
        max_batch: int = 16384,
        workers: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.bundle = bundle
        self.device = resolve_device(device)
        self.network = copy.deepcopy(bundle.network).to(self.device).eval()
        self.gmm = bundle.gmm.to(self.device, torch.float32)
        self.preprocess = bundle.preprocess
        self.class_names = bundle.class_names
        self.thresholds = dict(bundle.thresholds)
        self.max_batch = max_batch
        self.autocast_dtype = torch.float16 if mixed_precision and self.device.type == "cuda" else None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.workers = workers or min(16, cores)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="prepare") if self.workers > 1 else None
        self._staging: list[_Staging] = []

    def close(self) -> None:
        """Stop the preprocessing threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------

    def score(self, lcs: Sequence[LightCurve], periods: np.ndarray | Sequence[float] | None = None) -> list[ObjectScore]:
        """One ObjectScore per object with at least one chunk, in first-appearance order.

        Same result as ``bundle.score(lcs)``. ``periods`` (one per light curve, NaN where
        unknown) skips estimation for the light curves that have one.
        """
        batch = self.prepare(lcs, periods)
        results = self.score_prepared(batch)
        object_ids = [lcs[i].object_id for i in batch.owner]
        combined = combine_chunks(object_ids, results.log_probs, results.energy, batch.lengths)
        return object_scores(combined, self.class_names, self.thresholds)

    def estimate_periods(self, lcs: Sequence[LightCurve]) -> np.ndarray:
        """The period each light curve will be folded with (NaN for those yielding no chunk).

        Only light curves that can yield a chunk (accepted band, at least ``n_min`` points)
        are estimated, all in one batch (:func:`model.features.resolve_periods`, which runs
        the estimator on CUDA whenever one is present).
        """
        cfg = self.preprocess
        periods = np.full(len(lcs), np.nan)
        candidates = [i for i, lc in enumerate(lcs) if cfg.accepts(lc.band) and len(lc) >= cfg.n_min]
        if candidates:
            periods[candidates] = resolve_periods([lcs[i] for i in candidates], cfg)
        return periods

    def prepare(self, lcs: Sequence[LightCurve], periods: np.ndarray | Sequence[float] | None = None) -> PreparedBatch:
        """:func:`model.features.prepare_batch` over slices of ``lcs`` in the thread pool, concatenated."""
        known = np.full(len(lcs), np.nan) if periods is None else np.asarray(periods, dtype=np.float64).copy()
        if known.shape != (len(lcs),):
            raise ValueError(f"periods must have one value per light curve ({len(lcs)}), got shape {known.shape}")
        missing = np.flatnonzero(~np.isfinite(known))
        if missing.size:
            known[missing] = self.estimate_periods([lcs[i] for i in missing])
        cfg = self.preprocess
        starts = list(range(0, len(lcs), PREPARE_SLICE))

        def prepare_slice(start: int) -> PreparedBatch:
            part = slice(start, start + PREPARE_SLICE)
            return prepare_batch(lcs[part], cfg, known[part], pad_to=cfg.n_max)

        if self._pool is None or len(starts) <= 1:
            parts = [prepare_slice(start) for start in starts]
        else:
            parts = list(self._pool.map(prepare_slice, starts))
        return _concatenate(parts, starts, len(lcs), cfg.n_max)

    @torch.inference_mode()
    def score_prepared(self, batch: PreparedBatch) -> ChunkResults:
        """Per-chunk log-probabilities and energies of a prepared batch (same order as its rows)."""
        k = self.network.config.num_classes
        n = len(batch)
        if n == 0:
            return ChunkResults(np.zeros((0, k)), np.zeros(0))
        order = np.argsort(batch.lengths, kind="stable")
        log_probs = torch.empty((n, k), dtype=torch.float32, device=self.device)
        energies = torch.empty(n, dtype=torch.float32, device=self.device)
        for number, start in enumerate(range(0, n, self.max_batch)):
            rows = order[start : start + self.max_batch]
            width = int(batch.lengths[rows[-1]])  # sorted: the longest of this batch
            inputs, lengths, supports, index = self._stage(number, batch, rows, width)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
                out = self.network(inputs, lengths, supports)
            log_probs[index] = torch.log_softmax(out.logits.float(), dim=1)
            energies[index] = energy(out.z.float(), self.gmm)
        return ChunkResults(log_probs.cpu().double().numpy(), energies.cpu().double().numpy())

    # -- internals ----------------------------------------------------------------------

    def _stage(self, number: int, batch: PreparedBatch, rows: np.ndarray, width: int):
        """Device tensors for ``rows`` truncated to ``width`` steps (pinned, non-blocking on CUDA)."""
        if self.device.type != "cuda":
            return (
                torch.from_numpy(np.ascontiguousarray(batch.inputs[rows, :width])),
                torch.from_numpy(batch.lengths[rows]),
                torch.from_numpy(batch.supports[rows]),
                torch.from_numpy(rows.astype(np.int64)),
            )
        while len(self._staging) < 2:
            self._staging.append(_Staging(self.max_batch, self.preprocess.n_max))
        return self._staging[number % 2].upload(batch, rows, width, self.device)


class _Staging:
    """One set of pinned host buffers; ``upload`` waits until its previous copy has left."""

    def __init__(self, rows: int, steps: int) -> None:
        self.inputs = torch.empty((rows, steps, 2), dtype=torch.float32).pin_memory()
        self.lengths = torch.empty(rows, dtype=torch.int64).pin_memory()
        self.supports = torch.empty((rows, 3), dtype=torch.float32).pin_memory()
        self.index = torch.empty(rows, dtype=torch.int64).pin_memory()
        self.copied: torch.cuda.Event | None = None

    def upload(self, batch: PreparedBatch, rows: np.ndarray, width: int, device: torch.device):
        """Gather ``rows`` straight into the pinned buffers (one host copy), then copy them over."""
        if self.copied is not None:
            self.copied.synchronize()
        n = rows.size
        inputs = self.inputs.view(-1)[: n * width * 2].view(n, width, 2)
        np.take(batch.inputs[:, :width], rows, axis=0, out=inputs.numpy())
        np.take(batch.lengths, rows, out=self.lengths[:n].numpy())
        np.take(batch.supports, rows, axis=0, out=self.supports[:n].numpy())
        self.index[:n].numpy()[...] = rows
        moved = tuple(
            buffer.to(device, non_blocking=True) for buffer in (inputs, self.lengths[:n], self.supports[:n], self.index[:n])
        )
        self.copied = torch.cuda.Event()
        self.copied.record()
        return moved


def _concatenate(parts: list[PreparedBatch], offsets: list[int], n_lcs: int, width: int) -> PreparedBatch:
    """One PreparedBatch from slices; ``owner`` shifted back to positions in the whole list."""
    if len(parts) == 1 and offsets[0] == 0:
        return parts[0]
    periods = np.full(n_lcs, np.nan)
    for part, offset in zip(parts, offsets):
        periods[offset : offset + part.periods.size] = part.periods
    non_empty = [(p, o) for p, o in zip(parts, offsets) if len(p)]
    if not non_empty:
        return PreparedBatch(
            np.zeros((0, width, 2), np.float32), np.zeros((0, width), np.float32), np.zeros(0, np.int64),
            np.zeros((0, 3), np.float32), np.zeros(0, np.int64), periods,
        )
    return PreparedBatch(
        inputs=np.concatenate([p.inputs for p, _ in non_empty]),
        weights=np.concatenate([p.weights for p, _ in non_empty]),
        lengths=np.concatenate([p.lengths for p, _ in non_empty]),
        supports=np.concatenate([p.supports for p, _ in non_empty]),
        owner=np.concatenate([p.owner + o for p, o in non_empty]),
        periods=periods,
    )
