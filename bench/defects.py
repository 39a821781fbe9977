"""The scratch-and-dust finder's precision and recall on real photographs with drawn damage.

Scratches (lines and curves 1-3 px wide, near white or near black) and dust specks are drawn
on scikit-image's astronaut, camera and coffee (tests/defect_samples.py); a found pixel within
2 px of a drawn one is right, and a drawn one within 2 px of a found one is found. Also: how
much of each clean photograph is marked (it should be next to nothing), and the speed.

    python bench/defects.py [--sensitivity 0.5] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensitivity", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    from skimage import data

    from backend import defects
    from backend.devices import cpu_model
    from tests.defect_samples import draw_defects, score

    settings = defects.DefectSettings(sensitivity=args.sensitivity)
    print(f"{cpu_model()}; sensitivity {args.sensitivity}; tolerance 2 px")
    print("| photo | precision | recall | marked on the clean photo | s/MP |")
    print("| --- | --- | --- | --- | --- |")
    for name in ("astronaut", "camera", "coffee"):
        photo = getattr(data, name)()
        pixels = photo if photo.ndim == 3 else photo[..., None]
        start = time.perf_counter()
        clean = defects.propose(pixels, settings)
        per_mp = (time.perf_counter() - start) / (photo.shape[0] * photo.shape[1] / 1e6)
        scores = []
        for seed in range(args.seeds):
            damaged, truth = draw_defects(photo, seed=seed)
            found = defects.propose(damaged if damaged.ndim == 3 else damaged[..., None], settings)
            scores.append(score(found, truth))
        p = statistics.median(s.precision for s in scores)
        r = statistics.median(s.recall for s in scores)
        print(f"| {name} | {p:.3f} | {r:.3f} | {clean.mean() * 100:.2f}% | {per_mp:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
