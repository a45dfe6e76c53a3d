"""Numba settings for every kernel in :mod:`ops`, defined once.

Every kernel in ``ops`` is compiled with one of the three decorators below, so the
settings live in exactly one place:

* :data:`njit_exact` -- the encoders and bookkeeping helpers. **No fastmath**: the
  encoder's arithmetic must be bit-identical to NumPy's float32 ``x / step``,
  ``rint``, ``* step``, ``x - r`` and ``abs(d) > theta``.
* :data:`njit_mac` -- serial multiply-accumulate kernels. Fastmath restricted to the
  flags in :data:`FASTMATH_MAC` (contraction into FMA, reassociation, no signed
  zeros); ``nnan``/``ninf`` are *not* set, so NaN and Inf still propagate.
* :data:`njit_par` -- parallel MAC kernels (``prange``): :data:`njit_mac` plus
  ``parallel=PARALLEL``.

Common options (:data:`JIT`): ``cache``, ``error_model="numpy"`` (no ZeroDivisionError
checks: kernels never divide by a run-time zero), ``boundscheck``, ``nogil=True``.

Environment overrides, read once at import:

``DELTANET_NUMBA_PARALLEL``
    ``0`` compiles the ``*_par`` kernels without ``parallel=True`` (``prange`` then
    runs as ``range``). Default ``1``.
``DELTANET_NUMBA_FASTMATH``
    ``0`` turns fastmath off in the MAC kernels too. Default ``1``.
``DELTANET_NUMBA_BOUNDSCHECK``
    ``1`` compiles every kernel with bounds checking (IndexError instead of memory
    corruption; slow, for debugging). Default: unset, i.e. numba's own
    ``NUMBA_BOUNDSCHECK`` decides (off by default).
``DELTANET_NUMBA_BLAS``
    ``0`` makes the pixel-wise kernels use a hand-written product instead of
    ``np.dot`` (which numba routes to SciPy's BLAS ``sgemm``). Default: ``1`` when
    SciPy is importable.
``DELTANET_NUMBA_CACHE``
    ``0`` turns numba's on-disk cache off (every process compiles the kernels again).
    Default ``1``.
``DELTANET_NUMBA_CACHE_DIR``
    Root of the cache. Default ``$XDG_CACHE_HOME/deltanet/numba`` (``~/.cache/...``).

The on-disk cache cannot go stale: numba keys a cached kernel on its own source file only,
while a kernel compiles in the helpers it calls from other files (the frame interpreter
contains nearly all of ``ops``), and its index records neither compile flags nor globals.
So every kernel is cached under ``<root>/<digest>/``, the digest covering the source of every
file in ``ops/``, the decorated function's own file, the settings above, ``PAR_BLOCKS``
and the numba/llvmlite versions: any edit or setting change compiles afresh into a new
folder (old folders can be deleted at any time). A cache root that cannot be written turns
the cache off rather than falling back to numba's ``__pycache__`` (which could go stale).

``NUMBA_DISABLE_JIT=1`` is honoured as usual: every kernel then runs as plain Python
(slowly), which is how the tests check the kernels' logic without the compiler.

Threads: the parallel kernels use numba's threading layer (OpenMP here) with
``numba.set_num_threads``; a kernel splits its work into at most :data:`PAR_BLOCKS`
blocks. Keep BLAS single-threaded (``OPENBLAS_NUM_THREADS=1`` before NumPy/SciPy are
imported) when using them: OpenBLAS's own worker threads and numba's compete for the
same cores and then stall for milliseconds. On a 2-core machine that is also running
anything else, a parallel region waits for a descheduled worker for a whole time
slice (~8 ms measured); the serial kernels do not have that failure mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path

import llvmlite
import numba

__all__ = [
    "PARALLEL",
    "FASTMATH",
    "FASTMATH_MAC",
    "BOUNDSCHECK",
    "USE_BLAS",
    "CACHE",
    "CACHE_ROOT",
    "JIT",
    "JIT_EXACT",
    "JIT_MAC",
    "JIT_PAR",
    "njit_exact",
    "njit_mac",
    "njit_par",
    "prange",
    "CHANNEL_BLOCK",
    "PAR_BLOCKS",
]


def _env_flag(name: str, default: bool | None) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 0/1 (or true/false), got {os.environ.get(name)!r}")


def _scipy_available() -> bool:
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (numba's np.dot needs it)
    except ImportError:
        return False
    return True


PARALLEL: bool = _env_flag("DELTANET_NUMBA_PARALLEL", True)
FASTMATH: bool = _env_flag("DELTANET_NUMBA_FASTMATH", True)
BOUNDSCHECK: bool | None = _env_flag("DELTANET_NUMBA_BOUNDSCHECK", None)
_blas_env = _env_flag("DELTANET_NUMBA_BLAS", None)
USE_BLAS: bool = _scipy_available() if _blas_env is None else (_blas_env and _scipy_available())

#: Number of blocks a parallel kernel splits its work into: the process's maximum
#: thread count (``NUMBA_NUM_THREADS``, frozen at compile time). With fewer threads
#: (``numba.set_num_threads``) the blocks are shared out among them; it is a global
#: constant rather than ``numba.get_num_threads()`` because kernels that call the
#: latter cannot be cached. Since numba's cache does not record globals, the cache is
#: only used when this is the default (the number of CPUs).
PAR_BLOCKS: int = max(1, int(numba.config.NUMBA_NUM_THREADS))

CACHE: bool = _env_flag("DELTANET_NUMBA_CACHE", True)
CACHE_ROOT = Path(
    os.environ.get("DELTANET_NUMBA_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deltanet" / "numba"
)

#: Fastmath flags of the MAC kernels: FMA contraction, reassociation, no signed zeros.
#: Deliberately without ``nnan``/``ninf``/``afn``/``arcp``.
FASTMATH_MAC = frozenset({"contract", "reassoc", "nsz"}) if FASTMATH else frozenset()


#: When output channels are split among threads (a single-pixel Dense layer), they are
#: split in blocks of this many (one AVX-512 register of float32, a 64-byte line).
CHANNEL_BLOCK: int = 16

JIT: dict = dict(cache=CACHE, error_model="numpy", nogil=True)
if BOUNDSCHECK is not None:
    JIT["boundscheck"] = BOUNDSCHECK
JIT_EXACT: dict = dict(JIT, fastmath=False)
JIT_MAC: dict = dict(JIT, fastmath=set(FASTMATH_MAC) if FASTMATH_MAC else False)
JIT_PAR: dict = dict(JIT_MAC, parallel=PARALLEL)

_OPS_DIR = Path(__file__).resolve().parent
_digests: dict[Path, str] = {}


def _digest(source_file: Path) -> str:
    """What a cached kernel depends on: every ``ops`` source, its own file, the settings."""
    if source_file not in _digests:
        h = hashlib.sha256()
        for path in sorted({*_OPS_DIR.glob("*.py"), source_file}):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
        settings = (PARALLEL, FASTMATH, BOUNDSCHECK, USE_BLAS, PAR_BLOCKS, numba.__version__, llvmlite.__version__, sys.version)
        h.update(repr(settings).encode())
        _digests[source_file] = h.hexdigest()[:20]
    return _digests[source_file]


def _cache_dir(fn) -> Path | None:
    """The writable cache folder of ``fn``'s kernels, or None (then ``fn`` is not cached)."""
    path = CACHE_ROOT / _digest(Path(fn.__code__.co_filename).resolve())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


