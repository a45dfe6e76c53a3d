"""A tiny real MJPEG-over-HTTP server for tests (stdlib ``http.server`` + ``cv2.imencode``).

It serves ``multipart/x-mixed-replace`` JPEG frames on ``127.0.0.1`` on an
ephemeral port, the way IP cameras and ``mjpg-streamer`` do, so the frame source
can be tested through OpenCV's real FFmpeg HTTP path. Nothing leaves loopback.

Every frame carries its server-side sequence number (counted over all
connections) as a 16-bit binary code in the top row of blocks; ``decode_counter``
reads it back, so a test can tell how recent a delivered frame is.

Knobs for failure tests:

* ``frames_per_connection``: close the connection after that many frames
  (a stream that drops mid-way; the next connection is served again).
* ``max_connections``: connections after that many are answered 503 at once
  (a stream that is gone for good).
* ``stall_after``: after that many server frames, keep every connection open but
  send nothing more (a stream that hangs rather than closes).
* ``resize_after``: from that server frame on, frames are ``alt_size``
  (a camera that changes resolution mid-stream).
* ``stall_s``: with ``stall_after``, the silence lasts this many seconds, then every
  connection (the open one and new ones) streams again (a stall followed by recovery).
* ``corrupt_frames``: ``(first, count)``: those server frames are sent as random bytes of a
  JPEG's length (a burst of frames the decoder rejects; the connection stays up).
* ``port``: listen on this port (e.g. the port of a server that was stopped: a server that
  closes and comes back).
* ``stop()``: shut the server down and cut any stream in progress.

``StaticServer`` serves a folder (an HLS playlist and its segments) the same way.

Run by hand: ``python tests/mjpeg_server.py`` prints the URL and serves until Ctrl-C.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

BOUNDARY = "deltanetframe"
_BITS = 16


def encode_counter(img: np.ndarray, n: int) -> None:
    """Draw ``n`` as 16 black/white blocks across the top of a BGR image, in place."""
    h, w = img.shape[:2]
    bw, bh = w // _BITS, max(8, h // 8)
    for b in range(_BITS):
        img[:bh, b * bw:(b + 1) * bw] = 255 if (n >> b) & 1 else 0


def decode_counter(rgb: np.ndarray) -> int:
    """Read back the number drawn by ``encode_counter`` (works on RGB or BGR, after JPEG)."""
    h, w = rgb.shape[:2]
    bw, bh = w // _BITS, max(8, h // 8)
    n = 0
    for b in range(_BITS):
        # sample the block centre: JPEG ringing sits at the block edges
        cell = rgb[bh // 4:3 * bh // 4, b * bw + bw // 4:b * bw + 3 * bw // 4]
        if cell.mean() > 127:
            n |= 1 << b
    return n


def make_frame(n: int, size: tuple[int, int], color_bgr=(0, 0, 255)) -> np.ndarray:
    """A BGR frame of ``size=(W, H)``: solid colour (red by default) plus the counter code."""
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = color_bgr
    encode_counter(img, n)
    return img


class MJPEGServer:
    """Serve MJPEG at ``self.url`` from a background thread; use as a context manager.

    Parameters
    ----------
    size : (W, H)
        Frame size, OpenCV order.
    fps : float
        Frames sent per second on each connection.
    frames_per_connection : int or None
        Drop the connection after this many frames (None: never).
    max_connections : int or None
        Connections beyond this number get a 503 and no stream (None: unlimited).
    stall_after : int or None
        Server frame number from which connections stay open but silent.
    resize_after : int or None
        Server frame number from which ``alt_size`` is used.
    alt_size : (W, H)
        The size used after ``resize_after``.
    """

    def __init__(self, size=(160, 120), fps: float = 30.0, frames_per_connection=None,
                 max_connections=None, stall_after=None, resize_after=None, alt_size=(320, 240), quality: int = 90,
                 stall_s=None, corrupt_frames=None, port: int = 0):
        self.size, self.fps = tuple(size), float(fps)
        self.frames_per_connection = frames_per_connection
        self.max_connections = max_connections
        self.stall_after, self.stall_s = stall_after, stall_s
        self._stall_until = None    # monotonic time the stall ends (set when it starts)
        self.corrupt_frames = corrupt_frames
        self.resize_after, self.alt_size = resize_after, tuple(alt_size)
        self.quality = quality
        self.frames_sent = 0        # over all connections; also the counter drawn in frames
        self.connections = 0        # stream requests answered (including 503s)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"   # one stream per connection, closed at the end

            def log_message(self, *args):   # keep pytest output clean
                pass

            def do_GET(self):
                server._serve(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # FFmpeg needs no hint for multipart MJPEG (it probes the Content-Type), but the
        # conventional '.mjpg' path costs nothing and helps other clients.
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mjpeg-server", daemon=True)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "MJPEGServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut the streams in progress, free the port. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            for s in list(self._sockets):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> "MJPEGServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _stalled(self) -> bool:
        """True while the stall lasts (it starts when ``stall_after`` frames were sent)."""
        with self._lock:
            if self.stall_after is None or self.frames_sent < self.stall_after:
                return False
            if self.stall_s is None:
                return True
            if self._stall_until is None:
                self._stall_until = time.monotonic() + self.stall_s
            return time.monotonic() < self._stall_until

    # -- one request ---------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.connections += 1
            refused = self.max_connections is not None and self.connections > self.max_connections
            self._sockets.add(h.connection)
        try:
            if refused or self._stopping.is_set():
                h.send_error(503, "stream gone")
                return
            h.send_response(200)
            h.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            h.send_header("Cache-Control", "no-cache")
            h.end_headers()
            period, sent, t_next = 1.0 / self.fps, 0, time.monotonic()
            while not self._stopping.is_set():
                if self.frames_per_connection is not None and sent >= self.frames_per_connection:
                    break
                if self._stalled():
                    if self.stall_s is None:
                        self._stopping.wait()   # hold the connection open, silent, until stop()
                        break
                    self._stopping.wait(max(0.0, self._stall_until - time.monotonic()))
                    continue
                with self._lock:
                    n = self.frames_sent
                    self.frames_sent += 1
                big = self.resize_after is not None and n >= self.resize_after
                img = make_frame(n, self.alt_size if big else self.size)
                ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                data = jpg.tobytes()
                if self.corrupt_frames and 0 <= n - self.corrupt_frames[0] < self.corrupt_frames[1]:
                    data = np.random.default_rng(n).integers(0, 256, len(data), dtype=np.uint8).tobytes()
                h.wfile.write(
                    (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n").encode() + data + b"\r\n")
                h.wfile.flush()
                sent += 1
                # like a camera, a late frame does not cause a burst of catch-up frames
                t_next = max(t_next + period, time.monotonic())
                delay = t_next - time.monotonic()
                if delay > 0:
                    self._stopping.wait(delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass    # the client went away; that is fine
        finally:
            with self._lock:
                self._sockets.discard(h.connection)
            # a hard close: the client sees EOF at once rather than waiting for a timeout
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StaticServer:
    """Serve the files of a folder over HTTP on 127.0.0.1 (for HLS playlists and segments).

    ``with StaticServer(folder) as srv: srv.url_for("index.m3u8")``.
    """

    def __init__(self, directory):
        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="static-server", daemon=True)

    def url_for(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> "StaticServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


if __name__ == "__main__":
    with MJPEGServer(size=(320, 240), fps=15) as srv:
        print(srv.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
