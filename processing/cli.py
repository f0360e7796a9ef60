"""`python -m processing restore FILES... --out DIR`: the engine on local files, no server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from .options import JobOptions


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = JobOptions()
    parser.add_argument("files", nargs="+", type=Path, help="JPEG, PNG or WebP images")
    parser.add_argument("--out", type=Path, default=Path("restored"), help="output directory (default: restored/)")
    parser.add_argument("--model", default=defaults.model, help="GFPGAN version: 1.3 or 1.4")
    parser.add_argument("--upscale", type=int, default=defaults.upscale, help="1-4")
    parser.add_argument("--only-center-face", action="store_true")
    parser.add_argument("--aligned", action="store_true", help="inputs are aligned 512x512 faces")
    parser.add_argument("--strength", type=float, default=defaults.strength, help="0 (original) to 1 (restored)")
    parser.add_argument("--blend-mask", default=defaults.blend_mask, help="parse | box")
    parser.add_argument("--format", dest="output_format", default=defaults.output_format, help="png | jpeg | webp")
    parser.add_argument("--quality", type=int, default=defaults.quality)


def restore_files(args) -> int:
    from tqdm import tqdm

    from . import images
    from .config import get_settings
    from .engine import Engine
    from .weights import WeightsError

    try:
        options = JobOptions(
            model=args.model,
            upscale=args.upscale,
            only_center_face=args.only_center_face,
            aligned=args.aligned,
            strength=args.strength,
            blend_mask=args.blend_mask,
            output_format=args.output_format,
            quality=args.quality,
        )
    except ValidationError as error:
        for problem in error.errors():
            print(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}", file=sys.stderr)
        return 2
    settings = get_settings()
    try:
        engine = Engine.from_settings(settings)
    except WeightsError as error:
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
            decoded = images.decode(path.read_bytes(), settings.max_pixels)
            result = engine.restore(decoded.pixels, options.restore_options(settings.max_faces))
            target = args.out / f"{path.stem}-restored.{images.extension(options.output_format)}"
            target.write_bytes(images.encode(result.image, options.output_format, options.quality))
            bar.write(f"{path} -> {target} ({len(result.faces)} faces)")
        except (OSError, images.ImageRejected) as error:
            failures[path] = str(error)
            bar.write(f"{path}: FAILED: {error}")
    if failures:
        print(f"{len(failures)} of {len(args.files)} files failed:", file=sys.stderr)
        for path, reason in failures.items():
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0
