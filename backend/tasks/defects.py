"""Scratch and dust finder for scanned prints: a mask proposal to review, then inpaint.

No model: backend.defects finds thin bright and dark bars on a plain background, follows them
across the rest of the picture, and finds small specks that stand out from their surroundings.
The output is an 8-bit gray mask (white: a defect), of the input's size; with a selection,
only defects inside it are proposed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import InvalidParameterError
from backend.tasks.context import TaskContext
from backend.tasks.spec import Output, OutputSpec, TaskInputs, TaskResult, TaskSpec, param


@dataclass
class DefectParams:
    sensitivity: float = param(
        0.5,
        "Sensitivity",
        help="How faint a scratch or speck may be and still be found: higher finds more, and "
        "mistakes more of the picture for damage.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        widget="slider",
    )
    scratches: bool = param(True, "Scratches", help="Find thin bright and dark lines and curves.")
    specks: bool = param(True, "Dust", help="Find small bright and dark specks.")
    max_speck: int = param(
        8,
        "Largest speck",
        help="Blobs wider than this are taken for picture, not dust.",
        minimum=2,
        maximum=32,
        unit="px",
        advanced=True,
    )
    min_length: int = param(
        61,
        "Shortest scratch",
        help="Thin lines shorter than this are taken for picture detail (a third of it will do "
        "for one the picture's edge cuts).",
        minimum=9,
        maximum=201,
        step=2,
        unit="px",
        advanced=True,
    )
    grow: int = param(
        1,
        "Grow",
        help="How far the mask reaches past each defect, so an inpaint covers its fringe.",
        minimum=0,
        maximum=16,
        unit="px",
        advanced=True,
    )

    def validate(self) -> None:
        if not 0.0 <= self.sensitivity <= 1.0:
            raise InvalidParameterError(
                f"sensitivity must be between 0 and 1, not {self.sensitivity}.", ""
            )

    def settings(self) -> Any:
        from backend.defects import DefectSettings

        return DefectSettings(
            sensitivity=self.sensitivity,
            scratches=self.scratches,
            specks=self.specks,
            max_speck=self.max_speck,
            min_length=self.min_length,
            grow=self.grow,
        )


def run(
    pixels: np.ndarray, params: DefectParams, ctx: TaskContext, selection: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """((H, W, 1) uint8 mask, 255 on a defect; details: the share of the image flagged)."""
    from backend import defects

    params.validate()
    ctx.check_cancel()
    ctx.progress(0.05, "finding scratches and dust")
    found = defects.propose(pixels, params.settings())
    if selection is not None:
        plane = selection[..., 0] if selection.ndim == 3 else selection
        found &= plane > 0
    ctx.check_cancel()
    ctx.progress(1.0, "done")
    share = float(found.mean())
    return (found.astype(np.uint8) * 255)[..., None], {"flagged": round(share, 5)}


def run_task(ctx: TaskContext, inputs: TaskInputs, params: DefectParams) -> TaskResult:
    mask, details = run(inputs.image, params, ctx, inputs.mask)
    found = bool(mask.any())
    message = (
        f"Marked {details['flagged'] * 100:.2f}% of the image as scratches or dust."
        if found
        else "No scratch or dust found."
    )
    return TaskResult([Output("defects", mask, "Scratches and dust")], details, message=message)


def summarize(details: dict[str, Any]) -> list[str]:
    return [f"{details.get('flagged', 0) * 100:.2f}% of the pixels marked"]


SPEC = TaskSpec(
    id="defects",
    title="Find scratches and dust",
    help="Propose a mask of the scratches, cracks and dust on a scanned print (no model "
    "needed), to review and then fill with Inpaint.",
    params=DefectParams,
    run=run_task,
    outputs=(OutputSpec("defects", "Scratches and dust", kind="mask"),),
    summarize=summarize,
    group="restore",
    order=40,
)
