"""The replay driver: every alert accounted for, offline-equal scores, durable state, bad files dead-lettered."""

from __future__ import annotations

import json
import subprocess
import sys

from bf_support import MIN_POINTS, assert_matches_offline, assert_same_records, make_config, read_jsonl

from broker_filter.metrics import Metrics
from broker_filter.pipeline import pipeline_from_config
from broker_filter.replay import replay


def test_every_alert_is_accounted_for(replayed, labelled_stream):
    classifications = read_jsonl(replayed / "classifications.jsonl")
    summary = json.loads((replayed / "summary.json").read_text())
    assert len(classifications) == len(labelled_stream.payloads) == summary["alerts_in"]
    assert {r["alert_id"] for r in classifications} == set(labelled_stream.alert_ids)
    assert summary["dead_lettered"] == 0 and summary["scorings"] > 0 and summary["below_minimum"] > 0
    assert summary["scorings"] + summary["below_minimum"] + summary["throttled"] == summary["alerts_decoded"]
    for record in classifications:
        if record["status"] == "below_minimum":
            assert record["n_points"] < MIN_POINTS and record["probabilities"] is None
        else:
            assert record["n_points"] >= MIN_POINTS and abs(sum(record["probabilities"].values()) - 1) < 1e-6
    novel = read_jsonl(replayed / "novelty.jsonl")
    assert len(novel) == summary["novel_flagged"] == sum(bool(r["novel"]) for r in classifications)


def test_scores_equal_offline_inference(replayed, inferencer, labelled_stream):
    records = read_jsonl(replayed / "classifications.jsonl")
    novel_rate = assert_matches_offline(labelled_stream.path, records, inferencer.bundle)
    scored = [r for r in records if r["status"] == "scored"]
    assert len({r["object_id"] for r in scored}) >= 3 and len(scored) >= 50
    flagged = read_jsonl(replayed / "novelty.jsonl")
    assert len(flagged) == round(novel_rate * len(scored))


def test_state_survives_a_restart_between_two_halves(tmp_path, labelled_stream, inferencer, replayed):
    halves = [tmp_path / "first", tmp_path / "second"]
    middle = len(labelled_stream.payloads) // 2
    for k, payload in enumerate(labelled_stream.payloads):
        folder = halves[k >= middle]
        folder.mkdir(exist_ok=True)
        (folder / f"{k:06d}.avro").write_bytes(payload)
    state = tmp_path / "state.sqlite"
    records = []
    for k, half in enumerate(halves):
        pipeline = pipeline_from_config(make_config(state={"path": str(state)}), Metrics(), inferencer)
        replay([half], tmp_path / f"out{k}", pipeline, max_batch=64, progress=False)
        pipeline.store.close()
        records += read_jsonl(tmp_path / f"out{k}" / "classifications.jsonl")
    assert_same_records(records, read_jsonl(replayed / "classifications.jsonl"))


def test_command_dead_letters_a_bad_file_and_goes_on(tmp_path, labelled_stream):
    sources = tmp_path / "in"
    sources.mkdir()
    (sources / "good.avro").write_bytes(labelled_stream.payloads[0])
    (sources / "bad.avro").write_bytes(b"Obj\x01 this is not an alert")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "broker_filter", "replay", str(sources), "--out", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["alerts_in"] == 2 and summary["dead_lettered"] == 1 and summary["alerts_decoded"] == 1
    (letter,) = read_jsonl(out / "dead_letter.jsonl")
    assert letter["reason"] in ("not_avro", "truncated") and letter["origin"].endswith("bad.avro#0")


def test_command_reports_a_missing_source_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "broker_filter", "replay", str(tmp_path / "absent"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_throttling_scores_each_object_at_most_once_per_interval(tmp_path, labelled_stream, inferencer):
    interval_s = 5 * 86400.0
    pipeline = pipeline_from_config(make_config(scoring={"min_interval_s": interval_s}), Metrics(), inferencer)
    summary = replay([labelled_stream.path], tmp_path, pipeline, max_batch=256, progress=False)
    records = read_jsonl(tmp_path / "classifications.jsonl")
    assert len(records) == len(labelled_stream.payloads) and summary.throttled > 0 and summary.scorings > 0
    last_scored: dict[str, float] = {}
    for record in sorted(records, key=lambda r: r["alert_time_mjd"]):
        previous = last_scored.get(record["object_id"])
        if record["status"] == "scored":
            assert previous is None or (record["alert_time_mjd"] - previous) * 86400.0 >= interval_s
            last_scored[record["object_id"]] = record["alert_time_mjd"]
        elif record["status"] == "throttled":
            assert previous is not None and (record["alert_time_mjd"] - previous) * 86400.0 < interval_s
            assert record["n_points"] >= MIN_POINTS and record["probabilities"] is None


def test_a_replay_applies_the_configs_limits_as_the_daemon_does(tmp_path, labelled_stream, inferencer):
    """[limits] holds for archives too: a window that excludes the stream's epochs dead-letters every alert."""
    config = make_config(limits={"min_mjd": 70000.0, "future_days": 36500.0})
    pipeline = pipeline_from_config(config, Metrics(), inferencer)
    summary = replay([labelled_stream.path], tmp_path, pipeline, max_batch=256, progress=False)
    letters = read_jsonl(tmp_path / "dead_letter.jsonl")
    assert len(letters) == len(labelled_stream.payloads) and {r["reason"] for r in letters} == {"time_out_of_range"}
    assert summary.dead_lettered == len(letters) and summary.alerts_decoded == 0
