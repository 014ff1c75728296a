"""Run the example workflows in a real, running ComfyUI and check what they produce (loopback only).

Start ComfyUI with this pack in ``custom_nodes`` first, e.g. ``python main.py --cpu --listen 127.0.0.1``, then:

    python scripts/comfyui_check.py --comfyui-url http://127.0.0.1:8188 --comfyui-dir /path/to/ComfyUI [--steps 20]

Each editor-format workflow is converted to the API format with the server's own ``/object_info`` (so widget order
is checked against the real node definitions), queued, and waited for; then the outputs are checked on disk. A last
check queues a long training run, presses Cancel for that prompt once it runs (``/interrupt`` with its
``prompt_id``), and checks that the partial embedding was saved and that the next prompt still runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from build_workflows import has_seed_control, is_widget, spec_options  # noqa: E402  (no pack import at module level)

logger = logging.getLogger("comfyui_check")


def call(url: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return json.loads(body) if body else None


def to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Editor format (nodes, links, widgets_values) -> API prompt ``{id: {class_type, inputs}}``."""
    links = {link[0]: link for link in workflow["links"]}
    prompt: dict[str, Any] = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        values = list(node.get("widgets_values", []))
        inputs: dict[str, Any] = {}
        linked = {slot["name"]: slot["link"] for slot in node.get("inputs", []) if slot.get("link") is not None}
        order = info.get("input_order", {})
        for section in ("required", "optional"):
            specs = info["input"].get(section, {})
            for name in order.get(section, list(specs)):
                spec = specs[name]
                if name in linked:
                    link = links[linked[name]]
                    inputs[name] = [str(link[1]), link[2]]
                    if is_widget(spec) and values:
                        values.pop(0)  # a widget converted to an input still keeps its slot
                    continue
                if not is_widget(spec) or not values:
                    continue
                inputs[name] = values.pop(0)
                if has_seed_control(name, spec_options(spec)):
                    values.pop(0)
                # an upload button's value ("image") comes after every other widget: nothing to skip here
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def run_prompt(url: str, prompt: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    prompt_id = call(url, "/prompt", {"prompt": prompt})["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = call(url, f"/history/{prompt_id}")
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(1)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def wait_until_running(url: str, prompt_id: str, timeout: float) -> bool:
    """Wait until the server runs ``prompt_id`` (``/queue``: running entries are [number, prompt_id, ...])."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(entry[1] == prompt_id for entry in call(url, "/queue")["queue_running"]):
            return True
        time.sleep(0.5)
    return False


def set_training_steps(prompt: dict[str, Any], steps: int) -> dict[str, Any]:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == "MI_TrainMotionEmbedding":
            node["inputs"]["steps"] = steps
            node["inputs"]["save_every"] = 0
    return prompt


def check(url: str, comfy_dir: Path, steps: int | None) -> list[str]:
    """Run every check; returns a list of failures (empty when all passed)."""
    failures: list[str] = []
    system = call(url, "/system_stats")["system"]
    logger.info("ComfyUI %s, torch %s", system.get("comfyui_version"), system.get("pytorch_version"))
    info = call(url, "/object_info")
    missing = [n for n in ("MI_LoadVideoModel", "MI_LoadVideoFrames", "MI_TrainMotionEmbedding", "MI_SaveMotionEmbedding",
                           "MI_LoadMotionEmbedding", "MI_ApplyMotionEmbedding", "MI_MotionSampler", "MI_ApplyMotionEmbeddingNative") if n not in info]
    if missing:
        return [f"nodes not registered: {missing}"]
    output_dir, embedding_dir = comfy_dir / "output", comfy_dir / "models" / "motion_embeddings"
    train_seconds = 30.0  # how long train_and_sample takes here, measured below
    for path in sorted((ROOT / "workflows").glob("*.json")):
        prompt = to_api(json.loads(path.read_text()), info)
        if steps:
            prompt = set_training_steps(prompt, steps)
        before = set(output_dir.rglob("*.webp"))
        start = time.time()
        result = run_prompt(url, prompt)
        status = result.get("status", {})
        new_files = set(output_dir.rglob("*.webp")) - before
        logger.info("%s: %s in %.0f s, wrote %s", path.name, status.get("status_str"), time.time() - start,
                    [p.name for p in new_files])
        if path.name == "train_and_sample.json":
            train_seconds = time.time() - start
        if status.get("status_str") != "success" or not new_files:
            failures.append(f"{path.name}: {json.dumps(status)[:800]}")
    train = json.loads((ROOT / "workflows" / "train_and_sample.json").read_text())
    prompt = set_training_steps(to_api(train, info), 100_000)
    before = set(embedding_dir.rglob("*.safetensors")) if embedding_dir.exists() else set()
    prompt_id = call(url, "/prompt", {"prompt": prompt})["prompt_id"]
    if not wait_until_running(url, prompt_id, timeout=120):
        return failures + [f"the long training prompt {prompt_id} did not start in 120 s"]
    # Cancel during the training steps: they come after loading and the inversion, which together take less than
    # the whole short run above (a fixed wait would land in the inversion on a slow or busy machine)
    time.sleep(max(10.0, train_seconds))
    call(url, "/interrupt", {"prompt_id": prompt_id})  # only this prompt (a ComfyUI without targeted interrupt stops all)
    deadline = time.time() + 120
    while time.time() < deadline and prompt_id not in call(url, f"/history/{prompt_id}"):
        time.sleep(1)
    if prompt_id not in call(url, f"/history/{prompt_id}"):
        call(url, "/interrupt", {})
        return failures + ["Cancel did not stop the training prompt within 120 s"]
    saved = set(embedding_dir.rglob("*.safetensors")) - before
    logger.info("Cancel: saved %s", [p.name for p in saved])
    if not saved:
        failures.append("Cancel did not leave a partial embedding file")
    again = run_prompt(url, set_training_steps(to_api(train, info), 5))
    if again.get("status", {}).get("status_str") != "success":
        failures.append(f"the prompt after Cancel failed: {json.dumps(again.get('status'))[:800]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui-url", default="http://127.0.0.1:8188")
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=None, help="override the training steps of the workflows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    failures = check(args.comfyui_url, args.comfyui_dir, args.steps)
    for failure in failures:
        logger.error("FAILED: %s", failure)
    logger.info("%d failed", len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
