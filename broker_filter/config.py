"""The daemon's one configuration object: a TOML file, overridable key by key from the environment.

Every key lives in a section (``[kafka]``, ``[decode]``, ...) and maps to a typed field of
one frozen dataclass per section; :class:`Config` holds them all. An environment variable
``BROKER_FILTER_<SECTION>_<KEY>`` (upper case) overrides the file, so that containers and
secrets managers configure the daemon without editing files: lists are comma-separated,
booleans ``true``/``false``, and the ``[kafka] client`` table is a JSON object.

Anything wrong (unknown section or key, a value of the wrong type, a contradiction) raises
:class:`ConfigError` whose message is one line naming the key, which the commands print
before exiting non-zero. The example ``deploy/config/broker-filter.toml`` lists every key.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from broker_filter.streams.limits import AlertLimits

ENV_PREFIX = "BROKER_FILTER_"


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the offending key."""


@dataclass(frozen=True)
class KafkaConfig:
    """Where alerts come from and outputs go. ``client`` holds raw librdkafka properties
    (``security.protocol``, ``sasl.*``, ``ssl.*``...) passed to every consumer and producer."""

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "broker-filter"
    input_topics: tuple[str, ...] = ("ztf-alerts",)
    classification_topic: str = "broker-filter.classifications"
    novelty_topic: str = "broker-filter.novelty"
    dead_letter_topic: str = "broker-filter.dead-letter"
    delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    transactional_id: str = "broker-filter-0"
    client: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeConfig:
    """How message bytes become alerts (see :class:`broker_filter.streams.codec.AlertDecoder`)."""

    schema_registry_url: str = ""
    schema_dir: str = ""
    schema_file: str = ""
    keep_cutouts: bool = False


@dataclass(frozen=True)
class StateConfig:
    """The light-curve store: an SQLite file (``path``; empty keeps state in memory only)."""

    path: str = "broker-filter-state.sqlite"
    max_points_per_object: int = 2000
    max_objects: int = 1_000_000


@dataclass(frozen=True)
class ScoringConfig:
    """When an object is scored. ``bands`` empty means every band the bundle reads;
    ``novelty_threshold`` picks the bundle threshold ("p80" or "p95") that sets the flag."""

    min_points: int = 20
    min_interval_s: float = 0.0
    bands: tuple[str, ...] = ()
    novelty_threshold: Literal["p80", "p95"] = "p95"


@dataclass(frozen=True)
class InferenceConfig:
    """The model and its micro-batches. ``bundle`` empty loads the packaged default bundle."""

    bundle: str = ""
    device: str = "auto"
    max_batch: int = 1024
    max_wait_ms: float = 200.0
    mixed_precision: bool = True
    queue_max: int = 8192


@dataclass(frozen=True)
class RekeyConfig:
    """Optional re-partitioning of raw alerts by object id through ``topic``."""

    enabled: bool = False
    topic: str = "broker-filter.rekeyed"


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition address (loopback by default; ``port = 0`` disables it)."""

    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    state: StateConfig = field(default_factory=StateConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    rekey: RekeyConfig = field(default_factory=RekeyConfig)
    limits: AlertLimits = field(default_factory=AlertLimits)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def sections(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in fields(cls)}


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The file's values (or the defaults when ``path`` is None), then the environment's."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from error
    return config_from_mapping(raw, os.environ if environ is None else environ)


def config_from_mapping(raw: Mapping, environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a :class:`Config` from parsed TOML plus environment overrides."""
    sections = Config.sections()
    unknown = set(raw) - set(sections)
    if unknown:
        raise ConfigError(f"unknown config section(s) {sorted(unknown)}; known: {sorted(sections)}")
    built = {}
    for name, section_type in sections.items():
        values = raw.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        built[name] = _build_section(name, section_type, values, environ or {})
    config = Config(**built)
    _validate(config)
    return config


def _build_section(name: str, section_type: type, values: Mapping, environ: Mapping[str, str]):
    hints = typing.get_type_hints(section_type)
    known = {f.name for f in fields(section_type)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{name}] unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for key in known:
        env_name = f"{ENV_PREFIX}{name}_{key}".upper()
        if env_name in environ:
            kwargs[key] = _from_env(env_name, environ[env_name], hints[key])
        elif key in values:
            kwargs[key] = _coerce(f"[{name}] {key}", values[key], hints[key])
    return section_type(**kwargs)


