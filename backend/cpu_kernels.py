"""Element-wise passes of the super-resolution models in kernels of Restora's own
(cpu_kernels.c, built on first use by backend.native_build), where PyTorch's CPU operators
are slower than memory allows.

`interleave_phases` is the last step of ESRGAN's folded upsampling blocks
(cpu_fusion.FusedNearestUpConv), a gather PyTorch's strided copy ran at half a nearest
upsample's speed.

`prelu_` is the PReLU after each convolution of the Compact (SRVGG) networks. PyTorch's bf16
PReLU is bound by its conversions (2-3x a ReLU) and, being out of place, maps a fresh output
for every large map; in place here at about memory speed, with the same bits. Where the
kernels cannot be had, callers run torch.nn.functional.prelu.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from backend import native_build

SOURCE = Path(__file__).with_name("cpu_kernels.c")
VERSION = 2  # cpu_kernels.c's restora_cpu_kernels_version
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def _prepare(lib: ctypes.CDLL) -> None:
    if lib.restora_cpu_kernels_version() != VERSION:
        raise RuntimeError("the compiled kernels are of another version than cpu_kernels.py")
    lib.restora_prelu_.restype = ctypes.c_int
    lib.restora_prelu_.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p,
        ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.restora_interleave_phases_.restype = ctypes.c_int
    lib.restora_interleave_phases_.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
        ctypes.c_int64, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip


KERNELS = native_build.Kernels(SOURCE, _prepare)


def prelu_(x: torch.Tensor, slope: torch.Tensor) -> bool:
    """PReLU of the 4-d CPU map `x` in place, `slope` (float32, contiguous, one per channel,
    the values PyTorch would use in x's dtype) on its channels. False, with `x` unchanged,
    where the kernels do not take it: then the caller runs PyTorch's."""
    dtype = _DTYPES.get(x.dtype)
    if dtype is None or x.device.type != "cpu" or x.ndim != 4 or x.requires_grad:
        return False
    n, c, h, w = x.shape
    if slope.dtype != torch.float32 or slope.numel() != c or not slope.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        count, plane = n * h * w, 0
    elif x.is_contiguous():
        count, plane = n * c, h * w
    else:
        return False
    lib = KERNELS.load()
    if lib is None:
        return False
    if x.numel() == 0:
        return True  # nothing to change
    threads = max(1, torch.get_num_threads())
    return lib.restora_prelu_(x.data_ptr(), count, c, plane, slope.data_ptr(), dtype, threads) == 0


def interleave_phases(y4: torch.Tensor, out: torch.Tensor) -> bool:
    """out[n, c, 2i + dy, 2j + dx] = y4[n, (2 dy + dx) C + c, i + dy, j + dx] for the
    channels-last CPU maps y4 (N, 4C, H+1, W+1) and out (N, C, 2H, 2W) of one dtype. False,
    with `out` unwritten, where the kernels do not take them."""
    n, c4, h1, w1 = y4.shape
    if y4.device.type != "cpu" or out.device.type != "cpu" or y4.dtype != out.dtype:
        return False
    if out.shape != (n, c4 // 4, 2 * (h1 - 1), 2 * (w1 - 1)) or c4 % 4:
        return False
    cl = torch.channels_last
    if not (y4.is_contiguous(memory_format=cl) and out.is_contiguous(memory_format=cl)):
        return False
    lib = KERNELS.load()
    if lib is None:
        return False
    threads = max(1, torch.get_num_threads())
    args = (n, h1 - 1, w1 - 1, c4 // 4, y4.element_size(), threads)
    return lib.restora_interleave_phases_(y4.data_ptr(), out.data_ptr(), *args) == 0
