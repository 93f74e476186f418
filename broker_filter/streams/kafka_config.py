"""librdkafka client properties: security passed through, secrets resolved, logs redacted.

Real alert streams need SASL (Rubin: SCRAM-SHA-512) or TLS. Rather than model each option,
any librdkafka property (``security.protocol``, ``sasl.*``, ``ssl.*``, ...) is passed through
unchanged. Secrets must not sit in a config file that gets committed or logged, so a
property may instead be given indirectly:

- ``<property>.file = "/run/secrets/kafka"``: the file's content (trailing newline removed);
- ``<property>.env = "KAFKA_PASSWORD"``: the named environment variable.

One ``[kafka] client`` table serves both of the daemon's clients, but librdkafka warns
(``CONFWARN``) about, and ignores, a consumer property given to a producer and vice versa:
``client_config(..., role=...)`` keeps only the properties of that role.

``redact`` masks secrets in any (nested) config mapping before it is logged, and
``redact_urls`` the credentials of any URL in a text (``http://user:pass@registry``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

FILE_SUFFIX = ".file"
ENV_SUFFIX = ".env"
REDACTED = "***"
# Substrings of property names whose values are secrets (librdkafka and our own names).
SECRET_MARKERS = ("password", "secret", "jaas", "token", "credential", "ssl.key.pem", "oauthbearer.config", "api.key")
# scheme://userinfo@ : the userinfo (user, or user:password) of a URL
URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]+@")


# The properties librdkafka marks "C" (consumer only) and "P" (producer only) in its
# CONFIGURATION.md (librdkafka 2.x); every other property applies to both roles.
CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms",
    "group.protocol.type", "group.protocol", "group.remote.assignor", "coordinator.query.interval.ms",
    "max.poll.interval.ms", "enable.auto.commit", "auto.commit.interval.ms", "enable.auto.offset.store",
    "queued.min.messages", "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes",
    "fetch.error.backoff.ms", "offset.store.method", "isolation.level", "consume_cb", "rebalance_cb",
    "offset_commit_cb", "enable.partition.eof", "check.crcs", "auto.offset.reset", "consume.callback.max.messages",
})
PRODUCER_ONLY = frozenset({
    "transactional.id", "transaction.timeout.ms", "enable.idempotence", "enable.gapless.guarantee",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "queue.buffering.max.ms", "linger.ms",
    "message.send.max.retries", "retries", "queue.buffering.backpressure.threshold", "compression.codec",
    "compression.type", "compression.level", "batch.num.messages", "batch.size", "delivery.report.only.error",
    "dr_cb", "dr_msg_cb", "sticky.partitioning.linger.ms", "request.required.acks", "acks", "request.timeout.ms",
    "message.timeout.ms", "delivery.timeout.ms", "partitioner", "queuing.strategy", "produce.offset.report",
})
ROLE_EXCLUDES = {"consumer": PRODUCER_ONLY, "producer": CONSUMER_ONLY}


class KafkaConfigError(ValueError):
    """A client property is contradictory or its secret cannot be read; says which one."""


def resolve_secrets(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``X.file`` / ``X.env`` entries by ``X`` with the secret they point to."""
    resolved: dict[str, Any] = {}
    for key, value in properties.items():
        suffix = FILE_SUFFIX if key.endswith(FILE_SUFFIX) else ENV_SUFFIX if key.endswith(ENV_SUFFIX) else None
        if suffix is None:
            resolved.setdefault(key, value)
            continue
        target = key[: -len(suffix)]
        if target in properties:
            raise KafkaConfigError(f"{target} is given both directly and through {key}: keep one")
        resolved[target] = _read_secret_file(key, value) if suffix == FILE_SUFFIX else _read_secret_env(key, value)
    return resolved


def _read_secret_file(key: str, path: Any) -> str:
    try:
        return Path(str(path)).expanduser().read_text().rstrip("\r\n")
    except OSError as exc:
        raise KafkaConfigError(f"{key}: cannot read {path}: {exc.strerror}") from exc


def _read_secret_env(key: str, name: Any) -> str:
    value = os.environ.get(str(name))
    if value is None:
        raise KafkaConfigError(f"{key}: environment variable {name} is not set")
    return value


def client_config(bootstrap: str, client: Mapping[str, Any] | None = None, *,
                  role: Literal["consumer", "producer"] | None = None, **overrides: Any) -> dict[str, Any]:
    """The dict handed to a confluent-kafka client: bootstrap, user properties, then ours.

    ``overrides`` are the properties a component needs for its semantics (e.g. the source's
    ``enable.auto.commit=False``); they win over the user's, which could otherwise break them.
    With ``role``, the user's properties of the other role are left out (see the module docstring).
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update(for_role(resolve_secrets(client or {}), role))
    config.update(overrides)
    return config


def for_role(properties: Mapping[str, Any], role: Literal["consumer", "producer"] | None) -> dict[str, Any]:
    """``properties`` without those librdkafka would ignore (with a warning) in a ``role`` client."""
    excluded = ROLE_EXCLUDES[role] if role else frozenset()
    return {key: value for key, value in properties.items() if key not in excluded}


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS) and not lowered.endswith((FILE_SUFFIX, ENV_SUFFIX))


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` (nested mappings too) with every secret value masked, for logs.

    The ``.file`` / ``.env`` indirections are kept: a path or a variable name is not a secret
    and tells the operator where the secret came from.
    """
    masked: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            masked[key] = redact(value)
        elif is_secret(str(key)) and value not in (None, ""):
            masked[key] = REDACTED
        else:
            masked[key] = redact_urls(value) if isinstance(value, str) else value
    return masked


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``http://***@host/``."""
    return URL_CREDENTIALS.sub(rf"\1{REDACTED}@", text)
