"""Training and sampling cost against the frozen model's own floor, measured side by side in one run.

Prints ratios (this machine is noisy; only ratios measured in the same run mean anything):
- training step time / floor, where the floor is one forward plus one backward pass to the input of the same
  frozen model at the same shapes and precision, with nothing trainable;
- peak memory of training / peak memory of the floor, with and without gradient checkpointing (each case in a
  fresh subprocess; CPU: peak RSS above the loaded model, CUDA: peak allocated above the loaded model);
- sampling time with an embedding applied / without, same settings;
- a whole training run split into setup, steps, inversion and save.

Usage:
    python benchmarks/bench_training.py --preset tiny
    python benchmarks/bench_training.py --preset zeroscope-small       # full ZeroScope UNet, random weights, CPU-sized
    python benchmarks/bench_training.py --preset zeroscope-paper       # 576x320, 24 frames (a GPU)
    python benchmarks/bench_training.py --preset tiny --scale           # time and memory at three sizes
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from motion_core.checkpointing import gradient_checkpointing  # noqa: E402
from motion_core.diffusion import add_noise, encode_prompt  # noqa: E402
from motion_core.memory_estimate import estimate_training_bytes  # noqa: E402
from motion_core.model_loading import load_video_model  # noqa: E402
from motion_core.patching import build_processors, installed_processors  # noqa: E402
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video  # noqa: E402
from motion_core.testing.tiny_models import ZEROSCOPE_UNET_CONFIG, save_tiny_model  # noqa: E402
from motion_core.training import TrainingConfig, _Trainer, train_motion_embedding  # noqa: E402

logger = logging.getLogger("bench_training")

PRESETS = {
    # name: (model kind, width, height, frames, layer set, timed steps). Sizes are pixels of the model's own VAE:
    # the random-weight folders use the tiny test VAE (factor 2), so "zeroscope-small" runs the ZeroScope UNet on a
    # 32x16 latent, which is what 256x128 pixels give through ZeroScope's real VAE (factor 8).
    "tiny": ("tiny", 64, 64, 8, "paper", 10),
    "zeroscope-small": ("zeroscope", 64, 32, 8, "paper", 3),
    "zeroscope-paper": ("zeroscope", 144, 80, 24, "paper", 10),  # latent 72x40: 576x320 through ZeroScope's VAE
}


def make_model_folder(kind: str, folder: Path) -> Path:
    """A diffusers folder with random weights: the tiny test model or the full ZeroScope UNet architecture."""
    if (folder / "model_index.json").is_file():
        return folder
    save_tiny_model(folder)
    if kind == "zeroscope":
        from diffusers import UNet3DConditionModel

        unet = UNet3DConditionModel(**{**ZEROSCOPE_UNET_CONFIG, "cross_attention_dim": 32})
        unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def load(folder: Path, precision: str, attention: str):
    return load_video_model(folder, precision, attention, "cuda" if torch.cuda.is_available() else "cpu", use_cache=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def floor_step(model, latents: torch.Tensor, text: torch.Tensor, step: int) -> None:
    """Forward + backward to the input of the frozen model (nothing trainable)."""
    generator = torch.Generator().manual_seed(step)
    noise = torch.randn(latents.shape, generator=generator).to(model.device)
    timestep = torch.randint(0, 1000, (1,), generator=generator).to(model.device)
    noisy = add_noise(model.scheduler, latents, noise, timestep).to(model.dtype).requires_grad_(True)
    with torch.enable_grad():
        out = model.unet(noisy, timestep, encoder_hidden_states=text).sample
        torch.nn.functional.mse_loss(out.float(), noise).backward()


def time_calls(fn, count: int, device: torch.device) -> float:
    """Median seconds per call after one warm-up call."""
    fn(-1)
    times = []
    for i in range(count):
        sync(device)
        start = time.perf_counter()
        fn(i)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_steps(folder: Path, width: int, height: int, frames: int, layer_set: str, steps: int, precision: str,
                  attention: str, checkpointing: bool) -> dict[str, float]:
    """Interleave floor and training steps so machine noise hits both alike."""
    model = load(folder, precision, attention)
    clip = torch.rand(frames, height, width, 3)
    config = TrainingConfig(prompt="a red square", steps=10**6, learning_rate=0.02, layer_set=layer_set,
                            gradient_checkpointing=checkpointing, inversion_steps=0)
    trainer = _Trainer(model, clip, config, None)
    trainer.setup(None)
    floor_processors = build_processors(model.unet, model.kernel)
    text = encode_prompt(model, "a red square")
    floor_times, train_times = [], []
    with gradient_checkpointing(model.unet, checkpointing):
        for i in range(-1, steps):
            with installed_processors(model.unet, floor_processors):
                sync(model.device)
                start = time.perf_counter()
                floor_step(model, trainer.latents, text, i)
                sync(model.device)
                floor_times.append(time.perf_counter() - start)
            with installed_processors(model.unet, trainer.processors), torch.enable_grad():
                sync(model.device)
                start = time.perf_counter()
                trainer.optimizer.zero_grad(set_to_none=True)
                trainer.forward_backward(max(i, 0))
                trainer.optimizer.step()
                sync(model.device)
                train_times.append(time.perf_counter() - start)
    floor, train = statistics.median(floor_times[1:]), statistics.median(train_times[1:])
    return {"floor_s": floor, "train_s": train, "ratio": train / floor,
            "embedding_params": sum(p.numel() for p in trainer.optimizer.param_groups[0]["params"])}


class PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs, above what it was on entry (CPU).

    A thread samples ``/proc/self/statm`` every millisecond; torch's CPU allocator returns large blocks to the
    system, so the samples follow activation memory closely.
    """

    def __init__(self) -> None:
        import os
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.base = self.peak = self._rss()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.001)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def touch_weights(model) -> None:
    """Read every UNet weight once: safetensors maps them lazily, and paging them in is not activation memory."""
    with torch.no_grad():
        for parameter in model.unet.parameters():
            parameter.sum()


