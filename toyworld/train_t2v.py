"""Stage 2 of the demo model: train a tiny text-to-video UNet (and its text encoder) on the toy world.

Reads the VAE written by :mod:`toyworld.train_vae` from ``<out>/vae``, caches the VAE posteriors of
``--num-clips`` rendered clips, then trains from scratch:

* ``UNet3DConditionModel`` (block_out_channels (48, 96), layers_per_block 1, one cross-attention level
  at the 8x8 latent grid plus the mid block, so it has temporal attention blocks for motion embeddings);
* a tiny ``CLIPTextModel`` over a closed-vocabulary ``CLIPTokenizer``, trained jointly;
* x0 ("sample") prediction, cosine ("squaredcos_cap_v2") schedule with 1000 steps, AdamW lr 1e-3 with
  warm-up then cosine decay to 1e-4, batch 16, gradient clip 1, EMA 0.998 (the EMA weights are saved),
  10 % caption dropout to the empty prompt for classifier-free guidance.

Every ``--save-every`` steps the EMA weights are written as a complete diffusers ``TextToVideoSDPipeline``
folder at ``--out`` (so a partial run is usable) and a resumable state to ``--work-dir``.

Usage::

    python -m toyworld.train_vae --out assets/toyworld-t2v --steps 1500 --seed 0
    python -m toyworld.train_t2v --out assets/toyworld-t2v --steps 2500 --seed 0

Add ``--resume`` to continue from ``<work-dir>/state.pt``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import torch

from .train_vae import frames_to_images
from .world import VOCAB, render_batch

logger = logging.getLogger(__name__)

T2V_TRAIN_SEED_OFFSET = 10_000_000
MODEL_MAX_LENGTH = 16

UNET_CONFIG: dict = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
    "block_out_channels": [48, 96],
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "cross_attention_dim": 64,
    "attention_head_dim": 8,
}

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "sample",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "timestep_spacing": "trailing",
}


def build_tokenizer():
    """The closed-vocabulary CLIPTokenizer over the world's caption words."""
    from motion_core.testing.word_tokenizer import build_word_tokenizer

    return build_word_tokenizer(VOCAB, model_max_length=MODEL_MAX_LENGTH)


def build_text_encoder(tokenizer, seed: int):
    """A tiny CLIPTextModel (hidden 64, 2 layers) matching ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=UNET_CONFIG["cross_attention_dim"],
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def build_unet(seed: int):
    """A fresh UNet3DConditionModel with :data:`UNET_CONFIG`."""
    from diffusers import UNet3DConditionModel

    torch.manual_seed(seed)
    return UNet3DConditionModel(**UNET_CONFIG)


@torch.no_grad()
def cache_latents(vae, num_clips: int, seed: int, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Render clips and cache their VAE posteriors.

    Returns:
        ``(mean [N, 4, F, 8, 8], std [N, 4, F, 8, 8], captions)``, unscaled.
    """
    means, stds, caps = [], [], []
    base = T2V_TRAIN_SEED_OFFSET + seed * 1_000_000
    for start in range(0, num_clips, chunk):
        seeds = list(range(base + start, base + min(start + chunk, num_clips)))
        frames, captions, _ = render_batch(seeds)  # [B, F, H, W, 3]
        b, f = frames.shape[:2]
        post = vae.encode(frames_to_images(frames)).latent_dist
        # [B*F, 4, h, w] -> [B, 4, F, h, w]
        means.append(post.mean.reshape(b, f, *post.mean.shape[1:]).permute(0, 2, 1, 3, 4).contiguous())
        stds.append(post.std.reshape(b, f, *post.std.shape[1:]).permute(0, 2, 1, 3, 4).contiguous())
        caps.extend(captions)
    return torch.cat(means), torch.cat(stds), caps


def write_slow_tokenizer_files(tokenizer_dir: Path) -> None:
    """Add ``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``.

    transformers 5 saves only ``tokenizer.json``; the slow ``CLIPTokenizer`` of transformers 4.x needs the two
    classic files, so writing them keeps the folder loadable by older installs (ComfyUI often has 4.x).
    """
    data = json.loads((tokenizer_dir / "tokenizer.json").read_text())
    model = data["model"]
    (tokenizer_dir / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def prefix_text_encoder_keys(text_encoder_dir: Path) -> None:
    """Store the text encoder's weights under ``text_model.*`` names.

    transformers 5 saves ``CLIPTextModel`` weights without the ``text_model.`` prefix; transformers 4.x then
    silently initialises every weight at random. The prefixed names (as in every published CLIP text
    encoder, ZeroScope's included) load correctly in both.
    """
    from safetensors.torch import load_file, save_file

    path = text_encoder_dir / "model.safetensors"
    state = load_file(str(path))
    fixed = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in state.items()}
    save_file(fixed, str(path), metadata={"format": "pt"})


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet, scheduler, extra: dict) -> None:
    """Write a complete diffusers ``TextToVideoSDPipeline`` folder plus ``train_info.json``."""
    from diffusers import TextToVideoSDPipeline

    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(out)
    write_slow_tokenizer_files(out / "tokenizer")
    prefix_text_encoder_keys(out / "text_encoder")
    (out / "train_info.json").write_text(json.dumps(extra, indent=1))


