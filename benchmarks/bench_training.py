"""Training and sampling cost against the frozen model's own floor, measured side by side in one run.

Prints ratios (this machine is noisy; only ratios measured in the same run mean anything):
- training step time / floor, where the floor is one forward plus one backward pass to the input of the same
  frozen model at the same shapes and precision, with nothing trainable;
- peak memory of training / peak memory of the floor, with and without gradient checkpointing (each case in a
  fresh subprocess; CPU: peak RSS above the loaded model, CUDA: peak allocated above the loaded model);
- sampling time with an embedding applied / without, same settings;
- a whole training run split into setup, steps, inversion and save.

Every model family runs the same measurements through the family interface (``model.family``, ``model.denoiser``).

Usage:
    python benchmarks/bench_training.py --preset tiny
    python benchmarks/bench_training.py --preset zeroscope-small       # full ZeroScope UNet, random weights, CPU-sized
    python benchmarks/bench_training.py --preset zeroscope-paper       # 576x320, 24 frames (a GPU)
    python benchmarks/bench_training.py --preset tiny --scale           # time and memory at three sizes
    python benchmarks/bench_training.py --family wan                   # = --preset wan-small: Wan 2.1 1.3B, CPU-sized
    python benchmarks/bench_training.py --preset wan-480p              # Wan 2.1 1.3B at 480x832, 81 frames (a GPU)
    python benchmarks/bench_training.py --family animatediff           # = --preset animatediff-small: SD1.5 + v2 adapter
    python benchmarks/bench_training.py --preset animatediff-512       # SD1.5 + v2 adapter at 512x512, 16 frames (a GPU)
    python benchmarks/bench_training.py --family latte                 # = --preset latte-small: Latte-1's transformer
    python benchmarks/bench_training.py --preset latte-512             # Latte-1 at 512x512, 16 frames (a GPU)
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
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from motion_core.diffusion import encode_prompt  # noqa: E402
from motion_core.families import ModelFamily, family_named  # noqa: E402
from motion_core.memory_estimate import estimate_training_bytes  # noqa: E402
from motion_core.model_loading import load_video_model  # noqa: E402
from motion_core.patching import installed_processors  # noqa: E402
from motion_core.precision import autocast  # noqa: E402
from motion_core.sampling import AppliedMotion, SamplingConfig, sample_video  # noqa: E402
from motion_core.testing.tiny_models import (  # noqa: E402
    TINY_WAN_VAE_CONFIG,
    WAN_T2V_1_3B_CONFIG,
    LATTE_1_CONFIG,
    ZEROSCOPE_UNET_CONFIG,
    save_animatediff_sd15_model,
    save_tiny_latte_model,
    save_tiny_model,
    save_tiny_wan_model,
)
from motion_core.training import TrainingConfig, EmbeddingTrainer, train_motion_embedding  # noqa: E402

logger = logging.getLogger("bench_training")


@dataclass(frozen=True)
class Preset:
    """One benchmark setting. Sizes are pixels of the folder's own VAE (see :func:`make_model_folder`).

    Attributes:
        kind: the random-weight model folder: ``tiny`` / ``zeroscope`` (UNet3D) or ``wan-1.3b`` (Wan).
        width, height, frames: the training clip (video frames).
        layer_set: the family's layer set.
        steps: timed steps per case (and of the whole run).
        sampling_repeats: timed generations with and without the embedding.
        inversion_steps: of the whole run.
    """

    kind: str
    width: int
    height: int
    frames: int
    layer_set: str
    steps: int
    sampling_repeats: int = 3
    inversion_steps: int = 50


PRESETS = {
    # The UNet3D folders use the tiny test VAE (factor 2), so "zeroscope-small" runs the ZeroScope UNet on a 32x16
    # latent, which is what 256x128 pixels give through ZeroScope's real VAE (factor 8).
    "tiny": Preset("tiny", 64, 64, 8, "paper", 10),
    "zeroscope-small": Preset("zeroscope", 64, 32, 8, "paper", 3),
    "zeroscope-paper": Preset("zeroscope", 144, 80, 24, "paper", 10),  # latent 72x40: 576x320 through ZeroScope's VAE
    # The Wan folder has the tiny Wan VAE, whose factors are the real one's (8x8 pixels, 4 frames per latent frame):
    # 17 frames of 64x64 -> 5 latent frames of 8x8 = 80 tokens. A forward pass of the 1.3B there takes ~5 s on one
    # CPU thread, hence fewer repeats and a 10-step inversion in the whole run.
    "wan-small": Preset("wan-1.3b", 64, 64, 17, "alternate", 3, sampling_repeats=2, inversion_steps=10),
    "wan-480p": Preset("wan-1.3b", 832, 480, 81, "alternate", 10),  # 21 latent frames x 60x104 = 32,760 tokens (a GPU)
    # The AnimateDiff folder has the tiny test VAE (factor 2): 64x64 pixels -> a 32x32 latent, what 256x256 gives
    # through SD1.5's VAE; 8 frames.
    "animatediff-small": Preset("animatediff-sd15", 64, 64, 8, "paper", 3, sampling_repeats=2, inversion_steps=10),
    "animatediff-512": Preset("animatediff-sd15", 128, 128, 16, "paper", 10),  # latent 64x64: 512x512, 16 frames (a GPU)
    # The Latte folder has Latte-1's transformer, the tiny T5 and the tiny test VAE (factor 2): 32x32 pixels -> a 16x16
    # latent, 8x8 patches, what 128x128 gives through SD's VAE; its frame table cut to the 8 frames run here.
    "latte-small": Preset("latte-1", 32, 32, 8, "all", 3, sampling_repeats=2, inversion_steps=10),
    "latte-512": Preset("latte-1", 128, 128, 16, "all", 10),  # latent 64x64: 512x512, 16 frames, as Latte-1 (a GPU)
}
# What --family runs, and the family of each folder kind.
FAMILY_PRESETS = {"unet3d": "tiny", "wan": "wan-small", "animatediff": "animatediff-small", "latte": "latte-small"}
KIND_FAMILIES = {"tiny": "unet3d", "zeroscope": "unet3d", "wan-1.3b": "wan", "animatediff-sd15": "animatediff", "latte-1": "latte"}


def make_model_folder(kind: str, folder: Path, frames: int) -> Path:
    """A diffusers folder with random weights: the tiny test model, the full ZeroScope UNet architecture, or the
    full Wan 2.1 T2V 1.3B transformer with the tiny Wan VAE and a tiny CLIP text encoder 4096 wide (Wan's
    ``text_dim``; 12 text positions instead of UMT5's 512), SD1.5 + the AnimateDiff v2 adapter, or Latte-1's transformer
    with its frame table at ``frames`` (a Latte model runs exactly that many)."""
    if (folder / "model_index.json").is_file():
        return folder
    if kind == "wan-1.3b":
        return save_tiny_wan_model(folder, config=WAN_T2V_1_3B_CONFIG)
    if kind == "animatediff-sd15":
        return save_animatediff_sd15_model(folder)
    if kind == "latte-1":
        return save_tiny_latte_model(folder, config={**LATTE_1_CONFIG, "caption_channels": 32, "video_length": frames})
    save_tiny_model(folder)
    if kind == "zeroscope":
        from diffusers import UNet3DConditionModel

        unet = UNet3DConditionModel(**{**ZEROSCOPE_UNET_CONFIG, "cross_attention_dim": 32})
        unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder


def describe_preset(name: str, preset: Preset, family: ModelFamily) -> str:
    """The first line of the output: model, sizes in pixels, latents and tokens."""
    p = preset
    if family.name == "wan":
        factor = 2 ** (len(TINY_WAN_VAE_CONFIG["dim_mult"]) - 1)
        _, patch_h, patch_w = WAN_T2V_1_3B_CONFIG["patch_size"]
        latent_frames, latent_h, latent_w = family.latent_frames(p.frames), p.height // factor, p.width // factor
        tokens = latent_frames * (latent_h // patch_h) * (latent_w // patch_w)
        return (f"{name}: Wan 2.1 T2V 1.3B transformer (random weights; tiny Wan VAE, tiny CLIP text encoder 4096 wide), "
                f"{p.width}x{p.height} pixels x {p.frames} frames = latent {latent_frames}x{latent_w}x{latent_h} "
                f"({tokens:,} tokens), layers={p.layer_set}")
    factor = 2  # the tiny test VAE of the UNet3D and AnimateDiff random-weight folders
    if family.name == "latte":
        latent = (p.width // factor, p.height // factor)
        return (f"{name}: Latte-1 transformer (random weights; tiny VAE and T5), {p.width}x{p.height} pixels = latent "
                f"{latent[0]}x{latent[1]} ({latent[0] * 8}x{latent[1] * 8} through SD's VAE), {latent[0] // 2 * latent[1] // 2} "
                f"patches x {p.frames} frames, layers={p.layer_set}")
    if family.name == "animatediff":
        return (f"{name}: SD1.5 UNet + AnimateDiff v2 motion adapter (random weights; tiny VAE and text encoder), "
                f"{p.width}x{p.height} pixels = latent {p.width // factor}x{p.height // factor} "
                f"({p.width // factor * 8}x{p.height // factor * 8} through SD1.5's VAE), {p.frames} frames, layers={p.layer_set}")
    return (f"{name}: {p.kind} UNet, {p.width}x{p.height} pixels = latent {p.width // factor}x{p.height // factor} "
            f"({p.width // factor * 8}x{p.height // factor * 8} through an 8x VAE), {p.frames} frames, layers={p.layer_set}")


def load(folder: Path, precision: str, attention: str):
    return load_video_model(folder, precision, attention, "cuda" if torch.cuda.is_available() else "cpu", use_cache=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def floor_processors(model, latents: torch.Tensor) -> dict:
    """The family's plain processors (no embeddings) at the latents' grid: what the floor runs."""
    return model.family.build_processors(model, grid=tuple(int(n) for n in latents.shape[2:]))


def floor_step(model, latents: torch.Tensor, text: torch.Tensor, step: int) -> None:
    """Forward + backward to the input of the frozen model (nothing trainable), on the family's own objective."""
    family = model.family
    generator = torch.Generator().manual_seed(step)
    noise = torch.randn(latents.shape, generator=generator).to(model.device)
    timestep = family.draw_timestep(model, generator).to(model.device)
    noisy = family.add_noise(model, latents, noise, timestep).to(model.dtype).requires_grad_(True)
    target = family.training_target(model, latents, noise, timestep)
    with torch.enable_grad():
        with autocast(model):
            out = family.predict(model, noisy, timestep, text)
        torch.nn.functional.mse_loss(out.float(), target.float()).backward()


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
    config = TrainingConfig(prompt="a red square", steps=10**6, learning_rate=0.02,
                            layer_set=model.family.resolve_layer_set(layer_set),
                            gradient_checkpointing=checkpointing, inversion_steps=0)
    trainer = EmbeddingTrainer(model, clip, config, None)
    trainer.setup(None)
    plain = floor_processors(model, trainer.latents)
    text = encode_prompt(model, "a red square")
    floor_times, train_times = [], []
    with model.family.gradient_checkpointing(model.denoiser, checkpointing):
        for i in range(-1, steps):
            with installed_processors(model.denoiser, plain):
                sync(model.device)
                start = time.perf_counter()
                floor_step(model, trainer.latents, text, i)
                sync(model.device)
                floor_times.append(time.perf_counter() - start)
            with installed_processors(model.denoiser, trainer.processors), torch.enable_grad():
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
    """Read every denoiser weight once: safetensors maps them lazily, and paging them in is not activation memory."""
    with torch.no_grad():
        for parameter in model.denoiser.parameters():
            parameter.sum()


def peak_memory_child(args: argparse.Namespace) -> None:
    """Run one kind of step a few times in this process and print its peak memory above the loaded model."""
    folder, width, height, frames, layer_set = Path(args.folder), args.width, args.height, args.frames, args.layer_set
    model = load(folder, args.precision, args.attention)
    clip = torch.rand(frames, height, width, 3)
    layer_set = model.family.resolve_layer_set(layer_set)
    config = TrainingConfig(prompt="a red square", steps=10**6, layer_set=layer_set,
                            gradient_checkpointing=args.checkpointing, inversion_steps=0)
    trainer = EmbeddingTrainer(model, clip, config, None)
    trainer.setup(None)
    text = encode_prompt(model, "a red square")
    touch_weights(model)
    # Loading freed its staging copies of the weights; hand them back so that the peak below starts from the model.
    release_memory()
    if model.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    processors = trainer.processors if args.kind == "train" else floor_processors(model, trainer.latents)
    latent_frames, latent_h, latent_w = (int(n) for n in trainer.latents.shape[2:])
    estimate = estimate_training_bytes(model, latent_frames, latent_h, latent_w, args.checkpointing, layer_set)
    try:
        with (model.family.gradient_checkpointing(model.denoiser, args.checkpointing),
              installed_processors(model.denoiser, processors), torch.enable_grad(), PeakRSS() as rss):
            for i in range(2):
                if args.kind == "train":
                    trainer.optimizer.zero_grad(set_to_none=True)
                    trainer.forward_backward(i)
                    trainer.optimizer.step()
                else:
                    floor_step(model, trainer.latents, text, i)
    except torch.OutOfMemoryError:  # e.g. 480p/81f without checkpointing: reported as "does not fit"
        sys.stdout.write(json.dumps({"peak_bytes": None, "estimate_bytes": estimate}) + "\n")
        return
    if model.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = rss.delta
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


def measure_end_to_end(folder: Path, width: int, height: int, frames: int, layer_set: str, precision: str, attention: str,
                       steps: int, inversion_steps: int = 50) -> dict[str, float]:
    start = time.perf_counter()
    model = load(folder, precision, attention)
    load_s = time.perf_counter() - start
    clip = torch.rand(frames, height, width, 3)
    config = TrainingConfig(prompt="a red square", steps=steps, layer_set=layer_set, inversion_steps=inversion_steps)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_motion_embedding(model, clip, config, Path(tmp) / "e.safetensors")
    return {"load": load_s, **result.timings}


def scale_figures(folder: Path, family: ModelFamily, width: int, height: int, frames: int, layer_set: str, steps: int,
                  args: argparse.Namespace, out) -> list[dict[str, object]]:
    """Step time and training peak memory (checkpointing on) at three sizes and at each of the family's layer sets."""
    longer = family.round_frames(frames * 2)
    cases = [(width, frames, layer_set), (width, longer, layer_set), (width * 2, longer, layer_set)]
    cases += [(width, frames, other) for other in family.layer_sets if other != layer_set]
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
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="what to run (default: the --family's CPU-sized preset, else tiny)")
    parser.add_argument("--family", choices=list(FAMILY_PRESETS), default=None,
                        help=", ".join(f"{k}: --preset {v}" for k, v in FAMILY_PRESETS.items()))
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
    name = args.preset or FAMILY_PRESETS[args.family or "unet3d"]
    preset = PRESETS[name]
    family = family_named(KIND_FAMILIES[preset.kind])
    if args.family is not None and family.name != args.family:
        parser.error(f"--preset {name} is a {family.name} model, not {args.family}")
    kind, width, height, frames, layer_set = preset.kind, preset.width, preset.height, preset.frames, preset.layer_set
    steps = args.steps or preset.steps
    folder = make_model_folder(kind, args.work_dir / (f"{kind}-{frames}f" if kind == "latte-1" else kind), frames)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = sys.stdout.write
    out(f"# {describe_preset(name, preset, family)}, device={device}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}\n")
    figures: dict[str, object] = {"preset": name, "family": family.name, "device": device,
                                  "threads": torch.get_num_threads()}
    for checkpointing in (False, True):
        try:
            step = measure_steps(folder, width, height, frames, layer_set, steps, args.precision, args.attention, checkpointing)
        except torch.OutOfMemoryError:
            step = None
        release_memory()
        figures[f"step_checkpointing_{checkpointing}"] = step
        if step is None:
            out(f"training step / floor (checkpointing={checkpointing}): does not fit in {device} memory\n")
            continue
        out(f"training step / floor (checkpointing={checkpointing}): {step['ratio']:.3f}  "
            f"(train {step['train_s']*1000:.0f} ms, floor {step['floor_s']*1000:.0f} ms, {step['embedding_params']:,} embedding params)\n")
    memory, estimates = {}, {}
    for checkpointing in (False, True):
        for what in ("floor", "train"):
            measured = measure_memory(folder, width, height, frames, layer_set, args.precision, args.attention, checkpointing, what)
            memory[(what, checkpointing)] = measured["peak_bytes"]
            estimates[checkpointing] = measured["estimate_bytes"]
        train, floor = memory[("train", checkpointing)], memory[("floor", checkpointing)]
        if train is None or floor is None:
            out(f"peak memory training / floor (checkpointing={checkpointing}): does not fit in {device} memory "
                f"(training {'did not fit' if train is None else f'{train/2**20:.0f} MiB'}, "
                f"floor {'did not fit' if floor is None else f'{floor/2**20:.0f} MiB'})\n")
            continue
        out(f"peak memory training / floor (checkpointing={checkpointing}): "
            f"{train / max(floor, 1):.3f}  (train {train/2**20:.0f} MiB, floor {floor/2**20:.0f} MiB; "
            f"pre-flight estimate / measured training peak {estimates[checkpointing] / max(train, 1):.2f})\n")
    if memory[("train", False)] is None or memory[("train", True)] is None:
        out("training memory with / without checkpointing: n/a (a case did not fit)\n")
    else:
        out(f"training memory with / without checkpointing: {memory[('train', True)] / max(memory[('train', False)], 1):.3f}\n")
    figures["memory_bytes"] = {f"{w}_checkpointing_{c}": v for (w, c), v in memory.items()}
    figures["estimate_bytes"] = {f"checkpointing_{c}": v for c, v in estimates.items()}
    sampling = measure_sampling(folder, width, height, frames, layer_set, args.precision, args.attention,
                                repeats=preset.sampling_repeats)
    release_memory()
    figures["sampling"] = sampling
    out(f"sampling with embedding / without: {sampling['ratio']:.3f}  (with {sampling['embedded_s']:.2f} s, without {sampling['plain_s']:.2f} s)\n")
    split = measure_end_to_end(folder, width, height, frames, layer_set, args.precision, args.attention, steps,
                               preset.inversion_steps)
    release_memory()
    figures["end_to_end_s"] = split
    out("whole run, seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
        + f"  ({steps} steps, {preset.inversion_steps} inversion steps)\n")
    if args.scale:
        figures["scale"] = scale_figures(folder, family, width, height, frames, layer_set, steps, args, out)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
