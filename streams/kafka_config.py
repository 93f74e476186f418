"""librdkafka client properties: security passed through, secrets resolved, logs redacted.

Real alert streams need SASL (Rubin: SCRAM-SHA-512) or TLS. Rather than model each option,
any librdkafka property (``security.protocol``, ``sasl.*``, ``ssl.*``, ...) is passed through
unchanged. Secrets must not sit in a config file that gets committed or logged, so a
property may instead be given indirectly:

- ``<property>.file = "/run/secrets/kafka"``: the file's content (trailing newline removed);
- ``<property>.env = "KAFKA_PASSWORD"``: the named environment variable.

``redact`` masks secrets in any (nested) config mapping before it is logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_SUFFIX = ".file"
ENV_SUFFIX = ".env"
REDACTED = "***"
# Substrings of property names whose values are secrets (librdkafka and our own names).
SECRET_MARKERS = ("password", "secret", "jaas", "token", "credential", "ssl.key.pem", "oauthbearer.config", "api.key")


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


def client_config(bootstrap: str, client: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The dict handed to a confluent-kafka client: bootstrap, user properties, then ours.

    ``overrides`` are the properties a component needs for its semantics (e.g. the source's
    ``enable.auto.commit=False``); they win over the user's, which could otherwise break them.
    """
    config: dict[str, Any] = {"bootstrap.servers": bootstrap}
    config.update(resolve_secrets(client or {}))
    config.update(overrides)
    return config


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
            masked[key] = value
    return masked
