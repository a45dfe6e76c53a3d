"""Compile the engine's composite kernels in one clean process before the suite's workers start.

    python tests/warm_numba_cache.py     # what tests/conftest.py runs on the xdist controller

Why: ``ops.interpreter.run_frame`` (and ``time_mac_step``) are jitted functions that call other
jitted kernels. When numba compiles such a caller in a process where a callee already has an
overload of other but safely convertible argument types, it can link that overload, and the
cached caller then segfaults when another process loads it (numba issue #6713, "caching +
(safe) casting"). The suite's workers compile kernels in whatever order their tests come, so on a
cold cache one run in three of the full suite left a ``run_frame`` that crashed every later
engine run (session 9, docs/testing.md). Compiled first, in a process that has compiled nothing
else, every callee is specialised exactly, as in a user's engine process; the workers then load it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np

    import deltanet
    from streaming.engine import DeltaEngine
    from streaming.tuning import tune_fallback

    model = deltanet.build_model(3, arch="tiny", size=32, threshold=0.05)
    engine = DeltaEngine.from_keras(model)
    engine.warmup()  # run_frame
    tune_fallback(engine, reps=1)  # time_mac_step
    engine.run(np.zeros((2, 32, 32, 3), np.uint8))


if __name__ == "__main__":
    main()
