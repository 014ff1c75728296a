"""Check the pack's SD1.5 part configs against ComfyUI's own idea of an SD1.5 checkpoint (CPU, no server).

Runs under ComfyUI's Python. Builds SD1.5's UNet, VAE and CLIP text encoder with random weights from the pack's
shipped configs (``motion_core/configs/sd15``), writes them as one checkpoint in SD1.5's key layout (fp16), then:

1. ComfyUI's ``load_checkpoint_guess_config`` must detect it as SD1.5 and find every UNet / VAE tensor of the file in
   its own modules (same names, shapes and values): the layout the pack reads is the one real SD1.5 files have;
2. the pack's single-file loader (``load_animatediff_files``, the shipped configs and ComfyUI's own
   ``comfy/sd1_tokenizer``) reads the file back, and its UNet's noise prediction equals ComfyUI's on the same input
   (frames without the motion modules: a random motion module is added, with its output projections zero, as a
   freshly initialised AnimateDiff module has them).

    COMFYUI_DIR/.venv/bin/python scripts/comfy_sd15_layout_check.py --comfyui-dir COMFYUI_DIR [--work-dir DIR]

About 3 GB of scratch files (removed afterwards) and a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

logger = logging.getLogger("comfy_sd15_layout_check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management
    import comfy.sd
    import comfy.supported_models

    from build_workflows import load_pack

    load_pack()
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from motion_inversion_pack.motion_core.families.animatediff_files import SD15_CONFIGS, load_animatediff_files
    from motion_inversion_pack.motion_core.testing.sd_single_files import adapter_to_original, clip_to_ldm, unet_to_ldm, vae_to_ldm

    def config(part: str) -> dict:
        return {k: v for k, v in json.loads((SD15_CONFIGS / part / "config.json").read_text()).items() if not k.startswith("_")}

    failures: list[str] = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as scratch:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config("unet"))
        vae = AutoencoderKL(**config("vae"))
        text = CLIPTextModel(CLIPTextConfig(**config("text_encoder")))
        state = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
                 **clip_to_ldm(text.state_dict())}
        state = {k: v.half().contiguous() for k, v in state.items()}
        checkpoint = Path(scratch) / "random_sd15.safetensors"
        save_file(state, str(checkpoint))
        adapter = MotionAdapter(**config("motion_adapter"))
        with torch.no_grad():
            for name, param in adapter.named_parameters():
                if "proj_out" in name:
                    param.zero_()
        module = Path(scratch) / "random_mm_v2.safetensors"
        save_file({k: v.half().contiguous() for k, v in adapter_to_original(adapter.state_dict(), 32).items()}, str(module))
        del unet, vae, text, adapter
        logger.info("wrote %s (%d tensors) and %s", checkpoint.name, len(state), module.name)

        model, _clip, comfy_vae, _ = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=True, output_clip=True)
        detected = type(model.model.model_config).__name__
        logger.info("ComfyUI detects: %s", detected)
        if not isinstance(model.model.model_config, comfy.supported_models.SD15):
            failures.append(f"ComfyUI detected {detected}, not SD15")
        comfy_unet = model.model.diffusion_model.state_dict()
        ours = {k.removeprefix("model.diffusion_model."): v for k, v in state.items() if k.startswith("model.diffusion_model.")}
        if set(comfy_unet) != set(ours):
            failures.append(f"UNet keys differ: ComfyUI only {sorted(set(comfy_unet) - set(ours))[:3]}, file only {sorted(set(ours) - set(comfy_unet))[:3]}")
        unequal = [k for k in ours if k in comfy_unet and not torch.equal(comfy_unet[k].half(), ours[k])]
        if unequal:
            failures.append(f"{len(unequal)} UNet tensors differ, e.g. {unequal[0]}")
        comfy_vae_state = comfy_vae.first_stage_model.state_dict()
        vae_file = {k.removeprefix("first_stage_model."): v for k, v in state.items() if k.startswith("first_stage_model.")}
        if set(comfy_vae_state) != set(vae_file):
            failures.append(f"VAE keys differ: {sorted(set(comfy_vae_state) ^ set(vae_file))[:3]}")
        logger.info("ComfyUI holds %d/%d UNet and %d/%d VAE tensors of the file", len(set(comfy_unet) & set(ours)), len(ours),
                    len(set(comfy_vae_state) & set(vae_file)), len(vae_file))

        tokenizer = args.comfyui_dir / "comfy" / "sd1_tokenizer"
        parts = load_animatediff_files(checkpoint, module, tokenizer, torch.float32)
        generator = torch.Generator().manual_seed(1)
        latents = torch.randn(1, 4, 2, 16, 16, generator=generator)
        context = torch.randn(1, 77, 768, generator=generator)
        timestep = torch.tensor([500])
        with torch.no_grad():
            ours_out = parts["denoiser"](latents, timestep, encoder_hidden_states=context.repeat_interleave(2, 0)).sample
            comfy.model_management.load_models_gpu([model])
            flat = latents[0].permute(1, 0, 2, 3)  # frames as a batch of images
            comfy_out = model.model.diffusion_model(flat.to(model.model.get_dtype()), timestep.repeat(2).float(),
                                                    context=context.repeat(2, 1, 1).to(model.model.get_dtype())).float()
        expected = comfy_out.permute(1, 0, 2, 3).unsqueeze(0)
        difference = float((ours_out.float() - expected).abs().max())
        scale = float(expected.abs().max())
        logger.info("UNet noise prediction: max |pack - ComfyUI| = %.3e (output max %.3f)", difference, scale)
        if difference > 2e-2 * scale:  # ComfyUI runs the fp16 file in its own dtype here; the pack in fp32
            failures.append(f"the pack's UNet differs from ComfyUI's by {difference:.3e} (output max {scale:.3f})")
        tokens = parts["tokenizer"]("a red square", padding="max_length", max_length=parts["tokenizer"].model_max_length).input_ids
        logger.info("tokenizer: %d positions, %s...", len(tokens), tokens[:5])
        if len(tokens) != 77:
            failures.append(f"the tokenizer pads to {len(tokens)} positions, not CLIP's 77")
    for failure in failures:
        logger.error("FAILED: %s", failure)
    if not failures:
        logger.info("SD1.5 layout check passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
