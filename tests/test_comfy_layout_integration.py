"""Converted Wan files in a real ComfyUI: its own loaders read them and compute what the diffusers models compute.

Runs only when COMFYUI_DIR names a ComfyUI checkout (no server needed; CPU). ComfyUI's code runs in its own Python
(COMFYUI_PYTHON, default COMFYUI_DIR/.venv/bin/python) through scripts/comfy_wan_parity.py:

    COMFYUI_DIR=/path/to/ComfyUI python -m pytest -c tests/pytest.ini tests/test_comfy_layout_integration.py -s

Checked for a tiny random DiT + VAE, and for the bundled toy-world Wan (assets/toyworld-wan) when it is there:
``comfy.sd.load_diffusion_model`` detects Wan 2.1 text-to-video with the DiT's dims (text_dim and freq_dim from the
file's ``config`` metadata), every weight of both files lands unchanged in ComfyUI's modules, and ComfyUI's
``WanModel`` output and ``VAE.encode`` / ``VAE.decode`` (what core VAE Encode / Decode give) match diffusers' on the same
inputs within :data:`TOLERANCE` of the output's scale (both float32 on CPU; the differences are float rounding:
ComfyUI's attention, RoPE and chunked causal VAE are other kernels than diffusers'). The measured differences are
printed (``-s``).
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

from motion_core.comfy_layout import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD, export_comfy, read_component
from motion_core.testing.tiny_wan_files import build_tiny_wan_transformer, build_tiny_wan_vae, save_tiny_wan_folder
from motion_core.video_io import read_video_frames

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
REPO = Path(__file__).resolve().parent.parent
TOY_WAN = REPO / "assets" / "toyworld-wan"
TOY_WAN_CLIP = REPO / "assets" / "sample_clips" / "toyworld_wan_red_square_bounce.mp4"  # 17 frames of 96x96
# Largest allowed |ComfyUI - diffusers|, as a share of the diffusers output's largest magnitude.
TOLERANCE = 1e-4

pytestmark = [pytest.mark.comfyui, pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout")]



def _diffusers_models(folder: Path):
    """The folder's DiT and VAE rebuilt from config.json and its safetensors (no accelerate needed)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    models = []
    for component, cls in (("transformer", WanTransformer3DModel), ("vae", AutoencoderKLWan)):
        weights, config = read_component(folder, component, cls.__name__)
        model = cls.from_config(config).eval()
        model.load_state_dict(weights, strict=True)
        models.append(model.float())
    return models


