"""Motion-transfer benchmark on the bundled toy world: does the reference motion carry over to a new appearance?

Version 2 (issue 13). Each of the 16 references of :mod:`toyworld.references` (8 kinds of motion, none constant
velocity, each from two start positions; all three shapes and all six colours among their appearances) is
rendered, a motion embedding is trained on it (one training seed; the base loss unless a setting asks for
another), and clips are generated with prompts that differ from the reference in BOTH colour and shape. The
generated clips are measured with the toy world's detector (:mod:`toyworld.metrics`). Version 1 (4 references x
2 training seeds, no blend count) is in the history of this file up to commit 2b9a6c1.

Settings (the controls first; a run measures :data:`DEFAULT_SETTINGS` unless ``--settings`` says otherwise):

=============================== ====== ======== ===== ====== ==================================================
name                            loss   mode     prior inv.   what it tests
=============================== ====== ======== ===== ====== ==================================================
no_embedding                    -      -        0.0   -      the base model (control)
inverted_start_only             base   zeroed   0.5   plain  inverted reference latent, embeddings zeroed (control)
inverted_start_only_embedded    base   zeroed   0.5   emb.   the same control for the inversion through the embeddings
qk_only_pure_noise              base   camera   0.0   -      query-key embedding alone
raw_value_pure_noise            base   raw      0.0   -      raw value (+QK) embedding, no inverted start
diff_value_pure_noise           base   object   0.0   -      frame-differenced value (+QK), no inverted start
raw_value_inverted_start        base   raw      0.5   plain  raw value (+QK) from the inverted start
raw_value_inverted_embedded     base   raw      0.5   emb.   the same, start inverted through the embeddings
default_mode                    base   object   0.5   plain  the paper's default (object mode, prior 0.5, every step)
object_mode_inverted_embedded   base   object   0.5   emb.   the same, start inverted through the embeddings
default_strength_0.75           base   object   0.5   plain  the default with Apply strength 0.75
default_strength_0.5            base   object   0.5   plain  the default with Apply strength 0.5
default_end_0.75/0.5/0.25       base   object   0.5   plain  object mode on the first 75/50/25 % of the steps only
raw_value_end_0.75/0.5/0.25     base   raw      0.5   plain  raw value + QK on the first 75/50/25 % of the steps only
                                                             (raw_value_end_0.5: the pack's default, PACK_DEFAULT)
raw_pure_noise_end_0.75/0.5     base   raw      0.0   -      the same from pure noise, first 75/50 % of the steps
diff_pure_noise_end_0.75        base   object   0.0   -      object mode from pure noise, first 75 % of the steps
inverted_start_prior_1          base   zeroed   1.0   plain  the inverted reference latent itself as the start (control)
raw_value_prior_1               base   raw      1.0   plain  raw value + QK, every step, from that start: a ceiling of model + embedding
centred_pure_noise              base   centred  0.0   -      value minus its temporal mean (the paper's ablation), pure noise
centred_mode / centred_end_0.5  base   centred  0.5   plain  the same from the inverted start; on the first half of the steps
camera_mode                     base   camera   0.5   plain  QK only from the inverted start
camera_mode_inverted_embedded   base   camera   0.5   emb.   the same, start inverted through the embeddings
loss_debiased_temporal          dt     object   0.5   plain  default mode, debiased temporal loss
loss_debiased_hybrid            dh     object   0.5   plain  default mode, debiased hybrid loss
loss_debiased_hybrid_camera     dh     camera   0.5   plain  hybrid loss in its own default (camera) mode
V_raw_pure_noise                base   raw      0.0   -      raw value (+QK), every step, embedding of training variant V
V_diff_pure_noise               base   object   0.0   -      object mode, every step, training variant V
V_default_mode                  base   object   0.5   plain  the paper's default, training variant V
V_raw_end_0.5                   base   raw      0.5   plain  the pack's default, training variant V
=============================== ====== ======== ===== ====== ==================================================

Training variants V (:data:`TRAINING_VARIANTS`, issue 13's training-time ideas): ``static_penalty`` adds the
value-static penalty (weight 1) to the loss; ``colour_augmented`` / ``colour_blur_augmented`` train on recoloured
(and blurred) copies of the reference as well (:mod:`motion_core.appearance_augmentation`). Their rows are paired
with the standard rows of the same mode, start and window (the same references, prompts and seeds).

"inv." is where the stored start latent (the DDIM inversion of the reference) was computed: ``plain``, through
the unpatched model as the reference code does (the pack's default), or ``emb.``, through the trained raw
embeddings. The two embeddings of a (reference, seed, loss) differ only in that latent: training draws the same
noise and timesteps either way. "zeroed" is the embedding with every tensor set to zero and its inverted latent
kept, so only the start latent differs from the base model.

Metrics, per generated clip (the detector tracks the object's centroid in every frame):

* motion fidelity: Pearson correlation of the flattened per-frame displacement vectors ``[(F-1)*2]`` of the
  generated track and the reference's ground-truth track (frames where the object is missing are skipped).
  Averaged over the clips where it is defined (object detected in enough consecutive frames; the count is
  reported as ``n_fid``), with a 95 % normal-approximation half-width. ``cosine``: plain cosine of the same
  vectors, same clips.
* text alignment: the clip's majority colour AND majority shape equal the prompt's (a clip with no detection
  fails).
* embedding share: the setting's fidelity minus that of the same start without the embedding (``inverted_start_only``
  for a start from the inverted reference, ``no_embedding`` from pure noise): the part of the motion the embedding
  itself carries.
* appearance leakage: the clip's majority colour equals the reference's colour or its majority shape equals the
  reference's shape (prompts always differ from the reference in both attributes, so either is a leak).
* blends: the clip's majority shape is neither the prompt's nor the reference's. With three shapes, a cross of the
  prompt's and the reference's shape (a square crossed with a triangle comes out as a dome) reads as the third one.
  The markdown also counts, for the default mode, the detected shape per (reference shape, prompt shape) pair.
* presence: fraction of frames in which the object is detected (averaged over clips).
* temporal consistency: over the frames where the object is detected, the fraction whose per-frame colour and
  shape both equal the clip's majority colour and shape (averaged over clips with any detection; 1.0 means
  the object keeps one appearance all clip long).
* training time: wall-clock seconds per embedding (optimisation steps + DDIM inversion), mean over the
  embeddings a setting uses.

Training: each (reference, training seed, loss, inversion) embedding is trained once per run and reused by every
setting. Defaults: all temporal layers (``layer_set="all"``), AdamW lr 0.1, 200 steps, 50 inversion steps; no
gradient checkpointing (the model is tiny). Sampling: 32x32, 8 frames, DDIM 25 steps, guidance 1.5. Generation seeds
and prompts are the same across settings, so the settings are compared on paired clips.

Size: 16 references x 1 training seed = 16 embeddings; 3 clips per reference = 48 clips per setting. ``--quick``
(1 reference, 4 clips per setting, 100 training steps) takes a few minutes.

Families (``--family``): ``unet3d`` (default) measures the bundled UNet3D toy as described above; ``wan`` the
toy-world Wan (``assets/toyworld-wan``, or ``--model FOLDER``); ``animatediff`` and ``latte`` their toy-world models
(``assets/toyworld-animatediff``, ``assets/toyworld-latte``: the UNet3D toy's world, geometry and objective with
the family's denoiser). The training and sampling values come from the
model folder's ``motion_inversion.json`` (for the UNet3D toy exactly the values above), the scheduler is the
family's own (DDIM / flow Euler), and a setting whose loss the family refuses is listed as not measured (the
hybrid loss on Wan). The inverted start is the family's inversion (DDIM / flow Euler to sigma = 1). Everything
else, the references, prompts, seeds and metrics, is the same for every family.

Usage::

    python benchmarks/bench_motion_transfer.py                 # full run, writes benchmarks/results/motion_transfer.{md,json}
    python benchmarks/bench_motion_transfer.py --quick         # smoke test, writes motion_transfer_quick.{md,json}
    python benchmarks/bench_motion_transfer.py --family wan    # the toy-world Wan, writes motion_transfer_wan.{md,json}
    python benchmarks/bench_motion_transfer.py --family animatediff   # motion_transfer_animatediff.{md,json}
    python benchmarks/bench_motion_transfer.py --family latte         # motion_transfer_latte.{md,json}
    python benchmarks/bench_motion_transfer.py --settings all --tag all # every setting, incl. the debiased losses
    python benchmarks/bench_motion_transfer.py --family wan --model FOLDER --reference-check  # the VAE's ceiling
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from motion_core.diffusion import decode_latents, encode_frames  # noqa: E402
from motion_core.embedding import MotionEmbedding  # noqa: E402
from motion_core.losses import static_share  # noqa: E402
from motion_core.model_loading import VideoModel, load_video_model  # noqa: E402
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video  # noqa: E402
from motion_core.training import TrainingConfig, train_motion_embedding  # noqa: E402
from toyworld import metrics, world  # noqa: E402
from toyworld.references import MOTION_KINDS, Reference, benchmark_references  # noqa: E402

logger = logging.getLogger(__name__)

#: Family -> its bundled toy-world model (``--family``); ``--model`` points at another folder of that family.
FAMILY_MODELS: dict[str, Path] = {
    "unet3d": ROOT / "assets" / "toyworld-t2v",
    "wan": ROOT / "assets" / "toyworld-wan",
    "animatediff": ROOT / "assets" / "toyworld-animatediff",
    "latte": ROOT / "assets" / "toyworld-latte",
}


@dataclass(frozen=True)
class Setting:
    """One generation setting.

    Attributes:
        name: short identifier (table row).
        loss: training loss of the embedding used, or None for no embedding.
        mode: ``object`` / ``camera`` / ``raw``, or ``zeroed`` (the embedding zeroed, its inverted latent kept).
        strength: embedding strength (Apply's strength: 0 is the plain model).
        noise_prior: share of the inverted reference latent in the start noise.
        description: what the row tests.
        inversion: where the embedding's inverted start latent was computed (``plain`` / ``embedded``).
        end_percent: the embeddings act on the first ``end_percent`` of the sampling steps (Apply's end percent).
        training: how the embedding was trained besides its loss, a key of :data:`TRAINING_VARIANTS`.
    """

    name: str
    loss: str | None
    mode: str
    strength: float
    noise_prior: float
    description: str
    inversion: str = "plain"
    end_percent: float = 1.0
    training: str = "standard"


#: Training variants of issue 13 (TrainingConfig fields besides the run's own): ``standard`` is the pack's training.
#: The penalty weight 1 was chosen on a training diagnostic before any benchmark run: on the ``bounce`` reference it
#: takes the value embeddings' static share (:func:`motion_core.losses.static_share`) from 0.36 / 0.26 (UNet3D /
#: Latte toy) to 0.002 / 0.006 and keeps their mean magnitude within 25 % (weight 100 shrank the whole embedding).
TRAINING_VARIANTS: dict[str, dict[str, object]] = {
    "standard": {},
    "static_penalty": {"value_static_penalty": 1.0},
    "colour_augmented": {"appearance_augmentation": "colour"},
    "colour_blur_augmented": {"appearance_augmentation": "colour_blur"},
}


def _variant_settings() -> tuple[Setting, ...]:
    """For each training variant: raw and object mode from pure noise on every step, the paper's default, the pack's."""
    rows = []
    for variant in TRAINING_VARIANTS:
        if variant == "standard":
            continue
        what = f"trained with {variant.replace('_', ' ')}"
        rows += [
            Setting(f"{variant}_raw_pure_noise", "base", "raw", 1.0, 0.0, f"raw value + QK, pure noise, every step; {what}", training=variant),
            Setting(f"{variant}_diff_pure_noise", "base", "object", 1.0, 0.0, f"object mode, pure noise, every step; {what}", training=variant),
            Setting(f"{variant}_default_mode", "base", "object", 1.0, 0.5, f"the paper's default; {what}", training=variant),
            Setting(f"{variant}_raw_end_0.5", "base", "raw", 1.0, 0.5, f"the pack's default; {what}", end_percent=0.5, training=variant),
        ]
    return tuple(rows)


SETTINGS: tuple[Setting, ...] = (
    Setting("no_embedding", None, "raw", 0.0, 0.0, "control: base model, pure noise"),
    Setting("inverted_start_only", "base", "zeroed", 1.0, 0.5, "control: plain-model inverted start, embeddings zeroed"),
    Setting("inverted_start_only_embedded", "base", "zeroed", 1.0, 0.5, "control: start inverted through the embeddings, embeddings zeroed", "embedded"),
    Setting("qk_only_pure_noise", "base", "camera", 1.0, 0.0, "QK embedding only, pure noise"),
    Setting("raw_value_pure_noise", "base", "raw", 1.0, 0.0, "raw value + QK, pure noise"),
    Setting("diff_value_pure_noise", "base", "object", 1.0, 0.0, "frame-differenced value + QK, pure noise"),
    Setting("raw_value_inverted_start", "base", "raw", 1.0, 0.5, "raw value + QK, plain-model inverted start p=0.5"),
    Setting("raw_value_inverted_embedded", "base", "raw", 1.0, 0.5, "raw value + QK, start inverted through the embeddings", "embedded"),
    Setting("default_mode", "base", "object", 1.0, 0.5, "object mode, plain-model inverted start p=0.5, every step (the paper's default)"),
    Setting("object_mode_inverted_embedded", "base", "object", 1.0, 0.5, "object mode, start inverted through the embeddings", "embedded"),
    Setting("default_strength_0.75", "base", "object", 0.75, 0.5, "object mode, p=0.5, Apply strength 0.75"),
    Setting("default_strength_0.5", "base", "object", 0.5, 0.5, "object mode, p=0.5, Apply strength 0.5"),
    Setting("default_end_0.75", "base", "object", 1.0, 0.5, "default mode on the first 75 % of the steps", end_percent=0.75),
    Setting("default_end_0.5", "base", "object", 1.0, 0.5, "default mode on the first half of the steps", end_percent=0.5),
    Setting("default_end_0.25", "base", "object", 1.0, 0.5, "default mode on the first quarter of the steps", end_percent=0.25),
    Setting("raw_value_end_0.75", "base", "raw", 1.0, 0.5, "raw value + QK from the inverted start, first 75 % of the steps", end_percent=0.75),
    Setting("raw_value_end_0.5", "base", "raw", 1.0, 0.5, "raw value + QK from the inverted start, first half of the steps", end_percent=0.5),
    Setting("raw_value_end_0.25", "base", "raw", 1.0, 0.5, "raw value + QK from the inverted start, first quarter of the steps", end_percent=0.25),
    Setting("raw_pure_noise_end_0.75", "base", "raw", 1.0, 0.0, "raw value + QK from pure noise, first 75 % of the steps", end_percent=0.75),
    Setting("raw_pure_noise_end_0.5", "base", "raw", 1.0, 0.0, "raw value + QK from pure noise, first half of the steps", end_percent=0.5),
    Setting("diff_pure_noise_end_0.75", "base", "object", 1.0, 0.0, "object mode from pure noise, first 75 % of the steps", end_percent=0.75),
    Setting("inverted_start_prior_1", "base", "zeroed", 1.0, 1.0, "control: the inverted reference latent itself as the start, embeddings zeroed"),
    Setting("raw_value_prior_1", "base", "raw", 1.0, 1.0, "raw value + QK, every step, from the inverted reference latent itself (no noise)"),
    Setting("centred_pure_noise", "base", "centred", 1.0, 0.0, "temporal-mean-subtracted value (+QK), no inverted start"),
    Setting("centred_mode", "base", "centred", 1.0, 0.5, "temporal-mean-subtracted value (+QK), inverted start p=0.5"),
    Setting("centred_end_0.5", "base", "centred", 1.0, 0.5, "centred mode on the first half of the steps", end_percent=0.5),
    Setting("camera_mode", "base", "camera", 1.0, 0.5, "camera mode: QK only, plain-model inverted start p=0.5"),
    Setting("camera_mode_inverted_embedded", "base", "camera", 1.0, 0.5, "camera mode, start inverted through the embeddings", "embedded"),
    Setting("loss_debiased_temporal", "debiased_temporal", "object", 1.0, 0.5, "default mode, debiased temporal loss"),
    Setting("loss_debiased_hybrid", "debiased_hybrid", "object", 1.0, 0.5, "default mode, debiased hybrid loss"),
    Setting("loss_debiased_hybrid_camera", "debiased_hybrid", "camera", 1.0, 0.5, "hybrid loss, camera mode, p=0.5"),
    *_variant_settings(),
)

#: What a run measures unless ``--settings`` says otherwise: the controls, the pure-noise modes, the paper's default
#: and its strength 0.75, the step windows that decided the pack's default, centred and camera mode, all from one
#: embedding per reference (base loss, plain inversion). The other rows (inversion through the embeddings, the
#: debiased losses, the windows that lost) run with ``--settings all``; the first benchmark (4 references x 2 seeds;
#: ``benchmarks/results/motion_transfer*.md`` at commit 2b9a6c1) found no gain from the losses or the inversion.
DEFAULT_SETTINGS: tuple[str, ...] = (
    "no_embedding",
    "inverted_start_only",
    "raw_value_pure_noise",
    "diff_value_pure_noise",
    "default_mode",
    "default_strength_0.75",
    "default_end_0.75",
    "default_end_0.5",
    "raw_value_end_0.75",
    "raw_value_end_0.5",
    "raw_pure_noise_end_0.75",
    "centred_mode",
    "camera_mode",
)


@dataclass
class RunConfig:
    """Everything that defines a run (recorded in the JSON).

    The training and sampling values default to the UNet3D toy's recommended settings; :func:`config_for_model`
    takes them from the model folder's ``motion_inversion.json`` instead (one source per model).
    """

    references: list[str]
    train_seeds: list[int]
    clips_per_reference_seed: int
    train_steps: int = 200
    learning_rate: float = 0.1
    layer_set: str = "all"
    inversion_steps: int = 50
    sample_steps: int = 25
    guidance_scale: float = 1.5
    frames: int = 8
    size: int = 32
    sample_seed_base: int = 50_000
    threads: int = 2
    losses: list[str] = field(default_factory=lambda: sorted({s.loss for s in SETTINGS if s.loss}))
    scheduler: str = "ddim"
    settings: list[str] = field(default_factory=lambda: list(DEFAULT_SETTINGS))
    #: Latte and Wan only: the value grid's longest side for this run instead of the family's
    #: ``LATTE_VALUE_GRID_MAX_SIDE`` / ``WAN_VALUE_GRID_MAX_SIDE`` (an exploration of the grid; ``None``: the family's).
    value_grid_max_side: int | None = None


def config_for_model(model: VideoModel, **run: object) -> RunConfig:
    """A :class:`RunConfig` with the model's recommended training/sampling values and its family's scheduler.

    ``losses`` are those the selected settings train; settings whose loss the family refuses (the hybrid loss on Wan)
    drop out through it.
    ``run`` gives the run's own fields (references, seeds, clips, threads) and any override.
    """
    rec = model.recommended
    values: dict[str, object] = {
        "train_steps": rec.value("train", "steps"),
        "learning_rate": rec.value("train", "learning_rate"),
        "layer_set": model.family.resolve_layer_set(rec.value("train", "layers")),
        "sample_steps": rec.value("sample", "steps"),
        "guidance_scale": rec.value("sample", "cfg"),
        "frames": rec.value("sample", "frames"),
        "size": rec.value("sample", "width"),
        "scheduler": model.family.resolve_scheduler("auto"),
        "losses": sorted({s.loss for s in SETTINGS if s.loss and s.loss in model.family.losses}),
    }
    if rec.value("sample", "width") != rec.value("sample", "height"):
        raise ValueError("the benchmark's reference trajectories need a square sampling size")
    values.update({k: v for k, v in run.items() if v is not None})
    selected = set(values.get("settings", DEFAULT_SETTINGS))  # type: ignore[arg-type]
    values["losses"] = [loss for loss in values["losses"] if any(s.loss == loss and s.name in selected for s in SETTINGS)]  # type: ignore[union-attr]
    return RunConfig(**values)  # type: ignore[arg-type]


def settings_for(config: RunConfig) -> tuple[Setting, ...]:
    """The settings a run measures: those of ``config.settings`` with no loss or a loss of ``config.losses``."""
    return tuple(s for s in SETTINGS if s.name in config.settings and (s.loss is None or s.loss in config.losses))


@dataclass
class ClipResult:
    """Measurements of one generated clip."""

    setting: str
    reference: str
    train_seed: int
    sample_seed: int
    prompt: str
    colour: str | None
    shape: str | None
    pearson: float
    cosine: float
    presence: float
    text_ok: bool
    leak: bool
    blend: bool
    consistency: float


def prompt_plan(reference: Reference, ref_index: int, train_seed: int, count: int) -> list[tuple[str, str]]:
    """The (colour, shape) prompts for one (reference, seed): all differ from the reference in colour AND shape.

    The candidates are rotated so that the prompts spread over every eligible colour and shape.
    """
    ref_colour, ref_shape = reference.colour, reference.shape
    candidates = [(c, s) for c in world.COLOURS if c != ref_colour for s in world.SHAPES if s != ref_shape]
    # Interleave shapes so consecutive prompts change both attributes.
    candidates.sort(key=lambda cs: (world.SHAPES.index(cs[1]), world.COLOURS.index(cs[0])))
    half = len(candidates) // 2
    interleaved = [x for pair in zip(candidates[:half], candidates[half:]) for x in pair] + candidates[2 * half :]
    start = ref_index * 3 + train_seed * count
    return [interleaved[(start + k) % len(interleaved)] for k in range(count)]


def measure_clip(frames: torch.Tensor, reference_track: torch.Tensor, prompt: tuple[str, str], reference: tuple[str, str]) -> dict:
    """Detector-based measurements of one generated clip (see the module docstring for definitions)."""
    det = metrics.detect_clip(frames)
    pearson = metrics.motion_pearson(det.centroids, reference_track)
    cosine = metrics.motion_cosine(det.centroids, reference_track)
    text_ok = det.colour == prompt[0] and det.shape == prompt[1]
    leak = (det.colour is not None and det.colour == reference[0] and prompt[0] != reference[0]) or (
        det.shape is not None and det.shape == reference[1] and prompt[1] != reference[1]
    )
    blend = det.shape is not None and det.shape not in (prompt[1], reference[1])
    present = [i for i, p in enumerate(det.present.tolist()) if p]
    if present:
        agree = sum(det.frame_colours[i] == det.colour and det.frame_shapes[i] == det.shape for i in present)
        consistency = agree / len(present)
    else:
        consistency = float("nan")
    return {
        "colour": det.colour,
        "shape": det.shape,
        "pearson": pearson,
        "cosine": cosine,
        "presence": det.presence_rate,
        "text_ok": bool(text_ok),
        "leak": bool(leak),
        "blend": bool(blend),
        "consistency": consistency,
    }


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values: list[float]) -> float:
    vals = _finite(values)
    return statistics.fmean(vals) if vals else float("nan")


def _ci95(values: list[float]) -> float:
    vals = _finite(values)
    return 1.96 * statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else float("nan")


def summarise(clips: list[ClipResult]) -> dict:
    """Aggregate clip results of one setting (or one setting x reference)."""
    pearson = [c.pearson for c in clips]
    return {
        "n_clips": len(clips),
        "n_fid": len(_finite(pearson)),
        "fidelity": _mean(pearson),
        "fidelity_ci95": _ci95(pearson),
        "cosine": _mean([c.cosine for c in clips]),
        "text_alignment": _mean([float(c.text_ok) for c in clips]),
        "colour_match": _mean([float(c.colour == c.prompt.split()[1]) for c in clips]),
        "shape_match": _mean([float(c.shape == c.prompt.split()[2]) for c in clips]),
        "leakage": _mean([float(c.leak) for c in clips]),
        "blends": _mean([float(c.blend) for c in clips]),
        "presence": _mean([c.presence for c in clips]),
        "temporal_consistency": _mean([c.consistency for c in clips]),
    }


def zeroed(embedding: MotionEmbedding) -> MotionEmbedding:
    """``embedding`` with every query-key and value tensor set to zero and its inverted start latent kept."""
    return MotionEmbedding(
        embedding.info,
        {k: torch.zeros_like(v) for k, v in embedding.query_key.items()},
        {k: torch.zeros_like(v) for k, v in embedding.value.items()},
        embedding.inverted_latent,
    )


class Benchmark:
    """Trains (and caches) embeddings, generates the clips of every setting, and collects the measurements."""

    def __init__(self, model: VideoModel, config: RunConfig) -> None:
        self.model = model
        self.config = config
        self.settings = settings_for(config)
        every = benchmark_references(config.frames, config.size)
        unknown = [r for r in config.references if r not in every]
        if unknown:
            raise ValueError(f"unknown references {unknown}; the benchmark has {list(every)}")
        self.references: dict[str, Reference] = {name: every[name] for name in config.references}
        self.embeddings: dict[tuple[str, int, str, str, str], MotionEmbedding] = {}
        self.training_records: list[dict] = []
        self.clips: list[ClipResult] = []
        self.sampling_seconds = 0.0

    def reference_clip(self, reference: str) -> torch.Tensor:
        """The rendered reference clip ``[F, H, W, 3]``, its object sized for the canvas as the world's clips are."""
        ref = self.references[reference]
        size = self.config.size
        return world.render_trajectory(ref.track, ref.colour, ref.shape, world.object_size(size, size), size, size)

    def embedding(self, reference: str, seed: int, loss: str, inversion: str = "plain", training: str = "standard") -> MotionEmbedding:
        """The embedding of (reference, seed, loss, inversion, training variant), trained on first use and cached for the run."""
        key = (reference, seed, loss, inversion, training)
        if key not in self.embeddings:
            cfg = self.config
            ref = self.references[reference]
            caption = world.caption_for(ref.colour, ref.shape)
            train_cfg = TrainingConfig(
                prompt=caption,
                steps=cfg.train_steps,
                learning_rate=cfg.learning_rate,
                loss=loss,
                layer_set=cfg.layer_set,
                seed=seed,
                gradient_checkpointing=False,
                inversion=inversion,
                inversion_steps=cfg.inversion_steps,
                **TRAINING_VARIANTS[training],  # type: ignore[arg-type]
            )
            start = time.perf_counter()
            result = train_motion_embedding(self.model, self.reference_clip(reference), train_cfg)
            wall = time.perf_counter() - start
            seconds = result.timings.get("steps", 0.0) + result.timings.get("inversion", 0.0)
            tail = result.losses[-20:]
            record = {
                "reference": reference,
                "seed": seed,
                "loss": loss,
                "inversion": inversion,
                "training": training,
                "value_static_share": static_share(result.embedding.value.values()),
                "train_seconds": seconds,
                "wall_seconds": wall,
                "timings": result.timings,
                "first_loss": result.losses[0],
                "final_loss_mean20": statistics.fmean(tail),
                "num_parameters": result.embedding.num_parameters,
                "inverted_latent_std": float(result.embedding.inverted_latent.std()) if result.embedding.inverted_latent is not None else None,
            }
            self.training_records.append(record)
            logger.info("trained %s seed %d %s (%s inversion, %s) in %.1f s (loss %.4f -> %.4f)", reference, seed, loss, inversion, training, seconds, record["first_loss"], record["final_loss_mean20"])
            self.embeddings[key] = result.embedding
        return self.embeddings[key]

    def run_setting(self, setting: Setting, reference: str, ref_index: int, seed: int) -> None:
        """Generate and measure the clips of one setting for one (reference, training seed)."""
        cfg = self.config
        motion = None
        if setting.loss is not None:
            embedding = self.embedding(reference, seed, setting.loss, setting.inversion, setting.training)
            if setting.mode == "zeroed":
                motion = AppliedMotion(zeroed(embedding), setting.strength, "raw")
            else:
                motion = AppliedMotion(embedding, setting.strength, setting.mode, end_percent=setting.end_percent)
        ref = self.references[reference]
        prompts = prompt_plan(ref, ref_index, seed, cfg.clips_per_reference_seed)
        for k, (colour, shape) in enumerate(prompts):
            sample_seed = cfg.sample_seed_base + ref_index * 1000 + seed * 100 + k
            sampling = SamplingConfig(
                prompt=world.caption_for(colour, shape),
                width=cfg.size,
                height=cfg.size,
                frames=cfg.frames,
                steps=cfg.sample_steps,
                guidance_scale=cfg.guidance_scale,
                seed=sample_seed,
                scheduler=cfg.scheduler,
                noise_prior=setting.noise_prior,
            )
            start = time.perf_counter()
            frames = sample_video(self.model, sampling, motion)
            self.sampling_seconds += time.perf_counter() - start
            m = measure_clip(frames, ref.track, (colour, shape), (ref.colour, ref.shape))
            self.clips.append(ClipResult(setting.name, reference, seed, sample_seed, sampling.prompt, **m))

    def run(self) -> None:
        """Every setting for every (reference, training seed); logs progress with an estimate of the time left."""
        cfg = self.config
        jobs = [(r, i, s) for i, r in enumerate(cfg.references) for s in cfg.train_seeds]
        start = time.perf_counter()
        for done, (reference, ref_index, seed) in enumerate(jobs):
            for setting in self.settings:
                self.run_setting(setting, reference, ref_index, seed)
            elapsed = time.perf_counter() - start
            left = elapsed / (done + 1) * (len(jobs) - done - 1)
            logger.info("%s seed %d done (%d/%d); %.0f s elapsed, ~%.0f s left", reference, seed, done + 1, len(jobs), elapsed, left)


def _reference_self_check(bench: Benchmark, through_vae: bool = False) -> dict[str, float]:
    """Detector on each reference clip vs. its ground-truth track (Pearson should be ~1).

    ``through_vae``: on the clip encoded and decoded by the model's VAE instead, the most motion fidelity a clip of
    this model's latents can have (below 1 where the latent loses motion, e.g. the toy Wan's: four frames per latent
    frame).
    """
    out = {}
    for reference in bench.config.references:
        clip = bench.reference_clip(reference)
        if through_vae:
            clip = decode_latents(bench.model, encode_frames(bench.model, clip, torch.Generator().manual_seed(0)))
        out[reference] = metrics.motion_pearson(metrics.detect_clip(clip).centroids, bench.references[reference].track)
    return out


def _train_seconds(bench: Benchmark, setting: Setting) -> float:
    if setting.loss is None:
        return float("nan")
    return _mean([r["train_seconds"] for r in bench.training_records if (r["loss"], r["inversion"], r["training"]) == (setting.loss, setting.inversion, setting.training)])


def control_of(setting: Setting) -> str:
    """The control a setting's embedding share is measured against: the same start without the embedding.

    A setting that starts from the inverted reference latent is compared with ``inverted_start_only`` (the same
    start, embeddings zeroed; for a start inverted through the embeddings, ``inverted_start_only_embedded``); one
    that starts from pure noise with ``no_embedding``; one from the inverted latent itself (prior 1) with
    ``inverted_start_prior_1``.
    """
    if setting.noise_prior == 0.0:
        return "no_embedding"
    if setting.noise_prior == 1.0:
        return "inverted_start_prior_1"
    return "inverted_start_only_embedded" if setting.inversion == "embedded" else "inverted_start_only"


#: The setting that is what the pack does with its defaults (Apply's mode, strength and step window, the sampler's
#: noise prior, training's loss and inversion); a test checks it against the core's defaults.
PACK_DEFAULT = "raw_value_end_0.5"

#: Issue 13's targets on the pack's default (and object mode from pure noise), checked by :func:`targets_of`.
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    (PACK_DEFAULT, "fidelity", ">=", 0.9),
    (PACK_DEFAULT, "text_alignment", ">=", 0.95),
    (PACK_DEFAULT, "blends", "<=", 0.05),
    (PACK_DEFAULT, "leakage", "<=", 0.05),
    (PACK_DEFAULT, "presence", ">=", 0.95),
    ("diff_value_pure_noise", "fidelity", ">=", 0.85),
    (PACK_DEFAULT, "embedding_share", ">=", 0.15),
)


def targets_of(per_setting: dict[str, dict]) -> list[dict]:
    """Each target with the measured value and whether it is met (None where the setting was not measured)."""
    out = []
    for setting, metric, op, bound in TARGETS:
        value = per_setting.get(setting, {}).get(metric)
        value = float("nan") if value is None else value  # None: not finite in a stored report
        met = None if not math.isfinite(value) else (value >= bound if op == ">=" else value <= bound)
        out.append({"setting": setting, "metric": metric, "op": op, "bound": bound, "value": value, "met": met})
    return out


def add_embedding_shares(per_setting: dict[str, dict]) -> None:
    """Set each summary's ``control`` and ``embedding_share`` (NaN where its control was not measured)."""
    by_name = {s.name: s for s in SETTINGS}
    for name, own in per_setting.items():
        own["control"] = control_of(by_name[name])
        control = per_setting.get(own["control"])
        fidelity = own["fidelity"] if own["fidelity"] is not None else float("nan")
        measured = control is not None and control["fidelity"] is not None and name != own["control"]
        own["embedding_share"] = fidelity - control["fidelity"] if measured else float("nan")


#: Training-record fields that must agree for two runs' embeddings to be the same ones (training is deterministic).
_SAME_TRAINING = ("reference", "seed", "loss", "inversion", "first_loss", "final_loss_mean20", "inverted_latent_std")


def merge_reports(reports: list[dict]) -> dict:
    """One report from runs of different settings on the same model, references, prompts and training.

    Refuses runs whose configuration (other than the settings) differs, or whose shared embeddings did not train to
    the same losses and inverted start (then they are not the same embeddings and the rows are not comparable).
    Settings keep the order of :data:`SETTINGS`; targets and embedding shares are computed on the merged rows.
    """
    first = reports[0]
    ignored = {"settings", "losses"}
    for other in reports[1:]:
        if other.get("benchmark_version") != 2 or first.get("benchmark_version") != 2:
            raise SystemExit("only version-2 reports can be merged")
        for key in ("family", "model", "reference_appearance"):
            if other[key] != first[key]:
                raise SystemExit(f"the runs differ in {key}: {first[key]!r} vs {other[key]!r}")
        for key in set(first["config"]) | set(other["config"]):
            if key not in ignored and first["config"].get(key) != other["config"].get(key):
                raise SystemExit(f"the runs differ in config {key}: {first['config'].get(key)!r} vs {other['config'].get(key)!r}")
    training: dict[tuple, dict] = {}
    for report in reports:
        for record in report["training"]:
            key = (record["reference"], record["seed"], record["loss"], record["inversion"], record.get("training", "standard"))
            known = training.setdefault(key, record)
            if any(known[f] != record[f] for f in _SAME_TRAINING):
                raise SystemExit(f"the embedding {key} trained differently in the runs; their rows are not comparable")
    order = [s.name for s in SETTINGS]
    names = sorted({n for r in reports for n in r["settings"]}, key=order.index)
    source = {n: next(r for r in reports if n in r["settings"]) for n in names}
    settings = {n: dict(source[n]["settings"][n]) for n in names}
    add_embedding_shares(settings)
    merged = dict(first)
    merged.update({
        "command": " + ".join(r["command"] for r in reports),
        "elapsed_seconds": sum(r["elapsed_seconds"] for r in reports),
        "sampling_seconds": sum(r["sampling_seconds"] for r in reports),
        "config": {**first["config"], "settings": names,
                   "losses": sorted({loss for r in reports for loss in r["config"]["losses"]})},
        "settings": settings,
        "fidelity_by_reference": {n: source[n]["fidelity_by_reference"][n] for n in names},
        "fidelity_by_kind": {n: source[n]["fidelity_by_kind"][n] for n in names},
        "skipped_settings": {k: v for r in reports for k, v in r.get("skipped_settings", {}).items()},
        "pack_default": PACK_DEFAULT,
        "targets": targets_of(settings),
        "training": list(training.values()),
        "clips": [c for n in names for c in source[n]["clips"] if c["setting"] == n],
    })
    return merged


def build_report(bench: Benchmark, command: str, started: str, elapsed: float, model_dir: Path) -> dict:
    """The JSON report: config, per-setting, per-reference and per-kind summaries, targets, training and clip records."""
    per_setting = {}
    per_reference: dict[str, dict[str, float]] = {}
    per_kind: dict[str, dict[str, float]] = {}
    kinds = [k for k in MOTION_KINDS if any(r.kind == k for r in bench.references.values())]
    for setting in bench.settings:
        clips = [c for c in bench.clips if c.setting == setting.name]
        summary = summarise(clips)
        summary["train_seconds_per_embedding"] = _train_seconds(bench, setting)
        per_setting[setting.name] = {**asdict(setting), **summary}
        per_reference[setting.name] = {
            ref: summarise([c for c in clips if c.reference == ref])["fidelity"] for ref in bench.config.references
        }
        per_kind[setting.name] = {
            kind: summarise([c for c in clips if bench.references[c.reference].kind == kind])["fidelity"] for kind in kinds
        }
    add_embedding_shares(per_setting)
    return {
        "benchmark": "motion_transfer",
        "benchmark_version": 2,
        "pack_default": PACK_DEFAULT,
        "command": command,
        "date": started,
        "elapsed_seconds": elapsed,
        "sampling_seconds": bench.sampling_seconds,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform()},
        "model": _display_path(model_dir),
        "family": bench.model.family.name,
        "skipped_settings": {
            s.name: f"the {s.loss} loss is not available for {bench.model.family.name} models"
            for s in SETTINGS
            if s.name in bench.config.settings and s not in bench.settings
        },
        "config": asdict(bench.config),
        "reference_appearance": {name: [r.colour, r.shape] for name, r in bench.references.items()},
        "reference_kind": {name: r.kind for name, r in bench.references.items()},
        "reference_detector_pearson": _reference_self_check(bench),
        "reference_vae_pearson": _reference_self_check(bench, through_vae=True),
        "settings": per_setting,
        "fidelity_by_reference": per_reference,
        "fidelity_by_kind": per_kind,
        "targets": targets_of(per_setting),
        "training": bench.training_records,
        "clips": [asdict(c) for c in bench.clips],
    }


