"""Training: joint (autoencoder + classifier + GMM energy) or sequential, into a bundle.

Modes (the paper's ``--gmm_on`` switch):

* joint (``gmm_on=True``): every step minimises
  ``weighted reconstruction MSE + cross-entropy + lambda1 * mean energy``, the energy
  under a mixture fitted to the batch from the estimation network's memberships
  (DAGMM); ``nb_epoch`` epochs.
* sequential (``gmm_on=False``): the autoencoder alone for ``nb_epoch`` epochs, then the
  estimation network alone on the frozen autoencoder for ``cls_epoch`` epochs.

Either way the final mixture is fitted once on the whole training set and frozen, and the
(legacy) thresholds are the 80th/95th percentiles of the training objects' energies. With
``calibrate`` the validation objects, which no weight update saw, are then scored at every
prefix a stream would show, and give the temperature and the energies by number of points
behind the novelty p-values (:mod:`broker_filter.model.calibration`).

``prefix_sizes`` augments the training set with the first n points of each light curve
(their periods estimated on those points alone), so that the network learns what a young
object looks like: live objects are scored from their first 20 points.

The validation set is a stratified split of objects (never of chunks: chunks of one star
in both sets would flatter the figures), unless the caller passes one (cross-validation).
Each phase stops early when the validation loss has not improved for ``patience`` epochs,
and keeps its best epoch. A checkpoint (safetensors + JSON, no pickle) is written after
every epoch; ``resume=True`` continues from it and reproduces the uninterrupted run,
because the shuffling and dropout of every epoch are seeded from (seed, phase, epoch).
"""

from __future__ import annotations

import csv
import logging
import math
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from broker_filter.model.bundle import ModelBundle, resolve_device
from broker_filter.model.calibration import Calibration, calibration_curves, fit_calibration
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import LightCurve, lightcurves_digest
from broker_filter.model.features import PreparedBatch, PreprocessConfig, prepare_batch, resolve_periods
from broker_filter.model.gmm import GMMParameters, energy, fit_gmm
from broker_filter.model.network import AutoencoderGMM, length_mask
from broker_filter.model.period_schedule import scheduled_periods
from broker_filter.model.scores import combine_chunks
from broker_filter.model.train_config import TrainConfig, TrainError

CHECKPOINT_DIR = "checkpoint"
log = logging.getLogger(__name__)
LOG_FILE = "train_log.csv"
LOG_COLUMNS = ("phase", "epoch", "train_loss", "train_recon", "train_ce", "train_energy",
               "val_loss", "val_recon", "val_ce", "val_energy", "val_accuracy", "seconds")
PERCENTILES = {"p80": 80.0, "p95": 95.0}


def labelled(lcs: Sequence[LightCurve], mapping: ClassMapping, cfg: PreprocessConfig) -> list[LightCurve]:
    """The light curves the model trains on: a known class and an accepted band."""
    return [lc for lc in lcs if mapping.label_of(lc.label) is not None and cfg.accepts(lc.band)]


def stratified_split(lcs: Sequence[LightCurve], mapping: ClassMapping, val_frac: float, seed: int):
    """(train, val) light curves, split by object and stratified by class (>= 1 val object per class of >= 2)."""
    objects: dict[str, str] = {}
    for lc in lcs:
        objects.setdefault(lc.object_id, mapping.label_of(lc.label))
    rng = np.random.default_rng(seed)
    val_ids: set[str] = set()
    for label in sorted(set(objects.values())):
        ids = sorted(i for i, lab in objects.items() if lab == label)
        rng.shuffle(ids)
        n_val = int(round(val_frac * len(ids))) if len(ids) > 1 else 0
        val_ids.update(ids[: max(n_val, 1 if len(ids) > 1 else 0)])
    return [lc for lc in lcs if lc.object_id not in val_ids], [lc for lc in lcs if lc.object_id in val_ids]


