"""What the container image will hold, checked without a Docker engine: the Dockerfile
installs the project with a plain ``pip install .``, so the wheel built from exactly what
it copies must carry every data file the daemon opens at run time (Avro schemas, the
default model bundle) and the ``broker-filter`` console script."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from deploy_helpers import DEPLOY, REPO

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _copied_sources() -> list[str]:
    """The repository paths the builder stage COPYs (its build context)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            sources.extend(words[1:-1])
    return sources


def _runtime_files() -> list[str]:
    """Files the daemon reads from its installed packages, as they lie in the repository:
    every Avro schema, and the default bundle's manifest and weights."""
    patterns = ["broker_filter/schemas/**/*.avsc", "broker_filter/streams/schemas/**/*.avsc",
                "broker_filter/model/bundles/default/bundle.json", "broker_filter/model/bundles/default/*.safetensors"]
    return sorted(str(p.relative_to(REPO)) for pattern in patterns for p in REPO.glob(pattern) if p.is_file())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    context = tmp_path_factory.mktemp("image-context")
    for source in _copied_sources():
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, context / source)
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(context), "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def test_the_image_installs_every_schema_and_the_default_bundle(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    needed = _runtime_files()
    assert any(name.startswith("broker_filter/streams/schemas/") for name in needed)
    missing = [path for path in needed if path not in names]
    assert not missing, f"pip install . leaves out {missing}: add them to [tool.setuptools.package-data]"


def test_the_image_has_the_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "broker-filter = broker_filter.cli:main" in wheel.read(entry_points).decode()
