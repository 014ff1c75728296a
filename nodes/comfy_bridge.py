"""Everything the nodes need from ComfyUI, imported defensively so the pack imports (and its nodes run) without it.

Inside ComfyUI: folders come from ``folder_paths``, progress and Cancel from ``comfy.utils.ProgressBar`` and
``comfy.model_management``, live messages go out through ``server.PromptServer``. Outside (tests, scripts):
folders default to ``./motion_inversion_data/{models,input,output}`` or what :func:`use_standalone_folders`
sets, and progress is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..motion_core.atomic_io import atomic_output_path

logger = logging.getLogger(__name__)

try:  # pragma: no cover - exercised only inside ComfyUI
    import folder_paths  # type: ignore[import-not-found]
except ImportError:
    folder_paths = None
try:  # pragma: no cover
    import comfy.model_management as model_management  # type: ignore[import-not-found]
    import comfy.utils as comfy_utils  # type: ignore[import-not-found]
except ImportError:
    model_management = None
    comfy_utils = None
PromptServer = None
if folder_paths is not None:  # "server" is too common a module name to import outside ComfyUI
    try:  # pragma: no cover
        from server import PromptServer  # type: ignore[import-not-found,no-redef]
    except ImportError:
        PromptServer = None

PACK_DIR = Path(__file__).resolve().parent.parent
BUNDLED_MODELS_DIR = PACK_DIR / "assets"
BUNDLED_CLIPS_DIR = PACK_DIR / "assets" / "sample_clips"
BUNDLED_EMBEDDINGS_DIR = PACK_DIR / "assets" / "embeddings"
BUNDLED_SUFFIX = " (bundled demo)"
EMBEDDING_FOLDER = "motion_embeddings"
MOTION_MODULE_FOLDER = "animatediff_models"  # AnimateDiff-Evolved's folder name, shared with it
WEIGHT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".m4v", ".webp")

_standalone_root = Path(os.environ.get("MOTION_INVERSION_HOME", "motion_inversion_data"))
_standalone_root_chosen = "MOTION_INVERSION_HOME" in os.environ


def in_comfyui() -> bool:
    return folder_paths is not None


def use_standalone_folders(root: str | Path) -> None:
    """Outside ComfyUI: put models/, input/ and output/ under ``root`` (tests and scripts)."""
    global _standalone_root, _standalone_root_chosen
    _standalone_root = Path(root)
    _standalone_root_chosen = True


def register_folders() -> None:
    """Register ``models/motion_embeddings`` with ComfyUI (so ``extra_model_paths.yaml`` entries work too), and
    AnimateDiff-Evolved's ``models/animatediff_models`` when that pack has not registered it."""
    if folder_paths is None:
        return
    default = os.path.join(folder_paths.models_dir, EMBEDDING_FOLDER)
    if EMBEDDING_FOLDER in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(EMBEDDING_FOLDER, default, is_default=True)
    else:
        folder_paths.folder_names_and_paths[EMBEDDING_FOLDER] = ([default], {".safetensors"})
    if MOTION_MODULE_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[MOTION_MODULE_FOLDER] = (
            [os.path.join(folder_paths.models_dir, MOTION_MODULE_FOLDER)], set(WEIGHT_EXTENSIONS))


def list_model_files(kind: str) -> dict[str, Path]:
    """Choice name -> file for a ComfyUI model folder kind (``checkpoints``, ``animatediff_models``); outside ComfyUI,
    the weight files in ``models/<kind>`` of the standalone folders."""
    if folder_paths is not None:
        found: dict[str, Path] = {}
        for name in folder_paths.get_filename_list(kind):
            path = folder_paths.get_full_path(kind, name)
            if path:
                found[name] = Path(path)
        return found
    root = _standalone_root / "models" / kind
    files = sorted(root.rglob("*")) if root.is_dir() else []
    return {p.relative_to(root).as_posix(): p for p in files if p.suffix in WEIGHT_EXTENSIONS}


def sd1_tokenizer_dir() -> Path:
    """The CLIP tokenizer of SD1.x: ComfyUI's own ``comfy/sd1_tokenizer`` (every ComfyUI has it); outside ComfyUI,
    ``models/sd1_tokenizer`` of the standalone folders."""
    if folder_paths is not None:
        try:
            import comfy.sd1_clip  # type: ignore[import-not-found]

            return Path(comfy.sd1_clip.__file__).resolve().parent / "sd1_tokenizer"
        except ImportError:
            return Path(folder_paths.base_path) / "comfy" / "sd1_tokenizer"
    return _standalone_root / "models" / "sd1_tokenizer"


def _model_roots(kind: str) -> list[Path]:
    if folder_paths is not None:
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    return [_standalone_root / "models" / kind]


def embedding_save_dir() -> Path:
    return _model_roots(EMBEDDING_FOLDER)[0]


def input_dir() -> Path:
    return Path(folder_paths.get_input_directory()) if folder_paths is not None else _standalone_root / "input"


def output_dir() -> Path:
    return Path(folder_paths.get_output_directory()) if folder_paths is not None else _standalone_root / "output"


def _bundled_models() -> dict[str, Path]:
    if not BUNDLED_MODELS_DIR.is_dir():
        return {}
    return {p.name + BUNDLED_SUFFIX: p for p in sorted(BUNDLED_MODELS_DIR.iterdir()) if (p / "model_index.json").is_file()}


