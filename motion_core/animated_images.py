"""Write animated GIF and WebP files that keep every frame.

Pillow's multi-frame writers merge a frame identical to the one before it into that frame's duration (GIF:
``GifImagePlugin._write_multiple_frames``; WebP: libwebp's ``WebPAnimEncoder`` skips an empty change
rectangle), so a still clip comes back as one frame and a pause is no longer a run of frames. Here each frame
is encoded on its own with Pillow and the frames are put together one by one: GIF through Pillow's documented
frame-level ``getheader`` / ``getdata``, WebP as the RIFF container of the WebP spec (``VP8X``, ``ANIM``, one
``ANMF`` per frame around Pillow's single-frame lossless bitstream).
"""

from __future__ import annotations

import io
import logging
import struct
from typing import BinaryIO

import numpy as np
from PIL import GifImagePlugin, Image

logger = logging.getLogger(__name__)

GIF_TICK_MS = 10  # GIF delays are whole centiseconds.
GIF_MIN_DELAY_TICKS = 2  # Browsers play shorter delays (0 or 1 cs) as 10 cs, so 50 fps is the fastest a GIF plays.
WEBP_TICK_MS = 1
_WEBP_MAX_DURATION_MS = (1 << 24) - 1
_WEBP_IMAGE_CHUNKS = (b"ALPH", b"VP8 ", b"VP8L")


def frame_durations(count: int, fps: float, tick_ms: int, min_ticks: int = 1) -> list[int]:
    """Per-frame durations in ms (multiples of ``tick_ms``) whose running sum stays on the ``fps`` clock.

    Rounding each frame alone would drift (8 fps in centiseconds: 12 cs each plays at 8.3 fps); rounding the
    frame start times instead alternates 12 and 13 cs and keeps the clip's length. No duration is below
    ``min_ticks`` ticks.
    """
    ticks_per_second = 1000 / tick_ms
    starts = [round(i * ticks_per_second / fps) for i in range(count + 1)]
    return [max(min_ticks, end - start) * tick_ms for start, end in zip(starts, starts[1:])]


def write_gif(frames: np.ndarray, handle: BinaryIO, fps: float, loop: int = 0) -> None:
    """Write ``frames`` ``(F, H, W, 3)`` uint8 to ``handle`` as a looping GIF, one GIF frame per frame (256 colours each)."""
    if fps * GIF_MIN_DELAY_TICKS * GIF_TICK_MS > 1000:
        logger.warning("A GIF cannot play faster than %d fps; %s plays at that rate instead of %g fps.",
                       1000 // (GIF_MIN_DELAY_TICKS * GIF_TICK_MS), getattr(handle, "name", "the GIF"), fps)
    durations = frame_durations(len(frames), fps, GIF_TICK_MS, GIF_MIN_DELAY_TICKS)
    # The same median-cut palette Pillow's GIF writer picks for an RGB frame, one palette per frame.
    images = [Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE) for frame in frames]
    header, _ = GifImagePlugin.getheader(images[0], info={"loop": loop})
    handle.write(b"".join(header))
    for image, duration in zip(images, durations):
        handle.write(b"".join(GifImagePlugin.getdata(image, duration=duration, include_color_table=True)))
    handle.write(b";")  # GIF trailer


def _riff_chunk(tag: bytes, payload: bytes) -> bytes:
    """A RIFF chunk: tag, little-endian size, payload padded to an even length."""
    return tag + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (tag, payload) chunks inside a ``RIFF....WEBP`` file."""
    chunks, offset = [], 12
    while offset + 8 <= len(data):
        tag, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks.append((tag, data[offset + 8 : offset + 8 + size]))
        offset += 8 + size + (size & 1)
    return chunks


def _webp_bitstream(frame: np.ndarray) -> bytes:
    """Pillow's lossless WebP encoding of one frame ``(H, W, 3)``: the image chunks an ``ANMF`` chunk holds."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="WEBP", lossless=True)
    chunks = _riff_chunks(buffer.getvalue())
    for tag, payload in chunks:
        if tag == b"ANMF":  # an encoder that wraps even one frame as an animation: take the frame's chunks
            return payload[16:]
    return b"".join(_riff_chunk(tag, payload) for tag, payload in chunks if tag in _WEBP_IMAGE_CHUNKS)


def _uint24(value: int) -> bytes:
    return struct.pack("<I", value)[:3]


def write_webp(frames: np.ndarray, handle: BinaryIO, fps: float, loop: int = 0) -> None:
    """Write ``frames`` ``(F, H, W, 3)`` uint8 to ``handle`` as a looping lossless animated WebP, one WebP frame per frame."""
    count, height, width = frames.shape[:3]
    durations = [min(d, _WEBP_MAX_DURATION_MS) for d in frame_durations(count, fps, WEBP_TICK_MS)]
    canvas = _uint24(width - 1) + _uint24(height - 1)
    animation_flag = 0x02
    body = _riff_chunk(b"VP8X", bytes([animation_flag, 0, 0, 0]) + canvas)
    body += _riff_chunk(b"ANIM", struct.pack("<IH", 0xFF000000, loop))  # opaque black background, loop count
    no_blend = 0x02  # opaque full-canvas frames replace the canvas; disposal bit 0 = keep
    for frame, duration in zip(frames, durations):
        header = _uint24(0) + _uint24(0) + canvas + _uint24(duration) + bytes([no_blend])
        body += _riff_chunk(b"ANMF", header + _webp_bitstream(frame))
    handle.write(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body)
