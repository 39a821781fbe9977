"""Fused CPU layers (backend/cpu_fusion.py) compute what the network's own layers compute."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from backend import cpu_fusion, devices
from backend.inference import LayerWatch, TileRunner, leaf_layers, run_tensor
from backend.models.loading import load_descriptor
from backend.models.registry import Registry
from backend.models.runtime import load_model
from backend.tasks import upscale
from tests.conftest import psnr
from tests.model_zoo import save_tiny

#: the fused kernels are oneDNN's: a PyTorch built without it (some ARM and source builds) has
#: none to test, and Restora runs the layers one by one there (x86 wheels, CI included, have it)
pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available()
    or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"),
    reason="this PyTorch has no oneDNN fused convolutions",
)


@pytest.fixture(autouse=True)
def fusion_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's RESTORA_CPU_FUSION does not decide what these tests check."""
    monkeypatch.delenv("RESTORA_CPU_FUSION", raising=False)


def fused_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, cpu_fusion._OneDNNCall)]


def _leaky_compact() -> torch.nn.Module:
    from spandrel.architectures.Compact import Compact

    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=3, upscale=2, act_type="relu")


@pytest.mark.parametrize("key", ["esrgan", "dncnn", "realcugan", "compact", "span"])
def test_fp32_fused_output_equals_the_layers_one_by_one(key: str, models_root: Path) -> None:
    descriptor = load_descriptor(save_tiny(key, models_root))
    x = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    with cpu_fusion.unfused():
        expected = run_tensor(descriptor, x, "fp32")
    got = run_tensor(descriptor, x, "fp32")
    if key != "span":  # conv + ReLU / leaky ReLU pairs; Compact's last convolution and skip
        assert fused_layers(descriptor.model)
    assert torch.allclose(got, expected, atol=2e-5), (got - expected).abs().max()


def test_a_modulelist_is_fused_only_where_its_network_runs_it_in_order(tmp_path: Path) -> None:
    net = _leaky_compact().eval()
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = net(x)
        # SRVGGNetCompact's body: 4 convolutions followed by ReLUs, and the last one with the skip
        assert cpu_fusion.fuse(net) == 5
        assert cpu_fusion.fuse(net) == 0  # a second call changes nothing
        got = net(x)
    assert torch.allclose(got, expected, atol=2e-5)
    other = torch.nn.Module()
    other.layers = torch.nn.ModuleList([torch.nn.Conv2d(3, 3, 3), torch.nn.ReLU()])
    assert cpu_fusion.fuse(other) == 0  # a list another network may call in any order


def test_real_esrgan_blocks_fold_their_residual_scales(real_models: Path, face_crop) -> None:
    """realesrgan-x4plus: every dense block's `x5 * 0.2 + x` and every RRDB's `* 0.2 + x`
    are done by the last convolution; fp32 agrees with the layers one by one, bf16 stays
    within 40 dB of that fp32 (what chaiNNer computes)."""
    entry = Registry([real_models]).find("realesrgan-x4plus")
    img = face_crop[:40, :40]
    fp32 = load_model(entry, "cpu", "fp32")
    with cpu_fusion.unfused():
        reference = upscale.run(img, fp32, upscale.UpscaleParams(tile=0))
    fused = upscale.run(img, fp32, upscale.UpscaleParams(tile=0))
    model = fp32.descriptor.model
    assert sum(isinstance(m, cpu_fusion.FusedRRDB) for m in model.modules()) == 23
    assert sum(isinstance(m, cpu_fusion.FusedDenseBlock) for m in model.modules()) == 69
    assert sum(isinstance(m, cpu_fusion.FusedNearestUpConv) for m in model.modules()) == 2
    assert np.abs(fused.astype(int) - reference.astype(int)).max() <= 1
    bf16 = upscale.run(img, load_model(entry, "cpu", "bf16"), upscale.UpscaleParams(tile=0))
    value = psnr(reference, bf16)
    print(f"fused bf16 vs layer-by-layer fp32: {value:.1f} dB")
    assert value > 40.0


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_act", [True, False])
def test_nearest_upsample_and_conv_run_as_a_small_convolution(
    channels_last: bool, with_act: bool
) -> None:
    """ESRGAN's upsampling block (nearest 2x, 3x3 convolution, activation) as one 2x2
    convolution with four sets of outputs on the small map: the layers' result on an odd-sized
    map (the borders' zero padding included), in fp32 to float rounding and in bf16 within its
    precision, in either memory format."""
    gen = torch.Generator().manual_seed(6)
    layers = [
        torch.nn.Upsample(scale_factor=2, mode="nearest"),
        torch.nn.Conv2d(16, 8, 3, padding=1),
    ] + ([torch.nn.LeakyReLU(0.2, inplace=True)] if with_act else [])
    net = torch.nn.Sequential(*layers).eval()
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen) * 0.2)
    x = torch.randn(2, 16, 13, 10, generator=gen)
    with torch.inference_mode():
        want = net(x)
    assert cpu_fusion.fuse(net) == 1
    assert isinstance(net[0], cpu_fusion.FusedNearestUpConv)
    assert all(isinstance(m, torch.nn.Identity) for m in list(net)[1:])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for dtype, tolerance in ((torch.float32, 2e-6), (torch.bfloat16, 0.05)):
        net = net.to(dtype)
        with torch.inference_mode():
            got = net(x.to(dtype).contiguous(memory_format=fmt))
        assert got.shape == want.shape == (2, 8, 26, 20)
        err = float((got.float() - want).abs().max())
        assert err <= tolerance * float(want.abs().max()), (dtype, err)
    with cpu_fusion.unfused(), torch.inference_mode():  # the original layers still run
        assert net(x.to(torch.bfloat16)).shape == want.shape


