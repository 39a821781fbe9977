"""On a CPU, a convolution and what follows it (its activation, a scaled residual add) in one
oneDNN call, instead of one pass over memory each.

Eager PyTorch runs `lrelu(conv(x))` as two kernels: the activation reads and writes the whole
feature map again, and at two threads each of those small passes also waits for the second
thread. oneDNN applies the activation (and an add of another tensor) while the convolution's
output is still in cache: `torch.ops.mkldnn._convolution_pointwise`, the kernel PyTorch's own
compiler emits for these patterns on a CPU, called here without compiling anything.

`fuse(model)` rewrites a loaded network in place (idempotent): a Conv2d directly followed by a
supported activation inside a Sequential or ModuleList becomes one FusedConv2d and an Identity,
ESRGAN's residual dense blocks fold their `x5 * 0.2 + x` (and the RRDB's own `* 0.2 + x`)
into the last convolution's weights and a fused add, and the Compact network adds its
nearest-neighbour image inside its last convolution. The original layers stay inside the
fused ones (their parameters are the same tensors), so precision casts and memory-format
changes still reach them; oneDNN's own weight layout is made from them once per dtype and
layout. Inside `unfused()` every fused layer runs its original layers instead (the benchmark
records the network's own convolutions that way); a fused call that fails on some CPU falls
back to the original layers for good.
"""

from __future__ import annotations

import contextlib
import os
import threading
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from backend import cpu_kernels

_state = threading.local()

#: activation modules oneDNN applies inside the convolution: module type -> (attr, scalars of
#: the module, algorithm); PyTorch's names (aten/src/ATen/native/mkldnn/Utils.cpp)
UNARY: dict[type, Any] = {
    nn.ReLU: lambda m: ("relu", [], ""),
    nn.LeakyReLU: lambda m: ("leaky_relu", [float(m.negative_slope)], ""),
    nn.SiLU: lambda m: ("swish", [], ""),
    nn.GELU: lambda m: ("gelu", [], m.approximate),
    nn.Hardtanh: lambda m: ("hardtanh", [float(m.min_val), float(m.max_val)], ""),
    nn.ReLU6: lambda m: ("hardtanh", [0.0, 6.0], ""),
    nn.Hardswish: lambda m: ("hardswish", [], ""),
    nn.Sigmoid: lambda m: ("sigmoid", [], ""),
    nn.Tanh: lambda m: ("tanh", [], ""),
}


def available() -> bool:
    """oneDNN's fused kernels are in this PyTorch, and RESTORA_CPU_FUSION is not 0."""
    if os.environ.get("RESTORA_CPU_FUSION", "1") == "0":
        return False
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


def pack_weight(
    weight: torch.Tensor,
    padding: list[int],
    stride: list[int],
    dilation: list[int],
    groups: int,
    input_shape: list[int],
) -> torch.Tensor:
    """`weight` in oneDNN's own blocked layout for this convolution, so that no call reorders
    it (measured: a convolution on packed weights ran as fast as PyTorch's own without an
    activation). Inputs of other shapes run on it too."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.detach().to_mkldnn(), padding, stride, dilation, groups, input_shape
    )


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Run every fused layer as its original layers while the block runs (this thread)."""
    before = getattr(_state, "off", False)
    _state.off = True
    try:
        yield
    finally:
        _state.off = before


def _enabled() -> bool:
    return not getattr(_state, "off", False)


def _fusable_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


