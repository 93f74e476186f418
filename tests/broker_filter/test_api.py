"""The library API: what a broker calling ``Classifier.classify`` gets equals what the daemon publishes."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import fastavro
import numpy as np
import pandas as pd
import pytest
from bf_support import REPO, read_jsonl

from broker_filter import Classifier, from_rubin, from_ztf
from broker_filter.streams.rubin import flux_to_mag
from broker_filter.streams.ztf import MJD_OFFSET


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    with Classifier.load(device="cpu", mixed_precision=False) as loaded:
        yield loaded


def _ztf_candidates(payloads: list[bytes]) -> pd.DataFrame:
    """Every alert's candidate as a broker's table of detections (raw ZTF fields, one row per candid)."""
    rows = []
    for payload in payloads:
        for alert in fastavro.reader(io.BytesIO(payload)):
            c = alert["candidate"]
            rows.append({"objectId": alert["objectId"], **{k: c[k] for k in
                         ("candid", "jd", "fid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "distnr", "isdiffpos")}})
    return pd.DataFrame(rows).drop_duplicates("candid")


def test_classify_equals_the_daemons_last_record_of_each_object(labelled_stream, replayed, classifier):
    """Raw ZTF fields through from_ztf and classify give the replay's final record of every object."""
    table = _ztf_candidates(labelled_stream.payloads)
    frame = from_ztf(table.jd, table.fid, table.magpsf, table.sigmapsf, table.magnr, table.sigmagnr, table.isdiffpos,
                     distnr=table.distnr, object_id=table.objectId)
    rows = classifier.classify(frame).set_index("object_id")
    last = {}
    for record in read_jsonl(replayed / "classifications.jsonl"):
        if record["status"] == "scored":
            last[record["object_id"]] = record  # alerts replay in time order: the last one holds every point
    assert last and set(last) <= set(rows.index)
    for object_id, record in last.items():
        row = rows.loc[object_id]
        assert row.scored and row.top_class == record["top_class"]
        for name, probability in record["probabilities"].items():
            assert row[f"prob_{name}"] == pytest.approx(probability, abs=1e-6)
        assert row.energy == pytest.approx(record["energy"], rel=1e-6)
        assert row.novelty_p_value == pytest.approx(record["novelty_p_value"], abs=1e-9)
        assert row.novel == record["novel"]
        assert row.novelty_threshold_energy == pytest.approx(record["novelty_threshold_energy"], rel=1e-9)
        assert (row.n_points, list(row.bands_used), row.bundle_id) == (record["n_points"], record["bands_used"], record["bundle_id"])


def test_objects_without_enough_points_come_back_unscored_in_input_order(classifier):
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(60000, 60300, 80))
    frame = pd.concat([
        pd.DataFrame({"object_id": "short", "time": times[:5], "band": "g", "mag": 15.0, "mag_err": 0.05}),
        pd.DataFrame({"object_id": "long", "time": times, "band": "g", "mag": 15 + 0.3 * np.sin(times / 0.37), "mag_err": 0.02}),
        pd.DataFrame({"object_id": "unread band", "time": times, "band": "x", "mag": 15.0, "mag_err": 0.05}),
    ])
    out = classifier.classify(frame)
    assert list(out.object_id) == ["short", "long", "unread band"]
    assert list(out.scored) == [False, True, False]
    assert out.loc[0, "bands_used"] == () and np.isnan(out.loc[0, "energy"])
    assert set(out.columns) >= {f"prob_{name}" for name in classifier.class_names}
    assert out.loc[1, [f"prob_{n}" for n in classifier.class_names]].sum() == pytest.approx(1.0, abs=1e-6)


def test_unusable_points_are_ignored_and_a_given_period_skips_the_search(classifier):
    times = np.linspace(60000, 60200, 60)
    mag = 14 + 0.4 * np.sin(2 * np.pi * times / 0.61)
    clean = pd.DataFrame({"object_id": "a", "time": times, "band": "g", "mag": mag, "mag_err": 0.03})
    noisy = pd.concat([clean, pd.DataFrame({"object_id": "a", "time": [60001.5, np.nan, 60002.5], "band": "g",
                                            "mag": [np.nan, 14.0, 14.0], "mag_err": [0.03, 0.03, -1.0]})])
    assert classifier.classify(noisy).drop(columns="bands_used").equals(classifier.classify(clean).drop(columns="bands_used"))
    searched = classifier.classify(clean)
    told = classifier.classify(clean.assign(period=0.61 * 7))
    assert searched.energy[0] != pytest.approx(told.energy[0], rel=1e-6)  # folded at another period


def test_fluxes_in_njy_stand_in_for_magnitudes(classifier):
    times = np.linspace(60000, 60200, 60)
    flux = 10 ** (-0.4 * (16 + 0.3 * np.sin(times / 0.9) - 31.4))
    by_flux = from_rubin(times, ["r"] * 60, flux, 0.02 * flux, object_id="r-star")
    mag, err = zip(*(flux_to_mag(f, 0.02 * f) for f in flux))
    by_mag = pd.DataFrame({"object_id": "r-star", "time": times, "band": "r", "mag": mag, "mag_err": err})
    pd.testing.assert_frame_equal(classifier.classify(by_flux), classifier.classify(by_mag))


def test_from_ztf_converts_as_the_decoder_does():
    frame = from_ztf([2459000.5, 2459001.5, 2459002.5], [1, 2, 1], [18.0, 17.0, None], [0.1, 0.1, None],
                     [16.0, None, 16.0], [0.02, None, 0.02], ["t", "f", "t"], object_id="ZTF1")
    assert list(frame.time) == [2459000.5 - MJD_OFFSET, 2459001.5 - MJD_OFFSET, 2459002.5 - MJD_OFFSET]
    assert list(frame.band) == ["g", "r", "g"]
    total = 10 ** (-0.4 * 16.0) + 10 ** (-0.4 * 18.0)
    assert frame.mag[0] == pytest.approx(-2.5 * np.log10(total))
    assert np.isnan(frame.mag[1])  # a negative difference without a reference source: no magnitude
    assert np.isnan(frame.mag[2])  # an upper limit
    with pytest.raises(ValueError, match="filter ids must be 1, 2 or 3"):
        from_ztf([2459000.5], [7], [18.0], [0.1])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"object_id": ["a"], "time": [60000.0], "band": ["g"]}), "lacks columns: mag and mag_err"),
        (pd.DataFrame({"time": [60000.0], "band": ["g"], "mag": [1.0], "mag_err": [0.1]}), "lacks columns: object_id"),
        (pd.DataFrame({"object_id": ["a"], "time": [2460000.5], "band": ["g"], "mag": [1.0], "mag_err": [0.1]}), "look like Julian Dates"),
    ],
)
def test_a_frame_the_classifier_cannot_read_gets_one_clear_error(classifier, frame, message):
    with pytest.raises(ValueError, match=message):
        classifier.classify(frame)


def test_importing_the_package_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, broker_filter; broker_filter.__version__; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.stdout.strip() == "False", done.stderr


def test_the_worked_example_of_docs_api_runs_and_says_what_it_prints(tmp_path):
    """docs/API.md's Python blocks run in order; each ``# ->`` line names text the example must print."""
    text = (REPO / "docs" / "API.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    for expected in re.findall(r"# -> (.+)", "\n".join(blocks)):
        assert expected.strip() in done.stdout, (expected, done.stdout[-3000:])
