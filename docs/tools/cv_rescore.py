"""Re-score a cross-validation from its saved outputs: other novelty rules, seed ensembles.

``broker-filter evaluate --cv K --save-predictions --out CV`` leaves, per fold, the bundle and
every object's outputs (``CV/folds/predictions_<k>.parquet``: whole curves and stream
prefixes of the training, test and novel objects). This script refits each fold's
calibration exactly as training does (:func:`broker_filter.model.calibration.fit_calibration`
on the rows of that fold's validation objects, which its training redoes from the recorded
seed and which no weight update saw), with the energy alone and with the energy combined with
the class uncertainty, and reports on the fold's test objects: the AUROC of each novelty set
(whole curves) and the share of known-class scorings flagged at p95 per bin of points. No
test object enters a fit. It lets a new novelty rule be measured on the folds of an existing
cross-validation without training again.

    python docs/tools/cv_novelty.py CV --data data/lightcurves
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import f1_score, roc_auc_score

from broker_filter.model.calibration import fit_calibration, novel_flags, point_bins
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import load_lightcurve_table
from broker_filter.model.features import PreprocessConfig
from broker_filter.model.scores import calibrated_probs
from broker_filter.model.train import labelled, stratified_split
from broker_filter.model.train_config import TrainConfig


def fold_figures(cv_dirs: list[Path], fold: int, lcs) -> dict:
    """One fold's figures: classification, and novelty for each rule ("energy", "energy+uncertainty")."""
    manifest = json.loads((cv_dirs[0] / "folds" / f"bundle_{fold}" / "bundle.json").read_text())
    recipe = TrainConfig.from_dict(manifest["training"]["config"])
    mapping = ClassMapping.from_dict(manifest["class_mapping"])
    tables = [pq.read_table(cv / "folds" / f"predictions_{fold}.parquet") for cv in cv_dirs]
    names = tables[0].schema.metadata[b"class_names"].decode().split(",")
    members = [t.to_pandas() for t in tables]
    rows = members[0]
    key = ["object_id", "group", "cut"]
    if any(not m[key].equals(rows[key]) for m in members[1:]):
        raise SystemExit(f"fold {fold}: the CV folders do not hold the same objects (not the same folds?)")
    train_ids = set(rows.object_id[rows.group == "train"])
    known = labelled([lc for lc in lcs if lc.object_id in train_ids], mapping, PreprocessConfig.from_dict(manifest["preprocess"]))
    _, val = stratified_split(known, mapping, recipe.val_frac, recipe.seed)
    val_ids = {lc.object_id for lc in val}
    log_probs = np.mean([np.stack(m.log_probs) for m in members], axis=0)
    energy = np.mean([m.energy.to_numpy() for m in members], axis=0)
    n_points = rows.n_points.to_numpy()
    is_val = (rows.group == "train").to_numpy() & rows.object_id.isin(val_ids).to_numpy()
    labels = np.array([names.index(label) if label in names else -1 for label in rows.label])
    test, whole = (rows.group == "test").to_numpy(), (rows.cut == 0).to_numpy()
    predicted = np.array(names)[log_probs.argmax(axis=1)]
    right = predicted == rows.label.to_numpy()
    out = {"validation_rows": int(is_val.sum()), "accuracy": float(right[test & whole].mean()),
           "macro_f1": float(f1_score(rows.label[test & whole], predicted[test & whole], average="macro")),
           "accuracy_first_n": {str(n): float(right[test & (rows.cut == n).to_numpy()].mean()) for n in (20, 30, 50, 100)}}
    for rule, combine in (("energy", False), ("energy+uncertainty", True)):
        calibration = fit_calibration(log_probs[is_val], labels[is_val], energy[is_val], n_points[is_val], combine=combine)
        probs = calibrated_probs(log_probs, calibration, n_points)
        p = calibration.p_values(energy, n_points, probs)
        figures = {}
        for name in sorted(set(rows.novelty_set.dropna())):
            novel = whole & (rows.novelty_set == name).to_numpy()
            truth = np.r_[np.zeros((test & whole).sum()), np.ones(novel.sum())]
            figures[f"auroc_{name}"] = float(roc_auc_score(truth, -np.r_[p[test & whole], p[novel]]))
            figures[f"recall_p95_{name}"] = float(novel_flags(p[novel])[:, 1].mean())
        flags = novel_flags(p[test])[:, 1]
        figures["flagged_p95"] = {bin_name: float(flags[pick].mean()) for bin_name, pick in point_bins(n_points[test]) if pick.any()}
        out[rule] = figures
    return out


def summarise(folds: list[dict]) -> dict:
    """Mean and standard deviation over folds of every figure."""
    def walk(values):
        if isinstance(values[0], dict):
            return {k: walk([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return walk(folds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv", type=Path, nargs="+",
                        help="the --out folder(s) of 'broker-filter evaluate --cv K --save-predictions' (several: a seed ensemble)")
    parser.add_argument("--data", type=Path, required=True, help="the --data folder of that cross-validation")
    args = parser.parse_args(argv)
    lcs = load_lightcurve_table(args.data)
    folds = sorted(int(p.stem.split("_")[1]) for p in (args.cv[0] / "folds").glob("predictions_*.parquet"))
    if not folds:
        parser.error(f"{args.cv[0]}/folds holds no predictions_<k>.parquet (run the cross-validation with --save-predictions)")
    result = summarise([fold_figures(args.cv, k, lcs) for k in folds])
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
