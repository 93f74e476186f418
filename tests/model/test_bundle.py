"""Bundles: round trip, digest checks, no pickle, and the committed default bundle on real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from broker_filter.model.bundle import DEFAULT_BUNDLE_DIR, MANIFEST_FILE, WEIGHTS_FILE, BundleError, ModelBundle
from broker_filter.model.classes import ClassMapping
from broker_filter.model.data import LightCurve, load_lightcurve_table
from broker_filter.model.features import PreprocessConfig, prepare_batch
from broker_filter.model.gmm import fit_gmm
from broker_filter.model.network import AutoencoderGMM, NetworkConfig

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "lightcurves"


@pytest.fixture(scope="module")
def stripe82() -> list[LightCurve]:
    return load_lightcurve_table(DATA, sources=["sdss_s82_rrlyrae_sesar2010"], bands=["g", "r"])[:12]


@pytest.fixture()
def small_bundle(stripe82) -> ModelBundle:
    """An untrained network with a GMM fitted to its own outputs on real light curves."""
    torch.manual_seed(0)
    mapping = ClassMapping(classes={"RRAB": ["RRab"], "RRCD": ["RRc"]}, novel={})
    network = AutoencoderGMM(NetworkConfig(size=6, num_layers=1, embedding=3, estnet_size=4, num_classes=2)).eval()
    preprocess = PreprocessConfig(use_catalogue_period=True)
    batch = prepare_batch(stripe82, preprocess)
    with torch.no_grad():
        out = network(torch.from_numpy(batch.inputs), torch.from_numpy(batch.lengths), torch.from_numpy(batch.supports))
    gmm = fit_gmm(out.z.double(), out.gamma.double())
    return ModelBundle(network, preprocess, mapping, gmm, {"p80": 1.0, "p95": 2.0}, metrics={"note": "test"})


def test_round_trip_keeps_scores_and_identity(small_bundle, stripe82, tmp_path):
    small_bundle.save(tmp_path)
    loaded = ModelBundle.load(tmp_path)
    assert loaded.bundle_id == small_bundle.bundle_id
    assert loaded.class_names == ("RRAB", "RRCD") and loaded.thresholds == {"p80": 1.0, "p95": 2.0}
    assert loaded.manifest["metrics"] == {"note": "test"}
    assert loaded.preprocess == small_bundle.preprocess
    before, after = small_bundle.score(stripe82), loaded.score(stripe82)
    assert [s.to_dict() for s in before] == [s.to_dict() for s in after]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert len(manifest["files"][WEIGHTS_FILE]["sha256"]) == 64


def test_tampered_weights_are_refused(small_bundle, tmp_path):
    small_bundle.save(tmp_path)
    weights = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    weights[-3] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(BundleError, match="sha256 .* does not match"):
        ModelBundle.load(tmp_path)


def test_edited_manifest_is_refused(small_bundle, tmp_path):
    small_bundle.save(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    manifest["thresholds"]["p95"] = 1e9
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="bundle_id"):
        ModelBundle.load(tmp_path)


def test_missing_or_foreign_bundles_are_refused(tmp_path):
    with pytest.raises(BundleError, match="not a model bundle"):
        ModelBundle.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(BundleError, match="manifest"):
        ModelBundle.load(tmp_path)


def test_objects_combine_their_chunks_and_bands(small_bundle, stripe82):
    scores = small_bundle.score(stripe82)
    assert [s.object_id for s in scores] == list(dict.fromkeys(lc.object_id for lc in stripe82))
    per_object = {}
    for lc in stripe82:
        per_object[lc.object_id] = per_object.get(lc.object_id, 0) + len(lc)
    for score in scores:
        assert score.n_points == per_object[score.object_id] and score.n_chunks == 2
        assert math.isclose(sum(score.probs.values()), 1.0, rel_tol=1e-9)
        assert score.novel == {"p80": score.energy > 1.0, "p95": score.energy > 2.0}
    one = small_bundle.score([stripe82[0]])[0]
    batch = prepare_batch([stripe82[0]], small_bundle.preprocess)
    log_probs, energies = small_bundle.chunk_outputs(batch)
    assert one.energy == pytest.approx(float(energies[0]))
    assert one.probs["RRAB"] == pytest.approx(float(np.exp(log_probs[0, 0])))


def test_too_short_objects_are_left_out(small_bundle, stripe82):
    lc = stripe82[0]
    short = LightCurve("short", "g", lc.time[:5], lc.mag[:5], lc.mag_err[:5], lc.period)
    assert small_bundle.score([short]) == []


def test_no_pickle_anywhere_in_model():
    for path in (REPO / "broker_filter" / "model").glob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path


def test_default_bundle_loads_and_scores_a_real_lightcurve():
    bundle = ModelBundle.load()
    assert bundle.class_names == ClassMapping().known
    assert set(bundle.thresholds) == {"p80", "p95"} and bundle.thresholds["p80"] < bundle.thresholds["p95"]
    assert (DEFAULT_BUNDLE_DIR / WEIGHTS_FILE).is_file()
    lcs = load_lightcurve_table(DATA, sources=["asas3_richards2012"])
    mira = next(lc for lc in lcs if lc.label == "Mira")
    (score,) = bundle.score([mira])
    assert score.object_id == mira.object_id and score.top_class in bundle.class_names
    assert math.isfinite(score.energy) and score.n_points == len(mira)
    assert math.isclose(sum(score.probs.values()), 1.0, rel_tol=1e-9)


def _edited_copy(tmp_path: Path, edit) -> Path:
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(DEFAULT_BUNDLE_DIR, folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    edit(manifest)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("name", "edit", "says"),
    [
        ("a files entry outside the bundle", lambda m: m["files"].update({"/etc/passwd": {"sha256": "0" * 64}}), "is not a file of the bundle folder"),
        ("a files entry climbing out", lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0" * 64}}), "is not a file of the bundle folder"),
        ("an architecture of size 6000", lambda m: m["architecture"].update(size=6000), "size must be an integer in [1, 1024]"),
        ("an architecture that is a string", lambda m: m.update(architecture="gru"), "inconsistent bundle"),
        ("a preprocess section that is a list", lambda m: m.update(preprocess=[1, 2]), "inconsistent bundle"),
        ("a manifest that is a list", lambda m: m.clear(), "not a"),
    ],
)
def test_a_hostile_manifest_is_refused_in_one_line_before_anything_is_read_or_allocated(tmp_path, name, edit, says):
    import time

    folder = _edited_copy(tmp_path, edit)
    if name == "a manifest that is a list":
        (folder / MANIFEST_FILE).write_text("[]")
    started = time.perf_counter()
    with pytest.raises(BundleError) as info:
        ModelBundle.load(folder)
    assert says in str(info.value) and "\n" not in str(info.value), name
    assert time.perf_counter() - started < 5  # size 6000 would allocate gigabytes of weights first
