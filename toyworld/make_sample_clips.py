"""Write the bundled reference clips for the demo (8 frames, 32x32, PyAV, near-lossless H.264).

``--frames 17 --size 96 --prefix toyworld_wan --fps 16`` writes the toy-world Wan's clips (object, speeds and
paths scaled with the canvas, see :func:`toyworld.world.reference_trajectories`).

* ``toyworld_red_square_bounce.mp4``: a red square moving right at 3 px/frame that bounces off the right
  wall and comes back (not constant velocity, so Pearson motion fidelity is well defined).
* ``toyworld_red_square_curve.mp4``: a red square on a quarter-circle arc.

Each clip is also written as ``<name>.json`` (caption, colour, shape, ground-truth centres). The video
uses libx264 with ``crf 0`` in ``yuv444p`` (no chroma subsampling); the script decodes the files back and
reports the largest colour error.

Usage::

    python -m toyworld.make_sample_clips --out assets/sample_clips
    python -m toyworld.make_sample_clips --out assets/sample_clips --frames 17 --size 96 --prefix toyworld_wan --fps 16
"""

from __future__ import annotations

import argparse
import json
import logging
from fractions import Fraction
from pathlib import Path

import torch

from .world import DEFAULT_FRAMES, DEFAULT_SIZE, caption_for, object_size, reference_trajectories, render_trajectory

logger = logging.getLogger(__name__)

#: Name (after the prefix) -> (colour, shape, reference trajectory).
CLIPS: dict[str, tuple[str, str, str]] = {
    "red_square_bounce": ("red", "square", "bounce"),
    "red_square_curve": ("red", "square", "curve"),
}


def write_video(path: Path, frames: torch.Tensor, fps: int = 8) -> str:
    """Write ``[F, H, W, 3]`` frames in 0..1 as an mp4. Returns the codec/pixel format used."""
    import av

    arr = (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    choices = [
        ("libx264", "yuv444p", {"crf": "0", "preset": "veryslow"}),
        ("libx264", "yuv420p", {"crf": "0"}),
        ("mpeg4", "yuv420p", {"qscale": "1"}),
    ]
    last_err: Exception | None = None
    for codec, pix_fmt, opts in choices:
        try:
            with av.open(str(path), mode="w") as container:
                stream = container.add_stream(codec, rate=Fraction(fps, 1))
                stream.width, stream.height = arr.shape[2], arr.shape[1]
                stream.pix_fmt = pix_fmt
                stream.options = opts
                for frame in arr:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            return f"{codec}/{pix_fmt}"
        except (av.error.FFmpegError, ValueError, OSError) as err:  # codec missing in this build: try the next
            last_err = err
            logger.warning("codec %s/%s failed: %s", codec, pix_fmt, err)
    raise RuntimeError(f"could not write {path}: {last_err}")


def read_video(path: Path) -> torch.Tensor:
    """Decode an mp4 to ``[F, H, W, 3]`` float in 0..1."""
    import av

    with av.open(str(path)) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    return torch.stack(frames).float() / 255.0


def make_sample_clips(
    out: Path, num_frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE, prefix: str = "toyworld", fps: int = 8
) -> dict:
    """Render, write and verify every clip in :data:`CLIPS` as ``<prefix>_<name>.mp4``. Returns per-clip info."""
    trajs = reference_trajectories(num_frames, size)
    obj = object_size(size, size)
    info = {}
    for short, (colour, shape, traj) in CLIPS.items():
        name = f"{prefix}_{short}"
        centres = trajs[traj]
        frames = render_trajectory(centres, colour, shape, obj, size, size)
        path = out / f"{name}.mp4"
        codec = write_video(path, frames, fps)
        back = read_video(path)
        err = (back - frames).abs()
        rec = {
            "file": path.name,
            "caption": caption_for(colour, shape),
            "colour": colour,
            "shape": shape,
            "trajectory": traj,
            "size": obj,
            "frames": int(frames.shape[0]),
            "height": int(frames.shape[1]),
            "width": int(frames.shape[2]),
            "fps": fps,
            "codec": codec,
            "centres_xy": centres.tolist(),
            "decode_max_abs_err": float(err.max()),
            "decode_mean_abs_err": float(err.mean()),
            "bytes": path.stat().st_size,
        }
        (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
        info[name] = rec
        logger.info(
            "%s: %s, %d bytes, decoded frames %s, max abs err %.4f, mean %.5f",
            path,
            codec,
            rec["bytes"],
            tuple(back.shape),
            rec["decode_max_abs_err"],
            rec["decode_mean_abs_err"],
        )
    return info


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/sample_clips"))
    ap.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="square frame size in pixels")
    ap.add_argument("--prefix", default="toyworld", help="file names are <prefix>_<clip>.mp4/.json")
    ap.add_argument("--fps", type=int, default=8)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    make_sample_clips(args.out, args.frames, args.size, args.prefix, args.fps)


if __name__ == "__main__":
    main()
