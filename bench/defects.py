"""The scratch-and-dust finder's precision and recall on real photographs with drawn damage.

Scratches, hairs and dust specks are drawn on scikit-image's photographs
(tests/defect_samples.py); a found pixel within 2 px of a drawn one is right, and a pixel of
the truth within 2 px of a found one is found (see score() for what counts as drawn). Also: how
much of each clean photograph is marked (it should be next to nothing), and the seconds per
megapixel (the quickest of the runs on that photo: the machine is shared, and the quickest run
is the one least slowed by others). Each other figure is the median over the seeds; the last
row is the median over the photos. With git at hand, the detector of an earlier commit
(--baseline) is measured alike.

    python bench/defects.py [--sensitivity 0.5] [--seeds 6] [--baseline REV] [--photos a,b]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: the last commit with the top-hat and Hessian detector this one replaced
BASELINE = "06f45a3"
PHOTOS = ("astronaut", "camera", "coffee")


def load_detector(rev: str) -> types.ModuleType | None:
    """backend/defects.py as it was at `rev`, as a module of its own; None without git."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:backend/defects.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"defects_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:backend/defects.py", "exec"), module.__dict__)
    return module


def measure(
    propose: Callable[[np.ndarray], np.ndarray], photo: np.ndarray, seeds: int
) -> tuple[float, float, float, float]:
    """(precision, recall, share of the clean photo marked, seconds per megapixel)."""
    from tests.defect_samples import draw_defects_with_cover, score

    def planes(image: np.ndarray) -> np.ndarray:
        return image if image.ndim == 3 else image[..., None]

    clean = propose(planes(photo))  # untimed: first-call costs (imports, kernels) are not speed
    seconds = []
    scores = []
    for seed in range(seeds):
        damaged, truth, drawn = draw_defects_with_cover(photo, seed=seed)
        start = time.perf_counter()
        found = propose(planes(damaged))
        seconds.append(time.perf_counter() - start)
        scores.append(score(found, truth, drawn))
    megapixels = photo.shape[0] * photo.shape[1] / 1e6
    return (
        statistics.median(s.precision for s in scores),
        statistics.median(s.recall for s in scores),
        float(clean.mean()),
        min(seconds) / megapixels,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--baseline", default=BASELINE, help="a git revision, or '' for none")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="scikit-image photographs")
    args = parser.parse_args()

    from skimage import data

    from backend import defects
    from backend.devices import cpu_model

    detectors: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    settings = defects.DefectSettings(sensitivity=args.sensitivity)
    detectors.append(("this", lambda pixels: defects.propose(pixels, settings)))
    old = load_detector(args.baseline) if args.baseline else None
    if old is not None:
        old_settings = old.DefectSettings(sensitivity=args.sensitivity)
        detectors.append((args.baseline, lambda pixels: old.propose(pixels, old_settings)))
    elif args.baseline:
        print(f"(no baseline: git could not show {args.baseline}:backend/defects.py)")

    print(f"{cpu_model()}; sensitivity {args.sensitivity}; {args.seeds} seeds; tolerance 2 px")
    print("| photo | detector | precision | recall | marked on the clean photo | s/MP |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name, _ in detectors}
    for photo_name in args.photos.split(","):
        photo = getattr(data, photo_name)()
        for name, propose in detectors:
            p, r, c, s = measure(propose, photo, args.seeds)
            rows[name].append((p, r, c, s))
            print(f"| {photo_name} | {name} | {p:.3f} | {r:.3f} | {c * 100:.2f}% | {s:.2f} |")
    for name, _ in detectors:
        p, r, c, s = (statistics.median(row[i] for row in rows[name]) for i in range(4))
        print(f"| median | {name} | {p:.3f} | {r:.3f} | {c * 100:.2f}% | {s:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
