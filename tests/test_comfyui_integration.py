"""Example workflows in a real ComfyUI: runs only when COMFYUI_DIR names a checkout whose server is running.
(The first tests, on how the checks read a workflow file, run everywhere.)

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_URL=http://127.0.0.1:8188 python -m pytest -c tests/pytest.ini tests/test_comfyui_integration.py

``bash scripts/setup_real_comfyui.sh`` makes such a checkout (never in CI). The frontend test also needs the
``playwright`` package and a system Chromium (CHROMIUM, default /usr/bin/chromium).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
COMFYUI_URL = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _server_up() -> bool:
    try:
        with urllib.request.urlopen(COMFYUI_URL + "/system_stats", timeout=5):
            return True
    except OSError:
        return False


needs_server = pytest.mark.skipif(not COMFYUI_DIR or not _server_up(), reason="set COMFYUI_DIR and start that ComfyUI server")


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_info(*widgets: tuple[str, list | str, dict]) -> dict:
    """An ``/object_info`` entry for a node with these widget inputs (name, kind, options), in this order."""
    return {"input": {"required": {name: [kind, options] for name, kind, options in widgets}},
            "input_order": {"required": [name for name, _, _ in widgets]}, "output_node": False}


def _saved(values: list) -> dict:
    """A workflow file with one node of type ``N`` that saved these widget values."""
    return {"nodes": [{"id": 1, "type": "N", "inputs": [], "widgets_values": values}], "links": []}


RELEASED_N = {"N": [["steps", "INT"], ["checkpointing", "BOOLEAN"], ["prefix", "STRING"]]}
STEPS, PREFIX = ("steps", "INT", {"default": 400}), ("prefix", "STRING", {"default": "out"})


def test_released_file_with_a_widget_inserted_since_does_not_mean_the_same():
    check = _script("frontend_check")
    inserted = {"N": _node_info(STEPS, ("lr", "FLOAT", {"default": 0.02}), ("checkpointing", "BOOLEAN", {}), PREFIX)}
    file = _saved([200, False, "demo"])
    # What the editor queues: the saved values by position over today's widgets (lr=False, checkpointing="demo").
    by_position = check.to_api(file, inserted)
    problems = check.compare_prompts(check.released_meaning(file, inserted, RELEASED_N), by_position, inserted)
    assert len(problems) == 1 and "'lr': 0.02" in problems[0] and "'lr': False" in problems[0]


def test_released_file_with_a_widget_appended_since_means_the_same_with_its_default():
    check = _script("frontend_check")
    appended = {"N": _node_info(STEPS, ("checkpointing", "BOOLEAN", {}), PREFIX, ("inversion", ["plain", "embedded"], {}))}
    file = _saved([200, False, "demo"])
    meaning = check.released_meaning(file, appended, RELEASED_N)
    assert meaning["1"]["inputs"] == {"steps": 200, "checkpointing": False, "prefix": "demo", "inversion": "plain"}
    editor = {"1": {"class_type": "N", "inputs": {**meaning["1"]["inputs"]}}}  # what a correct editor queues
    assert check.compare_prompts(meaning, editor, appended) == []


def test_a_retyped_widget_keeps_the_old_value_of_a_released_file_but_not_of_a_current_one():
    check = _script("frontend_check")
    retyped = {"N": _node_info(STEPS, ("checkpointing", ["auto", "on", "off"], {"default": "auto"}), PREFIX)}
    queued = {"1": {"class_type": "N", "inputs": {"steps": 200, "checkpointing": False, "prefix": "demo"}}}
    assert check.type_problems(queued, retyped, {("N", "checkpointing"): "BOOLEAN"}) == []
    assert check.type_problems(queued, retyped) == ["node 1 (N): checkpointing = False is not a valid choice"]
    shifted = {"1": {"class_type": "N", "inputs": {"steps": "demo", "checkpointing": False, "prefix": 200}}}
    assert len(check.type_problems(shifted, retyped, {("N", "checkpointing"): "BOOLEAN"})) == 2


def test_a_released_switch_that_became_an_on_off_choice_means_on_or_off():
    check = _script("frontend_check")
    retyped = {"N": _node_info(STEPS, ("checkpointing", ["auto", "on", "off"], {"default": "auto"}), PREFIX)}
    for saved, meant in ((False, "off"), (True, "on")):
        meaning = check.released_meaning(_saved([200, saved, "demo"]), retyped, RELEASED_N)
        assert meaning["1"]["inputs"] == {"steps": 200, "checkpointing": meant, "prefix": "demo"}
    other = {"N": _node_info(STEPS, ("checkpointing", ["fast", "slow"], {}), PREFIX)}  # no on / off: left as saved
    assert check.released_meaning(_saved([200, False, "demo"]), other, RELEASED_N)["1"]["inputs"]["checkpointing"] is False


@pytest.mark.comfyui
@needs_server
def test_example_workflows_run_and_cancel_keeps_work():
    assert _script("comfyui_check").check(COMFYUI_URL, Path(COMFYUI_DIR), steps=20) == []


@pytest.mark.comfyui
@needs_server
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None or shutil.which(CHROMIUM) is None,
                    reason="needs the playwright package and a system Chromium (CHROMIUM)")
def test_frontend_queues_what_the_files_mean_and_runs_them(tmp_path):
    """The example workflows, and the native Wan graph on a tiny random Wan installed for the run (then removed)."""
    native = _script("comfy_native_server_check")
    written = native.install_tiny_wan(Path(COMFYUI_DIR))
    try:
        graph = tmp_path / "native_wan_graph.json"
        graph.write_text(json.dumps(native.graph(train_steps=20, sample_steps=4)))
        problems = asyncio.run(_script("frontend_check").check(COMFYUI_URL, CHROMIUM, steps=20, out=tmp_path, extra=[graph]))
    finally:
        native.remove_tiny_wan(written)
    assert problems == []


@pytest.mark.comfyui
@needs_server
def test_the_native_wan_graph_trains_and_samples_through_the_server():
    """Load Diffusion Model -> Train (native) -> Apply (native) -> core SamplerCustomAdvanced, queued through the API."""
    run = subprocess.run([sys.executable, str(SCRIPTS / "comfy_native_server_check.py"), "--comfyui-url", COMFYUI_URL,
                          "--comfyui-dir", COMFYUI_DIR, "--train-steps", "10"], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "native graph check passed" in run.stdout + run.stderr
