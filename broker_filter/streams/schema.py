"""Writer schemas, survey detection and the projected reader schemas that skip cutouts.

Every decode needs two parsed schemas: the writer's (what the bytes are) and a reader's
(what we want). The reader schema here is the writer schema with every field we do not
use removed — cutouts, broker add-ons, the ~90 unused candidate columns — keeping names
and union shapes identical so that Avro schema resolution matches by name. Deriving it
from the writer schema (instead of shipping one reader schema per survey version) is
what lets one decoder read ZTF 3.2 to 4.02, Fink's re-published alerts (whose record
names are ``topLevelRecord.*``) and Rubin lsst.v7 to v11 alike.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from broker_filter.streams.alert import DecodeError, Survey

ZTF_SCHEMA_VERSION = "4.02"
ZTF_SCHEMA_FILES = ("cutout", "candidate", "prv_candidate", "fp_hist", "alert")  # dependency order

ZTF_CUTOUTS = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
RUBIN_CUTOUTS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")

_ZTF_POINT = ("jd", "fid", "pid", "candid", "magpsf", "sigmapsf", "magnr", "sigmagnr", "isdiffpos",
              "distnr", "ra", "dec", "diffmaglim")
_ZTF_FORCED = ("jd", "fid", "pid", "forcediffimflux", "forcediffimfluxunc", "magzpsci", "magnr",
               "sigmagnr", "distnr", "diffmaglim", "procstatus")
_RUBIN_SOURCE = ("diaSourceId", "diaObjectId", "ssObjectId", "midpointMjdTai", "band", "psfFlux",
                 "psfFluxErr", "scienceFlux", "scienceFluxErr", "ra", "dec")
_RUBIN_FORCED = ("diaForcedSourceId", "diaObjectId", "midpointMjdTai", "band", "psfFlux", "psfFluxErr",
                 "scienceFlux", "scienceFluxErr")

# top-level field -> the fields kept in its record (None: keep the field as it is)
NEEDED: dict[Survey, dict[str, tuple[str, ...] | None]] = {
    "ztf": {
        "schemavsn": None, "publisher": None, "objectId": None, "candid": None,
        "candidate": _ZTF_POINT, "prv_candidates": _ZTF_POINT, "fp_hists": _ZTF_FORCED,
    },
    "lsst": {
        "alertId": None, "diaSourceId": None, "lsst_schema_version": None,
        "diaSource": _RUBIN_SOURCE, "prvDiaSources": _RUBIN_SOURCE,
        "prvDiaForcedSources": _RUBIN_FORCED, "diaObject": ("diaObjectId", "ra", "dec"),
    },
}


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What a writer schema is: survey, version label, and the top-level field names."""

    survey: Survey
    version: str
    fields: frozenset[str]


def identify(schema: dict[str, Any]) -> SchemaInfo:
    """Tell ZTF from Rubin by the fields, not the record name (brokers rename records)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise DecodeError("unknown_schema", "writer schema is not an Avro record")
    fields = frozenset(f.get("name") for f in schema.get("fields", ()) if isinstance(f, dict))
    name = str(schema.get("name", ""))
    namespace = str(schema.get("namespace", ""))
    if {"objectId", "candidate"} <= fields:
        return SchemaInfo("ztf", str(schema.get("version", "ztf")), fields)
    if "diaSource" in fields:
        full = f"{namespace}.{name}" if namespace else name
        version = full.rsplit(".", 1)[0] if full.startswith("lsst.v") else "lsst"
        return SchemaInfo("lsst", version, fields)
    raise DecodeError("unknown_schema", f"record {name!r} is neither a ZTF nor a Rubin alert")


def inline_named_types(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """Turn a list of named schemas (dependencies first, top record last) into one schema.

    A named type is defined in full at its first use and referenced by name afterwards, as
    Avro requires; the result is a plain JSON-able dict that projection can walk.
    """
    definitions = {}
    for schema in schemas:
        full = schema["name"] if "." in schema["name"] else f"{schema.get('namespace', '')}.{schema['name']}"
        definitions[full.lstrip(".")] = schema
    defined: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in definitions and node not in defined:
                defined.add(node)
                return walk(copy.deepcopy(definitions[node]))
            return node
        if isinstance(node, list):
            return [walk(branch) for branch in node]
        if isinstance(node, dict):
            if node.get("type") == "record":
                for fld in node["fields"]:
                    fld["type"] = walk(fld["type"])
            elif node.get("type") == "array":
                node["items"] = walk(node["items"])
            elif node.get("type") == "map":
                node["values"] = walk(node["values"])
        return node

    return walk(copy.deepcopy(schemas[-1]))


def ztf_schema() -> dict[str, Any]:
    """The official ZTF 4.02 alert schema, shipped in ``broker_filter/streams/schemas/ztf/4.02``."""
    folder = resources.files("broker_filter.streams.schemas").joinpath("ztf", ZTF_SCHEMA_VERSION)
    parts = [json.loads(folder.joinpath(f"{name}.avsc").read_text()) for name in ZTF_SCHEMA_FILES]
    return inline_named_types(parts)


def rubin_schema(version: str | None = None) -> dict[str, Any]:
    """An official Rubin alert schema ("7.0" .. "11.1"; the newest when None).

    The schemas come from the ``lsst-alert-packet`` package (GPL-3.0), a dependency that is
    imported here only, so that ZTF-only users need not install it.
    """
    try:
        import lsst.alert.packet as packet
    except ImportError as exc:
        raise RuntimeError("Rubin schemas need the lsst-alert-packet package (pip install lsst-alert-packet)") from exc
    major, minor = packet.get_latest_schema_version() if version is None else map(int, version.split("."))
    path = Path(packet.get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"
    if not path.exists():
        raise ValueError(f"lsst-alert-packet has no Rubin schema version {major}.{minor}")
    return _plain(packet.Schema.from_file(str(path)).definition)


def _plain(node: Any) -> Any:
    """Drop fastavro's private keys (``__fastavro_parsed``, ``__named_schemas``): a schema
    carrying them is taken as already parsed, and they would bloat every container header."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_schema_file(path: Path) -> dict[str, Any]:
    """One .avsc file: a record, or a JSON list of named types with the alert last."""
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DecodeError("unknown_schema", f"cannot read schema file {path}: {exc}") from None
    return inline_named_types(loaded) if isinstance(loaded, list) else loaded