@pytest.mark.parametrize("channels_last", [True, False])
def test_dense_blocks_concatenate_into_one_reused_buffer(
    models_root: Path, monkeypatch: pytest.MonkeyPatch, channels_last: bool
) -> None:
    """Every concatenation of every dense block is written into one buffer per thread, sized
    for the widest: the same bits as fresh concatenations, and nothing held once released."""
    descriptor = load_descriptor(save_tiny("esrgan", models_root))
    cpu_fusion.release_scratch()
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(8))
    got = run_tensor(descriptor, x, "fp32", channels_last=channels_last)
    (buf,) = cpu_fusion._scratch.values()  # one, for this thread, made once
    again = run_tensor(descriptor, x, "fp32", channels_last=channels_last)
    assert cpu_fusion._scratch[threading.get_ident()] is buf  # reused, not made anew
    monkeypatch.setattr(cpu_fusion, "_concat", lambda tensors, widest: torch.cat(tensors, 1))
    fresh = run_tensor(descriptor, x, "fp32", channels_last=channels_last)
    assert torch.equal(got, fresh) and torch.equal(again, fresh)
    cpu_fusion.release_scratch()
    assert not cpu_fusion._scratch


def test_other_upsamples_are_left_to_their_layers() -> None:
    for up, conv in (
        (torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Conv2d(4, 4, 3, padding=1)),
        (torch.nn.Upsample(scale_factor=3, mode="nearest"), torch.nn.Conv2d(4, 4, 3, padding=1)),
        (torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(4, 4, 3, padding=0)),
        (torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(4, 4, 5, padding=2)),
    ):
        net = torch.nn.Sequential(up, conv).eval()
        cpu_fusion.fuse(net)
        assert not any(isinstance(m, cpu_fusion.FusedNearestUpConv) for m in net)


def test_progress_and_cancel_reach_inside_fused_layers(models_root: Path) -> None:
    descriptor = load_descriptor(save_tiny("esrgan", models_root))
    cpu_fusion.fuse(descriptor.model)
    leaves = leaf_layers(descriptor.model)
    fused = fused_layers(descriptor.model)
    assert fused and all(f in leaves for f in fused)
    assert not any(f.conv in leaves for f in fused)  # never run on the fused path: not watched

    seen: list[float] = []
    runner = TileRunner(descriptor, "fp32", on_layer=seen.append)
    runner(np.random.default_rng(0).random((24, 24, 3), dtype=np.float32))
    assert len(seen) == runner.watch.calls_per_tile and seen == sorted(seen)

    class Stop(Exception):
        pass

    def cancel(fraction: float) -> None:
        if fraction > 0.3:
            raise Stop

    with pytest.raises(Stop), LayerWatch(descriptor.model, cancel):
        run_tensor(descriptor, torch.rand(1, 3, 24, 24), "fp32")


