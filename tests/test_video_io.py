"""Video input and output on real files written and decoded by PyAV."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from motion_core import frame_resize, video_io
from motion_core.errors import InvalidSettingError, VideoInputError
from motion_core.frame_resize import MAX_FRAME_SIDE, check_frame_budget, resize_frames, snap_size
from motion_core.video_io import read_video_frames, validate_fps, write_side_by_side, write_video

REPO = Path(__file__).resolve().parent.parent


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


@pytest.fixture
def decoded_frames(monkeypatch) -> dict[str, int]:
    """Counts the frames PyAV converts to arrays (``["n"]``), i.e. the frames the reader really decoded."""
    calls = {"n": 0}
    original = av.VideoFrame.to_ndarray

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    return calls


def test_lazy_decoding_stops_early(tmp_path, decoded_frames):
    path = write_clip(tmp_path / "long.mkv", 300, size=16)
    read_video_frames(path, frame_count=4)
    assert decoded_frames["n"] == 4


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


# --- Rotation metadata: frames come out as a player shows them ------------------------------------------------

RED, GREEN = (255, 0, 0), (0, 255, 0)


def marked_image(width: int = 48, height: int = 32) -> np.ndarray:
    """Black, with a red square in the top-left corner and a green one in the top-right corner."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:8, :8] = RED
    image[:8, -8:] = GREEN
    return image


def write_rotated(
    path: Path, degrees: float, hflip: bool = False, vflip: bool = False, codec: str = "ffv1", frames: int = 3
) -> Path:
    """A clip of :func:`marked_image` frames whose container says: show it rotated by ``degrees`` counter-clockwise."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height = 48, 32
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        stream.set_display_rotation(degrees, hflip, vflip)  # the display matrix a phone writes (tkhd in mp4)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(marked_image(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def display_matrix(path: Path) -> np.ndarray | None:
    """The display matrix FFmpeg reads from the file (attached to each decoded frame), or None."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        for data in frame.side_data:
            if data.type.name == "DISPLAYMATRIX":
                return np.frombuffer(bytes(data), "<i4")
    return None


def as_player_shows(path: Path) -> np.ndarray:
    """The first frame turned by FFmpeg's own filters, chosen by ffplay's autorotate rule (fftools/ffplay.c)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        matrix = display_matrix(path)
        theta = -round(frame.rotation)
        theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
        if abs(theta - 90) < 1:
            filters = [("transpose", "cclock_flip" if matrix[3] > 0 else "clock")]
        elif abs(theta - 180) < 1:
            filters = [(name, None) for name, flip in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if flip]
        elif abs(theta - 270) < 1:
            filters = [("transpose", "clock_flip" if matrix[3] < 0 else "cclock")]
        else:
            filters = [("vflip", None)] if matrix is not None and matrix[4] < 0 else []
        graph = av.filter.Graph()
        node = graph.add_buffer(template=stream)
        for name, argument in filters:
            following = graph.add(name, argument) if argument else graph.add(name)
            node.link_to(following)
            node = following
        sink = graph.add("buffersink")
        node.link_to(sink)
        graph.configure()
        graph.push(frame)
        return graph.pull().to_ndarray(format="rgb24")


def corner_colours(frame: torch.Tensor) -> dict[str, str]:
    """Which marker ("red"/"green"/"-") sits in each corner of a ``(H, W, 3)`` frame."""
    h, w = frame.shape[:2]
    names = {}
    points = {"top-left": (2, 2), "top-right": (2, w - 3), "bottom-left": (h - 3, 2), "bottom-right": (h - 3, w - 3)}
    for corner, (y, x) in points.items():
        r, g = float(frame[y, x, 0]), float(frame[y, x, 1])
        names[corner] = "red" if r > 0.5 > g else "green" if g > 0.5 > r else "-"
    return names


@pytest.mark.parametrize("degrees, hflip, vflip", [
    (90, False, False), (-90, False, False), (180, False, False), (270, False, False),
    (0, True, False), (0, False, True), (90, True, False), (-90, True, False),
])
def test_rotation_metadata_gives_the_frames_a_player_shows(tmp_path, degrees, hflip, vflip):
    path = write_rotated(tmp_path / "rotated.mkv", degrees, hflip, vflip)
    assert display_matrix(path) is not None  # the file really carries the rotation
    clip = read_video_frames(path)
    expected = as_player_shows(path)
    assert clip.source_size == (expected.shape[1], expected.shape[0])
    assert all(np.array_equal((frame.numpy() * 255 + 0.5).astype(np.uint8), expected) for frame in clip.frames)


@pytest.mark.parametrize("degrees, corners", [
    (-90, {"top-left": "-", "top-right": "red", "bottom-left": "-", "bottom-right": "green"}),  # a phone held upright
    (90, {"top-left": "green", "top-right": "-", "bottom-left": "red", "bottom-right": "-"}),
    (180, {"top-left": "-", "top-right": "-", "bottom-left": "green", "bottom-right": "red"}),
])
def test_portrait_phone_clip_is_read_upright_at_the_displayed_size(tmp_path, degrees, corners):
    path = write_rotated(tmp_path / "phone.mp4", degrees, codec="libx264")
    with av.open(str(path)) as container:
        assert (next(container.decode(video=0)).rotation - degrees) % 360 == 0  # the file carries the rotation
    clip = read_video_frames(path)
    portrait = degrees % 180 != 0
    assert clip.source_size == ((32, 48) if portrait else (48, 32))
    assert clip.frames.shape[1:3] == ((48, 32) if portrait else (32, 48))
    assert corner_colours(clip.frames[0]) == corners
    width, height = (16, 24) if portrait else (24, 16)
    resized = read_video_frames(path, width=width, height=height, resize_mode="stretch").frames
    assert resized.shape == (3, height, width, 3) and corner_colours(resized[0]) == corners


# --- Frames are resized as they are decoded --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
@pytest.mark.parametrize("size", [(16, 16), (20, 12), (64, 40), (48, 0)])
def test_per_frame_resize_equals_resizing_the_whole_clip(tmp_path, mode, size):
    path = write_clip(tmp_path / "clip.mkv", 6, size=40)
    whole = read_video_frames(path).frames
    width, height = size
    expected = resize_frames(whole, width or 40, height or 40, mode)
    per_frame = read_video_frames(path, width=width, height=height, resize_mode=mode)
    assert per_frame.source_size == (40, 40)
    assert per_frame.frames.shape == expected.shape
    assert torch.allclose(per_frame.frames, expected, atol=1e-6)


_PEAK_MEMORY_CHILD = """
import json, re, sys
from pathlib import Path
from motion_core.video_io import read_video_frames

