"""Writes an evaluation to a report directory: metrics.json, three plots, a markdown summary.

The same writer serves one split and a cross-validation (whose aggregate has the same
keys, plus ``cv``), so that both read alike. The summary puts the paper's published
figures (Tsang & Schultz 2019, ASAS-SN) beside ours; they are a reference point, not a
like-for-like comparison (different survey, different class sizes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.json"
CONFUSION_PLOT = "confusion.png"
ENERGY_PLOT = "energy_hist.png"
RELIABILITY_PLOT = "reliability.png"
SUMMARY_FILE = "summary.md"

#: Tsang & Schultz (2019), ASAS-SN, 8 classes, 'VAR' as the novel class.
PAPER_FIGURES = {
    "accuracy": 0.99,
    "random_forest_accuracy": 0.9105,
    "novelty": {
        "precision_p80": 0.702, "recall_p80": 0.895, "f1_p80": 0.787,
        "precision_p95": 0.890, "recall_p95": 0.734, "f1_p95": 0.805,
    },
}


def write_report(metrics: Mapping, out_dir: str | Path) -> list[Path]:
    """Write every report file; returns their paths. ``metrics`` as :func:`broker_filter.model.evaluate.evaluate_split` returns."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / METRICS_FILE, out_dir / CONFUSION_PLOT, out_dir / ENERGY_PLOT, out_dir / SUMMARY_FILE]
    paths[0].write_text(json.dumps(metrics, indent=1, allow_nan=False) + "\n")
    plot_confusion(metrics["confusion"], paths[1])
    plot_energies(metrics["energies"], metrics["thresholds"], paths[2], _energy_title(metrics))
    paths[3].write_text(summary_markdown(metrics))
    if metrics.get("calibration", {}).get("whole_curves", {}).get("bins"):
        paths.append(out_dir / RELIABILITY_PLOT)
        plot_reliability(metrics["calibration"], paths[-1])
    return paths


