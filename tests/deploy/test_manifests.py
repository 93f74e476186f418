"""The deployment files, validated offline (no Docker engine or cluster here): every YAML
parses, the compose stack, the image, the systemd unit and the Kubernetes manifests agree
with each other and with the daemon's own config loader."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import DEPLOY, REPO

from broker_filter.config import load_config

COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
UNIT = DEPLOY / "systemd" / "broker-filter.service"
KUSTOMIZE_DIRS = [DEPLOY / "kubernetes" / "base", DEPLOY / "kubernetes" / "overlays" / "gpu"]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _duration_s(text: str) -> float:
    """Compose durations such as ``60s``, ``1m30s``."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.y*ml")), ids=str)
def test_yaml_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all((DEPLOY / path).read_text()))
    assert documents and all(isinstance(document, dict) for document in documents)


# --- compose -----------------------------------------------------------------------------


def test_compose_references_resolve() -> None:
    compose = _compose()
    services, volumes = compose["services"], set(compose["volumes"])
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in volumes, f"{name}: undeclared volume {source}"
    build = services["broker-filter"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_daemon_config_loads_and_matches_the_stack() -> None:
    """The daemon's config in the stack is valid for the real loader, its topics are the
    ones the topic job creates, and Prometheus scrapes its metrics address."""
    services = _compose()["services"]
    daemon = services["broker-filter"]
    mounts = dict(volume.split(":")[:2] for volume in daemon["volumes"])
    config_path = daemon["command"][daemon["command"].index("--config") + 1]
    host_file = next(source for source, target in mounts.items() if target == config_path)
    config = load_config(DEPLOY / host_file, environ={})

    created = set(re.findall(r"^create (\S+) \d+", services["kafka-topics"]["command"][0], re.M))
    wanted = {*config.kafka.input_topics, config.kafka.classification_topic, config.kafka.novelty_topic,
              config.kafka.dead_letter_topic}
    if config.rekey.enabled:
        wanted.add(config.rekey.topic)
    assert wanted == created
    assert config.kafka.bootstrap_servers.split(":")[0] in services
    assert config.metrics.host == "0.0.0.0"

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"broker-filter:{config.metrics.port}"]
    assert f":{config.metrics.port}/metrics" in " ".join(daemon["healthcheck"]["test"])
    assert _duration_s(daemon["stop_grace_period"]) >= 30
    assert daemon["stop_signal"] == "SIGTERM"
    assert config.state.path.startswith(mounts["broker-filter-state"])


def test_compose_demo_producer_reads_the_committed_sample_alerts() -> None:
    producer = _compose()["services"]["demo-producer"]
    mounts = dict(volume.split(":")[:2] for volume in producer["volumes"])
    (source,) = [arg for arg in producer["command"] if arg.startswith("/data")]
    host = next(h for h, target in mounts.items() if source.startswith(target))
    assert (DEPLOY / host / Path(source).relative_to(mounts[host])).is_dir()


# --- image -------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_copies_existing_sources_and_runs_unprivileged() -> None:
    instructions = _dockerfile_instructions()
    for keyword, argument in instructions:
        if keyword == "COPY" and "--from" not in argument:
            *sources, _ = argument.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    users = [argument for keyword, argument in final_stage if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("STOPSIGNAL", "SIGTERM") in final_stage
    assert ("ENTRYPOINT", '["broker-filter"]') in final_stage


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for keyword, argument in _dockerfile_instructions()
              if keyword == "COPY" and "--from" not in argument for source in argument.split()[:-1]}
    assert copied <= kept


# --- systemd -----------------------------------------------------------------------------


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_stops_gracefully_and_restarts_on_failure() -> None:
    settings = _unit_settings(UNIT.read_text())
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["KillMode"] == ["mixed"]
    assert 30 <= int(settings["TimeoutStopSec"][0]) <= 300
    assert settings["Restart"] == ["on-failure"]
    assert settings["ExecStart"][0].split()[1:3] == ["run", "--config"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert hardening in settings, hardening


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit_and_its_drop_ins(tmp_path: Path) -> None:
    """``systemd-analyze verify`` exits 0 even on unknown keys, so any diagnostic fails the
    test. ExecStart points at this environment's broker-filter, since verify checks it."""
    executable = Path(sys.executable).with_name("broker-filter")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/broker-filter/bin/broker-filter", str(executable)))
    for drop_in in sorted((DEPLOY / "systemd" / "broker-filter.service.d").glob("*.conf")):
        combined = tmp_path / f"with-{drop_in.stem}" / UNIT.name
        combined.parent.mkdir()
        combined.write_text(unit.read_text() + "\n" + drop_in.read_text())
        _verify(combined)
    _verify(unit)
    # systemd's own exposure score, 0 (locked down) to 100; below 20 it rates the unit "OK".
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-600:]


def _verify(unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


# --- Kubernetes --------------------------------------------------------------------------


def _kustomize(directory: Path) -> list[dict]:
    result = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def _statefulset(documents: list[dict]) -> dict:
    (statefulset,) = [d for d in documents if d["kind"] == "StatefulSet"]
    return statefulset


def test_kubernetes_files_reference_existing_resources() -> None:
    for directory in KUSTOMIZE_DIRS:
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []):
            assert (directory / resource).exists(), f"{directory.name}: {resource}"
        for patch in kustomization.get("patches", []):
            assert (directory / patch["path"]).is_file()
        for generator in kustomization.get("configMapGenerator", []):
            for file in generator["files"]:
                assert (directory / file).is_file()


