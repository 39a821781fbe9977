"""The .tflite reader and its PyTorch executor: the three MediaPipe face models agree with
Google's own interpreter on a real photo, and broken or unsupported files fail with typed
errors."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

# Google's runtime is a dev dependency: without it these tests must fail, not skip
from ai_edge_litert.interpreter import Interpreter

from backend.errors import ModelFormatError, UnsupportedOperatorError
from backend.faces import native, tflite
from backend.faces.detect import FACE_MESH, FULL_RANGE, SHORT_RANGE, model_file
from backend.faces.tflite import (
    _ConvNode,
    load_tflite,
    pad_constant,
    read_tflite,
    resize_bilinear,
    same_padding,
)

#: file, input side, value range, and the part of the astronaut photo it is shown
MODELS = [
    (SHORT_RANGE, 128, (-1.0, 1.0), (0, 0, 512, 512)),
    (FULL_RANGE, 192, (-1.0, 1.0), (0, 0, 512, 512)),
    (FACE_MESH, 192, (0.0, 1.0), (150, 45, 300, 195)),  # the mesh is run on a face
]


def _model_input(
    image: np.ndarray, size: int, value_range: tuple[float, float], crop
) -> np.ndarray:
    x0, y0, x1, y1 = crop
    part = cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
    low, high = value_range
    return (part.astype(np.float32) * ((high - low) / 255) + low)[None]


def _google(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return {o["name"]: interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()}


@pytest.mark.parametrize(("name", "size", "value_range", "crop"), MODELS)
def test_port_matches_googles_interpreter(
    astronaut: np.ndarray, name: str, size: int, value_range, crop
) -> None:
    path = model_file(name, [])
    x = _model_input(astronaut, size, value_range, crop)
    expected = _google(path, x)
    module = load_tflite(path)
    with torch.inference_mode():
        ours = dict(zip(module.output_names, module(torch.from_numpy(x))))
    assert set(ours) == set(expected)
    for key, ref in expected.items():
        got = ours[key].numpy()
        assert got.shape == ref.shape, key
        diff = float(np.abs(got - ref).max())
        # the outputs span up to ~150 (regressors in pixels, logits): 1e-3 is float rounding
        assert diff < 1e-3, f"{name} {key}: max abs diff {diff}"
        assert np.abs(ref).max() > 1  # a real signal was compared, not zeros


def test_batch_runs_as_separate_images(astronaut: np.ndarray) -> None:
    module = load_tflite(model_file(FULL_RANGE, []))
    a = _model_input(astronaut, 192, (-1, 1), (0, 0, 512, 512))
    b = _model_input(astronaut, 192, (-1, 1), (100, 20, 356, 276))
    with torch.inference_mode():
        both = module(torch.from_numpy(np.concatenate([a, b])))
        one = module(torch.from_numpy(b))
    for y_both, y_one in zip(both, one):
        assert y_both.shape[0] == 2
        torch.testing.assert_close(y_both[1:], y_one, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kernels", ["native", "pytorch"])
@pytest.mark.parametrize(("name", "size", "value_range", "crop"), MODELS)
def test_fused_cpu_path_matches_the_unfused_one(
    astronaut: np.ndarray, name: str, size: int, value_range, crop, kernels: str
) -> None:
    """The fused CPU path against the operator-by-operator one, on the photo and on noise, at
    batch 1 and at the detector's largest batch, both ways it runs: the compiled kernels
    (backend.faces.native; the test machine has a C compiler, so they must be there) and
    PyTorch's (oneDNN convolutions with their ADD / RELU folded in, small 1x1 convolutions as
    matrix products: at these two batches both its branches run)."""
    module = load_tflite(model_file(name, []))
    assert module._fused(), "the fused path does not apply on this CPU"
    if kernels == "native":
        assert module._program is not None, native.status()
        # all but the heads' reshapes and concatenations
        assert len(module._program.covered) >= len(module._plan) - 6
    module.native = kernels == "native"
    photo = torch.from_numpy(_model_input(astronaut, size, value_range, crop))
    low, high = value_range
    noise = torch.rand(15, size, size, 3, generator=torch.Generator().manual_seed(3))
    batch = torch.cat([photo, noise * (high - low) + low])
    for x in (photo, batch):
        with torch.inference_mode():
            module.fuse = False
            want = module(x)
            module.fuse = True
            got = module(x)
        for a, b in zip(got, want):
            assert a.shape == b.shape
            diff = float((a - b).abs().max())
            assert diff <= 2e-4, f"{name} batch {len(x)}: max abs diff {diff}"


@pytest.mark.parametrize(("name", "size", "value_range", "crop"), MODELS)
def test_first_stage_runs_a_few_windows_at_a_time(
    monkeypatch: pytest.MonkeyPatch, name: str, size: int, value_range, crop
) -> None:
    """The fused plan's first stage (every layer that reads its largest maps) runs
    STAGE_BATCH windows at a time and the rest the whole batch at once: the outputs are those
    of the whole batch through every layer, an uneven last chunk included."""
    module = load_tflite(model_file(name, []))
    plan = module._fused()
    cut = module._cut
    assert 0 < cut < len(plan)
    largest = max(module._shapes[n.output][1] for n in plan if len(module._shapes[n.output]) == 4)
    assert largest == size // 2  # a stride-2 first layer: the first stage is at half the input
    # nothing after the cut reads a map of that size; the node before it does
    produced = {n.output for n in plan}
    sides = [[module._shapes[i][1] for i in n.inputs if i in produced] for n in plan]
    assert largest in sides[cut - 1]
    assert all(largest not in s for s in sides[cut:])
    x = torch.rand(5, size, size, 3, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        monkeypatch.setattr(tflite, "STAGE_BATCH", 2)
        chunked = module(x)
        monkeypatch.setattr(tflite, "STAGE_BATCH", 5)  # not above the batch: no chunks
        whole = module(x)
    for a, b in zip(chunked, whole):
        assert a.shape == b.shape and a.shape[0] == 5
        # oneDNN picks its kernels by batch size: the port's agreement bound, not bits
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


def test_fused_path_stays_off_where_it_does_not_apply() -> None:
    module = load_tflite(model_file(SHORT_RANGE, []))
    x = torch.rand(2, 128, 128, 3)
    with torch.inference_mode():
        fused = module(x)
        module.double()  # another dtype: the unfused path, the plan made anew if it comes back
        assert module._fused() == []
        unfused = module(x.double())
        module.float()
        assert module._fused()
        # another input size: the plan's padding was worked out for the file's, so the
        # unfused path runs it
        other = torch.rand(1, 96, 96, 3)
        assert not module._fits((other,))
    for a, b in zip(fused, unfused):
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=0)


def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(96, 3, 2) == (0, 1)  # stride-2 depthwise layers of BlazeFace
    assert same_padding(95, 3, 2) == (1, 1)
    assert same_padding(128, 5, 2) == (1, 2)
    assert same_padding(12, 3, 1) == (1, 1)
    assert same_padding(12, 3, 1, dilation=2) == (2, 2)


@pytest.mark.parametrize(
    "pads", [(0, 1, 0, 1), (1, 2, 1, 2), (0, 0, 0, 0, 0, 16), (2, 0), (0, 0, 0, 0, 0, 0, 1, 1)]
)
@pytest.mark.parametrize("nhwc", [True, False])
@pytest.mark.parametrize("value", [0.0, float("-inf")])
def test_pad_constant_is_f_pad(pads: tuple[int, ...], nhwc: bool, value: float) -> None:
    x = torch.rand(2, 5, 6, 7)
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    got = pad_constant(x, pads, value)
    assert torch.equal(got, torch.nn.functional.pad(x, pads, value=value))
    assert got.is_contiguous(memory_format=torch.channels_last) == nhwc


@pytest.mark.parametrize("name", [SHORT_RANGE, FULL_RANGE, FACE_MESH])
def test_stride_2_layers_take_no_padded_copy(name: str) -> None:
    """TF's 'SAME' padding on stride-2 layers puts the odd pixel after: the fused plan gives
    those layers a kernel grown by zero taps in front instead of padding each input (the
    agreement with the unfused path and LiteRT is checked above)."""
    plan = load_tflite(model_file(name, []))._fused()
    convs = [node for node in plan if isinstance(node, _ConvNode)]
    assert any(node.stride == [2, 2] for node in convs)
    assert all(node.pad == () for node in convs)


@pytest.mark.parametrize("name", [SHORT_RANGE, FULL_RANGE, FACE_MESH])
def test_zero_channel_pads_fold_into_the_shortcut_add(name: str) -> None:
    """Each of these models widens a block's shortcut with a PAD of zero channels before its
    ADD: the fused plan runs no PAD, the convolution before the ADD adds the narrower value
    to its first channels instead (agreement with the unfused path, at batch 1 and 16 so
    both the matrix-product and the oneDNN branch run: above)."""
    module = load_tflite(model_file(name, []))
    pads = [s for s in module.steps if s.op == "PAD"]
    assert pads
    plan = module._fused()
    assert not [node for node in plan if node.op == "PAD"]
    widened = [node for node in plan if isinstance(node, _ConvNode) and node.narrow]
    assert len(widened) == len(pads)
    assert all(0 < node.narrow < node.weight.shape[0] for node in widened)


def _tf_resize(x: np.ndarray, out: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    """TFLite's reference bilinear resize of one (H, W) plane, written from its definition."""
    size = x.shape[0]
    scale = (size - 1) / (out - 1) if align_corners and out > 1 else size / out
    result = np.zeros((out, out))
    for i in range(out):
        for j in range(out):
            y = (i + 0.5) * scale - 0.5 if half_pixel else i * scale
            xx = (j + 0.5) * scale - 0.5 if half_pixel else j * scale
            y0, x0 = max(math.floor(y), 0), max(math.floor(xx), 0)
            y1, x1 = min(math.ceil(y), size - 1), min(math.ceil(xx), size - 1)
            y0, x0 = min(y0, size - 1), min(x0, size - 1)
            fy, fx = y - math.floor(y), xx - math.floor(xx)
            top = x[y0, x0] * (1 - fx) + x[y0, x1] * fx
            bottom = x[y1, x0] * (1 - fx) + x[y1, x1] * fx
            result[i, j] = top * (1 - fy) + bottom * fy
    return result


