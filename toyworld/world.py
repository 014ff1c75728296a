"""A synthetic clip world: one coloured shape moving over a black background.

Everything is deterministic from a seed. Frames are float tensors ``[F, H, W, 3]`` in ``0..1``; the
default clip is 8 frames of 32x32 (the size the pilot experiment validated). The object is about 9 px
across and anti-aliased by 4x4 supersampling. Other canvases scale the object and the speeds with the canvas
(:func:`canvas_scale`: 18 px and 2-6 px/frame at 64x64), and longer clips spread a curve's total turn over
their frames, so a 17-frame 64x64 clip (the toy-world Wan's) looks like a zoomed, finer-sampled 8-frame one.
The defaults render exactly what they always did (the scale factors are then exactly 1). Captions describe appearance only ("a red square"),
never motion, so that motion is something the text cannot explain.

Coordinates: ``x`` grows to the right, ``y`` grows downwards, pixel ``i`` covers ``[i, i + 1)``, so the
centre of a 32-px frame is ``16.0``. Trajectories are ``[F, 2]`` tensors of ``(x, y)`` centres.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

#: Colour name -> RGB in 0..1. Saturated and mutually far apart so the nearest-colour rule is robust.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.10, 0.10),
    "green": (0.10, 0.85, 0.15),
    "blue": (0.15, 0.30, 1.00),
    "yellow": (0.95, 0.90, 0.10),
    "white": (0.95, 0.95, 0.95),
    "magenta": (0.90, 0.10, 0.90),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
#: Every word a caption can contain (for the closed-vocabulary tokenizer).
VOCAB: tuple[str, ...] = ("a",) + COLOURS + SHAPES
MOTION_KINDS: tuple[str, ...] = ("straight", "curve", "speed_change", "curve_speed_change")

DEFAULT_FRAMES = 8
DEFAULT_SIZE = 32
DEFAULT_OBJECT_SIZE = 9.0
_SUPERSAMPLE = 4


def canvas_scale(height: int = DEFAULT_SIZE, width: int = DEFAULT_SIZE) -> float:
    """How much bigger than the default 32-px canvas a frame is (``min(height, width) / 32``; 1.0 by default).

    Object size, speeds, reference paths and the detector's size limits all scale with it.
    """
    return min(height, width) / DEFAULT_SIZE


def object_size(height: int = DEFAULT_SIZE, width: int = DEFAULT_SIZE) -> float:
    """The nominal object extent on a canvas: 9 px at 32x32, 18 px at 64x64."""
    return DEFAULT_OBJECT_SIZE * canvas_scale(height, width)


@dataclass
class Clip:
    """One rendered clip.

    Attributes:
        frames: ``[F, H, W, 3]`` float in 0..1.
        caption: e.g. ``"a red square"``.
        colour: palette name.
        shape: one of :data:`SHAPES`.
        centres: ``[F, 2]`` float ``(x, y)`` object centres in pixels.
        size: object extent in pixels (side / diameter / base and height).
        meta: extra generation parameters (motion kind, speeds, bounces, ...).
    """

    frames: torch.Tensor
    caption: str
    colour: str
    shape: str
    centres: torch.Tensor
    size: float
    meta: dict = field(default_factory=dict)


def caption_for(colour: str, shape: str) -> str:
    """The appearance-only caption, e.g. ``caption_for("red", "square") == "a red square"``."""
    return f"a {colour} {shape}"


def _coverage(shape: str, centres: torch.Tensor, size: float, height: int, width: int) -> torch.Tensor:
    """Anti-aliased coverage of the object in each frame.

    Args:
        shape: one of :data:`SHAPES`.
        centres: ``[F, 2]`` ``(x, y)`` centres.
        size: object extent in pixels.
        height, width: frame size.

    Returns:
        ``[F, H, W]`` float coverage in 0..1 (fraction of each pixel inside the shape).
    """
    s = _SUPERSAMPLE
    ys = (torch.arange(height * s, dtype=torch.float64) + 0.5) / s
    xs = (torch.arange(width * s, dtype=torch.float64) + 0.5) / s
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # [H*s, W*s]
    c = centres.to(torch.float64)
    dx = gx[None] - c[:, 0, None, None]  # [F, H*s, W*s]
    dy = gy[None] - c[:, 1, None, None]
    half = size / 2.0
    if shape == "square":
        inside = (dx.abs() <= half) & (dy.abs() <= half)
    elif shape == "circle":
        inside = dx * dx + dy * dy <= half * half
    elif shape == "triangle":
        # Upright isosceles triangle, base = height = size, centred on its bounding box.
        t = (dy + half) / size  # 0 at the apex row, 1 at the base row
        inside = (t >= 0) & (t <= 1) & (dx.abs() <= half * t)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    cov = inside.to(torch.float32).reshape(centres.shape[0], height, s, width, s).mean(dim=(2, 4))
    return cov


def render_trajectory(
    centres: torch.Tensor,
    colour: str | tuple[float, float, float] = "red",
    shape: str = "square",
    size: float = DEFAULT_OBJECT_SIZE,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
) -> torch.Tensor:
    """Render one object following an explicit trajectory.

    Args:
        centres: ``[F, 2]`` ``(x, y)`` centres in pixels (any values; nothing is clamped or bounced).
        colour: palette name or an RGB triple in 0..1.
        shape: one of :data:`SHAPES`.
        size: object extent in pixels.
        height, width: frame size.

    Returns:
        ``[F, H, W, 3]`` float frames in 0..1.
    """
    centres = torch.as_tensor(centres, dtype=torch.float32)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise ValueError(f"centres must be [F, 2], got {tuple(centres.shape)}")
    rgb = torch.tensor(PALETTE[colour] if isinstance(colour, str) else colour, dtype=torch.float32)
    cov = _coverage(shape, centres, float(size), height, width)
    return cov[..., None] * rgb


def bounce_path(
    start: tuple[float, float],
    velocities: torch.Tensor,
    size: float = DEFAULT_OBJECT_SIZE,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
) -> tuple[torch.Tensor, int]:
    """Integrate per-frame velocities from ``start``, reflecting off the walls.

    Args:
        start: ``(x, y)`` centre of frame 0.
        velocities: ``[F - 1, 2]`` intended displacement between consecutive frames.
        size: object extent (the object stays fully inside the frame).
        height, width: frame size.

    Returns:
        ``([F, 2] centres, number of wall bounces)``.
    """
    lo = size / 2.0
    hi = (width - size / 2.0, height - size / 2.0)
    pos = [float(start[0]), float(start[1])]
    sign = [1.0, 1.0]
    out = [tuple(pos)]
    bounces = 0
    for v in velocities.tolist():
        for axis in range(2):
            p = pos[axis] + sign[axis] * v[axis]
            # Reflect (possibly several times for tiny frames) until inside [lo, hi].
            for _ in range(8):
                if p < lo:
                    p = 2 * lo - p
                elif p > hi[axis]:
                    p = 2 * hi[axis] - p
                else:
                    break
                sign[axis] = -sign[axis]
                bounces += 1
            pos[axis] = min(max(p, lo), hi[axis])
        out.append(tuple(pos))
    return torch.tensor(out, dtype=torch.float32), bounces


def random_trajectory(
    generator: torch.Generator,
    num_frames: int = DEFAULT_FRAMES,
    size: float = DEFAULT_OBJECT_SIZE,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
    kind: str | None = None,
) -> tuple[torch.Tensor, dict]:
    """Draw a random trajectory: any direction, 1-3 px/frame, wall bounces, optional curve/speed change.

    Speeds are 1-3 px/frame times :func:`canvas_scale`; a curve's per-frame turn is 0.2-0.5 rad times
    ``(8 - 1) / (num_frames - 1)``, so its total turn does not grow with the clip length.

    Args:
        generator: torch random generator (the only source of randomness).
        num_frames: F.
        size: object extent in pixels.
        height, width: frame size.
        kind: one of :data:`MOTION_KINDS`, or None to draw one uniformly.

    Returns:
        ``([F, 2] centres, metadata dict)``.
    """

    def u(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand((), generator=generator))

    k = int(torch.randint(len(MOTION_KINDS), (), generator=generator))
    kind = kind or MOTION_KINDS[k]
    if kind not in MOTION_KINDS:
        raise ValueError(f"unknown motion kind {kind!r}")
    half = size / 2.0
    scale = canvas_scale(height, width)
    # Exactly 1.0 for 8-frame clips, so the default world is unchanged.
    turn_scale = (DEFAULT_FRAMES - 1) / max(num_frames - 1, 1)
    start = (u(half, width - half), u(half, height - half))
    angle = u(-math.pi, math.pi)
    speed0 = u(1.0, 3.0) * scale
    speed1 = u(1.0, 3.0) * scale if "speed" in kind else speed0
    turn = u(0.2, 0.5) * turn_scale * (1 if u(0, 1) < 0.5 else -1) if "curve" in kind else 0.0
    steps = num_frames - 1
    vel = []
    for i in range(steps):
        frac = i / max(steps - 1, 1)
        sp = speed0 + (speed1 - speed0) * frac
        a = angle + turn * i
        vel.append((sp * math.cos(a), sp * math.sin(a)))
    centres, bounces = bounce_path(start, torch.tensor(vel), size, height, width)
    meta = {
        "kind": kind,
        "angle": angle,
        "speed0": speed0,
        "speed1": speed1,
        "turn": turn,
        "bounces": bounces,
    }
    return centres, meta


def random_clip(
    seed: int,
    num_frames: int = DEFAULT_FRAMES,
    height: int = DEFAULT_SIZE,
    width: int = DEFAULT_SIZE,
    colour: str | None = None,
    shape: str | None = None,
    size_jitter: float = 1.0,
) -> Clip:
    """Draw one random clip, deterministic from ``seed``.

    Args:
        seed: the clip's seed.
        num_frames, height, width: clip geometry.
        colour, shape: force an appearance (None draws one uniformly).
        size_jitter: object size is ``(9 +- size_jitter) * canvas_scale(height, width)`` px.

    Returns:
        A :class:`Clip` with ``frames`` ``[F, H, W, 3]``.
    """
    g = torch.Generator().manual_seed(int(seed))
    c_idx = int(torch.randint(len(COLOURS), (), generator=g))
    s_idx = int(torch.randint(len(SHAPES), (), generator=g))
    colour = colour or COLOURS[c_idx]
    shape = shape or SHAPES[s_idx]
    size = (DEFAULT_OBJECT_SIZE + size_jitter * (2 * float(torch.rand((), generator=g)) - 1)) * canvas_scale(height, width)
    centres, meta = random_trajectory(g, num_frames, size, height, width)
    frames = render_trajectory(centres, colour, shape, size, height, width)
    meta["seed"] = int(seed)
    return Clip(frames, caption_for(colour, shape), colour, shape, centres, size, meta)


def render_batch(seeds: list[int], **kwargs) -> tuple[torch.Tensor, list[str], list[Clip]]:
    """Render several random clips.

    Returns:
        ``([B, F, H, W, 3] frames, captions, clips)``.
    """
    clips = [random_clip(s, **kwargs) for s in seeds]
    return torch.stack([c.frames for c in clips]), [c.caption for c in clips], clips


def reference_trajectories(num_frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> dict[str, torch.Tensor]:
    """Hand-made reference trajectories for benchmarks (none is constant velocity).

    Returns:
        name -> ``[F, 2]`` centres for a ``size`` x ``size`` frame and a ``object_size(size, size)`` object
        (9 px at 32); distances and speeds scale with ``size / 32``:
        ``bounce`` (moves right, hits the right wall and comes back),
        ``curve`` (a quarter-circle arc), ``speed_up`` (moves down-right, accelerating),
        ``zigzag`` (diagonal with a bounce off the top wall).
    """
    s = size / 32.0
    obj = object_size(size, size)
    F = num_frames
    t = torch.arange(F, dtype=torch.float32)
    out: dict[str, torch.Tensor] = {}
    vel = torch.tensor([[3.0 * s, 0.0]] * (F - 1))
    out["bounce"], _ = bounce_path((14.5 * s, 16.0 * s), vel, obj, size, size)
    ang = t / max(F - 1, 1) * (math.pi / 2)
    r = 10.0 * s
    out["curve"] = torch.stack([8.0 * s + r * torch.sin(ang), 8.0 * s + r * (1 - torch.cos(ang))], dim=1) + torch.tensor(
        [0.0, 6.0 * s]
    )
    step = torch.linspace(0.6, 3.0, F - 1) * s
    d = torch.cat([torch.zeros(1), torch.cumsum(step, 0)])
    out["speed_up"] = torch.stack([7.0 * s + d * 0.8, 7.0 * s + d * 0.6], dim=1)
    vel = torch.tensor([[2.0 * s, -2.5 * s]] * (F - 1))
    out["zigzag"], _ = bounce_path((7.0 * s, 14.0 * s), vel, obj, size, size)
    return out
