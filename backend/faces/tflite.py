"""TensorFlow Lite models run by PyTorch: a minimal .tflite reader and a graph executor.

The reader follows the public TFLite flatbuffer schema (tensorflow/compiler/mlir/lite/schema/
schema.fbs) with the standard library and numpy only; the executor runs the float operators
that MediaPipe's face detectors and face mesh use, so they run on any torch device without
TensorFlow. Tensors are NHWC in the file and NCHW inside the module; `forward` takes and
returns the file's layout. Anything else in a file is refused with a typed error.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend import cpu_fusion
from backend.errors import ModelFormatError, UnsupportedOperatorError
from backend.faces import native

FILE_IDENTIFIER = b"TFL3"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    options_type: int  # its BuiltinOptions union type; 0: it has none
    fields: tuple[str, ...]  # its options, "name:struct format" by field slot; "" to skip one
    inputs: tuple[int, int]  # fewest and most inputs; every operator here has one output


_CONV = ("padding:b", "stride_w:i", "stride_h:i")
#: the operators the executor runs, by builtin code (schema.fbs BuiltinOperator)
OPERATORS = {
    0: OperatorSpec("ADD", 11, ("activation:b",), (2, 2)),
    2: OperatorSpec("CONCATENATION", 10, ("axis:i", "activation:b"), (1, 1 << 16)),
    3: OperatorSpec("CONV_2D", 1, (*_CONV, "activation:b", "dilation_w:i", "dilation_h:i"), (2, 3)),
    4: OperatorSpec(
        "DEPTHWISE_CONV_2D",
        2,
        (*_CONV, "depth_multiplier:i", "activation:b", "dilation_w:i", "dilation_h:i"),
        (2, 3),
    ),
    6: OperatorSpec("DEQUANTIZE", 38, (), (1, 1)),
    17: OperatorSpec(
        "MAX_POOL_2D", 5, (*_CONV, "filter_w:i", "filter_h:i", "activation:b"), (1, 1)
    ),
    19: OperatorSpec("RELU", 0, (), (1, 1)),
    22: OperatorSpec("RESHAPE", 17, (), (1, 2)),  # its new_shape vector is read apart
    23: OperatorSpec("RESIZE_BILINEAR", 15, ("", "", "align_corners:?", "half_pixel:?"), (2, 2)),
    34: OperatorSpec("PAD", 22, (), (2, 2)),
    54: OperatorSpec("PRELU", 0, (), (2, 2)),
}
#: option defaults other than 0 / False (schema.fbs)
OPTION_DEFAULTS = {"dilation_w": 1, "dilation_h": 1}
#: TensorType codes this reader can hold (quantized integer activations are refused)
DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 2: np.dtype("<i4"), 4: np.dtype("<i8")}
SAME, VALID = 0, 1
#: a tensor larger than this (for one image) is a corrupt shape, not a model to try
MAX_ELEMENTS = 1 << 26
ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh"}


# --- reading the flatbuffer ------------------------------------------------------------------


class _Table:
    """One flatbuffer table: fields found through its vtable, every read bounds-checked."""

    __slots__ = ("buf", "pos", "vsize", "vtable")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - _unpack(buf, "<i", pos)
        self.vsize = _unpack(buf, "<H", self.vtable)
        _check(buf, self.vtable, self.vsize)

    def _field(self, slot: int) -> int:
        entry = 4 + 2 * slot
        if entry >= self.vsize:
            return 0
        off = _unpack(self.buf, "<H", self.vtable + entry)
        return self.pos + off if off else 0

    def scalar(self, slot: int, fmt: str, default: Any) -> Any:
        at = self._field(slot)
        return _unpack(self.buf, "<" + fmt, at) if at else default

    def table(self, slot: int) -> _Table | None:
        at = self._field(slot)
        return _Table(self.buf, at + _unpack(self.buf, "<I", at)) if at else None

    def vector(self, slot: int) -> tuple[int, int]:
        """(first element's position, length); (0, 0) when the field is absent."""
        at = self._field(slot)
        if not at:
            return 0, 0
        start = at + _unpack(self.buf, "<I", at)
        return start + 4, _unpack(self.buf, "<I", start)

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vector(slot)
        _check(self.buf, start, 4 * n)
        return [
            _Table(self.buf, p + _unpack(self.buf, "<I", p)) for p in range(start, start + 4 * n, 4)
        ]

    def array(self, slot: int, dtype: str) -> np.ndarray:
        start, n = self.vector(slot)
        item = np.dtype(dtype)
        _check(self.buf, start, n * item.itemsize)
        return np.frombuffer(self.buf, item, n, start) if n else np.zeros(0, item)

    def string(self, slot: int) -> str:
        return bytes(self.array(slot, "u1")).decode("utf-8", "replace")


def _check(buf: bytes, pos: int, size: int) -> None:
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise ModelFormatError(
            "The .tflite file is truncated or corrupt.", "Download or copy the model again."
        )


def _unpack(buf: bytes, fmt: str, pos: int) -> Any:
    _check(buf, pos, struct.calcsize(fmt))
    return struct.unpack_from(fmt, buf, pos)[0]


# --- the graph -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None  # constant tensors only, already in `shape`


@dataclass(frozen=True)
class Operation:
    op: str
    inputs: tuple[int, ...]  # -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Graph:
    tensors: list[TensorInfo]
    operations: list[Operation]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def read_tflite(source: Path | str | bytes) -> Graph:
    """Parse the main subgraph of a .tflite file; ModelFormatError if it is not one,
    UnsupportedOperatorError if it uses operators or tensor types the executor lacks."""
    name = "The .tflite data" if isinstance(source, bytes) else Path(source).name
    buf = source if isinstance(source, bytes) else Path(source).read_bytes()
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(
            f"{name} is not a TensorFlow Lite model.", "Expected a .tflite file (identifier TFL3)."
        )
    try:
        return _read_model(buf, name)
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise ModelFormatError(f"{name} is a corrupt .tflite file: {exc}.") from exc


def _read_model(buf: bytes, name: str) -> Graph:
    model = _Table(buf, _unpack(buf, "<I", 0))
    codes = [(max(c.scalar(0, "b", 0), c.scalar(3, "i", 0)), c.string(1)) for c in model.tables(1)]
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise ModelFormatError(f"{name} has no graph.")
    graph = subgraphs[0]
    tensors = [_read_tensor(t, buffers, buf) for t in graph.tables(0)]

    operations, unknown = [], set()
    for op in graph.tables(3):
        index = op.scalar(0, "I", 0)
        if index >= len(codes):
            raise ModelFormatError(f"{name} names an operator code that it does not define.")
        code, custom = codes[index]
        spec = OPERATORS.get(code) if not custom else None
        if spec is None:
            unknown.add(f"custom '{custom}'" if custom else f"builtin #{code}")
            continue
        kind = spec.name
        options = _read_options(op, spec, name)
        ins = tuple(int(i) for i in op.array(1, "<i4"))
        outs = tuple(int(i) for i in op.array(2, "<i4"))
        if any(i >= len(tensors) for i in ins + outs) or any(i < 0 for i in outs):
            raise ModelFormatError(f"{name} refers to a tensor that it does not define.")
        fewest, most = spec.inputs
        if not fewest <= len(ins) <= most or len(outs) != 1 or ins[0] < 0:
            raise ModelFormatError(
                f"{name} has a {kind} with {len(ins)} inputs, {len(outs)} outputs."
            )
        operations.append(Operation(kind, ins, outs, options))
    if unknown:
        raise UnsupportedOperatorError(
            f"{name} uses operators Restora cannot run: {', '.join(sorted(unknown))}.",
            f"Supported: {', '.join(sorted(o.name for o in OPERATORS.values()))}.",
        )
    ins = tuple(int(i) for i in graph.array(1, "<i4"))
    outs = tuple(int(i) for i in graph.array(2, "<i4"))
    if any(not 0 <= i < len(tensors) for i in ins + outs):
        raise ModelFormatError(f"{name} names graph inputs or outputs that it does not define.")
    return Graph(tensors, operations, ins, outs)


def _read_tensor(t: _Table, buffers: list[_Table], buf: bytes) -> TensorInfo:
    name = t.string(3)
    type_code = t.scalar(1, "b", 0)
    quant = t.table(4)
    if type_code not in DTYPES or (quant is not None and quant.vector(2)[1]):
        raise UnsupportedOperatorError(
            f"Tensor '{name}' is quantized or of type #{type_code}: not supported.",
            "Use the float (fp32 or fp16) version of the model.",
        )
    dtype = DTYPES[type_code]
    shape = tuple(int(s) for s in t.array(0, "<i4"))
    index = t.scalar(2, "I", 0)
    data = None
    if 0 < index < len(buffers):
        b = buffers[index]
        offset, size = b.scalar(1, "Q", 0), b.scalar(2, "Q", 0)
        if offset > 1:  # a model over 2 GB keeps its weights after the flatbuffer
            _check(buf, offset, size)
            raw = np.frombuffer(buf, np.uint8, size, offset)
        else:
            raw = b.array(0, "u1")
        if raw.size:
            count = int(np.prod(shape)) if shape else 1
            if raw.size != count * dtype.itemsize:
                raise ModelFormatError(f"Tensor '{name}' holds {raw.size} bytes for {shape}.")
            data = raw.view(dtype).reshape(shape)
    return TensorInfo(name, shape, dtype, data)


def _read_options(op: _Table, spec: OperatorSpec, name: str) -> dict[str, Any]:
    fields = [(slot, *f.split(":")) for slot, f in enumerate(spec.fields) if f]
    options = {key: OPTION_DEFAULTS.get(key, False if fmt == "?" else 0) for _, key, fmt in fields}
    table = op.table(4)
    if table is None:
        return options
    if op.scalar(3, "B", 0) != spec.options_type:
        raise ModelFormatError(f"{name}: a {spec.name} operator has another operator's options.")
    for slot, key, fmt in fields:
        options[key] = table.scalar(slot, fmt, options[key])
    if spec.name == "RESHAPE":
        options["new_shape"] = tuple(int(s) for s in table.array(0, "<i4"))
    return options


# --- executing it with torch -----------------------------------------------------------------


def _activation(x: torch.Tensor, kind: int) -> torch.Tensor:
    """A fused activation, applied in place: `x` is always a tensor the operator just made."""
    if kind not in ACTIVATIONS:
        raise UnsupportedOperatorError(f"Fused activation #{kind} is not supported.")
    name = ACTIVATIONS[kind]
    if name == "relu":
        return x.relu_()
    if name == "relu6":
        return x.clamp_(0, 6)
    if name == "relu_n1_to_1":
        return x.clamp_(-1, 1)
    if name == "tanh":
        return x.tanh_()
    return x


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding of one axis: (before, after), the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_constant(x: torch.Tensor, pads: tuple[int, ...], value: float = 0.0) -> torch.Tensor:
    """F.pad's constant mode for non-negative pads, in x's memory format: each element of the
    result is written once (F.pad fills the whole result, then copies x over it: on the
    detectors' batches of 96x96x32 maps that first pass was a quarter of a detection)."""
    if len(pads) % 2 or len(pads) > 2 * x.ndim or min(pads, default=0) < 0:
        return F.pad(x, pads, value=value)
    before = [0] * x.ndim
    after = [0] * x.ndim
    for k in range(len(pads) // 2):  # pads run from the last dimension back
        before[x.ndim - 1 - k], after[x.ndim - 1 - k] = pads[2 * k], pads[2 * k + 1]
    shape = [n + a + b for n, a, b in zip(x.shape, before, after)]
    nhwc = x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if nhwc and not x.is_contiguous() else torch.contiguous_format
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    inner = out
    for dim, (a, n) in enumerate(zip(before, x.shape)):
        inner = inner.narrow(dim, a, n)
    inner.copy_(x)
    # the border: for each padded dimension, the slabs before and after, over the extent of
    # the dimensions already handled (so no element is filled twice)
    region = out
    for dim, (a, b, n) in enumerate(zip(before, after, x.shape)):
        if a:
            region.narrow(dim, 0, a).fill_(value)
        if b:
            region.narrow(dim, a + n, b).fill_(value)
        region = region.narrow(dim, a, n)
    return out


def _pads(x: torch.Tensor, o: dict[str, Any], kh: int, kw: int) -> tuple[int, int, int, int]:
    if o["padding"] == VALID:
        return 0, 0, 0, 0
    if o["padding"] != SAME:
        raise ModelFormatError(f"Unknown padding #{o['padding']}.")
    top, bottom = same_padding(x.shape[2], kh, o["stride_h"], o.get("dilation_h", 1))
    left, right = same_padding(x.shape[3], kw, o["stride_w"], o.get("dilation_w", 1))
    return left, right, top, bottom


def _to_internal(a: np.ndarray) -> np.ndarray:
    """A constant operand broadcast against 4-D NHWC activations, as an NCHW-broadcastable array."""
    if a.ndim > 4:
        raise UnsupportedOperatorError(f"A {a.ndim}-D constant operand is not supported.")
    return a.reshape((1,) * (4 - a.ndim) + a.shape).transpose(0, 3, 1, 2)


NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


class _Step(nn.Module):
    """One operator: `run` maps its input values to its output value."""

    def __init__(self, op: Operation, rank: dict[int, int]) -> None:
        super().__init__()
        self.op = op.op
        self.options = op.options
        self.inputs = op.inputs
        self.output = op.outputs[0]
        self.rank4 = rank[op.inputs[0]] == 4  # a 4-D activation, held NCHW
        self.out_rank = rank[op.outputs[0]]
        self.consts: dict[int, str] = {}  # input tensor index -> buffer name
        self.release: tuple[int, ...] = ()  # values whose last use is this step
        self.scratch: tuple[int, ...] = ()  # released values that this step may overwrite

    def add_const(self, index: int, value: np.ndarray) -> None:
        name = f"c{len(self.consts)}"
        self.register_buffer(name, torch.from_numpy(np.array(value, np.float32)))
        self.consts[index] = name

    def value(self, env: dict[int, torch.Tensor], index: int) -> torch.Tensor:
        return getattr(self, self.consts[index]) if index in self.consts else env[index]


class TFLiteModule(nn.Module):
    """Runs a TFLite float graph with torch ops. The batch dimension is free (the file's is 1):
    N inputs of the file's shape give N outputs; a RESHAPE to a leading 1 keeps N."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        tensors = graph.tensors
        consts = {i: t.data for i, t in enumerate(tensors) if t.data is not None}
        rank = {i: len(t.shape) for i, t in enumerate(tensors)}
        steps = []
        for op in graph.operations:
            if op.op == "DEQUANTIZE" and op.inputs[0] in consts:  # fp16 weights: fold to fp32
                consts[op.outputs[0]] = consts[op.inputs[0]].astype(np.float32)
                continue
            _check_sizes(op, consts, [t.shape for t in tensors])
            steps.append(self._build(op, consts, rank))
        self.steps = nn.ModuleList(steps)
        _plan_memory(steps, graph.inputs, graph.outputs, set(consts))
        self.input_ids = graph.inputs
        self.output_ids = graph.outputs
        self.input_shapes = [tensors[i].shape for i in graph.inputs]
        self.output_names = [tensors[i].name for i in graph.outputs]
        self._rank = rank
        self._declared = {s.output: tensors[s.output].shape for s in steps}
        self._shapes = [t.shape for t in tensors]
        self._consts = frozenset(consts)
        #: run float32 CPU calls through oneDNN with operators fused (_fused_plan); the
        #: unfused path stays for other devices and dtypes, and for `verify`
        self.fuse = True
        self._plan: list[_ConvNode | _StepNode] | None = None  # built on first use
        #: run the fused plan's nodes as one call of the compiled kernels (backend.faces.native)
        #: where they can be had; the fused PyTorch path otherwise
        self.native = True
        self._program: native.Program | None = None
        self._cut = 0  # the plan's first stage ends here (_first_stage_end); 0: no cut
        if any(i in consts for i in graph.inputs):
            raise ModelFormatError("A graph input is a constant tensor.")

    @staticmethod
    def _build(op: Operation, consts: dict[int, np.ndarray], rank: dict[int, int]) -> _Step:
        if op.inputs[0] < 0 or op.inputs[0] in consts:
            raise UnsupportedOperatorError(f"A {op.op} on a constant input is not supported.")
        step = _Step(op, rank)
        o = op.options
        sizes = ("stride_w", "stride_h", "dilation_w", "dilation_h", "filter_w", "filter_h")
        if any(o[k] < 1 for k in sizes if k in o):
            raise ModelFormatError(f"A {op.op} has a stride, dilation or filter size under 1.")
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = consts.get(op.inputs[1])
            if w is None or w.ndim != 4:
                raise UnsupportedOperatorError(f"{op.op} needs constant 4-D weights.")
            # CONV_2D: OHWI -> OIHW; depthwise: 1HW(C*M) -> (C*M)1HW, channel c*M+m reads c
            w = w.transpose(0, 3, 1, 2) if op.op == "CONV_2D" else w.transpose(3, 0, 1, 2)
            step.add_const(op.inputs[1], w)
            bias = op.inputs[2] if len(op.inputs) > 2 else -1
            if bias >= 0:
                if bias not in consts:
                    raise UnsupportedOperatorError(f"{op.op} needs a constant bias.")
                step.add_const(bias, consts[bias])
        elif op.op in ("ADD", "PRELU"):
            other = op.inputs[1]
            if other in consts:
                c = consts[other]
                step.add_const(other, _to_internal(c) if step.rank4 else c)
        elif op.op in ("PAD", "RESHAPE", "RESIZE_BILINEAR"):
            arg = op.inputs[1] if len(op.inputs) > 1 else -1
            if arg >= 0:
                if arg not in consts:
                    raise UnsupportedOperatorError(f"{op.op} with a computed shape or size.")
                o = {**o, "arg": [int(v) for v in consts[arg].reshape(-1)]}
            elif op.op != "RESHAPE":
                raise ModelFormatError(f"{op.op} lacks its second input.")
            step.options = o
        elif op.op == "CONCATENATION" and any(i in consts for i in op.inputs):
            raise UnsupportedOperatorError("CONCATENATION of constants is not supported.")
        return step

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        plan = self._fused() if self.fuse else None
        if plan and self._fits(inputs):
            return self._execute_fused(plan, inputs)
        return self._execute(inputs, check=False)

    def _apply(self, fn: Any, recurse: bool = True) -> TFLiteModule:
        self._plan = None  # the plan holds the buffers of the device and dtype it was made for
        self._program = None
        return super()._apply(fn, recurse)

    def _fused(self) -> list[_ConvNode | _StepNode]:
        """The fused plan, made on first use; empty where it does not apply (another device or
        dtype, no oneDNN)."""
        if self._plan is None:
            buffers = list(self.buffers())
            usable = cpu_fusion.available() and all(
                b.device.type == "cpu" and b.dtype == torch.float32 for b in buffers
            )
            self._plan = _fused_plan(self) if usable else []
            self._cut = _first_stage_end(self._plan, self)
            self._program = native.build_program(self, self._plan) if self._plan else None
            self._check_native()
        return self._plan

    def _fits(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        """Whether these inputs may take the fused path: on the CPU, of the file's shapes (the
        plan's padding is worked out for them), nothing to differentiate, oneDNN enabled."""
        return (
            len(inputs) == len(self.input_shapes)
            and torch._C._get_mkldnn_enabled()
            and all(
                x.device.type == "cpu"
                and not x.requires_grad
                and tuple(x.shape[1:]) == tuple(shape[1:])
                for x, shape in zip(inputs, self.input_shapes)
            )
        )

    def _execute_fused(
        self, plan: list[_ConvNode | _StepNode], inputs: tuple[torch.Tensor, ...]
    ) -> list[torch.Tensor]:
        if self.native and self._program is not None:
            return self._execute_native(plan, self._program, inputs)
        env: dict[int, torch.Tensor] = {}
        for index, x in zip(self.input_ids, inputs):
            x = x.to(torch.float32)
            env[index] = x.permute(0, 3, 1, 2) if x.ndim == 4 else x
        batch, start = inputs[0].shape[0], 0
        if self._cut and batch > STAGE_BATCH:
            # the first stage a few windows at a time: see STAGE_BATCH
            parts = [
                _run_nodes(plan[: self._cut], {i: v[k : k + STAGE_BATCH] for i, v in env.items()})
                for k in range(0, batch, STAGE_BATCH)
            ]
            env = {i: env[i] if i in env else torch.cat([p[i] for p in parts]) for i in parts[0]}
            start = self._cut
        _run_nodes(plan[start:], env)
        return [
            env[i].permute(0, 2, 3, 1) if self._rank[i] == 4 else env[i] for i in self.output_ids
        ]

    def _execute_native(
        self,
        plan: list[_ConvNode | _StepNode],
        program: native.Program,
        inputs: tuple[torch.Tensor, ...],
    ) -> list[torch.Tensor]:
        """The program's nodes in one native call, then the nodes it does not run (the
        detectors' reshapes and concatenations of their heads) as the fused path runs them."""
        env = program(inputs[0])
        for index, x in zip(self.input_ids, inputs):
            env[index] = x.to(torch.float32).permute(0, 3, 1, 2)
        _run_nodes([n for k, n in enumerate(plan) if k not in program.covered], env)
        return [
            env[i].permute(0, 2, 3, 1) if self._rank[i] == 4 else env[i] for i in self.output_ids
        ]

    def _check_native(self) -> None:
        """Compare the native program with the unfused path on a fixed random batch of two;
        where the shapes or values differ (a compiler's or a CPU's fault), it is not used."""
        program = self._program
        if program is None:
            return
        gen = torch.Generator().manual_seed(0)
        x = tuple(torch.rand((2, *s[1:]), generator=gen) * 2 - 1 for s in self.input_shapes)
        expected = self._execute(x, check=False)
        try:
            got = self._execute_native(self._plan or [], program, x)
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            got, reason = [], str(exc)
        else:
            reason = "its output differs from PyTorch's"
        same = [a.shape for a in got] == [b.shape for b in expected] and all(
            (a - b).abs().max() <= 2e-4 * max(1.0, float(b.abs().max()))
            for a, b in zip(got, expected)
        )
        if not same:
            log.warning("native face kernels not used: %s", reason)
            self._program = None

    def verify(self) -> None:
        """Run once on zeros of the file's input shapes, checking every value's shape against
        the file's: ModelFormatError names the first operator that does not fit. The fused
        CPU path runs them too; where it fails or makes other shapes it is off for this
        module. (The native program is checked where it is made: _check_native.)"""
        if any(len(s) == 0 or min(s) < 1 or math.prod(s) > MAX_ELEMENTS for s in self.input_shapes):
            raise ModelFormatError(f"The model declares inputs of shapes {self.input_shapes}.")
        zeros = tuple(torch.zeros(s) for s in self.input_shapes)
        with torch.inference_mode():
            expected = self._execute(zeros, check=True)
            if self.fuse and self._fits(zeros):
                wanted, self.native = self.native, False  # the PyTorch nodes first
                try:
                    plan = self._fused()
                    got = self._execute_fused(plan, zeros) if plan else expected
                except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError):
                    got = []  # oneDNN refused it: the unfused path runs this module
                finally:
                    self.native = wanted
                if [y.shape for y in got] != [y.shape for y in expected]:
                    self._plan = []
                    self._program = None

    def _execute(self, inputs: tuple[torch.Tensor, ...], check: bool) -> list[torch.Tensor]:
        if len(inputs) != len(self.input_ids):
            raise ValueError(f"expected {len(self.input_ids)} inputs, got {len(inputs)}")
        dtype = next((b.dtype for b in self.buffers()), torch.float32)
        env: dict[int, torch.Tensor] = {}
        for index, x in zip(self.input_ids, inputs):
            x = x.to(dtype)
            env[index] = x.permute(0, 3, 1, 2) if x.ndim == 4 else x
        for step in self.steps:
            if check:
                try:
                    env[step.output] = _run(step, env)
                except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError) as exc:
                    raise ModelFormatError(f"The model's {step.op} fails: {exc}") from exc
                y = env[step.output]
                got = tuple((y.permute(0, 2, 3, 1) if y.ndim == 4 else y).shape)
                if got != tuple(self._declared[step.output]):
                    raise ModelFormatError(
                        f"The model's {step.op} makes {got}, not {self._declared[step.output]}."
                    )
            else:
                env[step.output] = _run(step, env)
            for index in step.release:
                del env[index]
        outs = [env[i] for i in self.output_ids]
        return [
            y.permute(0, 2, 3, 1) if self._rank[i] == 4 else y
            for i, y in zip(self.output_ids, outs)
        ]