def _from_env(env_name: str, text: str, hint) -> object:
    origin = typing.get_origin(hint)
    if hint is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{env_name}: expected true or false, got {text!r}")
        return lowered in ("true", "1", "yes")
    if origin is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if origin is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{env_name}: expected a JSON object ({error})") from error
        return _coerce(env_name, value, hint)
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError as error:
            raise ConfigError(f"{env_name}: expected a number, got {text!r}") from error
    return _coerce(env_name, text, hint)


def _coerce(where: str, value, hint):
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _client_value(f"{where}.{k}", v) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint}")  # a new field with an unhandled type


def _client_value(where: str, value) -> str:
    """librdkafka takes every property as a string; TOML booleans and numbers are written its way."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ConfigError(f"{where}: expected a string, number or boolean, got {value!r}")


def _validate(config: Config) -> None:
    positive = {
        "[state] max_points_per_object": config.state.max_points_per_object,
        "[state] max_objects": config.state.max_objects,
        "[scoring] min_points": config.scoring.min_points,
        "[inference] max_batch": config.inference.max_batch,
        "[inference] queue_max": config.inference.queue_max,
    }
    for where, value in positive.items():
        if value < 1:
            raise ConfigError(f"{where}: must be at least 1, got {value}")
    limits = config.limits
    if (limits.min_mag >= limits.max_mag or limits.future_days < 0 or limits.max_id_chars < 1 or limits.max_band_chars < 1
            or limits.max_decoded_bytes < 1024):
        raise ConfigError("[limits] need min_mag < max_mag, future_days >= 0, max_id_chars and max_band_chars >= 1, "
                          "max_decoded_bytes >= 1024")
    if config.scoring.min_interval_s < 0 or config.inference.max_wait_ms < 0:
        raise ConfigError("[scoring] min_interval_s and [inference] max_wait_ms must not be negative")
    if config.inference.queue_max < config.inference.max_batch:
        raise ConfigError(
            f"[inference] queue_max ({config.inference.queue_max}) must be >= max_batch ({config.inference.max_batch})"
        )
    if not config.kafka.input_topics:
        raise ConfigError("[kafka] input_topics: at least one topic is needed")
    outputs = [config.kafka.classification_topic, config.kafka.novelty_topic, config.kafka.dead_letter_topic]
    if len(set(outputs)) != 3 or set(outputs) & set(config.kafka.input_topics):
        raise ConfigError("[kafka] classification, novelty, dead-letter and input topics must all differ")
    if config.kafka.delivery == "exactly_once" and not config.kafka.transactional_id:
        raise ConfigError('[kafka] transactional_id is required with delivery = "exactly_once"')
    if config.rekey.enabled and config.rekey.topic in config.kafka.input_topics:
        raise ConfigError("[rekey] topic must differ from the input topics")
    if not 0 <= config.metrics.port <= 65535:
        raise ConfigError(f"[metrics] port: not a TCP port: {config.metrics.port}")
    for key in ("group.id", "transactional.id", "bootstrap.servers", "enable.auto.commit", "isolation.level"):
        if key in config.kafka.client:
            raise ConfigError(f"[kafka] client.{key}: set by the daemon from its own keys; remove it")


def with_overrides(config: Config, **sections: Mapping) -> Config:
    """A copy with some keys changed, e.g. ``with_overrides(cfg, kafka={"group_id": "g"})`` (tests, commands)."""
    changed = {name: replace(getattr(config, name), **values) for name, values in sections.items()}
    result = replace(config, **changed)
    _validate(result)
    return result


__all__ = [
    "Config",
    "ConfigError",
    "DecodeConfig",
    "InferenceConfig",
    "KafkaConfig",
    "LoggingConfig",
    "MetricsConfig",
    "RekeyConfig",
    "ScoringConfig",
    "StateConfig",
    "load_config",
    "config_from_mapping",
    "with_overrides",
]
