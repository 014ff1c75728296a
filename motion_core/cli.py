"""Command line over the same core the nodes use: ``python -m motion_core train | sample | info | export-comfy``.

Every default comes from the core (the fields of :class:`TrainingConfig`, :class:`SamplingConfig` and
:class:`AppliedMotion`, the parameters of the loaders), so the command line cannot drift from the library and
the nodes. Outputs are safe: an existing ``--out`` is replaced only with ``--overwrite`` and only once the new
file is complete, an input (the video, the embedding, the file to resume) is never written over, and the output
folder is checked before the model is loaded. Ctrl-C ends with one line saying what was kept (exit code 130).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .appearance_augmentation import AUGMENTATIONS
from .attention import ATTENTION_CHOICES
from .comfy_layout import export_comfy
from .defaults import field_default, parameter_default
from .embedding import LOSS_NAMES, MODE_CHOICES
from .embedding_file import load_embedding, read_embedding_info
from .errors import EmbeddingFileError, InvalidSettingError, MotionInversionError, VideoInputError
from .families import FAMILIES, LAYER_CHOICES
from .frame_resize import RESIZE_MODES, resize_frames, snap_size
from .model_loading import PRECISION_CHOICES, VideoModel, load_animatediff_files_model, load_video_model
from .recommended_settings import (
    SETTINGS_FILE,
    RecommendedSettings,
    read_recommended_settings,
    resolve_recommended,
    resolve_sampling_recommended,
)
from .sampling import SCHEDULERS, SEED_LIMIT, AppliedMotion, SamplingConfig, sample_video
from .training import CHECKPOINTING_CHOICES, INVERSION_CHOICES, TrainingConfig, train_motion_embedding
from .video_io import VIDEO_CONTAINERS
from .video_io import read_video_frames, validate_fps, write_video

logger = logging.getLogger("motion_core")

LAYER_SETS_BY_FAMILY = "; ".join(f"{f.name}: {', '.join(f.layer_sets)}" for f in FAMILIES)
INTERRUPTED_EXIT_CODE = 130  # what shells report for a command ended by SIGINT
ERROR_EXIT_CODE = 2


def _seed(text: str) -> int:
    """argparse type: a seed from 0 to 2**64 - 1 (the range of ComfyUI's seed widgets)."""
    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"the seed must be from 0 to {SEED_LIMIT - 1}, got {value}")
    return value