def _check_sizes(
    op: Operation, consts: dict[int, np.ndarray], shapes: list[tuple[int, ...]]
) -> None:
    """Refuse, before anything is allocated, an operator whose output the file declares huge
    or whose shape arguments contradict the shapes the file declares."""
    out, first = shapes[op.outputs[0]], shapes[op.inputs[0]]
    if math.prod(out) > MAX_ELEMENTS or min(out, default=1) < 1:
        raise ModelFormatError(f"The model's {op.op} declares an output of shape {out}.")
    arg = consts.get(op.inputs[1]) if len(op.inputs) > 1 else None
    expected: Any = out
    if op.op == "PAD" and arg is not None:
        pads = arg.reshape(-1, 2)
        if len(pads) != len(first) or pads.min(initial=0) < 0:
            raise ModelFormatError(f"The model's PAD has paddings {pads.tolist()} for {first}.")
        expected = tuple(int(n) for n in np.add(first, pads.sum(1)))
    elif op.op == "RESIZE_BILINEAR" and arg is not None:
        expected = (*first[:1], *(int(v) for v in arg.reshape(-1)), *first[3:])
    elif op.op == "RESHAPE":
        expected = math.prod(first)
        out = math.prod(out)
    elif op.op == "ADD":
        try:
            expected = np.broadcast_shapes(first, shapes[op.inputs[1]])
        except ValueError:
            expected = None
    if expected != out:
        raise ModelFormatError(f"The model's {op.op} does not make the shape {out} it declares.")


