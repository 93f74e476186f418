"""Evaluation: the metrics on hand-checkable cases, and a tiny end-to-end run on real data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from broker_filter.model.crossval import aggregate, fold_assignment
from broker_filter.model.data import load_lightcurve_table
from broker_filter.model.evaluate import EvalObject, _first_detections, group_objects, held_out_split
from broker_filter.model.metrics import classification_metrics, combine_by_owner, novelty_metrics, percentile_thresholds

EVAL_DATA = Path(__file__).resolve().parents[1] / "data" / "lightcurves_eval"


# -- metrics, by hand -----------------------------------------------------------------------


def test_classification_metrics_by_hand():
    result = classification_metrics(["A", "A", "B", "B"], ["A", "B", "B", "B"], ["A", "B", "C"])
    assert result["accuracy"] == 0.75
    assert result["per_class"]["A"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert result["per_class"]["B"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["B"]["recall"] == 1.0
    assert result["per_class"]["C"]["support"] == 0
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # C is absent: not averaged in
    assert result["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_classification_refuses_novel_truth():
    with pytest.raises(ValueError, match="outside the known classes"):
        classification_metrics(["A", "VAR"], ["A", "A"], ["A", "B"])


def test_novelty_metrics_by_hand():
    # threshold 3: known 4 is a false positive; novel 3.5, 5, 6 are all caught.
    result = novelty_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 5.0, 6.0]), {"p80": 3.0, "p95": 5.5})
    assert result["precision_p80"] == 0.75 and result["recall_p80"] == 1.0
    assert result["f1_p80"] == pytest.approx(6 / 7)
    assert result["precision_p95"] == 1.0 and result["recall_p95"] == pytest.approx(1 / 3)
    assert result["auroc"] == pytest.approx(11 / 12)  # 3.5 ranks below 4 only
    assert (result["n_known"], result["n_novel"]) == (4, 3)


def test_novelty_with_nothing_flagged_has_zero_precision_not_nan():
    result = novelty_metrics(np.array([1.0, 2.0]), np.array([1.5]), {"p80": 10.0})
    assert result["precision_p80"] == 0.0 and result["f1_p80"] == 0.0


def test_novelty_refuses_non_finite_scores():
    with pytest.raises(ValueError, match="non-finite"):
        novelty_metrics(np.array([1.0, np.inf]), np.array([2.0]), {"p80": 1.5})


def test_percentile_thresholds_and_combination():
    assert percentile_thresholds(np.arange(101.0), {"p80": 80, "p95": 95}) == {"p80": 80.0, "p95": 95.0}
    means = combine_by_owner(np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]]), np.array([1, 1, 0]), 3)
    np.testing.assert_allclose(means[:2], [[5.0, 5.0], [2.0, 1.0]])
    assert np.all(np.isnan(means[2]))  # an object with no rows is visible, not zero


# -- objects, folds, truncation on real data --------------------------------------------------


@pytest.fixture(scope="module")
def curves():
    return load_lightcurve_table(EVAL_DATA)


def test_group_objects_maps_classes_and_novelty_sets(curves):
    from broker_filter.model.classes import ClassMapping

    objects = group_objects(curves, ClassMapping(), bands=("V", "g", "R"))
    by_id = {obj.object_id: obj for obj in objects}
    assert len(by_id) == 40
    assert {obj.novelty_set for obj in objects} == {None, "VAR", "SNIa"}
    assert all((obj.label is None) != (obj.novelty_set is None) for obj in objects)
    snia = next(obj for obj in objects if obj.novelty_set == "SNIa")
    assert {c.band for c in snia.curves} <= {"g", "R"}


def test_fold_assignment_is_stratified(curves):
    from broker_filter.model.classes import ClassMapping

    objects = group_objects(curves, ClassMapping(), bands=None)
    assignment = fold_assignment(objects, folds=4, seed=0)
    known = [obj for obj in objects if obj.label is not None]
    assert set(assignment) == {obj.object_id for obj in known}  # novel objects are in no fold
    for label in {obj.label for obj in known}:  # 4 objects a class: one in each fold
        assert sorted(assignment[o.object_id] for o in known if o.label == label) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="fewer than the 5 folds"):
        fold_assignment(objects, folds=5, seed=0)


def test_first_detections_follow_time_across_bands(curves):
    snia = [lc for lc in curves if lc.object_id == curves[-1].object_id]
    obj = EvalObject(snia[0].object_id, tuple(snia), None, "SNIa")
    truncated = _first_detections(obj, 10)
    assert truncated.n_points == 10
    kept = np.sort(np.concatenate([c.time for c in truncated.curves]))
    every = np.sort(np.concatenate([c.time for c in obj.curves]))
    np.testing.assert_array_equal(kept, every[:10])


# -- end to end ---------------------------------------------------------------------------------


def test_known_periods_are_used_and_only_missing_ones_estimated(curves):
    from broker_filter.model.features import PreprocessConfig, resolve_periods
    from broker_filter.model.evaluate import periods_of

    config = PreprocessConfig()
    some = [lc for lc in curves if len(lc) >= 50][:3]
    known = {(lc.object_id, lc.band): 1.0 + i for i, lc in enumerate(some[:2])}
    values = periods_of(some, config, known)
    np.testing.assert_array_equal(values[:2], [1.0, 2.0])
    np.testing.assert_allclose(values[2], resolve_periods(some[2:], config)[0])


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny RNNs run several times faster on one thread than on two busy, shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, curves, one_torch_thread):
    from broker_filter.model.train import TrainConfig, train

    config = TrainConfig(size=8, num_layers=1, embedding=4, nb_epoch=2, batch_size=32, val_frac=0.25,
                         quiet=True, device="cpu")
    directory = tmp_path_factory.mktemp("bundle")
    train(config, curves, directory)
    return directory


@pytest.mark.slow
def test_held_out_split_reproduces_the_bundles_own_split(tiny_bundle, curves):
    from broker_filter.model.bundle import ModelBundle

    bundle = ModelBundle.load(tiny_bundle)
    split, same_data = held_out_split(bundle, curves)
    assert same_data
    assert bundle.training["val_objects"] == len(split.test)
    assert not {o.object_id for o in split.train} & {o.object_id for o in split.test}
    one_known_star_fewer = [lc for lc in curves if lc.object_id != split.train[0].object_id]
    _, other_data = held_out_split(bundle, one_known_star_fewer)
    assert not other_data


@pytest.mark.slow
def test_evaluate_command_writes_every_file_and_key(tiny_bundle, tmp_path):
    from broker_filter.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    out = tmp_path / "report"
    args = parser.parse_args(["evaluate", "--model", str(tiny_bundle), "--data", str(EVAL_DATA), "--out", str(out),
                              "--device", "cpu", "--n-points", "20,50"])
    assert args.handler(args) == 0
    for name in ("metrics.json", "confusion.png", "energy_hist.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"] is True
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["accuracy_per_chunk"] <= 1.0
    assert set(metrics["per_class"]["ROT"]) == {"precision", "recall", "f1", "support"}
    novelty_keys = {"precision_p80", "recall_p80", "f1_p80", "precision_p95", "recall_p95", "f1_p95", "auroc"}
    assert metrics["novelty"]["set"] == "VAR" and novelty_keys <= set(metrics["novelty"])
    assert novelty_keys <= set(metrics["novelty_by_set"]["SNIa"])
    assert set(metrics["accuracy_by_n_points"]) == {"20", "50"}
    assert set(metrics["baselines"]) == {
        "random_forest_network_features", "random_forest_lightcurve_features",
        "isolation_forest_network_features", "isolation_forest_lightcurve_features",
    }
    assert "accuracy_per_chunk" in metrics["baselines"]["random_forest_network_features"]
    assert novelty_keys <= set(metrics["baselines"]["isolation_forest_lightcurve_features"]["VAR"])
    assert "| network (RNN autoencoder + GMM) |" in (out / "summary.md").read_text()
    bins = metrics["false_alarms_by_n_points"]
    assert list(bins) == ["20-29", "30-49", "50-99", "100-199", "200-399", "400+"]
    flagged = [row for row in bins.values() if row["scorings"]]
    assert flagged and all(0.0 <= row["rate_p95"] <= row["rate_p80"] <= 1.0 for row in flagged)
    by_band = metrics["by_survey_band"]["by_band"]
    assert by_band and all(key.count(":") == 1 and row["objects"] >= 0 for key, row in by_band.items())
    assert sum(row["objects"] for row in metrics["by_survey_band"]["by_source"].values()) == metrics["counts"]["test_objects"]

    # Two "folds" made of this result: means, spreads and summed counts as documented.
    second = json.loads(json.dumps(metrics))
    second["accuracy"], second["fold"], metrics["fold"] = metrics["accuracy"] + 0.2, 1, 0
    combined = aggregate([metrics, second])
    assert combined["accuracy"] == pytest.approx(metrics["accuracy"] + 0.1)
    assert combined["cv"]["std"]["accuracy"] == pytest.approx(0.1)
    assert combined["counts"]["test_objects"] == 2 * metrics["counts"]["test_objects"]
    assert combined["per_class"]["ROT"]["support"] == 2 * metrics["per_class"]["ROT"]["support"]


@pytest.mark.slow
def test_saved_predictions_hold_every_object_whole_and_cut(tiny_bundle, curves, tmp_path):
    """--save-predictions: one row per object and cut, and the whole-curve rows give the report's accuracy."""
    import pyarrow.parquet as pq

    from broker_filter.commands import evaluate
    from broker_filter.model.bundle import ModelBundle

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    out = tmp_path / "report"
    args = parser.parse_args(["evaluate", "--model", str(tiny_bundle), "--data", str(EVAL_DATA), "--out", str(out),
                              "--device", "cpu", "--n-points", "20", "--save-predictions"])
    assert args.handler(args) == 0
    table = pq.read_table(out / "predictions.parquet")
    bundle = ModelBundle.load(tiny_bundle)
    assert table.schema.metadata[b"class_names"].decode().split(",") == list(bundle.class_names)
    rows = table.to_pandas()
    whole = rows[rows["cut"] == 0]
    metrics = json.loads((out / "metrics.json").read_text())
    test = whole[whole["group"] == "test"]
    assert len(test) == metrics["counts"]["test_objects"]
    assert len(whole[whole["group"] == "train"]) == metrics["counts"]["train_objects"]
    assert not set(test["object_id"]) & set(whole[whole["group"] == "train"]["object_id"])
    assert set(whole[whole["group"] == "novel"]["novelty_set"]) == {"VAR", "SNIa"}
    predicted = [bundle.class_names[int(np.argmax(lp))] for lp in test["log_probs"]]
    assert np.mean(np.array(predicted) == test["label"].to_numpy()) == pytest.approx(metrics["accuracy"])
    assert {len(z) for z in rows["z"]} == {bundle.network_config.z_dim}
    cut = rows[rows["cut"] == 20]
    assert len(cut) and (cut["n_points"] <= 20).all()  # a prefix of 20 detections scores at most 20 points
    assert set(cut["object_id"]) <= set(whole["object_id"])