def smoothness_residual(batch: PreparedBatch, bins: int = 20) -> np.ndarray:
    """Per chunk: scatter about a phase-binned mean over total scatter (0 smooth .. 1 noise).

    Our stand-in for the paper's ``ss_resid`` (the catalogue's super-smoother residual,
    which our archives do not provide): computed on the folded, scaled chunk.
    """
    phase = np.cumsum(batch.inputs[:, :, 0], axis=1)
    mag = batch.inputs[:, :, 1]
    mask = batch.mask
    which = np.clip((phase * bins).astype(np.int64), 0, bins - 1) + bins * np.arange(len(batch))[:, None]
    sums = np.bincount(which[mask], weights=mag[mask], minlength=bins * len(batch))
    counts = np.bincount(which[mask], minlength=bins * len(batch))
    means = sums / np.maximum(counts, 1)
    residual = np.where(mask, mag - means[which], 0.0)
    return np.sqrt((residual**2).sum(axis=1) / np.maximum((np.where(mask, mag, 0.0) ** 2).sum(axis=1), 1e-12))


@dataclass
class _Tensors:
    inputs: torch.Tensor
    weights: torch.Tensor
    lengths: torch.Tensor  # on CPU: packing needs host lengths
    supports: torch.Tensor
    labels: torch.Tensor
    object_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.lengths.numel())

    def part(self, index: torch.Tensor) -> tuple:
        """The chunks at ``index``, trimmed to their longest (shorter batches run faster)."""
        lengths = self.lengths[index]
        steps = int(lengths.max())
        device_index = index.to(self.inputs.device)
        return (self.inputs[device_index, :steps], self.weights[device_index, :steps], lengths,
                self.supports[device_index], self.labels[device_index])


def train(
    cfg: TrainConfig,
    lcs: Sequence[LightCurve],
    out_dir: str | Path,
    *,
    mapping: ClassMapping | None = None,
    val_lcs: Sequence[LightCurve] | None = None,
    periods: Mapping[tuple[str, str], float] | None = None,
    resume: bool = False,
) -> ModelBundle:
    """Train on ``lcs`` (light curves of unknown or novel classes are ignored) and save a bundle in ``out_dir``.

    ``val_lcs``: an explicit validation set (cross-validation folds); otherwise a
    stratified ``val_frac`` of the objects. ``periods``: {(object_id, band): period} to
    reuse estimates across runs (they are otherwise estimated here). ``out_dir`` receives
    the bundle, ``train_log.csv`` and, while training runs, ``checkpoint/``.
    """
    started = time.perf_counter()
    mapping = mapping or ClassMapping()
    pre = cfg.preprocess()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_lcs = labelled(lcs, mapping, pre)
    if val_lcs is None:
        train_lcs, val_lcs = stratified_split(train_lcs, mapping, cfg.val_frac, cfg.seed)
    else:
        val_lcs = labelled(val_lcs, mapping, pre)
    if not train_lcs or not val_lcs:
        raise TrainError(f"need labelled light curves of the classes {list(mapping.known)} for training and validation")

    device = resolve_device(cfg.device)
    augmented = [*train_lcs, *prefix_curves(train_lcs, cfg.prefix_sizes)]
    train_batch, train_data = _prepare(augmented, mapping, pre, periods, cfg.ss_resid, device)
    val_batch, val_data = _prepare(val_lcs, mapping, pre, periods, None, device)
    if len(train_data) == 0 or len(val_data) == 0:
        raise TrainError(f"no chunks of at least n_min={pre.n_min} points in the training or validation light curves")

    torch.manual_seed(cfg.seed)
    network = AutoencoderGMM(cfg.network(len(mapping.known))).to(device)
    network.set_support_statistics(train_data.inputs, train_data.lengths, train_data.supports)
    class_weights = _class_weights(train_data.labels, len(mapping.known), cfg.class_weight).to(device)

    run = _Run(cfg, network, class_weights, train_data, val_data, out_dir, resume)
    phases = [("joint", cfg.nb_epoch)] if cfg.gmm_on else [("autoencoder", cfg.nb_epoch)]
    if not cfg.gmm_on or cfg.finetune:
        phases.append(("classifier", cfg.cls_epoch))
    history = {name: run.phase(name, epochs) for name, epochs in phases}

    gmm, train_energy = _fit_final_gmm(network, train_data)
    thresholds = {key: float(np.percentile(train_energy, q)) for key, q in PERCENTILES.items()}
    network = network.cpu().eval()
    calibration = None
    if cfg.calibrate:
        uncalibrated = ModelBundle(network=network, preprocess=pre, class_mapping=mapping, gmm=gmm, thresholds=thresholds)
        calibration = held_out_calibration(uncalibrated, val_lcs, device, cfg.novelty)
    metrics = {
        "train_accuracy_per_chunk": _accuracy(network, train_data),
        "val_accuracy_per_chunk": _accuracy(network, val_data),
        "val_accuracy_per_object": _object_accuracy(network, val_data),
        "phases": history,
        "train_seconds": round(time.perf_counter() - started, 1),
        "device": str(device),
    }
    bundle = ModelBundle(
        network=network,
        preprocess=pre,
        class_mapping=mapping,
        gmm=gmm,
        thresholds=thresholds,
        calibration=calibration,
        training={
            "config": cfg.to_dict(),
            "data_digest": lightcurves_digest([*train_lcs, *val_lcs]),
            "train_objects": len({lc.object_id for lc in train_lcs}),
            "val_objects": len({lc.object_id for lc in val_lcs}),
            "train_chunks": len(train_data),
            "train_prefix_curves": len(augmented) - len(train_lcs),
            "val_chunks": len(val_data),
            "class_counts_train_chunks": {
                name: int((train_data.labels == k).sum()) for k, name in enumerate(mapping.known)
            },
        },
        metrics={k: _finite_or_none(v) if isinstance(v, float) else v for k, v in metrics.items()},
    )
    bundle.save(out_dir)
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return bundle


