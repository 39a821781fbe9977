"""The face models' fused plan as one native call: face_kernels.c, compiled on this machine.

Through PyTorch every oneDNN call of the small face models costs some 40 us of dispatch, and
a pass makes about a hundred of them. face_kernels.c runs the operators of a pass, NHWC with
channels padded to 16, in one call, splitting each operator over the threads. It is built on
first use by backend.native_build; where it cannot be (no compiler, a failed build,
RESTORA_NATIVE_KERNELS=0), `load()` is None with the reason in `status()` and the
models run through PyTorch as before.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend import native_build

SOURCE = Path(__file__).with_name("face_kernels.c")
LANES = 16
NVMAX = 4  # output-channel vectors per weight block: face_kernels.c's NVMAX
ZEROS = 8192  # face_kernels.c's zero row: the most input channels a convolution reads
OP_CONV, OP_DEPTHWISE, OP_MAXPOOL, OP_ADD, OP_PRELU, OP_RESIZE, OP_WIDEN = range(7)
ACT_NONE, ACT_RELU, ACT_N1_TO_1, ACT_RELU6, ACT_PRELU = range(5)
#: TFLite's fused activation codes (tflite.ACTIVATIONS) that the kernels apply
TFLITE_ACTS = {0: ACT_NONE, 1: ACT_RELU, 2: ACT_N1_TO_1, 3: ACT_RELU6}
_INT_FIELDS = [
    "kind", "x", "other", "out", "h", "w", "c", "cs", "oh", "ow", "oc",
    "kh", "kw", "sh", "sw", "pt", "pl", "act", "other_c", "pad_",
]  # fmt: skip


class OpStruct(ctypes.Structure):
    """face_kernels.c's Op."""

    _fields_ = [(name, ctypes.c_int32) for name in _INT_FIELDS] + [
        ("weight", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("alpha", ctypes.c_void_p),
    ]


def _prepare(lib: ctypes.CDLL) -> None:
    lib.restora_run.restype = ctypes.c_int
    lib.restora_run.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_int,
    ]  # fmt: skip
    if lib.restora_op_size() != ctypes.sizeof(OpStruct):
        raise RuntimeError("the compiled kernels' Op layout differs from native.py's")


KERNELS = native_build.Kernels(SOURCE, _prepare)