def test_kubernetes_config_loads_with_one_transactional_id_per_pod() -> None:
    base = DEPLOY / "kubernetes" / "base"
    config = load_config(base / "broker-filter.toml", environ={"BROKER_FILTER_KAFKA_TRANSACTIONAL_ID": "broker-filter-0"})
    assert config.rekey.enabled, "several replicas in one group need re-keying by object id"
    statefulset = yaml.safe_load((base / "statefulset.yaml").read_text())
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["BROKER_FILTER_KAFKA_TRANSACTIONAL_ID"]["value"] == "$(POD_NAME)"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == config.metrics.port
    assert config.metrics.host == "0.0.0.0"
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.metrics.port)
    state_mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["state"]
    assert config.state.path.startswith(state_mount + "/")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for its built-in kustomize) is not installed")
@pytest.mark.parametrize("directory", KUSTOMIZE_DIRS, ids=lambda d: d.name)
def test_kustomize_builds_several_replicas_in_one_group(directory: Path) -> None:
    documents = _kustomize(directory)
    assert {d["kind"] for d in documents} >= {"Namespace", "ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    statefulset = _statefulset(documents)
    spec = statefulset["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (configmap,) = [d for d in documents if d["kind"] == "ConfigMap"]
    mounted = {v["name"]: v.get("configMap", {}).get("name") for v in pod["volumes"]}
    assert mounted["config"] == configmap["metadata"]["name"], "the generated ConfigMap's hashed name is mounted"
    service = next(d for d in documents if d["kind"] == "Service")
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["serviceName"] == service["metadata"]["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (for its built-in kustomize) is not installed")
def test_gpu_overlay_requests_a_gpu_and_the_cuda_image() -> None:
    (container,) = _statefulset(_kustomize(KUSTOMIZE_DIRS[1]))["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert {"name": "BROKER_FILTER_INFERENCE_DEVICE", "value": "cuda"} in container["env"]


def test_every_command_line_in_the_deployment_files_parses() -> None:
    """The daemon and producer invocations in compose, the unit and the StatefulSet are
    accepted by the real command-line parser (a renamed option breaks this test)."""
    from broker_filter.cli import build_parser

    services = _compose()["services"]
    unit_exec = _unit_settings(UNIT.read_text())["ExecStart"][0].split()[1:]
    statefulset = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "statefulset.yaml").read_text())
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    dockerfile_cmd = next(argument for keyword, argument in _dockerfile_instructions() if keyword == "CMD")
    command_lines = {
        "compose broker-filter": services["broker-filter"]["command"],
        "compose demo-producer": services["demo-producer"]["command"],
        "systemd ExecStart": unit_exec,
        "kubernetes args": container["args"],
        "Dockerfile CMD": yaml.safe_load(dockerfile_cmd),
    }
    for where, argv in command_lines.items():
        args = build_parser().parse_args(argv)
        assert callable(args.handler), where


KUBERNETES_VERSION = "1.30"


def _documents(directory: Path) -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(directory.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") != "Kustomization"]


def test_every_base_manifest_is_valid_against_the_kubernetes_schema() -> None:
    """Schemas of the Kubernetes API itself (kubernetes-validate, strict: unknown fields fail too)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")

    problems = []
    for name, document in _documents(DEPLOY / "kubernetes" / "base"):
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except Exception as error:  # noqa: BLE001 - a validation error of any kind is the finding
            problems.append(f"{name} {document['kind']}: {str(error).splitlines()[0][:300]}")
    assert problems == []


def test_the_statefulset_is_ready_only_when_the_daemon_says_so_and_reads_sasl_from_a_secret() -> None:
    statefulset = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "statefulset.yaml").read_text())
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    (password,) = [e for e in container["env"] if e["name"] == "KAFKA_PASSWORD"]
    secret = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "secret.example.yaml").read_text())
    assert password["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "password", "optional": True}
    assert "secret.example.yaml" not in yaml.safe_load((DEPLOY / "kubernetes" / "base" / "kustomization.yaml").read_text())["resources"]
    config = (DEPLOY / "kubernetes" / "base" / "broker-filter.toml").read_text()
    assert '"sasl.password.env" = "KAFKA_PASSWORD"' in config


def test_the_prometheus_operator_objects_are_generated_from_the_rules_and_the_service() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_prometheus_operator", DEPLOY / "tools" / "gen_prometheus_operator.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    rendered = generator.render()
    folder = DEPLOY / "kubernetes" / "monitoring"
    for name, text in rendered.items():
        assert (folder / name).read_text() == text, f"{name} is stale: python deploy/tools/gen_prometheus_operator.py"
    rule = yaml.safe_load(rendered["prometheusrule.yaml"])
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "rules" / "broker-filter.yml").read_text())["groups"]
    monitor = yaml.safe_load(rendered["servicemonitor.yaml"])
    service = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "service.yaml").read_text())
    assert monitor["spec"]["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= {"app.kubernetes.io/name": "broker-filter"}.items()
