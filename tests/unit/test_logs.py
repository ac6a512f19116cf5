"""CRI-format container logs: the writer's records byte for byte, and the reader's joined lines.

Format facts checked against containerd internal/cri/io/logger.go (splitting at maxLen, CRLF,
an unterminated rest written as P at EOF) and kubernetes pkg/kubelet/kuberuntime/logs/logs.go
(parsing: first tag before ':', lenient RFC3339Nano).
"""

from __future__ import annotations

import os
import re
import stat
import threading

import pytest

from observe_rt.pod.logs import (
    CriLogWriter,
    LogLine,
    format_timestamp,
    parse_record,
    parse_timestamp,
    read_cri_log,
)

BASE_NS = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
RECORD = re.compile(rb"(\S+) (stdout|stderr) ([PF]) (.*)", re.DOTALL)


class FakeClock:
    def __init__(self) -> None:
        self.now = BASE_NS

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "pods" / "ns_pod_uid" / "app" / "0.log"


def writer_at(path, max_line=16 * 1024) -> CriLogWriter:
    return CriLogWriter(path, max_line, clock=FakeClock())


def records(path) -> list[tuple[str, str, bytes]]:
    """(stream, tag, content) of every record; asserts each line is well formed."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    out = []
    for raw in data.split(b"\n")[:-1]:
        match = RECORD.fullmatch(raw)
        assert match, raw
        parse_timestamp(match.group(1).decode())
        out.append((match.group(2).decode(), match.group(3).decode(), match.group(4)))
    return out


def texts(path, **kwargs) -> list[str]:
    return [line.text for line in read_cri_log(path, **kwargs)]


# --- timestamps ------------------------------------------------------------------------------


def test_timestamp_is_utc_rfc3339_with_nine_digits():
    assert format_timestamp(BASE_NS) == "2023-11-14T22:13:20.123456789Z"
    assert format_timestamp(1_700_000_000_000_000_000) == "2023-11-14T22:13:20.000000000Z"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2023-11-14T22:13:20.123456789Z", BASE_NS),
        ("2023-11-14T23:13:20.123456789+01:00", BASE_NS),  # conmon writes local offsets
        ("2023-11-14T22:13:20.1234Z", 1_700_000_000_123_400_000),  # Go trims trailing zeros
        ("2023-11-14T22:13:20Z", 1_700_000_000_000_000_000),
    ],
)
def test_parse_timestamp_is_lenient_like_the_kubelet(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "2023-11-14 22:13:20Z", "2023-11-14T22:13:20.1234567890Z"])
def test_parse_timestamp_rejects_malformed(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


# --- writer ----------------------------------------------------------------------------------


def test_complete_lines_are_full_records(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"hello world\nsecond\n")
    lines = log_path.read_bytes().split(b"\n")
    assert lines[0] == b"2023-11-14T22:13:20.123456790Z stdout F hello world"
    assert lines[1] == b"2023-11-14T22:13:20.123456791Z stdout F second"
    assert lines[2:] == [b""]


def test_bytes_without_newline_wait_for_it(log_path):
    writer = writer_at(log_path)
    writer.write("stdout", b"hel")
    writer.write("stdout", b"lo")
    assert log_path.read_bytes() == b""
    writer.write("stdout", b" there\nnext")
    assert records(log_path) == [("stdout", "F", b"hello there")]
    writer.close()
    assert records(log_path)[-1] == ("stdout", "P", b"next")


def test_empty_line_is_an_empty_full_record(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"\n\n")
    assert records(log_path) == [("stdout", "F", b""), ("stdout", "F", b"")]
    assert texts(log_path) == ["", ""]


def test_crlf_ends_a_line_even_across_chunks_but_a_lone_cr_is_content(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"dos\r\nmid\rdle\n")
        writer.write("stdout", b"split\r")
        writer.write("stdout", b"\n")
    assert [content for _, _, content in records(log_path)] == [b"dos", b"mid\rdle", b"split"]


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"abcd", [("F", b"abcd")]),  # exactly max_line: no split
        (b"abcde", [("P", b"abcd"), ("F", b"e")]),
        (b"abcdefgh", [("P", b"abcd"), ("F", b"efgh")]),
        (b"abcdefghij", [("P", b"abcd"), ("P", b"efgh"), ("F", b"ij")]),
    ],
)
def test_long_lines_are_split_at_max_line(log_path, line, expected):
    with writer_at(log_path, max_line=4) as writer:
        writer.write("stdout", line + b"\n")
    assert [(tag, content) for _, tag, content in records(log_path)] == expected
    assert texts(log_path) == [line.decode()]


def test_long_line_is_split_as_it_streams_in(log_path):
    writer = writer_at(log_path, max_line=4)
    writer.write("stdout", b"abcdef")
    assert records(log_path) == [("stdout", "P", b"abcd")]  # the buffer stays bounded
    writer.write("stdout", b"gh\n")
    assert records(log_path)[1:] == [("stdout", "F", b"efgh")]
    writer.close()


def test_crlf_right_after_max_line_bytes_is_no_split(log_path):
    with writer_at(log_path, max_line=4) as writer:
        writer.write("stdout", b"abcd\r")
        writer.write("stdout", b"\n")
    assert records(log_path) == [("stdout", "F", b"abcd")]


def test_default_max_line_is_16_kib(log_path):
    line = b"x" * (16 * 1024 + 10)
    with CriLogWriter(log_path) as writer:
        writer.write("stderr", line + b"\n")
    assert [(tag, len(content)) for _, tag, content in records(log_path)] == [
        ("P", 16 * 1024),
        ("F", 10),
    ]
    assert texts(log_path) == [line.decode()]


def test_utf8_cut_by_chunks_and_splits_comes_back_whole(log_path):
    text = "héllo €uro 🙂 ok"
    data = text.encode()
    with writer_at(log_path, max_line=3) as writer:
        for i in range(len(data)):  # one byte per chunk: every character is cut somewhere
            writer.write("stdout", data[i : i + 1])
        writer.write("stdout", b"\n")
    parts = [content for _, _, content in records(log_path)]
    assert b"".join(parts) == data
    assert any(_cuts_a_character(part) for part in parts)
    assert texts(log_path) == [text]


def _cuts_a_character(part: bytes) -> bool:
    try:
        part.decode()
    except UnicodeDecodeError:
        return True
    return False


def test_streams_are_buffered_and_joined_separately(log_path):
    with writer_at(log_path, max_line=4) as writer:
        writer.write("stdout", b"out-")
        writer.write("stderr", b"err line\n")
        writer.write("stdout", b"line one\nout two\n")
        writer.write("stderr", b"tail")
    assert records(log_path) == [
        ("stderr", "P", b"err "),
        ("stderr", "F", b"line"),
        ("stdout", "P", b"out-"),
        ("stdout", "P", b"line"),
        ("stdout", "F", b" one"),
        ("stdout", "P", b"out "),
        ("stdout", "F", b"two"),
        ("stderr", "P", b"tail"),
    ]
    lines = list(read_cri_log(log_path))
    assert [(line.stream, line.text) for line in lines] == [
        ("stderr", "err line"),
        ("stdout", "out-line one"),
        ("stdout", "out two"),
        ("stderr", "tail"),
    ]


def test_flush_stream_ends_one_stream_only(log_path):
    writer = writer_at(log_path)
    writer.write("stdout", b"out rest")
    writer.write("stderr", b"err rest")
    writer.flush_stream("stdout")
    assert records(log_path) == [("stdout", "P", b"out rest")]
    writer.flush()
    assert records(log_path)[1:] == [("stderr", "P", b"err rest")]
    writer.close()
    assert len(records(log_path)) == 2  # nothing left to write twice


def test_unterminated_output_at_eof_reads_as_a_line(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"done\nno newline at exit")
    assert texts(log_path) == ["done", "no newline at exit"]


def test_directory_and_file_modes(log_path):
    old = os.umask(0o077)  # a strict umask must not hide the logs from the kubelet's readers
    try:
        CriLogWriter(log_path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o640
    assert stat.S_IMODE(log_path.parent.stat().st_mode) & 0o700 == 0o700


def test_directory_mode_is_0755_under_the_usual_umask(log_path):
    old = os.umask(0o022)
    try:
        CriLogWriter(log_path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o755


def test_existing_file_is_appended_not_truncated(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"first run\n")
    with writer_at(log_path) as writer:
        writer.write("stdout", b"after restart\n")
    assert texts(log_path) == ["first run", "after restart"]


def test_reopen_after_rename_starts_a_new_file(log_path):
    writer = writer_at(log_path)
    writer.write("stdout", b"before rotation\npartial ")
    rotated = log_path.with_name("0.log.20240101-000000")
    os.rename(log_path, rotated)
    writer.write("stdout", b"still old\n")  # until reopen, output goes to the renamed file
    writer.reopen()
    assert log_path.exists() and log_path.read_bytes() == b""
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o640
    writer.write("stdout", b"after rotation\n")
    writer.close()
    assert texts(rotated) == ["before rotation", "partial still old"]
    assert texts(log_path) == ["after rotation"]


def test_reopen_failure_keeps_the_old_file(log_path):
    writer = writer_at(log_path)
    rotated = log_path.with_name("0.log.1")
    os.rename(log_path, rotated)
    log_path.mkdir()  # something the writer cannot open, even as root
    with pytest.raises(IsADirectoryError):
        writer.reopen()
    writer.write("stdout", b"kept\n")
    writer.close()
    assert texts(rotated) == ["kept"]


def test_misuse_is_an_error(log_path):
    writer = writer_at(log_path)
    with pytest.raises(ValueError, match="stream"):
        writer.write("stdin", b"x\n")
    with pytest.raises(ValueError):
        CriLogWriter(log_path, max_line=0)
    writer.close()
    writer.close()  # idempotent
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write("stdout", b"x\n")
    with pytest.raises(ValueError, match="closed"):
        writer.reopen()


def test_write_errors_are_counted_and_output_keeps_draining():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    writer = CriLogWriter("/dev/full")
    writer.write("stdout", b"lost\n")
    writer.write("stdout", b"lost too\n")
    assert writer.write_errors == 2
    writer.close()


def test_concurrent_writers_never_interleave_records(log_path):
    writer = CriLogWriter(log_path, max_line=64)
    per_thread = 200

    def produce(n: int) -> None:
        stream = "stdout" if n % 2 else "stderr"
        for i in range(per_thread):
            line = f"thread {n} line {i} " + "é" * (i % 50)
            data = line.encode() + b"\n"
            writer.write(stream, data[:7])
            writer.write(stream, data[7:])

    # Each stream is fed by one thread at a time here, as the shim does; the lock protects
    # the file and the buffers when the two streams and reopen() race.
    threads = [threading.Thread(target=produce, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(20):
        writer.reopen()
    for thread in threads:
        thread.join()
    writer.close()
    lines = list(read_cri_log(log_path))
    assert len(lines) == 2 * per_thread
    for n, stream in ((0, "stderr"), (1, "stdout")):
        mine = [line.text for line in lines if line.stream == stream]
        assert mine == [f"thread {n} line {i} " + "é" * (i % 50) for i in range(per_thread)]


# --- reader ----------------------------------------------------------------------------------


def _write_lines(path, count: int) -> None:
    with writer_at(path, max_line=4) as writer:
        for i in range(count):
            writer.write("stdout", f"line number {i}\n".encode())  # each split in 4 records


@pytest.mark.parametrize(
    "tail, expected",
    [
        (None, [f"line number {i}" for i in range(5)]),
        (2, ["line number 3", "line number 4"]),
        (0, []),
        (50, [f"line number {i}" for i in range(5)]),
        (-1, [f"line number {i}" for i in range(5)]),
    ],
)
def test_tail_counts_joined_lines(log_path, tail, expected):
    _write_lines(log_path, 5)
    assert texts(log_path, tail=tail) == expected


def test_reader_yields_timestamp_of_first_part_and_stream(log_path):
    with writer_at(log_path, max_line=2) as writer:
        writer.write("stderr", b"abcd\n")
    (line,) = read_cri_log(log_path)
    assert line == LogLine("2023-11-14T22:13:20.123456790Z", "stderr", "abcd")


def test_reader_accepts_other_runtimes_and_skips_garbage(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(
        b"2023-11-14T23:13:20.1+01:00 stdout P from \n"  # conmon: offset; P ends with a space
        b"not a record at all\n"
        b"2023-11-14T22:13:20Z stdout F:extra conmon\n"  # extra tags after ':'
        b"2023-11-14T22:13:21Z stdin F wrong stream\n"
        b"2023-11-14T22:13:22Z stderr X unknown tag\n"
        b"2023-11-14T22:13:23Z stderr F\n"  # no content field at all
        b"2023-11-14T22:13:24Z stdout F last line without newline"
    )
    assert list(read_cri_log(path)) == [
        LogLine("2023-11-14T23:13:20.1+01:00", "stdout", "from conmon"),
        LogLine("2023-11-14T22:13:23Z", "stderr", ""),
        LogLine("2023-11-14T22:13:24Z", "stdout", "last line without newline"),
    ]


def test_parse_record_fields():
    record = parse_record(b"2023-11-14T22:13:20.5Z stdout P a b  c")
    assert record is not None
    assert (record.stream, record.partial, record.content) == ("stdout", True, b"a b  c")
    assert parse_record(b"garbage") is None


def test_bad_utf8_is_replaced_not_fatal(tmp_path):
    path = tmp_path / "c.log"
    path.write_bytes(b"2023-11-14T22:13:20Z stdout F bad \xff byte\n")
    assert texts(path) == ["bad \ufffd byte"]


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_cri_log(tmp_path / "none.log"))


@pytest.mark.timeout(20)
def test_follow_reads_new_lines_across_rotation_until_told_to_stop(log_path):
    writer = writer_at(log_path)
    writer.write("stdout", b"before\n")
    stop = threading.Event()
    lines = read_cri_log(log_path, follow=True, until=stop.is_set, poll_interval=0.01)
    assert next(lines).text == "before"
    writer.write("stdout", b"after\nhalf ")
    assert next(lines).text == "after"
    os.rename(log_path, log_path.with_name("0.log.1"))
    writer.write("stdout", b"line\n")  # finishes the half line in the renamed file
    writer.reopen()
    writer.write("stderr", b"in the new file\n")
    assert next(lines).text == "half line"
    assert next(lines)[1:] == ("stderr", "in the new file")
    writer.write("stdout", b"unterminated at exit")
    writer.close()
    stop.set()
    assert [line.text for line in lines] == ["unterminated at exit"]


@pytest.mark.timeout(20)
def test_follow_with_tail_then_a_live_writer_thread(log_path):
    _write_lines(log_path, 10)
    writer = writer_at(log_path, max_line=4)
    done = threading.Event()

    def produce() -> None:
        for i in range(10, 30):
            writer.write("stdout", f"line number {i}\n".encode())
        writer.close()
        done.set()

    lines = read_cri_log(log_path, follow=True, tail=3, until=done.is_set, poll_interval=0.01)
    first = next(lines)
    thread = threading.Thread(target=produce)
    thread.start()
    got = [first.text] + [line.text for line in lines]
    thread.join()
    assert got == [f"line number {i}" for i in range(7, 30)]


@pytest.mark.timeout(20)
def test_follow_starts_over_after_copytruncate(log_path):
    with writer_at(log_path) as writer:
        writer.write("stdout", b"a long first line before truncation\n")
    stop = threading.Event()
    lines = read_cri_log(log_path, follow=True, until=stop.is_set, poll_interval=0.01)
    assert next(lines).text == "a long first line before truncation"
    os.truncate(log_path, 0)
    with writer_at(log_path) as writer:
        writer.write("stdout", b"new\n")
    assert next(lines).text == "new"
    stop.set()
    assert list(lines) == []
