"""Compare the pack's pre-flight training-memory estimate with peaks measured by ``bench_training.py``.

Reads the JSON that ``bench_training.py --json`` wrote (measured peak bytes of each case) and prints, for every
training case in it, what :func:`motion_core.memory_estimate.estimate_training_bytes` says today and the ratio
estimate / measured. The estimate must stay above 1 (it refuses runs that cannot fit, so it must not refuse too
little) without being far above it. Re-run after changing the estimate's factors; no model is loaded.

    python benchmarks/check_memory_estimate.py benchmarks/results/training_zeroscope_small.json
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

from motion_core.memory_estimate import estimate_training_bytes  # noqa: E402
from motion_core.testing.tiny_models import TINY_UNET_CONFIG, ZEROSCOPE_UNET_CONFIG  # noqa: E402

PRESETS = {  # preset -> (UNet config, width, height, frames, layer set) as in bench_training.PRESETS
    "tiny": (TINY_UNET_CONFIG, 64, 64, 8, "paper"),
    "zeroscope-small": (ZEROSCOPE_UNET_CONFIG, 64, 32, 8, "paper"),
}
VAE_FACTOR = 2  # the tiny test VAE of the benchmark's random-weight folders


def cases(figures: dict) -> list[dict]:
    """Every measured training case: (width, height, frames, layer set, checkpointing, measured bytes)."""
    _, width, height, frames, layer_set = PRESETS[figures["preset"]]
    found = [dict(width=width, height=height, frames=frames, layer_set=layer_set, checkpointing=c,
                  measured=figures["memory_bytes"][f"train_checkpointing_{c}"]) for c in (False, True)]
    for row in figures.get("scale", []):
        found.append(dict(width=row["width"], height=row["height"], frames=row["frames"], layer_set=row["layer_set"],
                          checkpointing=True, measured=row["peak_bytes"]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", type=Path, help="JSON written by bench_training.py --json (fp32, CPU)")
    args = parser.parse_args()
    figures = json.loads(args.figures.read_text())
    config = PRESETS[figures["preset"]][0]
    model = SimpleNamespace(dtype=torch.float32, device=torch.device(figures["device"]),
                            unet=SimpleNamespace(config=SimpleNamespace(block_out_channels=config["block_out_channels"])))
    print(f"# {args.figures}: {figures['preset']}, {figures['device']}")
    print("| latent | frames | layers | checkpointing | measured MiB | estimate MiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    lowest = float("inf")
    for case in cases(figures):
        h, w = case["height"] // VAE_FACTOR, case["width"] // VAE_FACTOR
        estimate = estimate_training_bytes(model, case["frames"], h, w, case["checkpointing"], case["layer_set"])
        ratio = estimate / case["measured"]
        lowest = min(lowest, ratio)
        print(f"| {w}x{h} | {case['frames']} | {case['layer_set']} | {case['checkpointing']} | "
              f"{case['measured'] / 2**20:.0f} | {estimate / 2**20:.0f} | {ratio:.2f} |")
    print(f"lowest estimate / measured: {lowest:.2f} ({'never below' if lowest >= 1 else 'BELOW'} the measured peak)")
    return 0 if lowest >= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
