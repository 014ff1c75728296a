"""The motion-transfer benchmark's reference clips: 8 kinds of motion, each from two start positions.

Every reference is a hand-made ``[F, 2]`` trajectory with an appearance. None is constant velocity. The 16
references cover all three shapes and all six colours, so that appearance leakage and shape blends are measured
on every appearance the world has. The first variant of ``bounce``, ``curve``, ``speed_up`` and ``zigzag`` is the
path of :func:`toyworld.world.reference_trajectories` (at 8 frames) with the appearance the first benchmark gave it.

Kinds (positions and speeds for the default 32x32 canvas; they scale with :func:`toyworld.world.canvas_scale`).
A longer clip is a finer sampling of the same path, except for ``bounce`` and ``zigzag``, whose speed stays per frame
as in the world's clips (both reflect off walls, so they stay on the canvas at any length):

========== ================================================================================================
kind       motion
========== ================================================================================================
bounce     3 px/frame along one axis into a wall and back
curve      a quarter-circle arc (radius 10 px)
speed_up   a straight line, accelerating from 0.6 to 3 px/frame
zigzag     a diagonal, reflected off a wall
slow_down  a straight line, decelerating from 3 to 0.4 px/frame
u_turn     a half circle (radius 5 px): out one way, back the other
stop_go    3 px/frame, a stop for the middle frames, then on in the same direction
fall       dropping from rest with growing speed (gravity), a slow sideways drift, a bounce off the floor
========== ================================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .world import DEFAULT_FRAMES, DEFAULT_SIZE, bounce_path, canvas_scale, object_size, reference_trajectories

#: The kinds of motion, in table order.
MOTION_KINDS: tuple[str, ...] = ("bounce", "curve", "speed_up", "zigzag", "slow_down", "u_turn", "stop_go", "fall")

#: Reference name -> (colour, shape). The second variant of a kind is named ``<kind>_2``.
APPEARANCES: dict[str, tuple[str, str]] = {
    "bounce": ("red", "square"),
    "curve": ("green", "circle"),
    "speed_up": ("yellow", "triangle"),
    "zigzag": ("magenta", "square"),
    "slow_down": ("blue", "circle"),
    "u_turn": ("white", "triangle"),
    "stop_go": ("red", "circle"),
    "fall": ("blue", "triangle"),
    "bounce_2": ("white", "circle"),
    "curve_2": ("blue", "square"),
    "speed_up_2": ("green", "triangle"),
    "zigzag_2": ("yellow", "circle"),
    "slow_down_2": ("magenta", "triangle"),
    "u_turn_2": ("red", "triangle"),
    "stop_go_2": ("green", "square"),
    "fall_2": ("white", "square"),
}


@dataclass(frozen=True)
class Reference:
    """One benchmark reference.

    Attributes:
        name: ``<kind>`` or ``<kind>_2``.
        kind: one of :data:`MOTION_KINDS`.
        track: ``[F, 2]`` ``(x, y)`` object centres in pixels.
        colour, shape: the appearance the reference clip is rendered with.
    """

    name: str
    kind: str
    track: torch.Tensor
    colour: str
    shape: str


def _line(start: tuple[float, float], direction: tuple[float, float], steps: torch.Tensor) -> torch.Tensor:
    """Centres ``[len(steps) + 1, 2]`` along a straight line from ``start`` with per-frame step lengths ``steps``."""
    norm = math.hypot(*direction)
    unit = torch.tensor([direction[0] / norm, direction[1] / norm])
    travelled = torch.cat([torch.zeros(1), torch.cumsum(steps, 0)])
    return torch.tensor(start)[None] + travelled[:, None] * unit[None]


def _arc(centre: tuple[float, float], radius: float, start_angle: float, sweep: float, frames: int) -> torch.Tensor:
    """Centres ``[frames, 2]`` on a circle (angle 0 points right, positive angles turn clockwise on screen)."""
    angles = start_angle + sweep * torch.arange(frames, dtype=torch.float32) / max(frames - 1, 1)
    return torch.stack([centre[0] + radius * torch.cos(angles), centre[1] + radius * torch.sin(angles)], dim=1)


def _stop_go(start: tuple[float, float], direction: tuple[float, float], speed: float, frames: int) -> torch.Tensor:
    """Moves at ``speed`` px/frame, stands still over the middle third of the steps, moves on."""
    steps = frames - 1
    still = range(steps // 3, steps - steps // 3)
    lengths = torch.tensor([0.0 if i in still else speed for i in range(steps)])
    return _line(start, direction, lengths)


def _fall(start: tuple[float, float], drift: float, gravity: float, frames: int, size: float, canvas: int) -> torch.Tensor:
    """Falls from rest with ``gravity`` px/frame^2, drifting ``drift`` px/frame sideways, bouncing off the floor."""
    steps = frames - 1
    vel = torch.tensor([[drift, gravity * (i + 0.5)] for i in range(steps)])
    centres, _ = bounce_path(start, vel, size, canvas, canvas)
    return centres


def _tracks(num_frames: int, size: int) -> dict[str, torch.Tensor]:
    s = canvas_scale(size, size)
    obj = object_size(size, size)
    F = num_frames
    # Straight lines keep their length and the fall its fastest frame at any F, so they stay on the canvas.
    spread = (DEFAULT_FRAMES - 1) / max(F - 1, 1)
    gravity = 0.8 * s * spread
    rising = torch.linspace(0.6, 3.0, F - 1) * s * spread
    falling = torch.linspace(3.0, 0.4, F - 1) * s * spread
    first = reference_trajectories(F, size)
    tracks = {name: first[name] for name in ("bounce", "curve", "zigzag")}
    tracks["speed_up"] = _line((7.0 * s, 7.0 * s), (0.8, 0.6), rising)
    tracks["bounce_2"], _ = bounce_path((17.5 * s, 10.0 * s), torch.tensor([[-3.0 * s, 0.0]] * (F - 1)), obj, size, size)
    tracks["curve_2"] = _arc((26.0 * s, 24.0 * s), 10.0 * s, -math.pi, math.pi / 2, F)
    tracks["speed_up_2"] = _line((25.0 * s, 24.0 * s), (-0.8, -0.6), rising)
    tracks["zigzag_2"], _ = bounce_path((24.0 * s, 18.0 * s), torch.tensor([[-2.0 * s, 2.5 * s]] * (F - 1)), obj, size, size)
    tracks["slow_down"] = _line((7.0 * s, 24.0 * s), (0.9, -0.45), falling)
    tracks["slow_down_2"] = _line((24.0 * s, 7.0 * s), (-0.3, 0.95), falling)
    tracks["u_turn"] = _arc((12.0 * s, 16.0 * s), 5.0 * s, math.pi / 2, -math.pi, F)
    tracks["u_turn_2"] = _arc((16.0 * s, 18.0 * s), 5.0 * s, 0.0, math.pi, F)
    tracks["stop_go"] = _stop_go((6.0 * s, 10.0 * s), (1.0, 0.0), 3.0 * s * spread, F)
    tracks["stop_go_2"] = _stop_go((22.0 * s, 6.0 * s), (-0.3, 1.0), 3.0 * s * spread, F)
    tracks["fall"] = _fall((10.0 * s, 8.0 * s), 1.0 * s, gravity, F, obj, size)
    tracks["fall_2"] = _fall((22.0 * s, 6.0 * s), -1.0 * s, gravity, F, obj, size)
    return tracks


def benchmark_references(num_frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE) -> dict[str, Reference]:
    """The 16 references (8 kinds x 2 start positions), in the order of :data:`APPEARANCES`.

    Args:
        num_frames: F of every track.
        size: the square canvas the tracks are for (the object stays inside it).

    Returns:
        name -> :class:`Reference` with a ``[F, 2]`` track.
    """
    tracks = _tracks(num_frames, size)
    out = {}
    for name, (colour, shape) in APPEARANCES.items():
        kind = name.removesuffix("_2")
        out[name] = Reference(name, kind, tracks[name], colour, shape)
    return out

