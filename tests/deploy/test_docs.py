"""The operator documentation agrees with the code: the configuration reference is the
generator's output, the example config sets and explains every key, and every alert rule
has its runbook entry."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from dataclasses import fields

import pytest
import yaml
from deploy_helpers import DEPLOY, REPO

from broker_filter.config import Config, load_config

EXAMPLE = DEPLOY / "config" / "broker-filter.toml"


def _generator():
    path = DEPLOY / "tools" / "gen_configuration_doc.py"
    spec = importlib.util.spec_from_file_location("gen_configuration_doc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated_from_the_code() -> None:
    committed = (REPO / "docs" / "CONFIGURATION.md").read_text()
    assert committed == _generator().render(), "docs/CONFIGURATION.md is stale: python deploy/tools/gen_configuration_doc.py > docs/CONFIGURATION.md"


def test_configuration_reference_names_every_key_and_variable() -> None:
    committed = (REPO / "docs" / "CONFIGURATION.md").read_text()
    for section, section_type in Config.sections().items():
        assert f"## `[{section}]`" in committed
        for field in fields(section_type):
            assert f"`BROKER_FILTER_{section.upper()}_{field.name.upper()}`" in committed


def test_example_config_sets_every_key_and_loads() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    for section, section_type in Config.sections().items():
        assert set(example[section]) == {f.name for f in fields(section_type)}, section
    load_config(EXAMPLE, environ={})


def test_generator_refuses_a_key_without_a_comment(tmp_path) -> None:
    generator = _generator()
    stripped = re.sub(r"^(max_objects\s*=\s*\S+).*$", r"\1", EXAMPLE.read_text(), flags=re.M)
    generator.EXAMPLE = tmp_path / "broker-filter.toml"
    generator.EXAMPLE.write_text(stripped)
    with pytest.raises(generator.DocError, match=r"\[state\] max_objects has no comment"):
        generator.render()


def test_operations_guide_explains_every_alert_rule() -> None:
    guide = (REPO / "docs" / "OPERATIONS.md").read_text()
    groups = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "broker-filter.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        heading = f"### {rule['alert']}"
        assert heading in guide, f"docs/OPERATIONS.md has no '{heading}' section"
        section = guide.split(heading, 1)[1].split("\n### ", 1)[0]
        assert "What to do" in section, f"{rule['alert']}: no 'What to do'"


def test_model_card_quotes_only_measured_figures() -> None:
    """Every number in the model card is in MODEL.md (measured, with its command) or in the
    default bundle's own bundle.json; years of citations aside."""
    card = (REPO / "docs" / "MODEL_CARD.md").read_text()
    sources = (REPO / "docs" / "MODEL.md").read_text() + (REPO / "broker_filter" / "model" / "bundles" / "default" / "bundle.json").read_text()
    bundle = json.loads((REPO / "broker_filter" / "model" / "bundles" / "default" / "bundle.json").read_text())
    assert f"bundle_id `{bundle['bundle_id']}`" in card, "the model card describes another bundle"
    for number in re.findall(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|\.\d)", card):
        if re.fullmatch(r"(19|20)\d\d", number):
            continue
        assert number in sources, f"docs/MODEL_CARD.md quotes {number}, found in neither MODEL.md nor bundle.json"
