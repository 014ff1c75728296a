"""Read reference videos and write results with PyAV.

Every decoded frame goes through ``to_ndarray(format="rgb24")``, so grayscale, alpha, 10/16-bit and 4:4:4
sources all arrive as 8-bit RGB. Frames are taken in decode (presentation) order, one per decoded frame:
variable-frame-rate video is read frame by frame, not resampled to a fixed rate. Decoding stops as soon as
enough frames are collected.

Each frame is turned upright as a player shows it (the display matrix a phone writes for a portrait clip:
rotations by 90/180/270 degrees and mirroring) and resized right after it is decoded, so memory holds the
output-size frames and one source frame, never the whole clip at the source resolution.
"""

from __future__ import annotations

import logging
import math
import numbers
import stat
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .animated_images import write_gif, write_webp
from .atomic_io import atomic_output_file, atomic_output_path
from .errors import InvalidSettingError, VideoInputError
from .frame_resize import check_frame_budget, check_resize_mode, frame_budget_bytes, resize_frames

logger = logging.getLogger(__name__)

DEFAULT_FPS = 8.0
MAX_DECODED_FRAMES = 4096
# 0.1 fps is one frame per 10 s (a slide show); 240 fps is the fastest phone slow-motion capture. Every
# container written here stores such a rate exactly enough (GIF plays at most 50 fps; see animated_images).
MIN_FPS, MAX_FPS = 0.1, 240.0
VIDEO_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif", ".webp": "webp"}
_FIXED_POINT_ONE = 1 << 16  # display matrix entries a, b, c, d are 16.16 fixed point


@dataclass
class VideoClip:
    """Frames read from a file.

    Attributes:
        frames: ``(F, H, W, 3)`` float32 in 0..1, upright.
        fps: average frame rate of the source divided by the stride.
        source_frame_count: frames the container declares (0 when it does not say).
        source_size: (width, height) of the source as a player shows it (after its rotation metadata).
        path: the file read.
    """

    frames: torch.Tensor
    fps: float
    source_frame_count: int
    source_size: tuple[int, int]
    path: str


