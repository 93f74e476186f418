"""``broker-filter bench infer``: the served Scorer against a plain PyTorch eval loop, same run.

Light curves: consecutive 200-point windows of the real ASAS-3 light curves in
``data/lightcurves`` (the model's chunk size), repeated under new object ids to fill the
larger batches. For each precision and batch size:

* ``served``: ``Scorer.score_batch(batch, periods)`` from a host-resident columnar
  :class:`~broker_filter.model.lightcurve.LightCurveBatch` in pinned memory (as a loader with
  ``pin_memory`` delivers it) to host-resident per-object result arrays
  (:class:`~broker_filter.model.scores.ScoreBatch`): cleaning checks, chunk planning, host-to-device
  copies, preprocessing, network, GMM energy and per-object combination all counted. The
  periods are given (the daemon keeps an object's period between alerts); estimating them
  is timed in the stage table and in ``broker-filter bench period``;
* ``served, 2 batches in flight``: the same batch submitted again before the previous
  result is collected (``Scorer.submit`` / ``PendingScores.result``): the interval between
  results in steady state, i.e. the throughput of a daemon that queues its next batch while
  the device scores the last. Its p50/p99 are intervals, not latencies;
* ``served, pageable input``: the same from ordinary (pageable) numpy columns, which adds
  a host copy into pinned staging buffers;
* ``served, LightCurve list``: ``Scorer.score(lcs, periods)``, the list-of-objects API
  (conversion to columns and one ``ObjectScore`` per object included);
* ``naive served``: the whole job done the straightforward way, the "before" of the
  served rows: numpy ``prepare_batch``, the plain loop below, ``combine_chunks`` over
  string object ids, one ``ObjectScore`` per object;
* ``plain loop``: the baseline, a straightforward eval loop of the same network on inputs
  already prepared by the numpy reference (``broker_filter.model.features.prepare_batch``, not timed):
  ``torch.from_numpy(...).to(device)``, ``network(...)`` under ``torch.no_grad()`` (and
  ``torch.autocast`` for mixed precision), energy, ``.cpu()``.

Latencies are per batch, wall clock, results on the host (each call ends with a copy to
the host, which waits for the device).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from broker_filter_proving import REPO
from broker_filter_proving.bench.report import BenchResult

DATA_DIR = REPO / "data" / "lightcurves"
GPU_BATCHES = "64,512,4096,16384,32768"
CPU_BATCHES = "64,512,2048"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="lightcurves.parquet + objects.csv folder")
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the packaged default)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--batch-sizes", default=None, help=f"comma-separated (default GPU {GPU_BATCHES}, CPU {CPU_BATCHES})")
    parser.add_argument("--precision", default="fp32,mixed", help="comma-separated: fp32, mixed")
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement (at least --min-repeats)")
    parser.add_argument("--min-repeats", type=int, default=5, help="batches timed per measurement, at least")
    parser.add_argument("--points", type=int, default=200, help="points per light curve")
    parser.add_argument("--workers", type=int, default=None, help="preprocessing threads (default: Scorer's)")


def run(args: argparse.Namespace) -> BenchResult:
    import torch

    from broker_filter.model.bundle import ModelBundle, resolve_device
    from broker_filter.model.features import prepare_batch
    from broker_filter.model.lightcurve import LightCurveBatch
    from broker_filter.model.serving import Scorer, pin_batch

    device = resolve_device(args.device)
    bundle = ModelBundle.load(args.bundle)
    sizes = [int(s) for s in (args.batch_sizes or (GPU_BATCHES if device.type == "cuda" else CPU_BATCHES)).split(",")]
    precisions = [p.strip() for p in args.precision.split(",")]
    pool, periods = _windows(args.data, args.points, max(sizes))
    rows, stages, workers = [], {}, 0
    for precision in precisions:
        scorer = Scorer(bundle, device=device, mixed_precision=precision == "mixed", workers=args.workers)
        workers = scorer.workers
        try:
            for size in sizes:
                lcs, per = pool[:size], periods[:size]
                columns = LightCurveBatch.from_lightcurves(lcs)
                pinned = pin_batch(columns) if device.type == "cuda" else columns
                prepared = prepare_batch(lcs, bundle.preprocess, per, pad_to=bundle.preprocess.n_max)
                plain = _plain_loop(scorer, prepared, precision == "mixed")
                timings = {"served": _time(lambda: scorer.score_batch(pinned, per), args, device)}
                if device.type == "cuda":
                    timings["served, 2 batches in flight"] = _time(_in_flight(scorer, pinned, per), args, device, sync=False)
                if device.type == "cuda":
                    timings["served, pageable input"] = _time(lambda: scorer.score_batch(columns, per), args, device)
                timings["served, LightCurve list"] = _time(lambda: scorer.score(lcs, per), args, device)
                timings["naive served (numpy prep + plain loop + string-id combine)"] = _time(
                    _naive_served(scorer, plain, lcs, per), args, device
                )
                timings["plain loop"] = _time(plain, args, device)
                base = size / statistics.median(timings["plain loop"])
                for name, seconds in timings.items():
                    rate = size / statistics.median(seconds)
                    rows.append([precision, size, name, rate, 1e3 * _pct(seconds, 50), 1e3 * _pct(seconds, 99), rate / base])
            stages[precision] = _stages(scorer, pool[: max(sizes)], periods[: max(sizes)], device)
        finally:
            scorer.close()
    served = [r for r in rows if r[2] == "served"]
    best = max(served, key=lambda r: r[3])
    notes = [
        f"{args.points}-point windows of real ASAS-3 light curves; bundle {bundle.bundle_id} "
        f"({bundle.network.config.model_type}, size {bundle.network.config.size}, {bundle.network.config.num_layers} layers)",
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu, {torch.get_num_threads()} torch threads'}; "
        f"CPU scoring threads: {workers if device.type == 'cpu' else 'unused'}",
        f"best served: {best[3]:,.0f} light curves/s ({best[0]}, batch {best[1]})",
    ]
    for precision, parts in stages.items():
        notes.append(
            f"where the time goes ({precision}, batch {max(sizes)}): "
            + ", ".join(f"{name} {1e3 * s:.1f} ms ({max(sizes) / s:,.0f}/s)" for name, s in parts.items())
        )
    return BenchResult(
        name="infer",
        columns=["precision", "batch", "path", "light curves/s", "p50 ms", "p99 ms", "x plain loop"],
        rows=rows,
        speedup=best[6],
        notes=notes,
        extra={"stages": stages, "bundle_id": bundle.bundle_id, "device": str(device)},
    )


def _windows(data: Path, points: int, count: int):
    """``count`` light curves of ``points`` points (real ASAS-3 windows, repeated under new ids) and their periods.

    A window's period is its whole curve's, from ``periods.csv`` (made by the served
    estimator): the daemon likewise keeps an object's period between alerts.
    """
    from broker_filter.model.data import LightCurve, load_lightcurve_table, load_period_table

    table = load_period_table(data / "periods.csv")
    base, base_periods = [], []
    for lc in load_lightcurve_table(data, sources=["asas3_richards2012"]):
        for start in range(0, len(lc) - points + 1, points):
            part = slice(start, start + points)
            base.append(LightCurve(f"{lc.object_id}:{start}", lc.band, lc.time[part], lc.mag[part], lc.mag_err[part]))
            base_periods.append(table.get((lc.object_id, lc.band), float(np.ptp(lc.time))))
    lcs = [replace(base[i % len(base)], object_id=f"{base[i % len(base)].object_id}#{i // len(base)}") for i in range(count)]
    return lcs, np.resize(np.array(base_periods), count)


def _plain_loop(scorer, batch, mixed: bool):
    """The baseline: the same network and energy, inputs prepared, no scheduling tricks."""
    import torch

    from broker_filter.model.gmm import energy

    network, gmm, device = scorer.network, scorer.gmm, scorer.device
    use_autocast = mixed and device.type == "cuda"

    def with_inputs(prepared):
        def loop():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=use_autocast):
                out = network(
                    torch.from_numpy(prepared.inputs).to(device),
                    torch.from_numpy(prepared.lengths).to(device),
                    torch.from_numpy(prepared.supports).to(device),
                )
                log_probs = torch.log_softmax(out.logits.float(), dim=1)
                energies = energy(out.z.float(), gmm)
            return log_probs.cpu().numpy(), energies.cpu().numpy()

        loop.with_inputs = with_inputs
        return loop

    return with_inputs(batch)


def _naive_served(scorer, plain, lcs, periods):
    """The whole served job done the straightforward way: what the profile of the first
    design showed (numpy ``prepare_batch``, the plain loop, ``combine_chunks`` over string
    ids, one ``ObjectScore`` per object). The "before" of the served rows."""
    from broker_filter.model.features import prepare_batch
    from broker_filter.model.scores import combine_chunks, object_scores

    cfg = scorer.preprocess

    def naive():
        batch = prepare_batch(lcs, cfg, periods, pad_to=cfg.n_max)
        log_probs, energies = plain.with_inputs(batch)()
        combined = combine_chunks([lcs[i].object_id for i in batch.owner], log_probs, energies, batch.lengths)
        return object_scores(combined, scorer.class_names, scorer.thresholds)

    return naive


def _in_flight(scorer, batch, periods):
    """One call = queue the next batch, then wait for the previous one: the steady state of a
    daemon that keeps two batches in flight (host planning overlaps device work)."""
    pending = [scorer.submit(batch, periods)]

    def step():
        pending.append(scorer.submit(batch, periods))
        return pending.pop(0).result()

    return step


def _time(fn, args: argparse.Namespace, device, sync: bool = True) -> list[float]:
    """Wall-clock seconds of repeated calls (after two warm-up calls); ``sync``: wait for the device before each."""
    import torch

    fn()
    fn()
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < args.min_repeats or time.perf_counter() - started < args.seconds:
        if sync and device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
        if len(seconds) >= 2000:
            break
    return seconds


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _stages(scorer, lcs, periods, device) -> dict[str, float]:
    """Seconds per stage of one served batch, each stage synchronised (so their sum exceeds the pipelined whole)."""
    import torch

    from broker_filter.model.lightcurve import LightCurveBatch
    from broker_filter.model.serving import pin_batch, plan_chunks

    def clock(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return value, time.perf_counter() - t0

    scorer.estimate_periods(lcs[:64])  # warm-up of the period path
    estimated = lcs if device.type == "cuda" else lcs[:64]  # CPU: ~0.1 s a curve
    _, t_period = clock(lambda: scorer.estimate_periods(estimated))
    t_period *= len(lcs) / len(estimated)
    columns, t_columns = clock(lambda: LightCurveBatch.from_lightcurves(lcs))
    batch = pin_batch(columns) if device.type == "cuda" else columns
    cleaned = (lambda b: b) if device.type == "cuda" else LightCurveBatch.cleaned  # CUDA checks on the device
    _, t_plan = clock(lambda: plan_chunks(cleaned(batch), periods, scorer.preprocess, scorer.max_batch))
    scores, t_score = clock(lambda: scorer.score_batch(batch, periods))
    _, t_objects = clock(scores.object_scores)
    return {
        "period estimation": t_period,
        "LightCurve list to columns": t_columns,
        "host: chunk plan" + ("" if device.type == "cuda" else " + cleaning check"): t_plan,
        "served batch (plan, copies, preprocessing, network, energy, combination)": t_score,
        "ObjectScore list": t_objects,
    }