def _inputs(dit, clip: torch.Tensor | None = None, frames: int = 17, size: int = 64) -> dict[str, torch.Tensor]:
    """Random DiT inputs; ``clip`` ``(F, H, W, 3)`` in 0..1 to encode (default: random pixels, 17 x 64 x 64)."""
    generator = torch.Generator().manual_seed(5)
    if clip is None:
        clip = torch.rand(frames, size, size, 3, generator=generator)
    latent_shape = (1, 16, 1 + (clip.shape[0] - 1) // 4, clip.shape[1] // 8, clip.shape[2] // 8)
    return {
        "latent": torch.randn(latent_shape, generator=generator),
        "timestep": torch.tensor([637.0]),
        "context": torch.randn(1, 9, dit.config.text_dim, generator=generator),
        "frames": clip.float().contiguous(),
        "decode_latent": torch.randn(latent_shape, generator=generator),
    }


def _diffusers_outputs(dit, vae, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What diffusers computes on the inputs, in the form ComfyUI's script returns it."""
    with torch.no_grad():
        dit_output = dit(inputs["latent"], inputs["timestep"], inputs["context"]).sample
        video = inputs["frames"].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1  # (1, 3, F, H, W) in -1..1
        vae_latent = vae.encode(video).latent_dist.mode()
        decoded = vae.decode(inputs["decode_latent"]).sample  # clamped to -1..1
    return {"dit_output": dit_output, "vae_latent": vae_latent,
            "vae_decoded": ((decoded[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)}


def _run_in_comfyui(paths, inputs: dict[str, torch.Tensor], work: Path) -> tuple[dict[str, torch.Tensor], dict]:
    save_file(inputs, str(work / "inputs.safetensors"))
    command = [comfy_python(COMFYUI_DIR), str(REPO / "scripts" / "comfy_wan_parity.py"), "--comfyui-dir", COMFYUI_DIR,
               "--transformer", str(paths.transformer), "--vae", str(paths.vae),
               "--inputs", str(work / "inputs.safetensors"), "--out", str(work / "comfy.safetensors")]
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with safe_open(str(work / "comfy.safetensors"), framework="pt") as handle:
        report = json.loads(handle.metadata()["report"])
    return load_file(str(work / "comfy.safetensors")), report


def _check(folder: Path, name: str, work: Path, clip: torch.Tensor | None = None) -> None:
    dit, vae = _diffusers_models(folder)
    paths = export_comfy(folder, work / "models", name)
    inputs = _inputs(dit, clip)
    if clip is not None:  # a real clip: decode its own latent, as a VAE Encode -> VAE Decode chain would
        inputs["decode_latent"] = _diffusers_outputs(dit, vae, inputs)["vae_latent"]
    comfy, report = _run_in_comfyui(paths, inputs, work)

    config = report["unet_config"]
    assert (report["model_class"], report["diffusion_model_class"], report["latent_format"]) == ("WAN21", "WanModel", "Wan21")
    assert config["image_model"] == "wan2.1" and config["model_type"] == "t2v"
    # The latent statistics the converter requires of a VAE are the ones ComfyUI normalises with.
    assert report["latents_mean"] == pytest.approx(WAN21_LATENTS_MEAN) and report["latents_std"] == pytest.approx(WAN21_LATENTS_STD)
    inner = dit.config.num_attention_heads * dit.config.attention_head_dim
    assert (config["dim"], config["num_heads"], config["num_layers"], config["ffn_dim"]) == (
        inner, dit.config.num_attention_heads, dit.config.num_layers, dit.config.ffn_dim)
    assert (config["text_dim"], config["freq_dim"], report["text_embedding_in"]) == (
        dit.config.text_dim, dit.config.freq_dim, dit.config.text_dim)
    assert (config["eps"], config["cross_attn_norm"], config["qk_norm"]) == (dit.config.eps, dit.config.cross_attn_norm, True)
    assert report["vae_class"] == "WanVAE" and report["vae_dim"] == vae.config.base_dim
    for part in ("dit_weights", "vae_weights"):  # every weight used, none missing, none changed
        assert report[part] == {"missing_in_file": [], "unused_from_file": [], "differing": []}, report[part]

    reference = _diffusers_outputs(dit, vae, inputs)
    for key, expected in reference.items():
        got = comfy[key]
        assert got.shape == expected.shape, (key, got.shape, expected.shape)
        scale = expected.abs().max().item()
        difference = (got - expected).abs().max().item()
        print(f"{name} {key}: max |ComfyUI - diffusers| = {difference:.3e} (output max |x| {scale:.3f}, "
              f"relative {difference / scale:.3e}); dtypes dit {report['dit_dtype']}, vae {report['vae_dtype']}")
        assert difference <= TOLERANCE * scale, (key, difference, scale)


# The second DiT needs eps and cross_attn_norm from the metadata too (and has two heads).
@pytest.mark.parametrize("overrides", [{}, {"cross_attn_norm": False, "eps": 1e-5, "num_attention_heads": 2}],
                         ids=["wan21", "no-cross-norm-two-heads"])
def test_tiny_wan_files_load_in_comfyui_and_compute_what_diffusers_computes(tmp_path, overrides):
    name = "tiny-wan" + "".join(f"-{key}={value}" for key, value in overrides.items())
    folder = save_tiny_wan_folder(tmp_path / name, build_tiny_wan_transformer(7, **overrides), build_tiny_wan_vae(7))
    _check(folder, name, tmp_path)


@pytest.mark.skipif(not (TOY_WAN / "transformer").is_dir(), reason="the toy-world Wan is not bundled in this checkout")
def test_bundled_toy_world_wan_loads_in_comfyui_and_computes_what_diffusers_computes(tmp_path):
    clip = read_video_frames(TOY_WAN_CLIP).frames if TOY_WAN_CLIP.is_file() else None
    _check(TOY_WAN, "toyworld-wan", tmp_path, clip)
