"""Regenerate the Python code for protos/ into jobqueue/: `python scripts/generate_protos.py`.

The output is committed. tests/contract/test_generated_code.py regenerates into a temporary folder
and fails when the committed files differ, so the wire contract and the code cannot drift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/ into out_dir; return the files written."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for proto in protos:
        relative = proto.parent.relative_to(PROTO_ROOT)
        # Every folder of the generated package path is a Python package.
        for depth in range(1, len(relative.parts) + 1):
            init = out_dir.joinpath(*relative.parts[:depth], "__init__.py")
            if not init.exists():
                init.write_text("")
        package_dir = out_dir / relative
        written += [package_dir / f"{proto.stem}{suffix}" for suffix in GENERATED_SUFFIXES]
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=ROOT, help="output root (default: the repository)"
    )
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    main()
