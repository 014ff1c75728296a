"""Train motion embeddings on one reference clip with the UNet frozen.

Per step: fresh Gaussian noise and a uniform timestep (both drawn from a generator seeded by
``(seed, step)``, so a resumed run draws exactly what an uninterrupted one would), the scheduler's noising,
one UNet forward/backward, AdamW on the embeddings only. Latents and the prompt embedding are computed once.
Whatever stops the loop (Cancel, an error, a NaN loss) the embedding trained so far is saved first when an
output path is given, and the model is restored.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic_io import atomic_output_path
from .checkpointing import gradient_checkpointing
from .diffusion import add_noise, encode_frames, encode_prompt, training_target
from .embedding import EmbeddingInfo, MotionEmbedding, check_fits, zero_embedding
from .embedding_file import save_embedding
from .errors import InvalidSettingError, TrainingDivergedError
from .inversion import ddim_invert
from .losses import base_loss, check_loss_name, debiased_temporal_loss
from .memory_estimate import check_training_fits
from .model_loading import VideoModel
from .patching import build_processors, installed_processors
from .spatial_lora import SpatialLoRAProcessor, spatial_attention_names
from .temporal_layers import select_temporal_blocks

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, int, float], None]

# "auto": on when the memory estimate says the run would not fit without it (it costs time, not quality).
CHECKPOINTING_CHOICES: tuple[str, ...] = ("auto", "on", "off")
# Where the reference's DDIM inversion (the start latent stored with the embedding) is computed:
# "plain" through the unpatched model (as the reference code does), "embedded" through the trained raw embeddings.
INVERSION_CHOICES: tuple[str, ...] = ("plain", "embedded")


@dataclass
class TrainingConfig:
    """Settings of one training run (defaults are the paper's).

    Attributes:
        prompt: describes the reference clip's content.
        steps: total optimisation steps (a resumed run continues up to this number).
        learning_rate, weight_decay: AdamW settings for the embeddings (constant schedule).
        loss: ``base``, ``debiased_temporal`` or ``debiased_hybrid``.
        layer_set: ``paper``, ``paper+640`` or ``all`` (see :mod:`motion_core.temporal_layers`).
        seed: drives the VAE posterior sample, per-step noise and timesteps.
        gradient_checkpointing: ``auto``, ``on`` or ``off`` (a bool is read as on/off): recompute layer
            activations in the backward pass to save memory; ``auto`` turns it on only when needed.
        save_every: also save the embedding every this many steps (0: only at the end or when stopped).
        inversion: ``plain`` or ``embedded``, see :data:`INVERSION_CHOICES`.
        inversion_steps: DDIM inversion steps (0 skips the inversion).
        lora_rank, lora_learning_rate, lora_off_probability: spatial LoRA of the hybrid loss.
    """

    prompt: str
    steps: int = 400
    learning_rate: float = 0.02
    weight_decay: float = 0.01
    loss: str = "base"
    layer_set: str = "paper"
    seed: int = 0
    gradient_checkpointing: str = "auto"
    save_every: int = 100
    inversion: str = "plain"
    inversion_steps: int = 50
    lora_rank: int = 32
    lora_learning_rate: float = 5e-4
    lora_off_probability: float = 0.2

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


@dataclass
class TrainingResult:
    """What a finished run returns: the embedding, the loss of every step, and where the time went (s)."""

    embedding: MotionEmbedding
    losses: list[float]
    timings: dict[str, float] = field(default_factory=dict)
    path: Path | None = None


def resume_state_path(embedding_path: str | Path) -> Path:
    """Side file with optimiser moments that makes a resumed run identical to an uninterrupted one."""
    return Path(embedding_path).with_suffix(".resume")


def step_generator(seed: int, step: int) -> torch.Generator:
    """CPU generator for the random draws of one step (a pure function of seed and step)."""
    return torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + step) % (2**63))


def _check_frames(model: VideoModel, frames: torch.Tensor) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidSettingError(f"Training frames must be (frames, height, width, 3), got {tuple(frames.shape)}.")
    count, height, width, _ = frames.shape
    if count < 2:
        raise InvalidSettingError(f"Motion needs at least 2 frames; got {count}.")
    multiple = model.size_multiple
    if height % multiple or width % multiple:
        raise InvalidSettingError(f"Training size {width}x{height} must be a multiple of {multiple} for {model.name}; resize the frames first.")
    if not torch.isfinite(frames).all():
        raise InvalidSettingError("Training frames contain NaN or infinite values.")


class _Trainer:
    """One training run; split into methods so that each stage is timed and readable."""

    def __init__(self, model: VideoModel, frames: torch.Tensor, config: TrainingConfig, output_path: Path | None) -> None:
        self.model = model
        self.frames = frames
        self.config = config
        self.output_path = output_path
        self.losses: list[float] = []
        self.timings: dict[str, float] = {}
        self.completed_steps = 0

    # ----- setup -----
    def setup(self, resume: MotionEmbedding | None) -> None:
        start = time.perf_counter()
        model, config = self.model, self.config
        count, height, width, _ = self.frames.shape
        self.latents = encode_frames(model, self.frames, torch.Generator().manual_seed(config.seed))
        self.text = encode_prompt(model, config.prompt)
        blocks = select_temporal_blocks(model.unet, config.layer_set)
        latent_h, latent_w = self.latents.shape[-2:]
        if resume is not None:
            check_fits(resume.info, model.family, select_temporal_blocks(model.unet, "all"), model.name, architecture=model.identity.get("architecture"))
            if (resume.info.train_frames, resume.info.latent_height, resume.info.latent_width) != (count, latent_h, latent_w):
                raise InvalidSettingError(
                    f"The embedding to resume was trained at {resume.info.train_width}x{resume.info.train_height}, "
                    f"{resume.info.train_frames} frames; train at that size to resume it (got {width}x{height}, {count} frames)."
                )
            blocks = list(resume.info.blocks)
            self.completed_steps = resume.info.steps
        self.info = EmbeddingInfo(
            family=model.family,
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
            default_mode="camera" if config.loss == "debiased_hybrid" else "object",
            extra={"learning_rate": config.learning_rate, "layer_set": config.layer_set, "seed": config.seed},
        )
        initial = resume if resume is not None else zero_embedding(self.info)
        self.query_key = {k: nn.Parameter(v.detach().to(model.device, torch.float32).clone()) for k, v in initial.query_key.items()}
        self.value = {k: nn.Parameter(v.detach().to(model.device, torch.float32).clone()) for k, v in initial.value.items()}
        self.processors = build_processors(model.unet, model.kernel, blocks, self.query_key, self.value)
        self.lora: dict[str, SpatialLoRAProcessor] = {}
        groups = [{"params": [*self.query_key.values(), *self.value.values()], "lr": config.learning_rate}]
        if config.loss == "debiased_hybrid":
            modules = dict(model.unet.named_modules())
            torch.manual_seed(config.seed)
            for name in spatial_attention_names(model.unet):
                self.lora[name] = SpatialLoRAProcessor(modules[name], config.lora_rank, model.kernel).to(model.device)
            groups.append({"params": [p for proc in self.lora.values() for p in proc.parameters()], "lr": config.lora_learning_rate})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        if resume is not None:
            self._load_resume_state()
        self.timings["setup"] = time.perf_counter() - start

    def _named_trainables(self) -> dict[str, torch.Tensor]:
        named = {f"query_key.{k}": p for k, p in self.query_key.items()}
        named.update({f"value.{k}": p for k, p in self.value.items()})
        for name, proc in self.lora.items():
            named.update({f"lora.{name}.{k}": p for k, p in proc.named_parameters()})
        return named

    def _load_resume_state(self) -> None:
        if self.output_path is None or not resume_state_path(self.output_path).is_file():
            logger.info("No optimiser state saved beside the embedding; resuming with fresh AdamW moments.")
            return
        path = resume_state_path(self.output_path)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            logger.warning("Ignoring unreadable resume state %s (%s); resuming with fresh AdamW moments.", path, exc)
            return
        if int(state.get("meta.step", torch.tensor(-1)).item()) != self.completed_steps:
            logger.warning("Resume state %s is from another step; resuming with fresh AdamW moments.", path)
            return
        for name, param in self._named_trainables().items():
            if name.startswith("lora.") and f"param.{name}" in state:
                param.data.copy_(state[f"param.{name}"])
            if f"exp_avg.{name}" in state:
                self.optimizer.state[param] = {
                    "step": torch.tensor(float(self.completed_steps)),
                    "exp_avg": state[f"exp_avg.{name}"].to(param.device),
                    "exp_avg_sq": state[f"exp_avg_sq.{name}"].to(param.device),
                }
        logger.info("Resumed optimiser state from %s at step %d", path, self.completed_steps)

    # ----- saving -----
    def snapshot(self, **extra: object) -> MotionEmbedding:
        info = replace(self.info, steps=self.completed_steps, extra={**self.info.extra, **extra})
        return MotionEmbedding(
            info,
            {k: p.detach().clone() for k, p in self.query_key.items()},
            {k: p.detach().clone() for k, p in self.value.items()},
        )

    def save_progress(self, **extra: object) -> None:
        if self.output_path is None:
            return
        save_embedding(self.snapshot(**extra), self.output_path)
        state: dict[str, torch.Tensor] = {"meta.step": torch.tensor(self.completed_steps)}
        for name, param in self._named_trainables().items():
            moments = self.optimizer.state.get(param)
            if moments:
                state[f"exp_avg.{name}"] = moments["exp_avg"].detach().cpu().contiguous()
                state[f"exp_avg_sq.{name}"] = moments["exp_avg_sq"].detach().cpu().contiguous()
            if name.startswith("lora."):
                state[f"param.{name}"] = param.detach().cpu().contiguous()
        with atomic_output_path(resume_state_path(self.output_path)) as tmp:
            save_file(state, str(tmp))

    # ----- one step -----
    def forward_backward(self, step: int) -> float:
        """Compute the step's loss and its gradients; returns the loss value.

        Each pass is backpropagated while its switches (LoRA on/off, embeddings on/off) are still set, because
        gradient checkpointing re-runs the forward during the backward pass.
        """
        model, config = self.model, self.config
        generator = step_generator(config.seed, step)
        noise = torch.randn(self.latents.shape, generator=generator).to(model.device)
        timestep = torch.randint(0, model.scheduler.config.num_train_timesteps, (1,), generator=generator).to(model.device)
        noisy = add_noise(model.scheduler, self.latents, noise, timestep)
        target = training_target(model.scheduler, self.latents, noise, timestep)
        lora_on = bool(torch.rand((), generator=generator).item() >= config.lora_off_probability)
        for proc in self.lora.values():
            proc.enabled = lora_on
        prediction = model.unet(noisy.to(model.dtype), timestep, encoder_hidden_states=self.text).sample
        if config.loss == "base":
            loss = base_loss(prediction, target)
        else:
            loss = debiased_temporal_loss(prediction, target, generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            return value
        loss.backward()
        if config.loss == "debiased_hybrid":
            value += self._spatial_forward_backward(generator, timestep)
        return value

    def _spatial_forward_backward(self, generator: torch.Generator, timestep: torch.Tensor) -> float:
        """Single-frame denoising loss with the LoRA on and the motion embeddings off: appearance goes to the LoRA."""
        model = self.model
        frame = int(torch.randint(0, self.latents.shape[2], (1,), generator=generator).item())
        clean = self.latents[:, :, frame : frame + 1]
        noise = torch.randn(clean.shape, generator=generator).to(model.device)
        for proc in self.lora.values():
            proc.enabled = True
        for proc in self.processors.values():
            proc.enabled = False
        try:
            noisy = add_noise(model.scheduler, clean, noise, timestep)
            prediction = model.unet(noisy.to(model.dtype), timestep, encoder_hidden_states=self.text).sample
            loss = base_loss(prediction, training_target(model.scheduler, clean, noise, timestep))
            value = float(loss.detach())
            if math.isfinite(value):
                loss.backward()
        finally:
            for proc in self.processors.values():
                proc.enabled = True
        return value

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
                self.optimizer.step()
                self.completed_steps = step + 1
                self.losses.append(value)
                if config.save_every and self.completed_steps % config.save_every == 0 and self.completed_steps < config.steps:
                    self.save_progress()
                if on_step is not None:
                    on_step(self.completed_steps, config.steps, value)
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

def train_motion_embedding(
    model: VideoModel,
    frames: torch.Tensor,
    config: TrainingConfig,
    output_path: str | Path | None = None,
    resume: MotionEmbedding | None = None,
    on_step: StepCallback | None = None,
    on_inversion_step: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Fit motion embeddings to ``frames`` and return them with the DDIM-inverted reference latent.

    Args:
        model: loaded model (its weights stay frozen and unpatched afterwards, whatever happens).
        frames: ``(F, H, W, 3)`` in 0..1, already at the training size (multiples of ``model.size_multiple``).
        config: training settings.
        output_path: where the embedding is saved (atomically) at the end, every ``save_every`` steps, and
            when training stops early (Cancel, error, NaN loss). ``None``: nothing is written.
        resume: an embedding to continue from (same model, size and frame count); its ``steps`` is where
            training resumes. Optimiser moments are restored from the ``.resume`` file beside ``output_path``.
        on_step: ``(completed_steps, total_steps, loss)`` after each step; raising from it cancels training.
        on_inversion_step: ``(step, total)`` during the DDIM inversion; may raise to cancel.
    """
    config.validate()
    _check_frames(model, frames)
    latent_h, latent_w = model.latent_size(frames.shape[2], frames.shape[1])
    checkpointing = config.gradient_checkpointing != "off"  # TODO(issue 9): "auto" decides from the memory estimate
    check_training_fits(model, frames.shape[0], latent_h, latent_w, checkpointing, config.layer_set)
    output_path = Path(output_path) if output_path is not None else None
    trainer = _Trainer(model, frames, config, output_path)
    with model.lock:
        trainer.setup(resume)
        all_processors = {**trainer.processors, **trainer.lora}
        with installed_processors(model.unet, all_processors), gradient_checkpointing(model.unet, checkpointing):
            try:
                trainer.run_steps(on_step)
                embedding = trainer.snapshot()
                start = time.perf_counter()
                if config.inversion_steps:
                    # The inversion runs through the trained (raw) embeddings; the hybrid LoRA is dropped first.
                    for proc in trainer.lora.values():
                        proc.enabled = False
                    empty = encode_prompt(model, "")
                    inverted = ddim_invert(model, trainer.latents, empty, config.inversion_steps, on_inversion_step)
                    embedding.inverted_latent = inverted[0].cpu()
                trainer.timings["inversion"] = time.perf_counter() - start
            except TrainingDivergedError:
                raise
            except BaseException:
                if output_path is not None and trainer.completed_steps > 0:
                    logger.warning("Training stopped at step %d; saving what was trained so far.", trainer.completed_steps)
                    trainer.save_progress(interrupted=True)
                raise
    start = time.perf_counter()
    if output_path is not None:
        save_embedding(embedding, output_path)
        resume_state_path(output_path).unlink(missing_ok=True)
    trainer.timings["save"] = time.perf_counter() - start
    return TrainingResult(embedding.to("cpu"), trainer.losses, trainer.timings, output_path)


@torch.no_grad()
def evaluation_loss(model: VideoModel, frames: torch.Tensor, prompt: str, embedding: MotionEmbedding | None, draws: int = 8, seed: int = 1234) -> float:
    """Mean base loss of ``embedding`` (or the plain model) on ``frames`` over ``draws`` fixed noise/timestep draws.

    The draws depend only on ``seed``, so two embeddings are compared on exactly the same problems.
    """
    latents = encode_frames(model, frames, torch.Generator().manual_seed(seed))
    text = encode_prompt(model, prompt)
    processors = build_processors(model.unet, model.kernel)
    if embedding is not None:
        emb = embedding.to(model.device)
        processors = build_processors(model.unet, model.kernel, embedding.info.blocks, emb.query_key, emb.value)
    total = 0.0
    with model.lock, installed_processors(model.unet, processors):
        for draw in range(draws):
            generator = step_generator(seed, draw)
            noise = torch.randn(latents.shape, generator=generator).to(model.device)
            timestep = torch.randint(0, model.scheduler.config.num_train_timesteps, (1,), generator=generator).to(model.device)
            prediction = model.unet(add_noise(model.scheduler, latents, noise, timestep).to(model.dtype), timestep, encoder_hidden_states=text).sample
            total += float(base_loss(prediction, training_target(model.scheduler, latents, noise, timestep)))
    return total / draws
