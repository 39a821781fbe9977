"""A note for an upscale on a CPU that would take long: how long, and how long a fast model
that is installed would take instead.

Only said when the model was chosen for the user (no model named: the task's default, the
editors' "Recommended"), and never acted on: the model that runs is still the one chosen.
The estimate is the input's megapixels times the model's seconds per megapixel as measured
on the development machine (or, for a file of one's own, those of the default of its
architecture), scaled by the threads PyTorch uses here; it is rough, hence "about".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shared.words import duration

#: seconds per input megapixel on the CPU they were measured on, an AMD EPYC with 2 threads,
#: quiet, by the offline defaults' names; each model's fp32 figure, the slower of the two
#: precisions Restora may pick on a CPU, so the note errs on the long side (bf16, where this
#: machine's measurement picks it, is 2-2.5x faster). From the README's Performance tables:
#: realesrgan-x4plus and realesr-animevideov3-x4 from bench/upscale.py (whole image at 128 px:
#: 5.02 s and 0.133 s), ClearReality4x and realcugan-x4-conservative from bench/ncnn_models.py
MEASURED_SECONDS_PER_MP: dict[str, float] = {
    "realesrgan-x4plus": 310.0,
    "ClearReality4x": 8.0,
    "realesr-animevideov3-x4": 8.1,
    "realcugan-x4-conservative": 24.2,
}
MEASURED_THREADS = 2
#: a file of one's own: the figure of the default with the same architecture (for RRDBNet
#: the 23-block x4plus, so a smaller ESRGAN is overestimated rather than under)
ARCHITECTURE_REFERENCE: dict[str, str] = {
    "ESRGAN": "realesrgan-x4plus",
    "SPAN": "ClearReality4x",
    # 16 convolutions; realesr-general-x4v3 has 32, so it is underestimated about 2x, which
    # still ranks it far ahead of RRDBNet
    "RealESRGAN Compact": "realesr-animevideov3-x4",
    "RealCUGAN": "realcugan-x4-conservative",
}
#: above this estimate a faster model is suggested
SLOW_SECONDS = 60.0
#: ...when it is at least this many times faster
MIN_SPEEDUP = 3.0
#: what a model is made for, among the traits the editors show; a suggestion keeps it
SUBJECT_TRAITS = ("photo", "illustration")


@dataclass(frozen=True)
class SpeedNote:
    model: str
    seconds: float
    faster: str
    faster_seconds: float
    megapixels: float

    @property
    def message(self) -> str:
        return (
            f"{self.model} would take about {duration(self.seconds)} on this CPU for this "
            f"{self.megapixels:.1f} MP image; {self.faster}, a fast model that is installed, "
            f"about {duration(self.faster_seconds)}."
        )

    @property
    def brief(self) -> str:
        """The note in a few words, for an editor's progress line beside the time (a docked
        panel has room for two or three short lines)."""
        return (
            f"Faster: {self.faster}, about {duration(self.faster_seconds)} here against about "
            f"{duration(self.seconds)}."
        )

    def to_dict(self) -> dict[str, Any]:
        """What a job's result details carry, for the editors to show."""
        return {
            "model": self.model,
            "seconds": round(self.seconds, 1),
            "faster_model": self.faster,
            "faster_seconds": round(self.faster_seconds, 1),
            "message": self.message,
            "brief": self.brief,
        }


def seconds_per_mp(name: str, architecture: str) -> float | None:
    """The measured figure of a default by its name, else its architecture's; None when
    nothing comparable was measured (no guess is better than a wrong one)."""
    if name in MEASURED_SECONDS_PER_MP:
        return MEASURED_SECONDS_PER_MP[name]
    reference = ARCHITECTURE_REFERENCE.get(architecture)
    return MEASURED_SECONDS_PER_MP.get(reference) if reference else None


def estimate_seconds(entry: Any, megapixels: float, threads: int) -> float | None:
    """Seconds for `entry` (a registry ModelEntry) on an input of `megapixels` here.

    Scaled linearly by threads, which flatters a many-core CPU: the note then comes only
    when the wait is long even so."""
    rate = seconds_per_mp(entry.name, entry.architecture)
    if rate is None:
        return None
    return rate * megapixels * MEASURED_THREADS / max(1, threads)


def _scale(entry: Any) -> int:
    return int(entry.output_scale or entry.scale or 0)


def faster_model(
    entry: Any,
    candidates: Iterable[Any],
    traits: Callable[[Any], tuple[str, ...]],
    megapixels: float,
    threads: int,
) -> tuple[Any, float] | None:
    """The quickest installed model marked fast, of the same scale and made for the same
    subject as `entry` (a photo model is never answered with an anime one); None if none."""
    subjects = set(traits(entry)) & set(SUBJECT_TRAITS)
    best: tuple[Any, float] | None = None
    for other in candidates:
        if other.name == entry.name or _scale(other) != _scale(entry):
            continue
        words = set(traits(other))
        if "fast" not in words or (subjects and not subjects & words):
            continue
        seconds = estimate_seconds(other, megapixels, threads)
        if seconds is not None and (best is None or seconds < best[1]):
            best = (other, seconds)
    return best


def speed_note(
    entry: Any,
    candidates: Iterable[Any],
    traits: Callable[[Any], tuple[str, ...]],
    width: int,
    height: int,
    device_type: str,
    threads: int,
) -> SpeedNote | None:
    """The note for upscaling a `width` x `height` image with `entry` on `device_type`, or
    None: on a GPU, for a short wait, or when no much faster model is installed."""
    if device_type != "cpu":
        return None
    megapixels = width * height / 1e6
    seconds = estimate_seconds(entry, megapixels, threads)
    if seconds is None or seconds <= SLOW_SECONDS:
        return None
    found = faster_model(entry, candidates, traits, megapixels, threads)
    if found is None or found[1] * MIN_SPEEDUP > seconds:
        return None
    return SpeedNote(entry.name, seconds, found[0].name, found[1], megapixels)


def note_for_task(
    spec: Any,
    named: str | None,
    entry: Any,
    entries: Iterable[Any],
    traits: Callable[[Any], tuple[str, ...]],
    width: int,
    height: int,
    device_type: str,
    threads: int,
) -> SpeedNote | None:
    """The note for a job of task `spec`, or None: only an upscale whose model was chosen
    for the user (`named` empty) is advised; the candidates are what the task can run."""
    from backend.model_choice import slot_accepts

    if spec.id != "upscale" or named or entry is None or spec.model is None:
        return None
    fitting = [e for e in entries if slot_accepts(spec.model, e)]
    return speed_note(entry, fitting, traits, width, height, device_type, threads)


def traits_lookup(
    folders: list[Any], catalog: str | None = None
) -> Callable[[Any], tuple[str, ...]]:
    """entry -> the traits the editors show for it (the catalog's, or the defaults' own).

    The catalog and the defaults' index are read at the first question, not before: most
    jobs run on a GPU or finish soon, and never ask."""
    labels: list[Any] = []

    def traits(entry: Any) -> tuple[str, ...]:
        if not labels:
            from backend.errors import RestoraError
            from backend.models.catalog import load_catalog
            from backend.models.labels import ModelLabels

            try:
                loaded = load_catalog(catalog)
            except RestoraError:  # a broken catalog costs the advice, never the job
                loaded = None
            labels.append(ModelLabels(loaded, folders))
        return labels[0].words(entry.name, entry.folder, entry.path).traits

    return traits