@dataclass(frozen=True)
class Orientation:
    """How to turn a decoded frame upright: transpose first, then mirror left-right and/or top-bottom."""

    transpose: bool = False
    flip_horizontal: bool = False
    flip_vertical: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` as decoded -> the displayed image, ``(W, H, C)`` when transposed."""
        if self.transpose:
            image = image.transpose(1, 0, 2)
        if self.flip_horizontal:
            image = image[:, ::-1]
        if self.flip_vertical:
            image = image[::-1]
        return image


def orientation_from_display_matrix(matrix: tuple[int, ...] | np.ndarray) -> Orientation:
    """The :class:`Orientation` of FFmpeg's 3x3 display matrix (9 int32, ``a b u / c d v / x y w``).

    The matrix maps a decoded pixel ``(p, q)`` (column, row) to the displayed ``(a*p + c*q, b*p + d*q)``
    (plus a translation that keeps the picture in place). A rotation by a right angle, with or without a
    mirror, has either ``b = c = 0`` (no transpose; a negative ``a`` or ``d`` mirrors that axis) or
    ``a = d = 0`` (transpose; the signs of ``c`` and ``b`` mirror). Other angles cannot be shown without
    resampling: they are logged and the frame is used as decoded.
    """
    a, b, c, d = (matrix[i] / _FIXED_POINT_ONE for i in (0, 1, 3, 4))
    tolerance = 1e-3
    if abs(b) < tolerance and abs(c) < tolerance and abs(a) > tolerance and abs(d) > tolerance:
        return Orientation(False, a < 0, d < 0)
    if abs(a) < tolerance and abs(d) < tolerance and abs(b) > tolerance and abs(c) > tolerance:
        return Orientation(True, c < 0, b < 0)
    logger.warning("The video's display matrix (%.3f %.3f / %.3f %.3f) is not a right-angle rotation; "
                   "using the frames as stored.", a, b, c, d)
    return Orientation()


def _frame_orientation(frame: av.VideoFrame) -> Orientation:
    """The orientation a frame's display-matrix side data asks for (FFmpeg attaches the stream's to each frame)."""
    for data in frame.side_data:
        if getattr(data.type, "name", str(data.type)) == "DISPLAYMATRIX":
            return orientation_from_display_matrix(np.frombuffer(bytes(data), dtype="<i4", count=9))
    return Orientation()


class _FrameCollector:
    """Takes decoded frames one at a time and keeps them upright and at the output size.

    The output size is ``width`` x ``height``; a 0 side takes the first frame's displayed side. Every kept
    frame is counted against the memory budget read once at the start, so a clip that would not fit stops
    with a clear error at the frame that crosses it.
    """

    def __init__(self, width: int, height: int, mode: str) -> None:
        self.width, self.height, self.mode = width, height, mode
        self.budget = frame_budget_bytes()
        self.frames: list[torch.Tensor] = []
        self.source_size: tuple[int, int] | None = None

    def add(self, image: np.ndarray) -> None:
        """``image``: ``(H, W, 3)`` uint8, or float32 in 0..1, already upright."""
        if self.source_size is None:
            self.source_size = (image.shape[1], image.shape[0])
        out_w, out_h = self.width or self.source_size[0], self.height or self.source_size[1]
        check_frame_budget(len(self.frames) + 1, out_w, out_h, self.budget)
        frame = torch.from_numpy(np.ascontiguousarray(image))[None]
        frame = frame.float() / 255.0 if frame.dtype == torch.uint8 else frame
        self.frames.append(resize_frames(frame, out_w, out_h, self.mode)[0])

    def stacked(self) -> torch.Tensor:
        """``(F, H, W, 3)`` float32."""
        return torch.stack(self.frames).contiguous()


def _describe_non_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a video file (missing, a folder, a pipe...), or None for a regular file.

    Uses ``stat`` only: a FIFO is never opened, since opening one blocks until someone writes to it.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"Video file not found: {path}"
    except OSError as exc:
        return f"Video file {path} cannot be read ({exc.strerror or exc})."
    if stat.S_ISDIR(mode):
        return f"{path} is a directory; choose a video file."
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        return f"{path} is not a regular file ({kind}); choose a video file."
    return None


def _open(path: Path) -> av.container.InputContainer:
    problem = _describe_non_file(path)
    if problem is not None:
        raise VideoInputError(problem)
    try:
        # Only local files: a playlist disguised as a video must not make FFmpeg open URLs or other files' protocols.
        container = av.open(str(path), "r", options={"protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoInputError(f"{path.name} cannot be opened as a video ({exc}). Use an mp4, webm, mkv, mov or gif file.") from None
    if not container.streams.video:
        container.close()
        raise VideoInputError(f"{path.name} has no video stream.")
    return container


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return DEFAULT_FPS


def _check_selection(start: int, stride: int, count: int, width: int, height: int, mode: str) -> None:
    """Refuse a bad frame selection or an output size that cannot fit, before anything is opened."""
    if start < 0 or stride < 1 or count < 0 or width < 0 or height < 0:
        raise InvalidSettingError(
            f"Bad frame selection (start {start}, stride {stride}, count {count}, size {width}x{height}): "
            "start, count and size must be 0 or more and stride at least 1."
        )
    if width or height:
        check_resize_mode(mode)
        # A side not given is the source's, unknown until the first frame: the collector checks it then.
        check_frame_budget(max(count, 1), width, height)


def _too_few_frames(
    path: Path, picked: int, decoded: int, start: int, stride: int, count: int, damage: str | None
) -> VideoInputError:
    """The error for a selection that found no frame or fewer than ``count``, saying how many there are."""
    if not picked:
        if damage is not None and decoded == 0:
            return VideoInputError(f"{path.name} could not be decoded ({damage}). Re-export it as mp4 (H.264).")
        if decoded == 0:
            return VideoInputError(f"{path.name} contains no frames.")
        return VideoInputError(f"{path.name} has {decoded} frames, so start frame {start} is past its end.")
    return VideoInputError(
        f"{path.name} has only {picked} frames from frame {start} with stride {stride} "
        f"({decoded} decoded{', the file is damaged after that' if damage else ''}), but {count} were asked for. "
        "Lower frame_count (0 takes all), the stride, or the start frame."
    )


def read_video_frames(
    path: str | Path,
    start_frame: int = 0,
    frame_stride: int = 1,
    frame_count: int = 0,
    width: int = 0,
    height: int = 0,
    resize_mode: str = "crop",
    max_decoded_frames: int = MAX_DECODED_FRAMES,
) -> VideoClip:
    """Decode frames ``start_frame, start_frame + stride, ...`` of a video, upright and resized one by one.

    Args:
        frame_count: frames to return; 0 returns all from ``start_frame`` (at most ``max_decoded_frames`` decoded).
        width, height: output size (0 keeps the source's); see :func:`motion_core.frame_resize.resize_frames`.

    Returns:
        A :class:`VideoClip` with frames ``(F, height, width, 3)``.

    Raises:
        VideoInputError: missing file, a directory or other non-file, unreadable, empty or corrupt file, or
            fewer frames than asked (the message says how many there are). A truncated file keeps the frames
            decoded before the damage when they suffice.
        InvalidSettingError: negative start, stride below 1, negative count or size, or an output size that
            cannot fit (see :func:`motion_core.frame_resize.check_frame_budget`), refused before decoding.
    """
    path = Path(path)
    _check_selection(start_frame, frame_stride, frame_count, width, height, resize_mode)
    if path.suffix.lower() == ".webp" and _describe_non_file(path) is None:
        return _read_animated_webp(path, start_frame, frame_stride, frame_count, width, height, resize_mode)
    container = _open(path)
    collector = _FrameCollector(width, height, resize_mode)
    decoded = 0
    damage = None
    orientation = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        declared = int(stream.frames or 0)
        try:
            for frame in container.decode(stream):
                if orientation is None:
                    orientation = _frame_orientation(frame)
                if decoded >= start_frame and (decoded - start_frame) % frame_stride == 0:
                    collector.add(orientation.apply(frame.to_ndarray(format="rgb24")))
                    if frame_count and len(collector.frames) == frame_count:
                        break
                decoded += 1
                if decoded >= max_decoded_frames + start_frame:
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            damage = str(exc)
            logger.warning("%s is damaged after %d frames (%s); keeping the frames decoded so far.", path.name, decoded, exc)
    finally:
        container.close()
    picked = len(collector.frames)
    if not picked or (frame_count and picked < frame_count):
        raise _too_few_frames(path, picked, decoded, start_frame, frame_stride, frame_count, damage)
    return VideoClip(collector.stacked(), fps / frame_stride, declared, collector.source_size, str(path))


def _read_animated_webp(path: Path, start: int, stride: int, count: int, width: int, height: int, mode: str) -> VideoClip:
    """FFmpeg cannot decode animated WebP (what ComfyUI's Save Animated WEBP writes); Pillow can."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    collector = _FrameCollector(width, height, mode)
    durations = []
    try:
        with Image.open(path) as image:
            total = int(getattr(image, "n_frames", 1))
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                frame.load()  # a WebP frame's duration is known once it is loaded
                durations.append(frame.info.get("duration") or 0)
                if index >= start and (index - start) % stride == 0:
                    rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
                    collector.add(rgba[..., :3] * rgba[..., 3:4])
                    if count and len(collector.frames) == count:
                        break
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoInputError(f"{path.name} cannot be read as an animated WebP ({exc}).") from None
    picked = len(collector.frames)
    if not picked or (count and picked < count):
        raise VideoInputError(
            f"{path.name} has only {picked} frames from frame {start} with stride {stride}, but {count or 1} were asked for. "
            "Lower frame_count (0 takes all), the stride, or the start frame."
        )
    fps = 1000.0 / max(1.0, float(np.mean(durations))) if any(durations) else DEFAULT_FPS
    return VideoClip(collector.stacked(), fps / stride, total, collector.source_size, str(path))


def validate_fps(fps: float) -> float:
    """``fps`` as a float when it is a frame rate a video file can hold, else :class:`InvalidSettingError`.

    Any real number from :data:`MIN_FPS` to :data:`MAX_FPS` (numpy and ``Fraction`` included); not a bool,
    a string, NaN or infinity.
    """
    if not (isinstance(fps, numbers.Real) and not isinstance(fps, bool) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise InvalidSettingError(f"Frame rate must be a number from {MIN_FPS:g} to {MAX_FPS:g} frames per second, got {fps!r}.")
    return float(fps)


def _to_uint8(frames: torch.Tensor, upscale: int) -> np.ndarray:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidSettingError(f"Expected frames (frames, height, width, 3), got {tuple(frames.shape)}.")
    array = (frames.detach().float().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    if upscale > 1:
        array = array.repeat(upscale, axis=1).repeat(upscale, axis=2)
    return array


def write_video(frames: torch.Tensor, path: str | Path, fps: float = DEFAULT_FPS, upscale: int = 1) -> Path:
    """Write ``frames`` ``(F, H, W, 3)`` in 0..1 to ``.mp4`` (H.264), ``.webm``, ``.mkv``, ``.mov``, ``.gif`` or ``.webp``.

    The file appears atomically (written beside the target, then renamed). ``upscale`` repeats pixels
    (nearest neighbour), handy for the 32x32 demo clips. GIF and WebP keep every frame, identical
    neighbours included (see :mod:`motion_core.animated_images`).

    Raises:
        InvalidSettingError: unknown file type, a frame rate :func:`validate_fps` refuses (checked before any
            work), or frames of the wrong shape.
    """
    path = Path(path)
    container_format = VIDEO_CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise InvalidSettingError(f"Unknown video file type {path.suffix!r}; use one of {', '.join(sorted(VIDEO_CONTAINERS))}.")
    fps = validate_fps(fps)
    array = _to_uint8(frames, upscale)
    if container_format in ("gif", "webp"):
        with atomic_output_file(path) as handle:
            (write_gif if container_format == "gif" else write_webp)(array, handle, fps)
        return path
    if container_format in ("mp4", "mov", "matroska"):
        array = np.pad(array, ((0, 0), (0, array.shape[1] % 2), (0, array.shape[2] % 2), (0, 0)), mode="edge")
    codec = "libvpx-vp9" if container_format == "webm" else "libx264"
    with atomic_output_path(path) as tmp:
        with av.open(str(tmp), "w", format=container_format) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = array.shape[2], array.shape[1]
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "16"}
            for image in array:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def write_side_by_side(clips: list[torch.Tensor], path: str | Path, fps: float = DEFAULT_FPS, upscale: int = 1) -> Path:
    """Write clips ``(F, H, W, 3)`` next to each other (all resized to the first one's height and frame count)."""
    if not clips:
        raise InvalidSettingError("No clips to write.")
    frames, height = clips[0].shape[0], clips[0].shape[1]
    fitted = []
    for clip in clips:
        clip = clip[torch.linspace(0, clip.shape[0] - 1, frames).round().long()]
        width = max(1, round(clip.shape[2] * height / clip.shape[1]))
        fitted.append(resize_frames(clip, width, height, "stretch"))
    return write_video(torch.cat(fitted, dim=2), path, fps, upscale)
