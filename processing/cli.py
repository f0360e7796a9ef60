"""`python -m processing restore FILES... --out DIR`: the engine on local files, no server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from .jobs.options import JobOptions


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per JobOptions field, so the CLI offers exactly what the API offers."""
    parser.add_argument("files", nargs="+", type=Path, help="JPEG, PNG or WebP images")
    parser.add_argument("--out", type=Path, default=Path("restored"), help="output directory (default: restored/)")
    for name, spec in JobOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if spec.annotation is bool:
            if spec.default:
                parser.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false",
                                    help=f"do not: {spec.description}")
            else:
                parser.add_argument(flag, dest=name, action="store_true", help=spec.description)
        else:
            parser.add_argument(flag, dest=name, default=spec.default, help=f"{spec.description} (default: {spec.default})")


def restore_files(args) -> int:
    from tqdm import tqdm

    from .config import get_settings
    from .engine.pipeline import Engine
    from .engine.store import ModelsError
    from .images import codec
    from .images.preprocess import map_box, preprocess

    try:
        options = JobOptions(**{name: getattr(args, name) for name in JobOptions.model_fields})
    except ValidationError as error:
        for problem in error.errors():
            print(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}", file=sys.stderr)
        return 2
    settings = get_settings()
    try:
        engine = Engine.from_settings(settings)
    except (ModelsError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    if engine.standin:
        print("WARNING: stand-in weights (random parameters): the output is meaningless.", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    failures = {}
    bar = tqdm(args.files, unit="image", file=sys.stderr)
    for path in bar:
        bar.set_description(path.name[:30])
        try:
            decoded = codec.decode(path.read_bytes(), settings.max_pixels, auto_orient=options.auto_orient)
            pixels, steps = preprocess(decoded.pixels, options)
            restore_options, unframed = options.restore_options(settings.max_faces, decoded.width, decoded.height)
            if options.detect_only:
                for index, face in enumerate(engine.detect(pixels, restore_options)):
                    box = ", ".join(f"{v:.0f}" for v in map_box(face.box, unframed))
                    bar.write(f"{path}: face {index}: box {box}, score {face.score:.3f}")
                continue
            result = engine.restore(pixels, restore_options)
            target = args.out / f"{path.stem}-restored.{codec.extension(options.output_format)}"
            target.write_bytes(codec.encode(result.image, options.output_format, options.quality))
            done = ", ".join(steps + [f"{len(result.faces)} faces"])
            bar.write(f"{path} -> {target} ({done})")
        except (OSError, codec.ImageRejected) as error:
            failures[path] = str(error)
            bar.write(f"{path}: FAILED: {error}")
    if failures:
        print(f"{len(failures)} of {len(args.files)} files failed:", file=sys.stderr)
        for path, reason in failures.items():
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
