"""Compare the pack's pre-flight training-memory estimate with peaks measured by ``bench_training.py``.

Reads the JSON that ``bench_training.py --json`` wrote (measured peak bytes of each case) and prints, for every
training case in it, what :func:`motion_core.memory_estimate.estimate_training_bytes` says today and the ratio
estimate / measured. The estimate must stay above 1 (it refuses runs that cannot fit, so it must not refuse too
little) without being far above it. Re-run after changing the estimate's factors. The benchmark's denoiser is built
from its config on the ``meta`` device (no weights are made or loaded), so this takes seconds for every family.

    python benchmarks/check_memory_estimate.py benchmarks/results/training_zeroscope_small.json
    python benchmarks/check_memory_estimate.py benchmarks/results/training_latte_small.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_training import KIND_FAMILIES, PRESETS  # noqa: E402
from motion_core.families import family_named  # noqa: E402
from motion_core.memory_estimate import estimate_training_bytes  # noqa: E402
from motion_core.testing import tiny_models  # noqa: E402

#: Pixels per latent position of each benchmark folder's VAE (the tiny test VAE; the tiny Wan VAE has Wan's 8).
VAE_FACTOR = {"wan-1.3b": 8}
TINY_VAE_FACTOR = 2


def meta_denoiser(kind: str, frames: int) -> torch.nn.Module:
    """The denoiser of ``bench_training.make_model_folder(kind, ...)`` built on the meta device (shapes only)."""
    from diffusers import (
        LatteTransformer3DModel, MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel, WanTransformer3DModel,
    )

    with torch.device("meta"):
        if kind == "tiny":
            return UNet3DConditionModel(**tiny_models.TINY_UNET_CONFIG)
        if kind == "zeroscope":
            return UNet3DConditionModel(**{**tiny_models.ZEROSCOPE_UNET_CONFIG, "cross_attention_dim": 32})
        if kind == "wan-1.3b":
            return WanTransformer3DModel(**tiny_models.WAN_T2V_1_3B_CONFIG)
        if kind == "latte-1":
            return LatteTransformer3DModel(**{**tiny_models.LATTE_1_CONFIG, "caption_channels": 32, "video_length": frames})
        if kind == "animatediff-sd15":
            unet = UNet2DConditionModel(**{**tiny_models.SD15_UNET_CONFIG, "cross_attention_dim": 32})
            return UNetMotionModel.from_unet2d(unet, MotionAdapter(**tiny_models.ANIMATEDIFF_V2_ADAPTER_CONFIG))
    raise ValueError(f"no benchmark folder kind {kind!r}")


def cases(figures: dict) -> list[dict]:
    """Every measured training case: (width, height, frames, layer set, checkpointing, measured bytes)."""
    preset = PRESETS[figures["preset"]]
    found = [dict(width=preset.width, height=preset.height, frames=preset.frames, layer_set=preset.layer_set,
                  checkpointing=c, measured=figures["memory_bytes"][f"train_checkpointing_{c}"]) for c in (False, True)]
    for row in figures.get("scale", []):
        found.append(dict(width=row["width"], height=row["height"], frames=row["frames"], layer_set=row["layer_set"],
                          checkpointing=True, measured=row["peak_bytes"]))
    return [case for case in found if case["measured"] is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", type=Path, help="JSON written by bench_training.py --json (fp32)")
    args = parser.parse_args()
    figures = json.loads(args.figures.read_text())
    preset = PRESETS[figures["preset"]]
    family = family_named(KIND_FAMILIES[preset.kind])
    factor = VAE_FACTOR.get(preset.kind, TINY_VAE_FACTOR)
    model = SimpleNamespace(family=family, denoiser=meta_denoiser(preset.kind, preset.frames), dtype=torch.float32,
                            device=torch.device(figures["device"]))
    print(f"# {args.figures}: {figures['preset']} ({family.name}), {figures['device']}")
    print("| latent | frames | layers | checkpointing | measured MiB | estimate MiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    lowest = float("inf")
    for case in cases(figures):
        h, w = case["height"] // factor, case["width"] // factor
        frames = family.latent_frames(case["frames"])
        layer_set = family.resolve_layer_set(case["layer_set"])
        estimate = estimate_training_bytes(model, frames, h, w, case["checkpointing"], layer_set)
        ratio = estimate / case["measured"]
        lowest = min(lowest, ratio)
        print(f"| {w}x{h} | {frames} | {layer_set} | {case['checkpointing']} | "
              f"{case['measured'] / 2**20:.0f} | {estimate / 2**20:.0f} | {ratio:.2f} |")
    print(f"lowest estimate / measured: {lowest:.2f} ({'never below' if lowest >= 1 else 'BELOW'} the measured peak)")
    return 0 if lowest >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
