"""Convolution geometry and dense MAC counts: the one definition (NumPy-free arithmetic on ints).

Keras' (TensorFlow's) ``"same"`` padding pads ``total = max((out - 1) * stride + k - size, 0)``
with ``out = ceil(size / stride)``, putting ``total // 2`` before and the rest after.
``"valid"`` pads nothing. The converter (Keras layer -> plan step), the plan's validation,
the kernels' public functions and the registry's MAC counts all read these functions.
"""

from __future__ import annotations

PADDINGS = ("same", "valid")


def _positive(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__") or int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
    """``(before, after)`` padding of one axis under ``"same"`` (TF rule: the odd pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def axis_geometry(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """``(out, pad_before)`` of one axis of a convolution or pooling window."""
    if padding == "same":
        return -(-size // stride), same_padding(size, k, stride)[0]
    if padding == "valid":
        if size < k:
            raise ValueError(f"valid padding needs input >= kernel, got input {size} kernel {k}")
        return (size - k) // stride + 1, 0
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def conv_geometry(in_h: int, in_w: int, kh: int, kw: int, stride: int, padding: str) -> tuple[int, int, int, int]:
    """Output size and leading padding of a Keras convolution.

    Parameters
    ----------
    in_h, in_w : int
        Input height and width.
    kh, kw : int
        Kernel height and width.
    stride : int
        Stride (both axes).
    padding : {"same", "valid"}
        Keras/TensorFlow padding mode ("same" puts the extra padding after, i.e. bottom/right).

    Returns
    -------
    out_h, out_w, pad_top, pad_left : int
    """
    in_h, in_w, kh, kw, stride = (_positive(n, v) for n, v in (("in_h", in_h), ("in_w", in_w), ("kh", kh), ("kw", kw), ("stride", stride)))
    if padding not in PADDINGS:
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if padding == "valid" and (in_h < kh or in_w < kw):
        raise ValueError(f"valid padding needs input >= kernel, got input {(in_h, in_w)} kernel {(kh, kw)}")
    out_h, pad_top = axis_geometry(in_h, kh, stride, padding)
    out_w, pad_left = axis_geometry(in_w, kw, stride, padding)
    return out_h, out_w, pad_top, pad_left


def output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int) -> int:
    """Output length of one axis with explicit padding."""
    return (size + pad_before + pad_after - k) // stride + 1


def implied_pad_after(size: int, k: int, stride: int, pad_before: int, out: int) -> int:
    """The trailing padding an output length implies (what the last window needs beyond the input)."""
    return max((out - 1) * stride + k - size - pad_before, 0)


def conv_macs(out_h: int, out_w: int, kh: int, kw: int, cin_per_output: int, cout: int) -> int:
    """Dense multiply-accumulates of one convolution frame: every output element sums
    ``kh * kw * cin_per_output`` products (Conv2D: ``Cin / groups``; depthwise: 1, with
    ``cout = C * M``; Dense: a 1x1 convolution over the input vector)."""
    return int(out_h) * int(out_w) * int(kh) * int(kw) * int(cin_per_output) * int(cout)
