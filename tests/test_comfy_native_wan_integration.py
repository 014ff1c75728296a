"""The native hook on ComfyUI's own Wan model computes what the diffusers path computes with the same embedding.

Runs only when COMFYUI_DIR names a ComfyUI checkout (no server; CPU). ComfyUI's code runs in its own Python
(COMFYUI_PYTHON, default COMFYUI_DIR/.venv/bin/python) through scripts/comfy_wan_motion_parity.py:

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -c tests/pytest.ini tests/test_comfy_native_wan_integration.py -s

A tiny random Wan 2.1 DiT (heads of 128, so ComfyUI loads it) is exported with ``export_comfy`` and loaded by
``comfy.sd.load_diffusion_model``; an embedding on every block, with random values, trained at another latent size and
frame count than the run's (so both paths resample), goes on it through the ``MI_ApplyMotionEmbeddingNative`` node. Checked:
the patched clone's output equals diffusers' ``WanTransformer3DModel`` with the pack's ``WanMotionAttnProcessor``
within the float rounding of ComfyUI's other attention and RoPE kernels, also when the MODEL carries a LoRA-style weight
patch (then equal to diffusers with that weight changed); zero embeddings give exactly the unpatched
output; with end percent 0.5 the patch acts at the noise level ComfyUI's sampler passes early in the run and gives
the plain output late; the MODEL the patch was made from has no object patch and its own methods, and computes exactly what it did;
``MI_MotionStartNoise`` at noise prior 0 draws exactly core RandomNoise's noise for the same seed.

Training (``MI_TrainMotionEmbeddingNative``, through scripts/comfy_wan_training_check.py, node called under
inference_mode as ComfyUI's executor calls it) gives the embedding and inverted start that training through diffusers'
transformer gives on the same latents, prompt and seed; gradient checkpointing changes nothing; Cancel at step 2 keeps a
file of 2 steps; the MODEL afterwards has no object patch, its own methods, and computes exactly what it did.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import comfy_python
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from motion_core.comfy_layout import export_comfy
from motion_core.embedding import EmbeddingInfo, prepare_for_sampling, zero_embedding
from motion_core.embedding_file import save_embedding
from motion_core.families.wan import WanFamily
from motion_core.families.wan_attention import WanMotionAttnProcessor
from motion_core.native_training import train_foreign_wan
from motion_core.patching import installed_processors
from motion_core.testing.foreign_wan import diffusers_foreign_wan
from motion_core.testing.tiny_wan_files import build_tiny_wan_transformer, build_tiny_wan_vae, save_tiny_wan_folder
from motion_core.training import TrainingConfig

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
REPO = Path(__file__).resolve().parent.parent
# Largest allowed |ComfyUI - diffusers|, as a share of the diffusers output's largest magnitude (as for the plain model).
TOLERANCE = 1e-4

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout")]



def _random_embedding(dit, trained_grid: tuple[int, int, int]):
    frames, height, width = trained_grid
    sites = tuple(WanFamily().select_sites(dit, "all", height, width))
    info = EmbeddingInfo("wan", {}, sites, width * 8, height * 8, 1 + 4 * (frames - 1), height, width, latent_frames=frames)
    embedding = zero_embedding(info)
    generator = torch.Generator().manual_seed(11)
    for tensor in [*embedding.query_key.values(), *embedding.value.values()]:
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
    return embedding


def _diffusers_output(dit, embedding, mode: str, strength: float, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    frames, latent_h, latent_w = inputs["latent"].shape[2:]
    prepared = prepare_for_sampling(embedding, frames, latent_h, latent_w, mode, strength)
    processors = {
        site.attention_names[0]: WanMotionAttnProcessor(prepared.query_key.get(site.name), prepared.value.get(site.attention_names[0]),
                                                        site.grid(latent_h, latent_w), (frames, latent_h // 2, latent_w // 2))
        for site in embedding.info.blocks
    }
    with torch.no_grad(), installed_processors(dit, processors):
        return dit(inputs["latent"], inputs["timestep"], inputs["context"]).sample


@pytest.mark.parametrize("mode, strength", [("object", 0.7), ("raw", 1.0)])
def test_the_native_hook_on_comfyuis_wan_computes_what_the_diffusers_path_computes(tmp_path, mode, strength):
    dit = build_tiny_wan_transformer(3).float()
    folder = save_tiny_wan_folder(tmp_path / "tiny-wan", dit, build_tiny_wan_vae(3))
    paths = export_comfy(folder, tmp_path / "models", "tiny-wan")
    embedding = _random_embedding(dit, trained_grid=(3, 6, 6))
    save_embedding(embedding, tmp_path / "motion.safetensors")
    generator = torch.Generator().manual_seed(5)
    inputs = {"latent": torch.randn(1, 16, 4, 8, 6, generator=generator), "timestep": torch.tensor([637.0]),
              "context": torch.randn(1, 9, dit.config.text_dim, generator=generator),
              "lora_delta": torch.randn(128, 128, generator=generator) * 0.05}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    command = [comfy_python(COMFYUI_DIR), str(REPO / "scripts" / "comfy_wan_motion_parity.py"), "--comfyui-dir", COMFYUI_DIR,
               "--transformer", str(paths.transformer), "--embedding", str(tmp_path / "motion.safetensors"),
               "--mode", mode, "--strength", str(strength),
               "--inputs", str(tmp_path / "inputs.safetensors"), "--out", str(tmp_path / "out.safetensors")]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    comfy = load_file(str(tmp_path / "out.safetensors"))
    with safe_open(str(tmp_path / "out.safetensors"), framework="pt") as handle:
        report = json.loads(handle.metadata()["report"])

    assert report["object_patches"] == [f"diffusion_model.blocks.{i}.self_attn.forward" for i in range(dit.config.num_layers)]
    assert report["input_model_object_patches"] == [] and report["forwards_restored"]
    assert torch.equal(comfy["zero_patched"], comfy["plain"])
    assert torch.equal(comfy["plain_after"], comfy["plain"])
    # end percent 0.5: the embedding acts early in the run (as the full patch) and not late (the plain model)
    assert report["window_sigmas"][0] > report["window_sigmas"][1]
    assert torch.equal(comfy["windowed_early"], comfy["patched"]) and torch.equal(comfy["windowed_late"], comfy["plain"])
    assert torch.equal(comfy["start_noise_prior0"], comfy["core_random_noise"])  # MI_MotionStartNoise draws core's noise

    expected = _diffusers_output(dit, embedding, mode, strength, inputs)
    with torch.no_grad():
        plain = dit(inputs["latent"], inputs["timestep"], inputs["context"]).sample
    scale = expected.abs().max().item()
    difference = (comfy["patched"] - expected).abs().max().item()
    effect = (expected - plain).abs().max().item()
    print(f"{mode} x{strength}: max |ComfyUI - diffusers| = {difference:.3e} (output max {scale:.3f}); "
          f"the embedding moves the output by up to {effect:.3f}")
    assert difference <= TOLERANCE * scale, (difference, scale)
    assert effect > 100 * difference  # the embedding changes the output far beyond the two paths' rounding

    # a LoRA-style weight patch on the MODEL still applies under the motion patch
    with torch.no_grad():
        dit.blocks[0].attn1.to_q.weight += inputs["lora_delta"]
    with_lora = _diffusers_output(dit, embedding, mode, strength, inputs)
    assert (with_lora - expected).abs().max() > 100 * difference
    assert (comfy["lora_patched"] - with_lora).abs().max().item() <= TOLERANCE * scale


def _run_script(script: str, arguments: list[str], tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    command = [comfy_python(COMFYUI_DIR), str(REPO / "scripts" / script), "--comfyui-dir", COMFYUI_DIR, *arguments,
               "--out", str(tmp_path / "out.safetensors")]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with safe_open(str(tmp_path / "out.safetensors"), framework="pt") as handle:
        report = json.loads(handle.metadata()["report"])
    return load_file(str(tmp_path / "out.safetensors")), report


def _relative(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).norm() / expected.norm())


def test_training_through_comfyuis_wan_gives_the_diffusers_paths_embedding_and_cancel_keeps_a_file(tmp_path):
    dit = build_tiny_wan_transformer(3).float()
    folder = save_tiny_wan_folder(tmp_path / "tiny-wan", dit, build_tiny_wan_vae(3))
    paths = export_comfy(folder, tmp_path / "models", "tiny-wan")
    generator = torch.Generator().manual_seed(8)
    inputs = {"latents": torch.randn(1, 16, 3, 6, 4, generator=generator), "text": torch.randn(1, 7, 32, generator=generator),
              "empty": torch.randn(1, 7, 32, generator=generator) * 0.1, "probe": torch.randn(1, 16, 2, 4, 4, generator=generator)}
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    steps = 4
    comfy, report = _run_script("comfy_wan_training_check.py", [
        "--transformer", str(paths.transformer), "--inputs", str(tmp_path / "inputs.safetensors"), "--steps", str(steps),
        "--work-dir", str(tmp_path / "embeddings")], tmp_path)

    config = TrainingConfig(prompt="x", steps=steps, learning_rate=0.05, layer_set="alternate", seed=0, save_every=0,
                            gradient_checkpointing="off")
    expected = train_foreign_wan(diffusers_foreign_wan(dit, report["shift"]), inputs["latents"], inputs["text"], inputs["empty"], config)
    differences = {}
    for kind, tensors in (("query_key", expected.embedding.query_key), ("value", expected.embedding.value)):
        for name, tensor in tensors.items():
            assert tensor.abs().max() > 0.05  # it trained
            differences[f"{kind}.{name}"] = _relative(comfy[f"plain.{kind}.{name}"], tensor)
            torch.testing.assert_close(comfy[f"checkpointed.{kind}.{name}"], comfy[f"plain.{kind}.{name}"], rtol=1e-5, atol=1e-6)
    differences["inverted"] = _relative(comfy["plain.inverted"], expected.embedding.inverted_latent)
    print("relative |ComfyUI - diffusers| after", steps, "steps:", {k: f"{v:.1e}" for k, v in differences.items()})
    assert max(differences.values()) < 1e-3, differences
    assert expected.losses[-1] < expected.losses[0] or len(set(expected.losses)) > 1

    assert report["cancelled"] and report["cancelled_steps"] == 2 and len(report["cancelled_files"]) == 1
    assert report["plain_file"]["steps"] == steps
    assert report["input_model_object_patches"] == [] and report["forwards_restored"]
    assert report["in_training_after"] is False
    assert torch.equal(comfy["probe_after"], comfy["probe_before"])  # the MODEL computes what it did before training