def _plan_memory(
    steps: list[Any], inputs: tuple[int, ...], outputs: tuple[int, ...], consts: Any
) -> None:
    """Check the order of the operators (steps or fused nodes) and find where each value is
    used for the last time, so it is freed there and, where no view of it can survive,
    overwritten in place."""
    produced, last, views = set(inputs), {}, set()
    for k, step in enumerate(steps):
        for index in step.inputs:
            if index >= 0 and index not in consts:
                if index not in produced:
                    raise ModelFormatError("The graph's operators are not in execution order.")
                last[index] = k
        produced.add(step.output)
        if step.op in ("RESHAPE", "DEQUANTIZE"):  # may return a view of their input
            views.update((step.inputs[0], step.output))
    keep = set(inputs) | set(outputs)
    for k, step in enumerate(steps):
        step.release = tuple(
            i for i in dict.fromkeys(step.inputs) if last.get(i) == k and i not in keep
        )
        step.scratch = tuple(
            i for i in step.release if i not in views and step.inputs.count(i) == 1
        )


def _run(
    step: _Step, env: dict[int, torch.Tensor], scratch: tuple[int, ...] | None = None
) -> torch.Tensor:
    """One operator on its input values; `scratch` (default: the step's own) are the inputs
    it may overwrite."""
    o, kind = step.options, step.op
    scratch = step.scratch if scratch is None else scratch
    x = step.value(env, step.inputs[0])
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        w = step.value(env, step.inputs[1])
        b = (
            step.value(env, step.inputs[2])
            if len(step.inputs) > 2 and step.inputs[2] >= 0
            else None
        )
        left, right, top, bottom = _pads(x, o, w.shape[2], w.shape[3])
        groups = x.shape[1] if kind == "DEPTHWISE_CONV_2D" else 1
        if w.shape[0] % groups or w.shape[1] * groups != x.shape[1]:
            raise ModelFormatError(f"{kind} weights do not match its input's channels.")
        padding: Any = 0
        if left == right and top == bottom:
            padding = (top, left)
        else:
            x = pad_constant(x, (left, right, top, bottom))
        y = F.conv2d(x, w, b, (o["stride_h"], o["stride_w"]), padding,
                     (o["dilation_h"], o["dilation_w"]), groups)  # fmt: skip
        return _activation(y, o["activation"])
    if kind == "MAX_POOL_2D":
        kh, kw = o["filter_h"], o["filter_w"]
        left, right, top, bottom = _pads(x, o, kh, kw)
        if left or right or top or bottom:  # TFLite skips padded cells: pad with -inf
            x = pad_constant(x, (left, right, top, bottom), float("-inf"))
        y = F.max_pool2d(x, (kh, kw), (o["stride_h"], o["stride_w"]))
        return _activation(y, o["activation"])
    if kind == "ADD":
        y = step.value(env, step.inputs[1])
        if step.inputs[0] in scratch and x.shape == torch.broadcast_shapes(x.shape, y.shape):
            return _activation(x.add_(y), o["activation"])
        if step.inputs[1] in scratch and y.shape == torch.broadcast_shapes(x.shape, y.shape):
            return _activation(y.add_(x), o["activation"])
        return _activation(x + y, o["activation"])
    if kind == "RELU":
        return x.relu_() if step.inputs[0] in scratch else F.relu(x)
    if kind == "PRELU":
        alpha = step.value(env, step.inputs[1])
        if step.rank4 and alpha.shape == (1, x.shape[1], 1, 1):  # per channel: torch's kernel
            return F.prelu(x, alpha.reshape(-1))
        return torch.where(x >= 0, x, x * alpha)
    if kind == "DEQUANTIZE":
        return x.float()
    if kind == "PAD":
        pairs = np.array(o["arg"]).reshape(-1, 2)
        if step.rank4:
            pairs = pairs[[0, 3, 1, 2]]
        return pad_constant(x, tuple(int(v) for v in pairs[::-1].reshape(-1)))
    if kind == "RESHAPE":
        shape = list(o["arg"] if "arg" in o else o["new_shape"])
        if step.rank4:
            x = x.permute(0, 2, 3, 1)
        if shape and shape[0] == 1:
            shape[0] = x.shape[0]
        y = x.reshape(shape)
        return y.permute(0, 3, 1, 2) if step.out_rank == 4 else y
    if kind == "CONCATENATION":
        axis = o["axis"] % x.ndim
        parts = [step.value(env, i) for i in step.inputs]
        y = torch.cat(parts, NCHW_AXIS[axis] if step.rank4 else axis)
        return _activation(y, o["activation"])
    if kind == "RESIZE_BILINEAR":
        return resize_bilinear(x, o["arg"], o["align_corners"], o["half_pixel"])
    raise UnsupportedOperatorError(f"Operator {kind} is not supported.")


