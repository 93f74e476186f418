"""Compile a writer schema, projected by a reader schema, into a flat decoding program.

An Avro record has no length prefix: to reach ``prv_candidates`` a decoder must walk every
one of ``candidate``'s ~100 values, and a generic decoder (fastavro) pays ~170 ns of
Python-level dispatch per skipped value. The program built here is that walk spelled out
once per schema, as rows of ``(op, a, b, c, d)`` integers that :mod:`broker_filter.streams.fastdecode`
runs in compiled code: "skip a varint", "skip 8 bytes", "read a double into slot 5",
"pick a union branch", "loop over array blocks". Only the fields the reader schema keeps
are read, into numbered slots of a row; every record kept gets a row of its own, and
:class:`Table` says how to turn rows back into the dicts fastavro would have produced.

Anything the program does not cover raises :class:`Unsupported` at compile time, and the
caller decodes that schema with fastavro instead: recursive types, logical types, enums,
fixed, maps or arrays of scalars among the *kept* fields, unions with two non-null
branches, arrays of records inside kept array items, and arrays whose items can be
encoded in zero bytes (whose length could not be bounded by the message size).
Skipped fields may be of any type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Opcodes: one row of the program is (op, a, b, c, d).
HALT = 0
SKIP_VARINT = 1  # int, long, enum
SKIP_N = 2  # a = byte count: boolean, float, double, fixed
SKIP_BYTES = 3  # bytes, string: a length varint and that many bytes
READ_LONG = 4  # a = slot
READ_FLOAT = 5  # a = slot (stored as a float64)
READ_DOUBLE = 6  # a = slot (stored as a float64)
READ_BOOL = 7  # a = slot (0 or 1)
READ_BYTES = 8  # a = slot of the offset into the message; a + 1 = slot of the length
UNION = 9  # a = branch count, b = slot for the branch index (-1: not kept); a JUMP row per branch follows
JUMP = 10  # a = target row
ARRAY = 11  # a = slot for the first item row (-1), b = slot for the item count (-1), c = row of its NEXT, d = 1: skip blocks by their byte size
NEXT = 12  # end of one array or map item: next item, next block, or leave
ROW = 13  # start a new output row; a = parent slot that receives its index (-1: none)
END_ROW = 14  # back to the parent row
SKIP_UNION = 15  # a = branch count; a row (SKIP_VARINT | SKIP_N | SKIP_BYTES | HALT for null, size) per branch follows

PRIMITIVE_SIZES = {"boolean": 1, "float": 4, "double": 8}
_READ_OPS = {"int": READ_LONG, "long": READ_LONG, "float": READ_FLOAT, "double": READ_DOUBLE,
             "boolean": READ_BOOL, "string": READ_BYTES, "bytes": READ_BYTES}
_SCALARS = frozenset(_READ_OPS) | {"null"}


class Unsupported(Exception):
    """A schema feature the program does not cover: decode this schema with fastavro."""


@dataclass(frozen=True, slots=True)
class Field:
    """One kept field of a record: where its value lies in the row and how to rebuild it.

    ``kind`` is an Avro primitive name for a scalar, ``"record"`` for a nested record
    (``slot`` holds the child's row index), or ``"array"`` for an array of records
    (``slot`` holds the first item's row, ``slot + 1`` the item count). ``branch_slot`` is
    the slot of the union branch index (-1 when the field is not a union) and
    ``null_branch`` the branch that means null (-1: none).
    """

    name: str
    kind: str
    slot: int
    branch_slot: int = -1
    null_branch: int = -1
    table: Table | None = None


@dataclass(frozen=True, slots=True)
class Table:
    """The kept fields of one record type, in the reader schema's order.

    Array items may be a union of the record and null (Fink writes ``[record, "null"]``):
    then ``branch_slot`` holds each item's branch and ``null_branch`` the null one.
    """

    fields: tuple[Field, ...]
    branch_slot: int = -1
    null_branch: int = -1


@dataclass(frozen=True, slots=True)
class Program:
    """A compiled (writer, reader) pair: the code, the row width and the root record."""

    code: np.ndarray  # (rows, 5) int64
    slots: int
    depth: int  # deepest nesting of rows and of arrays, for the interpreter's stacks
    root: Table


def compile_program(writer: dict[str, Any], reader: dict[str, Any]) -> Program:
    """The program that reads ``reader``'s fields out of bytes written with ``writer``."""
    compiler = _Compiler()
    root = compiler.root(writer, reader)
    code = np.array(compiler.code, dtype=np.int64).reshape(-1, 5)
    return Program(code, max(compiler.slots, 1), compiler.max_depth + 1, root)


class _Names:
    """Named types (record, enum, fixed) of one schema, registered where they are defined.

    Avro defines a name at its first occurrence in depth-first order and refers to it by
    name afterwards; the compiler walks in that order, so registering on the way suffices.
    """

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def register(self, node: dict[str, Any], namespace: str) -> str:
        name = node["name"]
        space = node.get("namespace", namespace) if "." not in name else name.rsplit(".", 1)[0]
        full = name if "." in name else (f"{space}.{name}" if space else name)
        self.types.setdefault(full, node)
        return space or ""

    def resolve(self, node: Any, namespace: str) -> Any:
        """A type with a bare name reference replaced by its definition."""
        if isinstance(node, str) and node not in _SCALARS:
            full = node if "." in node else (f"{namespace}.{node}" if namespace else node)
            found = self.types.get(full, self.types.get(node))
            if found is None:
                raise Unsupported(f"named type {node!r} used before its definition")
            return found
        if isinstance(node, dict) and node.get("type") in _SCALARS and "logicalType" not in node:
            return node["type"]
        return node


class _Compiler:
    def __init__(self) -> None:
        self.code: list[int] = []
        self.slots = 0
        self.depth = 0
        self.max_depth = 0
        self.writer_names = _Names()
        self.reader_names = _Names()
        self.open_records: list[str] = []
        self.targets: set[int] = set()

    # emitting ---------------------------------------------------------------------------
    def emit(self, op: int, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> int:
        """Append a row; a fixed-size skip right after another is merged into it (ZTF's
        candidate has runs of non-null floats) unless a jump lands between them."""
        if op == SKIP_N and self.code and self.code[-5] == SKIP_N and self.here() not in self.targets:
            self.code[-4] += a
            return self.here() - 1
        self.code.extend((op, a, b, c, d))
        return len(self.code) // 5 - 1

    def patch(self, row: int, column: int, value: int) -> None:
        self.code[row * 5 + column] = value
        self.targets.add(value)

    def here(self) -> int:
        return len(self.code) // 5

    def new_slots(self, count: int = 1) -> int:
        first = self.slots
        self.slots += count
        return first

    def nest(self, step: int) -> None:
        self.depth += step
        self.max_depth = max(self.max_depth, self.depth)

    # the whole schema -----------------------------------------------------------------
    def root(self, writer: dict[str, Any], reader: dict[str, Any]) -> Table:
        self.emit(ROW, -1)
        self.nest(1)
        table = self.record(writer, reader, "", "", in_array=False)
        self.nest(-1)
        self.emit(END_ROW)
        self.emit(HALT)
        return table

    def record(self, writer: dict[str, Any], reader: dict[str, Any], wns: str, rns: str, in_array: bool) -> Table:
        """Code for a kept record's fields; the row is already open."""
        wspace = self.writer_names.register(writer, wns)
        rspace = self.reader_names.register(reader, rns)
        name = f"{wspace}.{writer['name']}"
        if name in self.open_records:
            raise Unsupported(f"recursive record {name}")
        self.open_records.append(name)
        kept = {f["name"]: f for f in reader["fields"]}
        written = {f["name"] for f in writer["fields"]}
        if not set(kept) <= written:
            raise Unsupported("the reader asks for fields the writer lacks (defaults)")
        fields = []
        for wfield in writer["fields"]:
            rfield = kept.get(wfield["name"])
            if rfield is None:
                self.skip(wfield["type"], wspace)
            else:
                fields.append(self.kept(wfield["name"], wfield["type"], rfield["type"], wspace, rspace, in_array))
        self.open_records.pop()
        order = [f["name"] for f in reader["fields"]]
        return Table(tuple(sorted(fields, key=lambda f: order.index(f.name))))

    # skipped values -------------------------------------------------------------------
    def skip(self, node: Any, namespace: str) -> None:
        node = self.writer_names.resolve(node, namespace)
        if isinstance(node, list):
            simple = [self.simple_skip(branch, namespace) for branch in node]
            if all(step is not None for step in simple):  # one row instead of UNION + JUMPs
                self.emit(SKIP_UNION, len(node))
                for op, size in simple:
                    self.code.extend((op, size, 0, 0, 0))
                self.targets.add(self.here())  # a branch row is data: never merge a skip into it
                return
            self.union([lambda branch=branch: self.skip(branch, namespace) for branch in node], -1)
            return
        kind = node if isinstance(node, str) else node.get("type")
        if isinstance(kind, (dict, list)):  # {"type": {...}}: a wrapped type
            self.skip(kind, namespace)
        elif kind == "null":
            pass
        elif kind in ("int", "long", "enum"):
            if kind == "enum":
                self.writer_names.register(node, namespace)
            self.emit(SKIP_VARINT)
        elif kind in PRIMITIVE_SIZES:
            self.emit(SKIP_N, PRIMITIVE_SIZES[kind])
        elif kind in ("string", "bytes"):
            self.emit(SKIP_BYTES)
        elif kind == "fixed":
            self.writer_names.register(node, namespace)
            self.emit(SKIP_N, int(node["size"]))
        elif kind == "record":
            space = self.writer_names.register(node, namespace)
            name = f"{space}.{node['name']}"
            if name in self.open_records:
                raise Unsupported(f"recursive record {name}")
            self.open_records.append(name)
            for fld in node["fields"]:
                self.skip(fld["type"], space)
            self.open_records.pop()
        elif kind == "array":
            self.loop(lambda: self.skip(node["items"], namespace), node["items"], namespace, -1, -1, shortcut=True)
        elif kind == "map":
            self.loop(lambda: (self.emit(SKIP_BYTES), self.skip(node["values"], namespace)), "string", namespace,
                      -1, -1, shortcut=True)
        else:
            raise Unsupported(f"Avro type {kind!r}")

    def simple_skip(self, node: Any, namespace: str) -> tuple[int, int] | None:
        """(op, size) that skips a value of this type in one step; HALT stands for null."""
        node = self.writer_names.resolve(node, namespace)
        kind = node if isinstance(node, str) else (node.get("type") if isinstance(node, dict) else None)
        if kind == "null":
            return HALT, 0
        if kind in ("int", "long"):
            return SKIP_VARINT, 0
        if kind in PRIMITIVE_SIZES:
            return SKIP_N, PRIMITIVE_SIZES[kind]
        if kind in ("string", "bytes"):
            return SKIP_BYTES, 0
        return None

    def union(self, branches: list, branch_slot: int) -> None:
        """UNION, a JUMP per branch to that branch's code, and each branch's code."""
        self.emit(UNION, len(branches), branch_slot)
        table = [self.emit(JUMP) for _ in branches]
        exits = []
        for row, body in zip(table, branches):
            self.patch(row, 1, self.here())
            body()
            exits.append(self.emit(JUMP))
        for row in exits:
            self.patch(row, 1, self.here())

    def loop(self, body, items: Any, namespace: str, first_slot: int, count_slot: int, shortcut: bool) -> None:
        """ARRAY ... NEXT around one item's code (arrays and maps share block framing)."""
        if self.min_size(items, namespace, set()) == 0:
            raise Unsupported("array items that may take zero bytes: the length is unbounded")
        start = self.emit(ARRAY, first_slot, count_slot, 0, int(shortcut))
        self.nest(1)
        body()
        self.nest(-1)
        self.patch(start, 3, self.emit(NEXT))

    def min_size(self, node: Any, namespace: str, seen: set[str]) -> int:
        """The fewest bytes a value of this type can take (only zero matters)."""
        node = self.writer_names.resolve(node, namespace)
        if isinstance(node, list):
            return 1
        kind = node if isinstance(node, str) else node.get("type")
        if kind == "null":
            return 0
        if kind == "record":
            if node["name"] in seen:
                return 1
            return sum(self.min_size(f["type"], namespace, seen | {node["name"]}) for f in node["fields"])
        if kind == "fixed":
            return int(node["size"])
        return 1

    # kept values ----------------------------------------------------------------------
    def kept(self, name: str, wtype: Any, rtype: Any, wns: str, rns: str, in_array: bool) -> Field:
        """Code reading one kept field; returns how to rebuild its value."""
        wtype = self.writer_names.resolve(wtype, wns)
        rtype = self.reader_names.resolve(rtype, rns)
        wbranches = wtype if isinstance(wtype, list) else [wtype]
        rbranches = rtype if isinstance(rtype, list) else [rtype]
        if len(wbranches) != len(rbranches):
            raise Unsupported(f"field {name}: the reader's union differs from the writer's")
        resolved = [self.writer_names.resolve(b, wns) for b in wbranches]
        values = [i for i, b in enumerate(resolved) if b != "null"]
        if len(values) > 1:
            raise Unsupported(f"field {name}: a union of several non-null types")
        null_branch = next((i for i, b in enumerate(resolved) if b == "null"), -1)
        if not values:
            return self.branches(name, "null", wtype, null_branch, lambda: Field(name, "null", -1))
        index = values[0]
        wvalue = resolved[index]
        rvalue = self.reader_names.resolve(rbranches[index], rns)
        kind = wvalue if isinstance(wvalue, str) else wvalue.get("type")
        if isinstance(kind, str) and kind in _READ_OPS:
            if not isinstance(wvalue, str):
                raise Unsupported(f"field {name}: logical type {wvalue.get('logicalType')!r}")
            if rvalue != wvalue:
                raise Unsupported(f"field {name}: reader type {rvalue!r} differs from writer type {wvalue!r}")
            return self.branches(name, kind, wtype, null_branch, lambda: self.scalar(name, kind))
        if kind == "record":
            if in_array:
                raise Unsupported(f"field {name}: a record inside an array item")
            return self.branches(name, "record", wtype, null_branch,
                                 lambda: self.nested(name, wvalue, rvalue, wns, rns))
        if kind == "array":
            if in_array:
                raise Unsupported(f"field {name}: an array inside an array item")
            return self.branches(name, "array", wtype, null_branch,
                                 lambda: self.array(name, wvalue, rvalue, wns, rns))
        raise Unsupported(f"field {name}: kept values of type {kind!r}")

    def branches(self, name: str, kind: str, wtype: Any, null_branch: int, value) -> Field:
        """The value's code, inside a UNION when the writer type is one."""
        if not isinstance(wtype, list):
            return value()
        branch_slot = self.new_slots()
        made: list[Field] = []
        bodies = [(lambda: None) if i == null_branch else (lambda: made.append(value())) for i in range(len(wtype))]
        self.union(bodies, branch_slot)
        inner = made[0] if made else Field(name, kind, -1)
        return Field(name, inner.kind, inner.slot, branch_slot, null_branch, inner.table)

    def scalar(self, name: str, kind: str) -> Field:
        slot = self.new_slots(2 if _READ_OPS[kind] == READ_BYTES else 1)
        self.emit(_READ_OPS[kind], slot)
        return Field(name, kind, slot)

    def nested(self, name: str, writer: dict, reader: dict, wns: str, rns: str) -> Field:
        slot = self.new_slots()
        self.emit(ROW, slot)
        self.nest(1)
        table = self.record(writer, reader, wns, rns, in_array=False)
        self.nest(-1)
        self.emit(END_ROW)
        return Field(name, "record", slot, table=table)

    def array(self, name: str, writer: dict, reader: dict, wns: str, rns: str) -> Field:
        """An array of records (or of a union of a record and null), one row per item."""
        witems = self.writer_names.resolve(writer["items"], wns)
        ritems = self.reader_names.resolve(reader["items"], rns)
        wbranches = witems if isinstance(witems, list) else [witems]
        rbranches = ritems if isinstance(ritems, list) else [ritems]
        resolved = [self.writer_names.resolve(b, wns) for b in wbranches]
        records = [i for i, b in enumerate(resolved) if isinstance(b, dict) and b.get("type") == "record"]
        nulls = [i for i, b in enumerate(resolved) if b == "null"]
        if len(records) != 1 or len(records) + len(nulls) != len(resolved) or len(rbranches) != len(resolved):
            raise Unsupported(f"field {name}: a kept array of non-records")
        index = records[0]
        witem, ritem = resolved[index], self.reader_names.resolve(rbranches[index], rns)
        union = isinstance(witems, list)
        slot = self.new_slots(2)
        branch_slot = self.new_slots() if union else -1
        made: list[Table] = []

        def body() -> None:
            made.append(self.record(witem, ritem, wns, rns, in_array=True))

        def item() -> None:
            self.emit(ROW, -1)
            self.nest(1)
            if union:
                self.union([body if i == index else (lambda: None) for i in range(len(resolved))], branch_slot)
            else:
                body()
            self.nest(-1)
            self.emit(END_ROW)

        self.loop(item, witems, wns, slot, slot + 1, shortcut=False)
        table = Table(made[0].fields, branch_slot, nulls[0] if nulls else -1)
        return Field(name, "array", slot, table=table)