def plot_reliability(calibration: Mapping, path: Path) -> None:
    """Reliability diagram: mean top-class probability against accuracy, per probability bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for key, label in (("whole_curves", "whole curves"), ("all_truncations", "first n detections, pooled")):
        bins = calibration.get(key, {}).get("bins", [])
        if bins:
            ece = calibration[key]["ece"]
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=f"{label} (ECE {ece:.3f})")
    ax.set_xlabel("top-class probability")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _energy_title(metrics: Mapping) -> str:
    if "cv" in metrics:
        return f"Energies, cross-validation fold {metrics['cv']['energies_from_fold']} (its thresholds)"
    return "Energies of held-out objects"


def plot_confusion(confusion: Mapping, path: Path) -> None:
    """Row-normalised confusion matrix (recall on the diagonal), counts printed in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, matrix = confusion["classes"], np.asarray(confusion["matrix"], dtype=np.float64)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if matrix[i, j]:
                colour = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion (objects; colour = fraction of the true class)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_energies(energies: Mapping[str, list], thresholds: Mapping[str, float], path: Path, title: str) -> None:
    """Histograms of object energies, known test objects against each novelty set, with the thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {name: np.asarray(values, dtype=np.float64) for name, values in energies.items() if len(values)}
    pooled = np.concatenate(list(groups.values()))
    low, high = np.percentile(pooled, [0.5, 99.5])
    bins = np.linspace(low, high, 50)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, values in groups.items():
        label = "known classes (test)" if name == "known_test" else f"novel: {name}"
        ax.hist(np.clip(values, low, high), bins=bins, density=True, histtype="step", linewidth=1.6,
                label=f"{label} (n={values.size})")
    for key, style in (("p80", "--"), ("p95", ":")):
        ax.axvline(thresholds[key], color="black", linestyle=style, label=f"threshold {key}")
    ax.set_xlabel("energy (object mean of chunk energies; clipped to the 0.5-99.5 percentiles)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


NOVELTY_KEYS = ("precision_p80", "recall_p80", "f1_p80", "precision_p95", "recall_p95", "f1_p95", "auroc")


def summary_markdown(metrics: Mapping) -> str:
    """The report's headline tables in markdown (also pasted into docs/MODEL.md)."""
    std = metrics.get("cv", {}).get("std", {})
    title = "# Evaluation"
    if "cv" in metrics:
        title += f" ({metrics['cv']['folds']}-fold cross-validation, mean ± std over folds)"
    sections = [
        [title, ""] + _counts_lines(metrics["counts"]),
        _classification_lines(metrics, std),
        _per_class_lines(metrics["per_class"], std.get("per_class", {})),
        _novelty_lines(metrics, std),
        _by_n_lines(metrics["accuracy_by_n_points"], std.get("accuracy_by_n_points", {})),
        _false_alarm_lines(metrics.get("false_alarms_by_n_points", {}), std.get("false_alarms_by_n_points", {})),
        _calibration_lines(metrics.get("calibration", {}), std.get("calibration", {})),
        _survey_band_lines(metrics.get("by_survey_band", {}), std.get("by_survey_band", {})),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _classification_lines(metrics: Mapping, std: Mapping) -> list[str]:
    lines = ["## Classification (known classes, per object)", "",
             "| method | accuracy | accuracy per chunk | macro F1 |", "|---|---|---|---|"]
    rows = [("network (RNN autoencoder + GMM)", metrics, std)]
    for name, label in (("random_forest_network_features", "random forest, network features (paper's baseline)"),
                        ("random_forest_lightcurve_features", "random forest, light-curve package features")):
        rows.append((label, metrics["baselines"][name], std.get("baselines", {}).get(name, {})))
    for label, row, row_std in rows:
        cells = [_pm(row, row_std, key) for key in ("accuracy", "accuracy_per_chunk", "macro_f1")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    paper = f"{PAPER_FIGURES['accuracy']} / {PAPER_FIGURES['random_forest_accuracy']}"
    lines.append(f"| paper (ASAS-SN): network / random forest | {paper} | | |")
    return lines


def _per_class_lines(per_class: Mapping, std: Mapping) -> list[str]:
    lines = ["## Per class (network)", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in per_class.items():
        cells = [_pm(row, std.get(name, {}), key) for key in ("precision", "recall", "f1")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_num(row['support'])} |")
    return lines


def _novelty_lines(metrics: Mapping, std: Mapping) -> list[str]:
    lines = ["## Novelty (positives = novel objects, negatives = known test objects)", "",
             "| set | method | P p80 | R p80 | F1 p80 | P p95 | R p95 | F1 p95 | AUROC |",
             "|---|---|---|---|---|---|---|---|---|"]
    baseline_std = std.get("baselines", {})
    for set_name, figures in metrics["novelty_by_set"].items():
        rows = [("network energy", figures, std.get("novelty_by_set", {}).get(set_name, {}))]
        for base in ("isolation_forest_network_features", "isolation_forest_lightcurve_features"):
            base_std = baseline_std.get(base, {}).get(set_name, {})
            rows.append((base.replace("_", " "), metrics["baselines"][base][set_name], base_std))
        for method, row, row_std in rows:
            lines.append(f"| {set_name} | {method} | " + " | ".join(_pm(row, row_std, k) for k in NOVELTY_KEYS) + " |")
    paper = PAPER_FIGURES["novelty"]
    lines.append("| VAR (ASAS-SN) | paper | " + " | ".join(str(paper[k]) for k in NOVELTY_KEYS[:-1]) + " | |")
    return lines


def _by_n_lines(by_n: Mapping, std: Mapping) -> list[str]:
    lines = ["## Accuracy after the first n detections (known test objects)", "",
             "| n | objects | scored | network | RF, network features | RF, light-curve features |", "|---|---|---|---|---|---|"]
    for n, row in by_n.items():
        cells = [_pm(row, std.get(n, {}), key) for key in
                 ("accuracy", "random_forest_network_features", "random_forest_lightcurve_features")]
        lines.append(f"| {n} | {_num(row['objects'])} | {_num(row['scored'])} | " + " | ".join(cells) + " |")
    return lines


def _false_alarm_lines(bins: Mapping, std: Mapping) -> list[str]:
    lines = ["## False alarms by number of points (known test objects, first n detections for n = 20 ... 300)", "",
             "| points scored | scorings | flagged at p80 (nominal 0.20) | flagged at p95 (nominal 0.05) |", "|---|---|---|---|"]
    for name, row in bins.items():
        cells = [_pm(row, std.get(name, {}), key) for key in ("rate_p80", "rate_p95")]
        lines.append(f"| {name} | {_num(row['scorings'])} | " + " | ".join(cells) + " |")
    return lines


def _survey_band_lines(figures: Mapping, std: Mapping) -> list[str]:
    lines = ["## Accuracy by source survey and band (known test objects)", "",
             "| survey | band | objects | accuracy |", "|---|---|---|---|"]
    for source, row in figures.get("by_source", {}).items():
        lines.append(f"| {source} | all read | {_num(row['objects'])} | {_pm(row, std.get('by_source', {}).get(source, {}), 'accuracy')} |")
    for key, row in figures.get("by_band", {}).items():
        source, band = key.split(":", 1)
        lines.append(f"| {source} | {band} alone | {_num(row['objects'])} | {_pm(row, std.get('by_band', {}).get(key, {}), 'accuracy')} |")
    return lines


def _calibration_lines(calibration: Mapping, std: Mapping) -> list[str]:
    lines = ["## Calibration of the top-class probability", "", "| objects | ECE |", "|---|---|"]
    for key, label in (("whole_curves", "whole curves"), ("all_truncations", "first n detections, pooled")):
        if calibration.get(key):
            lines.append(f"| {label} | {_pm(calibration[key], std.get(key, {}), 'ece')} |")
    if calibration.get("temperatures"):
        lines.append("\nTemperatures by bin of scored points: " + ", ".join(f"{v:.3f}" for v in calibration["temperatures"]) + ".")
    elif calibration.get("temperature") is not None:
        lines.append(f"\nTemperature: {calibration['temperature']:.3f}.")
    return lines


def _counts_lines(counts: Mapping) -> list[str]:
    novel = ", ".join(f"{name} {_num(n)}" for name, n in counts["novel_objects"].items())
    unscored = ", ".join(f"{name} {_num(n)}" for name, n in counts["unscored"].items())
    return [
        f"Objects: train {_num(counts['train_objects'])} ({_num(counts['train_chunks'])} chunks), "
        f"test {_num(counts['test_objects'])} ({_num(counts['test_chunks'])} chunks), novel {novel}.",
        f"Not scorable (no band with n_min points), left out of every method: {unscored}.",
    ]


def _pm(row: Mapping, std: Mapping, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    spread = std.get(key) if isinstance(std, Mapping) else None
    return f"{value:.3f} ± {spread:.3f}" if spread is not None else f"{value:.3f}"


def _num(value) -> str:
    return f"{value:.0f}" if isinstance(value, float) else str(value)
