"""Decoding keeps depth and alpha; bad files are refused with a clear error before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backend.errors import ImageDecodeError, ImageTooLargeError, ImageTooSmallError
from backend.imaging import decode, encode, split_alpha
from tests.images import png_header_only


def _png(arr: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, "PNG")
    return out.getvalue()


def test_rgba_roundtrip_exact() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (17, 23, 4), dtype=np.uint8)
    out = decode(encode(arr, "PNG", 1))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_roundtrip_exact(channels: int) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
    out = decode(encode(arr, "PNG", 1))
    assert out.dtype == np.uint16 and out.shape == arr.shape
    assert np.array_equal(out, arr)


def test_gray_and_palette_modes() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert decode(_png(gray, "L")).shape == (8, 8, 1)
    pal = Image.fromarray(np.zeros((8, 8, 3), np.uint8)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    assert decode(buf.getvalue()).shape == (8, 8, 4)
    la = np.zeros((8, 8, 2), np.uint8)
    assert decode(_png(la, "LA")).shape == (8, 8, 2)


def test_opaque_alpha_is_reported_absent() -> None:
    arr = np.full((4, 4, 4), 255, np.uint8)
    colour, alpha = split_alpha(arr)
    assert colour.shape == (4, 4, 3) and alpha is None


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", ImageDecodeError, "empty"),
        (b"this is not an image at all", ImageDecodeError, "not an image"),
        (png_header_only(100_000, 100_000), ImageTooLargeError, "megapixels"),
        (png_header_only(1, 1), ImageTooSmallError, "at least"),
        (png_header_only(0, 5), (ImageDecodeError, ImageTooSmallError), ""),
    ],
    ids=["empty", "text", "bomb-header", "one-pixel", "zero-width"],
)
def test_bad_inputs_are_refused(data: bytes, error: type, words: str) -> None:
    with pytest.raises(error) as info:
        decode(data)
    assert words in str(info.value)


def test_truncated_png_is_refused() -> None:
    arr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png(arr, "RGB")
    with pytest.raises(ImageDecodeError, match=r"corrupt|truncated|not an image"):
        decode(data[: len(data) // 2])


def test_jpeg_flattens_alpha_on_white_and_rounds_16_bit() -> None:
    from backend.imaging import flatten_for

    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., 0] = 65535  # red, hidden under alpha 0 in the first row
    rgba[1, :, 3] = 65535
    rgba[0, 1, 3] = 32767  # just under half opaque: white shows through 32768/65535
    flat, notes = flatten_for(rgba, "JPEG")
    assert flat.dtype == np.uint8 and flat.shape == (2, 2, 3)
    assert flat[0, 0].tolist() == [255, 255, 255]  # the red under alpha 0 does not show
    assert flat[1, 0].tolist() == [255, 0, 0]
    assert flat[0, 1].tolist() == [255, 128, 128]
    assert len(notes) == 2 and "white" in notes[0] and "8 bits" in notes[1]
    grey = np.full((2, 2, 1), 257 * 100 + 129, np.uint16)  # 100.5 in 8-bit terms: rounds up
    assert flatten_for(grey, "WEBP")[0].ravel().tolist() == [101] * 4
    assert flatten_for(rgba, "PNG") == (rgba, [])  # PNG keeps everything


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_streamed_png_decodes_to_the_same_pixels(
    dtype: type, channels: int, tmp_path, monkeypatch
) -> None:
    """Large PNGs are encoded band by band (into the file, or into memory for the server);
    small bands here, so rows meet across bands."""
    from backend import imaging, png_stream

    monkeypatch.setattr(imaging, "STREAMED_PNG_BYTES", 0)
    monkeypatch.setattr(png_stream, "BAND_BYTES", 100)
    rng = np.random.default_rng(channels)
    smooth = np.linspace(0, np.iinfo(dtype).max, 41 * 29 * channels).reshape(41, 29, channels)
    arr = (smooth + rng.integers(0, 40, smooth.shape)).clip(0, np.iinfo(dtype).max).astype(dtype)
    imaging.write_image(tmp_path / "out.png", arr)
    # 16-bit gray + alpha is written at 8 bits, as Pillow's encoding writes it
    expected = imaging.to_uint8(arr) if (channels == 2 and dtype == np.uint16) else arr
    for back in (imaging.read_image(tmp_path / "out.png"), imaging.decode(imaging.encode(arr))):
        assert back.dtype == expected.dtype and np.array_equal(back, expected)