def padded(channels: int) -> int:
    return -(-channels // LANES) * LANES


def load() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; None where they cannot be had here."""
    return KERNELS.load()


def status() -> str:
    """Why `load()` is what it is, in words (for `restora doctor`)."""
    return KERNELS.status()


class Value:
    """A map the kernels hold: per image h x w pixels of `pitch` floats, `channels` used."""

    __slots__ = ("batched", "buffer", "channels", "h", "offset", "pitch", "w")

    def __init__(self, h: int, w: int, channels: int, pitch: int) -> None:
        self.h, self.w, self.channels, self.pitch = h, w, channels, pitch
        self.buffer = -1  # its index in the call's buffer table
        self.batched = False  # its own memory for the whole batch (inputs, exported values)
        self.offset = 0  # a scratch value's place in the arena, in floats

    @property
    def size(self) -> int:
        return self.h * self.w * self.pitch


class Program:
    """The native part of a fused plan: `ops` in order, over `values` by tensor index. The
    graph's input is read as the caller gives it (NHWC, its own channels); every value that
    a PyTorch node or the caller reads is exported as an NCHW view; the rest live in one
    scratch arena that each image of a batch reuses."""

    def __init__(self, lib: ctypes.CDLL, input_id: int, input_shape: tuple[int, ...]) -> None:
        self.lib = lib
        self.input_id = input_id
        self.values: dict[int, Value] = {}
        self.ops: list[tuple[dict[str, int], list[torch.Tensor | None]]] = []
        self.op_values: list[tuple[int, int, int]] = []  # (x, other, out) tensor indices
        self.exports: list[int] = []
        self.covered: set[int] = set()  # ids of the plan nodes the program runs
        _, h, w, c = input_shape
        self.values[input_id] = Value(h, w, c, c)
        self._lock = threading.Lock()
        self._arena: torch.Tensor | None = None
        self._table: Any = None

    def add(self, fields: dict[str, int], out: int, value: Value,
            tensors: list[torch.Tensor | None]) -> None:  # fmt: skip
        fields = {**fields, "out": out}
        self.values[out] = value
        self.ops.append((fields, tensors))
        self.op_values.append((fields["x"], fields.get("other", -1), out))

    def finish(self, exports: list[int]) -> None:
        """Place the values: exported ones batched, the others in the arena, a value's memory
        handed on after its last reader (or to the operator that overwrites it in place)."""
        self.exports = exports
        for index in (self.input_id, *exports):
            self.values[index].batched = True
        last: dict[int, int] = {}
        for k, (x, other, _) in enumerate(self.op_values):
            last[x] = k
            if other >= 0:
                last[other] = k
        free: dict[int, list[int]] = {}  # size -> arena offsets
        end = 0
        for k, (x, other, out) in enumerate(self.op_values):
            value = self.values[out]
            kind = self.ops[k][0]["kind"]
            if not value.batched:
                # an add or an element-wise operator may write over an input of its size
                # that dies here (a convolution over the value it adds): it reads each
                # position before it writes it
                inplace = {OP_CONV: [other], OP_ADD: [x, other], OP_PRELU: [x, other],
                           OP_WIDEN: [x, other]}.get(kind, [])  # fmt: skip
                reuse = next(
                    (
                        i for i in inplace
                        if i >= 0 and last.get(i) == k and not self.values[i].batched
                        and self.values[i].size == value.size and i != out
                        and (kind != OP_CONV or self.values[i].pitch == value.pitch)
                    ),
                    None,
                )  # fmt: skip
                if reuse is not None:
                    value.offset = self.values[reuse].offset
                    last.pop(reuse)
                elif free.get(value.size):
                    value.offset = free[value.size].pop()
                else:
                    value.offset, end = end, end + -(-value.size // LANES) * LANES
            for i in dict.fromkeys((x, other)):
                if i >= 0 and last.get(i) == k and not self.values[i].batched:
                    free.setdefault(self.values[i].size, []).append(self.values[i].offset)
        self._arena = torch.zeros(max(end, LANES) + LANES)
        # the table of buffers: batched values get theirs per call, scratch ones are fixed
        order = list(self.values)
        for n, index in enumerate(order):
            self.values[index].buffer = n
        table = (OpStruct * len(self.ops))()
        for k, (fields, tensors) in enumerate(self.ops):
            op = table[k]
            for name, v in fields.items():
                setattr(op, name, self.values[v].buffer if name in ("x", "other", "out") and v >= 0
                        else v)  # fmt: skip
            for name, t in zip(("weight", "bias", "alpha"), tensors):
                setattr(op, name, t.data_ptr() if t is not None else None)
        self._table = table
        self._order = order
        self._tensors = [t for _, ts in self.ops for t in ts if t is not None]  # kept alive

    def __call__(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Run on an NHWC float32 batch: the exported values, as NCHW views."""
        x = x.to(torch.float32).contiguous()
        n = x.shape[0]
        out = {i: torch.empty(n * self.values[i].size) for i in self.exports}
        ptrs = (ctypes.c_void_p * len(self._order))()
        strides = (ctypes.c_int64 * len(self._order))()
        assert self._arena is not None
        base = self._arena.data_ptr()
        # the arena's first float is at a 64-byte boundary plus this many floats
        shift = (-(base // 4)) % LANES
        for k, index in enumerate(self._order):
            value = self.values[index]
            if index == self.input_id:
                ptrs[k], strides[k] = x.data_ptr(), value.size
            elif value.batched:
                ptrs[k], strides[k] = out[index].data_ptr(), value.size
            else:
                ptrs[k], strides[k] = base + 4 * (shift + value.offset), 0
        threads = max(1, torch.get_num_threads())
        with self._lock:  # the arena is one per module
            args = (self._table, len(self.ops), ptrs, strides, n)
            code = self.lib.restora_run(*args, threads)
            if code != 0:
                code = self.lib.restora_run(*args, 1)
        if code != 0:
            raise RuntimeError("the native face kernels could not run")
        views = {}
        for index in self.exports:
            v = self.values[index]
            t = out[index].view(n, v.h, v.w, v.pitch)[..., : v.channels]
            views[index] = t.permute(0, 3, 1, 2)
        return views


def _padded_matrix(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols, *w.shape[2:]), np.float32)
    out[: w.shape[0], : w.shape[1]] = w
    return out


def _vector(v: torch.Tensor | np.ndarray | None, size: int) -> torch.Tensor | None:
    if v is None:
        return None
    a = np.zeros(size, np.float32)
    flat = np.asarray(v, np.float32).reshape(-1)
    a[: flat.size] = flat
    return torch.from_numpy(a)


def conv_weights(weight: np.ndarray, c_read: int, oc: int) -> torch.Tensor:
    """OIHW weights as face_kernels.c reads them: blocks of 64 output channels, each
    [tap][input channel][block width]."""
    w = _padded_matrix(weight, oc, c_read)  # (oc, c_read, kh, kw)
    blocks = []
    for start in range(0, oc, NVMAX * LANES):
        block = w[start : start + NVMAX * LANES]  # (width, c, kh, kw)
        blocks.append(block.transpose(2, 3, 1, 0).reshape(-1))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks)))