def status_kib(field):
    return int(re.search(field + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))

path = sys.argv[1]
read_video_frames(path, frame_count=2, width=8, height=8)  # first-use allocations: decoder, resize kernels
before = status_kib("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # the peak counter starts again from the current size
clip = read_video_frames(path, width=8, height=8)
print(json.dumps({"grown_kib": status_kib("VmHWM") - before, "shape": list(clip.frames.shape),
                  "first": [round(float(f[0, 0, 0]) * 255) for f in clip.frames[:3]]}))
"""


def test_decoding_to_a_small_size_never_holds_the_clip_at_full_size(tmp_path):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's resettable peak-memory counter (/proc/self/clear_refs)")
    frames, side = 128, 384
    path = tmp_path / "large.nut"
    with av.open(str(path), "w") as container:  # uncompressed, so decoding costs nothing but memory
        stream = container.add_stream("rawvideo", rate=8)
        stream.width = stream.height = side
        stream.pix_fmt = "rgb24"
        image = np.zeros((side, side, 3), np.uint8)
        for i in range(frames):
            image[:] = i
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
    # A fresh process, so that the peak is this read's alone. A fixed mmap threshold makes glibc hand freed
    # frame buffers back at once; otherwise reused-but-not-returned heap can look like frames kept.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _PEAK_MEMORY_CHILD, str(path)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["shape"] == [frames, 8, 8, 3] and result["first"] == [0, 1, 2]
    kept_at_full_size_kib = frames * side * side * 3 // 1024  # the clip at the source size, even as uint8: 54 MiB
    assert result["grown_kib"] < kept_at_full_size_kib / 4, (
        f"peak memory grew by {result['grown_kib']} KiB while decoding; the full-size clip is {kept_at_full_size_kib} KiB"
    )


# --- Sizes are bounded before any work ------------------------------------------------------------------------

def test_absurd_sizes_are_refused_before_decoding(lossless, decoded_frames):
    with pytest.raises(InvalidSettingError, match=rf"100000x0 .*at most {MAX_FRAME_SIDE} pixels"):
        read_video_frames(lossless, width=100000)
    with pytest.raises(InvalidSettingError, match=rf"100000x100000 .*at most {MAX_FRAME_SIDE}"):
        read_video_frames(lossless, frame_count=4, width=100000, height=100000)
    with pytest.raises(InvalidSettingError, match=r"1000000 frames of 1024x1024 need 11718.75 GiB .*limit"):
        read_video_frames(lossless, frame_count=1_000_000, width=1024, height=1024)
    assert decoded_frames["n"] == 0  # nothing was decoded
    with pytest.raises(InvalidSettingError, match=rf"at most {MAX_FRAME_SIDE}"):
        resize_frames(torch.zeros(1, 4, 4, 3), 100000, 16)
    with pytest.raises(InvalidSettingError, match="GiB"):
        resize_frames(torch.zeros(1, 4, 4, 3).expand(10**6, 4, 4, 3), 1024, 1024)
    check_frame_budget(24, MAX_FRAME_SIDE, 16)  # the limit itself is allowed


def test_a_clip_of_unknown_length_stops_at_the_frame_that_would_not_fit(lossless, monkeypatch):
    frame_bytes = 32 * 32 * 3 * 4
    # A machine with room for exactly 5 such frames (the limit is FRAME_MEMORY_FRACTION of what is available).
    monkeypatch.setattr(frame_resize, "available_bytes", lambda device: 5 * frame_bytes / frame_resize.FRAME_MEMORY_FRACTION)
    assert read_video_frames(lossless, frame_count=5, width=32, height=32).frames.shape[0] == 5
    with pytest.raises(InvalidSettingError, match="6 frames of 32x32"):
        read_video_frames(lossless, width=32, height=32)  # frame_count 0: all frames, counted as they come
    with pytest.raises(InvalidSettingError, match="6 frames of 32x32"):
        read_video_frames(lossless)  # no size given: the source size is counted the same way
    monkeypatch.setenv("MOTION_INVERSION_SKIP_MEMORY_CHECK", "1")
    assert read_video_frames(lossless).frames.shape[0] == 12


# --- GIF and WebP keep every frame ----------------------------------------------------------------------------

def read_with_pillow(path: Path) -> tuple[list[np.ndarray], list[int]]:
    frames, durations = [], []
    with Image.open(path) as image:
        for frame in ImageSequence.Iterator(image):
            frame.load()
            durations.append(frame.info["duration"])
            frames.append(np.asarray(frame.convert("RGB")))
    return frames, durations


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
@pytest.mark.parametrize("pattern", [[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [0] * 6])
def test_gif_and_webp_keep_repeated_and_still_frames(tmp_path, suffix, pattern):
    clip = torch.stack([torch.from_numpy(frame_image(i)).float() / 255 for i in pattern])
    path = write_video(clip, tmp_path / f"pauses{suffix}", fps=8)
    frames, durations = read_with_pillow(path)
    expected = (clip.numpy() * 255 + 0.5).astype(np.uint8)
    assert len(frames) == len(pattern)
    assert all(np.array_equal(got, want) for got, want in zip(frames, expected))
    assert sum(durations) == pytest.approx(1000 * len(pattern) / 8, abs=10)  # each frame keeps its 1/8 s
    ours = read_video_frames(path)
    assert ours.frames.shape[0] == len(pattern)
    assert torch.allclose(ours.frames, torch.from_numpy(expected).float() / 255, atol=1 / 255)


def test_webp_frame_rate_is_read_back(tmp_path):
    path = write_video(torch.rand(5, 16, 16, 3), tmp_path / "slow.webp", fps=4)
    assert read_video_frames(path).fps == pytest.approx(4)
    assert read_video_frames(path, frame_stride=2, frame_count=2).source_frame_count == 5


# --- Bad frame rates and paths that are not video files -------------------------------------------------------

@pytest.mark.parametrize("fps", [math.inf, -math.inf, math.nan, 0, 0.001, -8, 1e9, True, "8", None])
def test_bad_frame_rates_are_refused_before_any_work(tmp_path, fps):
    target = tmp_path / "out.mp4"
    with pytest.raises(InvalidSettingError, match="Frame rate must be a number from 0.1 to 240"):
        write_video(torch.rand(2, 8, 8, 3), target, fps=fps)
    assert not list(tmp_path.iterdir())  # no file, no temporary left behind


def test_any_real_frame_rate_in_range_is_accepted():
    assert validate_fps(np.float32(12.5)) == 12.5
    assert validate_fps(Fraction(24000, 1001)) == pytest.approx(23.976, abs=1e-3)
    assert validate_fps(240) == 240.0 and validate_fps(0.1) == 0.1


def _read_within(path: Path, seconds: float = 20.0) -> BaseException | None:
    """Read ``path`` on a thread; the error it raised, or a failure if it blocks (a FIFO opened for reading does)."""
    outcome: dict[str, BaseException | None] = {}

    def read() -> None:
        try:
            read_video_frames(path)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if path.is_fifo():  # let the blocked open go: a writer appearing unblocks it
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"Reading {path} blocked for {seconds} s")
    return outcome["error"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_directory_or_fifo_is_named_for_what_it_is(tmp_path):
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    error = _read_within(folder)
    assert isinstance(error, VideoInputError) and "is a directory; choose a video file" in str(error)
    webp_folder = tmp_path / "clip.webp"
    webp_folder.mkdir()
    assert "is a directory" in str(_read_within(webp_folder))
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    error = _read_within(fifo)
    assert isinstance(error, VideoInputError) and "pipe.mp4 is not a regular file (a FIFO); choose a video file" in str(error)
    assert "not found" in str(_read_within(tmp_path / "missing.mp4"))
