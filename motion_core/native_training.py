"""Train motion embeddings through a Wan transformer that the family layer does not load (ComfyUI's own MODEL).

The run is :class:`~motion_core.training.EmbeddingTrainer`'s (the same per-step draws, losses, AdamW, resuming,
saving on Cancel and on divergence); only the model differs. A :class:`ForeignWan` says what training needs from it:
its block widths, patch and flow shift, and a context that installs a :class:`~.families.wan_native.TrainableWanMotion`
and yields the model's velocity. The objective is the Wan family's flow matching (:mod:`motion_core.flow_matching`),
the inversion its flow Euler (:func:`~.families.flow.flow_euler_invert_with`), the embedding's sites and file the
diffusers path's (family ``wan``, sites ``blocks.i``), so an embedding trained here loads there and the other way
round. Nothing here imports ComfyUI: ``nodes/native_training.py`` builds the :class:`ForeignWan`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import flow_matching as fm
from .embedding import EmbeddingInfo, MotionEmbedding, check_fits, default_mode_for, zero_embedding
from .embedding_file import check_output_writable
from .errors import InvalidSettingError
from .families.block_stack import block_indices
from .families.flow import flow_euler_invert_with
from .families.wan import TEMPORAL_FACTOR, WanFamily, block_sites, selected_sites, training_bytes
from .families.wan_native import TrainableWanMotion
from .training import EmbeddingTrainer, StepCallback, TrainingConfig, TrainingResult, finish, train_installed

logger = logging.getLogger(__name__)

#: ``(noisy (1, C, F', h, w), sigma (1,), text (1, L, D)) -> velocity (1, C, F', h, w)``: one model call.
VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ForeignWan:
    """What training needs from a Wan transformer run by another framework.

    Attributes:
        name: shown in messages and stored as the embedding's base model name.
        widths: the self-attention width of each block, in block order.
        ffn_dim: the feed-forward width (for the memory estimate).
        patch: spatial patch ``(ph, pw)`` of a token, in latent cells.
        shift: the flow shift of the model's sampling (training noise levels and the inversion's schedule).
        spatial_scale: pixels per latent cell (8 for Wan 2.1's VAE, 16 for Wan 2.2's 48-channel one).
        device, dtype: where and in what precision the model computes (fp16 turns on loss scaling).
        running: ``running(motion, checkpointing)`` installs ``motion`` on the model (with gradient checkpointing per
            block when asked), yields a :data:`VelocityFn`, and takes everything back on exit, also on an exception.
        free_bytes: free memory on ``device`` (for ``auto`` gradient checkpointing); ``None``: unknown (then off).
        identity: extra facts stored with the embedding's base model.
    """

    name: str
    widths: list[int]
    ffn_dim: int
    patch: tuple[int, int]
    shift: float
    spatial_scale: int
    device: torch.device
    dtype: torch.dtype
    running: Callable[[TrainableWanMotion, bool], contextlib.AbstractContextManager[VelocityFn]]
    free_bytes: Callable[[], int] | None = None
    identity: dict[str, object] = field(default_factory=dict)


class ForeignWanTrainer(EmbeddingTrainer):
    """:class:`EmbeddingTrainer` on encoded latents and a prompt embedding, through a :class:`ForeignWan`.

    ``self.model`` is the :class:`ForeignWan` (its ``device`` and ``dtype`` are all the shared steps read).
    """

    def __init__(self, wan: ForeignWan, latents: torch.Tensor, text: torch.Tensor, inversion_text: torch.Tensor,
                 config: TrainingConfig, output_path: Path | None) -> None:
        super().__init__(wan, latents, config, output_path)  # type: ignore[arg-type]  # frames: the latents here
        self.wan = wan
        self.latents = latents.to(wan.device, torch.float32)
        self.text = text.to(wan.device)
        self.inversion_text = inversion_text.to(wan.device)
        self.velocity: VelocityFn | None = None

    # ----- setup -----
    def setup(self, resume: MotionEmbedding | None, on_inversion_step: Callable[[int, int], None] | None = None) -> None:
        """Sites, the embedding's facts and the trainables (the inversion runs later, once the model is installed)."""
        start = time.perf_counter()
        wan, config = self.wan, self.config
        if config.appearance_augmentation != "off":
            raise InvalidSettingError(
                "Appearance augmentation recolours the reference's pixels, and the native trainer gets encoded latents; "
                "set it to off here (the pack's own loader and trainer offer it)."
            )
        _, _, frames, latent_h, latent_w = self.latents.shape
        blocks = selected_sites(wan.widths, wan.patch[0], config.layer_set, latent_h, latent_w)
        names = ", ".join(str(i) for i in block_indices(len(wan.widths), config.layer_set))
        logger.info("Layer set %s: blocks %s of %d", config.layer_set, names, len(wan.widths))
        if resume is not None:
            check_fits(resume.info, "wan", block_sites(wan.widths, 0), wan.name)
            if (resume.info.latent_frames or 0, resume.info.latent_height, resume.info.latent_width) != (frames, latent_h, latent_w):
                raise InvalidSettingError(
                    f"The embedding to resume was trained on a {resume.info.latent_frames}x{resume.info.latent_height}x"
                    f"{resume.info.latent_width} latent (frames x height x width); this reference's is {frames}x{latent_h}x"
                    f"{latent_w}. Encode the reference at that size and frame count to resume it."
                )
            blocks = list(resume.info.blocks)
            self.completed_steps = resume.info.steps
        self.info = EmbeddingInfo(
            family="wan",
            base_model={"name": wan.name, **wan.identity},
            blocks=tuple(blocks),
            train_width=latent_w * wan.spatial_scale,
            train_height=latent_h * wan.spatial_scale,
            train_frames=1 + TEMPORAL_FACTOR * (frames - 1),
            latent_height=latent_h,
            latent_width=latent_w,
            steps=self.completed_steps,
            loss=config.loss,
            prompt=config.prompt,
            default_mode=default_mode_for(config.loss),
            extra={
                "learning_rate": config.learning_rate,
                "layer_set": config.layer_set,
                "seed": config.seed,
                "inversion": config.inversion if config.inversion_steps else "none",
                "flow_shift": wan.shift,
                "trained_through": "native",
            },
            latent_frames=frames,
        )
        self._build_trainables(blocks, resume)
        self.timings["setup"] = time.perf_counter() - start

    def _build_trainables(self, blocks, resume: MotionEmbedding | None) -> None:
        """fp32 embedding parameters in a :class:`TrainableWanMotion` (disabled until the steps), AdamW, scaler."""
        wan = self.wan
        initial = resume if resume is not None else zero_embedding(self.info)
        self.query_key = {k: nn.Parameter(v.detach().to(wan.device, torch.float32).clone()) for k, v in initial.query_key.items()}
        self.value = {k: nn.Parameter(v.detach().to(wan.device, torch.float32).clone()) for k, v in initial.value.items()}
        _, _, frames, latent_h, latent_w = self.latents.shape
        grid = (frames, latent_h // wan.patch[0], latent_w // wan.patch[1])
        self.motion = TrainableWanMotion(blocks, self.query_key, self.value, grid, wan.patch)
        self.motion.enabled = False
        self.processors, self.lora = {}, {}
        params = [*self.query_key.values(), *self.value.values()]
        logger.info("Training %d embedding parameters on %s", sum(p.numel() for p in params), wan.name)
        self._make_optimizer([{"params": params, "lr": self.config.learning_rate}], resume)

    def invert(self, on_step: Callable[[int, int], None] | None) -> None:
        """Invert the reference latents (with the inversion prompt) through the model as installed now."""
        if self.velocity is None:
            raise RuntimeError("invert() runs inside ForeignWan.running")
        start = time.perf_counter()
        velocity, text = self.velocity, self.inversion_text

        def step(sample: torch.Tensor, sigma: float) -> torch.Tensor:
            return velocity(sample, torch.tensor([sigma], device=sample.device), text)

        self.inverted_latent = flow_euler_invert_with(step, self.latents, self.config.inversion_steps, self.wan.shift, on_step)[0].cpu()
        self.timings["inversion"] = time.perf_counter() - start

    # ----- the objective: flow matching, as the Wan family's -----
    def _draw_timestep(self, generator: torch.Generator) -> torch.Tensor:
        return fm.draw_sigmas(1, self.wan.shift, generator)

    def _noisy(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return fm.noisy_latents(latents, noise, timestep)

    def _target(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return fm.velocity_target(latents, noise)

    def _predict(self, noisy: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if self.velocity is None:
            raise RuntimeError("training steps run inside ForeignWan.running")
        return self.velocity(noisy, timestep, self.text)


def _check_latents(wan: ForeignWan, latents: torch.Tensor) -> None:
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise InvalidSettingError(
            f"The reference must be one video latent (1, channels, frames, height, width); got {tuple(latents.shape)}. "
            "Encode the clip with VAE Encode (a batch of frames becomes one video latent)."
        )
    _, _, frames, height, width = latents.shape
    if frames < 2:
        raise InvalidSettingError(
            f"The reference latent has {frames} frame; motion needs at least 2 latent frames ({1 + TEMPORAL_FACTOR} video frames)."
        )
    if height % wan.patch[0] or width % wan.patch[1]:
        raise InvalidSettingError(
            f"The reference latent is {height}x{width}, not a multiple of the model's {wan.patch[0]}x{wan.patch[1]} patch; "
            f"resize the frames to a multiple of {wan.patch[0] * wan.spatial_scale} pixels first."
        )
    if not bool(torch.isfinite(latents).all()):
        raise InvalidSettingError("The reference latent contains NaN or infinite values.")


def decide_checkpointing(wan: ForeignWan, latents: torch.Tensor, setting: str, layer_set: str) -> bool:
    """``on``/``off`` as given; ``auto``: on when the activations without it (the Wan family's estimate) plus the
    embeddings' training state (values, gradients, AdamW moments) would not fit in 90 % of the free memory."""
    if setting != "auto":
        return setting == "on"
    if wan.free_bytes is None:
        return False
    _, _, frames, height, width = latents.shape
    element = torch.finfo(wan.dtype).bits // 8
    need = training_bytes(wan.widths, wan.ffn_dim, wan.patch, frames, height, width, layer_set, element, False)
    have = wan.free_bytes()
    enabled = need > 0.9 * have
    logger.info("Gradient checkpointing auto: %s (training without it needs about %.2f GiB, %.2f GiB free)",
                "on" if enabled else "off", need / 2**30, have / 2**30)
    return enabled


def train_foreign_wan(
    wan: ForeignWan,
    latents: torch.Tensor,
    text: torch.Tensor,
    inversion_text: torch.Tensor,
    config: TrainingConfig,
    output_path: str | Path | None = None,
    resume: MotionEmbedding | None = None,
    on_step: StepCallback | None = None,
    on_inversion_step: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Fit motion embeddings to the reference ``latents`` through ``wan``; see :func:`~.training.train_motion_embedding`.

    Args:
        latents: ``(1, C, F', h, w)``, the reference clip encoded and normalised as the model samples in.
        text: ``(1, L, D)`` the prompt's embedding; inversion_text: the one the inversion runs with (diffusers' path
            uses the empty prompt).
        config: as for the diffusers path (``prompt`` is stored with the embedding; the text comes as ``text``).
            The ``debiased_hybrid`` loss is refused, as on every Wan model.
        output_path, resume, on_step, on_inversion_step: as for :func:`~.training.train_motion_embedding` (saved at the
            end, every ``save_every`` steps, and when stopped; resuming continues exactly).
    """
    config.validate()
    family = WanFamily()
    family.check_loss(config.loss)
    config = replace(config, layer_set=family.resolve_layer_set(config.layer_set))
    _check_latents(wan, latents)
    if text.ndim != 3 or text.shape[0] != 1:
        raise InvalidSettingError(f"The prompt's conditioning must be (1, tokens, width); got {tuple(text.shape)}.")
    checkpointing = decide_checkpointing(wan, latents, config.gradient_checkpointing, config.layer_set)
    output_path = check_output_writable(output_path) if output_path is not None else None
    trainer = ForeignWanTrainer(wan, latents, text, inversion_text, config, output_path)
    trainer.setup(resume)
    with wan.running(trainer.motion, checkpointing) as velocity:
        trainer.velocity = velocity
        if config.inversion == "plain" and config.inversion_steps:
            trainer.invert(on_inversion_step)  # motion disabled: the plain model
        trainer.motion.enabled = True
        train_installed(trainer, on_step, on_inversion_step)
    return finish(trainer)
