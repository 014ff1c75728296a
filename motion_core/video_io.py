"""Read reference videos and write results with PyAV.

Every decoded frame goes through ``to_ndarray(format="rgb24")``, so grayscale, alpha, 10/16-bit and 4:4:4
sources all arrive as 8-bit RGB. Frames are taken in decode (presentation) order, one per decoded frame:
variable-frame-rate video is read frame by frame, not resampled to a fixed rate. Decoding stops as soon as
enough frames are collected.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .atomic_io import atomic_output_file, atomic_output_path
from .errors import InvalidSettingError, VideoInputError
from .frame_resize import resize_frames

logger = logging.getLogger(__name__)

DEFAULT_FPS = 8.0
MAX_DECODED_FRAMES = 4096
MIN_FPS, MAX_FPS = 0.1, 240.0
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif", ".webp": "webp"}


@dataclass
class VideoClip:
    """Frames read from a file.

    Attributes:
        frames: ``(F, H, W, 3)`` float32 in 0..1.
        fps: average frame rate of the source divided by the stride.
        source_frame_count: frames the container declares (0 when it does not say).
        source_size: (width, height) of the source.
        path: the file read.
    """

    frames: torch.Tensor
    fps: float
    source_frame_count: int
    source_size: tuple[int, int]
    path: str


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoInputError(f"Video file not found: {path}")
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
    """Decode frames ``start_frame, start_frame + stride, ...`` of a video.

    Args:
        frame_count: frames to return; 0 returns all from ``start_frame`` (at most ``max_decoded_frames`` decoded).
        width, height: output size (0 keeps the source's); see :func:`motion_core.frame_resize.resize_frames`.

    Raises:
        VideoInputError: unreadable, empty or corrupt file, or fewer frames than asked (the message says how
            many there are). A truncated file keeps the frames decoded before the damage when they suffice.
        InvalidSettingError: negative start, stride below 1, negative count or size.
    """
    path = Path(path)
    if start_frame < 0 or frame_stride < 1 or frame_count < 0 or width < 0 or height < 0:
        raise InvalidSettingError(
            f"Bad frame selection (start {start_frame}, stride {frame_stride}, count {frame_count}, size {width}x{height}): "
            "start, count and size must be 0 or more and stride at least 1."
        )
    if path.suffix.lower() == ".webp" and path.is_file():
        return _read_animated_webp(path, start_frame, frame_stride, frame_count, width, height, resize_mode)
    container = _open(path)
    picked: list[np.ndarray] = []
    decoded = 0
    damage = None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        declared = int(stream.frames or 0)
        try:
            for frame in container.decode(stream):
                if decoded >= start_frame and (decoded - start_frame) % frame_stride == 0:
                    picked.append(frame.to_ndarray(format="rgb24"))
                    if frame_count and len(picked) == frame_count:
                        break
                decoded += 1
                if decoded >= max_decoded_frames + start_frame:
                    break
        except (av.FFmpegError, OSError, ValueError) as exc:
            damage = str(exc)
            logger.warning("%s is damaged after %d frames (%s); keeping the frames decoded so far.", path.name, decoded, exc)
    finally:
        container.close()
    if not picked:
        if damage is not None and decoded == 0:
            raise VideoInputError(f"{path.name} could not be decoded ({damage}). Re-export it as mp4 (H.264).")
        if decoded == 0:
            raise VideoInputError(f"{path.name} contains no frames.")
        raise VideoInputError(f"{path.name} has {decoded} frames, so start frame {start_frame} is past its end.")
    if frame_count and len(picked) < frame_count:
        raise VideoInputError(
            f"{path.name} has only {len(picked)} frames from frame {start_frame} with stride {frame_stride} "
            f"({decoded} decoded{', the file is damaged after that' if damage else ''}), but {frame_count} were asked for. "
            "Lower frame_count (0 takes all), the stride, or the start frame."
        )
    frames = torch.from_numpy(np.stack(picked)).float() / 255.0
    source_size = (frames.shape[2], frames.shape[1])
    if width or height:
        frames = resize_frames(frames, width or source_size[0], height or source_size[1], resize_mode)
    return VideoClip(frames.contiguous(), fps / frame_stride, declared, source_size, str(path))


def _read_animated_webp(path: Path, start: int, stride: int, count: int, width: int, height: int, mode: str) -> VideoClip:
    """FFmpeg cannot decode animated WebP (what ComfyUI's Save Animated WEBP writes); Pillow can."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            durations = []
            picked = []
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                durations.append(frame.info.get("duration", 0))
                if index >= start and (index - start) % stride == 0:
                    picked.append(np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0)
                    if count and len(picked) == count:
                        break
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoInputError(f"{path.name} cannot be read as an animated WebP ({exc}).") from None
    if not picked or (count and len(picked) < count):
        raise VideoInputError(
            f"{path.name} has only {len(picked)} frames from frame {start} with stride {stride}, but {count or 1} were asked for. "
            "Lower frame_count (0 takes all), the stride, or the start frame."
        )
    frames = torch.from_numpy(np.stack(picked))
    frames = frames[..., :3] * frames[..., 3:4]
    fps = 1000.0 / max(1, float(np.mean(durations))) if any(durations) else DEFAULT_FPS
    source_size = (frames.shape[2], frames.shape[1])
    if width or height:
        frames = resize_frames(frames, width or source_size[0], height or source_size[1], mode)
    return VideoClip(frames.contiguous(), fps / stride, len(durations), source_size, str(path))


def validate_fps(fps: float) -> float:
    """``fps`` as a float when it is a frame rate a video file can hold, else :class:`InvalidSettingError`."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise InvalidSettingError(f"Frame rate must be between {MIN_FPS} and {MAX_FPS:g} frames per second, got {fps}.")
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
    (nearest neighbour), handy for the 32x32 demo clips.
    """
    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    if container_format is None:
        raise InvalidSettingError(f"Unknown video file type {path.suffix!r}; use one of {', '.join(sorted(_CONTAINERS))}.")
    fps = validate_fps(fps)
    array = _to_uint8(frames, upscale)
    if container_format in ("gif", "webp"):
        from PIL import Image

        images = [Image.fromarray(a) for a in array]
        with atomic_output_file(path) as handle:  # Pillow leaves its own file open when interrupted
            images[0].save(handle, format=container_format.upper(), save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / fps)), loop=0, **({"lossless": True} if container_format == "webp" else {}))
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