class _OneDNNCall(nn.Module):
    """What the fused layers share: when the fused kernel may run, and its arguments."""

    #: LayerWatch counts this layer as one leaf (its children do not run on the fused path)
    restora_leaf = True

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        #: dtypes whose fused kernel failed here (a CPU without bf16 kernels, say): those run
        #: the original layers from then on; the others stay fused
        self.broken: set[torch.dtype] = set()
        self._pack_key: Any = None
        self._pack: torch.Tensor | None = None
        self.geometry = (
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
        )

    def _packed(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The layer's weight times `scale` (scaled in fp32, then cast), packed once per
        weight tensor, version, dtype and layout: tiles of every size run on it."""
        w = self.conv.weight
        key = (scale, w.data_ptr(), w._version, w.dtype, w.stride())
        if self._pack_key != key:
            scaled = w if scale == 1.0 else (w.detach().float() * scale).to(w.dtype)
            self._pack = pack_weight(scaled, *self.geometry, list(x.shape))
            self._pack_key = key
        return self._pack

    def _input(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
        """`x` in the weight's dtype where the fused kernel applies to it, else None."""
        if not _enabled() or x.device.type != "cpu" or x.ndim != 4 or weight.dtype in self.broken:
            return None
        if weight.dtype not in (torch.float32, torch.bfloat16) or torch.is_grad_enabled():
            return None
        if torch.is_autocast_enabled("cpu"):
            # autocast would run the convolution in its dtype: fused only where the weights
            # are already stored in it (backend.inference.set_weight_dtype)
            if weight.dtype != torch.get_autocast_dtype("cpu") or not x.is_floating_point():
                return None
            return x.to(weight.dtype)
        return x if x.dtype == weight.dtype else None

    def _failed(self, exc: RuntimeError, dtype: torch.dtype) -> None:
        from backend.inference import is_out_of_memory

        if is_out_of_memory(exc):
            raise exc
        self.broken.add(dtype)  # this CPU or build lacks the kernel for it


class FusedConv2d(_OneDNNCall):
    """conv followed by `act`, in one call. The activation module stays a child (its
    parameters and repr); the Identity that takes its place in the container does nothing."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__(conv)
        self.act = act
        self.attr, self.scalars, self.algorithm = UNARY[type(act)](act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        xin = self._input(x, w)
        if xin is not None:
            try:
                return torch.ops.mkldnn._convolution_pointwise(
                    xin, self._packed(xin), self.conv.bias, *self.geometry,
                    self.attr, self.scalars, self.algorithm,
                )  # fmt: skip
            except RuntimeError as exc:
                self._failed(exc, xin.dtype)
        return self.act(self.conv(x))


class FusedConvPReLU(_OneDNNCall):
    """conv followed by a PReLU: oneDNN fuses no per-channel slope into a convolution, so the
    PReLU stays a pass of its own after the convolution on packed weights, in place over the
    convolution's output in Restora's compiled kernel where it can be had: PyTorch's
    out-of-place bf16 PReLU cost 2-3x a ReLU and a fresh large map each. (Writing both into
    two reused buffers, to spare the kernel mapping each large map afresh, was tried: over a
    whole 512 px image the extra zeroing and in-place PReLU passes cost as much as the saved
    page faults, 1-5% slower in alternating processes.)"""

    def __init__(self, conv: nn.Conv2d, act: nn.PReLU) -> None:
        super().__init__(conv)
        self.act = act
        self._slope_key: Any = None
        self._slope: torch.Tensor | None = None

    def _slopes(self, dtype: torch.dtype) -> torch.Tensor:
        """The slopes as PyTorch's PReLU in `dtype` uses them (rounded to it), in float32 for
        the compiled kernel; made once per weight version and dtype."""
        a = self.act.weight
        key = (a.data_ptr(), a._version, dtype)
        if self._slope_key != key:
            channels = self.conv.out_channels
            self._slope = a.detach().to(dtype).float().expand(channels).contiguous()
            self._slope_key = key
        assert self._slope is not None
        return self._slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        xin = self._input(x, w)
        if xin is not None:
            try:
                y = torch.ops.mkldnn._convolution_pointwise(
                    xin, self._packed(xin), self.conv.bias, *self.geometry, "none", [], ""
                )
                # in place in the compiled kernels (backend.cpu_kernels), PyTorch's otherwise
                if cpu_kernels.prelu_(y, self._slopes(y.dtype)):
                    return y
                return nn.functional.prelu(y, self.act.weight.to(xin.dtype))
            except RuntimeError as exc:
                self._failed(exc, xin.dtype)
        return self.act(self.conv(x))


def _phase_weights(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel (O, I, 3, 3) applied after a nearest 2x upsample, as four 2x2 kernels on
    the small map, stacked (4 * O, I, 2, 2) in the order of the output pixel's row and column
    in its 2x2 block. An output pixel at even position 2i reads upsampled rows 2i-1, 2i, 2i+1,
    that is small rows i-1, i, i: taps (w0, w1 + w2) on rows (i-1, i); at odd 2i+1 it reads
    rows i, i, i+1: taps (w0 + w1, w2) on rows (i, i+1). Columns alike. Summed in float32."""
    wf = w.detach().float()

    def fold(k: torch.Tensor, dim: int, odd: int) -> torch.Tensor:
        a, b, c = k.unbind(dim)
        return torch.stack((a, b + c) if not odd else (a + b, c), dim)

    phases = [fold(fold(wf, 2, dy), 3, dx) for dy in (0, 1) for dx in (0, 1)]
    return torch.cat(phases, 0).to(w.dtype)


class FusedNearestUpConv(_OneDNNCall):
    """A nearest 2x upsample, then a 3x3 convolution (padding 1) and its activation (ESRGAN's
    upsampling blocks), as one 2x2 convolution on the small map with four times the output
    channels (_phase_weights; padding 1, so phase (dy, dx) of small pixel (i, j) is output
    (i + dy, j + dx)) and one gather that interleaves the phases: the same result with 16
    instead of 36 multiply-adds per small pixel and output channel per input channel, and no
    upsampled copy of the input."""

    def __init__(self, up: nn.Upsample, conv: nn.Conv2d, act: nn.Module | None) -> None:
        super().__init__(conv)
        self.up = up
        self.act = act if act is not None else nn.Identity()
        self.attr, self.scalars, self.algorithm = (
            UNARY[type(act)](act) if act is not None else ("none", [], "")
        )
        self.geometry = ([1, 1], [1, 1], [1, 1], 1)  # the 2x2 convolution's
        self._bias_key: Any = None
        self._bias4: torch.Tensor | None = None

    @staticmethod
    def applies(up: nn.Module, conv: nn.Module) -> bool:
        return (
            type(up) is nn.Upsample
            and up.mode == "nearest"
            and up.size is None
            and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
            and _fusable_conv(conv)
            and tuple(conv.kernel_size) == (3, 3)
            and tuple(conv.padding) == (1, 1)
            and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1)
            and conv.groups == 1
        )

    def _packed(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        w = self.conv.weight
        key = ("phases", w.data_ptr(), w._version, w.dtype, w.stride())
        if self._pack_key != key:
            self._pack = pack_weight(_phase_weights(w), *self.geometry, list(x.shape))
            self._pack_key = key
        assert self._pack is not None
        return self._pack

    def _bias(self) -> torch.Tensor | None:
        b = self.conv.bias
        if b is None:
            return None
        key = (b.data_ptr(), b._version, b.dtype)
        if self._bias_key != key:
            self._bias4, self._bias_key = b.detach().repeat(4), key
        return self._bias4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self._input(x, self.conv.weight)
        if xin is not None:
            try:
                y4 = torch.ops.mkldnn._convolution_pointwise(
                    xin, self._packed(xin), self._bias(), *self.geometry,
                    self.attr, self.scalars, self.algorithm,
                )  # fmt: skip
                return _interleave_phases(y4, self.conv.out_channels)
            except RuntimeError as exc:
                self._failed(exc, xin.dtype)
        return self.act(self.conv(self.up(x)))


def _interleave_phases(y4: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, 4C, H+1, W+1), phase k = 2 dy + dx in channels k*C..(k+1)*C -> (N, C, 2H, 2W) with
    out[n, c, 2i + dy, 2j + dx] = y4[n, k*C + c, i + dy, j + dx], in y4's memory format: in
    the compiled kernel where it can be had (channels-last), else one copy between two strided
    views (half a nearest upsample's speed)."""
    n, _, h1, w1 = y4.shape
    h, w = h1 - 1, w1 - 1
    channels_last = y4.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, channels, 2 * h, 2 * w), dtype=y4.dtype, memory_format=fmt)
    if channels_last and cpu_kernels.interleave_phases(y4, out):
        return out
    sn, sc, sh, sw = y4.stride()
    on, oc, oh, ow = out.stride()
    size = (n, channels, h, 2, w, 2)  # n, c, i, dy, j, dx
    src = y4.as_strided(size, (sn, sc, sh, sh + 2 * channels * sc, sw, sw + channels * sc))
    out.as_strided(size, (on, oc, 2 * oh, oh, 2 * ow, ow)).copy_(src)
    return out