try:
    import fcntl
except ImportError:  # not POSIX: no lock (deltanet's CI and users run Linux)
    fcntl = None


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive lock on ``folder`` across processes (a no-op where flock is missing)."""
    if fcntl is None:
        yield
        return
    with open(folder / ".save.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _serialize_cache_saves(dispatcher, folder: Path) -> None:
    """Make ``dispatcher``'s cache writes safe when several processes compile at once.

    numba's ``IndexDataCacheFile.save`` reads the index, picks the first free data-file
    number, writes the index, then the data file, with no lock. Two processes saving different
    signatures of one kernel at the same time can both pick ``.1.nbc``: the index then names one
    signature and the file holds the other's machine code, which a later process loads and runs
    on the wrong types (wrong results for scalars, a segfault for arrays: the suite's xdist
    workers crashed this way in CI on a cold cache). Holding a per-folder lock across the whole
    save makes each save see the previous one's index. Loads need no lock: every file is
    written to a temporary name and renamed into place.
    """
    cache = getattr(dispatcher, "_cache", None)
    save = getattr(cache, "save_overload", None)
    if save is None:
        raise RuntimeError(
            f"numba {numba.__version__} has no Dispatcher._cache.save_overload: deltanet cannot make its "
            "cache safe across processes; set DELTANET_NUMBA_CACHE=0"
        )

    def locked_save(sig, data):
        with _locked(folder):
            save(sig, data)

    cache.save_overload = locked_save


def _jit(options: dict):
    """A ``numba.njit`` with ``options`` (usable bare or with extra options, like ``njit``)."""

    def njit(fn=None, **extra):
        if fn is None:
            return lambda f: njit(f, **extra)
        opts = dict(options, **extra)
        cache_dir = _cache_dir(fn) if opts.get("cache") and not numba.config.DISABLE_JIT else None
        if cache_dir is None:
            return numba.njit(**dict(opts, cache=False))(fn)
        # numba picks a function's cache folder when it is decorated, from config.CACHE_DIR
        # (NUMBA_CACHE_DIR): set it for this decoration only, other users of numba keep theirs
        saved = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = str(cache_dir)
        try:
            dispatcher = numba.njit(**opts)(fn)
        finally:
            numba.config.CACHE_DIR = saved
        where = str(dispatcher.stats.cache_path)
        if not where.startswith(str(cache_dir)):
            raise RuntimeError(
                f"numba {numba.__version__} caches {fn.__qualname__} in {where}, not in {cache_dir}: "
                "its cache location rule changed and a stale kernel could run; set DELTANET_NUMBA_CACHE=0"
            )
        _serialize_cache_saves(dispatcher, cache_dir)
        return dispatcher

    return njit


njit_exact = _jit(JIT_EXACT)
njit_mac = _jit(JIT_MAC)
njit_par = _jit(JIT_PAR)
prange = numba.prange
