"""Restora's compiled element-wise kernels (backend/cpu_kernels.c): the PReLU after each
convolution of the Compact networks, against PyTorch's own, bit for bit, and the gather that
ends ESRGAN's folded upsampling blocks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from backend import cpu_fusion, cpu_kernels
from backend.inference import run_tensor
from backend.models.loading import load_descriptor

#: special values besides the random ones: zeros of both signs, infinities, the largest and
#: smallest normal bf16 values, a subnormal, and values whose products round on a tie
SPECIAL = [0.0, -0.0, float("inf"), float("-inf"), 3.3895e38, -3.3895e38, 1.1755e-38, -1e-39,
           -1.0078125, -257.0, -0.50390625]  # fmt: skip


@pytest.fixture
def kernels_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    cpu_kernels.KERNELS.forget()
    monkeypatch.setenv("RESTORA_NATIVE_KERNELS", "0")
    yield
    cpu_kernels.KERNELS.forget()


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("shape", [(1, 64, 36, 20), (2, 48, 9, 7), (1, 17, 5, 6), (3, 1, 4, 4)])
def test_prelu_has_pytorchs_bits(dtype: torch.dtype, channels_last: bool, shape) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen) * 4
    flat = x.view(-1)
    flat[: len(SPECIAL)] = torch.tensor(SPECIAL)
    x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    slope = (torch.rand(shape[1], generator=gen) * 1.5 - 0.5).to(dtype)  # negative ones too
    want = torch.nn.functional.prelu(x, slope)
    got = x.clone()
    assert cpu_kernels.prelu_(got, slope.float()), cpu_kernels.KERNELS.status()
    assert got.stride() == x.stride()
    assert torch.equal(_bits(got), _bits(want))


def test_prelu_leaves_alone_what_it_does_not_take() -> None:
    slope = torch.rand(8)
    cases = [
        torch.rand(1, 8, 6, 6)[:, :, :, ::2],  # not contiguous in either layout
        torch.rand(1, 8, 6, 6, dtype=torch.float16),  # a dtype it has no kernel for
        torch.rand(8, 6, 6),  # not 4-d
        torch.rand(1, 9, 6, 6),  # another channel count than the slopes'
    ]
    for x in cases:
        before = x.clone()
        assert not cpu_kernels.prelu_(x, slope)
        assert torch.equal(x, before)
    assert not cpu_kernels.prelu_(torch.rand(1, 8, 6, 6), slope.double())


def test_compact_runs_its_prelus_in_the_kernel(
    real_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real realesr-animevideov3 network in bf16 channels-last, as Restora picks it on
    this CPU: each fused convolution's PReLU runs in the kernel, and the result has the bits
    of PyTorch's PReLU after the same convolutions."""
    path = real_models / "upscale_models" / "realesr-animevideov3-x4.safetensors"
    descriptor = load_descriptor(path)
    x = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(4))
    calls: list[bool] = []
    real = cpu_kernels.prelu_

    def counted(y: torch.Tensor, slope: torch.Tensor) -> bool:
        calls.append(real(y, slope))
        return calls[-1]

    monkeypatch.delenv("RESTORA_CPU_FUSION", raising=False)
    monkeypatch.setattr(cpu_kernels, "prelu_", counted)
    got = run_tensor(descriptor, x, "bf16", channels_last=True)
    fused = [m for m in descriptor.model.modules() if isinstance(m, cpu_fusion.FusedConvPReLU)]
    assert fused and len(calls) == len(fused) and all(calls), (calls, len(fused))
    monkeypatch.setattr(cpu_kernels, "prelu_", lambda y, slope: False)
    want = run_tensor(descriptor, x, "bf16", channels_last=True)
    assert len(calls) == len(fused)
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("batch", "channels", "h", "w"), [(1, 64, 7, 5), (2, 3, 4, 9)])
def test_interleave_phases_is_the_gather_it_names(
    dtype: torch.dtype, batch: int, channels: int, h: int, w: int
) -> None:
    cl = torch.channels_last
    y4 = torch.randn(batch, 4 * channels, h + 1, w + 1).to(dtype).contiguous(memory_format=cl)
    out = torch.empty(batch, channels, 2 * h, 2 * w, dtype=dtype, memory_format=cl)
    assert cpu_kernels.interleave_phases(y4, out), cpu_kernels.KERNELS.status()
    for dy in (0, 1):
        for dx in (0, 1):
            k = 2 * dy + dx
            want = y4[:, k * channels : (k + 1) * channels, dy : dy + h, dx : dx + w]
            assert torch.equal(out[:, :, dy::2, dx::2], want)
    # not channels-last, or shapes that do not match: left to PyTorch, nothing written
    plain = torch.zeros(batch, channels, 2 * h, 2 * w, dtype=dtype)
    assert not cpu_kernels.interleave_phases(y4.contiguous(), plain)
    assert not cpu_kernels.interleave_phases(y4, plain[:, :, :-2].contiguous(memory_format=cl))
    assert not plain.any()


def test_without_a_compiler_pytorch_runs_the_prelu(kernels_off: None) -> None:
    assert cpu_kernels.KERNELS.load() is None
    assert "RESTORA_NATIVE_KERNELS=0" in cpu_kernels.KERNELS.status()
    x = torch.randn(1, 4, 5, 5)
    before = x.clone()
    assert not cpu_kernels.prelu_(x, torch.rand(4))
    assert torch.equal(x, before)