def depthwise_weights(weight: np.ndarray, oc: int) -> torch.Tensor:
    """(C, 1, kh, kw) weights as [tap][channel], the channels padded to `oc`."""
    c, _, kh, kw = weight.shape
    w = np.zeros((kh, kw, oc), np.float32)
    w[:, :, :c] = weight[:, 0].transpose(1, 2, 0)
    return torch.from_numpy(w.reshape(-1))


def build_program(module: Any, plan: list[Any]) -> Program | None:
    """The native program for a TFLite module's fused plan (tflite._fused_plan): every node
    whose inputs the kernels hold and whose operator they run; None where none qualifies or
    the kernels cannot be had."""
    if len(module.input_ids) != 1 or len(module.input_shapes[0]) != 4:
        return None
    lib = load()
    if lib is None:
        return None
    program = Program(lib, module.input_ids[0], tuple(module.input_shapes[0]))
    readers: dict[int, int] = {}
    for node in plan:
        for i in dict.fromkeys(node.inputs):
            readers[i] = readers.get(i, 0) + 1
    outputs = set(module.output_ids)
    for k, node in enumerate(plan):
        if _translate(node, program, module, readers, outputs):
            program.covered.add(k)
    if not program.covered:
        return None
    uncovered = [n for k, n in enumerate(plan) if k not in program.covered]
    read_later = {i for n in uncovered for i in n.inputs}
    exports = [
        i for i in program.values
        if i != program.input_id and (i in outputs or i in read_later)
    ]  # fmt: skip
    program.finish(exports)
    return program


def _strip_zero_taps(weight: np.ndarray, top: int, left: int) -> tuple[np.ndarray, int, int]:
    """Drop the kernel's leading rows and columns of zeros (the taps tflite._conv_node grows
    for oneDNN's symmetric padding), moving the padding with them: the same sums, fewer taps."""
    while weight.shape[2] > 1 and not weight[:, :, 0].any():
        weight, top = weight[:, :, 1:], top - 1
    while weight.shape[3] > 1 and not weight[:, :, :, 0].any():
        weight, left = weight[:, :, :, 1:], left - 1
    return np.ascontiguousarray(weight), top, left


def _act(unary: str, scalars: list[float]) -> int | None:
    if unary == "none":
        return ACT_NONE
    if unary == "relu":
        return ACT_RELU
    if unary == "hardtanh" and list(scalars) in ([-1.0, 1.0], [0.0, 6.0]):
        return ACT_N1_TO_1 if scalars[0] < 0 else ACT_RELU6
    return None