# --- the fused CPU path ----------------------------------------------------------------------


#: fused activations that oneDNN applies inside a convolution: (its name, its scalars)
ONEDNN_UNARY = {0: ("none", []), 1: ("relu", []), 2: ("hardtanh", [-1.0, 1.0]),
                3: ("hardtanh", [0.0, 6.0])}  # fmt: skip


#: a batch of windows runs its first stage (the layers at the largest size) this many windows
#: at a time, the rest all together: a window's 96x96 maps of 32 channels (1.2 MB each) then
#: stay in the core's cache. Per window, a 96x96 32-channel layer took 58 us (3x3 depthwise)
#: and 79 us (1x1) at 2 windows against 84 and 142 at 8, while at 48x48 the batch of 8 is the
#: faster (25 and 57 us against 44 and 70); 2 threads, EPYC Zen 4
STAGE_BATCH = 2

#: a 1x1 convolution over at most this many pixels (batch included) runs as one BLAS matrix
#: product and separate in-place adds, which together cost less than one oneDNN call there
#: (measured on the three face models: oneDNN's fixed cost per call is some 30 us)
MATMUL_PIXELS = 4096


class _StepNode:
    """A plan's call that runs one operator as the unfused path does."""

    __slots__ = ("inputs", "op", "output", "release", "scratch", "step")

    def __init__(self, step: _Step) -> None:
        self.step, self.op, self.inputs, self.output = step, step.op, step.inputs, step.output
        self.release: tuple[int, ...] = ()
        self.scratch: tuple[int, ...] = ()

    def __call__(self, env: dict[int, torch.Tensor]) -> torch.Tensor:
        return _run(self.step, env, self.scratch)


