"""Argument checks of the kernels' public functions: one ValueError per problem, quoting what was received.

The compiled kernels themselves check nothing (no exceptions in numba code); every public
function of ``ops`` validates dtypes, shapes, contiguity and index lists with these first.
"""

from __future__ import annotations

import numpy as np

#: the delta MAC kernels' granularities (element-wise scatter, pixel-wise block product)
GRANULARITIES = ("element", "pixel", "patch")


def _check_array(name, a, dtype, ndim=None, shape=None, writeable=False):
    """Raise ValueError unless ``a`` is a C-contiguous ndarray of ``dtype`` (and shape)."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype.name}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if shape is not None:
        if len(shape) != a.ndim or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {a.strides} for shape {a.shape})")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return a


def _check_count(name, n, upper):
    """Raise ValueError unless ``n`` is an integer in ``[0, upper]``; return it as int."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 0 or n > upper:
        raise ValueError(f"{name} must be in [0, {upper}], got {n}")
    return n


def _check_pixel_list(name, idx, n, n_pixels):
    """Raise ValueError unless ``idx[:n]`` are strictly ascending pixel indices in range."""
    head = idx[:n]
    if n and (head.min() < 0 or head.max() >= n_pixels):
        raise ValueError(
            f"{name}[:{n}] must hold pixel indices in [0, {n_pixels}), "
            f"got values in [{head.min()}, {head.max()}]"
        )
    if n > 1 and not np.all(head[1:] > head[:-1]):
        raise ValueError(f"{name}[:{n}] must be strictly ascending (no duplicates)")


def _check_granularity(granularity):
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def _check_sparse_input(active, n_active, rows, n_pixels, cin):
    _check_array("active", active, np.int32, ndim=1)
    _check_array("rows", rows, np.float32, ndim=2)
    if rows.shape[1] != cin:
        raise ValueError(f"rows must have {cin} columns (the weights' Cin), got shape {rows.shape}")
    n = _check_count("n_active", n_active, min(active.shape[0], rows.shape[0], n_pixels))
    _check_pixel_list("active", active, n, n_pixels)
    return n


def _check_int(name, v, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _check_touched(touched, n_out):
    _check_array("touched", touched, np.int32, shape=(n_out,), writeable=True)


def _check_mark(mark, n_out):
    if mark is None:
        raise ValueError(f"mark must be a zero-filled uint8 buffer of shape ({n_out},), got None")
    _check_array("mark", mark, np.uint8, shape=(n_out,), writeable=True)
    if mark.any():
        raise ValueError(f"mark must be all zero on entry (it has {int(np.count_nonzero(mark))} non-zero entries)")


def _check_geometry(in_h, in_w, kh, kw, stride, pad_top, pad_left, out_h, out_w):
    """Validate explicit padding and the output size against the input."""
    if pad_top >= kh or pad_left >= kw:
        raise ValueError(f"padding must be smaller than the kernel, got pad {(pad_top, pad_left)} kernel {(kh, kw)}")
    # every output window must overlap the input: (Ho-1)*stride - pad_top <= in_h - 1
    max_h = (in_h - 1 + pad_top) // stride + 1
    max_w = (in_w - 1 + pad_left) // stride + 1
    if out_h < 1 or out_w < 1 or out_h > max_h or out_w > max_w:
        raise ValueError(
            f"acc spatial shape {(out_h, out_w)} does not fit input {(in_h, in_w)}, kernel {(kh, kw)}, "
            f"stride {stride}, pad {(pad_top, pad_left)} (at most {(max_h, max_w)})"
        )


def _scratch(name, buf, n, cols, dtype):
    """Validate a scratch buffer ``(>= n, cols)``, or allocate one if ``buf`` is None."""
    if buf is None:
        return np.zeros((max(n, 1), cols), dtype)
    _check_array(name, buf, dtype, ndim=2, writeable=True)
    if buf.shape[0] < max(n, 1) or buf.shape[1] != cols:
        raise ValueError(f"{name} must have shape (>= {max(n, 1)}, {cols}), got {buf.shape}")
    return buf
