"""The interface every model family implements: what training, inversion, sampling and the file format ask of a model.

A family knows its denoiser's motion sites (where the embeddings go, their token layout and value grid), how text
and timesteps go in, its training objective and sampler, how its VAE maps frames to latents, how its folder loads
and how much memory a run takes. Code outside :mod:`motion_core.families` calls these methods and never asks which
family a model is.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..attention import AttentionKernel, resolve_kernel
from ..errors import InvalidSettingError
from ..motion_sites import TemporalBlock

if TYPE_CHECKING:
    from ..model_loading import VideoModel

SEED_LIMIT = 2**64  # seeds are 0 .. 2**64 - 1, as ComfyUI's seed widgets offer
# A layer set or scheduler of this name means "the model family's default" (the first of its own names), so one
# default serves every family: UNet3D resolves it to paper / ddim, Wan to alternate / euler.
FAMILY_DEFAULT = "auto"


@dataclass
class SamplerStep:
    """What one denoising step gives back: the next latent and, when the sampler knows it, the predicted clean one."""

    latents: torch.Tensor
    predicted_clean: torch.Tensor | None


class Sampler(ABC):
    """One generation's denoising schedule (built per run by :meth:`ModelFamily.make_sampler`).

    Attributes:
        timesteps: what the loop iterates over, one model call each (passed back to :meth:`model_input` and
            :meth:`step`, and to :meth:`ModelFamily.predict`).
        start_scale: the start latent is unit noise times this.
    """

    timesteps: Sequence[Any]
    start_scale: float = 1.0

    def model_input(self, latents: torch.Tensor, timestep: Any) -> torch.Tensor:
        """The denoiser's input for ``latents`` at ``timestep`` (most samplers pass it through)."""
        return latents

    @abstractmethod
    def step(self, output: torch.Tensor, timestep: Any, latents: torch.Tensor) -> SamplerStep:
        """Move ``latents`` one step with the (guided) model ``output``."""


