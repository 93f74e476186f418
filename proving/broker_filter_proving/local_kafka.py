"""A real single-node Apache Kafka 4.x broker (KRaft), for tests and for local use.

Why this exists: the daemon's guarantees (transactions, read_committed, consumer groups,
broker restarts) can only be tested against a real broker, and CI machines have neither
Docker nor the Apache download site, but they do reach Maven Central. So the broker's jars
are fetched once by Maven (``deploy/kafka/pom.xml``) into a cache directory outside the
clone, and each :class:`LocalKafka` formats a fresh log directory and runs ``kafka.Kafka``
from that class path on free loopback ports.

Layout of the cache (default ``~/.cache/broker-filter/kafka-<version>``)::

    repository/      Maven's local repository (the jars themselves)
    classpath.txt    the broker's runtime class path, written last (its presence = ready)
    .lock            serialises provisioning between concurrent test sessions

Environment overrides: ``BROKER_FILTER_KAFKA_VERSION``, ``BROKER_FILTER_KAFKA_CACHE`` (the
cache directory itself), ``BROKER_FILTER_CACHE`` (its parent), ``BROKER_FILTER_KAFKA_DEPLOY``
(the folder holding ``pom.xml`` and ``log4j2.properties``; by default ``deploy/kafka`` of the
clone this module was imported from).
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from broker_filter_proving import REPO

DEFAULT_KAFKA_VERSION = "4.1.1"
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
STOP_GRACE_SECONDS = 30.0
BROKER_NODE_ID = 1


class LocalKafkaError(RuntimeError):
    """The local broker could not be provisioned, formatted or started; carries the log tail."""


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM-SHA-512 user written into the cluster's metadata when the storage is formatted."""

    username: str = "broker-filter"
    password: str = "broker-filter-secret"


def kafka_version() -> str:
    return os.environ.get("BROKER_FILTER_KAFKA_VERSION", DEFAULT_KAFKA_VERSION)


