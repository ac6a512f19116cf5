"""What each probe needs from the kernel, and the plan for loading it on this one.

A ProbeSpec is plain data: its bpf/ source file, the tracepoint hooks (required or
optional), feature macros that depend on tracepoint fields, and its event buffers. plan()
checks them against the tracepoint formats found in tracefs and says, per probe, whether it
is up, why not, which hooks to attach and which -D flags to compile with. Plan, then apply:
the manager only executes the plan, and the plan is unit-tested without a kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from observe_rt.probes.features import TracepointFormat

# Index of each probe in the lost_events per-CPU array (bpf/common.h PROBE_*).
PROBE_IDS = {"syscalls": 0, "oom": 1, "tcp": 2, "process": 3}


@dataclass(frozen=True)
class Hook:
    """A BPF function in the probe's source attached to one tracepoint."""

    tracepoint: str  # "category:event"
    function: str
    fields: tuple[str, ...] = ()  # arguments the function reads unconditionally
    required: bool = True
    raw: bool = False  # a raw tracepoint: TP_PROTO arguments, no trace record (no struct)


@dataclass(frozen=True)
class Feature:
    """A -D macro set when `tracepoint` has all of `fields` (kernels add fields over time)."""

    define: str
    tracepoint: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Buffer:
    """An event output map and the decoder of its records (bytes -> event or None)."""

    map_name: str
    decode: Callable[[bytes, int], object]  # (record, wall-minus-monotonic ns offset)
    perf_pages: int = 64


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    source: str  # file name in bpf/
    hooks: tuple[Hook, ...]
    features: tuple[Feature, ...] = ()
    buffers: tuple[Buffer, ...] = ()
    defines: tuple[str, ...] = ()  # always set, e.g. sizes

    @property
    def tracepoints(self) -> tuple[str, ...]:
        names = [h.tracepoint for h in self.hooks] + [f.tracepoint for f in self.features]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ProbePlan:
    """The outcome of checking one probe against the kernel's tracepoints."""

    name: str
    up: bool
    reason: str = ""
    hooks: tuple[Hook, ...] = ()
    defines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # optional parts left out, and why
    formats: tuple[TracepointFormat, ...] = field(default=(), repr=False)


def c_string(raw: bytes) -> str:
    """A NUL-terminated char array from a BPF record, as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def plan(spec: ProbeSpec, formats: Mapping[str, TracepointFormat | None]) -> ProbePlan:
    """Decide whether `spec` can load with these tracepoint formats (None = missing)."""
    hooks, notes = [], []
    for hook in spec.hooks:
        problem = _hook_problem(hook, formats.get(hook.tracepoint))
        if problem and hook.required:
            return ProbePlan(spec.name, False, problem)
        if problem:
            notes.append(f"{hook.function} off: {problem}")
        else:
            hooks.append(hook)
    defines = list(spec.defines)
    for feature in spec.features:
        fmt = formats.get(feature.tracepoint)
        if fmt is not None and fmt.has(*feature.fields):
            defines.append(feature.define)
        else:
            notes.append(f"{feature.define} off: {feature.tracepoint} lacks {feature.fields}")
    used = {h.tracepoint for h in hooks if not h.raw}
    found = tuple(f for name, f in formats.items() if name in used and f is not None)
    return ProbePlan(spec.name, True, "", tuple(hooks), tuple(defines), tuple(notes), found)


def _hook_problem(hook: Hook, fmt: TracepointFormat | None) -> str:
    if fmt is None:
        return f"tracepoint {hook.tracepoint} not found in tracefs"
    missing = [name for name in hook.fields if not fmt.has(name)]
    if missing:
        return f"tracepoint {hook.tracepoint} lacks field(s) {', '.join(missing)}"
    return ""
