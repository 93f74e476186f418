"""``broker-filter bench infer``: the served Scorer against a plain PyTorch eval loop, same run.

Light curves: consecutive 200-point windows of the real ASAS-3 light curves in
``data/lightcurves`` (the model's chunk size), repeated under new object ids to fill the
larger batches. For each precision and batch size:

* ``served``: ``Scorer.score(lcs, periods)``, everything the daemon's inferencer does per
  batch: preprocessing (``model.features.prepare_batch``), host-to-device copies, the
  network, the GMM energy, the per-object combination and the ``ObjectScore`` list. The
  periods are given (the daemon keeps an object's period between alerts); what
  estimating them costs is measured separately, in the stage table and in
  ``broker-filter bench period``;
* ``served core``: ``Scorer.score_prepared(batch)``, the device part alone (copies,
  network, energy) on an already prepared batch;
* ``plain loop``: the baseline, a straightforward eval loop of the same network on the
  same prepared batch: ``torch.from_numpy(...).to(device)``, ``network(...)`` under
  ``torch.no_grad()`` (and ``torch.autocast`` for mixed precision), energy, ``.cpu()``.

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

from broker_filter.bench.report import BenchResult

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "lightcurves"
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

    from model.bundle import ModelBundle, resolve_device
    from model.serving import Scorer

    device = resolve_device(args.device)
    bundle = ModelBundle.load(args.bundle)
    sizes = [int(s) for s in (args.batch_sizes or (GPU_BATCHES if device.type == "cuda" else CPU_BATCHES)).split(",")]
    precisions = [p.strip() for p in args.precision.split(",")]
    pool = _windows(args.data, args.points, max(sizes))
    rows, stages, workers = [], {}, 0
    for precision in precisions:
        scorer = Scorer(bundle, device=device, mixed_precision=precision == "mixed", workers=args.workers)
        workers = scorer.workers
        try:
            periods = scorer.estimate_periods(pool)
            for size in sizes:
                lcs, per = pool[:size], periods[:size]
                batch = scorer.prepare(lcs, per)
                plain = _plain_loop(scorer, batch, precision == "mixed")
                timings = {
                    "served": _time(lambda: scorer.score(lcs, per), args, device),
                    "served core": _time(lambda: scorer.score_prepared(batch), args, device),
                    "plain loop": _time(plain, args, device),
                }
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
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else f'cpu, {torch.get_num_threads()} threads'}; "
        f"preprocessing threads: {workers}",
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
    """``count`` light curves of ``points`` points: real ASAS-3 windows, repeated under new ids."""
    from model.data import LightCurve, load_lightcurve_table

    base = []
    for lc in load_lightcurve_table(data, sources=["asas3_richards2012"]):
        for start in range(0, len(lc) - points + 1, points):
            part = slice(start, start + points)
            base.append(LightCurve(f"{lc.object_id}:{start}", lc.band, lc.time[part], lc.mag[part], lc.mag_err[part]))
    return [replace(base[i % len(base)], object_id=f"{base[i % len(base)].object_id}#{i // len(base)}") for i in range(count)]


def _plain_loop(scorer, batch, mixed: bool):
    """The baseline: the same network and energy, inputs prepared, no scheduling tricks."""
    import torch

    from model.gmm import energy

    network, gmm, device = scorer.network, scorer.gmm, scorer.device
    use_autocast = mixed and device.type == "cuda"

    def loop():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=use_autocast):
            out = network(
                torch.from_numpy(batch.inputs).to(device),
                torch.from_numpy(batch.lengths).to(device),
                torch.from_numpy(batch.supports).to(device),
            )
            log_probs = torch.log_softmax(out.logits.float(), dim=1)
            energies = energy(out.z.float(), gmm)
        return log_probs.cpu().numpy(), energies.cpu().numpy()

    return loop


def _time(fn, args: argparse.Namespace, device) -> list[float]:
    """Wall-clock seconds of repeated calls (after two warm-up calls)."""
    import torch

    fn()
    fn()
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < args.min_repeats or time.perf_counter() - started < args.seconds:
        if device.type == "cuda":
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
    """Seconds per stage of one served batch, periods estimation included, each stage synchronised."""
    import torch

    from model.scores import combine_chunks, object_scores

    def clock(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        value = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return value, time.perf_counter() - t0

    scorer.estimate_periods(lcs[:64])  # warm-up of the period path
    _, t_period = clock(lambda: scorer.estimate_periods(lcs))
    batch, t_prepare = clock(lambda: scorer.prepare(lcs, periods))
    results, t_device = clock(lambda: scorer.score_prepared(batch))

    def finish():
        ids = [lcs[i].object_id for i in batch.owner]
        combined = combine_chunks(ids, results.log_probs, results.energy, batch.lengths)
        return object_scores(combined, scorer.class_names, scorer.thresholds)

    _, t_combine = clock(finish)
    return {
        "period estimation": t_period,
        "preprocessing": t_prepare,
        "copies + network + energy": t_device,
        "per-object combination": t_combine,
    }
