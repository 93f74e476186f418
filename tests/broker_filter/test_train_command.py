"""``broker-filter train``: the paper's option names, a real (tiny) run, clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from broker_filter.commands import train as train_command
from broker_filter.model.bundle import ModelBundle

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "lightcurves"
PAPER_OPTIONS = ("--model_type", "--size", "--num_layers", "--embedding", "--drop_frac", "--n_min", "--n_max",
                 "--period_fold", "--batch_size", "--nb_epoch", "--lr", "--gmm_on", "--lambda1", "--num_classes",
                 "--estnet_size", "--estnet_drop_frac", "--cls_epoch", "--class_prob", "--ss_resid")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """A real subset in the table layout: 5 Stripe 82 RRab and 5 RRc stars, g band."""
    directory = tmp_path_factory.mktemp("lcs")
    objects = pd.read_csv(DATA / "objects.csv")
    s82 = objects[objects["source"] == "sdss_s82_rrlyrae_sesar2010"]
    chosen = pd.concat([s82[s82["survey_class"] == c].head(5) for c in ("RRab", "RRc")])
    chosen.to_csv(directory / "objects.csv", index=False)
    table = pd.read_parquet(DATA / "lightcurves.parquet")
    table[table["object_id"].isin(chosen["object_id"]) & (table["band"] == "g")].to_parquet(directory / "lightcurves.parquet")
    (directory / "mapping.toml").write_text('[classes]\nRRAB = ["RRab"]\nRRCD = ["RRc"]\n')
    return directory


def test_parser_takes_the_papers_option_names():
    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers(dest="command"))
    text = parser._subparsers._group_actions[0].choices["train"].format_help()
    for option in PAPER_OPTIONS:
        assert option in text, option
    args = _parse(["--out", "x", "--no-period_fold", "--no-gmm_on", "--size", "7"])
    assert args.period_fold is False and args.gmm_on is False and args.size == 7


def test_tiny_training_run_writes_a_loadable_bundle_and_period_table(small_data, tmp_path, capsys):
    out, periods = tmp_path / "bundle", tmp_path / "periods.csv"
    args = _parse([
        "--data", str(small_data), "--mapping", str(small_data / "mapping.toml"), "--periods", str(periods),
        "--out", str(out), "--size", "4", "--num_layers", "1", "--embedding", "3", "--estnet_size", "4",
        "--nb-epoch", "2", "--batch_size", "8", "--bands", "g", "--device", "cpu", "--quiet", "--num_classes", "2",
        "--save-periods",
    ])
    assert args.handler(args) == 0
    bundle = ModelBundle.load(out)
    assert bundle.class_names == ("RRAB", "RRCD") and bundle.training["config"]["size"] == 4
    assert len(pd.read_csv(periods)) == 10
    assert bundle.bundle_id in capsys.readouterr().out


def test_a_period_table_is_only_read_unless_told_to_save(small_data, tmp_path):
    """``--periods data/lightcurves/periods.csv`` must not rewrite a tracked file."""
    periods = tmp_path / "periods.csv"
    periods.write_text("object_id,band,period\n")
    before = periods.read_bytes()
    args = _parse([
        "--data", str(small_data), "--mapping", str(small_data / "mapping.toml"), "--periods", str(periods),
        "--out", str(tmp_path / "b"), "--size", "4", "--num-layers", "1", "--embedding", "3", "--estnet-size", "4",
        "--nb-epoch", "1", "--batch-size", "8", "--bands", "g", "--device", "cpu", "--quiet", "--no-calibrate",
    ])
    assert args.handler(args) == 0
    assert periods.read_bytes() == before


def test_every_commands_help_is_plain_text_with_help_for_every_option():
    from broker_filter.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        text = command.format_help()
        for marker in ("``", ":class:", ":mod:", ":func:", str(Path.home()), str(Path(__file__).resolve().parents[2])):
            assert marker not in text, (name, marker)
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
        long_options = [s for a in command._actions for s in a.option_strings if s.startswith("--") and not s.startswith("--no-")]
        primary = [a.option_strings[0] for a in command._actions if a.option_strings and a.option_strings[0].startswith("--")]
        assert all("_" not in option for option in primary), (name, [o for o in primary if "_" in o])
        assert long_options


def test_bad_inputs_stop_with_one_clear_line(small_data, tmp_path, capsys):
    args = _parse(["--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert args.handler(args) == 2
    assert "no such file" in capsys.readouterr().err
    args = _parse(["--data", str(small_data), "--mapping", str(small_data / "mapping.toml"), "--num_classes", "8",
                   "--out", str(tmp_path / "o")])
    assert args.handler(args) == 2
    assert "--num_classes 8" in capsys.readouterr().err
