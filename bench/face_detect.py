#!/usr/bin/env python3
"""Face detection benchmark: seconds per megapixel of the whole detector, Restora vs LiteRT.

    .venv/bin/python bench/face_detect.py [--runs 3] [--sizes 512,1024,2048,3000] [--threads N]

The same pipeline (BlazeFace on the whole image and the pyramid's windows, weighted NMS, the
face mesh) runs three times on each image: with Restora's port of the three .tflite models as
it runs by default (its compiled kernels, backend/faces/native.py, where the machine has a C
compiler), with the same port on PyTorch's kernels only (as with RESTORA_NATIVE_KERNELS=0),
and with Google's interpreter (ai-edge-litert, XNNPACK, the same number of threads) running
the files themselves, the baseline, measured in the same run. Images: scikit-image's astronaut
at 512 and enlarged to 1024, then pasted at half size into larger noisy canvases (3:2) where
the pyramid's windows must find her. A second table times each model alone. Figures are
medians of runs that alternate between the three.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.timing import interleaved_medians  # noqa: E402


def photo(side: int) -> np.ndarray:
    import cv2
    from skimage import data

    img = data.astronaut()
    if side <= 1024:
        return img if side == 512 else cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
    canvas = np.random.default_rng(0).normal(128, 30, (side * 2 // 3, side, 3)).clip(0, 255)
    canvas = canvas.astype(np.uint8)
    small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    canvas[side // 3 : side // 3 + 256, side // 2 : side // 2 + 256] = small
    return canvas


class LiteRTModel:
    """Google's interpreter behind the PyTorch module's call: NHWC batch in, outputs in the
    module's order out. The files fix the batch at 1, so a batch runs image by image."""

    def __init__(self, path: Path, output_names: list[str], threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        by_name = {o["name"]: o["index"] for o in self.interpreter.get_output_details()}
        self.outputs = [by_name[n] for n in output_names]

    def __call__(self, x):
        import torch

        results: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for item in x.cpu().numpy():
            self.interpreter.set_tensor(self.input, item[None])
            self.interpreter.invoke()
            for out, index in zip(results, self.outputs):
                out.append(self.interpreter.get_tensor(index).copy())
        return [torch.from_numpy(np.concatenate(r)) for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="512,1024,2048,3000", help="image widths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from backend.faces.detect import FaceDetector

    threads = torch.get_num_threads()
    ours = FaceDetector(args.device)
    torch_only = FaceDetector(args.device)
    for module in torch_only.models.values():
        module.native = False
    google = FaceDetector("cpu")
    google.models = {
        key: LiteRTModel(path, ours.models[key].output_names, threads)
        for key, path in ours.files.items()
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from backend.faces import native

    print(
        f"device {ours.device.type}, {threads} threads (LiteRT: {threads}), "
        f"load average {load:.1f}; median of {args.runs}; "
        f"compiled kernels: {native.status()}"
    )

    rows = []
    for width in (int(s) for s in args.sizes.split(",")):
        img = photo(width)
        mp = img.shape[0] * img.shape[1] / 1e6
        detectors = (ours, torch_only, google)
        found = [len(d.detect(img)) for d in detectors]
        times = interleaved_medians(
            [lambda d=d, img=img: d.detect(img) for d in detectors], args.runs
        )
        rows.append((f"{img.shape[1]}x{img.shape[0]}", mp, found, *times))
        figures = " / ".join(f"{t:.3f}" for t in times)
        print(f"  {rows[-1][0]}: {figures} s", file=sys.stderr, flush=True)

    print(
        f"\n{'image':>10} {'MP':>5} faces   {'Restora s/MP':>12} {'ratio':>6}  "
        f"{'PyTorch-only s/MP':>17} {'ratio':>6}  {'LiteRT s/MP':>11}"
    )
    for name, mp, found, t_ours, t_torch, t_google in rows:
        print(
            f"{name:>10} {mp:5.2f} {'/'.join(map(str, found)):<7} {t_ours / mp:12.3f} "
            f"{t_ours / t_google:5.2f}x  {t_torch / mp:17.3f} {t_torch / t_google:5.2f}x  "
            f"{t_google / mp:11.3f}"
        )

    print(
        f"\n{'model (one inference)':<36} {'Restora ms':>10} {'PyTorch-only':>12} {'LiteRT ms':>10}"
    )
    for key in ("full", "short", "mesh"):
        module, slow, baseline = ours.models[key], torch_only.models[key], google.models[key]
        x = torch.rand(1, *module.input_shapes[0][1:])
        with torch.inference_mode():
            t_ours, t_torch, t_google = interleaved_medians(
                [
                    lambda m=module, x=x: m(x.to(ours.device)),
                    lambda m=slow, x=x: m(x.to(ours.device)),
                    lambda b=baseline, x=x: b(x),
                ],
                args.runs * 5,
            )
        print(
            f"{ours.files[key].name:<36} {t_ours * 1e3:10.2f} {t_torch * 1e3:12.2f} "
            f"{t_google * 1e3:10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
