"""The note an automatic upscale on a CPU gives when it would take long: when it is said, which
model it names, and that a named model or a GPU hears nothing."""

from __future__ import annotations

import pytest

from backend import speed_advice
from backend.models.registry import ModelEntry
from backend.speed_advice import duration, note_for_task, speed_note
from backend.tasks import upscale

TRAITS = {
    "realesrgan-x4plus": ("photo", "best"),
    "ClearReality4x": ("photo", "fast"),
    "4xSPANkendata": ("fast",),
    "realesr-animevideov3-x4": ("illustration", "fast"),
    "spanx2_ch52": ("photo", "fast", "gentle"),
}
RATES = {
    "realesrgan-x4plus": 400.0,
    "ClearReality4x": 20.0,
    "4xSPANkendata": 25.0,
    "realesr-animevideov3-x4": 5.0,
    "spanx2_ch52": 40.0,
}
ARCHITECTURES = {
    "realesrgan-x4plus": "ESRGAN",
    "realesr-animevideov3-x4": "RealESRGAN Compact",
    "spanx2_ch52": "SPAN",
}


def entry(name: str, scale: int = 4, architecture: str = "") -> ModelEntry:
    return ModelEntry(
        name=name,
        path=f"/models/upscale_models/{name}.safetensors",
        folder="upscale_models",
        size_bytes=1,
        usable=True,
        architecture=architecture or ARCHITECTURES.get(name, "SPAN"),
        purpose="SR",
        scale=scale,
    )


def traits(e: ModelEntry) -> tuple[str, ...]:
    return TRAITS.get(e.name, ())


@pytest.fixture(autouse=True)
def measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures of the tests' own, so a re-measurement does not change what they check."""
    monkeypatch.setattr(speed_advice, "MEASURED_SECONDS_PER_MP", dict(RATES))
    monkeypatch.setattr(speed_advice, "MEASURED_THREADS", 2)


INSTALLED = [entry(n, 2 if n == "spanx2_ch52" else 4) for n in RATES]


def test_a_slow_photo_model_on_a_cpu_names_the_fast_photo_model() -> None:
    note = speed_note(INSTALLED[0], INSTALLED, traits, 1000, 1000, "cpu", threads=2)
    assert note is not None
    # 1 MP at 400 s/MP against ClearReality4x's 20: not the anime model, though it is
    # faster, and not the x2 SPAN, whose result would be half the size
    assert (note.model, note.faster) == ("realesrgan-x4plus", "ClearReality4x")
    assert note.seconds == pytest.approx(400.0)
    assert note.faster_seconds == pytest.approx(20.0)
    assert "about 7 min" in note.message and "about 20 s" in note.message
    assert note.to_dict()["faster_model"] == "ClearReality4x"
    # the editors' progress line: the fast model and both times, in under 70 characters here
    assert note.brief == "Faster: ClearReality4x, about 20 s here against about 7 min."


def test_a_short_wait_a_gpu_or_no_faster_model_says_nothing() -> None:
    slow = INSTALLED[0]
    assert speed_note(slow, INSTALLED, traits, 300, 300, "cpu", threads=2) is None  # 36 s
    assert speed_note(slow, INSTALLED, traits, 4000, 3000, "cuda", threads=2) is None
    assert speed_note(slow, [slow], traits, 4000, 3000, "cpu", threads=2) is None
    anime_only = [slow, entry("realesr-animevideov3-x4")]
    assert speed_note(slow, anime_only, traits, 4000, 3000, "cpu", threads=2) is None


def test_more_threads_shorten_the_estimate() -> None:
    # 0.25 MP: 100 s on 2 threads, 25 s on 8, which is short enough to say nothing
    assert speed_note(INSTALLED[0], INSTALLED, traits, 500, 500, "cpu", threads=2) is not None
    assert speed_note(INSTALLED[0], INSTALLED, traits, 500, 500, "cpu", threads=8) is None


def test_a_file_of_ones_own_is_estimated_by_its_architecture() -> None:
    mine = entry("4x-UltraSharp", architecture="ESRGAN")
    own = {**TRAITS, "4x-UltraSharp": ("photo",)}
    note = speed_note(
        mine, [mine, *INSTALLED], lambda e: own.get(e.name, ()), 1000, 1000, "cpu", threads=2
    )
    assert note is not None and note.faster == "ClearReality4x"
    unknown = entry("SwinIR-L", architecture="SwinIR")  # nothing comparable was measured
    assert speed_note(unknown, INSTALLED, traits, 4000, 3000, "cpu", threads=2) is None


def test_only_an_automatic_upscale_is_advised() -> None:
    args = (INSTALLED[0], INSTALLED, traits, 1000, 1000, "cpu", 2)
    assert note_for_task(upscale.SPEC, None, *args) is not None
    assert note_for_task(upscale.SPEC, "", *args) is not None
    assert note_for_task(upscale.SPEC, "realesrgan-x4plus", *args) is None  # the user chose


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (0.2, 42, 200, 7200)] == ["1 s", "42 s", "3 min", "2.0 h"]


def test_other_tasks_are_not_advised() -> None:
    from backend.tasks import denoise

    args = (INSTALLED[0], INSTALLED, traits, 1000, 1000, "cpu", 2)
    assert note_for_task(denoise.SPEC, None, *args) is None
