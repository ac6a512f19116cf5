"""Regenerate the Python code of the CRI runtime.v1 API from api.proto.

    python -m observe_rt.cri.proto.generate            # rewrite observe_rt/cri/v1/api_pb2*.py*
    python -m observe_rt.cri.proto.generate --check    # exit 1 if the committed files are stale

The proto is staged as `observe_rt/cri/v1/api.proto` before protoc runs, so the descriptor's file
name is unique in the process-wide descriptor pool (a bare "api.proto" could clash with another
library's) and the message classes report `observe_rt.cri.v1.api_pb2` as their module. The gRPC
module's import of api_pb2 is then made package-relative.

Needs grpcio-tools (a dev dependency); the daemon itself never imports this module.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

PROTO = Path(__file__).resolve().with_name("api.proto")
PACKAGE_DIR = PROTO.parent.parent / "v1"
GENERATED = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")
STAGED_NAME = "observe_rt/cri/v1/api.proto"

_ABSOLUTE_IMPORT = b"from observe_rt.cri.v1 import api_pb2 as "
_RELATIVE_IMPORT = b"from . import api_pb2 as "


def run_protoc(proto: Path, out_args: list[str]) -> None:
    """Run grpcio-tools' bundled protoc on `proto`, staged under STAGED_NAME."""
    from grpc_tools import protoc  # dev dependency, imported only when generating

    with tempfile.TemporaryDirectory(prefix="observe-rt-proto-") as tmp:
        staged = Path(tmp) / STAGED_NAME
        staged.parent.mkdir(parents=True)
        shutil.copyfile(proto, staged)
        rc = protoc.main(["grpc_tools.protoc", f"-I{tmp}", *out_args, str(staged)])
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc}); its message is above")


def render(proto: Path = PROTO) -> dict[str, bytes]:
    """Generated file name -> contents, with the gRPC module's import made relative."""
    with tempfile.TemporaryDirectory(prefix="observe-rt-gen-") as tmp:
        run_protoc(proto, [f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--pyi_out={tmp}"])
        gen_dir = Path(tmp) / Path(STAGED_NAME).parent
        files = {name: (gen_dir / name).read_bytes() for name in GENERATED}
    grpc_code = files["api_pb2_grpc.py"]
    if grpc_code.count(_ABSOLUTE_IMPORT) != 1:
        raise RuntimeError("api_pb2_grpc.py: expected exactly one import of api_pb2 to rewrite")
    files["api_pb2_grpc.py"] = grpc_code.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
    return files


def generate(out_dir: Path = PACKAGE_DIR, proto: Path = PROTO) -> list[Path]:
    """Write the generated files into `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in render(proto).items():
        path = out_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


def stale_files(out_dir: Path = PACKAGE_DIR, proto: Path = PROTO) -> list[str]:
    """Names of generated files in `out_dir` that differ from a fresh generation."""
    fresh = render(proto)
    return [
        name
        for name, data in fresh.items()
        if not (out_dir / name).is_file() or (out_dir / name).read_bytes() != data
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="output directory")
    parser.add_argument(
        "--check", action="store_true", help="only report whether the files in --out are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            print(f"stale: {args.out / name} (run python -m observe_rt.cri.proto.generate)")
        return 1 if stale else 0
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
