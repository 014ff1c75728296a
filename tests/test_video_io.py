"""Video input and output on real files written and decoded by PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from motion_core import video_io
from motion_core.errors import InvalidSettingError, VideoInputError
from motion_core.frame_resize import resize_frames, snap_size
from motion_core.video_io import read_video_frames, write_side_by_side, write_video


def frame_image(index: int, size: int = 32) -> np.ndarray:
    """Frame ``index``: brightness encodes the index, a white 6x6 square sits at x = 2 + 2*index."""
    image = np.full((size, size, 3), (10 * index) % 250, np.uint8)
    x = 2 + (2 * index) % (size - 10)
    image[10:16, x : x + 6] = 255
    return image


def write_clip(path: Path, frames: int, codec: str = "ffv1", pix_fmt: str = "bgr0", fmt: str = "rgb24", pts=None, size: int = 32) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        for i in range(frames):
            image = frame_image(i, size)
            if fmt == "gray":
                image = image[..., 0]
            elif fmt == "rgba":
                image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
            elif fmt == "gray16le":
                image = image[..., 0].astype(np.uint16) * 257
            frame = av.VideoFrame.from_ndarray(image, format=fmt)
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        if frames == 0:
            container.start_encoding()  # header only: a valid container with no frames
        for packet in stream.encode():
            container.mux(packet)
    return path


def square_x(frame: torch.Tensor) -> float:
    mask = frame.mean(-1) > 0.95
    return float(torch.nonzero(mask)[:, 1].float().mean())


@pytest.fixture
def lossless(tmp_path) -> Path:
    return write_clip(tmp_path / "lossless.mkv", 12)


def test_start_stride_count_pick_the_right_frames(lossless):
    clip = read_video_frames(lossless, start_frame=2, frame_stride=3, frame_count=3)
    assert clip.frames.shape == (3, 32, 32, 3) and clip.frames.dtype == torch.float32
    brightness = [round(float(f[0, 0, 0]) * 255) for f in clip.frames]
    assert brightness == [20, 50, 80]  # frames 2, 5, 8
    assert clip.fps == pytest.approx(8 / 3)
    assert square_x(clip.frames[1]) > square_x(clip.frames[0])


def test_fewer_frames_than_asked_says_how_many(lossless):
    with pytest.raises(VideoInputError, match=r"only 4 frames from frame 4 with stride 2.*8 were asked"):
        read_video_frames(lossless, start_frame=4, frame_stride=2, frame_count=8)
    with pytest.raises(VideoInputError, match="past its end"):
        read_video_frames(lossless, start_frame=50)


def test_lazy_decoding_stops_early(tmp_path, monkeypatch):
    path = write_clip(tmp_path / "long.mkv", 300, size=16)
    calls = {"n": 0}
    original = av.VideoFrame.to_ndarray

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    read_video_frames(path, frame_count=4)
    assert calls["n"] == 4


@pytest.mark.parametrize("codec, pix_fmt, fmt, suffix", [
    ("ffv1", "gray", "gray", ".mkv"), ("png", "rgba", "rgba", ".mov"), ("ffv1", "gray16le", "gray16le", ".mkv"),
    ("libx264", "yuv444p", "rgb24", ".mp4"),
])
def test_grey_alpha_16bit_and_444_sources_decode_to_rgb(tmp_path, codec, pix_fmt, fmt, suffix):
    path = write_clip(tmp_path / f"clip{suffix}", 5, codec=codec, pix_fmt=pix_fmt, fmt=fmt)
    clip = read_video_frames(path)
    assert clip.frames.shape == (5, 32, 32, 3)
    assert abs(float(clip.frames[3, 0, 0, 0]) - 30 / 255) < 0.03
    assert square_x(clip.frames[4]) > square_x(clip.frames[0])


def test_variable_frame_rate_is_read_frame_by_frame(tmp_path):
    path = write_clip(tmp_path / "vfr.mkv", 6, pts=[0, 40, 200, 230, 600, 610])
    clip = read_video_frames(path)
    assert clip.frames.shape[0] == 6
    assert [round(float(f[0, 0, 0]) * 255) for f in clip.frames] == [0, 10, 20, 30, 40, 50]


def test_not_a_video_truncated_empty_and_missing(tmp_path, lossless):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VideoInputError, match="cannot be opened as a video"):
        read_video_frames(text)
    with pytest.raises(VideoInputError, match="not found"):
        read_video_frames(tmp_path / "missing.mp4")
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(lossless.read_bytes()[: lossless.stat().st_size // 2])
    try:
        clip = read_video_frames(truncated)
        assert 0 < clip.frames.shape[0] < 12  # keeps what decoded before the damage
    except VideoInputError as err:
        assert "truncated.mkv" in str(err)
    with pytest.raises(VideoInputError, match=r"truncated.mkv.*(only|could not|no frames)"):
        read_video_frames(truncated, frame_count=12)
    empty = write_clip(tmp_path / "empty.mkv", 0)
    with pytest.raises(VideoInputError, match="(no frames|cannot be opened|no video)"):
        read_video_frames(empty)


def test_bad_selection_settings(lossless):
    for kwargs in ({"start_frame": -1}, {"frame_stride": 0}, {"frame_count": -2}):
        with pytest.raises(InvalidSettingError):
            read_video_frames(lossless, **kwargs)


def test_resize_modes():
    frames = torch.zeros(2, 20, 40, 3)
    frames[:, :, 18:22] = 1.0  # a bright vertical bar in the centre
    crop = resize_frames(frames, 20, 20, "crop")
    pad = resize_frames(frames, 20, 20, "pad")
    stretch = resize_frames(frames, 20, 20, "stretch")
    assert crop.shape == pad.shape == stretch.shape == (2, 20, 20, 3)
    assert crop[0, :, 8:12].mean() > 0.9  # crop keeps the centre at full scale
    assert pad[0, :5].max() == 0 and pad[0, -5:].max() == 0  # pad: black bars above and below
    assert pad[0, 10, 9:11].mean() > 0.5
    assert stretch[0, :, 9:11].mean() > 0.5 and stretch[0, 0].sum() > 0  # stretch: whole content, no bars
    grey = resize_frames(torch.ones(1, 8, 8, 1), 4, 4)
    assert grey.shape == (1, 4, 4, 3)
    with pytest.raises(InvalidSettingError):
        resize_frames(torch.ones(1, 8, 8, 2), 4, 4)
    assert snap_size(36, 30, 8) == (40, 32) and snap_size(3, 3, 8) == (8, 8)


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webp", ".webm"])
def test_write_video_round_trip(tmp_path, suffix):
    frames = torch.stack([torch.from_numpy(frame_image(i)).float() / 255 for i in range(6)])
    path = write_video(frames, tmp_path / f"out{suffix}", fps=8, upscale=2)
    clip = read_video_frames(path)
    assert clip.frames.shape == (6, 64, 64, 3)
    assert square_x(clip.frames[5]) > square_x(clip.frames[0]) + 10
    assert not list(tmp_path.glob("*.partial"))


def test_write_side_by_side_and_atomic_failure(tmp_path, monkeypatch):
    a, b = torch.rand(4, 16, 16, 3), torch.rand(6, 32, 32, 3)
    path = write_side_by_side([a, b], tmp_path / "pair.gif", fps=4)
    assert read_video_frames(path).frames.shape == (4, 16, 32, 3)
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_io.av.VideoFrame, "from_ndarray", boom)
    with pytest.raises(KeyboardInterrupt):
        write_video(a, existing, fps=4)
    assert existing.read_bytes() == b"old" and not list(tmp_path.glob("*.partial"))
