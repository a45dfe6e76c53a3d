"""Plan -> lowered program: the integer tables and buffer arenas that ``ops.interpreter`` runs.

Lowering happens once per engine. Every tensor, delta buffer and scratch area becomes an
offset into one of four flat arenas (``ops.interpreter`` describes the tables):

* ``Weights.wbuf`` (float32): the plan's arrays, packed; read only and shared by an engine's
  clones (``lower_weights``);
* ``fbuf`` (float32): ``[0, fbuf_state)`` is stream state (activations, encoder references,
  delta rows: zeroed by ``reset``), then the region-threshold scales (configuration, kept
  across resets), then scratch shared by all steps (pixel-wise gather/product, im2col);
* ``ibuf`` (int32): an iota (the "every pixel" list), each tensor's changed-pixel list, scratch;
* ``ubuf`` (uint8): the previous input frame and the dedup marks (zeroed by ``reset``).

Scratch is shared because a step uses it only while it runs; the per-layer kernel choice
(``ops.interpreter.KERNEL_*``) is a per-frame parameter, so scratch is sized for every choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ops import interpreter as ip
from ops.config import PAR_BLOCKS
from ops.elementwise import ACTIVATIONS, MERGES
from streaming.plan import MAC_OPS, MERGE_OPS, Plan

PHASES = ("input", "encode", "mac", "activation", "other")
_PHASE = {ip.OP_INPUT: "input", ip.OP_ENCODE: "encode", ip.OP_MAC: "mac", ip.OP_ACTIVATION: "activation", ip.OP_AFFINE: "activation"}
_ALIGN = 16  # elements: every buffer starts on a 64-byte boundary


class _Arena:
    """Bump allocator of aligned offsets into one flat buffer."""

    def __init__(self):
        self.size = 0

    def take(self, n: int) -> int:
        off = self.size
        self.size += -(-max(int(n), 1) // _ALIGN) * _ALIGN
        return off


@dataclass
class Weights:
    """A plan's arrays packed into one float32 arena (``offset[key]`` into ``wbuf``)."""

    wbuf: np.ndarray
    offset: dict[str, int]


def lower_weights(plan: Plan) -> Weights:
    """Pack ``plan.arrays`` (a copy: later edits of the plan's arrays are not seen)."""
    arena = _Arena()
    offset = {key: arena.take(a.size) for key, a in plan.arrays.items()}
    wbuf = np.zeros(arena.size, np.float32)
    for key, a in plan.arrays.items():
        wbuf[offset[key] : offset[key] + a.size] = a.reshape(-1)
    wbuf.setflags(write=False)
    return Weights(wbuf, offset)


@dataclass
class MacLayer:
    """What Python reads about one MAC layer: its geometry and where its delta lives."""

    name: str
    op: str  # "conv2d" / "depthwise"
    kind: int  # ops.interpreter.MAC_*
    step: int  # index of the MAC step
    encoder: int  # index of the encode step feeding it
    source: int  # tensor id of the encoder's output (its active-pixel list)
    kernel_shape: tuple[int, int, int, int]
    stride: int
    pad_top: int
    pad_left: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    rows_offset: int  # the encoder's delta rows in fbuf
    dense_macs: int
    input_elements: int


