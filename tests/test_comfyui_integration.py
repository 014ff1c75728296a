"""Example workflows in a real ComfyUI: runs only when COMFYUI_DIR names a checkout whose server is running.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_URL=http://127.0.0.1:8188 python -m pytest tests/test_comfyui_integration.py
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_URL = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")


def _server_up() -> bool:
    try:
        with urllib.request.urlopen(COMFYUI_URL + "/system_stats", timeout=5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not COMFYUI_DIR or not _server_up(), reason="set COMFYUI_DIR and start that ComfyUI server")


def test_example_workflows_run_and_cancel_keeps_work():
    spec = importlib.util.spec_from_file_location("comfyui_check", Path(__file__).resolve().parent.parent / "scripts" / "comfyui_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check(COMFYUI_URL, Path(COMFYUI_DIR), steps=20) == []
