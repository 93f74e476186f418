"""The daemon as a killable process, its topics read back, and every input alert accounted for.

Why a separate process: ``kill -9`` must hit the real ``broker-filter run`` (its Kafka
clients, its SQLite file, its threads) with no chance to clean up, which a thread of the
test process cannot simulate. Each :class:`DaemonProcess` runs in its own process group
with its log in a file, so that a failure shows what the daemon said.

Accounting (:func:`account`) reads the output topics with ``read_committed`` — what a
downstream consumer would see — and compares them with the inputs: every valid input alert
must have exactly one classification record (``record_id``), every undecodable message
exactly one dead letter (keyed by its ``origin`` header, ``topic[partition]@offset``), and
every novelty record a flagged classification.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker_filter.outputs import decode

READ_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Deployment:
    """One daemon deployment: its broker, topics and identities."""

    bootstrap: str
    input_topic: str
    classification_topic: str
    novelty_topic: str
    dead_letter_topic: str
    group_id: str
    client: Mapping[str, str] = field(default_factory=dict)

    @property
    def output_topics(self) -> list[str]:
        return [self.classification_topic, self.novelty_topic, self.dead_letter_topic]

    @classmethod
    def named(cls, bootstrap: str, prefix: str, client: Mapping[str, str] | None = None) -> Deployment:
        return cls(
            bootstrap,
            f"{prefix}.alerts",
            f"{prefix}.classifications",
            f"{prefix}.novelty",
            f"{prefix}.dead-letter",
            f"{prefix}.group",
            dict(client or {}),
        )


def write_config(path: Path, deployment: Deployment, **sections: Mapping[str, Any]) -> Path:
    """A TOML config for ``broker-filter run``; ``sections`` add or override keys (e.g. ``state={"path": ...}``)."""
    config: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": deployment.bootstrap,
            "group_id": deployment.group_id,
            "input_topics": [deployment.input_topic],
            "classification_topic": deployment.classification_topic,
            "novelty_topic": deployment.novelty_topic,
            "dead_letter_topic": deployment.dead_letter_topic,
            "transactional_id": f"{deployment.group_id}-0",
            "client": dict(deployment.client),
        },
        "inference": {"device": "cpu"},
        "logging": {"level": "INFO", "format": "json"},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path.write_text(to_toml(config))
    return path


def to_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """The small TOML subset a daemon config needs: tables of strings, numbers, booleans, lists, one inline table."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


