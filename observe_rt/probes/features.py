"""Tracepoint formats from tracefs, and the C structs the BPF programs read them through.

bcc's TRACEPOINT_PROBE builds `struct tracepoint__<cat>__<event>` from the same format files,
but it defines the struct again for every function using it (two probes on one tracepoint do
not compile) and copies type names verbatim (an enum the substitute kernel headers lack, such
as 6.18's tcp_send_reset `enum sk_rst_reason`, does not compile either). So we generate
`struct tp_<cat>__<event>` ourselves, once, typing every field by its size and signedness,
which is all the program needs: offsets come from the running kernel, not from the headers.
Each field's offset is checked at compile time with _Static_assert.

Pure functions over text and a tracefs root path, so they are unit-tested on fixtures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")

_FIELD = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>\d+);"
)
_DECL = re.compile(r"(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<count>\w*)\])?\s*$")
_INT_TYPES = {1: "8", 2: "16", 4: "32", 8: "64"}


@dataclass(frozen=True)
class TpField:
    """One field of a tracepoint record, as the format file describes it."""

    name: str
    decl: str
    offset: int
    size: int
    signed: bool
    count: int | None = None  # array length, None for scalars
    data_loc: bool = False  # __data_loc: a u32 (length << 16 | offset) to a variable part

    def c_declaration(self) -> str:
        if self.data_loc:
            return f"u32 data_loc_{self.name};"
        if self.count:
            element = self.size // self.count
            if "char" in self.decl and element == 1:
                return f"char {self.name}[{self.count}];"
            return f"{_int_type(element, self.signed)} {self.name}[{self.count}];"
        if self.size in _INT_TYPES:
            return f"{_int_type(self.size, self.signed)} {self.name};"
        return f"u8 {self.name}[{self.size}];"


def _int_type(size: int, signed: bool) -> str:
    if size not in _INT_TYPES:
        return "u8"
    return ("s" if signed else "u") + _INT_TYPES[size]


@dataclass(frozen=True)
class TracepointFormat:
    category: str
    event: str
    fields: tuple[TpField, ...]

    @property
    def name(self) -> str:
        return f"{self.category}:{self.event}"

    @property
    def struct_name(self) -> str:
        return f"tp_{self.category}__{self.event}"

    @property
    def have_define(self) -> str:
        """The macro the loader defines when this struct is in the program."""
        return f"HAVE_TP_{self.category}__{self.event}"

    def has(self, *names: str) -> bool:
        present = {f.name for f in self.fields}
        return all(name in present for name in names)

    def c_struct(self) -> str:
        """The struct definition, explicit padding where the format leaves gaps."""
        lines = [f"struct {self.struct_name} {{"]
        position = 0
        for index, field in enumerate(sorted(self.fields, key=lambda f: f.offset)):
            if field.offset > position:
                lines.append(f"    u8 __pad{index}[{field.offset - position}];")
            lines.append(f"    {field.c_declaration()}")
            position = field.offset + field.size
        lines.append("};")
        lines.append(f"#define {self.have_define} 1")
        for field in self.fields:
            member = f"data_loc_{field.name}" if field.data_loc else field.name
            lines.append(
                f"_Static_assert(__builtin_offsetof(struct {self.struct_name}, {member}) == "
                f'{field.offset}, "{self.name} {field.name}");'
            )
        return "\n".join(lines)


def parse_field(text: str) -> TpField | None:
    match = _FIELD.search(text)
    if not match:
        return None
    decl = " ".join(match["decl"].split())
    data_loc = decl.startswith("__data_loc")
    if data_loc:
        decl = decl.replace("[]", "")
    name_match = _DECL.search(decl)
    if not name_match:
        return None
    count_text = name_match["count"]
    count = int(count_text) if count_text and count_text.isdigit() else None
    return TpField(
        name=name_match["name"],
        decl=decl,
        offset=int(match["offset"]),
        size=int(match["size"]),
        signed=match["signed"] == "1",
        count=count,
        data_loc=data_loc,
    )


def parse_format(category: str, event: str, text: str) -> TracepointFormat:
    fields = tuple(f for f in map(parse_field, text.splitlines()) if f is not None)
    return TracepointFormat(category, event, fields)


def read_format(tracepoint: str, tracefs: Path = TRACEFS) -> TracepointFormat | None:
    """The format of `category:event`, or None when this kernel lacks the tracepoint."""
    category, _, event = tracepoint.partition(":")
    path = Path(tracefs) / "events" / category / event / "format"
    try:
        text = path.read_text()
    except OSError:
        return None
    return parse_format(category, event, text)
