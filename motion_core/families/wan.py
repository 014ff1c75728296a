"""The Wan family: diffusers ``WanPipeline`` folders (Wan 2.1/2.2 text-to-video, the toy-world Wan).

- Denoiser ``transformer/`` (``WanTransformer3DModel``), VAE ``vae/`` (``AutoencoderKLWan``: 4 video frames per
  latent frame after the first, 8x8 pixels per position), a text encoder and tokenizer of whatever transformers
  classes ``model_index.json`` names (UMT5 + T5 tokenizer on Wan, the toy's CLIP), a flow scheduler config whose
  shift (``shift`` or ``flow_shift``) sets the training noise levels and the sampling schedule.
- Motion sites: ``blocks.i.attn1`` (self-attention over all tokens), layer sets as fractions of depth so that they
  mean the same on a 2-block toy and on the 30-block 1.3B (:data:`LAYER_SETS`). The value embedding sits on a grid
  coarser than the token grid on large latents (:func:`value_grid_level`), keeping it small: 8x13 at 480x832.
- Objective: flow matching (:mod:`motion_core.flow_matching`), velocity target; inversion and sampling by flow
  Euler steps (:mod:`.flow`). Clips are used at 1 + 4k frames (the longest such prefix, logged); embeddings are
  at latent-frame resolution, so they steer motion in steps of 4 video frames.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import flow_matching as fm
from ..attention import AttentionKernel, resolve_kernel
from ..errors import InvalidSettingError, ModelLoadError
from ..motion_sites import TemporalBlock
from ..text_encoding import encode_masked_prompts
from .base import ModelFamily, Sampler
from .block_stack import (
    LAYER_SETS, block_indices, describe_sites, diffusers_checkpointing, embedding_training_bytes, load_transformers_part,
    VALUE_GRID_MAX_SIDE, training_activation_bytes, value_grid_level,
)
from .flow import FlowEulerSampler, flow_euler_invert
from .wan_attention import WanMotionAttnProcessor

if TYPE_CHECKING:
    from ..model_loading import VideoModel

logger = logging.getLogger(__name__)

TEMPORAL_FACTOR = 4  # video frames per latent frame after the first (Wan 2.1/2.2 VAEs)
SCHEDULERS = ("euler",)

# AutoencoderKLWan works on 4 frames at a time with cached causal convolutions; live maps per element of
# (frames of a chunk x pixels x base width), a floor counted from its encoder's first stage.
WAN_VAE_MAPS = 6

#: The value embedding's grid on Wan: the token grid halved until its longer side is at most this (block_stack's
#: rule: 8x13 at 480x832). On the toy-world Wan a 2x2 grid (Latte's) moved less than the 6x6 token grid (the pack's
#: default fidelity 0.66 against 0.73, README "Measurements"), so Wan keeps the finer grid.
WAN_VALUE_GRID_MAX_SIDE = VALUE_GRID_MAX_SIDE


def block_sites(widths: Sequence[int], value_level: int, indices: Sequence[int] | None = None) -> list[TemporalBlock]:
    """Motion sites ``blocks.i`` (attention ``blocks.i.attn1``: diffusers' names, which the embedding file keeps on
    every path) of a Wan transformer whose block ``i`` self-attention is ``widths[i]`` wide; all blocks or
    ``indices``; the value embedding at grid level ``value_level``."""
    chosen = range(len(widths)) if indices is None else indices
    return [TemporalBlock(f"blocks.{i}", int(widths[i]), value_level, (f"blocks.{i}.attn1",)) for i in chosen]


def selected_sites(widths: Sequence[int], patch: int, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
    """The sites ``layer_set`` selects, with the value grid of a ``latent_height x latent_width`` run."""
    level = value_grid_level(latent_height, latent_width, patch, WAN_VALUE_GRID_MAX_SIDE)
    return block_sites(widths, level, block_indices(len(widths), layer_set))



def training_bytes(
    widths: Sequence[int], ffn_dim: int, patch: tuple[int, int], frames: int, latent_height: int, latent_width: int,
    layer_set: str, element: int, checkpointing: bool,
) -> int:
    """Training memory of a Wan with blocks of ``widths`` on ``frames`` x ``latent_height`` x ``latent_width`` latents
    (see :meth:`WanFamily.estimate_training_bytes`): the activations of every block from the first site on, plus the
    embeddings' training state. The diffusers path and the native trainer both call this."""
    tokens = frames * math.ceil(latent_height / patch[0]) * math.ceil(latent_width / patch[1])
    first = block_indices(len(widths), layer_set)[0]
    sites = selected_sites(widths, patch[0], layer_set, latent_height, latent_width)
    return (training_activation_bytes(tokens, max(widths), ffn_dim, len(widths) - first, element, checkpointing)
            + embedding_training_bytes(sites, frames, latent_height, latent_width))


