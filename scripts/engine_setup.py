"""What the engine-measuring scripts share: checking their input files, and a delta engine tuned on the first
frames of a clip as ``streaming.bench`` tunes it (those frames are never measured)."""

from __future__ import annotations

from pathlib import Path


def missing_file(args, names=("model", "source")) -> str | None:
    """A one-line complaint about the first of ``--model`` / ``--source`` (``names``) that is not a file, or ``None``."""
    for name in names:
        if not Path(getattr(args, name)).is_file():
            return f"--{name}: no such file {getattr(args, name)!r}"
    return None


def tuned_engine(model: str, source: str, frames: int, tune_frames: int, threads: int, crop=None):
    """``(engine, tuning frames, the frames after them)``: the first ``frames`` frames of ``source``
    as ``model``'s inputs, and a ``DeltaEngine`` tuned (``streaming.tuning.tune``) on the first
    ``tune_frames`` of them."""
    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import deltanet
    from streaming.bench import read_frames
    from streaming.convert import to_plan
    from streaming.engine import DeltaEngine
    from streaming.tuning import tune

    plan = to_plan(deltanet.load_model(model))
    clip = read_frames(source, frames, plan.input_shape, crop=crop)
    engine = DeltaEngine(plan, threads=threads)
    tune(engine, clip[:tune_frames])
    return engine, clip[:tune_frames], clip[tune_frames:]