def prefix_curves(lcs: Sequence[LightCurve], sizes: Sequence[int]) -> list[LightCurve]:
    """The first n points of every light curve longer than n, for each n of ``sizes``.

    Each prefix has its own id (``object#first<n>``) so that no period of the whole curve
    is looked up for it: its period is estimated on its own points, as the daemon's is.
    """
    out = []
    for lc in lcs:
        clean = lc.cleaned()
        for n in sizes:
            if len(clean) > n:
                out.append(LightCurve(f"{lc.object_id}#first{n}", lc.band, clean.time[:n], clean.mag[:n], clean.mag_err[:n],
                                      None, lc.label, lc.source))
    return out


def held_out_calibration(bundle: ModelBundle, val_lcs: Sequence[LightCurve], device, novelty: str = "energy") -> Calibration:
    """Temperature and novelty references from every stream prefix of the validation objects.

    ``novelty``: the rule of :data:`~broker_filter.model.train_config.NOVELTY_RULES` the p-values follow.

    Each prefix is folded with the period the daemon would use for it (the served rule of
    :mod:`broker_filter.model.period_schedule`: the period of a prefix of >= 80% of its
    points), so that the energies calibrated on are those served (a table of whole-curve
    periods would not do: those are not what a young object is folded with).
    """
    by_object: dict[str, list[LightCurve]] = {}
    for lc in val_lcs:
        by_object.setdefault(lc.object_id, []).append(lc)
    curves = calibration_curves({k: tuple(v) for k, v in by_object.items()})
    batch = prepare_batch(curves, bundle.preprocess, scheduled_periods(curves, bundle.preprocess))
    log_probs, energies = bundle.chunk_outputs(batch, device)
    combined = combine_chunks([curves[i].object_id for i in batch.owner], log_probs, energies, batch.lengths)
    label_of = {lc.object_id: bundle.class_mapping.index_of(lc.label) for lc in val_lcs}
    labels = np.array([label_of[oid.rsplit("#", 1)[0]] for oid in combined.object_ids], dtype=np.int64)
    return fit_calibration(combined.log_probs, labels, combined.energy, combined.n_points,
                           combine=novelty == "energy+uncertainty")


def recalibrate(bundle: ModelBundle, lcs: Sequence[LightCurve], device: str = "auto", novelty: str | None = None) -> ModelBundle:
    """The bundle with its calibration refitted on its own validation objects of ``lcs``.

    ``novelty``: the p-value's rule (default: the one the bundle's recipe recorded); a
    changed rule is recorded in the bundle's training configuration.

    ``lcs`` must be the bundle's training data (checked by digest): the validation split is
    redone from the recorded seed, so that the calibration again sees only objects that no
    weight update saw. Weights, mixture and thresholds are unchanged.
    """
    from broker_filter.model.evaluate import held_out_split

    split, same_data = held_out_split(bundle, lcs)
    if not same_data:
        raise TrainError("these light curves are not the bundle's training data (digest differs): its validation objects are unknown")
    val_lcs = [curve for obj in split.test for curve in obj.curves]
    recorded = bundle.training.get("config", {})
    rule = novelty or TrainConfig.from_dict(recorded).novelty
    TrainConfig(novelty=rule)  # refuses an unknown rule in one line
    calibration = held_out_calibration(bundle, val_lcs, resolve_device(device), rule)
    training = {**bundle.training, "config": {**recorded, "novelty": rule}}
    return ModelBundle(network=bundle.network, preprocess=bundle.preprocess, class_mapping=bundle.class_mapping,
                       gmm=bundle.gmm, thresholds=bundle.thresholds, calibration=calibration, training=training,
                       metrics=bundle.metrics, version=bundle.version, created_utc=bundle.created_utc)


