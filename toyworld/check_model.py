"""Check that a toy-world text-to-video model does what the demo needs.

Samples clips over every colour x shape prompt and many seeds with the folder's own diffusers pipeline
(``TextToVideoSDPipeline`` for the UNet3D toy at 8 frames of 32x32, ``WanPipeline`` for the toy-world Wan at
17 frames of 96x96; the toy-world AnimateDiff and Latte at the UNet3D toy's 8 frames of 32x32, the Latte through the
pack's own sampler, see :data:`PACK_SAMPLED`; the geometry is the one the folder's ``train_info.json`` records, else
the pipeline class's, unless ``--frames`` / ``--size`` say otherwise) and
measures, with :mod:`toyworld.metrics`:

* colour and shape follow the prompt (targets: >= 90 % each, and both together);
* an object is present (fraction of frames; target >= 95 %);
* it moves: mean per-frame speed (the world moves at 1-3 px/frame) and the spread of mean motion
  directions across seeds (``1 - mean resultant length``: 0 = always the same direction, ~1 = uniform).

Usage::

    python -m toyworld.check_model --model assets/toyworld-t2v --samples 64
    python -m toyworld.check_model --model assets/toyworld-t2v --samples 36 --guidance 1 3 5 7.5
    python -m toyworld.check_model --model assets/toyworld-wan --samples 64 --guidance 3 5 --steps 20

Also reported: ``velocity_change_px_per_frame``, the mean distance of each per-frame displacement from the
clip's mean displacement (0 for constant velocity; bounces, curves and speed changes raise it), beside the
same figures for rendered world clips (``world_reference``).

Prints a summary per guidance scale and writes JSON (``--json``, default ``/tmp/toyworld_check.json``,
outside the model folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from .metrics import circular_spread, detect_clip, displacements, mean_motion
from .train_vae import WAN_FRAMES, WAN_SIZE
from .world import COLOURS, SHAPES, caption_for

logger = logging.getLogger(__name__)

TARGETS = {"colour_acc": 0.90, "shape_acc": 0.90, "presence": 0.95}

#: Pipeline class -> (frames, size, extra call kwargs) the toy model of that family was trained for.
GEOMETRY: dict[str, tuple[int, int, dict]] = {
    "TextToVideoSDPipeline": (8, 32, {}),
    "AnimateDiffPipeline": (8, 32, {}),
    # The toy tokenizer's 16 positions (WanPipeline's default is 512, UMT5's).
    "WanPipeline": (WAN_FRAMES, WAN_SIZE, {"max_sequence_length": 16}),
    "LattePipeline": (8, 32, {}),
}
# Pipeline classes sampled through the pack instead of diffusers: LattePipeline pads every prompt to 120 positions
# (T5's), beyond the toy CLIP's 16, so the toy-world Latte is checked as the pack runs it (the Latte family's prompt
# mask, DDIM).
PACK_SAMPLED = {"LattePipeline"}


class PackSampler:
    """A pipeline-like caller of :func:`motion_core.sampling.sample_video` (one clip per prompt, the generator's seed,
    DDIM, empty negative prompt as the diffusers pipelines use)."""

    def __init__(self, model: Path, pipeline_class: str) -> None:
        from motion_core.model_loading import load_video_model

        self.pipeline_class = pipeline_class
        self.model = load_video_model(model, "fp32", "auto", "cpu", use_cache=False)

    def __call__(self, prompts: list[str], height: int, width: int, num_frames: int, num_inference_steps: int,
                 guidance_scale: float, generator: list[torch.Generator], **_: object):
        from types import SimpleNamespace

        from motion_core.sampling import SamplingConfig, sample_video

        clips = [
            sample_video(self.model, SamplingConfig(prompt=prompt, width=width, height=height, frames=num_frames,
                                                    steps=num_inference_steps, guidance_scale=guidance_scale,
                                                    seed=int(gen.initial_seed()), scheduler="ddim"))
            for prompt, gen in zip(prompts, generator)
        ]
        return SimpleNamespace(frames=torch.stack(clips).permute(0, 1, 4, 2, 3))  # [B, F, C, H, W] as diffusers gives


def _load_wan_transformer(folder: Path):
    """``WanTransformer3DModel`` from ``folder`` without ``accelerate``.

    diffusers' ``from_pretrained`` refuses this class when ``accelerate`` is not installed (its fp32-kept modules
    need low-memory loading), so build it from the config and load the fp32 safetensors weights directly.
    """
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder))
    state: dict = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_pipeline(model: Path):
    """Load the folder as a fp32 diffusers pipeline on CPU (the class named in its ``model_index.json``)."""
    import diffusers

    name = json.loads((Path(model) / "model_index.json").read_text())["_class_name"]
    if name not in GEOMETRY:
        raise ValueError(f"{model}: pipeline class {name!r} is not a toy-world model; expected one of {sorted(GEOMETRY)}")
    if name in PACK_SAMPLED:
        return PackSampler(Path(model), name)
    extra = {}
    if name == "WanPipeline":
        extra["transformer"] = _load_wan_transformer(Path(model) / "transformer")
    pipe = getattr(diffusers, name).from_pretrained(str(model), torch_dtype=torch.float32, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def trained_geometry(model: Path, pipeline_class: str) -> tuple[int, int]:
    """``(frames, size)`` the toy model in ``model`` was trained at: its ``train_info.json`` (written by
    ``toyworld.train_t2v``), else the family's current geometry (:data:`GEOMETRY`). A Wan folder built at 64x64 before
    the world moved to 96x96 is so checked at 64."""
    frames, size, _ = GEOMETRY[pipeline_class]
    info_path = Path(model) / "train_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        frames, size = int(info.get("frames", frames)), int(info.get("height", size))
    return frames, size


def sample_clips(
    pipe,
    prompts: list[str],
    seeds: list[int],
    guidance: float,
    steps: int = 25,
    num_frames: int = 8,
    size: int = 32,
    batch: int = 8,
) -> torch.Tensor:
    """Generate one clip per (prompt, seed).

    Returns:
        ``[N, F, H, W, 3]`` float in 0..1.
    """
    extra = GEOMETRY.get(getattr(pipe, "pipeline_class", type(pipe).__name__), (0, 0, {}))[2]
    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i : i + batch], seeds[i : i + batch]
        gens = [torch.Generator().manual_seed(s) for s in ss]
        video = pipe(
            ps,
            height=size,
            width=size,
            num_frames=num_frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="pt",
            **extra,
        ).frames
        video = torch.as_tensor(video)
        # diffusers returns [B, F, C, H, W] for output_type="pt"
        out.append(video.permute(0, 1, 3, 4, 2).float())
    return torch.cat(out)


def evaluate(clips: torch.Tensor, prompts: list[str], specs: list[tuple[str, str]]) -> dict:
    """Score sampled clips ``[N, F, H, W, 3]`` against their requested ``(colour, shape)``."""
    colour_ok, shape_ok, both_ok, presence, all_present, speeds, angles, vchange = [], [], [], [], [], [], [], []
    per_prompt: dict[str, list[int]] = {}
    for clip, prompt, (c, s) in zip(clips, prompts, specs):
        det = detect_clip(clip)
        colour_ok.append(det.colour == c)
        shape_ok.append(det.shape == s)
        both_ok.append(det.colour == c and det.shape == s)
        presence.append(det.presence_rate)
        all_present.append(bool(det.present.all()))
        sp, ang = mean_motion(det.centroids)
        speeds.append(sp)
        angles.append(ang)
        d = displacements(det.centroids)
        d = d[~d.isnan().any(dim=1)]
        if len(d) > 1:  # how far the motion is from constant velocity (bounces, curves, speed changes)
            vchange.append(float((d - d.mean(dim=0)).norm(dim=1).mean()))
        per_prompt.setdefault(prompt, []).append(int(both_ok[-1]))
    valid_speeds = [x for x in speeds if not math.isnan(x)]
    octants = [0] * 8
    for a in angles:
        if not math.isnan(a):
            octants[int(((a + math.pi) / (2 * math.pi)) * 8) % 8] += 1
    n = len(prompts)
    return {
        "samples": n,
        "colour_acc": sum(colour_ok) / n,
        "shape_acc": sum(shape_ok) / n,
        "colour_and_shape_acc": sum(both_ok) / n,
        "presence": sum(presence) / n,
        "all_frames_present": sum(all_present) / n,
        "mean_speed_px_per_frame": sum(valid_speeds) / max(len(valid_speeds), 1),
        "moving_fraction(speed>0.5)": sum(x > 0.5 for x in valid_speeds) / n,
        "direction_spread": circular_spread(angles),
        "velocity_change_px_per_frame": sum(vchange) / max(len(vchange), 1),
        "direction_octant_counts": octants,
        "per_prompt_acc": {k: sum(v) / len(v) for k, v in sorted(per_prompt.items())},
    }


def reference_stats(n: int = 64, num_frames: int = 8, size: int = 32) -> dict:
    """The same statistics on rendered world clips (what a perfect model would score)."""
    from .world import random_clip

    clips = [random_clip(3_000_000 + i, num_frames=num_frames, height=size, width=size) for i in range(n)]
    frames = torch.stack([c.frames for c in clips])
    r = evaluate(frames, [c.caption for c in clips], [(c.colour, c.shape) for c in clips])
    r.pop("per_prompt_acc")
    return r


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("assets/toyworld-t2v"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.5])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model family's)")
    ap.add_argument("--size", type=int, default=None, help="square frame size (default: the model family's)")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("/tmp/toyworld_check.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)

    specs = [(c, s) for c in COLOURS for s in SHAPES]
    chosen = [specs[i % len(specs)] for i in range(args.samples)]
    prompts = [caption_for(c, s) for c, s in chosen]
    seeds = [args.seed + i for i in range(args.samples)]
    pipe = load_pipeline(args.model)
    frames, size = trained_geometry(args.model, getattr(pipe, "pipeline_class", type(pipe).__name__))
    frames, size = args.frames or frames, args.size or size
    report = {
        "model": str(args.model),
        "steps": args.steps,
        "seed": args.seed,
        "frames": frames,
        "size": size,
        "world_reference": reference_stats(num_frames=frames, size=size),
        "targets": TARGETS,
        "by_guidance": {},
    }
    for g in args.guidance:
        t0 = time.time()
        clips = sample_clips(pipe, prompts, seeds, g, args.steps, frames, size)
        r = evaluate(clips, prompts, chosen)
        r["sample_seconds"] = time.time() - t0
        r["passes_targets"] = all(r[k] >= v for k, v in TARGETS.items())
        report["by_guidance"][str(g)] = r
        logger.info(
            "guidance %.1f: colour %.3f shape %.3f both %.3f presence %.3f all-present %.3f speed %.2f px/f "
            "moving %.2f dir-spread %.2f vel-change %.2f octants %s (%.0fs) %s",
            g,
            r["colour_acc"],
            r["shape_acc"],
            r["colour_and_shape_acc"],
            r["presence"],
            r["all_frames_present"],
            r["mean_speed_px_per_frame"],
            r["moving_fraction(speed>0.5)"],
            r["direction_spread"],
            r["velocity_change_px_per_frame"],
            r["direction_octant_counts"],
            r["sample_seconds"],
            "PASS" if r["passes_targets"] else "FAIL",
        )
    ref = report["world_reference"]
    logger.info(
        "world reference: speed %.2f px/f, dir-spread %.2f, vel-change %.2f",
        ref["mean_speed_px_per_frame"],
        ref["direction_spread"],
        ref["velocity_change_px_per_frame"],
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    logger.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