def train_t2v(
    out: Path,
    work_dir: Path,
    steps: int = 2500,
    seed: int = 0,
    batch: int = 16,
    num_clips: int = 8000,
    lr: float = 1e-3,
    lr_min: float = 1e-4,
    warmup: int = 100,
    ema_decay: float = 0.998,
    cfg_dropout: float = 0.1,
    save_every: int = 250,
    threads: int = 2,
    resume: bool = False,
) -> dict:
    """Train the UNet + text encoder; see the module docstring. Returns the training summary."""
    from diffusers import AutoencoderKL, DDIMScheduler

    torch.set_num_threads(threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(out / "vae").eval()
    scaling = float(vae.config.scaling_factor)
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(tokenizer, seed)
    unet = build_unet(seed + 1)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    logger.info("unet %.2f M params, text encoder %.3f M params", n_unet / 1e6, n_text / 1e6)

    t0 = time.time()
    cache_file = work_dir / f"latents_seed{seed}_n{num_clips}.pt"
    if cache_file.exists():
        cached = torch.load(cache_file)
        lat_mean, lat_std, captions = cached["mean"], cached["std"], cached["captions"]
    else:
        lat_mean, lat_std, captions = cache_latents(vae, num_clips, seed)
        torch.save({"mean": lat_mean, "std": lat_std, "captions": captions}, cache_file)
    logger.info(
        "latents %s cached in %.0fs (scaled std %.3f)", tuple(lat_mean.shape), time.time() - t0, float(lat_mean.std() * scaling)
    )

    # Token ids for every distinct caption and for the empty prompt.
    vocab_caps = sorted(set(captions)) + [""]
    cap_index = torch.tensor([vocab_caps.index(c) for c in captions])
    ids = tokenizer(
        vocab_caps, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt"
    ).input_ids  # [K, L]
    empty_idx = len(vocab_caps) - 1

    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for p in list(ema_unet.parameters()) + list(ema_text.parameters()):
        p.requires_grad_(False)
    ema_pairs = list(zip(list(ema_unet.parameters()) + list(ema_text.parameters()), params))

    start_step = 0
    history: list[dict] = []
    g = torch.Generator().manual_seed(seed + 7)
    state_file = work_dir / "state.pt"
    if resume and state_file.exists():
        st = torch.load(state_file)
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["text"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        g.set_state(st["gen"])
        start_step, history = st["step"], st["history"]
        logger.info("resumed from step %d", start_step)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        p = min((step - warmup) / max(steps - warmup, 1), 1.0)
        return lr_min + (lr - lr_min) * 0.5 * (1 + math.cos(math.pi * p))

    unet.train()
    text_encoder.train()
    t_start = time.time()
    run_loss, run_n = 0.0, 0
    bucket = torch.zeros(4)
    bucket_n = torch.zeros(4)
    for step in range(start_step, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(lat_mean.shape[0], (batch,), generator=g)
        x0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=g)) * scaling
        cap = cap_index[idx].clone()
        drop = torch.rand(batch, generator=g) < cfg_dropout
        cap[drop] = empty_idx
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        noisy = scheduler.add_noise(x0, noise, t)
        enc = text_encoder(ids[cap])[0]  # [B, L, 64]
        pred = unet(noisy, t, encoder_hidden_states=enc).sample
        per = ((pred - x0) ** 2).mean(dim=(1, 2, 3, 4))
        loss = per.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, p in ema_pairs:
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
            b = (t * 4 // scheduler.config.num_train_timesteps).clamp(max=3)
            bucket.index_add_(0, b, per.detach())
            bucket_n.index_add_(0, b, torch.ones(batch))
        run_loss += loss.item()
        run_n += 1
        done = step + 1
        if done % 50 == 0 or done == steps:
            rec = {
                "step": done,
                "loss": run_loss / run_n,
                "lr": lr_at(step),
                "loss_by_t_quarter": (bucket / bucket_n.clamp(min=1)).tolist(),
                "elapsed": time.time() - t_start,
            }
            history.append(rec)
            logger.info(
                "t2v step %d loss %.4f lr %.2e by-t %s (%.0fs, %.2f s/step)",
                done,
                rec["loss"],
                rec["lr"],
                [round(v, 3) for v in rec["loss_by_t_quarter"]],
                rec["elapsed"],
                rec["elapsed"] / max(done - start_step, 1),
            )
            run_loss, run_n = 0.0, 0
            bucket.zero_()
            bucket_n.zero_()
        if done % save_every == 0 or done == steps:
            info = {
                "step": done,
                "total_steps": steps,
                "seed": seed,
                "batch": batch,
                "num_clips": num_clips,
                "lr": lr,
                "lr_min": lr_min,
                "ema_decay": ema_decay,
                "cfg_dropout": cfg_dropout,
                "unet_params": n_unet,
                "text_params": n_text,
                "history": history,
            }
            save_pipeline(out, vae, ema_text, tokenizer, ema_unet, scheduler, info)
            torch.save(
                {
                    "unet": unet.state_dict(),
                    "text": text_encoder.state_dict(),
                    "ema_unet": ema_unet.state_dict(),
                    "ema_text": ema_text.state_dict(),
                    "opt": opt.state_dict(),
                    "gen": g.get_state(),
                    "step": done,
                    "history": history,
                },
                state_file,
            )
            logger.info("saved EMA pipeline to %s at step %d", out, done)
    summary = {"steps": steps, "final_loss": history[-1]["loss"] if history else None, "train_seconds": time.time() - t_start}
    logger.info("done: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("assets/toyworld-t2v"), help="model folder (must hold vae/)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/toyworld_work"),
        help="latent cache and resumable state (not part of the model)",
    )
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--num-clips", type=int, default=8000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--cfg-dropout", type=float, default=0.1)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_t2v(
        args.out,
        args.work_dir,
        args.steps,
        args.seed,
        args.batch,
        args.num_clips,
        args.lr,
        args.lr_min,
        args.warmup,
        args.ema,
        args.cfg_dropout,
        args.save_every,
        args.threads,
        args.resume,
    )


if __name__ == "__main__":
    main()
