"""A monotonic nanosecond clock callable from compiled code (the interpreter's profiled frames).

``now_ns()`` is ``clock_gettime(CLOCK_MONOTONIC)`` (what ``time.perf_counter`` and
``time.monotonic_ns`` read on Linux), called directly from the compiled loop: ~30 ns per
reading, so a frame can time each of its steps without leaving compiled code. It is a
numba ``intrinsic`` (public extension API) that declares the C library function by name; the
symbol is resolved when the code is linked, so kernels using it can still be cached on disk.

POSIX only (Linux, macOS): ``CLOCK_MONOTONIC`` is 1 on Linux and 6 on macOS.
"""

from __future__ import annotations

import sys
import time

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

CLOCK_MONOTONIC = 6 if sys.platform == "darwin" else 1

_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_timespec = ir.LiteralStructType([_i64, _i64])  # struct timespec {time_t tv_sec; long tv_nsec;} on LP64


@intrinsic
def _clock_gettime_ns(typingctx):
    def codegen(context, builder, signature, args):
        module = builder.module
        fnty = ir.FunctionType(_i32, [_i32, _timespec.as_pointer()])
        fn = module.globals.get("clock_gettime")
        if fn is None:
            fn = ir.Function(module, fnty, name="clock_gettime")
        ts = builder.alloca(_timespec)
        builder.call(fn, [ir.Constant(_i32, CLOCK_MONOTONIC), ts])
        sec = builder.load(builder.gep(ts, [ir.Constant(_i32, 0), ir.Constant(_i32, 0)]))
        nsec = builder.load(builder.gep(ts, [ir.Constant(_i32, 0), ir.Constant(_i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(_i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


from ops.config import njit_exact  # noqa: E402  (after the intrinsic it compiles)

if numba.config.DISABLE_JIT:  # the kernels run as Python: an intrinsic cannot
    now_ns = time.monotonic_ns
else:

    @njit_exact
    def now_ns():
        """``CLOCK_MONOTONIC`` in nanoseconds, from compiled code or Python."""
        return _clock_gettime_ns()
