"""Measure the peak memory of Wan training steps and compare it with the Wan family's pre-flight estimate.

Builds a mid-size random Wan folder once (4 blocks of 4 heads x 128, ffn 1536, the tiny Wan VAE and CLIP text
encoder), then runs each case (checkpointing off/on x clip side) in a fresh process: two training steps on a
17-frame clip with the embeddings in every block, peak RSS above the loaded model (CPU) or peak allocated (CUDA),
against :func:`motion_core.memory_estimate.estimate_training_bytes`. The estimate must stay above 1 (it refuses
runs that cannot fit) without being far above it. Figures of the Wan family's docstring come from this script.

    python benchmarks/check_wan_memory_estimate.py [--sides 128 256 384] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from motion_core.memory_estimate import estimate_training_bytes  # noqa: E402
from motion_core.testing.tiny_models import TINY_WAN_CONFIG, save_tiny_wan_model  # noqa: E402

MID_WAN_CONFIG = {**TINY_WAN_CONFIG, "num_attention_heads": 4, "attention_head_dim": 128, "freq_dim": 256,
                  "ffn_dim": 1536, "num_layers": 4, "rope_max_seq_len": 1024}
FRAMES = 17


def child(folder: Path, side: int, checkpointing: bool, device: str) -> None:
    """One case in this process: print its peak and estimate as JSON."""
    from bench_training import PeakRSS

    from motion_core.model_loading import load_video_model
    from motion_core.patching import installed_processors
    from motion_core.training import TrainingConfig, EmbeddingTrainer

    model = load_video_model(folder, "fp32", "auto", device, use_cache=False)
    config = TrainingConfig(prompt="a red square", steps=10**6, layer_set="all", inversion_steps=0)
    trainer = EmbeddingTrainer(model, torch.rand(FRAMES, side, side, 3), config, None)
    trainer.setup(None)
    with torch.no_grad():  # page the lazily mapped weights in: that is not activation memory
        for parameter in model.denoiser.parameters():
            parameter.sum()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    checkpointed = model.family.gradient_checkpointing(model.denoiser, checkpointing)
    with checkpointed, installed_processors(model.denoiser, trainer.processors), torch.enable_grad(), PeakRSS() as rss:
        for step in range(2):
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.forward_backward(step)
            trainer.optimizer.step()
    peak = torch.cuda.max_memory_allocated() - base if model.device.type == "cuda" else rss.delta
    frames, height, width = trainer.latents.shape[2:]
    estimate = estimate_training_bytes(model, frames, height, width, checkpointing, "all")
    sys.stdout.write(json.dumps({"peak": peak, "estimate": estimate, "tokens": frames * height * width // 4}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[128, 256, 384])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # folder side on|off
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), int(args.child[1]), args.child[2] == "on", args.device)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_wan_model(Path(tmp) / "mid-wan", config=MID_WAN_CONFIG)
        for checkpointing in ("off", "on"):
            for side in args.sides:
                command = [sys.executable, __file__, "--device", args.device, "--child", str(folder), str(side), checkpointing]
                lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
                result = json.loads(lines[-1])
                sys.stdout.write(
                    f"checkpointing {checkpointing}, {side} px, {result['tokens']} tokens: peak {result['peak'] / 2**20:.0f} MiB, "
                    f"estimate {result['estimate'] / 2**20:.0f} MiB, estimate / measured {result['estimate'] / max(result['peak'], 1):.2f}\n"
                )


if __name__ == "__main__":
    main()
