"""Motion embeddings: what is learned, how it is initialised, resampled to new sizes and debiased for inference.

Shapes (N = trained frames, latent frames where the family's VAE folds time (Wan: 4 frames per latent frame after
the first), C = block width, h*w = the block's value grid at the training resolution):
- query-key embedding ``(1, N, C)``, one per temporal block, shared by its ``attn1`` and ``attn2``;
- value embedding ``(h*w, N, C)``, one per temporal attention layer;
- inverted latent ``(C_latent, N, H_latent, W_latent)``: the DDIM inversion of the reference clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .errors import IncompatibleEmbeddingError, InvalidSettingError
from .motion_sites import TemporalBlock

MotionMode = Literal["object", "camera", "raw", "centred"]
MOTION_MODES: tuple[str, ...] = ("object", "camera", "raw", "centred")
# Apply's choice that means "the mode the embedding's file recommends" (:func:`default_mode_for`; files written
# before that choice changed keep the mode they name, object for the base loss).
EMBEDDING_DEFAULT_MODE = "embedding default"
MODE_CHOICES: tuple[str, ...] = (EMBEDDING_DEFAULT_MODE, *MOTION_MODES)
LOSS_NAMES: tuple[str, ...] = ("base", "debiased_temporal", "debiased_hybrid")


def default_mode_for(loss: str) -> str:
    """The mode a new embedding trained with ``loss`` recommends (stored in its file as ``default_mode``).

    Raw (both embeddings as trained) with Apply's default step window (the first half of the steps) was the measured
    best of ``benchmarks/bench_motion_transfer.py`` on the UNet3D, AnimateDiff and Latte toy models (motion fidelity
    0.97 / 0.97 / 0.91, the prompt's look in 100 / 98 / 98 % of clips; README, Measurements); camera for the hybrid
    loss, whose spatial LoRA took the look.
    """
    return "camera" if loss == "debiased_hybrid" else "raw"

# Largest |value| a query-key or value embedding can reach by training. Embeddings start at zero and AdamW moves
# each value by at most lr * |m/sqrt(v)| per step; with betas (0.9, 0.999) that ratio is below 7.3 even for the
# most uneven gradients (about 1 in practice), and weight decay only pulls towards zero. At the node's limits
# (learning rate 10, 100,000 steps, no weight decay) that is 7.3e6; the paper's settings (0.02, 400 steps)
# stay below 60. Anything above is damage or a hand-edited file (1e30 turns every frame to NaN).
MAX_EMBEDDING_MAGNITUDE = 1e7
# Largest |value| of an inverted latent: DDIM inversion ends on a latent of the scheduler's unit-variance noise
# (|value| below ~6 in practice); one ten thousand times larger is no start latent for any sampler.
MAX_INVERTED_LATENT_MAGNITUDE = 1e4


@dataclass(frozen=True)
class EmbeddingInfo:
    """Facts stored with an embedding (all of them go into the file's metadata).

    Attributes:
        family: model family the embedding was trained on (e.g. ``"unet3d"``).
        base_model: name of the base model folder and a hash of its denoiser architecture.
        blocks: the temporal blocks that carry embeddings.
        train_width, train_height, train_frames: pixel size and frame count of the training clip.
        latent_height, latent_width: latent grid of the training clip.
        latent_frames: N of the embedding tensors when the family's VAE folds frames (Wan), else ``None``
            (UNet3D: N is ``train_frames``). See :attr:`frames`.
        steps: optimisation steps done; loss: training loss name; prompt: training prompt.
        default_mode: inference mode suggested for this embedding (``object`` / ``camera`` / ``raw``).
        extra: free-form facts (learning rate, seed, layer set, interruption note, ...).
    """

    family: str
    base_model: dict[str, str]
    blocks: tuple[TemporalBlock, ...]
    train_width: int
    train_height: int
    train_frames: int
    latent_height: int
    latent_width: int
    steps: int = 0
    loss: str = "base"
    prompt: str = ""
    default_mode: str = "object"
    extra: dict[str, Any] = field(default_factory=dict)
    latent_frames: int | None = None

    @property
    def frames(self) -> int:
        """N, the frame axis of the embedding tensors and the inverted latent."""
        return self.train_frames if self.latent_frames is None else self.latent_frames


@dataclass
class MotionEmbedding:
    """Learned motion embeddings of one reference clip (fp32, on any device).

    ``training_state`` holds what an unfinished run needs to continue exactly (optimiser moments, the hybrid
    loss's LoRA weights, the step): keys ``"step"`` (0-d), ``"exp_avg.<param>"``, ``"exp_avg_sq.<param>"``,
    ``"param.<param>"`` where ``<param>`` is ``query_key.<block>``, ``value.<attention>`` or ``lora.<...>``;
    ``"step.<param>"`` (0-d: AdamW's own update count of that tensor; the LoRA skips its masked steps) and, for
    fp16 training, ``"grad_scaler.scale"`` and ``"grad_scaler.growth_tracker"`` (0-d).
    It is saved inside the embedding file while a run is unfinished (periodic and interrupted saves) and
    dropped from the file of a finished run, so it travels with the embedding and no side file is left behind.
    """

    info: EmbeddingInfo
    query_key: dict[str, torch.Tensor]
    value: dict[str, torch.Tensor]
    inverted_latent: torch.Tensor | None = None
    training_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for t in (*self.query_key.values(), *self.value.values()))

    def to(self, device: torch.device | str) -> "MotionEmbedding":
        return MotionEmbedding(
            self.info,
            {k: v.to(device) for k, v in self.query_key.items()},
            {k: v.to(device) for k, v in self.value.items()},
            None if self.inverted_latent is None else self.inverted_latent.to(device),
            dict(self.training_state),
        )

    def with_info(self, **changes: Any) -> "MotionEmbedding":
        return replace(self, info=replace(self.info, **changes))


def resolve_mode(mode: str, info: EmbeddingInfo) -> str:
    """``mode`` itself, or the embedding's own default mode for :data:`EMBEDDING_DEFAULT_MODE`."""
    if mode == EMBEDDING_DEFAULT_MODE:
        return info.default_mode if info.default_mode in MOTION_MODES else "object"
    if mode not in MOTION_MODES:
        raise InvalidSettingError(f"Unknown motion mode {mode!r}; choose one of {', '.join(MODE_CHOICES)}.")
    return mode


def zero_embedding(info: EmbeddingInfo, device: torch.device | str = "cpu") -> MotionEmbedding:
    """Zero-initialised embeddings for ``info.blocks`` (so the patched model starts as the original)."""
    frames = info.frames
    query_key: dict[str, torch.Tensor] = {}
    value: dict[str, torch.Tensor] = {}
    for block in info.blocks:
        h, w = block.grid(info.latent_height, info.latent_width)
        query_key[block.name] = torch.zeros(1, frames, block.channels, device=device)
        for attention in block.attention_names:
            value[attention] = torch.zeros(h * w, frames, block.channels, device=device)
    return MotionEmbedding(info, query_key, value)


def resample_frames(embedding: torch.Tensor, frames: int) -> torch.Tensor:
    """Linearly interpolate the frame axis of ``(P, N, C)`` to ``(P, frames, C)`` (end points kept)."""
    if embedding.shape[1] == frames:
        return embedding
    moved = embedding.permute(0, 2, 1)  # (P, C, N)
    if embedding.shape[1] == 1:
        resized = moved.expand(-1, -1, frames)
    else:
        resized = F.interpolate(moved, size=frames, mode="linear", align_corners=True)
    return resized.permute(0, 2, 1).contiguous()


def resample_grid(embedding: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample the position axis of a value embedding ``(h*w, N, C)`` to ``(h'*w', N, C)``."""
    if tuple(grid) == tuple(new_grid):
        return embedding
    h, w = grid
    _, frames, channels = embedding.shape
    image = embedding.reshape(h, w, frames * channels).permute(2, 0, 1).unsqueeze(0)  # (1, N*C, h, w)
    resized = F.interpolate(image, size=new_grid, mode="bilinear", align_corners=False)
    return resized.squeeze(0).permute(1, 2, 0).reshape(new_grid[0] * new_grid[1], frames, channels)


def resample_latent(latent: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Trilinearly resample an inverted latent ``(C, N, h, w)`` to ``(C, frames, height, width)``.

    The result is rescaled to the source's standard deviation so that a resampled start latent keeps the
    noise level the scheduler expects.
    """
    if tuple(latent.shape[1:]) == (frames, height, width):
        return latent
    resized = F.interpolate(latent.unsqueeze(0).float(), size=(frames, height, width), mode="trilinear", align_corners=False)
    resized = resized.squeeze(0)
    return resized * (latent.float().std() / resized.std().clamp_min(1e-6))


def magnitude_limit(tensor_name: str) -> float | None:
    """The largest |value| a tensor of an embedding file may hold, by its name in the file (``None``: no limit).

    ``query_key.*`` and ``value.*``: :data:`MAX_EMBEDDING_MAGNITUDE`; ``inverted_latent``:
    :data:`MAX_INVERTED_LATENT_MAGNITUDE`.
    """
    if tensor_name.startswith(("query_key.", "value.")):
        return MAX_EMBEDDING_MAGNITUDE
    if tensor_name == "inverted_latent":
        return MAX_INVERTED_LATENT_MAGNITUDE
    return None


def frame_difference(value: torch.Tensor) -> torch.Tensor:
    """Debias a value embedding ``(P, N, C)``: frame 0 kept, frame j becomes ``v[j] - v[j-1]``."""
    return torch.cat([value[:, :1], value[:, 1:] - value[:, :-1]], dim=1)


def temporal_centre(value: torch.Tensor) -> torch.Tensor:
    """Debias a value embedding ``(P, N, C)`` the way of the paper's ablation: subtract its mean over the N frames."""
    return value - value.mean(dim=1, keepdim=True)


@dataclass
class PreparedMotion:
    """Embeddings ready to install for one sampling size.

    Attributes:
        query_key: block name -> ``(1, frames, C)``.
        value: attention name -> ``(h*w, frames, C)`` at the sampling grid (empty in camera mode).
        inverted_latent: ``(C_latent, frames, H_latent, W_latent)`` or ``None``.
    """

    query_key: dict[str, torch.Tensor]
    value: dict[str, torch.Tensor]
    inverted_latent: torch.Tensor | None


def prepare_for_sampling(
    embedding: MotionEmbedding,
    frames: int,
    latent_height: int,
    latent_width: int,
    mode: str = "object",
    strength: float = 1.0,
) -> PreparedMotion:
    """Resample ``embedding`` to ``frames`` and the latent grid, then apply ``mode`` and ``strength``.

    Modes: ``object`` frame-differences the value embedding (keeps change, drops static appearance);
    ``centred`` subtracts its temporal mean instead (the paper's ablation); ``camera`` drops the value embedding
    (query-key only); ``raw`` uses both as trained.
    """
    if mode not in MOTION_MODES:
        raise InvalidSettingError(f"Unknown motion mode {mode!r}; choose one of {', '.join(MOTION_MODES)}.")
    if frames < 1 or latent_height < 1 or latent_width < 1:
        raise InvalidSettingError(f"Cannot sample {frames} frames at a {latent_height}x{latent_width} latent.")
    if not math.isfinite(strength):
        raise InvalidSettingError(f"Motion strength must be a finite number, got {strength}.")
    info = embedding.info
    query_key = {name: resample_frames(t.float(), frames) * strength for name, t in embedding.query_key.items()}
    value: dict[str, torch.Tensor] = {}
    if mode != "camera":
        for block in info.blocks:
            old_grid = block.grid(info.latent_height, info.latent_width)
            new_grid = block.grid(latent_height, latent_width)
            for attention in block.attention_names:
                tensor = resample_grid(resample_frames(embedding.value[attention].float(), frames), old_grid, new_grid)
                if mode == "object":
                    tensor = frame_difference(tensor)
                elif mode == "centred":
                    tensor = temporal_centre(tensor)
                value[attention] = tensor * strength
    latent = embedding.inverted_latent
    if latent is not None:
        latent = resample_latent(latent, frames, latent_height, latent_width)
    return PreparedMotion(query_key, value, latent)


def _comparable_hashes(first: str | None, second: str | None) -> bool:
    """Whether two architecture hashes are both known and made the same way (the scheme before ``:``).

    Files written before the ``v2:`` scheme hold hashes that depended on the order of a diffusers bookkeeping
    list, so they are not compared (like files with no hash at all); their layer widths are still checked.
    """
    if not first or not second or ":" not in first:
        return False
    return first.partition(":")[0] == second.partition(":")[0]


def check_fits(
    info: EmbeddingInfo,
    family: Any,
    blocks: list[TemporalBlock],
    model_name: str,
    *,
    architecture: str | None = None,
) -> None:
    """Raise :class:`IncompatibleEmbeddingError` unless the embedding fits the model.

    Args:
        info: facts of the embedding.
        family, blocks, model_name: the model's family (a ``ModelFamily`` or its name), its motion sites and its
            name (for messages).
        architecture: the model's architecture hash (``VideoModel.identity["architecture"]``). When both it and
            the embedding's ``base_model["architecture"]`` are known (and of one scheme, see
            :func:`_comparable_hashes`) they must be equal: two UNets can have the
            same temporal layer widths (so every shape check passes) and still differ inside (attention heads,
            normalisation groups, ...), and an embedding learned on one means nothing to the other.
    """
    trained_on = info.base_model.get("name", "?")
    family = str(family)
    if info.family != family:
        raise IncompatibleEmbeddingError(
            f"This motion embedding was trained on a {info.family!r} model ({trained_on}) "
            f"but {model_name!r} is a {family!r} model. Load the model it was trained on."
        )
    available = {b.name: b for b in blocks}
    for block in info.blocks:
        found = available.get(block.name)
        if found is None or found.channels != block.channels or found.attention_names != block.attention_names:
            have = f"{found.channels} channels" if found else "no such layer"
            raise IncompatibleEmbeddingError(
                f"This motion embedding has layer {block.name} with {block.channels} channels "
                f"(trained on {trained_on}), but {model_name!r} has {have} there. "
                "The two models have different architectures; load the model it was trained on."
            )
    trained_architecture = info.base_model.get("architecture")
    if _comparable_hashes(trained_architecture, architecture) and architecture != trained_architecture:
        raise IncompatibleEmbeddingError(
            f"This motion embedding was trained on {trained_on!r} (denoiser architecture {trained_architecture}), but "
            f"{model_name!r} has denoiser architecture {architecture}: its layers have the same widths but are built "
            f"differently inside, so the embedding would not mean the same motion. Load {trained_on!r} or another "
            f"model with architecture {trained_architecture}, or train a new embedding on {model_name!r}."
        )
