"""``python -m streaming.live``: live action recognition with the delta engine, and what it costs.

Each frame is prepared the way the model was trained (``DeltaEngine.prepare``: resized to the
model input, RGB uint8; the model carries its own normalization) and fed to the delta
engine. The clip prediction is the softmax of the mean per-frame logits over the last
``--window`` frames (``streaming.prediction``: by default three training clips long, a choice
made on the validation split). Live sources (cameras, streams,
``--realtime``) hand over only their newest frame; the frames they overwrote are counted
as ``dropped``.

Window mode shows the video with the top-k labels, this frame's MAC density and saved MACs,
fps and latency (``streaming.overlay``); ``q``/Esc, closing the window or Ctrl-C ends it
with a summary on stderr. ``--headless`` (or no usable display) prints one JSON object per
frame on stdout instead; the summary still goes to stderr.

Example::

    python -m streaming.live --model runs/fit/model.keras --source 0
    python -m streaming.live --model runs/fit/model.keras --source clip.mp4 --headless --max-frames 100
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

from deltanet.cli import ArgumentParser, CliError, add_crop_argument, add_motion_argument, add_tuning_argument, fail, nonneg_float, positive_float, positive_int
from streaming import prediction

PROG = "python -m streaming.live"
WINDOW_TITLE = "deltanet live"
#: frames the summary's medians cover: an endless run (--repeat 0, a camera) keeps its memory flat
RECENT = 100_000


# --- display -------------------------------------------------------------------------------------


def _x_socket_ok(display: str) -> str | None:
    """None if an X server answers at ``display``, else why not (a cheap check before Qt,
    which aborts the whole process when it cannot connect)."""
    m = re.fullmatch(r"(?P<host>[^:]*):(?P<num>\d+)(?:\.\d+)?", display)
    if m is None:
        return None if sys.platform == "darwin" else f"DISPLAY={display!r} is not an X display name"
    host, num = m["host"], int(m["num"])
    try:
        if host in ("", "unix"):
            path = f"/tmp/.X11-unix/X{num}"
            for addr in ("\0" + path, path):   # Linux servers listen on the abstract socket too
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(2.0)
                try:
                    s.connect(addr)
                    return None
                except OSError:
                    continue
                finally:
                    s.close()
            return f"no X server at DISPLAY={display}"
        with socket.create_connection((host, 6000 + num), timeout=2.0):
            return None
    except OSError as e:
        return f"cannot reach the X server at DISPLAY={display}: {e}"


def _qt_font_dir() -> None:
    """opencv-python's Qt ships no fonts and warns on every window; point it at matplotlib's DejaVu."""
    if "QT_QPA_FONTDIR" in os.environ:
        return
    spec = importlib.util.find_spec("matplotlib")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        ttf = os.path.join(loc, "mpl-data", "fonts", "ttf")
        if os.path.isdir(ttf):
            os.environ["QT_QPA_FONTDIR"] = ttf
            return


_PROBE = (
    "import cv2, numpy as np\n"
    "cv2.namedWindow('probe', cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)\n"
    "cv2.imshow('probe', np.zeros((8, 8, 3), np.uint8)); cv2.waitKey(1); cv2.destroyAllWindows()\n"
)


def display_problem() -> str | None:
    """None when OpenCV can open a window here, else a short reason.

    OpenCV's Qt backend aborts the process (not an exception) when it cannot reach a display,
    so the check runs in a child process after a cheap look at ``DISPLAY``.
    """
    if sys.platform.startswith("linux"):
        display = os.environ.get("DISPLAY")
        if not display:
            return "DISPLAY is not set"
        if (why := _x_socket_ok(display)) is not None:
            return why
    _qt_font_dir()
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "opening a test window timed out"
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {r.returncode}"
        for ln in lines:   # Qt's first line names the actual problem
            if "could not connect" in ln or "not implemented" in ln.lower():
                why = ln
                break
        return f"OpenCV cannot open a window: {' '.join(why.split())[:200]}"
    return None


# --- helpers -------------------------------------------------------------------------------------


def class_labels(engine) -> list[str]:
    n = int(engine.plan.tensors[engine.plan.output][2])
    names = list(engine.class_names)
    return names if len(names) == n else [f"class {i}" for i in range(n)]


def default_window(engine) -> int:
    return prediction.default_window(engine.info)


def _size_arg(text: str) -> tuple[int, int]:
    import argparse

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}")
    return int(m[1]), int(m[2])


def repeat_arg(text: str) -> int:
    """``--repeat``: how many times to play an in-order source, 0 for endlessly."""
    import argparse

    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0: endlessly), got {text!r}")
    return int(text)


def _region_arg(text: str):
    """``motion``, or a region of interest ``x0,y0,x1,y1`` in fractions of the frame (0..1)."""
    import argparse

    if text.strip().lower() == "motion":
        return "motion"
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'motion' or x0,y0,x1,y1 in fractions of the frame, got {text!r}") from None
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise argparse.ArgumentTypeError(f"region box needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {text!r}")
    return (x0, y0, x1, y1)


def region_prior(region, resolution: int = 256):
    """The engine's ``set_region`` argument for a ``--region`` value (see ``_region_arg``)."""
    if region is None or region == "motion":
        return region
    from streaming.region import roi_prior

    x0, y0, x1, y1 = region
    r = resolution
    return roi_prior((r, r), [(x0 * r, y0 * r, x1 * r, y1 * r)])


