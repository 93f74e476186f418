"""The result every benchmark returns, printed as a table or as one JSON object."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from typing import Any


def machine_description() -> dict[str, Any]:
    """Where the figures were taken: they mean little without it."""
    import os

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # benchmarks without torch (decode, kafka) still describe the machine
        pass
    return info


@dataclass
class BenchResult:
    """Rows of measurements plus the headline ratio (ours / baseline)."""

    name: str
    columns: list[str]
    rows: list[list[Any]]
    speedup: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        payload = {
            "benchmark": self.name,
            "speedup": self.speedup,
            "machine": machine_description(),
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            **self.extra,
        }
        return json.dumps(payload, default=str)

    def to_table(self) -> str:
        cells = [[_fmt(v) for v in row] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(self.columns)]
        line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
        out = [line(self.columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in cells]
        if self.speedup is not None:
            out.append(f"\nspeedup (ours / baseline): {self.speedup:.2f}x")
        out += self.notes
        return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)
