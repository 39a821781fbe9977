"""The upscale task: channels, depth and alpha survive; scale, width, cancel and OOM behave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.errors import CancelledError, ImageTooLargeError, InvalidParameterError
from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
from backend.tasks.upscale import CancelToken, UpscaleParams
from tests.model_zoo import save_tiny


@pytest.fixture
def tiny(models_root: Path):
    save_tiny("compact", models_root)
    return load_model(Registry([models_root]).find("tiny-compact"), device="cpu")


def test_rgb_x4_looks_like_the_input(tiny, face_crop) -> None:
    out = upscale.run(face_crop, tiny, UpscaleParams())
    assert out.shape == (face_crop.shape[0] * 4, face_crop.shape[1] * 4, 3)
    # a Compact network adds the nearest-upscaled input to its output
    small = out.reshape(face_crop.shape[0], 4, face_crop.shape[1], 4, 3).mean(axis=(1, 3))
    assert np.corrcoef(small.ravel(), face_crop.ravel())[0, 1] > 0.9


def test_alpha_is_upscaled_not_dropped(tiny, face_crop) -> None:
    h, w = face_crop.shape[:2]
    alpha = np.zeros((h, w, 1), np.uint8)
    alpha[:, w // 2 :] = 255
    rgba = np.concatenate([face_crop, alpha], axis=2)
    for mode in ("model", "resize"):
        out = upscale.run(rgba, tiny, UpscaleParams(alpha=mode))
        assert out.shape == (h * 4, w * 4, 4)
        assert out[:, : w * 2 - 8, 3].max() <= 40, mode  # transparent half stays transparent
        assert out[:, w * 2 + 8 :, 3].min() >= 215, mode


def test_opaque_rgba_stays_rgba(tiny, face_crop) -> None:
    rgba = np.concatenate([face_crop, np.full((*face_crop.shape[:2], 1), 255, np.uint8)], 2)
    out = upscale.run(rgba, tiny, UpscaleParams())
    assert out.shape[2] == 4 and out[..., 3].min() == 255


def test_gray_and_16bit(tiny, face_crop) -> None:
    gray16 = (face_crop.mean(axis=2, keepdims=True) * 257).astype(np.uint16)
    out = upscale.run(gray16, tiny, UpscaleParams())
    assert out.dtype == np.uint16 and out.shape == (gray16.shape[0] * 4, gray16.shape[1] * 4, 1)
    assert out.max() > 255  # kept in 16-bit range, not squashed to 8 bits


def test_scale_and_width(tiny, face_crop) -> None:
    h, w = face_crop.shape[:2]
    assert upscale.run(face_crop, tiny, UpscaleParams(scale=2)).shape[:2] == (h * 2, w * 2)
    assert upscale.run(face_crop, tiny, UpscaleParams(scale=1.5)).shape[:2] == (
        round(h * 1.5),
        round(w * 1.5),
    )
    assert upscale.run(face_crop, tiny, UpscaleParams(width=200)).shape[:2] == (
        round(h * 200 / w),
        200,
    )


def test_progress_and_cancel(tiny, face_crop) -> None:
    seen: list[float] = []
    upscale.run(
        face_crop, tiny, UpscaleParams(tile=32, overlap=8), progress=lambda f, s: seen.append(f)
    )
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 4

    token = CancelToken()
    calls: list[float] = []

    def cancel_after_two(fraction: float, stage: str) -> None:
        calls.append(fraction)
        if len(calls) == 2:
            token.cancel()

    with pytest.raises(CancelledError):
        upscale.run(
            face_crop,
            tiny,
            UpscaleParams(tile=32, overlap=8),
            progress=cancel_after_two,
            cancel=token,
        )
    assert len(calls) == 2  # stopped at the next tile, not at the end


def test_out_of_memory_halves_the_tile(tiny, face_crop, monkeypatch) -> None:
    """Fault injection: tiles wider than 40 px 'run out of memory'."""
    from backend import inference

    real = inference.run_tensor
    tiles: list[int] = []

    def limited(descriptor, x, precision, channels_last=False, call=None):
        tiles.append(x.shape[-1])
        if x.shape[-1] > 40:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(descriptor, x, precision, channels_last, call)

    monkeypatch.setattr(inference, "run_tensor", limited)
    out = upscale.run(face_crop, tiny, UpscaleParams(tile=80))
    assert out.shape[:2] == (face_crop.shape[0] * 4, face_crop.shape[1] * 4)
    assert max(tiles) == 80 and tiles[-1] <= 40


@pytest.mark.parametrize(
    ("params", "words"),
    [
        (UpscaleParams(scale=0), "scale"),
        (UpscaleParams(scale=100), "scale"),
        (UpscaleParams(tile=3), "tile"),
        (UpscaleParams(alpha="magic"), "alpha"),
        (UpscaleParams(overlap=-1), "overlap"),
    ],
)
def test_bad_parameters(tiny, face_crop, params: UpscaleParams, words: str) -> None:
    with pytest.raises(InvalidParameterError, match=words):
        upscale.run(face_crop, tiny, params)


def test_output_limit(tiny, face_crop) -> None:
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        upscale.run(face_crop, tiny, UpscaleParams(max_output_pixels=1000))


def test_auto_tile_fits_memory(tiny) -> None:
    assert tiny.auto_tile(64 << 30) == 512  # a CPU gains nothing from bigger tiles
    assert tiny.auto_tile(1 << 20) == 64  # starved of memory: the smallest tile


def test_cancel_inside_a_tile(tiny, face_crop) -> None:
    """One tile for the whole image: cancel still lands between the network's layers."""
    token = CancelToken()
    fractions: list[float] = []

    def cancel_midway(fraction: float, stage: str) -> None:
        fractions.append(fraction)
        if fraction > 0.2:
            token.cancel()

    with pytest.raises(CancelledError):
        upscale.run(face_crop, tiny, UpscaleParams(tile=0), progress=cancel_midway, cancel=token)
    assert 0.2 < fractions[-1] < 0.9  # progress moved inside the single tile, then stopped