class _ConvNode:
    """A CONV_2D or DEPTHWISE_CONV_2D run by oneDNN on channels-last values with what follows
    it folded into the same call: its activation or a RELU, or an ADD of a value of the same
    shape (added into that value in place when it is not needed afterwards), then the ADD's
    activation or a RELU. An ADD of a value that a PAD widened with zero channels (BlazeFace's
    shortcut into a wider block) adds the value to the first channels instead: no padded copy
    is made."""

    __slots__ = (
        "bias", "dilation", "groups", "inputs", "matrix", "narrow", "op", "other", "output",
        "packed", "pad", "padding", "release", "scalars", "scratch", "stride", "unary", "weight",
        "x",
    )  # fmt: skip

    def __init__(
        self,
        step: _Step,
        groups: int,
        padding: list[int],
        pad: tuple[int, ...],
        grow: tuple[int, int] = (0, 0),
    ) -> None:
        o = step.options
        self.op, self.x, self.output = "CONV", step.inputs[0], step.output
        self.inputs: tuple[int, ...] = (self.x,)
        weight = step.value({}, step.inputs[1])
        if any(grow):  # zero taps in front: see _conv_node
            weight = F.pad(weight, (grow[1], 0, grow[0], 0))
        self.weight = weight
        has_bias = len(step.inputs) > 2 and step.inputs[2] >= 0
        self.bias = step.value({}, step.inputs[2]) if has_bias else None
        self.groups, self.padding, self.pad = groups, padding, pad
        self.stride = [o["stride_h"], o["stride_w"]]
        self.dilation = [o["dilation_h"], o["dilation_w"]]
        self.unary, self.scalars = ONEDNN_UNARY[o["activation"]]
        self.other = -1  # the value an ADD adds to it; -1: none
        self.narrow = 0  # that value's channels where a PAD had widened it; 0: all of them
        self.packed: dict[int, torch.Tensor] = {}  # by batch size
        # a 1x1 convolution is a matrix product over the pixels: (C_in, C_out), or None
        pointwise = groups == 1 and not pad and self.weight.shape[2:] == (1, 1)
        pointwise = pointwise and self.stride == [1, 1] and padding == [0, 0]
        self.matrix = self.weight.flatten(1).t() if pointwise else None
        self.release: tuple[int, ...] = ()
        self.scratch: tuple[int, ...] = ()

    def then(self, step: _Step, unpadded: tuple[int, int] | None = None) -> None:
        """Fold in the operator that takes this one's output, as _fused_plan has checked;
        for an ADD of a PAD's zero-widened output, `unpadded` is the PAD's input and its
        channels."""
        if step.op == "RELU":
            self.unary, self.scalars = "relu", []
        else:  # ADD
            self.other = step.inputs[1] if step.inputs[0] == self.output else step.inputs[0]
            if unpadded is not None:
                self.other, self.narrow = unpadded
            self.inputs = (self.x, self.other)
            self.unary, self.scalars = ONEDNN_UNARY[step.options["activation"]]
        self.output = step.output

    def __call__(self, env: dict[int, torch.Tensor]) -> torch.Tensor:
        x = env[self.x]
        few = self.matrix is not None and x.shape[0] * x.shape[2] * x.shape[3] <= MATMUL_PIXELS
        run = self._matmul if few else self._onednn
        if self.other < 0:
            return run(x, None, False)
        other, into = env[self.other], self.other in self.scratch
        if self.narrow:
            if few:  # the matrix product, then the value added to its first channels
                y = self._matmul(x, None, False, unary=False)
                y.narrow(1, 0, self.narrow).add_(other)
                return self._unary_(y)
            # over a large map oneDNN's fused add of the widened value costs less than a
            # strided add after the convolution (measured on batches of 8 windows)
            other = pad_constant(other, (0, 0, 0, 0, 0, self.weight.shape[0] - self.narrow))
            into = True
        return run(x, other, into)

    def _unary_(self, y: torch.Tensor) -> torch.Tensor:
        if self.unary == "relu":
            return y.relu_()
        if self.unary == "hardtanh":
            return y.clamp_(*self.scalars)
        return y

    def _onednn(self, x: torch.Tensor, other: torch.Tensor | None, into: bool) -> torch.Tensor:
        """unary(conv(x) [+ other]) in one oneDNN call; written into `other` where `into`."""
        if self.pad:
            x = pad_constant(x, self.pad)
        w = self.packed.get(x.shape[0])
        if w is None:  # oneDNN's own layout for this input shape: no reordering per call
            w = self.packed[x.shape[0]] = cpu_fusion.pack_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape)
            )
        conv = (w, self.bias, self.padding, self.stride, self.dilation, self.groups)
        ops = torch.ops.mkldnn
        if other is None:
            return ops._convolution_pointwise(x, *conv, self.unary, self.scalars, "")
        unary = None if self.unary == "none" else self.unary
        if into:  # other = unary(other + conv(x))
            return ops._convolution_pointwise_.binary(
                other, x, *conv, "add", None, unary, self.scalars, ""
            )
        return ops._convolution_pointwise.binary(
            x, other, *conv, "add", None, unary, self.scalars, ""
        )

    def _matmul(
        self, x: torch.Tensor, other: torch.Tensor | None, into: bool, unary: bool = True
    ) -> torch.Tensor:
        """A 1x1 convolution of few pixels: one BLAS call costs less than one oneDNN call."""
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        if other is None:
            y = (
                rows @ self.matrix
                if self.bias is None
                else torch.addmm(self.bias, rows, self.matrix)
            )
        else:
            d = other.shape[1]
            base = other.permute(0, 2, 3, 1).reshape(-1, d)
            y = base.addmm_(rows, self.matrix) if into else torch.addmm(base, rows, self.matrix)
            if self.bias is not None:
                y.add_(self.bias)
        if unary:
            self._unary_(y)
        return y.view(n, h, w, -1).permute(0, 3, 1, 2)


