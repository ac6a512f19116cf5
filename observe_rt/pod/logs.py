"""Container logs in the CRI format: written by the pod shim, read by `observe-rt logs`.

One record per line of the file, four fields split by single spaces:

    2024-05-01T12:00:00.123456789Z stdout F hello world
    <timestamp, RFC3339 nanoseconds>  <stream>  <tag>  <content>

- timestamp: RFC3339 with nanoseconds; we write UTC with all nine digits and `Z`. Readers
  (the kubelet, this module) also accept fewer digits and a `+hh:mm` offset.
- stream: `stdout` or `stderr`.
- tag: `F` (full) ends a line; `P` (partial) says the line goes on in the next record of the
  same stream. Tags may grow `:`-separated extras; only the first one counts.

Writer rules, those of containerd's CRI logger (internal/cri/io/logger.go):
- a newline ends a line; the newline and a `\\r` right before it are not content;
- a line longer than `max_line` bytes (16 KiB by default) is cut into P records of exactly
  `max_line` bytes, then the rest as F;
- bytes without a newline wait in a per-stream buffer (at most `max_line` of them). When the
  stream ends they are written as a last P record: containerd does the same, so a reader
  treats a P record left open at the end of the log as a complete, unterminated line;
- everything is bytes: a UTF-8 character cut by a read chunk or by a split stays cut in the
  file and is whole again once the reader joins the parts.

Log rotation (kubelet, logrotate): the file is renamed, then ReopenContainerLog makes the
writer open a fresh file at the same path; a following reader notices the new inode.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

log = logging.getLogger("observe_rt.pod.logs")

DEFAULT_MAX_LINE = 16 * 1024
STREAMS = ("stdout", "stderr")
TAG_FULL = "F"
TAG_PARTIAL = "P"
DIR_MODE = 0o755
FILE_MODE = 0o640

_CR, _LF = 0x0D, 0x0A
_NS = 1_000_000_000
_TIMESTAMP = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)


def format_timestamp(ns: int) -> str:
    """Nanoseconds since the epoch as RFC3339 in UTC with nine fraction digits."""
    seconds, nanos = divmod(ns, _NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def parse_timestamp(text: str) -> int:
    """An RFC3339(Nano) timestamp as nanoseconds since the epoch; ValueError if malformed."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC3339 timestamp: {text!r}")
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    moment = datetime.datetime.fromisoformat(base + zone)
    nanos = int((fraction or "").ljust(9, "0"))
    return int(moment.timestamp()) * _NS + nanos


# --- writing ---------------------------------------------------------------------------------


def _open_log_file(path: str) -> int:
    """Open `path` for appending, creating it (0640) and its parent directory (0755)."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, mode=DIR_MODE, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags)
    os.fchmod(fd, FILE_MODE)  # the umask must not decide who may read container logs
    return fd


def _cut_records(pending: bytearray, max_line: int) -> list[tuple[str, bytes]]:
    """Take every record that `pending` already determines; leave the unfinished rest."""
    records: list[tuple[str, bytes]] = []
    start = 0
    while True:
        newline = pending.find(b"\n", start)
        end = newline if newline >= 0 else len(pending)
        content_end = end
        if content_end > start and pending[content_end - 1] == _CR:
            content_end -= 1  # CRLF ends a line; a trailing CR may be the start of one
        while content_end - start > max_line:
            records.append((TAG_PARTIAL, bytes(pending[start : start + max_line])))
            start += max_line
        if newline < 0:
            break
        records.append((TAG_FULL, bytes(pending[start:content_end])))
        start = newline + 1
    del pending[:start]
    return records


class CriLogWriter:
    """Write a container's stdout and stderr chunks into one CRI-format log file.

    Thread-safe: every method holds one lock, and each write() lands in the file with a
    single append, so records of the two streams never interleave mid-record.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_line: int = DEFAULT_MAX_LINE,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if max_line < 1:
            raise ValueError(f"max_line must be at least 1, not {max_line}")
        self.path = os.fspath(path)
        self.max_line = max_line
        self.write_errors = 0  # records lost to a failing disk; the container keeps running
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = {stream: bytearray() for stream in STREAMS}
        self._fd: int | None = _open_log_file(self.path)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, stream: str, data: bytes) -> None:
        """Add a chunk of `stream`'s output; complete lines reach the file at once."""
        with self._lock:
            pending = self._pending_of(stream)
            pending += data
            self._append(stream, _cut_records(pending, self.max_line))

    def flush_stream(self, stream: str) -> None:
        """`stream` ended (EOF): write its unterminated rest, if any, as a P record."""
        with self._lock:
            self._flush(stream)

    def flush(self) -> None:
        """Both streams ended: write what each holds without a newline as P records."""
        with self._lock:
            for stream in STREAMS:
                self._flush(stream)

    def reopen(self) -> None:
        """Open the file at `path` afresh (CRI ReopenContainerLog, after a rename).

        The new file is opened before the old one is closed, so a failure leaves the writer
        on the old file and the error reaches the caller.
        """
        with self._lock:
            self._require_open()
            fresh = _open_log_file(self.path)
            stale, self._fd = self._fd, fresh
            os.close(stale)

    def close(self) -> None:
        """Flush both streams and close the file; later calls do nothing."""
        with self._lock:
            if self._fd is None:
                return
            for stream in STREAMS:
                self._flush(stream)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CriLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- under the lock --------------------------------------------------------------------

    def _pending_of(self, stream: str) -> bytearray:
        self._require_open()
        pending = self._pending.get(stream)
        if pending is None:
            raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
        return pending

    def _require_open(self) -> None:
        if self._fd is None:
            raise ValueError(f"log writer for {self.path} is closed")

    def _flush(self, stream: str) -> None:
        pending = self._pending_of(stream)
        if pending:
            self._append(stream, [(TAG_PARTIAL, bytes(pending))])
            pending.clear()

    def _append(self, stream: str, records: list[tuple[str, bytes]]) -> None:
        if not records:
            return
        header_tail = f" {stream} "
        data = b"".join(
            f"{format_timestamp(self._clock())}{header_tail}{tag} ".encode() + content + b"\n"
            for tag, content in records
        )
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError as error:
            # containerd keeps draining the container's output when the log cannot be written:
            # a full disk must not block (and so stop) the workload.
            self.write_errors += 1
            log.warning("cannot write %s log to %s: %s", stream, self.path, error)