def shape_outcomes(report: dict, setting: str) -> dict[str, dict[str, int]]:
    """For one setting: ``"<reference shape> -> <prompt shape>"`` -> counts of the detected shape being the prompt's
    (``prompt``), the reference's (``reference``), the third shape (``blend``) or none (``none``)."""
    out: dict[str, dict[str, int]] = {}
    for clip in report["clips"]:
        if clip["setting"] != setting:
            continue
        ref_shape = report["reference_appearance"][clip["reference"]][1]
        prompt_shape = clip["prompt"].split()[2]
        row = out.setdefault(f"{ref_shape} -> {prompt_shape}", {"prompt": 0, "reference": 0, "blend": 0, "none": 0})
        got = clip["shape"]
        row["prompt" if got == prompt_shape else "reference" if got == ref_shape else "none" if got is None else "blend"] += 1
    return dict(sorted(out.items()))


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (stable across checkouts), else as given."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _json_safe(value: object) -> object:
    """Replace non-finite floats by None (strict JSON has no NaN) throughout nested dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _fmt(value: float, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


_SCHEDULER_NAMES = {"ddim": "DDIM", "euler": "flow Euler"}


def render_markdown(report: dict) -> str:
    """The markdown tables of a (version 2) report."""
    cfg = report["config"]
    scheduler = _SCHEDULER_NAMES.get(cfg.get("scheduler", "ddim"), cfg.get("scheduler"))
    refs = cfg["references"]
    appearance = report["reference_appearance"]
    lines = [
        "# Motion transfer benchmark (toy world)" + ("" if report.get("family", "unet3d") == "unet3d" else f", {report['family']}"),
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; run time {report['elapsed_seconds']:.0f} s "
        f"({report['machine']['threads']} torch threads; timings depend on what else the machine runs); torch {report['machine']['torch']}",
        f"- model: `{report['model']}`; sampling {cfg['size']}x{cfg['size']}, {cfg['frames']} frames, "
        f"{scheduler} {cfg['sample_steps']} steps, guidance {cfg['guidance_scale']}",
        f"- training: layer set `{cfg['layer_set']}`, AdamW lr {cfg['learning_rate']}, {cfg['train_steps']} steps, "
        f"{cfg['inversion_steps']} inversion steps; training seeds {cfg['train_seeds']}; losses {cfg['losses']}",
        f"- {len(refs)} references ({len(set(report['reference_kind'].values()))} kinds of motion, `toyworld/references.py`): "
        + ", ".join(f"{r} ({' '.join(appearance[r])})" for r in refs)
        + f"; prompts differ from the reference in colour AND shape; {cfg['clips_per_reference_seed']} clips per "
        f"(reference, seed), sample seeds {cfg['sample_seed_base']} + 1000*ref + 100*seed + k, same for every setting",
        "- detector on the reference clips (Pearson vs ground truth): min "
        + _fmt(min(report["reference_detector_pearson"].values()))
        + ("" if "reference_vae_pearson" not in report else
           "; after the model's VAE (encode + decode): min " + _fmt(min(report["reference_vae_pearson"].values()))
           + ", mean " + _fmt(statistics.fmean(report["reference_vae_pearson"].values()))),
        "",
        "| setting | loss | mode | prior | inversion | fidelity (Pearson) ±95% | n_fid | embedding share | text | colour | shape | leakage | blends | presence | temporal cons. | train s/emb |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["settings"].items():
        mode = "—" if s["loss"] is None else s["mode"] + (f" x{s['strength']:g}" if s["strength"] != 1.0 else "")
        if s["loss"] is not None and s.get("end_percent", 1.0) < 1.0:
            mode += f", steps < {s['end_percent']:g}"
        lines.append(
            f"| {name} | {s['loss'] or '—'} | {mode} | {s['noise_prior']:g} | {s['inversion'] if s['loss'] and s['noise_prior'] else '—'} "
            f"| {_fmt(s['fidelity'])} ± {_fmt(s['fidelity_ci95'])} | {s['n_fid']}/{s['n_clips']} | {_fmt(s['embedding_share'])} "
            f"| {_fmt(s['text_alignment'])} | {_fmt(s['colour_match'])} | {_fmt(s['shape_match'])} | {_fmt(s['leakage'])} "
            f"| {_fmt(s['blends'])} | {_fmt(s['presence'])} | {_fmt(s['temporal_consistency'])} | {_fmt(s['train_seconds_per_embedding'], 1)} |"
        )
    kinds = list(next(iter(report["fidelity_by_kind"].values()), {}))
    lines += ["", "Motion fidelity by kind of motion (mean over its references):", "", "| setting | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, per_kind in report["fidelity_by_kind"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(per_kind[k]) for k in kinds) + " |")
    for name in dict.fromkeys((report.get("pack_default", "default_mode"), "default_mode")):
        if name not in report["settings"]:
            continue
        outcomes = shape_outcomes(report, name)
        lines += ["", f"{name}, detected shape by (reference shape -> prompt shape), clips:", "",
                  "| reference -> prompt | prompt's | reference's | blend (third shape) | none |", "|---|---|---|---|---|"]
        for pair, row in outcomes.items():
            lines.append(f"| {pair} | {row['prompt']} | {row['reference']} | {row['blend']} | {row['none']} |")
    skipped = report.get("skipped_settings", {})
    if skipped:
        lines += ["", "Not measured: " + "; ".join(f"{name} ({why})" for name, why in skipped.items()) + "."]
    lines += ["", "Targets (not tuned for; the metric definitions stay fixed while the method changes):", ""]
    for t in report["targets"]:
        verdict = "not measured" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"- {t['setting']} {t['metric']} {t['op'].replace('>=', '≥').replace('<=', '≤')} {t['bound']:g}: {_fmt(t['value'])} ({verdict})")
    lines += [
        "",
        "Definitions: fidelity = Pearson of flattened per-frame displacement vectors (generated track vs reference "
        "ground truth), mean over clips where it is defined (n_fid); embedding share = fidelity minus that of the same "
        "start without the embedding (inverted_start_only for a start from the inverted reference, no_embedding for "
        "pure noise); text = majority colour AND shape match the prompt (colour, shape: each alone); leakage = majority "
        "colour or shape equals the reference's (prompts differ in both); blends = majority shape is neither the "
        "prompt's nor the reference's (a cross of the two reads as the third shape); presence = fraction of frames "
        "with the object detected; temporal consistency = fraction of detected frames whose colour and shape equal the "
        f"clip majority; train s/emb = optimisation + {scheduler} inversion seconds per embedding (each trained once per run).",
        "",
    ]
    return "\n".join(lines)


def selected_settings(spec: str) -> list[str]:
    """The setting names ``--settings`` asks for (``default``, ``all`` or a comma-separated list of names)."""
    if spec == "default":
        return list(DEFAULT_SETTINGS)
    if spec == "all":
        return [s.name for s in SETTINGS]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in {s.name for s in SETTINGS}]
    if unknown or not names:
        raise SystemExit(f"unknown settings {unknown or spec!r}; choose from {[s.name for s in SETTINGS]}, 'default' or 'all'")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 reference, 1 seed, 4 clips per setting, 100 training steps")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the .md and .json results")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--family", choices=sorted(FAMILY_MODELS), default="unet3d", help="which bundled toy-world model to measure")
    parser.add_argument("--model", type=Path, default=None, help="another model folder (default: the family's bundled toy model)")
    parser.add_argument("--train-steps", type=int, default=None, help="override the model's recommended training steps")
    parser.add_argument("--lr", type=float, default=None, help="override the model's recommended learning rate")
    parser.add_argument("--layers", default=None, help="override the model's recommended layer set")
    parser.add_argument("--guidance", type=float, default=None, help="override the model's recommended sampling cfg")
    parser.add_argument("--settings", default="default", help="'default' (DEFAULT_SETTINGS), 'all', or a comma-separated list of setting names")
    parser.add_argument("--value-grid-max-side", type=int, default=None, metavar="N",
                        help="Latte and Wan only: train the value embeddings on the token grid halved to at most N a side, not the family's default")
    parser.add_argument("--tag", default="", help="suffix of the result file names (exploration runs)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                        help="write one report (named by --family/--tag) from saved runs of other settings on the same model and training")
    parser.add_argument("--reference-check", action="store_true",
                        help="only print each reference's detector and VAE round-trip fidelity on the model (no settings, no files)")
    parser.add_argument("--rerender", type=Path, default=None, metavar="JSON", help="only rewrite the .md beside a saved report (and check its targets again)")
    return parser.parse_args(argv)


def rerender(json_path: Path) -> str:
    """Rewrite the markdown beside a saved JSON report (after a change to the table layout or to
    :data:`PACK_DEFAULT`; no re-run): the targets are checked again on the stored per-setting figures."""
    report = json.loads(json_path.read_text())
    report["pack_default"] = PACK_DEFAULT
    report["targets"] = targets_of(report["settings"])
    json_path.write_text(json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    markdown = render_markdown(report)
    json_path.with_suffix(".md").write_text(markdown)
    return markdown


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if args.rerender is not None:
        sys.stdout.write(rerender(args.rerender))
        return 0
    if args.merge is not None:
        report = merge_reports([json.loads(path.read_text()) for path in args.merge])
        stem = _stem(report["family"], False, args.tag)
        if (args.out / f"{stem}.json").resolve() in {path.resolve() for path in args.merge}:
            raise SystemExit(f"--merge would overwrite one of its inputs ({stem}.json); give another --tag or --out")
        return _write_report(report, args.out, stem)
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/bench_motion_transfer.py", *(sys.argv[1:] if argv is None else argv)])
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    start = time.perf_counter()
    model_dir = args.model or FAMILY_MODELS[args.family]
    model = load_video_model(model_dir, precision="fp32", attention="auto", device="cpu")
    if model.family.name != args.family:
        raise SystemExit(f"{model_dir} holds a {model.family.name} model, not {args.family}; pass --family {model.family.name}")
    quick_steps = 100 if args.quick else None
    settings = selected_settings(args.settings)
    if args.value_grid_max_side is not None:
        use_value_grid_max_side(args.family, args.value_grid_max_side)
    overrides = {"value_grid_max_side": args.value_grid_max_side, "learning_rate": args.lr, "layer_set": args.layers, "guidance_scale": args.guidance,
                 "train_steps": args.train_steps if args.train_steps is not None else quick_steps, "settings": settings}
    if args.quick:
        config = config_for_model(model, references=["bounce"], train_seeds=[0], clips_per_reference_seed=4, threads=args.threads, **overrides)
    else:
        config = config_for_model(model, references=list(benchmark_references()), train_seeds=[0], clips_per_reference_seed=3, threads=args.threads, **overrides)
    bench = Benchmark(model, config)
    if args.reference_check:
        sys.stdout.write(render_reference_check(bench))
        return 0
    bench.run()
    report = build_report(bench, command, started, time.perf_counter() - start, model_dir)
    return _write_report(report, args.out, _stem(args.family, args.quick, args.tag))


def render_reference_check(bench: Benchmark) -> str:
    """A markdown table: per reference, the detector's fidelity on the clip and on its VAE round trip (the ceiling)."""
    detector, vae = _reference_self_check(bench), _reference_self_check(bench, through_vae=True)
    lines = [f"{bench.model.family.name} `{bench.model.name}`: reference fidelity, detector on the clip / after the VAE", "",
             "| reference | kind | clip | after the VAE |", "|---|---|---|---|"]
    lines += [f"| {name} | {bench.references[name].kind} | {_fmt(detector[name])} | {_fmt(vae[name])} |" for name in detector]
    lines.append(f"| mean | | {_fmt(statistics.fmean(detector.values()))} | {_fmt(statistics.fmean(vae.values()))} |")
    return "\n".join(lines) + "\n"


