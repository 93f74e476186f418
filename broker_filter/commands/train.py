"""``broker-filter train``: train the autoencoder + GMM on archival light curves into a bundle.

Options keep the paper's names (Tsang & Schultz 2019: ``--model_type --size --num_layers
--embedding --drop_frac --n_min --n_max --period_fold --batch_size --nb_epoch --lr --gmm_on
--lambda1 --num_classes --estnet_size --estnet_drop_frac --cls_epoch --class_prob
--ss_resid``); defaults are :class:`broker_filter.model.train.TrainConfig`'s. Data: the project's table
layout (``--data``, default the repository's ``data/lightcurves``), ASAS-3 ``.dat`` files
and/or an ASAS-SN Variable Stars Database export, all together.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from broker_filter.logging_setup import fatal

REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"


def register(subparsers: argparse._SubParsersAction) -> None:
    from broker_filter.model.train_config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser = subparsers.add_parser(
        "train",
        help="train a model bundle (joint --gmm_on or sequential) on labelled light curves",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=REPO_DATA if REPO_DATA.is_dir() else None,
                      help="directory with lightcurves.parquet + objects.csv")
    data.add_argument("--asas3", type=Path, nargs="+", default=[], help="ASAS-3 .dat files")
    data.add_argument("--asas3-labels", type=Path, help="CSV object_id,survey_class[,period] for the --asas3 files")
    data.add_argument("--asassn-catalogue", type=Path, help="ASAS-SN Variable Stars Database catalogue CSV")
    data.add_argument("--asassn-dir", type=Path, help="directory of ASAS-SN per-star light-curve CSVs")
    data.add_argument("--mapping", type=Path, help="class mapping file (JSON or TOML); default: the paper's 8 classes")
    data.add_argument("--periods", type=Path, help="period table CSV (object_id,band,period): read, and extended with new estimates")
    data.add_argument("--bands", nargs="+", default=list(defaults["bands"]), help="bands to train on")
    data.add_argument("--out", type=Path, required=True, help="bundle directory to write")

    paper = parser.add_argument_group("model and training (the paper's names)")
    for name in ("model_type",):
        paper.add_argument(f"--{name}", choices=("gru", "lstm", "vanilla"), default=defaults[name])
    for name in ("size", "num_layers", "embedding", "n_min", "n_max", "batch_size", "nb_epoch",
                 "estnet_size", "cls_epoch", "estnet_layers"):
        paper.add_argument(f"--{name}", type=int, default=defaults[name])
    for name in ("drop_frac", "lr", "lambda1", "estnet_drop_frac", "class_prob"):
        paper.add_argument(f"--{name}", type=float, default=defaults[name])
    for name in ("period_fold", "gmm_on", "finetune", "bidirectional", "drop_mean_mag", "shape_features", "calibrate"):
        paper.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=defaults[name])
    paper.add_argument("--num_classes", type=int, help="must equal the mapping's class count (checked)")
    paper.add_argument("--ss_resid", type=float, default=None,
                       help="drop chunks whose folded curve's binned-mean residual / scatter exceeds this")

    ours = parser.add_argument_group("run")
    ours.add_argument("--seed", type=int, default=defaults["seed"])
    ours.add_argument("--val_frac", type=float, default=defaults["val_frac"])
    ours.add_argument("--patience", type=int, default=defaults["patience"])
    ours.add_argument("--class_weight", choices=("balanced", "sqrt", "none"), default=defaults["class_weight"])
    ours.add_argument("--prefix_sizes", type=_sizes, default=tuple(defaults["prefix_sizes"]), metavar="N,N,...",
                      help="also train on the first N points of each light curve (comma-separated; empty: off)")
    ours.add_argument("--use_catalogue_period", action=argparse.BooleanOptionalAction, default=defaults["use_catalogue_period"])
    ours.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    ours.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    ours.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers expected, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from broker_filter.model.classes import ClassMapping, MappingError
    from broker_filter.model.data import DataError, load_period_table, save_period_table
    from broker_filter.model.features import PreprocessError
    from broker_filter.model.train import labelled, train
    from broker_filter.model.train_config import TrainConfig, TrainError

    try:
        mapping = ClassMapping.from_file(args.mapping) if args.mapping else ClassMapping()
        if args.num_classes is not None and args.num_classes != len(mapping.known):
            raise TrainError(f"--num_classes {args.num_classes} but the mapping has {len(mapping.known)} classes")
        cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})
        lcs = _load(args)
        periods = load_period_table(args.periods) if args.periods and args.periods.is_file() else {}
        if args.periods:
            _fill_periods(labelled(lcs, mapping, cfg.preprocess()), cfg, periods)
            save_period_table(args.periods, periods)
        started = time.perf_counter()
        bundle = train(cfg, lcs, args.out, mapping=mapping, periods=periods, resume=args.resume)
    except (DataError, MappingError, PreprocessError, TrainError) as error:
        return fatal(f"broker-filter train: {error}")
    metrics = bundle.metrics
    print(
        f"bundle {bundle.bundle_id} -> {args.out} in {time.perf_counter() - started:.0f} s on {metrics['device']}: "
        f"val accuracy {metrics['val_accuracy_per_object']:.3f} per object, "
        f"{metrics['val_accuracy_per_chunk']:.3f} per chunk; thresholds p80 {bundle.thresholds['p80']:.2f}, "
        f"p95 {bundle.thresholds['p95']:.2f}"
    )
    return 0


def _load(args: argparse.Namespace):
    from broker_filter.model.data import DataError, load_asas3_dat, load_asassn, load_lightcurve_table

    lcs = []
    if args.data is not None:
        lcs += load_lightcurve_table(args.data)
    if args.asas3:
        labels, periods = _asas3_labels(args.asas3_labels) if args.asas3_labels else ({}, {})
        lcs += load_asas3_dat(args.asas3, labels=labels, periods=periods)
    if args.asassn_catalogue or args.asassn_dir:
        if not (args.asassn_catalogue and args.asassn_dir):
            raise DataError("--asassn-catalogue and --asassn-dir go together")
        lcs += load_asassn(args.asassn_catalogue, args.asassn_dir, class_prob=args.class_prob)
    if not lcs:
        raise DataError("no light curves: give --data, --asas3 or --asassn-catalogue/--asassn-dir")
    return lcs


def _asas3_labels(path: Path) -> tuple[dict[str, str], dict[str, float]]:
    import pandas as pd

    from broker_filter.model.data import DataError

    try:
        table = pd.read_csv(path, dtype={"object_id": str, "survey_class": str})
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    if not {"object_id", "survey_class"} <= set(table.columns):
        raise DataError(f"{path}: needs columns object_id,survey_class[,period]")
    labels = dict(zip(table["object_id"], table["survey_class"]))
    periods = {}
    if "period" in table.columns:
        periods = {o: float(p) for o, p in zip(table["object_id"], pd.to_numeric(table["period"], errors="coerce")) if p > 0}
    return labels, periods


def _fill_periods(lcs, cfg, periods: dict) -> None:
    """Estimate (once) the periods the table lacks, so later runs and evaluation reuse them."""
    from broker_filter.model.features import resolve_periods

    missing = [lc for lc in lcs if (lc.object_id, lc.band) not in periods]
    if missing:
        for lc, period in zip(missing, resolve_periods(missing, cfg.preprocess())):
            periods[(lc.object_id, lc.band)] = float(period)