def cache_dir(version: str | None = None) -> Path:
    """Where the jars of ``version`` live: outside the clone, shared by every clone and run."""
    version = version or kafka_version()
    explicit = os.environ.get("BROKER_FILTER_KAFKA_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("BROKER_FILTER_CACHE") or Path.home() / ".cache" / "broker-filter"
    return Path(base).expanduser() / f"kafka-{version}"


def deploy_dir() -> Path:
    """The folder with ``pom.xml`` and ``log4j2.properties`` (``deploy/kafka`` of the clone)."""
    explicit = os.environ.get("BROKER_FILTER_KAFKA_DEPLOY")
    path = Path(explicit).expanduser() if explicit else REPO / "deploy" / "kafka"
    if not (path / "pom.xml").is_file():
        raise LocalKafkaError(
            f"no pom.xml in {path}: set BROKER_FILTER_KAFKA_DEPLOY to a clone's deploy/kafka folder"
        )
    return path


def provision(version: str | None = None, *, quiet: bool = True) -> list[Path]:
    """Return the broker's class path, downloading the jars with Maven on first use.

    Idempotent and safe to call from concurrent processes: the first caller downloads under
    a file lock, the others wait and then read the class path it wrote.
    """
    version = version or kafka_version()
    cache = cache_dir(version)
    classpath_file = cache / "classpath.txt"
    if not classpath_file.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not classpath_file.is_file():
                _download(version, cache, classpath_file, quiet=quiet)
    jars = [Path(p) for p in classpath_file.read_text().strip().split(os.pathsep) if p]
    missing = [j for j in jars if not j.is_file()]
    if missing:
        classpath_file.unlink()
        raise LocalKafkaError(
            f"{len(missing)} jars of the cached Kafka {version} are gone (e.g. {missing[0]}); run again to re-download"
        )
    return jars


def _download(version: str, cache: Path, classpath_file: Path, *, quiet: bool) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven ('mvn') is needed to fetch the Kafka broker from Maven Central; install it (e.g. apt-get install maven)"
        )
    partial = classpath_file.with_suffix(".partial")
    command = [
        mvn, "-B", *(["-q"] if quiet else []),
        "-f", str(deploy_dir() / "pom.xml"),
        f"-Dmaven.repo.local={cache / 'repository'}",
        f"-Dkafka.version={version}",
        "dependency:build-classpath",
        "-Dmdep.includeScope=runtime",
        f"-Dmdep.outputFile={partial}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not partial.is_file():
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise LocalKafkaError(f"Maven could not fetch Kafka {version}:\n" + "\n".join(tail))
    partial.replace(classpath_file)


def free_port() -> int:
    """A loopback port free right now (the broker binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints, without starting a JVM for it."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _die_with_parent() -> None:
    """Runs in the broker's child process: SIGTERM it if the Python parent dies (Linux).

    A test run killed with SIGKILL must not leave a JVM behind on a shared machine.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    os.setsid()  # Ctrl-C in the terminal reaches the parent, which then stops the broker cleanly


class LocalKafka:
    """One KRaft broker+controller on loopback, in its own directory.

    ``start()`` provisions, formats (once) and starts it and returns when an admin client's
    metadata lists the broker; ``stop()`` sends SIGTERM and SIGKILL after 30 s;
    ``restart(kill=True)`` simulates a crash and keeps ports and data. With ``scram`` set,
    a second listener speaks SASL_PLAINTEXT with SCRAM-SHA-512 (``sasl_bootstrap``).
    """

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        version: str | None = None,
        port: int | None = None,
        scram: ScramUser | None = None,
        ready_timeout: float = 120.0,
    ) -> None:
        self.version = version or kafka_version()
        self.scram = scram
        self.ready_timeout = ready_timeout
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="broker-filter-kafka-"))
        self.port = port or free_port()
        self.controller_port = free_port()
        self.sasl_port = free_port() if scram else None
        self._process: subprocess.Popen[bytes] | None = None
        self._classpath: list[Path] = []

    # -- addresses and files -------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        if self.sasl_port is None:
            raise LocalKafkaError("this broker has no SCRAM listener (pass scram=ScramUser(...))")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for name in ("server.log", "stdout.log"):
            path = self.workdir / name
            if path.is_file():
                text += f"--- {path} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> LocalKafka:
        if self.is_running():
            return self
        self._classpath = provision(self.version)
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self.workdir / "server.properties"
        if not (self.workdir / "data" / "meta.properties").is_file():
            properties.write_text(self._server_properties())
            self._format(properties)
        self._launch(properties)
        self._await_ready()
        return self

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL; escalate to SIGKILL after 30 s."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, kill: bool = False) -> LocalKafka:
        """Stop (crash with ``kill=True``) and start again on the same ports and data."""
        self.stop(kill=kill)
        return self.start()

    def close(self) -> None:
        """Stop and, for a broker in a temporary directory, delete its data and logs."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _server_properties(self) -> str:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        extra: list[str] = []
        if self.scram:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            extra += [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            ]
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(BROKER_NODE_ID),
            "controller.quorum.voters": f"{BROKER_NODE_ID}@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners + [f"CONTROLLER://127.0.0.1:{self.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(self.workdir / "data"),
            # One node: every internal topic has one replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (restart(kill=True)) the controller refuses the new incarnation
            # until the old one's session expires: keep that wait short (default 9 s).
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "num.partitions": "1",
            # Small and quick on a 2-core machine.
            "log.cleaner.dedupe.buffer.size": "2097152",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "auto.create.topics.enable": "false",
        }
        lines = [f"{key}={value}" for key, value in settings.items()] + extra
        return "\n".join(lines) + "\n"

    def _java(self, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError("Java 17 or newer ('java') is needed to run the Kafka broker")
        return [
            java, *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={deploy_dir() / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp", os.pathsep.join(str(j) for j in self._classpath),
            main_class, *args,
        ]

    def _format(self, properties: Path) -> None:
        args = ["format", "-t", new_cluster_id(), "-c", str(properties), "--ignore-formatted"]
        if self.scram:
            args += ["--add-scram", f"SCRAM-SHA-512=[name={self.scram.username},password={self.scram.password}]"]
        result = subprocess.run(self._java("kafka.tools.StorageTool", *args), capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalKafkaError(f"formatting the broker's storage failed:\n{result.stdout}{result.stderr}")

    def _launch(self, properties: Path) -> None:
        with open(self.workdir / "stdout.log", "ab") as out:
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def _await_ready(self) -> None:
        """Ready = the admin metadata lists the broker (it is unfenced and serves requests)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0, "logger": _silent_logger()})
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                code = self._process.returncode if self._process else None
                self._process = None
                raise LocalKafkaError(f"the Kafka broker exited with status {code} while starting:\n{self.log_tail()}")
            try:
                if BROKER_NODE_ID in admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # KafkaException until the listener answers
                time.sleep(0.2)
        self.stop(kill=True)
        raise LocalKafkaError(f"the Kafka broker was not ready within {self.ready_timeout:.0f} s:\n{self.log_tail()}")


def _silent_logger():
    """librdkafka logs every refused connection while the broker boots; those are expected."""
    import logging

    logger = logging.getLogger("broker_filter.local_kafka.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger
