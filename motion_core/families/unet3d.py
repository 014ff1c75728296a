"""The UNet3D family: ``UNet3DConditionModel`` text-to-video models (ZeroScope, ModelScope T2V, VideoCrafter2, the
bundled toy-world model) with a 2-D ``AutoencoderKL``, a CLIP text encoder and a DDPM scheduler.

Motion sites are the temporal transformer blocks (:mod:`.unet3d_layers`), the objective is the scheduler's DDPM
one with DDIM inversion (:mod:`.ddpm`), sampling uses diffusers' schedulers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ModelLoadError
from ..motion_sites import TemporalBlock
from . import ddpm, unet3d_memory
from .base import SEED_LIMIT, ModelFamily, Sampler, SamplerStep
from .unet3d_checkpointing import gradient_checkpointing
from .unet3d_layers import LAYER_SETS, build_processors, describe_layer_set, find_temporal_blocks, select_temporal_blocks
from .unet3d_lora import spatial_attention_names
from .unet3d_memory import VAE_CHUNK_FRAMES

if TYPE_CHECKING:
    from ..model_loading import VideoModel

# Sampler name -> diffusers scheduler class, built from the model's own scheduler config.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++_2m": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}


class DiffusersSampler(Sampler):
    """A diffusers scheduler driving the loop; its ``step`` gets its own generator when it draws noise."""

    def __init__(self, scheduler: Any, steps: int, seed: int, device: torch.device) -> None:
        self.scheduler = scheduler
        scheduler.set_timesteps(steps, device=device)
        self.timesteps = scheduler.timesteps
        self.start_scale = scheduler.init_noise_sigma
        self.step_kwargs: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            # Its own stream, distinct from the start noise's; wraps so that every seed up to 2**64 - 1 works.
            self.step_kwargs["generator"] = torch.Generator(device=device).manual_seed((seed + 1) % SEED_LIMIT)

    def model_input(self, latents: torch.Tensor, timestep: Any) -> torch.Tensor:
        return self.scheduler.scale_model_input(latents, timestep)

    def step(self, output: torch.Tensor, timestep: Any, latents: torch.Tensor) -> SamplerStep:
        result = self.scheduler.step(output, timestep, latents, **self.step_kwargs)
        return SamplerStep(result.prev_sample, getattr(result, "pred_original_sample", None))


class UNet3DFamily(ModelFamily):
    name = "unet3d"
    denoiser_folder = "unet"
    denoiser_classes = ("UNet3DConditionModel",)
    layer_sets = LAYER_SETS
    layer_set_help = (
        "paper: the deepest temporal blocks (1280-channel on ZeroScope). paper+640 adds the next level. "
        "all: every temporal block."
    )
    schedulers = tuple(SCHEDULERS)
    losses = ("base", "debiased_temporal", "debiased_hybrid")

    # ----- loading -----
    def load_components(self, folder: Path, index: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        """The denoiser (the diffusers class :attr:`denoiser_classes` names) from ``unet/`` with SD's VAE, CLIP text
        encoder and tokenizer and a DDIM scheduler of the folder's config."""
        import diffusers
        from diffusers import AutoencoderKL, DDIMScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        denoiser_class = getattr(diffusers, self.denoiser_classes[0])
        common = {"local_files_only": True, "low_cpu_mem_usage": False}
        try:
            return {
                "denoiser": denoiser_class.from_pretrained(folder, subfolder=self.denoiser_folder, torch_dtype=dtype, **common),
                "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, **common),
                "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype, **common),
                "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", **common),
                "scheduler": DDIMScheduler.from_pretrained(folder, subfolder="scheduler", **common),
            }
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load {folder.name}: {str(exc)[:500]}") from None

    # ----- geometry -----
    def vae_scale_factor(self, model: VideoModel) -> int:
        return 2 ** (len(model.vae.config.block_out_channels) - 1)

    def size_multiple(self, model: VideoModel) -> int:
        """The VAE factor times the UNet's downsampling."""
        return self.vae_scale_factor(model) * 2 ** (len(model.denoiser.config.block_out_channels) - 1)

    # ----- motion sites -----
    def find_sites(self, denoiser: nn.Module) -> list[TemporalBlock]:
        return find_temporal_blocks(denoiser)

    def select_sites(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
        return select_temporal_blocks(denoiser, layer_set)

    def describe_layer_set(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> str:
        return describe_layer_set(denoiser, layer_set)

    def build_processors(
        self,
        model: VideoModel,
        sites: Sequence[TemporalBlock] = (),
        query_key: Mapping[str, torch.Tensor] | None = None,
        value: Mapping[str, torch.Tensor] | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> dict[str, nn.Module]:
        """Processors on every temporal attention layer (plain ones where no site is selected, same kernel)."""
        return build_processors(model.denoiser, model.kernel, list(sites), query_key, value)

    def gradient_checkpointing(self, denoiser: nn.Module, enabled: bool):
        return gradient_checkpointing(denoiser, enabled)

    def spatial_lora_sites(self, denoiser: nn.Module) -> list[str]:
        return spatial_attention_names(denoiser)

    # ----- text and VAE -----
    def encode_prompt(self, model: VideoModel, prompt: str) -> torch.Tensor:
        """CLIP features of ``prompt`` padded to the tokenizer's length: ``(1, L, D)`` in the model's dtype."""
        tokens = model.tokenizer(
            prompt, padding="max_length", max_length=model.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )
        return model.text_encoder(tokens.input_ids.to(model.device))[0].to(model.dtype)

    def encode_frames(self, model: VideoModel, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Frame by frame (chunks of :data:`VAE_CHUNK_FRAMES`), a posterior sample scaled by the VAE's scaling factor."""
        pixels = frames.permute(0, 3, 1, 2).to(model.device, torch.float32) * 2.0 - 1.0
        chunks = []
        for start in range(0, pixels.shape[0], VAE_CHUNK_FRAMES):
            posterior = model.vae.encode(pixels[start : start + VAE_CHUNK_FRAMES]).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator, device=generator.device if generator else None)
            chunks.append(posterior.mean + posterior.std * noise.to(posterior.mean.device))
        latents = torch.cat(chunks) * model.vae.config.scaling_factor  # (F, C, h, w)
        return latents.permute(1, 0, 2, 3).unsqueeze(0)

    def decode_latents(self, model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
        flat = latents[0].permute(1, 0, 2, 3).to(torch.float32) / model.vae.config.scaling_factor
        frames = [model.vae.decode(flat[i : i + VAE_CHUNK_FRAMES]).sample for i in range(0, flat.shape[0], VAE_CHUNK_FRAMES)]
        images = (torch.cat(frames) / 2.0 + 0.5).clamp(0.0, 1.0)
        return images.permute(0, 2, 3, 1).cpu()

    # ----- objective -----
    def draw_timestep(self, model: VideoModel, generator: torch.Generator) -> torch.Tensor:
        """A uniform integer timestep of the scheduler's training table."""
        return torch.randint(0, model.scheduler.config.num_train_timesteps, (1,), generator=generator)

    def add_noise(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return ddpm.add_noise(model.scheduler, latents, noise, timestep)

    def training_target(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return ddpm.training_target(model.scheduler, latents, noise, timestep)

    def predict(self, model: VideoModel, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> torch.Tensor:
        return model.denoiser(latents.to(model.dtype), timestep, encoder_hidden_states=text).sample

    def invert(
        self, model: VideoModel, latents: torch.Tensor, text: torch.Tensor, steps: int,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        return ddpm.ddim_invert(model, latents, text, steps, on_step)

    def make_sampler(self, model: VideoModel, scheduler: str, steps: int, seed: int) -> Sampler:
        import diffusers

        self.check_scheduler(scheduler)
        built = getattr(diffusers, SCHEDULERS[scheduler]).from_config(model.scheduler.config)
        return DiffusersSampler(built, steps, seed, model.device)

    # ----- memory -----
    def estimate_training_bytes(
        self, model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str
    ) -> int:
        return unet3d_memory.estimate_training_bytes(model, frames, latent_height, latent_width, checkpointing, layer_set)

    def estimate_vae_encode_bytes(self, model: VideoModel, frames: int, height: int, width: int) -> int:
        return unet3d_memory.estimate_vae_encode_bytes(model, frames, height, width)

    def estimate_sampling_bytes(self, model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
        return unet3d_memory.estimate_sampling_bytes(model, frames, latent_height, latent_width, guided)
