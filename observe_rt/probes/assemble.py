"""Join the planned probes into one bcc program text, with its compile flags.

One program, so that bpf/common.h's maps (the tracked-containers map above all) exist once
and every probe shares them. Layout of the text:

    generated struct tp_<cat>__<event> for every tracepoint a planned hook uses
    bpf/common.h
    bpf/<probe>.c for each planned probe, its `#include "common.h"` line dropped

bcc rewrites map calls (tracked.lookup(...)) only in its main file, which is why the files
are pasted in rather than #included; #line directives keep compiler messages pointing at
the real file and line. Pure text work over a bpf/ directory, unit-tested on the real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from observe_rt.probes.features import TracepointFormat
from observe_rt.probes.spec import ProbePlan, ProbeSpec

COMMON = "common.h"
INCLUDE_COMMON = '#include "common.h"'


def structs(formats: Iterable[TracepointFormat]) -> str:
    unique = {fmt.name: fmt for fmt in formats}
    return "\n\n".join(unique[name].c_struct() for name in sorted(unique))


def _source(bpf_dir: Path, name: str) -> str:
    body = (Path(bpf_dir) / name).read_text()
    body = body.replace(INCLUDE_COMMON, f"/* {INCLUDE_COMMON}: pasted once above */")
    return f'#line 1 "{name}"\n{body}'


def program_text(pairs: Iterable[tuple[ProbeSpec, ProbePlan]], bpf_dir: Path) -> str:
    pairs = [(spec, plan) for spec, plan in pairs if plan.up]
    formats = [fmt for _, plan in pairs for fmt in plan.formats]
    parts = [
        "/* observe-rt probes, assembled by observe_rt/probes/assemble.py */",
        structs(formats),
        _source(bpf_dir, COMMON),
    ]
    parts += [_source(bpf_dir, spec.source) for spec, _ in pairs]
    return "\n\n".join(parts) + "\n"


def cflags(
    plans: Iterable[ProbePlan], ringbuf: bool, bpf_dir: Path, sizes: dict[str, int],
    pin_dir: Path | None = None,
) -> list[str]:  # fmt: skip
    """-D flags: the plans' feature macros, USE_RINGBUF, map sizes and PIN_DIR."""
    flags = [f"-I{bpf_dir}"]
    if ringbuf:
        flags.append("-DUSE_RINGBUF")
    if pin_dir is not None:
        flags.append(f'-DPIN_DIR="{pin_dir}"')  # one argv item: clang sees a string literal
    flags += [f"-D{name}={value}" for name, value in sorted(sizes.items())]
    for plan in plans:
        if plan.up:
            flags += [f"-D{define}" for define in plan.defines]
    return list(dict.fromkeys(flags))
