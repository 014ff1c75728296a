"""MI_LoadVideoFrames: a video file -> IMAGE frames for training (decoded with PyAV)."""

from __future__ import annotations

from ..motion_core.defaults import parameter_default
from ..motion_core.errors import VideoInputError
from ..motion_core.frame_resize import RESIZE_MODES
from ..motion_core.video_io import read_video_frames
from . import comfy_bridge
from .handles import CATEGORY


def _default(name: str):
    return parameter_default(read_video_frames, name)


class LoadVideoFrames:
    DESCRIPTION = (
        "Loads frames of a video from ComfyUI's input folder (or a bundled sample clip) as an IMAGE batch, "
        "resized to the training size. Use it as the reference clip of Train Motion Embedding."
    )
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("frames", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Frames [F,H,W,3] in 0..1.", "Average frame rate of the source.", "Number of frames returned.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = list(comfy_bridge.list_videos()) or ["(no video in the input folder)"]
        return {
            "required": {
                "video": (names, {"video_upload": True, "tooltip": "A video file in ComfyUI's input folder; upload one with the button."}),
                "start_frame": ("INT", {"default": _default("start_frame"), "min": 0, "max": 1_000_000, "tooltip": "First frame to take (0 = the first frame of the file)."}),
                "frame_stride": ("INT", {"default": _default("frame_stride"), "min": 1, "max": 1000, "tooltip": "Take every n-th frame (2 halves the frame rate and doubles the motion per frame)."}),
                "frame_count": ("INT", {"default": _default("frame_count"), "min": 0, "max": 1024, "tooltip": "How many frames to take; 0 takes all (Train Motion Embedding then takes the frames it trains on). Asking for more than the file has is an error that says how many there are."}),
                "width": ("INT", {"default": _default("width"), "min": 0, "max": 4096, "step": 8, "tooltip": "Output width in pixels; 0 keeps the source width (Train Motion Embedding resizes to the model's size anyway)."}),
                "height": ("INT", {"default": _default("height"), "min": 0, "max": 4096, "step": 8, "tooltip": "Output height in pixels; 0 keeps the source height."}),
                "resize_mode": (list(RESIZE_MODES), {"default": _default("resize_mode"), "tooltip": "crop: fill the frame and cut the overhang; pad: fit inside and add black bars; stretch: ignore the aspect ratio."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video: str | None):
        """The video may be a bundled clip not in the combo list. ComfyUI skips its own checks (combo, min, max)
        for every input this method takes, so it takes only the one it checks."""
        if video is not None and video not in comfy_bridge.list_videos():  # None: fed by a link
            return f"Video {video!r} is not in the input folder."
        return True

    @classmethod
    def IS_CHANGED(cls, video: str, **_):
        path = comfy_bridge.list_videos().get(video)
        return path.stat().st_mtime_ns if path is not None and path.exists() else float("nan")

    def load(self, video: str, start_frame: int, frame_stride: int, frame_count: int, width: int, height: int, resize_mode: str):
        path = comfy_bridge.list_videos().get(video)
        if path is None:
            raise VideoInputError(f"Video {video!r} was not found in the input folder.")
        clip = read_video_frames(path, start_frame, frame_stride, frame_count, width, height, resize_mode)
        return (clip.frames, float(clip.fps), int(clip.frames.shape[0]))