def _fused_plan(module: TFLiteModule) -> list[_ConvNode | _StepNode]:
    """The module's steps as fewer calls: each convolution by oneDNN, with the RELU, or the
    ADD and then the RELU, that alone take its output folded in (run where the last of them
    stood), and a PAD that only widens the ADD's other value with zero channels folded in
    too; every other operator as the unfused path runs it."""
    steps: list[_Step] = list(module.steps)  # type: ignore[arg-type]
    shapes, outputs = module._shapes, set(module.output_ids)
    users: dict[int, list[int]] = {}
    for k, step in enumerate(steps):
        for index in dict.fromkeys(step.inputs):
            users.setdefault(index, []).append(k)

    def only_user(value: int, op: str) -> _Step | None:
        """The step that alone takes `value`, once, if it is an `op`."""
        found = users.get(value, [])
        if value in outputs or len(found) != 1:
            return None
        step = steps[found[0]]
        return step if step.op == op and step.inputs.count(value) == 1 else None

    producer = {step.output: k for k, step in enumerate(steps)}
    placed: dict[int, _ConvNode | _StepNode] = {}
    absorbed: set[int] = set()
    for k, step in enumerate(steps):
        if k in absorbed:
            continue
        node = _conv_node(step, shapes)
        if node is None:
            placed[k] = _StepNode(step)
            continue
        last = k
        for op in ("ADD", "RELU"):
            if node.unary != "none":
                break
            nxt = only_user(node.output, op)
            if nxt is None and op == "ADD":
                continue
            if nxt is None:
                break
            unpadded = None
            if op == "ADD":
                widened = _widened_add(nxt, node.output, module, producer, only_user)
                if widened is None and not _adds_alike(nxt, node.output, module):
                    break
                if widened is not None:
                    pad, unpadded = widened
                    # the PAD is not run: dropped where it was placed, skipped if it is later
                    if placed.pop(pad, None) is None:
                        absorbed.add(pad)
            node.then(nxt, unpadded)
            last = steps.index(nxt)
            absorbed.add(last)
        placed[last] = node
    plan = [placed[k] for k in sorted(placed)]
    _plan_memory(plan, module.input_ids, module.output_ids, module._consts)
    return plan


