"""``python -m processing.checkpoints fetch | verify | standin | export``: the build-time steps
that turn checkpoints into the model store the service runs (they need torch; the service
does not)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import weights


def cmd_fetch(args) -> int:
    try:
        weights.fetch(args.dir, source_dir=args.source, include_optional=args.all)
    except (weights.WeightsError, OSError) as error:
        print(f"weights fetch failed: {error}", file=sys.stderr)
        return 1
    return cmd_verify(args)


def cmd_verify(args) -> int:
    statuses = weights.check(args.dir, full_hash=True)
    kind = "stand-in" if weights.is_standin_dir(args.dir) else "official"
    for status in statuses:
        print(f"{'ok     ' if status.ok else 'BROKEN '} {status.name} {status.problem}")
    required = {name for name, (_, _, req) in weights.expected_files(args.dir).items() if req}
    if any(not s.ok for s in statuses) or not required <= {s.name for s in statuses}:
        print(f"{args.dir}: checkpoints are missing or corrupt; run `python -m processing.checkpoints fetch`", file=sys.stderr)
        return 1
    print(f"{args.dir}: {kind} checkpoints verified (sha256)")
    return 0


def cmd_standin(args) -> int:
    from .standin import build_standin

    print("Building STAND-IN weights: real architectures, random parameters, meaningless output.")
    build_standin(args.dir, seed=args.seed)
    return 0


def cmd_export(args) -> int:
    from .export import export_store

    try:
        export_store(args.dir, args.models_dir or args.dir / "onnx", [v.strip() for v in args.models.split(",")],
                     weights="fp32" if args.fp32_weights else "fp16")
    except weights.WeightsError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processing.checkpoints", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--dir", type=Path, default=Path("weights"), help="checkpoints directory (default: weights)")
        sub.set_defaults(run=run)
        return sub

    fetch = command("fetch", cmd_fetch, "download (or copy) the official checkpoints, verifying each SHA-256")
    fetch.add_argument("--from", dest="source", type=Path, help="copy from this directory instead of downloading")
    fetch.add_argument("--all", action="store_true", help="also the optional Real-ESRGAN background model")
    command("verify", cmd_verify, "check every checkpoint against its SHA-256")
    standin = command("standin", cmd_standin, "build stand-in checkpoints (random parameters, meaningless output)")
    standin.add_argument("--seed", type=int, default=0)
    export = command("export", cmd_export, "export the checkpoints to the model store the service runs")
    export.add_argument("--models-dir", type=Path, help="where the service reads them (default: DIR/onnx)")
    export.add_argument("--models", default="1.4,1.3", help="GFPGAN versions to export, those present (default 1.4,1.3)")
    export.add_argument("--fp32-weights", action="store_true",
                        help="store the weights in fp32, as the checkpoints hold them (twice the size; default fp16)")
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