def _partial(path: Path) -> Path:
    """A temporary name next to ``path`` that keeps its extension (OpenCV picks formats by it)."""
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def _check_out_path(path: str | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.parent.is_dir():
        raise CliError(f"{what}: folder {str(p.parent)!r} does not exist")
    if p.is_dir():
        raise CliError(f"{what}: {path!r} is a folder")
    return p


class _Recorder:
    """The annotated video, written to a temporary name and renamed when complete."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.tmp = _partial(path)
        self.writer = None
        self.frames = 0

    def open(self, size: tuple[int, int]) -> None:
        import cv2

        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, tuple(size))
        if not self.writer.isOpened():
            self.writer = None
            raise CliError(f"--record: OpenCV cannot write {str(self.path)!r} (mp4v)")

    def write(self, canvas: np.ndarray) -> None:
        if self.writer is None:
            self.open((canvas.shape[1], canvas.shape[0]))
        self.writer.write(canvas)
        self.frames += 1

    def finish(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.release()
        if ok and self.frames:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _fmt(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


# --- run -----------------------------------------------------------------------------------------


def run(
    model: str,
    source: str,
    *,
    headless: bool = False,
    max_frames: int | None = None,
    window: int | None = None,
    top_k: int = 3,
    record: str | None = None,
    snapshot: str | None = None,
    threads: int | None = None,
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    hold_ms: float = 0.0,
    realtime: bool = False,
    keyframe_interval: int | None = None,
    json_lines: bool | None = None,
    region=None,
    region_lambda: float = 4.0,
    repeat: int = 1,
    crop=None,
    motion: str = "none",
    tuning: str = "auto",
    out=None,
    err=None,
) -> dict:
    """Run live recognition; returns the summary dict (also printed as one line on ``err``).

    ``json_lines`` (default: only when headless) prints one JSON object per frame on ``out``.
    ``region`` (``"motion"`` or an ``(x0, y0, x1, y1)`` box in fractions of the frame) lowers
    the delta thresholds there by ``1 + region_lambda`` (``DeltaEngine.set_region``).
    ``repeat`` plays an in-order source that many times (0: endlessly).
    ``crop`` (a ``streaming.preprocess.Crop``) is cut from every frame before the model (and the
    display) sees it.
    ``motion="global"`` compensates camera motion (``streaming.canvas.MotionEngine``): the JSON
    lines and the overlay then carry the estimated shift per frame.
    Raises ``CliError`` for a missing model/source, an unconvertible model or an unwritable output.
    """
    from deltanet.density import mac_density
    from streaming.model_io import apply_motion, load_engine, model_kind
    from streaming.overlay import OverlayInfo, compose, display_size
    from streaming.preprocess import crop_image
    from streaming.sources import SourceError, open_source, quiet_backend_logs
    from streaming.tuning import use_tuning

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    model_kind(model)
    record_path = _check_out_path(record, "--record")
    snapshot_path = _check_out_path(snapshot, "--snapshot")
    quiet_backend_logs()

    # Open the source once, first, so that a bad one fails fast, before TensorFlow loads. A live
    # stream keeps its reader running (newest frame only) while the model loads: a camera that
    # serves one client, or a stream served once, must not be reopened. Paced files start playing
    # at the first read. Frames the reader replaced before the engine's first frame are not
    # counted as dropped.
    try:
        src = open_source(source, max_frames=max_frames, live=True if realtime else None, repeat=repeat)
    except SourceError as e:
        raise CliError(str(e)) from e
    except ValueError as e:
        raise CliError(f"--source {source!r}: {e}") from e
    try:
        shown_size = crop.size(*src.size) if crop is not None else tuple(src.size)
    except ValueError as e:
        src.close()
        raise CliError(f"--crop: {e}") from e
    try:
        engine = load_engine(model, threads=threads, keyframe_interval=keyframe_interval)
        use_tuning(engine, tuning, model, log=lambda m: print(m, file=err))
        engine = apply_motion(engine, motion, model)
        engine.warmup()   # compile the kernels before the first frame is timed
        if region is not None:
            try:
                engine.set_region(region_prior(region), lam=region_lambda)
            except ValueError as e:
                raise CliError(f"--region: {e}") from e
        why = None if headless else display_problem()
    except BaseException:
        src.close()
        raise

    import cv2

    recorder = None
    shown = False
    ok = False
    lat, eng_ms = deque(maxlen=RECENT), deque(maxlen=RECENT)
    lat_sum = density_sum = 0.0   # means over the whole run
    end_reason = None
    n = 0
    dropped_before = None   # the source's count when the engine took its first frame
    try:
        labels = class_labels(engine)
        window = window or default_window(engine)
        k = max(1, min(top_k, len(labels)))
        dense_macs = engine.dense_macs
        dense_total = int(dense_macs.sum())

        if not headless:
            if why is None:
                try:
                    cv2.namedWindow(WINDOW_TITLE, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
                    shown = True
                except cv2.error as e:
                    why = f"OpenCV cannot open a window: {' '.join(str(e).split())[:200]}"
            if why is not None:
                print(f"{PROG}: no display ({why}); running headless: one JSON object per frame on stdout", file=err, flush=True)
                headless = True
        if json_lines is None:
            json_lines = headless
        need_canvas = shown or record_path is not None or snapshot_path is not None
        disp_size = display_size(shown_size, size=size, scale=scale)
        if record_path is not None:
            recorder = _Recorder(record_path, float(src.fps or src.measured_fps or 25.0))
            recorder.open(disp_size)   # opening FFmpeg's writer can take a second: not in frame 1's time
        if need_canvas:   # the first drawing call is slow too
            compose(np.zeros((disp_size[1], disp_size[0], 3), np.uint8), OverlayInfo([("", 0.0)], 0, 0, 1, 0, 0, None, 0), disp_size)

        smoothed = prediction.SmoothedPrediction(window)
        history = deque(maxlen=120)
        ticks = deque(maxlen=31)
        canvas = None
        wall = None
        clock = time.perf_counter
        t_start = clock()
        try:
            while True:
                frame = src.read()
                if frame is None:
                    end_reason = src.end_reason
                    break
                if dropped_before is None:
                    dropped_before = frame.dropped_so_far
                image = crop_image(frame.image, crop)
                t0 = clock()
                logits, stats = engine.step(image)
                latency = (clock() - t0) * 1e3
                probs = smoothed.update(logits)
                order = np.argsort(-probs)[:k]
                top = [(labels[i], float(probs[i])) for i in order]
                density = stats.mac_density   # transmitted non-zero deltas, MAC-weighted (deltanet.density)
                executed = int(stats.executed_macs.sum())
                ticks.append(clock())
                fps = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else None
                if not stats.keyframe:
                    history.append(density)
                lat.append(latency)
                eng_ms.append(stats.total_ms)
                lat_sum += latency
                density_sum += density if n else 0.0   # frames after the first
                dropped = int(src.dropped) - dropped_before
                if json_lines:
                    rec = {
                        "frame": n,
                        "source_index": int(frame.index),
                        "label": top[0][0],
                        "score": _fmt(top[0][1]),
                        "top": [[lab, _fmt(p)] for lab, p in top],
                        "mac_density": _fmt(density),
                        "executed_mac_density": _fmt(stats.executed_mac_density),
                        "executed_macs": executed,
                        "dense_macs": dense_total,
                        "saved_macs": dense_total - executed,
                        "keyframe": bool(stats.keyframe),
                        "latency_ms": _fmt(latency, 4),
                        "engine_ms": _fmt(stats.total_ms, 4),
                        "fps": None if fps is None else _fmt(fps, 4),
                        "dropped": dropped,
                    }
                    if motion != "none":
                        rec["motion"] = {"dx": _fmt(stats.dx, 3), "dy": _fmt(stats.dy, 3), "confidence": _fmt(stats.confidence, 3),
                                         "refresh": bool(stats.refresh), "offset": list(stats.offset)}  # fmt: skip
                    print(json.dumps(rec), file=out, flush=True)
                n += 1
                if need_canvas:
                    info = OverlayInfo(top, density, executed, dense_total, latency, stats.total_ms, fps, n - 1,
                                       dropped, bool(stats.keyframe), smoothed.frames, list(history),
                                       (stats.dx, stats.dy) if motion != "none" else None)  # fmt: skip
                    canvas = compose(image, info, disp_size)
                    if recorder is not None:
                        recorder.write(canvas)
                if shown:
                    cv2.imshow(WINDOW_TITLE, canvas)
                    key = cv2.waitKey(1) & 0xFF
                    if key in (ord("q"), ord("Q"), 27):
                        end_reason = "q pressed"
                        break
                    if cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1:
                        end_reason = "window closed"
                        break
            wall = clock() - t_start
            if shown and hold_ms > 0 and end_reason not in ("q pressed", "window closed"):
                print(f"{PROG}: {end_reason or 'stream ended'}; holding the last frame for {hold_ms:g} ms (q closes)", file=err, flush=True)
                t_end = clock() + hold_ms / 1e3
                while clock() < t_end:
                    if cv2.waitKey(20) & 0xFF in (ord("q"), ord("Q"), 27):
                        break
                    if cv2.getWindowProperty(WINDOW_TITLE, cv2.WND_PROP_VISIBLE) < 1:
                        break
        except KeyboardInterrupt:
            end_reason = "interrupted (Ctrl-C)"
            if wall is None:   # interrupted in the frame loop, not while holding the last frame
                wall = clock() - t_start
        ok = True
    finally:
        src.close()
        if recorder is not None:
            recorder.finish(ok)
        if shown:
            cv2.destroyAllWindows()
            cv2.waitKey(1)

    if snapshot_path is not None and canvas is not None:
        tmp = _partial(snapshot_path)
        if not cv2.imwrite(str(tmp), canvas):
            tmp.unlink(missing_ok=True)
            raise CliError(f"--snapshot: OpenCV cannot write {str(snapshot_path)!r}")
        os.replace(tmp, snapshot_path)

    summary = {
        "frames": n,
        "mac_density": density_sum / (n - 1) if n > 1 else None,
        "mean_latency_ms": lat_sum / n if n else None,
        "median_latency_ms": float(np.median(lat)) if lat else None,   # of the last RECENT frames
        "median_engine_ms": float(np.median(eng_ms)) if eng_ms else None,
        "fps": n / wall if n and wall else None,
        **src.counters(),
        "dropped": int(src.dropped) - (dropped_before or 0),
        "window": window,
        "headless": bool(headless),
        "end_reason": end_reason,
        "record": str(record_path) if record_path and recorder and recorder.frames else None,
        "snapshot": str(snapshot_path) if snapshot_path and canvas is not None else None,
    }
    print(format_summary(summary), file=err, flush=True)
    return summary


def format_summary(s: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{x:.1%}"

    def ms(x):
        return "n/a" if x is None else f"{x:.2f} ms"

    parts = [
        f"{s['frames']} frames",
        f"mean MAC density {pct(s['mac_density'])} (frames after the first)",
        f"latency mean {ms(s['mean_latency_ms'])} / median {ms(s['median_latency_ms'])}",
        f"{s['fps']:.1f} fps" if s["fps"] else "fps n/a",
        f"dropped {s['dropped']}",
    ]
    # what the source survived, when it happened
    parts += [f"{k.replace('_', ' ')} {s[k]}" for k in ("corrupt", "stalls", "reconnects", "size_changes") if s.get(k)]
    tail = f" ({s['end_reason']})" if s.get("end_reason") else ""
    saved = "".join(f"; {k} -> {s[k]}" for k in ("record", "snapshot") if s.get(k))
    return f"{PROG}: " + ", ".join(parts) + tail + saved


# --- CLI -----------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Live action recognition with the delta engine: a window with the top labels "
                       "and what each frame cost, or JSON lines with --headless.")
    p.add_argument("--model", required=True, help="a trained clip model (.keras) or a bundle (directory or file)")
    p.add_argument("--source", required=True, help="camera index, /dev/videoN, video file, rtsp/http URL, or synthetic:[WxH][@fps][?...]")
    p.add_argument("--headless", action="store_true", help="no window: one JSON object per frame on stdout")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    p.add_argument("--window", type=positive_int, default=None,
                   help="average the prediction over the last W frames (default: 3 x the model's training clip length, else 12; streaming.prediction)")
    p.add_argument("--top", type=positive_int, default=3, help="labels shown (default 3)")
    p.add_argument("--record", default=None, metavar="OUT.mp4", help="also write the annotated video here (mp4v; written to a temporary name, then renamed)")
    p.add_argument("--snapshot", default=None, metavar="OUT.png", help="save the last annotated frame as an image")
    p.add_argument("--threads", type=positive_int, default=None, help="numba threads for the engine (default: numba's)")
    p.add_argument("--keyframe-interval", type=positive_int, default=None, help="dense refresh every N frames (default: first frame only)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--size", type=_size_arg, default=None, metavar="WxH", help="display (and --record) size of the video")
    g.add_argument("--scale", type=positive_float, default=None, help="display scale of the source frames (default: enlarged to >= 640 px wide)")
    p.add_argument("--hold-ms", type=nonneg_float, default=0.0, help="window mode: keep the last frame up this long after the source ends (q closes)")
    p.add_argument("--realtime", action="store_true", help="play files and synthetic video at their frame rate, newest frame only (like a camera)")
    p.add_argument("--repeat", type=repeat_arg, default=1, help="play a file or synthetic source N times, 0: endlessly (default 1)")
    p.add_argument("--json", action="store_true", help="window mode: print the JSON lines on stdout too")
    p.add_argument("--region", type=_region_arg, default=None, metavar="motion|x0,y0,x1,y1",
                   help="region-weighted thresholds: where the input moves, or a box in fractions of the frame")
    p.add_argument("--region-lambda", type=nonneg_float, default=4.0, help="threshold divisor 1 + lambda inside the region (default 4)")
    add_crop_argument(p)
    add_motion_argument(p)
    add_tuning_argument(p)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        run(args.model, args.source, headless=args.headless, max_frames=args.max_frames, window=args.window, top_k=args.top,
            record=args.record, snapshot=args.snapshot, threads=args.threads, size=args.size, scale=args.scale,
            hold_ms=args.hold_ms, realtime=args.realtime, keyframe_interval=args.keyframe_interval,
            json_lines=True if args.json else None, region=args.region, region_lambda=args.region_lambda,
            repeat=args.repeat, crop=args.crop, motion=args.motion, tuning=args.tuning)
    except CliError as e:
        return fail(PROG, str(e))
    except KeyboardInterrupt:   # during start-up (the frame loop handles its own)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # `... --headless | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
