"""Frame sources: one interface over cameras, video files, network streams and synthetic video.

``open_source(spec)`` classifies ``spec`` and returns a :class:`FrameSource`:

=============================================  ==========================================
spec                                           source
=============================================  ==========================================
``0``, ``"0"``, ``"/dev/video0"``              camera (live)
``"clip.avi"``, ``"frames/%04d.png"``          video file / image sequence (in order)
``"rtsp://…"``, ``"rtsps://…"``                network stream through FFmpeg (live)
``"http(s)://…/stream.mjpg"``, ``"…/x.m3u8"``  MJPEG or HLS over HTTP through FFmpeg (live)
``"synthetic:"``, ``"synthetic:320x240@30"``   generated scene (in order; ``live=1``: paced)
``"synthetic:?frames=100&seed=3&motion=pan"``  options: frames, seed, motion, noise, objects, live
=============================================  ==========================================

Every source yields :class:`Frame` objects holding an RGB uint8 (H, W, 3)
C-contiguous image. Sizes are given and reported as ``(W, H)``, OpenCV's order.

Live sources (cameras, network) run a reader thread that keeps only the newest
frame: OpenCV's own buffering otherwise hands a slow consumer frames that are
seconds old. Frames the reader overwrote before the consumer took them are
counted in ``dropped``, and ``Frame.index`` (the reader's frame number) jumps.
Files are read in order and nothing is dropped; ``repeat=N`` plays them N times (0:
endlessly). A live reader counts what it survives (``FrameSource.counters()``): frames the
decoder rejected on a healthy connection (``corrupt``, no reconnect), reads that hit the read
timeout (``stalls``, reopened at once), reopenings of a lost stream (``reconnects``) and
resolution changes (``size_changes``; frames are resized to the first size).

MJPEG over HTTP needs no hint: FFmpeg picks its ``mpjpeg`` demuxer from the
server's ``Content-Type: multipart/x-mixed-replace`` header, whatever the URL
path ends in (tested against tests/mjpeg_server.py). Open and read timeouts go
to FFmpeg as open parameters, so a dead stream cannot hang a read.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import cv2

from .frames import Frame, FrameSource, SourceError, _LiveSource, _OrderedSource, _Paced, _Shaper, _SynthCapture
from .synthetic import SyntheticVideo

__all__ = ["Frame", "FrameSource", "SourceError", "open_source", "quiet_backend_logs", "NETWORK_SCHEMES"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
_SYNTH_PREFIXES = ("synthetic:", "synth:")  # "synth:" as in OpenCV's samples/python/video.py
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_ENV_LOCK = threading.Lock()                # os.environ is process-global: serialise our FFmpeg opens


def quiet_backend_logs() -> None:
    """Silence OpenCV's and FFmpeg's own stderr chatter (for CLIs that print one line per error).

    FFmpeg's level is read when OpenCV first loads it, so call this before opening anything.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")   # AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # builds without the utils.logging binding
        pass


