"""Per MAC layer, the delta engine's milliseconds with every kernel choice, on a real clip.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/kernel_choices.py --model runs/fer_clip.keras \
        --source ../shared/data/real/asl_book.mkv --crop 262,45,115,115 --frames 60

Runs one profiled engine (fallback off) over the frames with each choice of
``streaming.engine.KERNEL_CHOICES`` for every layer at once (``streaming.tuning.measure_layer_ms``,
the measurement ``tune_granularity`` makes), twice, and prints the faster of the two per layer
and choice: what the tuner chooses between. A layer's time includes its encoder. ``--layers
conv`` (default) prints the Conv2D layers (the only ones with a patch-wise kernel), ``all`` every
MAC layer. Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import sys
import numpy as np

from deltanet.cli import ArgumentParser, add_crop_argument, fail, positive_int
from engine_setup import missing_file


def main(argv=None) -> int:
    p = ArgumentParser(prog="scripts/kernel_choices.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a clip model (.keras)")
    p.add_argument("--source", required=True, help="a video file")
    p.add_argument("--frames", type=positive_int, default=60, help="frames from the start of the video (default 60)")
    p.add_argument("--threads", type=positive_int, default=2, help="engine threads (default 2)")
    p.add_argument("--layers", choices=("conv", "all"), default="conv", help="which MAC layers to print (default conv)")
    add_crop_argument(p)
    args = p.parse_args(argv)
    complaint = missing_file(args)
    if complaint:
        return fail(p.prog, complaint)

    from deltanet.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    import deltanet
    from ops import interpreter as ip
    from streaming.bench import read_frames
    from streaming.convert import to_plan
    from streaming.engine import KERNEL_CHOICES, DeltaEngine
    from streaming.tuning import measure_layer_ms

    plan = to_plan(deltanet.load_model(args.model))
    clip = read_frames(args.source, args.frames, plan.input_shape, crop=args.crop)
    engine = DeltaEngine(plan, threads=args.threads, profile=True, fallback=False)
    times: dict[str, list] = {}
    for rep in range(2):
        for g in KERNEL_CHOICES:
            print(f"pass {rep + 1}/2: {g}", file=sys.stderr)
            times.setdefault(g, []).append(measure_layer_ms(engine, clip, g))
    best = {g: np.min(v, axis=0) for g, v in times.items()}
    layers = engine.program.mac_layers
    print(f"{len(clip)} frames of {args.source}, {args.threads} threads; ms per delta frame, encoder included")
    print("| layer | " + " | ".join(KERNEL_CHOICES) + " |")
    print("| --- |" + " --- |" * len(KERNEL_CHOICES))
    for i, m in enumerate(layers):
        if args.layers == "conv" and m.kind != ip.MAC_CONV:
            continue
        print(f"| {m.name} | " + " | ".join(f"{best[g][i]:.3f}" for g in KERNEL_CHOICES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
