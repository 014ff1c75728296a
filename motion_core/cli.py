"""Command line over the same core the nodes use: ``python -m motion_core train | sample | info``."""

from __future__ import annotations

import argparse
import json
import math
import logging
import sys
from pathlib import Path

from .attention import ATTENTION_CHOICES
from .embedding import LOSS_NAMES, MOTION_MODES
from .embedding_file import load_embedding, read_embedding_info
from .errors import MotionInversionError
from .frame_resize import RESIZE_MODES
from .model_loading import PRECISION_CHOICES, load_video_model
from .sampling import SCHEDULERS, AppliedMotion, SamplingConfig, sample_video
from .temporal_layers import LAYER_SETS
from .training import TrainingConfig, train_motion_embedding
from .video_io import read_video_frames, write_video

logger = logging.getLogger("motion_core")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="diffusers text-to-video folder")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m motion_core", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="learn a motion embedding from a reference video")
    _add_model_arguments(train)
    train.add_argument("--video", required=True, type=Path)
    train.add_argument("--prompt", required=True, help="what the reference video shows")
    train.add_argument("--out", required=True, type=Path, help="embedding file to write (.safetensors)")
    train.add_argument("--steps", type=int, default=400)
    train.add_argument("--lr", type=float, default=0.02)
    train.add_argument("--loss", choices=LOSS_NAMES, default="base")
    train.add_argument("--layers", choices=LAYER_SETS, default="paper")
    train.add_argument("--width", type=int, default=576)
    train.add_argument("--height", type=int, default=320)
    train.add_argument("--frames", type=int, default=24, help="frames to train on (0: all)")
    train.add_argument("--start-frame", type=int, default=0)
    train.add_argument("--stride", type=int, default=1)
    train.add_argument("--resize", choices=RESIZE_MODES, default="crop")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    train.add_argument("--save-every", type=int, default=100)
    train.add_argument("--resume", type=Path, default=None, help="embedding file to continue training")

    sample = commands.add_parser("sample", help="generate a video, with or without a motion embedding")
    _add_model_arguments(sample)
    sample.add_argument("--embedding", type=Path, default=None)
    sample.add_argument("--prompt", required=True)
    sample.add_argument("--negative-prompt", default="")
    sample.add_argument("--out", required=True, type=Path, help=".mp4, .gif or .webp")
    sample.add_argument("--width", type=int, default=576)
    sample.add_argument("--height", type=int, default=320)
    sample.add_argument("--frames", type=int, default=24)
    sample.add_argument("--steps", type=int, default=30)
    sample.add_argument("--cfg", type=float, default=12.0)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--scheduler", choices=list(SCHEDULERS), default="ddim")
    sample.add_argument("--noise-prior", type=float, default=0.5)
    sample.add_argument("--mode", choices=MOTION_MODES, default=None, help="default: the embedding's own")
    sample.add_argument("--strength", type=float, default=1.0)
    sample.add_argument("--fps", type=float, default=8.0)

    info = commands.add_parser("info", help="print what an embedding file holds")
    info.add_argument("embedding", type=Path)
    return parser


def _train(args: argparse.Namespace) -> None:
    model = load_video_model(args.model, args.precision, args.attention, args.device)
    clip = read_video_frames(args.video, args.start_frame, args.stride, args.frames, args.width, args.height, args.resize)
    config = TrainingConfig(
        prompt=args.prompt, steps=args.steps, learning_rate=args.lr, loss=args.loss, layer_set=args.layers,
        seed=args.seed, gradient_checkpointing=not args.no_checkpointing, save_every=args.save_every,
    )
    resume = load_embedding(args.resume) if args.resume else None
    report_every = max(1, args.steps // 20)

    def on_step(done: int, total: int, loss: float) -> None:
        if done % report_every == 0 or done == total:
            logger.info("step %d/%d  loss %.5f", done, total, loss)

    result = train_motion_embedding(model, clip.frames, config, args.out, resume, on_step)
    logger.info("saved %s; time (s): %s", args.out, {k: round(v, 2) for k, v in result.timings.items()})


def _sample(args: argparse.Namespace) -> None:
    model = load_video_model(args.model, args.precision, args.attention, args.device)
    motion = None
    if args.embedding:
        embedding = load_embedding(args.embedding)
        motion = AppliedMotion(embedding, args.strength, args.mode or embedding.info.default_mode)
    config = SamplingConfig(args.prompt, args.negative_prompt, args.width, args.height, args.frames, args.steps,
                            args.cfg, args.seed, args.scheduler, args.noise_prior)
    frames = sample_video(model, config, motion)
    write_video(frames, args.out, args.fps)
    logger.info("wrote %s (%d frames, %dx%d)", args.out, frames.shape[0], frames.shape[2], frames.shape[1])


def _info(args: argparse.Namespace) -> None:
    info, shapes = read_embedding_info(args.embedding)
    summary = {
        "family": info.family, "base_model": info.base_model, "train_size": [info.train_width, info.train_height],
        "frames": info.train_frames, "steps": info.steps, "loss": info.loss, "prompt": info.prompt,
        "default_mode": info.default_mode, "layers": [b.name for b in info.blocks], "extra": info.extra,
        "parameters": sum(math.prod(s) for k, s in shapes.items() if k != "inverted_latent"),
        "inverted_latent": "inverted_latent" in shapes,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        {"train": _train, "sample": _sample, "info": _info}[args.command](args)
    except MotionInversionError as exc:
        logger.error("error: %s", exc)
        return 2
    return 0
