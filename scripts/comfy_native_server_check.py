"""Run the native Wan graph in a real, running ComfyUI on a tiny random Wan, through the server API (loopback only).

The graph is ``build_workflows.wan_native_train_and_sample`` (Load Diffusion Model, Load VAE, VAE Encode of the
bundled Wan reference clip, Train Motion Embedding (native MODEL), Apply (native), CFGGuider, SamplerCustomAdvanced with
Motion Start Noise, VAE Decode, Save Animated WEBP), converted to the API format with the server's own
``/object_info``, queued and waited for. The tiny Wan (random weights: this checks the plumbing, not motion) is written
into the ComfyUI's ``models/`` under the name ``mi-check-tiny-wan`` and removed afterwards (``--keep`` leaves it).
Runs under ComfyUI's Python (it builds the model with diffusers), with the server started as for comfyui_check.py:

    COMFYUI_DIR/.venv/bin/python scripts/comfy_native_server_check.py --comfyui-url http://127.0.0.1:8188 \
        --comfyui-dir COMFYUI_DIR [--train-steps 20] [--sample-steps 4] [--workflow-out FILE]

Checks: the prompt succeeds; the training node reports the steps it trained and its file exists; the saved WEBP has
the graph's frame count; the Cancel path is comfyui_check.py's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from build_workflows import NativeWanFiles, load_pack, wan_native_train_and_sample  # noqa: E402
from comfyui_check import call, run_prompt, to_api  # noqa: E402

logger = logging.getLogger("comfy_native_server_check")
NAME = "mi-check-tiny-wan"
SIZE, FRAMES = 32, 9
CLIP = "toyworld_wan_red_square_bounce.mp4"  # a bundled sample clip of 1 + 4k frames


def tiny_wan_paths(comfy_dir: Path) -> list[Path]:
    """Where the tiny Wan goes in a ComfyUI: the Load Video Model folder, the DiT and the VAE."""
    models = comfy_dir / "models"
    return [models / "diffusers" / NAME, models / "diffusion_models" / f"{NAME}.safetensors", models / "vae" / f"{NAME}.safetensors"]


def install_tiny_wan(comfy_dir: Path) -> list[Path]:
    """Write the tiny Wan as a Load Video Model folder and as ComfyUI single files; returns what was written.
    Refuses when one of them exists (nothing of the user's is overwritten)."""
    load_pack()
    from motion_inversion_pack.motion_core.comfy_layout import export_comfy
    from motion_inversion_pack.motion_core.testing.tiny_wan_files import save_tiny_comfy_wan_model

    targets = tiny_wan_paths(comfy_dir)
    taken = [path for path in targets if path.exists()]
    if taken:
        raise SystemExit(f"{taken[0]} exists; remove it (a file of an earlier check run with --keep) or run with another ComfyUI.")
    save_tiny_comfy_wan_model(targets[0], seed=3)
    export_comfy(targets[0], comfy_dir / "models", NAME)
    return targets


def remove_tiny_wan(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def graph(train_steps: int, sample_steps: int) -> dict:
    """The native graph on the tiny Wan (a fresh file prefix each time, so ComfyUI's cache cannot skip training)."""
    files = NativeWanFiles(f"{NAME}.safetensors", f"{NAME}.safetensors", NAME, CLIP, SIZE, FRAMES, train_steps, sample_steps,
                           f"motion_inversion/native_check_{int(time.time())}")
    return wan_native_train_and_sample(load_pack(), files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-url", default="http://127.0.0.1:8188")
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sample-steps", type=int, default=4)
    parser.add_argument("--workflow-out", type=Path, default=None, help="also write the editor-format graph here")
    parser.add_argument("--keep", action="store_true", help="leave the tiny Wan's files in the ComfyUI")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    load_pack()
    from motion_inversion_pack.motion_core.embedding_file import read_embedding_info
    from motion_inversion_pack.motion_core.video_io import read_video_frames

    written = install_tiny_wan(args.comfyui_dir)
    failures: list[str] = []
    try:
        workflow = graph(args.train_steps, args.sample_steps)
        if args.workflow_out is not None:
            args.workflow_out.write_text(json.dumps(workflow, indent=2) + "\n")
        prompt = to_api(workflow, call(args.comfyui_url, "/object_info"))
        result = run_prompt(args.comfyui_url, prompt)
        status = result.get("status", {})
        logger.info("native graph: %s", status.get("status_str"))
        if status.get("status_str") != "success":
            return _report([f"the native graph failed: {json.dumps(status)[:1500]}"])
        outputs = result.get("outputs", {})
        train_id = next(key for key, node in prompt.items() if node["class_type"] == "MI_TrainMotionEmbeddingNative")
        save_id = next(key for key, node in prompt.items() if node["class_type"] == "SaveAnimatedWEBP")
        facts = outputs.get(train_id, {}).get("motion_embedding", [{}])[0]
        saved = sorted((args.comfyui_dir / "models" / "motion_embeddings").rglob(facts.get("file", "?")))
        if facts.get("steps") != args.train_steps or not saved:
            failures.append(f"training reported {facts}; its file found: {saved}")
        else:
            embedding = saved[0]
            info, _shapes = read_embedding_info(embedding)
            logger.info("embedding %s: family %s, %d steps, trained through %s", embedding.name, info.family, info.steps,
                        info.extra.get("trained_through"))
        images = outputs.get(save_id, {}).get("images", [])
        if not images:
            failures.append(f"Save Animated WEBP saved nothing: {outputs.get(save_id)}")
        else:
            path = args.comfyui_dir / "output" / images[0].get("subfolder", "") / images[0]["filename"]
            frames = read_video_frames(path).frames
            logger.info("saved %s: %d frames of %dx%d", path.name, frames.shape[0], frames.shape[2], frames.shape[1])
            if frames.shape[0] != FRAMES:
                failures.append(f"{path} has {frames.shape[0]} frames, not {FRAMES}")
    finally:
        if not args.keep:
            remove_tiny_wan(written)
    return _report(failures)


def _report(failures: list[str]) -> int:
    for failure in failures:
        logger.error("FAILED: %s", failure)
    if not failures:
        logger.info("native graph check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
