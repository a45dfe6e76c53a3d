"""The embedded default dataset: synthetic action videos written in the UCF101 layout.

Each class is a *motion pattern* of one object over a textured static background; the
object's look (shape, colour, size), its speed, path and start are random, so only the
motion tells the classes apart. The videos are made to look like camera footage as far as
a delta network is concerned: per-pixel sensor noise, a global lighting flicker and a
small camera jitter mean that almost every pixel changes from one frame to the next, so
the network has to *learn* to ignore noise to become sparse.

The model it is made for is a per-frame 2-D CNN whose logits are averaged over time.
Such a model cannot compare frames, so every frame must carry evidence of the motion:
the moving object leaves a tapering, fading white trail (its past positions along a
streak three object radii long, like a light trail on a long exposure). Direction is then
visible in a single frame: a teardrop whose coloured, opaque head leads. Trails are white
whatever the object's colour, and objects are always brighter than the background: one
look-independent visual language for motion, which a small CNN learns far faster. Classes
and their per-frame evidence:

==================  ====================================================================
MoveLeft/Right/Up/  a straight teardrop pointing that way
Down
ZigZag              a diagonal teardrop (left or right), bent where the path turns
Circle              a crescent (either turning direction)
ZoomIn              the object with dark rings inside it (its smaller past sizes)
ZoomOut             the object inside a stepped white halo (its larger past sizes)
SwingPendulum       an arm with a fan-shaped sweep anchored at one end
SpinBar             a bar with a bow-tie sweep around its centre
BlinkPulse          (11th class, off by default) a crisp static object, varying opacity
==================  ====================================================================

Layout (exactly UCF101's, so ``training.ucf101.load_ucf101`` is what reads it)::

    ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi     (MJPG, 25 fps, size x size, RGB)
    ROOT/ucfTrainTestlist/classInd.txt             ("1 MoveLeft", 1-based)
    ROOT/ucfTrainTestlist/trainlist0{1,2,3}.txt    ("MoveLeft/v_MoveLeft_g04_c01.avi 1")
    ROOT/ucfTrainTestlist/testlist0{1,2,3}.txt     ("MoveLeft/v_MoveLeft_g01_c01.avi")
    ROOT/manifest.json                             (written last: marks a complete dataset)

Videos are numbered in groups like UCF101 (``gXX``, clips ``cYY``), and test groups never
appear in training (``training.ucf101.load_ucf101`` carves the validation groups out of the
training list, so train / val / test are disjoint by group): split N tests on the N-th
block of 28% of the groups (with the
default 25 groups: g01-g07, g08-g14, g15-g21, as in UCF101). The look of a video
(background texture, object shape, colour, size) is drawn from its ``(group, clip)``
number alone, so clip ``gXX_cYY`` of every class has the same look and a different
motion: looks carry no class information, and a network cannot get anywhere by memorising
backgrounds (with one look per video it did, and generalised far worse). Test groups
have looks that training never shows.

Size: the default is 10 classes x 100 videos (25 groups x 4 clips) x 32 frames of
128 x 128 (about 230 MB; per-pixel noise does not compress). Fewer videos are not enough:
what a small CNN must learn (the orientation of a streak, invariant to colour, shape and
background) generalises to unseen looks only from enough distinct looks. Measured on 2
busy cores: ``python -m training.fit --arch mobilenet_v2_lite --size 64 --baseline --epochs 12``
(12 epochs, ~3 min) reaches 0.92 validation accuracy on split 1; with 30 videos per
class, small CNNs stayed near 0.5.

Everything is a pure function of the seed and the parameters (a numpy ``SeedSequence``
per video, OpenCV's per-thread generator seeded from it for the noise, and OpenCV's
built-in MJPEG writer), so two generations are byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from training.synthetic_render import ALL_CLASSES, render_action  # noqa: F401  (re-exported)
from training.video import write_video

FORMAT_VERSION = 3  # bump whenever the rendering changes: caches of older versions are regenerated
MANIFEST = "manifest.json"

DEFAULTS = dict(num_classes=10, videos_per_class=100, frames=32, size=128, fps=25)


# --------------------------------------------------------------------------- layout


def cache_base() -> Path:
    """``$DELTANET_CACHE`` or ``~/.cache/deltanet``."""
    return Path(os.environ.get("DELTANET_CACHE") or "~/.cache/deltanet").expanduser()


def split_groups(num_groups: int, split: int) -> list[int]:
    """The test groups (1-based) of ``split`` (1-3): the split-th block of 28% of the groups.

    With 25 groups this is UCF101's own scheme: split 1 tests on g01-g07, split 2 on
    g08-g14, split 3 on g15-g21.
    """
    n_test = max(1, round(0.28 * num_groups))
    return sorted({((split - 1) * n_test + i) % num_groups + 1 for i in range(n_test)})


def _plan(videos_per_class: int, clips_per_group: int | None) -> list[tuple[int, int]]:
    """``(group, clip)`` of each video of a class, UCF101-style numbering from 1."""
    cpg = clips_per_group or (4 if videos_per_class >= 40 else 3 if videos_per_class >= 15 else 1)
    return [(i // cpg + 1, i % cpg + 1) for i in range(videos_per_class)]


def _params(num_classes, videos_per_class, frames, size, fps, seed, clips_per_group) -> dict:
    return dict(
        version=FORMAT_VERSION,
        num_classes=int(num_classes),
        videos_per_class=int(videos_per_class),
        frames=int(frames),
        size=int(size),
        fps=float(fps),
        seed=int(seed),
        clips_per_group=clips_per_group,
    )


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def _seed_seq(*parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([FORMAT_VERSION, *parts]))


def _render_and_write(args: tuple) -> tuple[str, str]:
    path, name, label, group, clip, frames, size, fps, seed = args
    # the look (background, object colour/shape/size) depends on (group, clip) only, not on
    # the class: every look appears once in every class, so memorising looks cannot tell
    # classes apart and a network has to learn the motions
    look_rng, motion_rng = _seed_seq(seed, group, clip, 0), _seed_seq(seed, label, group, clip, 1)
    video, _ = render_action(name, look_rng, motion_rng, frames, size)
    write_video(path, video, fps=fps)
    return path, hashlib.sha256(Path(path).read_bytes()).hexdigest()


def generate(
    root: str | os.PathLike,
    num_classes: int = DEFAULTS["num_classes"],
    videos_per_class: int = DEFAULTS["videos_per_class"],
    frames: int = DEFAULTS["frames"],
    size: int = DEFAULTS["size"],
    seed: int = 0,
    *,
    fps: float = DEFAULTS["fps"],
    clips_per_group: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Write the synthetic dataset into ``root`` (always regenerates; no cache check).

    Parameters
    ----------
    root
        Output folder; its ``UCF-101/``, ``ucfTrainTestlist/`` and ``manifest.json`` are
        replaced, nothing else in it is touched.
    num_classes
        The first ``num_classes`` of :data:`ALL_CLASSES` (2 to 11).
    videos_per_class
        Videos per class (>= 2), numbered in groups of ``clips_per_group`` clips (default 4
        when there are >= 40 videos per class, 3 from 15, else 1).
    frames, size, fps, seed
        Frames per video, square frame size in pixels, frame rate, randomness.
    progress
        Show a tqdm bar on stderr.
    workers
        Threads rendering videos (default: one per CPU, at most 8; one for fewer than 32
        videos). The output does not depend on it.

    Returns
    -------
    Path
        ``root``, which :func:`training.ucf101.load_ucf101` reads.
    """
    if not 2 <= num_classes <= len(ALL_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(ALL_CLASSES)}], got {num_classes}")
    if videos_per_class < 2 or frames < 1 or size < 16:
        raise ValueError(f"need videos_per_class >= 2, frames >= 1, size >= 16; got {videos_per_class}, {frames}, {size}")
    from tqdm import tqdm

    t0 = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # the manifest goes first so that a generation interrupted from here on is never taken as complete
    (root / MANIFEST).unlink(missing_ok=True)
    for sub in ("UCF-101", "ucfTrainTestlist"):
        shutil.rmtree(root / sub, ignore_errors=True)
    classes = list(ALL_CLASSES[:num_classes])
    plan = _plan(videos_per_class, clips_per_group)
    num_groups = plan[-1][0]
    if num_groups < 2:
        raise ValueError(f"{videos_per_class} videos in groups of {clips_per_group} make one group; need >= 2")
    jobs, rels = [], []
    for label, name in enumerate(classes):
        for group, clip in plan:
            rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
            rels.append((rel, label, group))
            jobs.append((str(root / "UCF-101" / rel), name, label, group, clip, frames, size, fps, seed))
    digests = {}
    if workers is None:  # threads cost more than they save on a handful of tiny videos
        workers = min(_cpus(), 8) if len(jobs) >= 32 else 1
    workers = max(1, workers)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            # threads, not processes: OpenCV and numpy release the GIL for the heavy parts
            # (drawing, warping, noise, JPEG), and threads need neither fork (unsafe once
            # TensorFlow runs threads) nor spawn (needs a __main__ guard in every caller)
            pool = stack.enter_context(ThreadPoolExecutor(workers))
            results = pool.map(_render_and_write, jobs)
        else:
            results = map(_render_and_write, jobs)
        bar = stack.enter_context(
            tqdm(total=len(jobs), desc="embedded dataset", unit="video", file=sys.stderr, disable=not progress)
        )
        for path, digest in results:
            digests[Path(path).relative_to(root).as_posix()] = digest
            bar.update()
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for split in (1, 2, 3):
        test_groups = set(split_groups(num_groups, split))
        train = "".join(f"{r} {lab + 1}\n" for r, lab, g in rels if g not in test_groups)
        test = "".join(f"{r}\n" for r, _, g in rels if g in test_groups)
        (lists / f"trainlist0{split}.txt").write_text(train)
        (lists / f"testlist0{split}.txt").write_text(test)
    manifest = dict(
        format="deltanet-embedded",
        params=_params(num_classes, videos_per_class, frames, size, fps, seed, clips_per_group),
        classes=classes,
        groups=num_groups,
        test_groups={str(s): split_groups(num_groups, s) for s in (1, 2, 3)},
        files=digests,
        seconds=round(time.perf_counter() - t0, 2),
    )
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)  # atomic: the marker of a complete dataset
    return root


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The manifest of a complete dataset in ``root``, or None (missing or unreadable)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive inter-process lock (so two trainings do not generate into one folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking, generation is still atomic via the manifest
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_embedded_dataset(
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    num_classes: int = DEFAULTS["num_classes"],
    videos_per_class: int = DEFAULTS["videos_per_class"],
    frames: int = DEFAULTS["frames"],
    size: int = DEFAULTS["size"],
    fps: float = DEFAULTS["fps"],
    clips_per_group: int | None = None,
    force: bool = False,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """The embedded dataset's root, generating it first unless a complete copy is cached.

    The default ``root`` is ``<cache>/embedded-v1`` for the default parameters and
    ``<cache>/embedded-v1-<hash>`` otherwise, where ``<cache>`` is ``$DELTANET_CACHE`` or
    ``~/.cache/deltanet``. A copy counts as complete when its ``manifest.json`` (written last,
    atomically) exists and records the same parameters; anything else is regenerated.

    Returns
    -------
    Path
        A UCF101-layout root for :func:`training.ucf101.load_ucf101`.
    """
    params = _params(num_classes, videos_per_class, frames, size, fps, seed, clips_per_group)
    if root is None:
        default = _params(**DEFAULTS, seed=0, clips_per_group=None)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        suffix = "" if params == default else f"-{digest}"
        root = cache_base() / f"embedded-v{FORMAT_VERSION}{suffix}"
    root = Path(root).expanduser()
    with _lock(root.parent / f".{root.name}.lock"):
        manifest = read_manifest(root)
        if not force and manifest is not None and manifest.get("params") == params:
            return root
        if progress:
            print(f"generating the embedded dataset in {root}", file=sys.stderr)
        return generate(
            root,
            num_classes,
            videos_per_class,
            frames,
            size,
            seed,
            fps=fps,
            clips_per_group=clips_per_group,
            progress=progress,
            workers=workers,
        )
