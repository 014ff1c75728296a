"""Run ComfyUI's own Wan model with a motion embedding patched in through the pack's native hook (CPU, float32).

Runs under ComfyUI's Python. Used by tests/test_comfy_native_wan_integration.py, which compares the outputs with the
diffusers path's on the same inputs:

    COMFYUI_DIR/.venv/bin/python scripts/comfy_wan_motion_parity.py --comfyui-dir COMFYUI_DIR \
        --transformer DIT.safetensors --embedding E.safetensors --mode object --strength 0.7 \
        --inputs IN.safetensors --out OUT.safetensors

Inputs: ``latent`` (1, 16, F', h, w), ``timestep`` (1,), ``context`` (1, L, text_dim), ``lora_delta`` (a weight
difference for block 0's q projection).
Outputs: ``plain`` (the loaded MODEL), ``patched`` (the MODEL that the ``MI_ApplyMotionEmbeddingNative`` node returns),
``zero_patched`` (the clone with the embedding's tensors set to zero), ``windowed_early`` / ``windowed_late`` (the node
with end percent 0.5, called with the noise level ComfyUI's sampler passes at 25 % / 75 % of the run), ``lora_patched`` (the node on a clone of the
MODEL that carries ``lora_delta`` as a weight patch, as a LoRA loader's MODEL does), ``plain_after`` (the loaded MODEL again, after
the clones ran), each ComfyUI's ``WanModel`` output on the inputs; ``core_random_noise`` (core RandomNoise, seed 42)
and ``start_noise_prior0`` (``MI_MotionStartNoise`` at noise prior 0, seed 42) for a latent shaped like ``latent``; metadata ``report`` (JSON): the clone's object patches and
whether the original MODEL has none and its self-attention methods back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--embedding", required=True)
    parser.add_argument("--mode", default="object")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management reads it
    import comfy.model_management
    import comfy.sd

    from build_workflows import load_pack  # scripts/ is on sys.path when a script here runs

    pack = load_pack()
    from motion_inversion_pack.motion_core.embedding import MotionEmbedding
    from motion_inversion_pack.motion_core.embedding_file import load_embedding

    inputs = load_file(args.inputs)
    embedding = load_embedding(args.embedding)
    zero = MotionEmbedding(embedding.info, {k: torch.zeros_like(v) for k, v in embedding.query_key.items()},
                           {k: torch.zeros_like(v) for k, v in embedding.value.items()}, embedding.inverted_latent)
    model = comfy.sd.load_diffusion_model(args.transformer)
    originals = {i: block.self_attn.forward for i, block in enumerate(model.model.diffusion_model.blocks)}

    def run(patcher, sigma: float | None = None) -> torch.Tensor:
        comfy.model_management.load_models_gpu([patcher])
        # ComfyUI's sampler puts the call's noise level in transformer_options["sigmas"] (samplers.calc_cond_batch)
        options = {} if sigma is None else {"sigmas": torch.tensor([sigma])}
        with torch.no_grad():
            return patcher.model.diffusion_model(inputs["latent"], inputs["timestep"], inputs["context"], transformer_options=options).float()

    apply = pack.NODE_CLASS_MAPPINGS["MI_ApplyMotionEmbeddingNative"]().apply  # the node, as ComfyUI calls it
    outputs = {"plain": run(model)}
    (patched,) = apply(model, embedding, args.strength, args.mode)
    outputs["patched"] = run(patched)
    outputs["zero_patched"] = run(apply(model, zero, args.strength, args.mode)[0])
    lora = model.clone()  # a weight patch (what a LoRA loader adds) on the MODEL the embedding goes on
    lora.add_patches({"diffusion_model.blocks.0.self_attn.q.weight": (inputs["lora_delta"],)}, 1.0)
    outputs["lora_patched"] = run(apply(lora, embedding, args.strength, args.mode)[0])
    # the step window: end_percent 0.5 acts at the noise level of 25 % of the run and not at that of 75 %
    sampling = model.get_model_object("model_sampling")
    early, late = (float(sampling.percent_to_sigma(p)) for p in (0.25, 0.75))
    windowed = apply(model, embedding, args.strength, args.mode, 0.0, 0.5)[0]
    outputs["windowed_early"], outputs["windowed_late"] = run(windowed, early), run(windowed, late)
    outputs["plain_after"] = run(model)
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    start = {"samples": torch.zeros_like(inputs["latent"])}
    outputs["core_random_noise"] = Noise_RandomNoise(42).generate_noise(start).float()
    make_noise = pack.NODE_CLASS_MAPPINGS["MI_MotionStartNoise"]().make
    outputs["start_noise_prior0"] = make_noise(embedding, 0.0, 42)[0].generate_noise(start).float()
    blocks = model.model.diffusion_model.blocks
    report = {
        "object_patches": sorted(patched.object_patches),
        "input_model_object_patches": sorted(model.object_patches),
        "forwards_restored": all(blocks[i].self_attn.forward == originals[i] for i in originals),
        "pack": pack.__name__,
        "window_sigmas": [early, late],
    }
    save_file({k: v.contiguous() for k, v in outputs.items()}, args.out, metadata={"report": json.dumps(report)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
