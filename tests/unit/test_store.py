"""Content store atomicity and digest checks; image records and their lookups."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from observe_rt.errors import InvalidArgument, NotFound
from observe_rt.oci.store import (
    AmbiguousImage,
    ContentStore,
    DigestMismatch,
    ImageRecord,
    ImageStore,
    InvalidDigest,
    parse_digest,
)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def part_files(store: ContentStore) -> list[str]:
    return [n for n in os.listdir(store.ingest_dir) if n.endswith(".part")]


# -- digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63 + "\n",
        "sha256:../../../../etc/passwd",
        "sha256:" + "a" * 62 + "/.",
        "md5:" + "a" * 32,
        "sha512:" + "a" * 64,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 64 + ":x",
    ],
)
def test_strict_digest_parsing(bad, tmp_path):
    with pytest.raises(InvalidDigest, match="invalid digest"):
        parse_digest(bad)
    with pytest.raises(InvalidDigest):
        ContentStore(tmp_path).has(bad)


def test_digest_algorithms():
    assert parse_digest("sha256:" + "0" * 64) == ("sha256", "0" * 64)
    assert parse_digest("sha512:" + "f" * 128) == ("sha512", "f" * 128)


# -- blobs ------------------------------------------------------------------------------------


def test_write_commit_read(tmp_path):
    store = ContentStore(tmp_path)
    data = b"layer bytes" * 1000
    with store.writer(digest_of(data), len(data)) as writer:
        writer.write(data[:10])
        writer.write(data[10:])
        assert writer.commit() == digest_of(data)
    digest = digest_of(data)
    assert (
        store.has(digest) and store.read_bytes(digest) == data and store.size(digest) == len(data)
    )
    assert list(store.walk()) == [(digest, len(data))]
    assert store.usage() == (len(data), 1)
    assert part_files(store) == []
    assert store.delete(digest) and not store.has(digest) and not store.delete(digest)


def test_sha512_blob(tmp_path):
    store = ContentStore(tmp_path)
    digest = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert store.put_bytes(b"x", digest) == digest and store.read_bytes(digest) == b"x"


def test_digest_mismatch_names_both_and_leaves_nothing(tmp_path):
    store = ContentStore(tmp_path)
    claimed = digest_of(b"expected")
    with pytest.raises(DigestMismatch) as raised:
        store.put_bytes(b"received", claimed)
    assert claimed in str(raised.value) and digest_of(b"received") in str(raised.value)
    assert not store.has(claimed) and not store.has(digest_of(b"received"))
    assert part_files(store) == []


def test_size_mismatch_and_overflow(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch, match="3 bytes, not 4"), store.writer(None, 4) as w:
        w.write(b"abc")
        w.commit()
    with pytest.raises(DigestMismatch, match="more than the expected 2 bytes"):
        store.writer(None, 2).write(b"abc")
    assert part_files(store) == [] and list(store.walk()) == []


def test_exception_in_with_block_aborts(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer() as writer:
        writer.write(b"half")
        raise RuntimeError("download failed")
    assert part_files(store) == [] and list(store.walk()) == []


def test_ingest_stream_and_existing_blob(tmp_path):
    store = ContentStore(tmp_path)
    data = os.urandom(3 << 20)
    digest = store.ingest(io.BytesIO(data), digest_of(data), len(data))
    assert store.read_bytes(digest) == data
    assert store.ingest(io.BytesIO(b""), digest) == digest  # already there: not read again


def test_open_missing_blob_is_not_found(tmp_path):
    store = ContentStore(tmp_path)
    with pytest.raises(NotFound, match="blob sha256:0+ not found"):
        store.open("sha256:" + "0" * 64)


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from observe_rt.oci.store import ContentStore
    writer = ContentStore(sys.argv[1]).writer(sys.argv[2])
    writer.write(b"first half of the blob")
    print(writer.path, flush=True)
    time.sleep(60)
    """
)


def test_killed_writer_leaves_no_blob_and_is_swept(tmp_path):
    data = b"first half of the blob" + b"second half"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), digest_of(data)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        part = proc.stdout.readline().strip()
        assert os.path.exists(part)
        # While the writer lives, another store open leaves its ingest file alone.
        ContentStore(tmp_path)
        assert os.path.exists(part)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = ContentStore(tmp_path)  # the next open sweeps the dead writer's file
    assert not os.path.exists(part) and not store.has(digest_of(data))
    assert list(store.walk()) == []
    assert store.put_bytes(data, digest_of(data)) == digest_of(data)  # a repeated pull completes