def test_evaluate_command_reports_a_bad_bundle_in_one_line(tmp_path, capsys):
    from broker_filter.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--model", str(tmp_path), "--data", str(EVAL_DATA), "--out", str(tmp_path / "r")]
    )
    assert args.handler(args) == 2
    assert "not a model bundle" in capsys.readouterr().err


@pytest.mark.slow
def test_cross_validation_writes_folds_and_resumes(tmp_path, one_torch_thread):
    from broker_filter.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    out = tmp_path / "cv"
    tiny = ["size=8", "num_layers=1", "embedding=4", "nb_epoch=1", "batch_size=32", "val_frac=0.25"]
    argv = ["evaluate", "--data", str(EVAL_DATA), "--out", str(out), "--cv", "2", "--device", "cpu",
            "--n-points", "20"] + [arg for option in tiny for arg in ("--train-option", option)]
    args = parser.parse_args(argv + ["--save-predictions"])
    assert args.handler(args) == 0
    import pyarrow.parquet as pq

    for k in range(2):  # each fold's per-object outputs: its test objects are that fold's
        rows = pq.read_table(out / "folds" / f"predictions_{k}.parquet").to_pandas()
        fold = json.loads((out / "folds" / f"fold_{k}.json").read_text())
        assert ((rows["group"] == "test") & (rows["cut"] == 0)).sum() == fold["counts"]["test_objects"]
    rescored = _rescore_tool().main([str(out), str(out), "--data", str(EVAL_DATA)])  # a two-member "ensemble" of one CV
    assert rescored["accuracy"]["mean"] == pytest.approx(json.loads((out / "metrics.json").read_text())["accuracy"])
    for rule in ("energy", "energy+uncertainty"):
        assert 0.0 <= rescored[rule]["auroc_VAR"]["mean"] <= 1.0 and rescored[rule]["flagged_p95"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cv"]["folds"] == 2 and len(metrics["cv"]["per_fold"]) == 2
    counts = metrics["counts"]
    assert counts["test_objects"] + counts["unscored"]["test"] == 32  # every known object tested once
    assert metrics["model"]["train_config"]["nb_epoch"] == 1
    fold_files = sorted((out / "folds").glob("fold_*.json"))
    assert [f.name for f in fold_files] == ["fold_0.json", "fold_1.json"]

    written = [f.stat().st_mtime_ns for f in fold_files]
    args = parser.parse_args(argv + ["--resume"])
    assert args.handler(args) == 0
    assert [f.stat().st_mtime_ns for f in fold_files] == written  # nothing retrained
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]


