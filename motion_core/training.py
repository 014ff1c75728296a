"""Train motion embeddings on one reference clip with the UNet frozen.

Per step: fresh Gaussian noise and a uniform timestep (both drawn from a generator seeded by
``(seed, step)``, so a resumed run draws exactly what an uninterrupted one would), the scheduler's noising,
one UNet forward/backward, AdamW on the embeddings only. Latents and the prompt embedding are computed once.
A half-precision model runs under autocast (fp16 also with a loss scaler); the embeddings stay fp32.

Whatever stops the loop (Cancel, an error, a NaN loss) the embedding trained so far is saved first when an
output path is given. Periodic and early saves carry the optimiser state inside the embedding file
(``training_state.*`` tensors) so that resuming from them continues exactly; the file of a finished run holds
no optimiser state. The model is restored in every case.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .appearance_augmentation import augmented_clips, check_augmentation
from .diffusion import encode_frames, encode_prompt
from .embedding import EmbeddingInfo, MotionEmbedding, check_fits, default_mode_for, zero_embedding
from .embedding_file import check_output_writable, save_embedding_or_rescue
from .errors import EmbeddingSaveError, InvalidSettingError, TrainingDivergedError
from .families import FAMILY_DEFAULT
from .inversion import invert_latents
from .losses import base_loss, check_loss_name, debiased_temporal_loss, value_static_penalty
from .memory_estimate import check_training_fits, decide_gradient_checkpointing
from .model_loading import VideoModel
from .motion_sites import TemporalBlock
from .patching import installed_processors
from .precision import autocast
from .spatial_lora import SpatialLoRAProcessor

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, int, float], None]

# "auto": on when the memory estimate says the run would not fit without it (it costs time, not quality).
CHECKPOINTING_CHOICES: tuple[str, ...] = ("auto", "on", "off")
# Where the reference's inversion (the start latent stored with the embedding) is computed:
# "plain" through the unpatched model (as the reference code does), "embedded" through the trained raw embeddings.
INVERSION_CHOICES: tuple[str, ...] = ("plain", "embedded")
GRAD_SCALER_INIT_SCALE = 2.0**16  # torch's default starting loss scale (fp16 only)


@dataclass
class TrainingConfig:
    """Settings of one training run (defaults are the paper's).

    Attributes:
        prompt: describes the reference clip's content.
        steps: total optimisation steps (a resumed run continues up to this number).
        learning_rate, weight_decay: AdamW settings for the embeddings (constant schedule).
        loss: ``base``, ``debiased_temporal`` or ``debiased_hybrid``.
        layer_set: one of the model family's layer sets (UNet3D: ``paper``, ``paper+640``, ``all``, see
            :mod:`motion_core.families.unet3d_layers`; Wan: see :mod:`motion_core.families.wan`), or ``auto``
            for the family's default (``paper`` on UNet3D, as the paper; ``alternate`` on Wan).
        seed: drives the VAE posterior sample, per-step noise and timesteps.
        gradient_checkpointing: ``auto``, ``on`` or ``off`` (a bool is read as on/off): recompute layer
            activations in the backward pass to save memory; ``auto`` turns it on only when needed.
        save_every: also save the embedding every this many steps (0: only at the end or when stopped).
        inversion: ``plain`` or ``embedded``, see :data:`INVERSION_CHOICES`.
        inversion_steps: inversion steps (DDIM on UNet3D, flow Euler on Wan; 0 skips the inversion).
        lora_rank, lora_learning_rate, lora_off_probability: spatial LoRA of the hybrid loss.
        appearance_augmentation: ``off``, ``colour`` or ``colour_blur``: train on recoloured (and blurred) copies of
            the reference as well, one drawn per step (:mod:`motion_core.appearance_augmentation`).
        value_static_penalty: weight of a penalty on the value embeddings' static part (their mean over the frames,
            :func:`motion_core.losses.value_static_penalty`) added to the loss; 0 turns it off. Its pull is
            relative to the loss's scale: on the toy models (MSE 0.02-0.1) weight 1 takes the static share from
            about 0.3 to below 0.01; on a random tiny model (MSE about 1) weight 100 takes 0.95 to 0.13.
    """

    prompt: str
    steps: int = 400
    learning_rate: float = 0.02
    weight_decay: float = 0.01
    loss: str = "base"
    layer_set: str = FAMILY_DEFAULT
    seed: int = 0
    gradient_checkpointing: str = "auto"
    save_every: int = 100
    inversion: str = "plain"
    inversion_steps: int = 50
    lora_rank: int = 32
    lora_learning_rate: float = 5e-4
    lora_off_probability: float = 0.2
    appearance_augmentation: str = "off"
    value_static_penalty: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.gradient_checkpointing, bool):  # the node's widget and old callers pass a bool
            self.gradient_checkpointing = "on" if self.gradient_checkpointing else "off"

    def validate(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise InvalidSettingError("The training prompt is empty; describe what the reference clip shows (e.g. 'a man running').")
        if self.steps < 1:
            raise InvalidSettingError(f"Training steps must be at least 1, got {self.steps}.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidSettingError(f"Learning rate must be a positive number, got {self.learning_rate}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidSettingError(f"Weight decay must be zero or positive, got {self.weight_decay}.")
        if self.save_every < 0 or self.inversion_steps < 0:
            raise InvalidSettingError("save_every and inversion_steps must be zero or positive.")
        check_loss_name(self.loss)
        if self.gradient_checkpointing not in CHECKPOINTING_CHOICES:
            raise InvalidSettingError(
                f"Unknown gradient checkpointing setting {self.gradient_checkpointing!r}; choose one of {', '.join(CHECKPOINTING_CHOICES)}."
            )
        if self.inversion not in INVERSION_CHOICES:
            raise InvalidSettingError(f"Unknown inversion {self.inversion!r}; choose one of {', '.join(INVERSION_CHOICES)}.")
        check_augmentation(self.appearance_augmentation)
        if not (math.isfinite(self.value_static_penalty) and self.value_static_penalty >= 0):
            raise InvalidSettingError(f"The value-static penalty must be zero or a positive number, got {self.value_static_penalty}.")


@dataclass
class TrainingResult:
    """What a finished run returns: the embedding, the loss of every step, and where the time went (s).

    ``embedding.training_state`` holds the optimiser state in memory (so that training it further continues
    exactly), although the file written at ``path`` does not.
    """

    embedding: MotionEmbedding
    losses: list[float]
    timings: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class StepDraws:
    """The random draws of one step, all from :func:`step_generator` in a fixed order.

    Attributes:
        noise: ``(1, C, F, h, w)``; timestep: ``(1,)``.
        lora_on: whether the hybrid loss's spatial LoRA is on this step.
        anchor: anchor frame of the debiased temporal loss.
        spatial_frame, spatial_noise: frame and ``(1, C, 1, h, w)`` noise of the hybrid loss's single-frame pass.
        clip: which of the training clips (0: the reference, then its augmented copies) the motion loss uses; drawn
            last and only when there are copies, so that runs without augmentation draw what they always drew.
    """

    noise: torch.Tensor
    timestep: torch.Tensor
    lora_on: bool
    anchor: int
    spatial_frame: int
    spatial_noise: torch.Tensor
    clip: int = 0


def step_generator(seed: int, step: int) -> torch.Generator:
    """CPU generator for the random draws of one step (a pure function of seed and step)."""
    return torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + step) % (2**63))


def _check_frame_shape(model: VideoModel, frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidSettingError(f"Training frames must be (frames, height, width, 3), got {tuple(frames.shape)}.")
    count, height, width, _ = frames.shape
    if count < model.family.min_frames:
        raise InvalidSettingError(f"Motion needs at least {model.family.min_frames} frames; got {count}.")
    multiple = model.size_multiple
    if height % multiple or width % multiple:
        raise InvalidSettingError(f"Training size {width}x{height} must be a multiple of {multiple} for {model.name}; resize the frames first.")


def _check_frame_values(frames: torch.Tensor) -> None:
    """Refuse NaN or infinite pixels (one frame at a time: no full-size temporary)."""
    if not all(bool(torch.isfinite(frame).all()) for frame in frames):
        raise InvalidSettingError("Training frames contain NaN or infinite values.")


class EmbeddingTrainer:
    """One training run; split into methods so that each stage is timed and readable.

    The model enters only through :meth:`setup`, :meth:`_build_trainables`, :meth:`invert` and the objective methods
    (:meth:`_draw_timestep`, :meth:`_noisy`, :meth:`_target`, :meth:`_predict`); a model that the family layer does
    not load (ComfyUI's own Wan, :mod:`motion_core.native_training`) overrides those and keeps the rest: the draws,
    losses, optimiser, resuming, saving and stopping.
    """

    def __init__(self, model: VideoModel, frames: torch.Tensor, config: TrainingConfig, output_path: Path | None) -> None:
        self.model = model
        self.frames = frames
        self.config = config
        self.output_path = output_path
        self.losses: list[float] = []
        self.timings: dict[str, float] = {}
        self.completed_steps = 0
        self.inverted_latent: torch.Tensor | None = None
        self.skipped_steps = 0
        self.augmented_latents: list[torch.Tensor] = []  # the augmented copies' latents, each like ``self.latents``

    # ----- setup -----
    def setup(self, resume: MotionEmbedding | None, on_inversion_step: Callable[[int, int], None] | None = None) -> None:
        """Encode the clip and prompt, run the plain-model inversion, build the trainables and the optimiser."""
        start = time.perf_counter()
        model, config = self.model, self.config
        count, height, width, _ = self.frames.shape
        self.latents = encode_frames(model, self.frames, torch.Generator().manual_seed(config.seed))
        copies = augmented_clips(self.frames, config.appearance_augmentation, config.seed)[1:]
        self.augmented_latents = [encode_frames(model, clip, torch.Generator().manual_seed(config.seed + 1 + k)) for k, clip in enumerate(copies)]
        self.text = encode_prompt(model, config.prompt)
        latent_h, latent_w = self.latents.shape[-2:]
        blocks = model.family.select_sites(model.denoiser, config.layer_set, int(latent_h), int(latent_w))
        described = model.family.describe_layer_set(model.denoiser, config.layer_set, int(latent_h), int(latent_w))
        logger.info("Layer set %s: %s", config.layer_set, described)
        if resume is not None:
            sites = model.family.find_sites(model.denoiser)
            check_fits(resume.info, model.family, sites, model.name, architecture=model.identity.get("architecture"))
            if (resume.info.train_frames, resume.info.latent_height, resume.info.latent_width) != (count, latent_h, latent_w):
                raise InvalidSettingError(
                    f"The embedding to resume was trained at {resume.info.train_width}x{resume.info.train_height}, "
                    f"{resume.info.train_frames} frames; train at that size to resume it (got {width}x{height}, {count} frames)."
                )
            blocks = list(resume.info.blocks)
            self.completed_steps = resume.info.steps
        self.info = EmbeddingInfo(
            family=model.family.name,
            base_model=dict(model.identity),
            blocks=tuple(blocks),
            train_width=width,
            train_height=height,
            train_frames=count,
            latent_height=int(latent_h),
            latent_width=int(latent_w),
            steps=self.completed_steps,
            loss=config.loss,
            prompt=config.prompt,
            default_mode=default_mode_for(config.loss),
            extra={
                "learning_rate": config.learning_rate,
                "layer_set": config.layer_set,
                "seed": config.seed,
                "inversion": config.inversion if config.inversion_steps else "none",
                **({"appearance_augmentation": config.appearance_augmentation} if config.appearance_augmentation != "off" else {}),
                **({"value_static_penalty": config.value_static_penalty} if config.value_static_penalty else {}),
                **model.family.training_facts(model),
            },
            latent_frames=model.family.stored_latent_frames(count),
        )
        self.timings["setup"] = time.perf_counter() - start
        if config.inversion == "plain" and config.inversion_steps:
            # Independent of the embeddings, so done first (on the unpatched model): every save then carries it.
            self.invert(on_inversion_step)
        start = time.perf_counter()
        self._build_trainables(blocks, resume)
        self.timings["setup"] += time.perf_counter() - start

    def _build_trainables(self, blocks: list[TemporalBlock], resume: MotionEmbedding | None) -> None:
        """fp32 embedding parameters and their processors, the hybrid loss's LoRA, AdamW and the loss scaler."""
        model, config = self.model, self.config
        initial = resume if resume is not None else zero_embedding(self.info)
        self.query_key = {k: nn.Parameter(v.detach().to(model.device, torch.float32).clone()) for k, v in initial.query_key.items()}
        self.value = {k: nn.Parameter(v.detach().to(model.device, torch.float32).clone()) for k, v in initial.value.items()}
        grid = (int(self.latents.shape[2]), int(self.latents.shape[3]), int(self.latents.shape[4]))
        self.processors = model.family.build_processors(model, blocks, self.query_key, self.value, grid)
        self.lora: dict[str, SpatialLoRAProcessor] = {}
        groups = [{"params": [*self.query_key.values(), *self.value.values()], "lr": config.learning_rate}]
        if config.loss == "debiased_hybrid":
            modules = dict(model.denoiser.named_modules())
            torch.manual_seed(config.seed)
            for name in model.family.spatial_lora_sites(model.denoiser):
                self.lora[name] = SpatialLoRAProcessor(modules[name], config.lora_rank, model.kernel).to(model.device)
            groups.append({"params": [p for proc in self.lora.values() for p in proc.parameters()], "lr": config.lora_learning_rate})
        count = sum(p.numel() for p in groups[0]["params"])
        model_count = sum(p.numel() for p in model.denoiser.parameters())
        logger.info("Training %d embedding parameters (%.2f %% of the denoiser's %d)", count, 100 * count / model_count, model_count)
        self._make_optimizer(groups, resume)

    def _make_optimizer(self, groups: list[dict], resume: MotionEmbedding | None) -> None:
        """AdamW over ``groups`` and the fp16 loss scaler, with ``resume``'s saved state when there is one."""
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.config.weight_decay)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(
            self.model.device.type, init_scale=GRAD_SCALER_INIT_SCALE, enabled=self.model.dtype == torch.float16
        )
        if resume is not None:
            self._restore_training_state(resume.training_state)

    def invert(self, on_step: Callable[[int, int], None] | None) -> None:
        """Invert the clip's latents (empty prompt) through the model as it is patched now."""
        start = time.perf_counter()
        empty = encode_prompt(self.model, "")
        self.inverted_latent = invert_latents(self.model, self.latents, empty, self.config.inversion_steps, on_step)[0].cpu()
        self.timings["inversion"] = time.perf_counter() - start

    def _named_trainables(self) -> dict[str, torch.Tensor]:
        named = {f"query_key.{k}": p for k, p in self.query_key.items()}
        named.update({f"value.{k}": p for k, p in self.value.items()})
        for name, proc in self.lora.items():
            named.update({f"lora.{name}.{k}": p for k, p in proc.named_parameters()})
        return named

    # ----- training state (see MotionEmbedding.training_state) -----
    def training_state(self) -> dict[str, torch.Tensor]:
        """What continuing this run exactly needs: AdamW's state per trainable, the LoRA, the loss scaler."""
        state = {"step": torch.tensor(float(self.completed_steps), dtype=torch.float64)}
        for name, param in self._named_trainables().items():
            moments = self.optimizer.state.get(param)
            if moments:
                state[f"step.{name}"] = torch.tensor(float(moments["step"]), dtype=torch.float64)
                state[f"exp_avg.{name}"] = moments["exp_avg"].detach().cpu().clone()
                state[f"exp_avg_sq.{name}"] = moments["exp_avg_sq"].detach().cpu().clone()
            if name.startswith("lora."):
                state[f"param.{name}"] = param.detach().cpu().clone()
        if self.scaler.is_enabled():
            scaler = self.scaler.state_dict()
            state["grad_scaler.scale"] = torch.tensor(float(scaler["scale"]), dtype=torch.float64)
            state["grad_scaler.growth_tracker"] = torch.tensor(float(scaler["_growth_tracker"]), dtype=torch.float64)
        return state

    def _restore_training_state(self, state: dict[str, torch.Tensor]) -> None:
        """Put a resumed embedding's optimiser state back, or say clearly why the moments start fresh."""
        if not state:
            logger.warning(
                "The embedding to resume carries no optimiser state (it is a finished run's file or from an older "
                "version); AdamW moments start fresh, so the result will differ a little from an uninterrupted run."
            )
            return
        saved_step = state.get("step")
        if saved_step is None or int(saved_step) != self.completed_steps:
            logger.warning(
                "The optimiser state in the embedding to resume is from step %s, the embedding from step %d; "
                "AdamW moments start fresh.", None if saved_step is None else int(saved_step), self.completed_steps,
            )
            return
        fresh: list[str] = []
        for name, param in self._named_trainables().items():
            saved = state.get(f"param.{name}")
            if name.startswith("lora."):
                if saved is None or saved.shape != param.shape:
                    fresh.append(name)
                    continue
                with torch.no_grad():
                    param.copy_(saved)
            exp_avg, exp_avg_sq = state.get(f"exp_avg.{name}"), state.get(f"exp_avg_sq.{name}")
            if exp_avg is None or exp_avg_sq is None or exp_avg.shape != param.shape or exp_avg_sq.shape != param.shape:
                fresh.append(name)
                continue
            updates = state.get(f"step.{name}", saved_step)
            self.optimizer.state[param] = {
                "step": torch.tensor(float(updates)),
                "exp_avg": exp_avg.to(param.device, torch.float32).clone(),  # clones: AdamW updates them in place
                "exp_avg_sq": exp_avg_sq.to(param.device, torch.float32).clone(),
            }
        if self.scaler.is_enabled() and "grad_scaler.scale" in state:
            scaler = self.scaler.state_dict()
            growth = int(state.get("grad_scaler.growth_tracker", 0))
            scaler.update(scale=float(state["grad_scaler.scale"]), _growth_tracker=growth)
            self.scaler.load_state_dict(scaler)
        if fresh:
            logger.warning("No saved optimiser state for %d trainable tensors (e.g. %s); they start fresh.", len(fresh), fresh[0])
        logger.info("Resumed the optimiser state at step %d", self.completed_steps)

    # ----- saving -----
    def snapshot(self, with_training_state: bool, **extra: object) -> MotionEmbedding:
        """The embedding as trained so far (on the CPU), with the inverted latent when computed."""
        info = replace(self.info, steps=self.completed_steps, extra={**self.info.extra, **extra})
        return MotionEmbedding(
            info,
            {k: p.detach().cpu().clone() for k, p in self.query_key.items()},
            {k: p.detach().cpu().clone() for k, p in self.value.items()},
            self.inverted_latent,
            self.training_state() if with_training_state else {},
        )

    def save_progress(self, **extra: object) -> None:
        """Save an unfinished run (periodic or stopped early) with its training state, if there is an output path."""
        if self.output_path is not None:
            save_embedding_or_rescue(self.snapshot(True, **extra), self.output_path)

    # ----- one step -----
    def draws(self, step: int) -> StepDraws:
        """The step's random draws (the same for a resumed run as for an uninterrupted one)."""
        generator = step_generator(self.config.seed, step)
        shape = self.latents.shape
        noise = torch.randn(shape, generator=generator)
        timestep = self._draw_timestep(generator)
        lora_on = bool(torch.rand((), generator=generator).item() >= self.config.lora_off_probability)
        anchor = int(torch.randint(0, shape[2], (1,), generator=generator).item())
        spatial_frame = int(torch.randint(0, shape[2], (1,), generator=generator).item())
        spatial_noise = torch.randn((shape[0], shape[1], 1, *shape[3:]), generator=generator)
        clip = int(torch.randint(0, 1 + len(self.augmented_latents), (1,), generator=generator).item()) if self.augmented_latents else 0
        device = self.model.device
        return StepDraws(noise.to(device), timestep.to(device), lora_on, anchor, spatial_frame, spatial_noise.to(device), clip)

    # ----- the model's objective (overridden for a model the family layer does not load) -----
    def _draw_timestep(self, generator: torch.Generator) -> torch.Tensor:
        """The step's noise level ``(1,)`` (a timestep, or a sigma on flow models)."""
        return self.model.family.draw_timestep(self.model, generator)

    def _noisy(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.model.family.add_noise(self.model, latents, noise, timestep)

    def _target(self, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.model.family.training_target(self.model, latents, noise, timestep)

    def forward_backward(self, step: int) -> float:
        """Compute the step's losses and their gradients; returns the (temporal) loss of the step.

        With the hybrid loss, the spatial LoRA learns only from a single-frame pass, which runs on the steps
        where the LoRA is on; a non-finite single-frame loss is returned instead so that training stops.
        """
        draws = self.draws(step)
        value = self.temporal_forward_backward(draws)
        if self.lora and draws.lora_on and math.isfinite(value):
            spatial = self.spatial_forward_backward(draws)
            if not math.isfinite(spatial):
                return spatial
        return value

    def temporal_forward_backward(self, draws: StepDraws) -> float:
        """The motion loss on the whole clip (plus the value-static penalty when it is on): gradients for the
        embeddings only. With appearance augmentation the step's clip may be one of the reference's copies.

        The hybrid LoRA takes part in the forward pass on its steps but gets no gradient from it. Switches stay
        set through the backward pass, because gradient checkpointing re-runs the forward there.
        """
        config = self.config
        latents = self.augmented_latents[draws.clip - 1] if draws.clip else self.latents
        noisy = self._noisy(latents, draws.noise, draws.timestep)
        target = self._target(latents, draws.noise, draws.timestep)
        for proc in self.lora.values():
            proc.enabled, proc.frozen = draws.lora_on, True
        try:
            prediction = self._predict(noisy, draws.timestep)
            if config.loss == "base":
                loss = base_loss(prediction, target)
            else:
                loss = debiased_temporal_loss(prediction, target, draws.anchor)
            if config.value_static_penalty:
                loss = loss + config.value_static_penalty * value_static_penalty(self.value.values())
            value = self._backward_if_finite(loss)
        finally:
            for proc in self.lora.values():
                proc.frozen = False
        return value

    def _predict(self, noisy: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The denoiser's output for ``noisy`` ``(1, C, F, h, w)`` at ``timestep``, under the model's autocast."""
        with autocast(self.model):
            return self.model.family.predict(self.model, noisy, timestep, self.text)

    def _backward_if_finite(self, loss: torch.Tensor) -> float:
        """Backpropagate ``loss`` (scaled for fp16) unless it is NaN/inf; returns its value either way."""
        value = float(loss.detach())
        if math.isfinite(value):
            self.scaler.scale(loss).backward()
        return value

    def spatial_forward_backward(self, draws: StepDraws) -> float:
        """Single-frame denoising loss with the LoRA on and the motion embeddings off: appearance goes to the LoRA."""
        clean = self.latents[:, :, draws.spatial_frame : draws.spatial_frame + 1]
        for proc in self.lora.values():
            proc.enabled = True
        for proc in self.processors.values():
            proc.enabled = False
        try:
            noisy = self._noisy(clean, draws.spatial_noise, draws.timestep)
            prediction = self._predict(noisy, draws.timestep)
            loss = base_loss(prediction, self._target(clean, draws.spatial_noise, draws.timestep))
            value = self._backward_if_finite(loss)
        finally:
            for proc in self.processors.values():
                proc.enabled = True
        return value

    def optimizer_step(self) -> None:
        """AdamW step through the loss scaler (fp16: a step whose gradients overflowed is skipped)."""
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            self.skipped_steps += 1

    def run_steps(self, on_step: StepCallback | None) -> None:
        start = time.perf_counter()
        config = self.config
        params = [*self.query_key.values(), *self.value.values()]
        last_good = [torch.empty_like(p) for p in params]  # the embedding before the latest update
        with torch.enable_grad():
            for step in range(self.completed_steps, config.steps):
                self.optimizer.zero_grad(set_to_none=True)
                value = self.forward_backward(step)
                if not math.isfinite(value):
                    self._stop_diverged(step, value, params, last_good)
                torch._foreach_copy_(last_good, [p.detach() for p in params])
                self.optimizer_step()
                self.completed_steps = step + 1
                self.losses.append(value)
                if config.save_every and self.completed_steps % config.save_every == 0 and self.completed_steps < config.steps:
                    self.save_progress()
                if on_step is not None:
                    on_step(self.completed_steps, config.steps, value)
        if self.skipped_steps:
            logger.info("fp16 loss scaling skipped %d steps whose gradients overflowed.", self.skipped_steps)
        self.timings["steps"] = time.perf_counter() - start

    def _stop_diverged(self, step: int, value: float, params: list[nn.Parameter], last_good: list[torch.Tensor]) -> None:
        """The embedding after ``step`` updates gave a non-finite loss: roll back one update, save, and stop."""
        where = ""
        if step > 0 and step > self.info.steps:
            with torch.no_grad():
                torch._foreach_copy_(params, last_good)
            self.completed_steps = step - 1
            if self.output_path is not None:
                self.save_progress(diverged_at_step=step + 1)
                where = f"; the last good embedding (after step {self.completed_steps}) was saved to {self.output_path}"
        raise TrainingDivergedError(
            f"Training loss became {value} at step {step + 1}{where}. "
            "Lower the learning rate, or use fp32 precision if the model runs in fp16."
        )

    def save_stopped(self) -> None:
        """Save what was trained when training stopped early (Cancel or an error)."""
        if self.output_path is not None and self.completed_steps > 0:
            logger.warning("Training stopped at step %d; saving what was trained so far.", self.completed_steps)
            self.save_progress(interrupted=True)


def train_motion_embedding(
    model: VideoModel,
    frames: torch.Tensor,
    config: TrainingConfig,
    output_path: str | Path | None = None,
    resume: MotionEmbedding | None = None,
    on_step: StepCallback | None = None,
    on_inversion_step: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Fit motion embeddings to ``frames`` and return them with the inverted reference latent.

    Args:
        model: loaded model (its weights stay frozen and unpatched afterwards, whatever happens).
        frames: ``(F, H, W, 3)`` in 0..1, already at the training size (multiples of ``model.size_multiple``). A
            family whose VAE needs a frame count of a certain form (Wan: 1 + 4k) uses the longest such prefix
            and logs it.
        config: training settings.
        output_path: where the embedding is saved (atomically) at the end, every ``save_every`` steps, and
            when training stops early (Cancel, error, NaN loss); checked for writability before any work. When a
            save fails, the embedding is kept in a rescue file and :class:`EmbeddingSaveError` names both.
            ``None``: nothing is written.
        resume: an embedding to continue from (same model, size and frame count); its ``steps`` is where
            training resumes, and its ``training_state`` (when present) makes the continuation exact.
        on_step: ``(completed_steps, total_steps, loss)`` after each step; raising from it cancels training.
        on_inversion_step: ``(done, total)`` during the inversion; may raise to cancel.
    """
    config.validate()
    model.family.check_loss(config.loss)
    config = replace(config, layer_set=model.family.resolve_layer_set(config.layer_set))
    _check_frame_shape(model, frames)
    frames = frames[: model.family.round_frames(frames.shape[0])]
    count = frames.shape[0]
    latent_frames = model.family.latent_frames(count)
    latent_h, latent_w = model.latent_size(frames.shape[2], frames.shape[1])
    checkpointing = decide_gradient_checkpointing(
        model, latent_frames, latent_h, latent_w, config.gradient_checkpointing, config.layer_set
    )
    check_training_fits(model, latent_frames, latent_h, latent_w, checkpointing, config.layer_set, video_frames=count)
    _check_frame_values(frames)
    output_path = check_output_writable(output_path) if output_path is not None else None
    trainer = EmbeddingTrainer(model, frames, config, output_path)
    with model.lock:
        trainer.setup(resume, on_inversion_step)
        all_processors = {**trainer.processors, **trainer.lora}
        checkpointed = model.family.gradient_checkpointing(model.denoiser, checkpointing)
        with installed_processors(model.denoiser, all_processors), checkpointed:
            train_installed(trainer, on_step, on_inversion_step)
    return finish(trainer)


def train_installed(trainer: EmbeddingTrainer, on_step: StepCallback | None, on_inversion_step: Callable[[int, int], None] | None) -> None:
    """The steps, with the embeddings already in the model; then the ``embedded`` inversion when asked for. Whatever
    stops the steps (Cancel, an error) saves what was trained first; a divergence or a failed save has saved already."""
    try:
        trainer.run_steps(on_step)
    except (TrainingDivergedError, EmbeddingSaveError):
        raise
    except BaseException:
        trainer.save_stopped()
        raise
    if trainer.config.inversion == "embedded" and trainer.config.inversion_steps:
        _invert_through_embeddings(trainer, on_inversion_step)


def finish(trainer: EmbeddingTrainer) -> TrainingResult:
    """Save the finished run (without optimiser state) and return it (with it, in memory)."""
    start = time.perf_counter()
    if trainer.output_path is not None:
        save_embedding_or_rescue(trainer.snapshot(False), trainer.output_path)
    trainer.timings["save"] = time.perf_counter() - start
    return TrainingResult(trainer.snapshot(True), trainer.losses, trainer.timings, trainer.output_path)


def _invert_through_embeddings(trainer: EmbeddingTrainer, on_step: Callable[[int, int], None] | None) -> None:
    """The ``embedded`` inversion: through the trained raw embeddings, hybrid LoRA off. On Cancel the trained
    embedding is saved without the inverted latent (and the log says so)."""
    for proc in trainer.lora.values():
        proc.enabled = False
    try:
        trainer.invert(on_step)
    except BaseException:
        if trainer.output_path is not None:
            save_embedding_or_rescue(trainer.snapshot(False, inversion_stopped=True), trainer.output_path)
            logger.warning(
                "The inversion stopped; the trained embedding was saved to %s without its inverted latent "
                "(sampling will start from pure noise).", trainer.output_path,
            )
        raise


@torch.no_grad()
def evaluation_loss(model: VideoModel, frames: torch.Tensor, prompt: str, embedding: MotionEmbedding | None, draws: int = 8, seed: int = 1234) -> float:
    """Mean base loss of ``embedding`` (or the plain model) on ``frames`` over ``draws`` fixed noise/timestep draws.

    The draws depend only on ``seed``, so two embeddings are compared on exactly the same problems.
    """
    family = model.family
    latents = encode_frames(model, frames, torch.Generator().manual_seed(seed))
    text = encode_prompt(model, prompt)
    grid = (int(latents.shape[2]), int(latents.shape[3]), int(latents.shape[4]))
    processors = family.build_processors(model, grid=grid)
    if embedding is not None:
        emb = embedding.to(model.device)
        processors = family.build_processors(model, embedding.info.blocks, emb.query_key, emb.value, grid)
    total = 0.0
    with model.lock, installed_processors(model.denoiser, processors):
        for draw in range(draws):
            generator = step_generator(seed, draw)
            noise = torch.randn(latents.shape, generator=generator).to(model.device)
            timestep = family.draw_timestep(model, generator).to(model.device)
            noisy = family.add_noise(model, latents, noise, timestep)
            with autocast(model):
                prediction = family.predict(model, noisy, timestep, text)
            total += float(base_loss(prediction, family.training_target(model, latents, noise, timestep)))
    return total / draws