# -- image records ----------------------------------------------------------------------------


def record(n: int, tags=(), digests=(), **kw) -> ImageRecord:
    hexes = [hashlib.sha256(f"{n}-{i}".encode()).hexdigest() for i in range(4)]
    return ImageRecord(
        id=f"sha256:{hexes[0]}",
        manifest_digest=f"sha256:{hexes[1]}",
        config_digest=f"sha256:{hexes[0]}",
        layer_digests=[f"sha256:{hexes[2]}"],
        diff_ids=[f"sha256:{hexes[3]}"],
        size=1234,
        repo_tags=list(tags),
        repo_digests=list(digests),
        **kw,
    )


def test_image_lookups(tmp_path):
    images = ImageStore(tmp_path)
    a = images.put(
        record(
            1,
            ["docker.io/library/busybox:latest"],
            ["docker.io/library/busybox@sha256:" + "1" * 64],
        )
    )
    assert images.get(a.id) == a
    assert images.resolve(a.id) == a
    assert images.resolve(a.id.removeprefix("sha256:")[:12]) == a
    assert images.resolve("docker.io/library/busybox:latest") == a
    assert images.resolve("docker.io/library/busybox@sha256:" + "1" * 64) == a
    assert images.find_by_digest(a.manifest_digest) == a
    with pytest.raises(NotFound, match="image 'nothing:here' not found"):
        images.resolve("nothing:here")
    assert images.find_by_tag("docker.io/library/busybox:1") is None


def test_ambiguous_prefix(tmp_path):
    images = ImageStore(tmp_path)
    records = [images.put(record(n)) for n in range(17)]  # 17 ids, 16 first hex digits
    first, count = Counter(r.id[7] for r in records).most_common(1)[0]
    with pytest.raises(AmbiguousImage, match=f"prefix '{first}' matches {count} images"):
        images.resolve(first)


def test_records_persist_and_tags_move(tmp_path):
    images = ImageStore(tmp_path)
    old = images.put(record(1, ["r/app:latest", "r/app:1"]))
    new = images.put(record(2, ["r/app:latest"]))
    assert images.get(old.id).repo_tags == ["r/app:1"]
    images.add_tag(old.id, "r/app:stable")
    images.remove_tag(old.id, "r/app:1")
    again = ImageStore(tmp_path)
    assert again.get(old.id).repo_tags == ["r/app:stable"]
    assert again.resolve("r/app:latest").id == new.id
    assert again.get(new.id).layer_digests == new.layer_digests
    assert again.get(new.id).diff_ids == new.diff_ids


def test_put_merges_names_of_the_same_image(tmp_path):
    images = ImageStore(tmp_path)
    images.put(record(1, ["a:1"], ["a@sha256:" + "2" * 64]))
    merged = images.put(record(1, ["b:1"]))
    assert merged.repo_tags == ["a:1", "b:1"] and merged.repo_digests == ["a@sha256:" + "2" * 64]


def test_remove_image(tmp_path):
    images = ImageStore(tmp_path)
    image = images.put(record(1, ["a:1"]))
    images.remove(image.id)
    assert images.list() == [] and os.listdir(tmp_path / "images") == []
    with pytest.raises(NotFound):
        images.remove(image.id)
    assert ImageStore(tmp_path).list() == []


def test_record_validation(tmp_path):
    with pytest.raises(InvalidDigest):
        record(1).__class__(**{**record(1).__dict__, "id": "sha256:../../x"})
    with pytest.raises(InvalidArgument, match="1 layers but 2 diff_ids"):
        record(1).__class__(**{**record(1).__dict__, "diff_ids": ["sha256:" + "0" * 64] * 2})


def test_crash_during_record_write_keeps_old_file(tmp_path):
    images = ImageStore(tmp_path)
    image = images.put(record(1, ["a:1"]))
    leftover = tmp_path / "images" / f".{image.id[7:]}.json.{'0' * 32}.tmp"
    leftover.write_text("{half")  # what a crash between write and rename leaves
    reloaded = ImageStore(tmp_path)
    assert reloaded.get(image.id).repo_tags == ["a:1"]
    assert time.time() - reloaded.get(image.id).pulled < 60
