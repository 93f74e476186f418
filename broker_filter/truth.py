"""Stream quality against labels: what a broker subscribing to our topics would get for stars whose class is known.

An archive made by ``broker-filter simulate`` carries its labels beside it (``labels.csv``:
the stream's object id and the survey class). Joining the classification records of a
replay with them answers the questions a broker asks before it spends follow-up on our
novelty topic: how often are known-class scorings flagged novel (the false-alarm rate,
also by number of points: per scoring, where an object scored at each of its 1,000 alerts
counts 1,000 times, and per object, each object's flagged share averaged, the weighting the
calibration uses), is each star's final class right and is its probability
honest, and when (if ever) is a star of an unseen class first flagged.

``replay`` computes this whenever labels lie beside its sources, and ``broker-filter
evaluate-stream`` simulates a labelled stream from light curves and replays it to get it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from broker_filter.model.calibration import point_bins, reliability
from broker_filter.model.classes import ClassMapping

LABELS_FILE = "labels.csv"


def find_labels(sources: Sequence[str | Path]) -> dict[str, str]:
    """object id -> survey class, from every ``labels.csv`` in or beside the sources (empty if none)."""
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files.extend(sorted(source.rglob(LABELS_FILE)))
        elif source.with_name(LABELS_FILE).is_file():
            files.append(source.with_name(LABELS_FILE))
    labels: dict[str, str] = {}
    for path in dict.fromkeys(files):
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("object_id") and row.get("survey_class"):
                    labels[row["object_id"]] = row["survey_class"]
    return labels


def stream_truth(records: Iterable[Mapping[str, Any]], labels: Mapping[str, str], mapping: ClassMapping) -> dict:
    """Figures of the labelled objects' classification records (see the module doc); JSON-able."""
    by_object: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if record["object_id"] in labels:
            by_object.setdefault(record["object_id"], []).append(record)
    objects, known_scorings = [], []
    for object_id in sorted(by_object):
        survey_class = labels[object_id]
        truth = mapping.label_of(survey_class)
        novelty_set = mapping.novelty_set_of(survey_class)
        if truth is None and novelty_set is None:
            continue
        rows = sorted(by_object[object_id], key=lambda r: (r["alert_time_mjd"], r["alert_id"]))
        scored = [r for r in rows if r["status"] == "scored"]
        if truth is not None:
            known_scorings.extend((r["n_points"], bool(r["novel"]), r["top_class"] == truth, max(r["probabilities"].values()),
                                   len(objects)) for r in scored)
        objects.append(_object_row(object_id, survey_class, truth, novelty_set, rows, scored))
    return {"objects": objects, **_known_figures(objects, known_scorings), **_novel_figures(objects)}


def _object_row(object_id, survey_class, truth, novelty_set, rows, scored) -> dict:
    first_flag = next((r for r in scored if r["novel"]), None)
    final = scored[-1] if scored else None
    return {
        "object_id": object_id,
        "survey_class": survey_class,
        "truth": truth or novelty_set,
        "known": truth is not None,
        "alerts": len(rows),
        "scorings": len(scored),
        "flagged_scorings": sum(bool(r["novel"]) for r in scored),
        "final_class": final["top_class"] if final else None,
        "final_probability": max(final["probabilities"].values()) if final else None,
        "final_novel": bool(final["novel"]) if final else None,
        "final_p_value": final.get("novelty_p_value") if final else None,
        "final_n_points": final["n_points"] if final else None,
        "first_flag_n_points": first_flag["n_points"] if first_flag else None,
        "first_flag_days": round(first_flag["alert_time_mjd"] - rows[0]["alert_time_mjd"], 3) if first_flag else None,
    }


