"""The Latte family: diffusers ``LattePipeline`` folders (Latte-1 text-to-video, the toy-world Latte).

- Denoiser ``transformer/`` (``LatteTransformer3DModel``): pairs of a spatial block (per frame, over the patches,
  with cross-attention to the prompt) and a temporal block (``temporal_transformer_blocks.i``, self-attention
  ``attn1`` over the frames of each patch, ``(B*patches, N, D)``, batch-major and patches row-major: UNet3D's
  frames-inner layout at patch resolution). A sinusoidal frame-position table of ``video_length`` rows is added
  before the first temporal block, so a Latte model runs exactly that many frames (16 on Latte-1).
- Everything around the denoiser is what the UNet3D family does (a 2-D ``AutoencoderKL`` frame by frame, a DDPM
  scheduler, epsilon / v / sample objective, DDIM inversion, diffusers' samplers), so this family inherits it.
- Motion sites: the temporal blocks; layer sets as shares of the depth (:mod:`.block_stack`, ``all`` first); the
  value embedding on a coarse grid (:data:`LATTE_VALUE_GRID_MAX_SIDE`: 2x2, where a finer one carries the reference's
  shape), brought back to the patches (bilinearly) inside the processor.
- Text: the text encoder ``model_index.json`` names (T5 on Latte-1, CLIP on the toy), 120 positions, padding zeroed;
  the denoiser gets a mask over the padding, which for one prompt is what ``LattePipeline`` does by cutting the
  padding off, and keeps the prompt and the negative prompt of a guided batch apart.
- Output: a model with learned variance (``out_channels`` twice the latent channels) gives the noise prediction in
  its first half, as ``LattePipeline`` reads it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..attention import MotionAttnProcessor, PlainFrameAttnProcessor
from ..errors import InvalidSettingError, ModelLoadError
from ..motion_sites import TemporalBlock
from ..text_encoding import encode_masked_prompts
from .block_stack import (
    LAYER_SETS, MEMORY_SAFETY, block_indices, describe_sites, diffusers_checkpointing, embedding_training_bytes,
    load_transformers_part, value_grid_level,
)
from . import unet3d_memory
from .unet3d import UNet3DFamily

if TYPE_CHECKING:
    from ..model_loading import VideoModel

#: Text positions of ``LattePipeline`` (a tokenizer with a shorter limit, the toy's CLIP, uses its own).
LATTE_TEXT_POSITIONS = 120
#: The layer sets, ``all`` first: a temporal block attends over a few frames, so every one is cheap.
LATTE_LAYER_SETS = ("all", *(name for name in LAYER_SETS if name != "all"))
#: The value embedding's grid on Latte: the patch grid halved until its longer side is at most this (the toy's 4x4
#: patches -> 2x2; Latte-1 at 512x512: 32x32 -> 2x2). Measured on the toy-world Latte (bench_motion_transfer.py, 16
#: references, raw mode on the first half of the steps; README "Latte"): on its 4x4 patch grid the value draws the
#: reference's shape into 8 % of clips (text 0.92, fidelity 0.96); at 2x2 2 % (text 0.98, fidelity 0.91). On the
#: first, patch-1 toy: 8x8 text 0.60, 4x4 0.77, 2x2 0.85, 1x1 0.83 with the motion lost (fidelity 0.70).
LATTE_VALUE_GRID_MAX_SIDE = 2
# Added to the cross-attention scores of padded text positions (diffusers' bias convention for Latte).
MASKED_SCORE = -10000.0
# Training memory of a Latte block pair, measured (CPU, fp32, Latte-1's blocks at 512 and 1152 tokens: the floor step
# of benchmarks/bench_training.py, peak RSS above the loaded model): elements kept per token, block and model width
# without checkpointing (22.2 and 22.3 measured), and with diffusers' per-block checkpointing (7.2 and 8.2: the blocks'
# inputs plus what the recomputes leave behind on CPU). Times block_stack.MEMORY_SAFETY; the embeddings' training
# state comes on top.
LATTE_STORED_PER_TOKEN_DIM = 23.0
LATTE_CHECKPOINTED_PER_TOKEN_DIM = 8.5
# Elements one block keeps per token while sampling (no gradients), in units of the model width: the attention's q,
# k, v and output, and the 4x feed-forward hidden layer before and after its activation.
SAMPLING_PER_TOKEN_DIM = 12


def patch_size(denoiser: nn.Module) -> int:
    return int(denoiser.config.patch_size)


def max_frames(denoiser: nn.Module) -> int:
    """Frames the temporal position table holds (``video_length``): the only clip length the model runs above 1."""
    return int(denoiser.config.video_length)


def temporal_sites(denoiser: nn.Module, value_level: int, indices: Sequence[int] | None = None) -> list[TemporalBlock]:
    """Motion sites ``temporal_transformer_blocks.i`` (attention ``...attn1``), all or ``indices``, value grid at
    ``value_level``."""
    blocks = denoiser.temporal_transformer_blocks
    chosen = range(len(blocks)) if indices is None else indices
    return [
        TemporalBlock(
            f"temporal_transformer_blocks.{i}", int(blocks[i].attn1.to_q.in_features), value_level,
            (f"temporal_transformer_blocks.{i}.attn1",),
        )
        for i in chosen
    ]


def text_mask_bias(text: torch.Tensor, frames: int) -> torch.Tensor | None:
    """The cross-attention bias over zeroed (padding) text rows of ``text`` ``(B, L, D)``: ``(B*frames, 1, L)``, 0
    where a row is kept and :data:`MASKED_SCORE` where it is padding; ``None`` when nothing is padding.

    Latte's spatial blocks run ``B*frames`` sequences with the prompt repeated per frame but pass the mask on as
    given, so it is repeated here.
    """
    keep = text.detach().abs().amax(dim=-1) > 0  # (B, L)
    if bool(keep.all()):
        return None
    bias = torch.zeros(keep.shape, dtype=text.dtype, device=text.device).masked_fill(~keep, MASKED_SCORE)
    return bias.repeat_interleave(frames, dim=0).unsqueeze(1)


def latte_forward(denoiser: nn.Module, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The denoiser's noise (or v / sample) prediction for ``latents`` ``(B, C, F, h, w)`` at ``timesteps`` ``(B,)``
    with the prompt ``text`` ``(B, L, D)``: masked over zeroed text rows, learned-variance channels dropped.

    Used by :meth:`LatteFamily.predict` and by the toy-world trainer, so both call the model the same way.
    """
    frames = latents.shape[2]
    output = denoiser(
        hidden_states=latents, timestep=timesteps, encoder_hidden_states=text,
        encoder_attention_mask=text_mask_bias(text, frames), return_dict=True,
    ).sample
    return output[:, : latents.shape[1]]


