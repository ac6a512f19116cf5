"""Layer unpack: exact contents of a normal layer, whiteouts, compressions, diff_id, and every
hostile layer refused with a message naming the layer and entry, nothing written outside."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from observe_rt.errors import FailedPrecondition, InvalidArgument
from observe_rt.oci.snapshots import (
    LayerRef,
    SnapshotStore,
    chain_ids,
    image_fs_usage,
    overlay_data,
)
from observe_rt.oci.store import ContentStore
from observe_rt.oci.unpack import (
    DiffIdMismatch,
    LayerError,
    LayerLimitExceeded,
    Limits,
    UnsafeLayer,
    unpack_layer,
)
from tests.support import tars

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="owners, devices and trusted xattrs need root")
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the snapshot holding a file the hostile layers aim at."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim").write_text("untouched\n")
    os.chmod(path / "victim", 0o600)
    return path


def unpack(blob: bytes, dest: Path, **kw):
    return unpack_layer(io.BytesIO(blob), dest, layer_digest=DIGEST, **kw)


def mode(path: Path) -> int:
    return os.lstat(path).st_mode


# -- normal layers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress", [lambda b: b, tars.gz, tars.zst], ids=["plain", "gzip", "zstd"]
)
def test_diff_id_is_sha256_of_the_uncompressed_tar(compress, dest):
    layer = tars.normal_layer()
    result = unpack(compress(layer), dest, expected_diff_id=tars.sha256(layer))
    assert result.diff_id == tars.sha256(layer)
    assert (dest / "etc/hello").read_bytes() == tars.HELLO
    assert result.entries == 18
    contents = (tars.HELLO, b"secret\n", b"notes\n", b"#!/bin/true\n" * 2, b"x", b"dot\n")
    assert result.bytes == sum(map(len, contents))
    # A hardlink adds no inode, the implicit "home" does; without root the 2 devices are skipped.
    assert result.inodes == 18 - 1 + 1 - (0 if ROOT else 2)


def test_diff_id_mismatch_names_both(dest):
    with pytest.raises(DiffIdMismatch, match=f"says {'sha256:' + '0' * 64}.*is sha256:"):
        unpack(tars.normal_layer(), dest, expected_diff_id="sha256:" + "0" * 64)


def test_media_type_claiming_gzip_for_plain_bytes(dest):
    with pytest.raises(LayerError, match="tar\\+gzip, but not gzip data"):
        unpack(tars.normal_layer(), dest, media_type="application/vnd.oci.image.layer.v1.tar+gzip")


def test_normal_layer_types_modes_and_times(dest):
    unpack(tars.normal_layer(), dest)
    assert stat.S_IMODE(mode(dest / "etc/hello")) == 0o644
    assert os.readlink(dest / "etc/link") == "hello"
    assert os.readlink(dest / "etc/abs-link") == "/etc/hello"
    assert stat.S_IMODE(mode(dest / "tmp")) == 0o1777
    assert stat.S_IMODE(mode(dest / "bin/suid")) == 0o4755
    assert os.stat(dest / "bin/suid").st_ino == os.stat(dest / "bin/suid-link").st_ino
    assert stat.S_ISFIFO(mode(dest / "run-fifo")) and stat.S_IMODE(mode(dest / "run-fifo")) == 0o620
    assert (dest / "dotslash").read_bytes() == b"dot\n"
    for path in ("etc", "etc/hello", "home/user", "bin/suid", "tmp"):
        assert os.lstat(dest / path).st_mtime == tars.MTIME, path
    assert os.getxattr(dest / "bin/xattr", "user.observe") == b"yes"


@needs_root
def test_normal_layer_owners_devices_and_capabilities(dest):
    unpack(tars.normal_layer(), dest)
    st = os.lstat(dest / "home/user/notes")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o600)
    st = os.lstat(dest / "bin/sgid")
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (50, 0o2755)  # chown did not clear setgid
    assert os.lstat(dest / "etc/shadow").st_gid == 42
    null = os.lstat(dest / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    loop = os.lstat(dest / "dev/loop0")
    assert stat.S_ISBLK(loop.st_mode) and os.major(loop.st_rdev) == 7
    assert os.getxattr(dest / "bin/xattr", "security.capability") == tars.CAPS


@needs_root
def test_whiteouts_and_opaque_dirs_in_overlay_form(dest):
    unpack(tars.middle_layer(), dest)
    for name in ("etc/delete-me", "gone-dir"):
        st = os.lstat(dest / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(dest / "opaque", "trusted.overlay.opaque") == b"y"
    assert (dest / "opaque/new").read_bytes() == b"new\n"
    assert not any(p.name.startswith(".wh.") for p in dest.rglob("*"))


def test_implicit_parent_dirs_copy_mode_from_lower_layers(tmp_path, dest):
    lower = tmp_path / "lower"
    lower.mkdir()
    unpack_layer(io.BytesIO(tars.base_layer()), lower, layer_digest=DIGEST)
    unpack(tars.TarBuilder().file("tmp/x", b"x").file("new/y").bytes(), dest, parent_dirs=[lower])
    assert stat.S_IMODE(mode(dest / "tmp")) == 0o1777
    assert stat.S_IMODE(mode(dest / "new")) == 0o755


def test_own_entry_wins_over_whiteout_of_same_layer(dest):
    unpack(tars.TarBuilder().file("a", b"mine").whiteout("a").bytes(), dest)
    assert (dest / "a").read_bytes() == b"mine"


@needs_root
@pytest.mark.parametrize("whiteout_first", [True, False])
def test_whiteout_and_directory_of_one_layer_make_it_opaque(whiteout_first, dest):
    builder = tars.TarBuilder()
    if whiteout_first:
        builder.whiteout("d").dir("d").file("d/new")
    else:
        builder.dir("d").file("d/new").whiteout("d")
    unpack(builder.bytes(), dest)
    assert os.listdir(dest / "d") == ["new"]
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"


def test_later_entry_replaces_earlier(dest):
    layer = tars.TarBuilder().dir("d").file("d/f", b"1").file("d", b"now a file").bytes()
    unpack(layer, dest)
    assert (dest / "d").read_bytes() == b"now a file"


def test_trusted_overlay_xattrs_from_the_layer_are_ignored(dest):
    xattrs = {"trusted.overlay.redirect": b"/etc", "trusted.overlay.opaque": b"y"}
    unpack(tars.TarBuilder().dir("d", xattrs=xattrs).bytes(), dest)
    assert not [x for x in os.listxattr(dest / "d") if x.startswith("trusted.overlay.")]


# -- hostile layers ---------------------------------------------------------------------------


def listing(tmp_path: Path) -> dict:
    return {k: v for k, v in tars.tree(str(tmp_path)).items() if not k.startswith("snapshot")}


def hostile(case_id, build, message, error=UnsafeLayer):
    return pytest.param(build, error, message, id=case_id)


HOSTILE = [
    hostile("dotdot", lambda o: tars.dotdot_escape(), "'../escape': '..' in the name refused"),
    hostile("dotdot-inside", lambda o: tars.dotdot_inside_name(), "'..' in the name refused"),
    hostile("absolute", lambda o: tars.absolute_name(f"{o}/abs"), "absolute name refused"),
    hostile(
        "through-symlink",
        lambda o: tars.write_through_symlink(str(o)),
        "'link/file': parent 'link' goes through a symlink",
    ),
    hostile(
        "whiteout-through-symlink",
        lambda o: tars.whiteout_through_symlink(str(o)),
        "'link/.wh.victim': parent 'link' goes through a symlink",
    ),
    hostile(
        "opaque-through-symlink",
        lambda o: tars.opaque_through_symlink(str(o)),
        "'link/.wh..wh..opq': parent 'link' goes through a symlink",
    ),
    hostile(
        "through-relative-symlink",
        lambda o: tars.write_through_relative_symlink(),
        "'up/escape': parent 'up' goes through a symlink",
    ),
    hostile(
        "hardlink-absolute",
        lambda o: tars.hardlink_absolute(),
        "'pw': hardlink to absolute path '/etc/passwd' refused",
    ),
    hostile(
        "hardlink-dotdot", lambda o: tars.hardlink_dotdot(), "hardlink to '../x' leaves the layer"
    ),
    hostile(
        "hardlink-through-symlink",
        lambda o: tars.hardlink_through_symlink(str(o), "victim"),
        "parent 'lnk' goes through a symlink",
    ),
    hostile(
        "hardlink-missing",
        lambda o: tars.TarBuilder().hardlink("x", "nothere").bytes(),
        "hardlink target 'nothere' is not in this layer",
    ),
    hostile("bare-whiteout", lambda o: tars.bare_whiteout(), "'.wh.': whiteout without a name"),
    hostile("whiteout-dot", lambda o: tars.whiteout_dot(), "whiteout without a name"),
    hostile(
        "whiteout-dirname",
        lambda o: tars.whiteout_in_dirname(),
        "'.wh.dir/file': whiteout prefix '.wh.' in a directory name refused",
    ),
    hostile(
        "long-name",
        lambda o: tars.long_name(),
        "longer than 4096 bytes (limit max_path)",
        LayerLimitExceeded,
    ),
    hostile(
        "huge-pax",
        lambda o: tars.huge_pax_header(),
        "exceeds 1048576 (limit max_header)",
        LayerLimitExceeded,
    ),
]


@pytest.mark.parametrize(("build", "error", "message"), HOSTILE)
def test_hostile_layer_refused_nothing_outside(build, error, message, tmp_path, dest, outside):
    blob = build(outside)
    before = listing(tmp_path)
    with pytest.raises(error) as raised:
        unpack(tars.gz(blob), dest)
    assert DIGEST in str(raised.value)
    assert message in str(raised.value)
    assert listing(tmp_path) == before
    assert (outside / "victim").read_text() == "untouched\n"
    assert not os.path.lexists("/escape") and not os.path.lexists("/x")


def test_chmod_never_follows_a_symlink(tmp_path, dest, outside):
    victim = outside / "victim"
    before = os.stat(victim)
    unpack(tars.chmod_through_symlink(str(victim)), dest)
    after = os.stat(victim)
    assert (after.st_mode, after.st_uid, after.st_mtime) == (
        before.st_mode,
        before.st_uid,
        before.st_mtime,
    )
    assert os.readlink(dest / "hl") == str(victim)  # a hardlink to the symlink itself
    assert stat.S_IMODE(mode(dest / "link2")) == 0o777 and stat.S_ISDIR(mode(dest / "link2"))
    assert stat.S_IMODE(mode(dest / "link3")) == 0o4777 and (dest / "link3").is_file()
    assert victim.read_text() == "untouched\n"


def test_entry_count_limit(dest):
    with pytest.raises(LayerLimitExceeded, match="more than 10 entries \\(limit max_entries\\)"):
        unpack(tars.many_entries(11), dest, limits=Limits(max_entries=10))
    unpack(tars.many_entries(10), dest, limits=Limits(max_entries=10))


def test_decompression_bomb_stops_at_the_byte_limit(dest):
    bomb = tars.zeros_bomb_gz(64 << 20)
    assert len(bomb) < 128 << 10
    limits = Limits(max_bytes=8 << 20)
    with pytest.raises(LayerLimitExceeded, match="more than 8388608 uncompressed bytes"):
        unpack(bomb, dest, limits=limits)
    assert os.stat(dest / "zeros").st_size <= 8 << 20


def test_truncated_layer_names_layer_and_last_entry(dest):
    blob = tars.gz(tars.normal_layer())
    with pytest.raises(LayerError, match=f"layer {DIGEST}: corrupt or truncated after entry"):
        unpack(blob[: len(blob) // 2], dest)


def test_unsupported_entry_type(dest):
    with pytest.raises(UnsafeLayer, match="unsupported tar entry type"):
        unpack(tars.TarBuilder().add("sock", b"Z").bytes(), dest)


# -- snapshots --------------------------------------------------------------------------------


def test_chain_ids_follow_the_image_spec():
    d1, d2, d3 = (tars.sha256(x) for x in (b"1", b"2", b"3"))
    c2 = "sha256:" + hashlib.sha256(f"{d1} {d2}".encode()).hexdigest()
    c3 = "sha256:" + hashlib.sha256(f"{c2} {d3}".encode()).hexdigest()
    assert chain_ids([d1, d2, d3]) == [d1, c2, c3]


def test_snapshot_ensure_shares_and_checks_chain(tmp_path):
    layer = tars.normal_layer()
    snapshots = SnapshotStore(tmp_path)
    args = {"layer_digest": DIGEST, "diff_id": tars.sha256(layer)}
    first = snapshots.ensure(tars.sha256(layer), None, lambda: io.BytesIO(layer), **args)
    again = snapshots.ensure(
        tars.sha256(layer), None, lambda: pytest.fail("unpacked twice"), **args
    )
    assert again == first and (Path(first.fs) / "etc/hello").read_bytes() == tars.HELLO
    assert snapshots.usage().inodes == first.inodes > 0
    with pytest.raises(InvalidArgument, match="does not follow"):
        snapshots.ensure(DIGEST, None, lambda: io.BytesIO(layer), **args)


def test_failed_unpack_leaves_no_snapshot(tmp_path):
    snapshots = SnapshotStore(tmp_path)
    bad = tars.dotdot_escape()
    with pytest.raises(UnsafeLayer):
        snapshots.ensure(
            tars.sha256(bad), None, lambda: io.BytesIO(bad), layer_digest=DIGEST,
            diff_id=tars.sha256(bad),
        )  # fmt: skip
    assert snapshots.list() == [] and not [p for p in os.listdir(snapshots.dir) if "-" in p]


def test_remove_refuses_a_parent_and_numbers_are_not_reused(tmp_path):
    snapshots = SnapshotStore(tmp_path)
    layers = [tars.TarBuilder().file(f"f{i}").bytes() for i in range(2)]
    chains = chain_ids([tars.sha256(t) for t in layers])
    made = [
        snapshots.ensure(
            chain,
            chains[0] if i else None,
            lambda t=t: io.BytesIO(t),
            layer_digest=DIGEST,
            diff_id=tars.sha256(t),
        )  # fmt: skip
        for i, (chain, t) in enumerate(zip(chains, layers, strict=True))
    ]
    with pytest.raises(FailedPrecondition, match="is the parent of"):
        snapshots.remove(chains[0])
    snapshots.remove(chains[1])
    again = snapshots.ensure(
        chains[1], chains[0], lambda: io.BytesIO(layers[1]), layer_digest=DIGEST,
        diff_id=tars.sha256(layers[1]),
    )  # fmt: skip
    assert again.number == made[1].number + 1
    assert snapshots.lowerdirs(chains) == [again.fs, made[0].fs]


def test_overlay_options_limit(tmp_path):
    deep = [f"/var/lib/observe-rt/snapshots/{n}/fs" for n in range(200)]
    with pytest.raises(FailedPrecondition, match="200 layers are .* over the kernel's 4095-byte"):
        overlay_data(deep, "/u", "/w")
    with pytest.raises(InvalidArgument, match="without , : or"):
        overlay_data(["/a:b"], "/u", "/w")
    assert overlay_data(["/l2", "/l1"], "/u", "/w") == (
        "lowerdir=/l2:/l1,upperdir=/u,workdir=/w,index=off"
    )


KILLED_UNPACK = textwrap.dedent(
    """
    import io, sys, time
    from observe_rt.oci.snapshots import SnapshotStore
    from tests.support import tars

    class Stalls(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                print("unpacking", flush=True)
                time.sleep(60)
            return super().read(size)

    layer = tars.many_entries(5000)
    SnapshotStore(sys.argv[1]).ensure(
        tars.sha256(layer), None, lambda: Stalls(layer), layer_digest="sha256:" + "ab" * 32,
        diff_id=tars.sha256(layer))
    """
)


def test_killed_unpack_never_looks_complete_and_is_swept(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_UNPACK, str(tmp_path)], cwd=repo, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "unpacking"
        SnapshotStore(tmp_path)  # a second open leaves a live unpack alone
        staged = [n for n in os.listdir(tmp_path / "snapshots") if n.startswith("tmp-")]
        assert len(staged) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    snapshots = SnapshotStore(tmp_path)
    assert snapshots.list() == []
    assert not [n for n in os.listdir(tmp_path / "snapshots") if n.startswith("tmp-")]


def test_concurrent_pulls_of_one_layer_unpack_it_once(tmp_path):
    content = ContentStore(tmp_path)
    layer = tars.normal_layer()
    ref = LayerRef(content.put_bytes(tars.zst(layer)), tars.sha256(layer))
    snapshots = SnapshotStore(tmp_path)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: snapshots.unpack_image(content, [ref]), range(4)))
    assert len({r[0].number for r in results}) == 1 and len(snapshots.list()) == 1
    usage = image_fs_usage(content, snapshots)
    assert usage.inodes == results[0][0].inodes + 1
    assert usage.bytes == results[0][0].bytes + content.size(ref.digest)