def _known_figures(objects: list[dict], scorings: list[tuple]) -> dict:
    known = [o for o in objects if o["known"] and o["scorings"]]
    out: dict[str, Any] = {
        "known_objects": len(known),
        "final_accuracy": float(np.mean([o["final_class"] == o["truth"] for o in known])) if known else None,
        "known_scorings": len(scorings),
        "false_alarm_rate": float(np.mean([s[1] for s in scorings])) if scorings else None,
    }
    if scorings:
        n, flagged, correct, prob, owner = (np.array(col) for col in zip(*scorings))
        bins = {}
        for name, pick in point_bins(n):
            owners = np.unique(owner[pick])
            bins[name] = {"scorings": int(pick.sum()), "objects": int(owners.size),
                          "false_alarm_rate": float(flagged[pick].mean()) if pick.any() else None,
                          "false_alarm_rate_per_object": float(np.mean([flagged[pick & (owner == o)].mean() for o in owners]))
                          if pick.any() else None,
                          "accuracy": float(correct[pick].mean()) if pick.any() else None}
        out["by_n_points"] = bins
        out["expected_calibration_error"] = reliability(prob, correct)["ece"]
    return out


def _novel_figures(objects: list[dict]) -> dict:
    novel = [o for o in objects if not o["known"] and o["scorings"]]
    flagged = [o for o in novel if o["first_flag_days"] is not None]
    return {
        "novel_objects": len(novel),
        "novel_detected": len(flagged),
        "novel_detection_rate": len(flagged) / len(novel) if novel else None,
        "median_days_to_first_flag": float(np.median([o["first_flag_days"] for o in flagged])) if flagged else None,
    }


def truth_table(result: Mapping) -> str:
    """The per-object table and the run's false-alarm rate, as a person reads them at the terminal."""
    lines = ["labelled objects (truth from labels.csv):",
             f"  {'object':<22} {'class':<12} {'final':<6} {'prob':>5}  {'novel':<5}  first flagged"]
    for o in result["objects"]:
        if not o["scorings"]:
            lines.append(f"  {o['object_id']:<22} {o['truth']:<12} not scored ({o['alerts']} alerts)")
            continue
        flag = "never" if o["first_flag_days"] is None else f"day {o['first_flag_days']:.0f} ({o['first_flag_n_points']} points)"
        mark = "" if not o["known"] else (" ok" if o["final_class"] == o["truth"] else " WRONG")
        lines.append(f"  {o['object_id']:<22} {o['truth']:<12} {o['final_class']:<6} {o['final_probability']:>5.2f}  "
                     f"{str(o['final_novel']).lower():<5}  {flag}{mark}")
    if result.get("false_alarm_rate") is not None:
        lines.append(f"false-alarm rate (known-class scorings flagged novel): {result['false_alarm_rate']:.3f} "
                     f"of {result['known_scorings']}; final accuracy {result['final_accuracy']:.3f} "
                     f"of {result['known_objects']} known objects")
    if result.get("novel_objects"):
        lines.append(f"unseen-class objects flagged at least once: {result['novel_detected']} of {result['novel_objects']}")
    return "\n".join(lines)


def plot_truth(records: Iterable[Mapping[str, Any]], labels: Mapping[str, str], mapping: ClassMapping, path: Path) -> None:
    """Each labelled object's novelty p-value against its points (known grey, unseen red), beside the level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    level = None
    for record in records:
        if record["status"] == "scored" and record["object_id"] in labels and record.get("novelty_p_value") is not None:
            series.setdefault(record["object_id"], []).append((record["n_points"], record["novelty_p_value"]))
            level = 1.0 - record["novelty_threshold_percentile"] / 100.0
    fig, ax = plt.subplots(figsize=(7, 4))
    for object_id, points in sorted(series.items()):
        known = mapping.label_of(labels[object_id]) is not None
        n, p = zip(*points)
        ax.plot(n, p, color="0.6" if known else "tab:red", linewidth=1.0 if known else 2.0,
                label=None if known else f"{object_id} ({labels[object_id]}, unseen class)")
    if level is not None:
        ax.axhline(level, color="black", linestyle="--", linewidth=1, label=f"flagged below p = {level:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("points scored")
    ax.set_ylabel("novelty p-value")
    ax.set_title("Novelty p-value as each labelled star is observed (grey: known classes)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
