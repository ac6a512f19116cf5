"""Three layers with whiteouts and an opaque directory, unpacked into snapshots and mounted with
the real overlayfs: the merged view is what the image means."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from observe_rt.oci.snapshots import LayerRef, SnapshotStore, chain_ids, unmount
from observe_rt.oci.store import ContentStore
from tests.support import tars

pytestmark = pytest.mark.root

LAYERS = (tars.base_layer(), tars.middle_layer(), tars.top_layer())
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture
def stores(tmp_path: Path):
    content = ContentStore(tmp_path / "state")
    refs = [LayerRef(content.put_bytes(tars.gz(t)), tars.sha256(t), GZIP) for t in LAYERS]
    return content, SnapshotStore(tmp_path / "state"), refs


@pytest.fixture
def merged(tmp_path: Path, stores):
    content, snapshots, refs = stores
    snapshots.unpack_image(content, refs)
    rootfs = snapshots.prepare_rootfs(chain_ids([r.diff_id for r in refs]), tmp_path / "ctr")
    target = tmp_path / "ctr" / "rootfs"
    target.mkdir()
    rootfs.mount(target)
    try:
        yield target
    finally:
        unmount(target)


def info(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_merged_view(merged: Path):
    assert sorted(os.listdir(merged)) == ["etc", "opaque", "remade", "srv", "tmp"]  # no gone-dir
    assert os.listdir(merged / "remade") == ["fresh"]  # whiteout + new dir in one layer
    assert info(merged / "remade") == (0o700, 0, 0)
    assert sorted(os.listdir(merged / "etc")) == ["delete-me", "keep"]
    assert (merged / "etc/delete-me").read_bytes() == b"back again\n"  # deleted, then re-added
    assert info(merged / "etc/delete-me") == (0o600, 7, 8)
    assert sorted(os.listdir(merged / "opaque")) == ["new"]  # the opaque dir hides old-a, sub
    assert info(merged / "tmp") == (0o1777, 0, 0)  # implicit parent kept the lower's mode
    assert sorted(os.listdir(merged / "tmp")) == ["from-middle"]
    assert info(merged / "srv") == (0o750, 1000, 1000)
    assert info(merged / "srv/tool") == (0o4755, 0, 0)
    assert info(merged / "srv/added") == (0o2750, 1000, 1000)
    tool, link = os.lstat(merged / "srv/tool"), os.lstat(merged / "srv/tool-link")
    assert (tool.st_ino, tool.st_nlink) == (link.st_ino, 2)
    assert not [p for p in merged.rglob("*") if p.name.startswith(".wh.")]


def test_writes_go_to_the_upper_dir_only(merged: Path, stores, tmp_path: Path):
    _, snapshots, _ = stores
    lower_files = {s.chain_id: tars.tree(s.fs) for s in snapshots.list()}
    (merged / "etc/keep").unlink()
    (merged / "etc/new").write_text("container\n")
    (merged / "srv/tool").write_text("changed\n")  # copy-up breaks the hardlink in the view
    assert not (merged / "etc/keep").exists()
    upper = tmp_path / "ctr" / "upper"
    assert stat.S_ISCHR(os.lstat(upper / "etc/keep").st_mode)  # overlay's own whiteout
    assert (upper / "etc/new").read_text() == "container\n"
    assert {s.chain_id: tars.tree(s.fs) for s in snapshots.list()} == lower_files


def test_layers_are_shared_between_images(stores, tmp_path: Path):
    content, snapshots, refs = stores
    first = snapshots.unpack_image(content, refs)
    other = tars.TarBuilder().file("other", b"other\n").bytes()
    other_ref = LayerRef(content.put_bytes(tars.gz(other)), tars.sha256(other), GZIP)
    second = snapshots.unpack_image(content, [*refs[:2], other_ref])
    assert [s.number for s in second[:2]] == [s.number for s in first[:2]]
    assert len(snapshots.list()) == 4
    total = snapshots.usage()
    assert total.bytes == sum(s.bytes for s in snapshots.list()) and total.inodes > 10

    removed = snapshots.prune(chain_ids([r.diff_id for r in refs]))
    assert removed == [second[2].chain_id]
    assert not os.path.exists(second[2].dir) and os.path.isdir(first[2].fs)
    reopened = SnapshotStore(tmp_path / "state")
    assert [s.chain_id for s in reopened.list()] == [s.chain_id for s in first]
