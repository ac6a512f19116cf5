"""Fuzz target: layer unpacking with hostile tars (oci/unpack.py, oci/applier.py).

Half the inputs are raw bytes handed over as a layer blob (gzip, zstd or plain by magic bytes);
the other half build a tar entry by entry from a vocabulary of traps: '..', absolute names,
symlinks and hardlinks to a file outside, whiteouts in odd places, devices, modes, xattrs,
GNU long names, truncation. Every layer is applied to a fresh snapshot with a lower snapshot
below it and small limits. Documented error: LayerError (an ObserveRtError).

The security property (CVE-2021-32760 and tar-slip classes): whatever the layer, nothing
outside the snapshot changes: the victim file beside it keeps its content, mode, owner and
link count, and the work directory holds nothing new.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tarfile

import zstandard

from tests.fuzz import harness
from tests.support.tars import TarBuilder

with harness.instrumented("tarfile"):
    from observe_rt.oci.unpack import LayerError, Limits, unpack_layer

WORK = harness.scratch("unpack")
OUTSIDE, LOWER, SNAPSHOT = WORK / "outside", WORK / "lower", WORK / "snapshot"
VICTIM = OUTSIDE / "victim"
LIMITS = Limits(max_bytes=1 << 20, max_entries=64, max_path=256, max_header=4096)
DIGEST = "sha256:" + "ab" * 32

COMPONENTS = ["a", "b", "d", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", ".wh..wh.plnk",
              "link", "outside", "victim", "é", "x" * 300]  # fmt: skip
LINK_TARGETS = ["a", "d/a", "link/victim", "../outside/victim", "../../outside", str(VICTIM),
                str(OUTSIDE), str(WORK), "..", ".", "", "d/../../outside/victim"]  # fmt: skip
# Absolute targets point into WORK only: a regression must hit the victim, never the host.
TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z"]  # fmt: skip
XATTRS = [{}, {"user.fuzz": b"1"}, {"trusted.overlay.opaque": b"y"},
          {"security.capability": b"\x01\x00\x00\x02" + b"\x00" * 16}]  # fmt: skip


def _prepare() -> None:
    """A victim beside the snapshot, and a lower snapshot with a directory the layer may need."""
    OUTSIDE.mkdir(exist_ok=True)
    VICTIM.write_text("untouched\n")
    os.chmod(VICTIM, 0o600)
    (LOWER / "d").mkdir(parents=True, exist_ok=True)
    os.chmod(LOWER / "d", 0o750)


_prepare()
VICTIM_STAT = os.stat(VICTIM)


def structured_layer(fdp) -> bytes:
    builder = TarBuilder()
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        parts = [fdp.PickValueInList(COMPONENTS) for _ in range(fdp.ConsumeIntInRange(1, 3))]
        name = fdp.PickValueInList(["", "/", "./"]) + "/".join(parts)
        kind = fdp.PickValueInList(TYPES)
        builder.add(
            name, kind, fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)),
            xattrs=fdp.PickValueInList(XATTRS), mode=fdp.ConsumeIntInRange(0, 0o7777),
            linkname=fdp.PickValueInList(LINK_TARGETS), uid=fdp.PickValueInList([0, 1000]),
            gid=fdp.PickValueInList([0, 1000]), devmajor=1, devminor=fdp.PickValueInList([3, 5]),
            mtime=fdp.ConsumeIntInRange(-1, 2**33),
        )  # fmt: skip
    raw = builder.bytes()
    compression = fdp.ConsumeIntInRange(0, 2)
    if compression == 1:
        raw = gzip.compress(raw)
    elif compression == 2:
        raw = zstandard.ZstdCompressor().compress(raw)
    if fdp.ConsumeIntInRange(0, 7) == 0:
        raw = raw[: fdp.ConsumeIntInRange(0, len(raw))]  # truncated mid-stream
    return raw


def one_input(data: bytes) -> None:
    if data[:1] and data[0] & 1:
        blob = data[1:]
    else:
        try:
            blob = structured_layer(harness.provider(data[1:]))
        except (ValueError, tarfile.TarError, OverflowError, UnicodeError):
            return  # tarfile cannot write that entry; not the code under test
    SNAPSHOT.mkdir()
    try:
        unpack_layer(io.BytesIO(blob), SNAPSHOT, layer_digest=DIGEST, limits=LIMITS,
                     parent_dirs=[LOWER])  # fmt: skip
    except LayerError:
        pass
    finally:
        check_nothing_escaped()
        shutil.rmtree(SNAPSHOT)


def check_nothing_escaped() -> None:
    if not VICTIM.is_file() or VICTIM.is_symlink():
        raise AssertionError(f"{VICTIM}, beside the snapshot, was removed or replaced")
    st = os.stat(VICTIM, follow_symlinks=False)
    same = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_size, st.st_mtime_ns)
    was = (VICTIM_STAT.st_mode, VICTIM_STAT.st_uid, VICTIM_STAT.st_gid, VICTIM_STAT.st_nlink,
           VICTIM_STAT.st_size, VICTIM_STAT.st_mtime_ns)  # fmt: skip
    if same != was or VICTIM.read_text() != "untouched\n":
        raise AssertionError(f"the file beside the snapshot changed: {was} -> {same}")
    for directory, expected in ((WORK, {"outside", "lower", "snapshot"}), (OUTSIDE, {"victim"}),
                                (LOWER, {"d"})):  # fmt: skip
        found = set(os.listdir(directory))
        if found != expected:
            raise AssertionError(f"{directory} changed: {sorted(found ^ expected)}")
    if os.stat(LOWER / "d").st_mode & 0o7777 != 0o750:
        raise AssertionError("the lower snapshot's directory changed mode")


if __name__ == "__main__":
    harness.main("unpack", one_input, [b"\x00" * 64, b"\x02" + b"\xa5" * 256])
    sys.exit(0)
