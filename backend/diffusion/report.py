"""What the command line prints about a diffusion result: the seed and how far it moved
(colour.fidelity_lines), then the faces, the ControlNet, the VAE plan and any notes."""

from __future__ import annotations

from typing import Any

from backend.diffusion.colour import fidelity_lines


def summary_lines(details: dict[str, Any]) -> list[str]:
    lines = fidelity_lines(details)
    faces = details.get("faces")
    if isinstance(faces, dict) and faces.get("mode") == "lower":
        found = faces.get("found", 0)
        lines.append(
            f"faces: {found} found, refined at {faces.get('strength', 0):g} of the strength"
            if found
            else "faces: none found"
        )
    if "faces_restored" in details:
        lines.append(
            f"faces: {details['faces_restored']} restored with {details.get('face_model', '')}"
        )
    if details.get("controlnet"):
        lines.append(f"ControlNet: {details['controlnet']}")
    if details.get("vae") and details["vae"] != "whole":
        lines.append(f"VAE: {details['vae']}")
    lines += [f"note: {n}" for n in details.get("notes", [])]
    return lines