class ScaledResidualConv2d(_OneDNNCall):
    """`scale * conv(x) + residual` in one call: `scale` is folded into the packed weights
    and the bias, the add is oneDNN's."""

    def __init__(self, conv: nn.Conv2d, scale: float) -> None:
        super().__init__(conv)
        self.scale = scale
        self._bias_key: Any = None
        self._scaled_bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        xin = self._input(x, self.conv.weight)
        if xin is not None and residual is not None and residual.dtype != xin.dtype:
            if torch.is_autocast_enabled("cpu"):
                residual = residual.to(xin.dtype)  # autocast's dtype, as the sum would get
            else:
                xin = None  # PyTorch's own dtype promotion, on the layers
        if xin is not None:
            b = self._bias()
            try:
                if residual is None:
                    return torch.ops.mkldnn._convolution_pointwise(
                        xin, self._packed(xin, self.scale), b, *self.geometry, "none", [], ""
                    )
                fmt = torch.channels_last if _is_nhwc(xin) else torch.contiguous_format
                return torch.ops.mkldnn._convolution_pointwise.binary(
                    xin, residual.contiguous(memory_format=fmt), self._packed(xin, self.scale),
                    b, *self.geometry, "add", None, None, [], "",
                )  # fmt: skip
            except RuntimeError as exc:
                self._failed(exc, xin.dtype)
        y = self.conv(x)
        if self.scale != 1.0:
            y = y * self.scale
        return y if residual is None else y + residual

    def _bias(self) -> torch.Tensor | None:
        """The bias times `scale`, made once per bias tensor, version and dtype (it was made
        anew at each of RRDBNet's 69 calls per tile)."""
        b = self.conv.bias
        if b is None or self.scale == 1.0:
            return b
        key = (b.data_ptr(), b._version, b.dtype)
        if self._bias_key != key:
            self._scaled_bias = (b.detach().float() * self.scale).to(b.dtype)
            self._bias_key = key
        return self._scaled_bias

    def extra_repr(self) -> str:
        return f"{self.scale:g} * conv(x) + residual"


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


