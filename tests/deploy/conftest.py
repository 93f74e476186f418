"""Fixtures of the deployment tests: the real Prometheus tools."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest
from deploy_helpers import DEPLOY, REPO

PROMETHEUS_INSTALLER = DEPLOY / "prometheus" / "install.sh"


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: str
    promtool: str


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    """The real ``prometheus`` and ``promtool`` binaries. When missing on a machine where we
    are root with apt-get (CI), deploy/prometheus/install.sh installs Debian's package;
    elsewhere the test fails with the command to run."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["bash", str(PROMETHEUS_INSTALLER)], check=True, timeout=600)
        found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        pytest.fail(f"prometheus and promtool are needed: run {PROMETHEUS_INSTALLER.relative_to(REPO)}")
    return PrometheusTools(*found)
