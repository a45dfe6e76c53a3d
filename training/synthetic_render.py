"""Rendering of the embedded dataset's synthetic action videos: backgrounds, object looks, the motion of
each class, the white motion trails, and :func:`render_action` (one video as uint8 frames).

``training.synthetic`` lays the videos out as a UCF101 tree and caches them; the design of the classes
(why trails, why these motions) is described there. Any change here that changes a pixel must bump
``training.synthetic.FORMAT_VERSION`` (cached datasets of older versions are then regenerated).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

#: every class the generator knows, in classInd order; the first ``num_classes`` are used.
#: Clockwise vs counter-clockwise circling is deliberately not a class pair: in one frame the
#: two are mirror images at a random orientation, which a small per-frame CNN learns far too
#: slowly (measured: about chance between the two after minutes of training).
ALL_CLASSES: tuple[str, ...] = (
    "MoveLeft",
    "MoveRight",
    "MoveUp",
    "MoveDown",
    "ZigZag",
    "Circle",
    "ZoomIn",
    "ZoomOut",
    "SwingPendulum",
    "SpinBar",
    "BlinkPulse",
)

#: background mean levels and the least object brightness: objects are always the bright part
BACKGROUND_LEVELS = (40.0, 120.0)
MIN_OBJECT_LUMA = 190.0

_SHIFT = 4  # OpenCV drawing with 4 fractional bits: sub-pixel positions, smooth motion
_ONE = 1 << _SHIFT
_SHAPES = ("disc", "square", "triangle", "diamond", "hexagon")


# --------------------------------------------------------------------------- rendering


@dataclass
class Look:
    """Appearance of one video: background (float32 RGB), object colour, shape, size."""

    background: np.ndarray
    color: np.ndarray
    shape: str
    radius: float
    angle: float
    unit: np.ndarray | None = None  # the shape's polygon at radius 1 (None for discs)


@dataclass
class State:
    """Object state at one (possibly fractional) time."""

    segment: int  # trails are not drawn across a jump (wrap-around, zoom restart)
    x: float
    y: float
    r: float
    angle: float = 0.0  # bar angle (radians) for swing/spin
    length: float = 0.0  # bar length
    opacity: float = 1.0


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """A random static texture: smooth noise, stripes, blobs or a checkerboard (float32 RGB)."""
    base = rng.uniform(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1], 3).astype(np.float32)
    contrast = float(rng.uniform(6, 16))
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    if kind == 0:  # smooth noise
        sigma = rng.uniform(1.0, 4.0)
        tex = cv2.GaussianBlur(rng.standard_normal((s, s, 3), dtype=np.float32), (0, 0), sigma)
        tex = tex.mean(-1, keepdims=True) + 0.4 * tex  # mostly luminance, some colour
        tex *= contrast / max(float(tex.std()), 1e-6)
    elif kind == 1:  # stripes in a random direction and colour
        th, period = rng.uniform(0, np.pi), rng.uniform(6, 24) * s / 128
        wave = np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period + rng.uniform(0, 2 * np.pi))
        tex = wave[..., None] * (rng.uniform(0.4, 1.0, 3) * contrast).astype(np.float32)
    elif kind == 2:  # soft blobs
        tex = np.zeros((s, s, 3), np.float32)
        for _ in range(int(rng.integers(12, 30))):
            center = tuple(int(v) for v in rng.uniform(0, s, 2))
            axes = tuple(int(v) for v in rng.uniform(3, 16, 2) * s / 128)
            col = tuple(float(v) for v in rng.uniform(-1.5, 1.5, 3) * contrast)
            cv2.ellipse(tex, center, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        tex = cv2.GaussianBlur(tex, (0, 0), 1.5)
    else:  # checkerboard, slightly blurred
        cell = rng.uniform(6, 18) * s / 128
        board = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2) * 2 - 1
        tex = cv2.GaussianBlur(board.astype(np.float32), (0, 0), 0.8)[..., None] * (
            rng.uniform(0.4, 1.0, 3) * contrast
        ).astype(np.float32)
    fine = cv2.GaussianBlur(rng.standard_normal((s, s, 3), dtype=np.float32), (0, 0), 0.7) * 4.0
    return np.clip(base + tex + fine, 0, 255).astype(np.float32)


def _object_color(rng: np.random.Generator) -> np.ndarray:
    """A random hue, always much brighter than the (darker) backgrounds.

    One contrast polarity for every video: a bright head with a fading trail then means the
    same direction everywhere, which a small CNN learns far faster than polarity-invariant
    features (a dark comet on a bright background reverses every edge).
    """
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(100, 255), 255]]], np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    luma = float(rgb @ np.float32([0.299, 0.587, 0.114]))
    if luma < MIN_OBJECT_LUMA:  # mix with white: deep blues/reds are too dark otherwise
        rgb += (MIN_OBJECT_LUMA - luma) / (255.0 - luma) * (255.0 - rgb)
    return rgb


def random_look(rng: np.random.Generator, size: int) -> Look:
    """Background and object appearance of one video."""
    bg = _background(rng, size)
    color = _object_color(rng)
    shape = str(rng.choice(_SHAPES))
    radius = float(rng.uniform(7.0, 11.0) * size / 128)
    angle = float(rng.uniform(0, 2 * np.pi))
    unit = None if shape == "disc" else unit_polygon(shape, angle)
    return Look(bg, color, shape, radius, angle, unit)


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def unit_polygon(shape: str, angle: float) -> np.ndarray:
    """Vertices ``(n, 2)`` of a polygon shape of radius 1 around the origin, rotated by ``angle``."""
    n = {"square": 4, "triangle": 3, "diamond": 4, "hexagon": 6}[shape]
    a = (np.pi / 4 if shape == "square" else 0.0) + 2 * np.pi * np.arange(n) / n
    aspect = 0.6 if shape == "diamond" else 1.0  # a flattened rhombus
    pts = np.stack([np.cos(a), np.sin(a) * aspect], 1)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T


def _draw_shape(mask: np.ndarray, look: Look, st: State, value: float, outline: int = 0) -> None:
    """Draw the object (filled, or an outline ``outline`` px thick) into the opacity mask."""
    v = float(np.clip(value, 0, 255))
    r = max(st.r, 0.5)
    if look.shape == "disc":
        cv2.circle(mask, _pt(st.x, st.y), int(round(r * _ONE)), v, outline or -1, cv2.LINE_AA, _SHIFT)
    else:
        pts = np.round((look.unit * r + (st.x, st.y)) * _ONE).astype(np.int32)
        if outline:
            cv2.polylines(mask, [pts], True, v, outline, cv2.LINE_AA, _SHIFT)
        else:
            cv2.fillPoly(mask, [pts], v, cv2.LINE_AA, _SHIFT)


def _draw_bar(mask: np.ndarray, look: Look, st: State, value: float, anchored: bool) -> None:
    """A bar of ``st.length`` at ``st.angle``: from the pivot (swing) or through the centre (spin)."""
    v = float(np.clip(value, 0, 255))
    dx, dy = np.cos(st.angle) * st.length, np.sin(st.angle) * st.length
    thick = max(2, int(round(st.r * 0.5)))
    if anchored:
        p0, p1 = (st.x, st.y), (st.x + dx, st.y + dy)
    else:
        p0, p1 = (st.x - dx / 2, st.y - dy / 2), (st.x + dx / 2, st.y + dy / 2)
    cv2.line(mask, _pt(*p0), _pt(*p1), v, thick, cv2.LINE_AA, _SHIFT)
    if anchored:  # a "hand"/bob at the free end
        cv2.circle(mask, _pt(*p1), int(round(st.r * 0.8 * _ONE)), v, -1, cv2.LINE_AA, _SHIFT)


# Motions: (rng, size, look, frames) -> (time -> State). Times are in frames and may be
# fractional or negative (trail ghosts of the first frames), so a motion is defined for all t.
Motion = Callable[[float], State]
MotionFactory = Callable[[np.random.Generator, int, Look, int], Motion]


def _linear(dx: int, dy: int) -> MotionFactory:
    def make(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
        speed = rng.uniform(1.4, 2.2) * s / 128
        lo, hi = look.radius + 2, s - look.radius - 2
        travel = speed * max(frames - 1, 1)
        wrap = travel > hi - lo
        if wrap:  # long videos: leave on one side, come back on the other
            margin = look.radius + TRAIL_FRAMES * speed + 2  # far enough off-screen to hide the trail
            period = s + 2 * margin
            offset = rng.uniform(0, period)
        else:  # the whole pass stays in view
            first = rng.uniform(lo, hi - travel)
        cross = rng.uniform(look.radius + 8, s - look.radius - 8)
        wobble_a, wobble_f, wobble_p = rng.uniform(0, 3), rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi)

        def at(t: float) -> State:
            if wrap:
                along = offset + speed * t
                seg = math.floor(along / period)
                a = along - seg * period - margin
            else:
                seg, a = 0, first + speed * t
            c = cross + wobble_a * math.sin(wobble_f * t + wobble_p)
            a = a if (dx + dy) > 0 else s - a  # moving towards negative coordinates
            x, y = (a, c) if dx else (c, a)
            return State(seg, x, y, look.radius)

        return at

    return make


def _circle(sign: int = 0) -> MotionFactory:
    # image y points down, so an increasing angle turns clockwise on screen; sign 0: either way
    def make(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
        radius = rng.uniform(16, 30) * s / 128
        lim = radius + look.radius + 3
        cx, cy = rng.uniform(lim, s - lim, 2)
        direction = sign or (1 if rng.random() < 0.5 else -1)
        omega = direction * rng.uniform(0.14, 0.26)
        phase = rng.uniform(0, 2 * np.pi)

        def at(t: float) -> State:
            a = phase + omega * t
            return State(0, cx + radius * math.cos(a), cy + radius * math.sin(a), look.radius * 0.85)

        return at

    return make


def _zoom(grow: bool) -> MotionFactory:
    def make(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
        r_min, r_max = rng.uniform(5, 7) * s / 128, rng.uniform(22, 30) * s / 128
        lim = r_max + 2
        cx, cy = rng.uniform(lim, s - lim, 2)
        period = rng.uniform(12, 20)
        phase = rng.uniform(0, 1)

        def at(t: float) -> State:
            u = t / period + phase
            seg = math.floor(u)  # restart: small again (grow) or large again (shrink)
            frac = u - seg if grow else 1.0 - (u - seg)
            return State(seg, cx, cy, r_min * (r_max / r_min) ** frac)

        return at

    return make


def _swing(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
    length = rng.uniform(26, 40) * s / 128
    base = rng.uniform(0, 2 * np.pi)  # rest direction of the arm: any orientation
    amp = rng.uniform(np.radians(35), np.radians(65))
    period, phase = rng.uniform(14, 24), rng.uniform(0, 2 * np.pi)
    # keep the whole swept fan inside the frame
    reach = length + look.radius
    px, py = rng.uniform(reach * 0.7, s - reach * 0.7, 2)
    px -= 0.55 * length * math.cos(base)
    py -= 0.55 * length * math.sin(base)
    px, py = float(np.clip(px, 4, s - 4)), float(np.clip(py, 4, s - 4))

    def at(t: float) -> State:
        a = base + amp * math.sin(2 * np.pi * t / period + phase)
        return State(0, px, py, look.radius, angle=a, length=length)

    return at


def _spin(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
    length = rng.uniform(34, 54) * s / 128
    lim = length / 2 + look.radius
    cx, cy = rng.uniform(lim, s - lim, 2)
    omega = rng.choice([-1, 1]) * rng.uniform(0.08, 0.15)  # slow enough for a bow tie, not a disc
    phase = rng.uniform(0, 2 * np.pi)

    def at(t: float) -> State:
        return State(0, cx, cy, look.radius, angle=phase + omega * t, length=length)

    return at


def _pulse(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
    lim = look.radius * 1.3 + 3
    cx, cy = rng.uniform(lim, s - lim, 2)
    period, phase = rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
    r = look.radius * 1.3

    def at(t: float) -> State:
        return State(0, cx, cy, r, opacity=0.2 + 0.8 * (0.5 + 0.5 * math.cos(2 * np.pi * t / period + phase)))

    return at


def _zigzag(rng: np.random.Generator, s: int, look: Look, frames: int) -> Motion:
    along = _linear(1 if rng.random() < 0.5 else -1, 0)(rng, s, look, frames)
    half = rng.uniform(6, 10)  # frames per diagonal leg
    speed = abs(along(1.0).x - along(0.0).x)
    amp = 0.5 * half * speed * rng.uniform(0.8, 1.2)  # vertical speed ~ horizontal: legs near 45 degrees
    phase = rng.uniform(0, 2 * half)
    lo, hi = amp + look.radius + 2, s - amp - look.radius - 2

    def at(t: float) -> State:
        st = along(t)
        u = ((t + phase) / half) % 2.0
        tri = u if u < 1 else 2 - u  # triangle wave in [0, 1]: straight diagonal legs
        st.y = float(np.clip(st.y, lo, hi)) + amp * (2 * tri - 1)
        return st

    return at


#: class -> (motion factory, drawing style)
_CLASSES: dict[str, tuple[MotionFactory, str]] = {
    "MoveLeft": (_linear(-1, 0), "blob"),
    "MoveRight": (_linear(1, 0), "blob"),
    "MoveUp": (_linear(0, -1), "blob"),
    "MoveDown": (_linear(0, 1), "blob"),
    "Circle": (_circle(0), "blob"),
    "ZoomIn": (_zoom(True), "zoom_in"),
    "ZoomOut": (_zoom(False), "zoom_out"),
    "SwingPendulum": (_swing, "swing"),
    "BlinkPulse": (_pulse, "pulse"),
    "SpinBar": (_spin, "spin"),
    "ZigZag": (_zigzag, "blob"),
}

TRAIL_FRAMES = 10.0  # how far back the trail reaches (turning motions: swing, spin)
TRAIL_LENGTH = 3.0  # trail length of travelling objects, in object radii
TRAIL_GHOSTS = 14  # ghosts drawn along it (close enough for a smooth streak, not dots)
TRAIL_WHITE = np.float32([255.0, 255.0, 255.0])  # trails are white whatever the object's colour


def _ring_ghosts(at: Motion, now: State, t: float) -> list[State]:
    """Sizes 3, 6 and 9 frames ago (same segment): rings far enough apart to stay distinct."""
    out = [at(t - back) for back in (3.0, 6.0, 9.0)]
    return [g for g in out if g.segment == now.segment]


def _trail_frames(at: Motion, style: str, look: Look, frames: int) -> float:
    """How many frames back a moving object's trail reaches.

    For objects that travel (``blob`` style) the trail is a fixed length in *pixels*,
    TRAIL_LENGTH object radii, so a slow or big object still shows a tail well beyond its
    own outline (a tail hidden under the head carries no direction).
    """
    if style != "blob":
        return TRAIL_FRAMES
    steps = [math.hypot(at(t + 1.0).x - at(t).x, at(t + 1.0).y - at(t).y) for t in range(0, max(frames, 2), 4)]
    speed = max(float(np.median(steps)), 0.25)
    return float(np.clip(TRAIL_LENGTH * look.radius / speed, 4.0, 24.0))


def _frame_masks(
    at: Motion, style: str, look: Look, t: float, s: int, trail_frames: float = TRAIL_FRAMES
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Opacity masks (uint8) of the object and of its trail at frame ``t``.

    Returns ``(object, trail, trail_on_top)``. Trails (past positions, sizes, angles) are
    drawn white whatever the object's colour, like a light trail on a long exposure: one
    look-independent visual language for motion, which a small CNN picks up from few looks.
    """
    obj = np.zeros((s, s), np.uint8)
    trail = np.zeros((s, s), np.uint8)
    now = at(t)
    ghosts = []
    for k in range(TRAIL_GHOSTS, 0, -1):  # oldest first, so newer ghosts paint over older
        g = at(t - k * trail_frames / TRAIL_GHOSTS)
        if g.segment == now.segment:
            ghosts.append((k, g))
    tail = lambda k: 230.0 - 170.0 * k / TRAIL_GHOSTS  # noqa: E731 (opacity by age)
    ring = max(1, round(s / 64))  # zoom rings: 2 px at 128
    on_top = False
    if style == "blob":
        for k, g in ghosts:  # a tapering, fading tail: a teardrop whose round end leads
            g.r *= 1.0 - 0.75 * k / (TRAIL_GHOSTS + 1)
            _draw_shape(trail, look, g, tail(k))
        _draw_shape(obj, look, now, 255)
    elif style == "zoom_in":  # older = smaller: rings inside the current object
        _draw_shape(obj, look, now, 255)
        for i, g in enumerate(_ring_ghosts(at, now, t)):
            _draw_shape(trail, look, g, 230 - 50 * i, outline=ring)
        on_top = True
    elif style == "zoom_out":  # older = larger: a stepped white halo around it
        for i, g in reversed(list(enumerate(_ring_ghosts(at, now, t)))):  # largest (oldest) first
            _draw_shape(trail, look, g, 200 - 55 * i)
        _draw_shape(obj, look, now, 255)
    elif style in ("swing", "spin"):
        for k, g in ghosts:
            _draw_bar(trail, look, g, tail(k), anchored=style == "swing")
        _draw_bar(obj, look, now, 255, anchored=style == "swing")
    elif style == "pulse":
        _draw_shape(obj, look, now, 255 * now.opacity)
    else:
        raise ValueError(f"unknown drawing style {style!r}")
    return obj, trail, on_top