def peak_memory_child(args: argparse.Namespace) -> None:
    """Run one kind of step a few times in this process and print its peak memory above the loaded model."""
    folder, width, height, frames, layer_set = Path(args.folder), args.width, args.height, args.frames, args.layer_set
    model = load(folder, args.precision, args.attention)
    clip = torch.rand(frames, height, width, 3)
    config = TrainingConfig(prompt="a red square", steps=10**6, layer_set=layer_set,
                            gradient_checkpointing=args.checkpointing, inversion_steps=0)
    trainer = _Trainer(model, clip, config, None)
    trainer.setup(None)
    text = encode_prompt(model, "a red square")
    touch_weights(model)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    processors = trainer.processors if args.kind == "train" else build_processors(model.unet, model.kernel)
    with (gradient_checkpointing(model.unet, args.checkpointing), installed_processors(model.unet, processors),
          torch.enable_grad(), PeakRSS() as rss):
        for i in range(2):
            if args.kind == "train":
                trainer.optimizer.zero_grad(set_to_none=True)
                trainer.forward_backward(i)
                trainer.optimizer.step()
            else:
                floor_step(model, trainer.latents, text, i)
    if model.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = rss.delta
    latent_h, latent_w = trainer.latents.shape[-2:]
    estimate = estimate_training_bytes(model, frames, latent_h, latent_w, args.checkpointing, layer_set)
    sys.stdout.write(json.dumps({"peak_bytes": peak, "estimate_bytes": estimate}) + "\n")


