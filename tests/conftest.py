"""Shared fixtures: tiny random diffusers models saved as real folders, a synthetic reference clip, the pack."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from motion_core.model_loading import VideoModel, clear_model_cache, load_video_model  # noqa: E402
from motion_core.testing.tiny_models import save_tiny_model  # noqa: E402

PACK_NAME = "motion_inversion_pack"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-t2v", seed=0)


@pytest.fixture(scope="session")
def tiny_sample_model_dir(tmp_path_factory) -> Path:
    """A tiny model whose scheduler predicts the clean sample (like the bundled demo model)."""
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-t2v-x0", seed=3, prediction_type="sample")


@pytest.fixture
def tiny_model(tiny_model_dir) -> VideoModel:
    clear_model_cache()
    return load_video_model(tiny_model_dir, "fp32", "sdpa", "cpu", use_cache=False)


def moving_square_clip(frames: int = 6, size: int = 32, step: int = 3) -> torch.Tensor:
    """A white square moving right then bouncing left: ``(frames, size, size, 3)`` in 0..1."""
    clip = torch.zeros(frames, size, size, 3)
    x = 2
    direction = 1
    for i in range(frames):
        clip[i, 12:20, x : x + 8] = 1.0
        if not 0 <= x + direction * step <= size - 8:
            direction = -direction
        x += direction * step
    return clip


@pytest.fixture
def reference_clip() -> torch.Tensor:
    return moving_square_clip()


@pytest.fixture(scope="session")
def pack():
    """The repository imported as a ComfyUI custom node package (relative imports and all)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def comfy_python(comfyui_dir: str) -> str:
    """The Python that runs ComfyUI's code in the opt-in integration tests: COMFYUI_PYTHON, else the checkout's
    .venv, else this one."""
    configured = os.environ.get("COMFYUI_PYTHON")
    if configured:
        return configured
    venv = Path(comfyui_dir) / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable
