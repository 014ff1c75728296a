"""Load converted Wan files with ComfyUI's own loaders and run them on given inputs (CPU). Runs under ComfyUI's Python.

Used by tests/test_comfy_layout_integration.py, which writes the inputs, runs this script with ComfyUI's interpreter
(its venv has ComfyUI's dependencies, the pack's may not) and compares the outputs with the diffusers models':

    COMFYUI_DIR/.venv/bin/python scripts/comfy_wan_parity.py --comfyui-dir COMFYUI_DIR \
        --transformer DIT.safetensors --vae VAE.safetensors --inputs IN.safetensors --out OUT.safetensors

Inputs (a safetensors file): ``latent`` (1, 16, F', h, w), ``timestep`` (1,), ``context`` (1, L, text_dim),
``frames`` (F, H, W, 3) in 0..1, ``decode_latent`` (1, 16, F', H/8, W/8).
Outputs: ``dit_output`` (ComfyUI's ``WanModel`` on latent/timestep/context), ``vae_latent`` (``VAE.encode(frames)``,
what core *VAE Encode* gives), ``vae_decoded`` (``VAE.decode(decode_latent)``, what core *VAE Decode* gives, frames
``(F, H, W, 3)`` in 0..1), and a ``report`` metadata entry (JSON) with what ComfyUI detected and whether every
weight of each file landed, unchanged, in ComfyUI's model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def _weights_report(module, path: str) -> dict:
    """Keys of the file missing from / unknown to ``module``, and whether every loaded tensor equals the file's."""
    loaded = module.state_dict()
    with safe_open(path, framework="pt", device="cpu") as handle:
        names = set(handle.keys())
        differing = [key for key in names & set(loaded)
                     if not (handle.get_tensor(key).to(loaded[key].dtype) == loaded[key].cpu()).all()]
    return {"missing_in_file": sorted(set(loaded) - names), "unused_from_file": sorted(names - set(loaded)),
            "differing": sorted(differing)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--vae", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management reads it: the check runs on CPU in float32
    import comfy.sd
    import comfy.utils

    torch.manual_seed(0)
    inputs = load_file(args.inputs)
    patcher = comfy.sd.load_diffusion_model(args.transformer)
    model = patcher.model
    dit = model.diffusion_model.eval()
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
    vae.first_stage_model.eval()
    report = {
        "model_class": type(model).__name__,
        "diffusion_model_class": type(dit).__name__,
        "latent_format": type(model.latent_format).__name__,
        "latents_mean": model.latent_format.latents_mean.flatten().tolist(),
        "latents_std": model.latent_format.latents_std.flatten().tolist(),
        "unet_config": {k: v for k, v in model.model_config.unet_config.items() if isinstance(v, (int, float, str, bool, list, tuple))},
        "text_embedding_in": dit.text_embedding[0].weight.shape[1],
        "dit_dtype": str(next(dit.parameters()).dtype),
        "vae_class": type(vae.first_stage_model).__name__,
        "vae_dim": vae.first_stage_model.dim,
        "vae_dtype": str(vae.vae_dtype),
        "dit_weights": _weights_report(dit, args.transformer),
        "vae_weights": _weights_report(vae.first_stage_model, args.vae),
    }
    with torch.no_grad():
        dit_output = dit(inputs["latent"], inputs["timestep"], inputs["context"])
        vae_latent = vae.encode(inputs["frames"])
        vae_decoded = vae.decode(inputs["decode_latent"])
    report["vae_decoded_shape"] = list(vae_decoded.shape)
    outputs = {"dit_output": dit_output, "vae_latent": vae_latent, "vae_decoded": vae_decoded.reshape(-1, *vae_decoded.shape[-3:])}
    save_file({k: v.float().contiguous() for k, v in outputs.items()}, args.out, metadata={"report": json.dumps(report)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