def measure_memory(folder: Path, width: int, height: int, frames: int, layer_set: str, precision: str, attention: str,
                   checkpointing: bool, kind: str) -> dict[str, int]:
    """Peak memory of two steps of ``kind`` (train / floor) in a fresh process, with the pack's own estimate."""
    command = [sys.executable, __file__, "--memory-child", "--folder", str(folder), "--width", str(width), "--height", str(height),
               "--frames", str(frames), "--layer-set", layer_set, "--precision", precision, "--attention", attention,
               "--kind", kind] + (["--checkpointing"] if checkpointing else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def release_memory() -> None:
    """Give freed memory back to the system before a memory child starts (the parent's models are gone)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure_sampling(folder: Path, width: int, height: int, frames: int, layer_set: str, precision: str, attention: str, repeats: int) -> dict[str, float]:
    model = load(folder, precision, attention)
    clip = torch.rand(frames, height, width, 3)
    embedding = train_motion_embedding(model, clip, TrainingConfig(prompt="a red square", steps=1, layer_set=layer_set, inversion_steps=0)).embedding
    config = SamplingConfig(prompt="a blue circle", width=width, height=height, frames=frames, steps=4, guidance_scale=7.0, noise_prior=0.0)
    motion = AppliedMotion(embedding)
    plain, applied = [], []
    sample_video(model, config)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        sample_video(model, config)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        sample_video(model, config, motion)
        applied.append(time.perf_counter() - start)
    p, a = statistics.median(plain), statistics.median(applied)
    return {"plain_s": p, "embedded_s": a, "ratio": a / p}


def measure_end_to_end(folder: Path, width: int, height: int, frames: int, layer_set: str, precision: str, attention: str, steps: int) -> dict[str, float]:
    start = time.perf_counter()
    model = load(folder, precision, attention)
    load_s = time.perf_counter() - start
    clip = torch.rand(frames, height, width, 3)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_motion_embedding(model, clip, TrainingConfig(prompt="a red square", steps=steps, layer_set=layer_set),
                                        Path(tmp) / "e.safetensors")
    return {"load": load_s, **result.timings}


def scale_figures(folder: Path, width: int, height: int, frames: int, layer_set: str, steps: int,
                  args: argparse.Namespace, out) -> list[dict[str, object]]:
    """Step time and training peak memory (checkpointing on) at three sizes and at each layer set."""
    cases = [(width, frames, layer_set), (width, frames * 2, layer_set), (width * 2, frames * 2, layer_set)]
    cases += [(width, frames, other) for other in ("paper", "paper+640", "all") if other != layer_set]
    rows = []
    for w, f, layers in cases:
        step = measure_steps(folder, w, height, f, layers, max(3, steps // 2), args.precision, args.attention, True)
        release_memory()
        mem = measure_memory(folder, w, height, f, layers, args.precision, args.attention, True, "train")
        rows.append({"width": w, "height": height, "frames": f, "layer_set": layers, **step, **mem})
        out(f"scale {w}x{height}x{f} layers={layers}: step {step['train_s']*1000:.0f} ms (floor {step['floor_s']*1000:.0f} ms), "
            f"training peak {mem['peak_bytes']/2**20:.0f} MiB (estimate {mem['estimate_bytes']/2**20:.0f} MiB), "
            f"{step['embedding_params']:,} params\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case")
    parser.add_argument("--scale", action="store_true", help="also time three sizes")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "motion_inversion_bench")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    # internal: one memory measurement in a fresh process
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layer-set", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.memory_child:
        peak_memory_child(args)
        return
    kind, width, height, frames, layer_set, steps = PRESETS[args.preset]
    steps = args.steps or steps
    folder = make_model_folder(kind, args.work_dir / kind)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = sys.stdout.write
    factor = 2  # the tiny test VAE of the random-weight folders
    out(f"# {args.preset}: {kind} UNet, {width}x{height} pixels = latent {width // factor}x{height // factor} "
        f"({width // factor * 8}x{height // factor * 8} through an 8x VAE), {frames} frames, layers={layer_set}, device={device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    figures: dict[str, object] = {"preset": args.preset, "device": device}
    for checkpointing in (False, True):
        step = measure_steps(folder, width, height, frames, layer_set, steps, args.precision, args.attention, checkpointing)
        figures[f"step_checkpointing_{checkpointing}"] = step
        out(f"training step / floor (checkpointing={checkpointing}): {step['ratio']:.3f}  "
            f"(train {step['train_s']*1000:.0f} ms, floor {step['floor_s']*1000:.0f} ms, {step['embedding_params']:,} embedding params)\n")
    release_memory()
    memory, estimates = {}, {}
    for checkpointing in (False, True):
        for what in ("floor", "train"):
            measured = measure_memory(folder, width, height, frames, layer_set, args.precision, args.attention, checkpointing, what)
            memory[(what, checkpointing)] = measured["peak_bytes"]
            estimates[checkpointing] = measured["estimate_bytes"]
        out(f"peak memory training / floor (checkpointing={checkpointing}): "
            f"{memory[('train', checkpointing)] / max(memory[('floor', checkpointing)], 1):.3f}  "
            f"(train {memory[('train', checkpointing)]/2**20:.0f} MiB, floor {memory[('floor', checkpointing)]/2**20:.0f} MiB; "
            f"pre-flight estimate / measured training peak {estimates[checkpointing] / max(memory[('train', checkpointing)], 1):.2f})\n")
    out(f"training memory with / without checkpointing: {memory[('train', True)] / max(memory[('train', False)], 1):.3f}\n")
    figures["memory_bytes"] = {f"{w}_checkpointing_{c}": v for (w, c), v in memory.items()}
    figures["estimate_bytes"] = {f"checkpointing_{c}": v for c, v in estimates.items()}
    sampling = measure_sampling(folder, width, height, frames, layer_set, args.precision, args.attention, repeats=3)
    figures["sampling"] = sampling
    out(f"sampling with embedding / without: {sampling['ratio']:.3f}  (with {sampling['embedded_s']:.2f} s, without {sampling['plain_s']:.2f} s)\n")
    split = measure_end_to_end(folder, width, height, frames, layer_set, args.precision, args.attention, steps)
    figures["end_to_end_s"] = split
    out("whole run, seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items()) + f"  ({steps} steps)\n")
    if args.scale:
        figures["scale"] = scale_figures(folder, width, height, frames, layer_set, steps, args, out)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
