"""Fields of /proc/*/mountinfo and /proc/mounts. Standard library only (the init helper uses it)."""

from __future__ import annotations

import re

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Undo the kernel's octal escapes in a path field (a space is written as \\040)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)
