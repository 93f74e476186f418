"""``broker-filter evaluate``: the paper's figures for a bundle, or a cross-validation of its recipe.

Without ``--cv``: the bundle (default: the packaged one) is scored on its own held-out
objects of DIR (the validation split its training made, redone from the seed it
recorded), plus every novel object; the baselines are fitted on its training objects.
With ``--cv K``: a training recipe (``--model``'s recorded configuration, or the default
training options without ``--model``; changed by any ``--train-option``) is trained K
times on stratified folds of DIR and every fold is evaluated the same way; the report
holds the mean and spread over folds.

With ``--external``: DIR is independent of the bundle (a user's own labelled stars, or the
OUT/external part of ``broker-filter split``): every object of DIR is tested and no split is
re-made; the baselines are fitted on the bundle's training objects of ``--train-data``.

REPORT receives metrics.json, confusion.png, energy_hist.png, reliability.png and summary.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from broker_filter.logging_setup import fatal, report, warn


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model bundle as the paper reports it, with baselines (or cross-validate its recipe)",
        description=__doc__,
    )
    parser.add_argument("--model", metavar="BUNDLE", help="bundle directory (default: the packaged default bundle)")
    parser.add_argument("--data", metavar="DIR", required=True, help="light curves: lightcurves.parquet + objects.csv")
    parser.add_argument("--out", metavar="REPORT", required=True, help="report directory (created)")
    parser.add_argument("--external", action="store_true",
                        help="DIR is independent of the bundle: every object of DIR is tested (no split is re-made), "
                             "and the baselines are fitted on the bundle's training objects of --train-data")
    parser.add_argument("--train-data", metavar="DIR", type=Path,
                        help="with --external: the data the bundle was trained on (default: the repository's data/lightcurves)")
    parser.add_argument("--cv", metavar="K", type=int, default=0,
                        help="stratified K-fold cross-validation of the recipe")
    parser.add_argument("--jobs", type=int, default=1,
                        help="folds trained in parallel processes (--cv; one GPU fits several)")
    parser.add_argument("--train-option", metavar="KEY=VALUE", action="append", default=[],
                        help="override one training option of the recipe for --cv (e.g. nb_epoch=30); repeatable")
    parser.add_argument("--resume", action="store_true", help="--cv: keep folds already written under REPORT/folds")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--seed", type=int, default=0,
                        help="fold assignment and baseline seeds (--train-option seed=S shifts the training seeds alone)")
    parser.add_argument("--save-predictions", action="store_true",
                        help="also write every object's outputs, whole and cut to stream prefixes, as Parquet: "
                             "REPORT/predictions.parquet (with --cv: REPORT/folds/predictions_<k>.parquet)")
    parser.add_argument("--periods", metavar="CSV", type=Path,
                        help="period table (object_id,band,period), e.g. data/lightcurves/periods.csv: "
                             "these curves skip period estimation (costly on a CPU)")
    parser.add_argument("--n-points", metavar="N,N,...",
                        help="truncations for accuracy_by_n_points (default 20,30,50,100,200,500)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from broker_filter.model.bundle import BundleError, ModelBundle
    from broker_filter.model.data import DataError, load_lightcurve_table, load_period_table
    from broker_filter.model.evaluate import N_POINTS_GRID, EvaluationError
    from broker_filter.model.train_config import TrainError

    try:
        grid = _parse_grid(args.n_points) if args.n_points else N_POINTS_GRID
        lcs = load_lightcurve_table(args.data)
        periods = load_period_table(args.periods) if args.periods else None
        _warn_if_slow(args, lcs, periods)
        if args.external and args.cv:
            raise ValueError("--external and --cv exclude each other")
        if args.external:
            metrics = _evaluate_external(args, ModelBundle.load(args.model), lcs, grid, periods)
        elif args.cv:
            bundle = ModelBundle.load(args.model) if args.model else None
            metrics = _cross_validate(args, bundle, lcs, grid, periods)
        else:
            metrics = _evaluate_bundle(args, ModelBundle.load(args.model), lcs, grid, periods)
    except (BundleError, DataError, EvaluationError, TrainError, ValueError) as error:
        return fatal(f"broker-filter evaluate: {error}")
    from broker_filter.model.report import write_report

    paths = write_report(metrics, args.out)
    print((Path(args.out) / "summary.md").read_text())
    report("wrote " + ", ".join(str(p) for p in paths))
    return 0


#: Period search on the development VM's 2 CPU cores: 400 ASAS-3 and Stripe 82 light curves in
#: 35 s (``estimate_periods`` on data/lightcurves, 2026-12-02); on a GPU it is seconds for all.
CPU_SECONDS_PER_CURVE = 0.09


def _warn_if_slow(args: argparse.Namespace, lcs, periods) -> None:
    """Say, before a silent quarter of an hour, that periods will be searched on the CPU."""
    from broker_filter.model.bundle import resolve_device

    if periods or resolve_device(args.device).type != "cpu":
        return
    minutes = len(lcs) * CPU_SECONDS_PER_CURVE / 60 * (max(args.cv, 1))
    warn(f"broker-filter evaluate: searching the periods of {len(lcs):,} light curves on the CPU, and again for their "
         f"prefixes: at least {minutes:.0f} min at {CPU_SECONDS_PER_CURVE} s per curve on 2 cores "
         f"(--periods {Path(args.data) / 'periods.csv'} skips the whole-curve searches where the table exists)")


def _evaluate_bundle(args: argparse.Namespace, bundle, lcs, grid, periods) -> dict:
    from broker_filter.model.evaluate import evaluate_split, held_out_split

    split, same_data = held_out_split(bundle, lcs)
    metrics = evaluate_split(bundle, split, device=args.device, periods=periods, seed=args.seed, n_points_grid=grid)
    metrics["model"] = {"path": args.model or "default", "bundle_id": bundle.bundle_id, "version": bundle.version}
    metrics["held_out"] = same_data
    _save_predictions(args, bundle, split, periods)
    if not same_data:
        warn("broker-filter evaluate: DIR is not the bundle's training data (digest differs); "
             "test objects may have been trained on")
    return metrics


def _evaluate_external(args: argparse.Namespace, bundle, lcs, grid, periods) -> dict:
    from broker_filter.commands.train import REPO_DATA
    from broker_filter.model.data import load_lightcurve_table
    from broker_filter.model.evaluate import evaluate_split, external_split

    train_dir = args.train_data or REPO_DATA
    split, record = external_split(bundle, lcs, load_lightcurve_table(train_dir))
    if not record["train_data_is_bundle_data"]:
        warn(f"broker-filter evaluate: {train_dir} is not the bundle's training data (digest differs); "
             "the baselines are fitted on the same recipe's split of it")
    if record["objects_trained_on"]:
        warn(f"broker-filter evaluate: {record['objects_trained_on']} objects of {args.data} are among the bundle's "
             "training objects: they are not independent")
    metrics = evaluate_split(bundle, split, device=args.device, periods=periods, seed=args.seed, n_points_grid=grid)
    metrics["model"] = {"path": args.model or "default", "bundle_id": bundle.bundle_id, "version": bundle.version}
    metrics["external"] = {"data": str(args.data), "train_data": str(train_dir), **record}
    _save_predictions(args, bundle, split, periods)
    return metrics


def _save_predictions(args: argparse.Namespace, bundle, split, periods) -> None:
    if args.save_predictions:
        from broker_filter.model.predictions import prediction_table, write_predictions

        Path(args.out).mkdir(parents=True, exist_ok=True)
        path = write_predictions(prediction_table(bundle, split, args.device, periods),
                                 Path(args.out) / "predictions.parquet", bundle.class_names)
        report(f"wrote {path}")


def _cross_validate(args: argparse.Namespace, bundle, lcs, grid, periods) -> dict:
    from broker_filter.model.crossval import CrossValidation, aggregate, run_crossval
    from broker_filter.model.train_config import TrainConfig

    from broker_filter.model.classes import ClassMapping

    recorded = bundle.training.get("config", {}) if bundle is not None else {}
    recipe = TrainConfig.from_dict({**recorded, **_parse_options(args.train_option)})
    mapping = bundle.class_mapping if bundle is not None else ClassMapping()
    plan = CrossValidation(config=recipe, mapping=mapping, folds=args.cv, seed=args.seed,
                           jobs=args.jobs, device=args.device, resume=args.resume, n_points_grid=grid,
                           save_predictions=args.save_predictions)
    metrics = aggregate(run_crossval(plan, lcs, args.out, periods))
    metrics["model"] = {"recipe_of": args.model or "default training options", "train_config": recipe.to_dict()}
    return metrics


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs; values are JSON when they parse (numbers, true, null, lists), else strings."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--train-option wants KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    from dataclasses import fields

    from broker_filter.model.train_config import TrainConfig

    unknown = sorted(set(options) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}")
    return options


def _parse_grid(text: str) -> tuple[int, ...]:
    try:
        grid = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--n-points wants comma-separated integers, got {text!r}") from None
    if not grid or min(grid) < 1:
        raise ValueError(f"--n-points wants positive integers, got {text!r}")
    return grid
