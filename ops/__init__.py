"""Pure-NumPy/numba kernels of the delta runtime (no Keras, no TensorFlow).

* :mod:`ops.encode` -- delta encoders (``threshold``/``quantize`` modes of
  ``DeltaActivation``) producing a sparse delta ``(active, rows, n_active, nnz)``.
* :mod:`ops.conv`, :mod:`ops.pointwise`, :mod:`ops.depthwise` -- delta MAC kernels for
  Conv2D, pointwise/Dense and DepthwiseConv2D, element-wise and pixel-wise, serial and
  parallel; they accumulate into a persistent ``acc`` and report the touched outputs (the
  shared buffer contract is in :mod:`ops.conv`), built from :mod:`ops.touch` (which outputs
  a delta reaches), :mod:`ops.accumulate` (the inner loops) and :mod:`ops.blocks` (the
  parallel work split).
* :mod:`ops.dense` -- dense MAC kernels (keyframes, dense mode); :mod:`ops.elementwise` --
  per-pixel steps between MAC layers; :mod:`ops.region` -- the region-weighted encoder.
* :mod:`ops.interpreter` -- the one frame interpreter over a lowered plan (``streaming.lower``).
* :mod:`ops.shift_search` -- the camera tracker's integer shift search (``streaming.motion``).
* :mod:`ops.threshold_clip` -- threshold mode over whole training clips, forward and backward
  (``DeltaActivation``'s TensorFlow training fast path, ``deltanet.threshold_clip_tf``).
* :mod:`ops.geometry` -- convolution geometry and MAC counts; :mod:`ops.checks` -- argument
  checks of the public functions; :mod:`ops.clock` -- a clock compiled code can read;
  :mod:`ops.config` -- the numba settings shared by every kernel.

Each public function validates its arguments (float32/int32/uint8, shapes,
C-contiguity) and calls a private ``@njit`` kernel ``_name`` that can also be called
from other numba code (no Python objects, no exceptions, no allocation; every buffer
is passed in). Call :func:`warmup` once per process to compile them all before the
first frame.
"""

from __future__ import annotations

import numpy as np

from ops import config
from ops.blocks import nz_scratch
from ops.conv import conv2d_delta
from ops.depthwise import depthwise_delta
from ops.geometry import conv_geometry
from ops.pointwise import dense_delta, pointwise_delta
from ops.shift_search import refine_shift
from ops.encode import (
    empty_delta,
    encode_quantize,
    encode_quantize_pixels,
    encode_threshold,
    encode_threshold_pixels,
)

__all__ = [
    "config",
    "conv2d_delta",
    "conv_geometry",
    "dense_delta",
    "depthwise_delta",
    "empty_delta",
    "encode_quantize",
    "encode_quantize_pixels",
    "encode_threshold",
    "encode_threshold_pixels",
    "nz_scratch",
    "pointwise_delta",
    "warmup",
]


def warmup() -> None:
    """Compile every kernel of ``ops`` (serial and parallel) on tiny inputs.

    Runs each public function once on a 3x4 frame with the argument types the engine
    uses (C-contiguous float32/int32/uint8 arrays, Python ints), so the first real
    frame does not pay for compilation. With the on-disk cache (``ops.config.CACHE``)
    a later process only loads the compiled code. Idempotent and cheap once compiled.

    Returns
    -------
    None
    """
    h, w, c, cout = 3, 4, 2, 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(h, w, c)).astype(np.float32)
    param = np.full(c, 0.25, np.float32)
    active, rows = empty_delta(h, w, c)
    cand = np.arange(h * w, dtype=np.int32)
    for enc, enc_pix in ((encode_threshold, encode_threshold_pixels), (encode_quantize, encode_quantize_pixels)):
        state = np.zeros((h, w, c), np.float32)
        enc(x, param, state, active, rows)
        n, _ = enc_pix(x, param, state, cand, h * w, active, rows)
    n, _ = encode_threshold(x, param, np.zeros((h, w, c), np.float32), active, rows)

    prod = np.zeros((h * w, cout), np.float32)
    gather = np.zeros((h * w, c), np.float32)
    for stride in (1,):  # stride is a run-time int: one compilation covers all strides
        out_h, out_w, pt, pl = conv_geometry(h, w, 3, 3, stride, "same")
        acc = np.zeros((out_h, out_w, cout), np.float32)
        touched = np.zeros(out_h * out_w, np.int32)
        mark = np.zeros(out_h * out_w, np.uint8)
        wc = rng.normal(size=(3, 3, c, cout)).astype(np.float32)
        wd = rng.normal(size=(3, 3, c, 2)).astype(np.float32)
        accd = np.zeros((out_h, out_w, 2 * c), np.float32)
        for parallel in (False, True):
            for gran in ("element", "pixel"):
                conv2d_delta(
                    active, n, rows, h, w, wc, stride, pt, pl, acc, touched, mark,
                    granularity=gran, parallel=parallel, gather=gather, prod=prod,
                )  # fmt: skip
            depthwise_delta(active, n, rows, h, w, wd, stride, pt, pl, accd, touched, mark, parallel=parallel)
            # a sparse row (element-wise path) and a dense one
            rows[0, :] = 0.0
            rows[0, 0] = 1.0
            depthwise_delta(active, 1, rows, h, w, wd, stride, pt, pl, accd, touched, mark, parallel=parallel)
    wp = rng.normal(size=(c, cout)).astype(np.float32)
    acc = np.zeros((h, w, cout), np.float32)
    touched = np.zeros(h * w, np.int32)
    for parallel in (False, True):
        for gran in ("element", "pixel"):
            pointwise_delta(active, n, rows, wp, acc, touched, granularity=gran, parallel=parallel, prod=prod)
            # n_active == 1 takes the Dense branch of the parallel element-wise kernel
            pointwise_delta(active, min(n, 1), rows, wp, acc, touched, granularity=gran, parallel=parallel, prod=prod)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    refine_shift(gray, gray, 0.0, 0.0, 2, 24.0, 0.75)  # the camera tracker's refinement (streaming.motion)