def _redact(url: str) -> str:
    """Hide a password in a URL before it goes into names and messages."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def _open_ffmpeg(url: str, timeout_s: float, rtsp_transport: str | None) -> cv2.VideoCapture:
    ms = int(timeout_s * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
    with _ENV_LOCK:
        # FFmpeg's RTSP default is UDP, which NAT and firewalls often eat: ask for TCP unless the
        # user set their own FFmpeg options. OpenCV only reads these from the environment.
        set_env = url.lower().startswith("rtsp") and rtsp_transport and _FFMPEG_ENV not in os.environ
        if set_env:
            os.environ[_FFMPEG_ENV] = f"rtsp_transport;{rtsp_transport}"
        try:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        finally:
            if set_env:
                del os.environ[_FFMPEG_ENV]
    if not cap.isOpened():
        raise SourceError(f"cannot open stream {_redact(url)!r}: unreachable, refused or not a video "
                          f"stream (timeout {timeout_s:g} s)")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # ignored by FFmpeg, kept for backends that honour it
    return cap


def _open_camera(dev: int | str, timeout_s: float) -> cv2.VideoCapture:
    if isinstance(dev, str) and not os.path.exists(dev):
        raise SourceError(f"cannot open camera {dev!r}: no such device")
    # no open params here: backends that do not know a parameter refuse to open at all
    cap = cv2.VideoCapture(dev, cv2.CAP_V4L2) if isinstance(dev, str) else cv2.VideoCapture(dev)
    if not cap.isOpened():
        raise SourceError(f"cannot open camera {dev!r}: no such camera, or it is busy")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's queue would otherwise hold stale frames
    cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(timeout_s * 1000))   # best effort
    return cap


def _parse_synthetic(spec: str) -> tuple[SyntheticVideo, int | None, bool]:
    body = spec.split(":", 1)[1]
    body, _, query = body.partition("?")
    m = re.fullmatch(r"(?:(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?))?", body.strip())
    if m is None:
        raise SourceError(f"bad synthetic spec {spec!r}: expected synthetic:[WxH][@fps][?key=value&...]")
    opts = dict(parse_qsl(query, keep_blank_values=True))
    known = {"frames", "seed", "motion", "noise", "objects", "live"}
    if set(opts) - known:
        raise SourceError(f"bad synthetic spec {spec!r}: unknown option(s) {sorted(set(opts) - known)}; "
                          f"known: {sorted(known)}")
    try:
        video = SyntheticVideo(int(m[1] or 320), int(m[2] or 240), float(m[3] or 30.0),
                               seed=int(opts.get("seed", 0)), motion=opts.get("motion", "bounce"),
                               noise=float(opts.get("noise", 2.0)), objects=int(opts.get("objects", 1)))
        frames = int(opts["frames"]) if opts.get("frames") else None
    except ValueError as e:
        raise SourceError(f"bad synthetic spec {spec!r}: {e}") from None
    return video, frames, opts.get("live", "0").lower() in ("1", "true", "yes")


def open_source(spec: str | int | os.PathLike, *, size: tuple[int, int] | None = None, timeout_s: float = 5.0,
                max_frames: int | None = None, live: bool | None = None, repeat: int = 1, reconnect_attempts: int = 5,
                reconnect_timeout_s: float = 30.0, backoff_s: float = 0.5, backoff_max_s: float = 8.0,
                rtsp_transport: str | None = "tcp") -> FrameSource:
    """Open a camera, video file, network stream or synthetic video as a :class:`FrameSource`.

    Parameters
    ----------
    spec : str, int or path
        See the module docstring for the accepted forms.
    size : (W, H), optional
        Resize every frame to this size (OpenCV order: width first). Without it, frames keep
        the first frame's size and later frames of another size are resized to it.
    timeout_s : float
        Open and read timeout for network streams (and read timeout for cameras where the
        backend supports one); also bounds ``close()``.
    max_frames : int, optional
        End after delivering this many frames.
    repeat : int
        Files, image sequences, synthetic video and URLs read in order: play the input this
        many times (0: endlessly), e.g. a demo loop or a soak test. Indices and timestamps
        keep counting. Live sources are not repeated (they reconnect instead).
    live : bool, optional
        Override the default: cameras (always) and streams are live (newest frame only), files
        and synthetic video are read in order. ``live=True`` on a file plays it at its fps with
        frame dropping like a camera; ``live=False`` on a URL reads a remote file in order.
    reconnect_attempts, reconnect_timeout_s : int, float
        Per outage of a live source: at most this many reopen attempts within this many
        seconds, then iteration ends with ``end_reason`` ``"stream lost: …"``. 0 disables.
    backoff_s, backoff_max_s : float
        Wait before the first reopen attempt, doubled after each failure up to the maximum.
    rtsp_transport : str or None
        FFmpeg ``rtsp_transport`` for RTSP (default ``"tcp"``), unless
        ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is already set; None keeps FFmpeg's default (UDP).

    Raises
    ------
    SourceError
        The source cannot be opened (missing camera or file, undecodable file, unreachable
        stream, unsupported URL scheme, bad synthetic spec).
    """
    if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"size must be (W, H) with positive entries, got {size!r}")
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0 (0: endlessly), got {repeat!r}")
    shaper = _Shaper(tuple(int(s) for s in size) if size else None)
    live_kw = dict(reconnect_attempts=reconnect_attempts, reconnect_timeout_s=reconnect_timeout_s,
                   backoff_s=backoff_s, backoff_max_s=backoff_max_s, join_timeout_s=2 * timeout_s + 1.0,
                   read_timeout_s=timeout_s)
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if isinstance(text, str) and not text.strip():
        raise SourceError("empty source spec: give a camera index, file, URL or synthetic:")
    if isinstance(text, str) and text.strip().isdigit():
        text = int(text.strip())
    if isinstance(text, int) or re.fullmatch(r"/dev/(video\d+|v4l/.+)", text):
        if isinstance(text, int) and text < 0:
            raise SourceError(f"bad camera index {text}")
        return _LiveSource(f"camera {text}", lambda stop: _open_camera(text, timeout_s), shaper, max_frames,
                           **live_kw)
    text = text.strip()
    if text.lower().startswith(_SYNTH_PREFIXES):
        video, frames, synth_live = _parse_synthetic(text)
        shaper.bgr = False
        paced = live if live is not None else synth_live
        ordered = _OrderedSource(text, lambda: _SynthCapture(video, frames), shaper, None if paced else max_frames,
                                 repeat)
        return _paced(ordered, video.fps, max_frames, live_kw) if paced else ordered
    if "://" in text:
        scheme = urlsplit(text).scheme.lower()
        if scheme == "file":
            text = urlsplit(text).path
        elif scheme not in NETWORK_SCHEMES:
            raise SourceError(f"unsupported URL scheme {scheme!r} in {_redact(text)!r}; "
                              f"supported: {', '.join(NETWORK_SCHEMES)}")
        elif live is False:
            return _OrderedSource(_redact(text), lambda: _open_ffmpeg(text, timeout_s, rtsp_transport), shaper,
                                  max_frames, repeat)
        else:
            return _LiveSource(_redact(text), lambda stop: _open_ffmpeg(text, timeout_s, rtsp_transport), shaper,
                               max_frames, **live_kw)
    path = Path(text)
    if "%" not in text:     # printf patterns ("img_%04d.png") name image sequences, not one file
        if not path.exists():
            raise SourceError(f"cannot open video file {text!r}: no such file")
        if not path.is_file():
            raise SourceError(f"cannot open video file {text!r}: not a file")
        if path.stat().st_size == 0:
            raise SourceError(f"cannot open video file {text!r}: empty file")
    ordered = _OrderedSource(text, lambda: _open_file(text), shaper, None if live else max_frames, repeat)
    return _paced(ordered, ordered.fps or 30.0, max_frames, live_kw) if live else ordered


def _open_file(text: str) -> cv2.VideoCapture:
    try:
        cap = cv2.VideoCapture(text)
    except cv2.error:
        cap = None
    if cap is None or not cap.isOpened():
        raise SourceError(f"cannot open video file {text!r}: not a readable video")
    return cap


def _paced(ordered: _OrderedSource, fps: float, max_frames: int | None, live_kw: dict) -> _LiveSource:
    """An in-order source played at ``fps`` like a camera (newest frame only), from the first ``read()``."""
    return _LiveSource(ordered.name, lambda stop: _Paced(ordered, fps, stop), _Shaper(ordered.size, bgr=False),
                       max_frames, **{**live_kw, "reconnect_attempts": 0, "read_timeout_s": None}, paced=True)