@dataclass
class Program:
    """A lowered plan: tables for ``ops.interpreter.run_frame`` plus what Python reads back."""

    steps: np.ndarray
    params: np.ndarray
    inputs: np.ndarray
    tensors: np.ndarray
    scratch: np.ndarray
    weights: Weights
    fbuf_size: int
    fbuf_state: int
    ibuf_size: int
    ubuf_size: int
    iota: tuple[int, int]  # (offset, length) in ibuf
    output: tuple[int, int]  # (offset, size) of the logits in fbuf
    tensor_index: dict[str, int]
    step_names: list[str]
    step_phase: list[str]
    step_layer: np.ndarray  # per step: the MAC layer its time counts towards, or -1
    mac_layers: list[MacLayer]
    region_scales: dict[tuple[int, int], int] = field(default_factory=dict)  # (h, w) -> fbuf offset
    threshold_encoders: list[int] = field(default_factory=list)

    def new_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fresh ``(fbuf, ibuf, ubuf)`` for one stream (state zero, iota filled, scales 1)."""
        fbuf = np.zeros(self.fbuf_size, np.float32)
        ibuf = np.zeros(self.ibuf_size, np.int32)
        ubuf = np.zeros(self.ubuf_size, np.uint8)
        off, n = self.iota
        ibuf[off : off + n] = np.arange(n, dtype=np.int32)
        for (h, w), off in self.region_scales.items():
            fbuf[off : off + h * w] = 1.0
        return fbuf, ibuf, ubuf


def mac_kind(step: dict, kernel_shape) -> int:
    """``ops.interpreter.MAC_*`` of a plan MAC step."""
    kh, kw = kernel_shape[:2]
    if step["op"] == "depthwise":
        return ip.MAC_DEPTHWISE
    return ip.MAC_POINTWISE if kh == kw == 1 and step["stride"] == 1 else ip.MAC_CONV


#: plan ops whose output an encoder may take as its reference in a refresh frame (``ops.interpreter``):
#: they recompute every pixel of it in a dense frame from their inputs alone
SWAPPABLE_PRODUCERS = ("activation", "affine", *MERGE_OPS)


def lower(plan: Plan, *, dense_mode: bool = False, weights: Weights | None = None, blocks: int = PAR_BLOCKS) -> Program:
    """Lower a (validated) plan. ``dense_mode``: delta layers become identities (the dense engine);
    ``blocks``: at most this many parallel blocks in the element-wise kernels (the engine's
    thread count: one block per worker)."""
    weights = weights if weights is not None else lower_weights(plan)
    W = weights.offset
    producer = {s["output"]: i for i, s in enumerate(plan.steps)}
    consumers: dict[int, list[int]] = {}
    for i, s in enumerate(plan.steps):
        for t in s["inputs"]:
            consumers.setdefault(producer[t], []).append(i)

    names = list(plan.tensors)
    tid = {n: k for k, n in enumerate(names)}
    fa, ia, ua = _Arena(), _Arena(), _Arena()
    hw_max = max(h * w for h, w, _ in plan.tensors.values())
    iota = (ia.take(hw_max), hw_max)
    T = np.zeros((len(names), ip.NT), np.int64)
    value_of: dict[str, int] = {}
    for s in plan.steps:  # tensor values: aliases share their input's buffer
        name = s["output"]
        h, w, c = plan.tensors[name]
        alias = s["op"] == "flatten" or (s["op"] == "encode" and dense_mode)
        value_of[name] = value_of[s["inputs"][0]] if alias else fa.take(h * w * c)
        T[tid[name]] = (value_of[name], h, w, c, ia.take(h * w))

    S = np.full((len(plan.steps), ip.NF), -1, np.int64)
    P = np.zeros((len(plan.steps), 3), np.float64)
    inl: list[int] = []
    mac_layers: list[MacLayer] = []
    threshold_encoders: list[int] = []
    step_layer = np.full(len(plan.steps), -1, np.int64)
    need = dict(union=1, mark=1, nz_cin=1, gather=1, prod=1, col=1, rowof=1)
    for i, s in enumerate(plan.steps):
        op = s["op"]
        row = S[i]
        out = plan.tensors[s["output"]]
        row[ip.F_OUT] = tid[s["output"]]
        row[ip.F_IN0], row[ip.F_NIN] = len(inl), len(s["inputs"])
        inl.extend(tid[t] for t in s["inputs"])
        a = ip.A0
        if op == "input":
            row[ip.F_OP] = ip.OP_INPUT
            row[a], row[a + 1], row[a + 2] = W[s["scale_key"]], W[s["offset_key"]], ua.take(int(np.prod(out)))
        elif op == "encode":
            row[ip.F_OP] = ip.OP_ENCODE
            h, w, c = out
            if dense_mode:
                row[a] = ip.ENC_IDENTITY
            else:
                row[a] = ip.ENC_QUANTIZE if s["mode"] == "quantize" else ip.ENC_THRESHOLD
                row[a + 1], row[a + 2] = W[s["param_key"]], fa.take(h * w * c)
                if s["mode"] == "threshold":
                    threshold_encoders.append(i)
                    # A refresh frame makes this encoder's reference its input: by swapping the two
                    # buffers when nothing else reads the input and its producer keeps no state in
                    # it (rewrites it from other tensors: not a MAC's accumulator, not the input).
                    src = producer[s["inputs"][0]]
                    t = ip.REFRESH_TILE  # the first encoder's tile occupancy marks tiles in the dedup scratch
                    need["mark"] = max(need["mark"], -(-h // t) * -(-w // t))
                    row[a + 4] = int(plan.steps[src]["op"] in SWAPPABLE_PRODUCERS and len(consumers[src]) == 1)
        elif op in MAC_OPS:
            kernel = plan.arrays[s["kernel_key"]]
            kh, kw, cin, m = kernel.shape
            ah, aw, _ = plan.tensors[s["inputs"][0]]
            oh, ow, oc = out
            enc = producer[s["inputs"][0]]
            kind = mac_kind(s, kernel.shape)
            row[ip.F_OP] = ip.OP_MAC
            row[a : a + 14] = (kind, W[s["kernel_key"]], W[s["bias_key"]], kh, kw, cin, m, s["stride"], s["pad_top"], s["pad_left"],
                               enc, len(mac_layers), plan.dense_macs(s), ah * aw * cin)  # fmt: skip
            mac_layers.append(MacLayer(s["name"], op, kind, i, enc, tid[s["inputs"][0]], tuple(kernel.shape), int(s["stride"]),
                                       int(s["pad_top"]), int(s["pad_left"]), tuple(plan.tensors[s["inputs"][0]]), tuple(out),
                                       -1, plan.dense_macs(s), ah * aw * cin))  # fmt: skip
            step_layer[i] = len(mac_layers) - 1
            if step_layer[enc] < 0:  # an encoder's time counts towards the first MAC layer it feeds
                step_layer[enc] = len(mac_layers) - 1
            need["mark"] = max(need["mark"], oh * ow)
            need["nz_cin"] = max(need["nz_cin"], cin)
            if kind != ip.MAC_DEPTHWISE:  # the pixel-wise kernels' block products
                need["prod"] = max(need["prod"], ah * aw * oc)
            if kind == ip.MAC_CONV:
                need["gather"] = max(need["gather"], ah * aw * cin)
                need["col"] = max(need["col"], oh * ow * kh * kw * cin)
                need["rowof"] = max(need["rowof"], ah * aw)
        elif op == "activation":
            row[ip.F_OP], row[a] = ip.OP_ACTIVATION, ACTIVATIONS[s["kind"]]
            P[i] = (s["a0"], s["a1"], s["a2"])
        elif op == "affine":
            row[ip.F_OP], row[a], row[a + 1] = ip.OP_AFFINE, W[s["scale_key"]], W[s["offset_key"]]
        elif op in MERGE_OPS:
            row[ip.F_OP] = ip.OP_MERGE
            row[a], row[a + 1] = MERGES["add" if op == "average" else op], int(op == "average")
            need["union"] = max(need["union"], out[0] * out[1])
        elif op == "concat":
            row[ip.F_OP] = ip.OP_CONCAT
            need["union"] = max(need["union"], out[0] * out[1])
        elif op == "pad":
            row[ip.F_OP], row[a], row[a + 1] = ip.OP_PAD, s["top"], s["left"]
        elif op == "pool":
            row[ip.F_OP] = ip.OP_POOL
            row[a : a + 6] = (int(s["is_max"]), s["kh"], s["kw"], s["stride"], s["pad_top"], s["pad_left"])
            need["mark"] = max(need["mark"], out[0] * out[1])
        elif op == "global_pool":
            row[ip.F_OP], row[a] = ip.OP_GLOBAL_POOL, int(s["is_max"])
        elif op == "flatten":
            row[ip.F_OP] = ip.OP_FLATTEN
        else:  # validate_plan lets no other op through
            raise ValueError(f"step {i}: no lowering for op {op!r}")
    fbuf_state = fa.size

    # configuration: one region-threshold scale per resolution of the threshold encoders
    region_scales = {}
    for i in threshold_encoders:
        h, w, _ = plan.tensors[plan.steps[i]["output"]]
        if (h, w) not in region_scales:
            region_scales[(h, w)] = fa.take(h * w)
        S[i, ip.A0 + 3] = region_scales[(h, w)]

    X = np.zeros(ip.NX, np.int64)
    X[ip.X_IOTA] = iota[0]
    X[ip.X_UNION] = ia.take(need["union"])
    X[ip.X_MARK] = ua.take(need["mark"])
    X[ip.X_NZ_ROWS] = max(1, min(int(blocks), PAR_BLOCKS))
    X[ip.X_NZ] = ia.take(X[ip.X_NZ_ROWS] * need["nz_cin"])
    X[ip.X_GATHER] = fa.take(need["gather"])
    X[ip.X_PROD] = fa.take(need["prod"])
    X[ip.X_COL] = fa.take(need["col"])
    X[ip.X_ROWOF] = ia.take(need["rowof"])  # zero, and zero again after every use

    for layer in mac_layers:
        layer.rows_offset = int(S[layer.encoder, ip.A0 + 2])
    out_h, out_w, out_c = plan.tensors[plan.output]
    phases = [_PHASE.get(int(S[i, ip.F_OP]), "other") for i in range(len(plan.steps))]
    return Program(
        steps=S, params=P, inputs=np.asarray(inl or [0], np.int64), tensors=T, scratch=X, weights=weights,
        fbuf_size=fa.size, fbuf_state=fbuf_state, ibuf_size=ia.size, ubuf_size=ua.size, iota=iota,
        output=(int(T[tid[plan.output], ip.T_VAL]), out_h * out_w * out_c), tensor_index=tid,
        step_names=[s["name"] for s in plan.steps], step_phase=phases, step_layer=step_layer, mac_layers=mac_layers,
        region_scales=region_scales, threshold_encoders=threshold_encoders,
    )  # fmt: skip