def _run_nodes(
    nodes: list[_ConvNode | _StepNode], env: dict[int, torch.Tensor]
) -> dict[int, torch.Tensor]:
    for node in nodes:
        env[node.output] = node(env)
        for index in node.release:
            del env[index]
    return env


def _first_stage_end(plan: list[_ConvNode | _StepNode], module: TFLiteModule) -> int:
    """The index just after the last node that reads a value of the plan's largest spatial
    size (a detector's first stage, 96x96 of a 192x192 input), where every value still alive
    is a rank-4 map with the batch first, so the stage's results can be joined batch-wise;
    0 where there is no such place or it is the plan's end."""
    shapes = module._shapes
    produced = {node.output for node in plan}

    def pixels(index: int) -> int:
        shape = shapes[index]
        return shape[1] * shape[2] if index in produced and len(shape) == 4 else 0

    top = max((pixels(i) for i in produced), default=0)
    readers = [k for k, n in enumerate(plan) if any(pixels(i) == top for i in n.inputs)]
    cut = readers[-1] + 1 if top and readers else 0
    if not 0 < cut < len(plan):
        return 0
    alive = set(module.input_ids)
    for node in plan[:cut]:
        alive.add(node.output)
        alive.difference_update(node.release)
    return cut if all(module._rank[i] == 4 for i in alive) else 0


