"""Training: a tiny configuration on real light curves runs, reproduces with a seed, and resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from broker_filter.model.bundle import ModelBundle
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import LightCurve, load_lightcurve_table, load_period_table
from broker_filter.model.train import CHECKPOINT_DIR, LOG_FILE, _Run, stratified_split, train
from broker_filter.model.train_config import TrainConfig, TrainError

DATA = Path(__file__).resolve().parents[2] / "data" / "lightcurves"
PER_CLASS = 4


@pytest.fixture(scope="module")
def tiny_set() -> tuple[list[LightCurve], dict]:
    """PER_CLASS real objects of each of the 8 classes, V or g band, first 60 points."""
    mapping = ClassMapping()
    chosen: dict[str, list[LightCurve]] = {}
    for lc in load_lightcurve_table(DATA, sources=["asas3_richards2012", "sdss_s82_rrlyrae_sesar2010"], bands=["V", "g"]):
        label = mapping.label_of(lc.label)
        if label is not None and len(chosen.setdefault(label, [])) < PER_CLASS:
            chosen[label].append(LightCurve(lc.object_id, lc.band, lc.time[:60], lc.mag[:60], lc.mag_err[:60], lc.period, lc.label, lc.source))
    lcs = [lc for group in chosen.values() for lc in group]
    table = load_period_table(DATA / "periods.csv")
    return lcs, {(lc.object_id, lc.band): table[(lc.object_id, lc.band)] for lc in lcs}


def _config(**overrides) -> TrainConfig:
    values = dict(size=4, num_layers=1, embedding=3, estnet_size=4, n_min=10, n_max=30, batch_size=16,
                  nb_epoch=2, cls_epoch=2, device="cpu", quiet=True, val_frac=0.25, seed=3)
    values.update(overrides)
    return TrainConfig(**values)


def test_joint_training_writes_a_bundle_and_a_log(tiny_set, tmp_path):
    lcs, periods = tiny_set
    bundle = train(_config(finetune=False), lcs, tmp_path, periods=periods)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / CHECKPOINT_DIR).exists()
    rows = list(csv.DictReader((tmp_path / LOG_FILE).open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["phase"] == "joint" for r in rows)
    assert all(np.isfinite(float(r["train_energy"])) for r in rows)
    assert bundle.thresholds["p80"] <= bundle.thresholds["p95"]
    assert bundle.training["data_digest"] and bundle.training["config"]["nb_epoch"] == 2
    assert ModelBundle.load(tmp_path).bundle_id == bundle.bundle_id


def test_sequential_training_runs_both_phases(tiny_set, tmp_path):
    lcs, periods = tiny_set
    bundle = train(_config(gmm_on=False, cls_epoch=1), lcs, tmp_path, periods=periods)
    assert set(bundle.metrics["phases"]) == {"autoencoder", "classifier"}
    phases = [r["phase"] for r in csv.DictReader((tmp_path / LOG_FILE).open())]
    assert phases == ["autoencoder", "autoencoder", "classifier"]


def test_same_seed_same_model_other_seed_other_model(tiny_set, tmp_path):
    lcs, periods = tiny_set
    first = train(_config(), lcs, tmp_path / "a", periods=periods)
    second = train(_config(), lcs, tmp_path / "b", periods=periods)
    other = train(_config(seed=4), lcs, tmp_path / "c", periods=periods)
    assert first.bundle_id == second.bundle_id
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert other.bundle_id != first.bundle_id


def test_resume_after_an_interruption_gives_the_uninterrupted_model(tiny_set, tmp_path, monkeypatch):
    lcs, periods = tiny_set
    cfg = _config(gmm_on=False, nb_epoch=2, cls_epoch=2)
    straight = train(cfg, lcs, tmp_path / "straight", periods=periods)

    save = _Run._save_checkpoint
    calls = []

    def save_then_crash(self, *args):
        save(self, *args)
        calls.append(1)
        if len(calls) == 3:  # after autoencoder epochs 1, 2 and classifier epoch 1
            raise KeyboardInterrupt

    monkeypatch.setattr(_Run, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, lcs, tmp_path / "resumed", periods=periods)
    monkeypatch.setattr(_Run, "_save_checkpoint", save)
    assert (tmp_path / "resumed" / CHECKPOINT_DIR / "state.json").is_file()
    resumed = train(cfg, lcs, tmp_path / "resumed", periods=periods, resume=True)
    assert resumed.bundle_id == straight.bundle_id
    rows = list(csv.DictReader((tmp_path / "resumed" / LOG_FILE).open()))
    assert [(r["phase"], r["epoch"]) for r in rows] == [("autoencoder", "1"), ("autoencoder", "2"), ("classifier", "1"), ("classifier", "2")]


def test_resume_refuses_other_options_or_no_checkpoint(tiny_set, tmp_path):
    lcs, periods = tiny_set
    with pytest.raises(TrainError, match="no checkpoint"):
        train(_config(), lcs, tmp_path, periods=periods, resume=True)
    (tmp_path / CHECKPOINT_DIR).mkdir()
    (tmp_path / CHECKPOINT_DIR / "state.json").write_text('{"config": {"size": 99}}')
    with pytest.raises(TrainError, match="different options"):
        train(_config(), lcs, tmp_path, periods=periods, resume=True)


def test_stratified_split_keeps_objects_whole_and_every_class_in_validation(tiny_set):
    lcs, _ = tiny_set
    mapping = ClassMapping()
    train_lcs, val_lcs = stratified_split(lcs, mapping, 0.25, seed=0)
    assert not {lc.object_id for lc in train_lcs} & {lc.object_id for lc in val_lcs}
    assert {mapping.label_of(lc.label) for lc in val_lcs} == set(mapping.known)
    assert len(train_lcs) + len(val_lcs) == len(lcs)


def test_no_labelled_data_is_a_clear_error(tmp_path):
    novel = [LightCurve("x", "V", np.arange(50.0), np.sin(np.arange(50.0)), np.full(50, 0.1), label="RCB")]
    with pytest.raises(TrainError, match="labelled"):
        train(_config(), novel, tmp_path)


def test_smoothness_residual_separates_a_folded_star_from_noise():
    from broker_filter.model.features import PreprocessConfig, prepare_batch
    from broker_filter.model.train import smoothness_residual

    star = load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"], bands=["g"])[0]
    scrambled = LightCurve("noise", "g", star.time, np.random.default_rng(0).permutation(star.mag), star.mag_err, star.period)
    batch = prepare_batch([star, scrambled], PreprocessConfig(use_catalogue_period=True))
    smooth, noise = smoothness_residual(batch)
    assert smooth < 0.5 < noise


def test_training_calibrates_on_validation_objects_and_recalibration_checks_the_data(tiny_set, tmp_path):
    from broker_filter.model.train import recalibrate

    lcs, periods = tiny_set
    bundle = train(_config(finetune=False), lcs, tmp_path, periods=periods)
    calibration = bundle.calibration
    assert calibration is not None and calibration.temperature > 0
    assert len(calibration.energies) == len(calibration.edges) and all(e.size for e in calibration.energies)
    again = recalibrate(bundle, lcs, device="cpu")
    assert again.calibration.to_dict() == calibration.to_dict() and again.bundle_id == bundle.bundle_id
    with pytest.raises(TrainError, match="not the bundle's training data"):
        recalibrate(bundle, lcs[1:], device="cpu")
    scores = ModelBundle.load(tmp_path).score(lcs)
    assert scores and all(s.p_value is not None and 0 < s.p_value <= 1 for s in scores)
    assert not calibration.combines

    combined = recalibrate(bundle, lcs, device="cpu", novelty="energy+uncertainty")
    assert combined.calibration.combines and combined.training["config"]["novelty"] == "energy+uncertainty"
    assert combined.bundle_id != bundle.bundle_id  # another rule, other p-values: another bundle
    combined.save(tmp_path / "combined")
    reloaded = ModelBundle.load(tmp_path / "combined")
    assert reloaded.calibration.combines
    combined_scores = reloaded.score(lcs)
    assert [s.probs for s in combined_scores] == [s.probs for s in scores]  # classification untouched
    assert all(0 < s.p_value <= 1 for s in combined_scores)
    assert [s.p_value for s in combined_scores] != [s.p_value for s in scores]
    with pytest.raises(TrainError, match="novelty must be one of"):
        recalibrate(bundle, lcs, device="cpu", novelty="vibes")
