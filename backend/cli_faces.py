"""`restora faces`: restore every face of photos with a GFPGAN, CodeFormer or RestoreFormer
model, optionally upscaling the rest of the photo with a super-resolution model."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    faces = sub.add_parser(
        "faces",
        help="restore the faces in photos",
        description="Find every face, restore it with a face model (GFPGAN, CodeFormer, "
        "RestoreFormer) aligned to the model's template, and paste it back seamlessly.",
    )
    faces.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders")
    faces.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output file (one input) or folder; default: NAME-restora.png beside each input",
    )
    faces.add_argument(
        "-m",
        "--model",
        default=None,
        help="face model from `restora models list` (default: the first installed, GFPGAN first)",
    )
    faces.add_argument(
        "-w",
        "--fidelity",
        type=float,
        default=0.5,
        help="CodeFormer only: 0 restores the most, 1 stays closest to the input (default 0.5)",
    )
    faces.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="how much of the restored face shows over the original, 0..1 (default 1)",
    )
    faces.add_argument(
        "--no-colour-match",
        dest="colour_match",
        action="store_false",
        help="keep the model's colours instead of matching the original face's",
    )
    faces.add_argument(
        "--min-face",
        type=int,
        default=None,
        help="skip faces smaller than this many pixels across (default 20)",
    )
    faces.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="detector confidence needed to count a face, 0..1 (default 0.5)",
    )
    faces.add_argument(
        "-u",
        "--upscale-model",
        default=None,
        help="also upscale the whole photo with this super-resolution model",
    )
    faces.add_argument(
        "-s",
        "--scale",
        type=float,
        default=None,
        help="with --upscale-model: the output scale (default: the model's own)",
    )
    faces.add_argument("-d", "--device", default="auto", help="auto, cpu, cuda or mps")
    faces.add_argument("-p", "--precision", default="auto", help="auto (measured), fp32 or bf16")
    faces.add_argument("--overwrite", action="store_true", help="replace existing output files")
    faces.add_argument(
        "--format",
        default=None,
        choices=["png", "jpg", "webp", "tif"],
        help="output format for folders/default names (default: png)",
    )
    faces.add_argument("-q", "--quiet", action="store_true", help="no progress or status lines")
    from backend.cli import _add_models_dir, add_quality

    add_quality(faces)

    _add_models_dir(faces)
    return faces


def cmd_faces(args: argparse.Namespace) -> int:
    from backend.cli import ProgressBar, _collect_inputs, _plan_outputs, _registry
    from backend.cli_batch import (
        import_torch,
        precheck,
        report,
        status_printer,
        tally,
        write_result,
    )
    from backend.errors import InvalidParameterError, RestoraError
    from backend.imaging import read_image
    from backend.tasks.face_restore import DEFAULT_MIN_FACE, FaceRestoreParams

    say = status_printer(args.quiet)
    params = FaceRestoreParams(
        fidelity=args.fidelity,
        strength=args.strength,
        colour_match=args.colour_match,
        min_face=args.min_face if args.min_face is not None else DEFAULT_MIN_FACE,
        threshold=args.threshold,
        upscale_model=args.upscale_model,
        scale=args.scale,
    )
    params.validate()
    inputs = _collect_inputs(args.inputs)
    targets = _plan_outputs(args, inputs)  # refuses existing outputs unless --overwrite
    jobs, failures = precheck(inputs, targets, say)
    if not jobs:
        return tally(failures, len(inputs))
    import_torch(say)
    registry = _registry(args)
    entry = _face_entry(registry, args.model)
    from backend.models.runtime import load_model
    from backend.tasks import face_restore

    say(f"loading {entry.name}...")
    model = load_model(entry, device=args.device, precision=args.precision, notify=say)
    upscaler = None
    if args.upscale_model:
        up_entry = registry.find(args.upscale_model)
        if up_entry.purpose not in ("SR", "Restoration"):
            raise InvalidParameterError(
                f"{up_entry.name} is a {up_entry.purpose} model, not an upscaler.",
                "Pick an SR model from `restora models list` for --upscale-model.",
            )
        say(f"loading {up_entry.name}...")
        upscaler = load_model(up_entry, device=args.device, precision=args.precision, notify=say)
    say(
        f"face model {entry.name} ({entry.architecture}) on {model.device.type}, "
        f"{model.precision_label} ({model.precision_reason})"
    )
    for src, dst in jobs:
        bar = ProgressBar(src.name, not args.quiet)
        try:
            pixels = read_image(src)
            result = face_restore.run(pixels, model, params, progress=bar, upscaler=upscaler)
            bar.close()
            for face in result.faces:
                x0, y0, x1, y1 = face.box
                state = "restored" if face.restored else f"skipped: {face.note}"
                print(
                    f"  face at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), "
                    f"score {face.score:.2f}: {state}",
                    file=sys.stderr,
                )
            if result.restored_count == 0 and upscaler is None:
                print(f"{src}: {result.message} {dst} was not written.", file=sys.stderr)
                continue
            write_result(dst, result.pixels, 6, args.quality)
            print(f"{src} -> {dst}: {result.message} ({bar.elapsed():.1f}s)", file=sys.stderr)
        except RestoraError as exc:
            bar.close()
            failures += 1
            report(src, exc.message, exc.hint)
    return tally(failures, len(inputs))


def _face_entry(registry: Any, name: str | None) -> Any:
    from backend.errors import InvalidParameterError, ModelNotFoundError
    from backend.models.registry import preferred_entry

    if name:
        entry = registry.find(name)
        if entry.purpose != "FaceSR":
            raise InvalidParameterError(
                f"{entry.name} is a {entry.purpose or 'non-spandrel'} model, not a face "
                "restoration model.",
                "Pick a GFPGAN, CodeFormer or RestoreFormer model from `restora models list`.",
            )
        return entry
    entry = preferred_entry([e for e in registry.entries() if e.usable and e.purpose == "FaceSR"])
    if entry is None:
        raise ModelNotFoundError(
            "No face restoration model is installed.",
            "Put GFPGANv1.4.pth, codeformer.pth or RestoreFormer.pth in the facerestore_models "
            "folder (`restora models dirs`), or run `restora models download gfpgan-v1.4`.",
        )
    return entry
