"""Which files a task command reads and writes: inputs found in files and folders, the output
planned for each (refusing to overwrite), and the file names of further outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """(file, folder it came from) for every image named or found in a named folder."""
    from backend.errors import ImageDecodeError

    found: list[tuple[Path, Path | None]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and f.is_file()
                and not f.name.startswith(".")
            )
            if not files:
                raise ImageDecodeError(
                    f"No images in folder {p}.", f"Supported: {' '.join(IMAGE_EXTENSIONS)}"
                )
            found += [(f, p) for f in files]
        elif p.is_file():
            found.append((p, None))
        else:
            raise ImageDecodeError(f"No such file or folder: {p}.", "Check the path.")
    return found


def plan_outputs(args: argparse.Namespace, inputs: list[tuple[Path, Path | None]]) -> list[Path]:
    from backend.errors import InvalidParameterError
    from backend.imaging import format_for

    ext = "." + (args.format or "png")
    out = Path(args.output) if args.output else None
    single_file = len(inputs) == 1 and inputs[0][1] is None
    if out is not None and single_file and not out.is_dir():
        format_for(out)  # refuse an unknown extension before any work
        if not out.parent.is_dir():
            raise InvalidParameterError(
                f"Output folder {out.parent} does not exist.", "Create it first."
            )
        targets = [out]
    elif out is not None:
        if out.exists() and not out.is_dir():
            raise InvalidParameterError(
                f"{out} is a file, but several inputs need an output folder.",
                "Give a folder with -o.",
            )
        targets = []
        for f, root in inputs:
            rel = f.relative_to(root) if root else Path(f.name)
            targets.append(out / rel.with_suffix(ext))
    else:
        targets = [f.with_name(f"{f.stem}-restora{ext}") for f, _ in inputs]
    if len(set(targets)) != len(targets):
        raise InvalidParameterError(
            "Two inputs would write the same output file.", "Give an output folder with -o."
        )
    existing = [] if args.overwrite else [t for t in targets if t.exists()]
    if existing:
        raise InvalidParameterError(
            f"{existing[0]} already exists"
            + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
            + ".",
            "Choose another output or pass --overwrite.",
        )
    return targets


def output_path(target: Path, output: str, first: bool) -> Path:
    """Where one output of a task goes: the planned file for the first output, and beside it
    `NAME-<output>.ext` for the others."""
    return target if first else target.with_name(f"{target.stem}-{output}{target.suffix}")
