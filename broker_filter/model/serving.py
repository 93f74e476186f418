"""The fast scorer the daemon's inferencer calls: same results as ``ModelBundle.score``, quicker.

:meth:`broker_filter.model.bundle.ModelBundle.score` is the simple reference (numpy preprocessing, one
``ObjectScore`` per object). :class:`Scorer` computes the same scores and differs only in
where and how the work runs. The profile of the previous design (docs/BENCHMARKS.md,
"infer") put 95% of a served GPU batch on the host: numpy preprocessing, grouping chunks by
string object ids, and one Python object per result. Hence:

* **columnar in, columnar out.** :meth:`Scorer.score_batch` takes a
  :class:`~broker_filter.model.lightcurve.LightCurveBatch` (flat point columns, what a table or the
  daemon's state holds) and returns a :class:`~broker_filter.model.scores.ScoreBatch` (arrays per
  object). :meth:`Scorer.score` keeps the list-of-``LightCurve`` API on top of them;
* **the host only plans.** It cuts chunks (:func:`broker_filter.model.features.chunk_layout`, integers
  per chunk) and numbers the objects; points cross to the device raw (float64 time,
  float32 magnitude and error: 16 bytes a point, from pinned memory without a host copy
  when the batch lives there). Whether the points need cleaning (non-finite values,
  non-positive errors, times out of order) is checked on the device alongside the
  scoring; only a batch that does is cleaned on the host and scored again (on the host
  the check cost as much as the whole GPU part of a batch);
* **preprocessing on the device** (:func:`broker_filter.model.features.prepare_chunks`: fold with
  float64 phases, per-row sort, lags, centring, scaling, supports), then the network, the
  GMM energy and the per-object sums (``index_add_`` on an integer row per chunk,
  :func:`broker_filter.model.scores.sum_chunks`), all queued without waiting for the device; the host
  waits once, for the per-object arrays;
* **overlap**: points are copied in pieces on a side stream while earlier pieces are being
  scored, and batches of chunks alternate between two compute streams; chunks are sorted
  by length and cut into batches each as wide as its longest chunk, so short live curves
  do not pay for ``n_max`` RNN steps. :meth:`Scorer.submit` returns before the device is
  done, so that a caller can plan the next batch meanwhile;
* **CUDA graphs for small batches**: at a few hundred chunks a batch is bound by kernel
  launches (four RNN layers x ``n_max`` steps), so the network + energy are captured once
  per (padded batch size, width, lane) and replayed;
* **mixed precision** on CUDA: the network under ``torch.autocast(float16)`` (cuDNN's RNN
  kernels take it); the GMM energy and the per-object sums stay in float32/float64;
* **CPU**: a batch is split over worker threads, each with one intra-op thread: the
  RNN's per-step matrices (a few thousand rows by 48) parallelise badly inside one
  operation, and independent slices do not wait for each other. Results are the same
  float32 computation in another order.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from broker_filter.model.bundle import ModelBundle, resolve_device
from broker_filter.model.features import ChunkTensors, chunk_layout, prepare_chunks, resolve_periods
from broker_filter.model.gmm import energy
from broker_filter.model.lightcurve import LightCurve, LightCurveBatch, first_appearance
from broker_filter.model.scores import (
    THRESHOLD_KEYS, ObjectScore, ScoreBatch, calibrated_probs, finish_objects, novelty, sum_chunks,
)

#: Batches of at most this many chunks run as captured CUDA graphs, padded to a power of two
#: from 64: small batches are bound by kernel launches (four RNN layers x ``n_max`` steps).
#: Larger ones run eagerly: they keep the GPU busy longer than the host takes to queue them,
#: and a graph's private memory pool for 16,384 chunks holds ~10-20 GB (cuDNN workspaces)
#: that the process could not use for anything else. 0 runs every batch eagerly.
GRAPH_MAX_CHUNKS = 2048
#: Chunks per CPU task: large enough for efficient matrix products, small enough that the
#: worker threads share a batch evenly.
CPU_SLICE = 256


@dataclass(frozen=True)
class ChunkPlan:
    """Host-side plan of a batch: chunks (sorted by length), their objects, the batches to run.

    Per chunk, in run order: ``start`` (first point), ``length``, ``period`` (float64) and
    ``row`` (the object's row in the result). Per result row: ``object_index`` (into the
    input's object table), ``n_points``, ``n_chunks``. ``parts``: (first, stop, width) of
    each batch of chunks run together; ``point_ends``: how many points each part needs.
    """

    start: np.ndarray
    length: np.ndarray
    period: np.ndarray
    row: np.ndarray
    object_index: np.ndarray
    n_points: np.ndarray
    n_chunks: np.ndarray
    parts: list[tuple[int, int, int]]
    point_ends: list[int]

    @property
    def n_rows(self) -> int:
        return int(self.object_index.size)


def plan_chunks(batch: LightCurveBatch, periods: np.ndarray, cfg, max_batch: int) -> ChunkPlan:
    """Cut ``batch`` (clean) into chunks, number the objects that have one, group chunks into batches.

    Objects are numbered in first-appearance order of their chunks, the order of
    :func:`broker_filter.model.scores.combine_chunks`. Chunks are stably sorted by length only when
    their lengths differ (then each batch is as wide as its own longest chunk); equal
    lengths keep input order, so that each batch needs only a prefix of the points and
    copies overlap with compute.
    """
    usable = batch.lengths
    if cfg.bands is not None:
        usable = np.where(np.isin(batch.band, cfg.bands), usable, 0)
    chunk_lc, start, length = chunk_layout(usable, cfg, lc_start=batch.offsets[:-1])
    object_index, row = first_appearance(batch.object_index[chunk_lc])
    n_rows = object_index.size
    n_chunks = np.bincount(row, minlength=n_rows).astype(np.int64)
    n_points = np.bincount(row, weights=length, minlength=n_rows).astype(np.int64)
    period = periods[chunk_lc].astype(np.float64)
    if length.size and length.min() != length.max():
        order = np.argsort(length, kind="stable")
        start, length, period, row = start[order], length[order], period[order], row[order]
    parts, point_ends = [], []
    for first_chunk in range(0, length.size, max_batch):
        stop = min(first_chunk + max_batch, length.size)
        ends = start[first_chunk:stop] + length[first_chunk:stop]
        parts.append((first_chunk, stop, int(length[first_chunk:stop].max())))
        point_ends.append(max(int(ends.max()), point_ends[-1] if point_ends else 0))
    return ChunkPlan(start, length, period, row, object_index, n_points, n_chunks, parts, point_ends)


class Scorer:
    """Scores light curves with a bundle on a device (``"auto"``: CUDA when present, else CPU).

    ``mixed_precision`` runs the network in float16 on CUDA (ignored on CPU, where float32
    is exact and faster for these RNNs). ``max_batch``: chunks per forward pass (device
    memory; 8192 lets the copy of one batch overlap the compute of another and two batches
    share the GPU, measured faster on an H100 than 16,384). ``workers``: CPU threads that run slices of a batch (default: one per core, at
    most 16; unused on CUDA).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device = "auto",
        mixed_precision: bool = True,
        *,
        max_batch: int = 8192,
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
        self._threshold_tensor = torch.tensor([self.thresholds[k] for k in THRESHOLD_KEYS], dtype=torch.float64, device=self.device)
        self.calibration = bundle.calibration
        self.max_batch = max_batch
        self.autocast_dtype = torch.float16 if mixed_precision and self.device.type == "cuda" else None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.workers = workers or min(16, cores)
        self._pool = _single_threaded_pool(self.workers) if self.device.type == "cpu" and self.workers > 1 else None
        self._cuda = _CudaRunner(self) if self.device.type == "cuda" else None

    def close(self) -> None:
        """Stop the worker threads and free the graphs and staging buffers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._cuda = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------

    def score(self, lcs: Sequence[LightCurve], periods: np.ndarray | Sequence[float] | None = None) -> list[ObjectScore]:
        """One ObjectScore per object with at least one chunk, in first-appearance order.

        Same result as ``bundle.score(lcs)``. ``periods`` (one per light curve, NaN where
        unknown) skips estimation for the light curves that have one; the others are
        estimated from the float64 light curves, exactly as the reference does.
        """
        known = self._given_periods(periods, len(lcs))
        missing = np.flatnonzero(~np.isfinite(known))
        if missing.size:
            known[missing] = self.estimate_periods([lcs[i] for i in missing])
        return self.score_batch(LightCurveBatch.from_lightcurves(list(lcs)), known).object_scores()

    def score_batch(self, batch: LightCurveBatch, periods: np.ndarray | Sequence[float] | None = None) -> ScoreBatch:
        """Scores of every object of ``batch`` that yields a chunk, as columns (see :class:`ScoreBatch`).

        ``periods`` (one per curve, NaN where unknown): the others are estimated here, as
        :meth:`estimate_periods` does.
        """
        return self.submit(batch, periods).result()

    def submit(self, batch: LightCurveBatch, periods: np.ndarray | Sequence[float] | None = None) -> PendingScores:
        """Queue ``batch`` on the device and return at once; :meth:`PendingScores.result` waits for it.

        On CUDA the host plans and queues the next batch while the device still scores
        this one (a daemon with an inference queue keeps two in flight). On CPU the work
        is done here and the result is ready.
        """
        known = self._given_periods(periods, len(batch))
        missing = np.flatnonzero(~np.isfinite(known))
        if missing.size:
            known[missing] = self.estimate_periods([batch.curve(int(i)) for i in missing])
        if self._cuda is not None:
            return self._cuda.submit(batch, known)
        clean = batch.cleaned()
        plan = plan_chunks(clean, known, self.preprocess, self.max_batch)
        if plan.n_rows == 0:
            return PendingScores(self, batch, plan, None)
        return PendingScores(self, batch, plan, self._run_cpu(clean, plan))

    def estimate_periods(self, lcs: Sequence[LightCurve]) -> np.ndarray:
        """The period each light curve will be folded with (NaN for those yielding no chunk).

        Only light curves that can yield a chunk (accepted band, at least ``n_min`` points)
        are estimated, all in one batch (:func:`broker_filter.model.features.resolve_periods`), on the
        scorer's device: ``[inference] device = "cpu"`` keeps the search off a present GPU too.
        """
        cfg = self.preprocess
        periods = np.full(len(lcs), np.nan)
        candidates = [i for i, lc in enumerate(lcs) if cfg.accepts(lc.band) and len(lc) >= cfg.n_min]
        if candidates:
            periods[candidates] = resolve_periods([lcs[i] for i in candidates], cfg, device=str(self.device))
        return periods

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _given_periods(periods, n: int) -> np.ndarray:
        known = np.full(n, np.nan) if periods is None else np.array(periods, dtype=np.float64)
        if known.shape != (n,):
            raise ValueError(f"periods must have one value per light curve ({n}), got shape {known.shape}")
        return known

    def _run_cpu(self, batch: LightCurveBatch, plan: ChunkPlan):
        time = torch.from_numpy(batch.time)
        mag = torch.from_numpy(batch.mag)
        size = max(1, min(CPU_SLICE, -(-plan.start.size // self.workers)))  # every worker busy on small batches
        slices = [(begin, min(begin + size, stop)) for first, stop, _ in plan.parts for begin in range(first, stop, size)]

        def run(part: tuple[int, int]):
            first, stop = part
            length = plan.length[first:stop]
            width = int(length.max())
            with torch.inference_mode():
                chunks = prepare_chunks(
                    time, mag, torch.from_numpy(plan.start[first:stop]), torch.from_numpy(length),
                    torch.from_numpy(plan.period[first:stop]), width, self.preprocess,
                )
                return _chunk_outputs(self.network, self.gmm, chunks, None)

        outputs = list(self._pool.map(run, slices)) if self._pool is not None and len(slices) > 1 else [run(s) for s in slices]
        with torch.inference_mode():
            sum_log = torch.zeros((plan.n_rows, len(self.class_names)), dtype=torch.float64)
            sum_energy = torch.zeros(plan.n_rows, dtype=torch.float64)
            for (first, stop), (log_probs, energies) in zip(slices, outputs):
                sum_chunks(torch.from_numpy(plan.row[first:stop]), log_probs, energies, torch.from_numpy(plan.length[first:stop]),
                           sum_log, sum_energy)
            probs, energies, novel = finish_objects(sum_log, sum_energy, torch.from_numpy(plan.n_points).double(),
                                                    self._threshold_tensor)
        return probs.numpy(), energies.numpy(), novel.numpy()


class PendingScores:
    """A batch queued by :meth:`Scorer.submit`; :meth:`result` returns its :class:`ScoreBatch`.

    On CUDA the per-object arrays come back through one non-blocking copy into pinned
    memory; ``result`` waits for that copy's event. If the device found points that need
    cleaning (non-finite values, non-positive errors, times out of order: checked on the
    device, so that clean batches, the usual case, cost the host nothing), the batch is
    cleaned on the host and scored again before returning.
    """

    def __init__(self, scorer: Scorer, batch: LightCurveBatch, plan: ChunkPlan, outputs, done=None, periods=None) -> None:
        self._scorer, self._batch, self._plan, self._outputs, self._done, self._periods = scorer, batch, plan, outputs, done, periods
        self._scores: ScoreBatch | None = None

    def result(self) -> ScoreBatch:
        if self._scores is None:
            self._scores = self._collect()
        return self._scores

    def _collect(self) -> ScoreBatch:
        scorer, plan, k = self._scorer, self._plan, len(self._scorer.class_names)
        if plan.n_rows == 0:
            return ScoreBatch(
                np.zeros(0, object), np.zeros(0, np.int64), np.zeros((0, k)), np.zeros(0), np.zeros(0, np.int64),
                np.zeros(0, np.int64), np.zeros((0, len(THRESHOLD_KEYS)), bool), scorer.class_names,
            )
        if self._done is not None:  # CUDA: (M + 1, K + 1 + T) float64, last row = "needs cleaning" flag
            self._done.synchronize()
            out = self._outputs.numpy().copy()
            if scorer._cuda is not None:
                scorer._cuda.release(self._outputs)
            if out[-1, 0] != 0:
                return scorer._cuda.submit(self._batch.cleaned(), self._periods, checked=True).result()
            probs, energies, novel = out[:-1, :k], out[:-1, k], out[:-1, k + 1 :] != 0
        else:
            probs, energies, novel = self._outputs
        if scorer.calibration is not None:
            with np.errstate(divide="ignore"):
                probs = calibrated_probs(np.log(probs), scorer.calibration, plan.n_points)
        p_values, calibrated_novel = novelty(energies, plan.n_points, scorer.thresholds, scorer.calibration, probs)
        return ScoreBatch(
            self._batch.object_ids[plan.object_index], plan.object_index, probs, energies, plan.n_points,
            plan.n_chunks, novel if scorer.calibration is None else calibrated_novel, scorer.class_names, p_values,
        )


def _chunk_outputs(network, gmm, chunks: ChunkTensors, autocast_dtype: torch.dtype | None):
    """Per-chunk log-probabilities (N, K) and energies (N,), float32."""
    device_type = chunks.inputs.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None, cache_enabled=False):
        out = network(chunks.inputs, chunks.lengths, chunks.supports)
    return torch.log_softmax(out.logits.float(), dim=1), energy(out.z.float(), gmm)


def _single_threaded_pool(workers: int) -> ThreadPoolExecutor:
    """Threads that each run torch with one intra-op thread; the caller's own setting is kept.

    ``torch.set_num_threads`` sets the calling thread's OpenMP/MKL thread count (and the
    default for threads that start later), so each worker sets 1 once, all workers are
    started here, and the creating thread then restores its own count.
    """
    import threading

    own = torch.get_num_threads()
    ready = threading.Barrier(workers + 1)

    def start() -> None:
        torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="score")
    for _ in range(workers):
        pool.submit(start)
    ready.wait()
    torch.set_num_threads(own)
    return pool


class _CudaRunner:
    """The CUDA schedule of :meth:`Scorer.submit`: copies on a side stream, two compute lanes, graphs.

    Points are copied host-to-device in pieces (one per batch of chunks, on ``copy_stream``)
    so that the copy of batch k+1 overlaps the compute of batch k; per-chunk plans (a few
    integers per chunk) travel first, in one piece. Batches of chunks alternate between two
    compute streams ("lanes"), each with its own CUDA graphs and memory pool, so that two
    batches overlap on the GPU (cuDNN's RNN kernels at hidden size 48 leave room); each
    lane sums its chunks into its own per-object rows, added on the caller's stream. Every
    wait is an event between streams, never the host, until the caller asks for the result.
    Host buffers are pinned: a batch already in pinned memory (:func:`pin_batch`) is copied
    from where it lies, others go through a pinned staging buffer, reused once its last copy
    has left (an event the host waits on, at the next submit).
    """

    LANES = 2

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.device = scorer.device
        self.copy_stream = torch.cuda.Stream(self.device)
        self.lanes = [torch.cuda.Stream(self.device) for _ in range(self.LANES)]
        self.graphs: dict[tuple[int, int, int], _GraphedNetwork] = {}
        self.pools = [torch.cuda.graph_pool_handle() for _ in range(self.LANES)]
        self._staging: dict[str, torch.Tensor] = {}
        self._staged: torch.cuda.Event | None = None
        self._free_results: list[torch.Tensor] = []

    def submit(self, batch: LightCurveBatch, periods: np.ndarray, checked: bool = False) -> PendingScores:
        """Plan on the host, queue copies and compute, start the copy of the results back; do not wait.

        ``checked``: the batch was cleaned on the host, so the device check is skipped.
        """
        scorer, device = self.scorer, self.device
        plan = plan_chunks(batch, periods, scorer.preprocess, scorer.max_batch)
        if plan.n_rows == 0:
            return PendingScores(scorer, batch, plan, None)
        main = torch.cuda.current_stream(device)
        n, points, k = plan.start.size, batch.time.size, len(scorer.class_names)
        with torch.inference_mode():
            meta_host = self._host("meta", 4 * n + batch.offsets.size + plan.n_rows, torch.int64)
            meta_np = meta_host.numpy()
            meta_np[:n], meta_np[n : 2 * n], meta_np[3 * n : 4 * n] = plan.start, plan.length, plan.row
            meta_np[2 * n : 3 * n] = plan.period.view(np.int64)
            meta_np[4 * n : 4 * n + batch.offsets.size] = batch.offsets
            meta_np[4 * n + batch.offsets.size : 4 * n + batch.offsets.size + plan.n_rows] = plan.n_points
            columns = [self._points(name, getattr(batch, name)) for name in ("time", "mag", "mag_err")]
            meta = torch.empty(4 * n + batch.offsets.size + plan.n_rows, dtype=torch.int64, device=device)
            time, mag, mag_err = (torch.empty(points, dtype=c.dtype, device=device) for c in columns)
            lane_sums = [
                (torch.zeros((plan.n_rows, k), dtype=torch.float64, device=device), torch.zeros(plan.n_rows, dtype=torch.float64, device=device))
                for _ in self.lanes
            ]
            ready = self._copy(plan, points, meta, meta_host, (time, mag, mag_err), columns, main)
            for lane in self.lanes:
                lane.wait_stream(main)  # the buffers above were allocated on `main`
            for number, ((first, stop, width), event) in enumerate(zip(plan.parts, ready)):
                lane = number % self.LANES
                with torch.cuda.stream(self.lanes[lane]):
                    self.lanes[lane].wait_event(event)
                    start, length = meta[first:stop], meta[n + first : n + stop]
                    period, row = meta[2 * n + first : 2 * n + stop].view(torch.float64), meta[3 * n + first : 3 * n + stop]
                    chunks = prepare_chunks(time, mag, start, length, period, width, scorer.preprocess)
                    log_probs, energies = self._network(chunks, lane)
                    sum_chunks(row, log_probs, energies, length, *lane_sums[lane])
            for lane in self.lanes:
                main.wait_stream(lane)
            main.wait_event(ready[-1])
            sum_log = sum(s for s, _ in lane_sums)
            sum_energy = sum(e for _, e in lane_sums)
            n_points = meta[4 * n + batch.offsets.size :].double()
            probs, energies, novel = finish_objects(sum_log, sum_energy, n_points, scorer._threshold_tensor)
            out = torch.zeros((plan.n_rows + 1, k + 1 + novel.shape[1]), dtype=torch.float64, device=device)
            out[:-1, :k], out[:-1, k], out[:-1, k + 1 :] = probs, energies, novel.double()
            if not checked:
                out[-1, 0] = _needs_cleaning(time, mag, mag_err, meta[4 * n : 4 * n + batch.offsets.size]).double()
            result = self._result_buffer(out.numel()).view(out.shape)
            result.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record(main)
        return PendingScores(scorer, batch, plan, result, done, periods)

    def _copy(self, plan: ChunkPlan, points: int, meta, meta_host, targets, columns, main) -> list[torch.cuda.Event]:
        """Queue the plan, then the points piece by piece, on the copy stream; an event per piece."""
        ready = []
        self.copy_stream.wait_stream(main)  # the targets were allocated on `main`
        with torch.cuda.stream(self.copy_stream):
            meta.copy_(meta_host[: meta.numel()], non_blocking=True)
            begin = 0
            for end in plan.point_ends[:-1] + [points]:  # the clean check reads every point
                if end > begin:
                    for target, source in zip(targets, columns):
                        target[begin:end].copy_(source[begin:end], non_blocking=True)
                    begin = end
                event = torch.cuda.Event()
                event.record(self.copy_stream)
                ready.append(event)
        self._staged = ready[-1]
        return ready

    def _network(self, chunks: ChunkTensors, lane: int):
        n, width = chunks.lengths.numel(), chunks.inputs.shape[1]
        if n > GRAPH_MAX_CHUNKS:
            return _chunk_outputs(self.scorer.network, self.scorer.gmm, chunks, self.scorer.autocast_dtype)
        rows = max(64, 1 << (n - 1).bit_length())
        n_max = self.scorer.preprocess.n_max
        steps = next(w for w in (n_max // 4, n_max // 2, n_max) if w >= width)
        key = (rows, steps, lane)
        if key not in self.graphs:
            self.graphs[key] = _GraphedNetwork(self.scorer, rows, steps, self.pools[lane])
        return self.graphs[key](chunks)

    def _result_buffer(self, size: int) -> torch.Tensor:
        """A free pinned float64 buffer for results (pinned allocations stall the device: reuse them)."""
        fits = [i for i, b in enumerate(self._free_results) if b.numel() >= size]
        if fits:
            return self._free_results.pop(fits[0])[:size]
        return torch.empty(max(size, 1 << 12), dtype=torch.float64, pin_memory=True)[:size]

    def release(self, result: torch.Tensor) -> None:
        """Take back a result buffer once its values have been read."""
        base = result._base if result._base is not None else result
        self._free_results.append(base.view(-1))

    def _host(self, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
        """A pinned buffer of at least ``size`` elements, once the copies from it have left."""
        if self._staged is not None:
            self._staged.synchronize()
            self._staged = None
        buffer = self._staging.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(max(size, 1), dtype=dtype).pin_memory()
            self._staging[name] = buffer
        return buffer

    def _points(self, name: str, values: np.ndarray) -> torch.Tensor:
        """``values`` as a pinned tensor: itself if it is pinned, else a staged copy."""
        tensor = torch.from_numpy(values)
        if tensor.is_pinned():
            return tensor
        staged = self._host(name, values.size, tensor.dtype)[: values.size]
        staged.numpy()[...] = values
        return staged


def _needs_cleaning(time: torch.Tensor, mag: torch.Tensor, mag_err: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """True (a 0-d tensor, computed on the device) if any point is non-finite, has an error <= 0,
    or comes before the previous point of its curve: what :meth:`LightCurveBatch.cleaned` would change."""
    bad = ~(torch.isfinite(time).all() & torch.isfinite(mag).all() & torch.isfinite(mag_err).all() & (mag_err > 0).all())
    if time.numel() < 2:
        return bad
    points = time.numel()
    back = torch.cat([time[1:] < time[:-1], torch.zeros(1, dtype=torch.bool, device=time.device)])  # back[i]: i+1 before i
    starts = offsets[1:-1]  # a curve may start before the previous one ended: not a step back
    back.index_fill_(0, torch.where((starts > 0) & (starts < points), starts - 1, points - 1), False)  # no host copy
    return bad | back.any()


class _GraphedNetwork:
    """Network + log-softmax + energy captured as one CUDA graph for (rows, steps) inputs.

    Smaller batches are padded to ``rows``: the padding rows hold earlier (finite) inputs
    and their outputs are ignored; points past a chunk's length never change its outputs
    (:mod:`broker_filter.model.network`), so a narrower batch runs at ``steps`` columns unchanged.
    """

    def __init__(self, scorer: Scorer, rows: int, steps: int, pool) -> None:
        device = scorer.device
        self.inputs = torch.zeros((rows, steps, 2), dtype=torch.float32, device=device)
        self.lengths = torch.ones(rows, dtype=torch.int64, device=device)
        self.supports = torch.zeros((rows, 3), dtype=torch.float32, device=device)
        self.supports[:, 1] = 1.0
        static = ChunkTensors(self.inputs, self.lengths, self.supports)

        def forward():
            return _chunk_outputs(scorer.network, scorer.gmm, static, scorer.autocast_dtype)

        caller = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            for _ in range(3):
                forward()
        caller.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.log_probs, self.energies = forward()

    def __call__(self, chunks: ChunkTensors):
        n, width = chunks.lengths.numel(), chunks.inputs.shape[1]
        self.inputs[:n, :width].copy_(chunks.inputs)
        self.lengths[:n].copy_(chunks.lengths)
        self.supports[:n].copy_(chunks.supports)
        self.graph.replay()
        return self.log_probs[:n], self.energies[:n]


def pin_batch(batch: LightCurveBatch) -> LightCurveBatch:
    """``batch`` with its point columns in pinned (page-locked) host memory, for direct device copies.

    What a loader with ``pin_memory=True`` delivers: the device copies the points from where
    they lie, with no host-side copy on the scoring path.
    """

    def pinned(values: np.ndarray) -> np.ndarray:
        tensor = torch.empty(values.shape, dtype=torch.from_numpy(values[:0]).dtype).pin_memory()
        tensor.numpy()[...] = values
        return tensor.numpy()

    return LightCurveBatch(
        pinned(batch.time), pinned(batch.mag), pinned(batch.mag_err), batch.offsets, batch.band, batch.object_index, batch.object_ids
    )
