"""Crash-safe file writes shared by every store of the runtime (stdlib only).

A write goes to a unique temp file in the same directory, is fsync'ed, renamed over the target
and the directory fsync'ed: after a crash a reader finds the old file or the new, never half.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | Path, data: object, mode: int = 0o644) -> None:
    """Replace `path` with `data` as JSON (created with `mode`, less the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