#: per thread, the memory that the dense blocks' concatenations are written into
_scratch: dict[int, torch.Tensor] = {}
_scratch_lock = threading.Lock()


def _concat(tensors: tuple[torch.Tensor, ...], widest: int) -> torch.Tensor:
    """torch.cat along the channels, into memory this thread reuses for every concatenation
    of every dense block. Each is read only by the convolution right after it, so one buffer,
    sized for the block's widest (`widest` channels), serves them all; fresh, the 128- to
    192-channel results of a 281 px tile (20-30 MB, above the heap's limit, backend/allocator.py)
    were each mapped and faulted in anew, 207 a pass. Off where the layers run unfused
    (hooks may keep what a layer reads) or the maps are in neither dense layout."""
    first = tensors[0]
    n, _, h, w = first.shape
    channels = sum(t.shape[1] for t in tensors)
    channels_last = all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors)
    if not _enabled() or first.device.type != "cpu" or torch.is_grad_enabled():
        return torch.cat(tensors, 1)
    if not channels_last and not all(t.is_contiguous() for t in tensors):
        return torch.cat(tensors, 1)
    key = threading.get_ident()
    need = n * widest * h * w
    with _scratch_lock:
        buf = _scratch.get(key)
        if buf is None or buf.numel() < need or buf.dtype != first.dtype:
            buf = _scratch[key] = torch.empty(need, dtype=first.dtype)
    flat = buf[: n * channels * h * w]
    if channels_last:
        out = flat.view(n, h, w, channels).permute(0, 3, 1, 2)
    else:
        out = flat.view(n, channels, h, w)
    return torch.cat(tensors, 1, out=out)


def release_scratch() -> None:
    """Drop every thread's concatenation buffer (the server's queue is idle, or a model was
    unloaded): a later pass makes a new one."""
    with _scratch_lock:
        _scratch.clear()


