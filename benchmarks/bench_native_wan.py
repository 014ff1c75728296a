"""Cost of the native Wan path (training through and sampling with ComfyUI's own MODEL), measured side by side.

Runs under ComfyUI's Python (CPU here; any device ComfyUI picks elsewhere). Prints ratios measured in one run,
in rounds that time both sides next to each other (the median of the per-round ratios), so that drift of a shared
machine hits both sides alike:
- training step / floor: one step of ``MI_TrainMotionEmbeddingNative``'s trainer (forward, backward to the embeddings,
  AdamW) against one forward plus backward to the input of the same installed MODEL with the embeddings off;
- sampling with / without: one model call of the MODEL from ``MI_ApplyMotionEmbeddingNative`` against the plain MODEL
  (``apply_model``, what core samplers call), under inference mode.

The model is Wan 2.1 T2V 1.3B's architecture (30 blocks, width 1536) with random weights, converted to ComfyUI's layout
and loaded by ``comfy.sd.load_diffusion_model``; at 64x64 and 17 frames (5 x 4 x 4 = 80 tokens) it fits a CPU. Usage:

    COMFYUI_DIR/.venv/bin/python benchmarks/bench_native_wan.py --comfyui-dir COMFYUI_DIR [--layers 30] [--rounds 6]
        [--json benchmarks/results/native_wan_bench.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def _timed(function, count: int) -> float:
    """Median seconds of ``count`` calls of ``function``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _comfyui_version() -> str:
    try:
        import comfyui_version  # type: ignore[import-not-found]
    except ImportError:
        return "?"
    return str(comfyui_version.__version__)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument("--layers", type=int, default=30, help="blocks of the 1.3B architecture to keep (30: all)")
    parser.add_argument("--size", type=int, default=64, help="pixels (square)")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2, help="timed calls per side and round (their median)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sys.path.insert(0, str(args.comfyui_dir.resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = not torch.cuda.is_available()
    import comfy.model_management
    import comfy.sd

    from build_workflows import load_pack

    pack = load_pack()
    core = sys.modules["motion_inversion_pack.motion_core"]
    from motion_inversion_pack.motion_core.comfy_layout import export_comfy
    from motion_inversion_pack.motion_core.embedding import zero_embedding
    from motion_inversion_pack.motion_core.native_training import ForeignWanTrainer
    from motion_inversion_pack.motion_core.testing.tiny_models import WAN_T2V_1_3B_CONFIG
    from motion_inversion_pack.motion_core.testing.tiny_wan_files import build_tiny_wan_vae, save_tiny_wan_folder
    from motion_inversion_pack.motion_core.training import TrainingConfig
    from motion_inversion_pack.nodes.native_wan_training import comfy_wan

    from diffusers import WanTransformer3DModel

    config = {k: v for k, v in WAN_T2V_1_3B_CONFIG.items() if not k.startswith("_")}
    config["num_layers"] = args.layers
    with tempfile.TemporaryDirectory() as scratch:
        torch.manual_seed(0)
        dit = WanTransformer3DModel(**config)
        folder = save_tiny_wan_folder(Path(scratch) / "wan", dit, build_tiny_wan_vae(0))
        del dit
        paths = export_comfy(folder, Path(scratch) / "models", "wan-1.3b-random")
        with torch.inference_mode():
            model = comfy.sd.load_diffusion_model(str(paths.transformer))

    latent = args.size // 8
    frames = (args.frames - 1) // 4 + 1
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, frames, latent, latent, generator=generator)
    text = torch.randn(1, 32, config["text_dim"], generator=generator)
    training = TrainingConfig(prompt="benchmark", steps=1_000_000, layer_set="alternate", save_every=0, inversion_steps=0)
    wan = comfy_wan(model)
    trainer = ForeignWanTrainer(wan, latents, text, text, training, None)
    with torch.inference_mode(False):
        trainer.setup(None)
    sigma = torch.tensor([0.6])
    step = [0]
    results: dict[str, list[float]] = {"floor": [], "train_step": [], "sample_plain": [], "sample_patched": []}

    def floor() -> None:
        noisy = latents.clone().requires_grad_(True)
        trainer.velocity(noisy, sigma, text).square().mean().backward()

    def train_step() -> None:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.forward_backward(step[0])
        trainer.optimizer_step()
        step[0] += 1

    with torch.inference_mode(False), torch.enable_grad(), wan.running(trainer.motion, False) as velocity:
        trainer.velocity = velocity
        for _ in range(args.rounds):
            trainer.motion.enabled = False
            floor()  # warm-up of this side
            results["floor"].append(_timed(floor, args.calls))
            trainer.motion.enabled = True
            train_step()
            results["train_step"].append(_timed(train_step, args.calls))

    embedding = zero_embedding(trainer.snapshot(False).info)
    for tensor in [*embedding.query_key.values(), *embedding.value.values()]:
        tensor.normal_(0, 0.1, generator=generator)
    apply = pack.NODE_CLASS_MAPPINGS["MI_ApplyMotionEmbeddingNative"]().apply
    patched = apply(model, embedding, 1.0, "object")[0]
    noisy = torch.randn(2, 16, frames, latent, latent, generator=generator)  # cond + uncond, as CFG batches them
    context = text.expand(2, -1, -1)

    def call(patcher):
        def run() -> None:
            with torch.inference_mode():
                patcher.model.apply_model(noisy, sigma.expand(2), c_crossattn=context)
        return run

    for _ in range(args.rounds):
        for name, patcher in (("sample_plain", model), ("sample_patched", patched)):
            comfy.model_management.load_models_gpu([patcher])
            call(patcher)()
            results[name].append(_timed(call(patcher), args.calls))

    median = {name: statistics.median(values) for name, values in results.items()}
    # each round's two sides ran next to each other: the median of the per-round ratios
    ratios = {"train_step_over_floor": statistics.median(t / f for t, f in zip(results["train_step"], results["floor"])),
              "sampling_with_over_without": statistics.median(
                  p / q for p, q in zip(results["sample_patched"], results["sample_plain"]))}
    report = {
        "model": f"Wan 2.1 T2V 1.3B architecture, {args.layers} blocks, random weights, loaded by ComfyUI "
                 f"{_comfyui_version()}",
        "shape": f"{args.size}x{args.size}, {args.frames} frames ({frames}x{latent // 2}x{latent // 2} tokens)",
        "device": str(wan.device), "dtype": str(wan.dtype), "layer_set": "alternate", "torch": torch.__version__,
        "seconds_median": median, "rounds": results, "ratios": ratios, "pack": core.__name__,
    }
    print(json.dumps({"ratios": ratios, "seconds_median": median}, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
