"""The Grafana dashboard reads only what the daemon exports, shows everything it exports,
and is provisioned where the compose file mounts it."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from deploy_helpers import DEPLOY, METRIC_CONTRACT, exposed_families, serve_live_metrics

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "broker-filter.json"
METRIC_NAME = re.compile(r"\bbroker_filter_[a-z_]+\b")
GROUPING = re.compile(r"\bby \(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Labels Prometheus attaches to every scraped series, not exported by the daemon.
TARGET_LABELS = {"instance", "job"}


def _panels() -> list[dict]:
    return [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]


def _targets() -> list[tuple[str, dict]]:
    return [(panel["title"], target) for panel in _panels() for target in panel["targets"]]


@pytest.fixture(scope="module")
def exposition() -> dict[str, tuple[str, set[str], set[str]]]:
    return exposed_families(serve_live_metrics().scrape())


def test_every_panel_queries_a_metric_the_daemon_exports(exposition) -> None:
    samples = {name for _, names, _ in exposition.values() for name in names}
    for title, target in _targets():
        used = METRIC_NAME.findall(target["expr"])
        assert used, f"panel {title!r}: query reads no broker_filter metric: {target['expr']}"
        for name in used:
            assert name in samples, f"panel {title!r}: {name} is not in the daemon's /metrics"


def test_grouping_and_legend_labels_exist_on_the_queried_metrics(exposition) -> None:
    labels_of_sample = {name: labels for _, (_, names, labels) in exposition.items() for name in names}
    for title, target in _targets():
        expr = target["expr"]
        grouped = {label.strip() for clause in GROUPING.findall(expr) for label in clause.split(",")}
        metric_labels = set.union(*(labels_of_sample[name] for name in METRIC_NAME.findall(expr)))
        assert grouped - {"le"} <= metric_labels | TARGET_LABELS, f"panel {title!r}: groups by unknown labels in {expr}"
        legend = set(LEGEND_LABEL.findall(target.get("legendFormat", "")))
        assert legend <= grouped, f"panel {title!r}: legend {target['legendFormat']!r} names labels not grouped by"


def test_every_exported_metric_is_on_the_dashboard(exposition) -> None:
    used = {name for _, target in _targets() for name in METRIC_NAME.findall(target["expr"])}
    for family, (_, names, _) in exposition.items():
        if family.startswith("broker_filter_"):
            assert names & used, f"{family} is exported but no panel shows it"
    assert {f"broker_filter_{name}" for name in METRIC_CONTRACT} <= set(exposition)


def test_panels_use_the_datasource_variable_and_do_not_overlap() -> None:
    """Every query reads ``${datasource}``: the dashboard imports into any Grafana, whatever its Prometheus uid."""
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (provisioned,) = [source["uid"] for source in datasource["datasources"]]
    uid = "${datasource}"
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] == provisioned  # the provisioned one is the default choice
    assert "\"uid\": \"prometheus\"" not in DASHBOARD.read_text()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"]) for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid
            assert all(target["datasource"]["uid"] == uid for target in panel["targets"])
            assert panel.get("description"), f"panel {panel['title']!r} has no description"


def test_provisioning_paths_match_the_compose_mounts() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "broker-filter.yaml").read_text())
    (dashboards_path,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounts["./grafana/dashboards"] == dashboards_path
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (url,) = [source["url"] for source in datasource["datasources"]]
    assert url.split("//")[1].split(":")[0] in compose["services"]