class ModelFamily(ABC):
    """A kind of video denoiser (UNet3D, Wan, ...) and everything the pack needs to know about it.

    Attributes:
        name: stored in embedding files (``EmbeddingInfo.family``).
        denoiser_folder: subfolder of the diffusers model folder holding the denoiser (``unet``, ``transformer``).
        denoiser_classes: diffusers class names of that denoiser which this family serves.
        layer_sets: the layer-set names it accepts (the first is its default).
        layer_set_help: one line per layer set, for tooltips.
        schedulers: the sampler names it accepts.
        losses: the training losses it accepts.
        min_frames: the fewest video frames a training clip may have.
    """

    name: str
    denoiser_folder: str
    denoiser_classes: tuple[str, ...]
    layer_sets: tuple[str, ...]
    layer_set_help: str
    schedulers: tuple[str, ...]
    losses: tuple[str, ...]
    min_frames: int = 2

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    # ----- loading -----
    def required_parts(self) -> tuple[str, ...]:
        """Subfolders a complete model folder has besides the denoiser's."""
        return ("vae", "text_encoder", "tokenizer", "scheduler")

    @abstractmethod
    def load_components(self, folder: Path, index: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
        """Load ``denoiser``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` from ``folder``.

        ``index`` is the folder's ``model_index.json``. Raises :class:`ModelLoadError` on failure.
        """

    def resolve_kernel(self, requested: str, device: torch.device) -> AttentionKernel:
        """The attention kernel of the pack's processors for the user's ``attention`` choice."""
        return resolve_kernel(requested, device)

    # ----- geometry -----
    @abstractmethod
    def vae_scale_factor(self, model: VideoModel) -> int:
        """Pixels per latent position along each side."""

    @abstractmethod
    def size_multiple(self, model: VideoModel) -> int:
        """Pixel sizes must be multiples of this."""

    def latent_channels(self, model: VideoModel) -> int:
        return int(model.denoiser.config.in_channels)

    def round_frames(self, frames: int) -> int:
        """The video frame count a clip of ``frames`` frames is used at (logged when it changes)."""
        return frames

    def latent_frames(self, frames: int) -> int:
        """Latent frames of ``frames`` video frames: N of the embeddings."""
        return frames

    def stored_latent_frames(self, frames: int) -> int | None:
        """``EmbeddingInfo.latent_frames`` of a run on ``frames`` video frames: ``None`` where N is the video frames."""
        return None

    def training_facts(self, model: VideoModel) -> dict[str, Any]:
        """Family facts stored in a trained embedding's ``extra`` (e.g. the flow shift it was trained with)."""
        return {}

    # ----- motion sites -----
    @abstractmethod
    def find_sites(self, denoiser: nn.Module) -> list[TemporalBlock]:
        """Every site of ``denoiser`` that can carry embeddings, in module order."""

    @abstractmethod
    def select_sites(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> list[TemporalBlock]:
        """The sites of ``layer_set`` for a latent of that size (a family may size the value grid by it)."""

    @abstractmethod
    def describe_layer_set(self, denoiser: nn.Module, layer_set: str, latent_height: int, latent_width: int) -> str:
        """One line saying which sites ``layer_set`` picks."""

    @abstractmethod
    def build_processors(
        self,
        model: VideoModel,
        sites: Sequence[TemporalBlock] = (),
        query_key: Mapping[str, torch.Tensor] | None = None,
        value: Mapping[str, torch.Tensor] | None = None,
        grid: tuple[int, int, int] | None = None,
    ) -> dict[str, nn.Module]:
        """Attention processors to install (module name -> processor, each with an ``enabled`` switch).

        ``sites`` get their embeddings; ``grid`` is the latent ``(frames, height, width)`` of the run.
        """

    def gradient_checkpointing(self, denoiser: nn.Module, enabled: bool) -> contextlib.AbstractContextManager[None]:
        """A context that recomputes the denoiser's activations in the backward pass while active."""
        return contextlib.nullcontext()

    def resolve_layer_set(self, layer_set: str) -> str:
        """``layer_set`` with :data:`FAMILY_DEFAULT` replaced by this family's default; unknown names refused."""
        resolved = self.layer_sets[0] if layer_set == FAMILY_DEFAULT else layer_set
        self.check_layer_set(resolved)
        return resolved

    def resolve_scheduler(self, scheduler: str) -> str:
        """``scheduler`` with :data:`FAMILY_DEFAULT` replaced by this family's default; unknown names refused."""
        resolved = self.schedulers[0] if scheduler == FAMILY_DEFAULT else scheduler
        self.check_scheduler(resolved)
        return resolved

    def check_layer_set(self, layer_set: str) -> None:
        if layer_set not in self.layer_sets:
            raise InvalidSettingError(
                f"Unknown layer set {layer_set!r} for {self.name} models; choose one of {', '.join(self.layer_sets)}."
            )

    def check_loss(self, loss: str) -> None:
        """Raise :class:`InvalidSettingError` when this family cannot train with ``loss``."""

    def check_scheduler(self, scheduler: str) -> None:
        if scheduler not in self.schedulers:
            raise InvalidSettingError(
                f"Scheduler {scheduler!r} is not available for {self.name} models; choose one of {', '.join(self.schedulers)}."
            )

    def spatial_lora_sites(self, denoiser: nn.Module) -> list[str]:
        """Attention layers that get the hybrid loss's spatial LoRA (only families that accept that loss)."""
        raise InvalidSettingError(f"The debiased_hybrid loss is not available for {self.name} models.")

    # ----- text and VAE -----
    @abstractmethod
    def encode_prompt(self, model: VideoModel, prompt: str) -> torch.Tensor:
        """``(1, L, D)`` text features in the model's dtype."""

    @abstractmethod
    def encode_frames(self, model: VideoModel, frames: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``(F, H, W, 3)`` in 0..1 -> ``(1, C, F', h, w)`` normalised latents, fp32."""

    @abstractmethod
    def decode_latents(self, model: VideoModel, latents: torch.Tensor) -> torch.Tensor:
        """``(1, C, F', h, w)`` -> ``(F, H, W, 3)`` in 0..1 on the CPU, fp32."""

    # ----- objective -----
    @abstractmethod
    def draw_timestep(self, model: VideoModel, generator: torch.Generator) -> torch.Tensor:
        """One training noise level ``(1,)`` on the CPU, drawn from ``generator``."""

    @abstractmethod
    def add_noise(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The noisy latents the denoiser sees at ``timestep``."""

    @abstractmethod
    def training_target(self, model: VideoModel, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """What the denoiser should output at ``timestep``."""

    @abstractmethod
    def predict(self, model: VideoModel, latents: torch.Tensor, timestep: Any, text: torch.Tensor) -> torch.Tensor:
        """The denoiser's output for ``latents`` ``(B, C, F', h, w)`` (the only place a denoiser is called)."""

    @abstractmethod
    def invert(
        self, model: VideoModel, latents: torch.Tensor, text: torch.Tensor, steps: int,
        on_step: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """The start latent of sampling that leads to ``latents`` ``(1, C, F', h, w)`` (deterministic inversion)."""

    @abstractmethod
    def make_sampler(self, model: VideoModel, scheduler: str, steps: int, seed: int) -> Sampler:
        """A :class:`Sampler` of kind ``scheduler`` for ``steps`` steps (``seed`` drives any noise it adds)."""

    # ----- memory -----
    @abstractmethod
    def estimate_training_bytes(
        self, model: VideoModel, frames: int, latent_height: int, latent_width: int, checkpointing: bool, layer_set: str
    ) -> int:
        """Peak activation bytes of one training step at ``frames`` latent frames."""

    @abstractmethod
    def estimate_vae_encode_bytes(self, model: VideoModel, frames: int, height: int, width: int) -> int:
        """Peak bytes of encoding ``frames`` video frames of that pixel size."""

    @abstractmethod
    def estimate_sampling_bytes(self, model: VideoModel, frames: int, latent_height: int, latent_width: int, guided: bool) -> int:
        """A floor on the peak bytes of one generation at ``frames`` latent frames."""