@pytest.mark.parametrize(
    ("align_corners", "half_pixel"), [(False, True), (True, False), (False, False)]
)
def test_resize_bilinear_modes(align_corners: bool, half_pixel: bool) -> None:
    plane = np.random.default_rng(0).random((6, 6))
    got = resize_bilinear(torch.from_numpy(plane)[None, None], [12, 12], align_corners, half_pixel)
    want = _tf_resize(plane, 12, align_corners, half_pixel)
    np.testing.assert_allclose(got[0, 0].numpy(), want, atol=1e-9)


def test_a_file_that_is_not_tflite(tmp_path: Path, astronaut: np.ndarray) -> None:
    png = tmp_path / "photo.tflite"
    png.write_bytes(cv2.imencode(".png", astronaut)[1].tobytes())
    with pytest.raises(ModelFormatError, match="not a TensorFlow Lite model") as info:
        load_tflite(png)
    assert info.value.code == "model_format"
    with pytest.raises(ModelFormatError):
        read_tflite(b"")


@pytest.mark.parametrize("name", [SHORT_RANGE, FULL_RANGE, FACE_MESH])
def test_truncated_and_corrupt_files(name: str) -> None:
    data = model_file(name, []).read_bytes()
    for cut in (12, 100, len(data) // 3, len(data) - 50):
        with pytest.raises(ModelFormatError):
            load_tflite(data[:cut])
    # bytes changed where the graph is described (the flatbuffer's start and end; the weights
    # lie between): a typed error, or a model that still runs; never another exception
    rng = np.random.default_rng(7)
    errors = 0
    for _ in range(60):
        broken = bytearray(data)
        for _ in range(8):
            pos = int(
                rng.integers(8, 4096)
                if rng.random() < 0.5
                else rng.integers(len(data) - 65536, len(data))
            )
            broken[pos] = int(rng.integers(0, 256))
        try:
            load_tflite(bytes(broken))
        except ModelFormatError:
            errors += 1
    assert errors > 10  # the changes did reach the graph's description


def test_an_unsupported_operator_is_named() -> None:
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(model_file(SHORT_RANGE, []).read_bytes())
    code = schema.Model.GetRootAs(data, 0).OperatorCodes(0)  # CONV_2D
    assert max(code.DeprecatedBuiltinCode(), code.BuiltinCode()) == 3
    softmax = schema.BuiltinOperator.SOFTMAX
    for vtable_entry, fmt in ((4, "<i1"), (10, "<i4")):  # deprecated_builtin_code, builtin_code
        offset = code._tab.Offset(vtable_entry)
        if offset:
            at = code._tab.Pos + offset
            data[at : at + np.dtype(fmt).itemsize] = np.array([softmax], fmt).tobytes()
    with pytest.raises(UnsupportedOperatorError, match=f"builtin #{softmax}") as info:
        read_tflite(bytes(data))
    assert isinstance(info.value, ModelFormatError)
    assert info.value.code == "unsupported_operator" and "CONV_2D" in info.value.hint


def _runs_as_unfused(module: tflite.TFLiteModule, batch: int) -> None:
    """The module's default path gives the operator-by-operator path's outputs."""
    shape = (batch, *module.input_shapes[0][1:])
    x = torch.rand(shape, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    with torch.inference_mode():
        got = module(x)
        module.fuse = False
        want = module(x)
        module.fuse = True
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


@pytest.fixture
def fresh_kernels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """backend.faces.native as in a new process, its cache in an empty home."""
    native.KERNELS.forget()
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))
    yield tmp_path / "home" / "cache" / "native"
    native.KERNELS.forget()  # the next test loads them again, from its own home's cache