# --- reading ---------------------------------------------------------------------------------


class LogLine(NamedTuple):
    """One line of container output, its P parts joined."""

    timestamp: str  # as written, RFC3339; that of the line's first part
    stream: str  # stdout or stderr
    text: str  # the content decoded as UTF-8 (bad bytes replaced), without the newline


class Record(NamedTuple):
    timestamp: str
    stream: str
    partial: bool
    content: bytes


def parse_record(raw: bytes) -> Record | None:
    """One line of a CRI log file (without its newline); None if it is not one."""
    fields = raw.split(b" ", 3)
    if len(fields) < 3:
        return None
    stamp, stream, tags = fields[0], fields[1], fields[2]
    tag = tags.split(b":", 1)[0]
    if stream not in (b"stdout", b"stderr") or tag not in (b"F", b"P"):
        return None
    timestamp = stamp.decode("ascii", "replace")
    if _TIMESTAMP.fullmatch(timestamp) is None:
        return None
    content = fields[3] if len(fields) == 4 else b""
    return Record(timestamp, stream.decode(), tag == b"P", content)


class _LineJoiner:
    """Join each stream's P parts with the record that ends them."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[str, list[bytes]]] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        record = parse_record(raw)
        if record is None:
            log.debug("skipping a line that is not a CRI log record: %r", raw[:80])
            return None
        timestamp, parts = self._open.pop(record.stream, (record.timestamp, []))
        parts.append(record.content)
        if record.partial:
            self._open[record.stream] = (timestamp, parts)
            return None
        return _log_line(timestamp, record.stream, parts)

    def drain(self) -> list[LogLine]:
        """Lines left open at the end of the log (the container's last, unterminated output)."""
        lines = [_log_line(ts, stream, parts) for stream, (ts, parts) in self._open.items()]
        self._open.clear()
        return sorted(lines, key=lambda line: parse_timestamp(line.timestamp))


def _log_line(timestamp: str, stream: str, parts: list[bytes]) -> LogLine:
    return LogLine(timestamp, stream, b"".join(parts).decode("utf-8", "replace"))


class _LogSource:
    """The raw records of a log file, read as it grows, across renames and truncation."""

    CHUNK = 64 * 1024

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._rest = b""

    def records(self) -> Iterator[bytes]:
        """Every complete record written since the last call."""
        if os.fstat(self._file.fileno()).st_size < self._file.tell():
            self._file.seek(0)  # truncated in place (copytruncate): start over
            self._rest = b""
        while chunk := self._file.read(self.CHUNK):
            *complete, self._rest = (self._rest + chunk).split(b"\n")
            yield from complete

    def take_rest(self) -> bytes:
        """The last record if the file does not end with a newline."""
        rest, self._rest = self._rest, b""
        return rest

    def replaced(self) -> bool:
        """True when `path` now names another file (rotation created a new one)."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed, not yet reopened by the writer
        mine = os.fstat(self._file.fileno())
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def switch(self) -> bytes:
        """Move to the file now at `path`; return the old file's unterminated last record."""
        try:
            fresh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            return b""  # renamed away again: keep reading the old file, look again later
        self._file.close()
        self._file = fresh
        return self.take_rest()

    def close(self) -> None:
        self._file.close()


def read_cri_log(
    path: str | os.PathLike[str],
    follow: bool = False,
    tail: int | None = None,
    *,
    until: Callable[[], bool] | None = None,
    poll_interval: float = 0.2,
) -> Iterator[LogLine]:
    """Yield the lines of a CRI log file, P parts joined, in file order.

    tail: only the last `tail` lines already in the file (None or negative: all).
    follow: keep yielding lines as they are written, across rotations, until `until()`
    answers True (checked whenever the file has nothing new; None: forever).
    """
    source = _LogSource(os.fspath(path))
    joiner = _LineJoiner()
    try:
        existing = _lines_now(source, joiner, final=not follow)
        if tail is not None and tail >= 0:
            existing = iter(collections.deque(existing, maxlen=tail))
        yield from existing
        if follow:
            yield from _follow(source, joiner, until, poll_interval)
    finally:
        source.close()


def _lines_now(source: _LogSource, joiner: _LineJoiner, final: bool) -> Iterator[LogLine]:
    """The lines the file holds now; with `final`, also those it leaves unterminated."""
    for raw in source.records():
        if (line := joiner.feed(raw)) is not None:
            yield line
    if final:
        rest = source.take_rest()
        if rest and (line := joiner.feed(rest)) is not None:
            yield line
        yield from joiner.drain()


def _follow(
    source: _LogSource,
    joiner: _LineJoiner,
    until: Callable[[], bool] | None,
    poll_interval: float,
) -> Iterator[LogLine]:
    while True:
        progressed = False
        for raw in source.records():
            progressed = True
            if (line := joiner.feed(raw)) is not None:
                yield line
        if progressed:
            continue
        if source.replaced():
            rest = source.switch()  # the old file was read to its end just above
            if rest and (line := joiner.feed(rest)) is not None:
                yield line
            continue
        if until is not None and until():
            yield from _lines_now(source, joiner, final=True)
            return
        time.sleep(poll_interval)
