"""Stream quality against labels: the replay's truth files and ``evaluate-stream``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
from bf_support import read_jsonl

from broker_filter.model.classes import ClassMapping
from broker_filter.truth import find_labels, stream_truth, truth_table

EVAL_DATA = Path(__file__).resolve().parents[1] / "data" / "lightcurves_eval"


def _record(object_id: str, t: float, n: int, top: str, novel: bool, status: str = "scored") -> dict:
    scored = status == "scored"
    return {"object_id": object_id, "alert_id": int(t * 10), "alert_time_mjd": t, "status": status, "n_points": n,
            "top_class": top if scored else None, "novel": novel if scored else None, "novelty_p_value": 0.01 if novel else 0.5,
            "probabilities": {top: 0.8, "SR": 0.2} if scored else None}


def test_false_alarms_first_flags_and_final_classes_from_records():
    labels = {"known": "RR_Lyrae_FM", "odd": "RCB", "unlabelled_survey_class": "Nonsense"}
    records = [_record("known", 1.0, 10, "RRAB", False, "below_minimum"), _record("known", 2.0, 20, "ECL", True),
               _record("known", 3.0, 25, "RRAB", False), _record("known", 4.0, 60, "RRAB", False),
               _record("odd", 10.0, 20, "SR", False), _record("odd", 15.5, 31, "SR", True), _record("stranger", 1.0, 40, "SR", True)]
    result = stream_truth(records, labels, ClassMapping())
    known, odd = result["objects"]
    assert (known["truth"], known["scorings"], known["final_class"], known["final_novel"]) == ("RRAB", 3, "RRAB", False)
    assert (known["first_flag_days"], known["first_flag_n_points"]) == (1.0, 20)
    assert (odd["truth"], odd["first_flag_days"], odd["first_flag_n_points"]) == ("VAR", 5.5, 31)
    assert result["false_alarm_rate"] == pytest.approx(1 / 3) and result["final_accuracy"] == 1.0
    assert result["by_n_points"]["20-29"] == {"scorings": 2, "objects": 1, "false_alarm_rate": 0.5,
                                              "false_alarm_rate_per_object": 0.5, "accuracy": 0.5}
    assert result["novel_detected"] == result["novel_objects"] == 1 and result["median_days_to_first_flag"] == 5.5
    table = truth_table(result)
    assert "day 6 (31 points)" in table and "false-alarm rate" in table and " ok" in table


def test_replay_joins_its_records_with_the_labels_beside_the_archive(replayed, labelled_stream):
    summary = json.loads((replayed / "summary.json").read_text())
    truth = json.loads((replayed / "truth.json").read_text())
    assert (replayed / "truth.png").stat().st_size > 0
    labels = find_labels([labelled_stream.path])
    with (labelled_stream.path / "labels.csv").open() as handle:
        assert labels == {row["object_id"]: row["survey_class"] for row in csv.DictReader(handle)}
    mapping = ClassMapping()
    known = [r for r in read_jsonl(replayed / "classifications.jsonl")
             if r["status"] == "scored" and mapping.label_of(labels.get(r["object_id"], "")) is not None]
    assert summary["labelled"]["known_scorings"] == truth["known_scorings"] == len(known)
    assert truth["false_alarm_rate"] == pytest.approx(sum(r["novel"] for r in known) / len(known))


@pytest.mark.slow
def test_evaluate_stream_simulates_replays_and_judges(tmp_path, capsys):
    from broker_filter.commands import evaluate_stream

    parser = argparse.ArgumentParser()
    evaluate_stream.register(parser.add_subparsers())
    out = tmp_path / "report"
    args = parser.parse_args(["evaluate-stream", "--data", str(EVAL_DATA), "--out", str(out), "--survey", "lsst",
                              "--novelty-sets", "VAR", "--device", "cpu", "--no-progress"])
    assert args.handler(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["survey"] == "lsst" and metrics["alerts"] == metrics["replay"]["alerts_in"]
    assert {o["truth"] for o in metrics["objects"]} - {"VAR"} <= set(ClassMapping().known)
    assert "SNIa" not in {o["truth"] for o in metrics["objects"]} and metrics["known_scorings"] > 0
    assert 0.0 <= metrics["false_alarm_rate"] <= 1.0 and (out / "truth.png").stat().st_size > 0
    assert "labelled objects" in capsys.readouterr().out