class LatteFamily(UNet3DFamily):
    name = "latte"
    denoiser_folder = "transformer"
    denoiser_classes = ("LatteTransformer3DModel",)
    layer_sets = LATTE_LAYER_SETS
    layer_set_help = (
        "all: every temporal block (the default); alternate: every other one; first_half / last_half: the first or "
        "last half of the blocks."
    )

    # ----- loading -----
    def load_components(self, folder: Path, index: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        """The transformer, SD's VAE, the text encoder and tokenizer ``model_index.json`` names, a DDIM scheduler."""
        from diffusers import AutoencoderKL, DDIMScheduler, LatteTransformer3DModel

        common = {"local_files_only": True, "low_cpu_mem_usage": False}
        try:
            return {
                "denoiser": LatteTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype, **common),
                "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, **common),
                "text_encoder": load_transformers_part(folder, index, "text_encoder", torch_dtype=dtype),
                "tokenizer": load_transformers_part(folder, index, "tokenizer"),
                "scheduler": DDIMScheduler.from_pretrained(folder, subfolder="scheduler", **common),
            }
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise ModelLoadError(f"Could not load {folder.name}: {str(exc)[:500]}") from None

    # ----- geometry -----
    def size_multiple(self, model: VideoModel) -> int:
        """The VAE factor times the patch size (16 on Latte-1)."""
        return self.vae_scale_factor(model) * patch_size(model.denoiser)

    def _check_frames(self, model: VideoModel, frames: int | None) -> None:
        needed = max_frames(model.denoiser)
        if frames is not None and frames not in (1, needed):
            raise InvalidSettingError(
                f"{model.name} runs exactly {needed} frames (its temporal position table has {needed} rows); "
                f"{frames} were asked for. Load the reference clip and sample with {needed} frames."
            )

    # ----- motion sites -----
    def find_sites(self, denoiser: nn.Module) -> list[TemporalBlock]:
        """Every temporal block, value grid at the patch grid."""
        return temporal_sites(denoiser, int(math.log2(patch_size(denoiser))))

    def select_sites(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
        self.check_layer_set(layer_set)
        level = value_grid_level(latent_height, latent_width, patch_size(denoiser), LATTE_VALUE_GRID_MAX_SIDE)
        return temporal_sites(denoiser, level, block_indices(len(denoiser.temporal_transformer_blocks), layer_set))

    def describe_layer_set(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> str:
        sites = self.select_sites(denoiser, layer_set, latent_height, latent_width)
        count = len(denoiser.temporal_transformer_blocks)
        return describe_sites(sites, count, "temporal blocks", latent_height, latent_width)

    def build_processors(
        self,
        model: VideoModel,
        sites: Sequence[TemporalBlock] = (),
        query_key: Mapping[str, torch.Tensor] | None = None,
        value: Mapping[str, torch.Tensor] | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> dict[str, nn.Module]:
        """Processors on every temporal ``attn1`` (plain ones where no site is selected, same kernel); a site's value
        embedding is brought from its grid to the run's patch grid."""
        if grid is None:
            raise ValueError("Latte processors need the run's latent grid (frames, height, width)")
        frames, latent_h, latent_w = grid
        self._check_frames(model, frames)
        patch = patch_size(model.denoiser)
        tokens = (math.ceil(latent_h / patch), math.ceil(latent_w / patch))
        selected = {site.name: site for site in sites}
        query_key, value = query_key or {}, value or {}
        processors: dict[str, nn.Module] = {}
        for block in self.find_sites(model.denoiser):
            attention = block.attention_names[0]
            site = selected.get(block.name)
            if site is None:
                processors[attention] = PlainFrameAttnProcessor(model.kernel)
            else:
                processors[attention] = MotionAttnProcessor(
                    query_key.get(site.name), value.get(attention), model.kernel, site.grid(latent_h, latent_w), tokens
                )
        return processors

    def gradient_checkpointing(self, denoiser: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
        """diffusers' own per-block checkpointing of ``LatteTransformer3DModel``, switched back off on exit."""
        return diffusers_checkpointing(denoiser, enabled)

    def spatial_lora_sites(self, denoiser: nn.Module) -> list[str]:
        """The spatial blocks' per-frame self-attention (``transformer_blocks.i.attn1``)."""
        return [f"transformer_blocks.{i}.attn1" for i in range(len(denoiser.transformer_blocks))]

    # ----- text -----
    def encode_prompt(self, model: VideoModel, prompt: str) -> torch.Tensor:
        """Masked encoding with the padding zeroed (120 positions): ``(1, L, D)`` in the model's dtype."""
        return encode_masked_prompts(model.tokenizer, model.text_encoder, [prompt], LATTE_TEXT_POSITIONS).to(model.dtype)

    # ----- objective -----
    def predict(self, model: VideoModel, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> torch.Tensor:
        """``latents`` ``(B, C, F, h, w)`` at ``timestep`` (an int, a 0-d or ``(B,)`` tensor) with ``text`` ``(B, L, D)``."""
        batch, frames = latents.shape[0], latents.shape[2]
        self._check_frames(model, frames)
        steps = torch.as_tensor(timestep, device=latents.device).reshape(-1)
        steps = steps.expand(batch) if steps.numel() == 1 else steps
        return latte_forward(model.denoiser, latents.to(model.dtype), steps, text.to(model.dtype))

    # ----- memory -----
    def _tokens(self, model: VideoModel, frames: int, latent_height: int, latent_width: int) -> int:
        patch = patch_size(model.denoiser)
        return frames * math.ceil(latent_height / patch) * math.ceil(latent_width / patch)

    def estimate_training_bytes(
        self, model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str
    ) -> int:
        """Every block from the first site's layer on (its spatial and temporal block) keeps
        :data:`LATTE_STORED_PER_TOKEN_DIM` (or, checkpointed, :data:`LATTE_CHECKPOINTED_PER_TOKEN_DIM`) elements per
        token and model width, times :data:`.block_stack.MEMORY_SAFETY`; plus the embeddings' training state.
        ``benchmarks/bench_training.py --family latte`` measures the peaks and ``benchmarks/check_memory_estimate.py``
        compares this estimate with them."""
        config = model.denoiser.config
        element = torch.finfo(model.dtype).bits // 8
        dim = int(config.num_attention_heads * config.attention_head_dim)
        count = len(model.denoiser.temporal_transformer_blocks)
        known = layer_set if layer_set in LAYER_SETS else "all"
        first = block_indices(count, known)[0]
        tokens = self._tokens(model, frames, latent_height, latent_width)
        per_token = LATTE_CHECKPOINTED_PER_TOKEN_DIM if checkpointing else LATTE_STORED_PER_TOKEN_DIM
        activations = MEMORY_SAFETY * 2 * (count - first) * tokens * per_token * dim * element
        sites = self.select_sites(model.denoiser, known, latent_height, latent_width)
        return int(activations) + embedding_training_bytes(sites, frames, latent_height, latent_width)

    def estimate_sampling_bytes(self, model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
        """A floor: latents (fp32, batch 2 with guidance), one block's working set (``SAMPLING_PER_TOKEN_DIM * dim``
        per token) or the 2-D VAE decode, whichever is larger."""
        config = model.denoiser.config
        batch = 2 if guided else 1
        element = torch.finfo(model.dtype).bits // 8
        dim = int(config.num_attention_heads * config.attention_head_dim)
        working = batch * self._tokens(model, frames, latent_height, latent_width) * SAMPLING_PER_TOKEN_DIM * dim * element
        decode = unet3d_memory.vae_decode_bytes(model, frames, latent_height, latent_width)
        return int(unet3d_memory.sampling_latent_bytes(model, frames, latent_height, latent_width, guided) + max(working, decode))