def _fps(text: str) -> float:
    """argparse type: a frame rate a video file can hold (checked before any work)."""
    try:
        return validate_fps(float(text))
    except (ValueError, InvalidSettingError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Setting:
    """A command-line option that sets a field of a core dataclass; its default is that field's default.

    Attributes:
        flag: the option, e.g. ``"--lr"``.
        owner, field: the dataclass and field it sets (and takes its default from).
        help: what it does.
        choices: allowed values, when there is a fixed list.
        type: argparse type; ``None`` takes the type of the default.
        recommended: the key of the model's recommended settings (``motion_inversion.json``) that an unset option
            takes, e.g. ``"width"`` (in the command's section: ``train`` or ``sample``); ``None``: the default is fixed.
    """

    flag: str
    owner: type
    field: str
    help: str
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None
    recommended: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def default(self) -> Any:
        return field_default(self.owner, self.field)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        default = self.default
        if isinstance(default, bool):  # bool("off") is True: a switch needs its own action, not a type
            raise TypeError(f"{self.flag}: boolean settings need a flag action")
        kind = self.type or type(default)
        if self.recommended is None:
            parser.add_argument(self.flag, dest=self.dest, type=kind, default=default, choices=self.choices, help=self.help)
            return
        # The parsed default stays the library's, so code reading the namespace sees one source; _StoreGiven
        # notes which options were typed, and the others take the model's recommended value once it is known.
        help_text = f"{self.help} (default: the model's recommended value ({SETTINGS_FILE}), else %(default)s)"
        parser.add_argument(self.flag, dest=self.dest, type=kind, default=default, choices=self.choices, help=help_text,
                            action=_StoreGiven)


GIVEN_OPTIONS = "given_options"  # namespace attribute: the dests of the recommendable options the user typed


class _StoreGiven(argparse.Action):
    """Stores an option's value and notes that it was given (an unset one takes the model's recommended value)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, GIVEN_OPTIONS, {*getattr(namespace, GIVEN_OPTIONS, ()), self.dest})


def apply_recommended(args: argparse.Namespace, settings: tuple[Setting, ...], section: str, recommended: RecommendedSettings,
                      model_name: str, embedding_frames: int | None = None) -> None:
    """Set every recommendable option the user did not give to the model's recommended value (logged).

    Args:
        settings: the command's options; those with a ``recommended`` key are filled in.
        section: ``"train"`` or ``"sample"``.
        recommended: the model's :class:`~motion_core.recommended_settings.RecommendedSettings`.
        embedding_frames: ``sample`` with an embedding: its training frame count, the default of ``--frames``.
    """
    given_options = getattr(args, GIVEN_OPTIONS, set())
    keyed = {s.recommended: s for s in settings if s.recommended is not None}
    given = {key: getattr(args, s.dest) if s.dest in given_options else None for key, s in keyed.items()}
    if section == "sample":
        values = resolve_sampling_recommended(recommended, given, model_name, embedding_frames)
    else:
        values = resolve_recommended(recommended, section, given, model_name)
    for key, setting in keyed.items():
        setattr(args, setting.dest, values[key])


# The paper trains and samples at one size, so both commands take SamplingConfig's size and frame count.
TRAINING_SIZE_SETTINGS: tuple[Setting, ...] = (
    Setting("--width", SamplingConfig, "width", "training width in pixels (rounded to the model's multiple; 0: the video's)",
            recommended="width"),
    Setting("--height", SamplingConfig, "height", "training height in pixels (rounded to the model's multiple; 0: the video's)",
            recommended="height"),
    Setting("--frames", SamplingConfig, "frames", "frames to train on, taken from --start-frame every --stride frames (0: all)",
            recommended="frames"),
)
TRAINING_SETTINGS: tuple[Setting, ...] = (
    Setting("--steps", TrainingConfig, "steps", "optimisation steps (a resumed run continues up to this number)",
            recommended="steps"),
    Setting("--lr", TrainingConfig, "learning_rate", "AdamW learning rate of the embeddings", recommended="learning_rate"),
    Setting("--weight-decay", TrainingConfig, "weight_decay", "AdamW weight decay of the embeddings"),
    Setting("--loss", TrainingConfig, "loss", "base; debiased_temporal for deforming objects; debiased_hybrid for camera motion",
            LOSS_NAMES),
    Setting("--layers", TrainingConfig, "layer_set", "layers that get embeddings (auto: the family's default; " + LAYER_SETS_BY_FAMILY + ")",
            LAYER_CHOICES, recommended="layers"),
    Setting("--seed", TrainingConfig, "seed", "seed of the noise and timesteps of every step", type=_seed),
    Setting("--gradient-checkpointing", TrainingConfig, "gradient_checkpointing",
            "recompute activations in the backward pass (less memory, slower); auto: only when the run would not fit otherwise",
            CHECKPOINTING_CHOICES),
    Setting("--save-every", TrainingConfig, "save_every",
            "also save the embedding every this many steps (0: only at the end or when stopped)"),
    Setting("--inversion", TrainingConfig, "inversion",
            "how the reference's start latent is DDIM-inverted: plain (through the unpatched model) "
            "or embedded (through the trained embeddings)",
            INVERSION_CHOICES),
    Setting("--inversion-steps", TrainingConfig, "inversion_steps", "DDIM inversion steps stored with the embedding (0: none)"),
    Setting("--lora-rank", TrainingConfig, "lora_rank", "rank of the spatial LoRA of the debiased_hybrid loss"),
    Setting("--lora-lr", TrainingConfig, "lora_learning_rate", "learning rate of the spatial LoRA of the debiased_hybrid loss"),
    Setting("--lora-off-probability", TrainingConfig, "lora_off_probability",
            "share of debiased_hybrid steps that run the temporal loss with the LoRA off"),
    Setting("--appearance-augmentation", TrainingConfig, "appearance_augmentation",
            "also train on recoloured (colour) or recoloured and blurred (colour_blur) copies of the reference "
            "(README, Measurements: what each does to the motion and the look)", AUGMENTATIONS),
    Setting("--value-static-penalty", TrainingConfig, "value_static_penalty",
            "weight of a penalty on the value embedding's mean over the frames (its static part); 0: off"),
)
SAMPLING_SETTINGS: tuple[Setting, ...] = (
    Setting("--negative-prompt", SamplingConfig, "negative_prompt", "what to avoid"),
    Setting("--width", SamplingConfig, "width", "width in pixels (rounded to the model's multiple)", recommended="width"),
    Setting("--height", SamplingConfig, "height", "height in pixels (rounded to the model's multiple)", recommended="height"),
    Setting("--frames", SamplingConfig, "frames",
            "frame count (the embedding is resampled to it); with --embedding and no --frames: the embedding's training "
            "frame count", recommended="frames"),
    Setting("--steps", SamplingConfig, "steps", "denoising steps", recommended="steps"),
    Setting("--cfg", SamplingConfig, "guidance_scale", "classifier-free guidance scale (1 disables guidance)", recommended="cfg"),
    Setting("--seed", SamplingConfig, "seed", "noise seed, 0 to 2**64-1", type=_seed),
    Setting("--scheduler", SamplingConfig, "scheduler", "sampler; auto: the family's default (ddim, as the paper, on UNet3D; euler on Wan)", tuple(SCHEDULERS)),
    Setting("--noise-prior", SamplingConfig, "noise_prior",
            "share of the reference's DDIM-inverted latent in the start noise, 0..1 (0: pure noise; needs --embedding)"),
)
MOTION_SETTINGS: tuple[Setting, ...] = (
    Setting("--strength", AppliedMotion, "strength", "scales both embeddings; 0 is the plain model"),
    Setting("--start-percent", AppliedMotion, "start_percent", "the embeddings act from this share of the sampling steps on (0..1)"),
    Setting("--end-percent", AppliedMotion, "end_percent",
            "the embeddings act up to this share of the sampling steps (0..1; 1: to the end); the last steps left to "
            "the prompt keep its look"),
    Setting("--mode", AppliedMotion, "mode",
            "raw: both embeddings as trained (the most motion; with the default end percent the prompt's look holds); "
            "object: the frame-differenced value; centred: the value minus its mean over the frames; camera: "
            "query-key only; embedding default: the embedding's own (camera for debiased_hybrid, else raw; object in "
            "files from before 2026-12-03)",
            MODE_CHOICES),
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (required options, flags, None)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, "") or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path,
                        help="diffusers text-to-video folder (e.g. ZeroScope), or with --motion-module an SD1.5 checkpoint file")
    parser.add_argument("--motion-module", type=Path, default=None,
                        help="AnimateDiff motion module file (mm_sd_v15_v2, v3_sd15_mm, ...): --model is then an SD1.5 checkpoint")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="CLIP tokenizer folder for --motion-module (e.g. ComfyUI/comfy/sd1_tokenizer)")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=parameter_default(load_video_model, "precision"),
                        help="precision of the model's weights (auto: chosen for the device)")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default=parameter_default(load_video_model, "attention"),
                        help="attention kernel of the temporal layers")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def _load_model(args: argparse.Namespace) -> VideoModel:
    """The model ``--model`` names: a diffusers folder, or an SD1.5 checkpoint with ``--motion-module``."""
    if args.motion_module is None:
        return load_video_model(args.model, args.precision, args.attention, args.device)
    if args.tokenizer is None:
        raise InvalidSettingError("--motion-module needs --tokenizer: a CLIP tokenizer folder such as ComfyUI/comfy/sd1_tokenizer.")
    return load_animatediff_files_model(args.model, args.motion_module, args.tokenizer, args.precision, args.attention, args.device)


def _add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--out", required=True, type=Path, help=what)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (only once the new file is complete; an input file is never replaced)")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="learn a motion embedding from a reference video",
                                formatter_class=_HelpFormatter)
    _add_model_arguments(train)
    train.add_argument("--video", required=True, type=Path, help="reference video (mp4, webm, mkv, mov, gif, webp)")
    train.add_argument("--prompt", required=True, help="what the reference video shows, e.g. 'a man running'")
    _add_output_arguments(train, "embedding file to write (.safetensors)")
    for setting in TRAINING_SIZE_SETTINGS:
        setting.add_to(train)
    train.add_argument("--start-frame", type=int, default=parameter_default(read_video_frames, "start_frame"),
                       help="first frame of the video to use")
    train.add_argument("--stride", type=int, default=parameter_default(read_video_frames, "frame_stride"),
                       help="use every n-th frame")
    train.add_argument("--resize", choices=RESIZE_MODES, default=parameter_default(read_video_frames, "resize_mode"),
                       help="crop: fill and cut the overhang; pad: fit with black bars; stretch: ignore the aspect ratio")
    for setting in TRAINING_SETTINGS:
        setting.add_to(train)
    # Old scripts' spelling; SUPPRESS keeps --gradient-checkpointing's default as the one default.
    train.add_argument("--no-checkpointing", dest="gradient_checkpointing", action="store_const", const="off",
                       default=argparse.SUPPRESS, help="same as --gradient-checkpointing off")
    train.add_argument("--resume", type=Path, default=None, help="embedding file to continue training (never written over)")


def _add_sample_parser(commands: argparse._SubParsersAction) -> None:
    sample = commands.add_parser("sample", help="generate a video, with or without a motion embedding",
                                 formatter_class=_HelpFormatter)
    _add_model_arguments(sample)
    sample.add_argument("--embedding", type=Path, default=None, help="motion embedding file to apply (none: the plain model)")
    sample.add_argument("--prompt", required=True, help="what the new clip should show")
    _add_output_arguments(sample, "video to write: " + ", ".join(sorted(VIDEO_CONTAINERS)))
    for setting in (*SAMPLING_SETTINGS, *MOTION_SETTINGS):
        setting.add_to(sample)
    sample.add_argument("--fps", type=_fps, default=parameter_default(write_video, "fps"), help="frame rate of the written video")


# ----- export-comfy (parser) -----
def _add_export_comfy_parser(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export-comfy", formatter_class=_HelpFormatter,
        help="write a diffusers Wan 2.1 folder's DiT and VAE as files ComfyUI's Load Diffusion Model and Load VAE read")
    export.add_argument("--model", required=True, type=Path, help="diffusers Wan folder (transformer/ and vae/)")
    export.add_argument("--out-dir", required=True, type=Path,
                        help="a ComfyUI models folder: writes diffusion_models/NAME.safetensors and vae/NAME.safetensors")
    export.add_argument("--name", default=None, help="file name of both files (default: the model folder's name)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files of that name")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m motion_core", description=__doc__.split("\n\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(commands)
    _add_sample_parser(commands)
    _add_export_comfy_parser(commands)
    info = commands.add_parser("info", help="print what an embedding file holds")
    info.add_argument("embedding", type=Path, help="motion embedding file (.safetensors)")
    return parser


# ----- files -----
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
)


def check_input_file(path: Path, what: str, error: type[MotionInversionError]) -> None:
    """Raise ``error`` unless ``path`` is an existing regular file; a folder or a FIFO is named as what it is.

    Checked before reading: opening a FIFO would wait forever for a writer.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}.") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder, not a file; give the path of a file inside it.")
    for test, kind in _SPECIAL_FILES:
        if test(mode):
            raise error(f"{what} {path} is a {kind}, not a regular file; save it to a file first.")


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (same inode: hard links and symlinks count), or resolve to one path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _check_writable_folder(out: Path) -> None:
    """Raise :class:`InvalidSettingError` unless ``out``'s folder exists (or can be made) and takes new files."""
    folder = out.absolute().parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidSettingError(f"Cannot write {out}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidSettingError(f"Cannot write {out}: no permission to create files in {existing}.")
    if existing == folder:
        try:  # catches what permissions do not show: a read-only file system, a full quota
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise InvalidSettingError(f"Cannot write {out}: {exc.strerror} in {folder}.") from None


def check_output(out: Path, inputs: dict[str, Path | None], overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that is an input, that exists (without ``overwrite``), or cannot be written.

    Args:
        out: the output file.
        inputs: description -> input path (``None`` entries are skipped); ``out`` may never be one of them.
        overwrite: whether an existing ``out`` may be replaced.
    """
    for what, path in inputs.items():
        if path is not None and _same_file(out, path):
            raise InvalidSettingError(f"--out {out} is the {what}; write to another file (--overwrite never replaces an input).")
    if out.exists() or out.is_symlink():
        if out.is_dir():
            raise InvalidSettingError(f"--out {out} is a folder; give a file name.")
        if out.exists() and not out.is_file():
            raise InvalidSettingError(f"--out {out} exists and is not a regular file; give another name.")
        if not overwrite:
            raise InvalidSettingError(f"{out} already exists; give another --out, or add --overwrite to replace it.")
    _check_writable_folder(out)


def unused_sibling(path: Path, tag: str) -> Path:
    """``<stem>.<tag><suffix>`` beside ``path`` (``.<tag>-2``, ``-3``, ... when taken): a name that does not exist yet."""
    candidate = path.with_name(f"{path.stem}.{tag}{path.suffix}")
    number = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = path.with_name(f"{path.stem}.{tag}-{number}{path.suffix}")
        number += 1
    return candidate


class CommandInterrupted(Exception):
    """Ctrl-C ended a command; the message says what was kept."""


# ----- train -----
def _training_config(args: argparse.Namespace) -> TrainingConfig:
    values = {s.field: getattr(args, s.dest) for s in TRAINING_SETTINGS}
    config = TrainingConfig(prompt=args.prompt, **values)
    config.validate()
    return config


def _read_training_frames(args: argparse.Namespace, multiple: int) -> torch.Tensor:
    """The reference clip ``(F, H, W, 3)`` at ``--width`` x ``--height`` snapped to ``multiple`` (logged when changed)."""
    width, height = args.width, args.height
    if width > 0 and height > 0:
        width, height = snap_size(width, height, multiple)
    clip = read_video_frames(args.video, args.start_frame, args.stride, args.frames, width, height, args.resize)
    frames = clip.frames
    snapped = snap_size(frames.shape[2], frames.shape[1], multiple)  # a side kept at the video's size may need it
    if snapped != (frames.shape[2], frames.shape[1]):
        frames = resize_frames(frames, snapped[0], snapped[1], args.resize)
    return frames


def _what_was_kept(target: Path, out: Path) -> str:
    """One sentence on what an interrupted run left: the run's own file, and ``out`` untouched when it is another."""
    untouched = f"; {out} was left as it was" if target != out else ""
    if not target.is_file():
        return f"nothing was saved (no training step had finished){untouched}"
    try:
        steps = f"{read_embedding_info(target)[0].steps} steps"
    except MotionInversionError as exc:
        steps = f"unreadable: {exc}"
    return f"the embedding trained so far ({steps}) is in {target}{untouched}"


def _train(args: argparse.Namespace) -> None:
    # Read before any other work: a malformed settings file is refused before the video or the model is touched.
    apply_recommended(args, (*TRAINING_SIZE_SETTINGS, *TRAINING_SETTINGS), "train", read_recommended_settings(args.model),
                      args.model.name)
    config = _training_config(args)
    check_input_file(args.video, "Video file", VideoInputError)
    if args.resume is not None:
        check_input_file(args.resume, "Embedding to resume", EmbeddingFileError)
    check_output(args.out, {"input video": args.video, "embedding to resume": args.resume}, args.overwrite)
    resume = load_embedding(args.resume) if args.resume is not None else None
    # An existing file is replaced only by a finished run: periodic and interrupted saves go to a new name beside it.
    target = unused_sibling(args.out, "unfinished") if args.out.exists() else args.out
    model = _load_model(args)
    frames = _read_training_frames(args, model.size_multiple)
    report_every = max(1, config.steps // 20)

    def on_step(done: int, total: int, loss: float) -> None:
        if done == 1 or done % report_every == 0 or done == total:
            logger.info("step %d/%d  loss %.5f", done, total, loss)

    try:
        result = train_motion_embedding(model, frames, config, target, resume, on_step)
    except KeyboardInterrupt:
        raise CommandInterrupted(f"Interrupted: {_what_was_kept(target, args.out)}.") from None
    except BaseException:
        if target != args.out and target.is_file():
            logger.warning("The unfinished embedding is in %s; %s was left as it was.", target, args.out)
        raise
    if target != args.out:
        os.replace(target, args.out)
        logger.info("replaced %s with the finished run", args.out)
    logger.info("saved %s; time (s): %s", args.out, {k: round(v, 2) for k, v in result.timings.items()})


# ----- sample -----
def _check_video_suffix(out: Path) -> None:
    if out.suffix.lower() not in VIDEO_CONTAINERS:
        kinds = ", ".join(sorted(VIDEO_CONTAINERS))
        raise InvalidSettingError(f"Unknown video file type {out.suffix!r} for --out; use one of {kinds}.")


def _sample(args: argparse.Namespace) -> None:
    if args.embedding is not None:
        check_input_file(args.embedding, "Embedding file", EmbeddingFileError)
    check_output(args.out, {"embedding file": args.embedding}, args.overwrite)
    _check_video_suffix(args.out)
    recommended = read_recommended_settings(args.model)
    motion = None
    if args.embedding is not None:
        motion = AppliedMotion(load_embedding(args.embedding), args.strength, args.mode, args.start_percent, args.end_percent)
        logger.info("Applying %s at strength %g in %s mode", args.embedding.name, motion.strength, motion.resolved_mode)
    embedding_frames = motion.embedding.info.train_frames if motion is not None else None
    apply_recommended(args, SAMPLING_SETTINGS, "sample", recommended, args.model.name, embedding_frames)
    model = _load_model(args)
    values = {s.field: getattr(args, s.dest) for s in SAMPLING_SETTINGS}
    values["width"], values["height"] = snap_size(args.width, args.height, model.size_multiple)
    config = SamplingConfig(prompt=args.prompt, **values)
    frames = sample_video(model, config, motion)
    write_video(frames, args.out, args.fps)
    logger.info("wrote %s (%d frames, %dx%d)", args.out, frames.shape[0], frames.shape[2], frames.shape[1])


# ----- info -----
def _info(args: argparse.Namespace) -> None:
    check_input_file(args.embedding, "Embedding file", EmbeddingFileError)
    info, shapes = read_embedding_info(args.embedding)
    summary = {
        "family": info.family, "base_model": info.base_model, "train_size": [info.train_width, info.train_height],
        "frames": info.train_frames, "latent_frames": info.frames, "steps": info.steps, "loss": info.loss, "prompt": info.prompt,
        "default_mode": info.default_mode, "layers": [b.name for b in info.blocks], "extra": info.extra,
        "parameters": sum(math.prod(s) for k, s in shapes.items() if k.startswith(("query_key.", "value."))),
        "training_state": any(k.startswith("training_state.") for k in shapes),
        "inverted_latent": "inverted_latent" in shapes,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


# ----- export-comfy -----
def _export_comfy(args: argparse.Namespace) -> None:
    paths = export_comfy(args.model, args.out_dir, args.name, args.overwrite)
    logger.info("wrote %s and %s", paths.transformer, paths.vae)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0, 2 for the pack's errors, 130 for Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        {"train": _train, "sample": _sample, "info": _info, "export-comfy": _export_comfy}[args.command](args)
    except MotionInversionError as exc:
        logger.error("error: %s", exc)
        return ERROR_EXIT_CODE
    except CommandInterrupted as exc:
        logger.error("%s", exc)
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        logger.error("Interrupted; nothing was written.")
        return INTERRUPTED_EXIT_CODE
    return 0