def test_a_fused_call_that_fails_falls_back_to_the_layers(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    descriptor = load_descriptor(save_tiny("esrgan", models_root))
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    with cpu_fusion.unfused():
        expected = run_tensor(descriptor, x, "fp32")

    class NoKernel:
        def __call__(self, *args: object) -> None:
            raise RuntimeError("could not create a primitive descriptor")

        binary = __call__

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", NoKernel())
    got = run_tensor(descriptor, x, "fp32")
    assert torch.equal(got, expected)
    layers = fused_layers(descriptor.model)
    assert all(f.broken for f in layers if isinstance(f, cpu_fusion.FusedConv2d))
    # each dense block runs one of its two scaled last convolutions (inside an RRDB or not)
    assert any(f.broken for f in layers if isinstance(f, cpu_fusion.ScaledResidualConv2d))


def test_a_kernel_missing_for_bf16_leaves_fp32_fused(
    models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU without oneDNN's bf16 kernels (AVX2 only): the first load on the machine tries
    bf16 while it measures, and the failure must not turn fusion off for the fp32 it then
    runs, or that load's results would differ from every later load's (they did, by one
    16-bit level, between the server's model and a fresh load)."""
    monkeypatch.setenv("RESTORA_HOME", str(tmp_path / "home"))  # no measurement cached yet
    real = torch.ops.mkldnn._convolution_pointwise

    class NoBf16Kernel:
        def __call__(self, x: torch.Tensor, *args: object) -> torch.Tensor:
            if x.dtype == torch.bfloat16:
                raise RuntimeError("could not create a primitive descriptor")
            return real(x, *args)

        def binary(self, x: torch.Tensor, *args: object) -> torch.Tensor:
            if x.dtype == torch.bfloat16:
                raise RuntimeError("could not create a primitive descriptor")
            return real.binary(x, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", NoBf16Kernel())
    # bf16 loses the measurement, as on such a CPU (there it runs unfused at 10 s a tile);
    # on a CPU with bf16 kernels its unfused layers would still win and be chosen
    monkeypatch.setattr(devices, "BF16_MIN_SPEEDUP", float("inf"))
    save_tiny("esrgan", models_root)
    entry = Registry([models_root]).find("tiny-esrgan")
    img = (np.random.default_rng(4).random((20, 24, 3)) * 255).astype(np.uint8)
    first = load_model(entry, "cpu")  # measures, bf16 included
    assert "measured" in first.precision_reason and first.descriptor.dtype == torch.float32
    layers = fused_layers(first.descriptor.model)
    assert any(torch.bfloat16 in f.broken for f in layers)
    assert not any(torch.float32 in f.broken for f in layers)
    later = load_model(entry, "cpu")  # the measurement cached
    params = upscale.UpscaleParams(tile=0)
    np.testing.assert_array_equal(upscale.run(img, first, params), upscale.run(img, later, params))


def test_out_of_memory_in_a_fused_call_is_not_hidden(
    models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running out of memory must reach the tiler (which halves the tile), not fall back."""
    descriptor = load_descriptor(save_tiny("dncnn", models_root))

    def no_memory(*args: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", no_memory)
    with pytest.raises(RuntimeError, match="allocate memory"):
        run_tensor(descriptor, torch.rand(1, 3, 16, 16), "fp32")
    assert not any(layer.broken for layer in fused_layers(descriptor.model))


def test_fusion_can_be_turned_off(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTORA_CPU_FUSION", "0")
    descriptor = load_descriptor(save_tiny("esrgan", models_root))
    run_tensor(descriptor, torch.rand(1, 3, 16, 16), "fp32")
    assert not fused_layers(descriptor.model)


def test_weights_changed_in_place_are_packed_again(models_root: Path) -> None:
    descriptor = load_descriptor(save_tiny("dncnn", models_root))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    run_tensor(descriptor, x, "fp32")
    with torch.no_grad():
        for p in descriptor.model.parameters():
            p.mul_(0.5)
    with cpu_fusion.unfused():
        expected = run_tensor(descriptor, x, "fp32")
    assert torch.allclose(run_tensor(descriptor, x, "fp32"), expected, atol=2e-5)
