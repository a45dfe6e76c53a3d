"""Frame types and the two ways of reading them: in order (files) and newest-only (live).

``Frame``, ``FrameSource`` and ``SourceError`` are the public types; build sources with
:func:`streaming.sources.open_source`, which picks the reader class. Split from
``sources.py`` to keep each module short.

Sizes are ``(W, H)``, OpenCV's order; images are RGB uint8 (H, W, 3), C-contiguous.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

import cv2
import numpy as np

from .synthetic import SyntheticVideo


class SourceError(OSError):
    """A frame source cannot be opened or its spec is invalid; the message is one line naming it."""


@dataclass(frozen=True)
class Frame:
    """One delivered frame.

    Attributes
    ----------
    image : np.ndarray
        RGB, uint8, shape (H, W, 3), C-contiguous.
    index : int
        Frame number in the source: the file position for files, the reader's count of
        frames received for live sources (so it jumps where frames were dropped).
    timestamp : float
        Seconds: ``index / fps`` for files and synthetic video, ``time.monotonic()`` at
        arrival for live sources.
    dropped_so_far : int
        The source's ``dropped`` count when this frame was taken.
    """

    image: np.ndarray
    index: int
    timestamp: float
    dropped_so_far: int = 0


def _to_rgb(img: object, bgr: bool) -> np.ndarray | None:
    """Any OpenCV frame (BGR, gray, BGRA, 16-bit) to RGB uint8, or None if it is not an image."""
    if not isinstance(img, np.ndarray) or img.size == 0 or img.ndim not in (2, 3):
        return None
    if img.dtype == np.uint16:          # some cameras deliver 16-bit gray/depth
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        return None
    ch = 1 if img.ndim == 2 else img.shape[2]
    if ch == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
    if ch == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else img
    if ch == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return None


class _Shaper:
    """Converts frames to RGB and to one fixed size: ``size`` if given, else the first frame's.

    ``size_changes`` counts the frames whose own size differs from the previous frame's (a
    camera or stream that changed resolution; the frames are still resized to ``size``).
    """

    def __init__(self, size: tuple[int, int] | None, bgr: bool = True):
        self.size, self.bgr = size, bgr
        self.size_changes = 0
        self._last: tuple[int, int] | None = None

    def __call__(self, img: object) -> np.ndarray | None:
        rgb = _to_rgb(img, self.bgr)
        if rgb is None:
            return None
        h, w = rgb.shape[:2]
        if self._last is not None and self._last != (w, h):
            self.size_changes += 1
        self._last = (w, h)
        if self.size is None:
            self.size = (w, h)
        tw, th = self.size
        if (w, h) != (tw, th):
            # INTER_AREA averages when shrinking (no aliasing); bilinear when growing
            interp = cv2.INTER_AREA if w * h > tw * th else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (tw, th), interpolation=interp)
        return np.ascontiguousarray(rgb)


class FrameSource:
    """Common interface of all sources: iterate, ``read()``, ``close()``, context manager, stats.

    Attributes
    ----------
    name : str
        The spec it was opened from (passwords in URLs replaced by ``***``).
    is_live : bool
        True for cameras and network streams (newest frame only, frames may be dropped).
    dropped, corrupt, reconnects, reconnect_attempts, stalls, delivered : int
        Frames overwritten before the consumer took them; frames that failed to decode or
        had no usable shape and were skipped; successful reopenings of a lost stream;
        reopening attempts; reads that hit the read timeout (a stream that went silent);
        frames handed out by ``read()``.
    size_changes : int
        Frames whose resolution differed from the previous frame's (resized to ``size``).
    passes : int
        In-order sources: passes over the input started so far (``repeat``).
    end_reason : str or None
        Why iteration ended (``"end of input"``, ``"truncated input: …"``, ``"stream lost: …"``,
        ``"max_frames=N reached"``, ``"closed"``, …); None while frames may still come.
    """

    is_live = False

    def __init__(self, name: str, shaper: _Shaper, max_frames: int | None):
        self.name, self._shape, self._max_frames = name, shaper, max_frames
        self.dropped = self._corrupt = self.reconnects = self.reconnect_attempts = self.stalls = self.delivered = 0
        self.passes = 1
        self.end_reason: str | None = None
        self._fps: float | None = None

    @property
    def corrupt(self) -> int:
        """Frames skipped as undecodable or unusable (a paced source's inner file included)."""
        return self._corrupt + int(getattr(getattr(self, "_cap", None), "corrupt", 0))

    @property
    def size_changes(self) -> int:
        return self._shape.size_changes

    def counters(self) -> dict[str, int]:
        """What the source survived so far: ``dropped``, ``corrupt``, ``stalls``, ``reconnects``, ``size_changes``."""
        return {"dropped": int(self.dropped), "corrupt": int(self.corrupt), "stalls": int(self.stalls),
                "reconnects": int(self.reconnects), "size_changes": int(self.size_changes)}

    @property
    def fps(self) -> float | None:
        """Nominal frame rate reported by the source (a container's claim for streams), or None."""
        return self._fps

    @property
    def measured_fps(self) -> float | None:
        """Frame rate actually received (live sources, over the last 32 frames); None for others."""
        return None

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of delivered frames."""
        return self._shape.size

    def read(self) -> Frame | None:
        """The next frame, or None once the source has ended (see ``end_reason``)."""
        if self.end_reason is not None:
            return None
        if self._max_frames is not None and self.delivered >= self._max_frames:
            self._finish(f"max_frames={self._max_frames} reached")
            return None
        frame = self._next()
        if frame is not None:
            self.delivered += 1
        return frame

    def close(self) -> None:
        """Stop reading and release the device or stream; idempotent."""
        self._finish("closed")

    def _finish(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason
        self._release()

    def _next(self) -> Frame | None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.size or (0, 0)
        return f"<{type(self).__name__} {self.name!r} {w}x{h} live={self.is_live} end={self.end_reason!r}>"


class _OrderedSource(FrameSource):
    """Files, image sequences and non-live synthetic video: every frame, in order, no thread.

    ``open_capture()`` opens the input; ``repeat`` passes over it (0: endlessly), reopened at
    each end. Frame indices and timestamps keep counting across passes.
    """

    _MAX_FAILED_READS = 3   # a truncated file fails every read; a corrupt frame fails once

    def __init__(self, name: str, open_capture: Callable[[], object], shaper: _Shaper, max_frames: int | None,
                 repeat: int = 1):
        super().__init__(name, shaper, max_frames)
        self._open_capture, self._repeat = open_capture, repeat
        self._cap = open_capture()
        fps, count = self._cap.get(cv2.CAP_PROP_FPS), self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._fps = float(fps) if 0 < fps < 10_000 else None
        self._expected = int(count) if 0 < count < 2**31 else None
        self._pos = 0       # file position of the next frame in this pass, unreadable frames included
        self._base = 0      # frames of the earlier passes
        self._t_base = 0.0  # and their duration (for captures that report no fps)
        self._last_ts = 0.0
        self._pending = self._next()
        if self._pending is None:
            self._cap.release()
            raise SourceError(f"cannot read {name!r}: no decodable frame")

    def _next_pass(self) -> bool:
        if self._repeat and self.passes >= self._repeat:
            return False
        self._cap.release()
        self._cap = self._open_capture()
        self._base += self._pos
        self._t_base = self._last_ts
        self._pos = 0
        self.passes += 1
        return True

    def _next(self) -> Frame | None:
        if (f := getattr(self, "_pending", None)) is not None:
            self._pending = None
            return f
        failed = 0
        while True:
            ok, img = self._cap.read()
            if not ok:
                if self._expected is None or self._pos + failed >= self._expected:
                    self._corrupt += failed  # unreadable frames just before the end
                    self._pos += failed
                    failed = 0
                    if self._pos and self._next_pass():   # an empty pass would loop for ever
                        continue
                    self._finish("end of input")
                    return None
                failed += 1     # a corrupt frame in the middle, or the cut of a truncated file
                if failed >= self._MAX_FAILED_READS:
                    self._corrupt += 1   # the frame at the cut
                    self._finish(f"truncated input: frame {self._pos} of {self._expected} unreadable, "
                                 "no frame after it")
                    return None
                continue
            # reading resumed: the failed reads were frames skipped by the decoder
            self._corrupt += failed
            self._pos += failed
            failed = 0
            rgb = self._shape(img)
            index, self._pos = self._base + self._pos, self._pos + 1
            if rgb is None:
                self._corrupt += 1
                continue
            ts = index / self._fps if self._fps else self._t_base + self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            self._last_ts = ts
            return Frame(rgb, index, ts, self.dropped)

    def _release(self) -> None:
        self._cap.release()


class _LiveSource(FrameSource):
    """Cameras and network streams: a reader thread keeps the newest frame and reopens lost streams.

    The reader starts at once, so a stream stays open and drained while the consumer gets
    ready (a camera that serves one client, or a stream served once, is never reopened).
    ``paced`` sources (files and synthetic video played at their fps) start playing at the
    consumer's first ``read()`` instead: nothing happens in the world while they wait.

    A failed read that took about the read timeout is a stall: the stream is reopened at
    once. A failed read that returned quickly is a frame the decoder rejected, unless
    ``_MAX_FAILED_READS`` fail in a row (the stream closed): corrupt frames are counted, not
    taken for a lost stream.
    """

    is_live = True
    _MAX_FAILED_READS = 8

    def __init__(self, name: str, opener: Callable[[threading.Event], object], shaper: _Shaper,
                 max_frames: int | None, *, reconnect_attempts: int, reconnect_timeout_s: float,
                 backoff_s: float, backoff_max_s: float, join_timeout_s: float, read_timeout_s: float | None = None,
                 paced: bool = False):
        super().__init__(name, shaper, max_frames)
        self._opener, self._join_timeout_s = opener, join_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_failed_reads = 1 if paced else self._MAX_FAILED_READS   # a paced file's reader skips its own
        self._consumer_started = threading.Event()
        if not paced:
            self._consumer_started.set()
        self._policy = (reconnect_attempts, reconnect_timeout_s, backoff_s, backoff_max_s)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._cap = opener(self._stop)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if 0 < fps < 10_000 else None
        # read the first frame here so that a source that opens but never delivers fails in open_source
        for _ in range(3):
            ok, img = self._cap.read()
            if not ok:
                break
            if (rgb := self._shape(img)) is not None:
                break
            self._corrupt += 1
        if not ok or rgb is None:
            self._cap.release()
            raise SourceError(f"{name!r} opened but delivered no frame")
        self._slot: Frame | None = Frame(rgb, 0, time.monotonic(), 0)
        self._seq, self._times = 1, deque([self._slot.timestamp], maxlen=32)
        self._reader_reason: str | None = None
        self._reader_done = False
        self._outage: list | None = None
        self._thread = threading.Thread(target=self._run, name=f"frames:{name}", daemon=True)
        self._thread.start()

    @property
    def measured_fps(self) -> float | None:
        """Frame rate actually received by the reader over its last 32 frames."""
        t = list(self._times)
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else None

    def _next(self) -> Frame | None:
        self._consumer_started.set()
        with self._cond:
            while self._slot is None and not self._reader_done and not self._stop.is_set():
                self._cond.wait(0.5)    # bounded waits: never miss a wake-up for good
            frame, self._slot = self._slot, None
        if frame is None:
            self._finish(self._reader_reason or "stream ended")
        return frame

    def _run(self) -> None:
        while not (self._consumer_started.wait(0.1) or self._stop.is_set()):
            pass
        cap = self._cap
        if hasattr(cap, "restart_clock"):   # a paced source starts playing now
            cap.restart_clock()
        failed = 0
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                ok, img = cap.read()    # bounded by the read timeout given to the backend
                if self._stop.is_set():
                    break
                if not ok:
                    stalled = self._read_timeout_s is not None and time.monotonic() - t0 >= 0.8 * self._read_timeout_s
                    failed += 1
                    if not stalled and failed < self._max_failed_reads:
                        continue        # maybe a frame the decoder rejected: the next read tells
                    self.stalls += stalled
                    failed = 0
                    cap.release()
                    cap = self._cap = self._reopen()
                    if cap is None:
                        break
                    continue
                rgb = self._shape(img)
                with self._cond:
                    self._corrupt += failed + (rgb is None)  # reading resumed: the failed reads were frames
                    failed = 0
                    if rgb is None:
                        continue
                    now = time.monotonic()
                    if self._slot is not None:
                        self.dropped += 1   # the consumer never saw it: newer beats complete
                    self._slot = Frame(rgb, self._seq, now, self.dropped)
                    self._outage = None
                    self._seq += 1
                    self._times.append(now)
                    self._cond.notify_all()
        except Exception as e:  # the consumer must see why frames stopped, not a silent hang
            self._reader_reason = f"reader failed: {type(e).__name__}: {e}"
        finally:
            if cap is not None:
                cap.release()   # released on this thread: releasing during a read would crash
            with self._cond:
                self._reader_done = True
                self._cond.notify_all()

    def _reopen(self):
        """Reopen a lost stream with exponential backoff; None (and a reason) when it is gone for good.

        An outage lasts until a frame arrives again (``self._outage`` is reset then), so a server
        that accepts and at once drops the connection still runs out of attempts.
        """
        max_attempts, total_s, delay0, delay_max = self._policy
        if self._outage is None:
            self._outage = [time.monotonic(), 0, delay0]    # start, attempts, next delay
        t0 = self._outage[0]
        while self._outage[1] < max_attempts:
            left = total_s - (time.monotonic() - t0)
            if left <= 0 or self._stop.wait(min(self._outage[2], left)):
                break
            self._outage[1] += 1
            self._outage[2] = min(self._outage[2] * 2, delay_max)
            self.reconnect_attempts += 1
            try:
                cap = self._opener(self._stop)
            except SourceError:
                continue
            self.reconnects += 1
            return cap
        if not self._stop.is_set():
            self._reader_reason = (f"stream lost: gave up after {self._outage[1]} reconnect attempt(s) "
                                   f"in {time.monotonic() - t0:.1f} s" if max_attempts else "stream ended")
        return None

    def _release(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            # the reader may sit in an open or a read, both bounded by the backend timeouts
            self._thread.join(self._join_timeout_s)


class _SynthCapture:
    """``cv2.VideoCapture``-like adapter over :class:`SyntheticVideo` (frames are RGB)."""

    def __init__(self, video: SyntheticVideo, frames: int | None):
        self.video, self.frames, self.i = video, frames, 0

    def read(self):
        if self.frames is not None and self.i >= self.frames:
            return False, None
        self.i += 1
        return True, self.video.frame(self.i - 1)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.video.fps
        return float(self.frames or 0) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0

    def release(self) -> None:
        pass


class _Paced:
    """Delivers an in-order source at its nominal fps, like a camera (``live`` files/synthetic).

    A ``cv2.VideoCapture``-like adapter over an ``_OrderedSource``: its frames are RGB already,
    its corrupt frames are its own to count (``corrupt``).
    """

    def __init__(self, source: "_OrderedSource", fps: float, stop: threading.Event):
        self.source, self.period, self.stop, self.t0, self.n = source, 1.0 / fps, stop, None, 0

    @property
    def corrupt(self) -> int:
        return self.source.corrupt

    def restart_clock(self) -> None:
        """Play on from now (the frames due while nobody consumed are not owed)."""
        self.t0 = time.monotonic() - self.n * self.period

    def read(self):
        if self.t0 is None:
            self.t0 = time.monotonic()
        if self.stop.wait(max(0.0, self.t0 + self.n * self.period - time.monotonic())):
            return False, None
        self.n += 1
        frame = self.source.read()
        return (True, frame.image) if frame is not None else (False, None)

    def get(self, prop: int) -> float:
        return float(self.source.fps or 0.0) if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.source.close()
