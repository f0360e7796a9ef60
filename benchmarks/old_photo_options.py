"""What the old-photo options cost: tone (color=auto on a grey photo, color=keep) and texture,
per photo, on the engine the service runs (OpenVINO, stand-in weights, pinned landmarks).

    .venv/bin/python -m benchmarks.old_photo_options [--repeats 3]

Each case is run with the options off (color=restore, texture=0) and on, interleaved, and the
engine's own stage timings give the cost: "tone" (reading the photo and toning each face)
and "texture" (per face). Medians over the repeats; wall time of the whole restore too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "old_photo_options.json"
VARIANTS = {
    "off": {"color": "restore", "texture": 0.0},
    "auto on a grey photo": {"color": "auto", "texture": 0.0},
    "keep": {"color": "keep", "texture": 0.0},
    "texture 0.5": {"color": "restore", "texture": 0.5},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks.inputs import build
    from processing.engine.detectors import Face
    from processing.engine.pipeline import Engine, RestoreOptions
    from tests.conftest import STANDIN_DIR

    engine = Engine.open(STANDIN_DIR / "onnx", threads=2, allow_standin=True)
    scratch = Path(tempfile.mkdtemp(prefix="old-photo-bench-"))
    cases = [c for c in build(scratch) if c.name in ("1face-1024", "4faces-12mp")]
    rows = []
    for case in cases:
        image = cv2.imread(str(scratch / case.file))
        faces = [Face((*np.min(m, axis=0), *np.max(m, axis=0)), 1.0, np.asarray(m, np.float64)) for m in case.landmarks]
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        samples: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for repeat in range(args.repeats):
            for name, options in (VARIANTS.items() if repeat % 2 == 0 else reversed(VARIANTS.items())):
                pixels = grey if name == "auto on a grey photo" else image
                started = time.perf_counter()
                result = engine.restore(pixels, RestoreOptions(blend_mask="parse", **options), faces=faces)
                samples[name].append({"wall": time.perf_counter() - started, "tone": result.timings.get("tone", 0.0),
                                      "texture": result.timings.get("texture", 0.0)})
        for name, runs in samples.items():
            row = {"case": case.name, "faces": len(faces), "variant": name,
                   **{key: round(statistics.median(r[key] for r in runs), 4) for key in ("wall", "tone", "texture")}}
            rows.append(row)
            print(f"{case.name:12} {name:22} wall {row['wall']:6.2f} s  tone {row['tone'] * 1000:6.1f} ms  "
                  f"texture {row['texture'] * 1000:6.1f} ms", flush=True)
    if not args.no_save:
        RESULTS.write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