def render_action(
    name: str,
    look_rng: np.random.Generator,
    motion_rng: np.random.Generator,
    frames: int = 32,
    size: int = 128,
    clean: bool = False,
) -> tuple[np.ndarray, list[State]]:
    """Render one video of class ``name`` as ``(frames, size, size, 3)`` uint8 RGB.

    Parameters
    ----------
    name
        One of :data:`ALL_CLASSES`.
    look_rng, motion_rng
        Randomness of the appearance (the generator seeds it from the clip's ``(group, clip)``
        number, so every class shows the same looks) and of the motion, camera and noise.
    clean
        Skip sensor noise, flicker and camera jitter (for tests of the motion itself).

    Returns
    -------
    frames, states
        The video and the object's state at every frame (centre, radius, bar angle, ...).
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown synthetic class {name!r}; expected one of {ALL_CLASSES}")
    factory, style = _CLASSES[name]
    look = random_look(look_rng, size)
    at = factory(motion_rng, size, look, frames)
    # camera and sensor: per clip
    noise_sigma = motion_rng.uniform(3.0, 6.0)
    flicker_a = motion_rng.uniform(0.01, 0.04)  # a few % of global brightness
    flicker_f, flicker_p = motion_rng.uniform(0.2, 1.2), motion_rng.uniform(0, 6.3)
    jitter_sigma = motion_rng.uniform(0.3, 0.8)
    # OpenCV's generator is 3x faster than numpy's for the per-pixel noise; it is per thread,
    # so seeding it here keeps every video deterministic under the thread pool
    cv2.setRNGSeed(int(motion_rng.integers(1, 2**31)))
    noise = np.empty((size, size, 3), np.float32)
    out = np.empty((frames, size, size, 3), np.uint8)
    states = []
    color, white = look.color[None, None, :], TRAIL_WHITE[None, None, :]
    trail_frames = _trail_frames(at, style, look, frames)
    for t in range(frames):
        states.append(at(float(t)))
        obj, trail, on_top = _frame_masks(at, style, look, float(t), size, trail_frames)
        img = look.background.copy()
        for mask, col in ((obj, color), (trail, white)) if on_top else ((trail, white), (obj, color)):
            x, y, w, h = cv2.boundingRect(mask)  # blend only where something was drawn
            if w and h:
                roi = img[y : y + h, x : x + w]
                m = mask[y : y + h, x : x + w, None].astype(np.float32) * np.float32(1.0 / 255.0)
                roi += (col - roi) * m
        if not clean:
            shift = np.clip(motion_rng.normal(0.0, jitter_sigma, 2), -2.0, 2.0)
            warp = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
            img = cv2.warpAffine(img, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            gain = 1.0 + flicker_a * math.sin(flicker_f * t + flicker_p) + motion_rng.normal(0.0, 0.004)
            cv2.randn(noise, (0.0, 0.0, 0.0), (noise_sigma,) * 3)
            img = img * np.float32(gain) + noise
        out[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out, states