def list_video_models() -> dict[str, Path]:
    """Choice name -> folder: diffusers folders in ``models/diffusers`` plus the bundled demo model."""
    found: dict[str, Path] = {}
    for root in _model_roots("diffusers"):
        if root.is_dir():
            for entry in sorted(root.iterdir()):
                if (entry / "model_index.json").is_file():
                    found.setdefault(entry.name, entry)
    found.update(_bundled_models())
    return found


def list_embeddings() -> dict[str, Path]:
    """Choice name (relative path) -> file: ``.safetensors`` under ``models/motion_embeddings`` plus bundled demos."""
    found: dict[str, Path] = {}
    for root in _model_roots(EMBEDDING_FOLDER):
        if root.is_dir():
            for path in sorted(root.rglob("*.safetensors")):
                if path.is_file():  # a folder named "x.safetensors" is not an embedding
                    found.setdefault(path.relative_to(root).as_posix(), path)
    if BUNDLED_EMBEDDINGS_DIR.is_dir():
        for path in sorted(BUNDLED_EMBEDDINGS_DIR.glob("*.safetensors")):
            if path.is_file():
                found[path.name + BUNDLED_SUFFIX] = path
    return found


def _bundled_clips() -> list[Path]:
    if not BUNDLED_CLIPS_DIR.is_dir():
        return []
    return [clip for clip in sorted(BUNDLED_CLIPS_DIR.iterdir()) if clip.suffix.lower() in VIDEO_EXTENSIONS and clip.is_file()]


# Input folders the sample clips were offered to in this process: the node list is built on every
# INPUT_TYPES / VALIDATE_INPUTS / IS_CHANGED call, and a clip the user deleted must not come back each time.
_clips_offered_to: set[Path] = set()


def _copy_sample_clips_once(root: Path) -> None:
    """Copy the bundled sample clips into ``root`` once per process, never over an existing file.

    ComfyUI's video widget previews files of the input folder only, so the samples live there like an
    uploaded video.
    """
    key = root.resolve()
    if key in _clips_offered_to:
        return
    _clips_offered_to.add(key)
    for clip in _bundled_clips():
        target = root / clip.name
        if target.exists():
            continue
        try:
            root.mkdir(parents=True, exist_ok=True)
            with atomic_output_path(target) as tmp:
                shutil.copyfile(clip, tmp)
            logger.info("Copied the sample clip %s into %s", clip.name, root)
        except OSError as exc:
            logger.warning("Could not copy the sample clip %s into %s (%s); it is listed from the pack.", clip.name, root, exc)


def _sample_clips_in(root: Path) -> set[str]:
    """Names of the bundled clips that are in ``root`` as a copy (a user's file of the same name does not count)."""
    present: set[str] = set()
    for clip in _bundled_clips():
        target = root / clip.name
        if target.is_file() and target.stat().st_size == clip.stat().st_size:
            present.add(clip.name)
    return present


def list_videos() -> dict[str, Path]:
    """Choice name -> file: videos in the input folder (the bundled sample clips are copied there).

    A sample clip that cannot be copied, or whose name is taken by another file, is listed as
    ``"<name> (bundled demo)"`` and read from the pack.
    """
    root = input_dir()
    # Outside ComfyUI, write nothing unless folders were chosen (importing the pack must not create folders).
    if in_comfyui() or _standalone_root_chosen:
        _copy_sample_clips_once(root)
    copied = _sample_clips_in(root)
    found: dict[str, Path] = {}
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                found[path.name] = path
    for path in _bundled_clips():
        if path.name not in copied:
            found[path.name + BUNDLED_SUFFIX] = path
    return found


def torch_device() -> torch.device:
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def free_comfy_memory(needed_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload as many of its own models as it takes to free ``needed_bytes`` on ``device``.

    ComfyUI does not manage this pack's model, so it is told how much room a training run needs instead of
    unloading everything (other models of the workflow stay loaded when there is room for them).
    """
    if model_management is not None:
        model_management.free_memory(needed_bytes, device)
        model_management.soft_empty_cache()


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


@contextlib.contextmanager
def autograd_enabled() -> Iterator[None]:
    """ComfyUI runs nodes under ``torch.inference_mode()``; training and model loading must leave it."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


class Progress:
    """A progress bar that also checks for Cancel; logs when ComfyUI is absent."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        self.total = total
        self.node_id = node_id
        self._bar = comfy_utils.ProgressBar(total, node_id=node_id) if comfy_utils is not None else None

    def update(self, value: int, preview: Any = None) -> None:
        if self._bar is not None:
            self._bar.update_absolute(value, self.total, preview)
        elif value == self.total or value % max(1, self.total // 10) == 0:
            logger.info("progress %d/%d", value, self.total)
        throw_if_interrupted()


def send_event(event: str, data: dict[str, Any]) -> None:
    """Send a custom message to the browser that queued the running prompt (ignored outside ComfyUI).

    Addressed like core's progress messages: to the prompt's ``client_id`` (``None``, for a prompt queued
    without one, reaches every browser, as core's progress does).
    """
    server = getattr(PromptServer, "instance", None) if PromptServer is not None else None
    if server is not None:
        server.send_sync(event, data, getattr(server, "client_id", None))
