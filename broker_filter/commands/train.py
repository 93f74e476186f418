"""``broker-filter train``: train the autoencoder + GMM on archival light curves into a bundle."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from broker_filter.logging_setup import fatal
from broker_filter.model.train_config import NOVELTY_RULES

REPO_DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"

DESCRIPTION = """\
Train the RNN autoencoder + Gaussian mixture (Tsang & Schultz 2019) on labelled light curves
and write a bundle the daemon serves. Options are in kebab-case; the paper's names
(--model_type, --nb_epoch, --gmm_on, ...) are accepted as aliases. Defaults are those of the
packaged default bundle. Data: the project's table layout (--data; the repository's
data/lightcurves when run from a clone), ASAS-3 .dat files and an ASAS-SN Variable Stars
Database export, in any combination."""

#: (paper's name, kind, help) of every model and training option; kind: a type, a choice tuple, or bool.
MODEL_OPTIONS = (
    ("model_type", ("gru", "lstm", "vanilla"), "recurrent cell of the encoder and decoder"),
    ("size", int, "hidden units per recurrent layer"),
    ("num_layers", int, "recurrent layers of the encoder and of the decoder"),
    ("embedding", int, "size of the autoencoder's embedding"),
    ("drop_frac", float, "dropout between recurrent layers"),
    ("bidirectional", bool, "bidirectional encoder"),
    ("n_min", int, "fewest points a chunk may have (shorter light curves are not scored)"),
    ("n_max", int, "most points per chunk (longer light curves are cut into chunks)"),
    ("period_fold", bool, "fold each light curve by its period before chunking"),
    ("batch_size", int, "chunks per optimisation step"),
    ("nb_epoch", int, "epochs of joint training (of the autoencoder alone when sequential)"),
    ("cls_epoch", int, "epochs of the estimation network alone (sequential, or fine-tuning)"),
    ("lr", float, "Adam learning rate"),
    ("gmm_on", bool, "train the autoencoder and the Gaussian mixture jointly (else sequentially)"),
    ("finetune", bool, "after joint training, train the estimation network alone for --cls-epoch epochs"),
    ("lambda1", float, "weight of the mixture energy in the joint loss"),
    ("estnet_size", int, "hidden units per layer of the estimation network"),
    ("estnet_layers", int, "hidden layers of the estimation network"),
    ("estnet_drop_frac", float, "dropout of the estimation network"),
    ("drop_mean_mag", bool, "do not give the network the mean magnitude (brightness is the survey's, not the star's)"),
    ("shape_features", bool, "give the estimation network 9 shape statistics of the folded chunk"),
    ("calibrate", bool, "fit the temperature and novelty p-values on the validation objects"),
    ("novelty", NOVELTY_RULES,
     "what the novelty p-value ranks: the mixture energy, or the energy combined with the class probabilities' entropy"),
    ("class_prob", float, "ASAS-SN loader: keep stars whose class probability is at least this"),
)
RUN_OPTIONS = (
    ("seed", int, "seed of the split, the initialisation and the batches"),
    ("val_frac", float, "share of objects held out for validation and calibration"),
    ("patience", int, "stop after this many epochs without a better validation loss"),
    ("class_weight", ("balanced", "sqrt", "none"), "loss weight per class: inverse frequency, its square root, or none"),
    ("use_catalogue_period", bool, "fold by the catalogue's period where the data has one (else always estimate)"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from broker_filter.model.train_config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser = subparsers.add_parser(
        "train",
        help="train a model bundle (joint --gmm-on or sequential) on labelled light curves",
        description=DESCRIPTION,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=None, metavar="DIR",
                      help="folder with lightcurves.parquet + objects.csv (default: the repository's data/lightcurves)")
    data.add_argument("--asas3", type=Path, nargs="+", default=[], metavar="FILE", help="ASAS-3 .dat files")
    data.add_argument("--asas3-labels", type=Path, metavar="CSV", help="object_id,survey_class[,period] for the --asas3 files")
    data.add_argument("--asassn-catalogue", type=Path, metavar="CSV", help="ASAS-SN Variable Stars Database catalogue")
    data.add_argument("--asassn-dir", type=Path, metavar="DIR", help="folder of ASAS-SN per-star light-curve CSVs")
    data.add_argument("--mapping", type=Path, metavar="FILE", help="class mapping (JSON or TOML); default: the paper's 8 classes")
    data.add_argument("--periods", type=Path, metavar="CSV",
                      help="period table (object_id,band,period) to read; curves missing from it are estimated")
    data.add_argument("--save-periods", action="store_true",
                      help="write --periods back, extended with the new estimates (off: it may be a tracked file)")
    data.add_argument("--bands", nargs="+", default=list(defaults["bands"]), help="bands to train on")
    data.add_argument("--out", type=Path, required=True, metavar="DIR", help="bundle folder to write")

    model = parser.add_argument_group("model and training (the paper's names as aliases)")
    _add_options(model, MODEL_OPTIONS, defaults)
    model.add_argument("--num-classes", "--num_classes", dest="num_classes", type=int,
                       help="must equal the mapping's class count (checked)")
    model.add_argument("--ss-resid", "--ss_resid", dest="ss_resid", type=float, default=None,
                       help="drop chunks whose folded curve's binned-mean residual over scatter exceeds this")
    run_group = parser.add_argument_group("run")
    _add_options(run_group, RUN_OPTIONS, defaults)
    run_group.add_argument("--prefix-sizes", "--prefix_sizes", dest="prefix_sizes", type=_sizes,
                           default=tuple(defaults["prefix_sizes"]), metavar="N,N,...",
                           help="also train on the first N points of each light curve (comma-separated; empty: off)")
    run_group.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    run_group.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _add_options(group, options, defaults: dict) -> None:
    """``--kebab-case`` options with the paper's ``--snake_case`` names as aliases."""
    for name, kind, help_text in options:
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        if kind is bool:
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=defaults[name], help=help_text)
        elif isinstance(kind, tuple):
            group.add_argument(*flags, dest=name, choices=kind, default=defaults[name], help=help_text)
        else:
            group.add_argument(*flags, dest=name, type=kind, default=defaults[name], help=help_text)


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
            if args.save_periods:
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
    data = args.data
    if data is None and not (args.asas3 or args.asassn_catalogue) and REPO_DATA.is_dir():
        data = REPO_DATA  # run from a clone: the repository's labelled light curves
    if data is not None:
        lcs += load_lightcurve_table(data)
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