def test_native_kernels_are_built_once_per_compiler_and_cpu(fresh_kernels: Path) -> None:
    lib = native.load()
    assert lib is not None, native.status()
    assert native.status() == "compiled for this CPU"
    (built,) = fresh_kernels.glob("face_kernels-*.so")
    assert not [p for p in fresh_kernels.iterdir() if p != built]  # no build folder left
    stamp = built.stat().st_mtime_ns
    native.KERNELS.forget()  # a new process: the built file is loaded
    assert native.load() is not None
    assert built.stat().st_mtime_ns == stamp
    assert list(fresh_kernels.glob("face_kernels-*.so")) == [built]


def test_a_damaged_build_in_the_cache_is_made_anew(fresh_kernels: Path) -> None:
    """A new process that finds a damaged file under the build's name (what a full disk
    can leave) builds it again instead of running without the kernels from then on. (New
    processes: this one would get its already-loaded build back for that name, and may
    hold other OpenMP runtimes that give another file name.)"""
    probe = (
        "from backend import native_build; from backend.faces import native; "
        "print(native.status()); print(native_build.build(native.SOURCE))"
    )

    def run() -> tuple[str, Path]:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
            cwd=Path(__file__).resolve().parents[2], check=False,
        )  # fmt: skip
        status, path = done.stdout.strip().splitlines()[-2:]
        assert status == "compiled for this CPU", done.stdout + done.stderr
        return status, Path(path)

    _, built = run()
    assert built.parent == fresh_kernels and built.stat().st_size > 1000
    built.write_bytes(b"\0" * 100)
    _, again = run()
    assert again == built and built.stat().st_size > 1000