def _record_of(node: Any) -> dict[str, Any] | None:
    """The record inside a field type (record, nullable record, array of records)."""
    if isinstance(node, dict):
        if node.get("type") == "record":
            return node
        if node.get("type") == "array":
            return _record_of(node["items"])
    if isinstance(node, list):
        for branch in node:
            found = _record_of(branch)
            if found is not None:
                return found
    return None


def reader_schema(writer: dict[str, Any], keep_cutouts: bool) -> dict[str, Any]:
    """The writer schema pruned to the fields decoding uses (plus cutouts if asked).

    A named type that is defined once and referenced again (ZTF 4.02's three cutouts
    share ``ztf.alert.cutout``) must keep its definition at its first kept use, so
    pruning happens on a copy in which every kept field carries its full type.
    """
    info = identify(writer)
    needed = dict(NEEDED[info.survey])
    if keep_cutouts:
        needed.update({name: None for name in (ZTF_CUTOUTS if info.survey == "ztf" else RUBIN_CUTOUTS)})
    expanded = copy.deepcopy(writer)
    expanded["fields"] = [f for f in expanded["fields"] if f["name"] in needed]
    pruned_records: set[int] = set()
    for fld in expanded["fields"]:
        columns = needed[fld["name"]]
        record = _record_of(fld["type"])
        if columns is None or record is None or id(record) in pruned_records:
            continue
        record["fields"] = [c for c in record["fields"] if c["name"] in columns]
        pruned_records.add(id(record))
    return _define_named_first(expanded, writer)


def _define_named_first(reader: dict[str, Any], writer: dict[str, Any]) -> dict[str, Any]:
    """Re-inline named types that the pruning left as bare references.

    When a field that defined a named type was dropped (say ``cutoutScience``), a later
    field referring to that name by string would be undefined; copy the definition from the
    writer schema into the first remaining use.
    """
    definitions: dict[str, dict[str, Any]] = {}

    def collect(node: Any, namespace: str) -> None:
        if isinstance(node, list):
            for branch in node:
                collect(branch, namespace)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed"):
                name = node["name"]
                ns = node.get("namespace", namespace)
                full = name if "." in name else (f"{ns}.{name}" if ns else name)
                definitions.setdefault(full, node)
                definitions.setdefault(name, node)
                if kind == "record":
                    for fld in node["fields"]:
                        collect(fld["type"], full.rsplit(".", 1)[0] if "." in full else ns)
            elif kind == "array":
                collect(node["items"], namespace)
            elif kind == "map":
                collect(node["values"], namespace)

    collect(writer, writer.get("namespace", ""))
    defined: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in definitions and node not in defined:
                defined.add(node)
                return copy.deepcopy(definitions[node])
            return node
        if isinstance(node, list):
            return [walk(branch) for branch in node]
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed"):
                defined.add(node["name"])
                if node.get("namespace"):
                    defined.add(f"{node['namespace']}.{node['name']}")
                if kind == "record":
                    for fld in node["fields"]:
                        fld["type"] = walk(fld["type"])
            elif kind == "array":
                node["items"] = walk(node["items"])
            elif kind == "map":
                node["values"] = walk(node["values"])
        return node

    return walk(reader)
