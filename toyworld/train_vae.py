"""Stage 1 of the demo model: train a tiny AutoencoderKL on toy-world frames.

32x32x3 frames -> 8x8x4 latents (two downsamplings). The loss is an object-weighted MSE + L1 in
``[-1, 1]`` pixel space plus a small KL term; afterwards ``scaling_factor`` is set to ``1 / std`` of the
latent means over held-out frames, so scaled latents have unit standard deviation.

Usage::

    python -m toyworld.train_vae --out assets/toyworld-t2v --steps 1500 --seed 0

Writes ``<out>/vae/`` (diffusers ``AutoencoderKL``) and ``<out>/vae_train_log.json``. The output folder
name is shared with :mod:`toyworld.train_t2v`, which reads the VAE from there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from .world import render_batch

logger = logging.getLogger(__name__)

VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 32,
}

#: Seed offsets keep the VAE's, the T2V model's and the evaluation's clips disjoint.
VAE_TRAIN_SEED_OFFSET = 1_000_000
VAE_EVAL_SEED_OFFSET = 2_000_000


def frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """``[..., H, W, 3]`` in 0..1 -> ``[N, 3, H, W]`` in -1..1 (leading dims flattened)."""
    x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
    return x * 2.0 - 1.0


def vae_loss(vae, images: torch.Tensor, kl_weight: float) -> tuple[torch.Tensor, dict]:
    """Object-weighted reconstruction + KL.

    Args:
        vae: diffusers AutoencoderKL.
        images: ``[N, 3, H, W]`` in -1..1.
        kl_weight: weight of the per-element KL term.
    """
    post = vae.encode(images).latent_dist
    z = post.sample()
    rec = vae.decode(z).sample
    target_intensity = ((images + 1) / 2).amax(dim=1, keepdim=True)  # [N,1,H,W], 1 on the object
    w = 1.0 + 9.0 * target_intensity
    mse = (w * (rec - images) ** 2).mean() / w.mean()
    l1 = (w * (rec - images).abs()).mean() / w.mean()
    kl = 0.5 * (post.mean**2 + post.var - 1.0 - post.logvar).mean()
    loss = mse + 0.5 * l1 + kl_weight * kl
    return loss, {"mse": mse.item(), "l1": l1.item(), "kl": kl.item()}


def train_vae(
    out: Path,
    steps: int = 1500,
    seed: int = 0,
    batch: int = 64,
    num_clips: int = 2000,
    lr: float = 2e-3,
    kl_weight: float = 1e-4,
    threads: int = 2,
) -> dict:
    """Train the VAE and save it to ``out / "vae"``. Returns the training log (also written as JSON)."""
    from diffusers import AutoencoderKL

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    frames, _, _ = render_batch([VAE_TRAIN_SEED_OFFSET + seed * 100_000 + i for i in range(num_clips)])
    data = frames_to_images(frames)  # [num_clips*F, 3, 32, 32]
    eval_frames, _, _ = render_batch([VAE_EVAL_SEED_OFFSET + i for i in range(64)])
    eval_data = frames_to_images(eval_frames)
    logger.info("rendered %d training frames in %.1fs", data.shape[0], time.time() - t0)

    vae = AutoencoderKL(**VAE_CONFIG)
    n_params = sum(p.numel() for p in vae.parameters())
    logger.info("VAE parameters: %.2f M", n_params / 1e6)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    warm = max(steps // 20, 1)

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        p = (step - warm) / max(steps - warm, 1)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    g = torch.Generator().manual_seed(seed)
    history = []
    t_start = time.time()
    vae.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(data.shape[0], (batch,), generator=g)
        x = data[idx]
        if torch.rand((), generator=g) < 0.5:  # flips keep the world's statistics
            x = x.flip(-1)
        loss, parts = vae_loss(vae, x, kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            rec = dict(step=step, loss=loss.item(), **parts, elapsed=time.time() - t_start)
            history.append(rec)
            logger.info(
                "vae step %d loss %.5f mse %.5f kl %.3f (%.0fs)", step, loss.item(), parts["mse"], parts["kl"], rec["elapsed"]
            )

    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(eval_data[i : i + 128]).latent_dist.mean for i in range(0, len(eval_data), 128)])
        scaling = 1.0 / float(lat.std())
        rec = torch.cat([vae.decode(lat[i : i + 128]).sample for i in range(0, len(lat), 128)])
    rec01 = ((rec + 1) / 2).clamp(0, 1)
    tgt01 = (eval_data + 1) / 2
    obj = tgt01.amax(dim=1) > 0.5
    err = (rec01 - tgt01).abs()
    stats = {
        "latent_mean": float(lat.mean()),
        "latent_std": float(lat.std()),
        "latent_channel_means": lat.mean(dim=(0, 2, 3)).tolist(),
        "scaling_factor": scaling,
        "eval_mae_all": float(err.mean()),
        "eval_mae_object": float(err.permute(1, 0, 2, 3)[:, obj].mean()),
        "eval_mae_background": float(err.permute(1, 0, 2, 3)[:, ~obj].mean()),
        "params": n_params,
        "train_seconds": time.time() - t_start,
    }
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / "vae")
    log = {
        "config": VAE_CONFIG,
        "steps": steps,
        "seed": seed,
        "batch": batch,
        "lr": lr,
        "kl_weight": kl_weight,
        "stats": stats,
        "history": history,
    }
    (out / "vae_train_log.json").write_text(json.dumps(log, indent=1))
    logger.info("VAE saved to %s: %s", out / "vae", json.dumps(stats))
    return log


@torch.no_grad()
def check_vae(vae_dir: Path, num_clips: int = 100) -> dict:
    """Reconstruct held-out clips and run the toy-world detector on the reconstructions.

    Returns:
        dict with colour / shape accuracy and presence on reconstructions, mean centroid shift (px) between
        original and reconstruction, and the mean absolute pixel error.
    """
    from diffusers import AutoencoderKL

    from .metrics import detect_clip

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    frames, _, clips = render_batch([VAE_EVAL_SEED_OFFSET + 10_000 + i for i in range(num_clips)])
    b = frames.shape[0]
    x = frames_to_images(frames)
    rec = vae.decode(vae.encode(x).latent_dist.mean).sample
    rec = ((rec + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).reshape(frames.shape)
    col = shp = pres = 0
    shifts = []
    for r, c in zip(rec, clips):
        d, d0 = detect_clip(r), detect_clip(c.frames)
        col += d.colour == c.colour
        shp += d.shape == c.shape
        pres += d.presence_rate
        shifts.append((d.centroids - d0.centroids).norm(dim=1).nanmean())
    out = {
        "colour_acc": col / b,
        "shape_acc": shp / b,
        "presence": pres / b,
        "centroid_shift_px": float(torch.stack(shifts).nanmean()),
        "mae": float((rec - frames).abs().mean()),
    }
    logger.info("VAE reconstruction check: %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/toyworld-t2v"), help="model folder (vae/ goes inside)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64, help="frames per step")
    ap.add_argument("--num-clips", type=int, default=2000, help="training clips rendered up front (x8 frames)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-only", action="store_true", help="only run check_vae on <out>/vae")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.check_only:
        check_vae(args.out / "vae")
        return
    train_vae(args.out, args.steps, args.seed, args.batch, args.num_clips, args.lr, args.kl_weight, args.threads)
    check_vae(args.out / "vae")


if __name__ == "__main__":
    main()