@pytest.mark.parametrize("how", ["switched off", "no compiler", "compiler fails"])
def test_without_native_kernels_pytorch_runs_the_models(
    fresh_kernels: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    if how == "switched off":
        monkeypatch.setenv("RESTORA_NATIVE_KERNELS", "0")
        reason = "RESTORA_NATIVE_KERNELS=0"
    elif how == "no compiler":
        monkeypatch.setenv("CC", "")
        monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
        reason = "no C compiler found"
    else:
        broken = tmp_path / "broken-cc"
        broken.write_text("#!/bin/sh\necho 'cc: internal error' >&2\nexit 1\n")
        broken.chmod(0o755)
        monkeypatch.setenv("CC", str(broken))
        reason = "the C compiler failed on face_kernels.c: cc: internal error"
    assert native.load() is None
    assert reason in native.status()
    module = load_tflite(model_file(SHORT_RANGE, []))
    assert module._fused() and module._program is None
    _runs_as_unfused(module, batch=2)
    assert not fresh_kernels.exists() or not list(fresh_kernels.glob("*.so"))


def test_a_native_program_that_disagrees_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check made when the program is built: kernels that compute something else (a
    miscompiled build, a CPU fault) are dropped with a warning, and PyTorch runs the model."""
    real = native.Program.__call__

    def wrong(self: native.Program, x: torch.Tensor):
        return {i: v + 0.5 for i, v in real(self, x).items()}

    monkeypatch.setattr(native.Program, "__call__", wrong)
    with caplog.at_level("WARNING", logger="backend.faces.tflite"):
        module = load_tflite(model_file(FULL_RANGE, []))  # its plan is made as it loads
        assert module._fused()
    assert module._program is None
    assert "native face kernels not used: its output differs" in caplog.text
    _runs_as_unfused(module, batch=1)