def _translate(node: Any, program: Program, module: Any, readers: dict[int, int],
               outputs: set[int]) -> bool:  # fmt: skip
    """Add `node` to the program where the kernels can run it; False where they cannot."""
    from backend.faces import tflite

    shapes, values = module._shapes, program.values
    xv = values.get(node.inputs[0])
    out_shape = shapes[node.output]
    if xv is None or len(out_shape) != 4:
        return False
    _, oh, ow, channels = out_shape
    oc = padded(channels)
    base = {"x": node.inputs[0], "h": xv.h, "w": xv.w, "cs": xv.pitch, "oh": oh, "ow": ow,
            "oc": oc, "kh": 1, "kw": 1, "sh": 1, "sw": 1, "pt": 0, "pl": 0,
            "other": -1}  # fmt: skip
    whole = xv.pitch % LANES == 0  # every operator but a convolution reads whole vectors
    if isinstance(node, tflite._ConvNode):
        act = _act(node.unary, node.scalars)
        if act is None or node.dilation != [1, 1]:
            return False
        left, _, top, _ = node.pad if node.pad else (0, 0, 0, 0)
        weight, top, left = _strip_zero_taps(
            node.weight.detach().numpy(), node.padding[0] + top, node.padding[1] + left
        )
        kh, kw = weight.shape[2:]
        fields = {**base, "kh": kh, "kw": kw, "sh": node.stride[0], "sw": node.stride[1],
                  "pt": top, "pl": left, "act": act}  # fmt: skip
        if node.groups == 1:
            if xv.pitch > ZEROS:
                return False
            fields.update(kind=OP_CONV, c=xv.pitch)
            w = conv_weights(weight, xv.pitch, oc)
        else:
            if not whole or node.groups != xv.channels or weight.shape[:2] != (channels, 1):
                return False
            fields.update(kind=OP_DEPTHWISE, c=oc)
            w = depthwise_weights(weight, oc)
            if xv.pitch != oc:
                return False
        if node.other >= 0:
            ov = values.get(node.other)
            if ov is None or ov.pitch % LANES or ov.pitch > oc or (ov.h, ov.w) != (oh, ow):
                return False
            if ov.channels != (node.narrow or channels):
                return False
            fields.update(other=node.other, other_c=ov.pitch)
        program.add(fields, node.output, Value(oh, ow, channels, oc),
                    [w, _vector(node.bias, oc), None])  # fmt: skip
        return True
    step = node.step
    o = step.options
    if step.op == "PRELU":
        alpha = step.value({}, step.inputs[1]) if step.inputs[1] in step.consts else None
        if alpha is None or alpha.numel() != channels or not whole or not step.rank4:
            return False
        a = _vector(alpha.detach().numpy(), oc)
        last = program.ops[-1][0] if program.ops else None
        x = node.inputs[0]
        if (
            last is not None
            and program.op_values[-1][2] == x
            and last["act"] == ACT_NONE
            and readers.get(x) == 1
            and x not in outputs
        ):  # folded into the operator that makes its input
            last["act"], last["out"] = ACT_PRELU, node.output
            program.ops[-1][1][2] = a
            xs, other, _ = program.op_values[-1]
            program.op_values[-1] = (xs, other, node.output)
            values[node.output] = values.pop(x)
            return True
        program.add({**base, "kind": OP_PRELU, "c": oc, "act": ACT_PRELU}, node.output,
                    Value(oh, ow, channels, oc), [None, None, a])  # fmt: skip
        return True
    if not whole:
        return False
    if step.op == "RELU":
        fields = {**base, "kind": OP_PRELU, "c": oc, "act": ACT_RELU}
    elif step.op == "MAX_POOL_2D":
        act = TFLITE_ACTS.get(o["activation"])
        if act is None or xv.pitch != oc:
            return False
        kh, kw, sh, sw = o["filter_h"], o["filter_w"], o["stride_h"], o["stride_w"]
        pt = pl = 0
        if o["padding"] == tflite.SAME:
            pt = tflite.same_padding(xv.h, kh, sh)[0]
            pl = tflite.same_padding(xv.w, kw, sw)[0]
        fields = {**base, "kind": OP_MAXPOOL, "c": oc, "act": act, "kh": kh, "kw": kw,
                  "sh": sh, "sw": sw, "pt": pt, "pl": pl}  # fmt: skip
    elif step.op == "ADD":
        act = TFLITE_ACTS.get(o["activation"])
        ov = values.get(step.inputs[1])
        if act is None or ov is None or step.consts:
            return False
        if shapes[step.inputs[0]] != shapes[step.inputs[1]] or ov.pitch != xv.pitch:
            return False
        fields = {**base, "kind": OP_ADD, "c": oc, "act": act, "other": step.inputs[1],
                  "other_c": ov.pitch}  # fmt: skip
    elif step.op == "RESIZE_BILINEAR":
        if not o["half_pixel"] or o["align_corners"] or xv.pitch != oc:
            return False
        fields = {**base, "kind": OP_RESIZE, "c": oc, "act": ACT_NONE}
    elif step.op == "PAD" and step.rank4 and len(o.get("arg", ())) == 8:
        pairs = np.array(o["arg"]).reshape(4, 2)
        if pairs[:3].any() or pairs[3, 0]:
            return False
        fields = {**base, "kind": OP_WIDEN, "c": xv.pitch, "act": ACT_NONE}
    else:
        return False
    if step.op in ("RELU", "ADD") and xv.pitch != oc:
        return False
    program.add(fields, node.output, Value(oh, ow, channels, oc), [None, None, None])
    return True
