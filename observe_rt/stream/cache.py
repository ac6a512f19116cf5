"""One-time tokens for streaming requests, as the kubelet's streaming server keeps them.

The Exec/Attach/PortForward RPC stores its (validated) request under a random token and
answers a URL that carries it; the streaming server takes the request out when the client
connects. A token works once and expires after `ttl` seconds; the cache is bounded, so a
client that asks for URLs and never uses them cannot grow it without limit.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

DEFAULT_TTL = 60.0
MAX_ENTRIES = 1000


class TokenCache:
    def __init__(self, ttl: float = DEFAULT_TTL, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request: Any) -> str:
        token = secrets.token_urlsafe(12)
        with self._lock:
            self._expire()
            while len(self._items) >= self.max_entries:
                self._items.popitem(last=False)  # the oldest goes first
            self._items[token] = (self.clock() + self.ttl, request)
        return token

    def pop(self, token: str) -> Any | None:
        """The request for `token`, once; None when unknown, used or expired."""
        with self._lock:
            self._expire()
            entry = self._items.pop(token, None)
        return None if entry is None else entry[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        now = self.clock()
        while self._items:
            token, (deadline, _) = next(iter(self._items.items()))
            if deadline > now:
                break
            del self._items[token]
