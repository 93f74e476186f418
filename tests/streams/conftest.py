"""Fixtures for the streams tests: the committed sample alerts, the shared full set when
present, and a small simulated archive built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "alerts"
SHARED_ALERTS = REPO.parent / "shared" / "data" / "alerts"
SHARED_LIGHTCURVES = REPO.parent / "shared" / "data" / "lightcurves"


@pytest.fixture(scope="session")
def sample_files() -> list[Path]:
    files = sorted(SAMPLES.rglob("*.avro"))
    assert files, f"no committed samples under {SAMPLES}"
    return files


@pytest.fixture(scope="session")
def every_real_alert_file(sample_files) -> list[Path]:
    """The committed samples plus, on a development machine, the whole shared set."""
    shared = sorted(SHARED_ALERTS.rglob("*.avro")) if SHARED_ALERTS.is_dir() else []
    return sample_files + shared


@pytest.fixture(scope="session")
def lightcurves_dir(tmp_path_factory) -> Path:
    """The shared labelled light curves; a clone without them gets a two-object table in the
    same layout, enough to exercise the simulator's format (not its science)."""
    if SHARED_LIGHTCURVES.is_dir():
        return SHARED_LIGHTCURVES
    import numpy as np
    import pandas as pd

    folder = tmp_path_factory.mktemp("lightcurves")
    rng = np.random.default_rng(0)
    rows = []
    for name, band, n in (("star_a", "V", 120), ("star_b", "g", 80)):
        t = np.sort(rng.uniform(55000, 55400, n))
        rows.append(pd.DataFrame({"object_id": name, "band": band, "time": t,
                                  "mag": (12 + 0.5 * np.sin(t)).astype("float32"),
                                  "mag_err": np.full(n, 0.02, "float32")}))
    pd.concat(rows).to_parquet(folder / "lightcurves.parquet")
    pd.DataFrame({"object_id": ["star_a", "star_b"], "source": ["test", "test"],
                  "survey_class": ["Mira", "RRab"], "period": [None, 0.5], "n_obs": [120, 80],
                  "bands": ["V", "g"]}).to_csv(folder / "objects.csv", index=False)
    return folder


@pytest.fixture
def run_command():
    """Parse and run one of our subcommands as ``broker-filter NAME ...`` would (only that
    command's module is imported, so these tests do not depend on the other commands)."""
    import argparse
    import importlib

    def run(name: str, argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="broker-filter")
        importlib.import_module(f"broker_filter.commands.{name}").register(parser.add_subparsers(dest="command"))
        args = parser.parse_args([name, *argv])
        return args.handler(args)

    return run