class FusedDenseBlock(nn.Module):
    """ESRGAN's ResidualDenseBlock_5C (without ESRGAN+'s extra paths) with its last step,
    `x5 * 0.2 + x`, done by the last convolution. Children keep the block's names."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for name in ("conv1", "conv2", "conv3", "conv4"):
            setattr(self, name, getattr(block, name))
        conv5 = _bare_conv(block.conv5)
        # alone: x5 * 0.2 + x; inside an RRDB's third block: (x5 * 0.2 + x) * 0.2 + outer
        self.conv5 = ScaledResidualConv2d(conv5, 0.2)
        self.conv5_outer = ScaledResidualConv2d(conv5, 0.04)
        self.conv1x1 = None

    def forward(self, x: torch.Tensor, outer: torch.Tensor | None = None) -> torch.Tensor:
        """x5 * 0.2 + x; with `outer` (the RRDB's input), (x5 * 0.2 + x) * 0.2 + outer."""
        x1 = self.conv1(x)
        widest = x.shape[1] + 4 * x1.shape[1]
        x2 = self.conv2(_concat((x, x1), widest))
        x3 = self.conv3(_concat((x, x1, x2), widest))
        x4 = self.conv4(_concat((x, x1, x2, x3), widest))
        z = _concat((x, x1, x2, x3, x4), widest)
        if outer is None:
            return self.conv5(z, x)
        return self.conv5_outer(z, torch.add(outer, x, alpha=0.2))


class FusedRRDB(nn.Module):
    """ESRGAN's RRDB: its `out * 0.2 + x` is folded into the third dense block's last call."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = block.RDB1, block.RDB2, block.RDB3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x)), outer=x)


def _compact_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SRVGGNetCompact's forward with its last steps fused: `pixel_shuffle(conv(z)) + nearest
    upscale of x` is `pixel_shuffle(conv(z) + x repeated s*s times per channel)` (the shuffle
    sends channel c*s*s + k of a pixel to the k-th output pixel of its block, channel c, which
    the nearest upscale fills with x's channel c), so the add is the convolution's."""
    if not _enabled():
        return type(self).forward(self, x)
    out = x
    for layer in self.body[:-1]:
        out = layer(out)
    s = self.upscale
    lead = x
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # the last convolution's add runs in autocast's dtype: cast the 3 channels here, not
        # the s*s times as many repeated ones there (a 53 MB fp32 copy and a cast of it on a
        # whole 512 px image)
        lead = x.to(torch.get_autocast_dtype("cpu"))
    # built in NHWC, so that a channels-last run gets it in its own layout without a copy
    base = lead.permute(0, 2, 3, 1).repeat_interleave(s * s, dim=3).permute(0, 3, 1, 2)
    return nn.functional.pixel_shuffle(self.body[-1](out, base), s)


def _fuse_compact(m: nn.Module) -> bool:
    body = getattr(m, "body", None)
    if not (
        type(m).__name__ == "SRVGGNetCompact"
        and type(body) is nn.ModuleList
        and len(body) > 1
        and _fusable_conv(body[-1])
        and type(getattr(m, "upsampler", None)) is nn.PixelShuffle
        and m.upsampler.upscale_factor == getattr(m, "upscale", None)
        and body[-1].out_channels == body[0].in_channels * m.upscale**2
    ):
        return False
    body[-1] = ScaledResidualConv2d(body[-1], 1.0)
    m.forward = types.MethodType(_compact_forward, m)
    return True


def _bare_conv(m: Any) -> Any:
    """The Conv2d itself, also where a Sequential holds it alone (ESRGAN's conv_block)."""
    if type(m) is nn.Sequential and len(m) == 1:
        return m[0]
    return m


def _plain_dense_block(m: nn.Module) -> bool:
    return (
        type(m).__name__ == "ResidualDenseBlock_5C"
        and getattr(m, "conv1x1", None) is None
        and _fusable_conv(_bare_conv(getattr(m, "conv5", None)))
    )


#: ModuleLists that their network runs in order, each layer on the last one's output
SEQUENTIAL_LISTS = {("SRVGGNetCompact", "body")}


def _sequential_containers(model: nn.Module) -> list[nn.Module]:
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Sequential or (
                type(child) is nn.ModuleList and (type(parent).__name__, name) in SEQUENTIAL_LISTS
            ):
                found.append(child)
    if type(model) is nn.Sequential:
        found.append(model)
    return found


def fuse(model: nn.Module) -> int:
    """Rewrite `model` in place for fused CPU inference; returns how many layers were fused
    (0 when this PyTorch has no oneDNN, on a second call, or while hooks are on the model:
    then it is left as it is and fused on a later call)."""
    if not available() or getattr(model, "_restora_fused", False):
        return 0
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return 0  # a LayerWatch is on: fusing now would hide layers it watches; later
    count = 0
    # residual dense blocks first: their last convolution is not followed by an activation
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _plain_dense_block(child):
                setattr(parent, name, FusedDenseBlock(child))
                count += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            blocks = [getattr(child, n, None) for n in ("RDB1", "RDB2", "RDB3")]
            if type(child).__name__ == "RRDB" and all(
                isinstance(b, FusedDenseBlock) for b in blocks
            ):
                setattr(parent, name, FusedRRDB(child))
    for m in list(model.modules()):
        count += _fuse_compact(m)
    for container in _sequential_containers(model):
        items = list(container)
        # nearest 2x upsample + 3x3 convolution (+ activation) first: ESRGAN's upsampling
        for i in range(len(items) - 1):
            up, conv = items[i], items[i + 1]
            if FusedNearestUpConv.applies(up, conv):
                after = items[i + 2] if i + 2 < len(items) else None
                act = after if type(after) in UNARY else None
                container[i] = FusedNearestUpConv(up, conv, act)
                for k in range(i + 1, i + (3 if act is not None else 2)):
                    container[k] = nn.Identity()
                    items[k] = container[k]
                count += 1
        items = list(container)
        for i in range(len(items) - 1):
            conv, act = items[i], items[i + 1]
            if _fusable_conv(conv) and type(act) in UNARY:
                container[i] = FusedConv2d(conv, act)
            elif _fusable_conv(conv) and type(act) is nn.PReLU:
                container[i] = FusedConvPReLU(conv, act)
            else:
                continue
            container[i + 1] = nn.Identity()
            count += 1
    model._restora_fused = True
    return count
