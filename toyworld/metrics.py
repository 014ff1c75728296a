"""Detector, tracker and motion-fidelity metrics for toy-world clips.

The world has one object on a (near) black background, so detection is thresholding: a pixel's
"intensity" is its brightest channel minus the frame's background level, and its coverage is that
intensity divided by the object's core brightness. From coverage we get:

* presence: a bright enough core and an object-sized blob (area 12-200 px, soft extent <= 18 px at 32x32;
  areas scale with the square and extents with :func:`toyworld.world.canvas_scale` of the frame);
* centroid: coverage-weighted mean ``(x, y)`` in pixel-centre coordinates matching :mod:`toyworld.world`
  (pixel ``i`` covers ``[i, i + 1)``, so its centre is ``i + 0.5``);
* colour: the mean colour of the core pixels, brightness-normalised, nearest palette entry (also
  brightness-normalised);
* shape: fill ratio = area / (soft width x soft height), where the soft width is the sum over columns of
  the column's maximum coverage (robust to sub-pixel positions). Square ~1.0, circle ~0.785,
  triangle ~0.5. A clip's colour and shape are majority votes over frames where the object is present.

Motion fidelity between two ``[F, 2]`` centroid tracks: Pearson correlation and plain cosine of the
flattened per-frame displacement vectors ``[(F - 1) * 2]``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import torch

from .world import PALETTE, SHAPES, canvas_scale

logger = logging.getLogger(__name__)

#: Fill-ratio boundaries: below TRIANGLE_MAX -> triangle, below CIRCLE_MAX -> circle, else square.
TRIANGLE_MAX = 0.70
CIRCLE_MAX = 0.91
# Size limits at the default 32x32 canvas; detect_frame scales them with the frame.
MIN_AREA = 12.0  # px of coverage for "present"
MAX_AREA = 200.0  # more coverage than this is not one ~9 px object
MAX_EXTENT = 18.0  # soft width / height limit (px) for "present"
MIN_CORE = 0.25  # core brightness (0..1) for "present"


@dataclass
class Detection:
    """What the detector found in one clip.

    Attributes:
        present: ``[F]`` bool, object found in each frame.
        centroids: ``[F, 2]`` ``(x, y)``; NaN where absent.
        areas: ``[F]`` coverage area in pixels.
        fill: ``[F]`` fill ratios (NaN where absent).
        colour: majority colour name over present frames (None if never present).
        shape: majority shape name over present frames (None if never present).
        frame_colours, frame_shapes: per-frame classes (None where absent).
    """

    present: torch.Tensor
    centroids: torch.Tensor
    areas: torch.Tensor
    fill: torch.Tensor
    colour: str | None
    shape: str | None
    frame_colours: list[str | None] = field(default_factory=list)
    frame_shapes: list[str | None] = field(default_factory=list)

    @property
    def presence_rate(self) -> float:
        """Fraction of frames with the object present."""
        return float(self.present.float().mean())


def _norm_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """Divide colours ``[..., 3]`` by their brightest channel (brightness-invariant chroma)."""
    return rgb / rgb.amax(dim=-1, keepdim=True).clamp(min=1e-6)


_PAL_NAMES = list(PALETTE)
_PAL = _norm_rgb(torch.tensor([PALETTE[n] for n in _PAL_NAMES]))


def classify_colour(rgb: torch.Tensor) -> str:
    """Nearest palette colour name for one mean RGB ``[3]`` (brightness-normalised)."""
    d = ((_PAL - _norm_rgb(rgb.float())[None]) ** 2).sum(dim=-1)
    return _PAL_NAMES[int(d.argmin())]


def classify_shape(fill: float) -> str:
    """Shape name from a fill ratio (see module docstring)."""
    if fill < TRIANGLE_MAX:
        return "triangle"
    if fill < CIRCLE_MAX:
        return "circle"
    return "square"


def detect_frame(frame: torch.Tensor) -> dict:
    """Detect the object in one frame.

    Args:
        frame: ``[H, W, 3]`` float in 0..1 (values outside are clamped).

    Returns:
        dict with ``present`` (bool), ``centroid`` (``[2]`` x, y), ``area``, ``fill``, ``colour``, ``shape``.
    """
    frame = frame.float().clamp(0, 1)
    h, w, _ = frame.shape
    scale = canvas_scale(h, w)  # exactly 1.0 at 32x32
    bg = frame.reshape(-1, 3).median(dim=0).values  # background level per channel (object is small)
    diff = (frame - bg).clamp(min=0)
    inten = diff.amax(dim=-1)  # [H, W]
    core_level = torch.quantile(inten.flatten(), 0.98)
    nan2 = torch.full((2,), float("nan"))
    empty = {"present": False, "centroid": nan2, "area": 0.0, "fill": float("nan"), "colour": None, "shape": None}
    if core_level < MIN_CORE:
        return empty
    cov = (inten / core_level).clamp(0, 1)
    cov = torch.where(cov > 0.15, cov, torch.zeros_like(cov))  # suppress faint background noise
    area = float(cov.sum())
    if area < MIN_AREA * scale * scale:
        return {**empty, "area": area}
    ys = torch.arange(h, dtype=torch.float32) + 0.5
    xs = torch.arange(w, dtype=torch.float32) + 0.5
    cx = float((cov.sum(dim=0) * xs).sum() / area)
    cy = float((cov.sum(dim=1) * ys).sum() / area)
    soft_w = float(cov.amax(dim=0).sum())
    soft_h = float(cov.amax(dim=1).sum())
    fill = area / max(soft_w * soft_h, 1e-6)
    if area > MAX_AREA * scale * scale or soft_w > MAX_EXTENT * scale or soft_h > MAX_EXTENT * scale:
        return {**empty, "area": area, "fill": fill}
    core = cov > 0.7
    rgb = frame[core].mean(dim=0) if bool(core.any()) else frame[cov > 0].mean(dim=0)
    return {
        "present": True,
        "centroid": torch.tensor([cx, cy]),
        "area": area,
        "fill": fill,
        "colour": classify_colour(rgb),
        "shape": classify_shape(fill),
    }


def _majority(values: list[str | None]) -> str | None:
    vals = [v for v in values if v is not None]
    return Counter(vals).most_common(1)[0][0] if vals else None


def detect_clip(frames: torch.Tensor) -> Detection:
    """Detect and track the object through a clip.

    Args:
        frames: ``[F, H, W, 3]`` float in 0..1.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [F, H, W, 3], got {tuple(frames.shape)}")
    dets = [detect_frame(f) for f in frames]
    present = torch.tensor([d["present"] for d in dets])
    return Detection(
        present=present,
        centroids=torch.stack([d["centroid"] for d in dets]),
        areas=torch.tensor([d["area"] for d in dets]),
        fill=torch.tensor([d["fill"] for d in dets]),
        colour=_majority([d["colour"] for d in dets]),
        shape=_majority([d["shape"] for d in dets]),
        frame_colours=[d["colour"] for d in dets],
        frame_shapes=[d["shape"] for d in dets],
    )