#: The module constant that sets each transformer family's value grid (``--value-grid-max-side`` overrides it).
VALUE_GRID_CONSTANTS = {"latte": "LATTE_VALUE_GRID_MAX_SIDE", "wan": "WAN_VALUE_GRID_MAX_SIDE"}


def use_value_grid_max_side(family: str, side: int) -> None:
    """Make this process's Latte or Wan family train value embeddings on grids of at most ``side`` a side."""
    import importlib

    if family not in VALUE_GRID_CONSTANTS or side < 1:
        raise SystemExit(
            f"--value-grid-max-side takes a whole number >= 1 and works on --family {' / '.join(VALUE_GRID_CONSTANTS)} "
            f"only (got {side} on {family})"
        )
    setattr(importlib.import_module(f"motion_core.families.{family}"), VALUE_GRID_CONSTANTS[family], side)


def _stem(family: str, quick: bool, tag: str) -> str:
    """The result files' name: ``motion_transfer[_family][_quick][_tag]`` (no family part for unet3d)."""
    return "motion_transfer" + ("" if family == "unet3d" else f"_{family}") + ("_quick" if quick else "") + (f"_{tag}" if tag else "")


def _write_report(report: dict, out: Path, stem: str) -> int:
    """Write ``stem``.json and ``stem``.md under ``out`` and print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    markdown = render_markdown(report)
    (out / f"{stem}.md").write_text(markdown)
    sys.stdout.write(markdown)
    logger.info("wrote %s and %s", out / f"{stem}.md", out / f"{stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
