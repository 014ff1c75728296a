"""Does a motion embedding transfer motion through ComfyUI's own Wan model and core sampling? Measured beside the
diffusers path on the same embedding, prompts and seeds. Runs under ComfyUI's Python (CPU, float32); no server.

    COMFYUI_DIR/.venv/bin/python scripts/comfy_native_motion_check.py --comfyui-dir COMFYUI_DIR \
        --model WAN_FOLDER --embedding E.safetensors --reference assets/sample_clips/toyworld_wan_red_square_bounce.json

WAN_FOLDER is a toy-world Wan (diffusers folder with its text encoder; the bundled one once it is bundled). Its DiT and
VAE are converted with ``export_comfy`` into a temporary folder and loaded by ComfyUI's core loaders. The native run
is what a workflow of core nodes and the pack's native nodes does: ``ModelSamplingSD3`` (the folder's flow shift) ->
``MI_ApplyMotionEmbeddingNative`` -> ``CFGGuider`` with ``MI_EncodePromptWithModel`` conditioning ->
``SamplerCustomAdvanced`` (euler, ``simple`` sigmas) with ``MI_MotionStartNoise`` -> core VAE decode. The diffusers run
is ``motion_core.sampling.sample_video`` with the same embedding, mode, strength, noise prior, steps and cfg. Controls:
the native run without the embedding (plain MODEL, core RandomNoise). Each clip is read by the toy-world detector;
motion fidelity is the Pearson correlation of its displacements with the reference's ground-truth track.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger("comfy_native_motion_check")
PROMPTS = ("a blue circle", "a green triangle", "a yellow circle", "a white triangle")



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--embedding", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path, help="the reference clip's .json (ground-truth centres)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=1.0)
    parser.add_argument("--noise-prior", type=float, default=0.5)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--mode", default=None, help="Apply's mode (default: Apply's own default)")
    parser.add_argument("--json", type=Path, default=None, help="write the per-clip results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    from build_workflows import load_pack  # scripts/ is on sys.path when a script here runs

    pack = load_pack()
    sys.path.insert(0, str(ROOT))  # toyworld (the detector)
    from motion_inversion_pack.motion_core.comfy_layout import export_comfy
    from motion_inversion_pack.motion_core.embedding_file import load_embedding
    from motion_inversion_pack.motion_core.model_loading import load_video_model
    from motion_inversion_pack.motion_core.sampling import AppliedMotion, SamplingConfig, sample_video
    from motion_inversion_pack.nodes.handles import MotionModel
    from toyworld import metrics
    from motion_inversion_pack.motion_core.defaults import field_default

    if args.mode is None:
        args.mode = field_default(AppliedMotion, "mode")
    logger.info("mode %s, strength %g, noise prior %g, embeddings on the first %g of the steps", args.mode, args.strength,
                args.noise_prior, field_default(AppliedMotion, "end_percent"))

    reference = json.loads(args.reference.read_text())
    track = torch.tensor(reference["centres_xy"], dtype=torch.float32)
    frames, height, width = reference["frames"], reference["height"], reference["width"]
    embedding = load_embedding(args.embedding)
    video_model = load_video_model(args.model, "fp32", "auto", "cpu", use_cache=False)
    shift = video_model.family.shift(video_model)
    nodes = pack.NODE_CLASS_MAPPINGS
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_comfy(args.model, Path(tmp), "toy-wan")
        plain = comfy.sd.load_diffusion_model(str(paths.transformer))
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(paths.vae)))
    (plain,) = ModelSamplingSD3().patch(plain, shift)
    (patched,) = nodes["MI_ApplyMotionEmbeddingNative"]().apply(plain, embedding, args.strength, args.mode)
    encode = nodes["MI_EncodePromptWithModel"]().encode
    negative = encode(MotionModel(video_model), "")[0]
    latent = {"samples": torch.zeros(1, 16, 1 + (frames - 1) // 4, height // 8, width // 8)}

    def native(model, prompt: str, noise) -> torch.Tensor:
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(encode(MotionModel(video_model), prompt)[0], negative)
        guider.set_cfg(args.cfg)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", args.steps)
        samples = guider.sample(noise.generate_noise(latent), latent["samples"], comfy.samplers.sampler_object("euler"),
                                sigmas, disable_pbar=True, seed=noise.seed)
        decoded = vae.decode(samples)
        return decoded.reshape(-1, *decoded.shape[-3:]).float().clamp(0, 1)[:frames]

    def diffusers(prompt: str, seed: int) -> torch.Tensor:
        config = SamplingConfig(prompt=prompt, width=width, height=height, frames=frames, steps=args.steps,
                                guidance_scale=args.cfg, seed=seed, scheduler="euler", noise_prior=args.noise_prior)
        return sample_video(video_model, config, AppliedMotion(embedding, args.strength, args.mode))

    start_noise = nodes["MI_MotionStartNoise"]().make
    results: dict[str, list[dict]] = {"native": [], "diffusers": [], "native_no_embedding": []}
    for prompt in PROMPTS:
        for seed in range(args.seeds):
            clips = {
                "native": native(patched, prompt, start_noise(embedding, args.noise_prior, seed)[0]),
                "diffusers": diffusers(prompt, seed),
                "native_no_embedding": native(plain, prompt, Noise_RandomNoise(seed)),
            }
            for name, clip in clips.items():
                found = metrics.detect_clip(clip)
                row = {"prompt": prompt, "seed": seed, "fidelity": metrics.motion_pearson(found.centroids, track),
                       "colour": found.colour, "shape": found.shape, "presence": found.presence_rate}
                results[name].append(row)
            logger.info("%s seed %d: %s", prompt, seed,
                        ", ".join(f"{name} {results[name][-1]['fidelity']:.2f}" for name in results))
    for name, rows in results.items():
        fidelities = [r["fidelity"] for r in rows if not math.isnan(r["fidelity"])]
        colour = statistics.mean(r["colour"] == r["prompt"].split()[1] for r in rows)
        logger.info("%-20s motion fidelity %.2f (n %d of %d)  colour %.2f  presence %.2f", name,
                    statistics.mean(fidelities) if fidelities else float("nan"), len(fidelities), len(rows), colour,
                    statistics.mean(r["presence"] for r in rows))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
