"""``broker-filter reliability``: the long-run command parses its scenarios and prints a table row plus JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from broker_filter_proving.reliability.long_run import SCENARIOS, add_arguments, run


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_fuzz_prints_a_passing_row_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "fuzz.json"
    assert run(_args("fuzz", "--cases", "300", "--seed", "3", "--out", str(out))) == 0
    row = capsys.readouterr().out.splitlines()[0]
    assert row.startswith("| fuzz, decoder + state merge | 1 | 300 |") and row.endswith("| pass |")
    report = json.loads(out.read_text())
    assert report["cases"] == 300 and report["failure_count"] == 0
    assert sum(report["rejected"].values()) + report["decoded"] == 300


def test_unknown_scenarios_and_the_defaults_of_the_issue():
    with pytest.raises(SystemExit):
        _args("reboot")
    assert set(SCENARIOS) == {"crash", "broker-restart", "overload", "fuzz"}
    defaults = _args("crash")
    assert defaults.kills >= 20 and defaults.objects * 45 >= 10_000  # issue 6: >= 20 kills over >= 10,000 alerts
    assert {s.strip() for s in _args("broker-restart").stops.split(",")} == {"SIGTERM", "SIGKILL"}
    assert _args("overload").factor == 10.0