def _adds_alike(add: _Step, value: int, module: TFLiteModule) -> bool:
    """Whether `add` adds to `value` another computed value of the same shape (oneDNN's fused
    add takes no broadcasting)."""
    other = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
    shapes = module._shapes
    return (
        other >= 0
        and other not in module._consts
        and other != value
        and len(shapes[value]) == 4
        and shapes[other] == shapes[value] == shapes[add.output]
    )


def _widened_add(
    add: _Step,
    value: int,
    module: TFLiteModule,
    producer: dict[int, int],
    only_user: Callable[[int, str], _Step | None],
) -> tuple[int, tuple[int, int]] | None:
    """Where `add` adds to `value` the output of a PAD that only appends zero channels to
    another computed value, and nothing else reads that output: the PAD's index, and its
    input with its channels; else None."""
    other = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
    k = producer.get(other, -1)
    if k < 0 or only_user(other, "ADD") is not add:
        return None
    pad: _Step = module.steps[k]  # type: ignore[assignment]
    if pad.op != "PAD" or not pad.rank4 or len(pad.options.get("arg", ())) != 8:
        return None
    source, shapes = pad.inputs[0], module._shapes
    pairs = np.array(pad.options["arg"]).reshape(4, 2)  # NHWC: (before, after) per axis
    before, after = (int(v) for v in pairs[3])
    if pairs[:3].any() or before or after < 1:
        return None
    if source in module._consts or len(shapes[source]) != 4 or source == value:
        return None
    wide = (*shapes[source][:3], shapes[source][3] + after)
    if not (tuple(shapes[value]) == tuple(shapes[add.output]) == tuple(shapes[other]) == wide):
        return None
    return k, (source, shapes[source][3])


def _conv_node(step: _Step, shapes: list[tuple[int, ...]]) -> _ConvNode | None:
    """A CONV_2D or DEPTHWISE_CONV_2D as one oneDNN call, or None where it is not one. TF's
    'SAME' padding is the convolution's own where it is symmetric. Where the odd pixel goes
    after (a stride-2 layer on an even size), the kernel grows by a row or column of zeros in
    front and the padding is the larger side's on both: every output pixel then reads the
    inputs TF's padding gives it, with no padded copy of the input made per call (those copies
    were a quarter of a detection). A padded copy (pad_constant) remains where neither fits.
    Either is checked against the output shape the file declares."""
    if step.op not in ("CONV_2D", "DEPTHWISE_CONV_2D") or not step.rank4:
        return None
    o = step.options
    x_shape, out_shape = shapes[step.inputs[0]], shapes[step.output]
    w = step.value({}, step.inputs[1])
    if o["activation"] not in ONEDNN_UNARY or len(x_shape) != 4 or len(out_shape) != 4:
        return None
    groups = x_shape[3] if step.op == "DEPTHWISE_CONV_2D" else 1
    if w.shape[0] % groups or w.shape[1] * groups != x_shape[3] or w.shape[0] != out_shape[3]:
        return None
    padding, pads, grow = [], [], []
    for size, kernel, stride, dilation, out in (
        (x_shape[1], w.shape[2], o["stride_h"], o["dilation_h"], out_shape[1]),
        (x_shape[2], w.shape[3], o["stride_w"], o["dilation_w"], out_shape[2]),
    ):
        if o["padding"] == VALID:
            before = after = 0
        elif o["padding"] == SAME:
            before, after = same_padding(size, kernel, stride, dilation)
        else:
            return None
        if (size + before + after - dilation * (kernel - 1) - 1) // stride + 1 != out:
            return None
        grows = (
            after == before + 1
            and dilation == 1
            and (size + 2 * after - kernel - 1) // stride + 1 == out
        )
        grow.append(grows)
        padding.append(after if grows else before if before == after else 0)
        pads.append((0, 0) if grows or before == after else (before, after))
    (top, bottom), (left, right) = pads
    return _ConvNode(
        step,
        groups,
        padding,
        (left, right, top, bottom) if any(pads[0] + pads[1]) else (),
        (int(grow[0]), int(grow[1])),
    )


def resize_bilinear(
    x: torch.Tensor, size: list[int], align_corners: bool, half_pixel: bool
) -> torch.Tensor:
    """TFLite's RESIZE_BILINEAR on NCHW; the legacy mode (neither flag) samples at y*in/out."""
    if align_corners or half_pixel:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)
    h, w = x.shape[2], x.shape[3]
    ys = _legacy_axis(h, size[0], x)
    xs = _legacy_axis(w, size[1], x)
    rows = x[:, :, ys[0]] * (1 - ys[2])[:, None] + x[:, :, ys[1]] * ys[2][:, None]
    return rows[:, :, :, xs[0]] * (1 - xs[2]) + rows[:, :, :, xs[1]] * xs[2]


def _legacy_axis(size_in: int, size_out: int, like: torch.Tensor) -> tuple[Any, Any, Any]:
    src = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    lo = src.floor().long().clamp(max=size_in - 1)
    hi = (lo + 1).clamp(max=size_in - 1)
    frac = (src - lo).to(like.dtype)
    return lo.to(like.device), hi.to(like.device), frac.to(like.device)


def load_tflite(source: Path | str | bytes) -> TFLiteModule:
    """Read a .tflite file into an eval-mode module on the CPU, checked by running it once."""
    module = TFLiteModule(read_tflite(source)).eval()
    module.verify()
    return module