def displacements(track: torch.Tensor) -> torch.Tensor:
    """``[F, 2]`` centroids -> ``[F - 1, 2]`` per-frame displacements (NaN where a frame is missing)."""
    return track[1:] - track[:-1]


def _valid_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    da, db = displacements(a.float()), displacements(b.float())
    n = min(len(da), len(db))
    da, db = da[:n], db[:n]
    ok = ~(da.isnan().any(dim=1) | db.isnan().any(dim=1))
    return da[ok].flatten(), db[ok].flatten()


def motion_pearson(track_a: torch.Tensor, track_b: torch.Tensor) -> float:
    """Pearson correlation of the flattened per-frame displacements of two ``[F, 2]`` tracks.

    Frames where either track is missing (NaN) are skipped. Returns NaN when either displacement
    vector has zero variance (e.g. a constant-velocity track along one axis) or too few frames remain.
    """
    a, b = _valid_pair(track_a, track_b)
    if a.numel() < 4:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 1e-9 else float("nan")


def motion_cosine(track_a: torch.Tensor, track_b: torch.Tensor) -> float:
    """Plain cosine similarity of the flattened per-frame displacements of two ``[F, 2]`` tracks."""
    a, b = _valid_pair(track_a, track_b)
    den = float(a.norm() * b.norm())
    return float((a * b).sum()) / den if den > 1e-9 else float("nan")


def mean_motion(track: torch.Tensor) -> tuple[float, float]:
    """Mean speed (px/frame) and the angle (radians) of the net mean displacement of a ``[F, 2]`` track.

    NaN where fewer than one valid displacement exists.
    """
    d = displacements(track.float())
    d = d[~d.isnan().any(dim=1)]
    if len(d) == 0:
        return float("nan"), float("nan")
    speed = float(d.norm(dim=1).mean())
    m = d.mean(dim=0)
    return speed, math.atan2(float(m[1]), float(m[0]))


def circular_spread(angles: list[float]) -> float:
    """1 - mean resultant length of unit vectors at ``angles``: 0 = all the same direction, ~1 = uniform."""
    a = torch.tensor([x for x in angles if not math.isnan(x)], dtype=torch.float64)
    if a.numel() == 0:
        return float("nan")
    return 1.0 - float(torch.stack([a.cos().mean(), a.sin().mean()]).norm())


def self_check(num_clips: int = 300, seed: int = 123, num_frames: int | None = None, size: int | None = None) -> dict:
    """Run the detector on rendered clips and compare with the world's ground truth.

    ``num_frames`` / ``size`` choose the clip geometry (None: the world's defaults, 8 frames of 32x32).

    Returns:
        dict with ``colour_acc``, ``shape_acc``, ``presence``, ``centroid_err_px`` (mean), ``max_centroid_err_px``
        and the fill-ratio range per shape.
    """
    from .world import random_clip

    col = shp = pres = 0
    errs = []
    fills: dict[str, list[float]] = {s: [] for s in SHAPES}
    for i in range(num_clips):
        geometry = {k: v for k, v in (("num_frames", num_frames), ("height", size), ("width", size)) if v is not None}
        clip = random_clip(seed * 100_000 + i, **geometry)
        det = detect_clip(clip.frames)
        col += det.colour == clip.colour
        shp += det.shape == clip.shape
        pres += det.presence_rate
        errs.append((det.centroids - clip.centres).norm(dim=1))
        fills[clip.shape].extend(det.fill.tolist())
    e = torch.cat(errs)
    out = {
        "clips": num_clips,
        "colour_acc": col / num_clips,
        "shape_acc": shp / num_clips,
        "presence": pres / num_clips,
        "centroid_err_px": float(e.mean()),
        "max_centroid_err_px": float(e.max()),
        "fill_range": {k: (min(v), max(v)) for k, v in fills.items() if v},
    }
    logger.info("detector self-check: %s", out)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Check the detector against the world's ground truth.")
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: the world's 8)")
    ap.add_argument("--size", type=int, default=None, help="square canvas size (default: the world's 32)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    self_check(args.clips, num_frames=args.frames, size=args.size)
