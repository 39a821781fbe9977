"""What a finished job says besides its layer: the seed that reproduces it and, for a task
that redraws (diffusion), how far the result moved from the input, so an artist sees at once
whether a refine stayed faithful; how many reference images the model looked at, and the
task's own note (a model that takes one picture left the references out); and, after an
automatic upscale that took long on a CPU, the fast model that is installed and how long it
would take (the backend's speed note), so the next run can be quicker. Both editors show
these words."""

from __future__ import annotations

from typing import Any

from ..shared.words import duration

#: the PSNR the backend reports for an unchanged image
IDENTICAL_DB = 99.0


def result_notes(details: dict[str, Any]) -> list[str]:
    """Short sentences from a result's details; empty when it reports neither."""
    notes = []
    seed = details.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        notes.append(f"Seed {seed}.")
    fidelity = details.get("fidelity")
    if isinstance(fidelity, dict) and "psnr_db" in fidelity:
        psnr = float(fidelity["psnr_db"])
        changed = float(fidelity.get("changed_share", 0.0)) * 100
        if psnr >= IDENTICAL_DB:
            notes.append("Identical to the input.")
        else:
            notes.append(f"Moved from the input: PSNR {psnr:.1f} dB, SSIM "
                         f"{float(fidelity.get('ssim', 0.0)):.3f}, {changed:.1f}% of pixels "
                         "changed.")
    used = details.get("references")
    if isinstance(used, int) and not isinstance(used, bool) and used > 0:
        notes.append(f"{used} reference image{'s' if used != 1 else ''} used.")
    note = details.get("note")
    if isinstance(note, str) and note.strip():
        notes.append(note.strip())
    skipped = details.get("notes")
    if isinstance(skipped, dict) and skipped:
        # a chain's stages that did not run; the folder it looked in is for the README
        why = [f"{stage} ({str(note).split(' (')[0]})" for stage, note in skipped.items()]
        notes.append(f"Skipped: {', '.join(why)}.")
    speed = details.get("speed_note")
    if isinstance(speed, dict) and speed.get("faster_model") and speed.get("model"):
        try:
            slow, fast = float(speed["seconds"]), float(speed["faster_seconds"])
        except (KeyError, TypeError, ValueError):
            return notes  # a note this plug-in cannot read says nothing
        # short: the line above names the model that ran, and a docked panel is narrow
        notes.append(f"Faster: {speed['faster_model']}, about {duration(fast)} here against "
                     f"about {duration(slow)}; choose it in the model list.")
    return notes

