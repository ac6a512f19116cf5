"""The only module that imports bcc: compile, attach, map access and event buffers.

Everything above it deals in bytes: maps are read as (key bytes, value bytes) pairs and
event records arrive as bytes, so the decoders in syscalls.py, oom.py, tcp.py and process.py
are plain `struct` code, unit-tested without a kernel. bcc is Debian's python3-bpfcc, imported
lazily so that a host without it (or without privileges) still runs containers.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_MAP_CREATE = 0
_BPF_MAP_TYPE_RINGBUF = 27


class BccUnavailable(RuntimeError):
    """bcc cannot be imported or cannot compile/load here; the message says why."""


def import_bcc():
    """The bcc module, or BccUnavailable naming the cause."""
    try:
        import bcc  # Debian's python3-bpfcc (never the unrelated PyPI `bcc`)
    except Exception as exc:  # ImportError, or OSError from a broken libbcc
        raise BccUnavailable(f"cannot import bcc: {type(exc).__name__}: {exc}") from exc
    return bcc


def ringbuf_supported() -> bool:
    """Can this kernel create a BPF ring buffer map (Linux 5.8+)? Probed with bpf()."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, zeroed
    # map_type, key_size, value_size, max_entries (one page, a power of two)
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(_BPF_MAP_TYPE_RINGBUF, 0, 0, 4096), 16)
    fd = libc.syscall(number, _BPF_MAP_CREATE, attr, ctypes.sizeof(attr))
    if fd < 0:
        return False
    os.close(fd)
    return True


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _raw(ctype, value) -> bytes:
    # Indexing a ctypes array of a simple type (u64 keys in a batch) gives a plain int.
    return bytes(ctype(value)) if isinstance(value, int) else bytes(value)


class MapView:
    """Byte-level access to one BPF map. Per-CPU values come as all CPUs' bytes joined."""

    def __init__(self, table) -> None:
        self._table = table
        self.key_size = ctypes.sizeof(table.Key)
        self.value_size = ctypes.sizeof(getattr(table, "sLeaf", table.Leaf))

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every entry, by BPF_MAP_LOOKUP_BATCH when the kernel has it (7x faster than one
        lookup per key on 8000 entries), else key by key."""
        try:
            pairs = list(self._table.items_lookup_batch())
        except Exception:  # bcc raises bare Exception when the kernel lacks batch ops
            pairs = self._table.items()
        key_type, value_type = self._table.Key, self._table.Leaf
        return [(_raw(key_type, key), _raw(value_type, value)) for key, value in pairs]

    def __iter__(self) -> Iterator[bytes]:
        """The keys, snapshot first: deleting while walking a BPF hash can skip keys."""
        return iter([key for key, _ in self.items()])

    def get(self, key: bytes) -> bytes | None:
        try:
            return bytes(self._table[self._key(key)])
        except KeyError:
            return None

    def set(self, key: bytes, value: bytes) -> None:
        self._table[self._key(key)] = self._table.Leaf.from_buffer_copy(value)

    def delete(self, key: bytes) -> bool:
        """True when this call removed the key (False: it was already gone)."""
        try:
            del self._table[self._key(key)]
        except KeyError:
            return False
        return True

    def _key(self, key: bytes):
        return self._table.Key.from_buffer_copy(key)


class Program:
    """One compiled bcc program: attach tracepoints, reach maps, open and poll event buffers."""

    def __init__(self, text: str, cflags: list[str]) -> None:
        bcc = import_bcc()
        try:
            self._bpf = bcc.BPF(text=text.encode(), cflags=cflags)
        except Exception as exc:
            raise BccUnavailable(f"BPF compile/load failed: {first_line(exc)}") from exc
        self._bcc = bcc
        self._attached: list[tuple[str, int, bool]] = []  # (function, fd, raw)
        self._ringbuf = False
        self._perf = False

    def attach(self, tracepoint: str, function: str, raw: bool = False) -> None:
        """Attach `function` to `category:event` (as a raw tracepoint when `raw`).

        Done through libbcc directly, not BPF.attach_tracepoint: bcc keeps one perf event fd
        per tracepoint name, so a second program on the same tracepoint (oom and process both
        hook sched_process_exit) would overwrite the first fd and leave it attached forever.
        """
        lib = self._bcc.libbcc.lib
        category, _, event = tracepoint.partition(":")
        if raw:
            fn = self._bpf.load_func(function.encode(), self._bcc.BPF.RAW_TRACEPOINT)
            fd = lib.bpf_attach_raw_tracepoint(fn.fd, event.encode())
        else:
            fn = self._bpf.load_func(function.encode(), self._bcc.BPF.TRACEPOINT)
            fd = lib.bpf_attach_tracepoint(fn.fd, category.encode(), event.encode())
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"cannot attach {function} to {tracepoint}")
        self._attached.append((function, fd, raw))

    def detach(self, functions: Iterable[str]) -> None:
        """Detach these functions from every tracepoint they were attached to."""
        names = set(functions)
        for attached in [a for a in self._attached if a[0] in names]:
            _, fd, raw = attached
            if raw:
                os.close(fd)  # a raw tracepoint link is a plain fd
            else:
                self._bcc.libbcc.lib.bpf_close_perf_event_fd(fd)
            self._attached.remove(attached)

    def map(self, name: str) -> MapView:
        # BPF[name] caches the table object (get_table would build a new one each call).
        return MapView(self._bpf[name.encode()])

    def open_events(
        self, name: str, handle: Callable[[bytes], None], ringbuf: bool, perf_pages: int = 64
    ) -> None:
        """Deliver each record of buffer `name` to handle(bytes) during poll()."""
        # The cached table holds the ctypes callback alive; were it collected, the next poll
        # would call freed memory.
        table = self._bpf[name.encode()]
        if ringbuf:
            table.open_ring_buffer(lambda _ctx, data, size: handle(ctypes.string_at(data, size)))
            self._ringbuf = True
            return
        # perf records are padded to 8 bytes; decoders read a fixed prefix, so that is fine.
        # Drops are counted in lost_events by the program itself, so perf's own lost
        # callback is only there to keep bcc from printing to stderr.
        table.open_perf_buffer(
            lambda _cpu, data, size: handle(ctypes.string_at(data, size)),
            page_cnt=perf_pages,
            lost_cb=lambda _lost: None,
        )
        self._perf = True

    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for records and run their handlers (0: do not wait)."""
        if not (self._ringbuf or self._perf):
            time.sleep(max(timeout_ms, 0) / 1000)  # nothing can arrive: do not make callers spin
        if self._ringbuf:
            if timeout_ms <= 0:
                self._bpf.ring_buffer_consume()
            else:
                self._bpf.ring_buffer_poll(timeout_ms)
        if self._perf:
            self._bpf.perf_buffer_poll(max(timeout_ms, 0))

    def close(self) -> None:
        """Detach every tracepoint and free the maps and buffers."""
        self.detach([attached[0] for attached in self._attached])
        self._bpf.cleanup()