class DaemonProcess:
    """``broker-filter run --config FILE`` in its own process group, logging to ``log_path``."""

    def __init__(self, config_path: Path, log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def start(self) -> DaemonProcess:
        self._log_start = self.log_path.stat().st_size if self.log_path.is_file() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "broker_filter", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group: no handler runs, nothing is flushed."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM (finish the batch, commit, exit 0) and the exit status."""
        assert self.process is not None, "not started"
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"the daemon did not stop within {timeout:.0f} s of SIGTERM; log: {self.log_path}") from None
        return self.process.returncode

    def logged(self, text: str) -> bool:
        """Whether this incarnation (not an earlier one sharing the log file) has logged ``text``."""
        if not self.log_path.is_file():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return text.encode() in log.read()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def scrape(host: str, port: int, timeout: float = 2.0) -> dict[str, float]:
    """The daemon's Prometheus samples as ``{'name{label="v"}': value}`` ({} while the endpoint is down)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class OutputWatcher:
    """A ``read_committed`` consumer of the output topics, in a background thread.

    It sees exactly what downstream consumers see: records of aborted transactions never,
    records of open ones only once committed.
    """

    def __init__(self, deployment: Deployment) -> None:
        from confluent_kafka import Consumer

        self.deployment = deployment
        self._consumer = Consumer(
            {
                **deployment.client,
                "bootstrap.servers": deployment.bootstrap,
                "group.id": f"reliability-reader-{time.monotonic_ns()}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        self._consumer.subscribe(deployment.output_topics)
        self._messages: list[tuple[str, bytes | None, dict[str, bytes]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="output-watcher", daemon=True)

    def __enter__(self) -> OutputWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = [
                (m.topic(), m.value(), {k: v for k, v in (m.headers() or [])})
                for m in self._consumer.consume(500, 0.2)
                if m.error() is None
            ]
            if batch:
                with self._lock:
                    self._messages.extend(batch)

    def messages(self) -> list[tuple[str, bytes | None, dict[str, bytes]]]:
        with self._lock:
            return list(self._messages)

    def accounted(self) -> int:
        """Classification records plus dead letters seen so far (one per input when all is well)."""
        skip = self.deployment.novelty_topic
        with self._lock:
            return sum(1 for topic, _, _ in self._messages if topic != skip)

    def wait_for(self, count: int, timeout: float = READ_TIMEOUT_S, alive: Callable[[], bool] | None = None, linger: float = 3.0) -> None:
        """Until ``count`` inputs are accounted for, then ``linger`` seconds more (a duplicate would show)."""
        deadline = time.monotonic() + timeout
        while self.accounted() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.accounted()} of {count} inputs accounted for after {timeout:.0f} s")
            if alive is not None and not alive():
                raise RuntimeError(f"the daemon exited with {self.accounted()} of {count} inputs accounted for")
            time.sleep(0.2)
        time.sleep(linger)


@dataclass
class Accounting:
    """Inputs against outputs; ``lost`` and ``duplicated`` must be empty."""

    inputs: int
    records: int
    dead_letters: int
    novelty: int
    lost: list[str]
    duplicated: list[str]
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def summary(self) -> str:
        return (
            f"{self.inputs} inputs: {self.records} records, {self.dead_letters} dead letters, {self.novelty} novelty; "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, unexpected {len(self.unexpected)}"
        )


def account(
    deployment: Deployment,
    messages: Iterable[tuple[str, bytes | None, dict[str, bytes]]],
    expected_records: Iterable[str],
    expected_dead_letters: Iterable[str],
) -> tuple[Accounting, list[dict[str, Any]]]:
    """Compare outputs with the inputs: record ids expected, dead-letter origins expected. Also returns the records."""
    expected_records, expected_dead = set(expected_records), set(expected_dead_letters)
    records: list[dict[str, Any]] = []
    dead: list[str] = []
    novelty: list[str] = []
    for topic, value, headers in messages:
        if topic == deployment.classification_topic:
            records.append(decode("classification", value))
        elif topic == deployment.novelty_topic:
            novelty.append(decode("novelty", value)["record_id"])
        elif topic == deployment.dead_letter_topic:
            dead.append(headers.get("origin", b"").decode())
    seen = Counter(r["record_id"] for r in records) + Counter(dead)
    flagged = {r["record_id"] for r in records if r.get("novel")}
    result = Accounting(
        inputs=len(expected_records) + len(expected_dead),
        records=len(records),
        dead_letters=len(dead),
        novelty=len(novelty),
        lost=sorted((expected_records | expected_dead) - set(seen)),
        duplicated=sorted(k for k, n in seen.items() if n > 1) + sorted(k for k, n in Counter(novelty).items() if n > 1),
        unexpected=sorted(set(seen) - expected_records - expected_dead) + sorted(set(novelty) - flagged),
    )
    return result, records


def produce(bootstrap: str, topic: str, payloads: Iterable[bytes], keys: Iterable[bytes | None], client: Mapping[str, str] | None = None,
            rate: float | None = None, message_max_bytes: int = 1_000_000) -> list[tuple[int, int]]:
    """Send every payload (at ``rate`` messages/s when given); returns each one's (partition, offset)."""
    from confluent_kafka import Producer

    from broker_filter.streams.kafka_config import for_role

    producer = Producer({**for_role(client or {}, "producer"), "bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20, "log_level": 0,
                         "message.max.bytes": message_max_bytes})
    positions: dict[int, tuple[int, int]] = {}

    def delivered(index: int):
        def report(error, message) -> None:
            if error is not None:
                raise RuntimeError(f"delivery failed: {error}")
            positions[index] = (message.partition(), message.offset())

        return report

    started = time.monotonic()
    for index, (payload, key) in enumerate(zip(payloads, keys)):
        if rate is not None:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                producer.poll(delay)
        while True:
            try:
                producer.produce(topic, payload, key, on_delivery=delivered(index))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("some messages were not delivered within 120 s")
    return [positions[i] for i in range(len(positions))]


def origin(topic: str, partition: int, offset: int) -> str:
    """The dead-letter ``origin`` header the daemon writes for a Kafka input."""
    return f"{topic}[{partition}]@{offset}"
