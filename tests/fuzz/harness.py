"""What every fuzz target shares: the atheris entry point, its corpus directories, and builders
that turn fuzz bytes into structured input (JSON documents with confused types).

A target is a module in this directory with a `one_input(data: bytes)` function that calls the
code under test and catches the errors that code documents (observe_rt.errors.*, or ValueError
where the function says so). Anything else escaping it is a crash: atheris prints the
traceback and saves the input. Run one target as

    python -m tests.fuzz.fuzz_reference -max_total_time=60

(run.py runs them all and sums up). The inputs under corpus/<target>/ are replayed first on
every run: that is where crashes, once fixed, stay as regression fixtures. New inputs the fuzzer
finds go into a scratch directory, never into the checked-in corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CORPUS_ROOT = Path(__file__).parent / "corpus"
# Modules whose branches guide the fuzzer; the rest of Python is not instrumented.
INSTRUMENTED = ["observe_rt"]


def instrumented(*extra: str) -> contextlib.AbstractContextManager:
    """Wrap the target's imports of the code under test so atheris sees their coverage."""
    try:
        import atheris
    except ImportError:  # imported only to read its seeds (e.g. by a test): no coverage needed
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=[*INSTRUMENTED, *extra])


def scratch(prefix: str) -> Path:
    """A fresh directory for a target's files, under run.py's work directory when it runs
    the target (it removes it afterwards; libFuzzer's exit skips Python's clean-up)."""
    parent = os.environ.get("OBSERVE_RT_FUZZ_WORK") or None
    if parent:
        os.makedirs(parent, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"observe-rt-fuzz-{prefix}-", dir=parent))


def provider(data: bytes):
    import atheris

    return atheris.FuzzedDataProvider(data)


def main(target: str, one_input: Callable[[bytes], None], seeds: Iterable[bytes] = ()) -> None:
    """libFuzzer's command line, with the target's scratch and checked-in corpus added."""
    import atheris

    logging.disable(logging.CRITICAL)  # warnings about hostile input would flood the output
    corpus = scratch(f"{target}-corpus")
    for seed in seeds:
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    fixtures = CORPUS_ROOT / target
    corpora = [str(corpus)] + ([str(fixtures)] if fixtures.is_dir() else [])
    flags = [arg for arg in sys.argv[1:] if arg.startswith("-")]
    atheris.Setup([sys.argv[0], *flags, *corpora], one_input)
    atheris.Fuzz()


# -- structured input ----------------------------------------------------------------------

_ODD_STRINGS = ["", "/", "..", "../../etc", "/etc/passwd", "a" * 300, "\x00", "é", "-1", "1e999"]


def any_value(fdp, depth: int = 0) -> Any:
    """A JSON value of any type: the shapes a hostile document puts where others are expected."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-(2**63), 2**64)
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return fdp.PickValueInList(_ODD_STRINGS)
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind in (6, 7):
        return [any_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = [fdp.ConsumeUnicodeNoSurrogates(8) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {key: any_value(fdp, depth + 1) for key in keys}


def mutate_json(base: Any, fdp, max_changes: int = 4) -> Any:
    """A deep copy of `base` with a few values (found by a random walk) replaced or removed."""
    doc = json.loads(json.dumps(base))
    for _ in range(fdp.ConsumeIntInRange(0, max_changes)):
        doc = _mutate_at(doc, fdp)
    return doc


def _mutate_at(node: Any, fdp) -> Any:
    if not isinstance(node, dict | list) or not node or fdp.ConsumeIntInRange(0, 3) == 0:
        return any_value(fdp)
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    key = fdp.PickValueInList(keys)
    action = fdp.ConsumeIntInRange(0, 5)
    if action == 0:
        del node[key]
    elif action == 1 and isinstance(node, dict):
        node[fdp.ConsumeUnicodeNoSurrogates(10)] = any_value(fdp)
    else:
        node[key] = _mutate_at(node[key], fdp)
    return node


def json_input(data: bytes, base: Any) -> Any:
    """Either the bytes parsed as JSON (first byte odd), or `base` with typed mutations."""
    if data[:1] and data[0] & 1:
        try:
            return json.loads(data[1:])
        except (ValueError, RecursionError):
            return None
    return mutate_json(base, provider(data[1:]))