def _rescore_tool():
    """docs/tools/cv_rescore.py, imported from its path."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "docs" / "tools" / "cv_rescore.py"
    spec = importlib.util.spec_from_file_location("cv_rescore", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_training_option_is_refused(tmp_path, capsys):
    from broker_filter.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--data", str(EVAL_DATA), "--out", str(tmp_path), "--cv", "2",
                              "--train-option", "hidden_units=3"])
    assert args.handler(args) == 2
    assert "unknown training option(s) ['hidden_units']" in capsys.readouterr().err


@pytest.mark.slow
def test_external_evaluation_scores_every_object_of_an_independent_set(tmp_path, one_torch_thread):
    """split -> train on one part -> evaluate --external on the other: every object of DIR is tested."""
    from broker_filter.commands import evaluate, split, train as train_command
    from broker_filter.model.data import load_lightcurve_table

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    for command in (evaluate, split, train_command):
        command.register(subparsers)
    parts = tmp_path / "parts"
    args = parser.parse_args(["split", "--data", str(EVAL_DATA), "--out", str(parts), "--fraction", "0.3"])
    assert args.handler(args) == 0
    bundle_dir = tmp_path / "bundle"
    args = parser.parse_args(["train", "--data", str(parts / "train"), "--out", str(bundle_dir), "--size", "8",
                              "--num_layers", "1", "--embedding", "4", "--nb_epoch", "1", "--batch_size", "32",
                              "--val_frac", "0.25", "--device", "cpu", "--quiet"])
    assert args.handler(args) == 0
    out = tmp_path / "report"
    args = parser.parse_args(["evaluate", "--external", "--model", str(bundle_dir), "--data", str(parts / "external"),
                              "--train-data", str(parts / "train"), "--out", str(out), "--device", "cpu", "--n-points", "20,50"])
    assert args.handler(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    external_ids = {lc.object_id for lc in load_lightcurve_table(parts / "external")}
    counts = metrics["counts"]
    tested = counts["test_objects"] + counts["unscored"]["test"] + sum(counts["novel_objects"].values()) + sum(
        n for name, n in counts["unscored"].items() if name not in ("train", "test"))
    assert tested == len(external_ids)  # every object of DIR, known or novel, is a test object
    assert metrics["external"]["train_data_is_bundle_data"] and metrics["external"]["objects_trained_on"] == 0
    assert {"random_forest_network_features", "random_forest_lightcurve_features"} <= set(metrics["accuracy_by_n_points"]["20"])
    assert 0.0 <= metrics["calibration"]["whole_curves"]["ece"] <= 1.0
    assert (out / "reliability.png").is_file()