def _patch(denoiser: nn.Module) -> tuple[int, int, int]:
    return tuple(int(p) for p in denoiser.config.patch_size)  # type: ignore[return-value]


def _widths(denoiser: nn.Module) -> list[int]:
    return [int(block.attn1.to_q.in_features) for block in denoiser.blocks]


class WanFamily(ModelFamily):
    name = "wan"
    denoiser_folder = "transformer"
    denoiser_classes = ("WanTransformer3DModel",)
    layer_sets = tuple(LAYER_SETS)
    layer_set_help = (
        "alternate: every other block (the default); all: every block; first_half / last_half: the first or last "
        "half of the blocks."
    )
    schedulers = SCHEDULERS
    losses = ("base", "debiased_temporal")
    min_frames = 1 + TEMPORAL_FACTOR

    # ----- loading -----
    def load_components(self, folder: Path, index: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        import diffusers
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from safetensors import SafetensorError

        common = {"local_files_only": True, "low_cpu_mem_usage": False}
        scheduler_entry = index.get("scheduler")
        scheduler_class = scheduler_entry[1] if isinstance(scheduler_entry, list) and len(scheduler_entry) == 2 else None
        scheduler_cls = getattr(diffusers, str(scheduler_class), None)
        if scheduler_cls is None or not str(scheduler_class).endswith("Scheduler"):
            raise ModelLoadError(f"{folder.name}/model_index.json names {scheduler_entry!r} for its scheduler; expected a diffusers scheduler.")
        try:
            parts = {
                "denoiser": _load_transformer(WanTransformer3DModel, folder / "transformer", dtype),
                "vae": AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32, **common),
                "text_encoder": load_transformers_part(folder, index, "text_encoder", torch_dtype=dtype),
                "tokenizer": load_transformers_part(folder, index, "tokenizer"),
                "scheduler": scheduler_cls.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
            }
        except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
            raise ModelLoadError(f"Could not load {folder.name}: {str(exc)[:500]}") from None
        logger.info("%s: flow shift %g from its scheduler config", folder.name, fm.shift_from_config(parts["scheduler"].config))
        return parts

    def resolve_kernel(self, requested: str, device: torch.device) -> AttentionKernel:
        """Always ``sdpa`` (diffusers' attention dispatch): Wan attends over every token of the clip, where the
        matmul kernel would build the full score matrix; the pack's matmul/xformers choice is for UNet3D
        temporal attention over a few frames."""
        if requested not in ("auto", "sdpa"):
            resolve_kernel(requested, device)  # an unknown name is still refused
            logger.info("Wan models use SDPA attention; the %r choice applies to UNet3D temporal attention only.", requested)
        return "sdpa"

    # ----- geometry -----
    def vae_scale_factor(self, model: VideoModel) -> int:
        return int(getattr(model.vae.config, "scale_factor_spatial", None) or 2 ** (len(model.vae.config.dim_mult) - 1))

    def size_multiple(self, model: VideoModel) -> int:
        """The VAE factor times the transformer's patch size (16 on Wan 2.1)."""
        _, patch_h, patch_w = _patch(model.denoiser)
        return self.vae_scale_factor(model) * math.lcm(patch_h, patch_w)

    def round_frames(self, frames: int) -> int:
        rounded = (frames - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1 if frames >= 1 else frames
        if rounded != frames:
            logger.info(
                "Wan models take 1 + 4k frames (the VAE folds 4 frames into each latent frame after the first); "
                "using %d of the %d frames.", rounded, frames,
            )
        return rounded

    def latent_frames(self, frames: int) -> int:
        return (frames - 1) // TEMPORAL_FACTOR + 1

    def stored_latent_frames(self, frames: int) -> int | None:
        return self.latent_frames(frames)

    def training_facts(self, model: VideoModel) -> dict[str, Any]:
        return {"flow_shift": self.shift(model)}

    def shift(self, model: VideoModel) -> float:
        """The flow shift of the model's scheduler config (training noise levels and sampling schedule)."""
        return fm.shift_from_config(model.scheduler.config)

    # ----- motion sites -----
    def find_sites(self, denoiser: nn.Module) -> list[TemporalBlock]:
        """``blocks.i`` with its ``attn1``, the value grid at the token grid (level 1 for patch 2)."""
        patch = _patch(denoiser)[1]
        return block_sites(_widths(denoiser), int(math.log2(patch)))

    def _indices(self, count: int, layer_set: str) -> list[int]:
        self.check_layer_set(layer_set)
        return block_indices(count, layer_set)

    def select_sites(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
        self.check_layer_set(layer_set)
        return selected_sites(_widths(denoiser), _patch(denoiser)[1], layer_set, latent_height, latent_width)

    def describe_layer_set(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> str:
        sites = self.select_sites(denoiser, layer_set, latent_height, latent_width)
        return describe_sites(sites, len(denoiser.blocks), "blocks", latent_height, latent_width)

    def build_processors(
        self,
        model: VideoModel,
        sites: Sequence[TemporalBlock] = (),
        query_key: Mapping[str, torch.Tensor] | None = None,
        value: Mapping[str, torch.Tensor] | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> dict[str, nn.Module]:
        """A :class:`WanMotionAttnProcessor` on the ``attn1`` of each site; every other layer keeps diffusers' own."""
        if not sites:
            return {}
        if grid is None:
            raise ValueError("Wan processors need the run's latent grid (frames, height, width)")
        frames, latent_h, latent_w = grid
        _, patch_h, patch_w = _patch(model.denoiser)
        tokens = (frames, latent_h // patch_h, latent_w // patch_w)
        query_key, value = query_key or {}, value or {}
        return {
            attention: WanMotionAttnProcessor(query_key.get(site.name), value.get(attention), site.grid(latent_h, latent_w), tokens)
            for site in sites
            for attention in site.attention_names
        }

    def gradient_checkpointing(self, denoiser: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
        """diffusers' own per-block checkpointing of ``WanTransformer3DModel``, switched back off on exit."""
        return diffusers_checkpointing(denoiser, enabled)

    def check_loss(self, loss: str) -> None:
        if loss not in self.losses:
            raise InvalidSettingError(
                f"The {loss} loss is not available for Wan models: it trains a spatial LoRA on per-frame attention, "
                "which a Wan transformer does not have (its self-attention spans all frames at once, and a single "
                "latent frame on its own stands for 4 video frames, not an image). Use debiased_temporal "
                "(motion of deforming objects, appearance debiased) or base."
            )

    # ----- text and VAE -----
    def encode_prompt(self, model: VideoModel, prompt: str) -> torch.Tensor:
        """Masked encoding with the padding zeroed, as Wan's pipeline does: ``(1, L, D)`` in the model's dtype."""
        return encode_masked_prompts(model.tokenizer, model.text_encoder, [prompt]).to(model.dtype)

    def _latent_stats(self, model: VideoModel, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        config = model.vae.config
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(config.latents_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def encode_frames(self, model: VideoModel, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The whole clip through the causal VAE, posterior mode (deterministic, as Wan's video-to-video pipeline and
        ComfyUI encode), normalised ``(z - latents_mean) / latents_std``. ``generator`` is not used."""
        pixels = frames.permute(3, 0, 1, 2).unsqueeze(0).to(model.device, torch.float32) * 2.0 - 1.0  # (1, 3, F, H, W)
        latents = model.vae.encode(pixels).latent_dist.mode()
        mean, std = self._latent_stats(model, latents)
        return ((latents - mean) / std).float()

    def decode_latents(self, model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._latent_stats(model, latents)
        video = model.vae.decode(latents.to(torch.float32) * std + mean).sample  # (1, 3, F, H, W)
        images = (video[0] / 2.0 + 0.5).clamp(0.0, 1.0)
        return images.permute(1, 2, 3, 0).cpu()

    # ----- objective -----
    def draw_timestep(self, model: VideoModel, generator: torch.Generator) -> torch.Tensor:
        """A noise level sigma ``(1,)``: uniform, then bent by the model's shift (the shifted table sampled uniformly)."""
        return fm.draw_sigmas(1, self.shift(model), generator)

    def add_noise(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return fm.noisy_latents(latents, noise, timestep)

    def training_target(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return fm.velocity_target(latents, noise)

    def predict(self, model: VideoModel, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> torch.Tensor:
        """Velocity at noise level ``timestep`` (a sigma: a float or a ``(1,)``/``(B,)`` tensor; called with sigma*1000)."""
        batch = latents.shape[0]
        steps = fm.model_timestep(torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)).to(latents.device)
        steps = steps.expand(batch) if steps.numel() == 1 else steps
        return model.denoiser(
            hidden_states=latents.to(model.dtype), timestep=steps, encoder_hidden_states=text, return_dict=True
        ).sample

    def invert(
        self, model: VideoModel, latents: torch.Tensor, text: torch.Tensor, steps: int,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        return flow_euler_invert(model, latents, text, steps, self.shift(model), on_step)

    def make_sampler(self, model: VideoModel, scheduler: str, steps: int, seed: int) -> Sampler:
        self.check_scheduler(scheduler)
        return FlowEulerSampler(steps, self.shift(model))

    # ----- memory -----
    def _tokens(self, model: VideoModel, frames: int, latent_height: int, latent_width: int) -> int:
        _, patch_h, patch_w = _patch(model.denoiser)
        return frames * math.ceil(latent_height / patch_h) * math.ceil(latent_width / patch_w)

    def estimate_training_bytes(
        self, model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str
    ) -> int:
        """Activations of every block from the first site on (no gradient flows to the blocks before it), each
        keeping ``24*dim + 4*ffn_dim`` elements per token; with diffusers' checkpointing only each block's input
        (``dim`` per token) is kept, plus three blocks' worth during a block's recompute (its activations, their
        gradients, the backward's temporaries). Times :data:`MEMORY_SAFETY`. Plus the embeddings' training state
        (:func:`.block_stack.embedding_training_bytes`).

        ``benchmarks/check_wan_memory_estimate.py`` measures peak RSS above the loaded model (CPU, fp32, all blocks
        of a 4-block Wan with dim 512 and ffn 1536, 17 frames at 128 / 256 / 384 px = 320 / 1280 / 2880 tokens).
        CPU RSS is noisy on a shared machine (the same case varied by up to 1.7x between runs); the factors keep the
        estimate above the highest peak of three runs. SDPA on CPU keeps no score matrix: nothing grows with
        tokens squared. Not yet measured on a GPU or on the 1.3B.
        """
        known = layer_set if layer_set in LAYER_SETS else "all"
        self.check_layer_set(known)
        _, patch_h, patch_w = _patch(model.denoiser)
        return training_bytes(_widths(model.denoiser), int(model.denoiser.config.ffn_dim), (patch_h, patch_w), frames,
                              latent_height, latent_width, known, torch.finfo(model.dtype).bits // 8, checkpointing)

    def estimate_vae_encode_bytes(self, model: VideoModel, frames: int, height: int, width: int) -> int:
        """The clip in fp32 plus the encoder's live maps for one 4-frame chunk (a floor, not measured)."""
        base = int(model.vae.config.base_dim)
        chunk = min(frames, TEMPORAL_FACTOR)
        return int((3 * frames + WAN_VAE_MAPS * chunk * base) * height * width * 4)

    def estimate_sampling_bytes(self, model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
        """A floor: latents (fp32, batch 2 with guidance), one block's working set (``4*dim + ffn_dim`` per token),
        and the VAE decode (the decoded clip plus one chunk's maps); the transformer and the VAE run one after the
        other, so the larger counts. (SDPA keeps no score matrix, so none is counted.)"""
        config = model.denoiser.config
        batch = 2 if guided else 1
        element = torch.finfo(model.dtype).bits // 8
        tokens = self._tokens(model, frames, latent_height, latent_width)
        dim = int(config.num_attention_heads * config.attention_head_dim)
        working = batch * tokens * (4 * dim + int(config.ffn_dim)) * element
        latents = 4 * batch * model.latent_channels * frames * latent_height * latent_width * 4
        pixels = latent_height * latent_width * self.vae_scale_factor(model) ** 2
        video_frames = 1 + (frames - 1) * TEMPORAL_FACTOR
        base = int(model.vae.config.decoder_base_dim or model.vae.config.base_dim)
        decode = (2 * video_frames * 3 + WAN_VAE_MAPS * TEMPORAL_FACTOR * base) * pixels * 4
        return int(latents + max(working, decode))


def _load_transformer(cls: type, folder: Path, dtype: torch.dtype) -> nn.Module:
    """Build ``cls`` from ``folder/config.json`` and load its safetensors weights (one file or shards), in ``dtype``
    except the modules the class keeps in fp32.

    diffusers' ``from_pretrained`` refuses this class without the ``accelerate`` package (its fp32-kept modules need
    low-memory loading there), which a ComfyUI install need not have; this path needs nothing beyond safetensors.
    """
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise OSError(f"no .safetensors weights in {folder}")
    model = cls.from_config(cls.load_config(folder))
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file)))
    model.load_state_dict(state, strict=True)
    keep = tuple(getattr(cls, "_keep_in_fp32_modules", None) or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not any(part in name for part in keep):
            tensor.data = tensor.data.to(dtype)
    return model