def _prepare(lcs, mapping, pre, periods, ss_resid, device) -> tuple[PreparedBatch, _Tensors]:
    period_array = _periods_for(lcs, pre, periods)
    batch = prepare_batch(lcs, pre, period_array, pad_to=pre.n_max)
    if ss_resid is not None and len(batch):
        batch = batch.take(np.flatnonzero(smoothness_residual(batch) <= ss_resid))
    labels = np.array([mapping.index_of(lcs[i].label) for i in batch.owner], dtype=np.int64)
    tensors = _Tensors(
        torch.from_numpy(batch.inputs).to(device),
        torch.from_numpy(batch.weights).to(device),
        torch.from_numpy(batch.lengths),
        torch.from_numpy(batch.supports).to(device),
        torch.from_numpy(labels).to(device),
        [lcs[i].object_id for i in batch.owner],
    )
    return batch, tensors


def _periods_for(lcs, pre, periods) -> np.ndarray:
    known = np.array([periods.get((lc.object_id, lc.band), np.nan) if periods else np.nan for lc in lcs], dtype=np.float64)
    todo = np.flatnonzero(~np.isfinite(known))
    if todo.size:
        known[todo] = resolve_periods([lcs[i] for i in todo], pre)
    return known


def _class_weights(labels: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    if mode == "none":
        return torch.ones(k)
    counts = torch.bincount(labels.cpu(), minlength=k).double()
    weights = counts.sum() / (k * counts.clamp_min(1))
    return (weights.sqrt() if mode == "sqrt" else weights).float()


class _Run:
    """The epoch loop, checkpoints and CSV log of one training run."""

    def __init__(self, cfg, network, class_weights, train_data, val_data, out_dir: Path, resume: bool) -> None:
        self.cfg, self.network, self.train_data, self.val_data = cfg, network, train_data, val_data
        self.cross_entropy = nn.CrossEntropyLoss(weight=class_weights)
        self.out_dir = out_dir
        self.checkpoint = out_dir / CHECKPOINT_DIR
        self.state = self._load_checkpoint() if resume else {"done_phases": {}, "phase": None}
        if not resume:
            (out_dir / LOG_FILE).write_text(",".join(LOG_COLUMNS) + "\n")

    # -- one phase ------------------------------------------------------------------------

    def phase(self, name: str, epochs: int) -> dict:
        if name in self.state["done_phases"]:
            return self.state["done_phases"][name]
        parameters = self._parameters(name)
        optimizer = torch.optim.Adam(parameters, lr=self.cfg.lr)
        progress = {"epoch": 0, "best_val": float("inf"), "best_epoch": 0, "bad_epochs": 0}
        if self.state["phase"] == name:
            progress = self.state["progress"]
            self._restore(optimizer)
        best = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
        if self.checkpoint.joinpath("best.safetensors").is_file() and self.state["phase"] == name:
            best = load_file(str(self.checkpoint / "best.safetensors"), device=str(next(self.network.parameters()).device))
        bar = _progress_bar(epochs, name, self.cfg.quiet, progress["epoch"])
        for epoch in range(progress["epoch"] + 1, epochs + 1):
            if progress["bad_epochs"] >= self.cfg.patience:
                break
            started = time.perf_counter()
            train_losses = self._epoch(name, epoch, optimizer)
            val_losses = self._evaluate(name)
            progress["epoch"] = epoch
            if val_losses["loss"] < progress["best_val"] - 1e-6:
                progress.update(best_val=val_losses["loss"], best_epoch=epoch, bad_epochs=0)
                best = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
            else:
                progress["bad_epochs"] += 1
            self._log(name, epoch, train_losses, val_losses, time.perf_counter() - started)
            self._save_checkpoint(name, progress, optimizer, best)
            bar.update(1)
            bar.set_postfix(loss=f"{train_losses['loss']:.4f}", val=f"{val_losses['loss']:.4f}")
        bar.close()
        self.network.load_state_dict(best)
        summary = {"epochs_run": progress["epoch"], "best_epoch": progress["best_epoch"], "best_val_loss": progress["best_val"]}
        self.state["done_phases"][name] = summary
        return summary

    def _parameters(self, name: str) -> list[nn.Parameter]:
        estimation = set(self.network.estimation.parameters())
        for p in self.network.parameters():
            p.requires_grad_(name == "joint" or (name == "classifier") == (p in estimation))
        return [p for p in self.network.parameters() if p.requires_grad]

    def _epoch(self, phase: str, epoch: int, optimizer) -> dict:
        self.network.train()
        rng = np.random.default_rng([self.cfg.seed, _PHASES.index(phase), epoch])
        torch.manual_seed(int(rng.integers(2**62)))
        totals, batches = {}, 0
        for index in _bucketed_batches(self.train_data.lengths.numpy(), self.cfg.batch_size, rng):
            losses, _ = self._losses(phase, self.train_data.part(torch.from_numpy(index)))
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            nn.utils.clip_grad_norm_(self.network.parameters(), 5.0)
            optimizer.step()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.item()
            batches += 1
        return {key: value / batches for key, value in totals.items()}

    @torch.no_grad()
    def _evaluate(self, phase: str) -> dict:
        """Validation losses and chunk accuracy, from one pass over the validation set."""
        self.network.eval()
        totals, seen, correct = {}, 0, 0
        for start in range(0, len(self.val_data), 1024):
            index = torch.arange(start, min(start + 1024, len(self.val_data)))
            part = self.val_data.part(index)
            losses, logits = self._losses(phase, part)
            correct += int((logits.argmax(dim=1) == part[-1]).sum())
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.item() * len(index)
            seen += len(index)
        result = {key: value / seen for key, value in totals.items()}
        result["accuracy"] = correct / seen if phase != "autoencoder" else float("nan")
        return result

    def _losses(self, phase: str, part) -> tuple[dict, torch.Tensor]:
        """The phase's loss terms (and the logits, for accuracy) on one batch."""
        inputs, weights, lengths, supports, labels = part
        out = self.network(inputs, lengths, supports)
        mask = length_mask(lengths.to(inputs.device), inputs.shape[1])
        squared = (out.reconstruction - inputs[:, :, 1]) ** 2 * weights * mask
        recon = (squared.sum(dim=1) / lengths.to(inputs.device)).mean()
        ce = self.cross_entropy(out.logits, labels)
        losses = {"recon": recon, "ce": ce}
        if phase == "joint":
            batch_energy = energy(out.z, fit_gmm(out.z, out.gamma)).mean()
            losses["energy"] = batch_energy
            losses["loss"] = recon + ce + self.cfg.lambda1 * batch_energy
        else:
            losses["loss"] = recon if phase == "autoencoder" else ce
        return losses, out.logits

    # -- log and checkpoints --------------------------------------------------------------

    def _log(self, phase: str, epoch: int, train: dict, val: dict, seconds: float) -> None:
        row = [phase, epoch] + [_fmt(train.get(k)) for k in ("loss", "recon", "ce", "energy")]
        row += [_fmt(val.get(k)) for k in ("loss", "recon", "ce", "energy", "accuracy")] + [f"{seconds:.2f}"]
        with (self.out_dir / LOG_FILE).open("a", newline="") as handle:
            csv.writer(handle).writerow(row)
        log.info("%s epoch %d: train loss %s, validation loss %s, validation accuracy %s (%.1f s)", phase, epoch,
                 _fmt(train.get("loss")), _fmt(val.get("loss")), _fmt(val.get("accuracy")), seconds,
                 extra={"phase": phase, "epoch": epoch, "train_loss": train.get("loss"), "val_loss": val.get("loss"),
                        "val_accuracy": val.get("accuracy")})

    def _save_checkpoint(self, phase: str, progress: dict, optimizer, best: dict) -> None:
        tmp = self.checkpoint.with_name(CHECKPOINT_DIR + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        optimizer_state = optimizer.state_dict()
        for index, state in optimizer_state["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
        save_file(tensors, str(tmp / "state.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        meta = {"config": self.cfg.to_dict(), "phase": phase, "progress": progress,
                "done_phases": self.state["done_phases"], "param_groups": optimizer_state["param_groups"]}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(self.checkpoint, ignore_errors=True)
        tmp.rename(self.checkpoint)

    def _load_checkpoint(self) -> dict:
        meta_path = self.checkpoint / "state.json"
        if not meta_path.is_file():
            raise TrainError(f"--resume: no checkpoint in {self.checkpoint}")
        meta = json.loads(meta_path.read_text())
        saved = TrainConfig.from_dict(meta["config"]).to_dict()
        mine = self.cfg.to_dict()
        differing = sorted(k for k in mine if k not in ("device", "quiet") and saved.get(k) != mine[k])
        if differing:
            raise TrainError(f"--resume: the checkpoint was made with different options {differing}")
        tensors = load_file(str(self.checkpoint / "state.safetensors"))
        device = next(self.network.parameters()).device
        self.network.load_state_dict({k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")})
        meta["tensors"] = tensors
        return meta

    def _restore(self, optimizer) -> None:
        tensors, device = self.state["tensors"], next(self.network.parameters()).device
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
        optimizer.load_state_dict({"state": state, "param_groups": self.state["param_groups"]})


_PHASES = ("joint", "autoencoder", "classifier")
_BUCKET_BATCHES = 8


def _bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled minibatches of similar lengths: a random permutation cut into pools of
    ``_BUCKET_BATCHES`` batches, each pool sorted by length, batches then shuffled. Short
    Stripe 82 chunks then rarely share a batch with 200-point ASAS chunks (less padding
    computed), while the batches stay random."""
    order = rng.permutation(lengths.size)
    pool = batch_size * _BUCKET_BATCHES
    batches = []
    for start in range(0, order.size, pool):
        members = order[start : start + pool]
        members = members[np.argsort(lengths[members], kind="stable")]
        batches.extend(members[i : i + batch_size] for i in range(0, members.size, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a metric that could not be computed is recorded as null."""
    return value if math.isfinite(value) else None


def _fmt(value) -> str:
    return "" if value is None or value != value else f"{value:.6g}"


class _Silent:
    """Stands in for the progress bar in quiet mode (cross-validation, tests, batch jobs)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, name: str, quiet: bool, initial: int):
    if quiet:
        return _Silent()
    from broker_filter.model.progress import progress_bar

    return progress_bar(total=total, initial=initial, desc=name, unit="epoch", leave=False)


@torch.no_grad()
def _outputs(network: AutoencoderGMM, data: _Tensors, batch_size: int = 1024):
    network.eval()
    z, gamma, logits = [], [], []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        inputs, _, lengths, supports, _ = data.part(index)
        out = network(inputs, lengths, supports)
        z.append(out.z)
        gamma.append(out.gamma)
        logits.append(out.logits)
    return torch.cat(z), torch.cat(gamma), torch.cat(logits)


def _accuracy(network: AutoencoderGMM, data: _Tensors) -> float:
    _, _, logits = _outputs(network, data)
    return float((logits.argmax(dim=1) == data.labels).float().mean())


def _object_accuracy(network: AutoencoderGMM, data: _Tensors) -> float:
    _, _, logits = _outputs(network, data)
    combined = combine_chunks(data.object_ids, torch.log_softmax(logits, 1).double().cpu().numpy(),
                              np.zeros(len(data)), data.lengths.numpy())
    truth = {oid: int(label) for oid, label in zip(data.object_ids, data.labels.cpu().tolist())}
    predicted = combined.log_probs.argmax(axis=1)
    return float(np.mean([predicted[i] == truth[oid] for i, oid in enumerate(combined.object_ids)]))


def _fit_final_gmm(network: AutoencoderGMM, data: _Tensors) -> tuple[GMMParameters, np.ndarray]:
    """The frozen mixture (float64, whole training set) and the training objects' energies."""
    z, gamma, _ = _outputs(network, data)
    gmm = fit_gmm(z.double().cpu(), gamma.double().cpu())
    chunk_energy = energy(z.double().cpu(), gmm).numpy()
    combined = combine_chunks(data.object_ids, np.zeros((len(data), 1)), chunk_energy, data.lengths.numpy())
    return gmm, combined.energy


__all__ = ["TrainConfig", "TrainError", "train", "stratified_split", "labelled", "smoothness_residual"]
